//! Probes from sources already acted on, summarised: the first one gets 1.2's line, then
//! each source gets at most one count line per period. A 1000-port scan writes a report,
//! a block line, one "already blocked" line and perhaps one count, not 1000 lines.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How often a source still probing gets a count line.
pub const PERIOD: Duration = Duration::from_secs(60);
/// Sources tracked for counts; beyond it, repeats are counted together (bounded memory
/// under spoofed floods).
pub const MAX_TRACKED: usize = 4096;

#[derive(Debug)]
struct Tally {
    since: Instant,
    count: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Summary {
    /// `count` probes from `addr` were dropped in the last `secs` seconds.
    Host { addr: IpAddr, count: u64, secs: u64 },
    /// Probes from sources past MAX_TRACKED.
    Others { count: u64 },
}

#[derive(Debug, Default)]
pub struct Repeats {
    by_src: HashMap<IpAddr, Tally>,
    others: u64,
    others_since: Option<Instant>,
}

impl Repeats {
    /// Records `n` repeated probes from `addr` at `now`. Returns true when this is the
    /// source's first since it was last quiet for a PERIOD: write 1.2's line for it.
    pub fn record(&mut self, addr: IpAddr, n: u64, now: Instant) -> bool {
        if let Some(t) = self.by_src.get_mut(&addr) {
            t.count += n;
            return false;
        }
        if self.by_src.len() >= MAX_TRACKED {
            self.others += n;
            self.others_since.get_or_insert(now);
            return false;
        }
        // The first probe is the one the line reports; the rest are counted.
        self.by_src.insert(
            addr,
            Tally {
                since: now,
                count: n - 1,
            },
        );
        true
    }

    /// Appends the counts whose period has ended at `now`, restarting them; sources that
    /// stayed quiet for a whole period are forgotten.
    pub fn due(&mut self, now: Instant, out: &mut Vec<Summary>) {
        self.by_src.retain(|&addr, t| {
            let age = now.saturating_duration_since(t.since);
            if age < PERIOD {
                return true;
            }
            if t.count == 0 {
                return false;
            }
            out.push(Summary::Host {
                addr,
                count: t.count,
                secs: age.as_secs(),
            });
            *t = Tally {
                since: now,
                count: 0,
            };
            true
        });
        if self
            .others_since
            .is_some_and(|s| now.saturating_duration_since(s) >= PERIOD)
        {
            out.push(Summary::Others {
                count: std::mem::take(&mut self.others),
            });
            self.others_since = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    #[test]
    fn first_repeat_is_reported_then_counted_once_per_period() {
        let t0 = Instant::now();
        let mut r = Repeats::default();
        let mut out = Vec::new();
        assert!(r.record(a(2), 3, t0));
        for i in 1..=997 {
            assert!(!r.record(a(2), 1, t0 + Duration::from_millis(i)));
        }
        r.due(t0 + Duration::from_secs(59), &mut out);
        assert!(out.is_empty());
        r.due(t0 + PERIOD, &mut out);
        assert_eq!(
            out,
            [Summary::Host {
                addr: a(2),
                count: 999,
                secs: 60
            }]
        );
        // Quiet for a period: forgotten, so a later repeat is reported again.
        out.clear();
        r.due(t0 + 2 * PERIOD, &mut out);
        assert!(out.is_empty());
        assert!(r.record(a(2), 1, t0 + 2 * PERIOD));
    }

    #[test]
    fn a_single_repeat_needs_no_count_line() {
        let t0 = Instant::now();
        let mut r = Repeats::default();
        let mut out = Vec::new();
        assert!(r.record(a(2), 1, t0));
        r.due(t0 + PERIOD, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn sources_beyond_the_cap_are_counted_together() {
        let t0 = Instant::now();
        let mut r = Repeats::default();
        let mut out = Vec::new();
        for i in 0..MAX_TRACKED as u32 {
            assert!(r.record(IpAddr::from((0xC612_0000u32 + i).to_be_bytes()), 1, t0));
        }
        assert!(!r.record(a(2), 5, t0));
        assert!(!r.record(a(3), 2, t0));
        assert_eq!(r.by_src.len(), MAX_TRACKED);
        r.due(t0 + PERIOD, &mut out);
        assert_eq!(out, [Summary::Others { count: 7 }]);
    }
}
