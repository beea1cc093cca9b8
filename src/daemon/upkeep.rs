//! The main thread's work once the daemon runs: signals (reload, stop), checking and
//! healing the table, retrying refused blocks, saving state, metrics, and following the
//! host's addresses and routes.

use super::liveness::Liveness;
use super::state::StateFile;
use crate::config::settings::Settings;
use crate::config::{ActionsConfig, Config};
use crate::control::StatusInfo;
use crate::core::ignore::{always_protected, IgnoreFile, IgnoreList};
use crate::core::policy::{Blocks, Tree};
use crate::core::ports::{self, PortSet};
use crate::core::probe::Proto;
use crate::core::stats::Stats;
use crate::dataplane::{Control, Controls};
use crate::firewall::{
    Built, Firewall, FirewallError, Health, Set, Steering, TableSpec, DEFINITION, SPOT_CHECK,
};
use crate::output::logging::Logging;
use crate::system::clock::epoch_now;
use crate::system::host::{Infrastructure, Watch};
use crate::system::listening::{listening, services};
use crate::system::notify::notify;
use ipnet::IpNet;
use signal_hook::consts::SIGHUP;
use signal_hook::iterator::Signals;
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How often the resolver files are re-read (addresses and routes are announced).
pub const RESOLVER_REFRESH: Duration = Duration::from_secs(10);
/// How often the table is checked (an nftables reload empties it, a hand can damage it).
const HEAL_CHECK: Duration = Duration::from_secs(1);
/// How often the table is looked at for a fall that frees memory to hand back.
const TRIM_EVERY: Duration = Duration::from_secs(10);
/// Records the table must have gained or lost (ended, evicted) since the last trim for the
/// next one.
const TRIM_AFTER: u64 = 16_384;
/// Least time between two state-file writes: a crash loses at most this much of the
/// record (the kernel sets keep the blocks themselves).
pub const SAVE_EVERY: Duration = Duration::from_millis(250);
const TICK: Duration = Duration::from_millis(100);
/// How often the Prometheus textfile is rewritten.
const METRICS_EVERY: Duration = Duration::from_secs(5);
/// How often the host's listening sockets are looked at: a service up this long is no trap
/// when it restarts, even if nobody connected to it meanwhile.
const LISTENER_POLL: Duration = Duration::from_secs(2);
/// The same failure to heal is logged once per this period, not every check.
const HEAL_ERROR_EVERY: Duration = Duration::from_secs(60);

/// Rounds `give_memory_back` waits at most for the block writer to be quiet (a minute).
const FORCE_AFTER: u32 = 6;

/// What `give_memory_back` saw last: the writer's activity, and the table's (records,
/// removals) at the last trim.
struct Trimmed {
    /// Blocks written and failed.
    activity: u64,
    /// Rounds skipped in a row because the writer was busy.
    skipped: u32,
    at: (usize, u64),
}

impl Default for Trimmed {
    fn default() -> Self {
        // No round seen yet: the first is never taken for a quiet one.
        Trimmed {
            activity: u64::MAX,
            skipped: 0,
            at: (0, 0),
        }
    }
}

/// What the main thread keeps to apply reloads and upkeep.
/// Generic over the firewall so heal, restore and reload run against the in-memory one in
/// unit tests.
pub struct Running<F: Firewall> {
    cfg: Config,
    table: Table<F>,
    handles: Handles,
    files: Files,
    host: Host,
    health: HealthState,
}

/// The table as put in place at start.
pub struct Table<F: Firewall> {
    pub fw: F,
    pub spec: TableSpec,
    pub steering: Steering,
}

/// What the main thread shares with the other threads.
pub struct Handles {
    pub control: Controls,
    /// Wakes the block writer (blocks due for a retry after a repair).
    pub wake: SyncSender<()>,
    pub settings: Arc<RwLock<Settings>>,
    pub actions: Arc<RwLock<ActionsConfig>>,
    pub blocks: Arc<Mutex<Blocks>>,
    pub info: Arc<RwLock<StatusInfo>>,
    pub stats: Arc<Stats>,
    pub metrics: Arc<crate::output::metrics::Metrics>,
    /// Tells the reporter to reopen the history and blocked files (SIGHUP, logrotate).
    pub reopen_logs: Arc<std::sync::atomic::AtomicBool>,
}

