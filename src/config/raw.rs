//! The configuration as written: serde structs that reject unknown keys, every value that
//! can be wrong kept with its span so the error can point at it. Nothing is checked here
//! beyond the shapes; `validate` turns these into a `Config`.

use crate::core::detector::Action;
use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;
use toml::Spanned;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub queue: RawQueue,
    pub tcp: RawWatch,
    pub udp: RawWatch,
    pub detect: RawDetect,
    pub block: RawBlock,
    pub ignore: RawIgnore,
    pub files: RawFiles,
    pub firewall: RawFirewall,
    pub log: RawLog,
    pub control: RawControl,
    pub metrics: RawMetrics,
    pub crowdsec: RawCrowdsec,
}

/// Sharing blocks with a fleet through CrowdSec's Local API. The key names are a contract
/// (scripts write them).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCrowdsec {
    pub lapi_url: Option<Spanned<String>>,
    /// `cscli machines add NAME -f FILE`'s output: push this host's blocks as alerts.
    pub credentials: Option<PathBuf>,
    /// A file holding `cscli bouncers add NAME -o raw`'s key: pull the fleet's decisions.
    pub bouncer_key_file: Option<PathBuf>,
    pub pull_interval: Option<Spanned<String>>,
    /// PEM certificates to trust for an https LAPI instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// Most fleet decisions held at once.
    pub max_decisions: Option<Spanned<usize>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawQueue {
    pub num: Option<u16>,
    /// How many queues (num, num+1, …), one packet thread each.
    pub queues: Option<Spanned<u16>>,
    pub max_len: Option<Spanned<u32>>,
    pub fail_open: Option<bool>,
    /// While probes flow, how long a packet thread lets them gather between two reads.
    pub coalesce: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchMode {
    /// Every port below `advanced_below` that nothing listens on, minus the exclusions.
    Advanced,
    /// The ports listed in `ports`.
    Ports,
    Off,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawWatch {
    pub mode: Option<WatchMode>,
    pub ports: Option<Spanned<String>>,
    pub advanced_below: Option<Spanned<u32>>,
    pub advanced_exclude: Option<Vec<Spanned<u16>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDetect {
    pub trigger: Option<u32>,
    pub window: Option<Spanned<String>>,
    pub max_sources: Option<Spanned<usize>>,
    pub score: Option<u32>,
    /// A port that had a listener within this long is no trap (a service restarting).
    pub listener_grace: Option<Spanned<String>>,
    /// IP protocol numbers this host serves beyond what it is seen to serve (raw sockets,
    /// tunnel interfaces): IPsec's ESP and AH, say.
    pub served_protocols: Option<Vec<u8>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBlock {
    pub tcp: Option<Action>,
    pub udp: Option<Action>,
    pub timeout: Option<Spanned<String>>,
    /// Each further block of the same address lasts this many times longer.
    pub repeat_factor: Option<Spanned<u32>>,
    pub max_timeout: Option<Spanned<String>>,
    /// Most addresses blocked at once.
    pub max_blocked: Option<Spanned<usize>>,
    /// Most new blocks per second.
    pub max_per_second: Option<Spanned<u32>>,
    /// IPv6 scanners are blocked by this prefix (a subscriber's /64).
    pub ipv6_prefix: Option<Spanned<u8>>,
    /// A source holding a live connection to this host is reported, never blocked, on
    /// probes anybody could forge in its name.
    pub spare_clients: Option<bool>,
    /// How long after its connection's last packet a source still counts as live.
    pub client_timeout: Option<Spanned<String>>,
    /// External command (`KILL_RUN_CMD`): one argv array, or an array of them run in order
    /// until one fails (1.2's `a && b`); never run through a shell.
    pub run: Option<Spanned<RawCommands>>,
    pub run_first: Option<bool>,
    pub run_timeout: Option<Spanned<String>>,
    /// hosts.deny line (`KILL_HOSTS_DENY`), e.g. "ALL: $TARGET$ : DENY".
    pub hosts_deny: Option<String>,
    pub hosts_deny_file: Option<PathBuf>,
    /// Route command (`KILL_ROUTE`), in the same shapes as `run`.
    pub route: Option<Spanned<RawCommands>>,
    /// When set, nftables logs the packets it drops because their source is blocked, with
    /// this prefix (what 1.2 setups did with an iptables LOG rule per scanner).
    pub log_prefix: Option<Spanned<String>>,
    /// "N/second|minute|hour|day": at most this many such log lines.
    pub log_rate: Option<Spanned<String>>,
    pub log_burst: Option<Spanned<u32>>,
}

/// `run`/`route` as written: `["/prog", "arg"]` (one command, the original form) or
/// `[["/prog", "arg"], ["/other"]]` (a sequence).
#[derive(Debug, PartialEq, Eq)]
pub enum RawCommands {
    One(Vec<String>),
    Many(Vec<Spanned<Vec<String>>>),
}

impl<'de> Deserialize<'de> for RawCommands {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(CommandsVisitor)
    }
}

const COMMANDS_SHAPE: &str =
    "an argv array like [\"/usr/bin/logger\", \"$TARGET$\"] or an array of them like [[\"/a\", \"$TARGET$\"], [\"/b\"]]";

struct CommandsVisitor;

impl<'de> serde::de::Visitor<'de> for CommandsVisitor {
    type Value = RawCommands;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(COMMANDS_SHAPE)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawCommands, A::Error> {
        let mut words = Vec::new();
        let mut commands = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<WordOrArgv>>()? {
            let span = item.span();
            match item.into_inner() {
                WordOrArgv::Word(w) => words.push(w),
                WordOrArgv::Argv(a) => commands.push(Spanned::new(span, a)),
            }
            if !words.is_empty() && !commands.is_empty() {
                return Err(serde::de::Error::custom(format!(
                    "strings and arrays mixed; expected {COMMANDS_SHAPE}"
                )));
            }
        }
        Ok(if commands.is_empty() {
            RawCommands::One(words)
        } else {
            RawCommands::Many(commands)
        })
    }
}

/// One element of `run`: a word of the single command, or a whole command.
enum WordOrArgv {
    Word(String),
    Argv(Vec<String>),
}

impl<'de> Deserialize<'de> for WordOrArgv {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = WordOrArgv;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<WordOrArgv, E> {
                Ok(WordOrArgv::Word(s.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<WordOrArgv, A::Error> {
                let mut argv = Vec::new();
                while let Some(w) = seq.next_element::<String>()? {
                    argv.push(w);
                }
                Ok(WordOrArgv::Argv(argv))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    /// Also send alert lines to syslog (ident portsentry, facility daemon).
    pub syslog: Option<bool>,
    /// `RESOLVE_HOST`: name/ip instead of ip/ip in alert and history lines.
    pub resolve_host: Option<bool>,
    pub alerts_per_second: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMetrics {
    /// Prometheus textfile path; empty or absent = none.
    pub textfile: Option<PathBuf>,
    /// Address of an HTTP /metrics endpoint; absent = none.
    pub listen: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawControl {
    pub socket: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawIgnore {
    pub addresses: Option<Vec<Spanned<String>>>,
    pub file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawFiles {
    pub state_dir: Option<PathBuf>,
    pub history: Option<PathBuf>,
    pub blocked: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SteeringChoice {
    /// nft `queue` where the kernel has `nft_queue`, else the xt NFQUEUE target.
    #[default]
    Auto,
    Native,
    Compat,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawFirewall {
    /// The include loaded when `table inet portsentry` is missing.
    pub include: Option<PathBuf>,
    pub steering: Option<SteeringChoice>,
}
