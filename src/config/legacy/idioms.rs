//! Commands common in 1.2 configurations that portsentry's own nft set (or its log rule)
//! already does: running them as well would block twice. Recognised on the argv, after
//! the shell-free reading of `shell.rs`; anything not matched exactly is left alone.

use crate::config::RatePer;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Idiom {
    /// Drops everything from $TARGET$ (iptables, ip6tables, ipset, ipchains, ipfwadm).
    Drop,
    /// A route to $TARGET$ that goes nowhere (`route add … reject`, `ip route add
    /// unreachable …`).
    Route,
    /// Logs $TARGET$'s packets (`iptables … -j LOG`).
    Log(LogRule),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogRule {
    pub prefix: Option<String>,
    /// `None`: no `-m limit`, every packet was logged.
    pub limit: Option<(u32, RatePer)>,
    pub burst: Option<u32>,
    pub level: Option<String>,
}

fn is_target(a: &str) -> bool {
    matches!(a, "$TARGET$" | "$TARGET$/32" | "$TARGET$/128")
}

pub fn recognise(argv: &[String]) -> Option<Idiom> {
    let (prog, args) = argv.split_first()?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match prog.rsplit('/').next()? {
        "iptables" | "ip6tables" | "iptables-legacy" | "ip6tables-legacy" | "iptables-nft"
        | "ip6tables-nft" => iptables(&args),
        "ipset" => ipset(&args),
        "route" if args.first() == Some(&"add") && args.contains(&"$TARGET$") => Some(Idiom::Route),
        "ip" => ip(&args),
        "ipchains" => {
            let source = args.windows(2).any(|w| w[0] == "-s" && is_target(w[1]));
            let deny = args
                .windows(2)
                .any(|w| w[0] == "-j" && matches!(w[1], "DENY" | "REJECT"));
            (source && deny).then_some(Idiom::Drop)
        }
        "ipfwadm" => {
            let source = args.windows(2).any(|w| w[0] == "-S" && is_target(w[1]));
            let deny = args.iter().any(|a| matches!(*a, "deny" | "reject"));
            (source && deny && args.contains(&"-I")).then_some(Idiom::Drop)
        }
        _ => None,
    }
}

/// `iptables -I|-A INPUT [n] -s $TARGET$ -j DROP|REJECT|LOG` with only the options that
/// do not narrow what it matches (wait, table filter, comment, limit and log settings).
fn iptables(args: &[&str]) -> Option<Idiom> {
    let mut it = args.iter().copied().peekable();
    let (mut input, mut source, mut jump) = (false, false, None);
    let mut limit_match = false;
    let mut rule = LogRule::default();
    while let Some(a) = it.next() {
        match a {
            "-I" | "--insert" => {
                input = it.next()? == "INPUT";
                if it.peek().is_some_and(|n| n.parse::<u32>().is_ok()) {
                    it.next();
                }
            }
            "-A" | "--append" => input = it.next()? == "INPUT",
            "-s" | "--source" | "--src" => source = is_target(it.next()?),
            "-j" | "--jump" => jump = Some(it.next()?),
            "-t" | "--table" if it.next()? != "filter" => return None,
            "-t" | "--table" => {}
            "-w" | "--wait" => {
                if it.peek().is_some_and(|n| n.parse::<f64>().is_ok()) {
                    it.next();
                }
            }
            "-m" | "--match" => match it.next()? {
                "limit" => limit_match = true,
                "comment" => {}
                _ => return None,
            },
            "--comment" | "--reject-with" => {
                it.next()?;
            }
            "--limit" => rule.limit = Some(iptables_rate(it.next()?)?),
            "--limit-burst" => rule.burst = Some(it.next()?.parse().ok().filter(|b| *b > 0)?),
            "--log-prefix" => rule.prefix = Some(it.next()?.to_string()),
            "--log-level" => rule.level = Some(it.next()?.to_string()),
            "--log-tcp-sequence" | "--log-tcp-options" | "--log-ip-options" | "--log-uid" => {}
            _ => return None,
        }
    }
    if !input || !source || (!limit_match && (rule.limit.is_some() || rule.burst.is_some())) {
        return None;
    }
    match jump? {
        "DROP" | "REJECT" if !limit_match && rule == LogRule::default() => Some(Idiom::Drop),
        "LOG" => {
            if limit_match {
                // iptables' defaults for `-m limit` alone.
                rule.limit = rule.limit.or(Some((3, RatePer::Hour)));
                rule.burst = rule.burst.or(Some(5));
            }
            Some(Idiom::Log(rule))
        }
        _ => None,
    }
}

/// `libxt_limit`'s reading: N, then an optional `/unit` where the unit is any prefix of
/// second, minute, hour or day (in that order, any case); N alone is per second.
fn iptables_rate(text: &str) -> Option<(u32, RatePer)> {
    let (n, unit) = text.split_once('/').unwrap_or((text, "second"));
    let n: u32 = n.parse().ok().filter(|n| *n > 0)?;
    let unit = unit.to_ascii_lowercase();
    if unit.is_empty() {
        return None;
    }
    [
        ("second", RatePer::Second),
        ("minute", RatePer::Minute),
        ("hour", RatePer::Hour),
        ("day", RatePer::Day),
    ]
    .into_iter()
    .find(|(name, _)| name.starts_with(&unit))
    .map(|(_, per)| (n, per))
}

/// `ipset [-exist|-!] add|-A SET $TARGET$ [timeout N] …`
fn ipset(args: &[&str]) -> Option<Idiom> {
    let args: Vec<&str> = args
        .iter()
        .copied()
        .filter(|a| !matches!(*a, "-exist" | "-!" | "-q" | "-quiet"))
        .collect();
    let add = matches!(*args.first()?, "add" | "-A" | "-add" | "--add");
    (add && is_target(args.get(2)?)).then_some(Idiom::Drop)
}

/// `ip [-4|-6] route add|replace|append … $TARGET$ …`, `ip rule add from $TARGET$ …`
fn ip(args: &[&str]) -> Option<Idiom> {
    let mut rest = args;
    while let Some((first, tail)) = rest.split_first() {
        match *first {
            "-f" | "-family" => rest = tail.get(1..)?,
            o if o.starts_with('-') => rest = tail,
            _ => break,
        }
    }
    let (object, rest) = rest.split_first()?;
    let (cmd, rest) = rest.split_first()?;
    let adds = matches!(*cmd, "add" | "a" | "replace" | "append");
    match *object {
        "route" | "r" | "ro" | "rou" | "rout" if adds && rest.iter().any(|a| is_target(a)) => {
            Some(Idiom::Route)
        }
        "rule" | "ru" if adds && rest.windows(2).any(|w| w[0] == "from" && is_target(w[1])) => {
            Some(Idiom::Route)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idiom(text: &str) -> Option<Idiom> {
        let s = crate::config::legacy::shell::parse(text).unwrap();
        recognise(s.commands[0].argv.as_ref().unwrap())
    }

    #[test]
    fn drops_of_the_target_are_recognised() {
        for text in [
            "/sbin/iptables -I INPUT -s $TARGET$ -j DROP",
            "iptables -A INPUT -s $TARGET$ -j DROP",
            "/usr/sbin/iptables -w -I INPUT 1 -s $TARGET$/32 -j REJECT --reject-with icmp-host-prohibited",
            "ip6tables -t filter -I INPUT -s $TARGET$ -j DROP -m comment --comment portsentry",
            "iptables-nft --insert INPUT --source $TARGET$ --jump DROP",
            "/usr/sbin/ipset add portsentry $TARGET$",
            "ipset -A blacklist $TARGET$ timeout 3600 -exist",
            "/sbin/ipchains -I input -s $TARGET$ -j DENY -l",
            "/sbin/ipfwadm -I -i deny -S $TARGET$ -o",
        ] {
            assert_eq!(idiom(text), Some(Idiom::Drop), "{text}");
        }
    }

    #[test]
    fn routes_to_the_target_are_recognised() {
        for text in [
            "/sbin/route add -host $TARGET$ reject",
            "/sbin/route add -host $TARGET$ gw 333.444.555.666",
            "route add $TARGET$ 333.444.555.666",
            "/usr/sbin/ip route add blackhole $TARGET$",
            "ip -6 route add unreachable $TARGET$/128",
            "ip ro replace prohibit $TARGET$",
            "ip rule add from $TARGET$ prohibit",
        ] {
            assert_eq!(idiom(text), Some(Idiom::Route), "{text}");
        }
    }

    #[test]
    fn anything_narrower_or_different_is_left_alone() {
        for text in [
            "iptables -I FORWARD -s $TARGET$ -j DROP",
            "iptables -I INPUT -s 10.0.0.0/8 -j DROP",
            "iptables -I INPUT -s $TARGET$ -p tcp --dport 22 -j DROP",
            "iptables -I INPUT -s $TARGET$ -j ACCEPT",
            "iptables -t nat -I INPUT -s $TARGET$ -j DROP",
            "iptables -I INPUT -d $TARGET$ -j DROP",
            "iptables -I INPUT -s $TARGET$ -m limit --limit 3/minute -j DROP",
            "iptables -I INPUT -s $TARGET$ --limit 3/minute -j LOG",
            "iptables -D INPUT -s $TARGET$ -j DROP",
            "iptables -I INPUT -s $TARGET$",
            "ipset del portsentry $TARGET$",
            "route del -host $TARGET$ reject",
            "route add -host 10.0.0.1 reject",
            "ip route del blackhole $TARGET$",
            "ip link set eth0 down",
            "/usr/local/bin/report $TARGET$",
        ] {
            assert_eq!(idiom(text), None, "{text}");
        }
    }

    #[test]
    fn the_wiki_log_rule_gives_its_settings() {
        let text = "/sbin/iptables -I INPUT -s $TARGET$ -m limit --limit 3/minute --limit-burst 5 -j LOG --log-level debug --log-prefix 'Portsentry: dropping: '";
        assert_eq!(
            idiom(text),
            Some(Idiom::Log(LogRule {
                prefix: Some("Portsentry: dropping: ".into()),
                limit: Some((3, RatePer::Minute)),
                burst: Some(5),
                level: Some("debug".into()),
            }))
        );
        // `-m limit` alone: iptables' 3/hour, burst 5; no limit: every packet.
        assert_eq!(
            idiom("iptables -I INPUT -s $TARGET$ -m limit -j LOG"),
            Some(Idiom::Log(LogRule {
                limit: Some((3, RatePer::Hour)),
                burst: Some(5),
                ..Default::default()
            }))
        );
        assert_eq!(
            idiom("iptables -A INPUT -s $TARGET$ -j LOG"),
            Some(Idiom::Log(LogRule::default()))
        );
    }

    #[test]
    fn iptables_rates_read_as_libxt_limit_reads_them() {
        assert_eq!(iptables_rate("3/minute"), Some((3, RatePer::Minute)));
        assert_eq!(iptables_rate("3/min"), Some((3, RatePer::Minute)));
        assert_eq!(iptables_rate("10/s"), Some((10, RatePer::Second)));
        assert_eq!(iptables_rate("1/H"), Some((1, RatePer::Hour)));
        assert_eq!(iptables_rate("2/d"), Some((2, RatePer::Day)));
        assert_eq!(iptables_rate("7"), Some((7, RatePer::Second)));
        for bad in ["0/minute", "3/", "3/week", "x/minute", "-1/s"] {
            assert_eq!(iptables_rate(bad), None, "{bad}");
        }
    }
}
