//! The vocabulary shared by this host's block policy (`policy`) and the fleet's blocks
//! (`decisions`): a block, the sets it goes to, who asked for it, what is remembered of it,
//! and the range of timeouts.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// The longest timeout accepted: a century ("100y", years of 365.25 days as humantime
/// counts them). The kernel's own limit is about 584 years of
/// milliseconds; anything longer is meant as "permanent", which is written "0".
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3_155_760_000);
/// Least time a block lasts.
pub const MIN_TIMEOUT: Duration = Duration::from_secs(1);

/// A block to write: a network (an address is a /32 or /128), its timeout, and the sets
/// it goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Block {
    pub net: IpNet,
    /// `None`: permanent.
    pub timeout: Option<Duration>,
    pub set: Set,
}

/// Which sets hold a block: this host's own (`blocked4`/`blocked6`: detection and the
/// administrator), or the fleet's (`fleet4`/`fleet6`: CrowdSec decisions). Kept apart so a
/// fleet range and a local address inside it never collide in one interval set, and a
/// deletion in the LAPI can only ever lift what the LAPI gave.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Set {
    #[default]
    Local,
    Fleet,
}

/// Who asked for a block.
/// Ordered: a block that is the administrator's stays theirs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Detection: a scan reached the trigger.
    #[default]
    Scan,
    /// `portsentry block`.
    Admin,
    /// A CrowdSec decision pulled from the LAPI: kept in its own book (`core::decisions`),
    /// never mixed with the two above.
    Fleet,
}

/// What is remembered of a block: what puts it back after a restart or a flush.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The blocked network; written as a plain address for a single host.
    #[serde(rename = "addr", with = "net_serde")]
    pub key: IpNet,
    /// Epoch seconds.
    pub since: u64,
    /// Epoch seconds; `None` = permanent.
    pub expires: Option<u64>,
    /// How many times this network has been blocked (repeat offenders get longer blocks).
    #[serde(default = "one")]
    pub count: u32,
    /// Shared, so a snapshot of a million records is cheap to take under the lock.
    pub reason: Arc<str>,
    #[serde(default)]
    pub origin: Origin,
}

fn one() -> u32 {
    1
}

mod net_serde {
    use ipnet::IpNet;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(net: &IpNet, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::core::ignore::net_text(*net))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<IpNet, D::Error> {
        let text = String::deserialize(d)?;
        crate::core::ignore::parse_net(&text)
            .map(|n| n.trunc())
            .map_err(|e| serde::de::Error::custom(format!("{e}: '{text}'")))
    }
}

/// Whole seconds within MIN_TIMEOUT..=MAX_TIMEOUT (configuration checks this already;
/// the policy does not rely on it).
pub fn clamp_timeout(t: Duration) -> Duration {
    let secs = t.as_secs() + u64::from(t.subsec_nanos() > 0);
    Duration::from_secs(secs).clamp(MIN_TIMEOUT, MAX_TIMEOUT)
}

/// How long a requested block lasts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Timeout {
    /// The policy's, growing with the network's blocks.
    #[default]
    Default,
    Permanent,
    For(Duration),
}

impl Timeout {
    /// An explicit length held to what the kernel can take (`clamp_timeout`).
    #[must_use]
    pub fn clamped(self) -> Timeout {
        match self {
            Timeout::For(t) => Timeout::For(clamp_timeout(t)),
            t => t,
        }
    }

    /// The length (`None`: permanent), `default` unless explicit.
    pub fn or(self, default: impl FnOnce() -> Option<Duration>) -> Option<Duration> {
        match self {
            Timeout::Default => default(),
            Timeout::Permanent => None,
            Timeout::For(t) => Some(t),
        }
    }
}
