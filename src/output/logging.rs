//! Where log lines go: stderr (the journal under systemd) and, when configured, syslog.
//! Each has a writer thread behind a bounded queue, so no thread that blocks scanners ever
//! waits on a log that stopped reading (a syslog socket queues about ten datagrams, then
//! every writer blocks). Lines a stuck log cannot take are dropped and counted.

use crate::output::syslog::SyslogLayer;
use crate::output::writer::queue;
use tracing_appender::non_blocking::{ErrorCounter, WorkerGuard};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Keeps the writer threads: dropping it writes out what is queued (for at most a second).
pub struct Logging {
    _guards: Vec<WorkerGuard>,
    counters: Vec<ErrorCounter>,
}

impl Logging {
    /// Lines dropped so far because a log was not keeping up.
    pub fn dropped(&self) -> u64 {
        self.counters.iter().map(|c| c.dropped_lines() as u64).sum()
    }
}

/// Installs the global subscriber: INFO (DEBUG with `verbose`) to stderr, and to syslog.
pub fn init(verbose: bool, syslog: bool) -> Logging {
    let level = if verbose {
        tracing::Level::DEBUG
    } else {
        tracing::Level::INFO
    };
    let (stderr, guard) = queue("log", std::io::stderr());
    let mut logging = Logging {
        counters: vec![stderr.error_counter()],
        _guards: vec![guard],
    };
    // Under systemd the journal adds its own timestamp and priority.
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(false)
        .with_writer(stderr);
    let fmt = if journal {
        fmt.without_time().with_level(false).boxed()
    } else {
        fmt.boxed()
    };
    let filter = tracing_subscriber::filter::LevelFilter::from_level(level);
    let registry = tracing_subscriber::registry().with(filter).with(fmt);
    if syslog {
        let (layer, guard) = SyslogLayer::open();
        logging.counters.push(layer.error_counter());
        logging._guards.push(guard);
        registry.with(layer).init();
    } else {
        registry.init();
    }
    logging
}
