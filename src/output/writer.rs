//! A log writer thread behind a bounded, lossy queue: shared by stderr and syslog.

use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};

/// Lines waiting for each writer thread; a burst is already capped by the alert rate limit.
const QUEUED_LINES: usize = 16_384;

/// A lossy writer thread for `sink`.
pub fn queue<W: std::io::Write + Send + 'static>(
    name: &str,
    sink: W,
) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name(name)
        .finish(sink)
}
