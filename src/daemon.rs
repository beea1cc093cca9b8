//! `portsentry run`: set up the table, sets and steering, restore blocks, bind the queue,
//! start the threads, then serve signals and upkeep (self-healing, state saving, address
//! changes) from the main thread.

use crate::actions::ActionsConfig;
use crate::config::{Config, SteeringChoice, WatchMode};
use crate::control::{self, StatusInfo};
use crate::detector::{Detector, DetectorConfig};
use crate::firewall::{Block, Firewall, FirewallError, Nft, Steering};
use crate::host;
use crate::ignore::{always_protected, read_ignore_file, IgnoreList};
use crate::listening::listening;
use crate::logging::Logging;
use crate::notify::notify;
use crate::ports::{self, PortSet};
use crate::probe::Proto;
use crate::queue::{self, Control, QueueOptions};
use crate::reporter::{report_queue, Reporter};
use crate::responder::{epoch_now, run_actions, Responder, Settings, Shared};
use crate::state::{BlockState, StateFile};
use crate::stats::Stats;
use ipnet::IpNet;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::net::IpAddr;
use std::sync::mpsc::{channel, sync_channel, Sender};
use std::sync::{Arc, Mutex, RwLock};
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
const ACTION_CAPACITY: usize = 4096;
/// Outcomes waiting for the reporter at most (about 100 bytes each, allocated as they come).
const REPORT_CAPACITY: usize = 65_536;
/// How often the host's own addresses are re-read (DHCP, SLAAC, new interfaces).
const ADDRESS_REFRESH: Duration = Duration::from_secs(10);
/// How often the ruleset is checked (an nftables reload empties our table).
const HEAL_CHECK: Duration = Duration::from_secs(1);
/// Least time between two state-file writes: a crash loses at most this much of the
/// record (the kernel sets keep the blocks themselves).
const SAVE_EVERY: Duration = Duration::from_millis(250);
const TICK: Duration = Duration::from_millis(100);
/// How often the Prometheus textfile is rewritten.
const METRICS_EVERY: Duration = Duration::from_secs(5);

/// What the main thread keeps to apply reloads and upkeep.
struct Running {
    cfg: Config,
    nft: Nft,
    steering: Steering,
    control: Sender<Control>,
    settings: Arc<RwLock<Settings>>,
    actions: Arc<RwLock<ActionsConfig>>,
    ignore: Arc<RwLock<IgnoreList>>,
    state: Arc<Mutex<BlockState>>,
    state_file: StateFile,
    /// Least time between state saves (grows with the time a save takes).
    save_every: Duration,
    local: Vec<IpAddr>,
}

