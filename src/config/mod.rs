//! Configuration: TOML text → raw structs (serde, unknown keys rejected) → validated
//! `Config` → the settings each component gets (`settings`). Every error names the file,
//! line and column.
//!
//! May use: `core`, `system` (file checks), and the types of the components it configures
//! (`firewall`, `dataplane`). Nothing else: every component takes its settings from here.

pub mod legacy;
pub mod settings;

use crate::core::detector::Action;
use crate::core::ignore::{parse_ignore_file, parse_net, IgnoreFile};
use crate::core::policy::{MAX_TIMEOUT, MIN_TIMEOUT};
use crate::core::ports::{PortListError, PortSet};
use crate::system::files::{self, Untrusted};
use ipnet::IpNet;
use serde::Deserialize;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

pub const DEFAULT_PATH: &str = "/etc/portsentry/portsentry.toml";
/// Most queues (packet threads) a configuration may ask for.
pub const MAX_QUEUES: u16 = crate::core::stats::MAX_SHARDS as u16;

/// One queue per CPU, up to 8: the kernel spreads sources over them by address, so a
/// spoofed flood uses every core (each source is counted in one shard, whatever its queue).
pub fn default_queues() -> u16 {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8) as u16
}
pub const DEFAULT_INCLUDE: &str = "/usr/share/portsentry/portsentry.nft";
pub const DEFAULT_SOCKET: &str = "/run/portsentry/portsentry.sock";

/// Debian's TCP_PORTS / UDP_PORTS defaults, used in `ports` mode when none are given.
pub const DEFAULT_TCP_PORTS: &str = "1,11,15,79,111,119,143,540,635,1080,1524,2000,5742,6667,12345,12346,20034,27665,31337,32771,32772,32773,32774,40421,49724,54320";
pub const DEFAULT_UDP_PORTS: &str = "1,7,9,69,161,162,513,635,640,641,700,37444,34555,31335,32770,32771,32772,32773,32774,31337,54321";

// ---------------------------------------------------------------- raw (as written)

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
    /// External command (KILL_RUN_CMD): one argv array, or an array of them run in order
    /// until one fails (1.2's `a && b`); never run through a shell.
    pub run: Option<Spanned<RawCommands>>,
    pub run_first: Option<bool>,
    pub run_timeout: Option<Spanned<String>>,
    /// hosts.deny line (KILL_HOSTS_DENY), e.g. "ALL: $TARGET$ : DENY".
    pub hosts_deny: Option<String>,
    pub hosts_deny_file: Option<PathBuf>,
    /// Route command (KILL_ROUTE), in the same shapes as `run`.
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
    /// RESOLVE_HOST: name/ip instead of ip/ip in alert and history lines.
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
    /// nft `queue` where the kernel has nft_queue, else the xt NFQUEUE target.
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

// ---------------------------------------------------------------- validated

#[derive(Debug, Clone)]
pub struct Watch {
    pub mode: WatchMode,
    /// The ports whose probes are steered to us (listening ports are skipped in the kernel).
    pub ports: PortSet,
}

/// nftables' log of the packets dropped because their source is blocked (`[block]
/// log_prefix`, `log_rate`, `log_burst`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockLog {
    /// Printable ASCII without `"` or `\`, 1 to 127 bytes: safe to put in an nft rule.
    pub prefix: String,
    /// At most `rate` lines per `per`, after a burst of `burst`.
    pub rate: u32,
    pub per: RatePer,
    pub burst: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RatePer {
    Second,
    Minute,
    Hour,
    Day,
}

impl RatePer {
    /// The unit as nft writes it (`limit rate 3/minute`).
    pub fn as_str(self) -> &'static str {
        match self {
            RatePer::Second => "second",
            RatePer::Minute => "minute",
            RatePer::Hour => "hour",
            RatePer::Day => "day",
        }
    }
}

impl fmt::Display for RatePer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub const DEFAULT_LOG_RATE: &str = "3/minute";
pub const DEFAULT_LOG_BURST: u32 = 5;

