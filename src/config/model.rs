//! The validated configuration, what the other layers read: `Config` and the parts it
//! holds, and the defaults a file may leave out.

use super::crowdsec::Crowdsec;
use super::raw::{SteeringChoice, WatchMode};
use super::units::RatePer;
use crate::core::detector::Action;
use crate::core::ports::PortSet;
use ipnet::IpNet;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_PATH: &str = "/etc/portsentry/portsentry.toml";
/// Most queues (packet threads) a configuration may ask for.
pub const MAX_QUEUES: u16 = crate::core::stats::MAX_SHARDS as u16;

/// One queue per CPU, up to 8: the kernel spreads sources over them by address, so a
/// spoofed flood uses every core (each source is counted in one shard, whatever its queue).
#[must_use]
pub fn default_queues() -> u16 {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    u16::try_from(cpus.clamp(1, 8)).unwrap_or(8)
}
pub const DEFAULT_INCLUDE: &str = "/usr/share/portsentry/portsentry.nft";
pub const DEFAULT_SOCKET: &str = "/run/portsentry/portsentry.sock";

/// Debian's `TCP_PORTS` / `UDP_PORTS` defaults, used in `ports` mode when none are given.
pub const DEFAULT_TCP_PORTS: &str = "1,11,15,79,111,119,143,540,635,1080,1524,2000,5742,6667,12345,12346,20034,27665,31337,32771,32772,32773,32774,40421,49724,54320";
pub const DEFAULT_UDP_PORTS: &str = "1,7,9,69,161,162,513,635,640,641,700,37444,34555,31335,32770,32771,32772,32773,32774,31337,54321";

#[derive(Debug, Clone)]
pub struct Config {
    pub source: Option<PathBuf>,
    pub queue_num: u16,
    /// Queues `queue_num..` in all: one packet thread each.
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

/// PortSentry's actions beyond the nft block: `KILL_RUN_CMD`, `KILL_HOSTS_DENY`, `KILL_ROUTE`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ActionsConfig {
    /// The external command (`KILL_RUN_CMD`): argv commands run in order, stopping at the
    /// first that fails (1.2's `a && b`). Empty: none. No command is itself empty.
    pub run: Vec<Vec<String>>,
    pub run_first: bool,
    /// For the whole sequence of a step.
    pub run_timeout: Duration,
    /// hosts.deny line template and the file it goes to.
    pub hosts_deny: Option<(String, PathBuf)>,
    /// The route command (`KILL_ROUTE`), as `run`.
    pub route: Vec<Vec<String>>,
}

impl ActionsConfig {
    /// Nothing to do beyond the nft set (an empty command counts as none).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        let has = |c: &[Vec<String>]| c.iter().any(|c| !c.is_empty());
        !has(&self.run) && self.hosts_deny.is_none() && !has(&self.route)
    }
}