pub fn run(cfg: Config, logging: &Logging) -> Result<(), DaemonError> {
    tracing::warn!(
        "adminalert: PortSentry {} is starting.",
        env!("CARGO_PKG_VERSION")
    );
    // Files and sockets are opened as root; from here on only CAP_NET_ADMIN is needed.
    if let Err(e) = crate::privileges::keep_only_net_admin() {
        tracing::warn!("could not drop capabilities other than CAP_NET_ADMIN: {e}");
    }
    let mut nft = Nft::open()?;
    ensure_table(&mut nft, &cfg)?;

    let local = local_addresses();
    let ignore = build_ignore(&cfg, &local);
    apply_sets(&mut nft, &cfg, &ignore)?;

    let state_file = StateFile::new(cfg.state_file.clone());
    let mut state = state_file.load().unwrap_or_else(|e| {
        tracing::error!("adminalert: ERROR: block state: {e}; starting with no remembered blocks");
        BlockState::default()
    });
    state.prune(epoch_now());
    let restored = restore_blocks(&mut nft, &state);
    if restored > 0 {
        tracing::warn!(
            "adminalert: restored {restored} blocks from {}",
            state_file.path().display()
        );
    }

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
    let steering = nft.install_steering(preferred(&cfg), cfg.queue_num, 1)?;
    tracing::warn!(
        "adminalert: steering probes to queue {} with the {}",
        cfg.queue_num,
        steering.name()
    );

    let stats = Arc::new(Stats::default());
    let state = Arc::new(Mutex::new(state));
    let settings = Arc::new(RwLock::new(settings(&cfg)));
    let actions = Arc::new(RwLock::new(cfg.actions.clone()));
    let ignore_shared = Arc::new(RwLock::new(ignore.clone()));
    let (control_tx, control_rx) = channel();

    let (job_tx, job_rx) = sync_channel(ACTION_CAPACITY);
    {
        let (actions, stats) = (actions.clone(), stats.clone());
        spawn("actions", move || run_actions(job_rx, actions, stats))?;
    }

    let (wake_tx, wake_rx) = sync_channel(1);
    let handoff = Arc::new(queue::Handoff {
        events: crossbeam_queue::ArrayQueue::new(EVENT_CAPACITY),
        wake: wake_tx,
    });
    let shared = Shared {
        settings: settings.clone(),
        state: state.clone(),
        stats: stats.clone(),
        control: control_tx.clone(),
    };
    let (report_tx, report_rx) = report_queue(REPORT_CAPACITY);
    let reporter = Reporter::new(
        settings.clone(),
        Some(&cfg.history),
        Some(&cfg.blocked),
        cfg.alerts_per_second,
    );
    spawn("reporter", move || reporter.run(report_rx))?;
    let responder = Responder::new(Nft::open()?, shared, report_tx, Some(job_tx));
    {
        let handoff = handoff.clone();
        spawn("responder", move || responder.run(handoff, wake_rx))?;
    }

    let info = Arc::new(RwLock::new(status_info(&cfg, steering)));
    match control::bind(&cfg.control_socket) {
        Ok(listener) => {
            let server = control::Server {
                nft: Nft::open()?,
                state: state.clone(),
                settings: settings.clone(),
                ignore: ignore_shared.clone(),
                control: control_tx.clone(),
                stats: stats.clone(),
                info: info.clone(),
            };
            spawn("control", move || server.serve(listener))?;
        }
        Err(e) => tracing::error!(
            "adminalert: ERROR: control socket {}: {e}; list/block/unblock/status will not work",
            cfg.control_socket.display()
        ),
    }

    let mut detector = Detector::new(detector_config(&cfg), ignore);
    let qstats = stats.clone();
    spawn("queue", move || {
        queue::run(
            &mut q,
            &mut detector,
            &handoff,
            &control_rx,
            &qstats,
            Instant::now,
        );
    })?;
    tracing::warn!("adminalert: PortSentry is now active and listening.");
    notify("READY=1");

    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| DaemonError::Setup(format!("signal handlers: {e}")))?;
    let mut running = Running {
        cfg,
        nft,
        steering,
        control: control_tx,
        settings,
        actions,
        ignore: ignore_shared,
        state,
        state_file,
        save_every: SAVE_EVERY,
        local,
    };
    let (mut last_refresh, mut last_heal, mut last_save) =
        (Instant::now(), Instant::now(), Instant::now());
    let mut last_metrics: Option<Instant> = None;
    let mut reports_dropped = 0;
    'serve: loop {
        for sig in signals.pending() {
            match sig {
                SIGHUP => {
                    notify("RELOADING=1");
                    running.reload();
                    *info.write().unwrap_or_else(|e| e.into_inner()) =
                        status_info(&running.cfg, running.steering);
                    notify("READY=1");
                }
                _ => break 'serve,
            }
        }
        if last_heal.elapsed() >= HEAL_CHECK {
            last_heal = Instant::now();
            running.heal();
            report_drops(logging, &stats, &mut reports_dropped);
        }
        if last_save.elapsed() >= running.save_every {
            last_save = Instant::now();
            running.save();
        }
        if last_metrics.is_none_or(|t| t.elapsed() >= METRICS_EVERY) {
            last_metrics = Some(Instant::now());
            running.write_metrics(&stats);
        }
        if last_refresh.elapsed() >= ADDRESS_REFRESH {
            last_refresh = Instant::now();
            running.refresh_addresses();
        }
        std::thread::sleep(TICK);
    }
    notify("STOPPING=1");
    // Stop steering first so no probe waits on a queue nobody reads (bypass covers the
    // moment between; blocks stay in the sets until they time out).
    if let Err(e) = running.nft.remove_steering() {
        tracing::error!("adminalert: ERROR: could not remove steering rule: {e}");
    }
    running.save();
    let _ = std::fs::remove_file(&running.cfg.control_socket);
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
        if new.queue_num != self.cfg.queue_num
            || new.steering != self.cfg.steering
            || new.control_socket != self.cfg.control_socket
            || new.state_dir != self.cfg.state_dir
        {
            tracing::warn!("adminalert: queue, steering, socket and file changes take effect at the next restart");
        }
        let ignore = build_ignore(&new, &self.local);
        if let Err(e) = apply_sets(&mut self.nft, &new, &ignore) {
            tracing::error!("adminalert: ERROR: reload could not update the nft sets: {e}");
            return;
        }
        *self.settings.write().unwrap_or_else(|e| e.into_inner()) = settings(&new);
        *self.actions.write().unwrap_or_else(|e| e.into_inner()) = new.actions.clone();
        *self.ignore.write().unwrap_or_else(|e| e.into_inner()) = ignore.clone();
        let _ = self
            .control
            .send(Control::Reconfigure(detector_config(&new), ignore));
        self.cfg = Config {
            source: self.cfg.source.clone(),
            ..new
        };
        tracing::warn!("adminalert: configuration reloaded");
    }

    /// Puts table, sets, steering and blocks back after an nftables reload or flush.
    fn heal(&mut self) {
        match self.nft.steering_present() {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => tracing::warn!("ruleset check failed: {e}"),
        }
        let result = (|| -> Result<(usize, bool), DaemonError> {
            let recreated = !self.nft.table_exists()?;
            ensure_table(&mut self.nft, &self.cfg)?;
            let ignore = self
                .ignore
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            apply_sets(&mut self.nft, &self.cfg, &ignore)?;
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let n = restore_blocks(&mut self.nft, &state);
            drop(state);
            self.steering =
                self.nft
                    .install_steering(preferred(&self.cfg), self.cfg.queue_num, 1)?;
            Ok((n, recreated))
        })();
        match result {
            Ok((n, true)) => tracing::warn!(
                "adminalert: table inet portsentry had disappeared; re-created it with steering and {n} blocks"
            ),
            Ok((n, false)) => tracing::warn!(
                "adminalert: the nftables ruleset was reloaded; restored sets, steering and {n} blocks"
            ),
            Err(e) => tracing::error!("adminalert: ERROR: could not restore the ruleset: {e}"),
        }
    }

    /// Saves the block state if it changed. The lock is held only to take a snapshot: the
    /// responder needs it on the blocking path.
    fn save(&mut self) {
        let now = epoch_now();
        let snapshot = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if !state.take_dirty() {
                return;
            }
            state.prune(now);
            state.active(now)
        };
        let started = Instant::now();
        if let Err(e) = self.state_file.save_records(&snapshot) {
            tracing::error!("adminalert: ERROR: cannot save block state: {e}");
        }
        // A large state under a flood: save less often rather than spend the CPU on it.
        self.save_every = (started.elapsed() * 10).max(SAVE_EVERY);
    }

    fn write_metrics(&self, stats: &Stats) {
        let Some(path) = &self.cfg.metrics_textfile else {
            return;
        };
        let (_, queue_dropped, user_dropped) =
            control::queue_counters(self.cfg.queue_num).unwrap_or_default();
        let blocked_now = self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .active(epoch_now())
            .len() as u64;
        let text = crate::metrics::render(
            stats,
            crate::metrics::Extra {
                blocked_now,
                queue_dropped,
                user_dropped,
            },
        );
        if let Err(e) = crate::metrics::write(path, &text) {
            tracing::warn!("metrics textfile {}: {e}", path.display());
        }
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
        *self.ignore.write().unwrap_or_else(|e| e.into_inner()) = ignore.clone();
        let _ = self
            .control
            .send(Control::Reconfigure(detector_config(&self.cfg), ignore));
    }
}