/// Why `prefix` cannot be an nft log prefix, if it cannot (shared with import-legacy).
pub fn log_prefix_problem(prefix: &str) -> Option<String> {
    if prefix.is_empty() {
        return Some("log_prefix must not be empty (leave it out to log nothing)".into());
    }
    if prefix.len() > 127 {
        return Some(format!(
            "log_prefix is {} bytes; nftables takes at most 127",
            prefix.len()
        ));
    }
    prefix
        .chars()
        .find(|c| !(' '..='~').contains(c) || matches!(c, '"' | '\\'))
        .map(|c| {
            format!(
                "log_prefix may hold printable ASCII except '\"' and '\\', not {:?}",
                c
            )
        })
}

/// "3/minute" → (3, Minute); the error says what is expected.
pub fn parse_log_rate(text: &str) -> Result<(u32, RatePer), String> {
    let bad = || {
        format!("'{text}' is not a rate like \"3/minute\" (N/second, N/minute, N/hour or N/day, N at least 1)")
    };
    let (n, per) = text.trim().split_once('/').ok_or_else(bad)?;
    let n: u32 = n.trim().parse().map_err(|_| bad())?;
    let per = match per.trim() {
        "second" => RatePer::Second,
        "minute" => RatePer::Minute,
        "hour" => RatePer::Hour,
        "day" => RatePer::Day,
        _ => return Err(bad()),
    };
    if n == 0 {
        return Err(bad());
    }
    Ok((n, per))
}

#[derive(Debug, Clone)]
pub struct Config {
    pub source: Option<PathBuf>,
    pub queue_num: u16,
    /// Queues queue_num.. in all: one packet thread each.
    pub queues: u16,
    pub queue_max_len: u32,
    pub fail_open: bool,
    /// While probes flow, the pause between two reads of a queue (0: none).
    pub queue_coalesce: Duration,
    pub tcp: Watch,
    pub udp: Watch,
    pub trigger: u32,
    pub window: Duration,
    pub max_sources: usize,
    /// Weighted distinct-port threshold; 0 = off (use `trigger`).
    pub score: u32,
    /// IP protocols never taken for a protocol scan, beyond those the host is seen to
    /// serve (see `system::listening::served_protocols`).
    pub served_protocols: Vec<u8>,
    pub block_tcp: Action,
    pub block_udp: Action,
    /// `None` = permanent.
    pub block_timeout: Option<Duration>,
    pub ignore: Vec<IpNet>,
    pub ignore_file: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub history: PathBuf,
    pub blocked: PathBuf,
    pub include: PathBuf,
    pub steering: SteeringChoice,
    pub repeat_factor: u32,
    pub max_timeout: Option<Duration>,
    pub max_blocked: usize,
    pub max_per_second: u32,
    /// IPv6 blocks cover this prefix of the scanner's address.
    pub ipv6_prefix: u8,
    /// Live clients' probes are reported, not acted on.
    pub spare_clients: bool,
    pub client_timeout: Duration,
    /// A port stays a service this long after its listener was last seen.
    pub listener_grace: Duration,
    pub actions: ActionsConfig,
    /// Log the packets dropped for a blocked source; `None` = no such log.
    pub block_log: Option<BlockLog>,
    pub syslog: bool,
    pub resolve_host: bool,
    pub alerts_per_second: u32,
    pub control_socket: PathBuf,
    pub metrics_textfile: Option<PathBuf>,
    /// Where `/metrics` is served over HTTP, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The block state (`state_dir/blocks.json`).
    pub state_file: PathBuf,
    /// `[crowdsec]`; `None`: no fleet.
    pub crowdsec: Option<Crowdsec>,
}

/// `[crowdsec]`, validated. Push is on with `credentials`, pull with `bouncer_key_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crowdsec {
    /// http:// or https://, without a trailing slash.
    pub lapi_url: String,
    pub credentials: Option<PathBuf>,
    pub bouncer_key_file: Option<PathBuf>,
    pub pull_interval: Duration,
    pub ca_file: Option<PathBuf>,
    pub max_decisions: usize,
    /// What the files above hold, read by `Config::load_trusted` (none from `parse`).
    pub secrets: Secrets,
}

