//! What goes over the wire to and from the LAPI, pure: Go durations, alerts built from
//! this host's blocks, and the decision stream read with bounded memory whatever it holds.

use crate::core::decisions::Decision;
use crate::core::ignore::{canonical, canonical_net, net_text};
use crate::core::policy::MAX_TIMEOUT;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::fmt;
use std::io::Read;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Every alert's scenario: what this host saw.
pub const SCENARIO: &str = "portsentry/port-scan";
/// The decisions' origin. "crowdsec" is what CrowdSec's own agents (machines, as this host
/// is one) write: `cscli decisions list` shows it without `-a`, and bouncers that filter
/// on origins take it. The scenario says it came from portsentry.
pub const ORIGIN: &str = "crowdsec";
/// A permanent block as a duration the LAPI takes: a century, in hours (Go's durations
/// end near 292 years; the LAPI has no "forever").
pub const PERMANENT: &str = "876600h";
/// Longest scenario or origin shown by `list`.
const MAX_LABEL: usize = 64;

/// A block this host made, as the push thread keeps it (and spools it): enough to build
/// the alert again after a restart, with its original times.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The blocked network, as `list` writes it (an address alone for a single host).
    pub net: String,
    /// Epoch second the block was made.
    pub at: u64,
    /// Seconds; `None`: permanent.
    pub timeout: Option<u64>,
    /// How many times this network has been blocked.
    pub count: u32,
    /// What was probed: "tcp"/"udp", the port, the scan kind ("syn", "udp", …), where.
    pub proto: String,
    pub port: u16,
    pub kind: String,
    pub target: String,
}

impl Pending {
    /// Whether the block has ended by `now` (its alert would carry a dead decision).
    pub fn ended(&self, now: u64) -> bool {
        self.timeout
            .is_some_and(|t| self.at.saturating_add(t) <= now)
    }
}

/// A duration in Go's syntax, as the LAPI's `ParseDuration` reads it: whole hours, else
/// minutes, else seconds (`168h`, never `7d`).
pub fn go_duration(timeout: Option<Duration>) -> String {
    let Some(t) = timeout else {
        return PERMANENT.to_string();
    };
    let secs = t.as_secs().clamp(1, MAX_TIMEOUT.as_secs());
    if secs % 3600 == 0 {
        format!("{}h", secs / 3600)
    } else if secs % 60 == 0 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// A Go duration ("59m49.1s", "168h", "1h2m3.5s", "-3s"): `None` when negative or not a
/// duration; saturates rather than overflows.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    // A negative time left: the decision has ended.
    if t.starts_with('-') {
        return None;
    }
    let t = t.strip_prefix('+').unwrap_or(t);
    if t == "0" {
        return Some(Duration::ZERO);
    }
    if t.is_empty() || t.len() > 64 {
        return None;
    }
    let mut nanos: u128 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_end);
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let per: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
        if whole.is_empty() && frac.is_empty() {
            return None;
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        let mut value = whole.saturating_mul(per);
        let mut scale = per;
        for d in frac.chars().take(18) {
            scale /= 10;
            value = value.saturating_add(u128::from(d.to_digit(10)?) * scale);
        }
        nanos = nanos.saturating_add(value);
        rest = next;
    }
    let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
    Some(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// RFC 3339 in UTC, as the LAPI's timestamps are.
pub fn rfc3339(epoch: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(epoch.min(253_402_300_799));
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The alert for one block: one event saying what was probed, one ban decision lasting
/// the block's time from the moment it was made (the LAPI counts a decision's duration
/// from the alert's `stop_at`, so a replayed alert ends when the block does).
pub fn alert(p: &Pending, machine: &str) -> Value {
    let range = p.net.contains('/');
    let scope = if range { "Range" } else { "Ip" };
    let when = rfc3339(p.at);
    let mut source = json!({ "scope": scope, "value": p.net });
    source[if range { "range" } else { "ip" }] = json!(p.net);
    let meta = |k: &str, v: &str| json!({ "key": k, "value": v });
    json!({
        "scenario": SCENARIO,
        "scenario_hash": "",
        "scenario_version": env!("CARGO_PKG_VERSION"),
        "message": format!(
            "portsentry on {machine}: {} blocked after a {} {} scan to port {} (block {})",
            p.net, p.proto, p.kind, p.port, p.count
        ),
        "events_count": 1,
        "events": [{
            "timestamp": when,
            "meta": [
                meta("service", "portsentry"),
                meta("log_type", "port_scan"),
                meta("source_ip", p.net.split('/').next().unwrap_or("")),
                meta("protocol", &p.proto),
                meta("port", &p.port.to_string()),
                meta("scan_type", &p.kind),
                meta("destination_ip", &p.target),
            ],
        }],
        "start_at": when,
        "stop_at": when,
        "capacity": 0,
        "leakspeed": "0s",
        "simulated": false,
        "remediation": true,
        "source": source,
        "decisions": [{
            "type": "ban",
            "duration": go_duration(p.timeout.map(Duration::from_secs)),
            "scope": scope,
            "value": p.net,
            "origin": ORIGIN,
            "scenario": SCENARIO,
        }],
    })
}

/// One pull's answer: bans to hold, ids to lift, and what was left out.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Delta {
    pub new: Vec<Decision>,
    pub deleted: Vec<u64>,
    /// Items that are not bans of scope Ip or Range, or not readable.
    pub skipped: u64,
    /// Items past the cap (`max` new, four times as many deleted).
    pub over: u64,
}

/// Reads `{"new": [...]|null, "deleted": [...]|null}` from `r`, one item at a time: at
/// most `max` new decisions are kept, whatever the reply holds; a reply that is not such
/// an object is an error, a bad item is skipped and counted.
pub fn parse_stream(r: impl Read, now: u64, max: usize) -> Result<Delta, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_reader(std::io::BufReader::new(r));
    let mut delta = Delta::default();
    Reply {
        delta: &mut delta,
        now,
        max,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok(delta)
}

struct Reply<'a> {
    delta: &'a mut Delta,
    now: u64,
    max: usize,
}

