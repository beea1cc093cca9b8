//! Configuration: TOML text → raw structs (serde, unknown keys rejected) → validated
//! `Config` → the settings each component gets (`settings`). Every error names the file,
//! line and column.
//!
//! This file is the public face: loading (`Config::load…`, `parse`) and the re-exports,
//! so the other layers name `config::X` whatever file X is in. The rest, by concern:
//! `raw` (the serde structs as written), `validate` (raw → `Config`, one step per
//! section), `model` (`Config` and its parts, the defaults), `units` (durations, rates),
//! `crowdsec` (the LAPI URL, the credentials and key files), `error` (located errors,
//! trusted files), `restart` (the settings a reload cannot change). Those import one
//! another, never this file; `settings` and `legacy` (import-legacy) use it as the other
//! layers do.
//!
//! May use: `core`, `system` (file checks), and the types of the components it configures
//! (`firewall`, `dataplane`). Nothing else: every component takes its settings from here.

mod crowdsec;
mod error;
pub mod legacy;
mod model;
mod raw;
mod restart;
pub mod settings;
mod units;
mod validate;

pub use crowdsec::{
    lapi_url, parse_credentials, Crowdsec, LapiUrlError, NoCredentials, Secrets, UrlProblem,
    MAX_MAX_DECISIONS, MAX_PULL_INTERVAL,
};
pub use error::{ConfigError, Located};
pub use model::{
    default_queues, ActionsConfig, BlockLog, Config, Watch, DEFAULT_INCLUDE, DEFAULT_PATH,
    DEFAULT_SOCKET, DEFAULT_TCP_PORTS, DEFAULT_UDP_PORTS, MAX_QUEUES,
};
pub use raw::{
    RawBlock, RawCommands, RawConfig, RawControl, RawCrowdsec, RawDetect, RawFiles, RawFirewall,
    RawIgnore, RawLog, RawMetrics, RawQueue, RawWatch, SteeringChoice, WatchMode,
};
pub use restart::RestartOnly;
pub use units::{
    parse_coalesce, parse_duration, parse_log_rate, CoalesceError, DurationError, RateError,
    RatePer, DEFAULT_COALESCE, MAX_COALESCE,
};
pub use validate::{log_prefix_problem, DEFAULT_LOG_BURST, DEFAULT_LOG_RATE};

use crate::core::ignore::{parse_ignore_file, IgnoreFile};
use error::trusted;
use std::ops::Range;
use std::path::Path;
use validate::Validator;

/// The ignore file: its entries and each bad line; an unreadable file is said so.
fn read_ignore_file(path: &Path) -> IgnoreFile {
    let shown = path.display().to_string();
    match std::fs::read(path) {
        Ok(bytes) => parse_ignore_file(&shown, &String::from_utf8_lossy(&bytes)),
        Err(e) => IgnoreFile {
            unreadable: Some(format!("{shown}: {e}")),
            ..IgnoreFile::default()
        },
    }
}

// ---------------------------------------------------------------- loading

impl Config {
    /// `run` with no `-c`: the system file when present, else built-in defaults.
    ///
    /// # Errors
    /// As `load`.
    pub fn load_default() -> Result<Config, ConfigError> {
        if Path::new(DEFAULT_PATH).exists() {
            Config::load(Path::new(DEFAULT_PATH))
        } else {
            Config::parse("<built-in defaults>", "")
        }
    }

    /// What the daemon, a reload and `check-config` read: the file, refused if others could
    /// change it (it names commands run as root), and the ignore file it names, held to
    /// the same rule (an entry there means "never block"). Bad ignore lines are returned,
    /// not fatal: the rest of the file still protects.
    ///
    /// # Errors
    /// As `load`; also a configuration, ignore or `[crowdsec]` file others could change, and
    /// a `[crowdsec]` file that cannot be read or does not hold what it should.
    pub fn load_trusted(path: Option<&Path>) -> Result<(Config, Option<IgnoreFile>), ConfigError> {
        let cfg = match path {
            Some(p) => Config::load(p)?,
            None => Config::load_default()?,
        };
        if let Some(p) = &cfg.source {
            trusted(p)?;
        }
        let ignore = match &cfg.ignore_file {
            // A missing file is reported by the caller and does not stop protection; one
            // that others can write is refused with the configuration.
            Some(p) => Some(match trusted(p) {
                Err(ConfigError::Io { path, source }) => IgnoreFile {
                    unreadable: Some(format!("{path}: {source}")),
                    ..IgnoreFile::default()
                },
                Err(e) => return Err(e),
                Ok(()) => read_ignore_file(p),
            }),
            None => None,
        };
        let mut cfg = cfg;
        if let Some(cs) = &mut cfg.crowdsec {
            cs.secrets = crowdsec::read_secrets(cs)?;
        }
        Ok((cfg, ignore))
    }