impl Crowdsec {
    /// The LAPI's address when `lapi_url` names one by address: never blocked, or a fleet
    /// decision (or a scan spoofed from it) would cut this host off from its fleet.
    pub fn lapi_addr(&self) -> Option<std::net::IpAddr> {
        let host = self.lapi_url.split_once("://")?.1.split('/').next()?;
        match host.strip_prefix('[') {
            Some(r) => r.split(']').next()?.parse().ok(),
            None => host.split(':').next()?.parse().ok(),
        }
    }
}

/// The machine's login and password and the bouncer's key; never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    pub machine: Option<(String, String)>,
    pub bouncer_key: Option<String>,
    /// The ca_file's PEM text.
    pub ca_pem: Option<Vec<u8>>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("machine", &self.machine.as_ref().map(|(login, _)| login))
            .field("bouncer_key", &self.bouncer_key.as_ref().map(|_| "…"))
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .finish()
    }
}

/// Longest pull interval: past it a fleet is hardly one.
pub const MAX_PULL_INTERVAL: Duration = Duration::from_secs(3600);
/// Most decisions `max_decisions` may allow (a few hundred bytes of memory each).
pub const MAX_MAX_DECISIONS: usize = 10_000_000;
/// Longest credentials, key or CA file read.
const MAX_SECRET_FILE: u64 = 1 << 20;

/// PortSentry's actions beyond the nft block: KILL_RUN_CMD, KILL_HOSTS_DENY, KILL_ROUTE.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ActionsConfig {
    /// The external command (KILL_RUN_CMD): argv commands run in order, stopping at the
    /// first that fails (1.2's `a && b`). Empty: none. No command is itself empty.
    pub run: Vec<Vec<String>>,
    pub run_first: bool,
    /// For the whole sequence of a step.
    pub run_timeout: Duration,
    /// hosts.deny line template and the file it goes to.
    pub hosts_deny: Option<(String, PathBuf)>,
    /// The route command (KILL_ROUTE), as `run`.
    pub route: Vec<Vec<String>>,
}

impl ActionsConfig {
    /// Nothing to do beyond the nft set (an empty command counts as none).
    pub fn is_empty(&self) -> bool {
        let has = |c: &[Vec<String>]| c.iter().any(|c| !c.is_empty());
        !has(&self.run) && self.hosts_deny.is_none() && !has(&self.route)
    }
}

// ---------------------------------------------------------------- errors

/// A configuration error located in its file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Located),
    #[error("{0}: it decides what runs as root and who is never blocked")]
    Unsafe(Untrusted),
    #[error("{path}: {why}")]
    Secret { path: String, why: String },
    #[error("{0}: it holds this host's credentials for the fleet")]
    UnsafeSecret(Untrusted),
}

/// A file others could change, refused.
fn trusted(path: &Path) -> Result<(), ConfigError> {
    files::trusted(path).map_err(|e| match e {
        files::FileError::Io { path, source } => ConfigError::Io { path, source },
        files::FileError::Untrusted(u) => ConfigError::Unsafe(u),
    })
}

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

#[derive(Debug)]
pub struct Located {
    pub path: String,
    pub line: usize,
    pub column: usize,
    pub line_text: String,
    pub message: String,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}:{}:{}: {}",
            self.path, self.line, self.column, self.message
        )?;
        writeln!(f, "   | {}", self.line_text)?;
        write!(f, "   | {}^", " ".repeat(self.column.saturating_sub(1)))
    }
}

impl Located {
    fn at(path: &str, text: &str, span: Range<usize>, message: impl Into<String>) -> Self {
        let start = span.start.min(text.len());
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        Located {
            path: path.to_string(),
            line: text[..start].matches('\n').count() + 1,
            column: text[line_start..start].chars().count() + 1,
            line_text: text[line_start..line_end].to_string(),
            message: message.into(),
        }
    }
}

// ---------------------------------------------------------------- loading

impl Config {
    /// `run` with no `-c`: the system file when present, else built-in defaults.
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
            cs.secrets = read_secrets(cs)?;
        }
        Ok((cfg, ignore))
    }

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

