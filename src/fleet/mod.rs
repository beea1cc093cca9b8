//! The fleet: this host's blocks shared through CrowdSec's Local API (LAPI), both ways.
//! `push` sends the blocks detection made here as alerts (never those received from the
//! fleet, never the administrator's), spooling them on disk while the LAPI is away;
//! `pull` streams the fleet's decisions into the fleet sets through the block policy's
//! protection. `lapi` is the HTTP client (timeouts everywhere), `wire` what goes over it,
//! `spool` the alerts waiting. Nothing here is on the packet path: the responder hands a
//! block over without waiting, and a hung LAPI holds up only these threads.
//!
//! May use: `core`, `config`, `firewall` (the pull thread writes the fleet sets as the
//! control server writes blocks), `system`.

pub mod lapi;
pub mod pull;
pub mod push;
pub mod spool;
pub mod wire;

use crate::core::probe::Probe;
use crate::core::stats::Stats;
use ipnet::IpNet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

/// A block this host's detection made: what the push thread turns into an alert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalBlock {
    pub net: IpNet,
    /// `None`: permanent.
    pub timeout: Option<Duration>,
    pub count: u32,
    /// Epoch second it was written.
    pub at: u64,
    /// The probe that asked for it.
    pub probe: Option<Probe>,
}

/// Blocks waiting for the push thread at most; past it a block is dropped and counted
/// (the LAPI being slow must never hold up a block).
pub const OUTBOX_CAPACITY: usize = 4096;

/// The responder's end of the hand-off to the push thread: never waits.
#[derive(Clone)]
pub struct Outbox {
    tx: SyncSender<LocalBlock>,
    stats: Arc<Stats>,
}

impl Outbox {
    pub fn new(stats: Arc<Stats>) -> (Outbox, Receiver<LocalBlock>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(OUTBOX_CAPACITY);
        (Outbox { tx, stats }, rx)
    }

    /// Hands `b` over, or drops and counts it when the push thread is behind.
    pub fn offer(&self, b: LocalBlock) {
        // Counted before it goes: the push thread may take it (and count it off) at once.
        let queued = &self.stats.fleet.alerts_queued;
        queued.fetch_add(1, Relaxed);
        match self.tx.try_send(b) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                queued.fetch_sub(1, Relaxed);
                Stats::inc(&self.stats.fleet.alerts_dropped)
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("{0}")]
    Transport(String),
    #[error("the LAPI did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the LAPI refused our credentials (HTTP {status}): {body}")]
    Unauthorized { status: u16, body: String },
    #[error("the LAPI answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("unreadable answer from the LAPI: {0}")]
    Reply(String),
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// Records a failed call for `status`.
fn failed(stats: &Stats, e: &FleetError) {
    Stats::set(&stats.fleet.state, crate::core::stats::FleetStats::DOWN);
    *stats
        .fleet
        .last_error
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = e.to_string();
}

/// Records an answered call for `status`.
fn answered(stats: &Stats) {
    Stats::set(&stats.fleet.state, crate::core::stats::FleetStats::UP);
}