impl<'de> DeserializeSeed<'de> for Reply<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Reply<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object with \"new\" and \"deleted\" lists")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(k) = map.next_key::<String>()? {
            let new = match k.as_str() {
                "new" => true,
                "deleted" => false,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            map.next_value_seed(List {
                delta: self.delta,
                new,
                now: self.now,
                max: self.max,
            })?;
        }
        Ok(())
    }
}

struct List<'a> {
    delta: &'a mut Delta,
    new: bool,
    now: u64,
    max: usize,
}

impl<'de> DeserializeSeed<'de> for List<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for List<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of decisions or null")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let delta = self.delta;
        let cap = if self.new {
            self.max
        } else {
            self.max.saturating_mul(4)
        };
        loop {
            let kept = if self.new {
                delta.new.len()
            } else {
                delta.deleted.len()
            };
            if kept >= cap {
                // Read on (the reply must stay well-formed) without keeping anything.
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    delta.over += 1;
                }
                return Ok(());
            }
            let Some(item) = seq.next_element::<Value>()? else {
                return Ok(());
            };
            if self.new {
                match decision(&item, self.now) {
                    Some(d) => delta.new.push(d),
                    None => delta.skipped += 1,
                }
            } else {
                match item.get("id").and_then(Value::as_u64) {
                    Some(id) => delta.deleted.push(id),
                    None => delta.skipped += 1,
                }
            }
        }
    }
}

/// A stream item as a ban we enforce: type `ban`, scope `Ip` or `Range`, a readable value,
/// id and remaining duration.
pub fn decision(v: &Value, now: u64) -> Option<Decision> {
    let s = |k: &str| v.get(k).and_then(Value::as_str);
    if !s("type")?.eq_ignore_ascii_case("ban") {
        return None;
    }
    let value = s("value")?.trim();
    let net = match s("scope")?.to_ascii_lowercase().as_str() {
        "ip" => ipnet::IpNet::from(canonical(value.parse::<IpAddr>().ok()?)),
        "range" => canonical_net(value.parse::<ipnet::IpNet>().ok()?).trunc(),
        _ => return None,
    };
    let id = v.get("id").and_then(Value::as_u64)?;
    let left = parse_go_duration(s("duration")?)?.min(MAX_TIMEOUT);
    if left.is_zero() {
        return None;
    }
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    Some(Decision {
        id,
        net,
        expires: now.saturating_add(secs),
        reason: format!(
            "{} ({})",
            label(s("scenario").unwrap_or("?")),
            label(s("origin").unwrap_or("?"))
        ),
    })
}

