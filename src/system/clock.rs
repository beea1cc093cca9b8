//! The wall clock, read in one place (the core is handed the time).

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the epoch; 0 for a clock before 1970.
pub fn epoch_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