    /// # Errors
    /// The file cannot be read, or as `parse`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: shown.clone(),
            source,
        })?;
        let mut cfg = Config::parse(&shown, &text)?;
        cfg.source = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// # Errors
    /// The first mistake in `text`, located (`ConfigError::Invalid`).
    pub fn parse(path: &str, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let message = with_suggestion(e.message().trim_end());
            ConfigError::Invalid(Located::at(path, text, span, message))
        })?;
        let err = |span: Range<usize>, msg: String| {
            ConfigError::Invalid(Located::at(path, text, span, msg))
        };
        Validator { err: &err }.validate(raw)
    }
}

/// serde says "unknown field `prots`, expected one of `mode`, `ports`, …"; name the
/// closest valid key too.
fn with_suggestion(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_string();
    };
    let Some((bad, expected)) = rest.split_once('`') else {
        return message.to_string();
    };
    let best = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|k| (strsim::levenshtein(bad, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min();
    match best {
        Some((_, k)) => format!("{message}; did you mean `{k}`?"),
        None => message.to_string(),
    }
}

/// Every section and the keys each accepts, as the deserializer itself reports them (so
/// documentation tests compare against the code, not against a hand-kept list).
#[must_use]
pub fn known_keys() -> Vec<(String, Vec<String>)> {
    fn expected(text: &str) -> Vec<String> {
        let err = toml::from_str::<RawConfig>(text).expect_err("unknown key is rejected");
        let msg = err.message().to_string();
        let list = msg
            .split("expected one of")
            .nth(1)
            .or_else(|| msg.split("expected").nth(1))
            .unwrap_or("");
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    }
    expected("__unknown = 1\n")
        .into_iter()
        .map(|section| {
            let keys = expected(&format!("[{section}]\n__unknown = 1\n"));
            (section, keys)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::detector::Action;
    use std::time::Duration;

    /// The exact shape the issue fixes as the contract.
    pub const CONTRACT: &str = r#"
[queue]
num = 0
[tcp]
mode = "advanced"
ports = "1,11,15,79,111,12345-12346"
advanced_below = 1024
advanced_exclude = [113, 139]
[udp]
mode = "advanced"
ports = "1,7,9,69,161"
advanced_below = 1024
advanced_exclude = [520, 138, 137, 67]
[detect]
trigger = 0
[block]
tcp = "block"
udp = "block"
timeout = "1h"
[ignore]
addresses = ["127.0.0.0/8", "::1/128"]
[files]
state_dir = "/var/lib/portsentry"
history = "/var/lib/portsentry/portsentry.history"
blocked = "/var/lib/portsentry/portsentry.blocked"
"#;

    fn invalid(text: &str) -> Located {
        match Config::parse("t.toml", text) {
            Err(ConfigError::Invalid(l)) => l,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn contract_parses_and_equals_defaults() {
        let c = Config::parse("t.toml", CONTRACT).unwrap();
        let d = Config::parse("t.toml", "").unwrap();
        assert_eq!(c.tcp.ports, d.tcp.ports);
        assert_eq!(c.udp.ports, d.udp.ports);
        assert_eq!(c.tcp.ports.len(), 1023 - 2);
        assert!(!c.tcp.ports.contains(113) && c.tcp.ports.contains(111));
        assert!(!c.udp.ports.contains(67) && c.udp.ports.contains(161));
        assert_eq!(c.block_timeout, Some(Duration::from_secs(3600)));
        assert_eq!(c.ignore, d.ignore);
        assert_eq!(c.history, d.history);
        assert_eq!((c.block_tcp, c.trigger, c.queue_num), (Action::Block, 0, 0));
    }

    #[test]
    fn the_queues_always_fit_below_65536() {
        // The default (CPUs, up to 8) fits what is left above num.
        for num in [65535u16, 65534, 65530] {
            let c = Config::parse("t", &format!("[queue]\nnum = {num}\n")).unwrap();
            assert!(c.queues >= 1, "{num}");
            assert!(
                u32::from(c.queue_num) + u32::from(c.queues) <= 65536,
                "num {num}: {} queues",
                c.queues
            );
        }
        // Asked for, it is an error.
        assert!(Config::parse("t", "[queue]\nnum = 65535\nqueues = 2\n").is_err());
        assert_eq!(
            Config::parse("t", "[queue]\nnum = 65534\nqueues = 2\n")
                .unwrap()
                .queues,
            2
        );
    }

    #[test]
    fn coalesce_is_off_or_at_most_a_millisecond() {
        let c = |t: &str| Config::parse("t", &format!("[queue]\ncoalesce = \"{t}\"\n"));
        assert_eq!(
            Config::parse("t", "").unwrap().queue_coalesce,
            Duration::from_micros(100)
        );
        assert_eq!(c("0").unwrap().queue_coalesce, Duration::ZERO);
        assert_eq!(
            c("250us").unwrap().queue_coalesce,
            Duration::from_micros(250)
        );
        assert_eq!(c("1ms").unwrap().queue_coalesce, Duration::from_millis(1));
        for bad in ["2ms", "1s", "fast", "-1us", ""] {
            let e = c(bad).unwrap_err().to_string();
            assert!(e.contains("coalesce"), "{bad}: {e}");
        }
    }

    #[test]
    fn ports_mode_uses_the_list() {
        let c = Config::parse(
            "t",
            "[tcp]\nmode = \"ports\"\nports = \"1,11,12345-12346\"\n",
        )
        .unwrap();
        assert_eq!(
            c.tcp.ports.iter().collect::<Vec<_>>(),
            vec![1, 11, 12345, 12346]
        );
    }

    #[test]
    fn unknown_key_is_located() {
        let l = invalid("[tcp]\nmode = \"ports\"\nprots = \"1\"\n");
        assert_eq!((l.line, l.column), (3, 1));
        assert!(l.message.contains("unknown field `prots`"), "{}", l.message);
    }

    #[test]
    fn shipped_example_config_is_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/portsentry.toml");
        let c = Config::load(Path::new(path)).unwrap_or_else(|e| panic!("{e}"));
        let d = Config::parse("t", "").unwrap();
        // The example shows the defaults.
        assert_eq!(
            (c.tcp.ports.len(), c.udp.ports.len()),
            (d.tcp.ports.len(), d.udp.ports.len())
        );
        assert_eq!(c.block_timeout, d.block_timeout);
        assert_eq!(c.control_socket, d.control_socket);
    }

    /// The `[crowdsec]` names the issue fixes as the contract.
    #[test]
    fn crowdsec_contract_parses() {
        let c = Config::parse(
            "t",
            r#"
[crowdsec]
lapi_url = "https://lapi.example:8080/"
credentials = "/etc/portsentry/crowdsec-machine.yaml"
bouncer_key_file = "/etc/portsentry/crowdsec-bouncer.key"
pull_interval = "10s"
"#,
        )
        .unwrap();
        let cs = c.crowdsec.unwrap();
        assert_eq!(cs.lapi_url, "https://lapi.example:8080");
        assert_eq!(cs.lapi_addr(), None);
        assert_eq!(cs.pull_interval, Duration::from_secs(10));
        assert_eq!(cs.max_decisions, crate::core::policy::DEFAULT_MAX_DECISIONS);
        assert!(Config::parse("t", "").unwrap().crowdsec.is_none());
        assert!(Config::parse("t", "[crowdsec]\n")
            .unwrap()
            .crowdsec
            .is_none());
        let pull_only = Config::parse(
            "t",
            "[crowdsec]\nlapi_url = \"http://[2001:db8::10]:8080\"\nbouncer_key_file = \"/k\"\n",
        )
        .unwrap();
        let cs = pull_only.crowdsec.unwrap();
        assert!(cs.credentials.is_none());
        assert_eq!(cs.lapi_addr(), "2001:db8::10".parse().ok());
    }

    #[test]
    fn crowdsec_mistakes_are_located() {
        for (text, says) in [
            (
                "lapi_url = \"ftp://x\"\ncredentials = \"/c\"",
                "http:// or https://",
            ),
            (
                "lapi_url = \"http://:8080\"\ncredentials = \"/c\"",
                "no host",
            ),
            (
                "lapi_url = \"http://x:99999\"\ncredentials = \"/c\"",
                "bad port",
            ),
            (
                "lapi_url = \"http://u:p@x\"\ncredentials = \"/c\"",
                "credentials",
            ),
            ("lapi_url = \"http://x\"", "nothing to do"),
            ("credentials = \"/c\"", "needs lapi_url"),
            (
                "lapi_url = \"http://x\"\ncredentials = \"/c\"\npull_interval = \"2h\"",
                "at most 1h",
            ),
            (
                "lapi_url = \"http://x\"\ncredentials = \"/c\"\npull_interval = \"0\"",
                "not allowed",
            ),
            (
                "lapi_url = \"http://x\"\ncredentials = \"/c\"\nmax_decisions = 0",
                "max_decisions",
            ),
            (
                "lapi_url = \"http://x\"\ncredentials = \"\"",
                "must not be empty",
            ),
        ] {
            let l = invalid(&format!("[crowdsec]\n{text}\n"));
            assert!(l.message.contains(says), "{text}: {}", l.message);
        }
    }

    /// The files are held to the configuration's rule, and their secrets never printed.
    #[test]
    fn crowdsec_files_must_be_trusted_and_secrets_stay_hidden() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ps-cs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let creds = dir.join("machine.yaml");
        let key = dir.join("bouncer.key");
        std::fs::write(&creds, "login: a\npassword: topsecret\n").unwrap();
        std::fs::write(&key, "k3y\n").unwrap();
        let cfg = dir.join("p.toml");
        std::fs::write(
            &cfg,
            format!(
                "[crowdsec]\nlapi_url = \"http://192.0.2.10:8080\"\ncredentials = \"{}\"\nbouncer_key_file = \"{}\"\n",
                creds.display(),
                key.display()
            ),
        )
        .unwrap();
        for p in [&creds, &key, &cfg] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let (c, _) = Config::load_trusted(Some(&cfg)).unwrap();
        let s = &c.crowdsec.as_ref().unwrap().secrets;
        assert_eq!(s.machine, Some(("a".into(), "topsecret".into())));
        assert_eq!(s.bouncer_key.as_deref(), Some("k3y"));
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("topsecret") && !shown.contains("k3y"),
            "{shown}"
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(matches!(
            Config::load_trusted(Some(&cfg)),
            Err(ConfigError::UnsafeSecret(_))
        ));
        std::fs::remove_file(&key).unwrap();
        assert!(matches!(
            Config::load_trusted(Some(&cfg)),
            Err(ConfigError::Io { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_key_gets_the_closest_suggestion() {
        let l = invalid("[tcp]\nprots = \"1\"\n");
        assert!(
            l.message.ends_with("did you mean `ports`?"),
            "{}",
            l.message
        );
        let l = invalid("[blok]\n");
        assert!(
            l.message.ends_with("did you mean `block`?"),
            "{}",
            l.message
        );
        let l = invalid("[tcp]\nzzzzzzzz = 1\n");
        assert!(!l.message.contains("did you mean"), "{}", l.message);
    }

    #[test]
    fn known_keys_come_from_the_deserializer() {
        let keys = known_keys();
        let tcp = &keys.iter().find(|(s, _)| s == "tcp").unwrap().1;
        assert!(tcp.contains(&"advanced_exclude".to_string()), "{keys:?}");
        assert!(keys.iter().any(|(s, _)| s == "files"));
    }

    #[test]
    fn bad_port_list_is_located_with_caret() {
        let l = invalid("[udp]\nports = \"1,0,3\"\n");
        assert_eq!(l.line, 2);
        assert_eq!(l.message, "port 0 cannot be watched");
        let shown = ConfigError::Invalid(l).to_string();
        assert!(
            shown.starts_with(
                "t.toml:2:9: port 0 cannot be watched\n   | ports = \"1,0,3\"\n   |         ^"
            ),
            "{shown}"
        );
    }

    #[test]
    fn bad_values_are_located() {
        assert_eq!(invalid("[block]\ntcp = \"drop\"\n").line, 2);
        assert_eq!(invalid("[block]\ntimeout = \"soon\"\n").line, 2);
        assert_eq!(
            invalid("[ignore]\naddresses = [\"::1/128\",\n \"10.0.0.0/33\"]\n").line,
            3
        );
        assert_eq!(invalid("[tcp]\nadvanced_below = 1\n").line, 2);
        assert_eq!(invalid("[tcp]\nadvanced_exclude = [0]\n").line, 2);
        assert_eq!(invalid("[detect]\nwindow = \"0\"\n").line, 2);
    }

    #[test]
    fn zero_timeout_is_permanent() {
        let c = Config::parse("t", "[block]\ntimeout = \"0\"\n").unwrap();
        assert_eq!(c.block_timeout, None);
    }

    /// The single argv array is the contract; an array of them is a sequence.
    #[test]
    fn run_and_route_take_one_command_or_a_sequence() {
        let c = Config::parse(
            "t",
            "[block]\nrun = [\"/usr/local/sbin/report\", \"$TARGET$\"]\n",
        )
        .unwrap();
        assert_eq!(
            c.actions.run,
            vec![vec!["/usr/local/sbin/report", "$TARGET$"]]
        );
        let c = Config::parse(
            "t",
            "[block]\nrun = [\n  [\"/usr/sbin/iptables\", \"-I\", \"INPUT\", \"-s\", \"$TARGET$\", \"-j\", \"DROP\"],\n  [\"/usr/bin/logger\", \"blocked $TARGET$\"],\n]\nroute = [[\"/usr/sbin/ip\", \"route\", \"add\", \"blackhole\", \"$TARGET$\"]]\n",
        )
        .unwrap();
        assert_eq!(c.actions.run.len(), 2);
        assert_eq!(
            c.actions.run[1],
            vec!["/usr/bin/logger", "blocked $TARGET$"]
        );
        assert_eq!(c.actions.route.len(), 1);
        for empty in ["run = []", "run = [[]]"] {
            let text = format!("[block]\n{empty}\n");
            if empty == "run = []" {
                assert!(Config::parse("t", &text).unwrap().actions.is_empty());
            } else {
                assert!(invalid(&text).message.contains("the command is empty"));
            }
        }
    }

    #[test]
    fn bad_commands_are_located_at_the_command() {
        let l = invalid("[block]\nrun = [\n  [\"/bin/true\"],\n  [\"logger\", \"x\"],\n]\n");
        assert_eq!((l.line, l.column), (4, 3), "{}", l.message);
        assert!(
            l.message
                .starts_with("[block] run, command 2: the program must be an absolute path"),
            "{}",
            l.message
        );
        let l = invalid("[block]\nroute = [\"ip\", \"route\"]\n");
        assert_eq!(l.line, 2);
        assert!(
            l.message.starts_with("[block] route: the program"),
            "{}",
            l.message
        );
        let l = invalid("[block]\nrun = [\"/bin/true\", [\"/bin/false\"]]\n");
        assert!(
            l.message.contains("strings and arrays mixed"),
            "{}",
            l.message
        );
        let l = invalid("[block]\nrun = \"/bin/true\"\n");
        assert!(l.message.contains("an argv array like"), "{}", l.message);
        let l = invalid("[block]\nrun = [[\"/bin/true\", 3]]\n");
        assert_eq!(l.line, 2, "{}", l.message);
        let l = invalid("[block]\nrun = [\"/bin/echo\", \"a\\u0000b\"]\n");
        assert!(l.message.contains("NUL"), "{}", l.message);
    }

    #[test]
    fn block_log_is_validated() {
        let c = Config::parse("t", "").unwrap();
        assert_eq!(c.block_log, None);
        let c = Config::parse("t", "[block]\nlog_prefix = \"Portsentry: dropping: \"\n").unwrap();
        assert_eq!(
            c.block_log,
            Some(BlockLog {
                prefix: "Portsentry: dropping: ".into(),
                rate: 3,
                per: RatePer::Minute,
                burst: 5
            })
        );
        let c = Config::parse(
            "t",
            "[block]\nlog_prefix = \"ps \"\nlog_rate = \"10/hour\"\nlog_burst = 1\n",
        )
        .unwrap();
        let log = c.block_log.unwrap();
        assert_eq!((log.rate, log.per, log.burst), (10, RatePer::Hour, 1));
        for (bad, says) in [
            ("log_prefix = \"\"", "must not be empty"),
            ("log_prefix = \"a\\\"b\"", "printable ASCII"),
            ("log_prefix = \"a\\\\b\"", "printable ASCII"),
            ("log_prefix = \"été\"", "printable ASCII"),
            ("log_prefix = \"a\\tb\"", "printable ASCII"),
            ("log_rate = \"0/minute\"", "not a rate"),
            ("log_rate = \"3/min\"", "not a rate"),
            ("log_rate = \"3\"", "not a rate"),
            ("log_burst = 0", "at least 1"),
        ] {
            let l = invalid(&format!("[block]\n{bad}\n"));
            assert_eq!(l.line, 2, "{bad}");
            assert!(l.message.contains(says), "{bad}: {}", l.message);
        }
        let long = "x".repeat(128);
        let l = invalid(&format!("[block]\nlog_prefix = \"{long}\"\n"));
        assert!(l.message.contains("at most 127"), "{}", l.message);
        assert!(Config::parse(
            "t",
            &format!("[block]\nlog_prefix = \"{}\"\n", "x".repeat(127))
        )
        .is_ok());
    }
}