fn positive<T: Copy + PartialEq + From<u8>>(
    raw: Option<Spanned<T>>,
    default: T,
    key: &str,
    err: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<T, ConfigError> {
    match raw {
        Some(v) if *v.get_ref() == T::from(0) => {
            Err(err(v.span(), format!("{key} must be at least 1")))
        }
        Some(v) => Ok(*v.get_ref()),
        None => Ok(default),
    }
}

struct Validator<'a> {
    err: &'a dyn Fn(Range<usize>, String) -> ConfigError,
}

impl Validator<'_> {
    fn validate(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let tcp = self.watch(&raw.tcp, DEFAULT_TCP_PORTS, &[113, 139], "tcp")?;
        let udp = self.watch(&raw.udp, DEFAULT_UDP_PORTS, &[520, 138, 137, 67], "udp")?;
        let window = self.duration(raw.detect.window.as_ref(), "5m", false)?;
        let block_timeout = self.duration(raw.block.timeout.as_ref(), "1h", true)?;
        let max_sources = match raw.detect.max_sources {
            Some(s) if *s.get_ref() == 0 => {
                return Err((self.err)(
                    s.span(),
                    "max_sources must be at least 1".into(),
                ))
            }
            Some(s) => s.into_inner(),
            None => 131_072,
        };
        let queue_max_len = match raw.queue.max_len {
            Some(s) if *s.get_ref() == 0 => {
                return Err((self.err)(s.span(), "max_len must be at least 1".into()))
            }
            Some(s) => s.into_inner(),
            None => 16_384,
        };
        let ignore = match &raw.ignore.addresses {
            None => vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            Some(list) => list
                .iter()
                .map(|a| {
                    parse_net(a.get_ref().trim())
                        .map_err(|m| (self.err)(a.span(), format!("{m}: '{}'", a.get_ref())))
                })
                .collect::<Result<_, _>>()?,
        };
        let repeat_factor = match raw.block.repeat_factor {
            Some(f) if *f.get_ref() == 0 => {
                return Err((self.err)(
                    f.span(),
                    "repeat_factor must be at least 1 (1 = off)".into(),
                ))
            }
            Some(f) => f.into_inner(),
            None => 1,
        };
        let state_dir = raw
            .files
            .state_dir
            .unwrap_or_else(|| "/var/lib/portsentry".into());
        Ok(Config {
            source: None,
            queue_num: raw.queue.num.unwrap_or(0),
            queues: match raw.queue.queues {
                Some(n) if !(1..=MAX_QUEUES).contains(n.get_ref()) => {
                    return Err((self.err)(
                        n.span(),
                        format!("queues must be between 1 and {MAX_QUEUES}"),
                    ))
                }
                Some(n)
                    if u32::from(raw.queue.num.unwrap_or(0)) + u32::from(*n.get_ref()) > 65536 =>
                {
                    return Err((self.err)(
                        n.span(),
                        "num + queues goes past queue 65535".into(),
                    ))
                }
                Some(n) => n.into_inner(),
                // The default takes what is left above num (queue 65535 is the last).
                None => default_queues().min(
                    u16::try_from(65536 - u32::from(raw.queue.num.unwrap_or(0)))
                        .unwrap_or(u16::MAX),
                ),
            },
            queue_max_len,
            fail_open: raw.queue.fail_open.unwrap_or(false),
            queue_coalesce: match &raw.queue.coalesce {
                None => DEFAULT_COALESCE,
                Some(s) => parse_coalesce(s.get_ref()).map_err(|m| (self.err)(s.span(), m))?,
            },
            tcp,
            udp,
            trigger: raw.detect.trigger.unwrap_or(0),
            window: window.unwrap_or(Duration::MAX),
            max_sources,
            score: raw.detect.score.unwrap_or(0),
            served_protocols: raw.detect.served_protocols.unwrap_or_default(),
            block_tcp: raw.block.tcp.unwrap_or(Action::Block),
            block_udp: raw.block.udp.unwrap_or(Action::Block),
            block_timeout,
            ignore,
            ignore_file: raw.ignore.file,
            history: raw
                .files
                .history
                .unwrap_or_else(|| state_dir.join("portsentry.history")),
            blocked: raw
                .files
                .blocked
                .unwrap_or_else(|| state_dir.join("portsentry.blocked")),
            state_file: state_dir.join("blocks.json"),
            state_dir,
            include: raw
                .firewall
                .include
                .unwrap_or_else(|| DEFAULT_INCLUDE.into()),
            steering: raw.firewall.steering.unwrap_or_default(),
            repeat_factor,
            max_blocked: positive(raw.block.max_blocked, 1_000_000, "max_blocked", self.err)?,
            max_per_second: positive(
                raw.block.max_per_second,
                200_000,
                "max_per_second",
                self.err,
            )?,
            max_timeout: self.duration(raw.block.max_timeout.as_ref(), "30d", true)?,
            ipv6_prefix: match raw.block.ipv6_prefix {
                Some(p) if !(16..=128).contains(p.get_ref()) => {
                    return Err((self.err)(
                        p.span(),
                        "ipv6_prefix must be between 16 and 128".into(),
                    ))
                }
                Some(p) => p.into_inner(),
                None => 64,
            },
            spare_clients: raw.block.spare_clients.unwrap_or(true),
            client_timeout: self
                .duration(raw.block.client_timeout.as_ref(), "1h", false)?
                .unwrap_or(Duration::from_secs(3600)),
            listener_grace: self
                .duration(raw.detect.listener_grace.as_ref(), "1h", false)?
                .unwrap_or(Duration::from_secs(3600)),
            block_log: self.block_log(
                raw.block.log_prefix,
                raw.block.log_rate,
                raw.block.log_burst,
            )?,
            actions: ActionsConfig {
                run: self.commands(raw.block.run, "run")?,
                run_first: raw.block.run_first.unwrap_or(false),
                run_timeout: self
                    .duration(raw.block.run_timeout.as_ref(), "10s", false)?
                    .unwrap_or(Duration::from_secs(10))
                    .min(Duration::from_secs(3600)),
                hosts_deny: raw
                    .block
                    .hosts_deny
                    .filter(|s| !s.trim().is_empty())
                    .map(|t| {
                        let file = raw
                            .block
                            .hosts_deny_file
                            .unwrap_or_else(|| "/etc/hosts.deny".into());
                        (t, file)
                    }),
                route: self.commands(raw.block.route, "route")?,
            },
            syslog: raw.log.syslog.unwrap_or(false),
            resolve_host: raw.log.resolve_host.unwrap_or(false),
            alerts_per_second: raw.log.alerts_per_second.unwrap_or(200),
            control_socket: raw.control.socket.unwrap_or_else(|| DEFAULT_SOCKET.into()),
            metrics_textfile: raw.metrics.textfile.filter(|p| !p.as_os_str().is_empty()),
            metrics_listen: match raw.metrics.listen {
                Some(l) if l.get_ref().trim().is_empty() => None,
                Some(l) => Some(l.get_ref().trim().parse().map_err(|_| {
                    (self.err)(
                        l.span(),
                        format!(
                            "'{}' is not an address and port like \"127.0.0.1:9707\"",
                            l.get_ref()
                        ),
                    )
                })?),
                None => None,
            },
            crowdsec: self.crowdsec(raw.crowdsec)?,
        })
    }

    fn crowdsec(&self, raw: RawCrowdsec) -> Result<Option<Crowdsec>, ConfigError> {
        let pull_interval = self
            .duration(raw.pull_interval.as_ref(), "10s", false)?
            .unwrap_or(Duration::from_secs(10));
        if let Some(p) = &raw.pull_interval {
            if pull_interval > MAX_PULL_INTERVAL {
                return Err((self.err)(
                    p.span(),
                    "pull_interval must be at most 1h".into(),
                ));
            }
        }
        let max_decisions = match raw.max_decisions {
            Some(m) if !(1..=MAX_MAX_DECISIONS).contains(m.get_ref()) => {
                return Err((self.err)(
                    m.span(),
                    format!("max_decisions must be between 1 and {MAX_MAX_DECISIONS}"),
                ))
            }
            Some(m) => m.into_inner(),
            None => crate::core::policy::DEFAULT_MAX_DECISIONS,
        };
        let Some(url) = raw.lapi_url else {
            if raw.credentials.is_some() || raw.bouncer_key_file.is_some() {
                return Err((self.err)(
                    0..0,
                    "[crowdsec] needs lapi_url (\"http://HOST:8080/\" or https) with credentials or bouncer_key_file".into(),
                ));
            }
            return Ok(None);
        };
        let lapi_url = lapi_url(url.get_ref()).map_err(|m| (self.err)(url.span(), m))?;
        if raw.credentials.is_none() && raw.bouncer_key_file.is_none() {
            return Err((self.err)(
                url.span(),
                "[crowdsec] has nothing to do: give credentials (push this host's blocks) and/or bouncer_key_file (pull the fleet's)".into(),
            ));
        }
        let empty = |p: &Option<PathBuf>| p.as_ref().is_some_and(|p| p.as_os_str().is_empty());
        if empty(&raw.credentials) || empty(&raw.bouncer_key_file) || empty(&raw.ca_file) {
            return Err((self.err)(
                url.span(),
                "[crowdsec] file paths must not be empty (leave the key out instead)".into(),
            ));
        }
        Ok(Some(Crowdsec {
            lapi_url,
            credentials: raw.credentials,
            bouncer_key_file: raw.bouncer_key_file,
            pull_interval,
            ca_file: raw.ca_file,
            max_decisions,
            secrets: Secrets::default(),
        }))
    }

    fn watch(
        &self,
        raw: &RawWatch,
        default_ports: &str,
        default_exclude: &[u16],
        section: &str,
    ) -> Result<Watch, ConfigError> {
        let mode = raw.mode.unwrap_or(WatchMode::Advanced);
        let listed = match &raw.ports {
            Some(p) => PortSet::parse(p.get_ref()).map_err(|e| self.port_err(p.span(), e))?,
            None => PortSet::parse(default_ports).expect("default port list"),
        };
        let below = match &raw.advanced_below {
            Some(b) if *b.get_ref() < 2 || *b.get_ref() > 65536 => {
                return Err((self.err)(
                    b.span(),
                    format!("[{section}] advanced_below must be between 2 and 65536"),
                ))
            }
            Some(b) => *b.get_ref(),
            None => 1024,
        };
        let mut ports = match mode {
            WatchMode::Advanced => PortSet::below(below),
            WatchMode::Ports => listed,
            WatchMode::Off => PortSet::new(),
        };
        match &raw.advanced_exclude {
            Some(list) => {
                for p in list {
                    if *p.get_ref() == 0 {
                        return Err(self.port_err(p.span(), PortListError::Zero));
                    }
                    if mode == WatchMode::Advanced {
                        ports.remove(*p.get_ref());
                    }
                }
            }
            None if mode == WatchMode::Advanced => {
                for p in default_exclude {
                    ports.remove(*p);
                }
            }
            None => {}
        }
        Ok(Watch { mode, ports })
    }

    /// `run`/`route`: every command non-empty, its program an absolute path, no NUL.
    fn commands(
        &self,
        raw: Option<Spanned<RawCommands>>,
        key: &str,
    ) -> Result<Vec<Vec<String>>, ConfigError> {
        let Some(raw) = raw else {
            return Ok(Vec::new());
        };
        let whole = raw.span();
        let list: Vec<(Range<usize>, Vec<String>)> = match raw.into_inner() {
            RawCommands::One(argv) if argv.is_empty() => Vec::new(),
            RawCommands::One(argv) => vec![(whole, argv)],
            RawCommands::Many(list) => list
                .into_iter()
                .map(|c| (c.span(), c.into_inner()))
                .collect(),
        };
        let many = list.len() > 1;
        list.into_iter()
            .enumerate()
            .map(|(i, (span, argv))| {
                let which = if many {
                    format!("[block] {key}, command {}", i + 1)
                } else {
                    format!("[block] {key}")
                };
                let problem = match argv.first() {
                    None => Some("the command is empty".to_string()),
                    Some(p) if !p.starts_with('/') => Some(
                        "the program must be an absolute path (it is run without a shell or PATH search)"
                            .to_string(),
                    ),
                    Some(_) if argv.iter().any(|a| a.contains('\0')) => {
                        Some("an argument holds a NUL character".to_string())
                    }
                    Some(_) => None,
                };
                match problem {
                    Some(p) => Err((self.err)(span, format!("{which}: {p}"))),
                    None => Ok(argv),
                }
            })
            .collect()
    }

    fn block_log(
        &self,
        prefix: Option<Spanned<String>>,
        rate: Option<Spanned<String>>,
        burst: Option<Spanned<u32>>,
    ) -> Result<Option<BlockLog>, ConfigError> {
        // Rate and burst are checked even without a prefix, so a typo shows at once.
        let (rate, per) = match &rate {
            Some(r) => parse_log_rate(r.get_ref()).map_err(|m| (self.err)(r.span(), m))?,
            None => parse_log_rate(DEFAULT_LOG_RATE).expect("default rate"),
        };
        let burst = positive(burst, DEFAULT_LOG_BURST, "log_burst", self.err)?;
        let Some(prefix) = prefix else {
            return Ok(None);
        };
        if let Some(m) = log_prefix_problem(prefix.get_ref()) {
            return Err((self.err)(prefix.span(), m));
        }
        Ok(Some(BlockLog {
            prefix: prefix.into_inner(),
            rate,
            per,
            burst,
        }))
    }

    fn port_err(&self, span: Range<usize>, e: PortListError) -> ConfigError {
        (self.err)(span, e.to_string())
    }

    /// Parses "90s", "5m", "1h 30m" within 1 s..=a century; "0" means "never" where
    /// `zero_is_never`.
    fn duration(
        &self,
        raw: Option<&Spanned<String>>,
        default: &str,
        zero_is_never: bool,
    ) -> Result<Option<Duration>, ConfigError> {
        let (text, span) = match raw {
            Some(s) => (s.get_ref().trim(), s.span()),
            None => (default, 0..0),
        };
        parse_duration(text, zero_is_never).map_err(|m| (self.err)(span, m))
    }
}

