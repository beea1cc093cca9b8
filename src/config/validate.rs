//! Raw structs → `Config`: each value checked and defaulted, each mistake reported at its
//! span. One step per section or value that can be wrong; `validate` calls them in the
//! order the file's sections are checked, so the first mistake reported stays the same.

use super::crowdsec::{lapi_url, Crowdsec, Secrets, MAX_MAX_DECISIONS, MAX_PULL_INTERVAL};
use super::error::ConfigError;
use super::model::{
    default_queues, ActionsConfig, BlockLog, Config, Watch, DEFAULT_INCLUDE, DEFAULT_SOCKET,
    DEFAULT_TCP_PORTS, DEFAULT_UDP_PORTS, MAX_QUEUES,
};
use super::raw::{
    RawBlock, RawCommands, RawConfig, RawCrowdsec, RawFiles, RawQueue, RawWatch, WatchMode,
};
use super::units::{parse_coalesce, parse_duration, parse_log_rate, DEFAULT_COALESCE};
use crate::core::detector::Action;
use crate::core::ignore::parse_net;
use crate::core::ports::{PortListError, PortSet};
use ipnet::IpNet;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

pub const DEFAULT_LOG_RATE: &str = "3/minute";
pub const DEFAULT_LOG_BURST: u32 = 5;
const HOUR: Duration = Duration::from_secs(3600);

/// Why `prefix` cannot be an nft log prefix, if it cannot (shared with import-legacy).
#[must_use]
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
        .map(|c| format!("log_prefix may hold printable ASCII except '\"' and '\\', not {c:?}"))
}

/// Where `[files]` puts the daemon's files.
struct Files {
    state_dir: PathBuf,
    history: PathBuf,
    blocked: PathBuf,
}

impl Files {
    fn new(raw: RawFiles) -> Files {
        let state_dir = raw
            .state_dir
            .unwrap_or_else(|| "/var/lib/portsentry".into());
        Files {
            history: raw
                .history
                .unwrap_or_else(|| state_dir.join("portsentry.history")),
            blocked: raw
                .blocked
                .unwrap_or_else(|| state_dir.join("portsentry.blocked")),
            state_dir,
        }
    }
}

/// Checks a `RawConfig`; `err` locates a message at a span of the file.
pub(super) struct Validator<'a> {
    pub(super) err: &'a dyn Fn(Range<usize>, String) -> ConfigError,
}

