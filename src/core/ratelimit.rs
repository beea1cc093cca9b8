//! A token bucket for log lines, with time passed in.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct RateLimit {
    per_second: u32,
    tokens: u32,
    refilled: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    pub fn new(per_second: u32) -> Self {
        RateLimit {
            per_second,
            tokens: per_second,
            refilled: None,
            suppressed: 0,
        }
    }

    /// Whether one more line may be written at `now`. Refused lines are counted.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.refilled {
            Some(t) if now.saturating_duration_since(t) < Duration::from_secs(1) => {}
            _ => {
                self.tokens = self.per_second;
                self.refilled = Some(now);
            }
        }
        if self.tokens > 0 {
            self.tokens -= 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// Lines refused since the last call.
    pub fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_n_per_second_then_refills() {
        let mut r = RateLimit::new(3);
        let t = Instant::now();
        assert!((0..3).all(|_| r.allow(t)));
        assert!(!r.allow(t + Duration::from_millis(500)));
        assert_eq!(r.take_suppressed(), 1);
        assert!(r.allow(t + Duration::from_millis(1000)));
        assert_eq!(r.take_suppressed(), 0);
    }
}