/// The LAPI's address: http or https, a host, an optional port and path prefix; no
/// credentials, query or fragment. Returned without its trailing slash.
pub fn lapi_url(text: &str) -> Result<String, String> {
    let t = text.trim();
    let bad = |why: &str| format!("lapi_url '{t}': {why}");
    let rest = t
        .strip_prefix("http://")
        .or_else(|| t.strip_prefix("https://"))
        .ok_or_else(|| bad("must start with http:// or https://"))?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return Err(bad("has no host"));
    }
    if rest.contains(['@', '?', '#']) || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(
            "must not hold credentials, a query, a fragment or spaces",
        ));
    }
    let port = match host.strip_prefix('[') {
        Some(r) => {
            let (addr, after) = r
                .split_once(']')
                .ok_or_else(|| bad("has an unclosed '['"))?;
            addr.parse::<std::net::Ipv6Addr>()
                .map_err(|_| bad("has a bad IPv6 address"))?;
            match after {
                "" => None,
                a => Some(a.strip_prefix(':').ok_or_else(|| bad("has a bad port"))?),
            }
        }
        None => host.split_once(':').map(|(_, p)| p),
    };
    if port.is_some_and(|p| p.parse::<u16>().map_or(true, |p| p == 0)) {
        return Err(bad("has a bad port"));
    }
    Ok(t.trim_end_matches('/').to_string())
}