/// Says how many lines a stuck journal or syslog, or a reporter held up by name lookups,
/// cost since the last check (the line is itself dropped while the log is still stuck,
/// and counted with the rest). `reported` is what the last check saw of the reporter's.
fn report_drops(logging: &Logging, stats: &Stats, reported: &mut u64) {
    let dropped = logging.dropped();
    let before = stats
        .log_dropped
        .swap(dropped, std::sync::atomic::Ordering::Relaxed);
    if dropped > before {
        tracing::error!(
            "adminalert: ERROR: {} log lines dropped: the journal or syslog was not keeping up (blocking went on)",
            dropped - before
        );
    }
    let reports = Stats::get(&stats.reports_dropped);
    if reports > *reported {
        tracing::error!(
            "adminalert: ERROR: {} blocks or alerts not reported (no alert or history line): name lookups or the log were too slow (blocking went on)",
            reports - *reported
        );
        *reported = reports;
    }
}

fn ensure_table(nft: &mut Nft, cfg: &Config) -> Result<(), DaemonError> {
    if nft.table_exists()? {
        return Ok(());
    }
    if !cfg.include.exists() {
        return Err(DaemonError::NoTable(cfg.include.display().to_string()));
    }
    tracing::warn!(
        "adminalert: table inet portsentry is missing; loading {}",
        cfg.include.display()
    );
    Nft::load_include(&cfg.include)?;
    Ok(())
}

