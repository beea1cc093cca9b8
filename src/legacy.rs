//! `portsentry import-legacy`: PortSentry 1.2's portsentry.conf (plus Debian's
//! /etc/default/portsentry and an ignore file) → an equivalent TOML configuration, with
//! comments for whatever has no equivalent. Pure: text in, text out.

use crate::ignore::parse_ignore_file;
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{path}:{line}: {message}")]
pub struct LegacyError {
    pub path: String,
    pub line: usize,
    pub message: String,
}

/// `KEY="value"` lines; `#` comments and blank lines skipped. Later keys win, as in 1.2.
pub fn parse_conf(
    path: &str,
    text: &str,
) -> Result<BTreeMap<String, (usize, String)>, LegacyError> {
    let mut out = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line.split_once('=').ok_or_else(|| LegacyError {
            path: path.to_string(),
            line: i + 1,
            message: format!("expected KEY=\"value\", found '{line}'"),
        })?;
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        out.insert(k.trim().to_string(), (i + 1, v.to_string()));
    }
    Ok(out)
}

/// Comment text with control characters escaped (a raw one would end the comment or make
/// the TOML invalid).
fn comment_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn argv_toml(cmd: &str, key: &str, notes: &mut Vec<String>) -> Option<String> {
    // $TARGET$-style tokens are ours; anything a shell would interpret is not.
    let shell = cmd
        .chars()
        .any(|c| matches!(c, '&' | '|' | ';' | '>' | '<' | '`' | '\'' | '"' | '*'))
        || cmd.contains("$(");
    if shell {
        notes.push(format!(
            "{key} uses shell syntax and portsentry runs commands without a shell; put it in a script and name the script here: {cmd}"
        ));
        return None;
    }
    let argv: Vec<&str> = cmd.split_whitespace().collect();
    match argv.first() {
        Some(p) if p.starts_with('/') => Some(format!(
            "[{}]",
            argv.iter().map(|a| q(a)).collect::<Vec<_>>().join(", ")
        )),
        Some(_) => {
            notes.push(format!(
                "{key}: the program must be an absolute path: {cmd}"
            ));
            None
        }
        None => None,
    }
}

fn block_mode(v: &str) -> Option<&'static str> {
    match v.trim() {
        "0" => Some("off"),
        "1" => Some("block"),
        "2" => Some("command"),
        _ => None,
    }
}

fn port_list(v: &str) -> String {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(",")
}