/// Reads the files `[crowdsec]` names, each held to the configuration's rule (changeable
/// by root alone: the machine password and the bouncer key are the fleet's trust).
fn read_secrets(cs: &Crowdsec) -> Result<Secrets, ConfigError> {
    let read = |p: &Path| -> Result<String, ConfigError> {
        trusted(p).map_err(|e| match e {
            ConfigError::Unsafe(u) => ConfigError::UnsafeSecret(u),
            other => other,
        })?;
        let io = |source| ConfigError::Io {
            path: p.display().to_string(),
            source,
        };
        let f = std::fs::File::open(p).map_err(io)?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::Read::take(f, MAX_SECRET_FILE), &mut text)
            .map_err(io)?;
        Ok(text)
    };
    let secret = |p: &Path, why: String| ConfigError::Secret {
        path: p.display().to_string(),
        why,
    };
    let mut out = Secrets::default();
    if let Some(p) = &cs.credentials {
        out.machine = Some(parse_credentials(&read(p)?).map_err(|w| secret(p, w))?);
    }
    if let Some(p) = &cs.bouncer_key_file {
        let key = read(p)?.trim().to_string();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_graphic()) {
            return Err(secret(
                p,
                "not a bouncer key (the one line `cscli bouncers add NAME -o raw` prints)".into(),
            ));
        }
        out.bouncer_key = Some(key);
    }
    if let Some(p) = &cs.ca_file {
        let pem = read(p)?;
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(secret(p, "holds no PEM certificate".into()));
        }
        out.ca_pem = Some(pem.into_bytes());
    }
    Ok(out)
}