/// Re-adds every unexpired remembered block with the time it has left.
fn restore_blocks(nft: &mut Nft, state: &BlockState) -> usize {
    let now = epoch_now();
    let blocks: Vec<Block> = state
        .active(now)
        .iter()
        .map(|r| Block {
            addr: r.addr,
            timeout: r
                .expires
                .map(|e| Duration::from_secs(e.saturating_sub(now).max(1))),
        })
        .collect();
    if blocks.is_empty() {
        return 0;
    }
    let report = nft.add_blocks(&blocks);
    for (addr, e) in &report.failed {
        tracing::error!("adminalert: ERROR: could not restore the block of {addr}: {e}");
    }
    report.written
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

fn preferred(cfg: &Config) -> Option<Steering> {
    match cfg.steering {
        SteeringChoice::Auto => None,
        SteeringChoice::Native => Some(Steering::Native),
        SteeringChoice::Compat => Some(Steering::Compat),
    }
}

/// 1.2's $MODE$ names.
fn mode_name(mode: WatchMode, proto: Proto) -> &'static str {
    match (mode, proto) {
        (WatchMode::Advanced, Proto::Tcp) => "atcp",
        (WatchMode::Advanced, Proto::Udp) => "audp",
        (_, Proto::Tcp) => "stcp",
        (_, Proto::Udp) => "sudp",
    }
}

fn settings(cfg: &Config) -> Settings {
    Settings {
        timeout: cfg.block_timeout,
        repeat_factor: cfg.repeat_factor,
        max_timeout: cfg.max_timeout,
        max_blocked: cfg.max_blocked,
        max_per_second: cfg.max_per_second,
        resolve_host: cfg.resolve_host,
        tcp_mode: mode_name(cfg.tcp.mode, Proto::Tcp),
        udp_mode: mode_name(cfg.udp.mode, Proto::Udp),
        actions: !cfg.actions.is_empty(),
    }
}

fn status_info(cfg: &Config, steering: Steering) -> StatusInfo {
    let watch = |w: &crate::config::Watch| {
        format!("{:?}, {} ports watched", w.mode, w.ports.len()).to_lowercase()
    };
    StatusInfo {
        version: env!("CARGO_PKG_VERSION"),
        queue: cfg.queue_num,
        steering: steering.name().to_string(),
        tcp: format!("{}, block: {:?}", watch(&cfg.tcp), cfg.block_tcp).to_lowercase(),
        udp: format!("{}, block: {:?}", watch(&cfg.udp), cfg.block_udp).to_lowercase(),
    }
}

fn detector_config(cfg: &Config) -> DetectorConfig {
    DetectorConfig {
        trigger: cfg.trigger,
        window: cfg.window,
        tcp: cfg.block_tcp,
        udp: cfg.block_udp,
        // A source stays "acted on" as long as its first block lasts (a century for permanent).
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

/// The host's own addresses, its default gateways and its resolvers: never blocked, so a
/// scan spoofed from any of them cannot cut the host off.
fn local_addresses() -> Vec<IpAddr> {
    let mut v = host::local_addresses().unwrap_or_else(|e| {
        tracing::error!("adminalert: ERROR: cannot list local addresses: {e}");
        Vec::new()
    });
    v.extend(host::default_gateways());
    v.extend(host::resolvers());
    v.sort();
    v.dedup();
    v
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
