//! `portsentry run`: bind the queue, put the table, sets and steering in place, restore
//! blocks, start the threads, then serve signals and upkeep (checking and healing the
//! table, retrying refused blocks, saving state, following the host's addresses and
//! routes) from the main thread.

use crate::actions::ActionsConfig;
use crate::config::{Config, SteeringChoice, WatchMode};
use crate::control::{self, StatusInfo};
use crate::detector::{Detector, DetectorConfig};
use crate::firewall::{
    Built, Firewall, FirewallError, Health, LogRule, Nft, Steering, TableSpec, DEFINITION,
    SPOT_CHECK,
};
use crate::host::{Infrastructure, Watch};
use crate::ignore::{always_protected, IgnoreFile, IgnoreList};
use crate::listening::listening;
use crate::logging::Logging;
use crate::notify::notify;
use crate::policy::{Blocks, PolicyConfig};
use crate::ports::{self, PortSet};
use crate::probe::Proto;
use crate::queue::{self, Control, QueueOptions};
use crate::reporter::{report_queue, Reporter};
use crate::responder::{epoch_now, run_actions, Responder, Settings, Shared};
use crate::state::StateFile;
use crate::stats::Stats;
use ipnet::IpNet;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::sync::mpsc::{channel, sync_channel, Sender, SyncSender};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Firewall(#[from] FirewallError),
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
/// How often the resolver files are re-read (addresses and routes are announced).
const RESOLVER_REFRESH: Duration = Duration::from_secs(10);
/// How often the table is checked (an nftables reload empties it, a hand can damage it).
const HEAL_CHECK: Duration = Duration::from_secs(1);
/// Least time between two state-file writes: a crash loses at most this much of the
/// record (the kernel sets keep the blocks themselves).
const SAVE_EVERY: Duration = Duration::from_millis(250);
const TICK: Duration = Duration::from_millis(100);
/// How often the Prometheus textfile is rewritten.
const METRICS_EVERY: Duration = Duration::from_secs(5);
/// The same failure to heal is logged once per this period, not every check.
const HEAL_ERROR_EVERY: Duration = Duration::from_secs(60);

/// What the main thread keeps to apply reloads and upkeep.
struct Running {
    cfg: Config,
    fw: Nft,
    spec: TableSpec,
    steering: Steering,
    control: Sender<Control>,
    wake: SyncSender<()>,
    settings: Arc<RwLock<Settings>>,
    actions: Arc<RwLock<ActionsConfig>>,
    blocks: Arc<Mutex<Blocks>>,
    state_file: StateFile,
    /// Least time between state saves (grows with the time a save takes).
    save_every: Duration,
    infra: Infrastructure,
    /// The ignore file's entries as last read well (a file missing at a reload, say in the
    /// middle of an edit, does not cost the trusted hosts their protection).
    ignore_file: Vec<IpNet>,
    /// The last heal failure and when it was logged.
    heal_error: Option<(String, Instant)>,
}

pub fn run(
    cfg: Config,
    ignore_file: Option<IgnoreFile>,
    logging: &Logging,
) -> Result<(), DaemonError> {
    tracing::warn!(
        "adminalert: PortSentry {} is starting.",
        env!("CARGO_PKG_VERSION")
    );
    // Files and sockets are opened as root; from here on only CAP_NET_ADMIN is needed.
    if let Err(e) = crate::privileges::keep_only_net_admin() {
        tracing::warn!("could not drop capabilities other than CAP_NET_ADMIN: {e}");
    }
    check_include(&cfg);
    let infra = Infrastructure::read().unwrap_or_else(|e| {
        tracing::error!("adminalert: ERROR: cannot read the host's addresses and routes: {e}");
        Infrastructure::default()
    });
    let ignore_nets = ignore_entries(ignore_file, &[]);
    let protected = protected(&cfg, &ignore_nets, &infra);

    let state_file = StateFile::new(cfg.state_file.clone());
    let records = state_file.load().unwrap_or_else(|e| {
        tracing::error!("adminalert: ERROR: block state: {e}; starting with no remembered blocks");
        Vec::new()
    });
    let mut book = Blocks::new(policy_config(&cfg), protected.clone());
    book.load(records, epoch_now());

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
    let mut fw = Nft::open()?;
    let spec = table_spec(&cfg);
    let built = fw.build(&spec)?;
    apply_sets(&mut fw, &cfg, &protected)?;
    let restored = restore(&mut fw, &mut book);
    if let Err(e) = fw.seal() {
        // The first check will put it right.
        tracing::warn!("adminalert: {e}");
    }
    if restored > 0 {
        tracing::warn!(
            "adminalert: restored {restored} blocks from {}",
            state_file.path().display()
        );
    }
    tracing::warn!(
        "adminalert: steering probes to queue {} with the {}",
        cfg.queue_num,
        built.steering.name()
    );

    let stats = Arc::new(Stats::default());
    let blocks = Arc::new(Mutex::new(book));
    let settings = Arc::new(RwLock::new(settings(&cfg)));
    let actions = Arc::new(RwLock::new(cfg.actions.clone()));
    let (control_tx, control_rx) = channel();

    let (job_tx, job_rx) = sync_channel(ACTION_CAPACITY);
    {
        let (actions, stats) = (actions.clone(), stats.clone());
        spawn("actions", move || run_actions(job_rx, actions, stats))?;
    }

    let (wake_tx, wake_rx) = sync_channel(1);
    let handoff = Arc::new(queue::Handoff {
        events: crossbeam_queue::ArrayQueue::new(EVENT_CAPACITY),
        wake: wake_tx.clone(),
    });
    let shared = Shared {
        settings: settings.clone(),
        blocks: blocks.clone(),
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

    let info = Arc::new(RwLock::new(status_info(&cfg, built.steering)));
    match control::bind(&cfg.control_socket) {
        Ok(listener) => {
            let server = control::Server {
                fw: Mutex::new(Nft::open()?),
                blocks: blocks.clone(),
                settings: settings.clone(),
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

    let mut detector = Detector::new(detector_config(&cfg), protected);
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
    let mut watch = Watch::open()
        .map_err(|e| tracing::error!("adminalert: ERROR: cannot follow address and route changes: {e}; re-reading them every {}s instead", RESOLVER_REFRESH.as_secs()))
        .ok();
    let mut running = Running {
        cfg,
        fw,
        spec,
        steering: built.steering,
        control: control_tx,
        wake: wake_tx,
        settings,
        actions,
        blocks,
        state_file,
        save_every: SAVE_EVERY,
        infra,
        ignore_file: ignore_nets,
        heal_error: None,
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
        let announced = watch.as_mut().is_some_and(Watch::changed);
        if announced || last_refresh.elapsed() >= RESOLVER_REFRESH {
            last_refresh = Instant::now();
            running.refresh_infrastructure();
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
        std::thread::sleep(TICK);
    }
    notify("STOPPING=1");
    // Stop steering first so no probe waits on a queue nobody reads (bypass covers the
    // moment between; blocks stay in the sets until they time out).
    if let Err(e) = running.fw.remove_steering() {
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
    fn book(&self) -> std::sync::MutexGuard<'_, Blocks> {
        lock(&self.blocks)
    }

    /// SIGHUP: re-read the configuration and the ignore file, with the same checks as at
    /// start. A bad or unsafe file is reported and the running configuration kept.
    fn reload(&mut self) {
        let (new, ignore_file) = match Config::load_trusted(self.cfg.source.as_deref()) {
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
        self.ignore_file = ignore_entries(ignore_file, &self.ignore_file);
        let protected = protected(&new, &self.ignore_file, &self.infra);
        let spec = TableSpec {
            steering: Some(self.steering),
            ..table_spec(&new)
        };
        let result = if spec != self.spec {
            self.spec = spec;
            self.repair(&new, &protected).map(|_| ())
        } else {
            apply_sets(&mut self.fw, &new, &protected).and_then(|()| self.fw.seal())
        };
        if let Err(e) = result {
            tracing::error!("adminalert: ERROR: reload could not update the table: {e}");
        }
        self.book()
            .reconfigure(policy_config(&new), protected.clone());
        *self.settings.write().unwrap_or_else(|e| e.into_inner()) = settings(&new);
        *self.actions.write().unwrap_or_else(|e| e.into_inner()) = new.actions.clone();
        let _ = self
            .control
            .send(Control::Reconfigure(detector_config(&new), protected));
        self.cfg = Config {
            source: self.cfg.source.clone(),
            ..new
        };
        tracing::warn!("adminalert: configuration reloaded");
    }

    /// Checks the whole table against what was put in place (sets, every chain's rules,
    /// steering, the allow and watch sets) and the newest blocks against the sets; puts
    /// back whatever is missing.
    fn heal(&mut self) {
        let damage = match self.fw.check() {
            Ok(Health::Intact) => None,
            Ok(Health::Missing) => Some("table inet portsentry had disappeared".to_string()),
            Ok(Health::Damaged(what)) => Some(format!("table inet portsentry was changed: {what}")),
            Err(e) => {
                self.heal_failed(format!("ruleset check failed: {e}"));
                return;
            }
        };
        match damage {
            Some(what) => {
                let protected = self.book().protected().clone();
                let cfg = self.cfg.clone();
                match self.repair(&cfg, &protected) {
                    Ok((built, n)) if built.recreated => tracing::warn!(
                        "adminalert: {what}; re-created it with steering and {n} blocks"
                    ),
                    Ok((_, n)) => tracing::warn!(
                        "adminalert: {what}; restored its sets, rules, steering and {n} blocks"
                    ),
                    Err(e) => return self.heal_failed(format!("could not restore the table: {e}")),
                }
            }
            None => {
                // Rules intact, but set elements can go on their own (`nft flush set`).
                let newest = self.book().newest(SPOT_CHECK, epoch_now());
                match self.fw.missing_blocks(&newest) {
                    Ok(m) if m.is_empty() => {}
                    Ok(m) => {
                        let n = restore(&mut self.fw, &mut lock(&self.blocks));
                        tracing::warn!(
                            "adminalert: {} blocks were missing from the sets; put back {n}",
                            m.len()
                        );
                    }
                    Err(e) => return self.heal_failed(format!("block check failed: {e}")),
                }
            }
        }
        self.heal_error = None;
    }

    /// Logs a heal failure, the same one at most once a minute.
    fn heal_failed(&mut self, msg: String) {
        let again = self
            .heal_error
            .as_ref()
            .is_some_and(|(m, t)| *m == msg && t.elapsed() < HEAL_ERROR_EVERY);
        if !again {
            tracing::error!("adminalert: ERROR: {msg}");
            self.heal_error = Some((msg, Instant::now()));
        }
    }

    /// Puts the table back from the definition, then the sets, the blocks, and seals it;
    /// blocks the kernel refused meanwhile are retried at once.
    fn repair(
        &mut self,
        cfg: &Config,
        protected: &IgnoreList,
    ) -> Result<(Built, usize), FirewallError> {
        let built = self.fw.build(&self.spec)?;
        self.steering = built.steering;
        apply_sets(&mut self.fw, cfg, protected)?;
        let n = restore(&mut self.fw, &mut lock(&self.blocks));
        self.fw.seal()?;
        self.book().retry_now();
        let _ = self.wake.try_send(());
        Ok((built, n))
    }

    /// Saves the block state if it changed. The lock is held only to take a snapshot: the
    /// responder needs it on the blocking path.
    fn save(&mut self) {
        let now = epoch_now();
        let snapshot = {
            let mut book = self.book();
            if !book.take_dirty() {
                return;
            }
            book.active(now)
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
        let blocked_now = {
            let mut book = self.book();
            book.prune(epoch_now());
            book.len() as u64
        };
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

    /// Re-reads addresses, routes and resolvers; a change updates every copy of the
    /// protected list (allow sets, detector, block policy).
    fn refresh_infrastructure(&mut self) {
        let now = match Infrastructure::read() {
            Ok(i) => i,
            Err(e) => return tracing::warn!("cannot re-read the host's addresses and routes: {e}"),
        };
        if now == self.infra {
            return;
        }
        tracing::warn!(
            "adminalert: the host's addresses, gateways or resolvers changed; protecting {}",
            join(&now.all().collect::<Vec<_>>())
        );
        self.infra = now;
        let protected = protected(&self.cfg, &self.ignore_file, &self.infra);
        let synced = self
            .fw
            .sync_allow(protected.nets())
            .and_then(|()| self.fw.seal());
        if let Err(e) = synced {
            tracing::error!("adminalert: ERROR: could not update the allow sets: {e}");
        }
        self.book()
            .reconfigure(policy_config(&self.cfg), protected.clone());
        let _ = self
            .control
            .send(Control::Reconfigure(detector_config(&self.cfg), protected));
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

/// The include on disk is what nftables.service loads at boot, as root: say so when it is
/// not the definition this binary carries, or when others could change it. The daemon
/// itself always builds from its own copy.
fn check_include(cfg: &Config) {
    let path = &cfg.include;
    match std::fs::read_to_string(path) {
        Ok(text) if text != DEFINITION => tracing::warn!(
            "adminalert: {} differs from the table definition of this portsentry (an older package?); portsentry puts back its own",
            path.display()
        ),
        Ok(_) => {}
        Err(_) => return,
    }
    if let Err(e) = crate::config::trusted(path) {
        tracing::error!("adminalert: ERROR: the include: {e}");
    }
}

fn lock(blocks: &Mutex<Blocks>) -> std::sync::MutexGuard<'_, Blocks> {
    blocks.lock().unwrap_or_else(|e| e.into_inner())
}

/// Re-adds every standing block with the time it has left.
fn restore(fw: &mut impl Firewall, book: &mut Blocks) -> usize {
    let blocks = book.restore(epoch_now());
    if blocks.is_empty() {
        return 0;
    }
    let report = fw.add_blocks(&blocks);
    for (net, e) in report.failed.iter().take(10) {
        tracing::error!("adminalert: ERROR: could not restore the block of {net}: {e}");
    }
    report.written
}

fn apply_sets(
    fw: &mut impl Firewall,
    cfg: &Config,
    protected: &IgnoreList,
) -> Result<(), FirewallError> {
    fw.sync_allow(protected.nets())?;
    fw.sync_watch(&cfg.tcp.ports, &cfg.udp.ports)?;
    tracing::info!(
        "watching TCP ({:?}): {} ports, UDP ({:?}): {} ports; never blocked: {}",
        cfg.tcp.mode,
        cfg.tcp.ports.len(),
        cfg.udp.mode,
        cfg.udp.ports.len(),
        summary(protected.nets())
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

fn table_spec(cfg: &Config) -> TableSpec {
    TableSpec {
        queue: cfg.queue_num,
        queues: 1,
        steering: match cfg.steering {
            SteeringChoice::Auto => None,
            SteeringChoice::Native => Some(Steering::Native),
            SteeringChoice::Compat => Some(Steering::Compat),
        },
        log: cfg.block_log.as_ref().map(|b| LogRule {
            prefix: b.prefix.clone(),
            rate: b.rate,
            per: b.per.as_str(),
            burst: b.burst,
        }),
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
        resolve_host: cfg.resolve_host,
        tcp_mode: mode_name(cfg.tcp.mode, Proto::Tcp),
        udp_mode: mode_name(cfg.udp.mode, Proto::Udp),
        actions: !cfg.actions.is_empty(),
        ipv6_prefix: cfg.ipv6_prefix,
    }
}

fn policy_config(cfg: &Config) -> PolicyConfig {
    PolicyConfig {
        timeout: cfg.block_timeout,
        repeat_factor: cfg.repeat_factor,
        max_timeout: cfg.max_timeout,
        max_blocked: cfg.max_blocked,
        max_per_second: cfg.max_per_second,
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
        // A source stays "acted on" as long as its first block lasts (a century for
        // permanent); one whose block could not be made is handed back at once.
        hold: cfg.block_timeout.unwrap_or(crate::policy::MAX_TIMEOUT),
        max_sources: cfg.max_sources,
        score: cfg.score,
        ipv6_prefix: cfg.ipv6_prefix,
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), DaemonError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(|_| ())
        .map_err(|e| DaemonError::Setup(format!("thread {name}: {e}")))
}

/// The ignore file's entries, with each bad line reported; an unreadable file keeps the
/// entries read before (`previous`).
fn ignore_entries(file: Option<IgnoreFile>, previous: &[IpNet]) -> Vec<IpNet> {
    let Some(file) = file else {
        return Vec::new();
    };
    for e in &file.errors {
        tracing::error!("adminalert: ERROR: ignore file: {e}; line skipped");
    }
    match file.unreadable {
        Some(why) if previous.is_empty() => {
            tracing::error!("adminalert: ERROR: ignore file: {why}; continuing without it");
            Vec::new()
        }
        Some(why) => {
            tracing::error!(
                "adminalert: ERROR: ignore file: {why}; keeping the {} entries read before",
                previous.len()
            );
            previous.to_vec()
        }
        None => file.nets,
    }
}

/// Everything never blocked: the configured addresses, the ignore file, the host's own
/// addresses, gateways and resolvers, and what is always protected.
fn protected(cfg: &Config, ignore_file: &[IpNet], infra: &Infrastructure) -> IgnoreList {
    let mut nets = always_protected();
    nets.extend(cfg.ignore.iter().copied());
    nets.extend(ignore_file.iter().copied());
    nets.extend(infra.all().map(IpNet::from));
    IgnoreList::new(nets)
}

/// At most 20 entries, then a count: an ignore file of 160,000 lines is not one log line.
fn summary(nets: &[IpNet]) -> String {
    let shown = join(&nets[..nets.len().min(20)]);
    if nets.len() > 20 {
        format!("{shown} and {} more", nets.len() - 20)
    } else {
        shown
    }
}

fn join<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(T::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
