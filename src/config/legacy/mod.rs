//! `portsentry import-legacy`: PortSentry 1.2's portsentry.conf (plus Debian's
//! /etc/default/portsentry and an ignore file) → an equivalent TOML configuration, with
//! comments for whatever has no equivalent. Pure: text in, text out; the one question
//! about the host (where a bare program name is) is asked through `which`.

mod commands;
mod idioms;
pub mod shell;
mod write;

use crate::core::ignore::parse_ignore_file;
use commands::{Commands, Cover};
use std::collections::BTreeMap;
use write::{comment_safe, q, shown, Out};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{path}:{line}: {message}")]
pub struct LegacyError {
    pub path: String,
    pub line: usize,
    pub message: String,
}

/// `KEY="value"` lines; `#` comments and blank lines skipped. Later keys win, as in 1.2.
///
/// # Errors
/// A line that is not `KEY="value"`, located.
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

/// /etc/default/portsentry is a shell fragment that 1.2's init script sourced: its
/// `NAME=value` lines are read leniently (quotes, `export`, a trailing comment); anything
/// else in it is ignored rather than refused, as it never stopped 1.2 from starting.
#[must_use]
pub fn parse_default(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let v = match v.chars().next() {
            Some(q @ ('"' | '\'')) => v[1..].split(q).next().unwrap_or(""),
            _ => v.split([' ', '\t', ';', '#']).next().unwrap_or(""),
        };
        out.insert(k.to_string(), v.to_string());
    }
    out
}

/// What Debian's package writes into /etc/default/portsentry on a first install.
const DEBIAN_DEFAULT_MODES: [(&str, &str); 2] = [("TCP_MODE", "tcp"), ("UDP_MODE", "udp")];

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

/// Builds the TOML. `default` is /etc/default/portsentry (path, text), `None` when there is
/// none; `ignore` the ignore file; `which` finds a bare program name on this host's PATH.
///
/// # Errors
/// A bad line of the configuration or of the ignore file, located.
pub fn import(
    conf_path: &str,
    conf: &str,
    default: Option<(&str, &str)>,
    ignore: Option<(&str, &str)>,
    which: &dyn Fn(&str) -> Option<String>,
) -> Result<String, LegacyError> {
    let keys = parse_conf(conf_path, conf)?;
    let mut import = Import {
        keys: &keys,
        notes: Vec::new(),
        used: Vec::new(),
        out: Out::default(),
    };
    import.out.line(&format!(
        "# Converted from {} by portsentry import-legacy.",
        comment_safe(conf_path)
    ));
    import
        .out
        .line("# Check it with: portsentry check-config -c FILE\n");
    import.watch_sections(default);
    import.detect_section();
    import.block_section(which);
    import.ignore_section(ignore)?;
    import.files_and_log_sections();
    Ok(import.finish())
}

/// The conversion under way: the keys read, the TOML written so far, what has no
/// equivalent, and which keys were looked at.
struct Import<'a> {
    keys: &'a BTreeMap<String, (usize, String)>,
    notes: Vec<String>,
    used: Vec<&'static str>,
    out: Out,
}