/// Builds the TOML. `default` is /etc/default/portsentry's text, `ignore` the ignore file's.
pub fn import(
    conf_path: &str,
    conf: &str,
    default: Option<&str>,
    ignore: Option<(&str, &str)>,
) -> Result<String, LegacyError> {
    let keys = parse_conf(conf_path, conf)?;
    let get = |k: &str| keys.get(k).map(|(_, v)| v.as_str());
    let mut notes: Vec<String> = Vec::new();
    let mut used: Vec<&str> = Vec::new();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Converted from {conf_path} by portsentry import-legacy."
    );
    let _ = writeln!(out, "# Check it with: portsentry check-config -c FILE\n");

    let modes = default
        .map(|d| parse_conf("default", d))
        .transpose()?
        .unwrap_or_default();
    for (proto, mode_key) in [("tcp", "TCP_MODE"), ("udp", "UDP_MODE")] {
        let up = proto.to_uppercase();
        let mode = match modes.get(mode_key).map(|(_, v)| v.as_str()) {
            Some(m) if m.starts_with('a') => "advanced",
            Some(_) => "ports",
            None => "advanced",
        };
        let _ = writeln!(out, "[{proto}]");
        let _ = writeln!(out, "mode = {}", q(mode));
        if let Some(p) = get(&format!("{up}_PORTS")) {
            match crate::ports::PortSet::parse(&port_list(p)) {
                Ok(set) => {
                    let _ = writeln!(out, "ports = {}", q(&crate::ports::compact(&set)));
                }
                Err(e) => notes.push(format!("{up}_PORTS=\"{p}\": {e}; the default list is used")),
            }
            used.push(if proto == "tcp" {
                "TCP_PORTS"
            } else {
                "UDP_PORTS"
            });
        }
        let adv = format!("ADVANCED_PORTS_{up}");
        if let Some(n) = get(&adv).and_then(|n| n.trim().parse::<u32>().ok()) {
            let _ = writeln!(out, "advanced_below = {}", n.clamp(2, 65536));
        }
        let exc = format!("ADVANCED_EXCLUDE_{up}");
        if let Some(e) = get(&exc) {
            let ports: Result<Vec<u16>, &str> = e
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|p| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or(p))
                .collect();
            match ports {
                Ok(ports) => {
                    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
                    let _ = writeln!(out, "advanced_exclude = [{}]", list.join(", "));
                }
                Err(bad) => notes.push(format!(
                    "{exc}: '{bad}' is not a port; the default exclusions are used"
                )),
            }
        }
        out.push('\n');
    }
    used.extend([
        "ADVANCED_PORTS_TCP",
        "ADVANCED_PORTS_UDP",
        "ADVANCED_EXCLUDE_TCP",
        "ADVANCED_EXCLUDE_UDP",
    ]);

    let _ = writeln!(out, "[detect]");
    let trigger = get("SCAN_TRIGGER")
        .and_then(|t| t.trim().parse::<u32>().ok())
        .unwrap_or(0);
    let _ = writeln!(out, "trigger = {trigger}\n");
    used.push("SCAN_TRIGGER");

    let _ = writeln!(out, "[block]");
    for (proto, key) in [("tcp", "BLOCK_TCP"), ("udp", "BLOCK_UDP")] {
        match get(key).map(|v| (v, block_mode(v))) {
            Some((_, Some(m))) => {
                let _ = writeln!(out, "{proto} = {}", q(m));
            }
            Some((v, None)) => notes.push(format!(
                "{key}=\"{v}\" is not 0, 1 or 2; left at the default (block)"
            )),
            None => {}
        }
        used.push(key);
    }
    if let Some(cmd) = get("KILL_RUN_CMD").filter(|c| !c.trim().is_empty()) {
        if let Some(a) = argv_toml(cmd, "KILL_RUN_CMD", &mut notes) {
            let _ = writeln!(out, "run = {a}");
        }
    }
    if get("KILL_RUN_CMD_FIRST").is_some_and(|v| v.trim() == "1") {
        let _ = writeln!(out, "run_first = true");
    }
    if let Some(h) = get("KILL_HOSTS_DENY").filter(|c| !c.trim().is_empty()) {
        let _ = writeln!(out, "hosts_deny = {}", q(h));
    }
    if let Some(r) = get("KILL_ROUTE").filter(|c| !c.trim().is_empty()) {
        if let Some(a) = argv_toml(r, "KILL_ROUTE", &mut notes) {
            let _ = writeln!(
                out,
                "# The nftables block already drops everything from the scanner; the route is kept\n# because the old configuration had it.\nroute = {a}"
            );
        }
    }
    used.extend([
        "KILL_RUN_CMD",
        "KILL_RUN_CMD_FIRST",
        "KILL_HOSTS_DENY",
        "KILL_ROUTE",
    ]);
    out.push('\n');

    let _ = writeln!(out, "[ignore]");
    let mut addrs: Vec<String> = vec!["127.0.0.0/8".into(), "::1/128".into()];
    if let Some((path, text)) = ignore {
        let nets = parse_ignore_file(path, text).map_err(|e| LegacyError {
            path: e.path,
            line: e.line,
            message: format!("{}: '{}'", e.message, e.text),
        })?;
        for n in nets {
            let s = n.to_string();
            if s != "0.0.0.0/32" && !addrs.contains(&s) {
                addrs.push(s);
            }
        }
    } else if let Some(f) = get("IGNORE_FILE") {
        let _ = writeln!(out, "file = {}", q(f));
    }
    used.push("IGNORE_FILE");
    let _ = writeln!(
        out,
        "addresses = [{}]\n",
        addrs.iter().map(|a| q(a)).collect::<Vec<_>>().join(", ")
    );

    let _ = writeln!(out, "[files]");
    if let Some(h) = get("HISTORY_FILE") {
        let _ = writeln!(out, "history = {}", q(h));
    }
    if let Some(b) = get("BLOCKED_FILE") {
        let _ = writeln!(out, "blocked = {}", q(b));
    }
    used.extend(["HISTORY_FILE", "BLOCKED_FILE"]);
    out.push('\n');
    let _ = writeln!(out, "[log]");
    let _ = writeln!(
        out,
        "resolve_host = {}",
        get("RESOLVE_HOST").is_some_and(|v| v.trim() == "1")
    );
    used.push("RESOLVE_HOST");

    if get("PORT_BANNER").is_some() {
        notes.push("PORT_BANNER has no equivalent: portsentry never answers a probe (the scanner learns nothing)".into());
        used.push("PORT_BANNER");
    }
    for (k, (line, v)) in &keys {
        if !used.contains(&k.as_str()) {
            notes.push(format!("{k}=\"{v}\" (line {line}) has no equivalent"));
        }
    }
    if !notes.is_empty() {
        out.push_str("\n# Not converted:\n");
        for n in notes {
            let _ = writeln!(out, "# - {}", comment_safe(&n));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::detector::Action;

    const DEBIAN_CONF: &str = r#"
# PortSentry Configuration
TCP_PORTS="1,11,15,79,111,119,143,540,635,1080,1524,2000,5742,6667,12345,12346,20034,27665,31337,32771,32772,32773,32774,40421,49724,54320"
UDP_PORTS="1,7,9,69,161,162,513,635,640,641,700,37444,34555,31335,32770,32771,32772,32773,32774,31337,54321"
ADVANCED_PORTS_TCP="1024"
ADVANCED_PORTS_UDP="1024"
ADVANCED_EXCLUDE_TCP="113,139"
ADVANCED_EXCLUDE_UDP="520,138,137,67"
IGNORE_FILE="/etc/portsentry/portsentry.ignore"
HISTORY_FILE="/var/lib/portsentry/portsentry.history"
BLOCKED_FILE="/var/lib/portsentry/portsentry.blocked"
RESOLVE_HOST = "0"
BLOCK_UDP="1"
BLOCK_TCP="2"
KILL_ROUTE="/sbin/route add -host $TARGET$ reject"
KILL_HOSTS_DENY="ALL: $TARGET$ : DENY"
KILL_RUN_CMD="/sbin/iptables -I INPUT -s $TARGET$ -j DROP && /sbin/iptables -I INPUT -s $TARGET$ -j LOG"
SCAN_TRIGGER="2"
PORT_BANNER="** UNAUTHORIZED ACCESS PROHIBITED **"
"#;

    #[test]
    fn debian_config_converts_to_a_valid_equivalent() {
        let toml = import(
            "/etc/portsentry/portsentry.conf",
            DEBIAN_CONF,
            Some("TCP_MODE=\"atcp\"\nUDP_MODE=\"sudp\"\n"),
            Some((
                "/etc/portsentry/portsentry.ignore",
                "127.0.0.1/32\n0.0.0.0\n10.9.8.0/24\n",
            )),
        )
        .unwrap();
        let cfg = Config::parse("imported.toml", &toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        assert_eq!(cfg.tcp.mode, crate::config::WatchMode::Advanced);
        assert_eq!(cfg.udp.mode, crate::config::WatchMode::Ports);
        assert!(cfg.udp.ports.contains(54321) && !cfg.udp.ports.contains(53));
        assert_eq!(
            (cfg.block_tcp, cfg.block_udp, cfg.trigger),
            (Action::Command, Action::Block, 2)
        );
        assert_eq!(
            cfg.actions.route,
            vec![vec!["/sbin/route", "add", "-host", "$TARGET$", "reject"]]
        );
        assert_eq!(
            cfg.actions.hosts_deny.as_ref().unwrap().0,
            "ALL: $TARGET$ : DENY"
        );
        assert!(
            cfg.actions.run.is_empty(),
            "shell command must not be converted"
        );
        assert!(
            toml.contains("# - KILL_RUN_CMD uses shell syntax"),
            "{toml}"
        );
        assert!(toml.contains("# - PORT_BANNER has no equivalent"), "{toml}");
        assert!(cfg.ignore.iter().any(|n| n.to_string() == "10.9.8.0/24"));
        assert_eq!(
            cfg.history.to_str(),
            Some("/var/lib/portsentry/portsentry.history")
        );
    }

    #[test]
    fn bad_line_is_located() {
        let e = import("p.conf", "TCP_PORTS=\"1\"\nthis is not a key\n", None, None).unwrap_err();
        assert_eq!((e.line, e.path.as_str()), (2, "p.conf"));
    }

    /// Found by `cargo fuzz run legacy`: control characters and bad values must not make
    /// the output invalid.
    #[test]
    fn hostile_values_still_give_a_valid_config() {
        for conf in [
            "\u{8}=\"\"\n",
            "TCP_PORTS=\"1,,x\"\nADVANCED_EXCLUDE_UDP=\"a]\"\n",
            "ADVANCED_EXCLUDE_TCP=\"0\"\n",
        ] {
            let toml = import("p.conf", conf, None, None).unwrap();
            Config::parse("t", &toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        }
    }

    #[test]
    fn unknown_keys_become_comments() {
        let toml = import("p.conf", "WEIRD_KEY=\"x\"\n", None, None).unwrap();
        assert!(toml.contains("# - WEIRD_KEY=\"x\" (line 1) has no equivalent"));
        Config::parse("t", &toml).unwrap();
    }
}
