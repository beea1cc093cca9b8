//! Counters shared between threads: relaxed atomics, no locks on the packet path.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Stats {
    pub packets: AtomicU64,
    pub unparsed: AtomicU64,
    pub passed: AtomicU64,
    pub acted: AtomicU64,
    pub repeats: AtomicU64,
    pub recv_errors: AtomicU64,
    pub verdict_errors: AtomicU64,
    /// Events the responder could not take (channel full); an `Act` is retried by the next
    /// probe from the same source.
    pub events_dropped: AtomicU64,
    pub blocks_written: AtomicU64,
    pub block_failures: AtomicU64,
    pub unblocks: AtomicU64,
    pub commands_run: AtomicU64,
    pub commands_failed: AtomicU64,
    /// Action jobs not queued because the actions thread was behind.
    pub commands_dropped: AtomicU64,
}

impl Stats {
    #[inline]
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Relaxed)
    }
}