/// The block state on disk.
struct Files {
    state_file: StateFile,
    /// Least time between state saves (grows with the time a save takes).
    save_every: Duration,
    /// The state writer's copy of the records.
    saved: crate::daemon::state::Mirror,
}

/// What the host is, as last seen.
struct Host {
    infra: Infrastructure,
    /// The ignore file's entries as last read well (a file missing at a reload, say in the
    /// middle of an edit, does not cost the trusted hosts their protection).
    ignore_file: Vec<IpNet>,
    /// The watched ports last seen with a listener (TCP, UDP), and when they were last
    /// marked served in the kernel.
    served: Served,
}

/// The daemon's own health: the threads' progress and the last heal failure.
struct HealthState {
    liveness: Liveness,
    /// The last heal failure and when it was logged.
    heal_error: Option<(String, Instant)>,
}

/// The watched ports last marked served, and when.
#[derive(Default)]
struct Served {
    ports: (PortSet, PortSet),
    at: Option<Instant>,
}

impl<F: Firewall> Running<F> {
    /// The main thread's state once the table stands and the threads run. `ignore_file`:
    /// the ignore file's entries as read at start.
    pub fn new(
        cfg: Config,
        table: Table<F>,
        handles: Handles,
        state_file: StateFile,
        infra: Infrastructure,
        ignore_file: Vec<IpNet>,
    ) -> Running<F> {
        Running {
            cfg,
            table,
            handles,
            files: Files {
                state_file,
                save_every: SAVE_EVERY,
                saved: crate::daemon::state::Mirror::default(),
            },
            host: Host {
                infra,
                ignore_file,
                served: Served::default(),
            },
            health: HealthState {
                liveness: Liveness::new(),
                heal_error: None,
            },
        }
    }

    /// After a flood, once the block writer wrote (or failed to write) nothing for a whole
    /// round (`TRIM_EVERY`), or at the latest every `FORCE_AFTER` rounds on a host that is
    /// never quiet: a table built one insert at a time is rebuilt whole (a third smaller;
    /// 40–70 ms a tree at a million blocks, the writer waiting), and the heap's free pages
    /// go back to the kernel once the table gained or lost `TRIM_AFTER` records. A trim
    /// walks the free lists with the allocator locked, so not under the writer's feet when
    /// it can wait.
    fn give_memory_back(&mut self, last: &mut Trimmed) {
        let stats = &self.handles.stats;
        let activity = stats.blocks_written.load(Ordering::Relaxed)
            + stats.block_failures.load(Ordering::Relaxed);
        let busy = std::mem::replace(&mut last.activity, activity) != activity;
        if busy && last.skipped < FORCE_AFTER {
            last.skipped += 1;
            return;
        }
        last.skipped = 0;
        let compacted = self.book().worth_compacting();
        if compacted {
            for tree in [Tree::Records, Tree::Ends] {
                self.book().compact(tree);
            }
        }
        let at = {
            let book = self.book();
            (book.len(), book.removals())
        };
        let churn = at.0.abs_diff(last.at.0) as u64 + at.1.saturating_sub(last.at.1);
        if compacted || churn >= TRIM_AFTER {
            crate::system::proc::release_free_memory();
            last.at = at;
        }
    }