/// The machine's login and password from `cscli machines add … -f FILE`'s YAML (`url:`,
/// `login:`, `password:` lines; values plain or quoted).
pub fn parse_credentials(text: &str) -> Result<(String, String), String> {
    let mut login = None;
    let mut password = None;
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        let v = if v.len() >= 2
            && ((v.starts_with('\'') && v.ends_with('\''))
                || (v.starts_with('"') && v.ends_with('"')))
        {
            let inner = &v[1..v.len() - 1];
            if v.starts_with('\'') {
                inner.replace("''", "'")
            } else {
                inner.replace("\\\"", "\"").replace("\\\\", "\\")
            }
        } else {
            v.to_string()
        };
        match k.trim() {
            "login" => login = Some(v),
            "password" => password = Some(v),
            _ => {}
        }
    }
    match (login, password) {
        (Some(l), Some(p)) if !l.is_empty() && !p.is_empty() => Ok((l, p)),
        _ => Err(
            "no login and password (write it with `cscli machines add NAME --auto -f FILE`)".into(),
        ),
    }
}

/// A duration as the configuration and `portsentry block --timeout` take it: "90s", "2h",
/// "7d", whole seconds from 1 s to a century; "0" alone is "never" where `zero_is_never`
/// (a timeout of "0s" is a mistake more often than a wish for a permanent block).
/// `[queue] coalesce` by default: under a flood one wake-up per 100 µs rather than one per
/// few packets (a wake-up costs more than the packets it reads).
pub const DEFAULT_COALESCE: Duration = Duration::from_micros(100);
/// The longest `coalesce`: it adds to time to block under a flood.
pub const MAX_COALESCE: Duration = Duration::from_millis(1);

