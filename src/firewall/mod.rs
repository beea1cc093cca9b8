//! The firewall seam: our nftables table, its sets and the steering rule, written through
//! nftnl/mnl in transactions, and checked against what it should be. The names here are a
//! contract with users' scripts. `Firewall` is the seam; `nft::Nft` the kernel,
//! `memory::Memory` a stand-in for tests.
//!
//! May use: `core` (blocks, port sets), `system` (socket options). Never `config` or the
//! daemon: they hand it specs.

pub mod memory;
pub mod netlink;
pub mod nft;
pub mod raw;

pub use crate::core::policy::{Block, Set};
use crate::core::ports::PortSet;
use ipnet::IpNet;
use std::ffi::CStr;
use std::io;
use std::time::Duration;

pub const TABLE: &CStr = c"portsentry";
pub const BLOCKED4: &CStr = c"blocked4";
pub const BLOCKED6: &CStr = c"blocked6";
pub const FLEET4: &CStr = c"fleet4";
pub const FLEET6: &CStr = c"fleet6";
pub const ALLOW4: &CStr = c"allow4";
pub const ALLOW6: &CStr = c"allow6";
pub const WATCH_TCP: &CStr = c"watch_tcp";
pub const WATCH_UDP: &CStr = c"watch_udp";
pub const SERVED_TCP: &CStr = c"served_tcp";
pub const SERVED_UDP: &CStr = c"served_udp";
pub const STEER: &CStr = c"steer";

/// The table's definition, the same text as the shipped include: the daemon can put its
/// table back whatever happened to the file.
pub const DEFINITION: &str = include_str!("../../nft/portsentry.nft");

/// The newest blocks looked up in the kernel at each check after a ruleset change.
pub const SPOT_CHECK: usize = 16;

/// How probes reach the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Steering {
    /// nft `queue` statement (kernel module nft_queue).
    Native,
    /// xt NFQUEUE target through nft_compat, for kernels without nft_queue.
    Compat,
}

impl Steering {
    pub fn name(self) -> &'static str {
        match self {
            Steering::Native => "native nft queue",
            Steering::Compat => "xt NFQUEUE compat target",
        }
    }

    /// The kernel module that provides it.
    pub fn module(self) -> &'static str {
        match self {
            Steering::Native => "nft_queue",
            Steering::Compat => "xt_NFQUEUE",
        }
    }
}

/// Where the package lists the modules steering needs; systemd-modules-load loads them at
/// boot (the daemon has CAP_NET_ADMIN only and cannot load modules itself).
pub const MODULES_LOAD_FILE: &str = "/usr/lib/modules-load.d/portsentry.conf";

/// What to do when the kernel rejects a steering rule with ENOENT: the module that provides
/// it is not loaded (the kernel never autoloads xt_NFQUEUE for an `inet` table).
fn module_hint(steering: Steering, error: &io::Error) -> String {
    if error.raw_os_error() != Some(libc::ENOENT) {
        return String::new();
    }
    let m = steering.module();
    let without = match steering {
        Steering::Native => "; a kernel without nft_queue needs steering = \"compat\" or \"auto\"",
        Steering::Compat => "",
    };
    format!(
        ": kernel module {m} is not loaded; load it with `modprobe {m}`, or at every boot with \
         {MODULES_LOAD_FILE} (shipped by the package; `systemctl restart systemd-modules-load` \
         applies it now){without}"
    )
}

/// A rate-limited nft `log` of the packets dropped because their source is blocked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRule {
    /// Printable ASCII without `"` or `\\` (checked by the configuration).
    pub prefix: String,
    pub rate: u32,
    /// "second", "minute", "hour" or "day".
    pub per: &'static str,
    pub burst: u32,
}

/// What the table should hold beyond its definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSpec {
    pub queue: u16,
    pub queues: u16,
    /// `None`: whichever the kernel has, native first.
    pub steering: Option<Steering>,
    pub log: Option<LogRule>,
    /// A source stays a live client this long after its connection's last packet.
    pub client_timeout: Duration,
    /// IPv6 clients are remembered by the prefix scanners are blocked by.
    pub ipv6_prefix: u8,
    /// A port stays a service (no trap) this long after it last had a listener.
    pub listener_grace: Duration,
}

impl Default for TableSpec {
    /// The include as shipped, steered to queue 0.
    fn default() -> TableSpec {
        TableSpec {
            queue: 0,
            queues: 1,
            steering: None,
            log: None,
            client_timeout: Duration::from_secs(3600),
            ipv6_prefix: 64,
            listener_grace: Duration::from_secs(3600),
        }
    }
}

/// The include's own values for what `TableSpec` sets: `text` puts the configured ones in
/// their place (a test checks that each is there to be replaced).
const DEFAULT_CLIENT_TIMEOUT: &str = "{ ip saddr timeout 1h }";
const DEFAULT_CLIENT_TIMEOUT6_HOST: &str = "{ ip6 saddr timeout 1h }";
const DEFAULT_CLIENT_TIMEOUT6: &str = "ffff:ffff:ffff:ffff:: timeout 1h }";
const DEFAULT_PREFIX6: &str = "ip6 saddr & ffff:ffff:ffff:ffff:: ";
const DEFAULT_GRACE_TCP: &str = "{ tcp dport timeout 1h }";
const DEFAULT_GRACE_UDP: &str = "{ udp dport timeout 1h }";

