//! Whether the threads that matter go round: the packet threads and the block writer. The
//! main thread feeds systemd's watchdog only while both do.

use crate::core::stats::Stats;
use crate::system::notify::notify;
use std::time::{Duration, Instant};

/// Whether the packet thread and the block writer are making progress: the watchdog is
/// fed only while both are. Each goes round at least once a second, busy or idle.
pub struct Liveness {
    /// Each packet thread's rounds when they last changed, and when.
    queues: Vec<(u64, Instant)>,
    responder: (u64, Instant),
    /// A stall already reported.
    reported: bool,
    /// How long without progress before a thread counts as stalled.
    stalled: Duration,
}

/// A third of systemd's WatchdogSec (WATCHDOG_USEC), within 3 s (each thread goes round
/// once a second) and 10 s.
fn stall_limit() -> Duration {
    let usec = std::env::var("WATCHDOG_USEC")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(30_000_000);
    (Duration::from_micros(usec) / 3).clamp(Duration::from_secs(3), Duration::from_secs(10))
}

impl Default for Liveness {
    fn default() -> Liveness {
        Liveness::new()
    }
}

impl Liveness {
    pub fn new() -> Liveness {
        let now = Instant::now();
        Liveness {
            queues: Vec::new(),
            responder: (0, now),
            reported: false,
            stalled: stall_limit(),
        }
    }

    /// Notes the counters' progress at `now`; the thread that has stalled, if any.
    pub fn check(&mut self, stats: &Stats, now: Instant) -> Option<&'static str> {
        let shards = Stats::get_usize(&stats.shards).max(1);
        self.queues.resize(shards, (0, now));
        let r = Stats::get(&stats.responder_rounds);
        if self.responder.0 != r {
            self.responder = (r, now);
        }
        let mut stalled = None;
        for (seen, c) in self.queues.iter_mut().zip(&stats.shard_rounds) {
            let v = Stats::get(c);
            if seen.0 != v {
                *seen = (v, now);
            }
            if now.duration_since(seen.1) > self.stalled {
                stalled = Some("packet thread");
            }
        }
        if stalled.is_none() && now.duration_since(self.responder.1) > self.stalled {
            stalled = Some("block writer");
        }
        stalled
    }

    /// Tells systemd the daemon is alive, only while the packet path and the block writer
    /// both make progress: a stalled thread stops the feeding, and systemd restarts the
    /// daemon (the blocks come back from the state file).
    pub fn feed(&mut self, stats: &Stats, now: Instant) {
        match self.check(stats, now) {
            None => {
                self.reported = false;
                notify("WATCHDOG=1");
            }
            Some(thread) if !self.reported => {
                self.reported = true;
                tracing::error!(
                    "adminalert: ERROR: the {thread} has made no progress for {}s; the watchdog is no longer told all is well",
                    self.stalled.as_secs()
                );
            }
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_fed_only_while_both_threads_go_round() {
        let stats = Stats::default();
        let t0 = Instant::now();
        let mut l = Liveness::new();
        let at = |s| t0 + Duration::from_secs(s);
        stats.set_shards(2);
        let both = |stats: &Stats| {
            stats.round(0);
            stats.round(1);
        };
        both(&stats);
        Stats::inc(&stats.responder_rounds);
        assert_eq!(l.check(&stats, at(1)), None);
        // The block writer stops; the packet threads go on.
        for s in 2..=20 {
            both(&stats);
            let stalled = l.check(&stats, at(s));
            assert_eq!(stalled.is_some(), s > 11, "at {s}s: {stalled:?}");
        }
        assert_eq!(l.check(&stats, at(21)), Some("block writer"));
        // One of the two packet threads stops while the rest goes on.
        let mut l = Liveness::new();
        Stats::inc(&stats.responder_rounds);
        l.check(&stats, at(30));
        for s in 31..=42 {
            Stats::inc(&stats.responder_rounds);
            stats.round(0);
            let stalled = l.check(&stats, at(s));
            assert_eq!(stalled, (s > 40).then_some("packet thread"), "at {s}s");
        }
    }
}