/// `[queue] coalesce`: "0" (off), or a duration up to MAX_COALESCE such as "100us".
pub fn parse_coalesce(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("'{text}' is not a duration like \"100us\" or \"0\" (off): {e}"))?;
    if d > MAX_COALESCE {
        return Err(format!("'{text}' is longer than the 1ms allowed"));
    }
    Ok(d)
}

pub fn parse_duration(text: &str, zero_is_never: bool) -> Result<Option<Duration>, String> {
    let text = text.trim();
    if text == "0" {
        return if zero_is_never {
            Ok(None)
        } else {
            Err("a duration of 0 is not allowed here".into())
        };
    }
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("'{text}' is not a duration like \"90s\", \"5m\" or \"1h\": {e}"))?;
    let zero = if zero_is_never {
        " (\"0\" alone means permanent)"
    } else {
        ""
    };
    if d < MIN_TIMEOUT {
        return Err(format!("'{text}' is shorter than 1s{zero}"));
    }
    if d > MAX_TIMEOUT {
        return Err(format!(
            "'{text}' is longer than the 100 years allowed{zero}"
        ));
    }
    if d.subsec_nanos() != 0 {
        return Err(format!("'{text}' is not a whole number of seconds"));
    }
    Ok(Some(d))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn credentials_files_read_as_cscli_writes_them() {
        let text = "url: http://192.0.2.10:8080/\nlogin: hostA\npassword: s3cr3t\n";
        assert_eq!(
            parse_credentials(text),
            Ok(("hostA".to_string(), "s3cr3t".to_string()))
        );
        let quoted = "login: 'a b'\npassword: \"p: \\\"q\\\"\"\n";
        assert_eq!(
            parse_credentials(quoted),
            Ok(("a b".to_string(), "p: \"q\"".to_string()))
        );
        assert!(parse_credentials("url: http://x/\n").is_err());
        assert!(parse_credentials("").is_err());
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