    /// Serves signals and upkeep until SIGTERM or SIGINT, then stops cleanly.
    pub fn serve(mut self, mut signals: Signals, mut watch: Option<Watch>, logging: &Logging) {
        let (mut last_refresh, mut last_heal, mut last_save) =
            (Instant::now(), Instant::now(), Instant::now());
        let mut last_metrics: Option<Instant> = None;
        let mut last_listeners = Instant::now();
        let mut last_trim = Instant::now();
        let mut trimmed = Trimmed::default();
        let mut reports_dropped = 0;
        'serve: loop {
            for sig in signals.pending() {
                match sig {
                    SIGHUP => {
                        notify("RELOADING=1");
                        self.reload();
                        *self.handles.info.write().unwrap_or_else(|e| e.into_inner()) =
                            status_info(&self.cfg, self.table.steering);
                        notify("READY=1");
                    }
                    _ => break 'serve,
                }
            }
            let announced = watch.as_mut().is_some_and(Watch::changed);
            if announced || last_refresh.elapsed() >= RESOLVER_REFRESH {
                last_refresh = Instant::now();
                self.refresh_infrastructure();
            }
            if last_heal.elapsed() >= HEAL_CHECK {
                last_heal = Instant::now();
                self.feed_watchdog();
                self.heal();
                report_drops(logging, &self.handles.stats, &mut reports_dropped);
            }
            if last_listeners.elapsed() >= LISTENER_POLL {
                last_listeners = Instant::now();
                self.note_listeners();
            }
            if last_save.elapsed() >= self.files.save_every {
                last_save = Instant::now();
                self.save();
            }
            if last_trim.elapsed() >= TRIM_EVERY {
                last_trim = Instant::now();
                self.give_memory_back(&mut trimmed);
            }
            if last_metrics.is_none_or(|t| t.elapsed() >= METRICS_EVERY) {
                last_metrics = Some(Instant::now());
                self.write_metrics();
            }
            std::thread::sleep(TICK);
        }
        notify("STOPPING=1");
        // Stop steering first so no probe waits on a queue nobody reads (bypass covers the
        // moment between; blocks stay in the sets until they time out).
        if let Err(e) = self.table.fw.remove_steering() {
            tracing::error!("adminalert: ERROR: could not remove steering rule: {e}");
        }
        self.save();
        let _ = std::fs::remove_file(&self.cfg.control_socket);
        tracing::warn!(
            "adminalert: PortSentry is shutting down (packets {}, acted {}, blocks written {}, block failures {})",
            Stats::get(&self.handles.stats.packets),
            Stats::get(&self.handles.stats.acted),
            Stats::get(&self.handles.stats.blocks_written),
            Stats::get(&self.handles.stats.block_failures)
        );
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Blocks> {
        lock(&self.handles.blocks)
    }