/// A label from the LAPI, safe for a terminal and a log line: printable ASCII, bounded.
fn label(s: &str) -> String {
    let mut out: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(MAX_LABEL)
        .collect();
    if out.is_empty() {
        out.push('?');
    }
    out
}

/// What the push thread keeps of a block the responder made.
pub fn pending(b: &super::LocalBlock) -> Pending {
    let (proto, port, kind, target) = match &b.probe {
        Some(p) => (
            p.proto.name().to_ascii_lowercase(),
            p.dst_port,
            crate::core::stats::KINDS[crate::core::stats::kind_index(p.kind)]
                .1
                .to_string(),
            p.dst.to_string(),
        ),
        None => ("?".into(), 0, "?".into(), "?".into()),
    };
    Pending {
        net: net_text(b.net),
        at: b.at,
        timeout: b.timeout.map(|t| t.as_secs()),
        count: b.count,
        proto,
        port,
        kind,
        target,
    }
}

/// Now, for the threads that stamp what they read (the core is handed time).
pub fn epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_are_written_as_the_lapi_reads_them() {
        let d = |s| go_duration(Some(Duration::from_secs(s)));
        assert_eq!(d(3600), "1h");
        assert_eq!(d(7 * 86400), "168h");
        assert_eq!(d(90), "90s");
        assert_eq!(d(120), "2m");
        assert_eq!(go_duration(None), PERMANENT);
        // The permanent one is a century and reads back as one.
        assert_eq!(parse_go_duration(PERMANENT), Some(MAX_TIMEOUT));
    }

    #[test]
    fn go_durations_are_read_as_the_lapi_writes_them() {
        let p = |s| parse_go_duration(s);
        assert_eq!(p("59m49.1s"), Some(Duration::from_millis(3_589_100)));
        assert_eq!(p("168h"), Some(Duration::from_secs(604_800)));
        assert_eq!(p("1h2m3.5s"), Some(Duration::from_millis(3_723_500)));
        assert_eq!(p("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(p("1.5µs"), Some(Duration::from_nanos(1500)));
        assert_eq!(p("0"), Some(Duration::ZERO));
        assert_eq!(p("-3.5s"), None);
        for bad in [
            "", "7d", "3600", "h", "1h-2m", "1.2.3s", "--1s", "1 h", "s1",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
        // Huge numbers saturate, never overflow.
        assert!(p("99999999999999999999999999999999h").is_some());
        assert!(p("9999999999999999999999999999999999999999h").is_none());
    }

    fn item(id: u64, scope: &str, value: &str, dur: &str) -> String {
        format!(
            r#"{{"duration":"{dur}","id":{id},"origin":"crowdsec","scenario":"portsentry/port-scan","scope":"{scope}","type":"ban","value":"{value}"}}"#
        )
    }

    #[test]
    fn the_stream_is_read_with_null_lists_and_bad_items_skipped() {
        let text = format!(
            r#"{{"new":[{},{},{},{},{},{}],"deleted":null}}"#,
            item(1, "Ip", "198.18.0.7", "59m59.5s"),
            item(2, "Range", "198.18.1.0/24", "168h"),
            item(3, "Ip", "::ffff:198.18.0.8", "1h"),
            item(4, "Country", "FR", "1h"),
            r#"{"id":5,"type":"captcha","scope":"Ip","value":"198.18.0.9","duration":"1h"}"#,
            r#"{"id":"six","type":"ban","scope":"Ip","value":"198.18.0.9","duration":"1h"}"#,
        );
        let d = parse_stream(text.as_bytes(), 1000, 100).unwrap();
        let shown: Vec<(u64, String, u64)> = d
            .new
            .iter()
            .map(|x| (x.id, x.net.to_string(), x.expires))
            .collect();
        assert_eq!(
            shown,
            [
                (1, "198.18.0.7/32".into(), 1000 + 3600),
                (2, "198.18.1.0/24".into(), 1000 + 604_800),
                (3, "198.18.0.8/32".into(), 1000 + 3600),
            ]
        );
        assert_eq!(d.new[0].reason, "portsentry/port-scan (crowdsec)");
        assert_eq!(d.skipped, 3);
        let d = parse_stream(
            &br#"{"new":null,"deleted":[{"id":7},{"id":-1}]}"#[..],
            0,
            10,
        )
        .unwrap();
        assert_eq!((d.deleted, d.skipped), (vec![7], 1));
        assert_eq!(
            parse_stream(&br#"{"new":null,"deleted":null}"#[..], 0, 10).unwrap(),
            Delta::default()
        );
    }

    #[test]
    fn hostile_replies_are_errors_or_bounded_never_panics() {
        for bad in [
            &b""[..],
            b"null",
            b"[]",
            b"\"new\"",
            b"{\"new\": 5}",
            b"{\"new\": {\"a\": 1}}",
            b"{\"new\": [",
            b"{\"new\": []} trailing",
            b"<html>502 Bad Gateway</html>",
        ] {
            assert!(
                parse_stream(bad, 0, 10).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // Deep nesting stops at serde_json's recursion limit.
        let deep = format!(
            "{{\"new\":[{}{}]}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(parse_stream(deep.as_bytes(), 0, 10).is_err());
        // A million decisions: read through, at most `max` kept.
        let mut big = String::from("{\"new\":[");
        for i in 0..1_000_000u32 {
            if i > 0 {
                big.push(',');
            }
            big.push_str(&item(
                u64::from(i) + 1,
                "Ip",
                &std::net::Ipv4Addr::from(0xC612_0000 + i).to_string(),
                "1h",
            ));
        }
        big.push_str("],\"deleted\":null}");
        let d = parse_stream(big.as_bytes(), 0, 1000).unwrap();
        assert_eq!((d.new.len(), d.over), (1000, 999_000));
        // Labels from the LAPI are printable and bounded.
        let v: Value = serde_json::from_str(&item(1, "Ip", "198.18.0.1", "1h").replace(
            "portsentry/port-scan",
            &format!("evil\\u001b[31m{}", "x".repeat(500)),
        ))
        .unwrap();
        let r = decision(&v, 0).unwrap().reason;
        assert!(r.len() < 150 && !r.contains('\u{1b}'), "{r}");
    }

    #[test]
    fn alerts_carry_what_the_lapi_requires() {
        let p = Pending {
            net: "2001:db8:5::/64".into(),
            at: 1_700_000_000,
            timeout: Some(3600),
            count: 2,
            proto: "tcp".into(),
            port: 111,
            kind: "syn".into(),
            target: "2001:db8::1".into(),
        };
        let a = alert(&p, "hostA");
        for k in [
            "scenario",
            "scenario_hash",
            "scenario_version",
            "message",
            "events_count",
            "events",
            "start_at",
            "stop_at",
            "capacity",
            "leakspeed",
            "simulated",
            "source",
        ] {
            assert!(!a[k].is_null(), "{k} missing: {a}");
        }
        assert_eq!(a["source"]["scope"], "Range");
        assert_eq!(a["source"]["range"], "2001:db8:5::/64");
        assert_eq!(a["stop_at"], "2023-11-14T22:13:20Z");
        let d = &a["decisions"][0];
        assert_eq!(
            (&d["type"], &d["scope"], &d["duration"], &d["scenario"]),
            (
                &json!("ban"),
                &json!("Range"),
                &json!("1h"),
                &json!("portsentry/port-scan")
            )
        );
        let ip = alert(
            &Pending {
                net: "198.18.0.7".into(),
                timeout: None,
                ..p
            },
            "hostA",
        );
        assert_eq!(ip["source"]["scope"], "Ip");
        assert_eq!(ip["source"]["ip"], "198.18.0.7");
        assert_eq!(ip["decisions"][0]["duration"], PERMANENT);
        let meta = ip["events"][0]["meta"].to_string();
        assert!(
            meta.contains("\"scan_type\"") && meta.contains("\"111\""),
            "{meta}"
        );
    }
}
