//! Counters shared between threads: relaxed atomics, no locks on the packet path.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Packet threads (queues) at most.
pub const MAX_SHARDS: usize = 32;

use crate::core::probe::ScanKind;

/// Scan kinds as metric labels, in counter order.
pub const KINDS: [(&str, &str); 13] = [
    ("tcp", "syn"),
    ("tcp", "fin"),
    ("tcp", "null"),
    ("tcp", "xmas"),
    ("tcp", "ack"),
    ("tcp", "maimon"),
    ("tcp", "other"),
    ("udp", "udp"),
    ("sctp", "init"),
    ("sctp", "cookie_echo"),
    ("sctp", "other"),
    ("ip", "protocol"),
    ("ip", "unreadable"),
];

pub fn kind_index(kind: ScanKind) -> usize {
    match kind {
        ScanKind::Syn => 0,
        ScanKind::Fin => 1,
        ScanKind::Null => 2,
        ScanKind::Xmas => 3,
        ScanKind::Ack => 4,
        ScanKind::Maimon => 5,
        ScanKind::Other(_) => 6,
        ScanKind::Udp => 7,
        ScanKind::SctpInit => 8,
        ScanKind::SctpCookieEcho => 9,
        ScanKind::SctpOther(_) => 10,
        ScanKind::IpProtocol => 11,
        ScanKind::Unreadable => 12,
    }
}

#[derive(Debug, Default)]
pub struct Stats {
    /// Probes by scan kind (index: `kind_index`).
    pub probes: [AtomicU64; KINDS.len()],
    pub packets: AtomicU64,
    pub unparsed: AtomicU64,
    pub passed: AtomicU64,
    pub acted: AtomicU64,
    /// Sources that reached the trigger while holding a live connection: reported only.
    pub spared: AtomicU64,
    pub repeats: AtomicU64,
    pub recv_errors: AtomicU64,
    pub verdict_errors: AtomicU64,
    /// Events the responder could not take (channel full); an `Act` is retried by the next
    /// probe from the same source.
    pub events_dropped: AtomicU64,
    /// Acts held by a packet thread while the hand-off was full, handed on later.
    pub events_deferred: AtomicU64,
    pub blocks_written: AtomicU64,
    pub block_failures: AtomicU64,
    /// Blocks the kernel refused that wait for a retry (a gauge).
    pub blocks_pending: AtomicU64,
    pub unblocks: AtomicU64,
    pub commands_run: AtomicU64,
    pub commands_failed: AtomicU64,
    /// Action jobs not queued because the actions thread was behind.
    pub commands_dropped: AtomicU64,
    /// Log lines dropped because the journal or syslog was not keeping up.
    pub log_dropped: AtomicU64,
    /// Times the packet thread found its queue idle for a second: with `packets`, its sign
    /// of life for the watchdog.
    pub queue_idle: AtomicU64,
    /// Each packet thread's rounds (a batch, or an idle second): what the watchdog reads,
    /// so one stalled thread among several is noticed.
    pub shard_rounds: [AtomicU64; MAX_SHARDS],
    /// Packet threads running.
    pub shards: AtomicUsize,
    /// Rounds of the block writer, busy or idle (at least one a second).
    pub responder_rounds: AtomicU64,
    /// Outcomes the reporter was too far behind to take (name lookups, a slow log): their
    /// alert and history lines are not written; the blocks are made all the same.
    pub reports_dropped: AtomicU64,
    /// Sharing blocks with the fleet through CrowdSec's LAPI.
    pub fleet: FleetStats,
}

/// The LAPI connection as `status` and the metrics show it.
#[derive(Debug, Default)]
pub struct FleetStats {
    /// `OFF`, `UP` (the last call was answered), `DOWN` (unreachable or refusing), `WAITING`.
    pub state: AtomicU64,
    /// Epoch second of the last successful pull (0: none yet).
    pub last_pull: AtomicU64,
    /// Why the last call failed, for `status`.
    pub last_error: std::sync::Mutex<String>,
    /// Alerts the LAPI accepted.
    pub alerts_pushed: AtomicU64,
    /// Calls to push alerts (or log in for it) that failed.
    pub push_failures: AtomicU64,
    /// Local blocks not handed to the push thread (its queue was full).
    pub alerts_dropped: AtomicU64,
    /// Alerts the push thread holds (a gauge, spooled on disk while the LAPI is away).
    pub alerts_waiting: AtomicU64,
    /// Blocks handed over that the push thread has not taken yet (it is in a call).
    pub alerts_queued: AtomicU64,
    pub pulls: AtomicU64,
    pub pull_failures: AtomicU64,
    /// Elements of the fleet sets now (a gauge).
    pub blocked: AtomicU64,
    /// Decisions held now (a gauge).
    pub decisions: AtomicU64,
    /// Decisions refused: protected networks, or past the cap.
    pub refused: AtomicU64,
}

impl FleetStats {
    /// Alerts not yet accepted by the LAPI: held by the push thread, or handed to it.
    pub fn waiting(&self) -> u64 {
        Stats::get(&self.alerts_waiting).saturating_add(Stats::get(&self.alerts_queued))
    }

    pub const OFF: u64 = 0;
    pub const UP: u64 = 1;
    pub const DOWN: u64 = 2;
    /// Configured, no call made yet.
    pub const WAITING: u64 = 3;
}

impl Stats {
    pub fn set_shards(&self, n: usize) {
        self.shards.store(n.min(MAX_SHARDS), Relaxed);
    }

    /// Packet thread `shard` went round.
    pub fn round(&self, shard: usize) {
        if let Some(c) = self.shard_rounds.get(shard) {
            c.fetch_add(1, Relaxed);
        }
    }

    #[inline]
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    pub fn set(c: &AtomicU64, v: u64) {
        c.store(v, Relaxed);
    }

    pub fn get_usize(c: &AtomicUsize) -> usize {
        c.load(Relaxed)
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Relaxed)
    }
}