    /// SIGHUP: re-read the configuration and the ignore file, with the same checks as at
    /// start. A bad or unsafe file is reported and the running configuration kept.
    fn reload(&mut self) {
        let (mut new, ignore_file) = match Config::load_trusted(self.cfg.source.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(
                    "adminalert: ERROR: reload failed, keeping the running configuration: {e}"
                );
                return;
            }
        };
        if new.restart_only() != self.cfg.restart_only() {
            tracing::warn!("adminalert: queue, steering, socket and file changes take effect at the next restart");
        }
        // The queues are bound once, at start: steering must go on to those, or probes sent
        // to a queue nobody reads would be let through (`bypass`) unseen.
        new.queue_num = self.cfg.queue_num;
        new.queues = self.cfg.queues;
        new.queue_max_len = self.cfg.queue_max_len;
        new.fail_open = self.cfg.fail_open;
        let ways = |c: &Config| {
            c.crowdsec
                .as_ref()
                .map(|c| (c.credentials.is_some(), c.bouncer_key_file.is_some()))
        };
        if ways(&new) != ways(&self.cfg) {
            tracing::warn!("adminalert: [crowdsec] push or pull turned on or off: takes effect at the next restart (the LAPI's address, keys and interval are taken now)");
        }
        self.host.ignore_file = ignore_entries(ignore_file, &self.host.ignore_file);
        let protected = protected(&new, &self.host.ignore_file, &self.host.infra);
        let spec = TableSpec {
            steering: Some(self.table.steering),
            ..new.table()
        };
        // A table damaged meanwhile (an nftables reload reaches us as a reload too) is
        // healed first, and said so, never sealed as it is.
        self.heal();
        let intact = matches!(self.table.fw.check(), Ok(Health::Intact));
        let result = if spec != self.table.spec || !intact {
            self.table.spec = spec;
            self.repair(&new, &protected).map(|_| ())
        } else {
            apply_sets(&mut self.table.fw, &new, &protected).and_then(|()| self.table.fw.seal())
        };
        if let Err(e) = result {
            tracing::error!("adminalert: ERROR: reload could not update the table: {e}");
        }
        self.book().reconfigure(new.policy(), protected.clone());
        *self
            .handles
            .settings
            .write()
            .unwrap_or_else(|e| e.into_inner()) = new.settings();
        *self
            .handles
            .actions
            .write()
            .unwrap_or_else(|e| e.into_inner()) = new.actions.clone();
        let _ = self
            .handles
            .control
            .send(Control::Reconfigure(new.detector(), protected));
        self.cfg = Config {
            source: self.cfg.source.clone(),
            ..new
        };
        self.handles
            .reopen_logs
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!("adminalert: configuration reloaded");
    }

    /// Tells systemd the daemon is alive, only while the packet path and the block writer
    /// both make progress (`Liveness::feed`).
    fn feed_watchdog(&mut self) {
        self.health
            .liveness
            .feed(&self.handles.stats, Instant::now());
    }

    /// Checks the whole table against what was put in place (sets, every chain's rules,
    /// steering, the allow and watch sets) and the newest blocks against the sets; puts
    /// back whatever is missing.
    fn heal(&mut self) {
        let damage = match self.table.fw.check() {
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
                let (newest, fleet) = {
                    let mut book = self.book();
                    let now = epoch_now();
                    let fleet = book.fleet_book().sample(SPOT_CHECK, now);
                    (book.newest(SPOT_CHECK, now), fleet)
                };
                let missing =
                    self.table
                        .fw
                        .missing_blocks(Set::Local, &newest)
                        .and_then(|mut m| {
                            m.extend(self.table.fw.missing_blocks(Set::Fleet, &fleet)?);
                            Ok(m)
                        });
                match missing {
                    Ok(m) if m.is_empty() => {}
                    Ok(m) => {
                        let n = restore(&mut self.table.fw, &self.handles.blocks);
                        tracing::warn!(
                            "adminalert: {} blocks were missing from the sets; put back {n}",
                            m.len()
                        );
                    }
                    Err(e) => return self.heal_failed(format!("block check failed: {e}")),
                }
            }
        }
        self.health.heal_error = None;
    }

    /// Marks the watched ports that have a listener as served: when one appeared, and
    /// before the kernel would let the mark expire. Nothing else is written (every write
    /// is a ruleset generation the heal check then looks at).
    fn note_listeners(&mut self) {
        let now = (
            intersect(&self.cfg.tcp.ports, &services(Proto::Tcp)),
            intersect(&self.cfg.udp.ports, &services(Proto::Udp)),
        );
        // Outlives the gap between two looks, however short the grace configured.
        let grace = self.cfg.listener_grace.max(LISTENER_POLL * 2);
        let new = |now: &PortSet, before: &PortSet| now.iter().any(|p| !before.contains(p));
        let stale = self
            .host
            .served
            .at
            .is_none_or(|t| t.elapsed() >= (grace / 4).max(LISTENER_POLL));
        if !(stale
            || new(&now.0, &self.host.served.ports.0)
            || new(&now.1, &self.host.served.ports.1))
        {
            return;
        }
        match self.table.fw.note_served(&now.0, &now.1, grace) {
            Ok(()) => {
                self.host.served = Served {
                    ports: now,
                    at: Some(Instant::now()),
                }
            }
            Err(e) => self.heal_failed(format!("could not mark listening ports as served: {e}")),
        }
    }

    /// Logs a heal failure, the same one at most once a minute.
    fn heal_failed(&mut self, msg: String) {
        let again = self
            .health
            .heal_error
            .as_ref()
            .is_some_and(|(m, t)| *m == msg && t.elapsed() < HEAL_ERROR_EVERY);
        if !again {
            tracing::error!("adminalert: ERROR: {msg}");
            self.health.heal_error = Some((msg, Instant::now()));
        }
    }

    /// Puts the table back from the definition, then the sets, the blocks, and seals it;
    /// blocks the kernel refused meanwhile are retried at once.
    fn repair(
        &mut self,
        cfg: &Config,
        protected: &IgnoreList,
    ) -> Result<(Built, usize), FirewallError> {
        let built = self.table.fw.build(&self.table.spec)?;
        self.table.steering = built.steering;
        apply_sets(&mut self.table.fw, cfg, protected)?;
        let n = restore(&mut self.table.fw, &self.handles.blocks);
        self.table.fw.seal()?;
        self.book().retry_now();
        let _ = self.handles.wake.try_send(());
        Ok((built, n))
    }

    /// Saves the block state if it changed. The lock is held for a page of records at a
    /// time (the responder needs it on the blocking path), never while the file is written.
    fn save(&mut self) {
        let now = epoch_now();
        let Some(fleet) = self.book().take_saved(now) else {
            return;
        };
        let started = Instant::now();
        self.files.saved.set_fleet(fleet);
        let saved = self.files.state_file.save_paged(
            crate::daemon::state::pages(&self.handles.blocks),
            self.files.saved.fleet(),
        );
        if let Err(e) = saved {
            tracing::error!("adminalert: ERROR: cannot save block state: {e}");
        }
        // A large state under a flood: save less often rather than spend the CPU on it.
        self.files.save_every = (started.elapsed() * 10).max(SAVE_EVERY);
    }

    fn write_metrics(&self) {
        let Some(path) = &self.cfg.metrics_textfile else {
            return;
        };
        if let Err(e) = crate::output::metrics::write(path, &self.handles.metrics.render()) {
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
        if now == self.host.infra {
            return;
        }
        tracing::warn!(
            "adminalert: the host's addresses, gateways or resolvers changed; protecting {}",
            join(&now.all().collect::<Vec<_>>())
        );
        self.host.infra = now;
        let protected = protected(&self.cfg, &self.host.ignore_file, &self.host.infra);
        let synced = self
            .table
            .fw
            .sync_allow(protected.nets())
            .and_then(|()| self.table.fw.seal());
        if let Err(e) = synced {
            tracing::error!("adminalert: ERROR: could not update the allow sets: {e}");
        }
        self.book()
            .reconfigure(self.cfg.policy(), protected.clone());
        let _ = self
            .handles
            .control
            .send(Control::Reconfigure(self.cfg.detector(), protected));
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
pub fn check_include(cfg: &Config) {
    let path = &cfg.include;
    match std::fs::read_to_string(path) {
        Ok(text) if text != DEFINITION => tracing::warn!(
            "adminalert: {} differs from the table definition of this portsentry (an older package?); portsentry puts back its own",
            path.display()
        ),
        Ok(_) => {}
        Err(_) => return,
    }
    if let Err(e) = crate::system::files::trusted(path) {
        tracing::error!("adminalert: ERROR: the include: {e}");
    }
}

fn lock(blocks: &Mutex<Blocks>) -> std::sync::MutexGuard<'_, Blocks> {
    blocks.lock().unwrap_or_else(|e| e.into_inner())
}

/// Blocks restored per page: the lock is held to take a page and to check it, never
/// across the kernel's write (a million blocks take seconds to write).
#[cfg(not(test))]
const RESTORE_PAGE: usize = 2048;
/// Small in tests, so they go through more than one page.
#[cfg(test)]
const RESTORE_PAGE: usize = 2;

/// Re-adds every standing block with the time it has left, a page at a time.
pub fn restore(fw: &mut impl Firewall, blocks: &Mutex<Blocks>) -> usize {
    let mut written = 0;
    let mut logged = 0;
    let mut log = |report: &crate::firewall::BlockReport| {
        for (net, e) in report.failed.iter().take(10 - logged.min(10)) {
            tracing::error!("adminalert: ERROR: could not restore the block of {net}: {e}");
            logged += 1;
        }
    };
    let mut after = None;
    loop {
        let (page, removals) = {
            let mut book = lock(blocks);
            let page = book.restore_page(after, RESTORE_PAGE, epoch_now());
            (page, book.removals())
        };
        let Some(last) = page.last() else { break };
        after = Some(last.net);
        let report = fw.add_blocks(&page);
        log(&report);
        written += report.written;
        // Lifted while the page was written (`portsentry unblock`, an eviction): not
        // put back. Looked up only if something was removed meanwhile.
        let gone: Vec<IpNet> = {
            let book = lock(blocks);
            if book.removals() == removals {
                Vec::new()
            } else {
                page.iter()
                    .map(|b| b.net)
                    .filter(|n| !book.stands(*n))
                    .collect()
            }
        };
        if !gone.is_empty() {
            let _ = fw.remove_blocks(Set::Local, &gone);
        }
    }
    // The fleet's (bounded by `max_decisions`); its book keeps what the kernel holds.
    let fleet = lock(blocks).fleet().0.restore(epoch_now());
    if !fleet.is_empty() {
        let report = fw.add_blocks(&fleet);
        log(&report);
        written += report.written;
    }
    written
}

pub fn apply_sets(
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
    let mut taken = [PortSet::new(), PortSet::new()];
    for ((proto, watched), t) in [(Proto::Tcp, &cfg.tcp.ports), (Proto::Udp, &cfg.udp.ports)]
        .into_iter()
        .zip(&mut taken)
    {
        *t = intersect(watched, &listening(proto));
        if !t.is_empty() {
            tracing::info!(
                "{} ports with a listener are left to it (checked at packet time, and no trap for {} after it goes): {}",
                proto.name(),
                humantime::format_duration(cfg.listener_grace),
                ports::compact(t)
            );
        }
    }
    // Ports in use now are services from the start, as 1.2's advanced mode had it.
    fw.note_served(
        &intersect(&cfg.tcp.ports, &services(Proto::Tcp)),
        &intersect(&cfg.udp.ports, &services(Proto::Udp)),
        cfg.listener_grace,
    )?;
    Ok(())
}

fn intersect(a: &PortSet, b: &PortSet) -> PortSet {
    let mut out = PortSet::new();
    for p in a.iter().filter(|p| b.contains(*p)) {
        out.insert(p);
    }
    out
}

/// The ignore file's entries, with each bad line reported; an unreadable file keeps the
/// entries read before (`previous`).
pub fn ignore_entries(file: Option<IgnoreFile>, previous: &[IpNet]) -> Vec<IpNet> {
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
/// addresses, gateways and resolvers, the fleet's LAPI, and what is always protected.
pub fn protected(cfg: &Config, ignore_file: &[IpNet], infra: &Infrastructure) -> IgnoreList {
    let mut nets = always_protected();
    nets.extend(cfg.ignore.iter().copied());
    nets.extend(ignore_file.iter().copied());
    nets.extend(infra.all().map(IpNet::from));
    nets.extend(
        cfg.crowdsec
            .as_ref()
            .and_then(|c| c.lapi_addr())
            .map(IpNet::from),
    );
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

pub fn join<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(T::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What `status` shows that only changes at start or reload.
pub fn status_info(cfg: &Config, steering: Steering) -> StatusInfo {
    let watch = |w: &crate::config::Watch| {
        format!("{:?}, {} ports watched", w.mode, w.ports.len()).to_lowercase()
    };
    StatusInfo {
        version: env!("CARGO_PKG_VERSION"),
        queue: cfg.queue_num,
        queues: cfg.queues,
        steering: steering.name().to_string(),
        tcp: format!("{}, block: {:?}", watch(&cfg.tcp), cfg.block_tcp).to_lowercase(),
        udp: format!("{}, block: {:?}", watch(&cfg.udp), cfg.block_udp).to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::policy::{Origin, Want};
    use crate::firewall::memory::Memory;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::mpsc::Receiver;

    /// The main thread's state around `fw`, its table built as at start.
    fn running(mut fw: Memory) -> (Running<Memory>, Receiver<Control>) {
        static N: AtomicU32 = AtomicU32::new(0);
        let cfg = Config::parse("t.toml", "").unwrap();
        let (control, forgotten) = std::sync::mpsc::channel();
        let (wake, _) = std::sync::mpsc::sync_channel(1);
        let protected = protected(&cfg, &[], &Infrastructure::default());
        fw.build(&cfg.table()).unwrap();
        apply_sets(&mut fw, &cfg, &protected).unwrap();
        fw.seal().unwrap();
        let dir = std::env::temp_dir().join(format!(
            "ps-upkeep-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let table = Table {
            spec: cfg.table(),
            steering: Steering::Native,
            fw,
        };
        let handles = Handles {
            control: control.into(),
            wake,
            settings: Arc::new(RwLock::new(cfg.settings())),
            actions: Arc::new(RwLock::new(cfg.actions.clone())),
            blocks: Arc::new(Mutex::new(Blocks::new(cfg.policy(), protected))),
            info: Arc::new(RwLock::new(StatusInfo::default())),
            stats: Arc::new(Stats::default()),
            metrics: Arc::new(crate::output::metrics::Metrics::new(
                Arc::new(Stats::default()),
                Arc::new(crate::output::metrics::Extra::default),
                crate::output::metrics::time_to_block(),
            )),
            reopen_logs: Arc::default(),
        };
        let r = Running::new(
            cfg,
            table,
            handles,
            StateFile::new(dir.join("blocks.json")),
            Infrastructure::default(),
            Vec::new(),
        );
        (r, forgotten)
    }

    /// Blocks `addr` as the responder would; `refuse` makes the kernel refuse it.
    fn block(r: &mut Running<Memory>, addr: &str) {
        let wants = [Want {
            key: crate::core::ignore::parse_net(addr).unwrap(),
            origin: Origin::Scan,
            timeout: crate::core::policy::Timeout::Default,
            reason: "test".into(),
            probe: None,
        }];
        let now = epoch_now();
        let mut book = lock(&r.handles.blocks);
        let plan = book.plan(&wants, now);
        let report = r.table.fw.add_blocks(&plan.add);
        let failed = report
            .failed
            .into_iter()
            .map(|(k, e)| (k, e.to_string()))
            .collect();
        book.commit(&wants, &plan, &failed, now);
    }

    /// A table a flood built one insert at a time is rebuilt whole, but only once no
    /// block was written for a whole round: never under the writer's feet.
    #[test]
    fn a_floods_table_is_rebuilt_once_the_writer_is_quiet_or_a_minute_later() {
        use crate::core::policy::Record;
        let (mut r, _forgotten) = running(Memory::default());
        let now = epoch_now();
        let record = |i: u32| Record {
            key: IpNet::from(std::net::IpAddr::from(std::net::Ipv4Addr::from(
                0x0A00_0000 + i,
            ))),
            since: now,
            expires: Some(now + 3600),
            count: 1,
            reason: "test".into(),
            origin: Origin::Scan,
        };
        // Into a table that is not empty: one insert at a time, as a flood's blocks come.
        lock(&r.handles.blocks).load(vec![record(0)], now);
        lock(&r.handles.blocks).load((1..70_000).map(record).collect(), now);
        assert!(lock(&r.handles.blocks).worth_compacting());
        let written = |r: &Running<Memory>, n: u64| {
            r.handles.stats.blocks_written.store(n, Ordering::Relaxed);
        };
        let mut trimmed = Trimmed::default();
        written(&r, 5);
        r.give_memory_back(&mut trimmed); // the first round: nothing to compare with
        written(&r, 6);
        r.give_memory_back(&mut trimmed); // a block was written meanwhile
        assert!(lock(&r.handles.blocks).worth_compacting());
        r.give_memory_back(&mut trimmed); // a quiet round
        assert!(!lock(&r.handles.blocks).worth_compacting());
        assert_eq!(lock(&r.handles.blocks).len(), 70_000);
        // A host whose writer is never quiet still gets its memory back, a minute later.
        lock(&r.handles.blocks).load((70_000..100_000).map(record).collect(), now);
        for n in 0..FORCE_AFTER {
            written(&r, 7 + u64::from(n));
            r.give_memory_back(&mut trimmed);
            assert!(lock(&r.handles.blocks).worth_compacting(), "round {n}");
        }
        written(&r, 100);
        r.give_memory_back(&mut trimmed);
        assert!(!lock(&r.handles.blocks).worth_compacting());
    }

    fn kernel_blocks(fw: &Memory) -> Vec<String> {
        fw.state()
            .table
            .as_ref()
            .map(|t| t.blocked.keys().map(|k| k.to_string()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_missing_table_is_rebuilt_with_its_sets_and_blocks() {
        let fw = Memory::default();
        let (mut r, _) = running(fw.clone());
        block(&mut r, "198.18.0.1");
        fw.state().table = None;
        r.heal();
        assert_eq!(fw.state().builds, 2);
        assert_eq!(kernel_blocks(&fw), ["198.18.0.1/32"]);
        let s = fw.state();
        let t = s.table.as_ref().unwrap();
        assert!(t.steering.is_some() && !t.allow.is_empty() && !t.watch.0.is_empty());
    }

    #[test]
    fn a_damaged_table_is_rebuilt_and_an_intact_one_left_alone() {
        let fw = Memory::default();
        let (mut r, _) = running(fw.clone());
        r.heal();
        assert_eq!(fw.state().builds, 1, "intact: nothing to do");
        fw.state().table.as_mut().unwrap().steering = None;
        r.heal();
        assert_eq!(fw.state().builds, 2);
        assert!(fw.state().table.as_ref().unwrap().steering.is_some());
        fw.state().table.as_mut().unwrap().watch = (Vec::new(), Vec::new());
        r.heal();
        assert_eq!(fw.state().builds, 3);
        assert!(!fw.state().table.as_ref().unwrap().watch.0.is_empty());
    }

    /// Fleet blocks live in the policy's book too: a lost table gets them back, in their
    /// own sets, and so does a flushed fleet set.
    #[test]
    fn fleet_blocks_come_back_with_the_table() {
        use crate::core::decisions::Decision;
        let fw = Memory::default();
        let (mut r, _) = running(fw.clone());
        block(&mut r, "198.18.0.1");
        let now = epoch_now();
        {
            let mut book = lock(&r.handles.blocks);
            let (fleet, protected) = book.fleet();
            let protected = protected.clone();
            fleet.apply(
                vec![Decision {
                    id: 1,
                    net: "198.18.4.0/24".parse().unwrap(),
                    expires: now + 3600,
                    reason: "crowdsecurity/ssh-bf (crowdsec)".into(),
                }],
                &[],
                &protected,
                now,
            );
            let mut w = fw.clone();
            fleet.write(now, |plan| {
                let removed = w.remove_blocks(Set::Fleet, &plan.remove).is_ok();
                (
                    removed,
                    w.add_blocks(&plan.add)
                        .failed
                        .into_iter()
                        .map(|(n, _)| n)
                        .collect(),
                )
            });
        }
        let fleet_set = |fw: &Memory| -> Vec<String> {
            fw.state()
                .table
                .as_ref()
                .map(|t| t.fleet.keys().map(|k| k.to_string()).collect())
                .unwrap_or_default()
        };
        assert_eq!(fleet_set(&fw), ["198.18.4.0/24"]);
        fw.state().table = None;
        r.heal();
        assert_eq!(kernel_blocks(&fw), ["198.18.0.1/32"]);
        assert_eq!(fleet_set(&fw), ["198.18.4.0/24"]);
        fw.state().table.as_mut().unwrap().fleet.clear();
        r.heal();
        assert_eq!(fleet_set(&fw), ["198.18.4.0/24"]);
        // Saved with the rest, and read back into the fleet's book.
        r.save();
        let records = r.files.state_file.load().unwrap();
        assert!(records
            .iter()
            .any(|x| x.origin == Origin::Fleet && x.reason.starts_with("crowdsecurity/ssh-bf")));
        let (r2, _) = running(Memory::default());
        lock(&r2.handles.blocks).load(records, now);
        assert_eq!(lock(&r2.handles.blocks).len(), 1);
        assert_eq!(lock(&r2.handles.blocks).fleet_book().blocked(), 1);
    }

    #[test]
    fn flushed_blocks_are_put_back_without_a_rebuild() {
        let fw = Memory::default();
        let (mut r, _) = running(fw.clone());
        block(&mut r, "198.18.0.1");
        block(&mut r, "2001:db8:5::/64");
        fw.state().table.as_mut().unwrap().blocked.clear();
        r.heal();
        assert_eq!(fw.state().builds, 1);
        assert_eq!(kernel_blocks(&fw), ["198.18.0.1/32", "2001:db8:5::/64"]);
    }

    #[test]
    fn blocks_refused_while_the_table_was_gone_are_retried_once_it_is_back() {
        let fw = Memory::default();
        let (mut r, _) = running(fw.clone());
        fw.state().table = None;
        block(&mut r, "198.18.0.7");
        assert_eq!(lock(&r.handles.blocks).pending(), 1);
        r.heal();
        // Repaired: the refused block is due now, not at its next backoff.
        let due = lock(&r.handles.blocks).due(epoch_now());
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].key.to_string(), "198.18.0.7/32");
    }

    #[test]
    fn a_restart_puts_back_every_standing_block_and_no_ended_one() {
        let fw = Memory::default();
        let (mut r, _) = running(fw.clone());
        block(&mut r, "198.18.0.1");
        r.save();
        let records = r.files.state_file.load().unwrap();
        assert_eq!(records.len(), 1);
        // A new daemon, a new kernel table.
        let fw2 = Memory::default();
        let (r2, _) = running(fw2.clone());
        let mut ended = records[0].clone();
        ended.key = crate::core::ignore::parse_net("198.18.0.2").unwrap();
        ended.expires = Some(1);
        lock(&r2.handles.blocks).load(vec![records[0].clone(), ended], epoch_now());
        let n = restore(&mut fw2.clone(), &r2.handles.blocks);
        assert_eq!(n, 1);
        assert_eq!(kernel_blocks(&fw2), ["198.18.0.1/32"]);
    }
}
