//! What the daemon says: PortSentry 1.2's alert and history lines, the log writers (stderr
//! and syslog, each behind a bounded queue), and the Prometheus textfile.
//!
//! May use: `core`, `system`.

pub mod alert;
pub mod logging;
pub mod metrics;
pub mod scrape;
pub mod syslog;
pub mod writer;
