//! `portsentry run`: set up the table, sets and steering, bind the queue, start the
//! threads, wait for signals.

use crate::config::{Config, SteeringChoice};
use crate::detector::{Detector, DetectorConfig};
use crate::firewall::{FirewallError, Nft, Steering};
use crate::ignore::{always_protected, read_ignore_file, IgnoreList};
use crate::queue::{self, QueueOptions};
use crate::responder::{Responder, ResponderConfig};
use crate::stats::Stats;
use crate::{host, ports};
use ipnet::IpNet;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Firewall(#[from] FirewallError),
    #[error("table inet portsentry is missing and the include {0} does not exist; load the nft include first (nft -f portsentry.nft)")]
    NoTable(String),
    #[error("cannot bind NFQUEUE {num}: {error} (is another process using this queue number?)")]
    Queue { num: u16, error: std::io::Error },
    #[error("{0}")]
    Setup(String),
}

/// Capacity of the decision channel: room for a burst of distinct sources.
const EVENT_CAPACITY: usize = 65_536;

pub fn run(cfg: Config) -> Result<(), DaemonError> {
    tracing::warn!(
        "adminalert: PortSentry {} is starting.",
        env!("CARGO_PKG_VERSION")
    );
    let mut nft = Nft::open()?;
    if !nft.table_exists()? {
        if !cfg.include.exists() {
            return Err(DaemonError::NoTable(cfg.include.display().to_string()));
        }
        tracing::warn!(
            "adminalert: table inet portsentry is missing; loading {}",
            cfg.include.display()
        );
        Nft::load_include(&cfg.include)?;
    }

    let ignore = build_ignore(&cfg);
    nft.sync_allow(ignore.nets())?;
    nft.sync_watch(&cfg.tcp.ports, &cfg.udp.ports)?;
    tracing::info!(
        "watching TCP ({:?}): {} ports, UDP ({:?}): {} ports; never blocked: {}",
        cfg.tcp.mode,
        cfg.tcp.ports.len(),
        cfg.udp.mode,
        cfg.udp.ports.len(),
        ignore
            .nets()
            .iter()
            .map(IpNet::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    tracing::debug!("TCP ports: {}", ports::compact(&cfg.tcp.ports));

    // Bind before steering: with `bypass`, packets steered before we listen are accepted.
    let opts = QueueOptions {
        num: cfg.queue_num,
        max_len: cfg.queue_max_len,
        fail_open: cfg.fail_open,
        copy_range: 256,
    };
    let mut q = queue::open(&opts).map_err(|error| DaemonError::Queue {
        num: opts.num,
        error,
    })?;
    let prefer = match cfg.steering {
        SteeringChoice::Auto => None,
        SteeringChoice::Native => Some(Steering::Native),
        SteeringChoice::Compat => Some(Steering::Compat),
    };
    let steering = nft.install_steering(prefer, cfg.queue_num, 1)?;
    tracing::warn!(
        "adminalert: steering probes to queue {} with the {}",
        cfg.queue_num,
        steering.name()
    );

    let stats = Arc::new(Stats::default());
    let (tx, rx) = sync_channel(EVENT_CAPACITY);
    let responder_fw = Nft::open()?;
    let responder = Responder::new(
        responder_fw,
        ResponderConfig {
            timeout: cfg.block_timeout,
            history: Some(cfg.history.clone()),
            blocked: Some(cfg.blocked.clone()),
            lines_per_second: 200,
        },
        stats.clone(),
    );
    spawn("responder", move || responder.run(rx))?;

    let hold = cfg
        .block_timeout
        .unwrap_or(Duration::from_secs(100 * 365 * 86400));
    let mut detector = Detector::new(
        DetectorConfig {
            trigger: cfg.trigger,
            window: cfg.window,
            tcp: cfg.block_tcp,
            udp: cfg.block_udp,
            hold,
            max_sources: cfg.max_sources,
        },
        ignore,
    );
    let qstats = stats.clone();
    spawn("queue", move || {
        queue::run(&mut q, &mut detector, &tx, &qstats, Instant::now);
    })?;
    tracing::warn!("adminalert: PortSentry is now active and listening.");

    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| DaemonError::Setup(format!("signal handlers: {e}")))?;
    for sig in signals.forever() {
        match sig {
            SIGHUP => tracing::warn!("adminalert: SIGHUP received; reload is not supported yet, restart to apply changes"),
            _ => break,
        }
    }
    // Stop steering first so no probe waits on a queue nobody reads (bypass covers the
    // moment between; blocks stay in the sets until they time out).
    if let Err(e) = nft.remove_steering() {
        tracing::error!("adminalert: ERROR: could not remove steering rule: {e}");
    }
    tracing::warn!(
        "adminalert: PortSentry is shutting down (packets {}, acted {}, blocks written {}, block failures {})",
        Stats::get(&stats.packets),
        Stats::get(&stats.acted),
        Stats::get(&stats.blocks_written),
        Stats::get(&stats.block_failures)
    );
    Ok(())
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), DaemonError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(|_| ())
        .map_err(|e| DaemonError::Setup(format!("thread {name}: {e}")))
}

/// Configured addresses, the ignore file, the host's own addresses and the addresses that
/// are always protected.
fn build_ignore(cfg: &Config) -> IgnoreList {
    let mut list = IgnoreList::new(always_protected());
    list.extend(cfg.ignore.iter().copied());
    if let Some(path) = &cfg.ignore_file {
        match read_ignore_file(path) {
            Ok(nets) => list.extend(nets),
            Err(e) => tracing::error!("adminalert: ERROR: ignore file: {e}; continuing without it"),
        }
    }
    match host::local_addresses() {
        Ok(addrs) => list.extend(addrs.into_iter().map(IpNet::from)),
        Err(e) => tracing::error!("adminalert: ERROR: cannot list local addresses: {e}"),
    }
    list
}