impl<'a> Import<'a> {
    fn get(&self, k: &str) -> Option<&'a str> {
        self.keys.get(k).map(|(_, v)| v.as_str())
    }

    /// `[tcp]` and `[udp]`: which modes 1.2 ran in (Debian's init script started it with
    /// `TCP_MODE` and `UDP_MODE`) and its port lists.
    fn watch_sections(&mut self, default: Option<(&str, &str)>) {
        let modes = default.map(|(path, text)| (path, parse_default(text)));
        match &modes {
            Some((path, m)) => {
                let show =
                    |k: &str| m.get(k).map_or(format!("{k} unset"), |v| format!("{k}=\"{v}\""));
                self.out.comment(&format!(
                    "Watch modes: {}, {}, read from {path}.",
                    show("TCP_MODE"),
                    show("UDP_MODE")
                ));
            }
            None => self.out.comment(
                "Watch modes: TCP_MODE=\"tcp\", UDP_MODE=\"udp\", Debian's packaged default, as no /etc/default/portsentry was given or found (the TCP_PORTS and UDP_PORTS lists). If PortSentry ran in other modes, convert again with --default FILE.",
            ),
        }
        self.out.line("");
        for (proto, (mode_key, debian)) in ["tcp", "udp"].into_iter().zip(DEBIAN_DEFAULT_MODES) {
            let value = match &modes {
                Some((_, m)) => m.get(mode_key).map_or("", String::as_str),
                None => debian,
            };
            self.watch_section(proto, mode_key, value, debian);
        }
        self.used.extend([
            "ADVANCED_PORTS_TCP",
            "ADVANCED_PORTS_UDP",
            "ADVANCED_EXCLUDE_TCP",
            "ADVANCED_EXCLUDE_UDP",
        ]);
    }

    /// `[tcp]` or `[udp]`, where 1.2's `mode_key` was `value`.
    fn watch_section(&mut self, proto: &str, mode_key: &str, value: &str, debian: &str) {
        let up = proto.to_uppercase();
        let (mode, why) = watch_mode(proto, mode_key, value, debian);
        self.out.line(&format!("[{proto}]"));
        self.out.comment(&why);
        self.out.line(&format!("mode = {}", q(mode)));
        if let Some(p) = self.get(&format!("{up}_PORTS")) {
            match crate::core::ports::PortSet::parse(&port_list(p)) {
                Ok(set) => self.out.line(&format!(
                    "ports = {}",
                    q(&crate::core::ports::compact(&set))
                )),
                Err(e) => self
                    .notes
                    .push(format!("{up}_PORTS=\"{p}\": {e}; the default list is used")),
            }
            self.used.push(if proto == "tcp" {
                "TCP_PORTS"
            } else {
                "UDP_PORTS"
            });
        }
        let adv = format!("ADVANCED_PORTS_{up}");
        if let Some(n) = self.get(&adv).and_then(|n| n.trim().parse::<u32>().ok()) {
            self.out
                .line(&format!("advanced_below = {}", n.clamp(2, 65536)));
        }
        let exc = format!("ADVANCED_EXCLUDE_{up}");
        if let Some(e) = self.get(&exc) {
            let ports: Result<Vec<u16>, &str> = e
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|p| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or(p))
                .collect();
            match ports {
                Ok(ports) => {
                    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
                    self.out
                        .line(&format!("advanced_exclude = [{}]", list.join(", ")));
                }
                Err(bad) => self.notes.push(format!(
                    "{exc}: '{bad}' is not a port; the default exclusions are used"
                )),
            }
        }
        self.out.line("");
    }

    fn detect_section(&mut self) {
        self.out.line("[detect]");
        let trigger = self
            .get("SCAN_TRIGGER")
            .and_then(|t| t.trim().parse::<u32>().ok())
            .unwrap_or(0);
        self.out.line(&format!("trigger = {trigger}\n"));
        self.used.push("SCAN_TRIGGER");
    }

    /// `[block]`: the block modes, the commands, hosts.deny and nftables' log.
    fn block_section(&mut self, which: &dyn Fn(&str) -> Option<String>) {
        self.out.line("[block]");
        let mut command_only: Vec<&'static str> = Vec::new();
        for (proto, key) in [("tcp", "BLOCK_TCP"), ("udp", "BLOCK_UDP")] {
            match self.get(key).map(|v| (v, block_mode(v))) {
                Some((_, Some(m))) => {
                    self.out.line(&format!("{proto} = {}", q(m)));
                    if m == "command" {
                        command_only.push(key);
                    }
                }
                Some((v, None)) => self.notes.push(format!(
                    "{key}=\"{v}\" is not 0, 1 or 2; left at the default (block)"
                )),
                None => {}
            }
            self.used.push(key);
        }
        // In command mode KILL_RUN_CMD is all that runs: a DROP in it is the only block.
        let run_cover = if command_only.is_empty() {
            Cover::BySet
        } else {
            Cover::Alone(command_only)
        };
        let mut commands = Commands {
            which,
            notes: Vec::new(),
            log: None,
        };
        if let Some(cmd) = self.get("KILL_RUN_CMD").filter(|c| !c.trim().is_empty()) {
            commands.convert("KILL_RUN_CMD", "run", cmd, &run_cover, &mut self.out);
        }
        if self
            .get("KILL_RUN_CMD_FIRST")
            .is_some_and(|v| v.trim() == "1")
        {
            self.out.line("run_first = true");
        }
        if let Some(h) = self.get("KILL_HOSTS_DENY").filter(|c| !c.trim().is_empty()) {
            self.out.line(&format!("hosts_deny = {}", q(h)));
        }
        if let Some(r) = self.get("KILL_ROUTE").filter(|c| !c.trim().is_empty()) {
            // The route runs only with a block, so the nft set is always there.
            commands.convert("KILL_ROUTE", "route", r, &Cover::BySet, &mut self.out);
        }
        commands.write_log(&mut self.out);
        self.notes.append(&mut commands.notes);
        self.used.extend([
            "KILL_RUN_CMD",
            "KILL_RUN_CMD_FIRST",
            "KILL_HOSTS_DENY",
            "KILL_ROUTE",
        ]);
        self.out.line("");
    }

    /// `[ignore]`: loopback, the ignore file's entries (a bad line stops the conversion),
    /// or the `IGNORE_FILE` it names when none was given.
    fn ignore_section(&mut self, ignore: Option<(&str, &str)>) -> Result<(), LegacyError> {
        self.out.line("[ignore]");
        let mut addrs: Vec<ipnet::IpNet> = vec![
            "127.0.0.0/8".parse().expect("net"),
            "::1/128".parse().expect("net"),
        ];
        if let Some((path, text)) = ignore {
            let file = parse_ignore_file(path, text);
            if let Some(e) = file.errors.into_iter().next() {
                return Err(LegacyError {
                    path: e.path,
                    line: e.line,
                    message: format!("{}: '{}'", e.message, e.text),
                });
            }
            // 0.0.0.0 is in every 1.2 ignore file "to keep people from playing games"; it
            // is never blocked here anyway. Entries already covered are left out.
            for n in file.nets {
                if n.to_string() != "0.0.0.0/32" && !addrs.iter().any(|a| a.contains(&n)) {
                    addrs.push(n);
                }
            }
        } else if let Some(f) = self.get("IGNORE_FILE") {
            self.out.line(&format!("file = {}", q(f)));
        }
        self.used.push("IGNORE_FILE");
        self.out.line(&format!(
            "addresses = [{}]\n",
            addrs
                .iter()
                .map(|a| q(&a.to_string()))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        Ok(())
    }

    fn files_and_log_sections(&mut self) {
        self.out.line("[files]");
        if let Some(h) = self.get("HISTORY_FILE") {
            self.out.line(&format!("history = {}", q(h)));
        }
        if let Some(b) = self.get("BLOCKED_FILE") {
            self.out.line(&format!("blocked = {}", q(b)));
        }
        self.used.extend(["HISTORY_FILE", "BLOCKED_FILE"]);
        self.out.line("");
        self.out.line("[log]");
        self.out.line(&format!(
            "resolve_host = {}",
            self.get("RESOLVE_HOST").is_some_and(|v| v.trim() == "1")
        ));
        self.used.push("RESOLVE_HOST");
    }

    /// The TOML, with every key that has no equivalent listed at its end.
    fn finish(mut self) -> String {
        if self.get("PORT_BANNER").is_some() {
            self.notes.push("PORT_BANNER has no equivalent: portsentry never answers a probe (the scanner learns nothing)".into());
            self.used.push("PORT_BANNER");
        }
        for (k, (line, v)) in self.keys {
            if !self.used.contains(&k.as_str()) {
                self.notes.push(format!(
                    "{k}=\"{}\" (line {line}) has no equivalent",
                    shown(v)
                ));
            }
        }
        if !self.notes.is_empty() {
            self.out.line("\n# Not converted:");
            for n in &self.notes {
                self.out.line(&format!("# - {}", comment_safe(n)));
            }
        }
        self.out.0
    }
}

/// The watch mode for 1.2's `mode_key`=`value`, and the comment that says why.
fn watch_mode(proto: &str, mode_key: &str, value: &str, debian: &str) -> (&'static str, String) {
    let up = proto.to_uppercase();
    if value.is_empty() {
        (
            "off",
            format!("{mode_key} is unset: 1.2's init script did not start {up} detection."),
        )
    } else if value == format!("a{proto}") {
        (
            "advanced",
            format!(
                "{mode_key}=\"{value}\": every port below advanced_below that nothing listens on."
            ),
        )
    } else if value == proto || value == format!("s{proto}") {
        (
            "ports",
            format!("{mode_key}=\"{value}\": the ports of {up}_PORTS."),
        )
    } else {
        (
            "ports",
            format!("{mode_key}=\"{value}\" is not {proto}, s{proto} or a{proto} (1.2's init script refused it); Debian's default \"{debian}\" is used: the ports of {up}_PORTS."),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BlockLog, Config, RatePer, WatchMode};
    use crate::core::detector::Action;
    use proptest::prelude::*;

    const DEBIAN_SHIPPED: &str = include_str!("../../../tests/data/legacy/debian-1.2-14.conf");
    const WIKI: &str = include_str!("../../../tests/data/legacy/wiki-debian-fr.conf");
    const WIKI_DEFAULT: &str = include_str!("../../../tests/data/legacy/wiki-debian-fr.default");
    const LOG_ONLY_2_0: &str =
        include_str!("../../../tests/data/legacy/portsentry-2.0-log-only.conf");

    /// A host where iptables, logger and true are installed, and nothing else.
    fn which(name: &str) -> Option<String> {
        match name {
            "iptables" | "ip6tables" | "route" | "ip" => Some(format!("/usr/sbin/{name}")),
            "logger" | "true" | "touch" => Some(format!("/usr/bin/{name}")),
            _ => None,
        }
    }

    fn nowhere(_: &str) -> Option<String> {
        None
    }

    /// Imports and checks the result the way check-config does.
    fn convert(conf: &str, default: Option<&str>) -> (String, Config) {
        let toml = import(
            "/etc/portsentry/portsentry.conf",
            conf,
            default.map(|d| ("/etc/default/portsentry", d)),
            None,
            &which,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let cfg = Config::parse("imported.toml", &toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        (toml, cfg)
    }

    /// The comments as running text: wrapping is layout, not content.
    fn prose(toml: &str) -> String {
        toml.replace("\n# ", " ")
    }

    fn block(conf: &str) -> String {
        let (toml, _) = convert(conf, None);
        let start = toml.find("[block]").unwrap();
        let end = toml[start..].find("\n[ignore]").unwrap();
        toml[start..start + end].to_string()
    }

    /// A Debian host edited the way the 1.2 documentation suggests: command mode for TCP,
    /// an iptables pair in KILL_RUN_CMD.
    const DEBIAN_EDITED: &str = r#"
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
    fn debian_shipped_config_converts_with_debian_default_modes() {
        let (toml, cfg) = convert(DEBIAN_SHIPPED, None);
        // No /etc/default/portsentry: Debian's packaged tcp/udp, the port lists, said so.
        assert!(
            prose(&toml).contains("Watch modes: TCP_MODE=\"tcp\", UDP_MODE=\"udp\", Debian's packaged default, as no /etc/default/portsentry was given or found"),
            "{toml}"
        );
        assert!(toml.contains("# TCP_MODE=\"tcp\": the ports of TCP_PORTS.\nmode = \"ports\"\n"));
        assert_eq!(
            (cfg.tcp.mode, cfg.udp.mode),
            (WatchMode::Ports, WatchMode::Ports)
        );
        assert_eq!((cfg.tcp.ports.len(), cfg.udp.ports.len()), (26, 21));
        assert_eq!((cfg.block_tcp, cfg.block_udp), (Action::Off, Action::Off));
        // The reject route is the nft set's job; hosts.deny is kept.
        assert!(cfg.actions.route.is_empty() && cfg.actions.run.is_empty());
        assert!(
            prose(&toml).contains("KILL_ROUTE: \"/sbin/route add -host $TARGET$ reject\" is not run: the nft set (blocked4, blocked6) already drops all the scanner's traffic"),
            "{toml}"
        );
        assert_eq!(cfg.actions.hosts_deny.unwrap().0, "ALL: $TARGET$ : DENY");
        assert_eq!(
            cfg.history.to_str(),
            Some("/var/lib/portsentry/portsentry.history")
        );
        assert!(!toml.contains("# Not converted"), "{toml}");
    }

    #[test]
    fn the_wiki_config_converts_to_the_nft_set_hosts_deny_and_the_log() {
        let (toml, cfg) = convert(WIKI, Some(WIKI_DEFAULT));
        assert!(toml.contains(
            "# Watch modes: TCP_MODE=\"atcp\", UDP_MODE=\"audp\", read from /etc/default/portsentry."
        ));
        assert_eq!(
            (cfg.tcp.mode, cfg.udp.mode),
            (WatchMode::Advanced, WatchMode::Advanced)
        );
        assert_eq!(
            (cfg.block_tcp, cfg.block_udp),
            (Action::Block, Action::Block)
        );
        assert!(
            cfg.actions.run.is_empty() && cfg.actions.route.is_empty(),
            "{toml}"
        );
        assert_eq!(cfg.actions.hosts_deny.unwrap().0, "ALL: $TARGET$ : DENY");
        assert_eq!(
            cfg.block_log,
            Some(BlockLog {
                prefix: "Portsentry: dropping: ".into(),
                rate: 3,
                per: RatePer::Minute,
                burst: 5
            })
        );
        for said in [
            "KILL_RUN_CMD: \"/sbin/iptables -I INPUT -s $TARGET$ -j DROP\" is not run: the nft set (blocked4, blocked6) already drops everything from the scanner.",
            "is not run: the nft set (blocked4, blocked6) already drops all the scanner's traffic",
            "To keep it anyway, add it to [block] route: [\"/sbin/route\", \"add\", \"-host\", \"$TARGET$\", \"reject\"]",
            "nftables logs the packets it drops because their source is blocked instead",
            "Its --log-level debug is not carried over: nftables logs at level warn.",
        ] {
            assert!(prose(&toml).contains(said), "{said}\n{toml}");
        }
        assert!(!toml.contains("# Not converted"), "{toml}");
    }

    #[test]
    fn edited_debian_config_keeps_its_iptables_pair_in_command_mode() {
        let (toml, cfg) = convert(
            DEBIAN_EDITED,
            Some("TCP_MODE=\"atcp\"\nUDP_MODE=\"sudp\"\n"),
        );
        assert_eq!(
            (cfg.tcp.mode, cfg.udp.mode),
            (WatchMode::Advanced, WatchMode::Ports)
        );
        assert!(cfg.udp.ports.contains(54321) && !cfg.udp.ports.contains(53));
        assert_eq!(
            (cfg.block_tcp, cfg.block_udp, cfg.trigger),
            (Action::Command, Action::Block, 2)
        );
        // BLOCK_TCP="2": KILL_RUN_CMD is the only block TCP scanners get, so it stays.
        assert_eq!(
            cfg.actions.run,
            vec![
                vec![
                    "/sbin/iptables",
                    "-I",
                    "INPUT",
                    "-s",
                    "$TARGET$",
                    "-j",
                    "DROP"
                ],
                vec![
                    "/sbin/iptables",
                    "-I",
                    "INPUT",
                    "-s",
                    "$TARGET$",
                    "-j",
                    "LOG"
                ],
            ]
        );
        assert!(
            prose(&toml).contains(
                "KILL_RUN_CMD: kept whole, as BLOCK_TCP=\"2\" runs it alone, without the nft set."
            ),
            "{toml}"
        );
        assert!(cfg.actions.route.is_empty());
        assert_eq!(cfg.block_log, None);
        assert!(toml.contains("# - PORT_BANNER has no equivalent"), "{toml}");
    }

    #[test]
    fn log_only_2_0_config_converts() {
        let (toml, cfg) = convert(LOG_ONLY_2_0, None);
        assert_eq!((cfg.block_tcp, cfg.block_udp), (Action::Off, Action::Off));
        assert_eq!(cfg.tcp.ports.iter().collect::<Vec<_>>(), vec![1, 11, 22]);
        assert_eq!(
            cfg.history.to_str(),
            Some("/tmp/portsentry-test/portsentry.history")
        );
        assert_eq!(cfg.actions.hosts_deny.unwrap().0, "ALL: $TARGET$");
        assert!(!toml.contains("# Not converted"), "{toml}");
    }

    #[test]
    fn bare_program_names_are_resolved_and_said_so() {
        let b = block("BLOCK_TCP=\"1\"\nKILL_RUN_CMD=\"true $TARGET$\"\nKILL_ROUTE=\"logger -t portsentry route $TARGET$\"\n");
        assert!(
            prose(&b).contains("KILL_RUN_CMD: 'true' resolved to /usr/bin/true on this host (1.2's shell searched PATH for it).\nrun = [\"/usr/bin/true\", \"$TARGET$\"]"),
            "{b}"
        );
        assert!(
            b.contains(
                "route = [\"/usr/bin/logger\", \"-t\", \"portsentry\", \"route\", \"$TARGET$\"]"
            ),
            "{b}"
        );
        // Not on this host: a located, explained comment, nothing run.
        let toml = import(
            "p.conf",
            "KILL_RUN_CMD=\"mailx -s scan root\"\n",
            None,
            None,
            &nowhere,
        )
        .unwrap();
        assert!(
            toml.contains("# - KILL_RUN_CMD is not converted: 'mailx' is not found on this host's PATH; install it, or write its absolute path;"),
            "{toml}"
        );
        Config::parse("t", &toml).unwrap();
        for (cmd, says) in [
            ("bin/report $TARGET$", "'bin/report' is a relative path"),
            ("sh -c 'logger $TARGET$'", "'sh -c' runs a shell"),
            (
                "/bin/bash -ec 'logger $TARGET$'",
                "'/bin/bash -c' runs a shell",
            ),
            ("'' $TARGET$", "the program name is empty"),
        ] {
            let toml = import(
                "p.conf",
                &format!("KILL_RUN_CMD=\"{cmd}\"\n"),
                None,
                None,
                &which,
            )
            .unwrap();
            assert!(toml.contains(says), "{cmd}: {toml}");
            assert!(Config::parse("t", &toml).unwrap().actions.run.is_empty());
        }
    }

    #[test]
    fn sequences_become_lists_of_commands() {
        let b = block("KILL_RUN_CMD=\"/usr/bin/logger -t ps 'scan from $TARGET$' && touch /var/run/$TARGET$\"\n");
        assert!(
            b.contains("run = [\n  [\"/usr/bin/logger\", \"-t\", \"ps\", \"scan from $TARGET$\"],\n  [\"/usr/bin/touch\", \"/var/run/$TARGET$\"],\n]\n"),
            "{b}"
        );
        let b = block("KILL_RUN_CMD=\"/bin/a; /bin/b >/dev/null 2>&1;\"\n");
        assert!(
            prose(&b).contains("after a ';' the old command went on regardless."),
            "{b}"
        );
        assert!(
            prose(&b).contains("the redirections to /dev/null are dropped"),
            "{b}"
        );
        // Idioms leave the sequence; what is left still runs, in order.
        let (_, cfg) = convert(
            "KILL_RUN_CMD=\"iptables -I INPUT -s $TARGET$ -j DROP && /usr/local/bin/notify $TARGET$ $PORT$ && ipset add scanners $TARGET$\"\n",
            None,
        );
        assert_eq!(
            cfg.actions.run,
            vec![vec!["/usr/local/bin/notify", "$TARGET$", "$PORT$"]]
        );
        // One command a shell is needed for: none of the sequence runs.
        let toml = import(
            "p.conf",
            "KILL_RUN_CMD=\"logger $TARGET$ && echo $TARGET$ | mail root\"\n",
            None,
            None,
            &which,
        )
        .unwrap();
        assert!(
            toml.contains("# - KILL_RUN_CMD is not converted (a sequence runs whole or not at all): 'echo $TARGET$ | mail root' needs a shell for a pipe ('|');"),
            "{toml}"
        );
        assert!(Config::parse("t", &toml).unwrap().actions.run.is_empty());
        // Nor is a name said to be resolved for a command that does not run.
        assert!(!toml.contains("resolved"), "{toml}");
    }

    #[test]
    fn the_mode_comes_from_the_default_file_or_debian() {
        for (default, tcp, udp, says) in [
            (None, WatchMode::Ports, WatchMode::Ports, "Debian's packaged default"),
            (Some("TCP_MODE=\"atcp\"\nUDP_MODE=\"audp\"\n"), WatchMode::Advanced, WatchMode::Advanced, "read from"),
            (Some("TCP_MODE=stcp\nUDP_MODE='sudp' # stealth\n"), WatchMode::Ports, WatchMode::Ports, "TCP_MODE=\"stcp\""),
            (Some("export TCP_MODE=\"atcp\"\n"), WatchMode::Advanced, WatchMode::Off, "UDP_MODE is unset: 1.2's init script did not start UDP detection."),
            (Some("# nothing\n"), WatchMode::Off, WatchMode::Off, "TCP_MODE unset, UDP_MODE unset"),
            (Some("TCP_MODE=\"\"\nUDP_MODE=\"audp\"\n"), WatchMode::Off, WatchMode::Advanced, "TCP_MODE=\"\""),
            (Some("TCP_MODE=\"udp\"\nUDP_MODE=\"audp\"\n"), WatchMode::Ports, WatchMode::Advanced, "is not tcp, stcp or atcp (1.2's init script refused it); Debian's default \"tcp\" is used"),
            (Some("if [ -x /bin/true ]; then\nTCP_MODE=\"atcp\"\nfi\n"), WatchMode::Advanced, WatchMode::Off, "read from"),
        ] {
            let (toml, cfg) = convert("BLOCK_TCP=\"1\"\n", default);
            assert_eq!((cfg.tcp.mode, cfg.udp.mode), (tcp, udp), "{default:?}\n{toml}");
            assert!(prose(&toml).contains(says), "{default:?}: {says}\n{toml}");
        }
    }

    #[test]
    fn bad_line_is_located() {
        let e = import(
            "p.conf",
            "TCP_PORTS=\"1\"\nthis is not a key\n",
            None,
            None,
            &which,
        )
        .unwrap_err();
        assert_eq!((e.line, e.path.as_str()), (2, "p.conf"));
        // The wiki's KILL_RUN_CMD pasted as the page shows it, over two lines.
        let pasted = WIKI.replace("--log-level debug", "--log-level\ndebug");
        let e = import("wiki.conf", &pasted, None, None, &which).unwrap_err();
        assert_eq!(
            e.line,
            WIKI.lines()
                .position(|l| l.starts_with("KILL_RUN_CMD"))
                .unwrap()
                + 2
        );
    }

    /// Found by `cargo fuzz run legacy`: control characters and bad values must not make
    /// the output invalid.
    #[test]
    fn hostile_values_still_give_a_valid_config() {
        let long = format!("KILL_RUN_CMD=\"/bin/echo {}\"\n", "x".repeat(1 << 20));
        // (text, commands it may run)
        for (conf, runs) in [
            ("\u{8}=\"\"\n", 0),
            ("TCP_PORTS=\"1,,x\"\nADVANCED_EXCLUDE_UDP=\"a]\"\n", 0),
            ("ADVANCED_EXCLUDE_TCP=\"0\"\n", 0),
            ("KILL_RUN_CMD=\"/bin/a 'unbalanced\"\n", 0),
            ("KILL_RUN_CMD=\"/bin/a \"unbalanced\"\n", 0),
            ("KILL_RUN_CMD=\"/bin/a \u{1b}[31m $TARGET$\"\n", 0),
            ("KILL_RUN_CMD=\"/bin/a $(reboot)\"\n", 0),
            ("KILL_RUN_CMD=\"/bin/a `reboot`\"\n", 0),
            ("KILL_RUN_CMD=\"/bin/a && && /bin/b\"\n", 0),
            ("KILL_RUN_CMD=\";\"\n", 0),
            ("KILL_RUN_CMD=\"/bin/a;\"\n", 1),
            ("KILL_RUN_CMD=\"/bin/a; /bin/b ;\"\n", 2),
            ("KILL_RUN_CMD=\"&&\"\n", 0),
            ("KILL_RUN_CMD=\"   \"\n", 0),
            ("KILL_RUN_CMD=\"# only a comment\"\n", 0),
            ("KILL_RUN_CMD=\"''\"\n", 0),
            ("KILL_RUN_CMD=\"/bin/a '\u{0}'\"\n", 0),
            ("KILL_ROUTE=\"/bin/a \\\\\"\n", 1),
            ("KILL_ROUTE=\"/bin/a \\\"\n", 0),
            ("KILL_RUN_CMD=\"iptables -I INPUT -s $TARGET$ -j LOG --log-prefix 'a\\\"b'\"\n", 0),
            ("KILL_RUN_CMD=\"iptables -I INPUT -s $TARGET$ -j LOG --log-prefix ''\"\n", 0),
            ("KILL_RUN_CMD=\"iptables -I INPUT -s $TARGET$ -j LOG --log-prefix '\u{e9}t\u{e9}'\"\n", 0),
            ("KILL_HOSTS_DENY=\"ALL: $TARGET$ \u{7f}\"\n", 0),
            (long.as_str(), 1),
        ] {
            let toml = import("p.conf", conf, Some(("d", "TCP_MODE=\"\u{1}\"\n")), None, &which)
                .unwrap_or_else(|e| panic!("{conf:?}: {e}"));
            let cfg = Config::parse("t", &toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
            assert_eq!(cfg.actions.run.len() + cfg.actions.route.len(), runs, "{conf:?}\n{toml}");
        }
    }

    #[test]
    fn unknown_keys_become_comments() {
        let toml = import("p.conf", "WEIRD_KEY=\"x\"\n", None, None, &which).unwrap();
        assert!(toml.contains("# - WEIRD_KEY=\"x\" (line 1) has no equivalent"));
        Config::parse("t", &toml).unwrap();
    }

    /// Pieces 1.2 configurations are made of, hostile ones included.
    fn fragment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("$TARGET$".to_string()),
            Just(" && ".to_string()),
            Just(";".to_string()),
            Just("|".to_string()),
            Just("'".to_string()),
            Just("\"".to_string()),
            Just("\\".to_string()),
            Just("$(".to_string()),
            Just(">/dev/null 2>&1".to_string()),
            Just("iptables -I INPUT -s $TARGET$ -j DROP".to_string()),
            Just("-m limit --limit 3/minute -j LOG --log-prefix 'p: '".to_string()),
            Just("/sbin/route add -host $TARGET$ reject".to_string()),
            Just("true".to_string()),
            "[ -~]{0,8}",
            "[\u{0}-\u{1f}\u{7f}]",
            "[a-z/]{1,10}",
        ]
    }

    fn conf_line() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            Just("KILL_RUN_CMD"),
            Just("KILL_ROUTE"),
            Just("KILL_HOSTS_DENY"),
            Just("BLOCK_TCP"),
            Just("BLOCK_UDP"),
            Just("TCP_PORTS"),
            Just("ADVANCED_EXCLUDE_TCP"),
            Just("SCAN_TRIGGER"),
            Just("HISTORY_FILE"),
            Just("WHATEVER"),
        ];
        (key, prop::collection::vec(fragment(), 0..8))
            .prop_map(|(k, v)| format!("{k}=\"{}\"", v.concat()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever the 1.2 files say, the result is a configuration check-config accepts,
        /// or an error that names a line of the file.
        #[test]
        fn any_legacy_text_gives_a_valid_config_or_a_located_error(
            lines in prop::collection::vec(prop_oneof![conf_line(), "[ -~]{0,20}"], 0..8),
            default in prop::option::of(prop::collection::vec(fragment(), 0..6)),
        ) {
            let conf = lines.join("\n");
            let default = default.map(|d| format!("TCP_MODE=\"{}\"\nUDP_MODE={}", d.concat(), d.concat()));
            match import("p.conf", &conf, default.as_deref().map(|d| ("d", d)), None, &which) {
                Ok(toml) => {
                    if let Err(e) = Config::parse("imported.toml", &toml) {
                        prop_assert!(false, "{}\n{}", e, toml);
                    }
                }
                Err(e) => prop_assert!(e.path == "p.conf" && (1..=conf.lines().count()).contains(&e.line), "{e}"),
            }
        }
    }
}
