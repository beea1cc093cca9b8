//! `portsentry run`: set up the table, sets and steering, bind the queue, start the
//! threads, then serve signals and periodic upkeep from the main thread.

use crate::config::{Config, SteeringChoice};
use crate::detector::{Detector, DetectorConfig};
use crate::firewall::{FirewallError, Nft, Steering};
use crate::host;
use crate::ignore::{always_protected, read_ignore_file, IgnoreList};
use crate::listening::listening;
use crate::ports::{self, PortSet};
use crate::probe::Proto;
use crate::queue::{self, Control, QueueOptions};
use crate::responder::{Responder, ResponderConfig};
use crate::stats::Stats;
use ipnet::IpNet;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::net::IpAddr;
use std::sync::mpsc::{channel, sync_channel, Sender};
use std::sync::{Arc, RwLock};
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
/// How often the host's own addresses are re-read (DHCP, SLAAC, new interfaces).
const ADDRESS_REFRESH: Duration = Duration::from_secs(10);
const TICK: Duration = Duration::from_millis(200);

/// What the main thread keeps to apply reloads and upkeep.
struct Running {
    cfg: Config,
    nft: Nft,
    control: Sender<Control>,
    timeout: Arc<RwLock<Option<Duration>>>,
    local: Vec<IpAddr>,
}

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

    let local = local_addresses();
    let ignore = build_ignore(&cfg, &local);
    apply_sets(&mut nft, &cfg, &ignore)?;

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
    let timeout = Arc::new(RwLock::new(cfg.block_timeout));
    let responder = Responder::new(
        Nft::open()?,
        ResponderConfig {
            timeout: timeout.clone(),
            history: Some(cfg.history.clone()),
            blocked: Some(cfg.blocked.clone()),
            lines_per_second: 200,
        },
        stats.clone(),
    );
    spawn("responder", move || responder.run(rx))?;

    let (control, control_rx) = channel();
    let mut detector = Detector::new(detector_config(&cfg), ignore);
    let qstats = stats.clone();
    spawn("queue", move || {
        queue::run(
            &mut q,
            &mut detector,
            &tx,
            &control_rx,
            &qstats,
            Instant::now,
        );
    })?;
    tracing::warn!("adminalert: PortSentry is now active and listening.");

    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| DaemonError::Setup(format!("signal handlers: {e}")))?;
    let mut running = Running {
        cfg,
        nft,
        control,
        timeout,
        local,
    };
    let mut last_refresh = Instant::now();
    'serve: loop {
        for sig in signals.pending() {
            match sig {
                SIGHUP => running.reload(),
                _ => break 'serve,
            }
        }
        if last_refresh.elapsed() >= ADDRESS_REFRESH {
            last_refresh = Instant::now();
            running.refresh_addresses();
        }
        std::thread::sleep(TICK);
    }
    // Stop steering first so no probe waits on a queue nobody reads (bypass covers the
    // moment between; blocks stay in the sets until they time out).
    if let Err(e) = running.nft.remove_steering() {
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

impl Running {
    /// SIGHUP: re-read the configuration and the ignore file. A bad file is reported and
    /// the running configuration kept.
    fn reload(&mut self) {
        let new = match &self.cfg.source {
            Some(p) => Config::load(p),
            None => Config::load_default(),
        };
        let new = match new {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(
                    "adminalert: ERROR: reload failed, keeping the running configuration: {e}"
                );
                return;
            }
        };
        if new.queue_num != self.cfg.queue_num || new.steering != self.cfg.steering {
            tracing::warn!(
                "adminalert: queue and steering changes take effect at the next restart"
            );
        }
        let ignore = build_ignore(&new, &self.local);
        if let Err(e) = apply_sets(&mut self.nft, &new, &ignore) {
            tracing::error!("adminalert: ERROR: reload could not update the nft sets: {e}");
            return;
        }
        *self.timeout.write().unwrap_or_else(|e| e.into_inner()) = new.block_timeout;
        let _ = self
            .control
            .send(Control::Reconfigure(detector_config(&new), ignore));
        self.cfg = Config {
            source: self.cfg.source.clone(),
            ..new
        };
        tracing::warn!("adminalert: configuration reloaded");
    }

    fn refresh_addresses(&mut self) {
        let now = local_addresses();
        if now == self.local {
            return;
        }
        tracing::warn!(
            "adminalert: the host's addresses changed; protecting {}",
            join(&now)
        );
        self.local = now;
        let ignore = build_ignore(&self.cfg, &self.local);
        if let Err(e) = self.nft.sync_allow(ignore.nets()) {
            tracing::error!("adminalert: ERROR: could not update the allow sets: {e}");
        }
        let _ = self
            .control
            .send(Control::Reconfigure(detector_config(&self.cfg), ignore));
    }
}

fn apply_sets(nft: &mut Nft, cfg: &Config, ignore: &IgnoreList) -> Result<(), FirewallError> {
    nft.sync_allow(ignore.nets())?;
    nft.sync_watch(&cfg.tcp.ports, &cfg.udp.ports)?;
    tracing::info!(
        "watching TCP ({:?}): {} ports, UDP ({:?}): {} ports; never blocked: {}",
        cfg.tcp.mode,
        cfg.tcp.ports.len(),
        cfg.udp.mode,
        cfg.udp.ports.len(),
        join(ignore.nets())
    );
    tracing::debug!("TCP ports: {}", ports::compact(&cfg.tcp.ports));
    for (proto, watched) in [(Proto::Tcp, &cfg.tcp.ports), (Proto::Udp, &cfg.udp.ports)] {
        let taken = intersect(watched, &listening(proto));
        if !taken.is_empty() {
            tracing::info!(
                "{} ports with a listener are left to it (checked at packet time): {}",
                proto.name(),
                ports::compact(&taken)
            );
        }
    }
    Ok(())
}

fn intersect(a: &PortSet, b: &PortSet) -> PortSet {
    let mut out = PortSet::new();
    for p in a.iter().filter(|p| b.contains(*p)) {
        out.insert(p);
    }
    out
}

fn detector_config(cfg: &Config) -> DetectorConfig {
    DetectorConfig {
        trigger: cfg.trigger,
        window: cfg.window,
        tcp: cfg.block_tcp,
        udp: cfg.block_udp,
        // A source stays "acted on" as long as its block lasts (a century for permanent).
        hold: cfg
            .block_timeout
            .unwrap_or(Duration::from_secs(100 * 365 * 86400)),
        max_sources: cfg.max_sources,
        score: cfg.score,
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), DaemonError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(|_| ())
        .map_err(|e| DaemonError::Setup(format!("thread {name}: {e}")))
}

fn local_addresses() -> Vec<IpAddr> {
    host::local_addresses().unwrap_or_else(|e| {
        tracing::error!("adminalert: ERROR: cannot list local addresses: {e}");
        Vec::new()
    })
}

/// Configured addresses, the ignore file, the host's own addresses and the addresses that
/// are always protected.
fn build_ignore(cfg: &Config, local: &[IpAddr]) -> IgnoreList {
    let mut list = IgnoreList::new(always_protected());
    list.extend(cfg.ignore.iter().copied());
    if let Some(path) = &cfg.ignore_file {
        match read_ignore_file(path) {
            Ok(nets) => list.extend(nets),
            Err(e) => tracing::error!("adminalert: ERROR: ignore file: {e}; continuing without it"),
        }
    }
    list.extend(local.iter().copied().map(IpNet::from));
    list
}

fn join<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(T::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