impl TableSpec {
    /// The definition with the configured timeouts and prefix, and the log rule when there
    /// is one, as `nft -f` reads it.
    pub fn text(&self) -> String {
        // Whole hours as the include writes them, so the defaults give the include itself.
        let secs = |d: Duration| match d.as_secs().max(1) {
            s if s % 3600 == 0 => format!("{}h", s / 3600),
            s => format!("{s}s"),
        };
        let mask = ipnet::Ipv6Net::new(std::net::Ipv6Addr::UNSPECIFIED, self.ipv6_prefix.min(128))
            .map(|n| n.netmask())
            .unwrap_or(std::net::Ipv6Addr::from(u128::MAX));
        let mut t = DEFINITION
            .replace(
                DEFAULT_CLIENT_TIMEOUT,
                &format!("{{ ip saddr timeout {} }}", secs(self.client_timeout)),
            )
            .replace(
                DEFAULT_CLIENT_TIMEOUT6_HOST,
                &format!("{{ ip6 saddr timeout {} }}", secs(self.client_timeout)),
            )
            .replace(
                DEFAULT_CLIENT_TIMEOUT6,
                &format!(
                    "ffff:ffff:ffff:ffff:: timeout {} }}",
                    secs(self.client_timeout)
                ),
            )
            .replace(DEFAULT_PREFIX6, &format!("ip6 saddr & {mask} "))
            .replace(
                DEFAULT_GRACE_TCP,
                &format!("{{ tcp dport timeout {} }}", secs(self.listener_grace)),
            )
            .replace(
                DEFAULT_GRACE_UDP,
                &format!("{{ udp dport timeout {} }}", secs(self.listener_grace)),
            );
        if let Some(l) = &self.log {
            t.push_str(&format!(
                "\ninsert rule inet portsentry blocked limit rate {}/{} burst {} packets log prefix \"{}\"\n",
                l.rate, l.per, l.burst, l.prefix
            ));
        }
        t
    }
}

/// What a check of the table found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    Intact,
    /// No table inet portsentry.
    Missing,
    /// Something differs from what was put in place; says what.
    Damaged(String),
}

/// What `build` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Built {
    pub steering: Steering,
    /// The table was missing, or had to be replaced whole (its elements are gone).
    pub recreated: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("netlink: {0}")]
    Io(#[from] io::Error),
    #[error("{what} was rejected by the kernel: {error}")]
    Rejected {
        what: &'static str,
        error: io::Error,
    },
    #[error("steering rule ({}) was rejected by the kernel: {error}{}", .steering.name(), module_hint(*.steering, .error))]
    Steering {
        steering: Steering,
        error: io::Error,
    },
    /// Neither steering works (`auto`). Where the kernel has no nft_queue, the compat target
    /// is the way, so only its module is named.
    #[error("cannot steer packets to the queue: native queue: {native}; compat NFQUEUE target: {compat}{}", module_hint(Steering::Compat, .compat))]
    NoSteering {
        native: io::Error,
        compat: io::Error,
    },
    #[error("loading the table definition with nft failed: {0}")]
    Definition(String),
    #[error("the table changed while it was being put back ({0}); trying again")]
    Unsettled(String),
}

/// What a batch of blocks came to.
#[derive(Debug, Default)]
pub struct BlockReport {
    pub written: usize,
    pub failed: Vec<(IpNet, io::Error)>,
}

/// A block the kernel holds, and the time it has left (`None`: permanent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listed {
    pub net: IpNet,
    pub left: Option<Duration>,
    pub set: Set,
}

/// Where decisions turn into kernel state. One trait for everything the daemon asks of the
/// firewall, so its logic (heal, restore, unblock, the block policy) runs against the
/// in-memory stand-in in unit tests, and against the kernel in namespace tests.
pub trait Firewall: Send {
    /// Adds blocks, or refreshes their timeouts.
    fn add_blocks(&mut self, blocks: &[Block]) -> BlockReport;
    /// Removes blocks from `set`; absent ones are not an error.
    fn remove_blocks(&mut self, set: Set, nets: &[IpNet]) -> Result<(), FirewallError>;
    /// Every block of every set, this host's own first.
    fn list_blocks(&mut self) -> Result<Vec<Listed>, FirewallError>;
    /// Those of `nets` that `set` does not hold.
    fn missing_blocks(&mut self, set: Set, nets: &[IpNet]) -> Result<Vec<IpNet>, FirewallError>;
    fn sync_allow(&mut self, nets: &[IpNet]) -> Result<(), FirewallError>;
    fn sync_watch(&mut self, tcp: &PortSet, udp: &PortSet) -> Result<(), FirewallError>;
    /// Marks ports as served (a listener seen there) for `grace`, refreshing those already
    /// marked: while their service restarts they are no trap.
    fn note_served(
        &mut self,
        tcp: &PortSet,
        udp: &PortSet,
        grace: Duration,
    ) -> Result<(), FirewallError>;
    /// Puts the table, its rules and the steering rule in place (sets keep their elements
    /// unless the table had to be replaced).
    fn build(&mut self, spec: &TableSpec) -> Result<Built, FirewallError>;
    /// Remembers the table as it is now as the state to check against.
    fn seal(&mut self) -> Result<(), FirewallError>;
    /// Compares the table with what was sealed.
    fn check(&mut self) -> Result<Health, FirewallError>;
    /// Empties chain `steer`: probes are no longer queued (a clean stop).
    fn remove_steering(&mut self) -> Result<(), FirewallError>;
}