impl Validator<'_> {
    pub(super) fn validate(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let RawConfig {
            queue,
            tcp,
            udp,
            detect,
            block,
            ignore,
            files,
            firewall,
            log,
            control,
            metrics,
            crowdsec,
        } = raw;
        let tcp = self.watch(&tcp, DEFAULT_TCP_PORTS, &[113, 139], "tcp")?;
        let udp = self.watch(&udp, DEFAULT_UDP_PORTS, &[520, 138, 137, 67], "udp")?;
        let window = self.duration(detect.window.as_ref(), "5m", false)?;
        let block_timeout = self.duration(block.timeout.as_ref(), "1h", true)?;
        let max_sources = self.positive(detect.max_sources.as_ref(), 131_072, "max_sources")?;
        let queue_max_len = self.positive(queue.max_len.as_ref(), 16_384, "max_len")?;
        let ignore_nets = self.ignore(ignore.addresses.as_deref())?;
        let repeat_factor = self.repeat_factor(block.repeat_factor.as_ref())?;
        let files = Files::new(files);
        Ok(Config {
            source: None,
            queue_num: queue.num.unwrap_or(0),
            queues: self.queues(&queue)?,
            queue_max_len,
            fail_open: queue.fail_open.unwrap_or(false),
            queue_coalesce: self.coalesce(queue.coalesce.as_ref())?,
            tcp,
            udp,
            trigger: detect.trigger.unwrap_or(0),
            window: window.unwrap_or(Duration::MAX),
            max_sources,
            score: detect.score.unwrap_or(0),
            served_protocols: detect.served_protocols.unwrap_or_default(),
            block_tcp: block.tcp.unwrap_or(Action::Block),
            block_udp: block.udp.unwrap_or(Action::Block),
            block_timeout,
            ignore: ignore_nets,
            ignore_file: ignore.file,
            history: files.history,
            blocked: files.blocked,
            state_file: files.state_dir.join("blocks.json"),
            state_dir: files.state_dir,
            include: firewall.include.unwrap_or_else(|| DEFAULT_INCLUDE.into()),
            steering: firewall.steering.unwrap_or_default(),
            repeat_factor,
            max_blocked: self.positive(block.max_blocked.as_ref(), 1_000_000, "max_blocked")?,
            max_per_second: self.positive(
                block.max_per_second.as_ref(),
                200_000,
                "max_per_second",
            )?,
            max_timeout: self.duration(block.max_timeout.as_ref(), "30d", true)?,
            ipv6_prefix: self.ipv6_prefix(block.ipv6_prefix.as_ref())?,
            spare_clients: block.spare_clients.unwrap_or(true),
            client_timeout: self.duration_or(block.client_timeout.as_ref(), HOUR)?,
            listener_grace: self.duration_or(detect.listener_grace.as_ref(), HOUR)?,
            block_log: self.block_log(&block)?,
            actions: self.actions(block)?,
            syslog: log.syslog.unwrap_or(false),
            resolve_host: log.resolve_host.unwrap_or(false),
            alerts_per_second: log.alerts_per_second.unwrap_or(200),
            control_socket: control.socket.unwrap_or_else(|| DEFAULT_SOCKET.into()),
            metrics_textfile: metrics.textfile.filter(|p| !p.as_os_str().is_empty()),
            metrics_listen: self.metrics_listen(metrics.listen)?,
            crowdsec: self.crowdsec(crowdsec)?,
        })
    }

    /// A number that must be at least 1, `default` when absent.
    fn positive<T: Copy + PartialEq + From<u8>>(
        &self,
        raw: Option<&Spanned<T>>,
        default: T,
        key: &str,
    ) -> Result<T, ConfigError> {
        match raw {
            Some(v) if *v.get_ref() == T::from(0) => {
                Err((self.err)(v.span(), format!("{key} must be at least 1")))
            }
            Some(v) => Ok(*v.get_ref()),
            None => Ok(default),
        }
    }

    /// `[queue] queues`: within `1..=MAX_QUEUES` and ending at queue 65535 at the latest.
    fn queues(&self, raw: &RawQueue) -> Result<u16, ConfigError> {
        let num = u32::from(raw.num.unwrap_or(0));
        match &raw.queues {
            Some(n) if !(1..=MAX_QUEUES).contains(n.get_ref()) => Err((self.err)(
                n.span(),
                format!("queues must be between 1 and {MAX_QUEUES}"),
            )),
            Some(n) if num + u32::from(*n.get_ref()) > 65536 => Err((self.err)(
                n.span(),
                "num + queues goes past queue 65535".into(),
            )),
            Some(n) => Ok(*n.get_ref()),
            // The default takes what is left above num (queue 65535 is the last).
            None => Ok(default_queues().min(u16::try_from(65536 - num).unwrap_or(u16::MAX))),
        }
    }

    fn coalesce(&self, raw: Option<&Spanned<String>>) -> Result<Duration, ConfigError> {
        match raw {
            None => Ok(DEFAULT_COALESCE),
            Some(s) => parse_coalesce(s.get_ref()).map_err(|e| (self.err)(s.span(), e.to_string())),
        }
    }

    /// `[ignore] addresses`; loopback when absent.
    fn ignore(&self, raw: Option<&[Spanned<String>]>) -> Result<Vec<IpNet>, ConfigError> {
        match raw {
            None => Ok(vec![
                "127.0.0.0/8".parse().expect("loopback"),
                "::1/128".parse().expect("loopback"),
            ]),
            Some(list) => list
                .iter()
                .map(|a| {
                    parse_net(a.get_ref().trim())
                        .map_err(|e| (self.err)(a.span(), format!("{e}: '{}'", a.get_ref())))
                })
                .collect(),
        }
    }

    fn repeat_factor(&self, raw: Option<&Spanned<u32>>) -> Result<u32, ConfigError> {
        match raw {
            Some(f) if *f.get_ref() == 0 => Err((self.err)(
                f.span(),
                "repeat_factor must be at least 1 (1 = off)".into(),
            )),
            Some(f) => Ok(*f.get_ref()),
            None => Ok(1),
        }
    }

    fn ipv6_prefix(&self, raw: Option<&Spanned<u8>>) -> Result<u8, ConfigError> {
        match raw {
            Some(p) if !(16..=128).contains(p.get_ref()) => Err((self.err)(
                p.span(),
                "ipv6_prefix must be between 16 and 128".into(),
            )),
            Some(p) => Ok(*p.get_ref()),
            None => Ok(64),
        }
    }

    /// `[metrics] listen`: absent or blank is none.
    fn metrics_listen(
        &self,
        raw: Option<Spanned<String>>,
    ) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        match raw {
            Some(l) if l.get_ref().trim().is_empty() => Ok(None),
            Some(l) => l.get_ref().trim().parse().map(Some).map_err(|_| {
                (self.err)(
                    l.span(),
                    format!(
                        "'{}' is not an address and port like \"127.0.0.1:9707\"",
                        l.get_ref()
                    ),
                )
            }),
            None => Ok(None),
        }
    }

    /// `[block]`'s actions beyond the nft set: `run`, `hosts_deny`, `route`.
    fn actions(&self, block: RawBlock) -> Result<ActionsConfig, ConfigError> {
        Ok(ActionsConfig {
            run: self.commands(block.run, "run")?,
            run_first: block.run_first.unwrap_or(false),
            run_timeout: self
                .duration_or(block.run_timeout.as_ref(), Duration::from_secs(10))?
                .min(Duration::from_secs(3600)),
            hosts_deny: block.hosts_deny.filter(|s| !s.trim().is_empty()).map(|t| {
                let file = block
                    .hosts_deny_file
                    .unwrap_or_else(|| "/etc/hosts.deny".into());
                (t, file)
            }),
            route: self.commands(block.route, "route")?,
        })
    }

    /// `[crowdsec]`: `None` when it names no LAPI (and nothing else).
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
        let lapi_url =
            lapi_url(url.get_ref()).map_err(|e| (self.err)(url.span(), e.to_string()))?;
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
            Some(p) => PortSet::parse(p.get_ref()).map_err(|e| self.port_err(p.span(), &e))?,
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
                        return Err(self.port_err(p.span(), &PortListError::Zero));
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
                match command_problem(&argv) {
                    Some(p) => Err((self.err)(span, format!("{which}: {p}"))),
                    None => Ok(argv),
                }
            })
            .collect()
    }

    /// `[block] log_prefix`, `log_rate`, `log_burst`.
    fn block_log(&self, block: &RawBlock) -> Result<Option<BlockLog>, ConfigError> {
        // Rate and burst are checked even without a prefix, so a typo shows at once.
        let (rate, per) = match &block.log_rate {
            Some(r) => {
                parse_log_rate(r.get_ref()).map_err(|e| (self.err)(r.span(), e.to_string()))?
            }
            None => parse_log_rate(DEFAULT_LOG_RATE).expect("default rate"),
        };
        let burst = self.positive(block.log_burst.as_ref(), DEFAULT_LOG_BURST, "log_burst")?;
        let Some(prefix) = &block.log_prefix else {
            return Ok(None);
        };
        if let Some(m) = log_prefix_problem(prefix.get_ref()) {
            return Err((self.err)(prefix.span(), m));
        }
        Ok(Some(BlockLog {
            prefix: prefix.get_ref().clone(),
            rate,
            per,
            burst,
        }))
    }

    fn port_err(&self, span: Range<usize>, e: &PortListError) -> ConfigError {
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
        parse_duration(text, zero_is_never).map_err(|e| (self.err)(span, e.to_string()))
    }

    /// A duration that cannot be "never", `default` when absent.
    fn duration_or(
        &self,
        raw: Option<&Spanned<String>>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match raw {
            None => Ok(default),
            // "0" is refused where it is not "never": a value is always there.
            Some(s) => Ok(self.duration(Some(s), "", false)?.unwrap_or(default)),
        }
    }
}

/// Why a `run`/`route` command cannot be run as it is, if it cannot.
fn command_problem(argv: &[String]) -> Option<&'static str> {
    match argv.first() {
        None => Some("the command is empty"),
        Some(p) if !p.starts_with('/') => {
            Some("the program must be an absolute path (it is run without a shell or PATH search)")
        }
        Some(_) if argv.iter().any(|a| a.contains('\0')) => {
            Some("an argument holds a NUL character")
        }
        Some(_) => None,
    }
}
