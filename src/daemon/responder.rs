//! Off the packet path: turns decisions into blocks (one batch for everything waiting, the
//! block policy deciding what to write), retries the blocks the kernel refused, hands
//! actions to the actions thread, and tells the reporter what became of each source.
//! Nothing here waits on a log or a name lookup.

use crate::core::detector::{Action, Decision};
use crate::core::ignore::{block_key, probe_key};
use crate::core::policy::{Blocks, Origin, Outcome as Done, Refusal, Want};
use crate::core::probe::Proto;
use crate::core::stats::Stats;
use crate::daemon::actions::Job;
use crate::daemon::reporter::{Outcome, Report, ReportSender};
use crate::dataplane::{stall, Control, Controls, Event, Fault, Handoff};
use crate::firewall::{Firewall, Set};
use crate::fleet::{LocalBlock, Outbox};
use crate::output::alert;
use crate::system::clock::epoch_now;
use ipnet::IpNet;
use prometheus_client::metrics::histogram::Histogram;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

pub use crate::config::settings::Settings;

pub struct Shared {
    pub settings: Arc<RwLock<Settings>>,
    pub blocks: Arc<Mutex<Blocks>>,
    pub stats: Arc<Stats>,
    pub control: Controls,
    /// From a probe's arrival to its block in the set, in seconds.
    pub time_to_block: Histogram,
}

pub struct Responder<F: Firewall> {
    fw: F,
    shared: Shared,
    /// To the reporter thread: never waited on (a full queue drops and counts).
    reports: ReportSender,
    actions: Option<SyncSender<Job>>,
    last_cap_log: Option<Instant>,
    /// Whether any action is configured (read once per batch): no job, no wake-up otherwise.
    actions_enabled: bool,
    /// To the fleet's push thread (`[crowdsec] credentials`): never waited on.
    fleet: Option<Outbox>,
    /// The networks blocked here within the last RACE, when (the monotonic clock: a wall
    /// clock set back must not make an old block look new).
    written: HashMap<IpNet, Instant>,
}

/// A batch's block decisions, one want per network.
struct Wants {
    wants: Vec<Want>,
    /// Each network's want.
    want_of: HashMap<IpNet, usize>,
    /// Each event's network, for the block decisions.
    keys: Vec<Option<IpNet>>,
    /// When each want's probe arrived.
    arrived: Vec<Instant>,
}

/// Upper bound on events handled in one round, so one flood round cannot grow memory nor
/// last long: every commit walks the whole interval set on recent kernels (about 0.15 s
/// at a million blocks here), and a full table's round writes and evicts as many blocks
/// as it has events. 16,384 is 8 transactions each way (2.5 s at most here); 100,000 took
/// 15 s, past the 10 s the watchdog allows a stalled thread.
const MAX_BATCH: usize = 16_384;
/// Longest a block waits for others to share its transaction.
const MAX_WAIT: Duration = Duration::from_millis(2);
/// How often refused blocks are looked at while some wait for a retry.
const RETRY_TICK: Duration = Duration::from_secs(1);

impl<F: Firewall> Responder<F> {
    pub fn new(
        fw: F,
        shared: Shared,
        reports: ReportSender,
        actions: Option<SyncSender<Job>>,
    ) -> Self {
        Responder {
            fw,
            shared,
            reports,
            actions,
            last_cap_log: None,
            actions_enabled: true,
            fleet: None,
            written: HashMap::new(),
        }
    }

    /// Hands this host's detection blocks to the fleet's push thread.
    pub fn with_fleet(mut self, outbox: Outbox) -> Self {
        self.fleet = Some(outbox);
        self
    }

    /// Sleeps until woken, takes every waiting event, handles them as one batch: a lone
    /// scanner is blocked at once, a flood in large transactions. After a busy round it
    /// looks again within MAX_WAIT even without a wake, so events that came in under a
    /// never-empty queue do not wait for the next WAKE_EVERY. Idle, it still goes round
    /// every RETRY_TICK: to retry refused blocks, and to show the watchdog it is alive.
    pub fn run(mut self, handoff: Arc<Handoff>, wake: Receiver<()>) {
        let mut batch = Vec::with_capacity(1024);
        let mut busy = false;
        let fault = Fault::from_env();
        loop {
            let wait = if busy { MAX_WAIT } else { RETRY_TICK };
            if let Err(RecvTimeoutError::Disconnected) = wake.recv_timeout(wait) {
                return; // the packet thread is gone
            }
            Stats::inc(&self.shared.stats.responder_rounds);
            while batch.len() < MAX_BATCH {
                match handoff.events.pop() {
                    Some(ev) => batch.push(ev),
                    None => break,
                }
            }
            busy = !batch.is_empty();
            self.handle(&batch, Instant::now(), epoch_now());
            batch.clear();
            if !busy && batch.capacity() > 4096 {
                // A flood's batches have passed: their room (about 1.3 MB) goes back.
                batch.shrink_to(1024);
            }
            match fault {
                Some(Fault::StallResponder) if busy => stall("block writer"),
                Some(Fault::PanicResponder) if busy => panic!("PORTSENTRY_FAULT: test panic"),
                _ => {}
            }
        }
    }

    fn settings(&self) -> Settings {
        self.shared
            .settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Blocks> {
        self.shared.blocks.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn handle(&mut self, batch: &[Event], now: Instant, epoch: u64) {
        let settings = self.settings();
        self.actions_enabled = settings.actions;

        // 1. Blocks first: protection before paperwork. One want per network.
        let blocks = self.shared.blocks.clone();
        let mut book = blocks.lock().unwrap_or_else(|e| e.into_inner());
        self.forget_old_writes(now);
        let mut wants = self.wants(batch, &settings, &book, now, epoch);
        let fresh = wants.wants.len();
        wants.wants.extend(book.due(epoch));
        drop(book);
        let (done, pending) = self.write(&wants.wants, epoch);
        self.note_written(&wants.arrived, &done, now);
        self.offer_to_fleet(&wants.wants, &done, epoch);
        self.forget_unblocked(&wants.wants, &done, now);
        Stats::set(&self.shared.stats.blocks_pending, pending as u64);

        // 2. Queue the other actions, and tell the reporter.
        let repeats = self.report_batch(batch, &wants, &done, &settings, epoch);
        // Retried blocks that have now been written: their lines were not written before.
        for (w, d) in wants.wants[fresh..].iter().zip(&done[fresh..]) {
            if let (Some(p), Done::Blocked { .. }) = (w.probe, d) {
                let outcome = self.outcome(d, job(&p, &settings, true));
                self.report(Report::Act {
                    probe: p,
                    outcome,
                    at: epoch,
                });
            }
        }
        self.report_repeats(repeats, &settings);
    }

    /// Drops the networks written longer than RACE ago.
    fn forget_old_writes(&mut self, now: Instant) {
        self.written
            .retain(|_, at| now.saturating_duration_since(*at) <= RACE);
        if self.written.capacity() > 4 * self.written.len() + 4096 {
            // A flood's burst of blocks has passed: give the room back.
            self.written.shrink_to_fit();
        }
    }

    /// The batch's block decisions as one want per network, each event's network noted.
    fn wants(
        &self,
        batch: &[Event],
        settings: &Settings,
        book: &Blocks,
        now: Instant,
        epoch: u64,
    ) -> Wants {
        let mut w = Wants {
            wants: Vec::new(),
            want_of: HashMap::new(),
            keys: vec![None; batch.len()],
            arrived: Vec::new(),
        };
        for (e, k) in batch.iter().zip(&mut w.keys) {
            if !matches!(
                e.decision,
                Decision::Act {
                    action: Action::Block,
                    ..
                }
            ) {
                continue;
            }
            let key = probe_key(&e.probe, settings.ipv6_prefix, book.protected());
            *k = Some(key);
            if raced(book, &self.written, key, now, epoch) {
                continue;
            }
            w.want_of.entry(key).or_insert_with(|| {
                w.arrived.push(e.at);
                w.wants.push(Want {
                    key,
                    origin: Origin::Scan,
                    timeout: crate::core::policy::Timeout::Default,
                    reason: reason(&e.probe),
                    probe: Some(e.probe),
                });
                w.wants.len() - 1
            });
        }
        w
    }

    /// Remembers the networks just blocked, and how long each probe waited for its block.
    fn note_written(&mut self, arrived: &[Instant], done: &[Done], now: Instant) {
        for d in done {
            if let Done::Blocked { key, .. } = d {
                self.written.insert(*key, now);
            }
        }
        let written = Instant::now();
        for (at, d) in arrived.iter().zip(done) {
            if matches!(d, Done::Blocked { .. }) {
                self.shared
                    .time_to_block
                    .observe(written.saturating_duration_since(*at).as_secs_f64());
            }
        }
    }

    /// Blocks detection made here go to the fleet; the administrator's and retried
    /// ones of theirs stay here, and the fleet's own never pass through this path.
    fn offer_to_fleet(&self, wants: &[Want], done: &[Done], epoch: u64) {
        let Some(out) = &self.fleet else { return };
        for (w, d) in wants.iter().zip(done) {
            if let (
                Origin::Scan,
                Done::Blocked {
                    key,
                    timeout,
                    count,
                },
            ) = (w.origin, d)
            {
                out.offer(LocalBlock {
                    net: *key,
                    timeout: *timeout,
                    count: *count,
                    at: epoch,
                    probe: w.probe,
                });
            }
        }
    }

    /// A source that is not blocked must be seen again by detection.
    fn forget_unblocked(&mut self, wants: &[Want], done: &[Done], now: Instant) {
        let mut refused = 0u64;
        for (w, d) in wants.iter().zip(done) {
            match d {
                Done::Refused(Refusal::Full | Refusal::Rate) => refused += 1,
                Done::Refused(Refusal::Protected) | Done::Failed { .. } => {}
                _ => continue,
            }
            let _ = self.shared.control.send(Control::Forget(w.key));
        }
        self.log_refusals(refused, now);
    }

    /// Queues each event's actions and reports it; the repeats counted per source.
    fn report_batch(
        &self,
        batch: &[Event],
        wants: &Wants,
        done: &[Done],
        settings: &Settings,
        epoch: u64,
    ) -> HashMap<IpAddr, u32> {
        let mut repeats: HashMap<IpAddr, u32> = HashMap::new();
        let mut reported: HashMap<IpNet, ()> = HashMap::new();
        for (ev, key) in batch.iter().zip(&wants.keys) {
            let p = &ev.probe;
            let action = match ev.decision {
                Decision::Act { action, .. } => action,
                Decision::Spare { .. } => {
                    // Reported, and nothing else: no block, command or history line (a
                    // fail2ban jail reading it would block the client itself).
                    Stats::inc(&self.shared.stats.spared);
                    self.report(Report::Act {
                        probe: *p,
                        outcome: Outcome::Spared,
                        at: epoch,
                    });
                    continue;
                }
                Decision::Repeat => {
                    let r = repeats.entry(p.src).or_default();
                    *r = r.saturating_add(ev.count);
                    continue;
                }
                _ => continue,
            };
            let job = job(p, settings, action == Action::Block);
            let outcome = match action {
                Action::Off => Outcome::Reported,
                Action::Command => {
                    self.queue_job(job);
                    Outcome::Command
                }
                Action::Block => {
                    let Some((key, &i)) = key.and_then(|k| Some((k, wants.want_of.get(&k)?)))
                    else {
                        // Another packet thread blocked this network a moment ago.
                        *repeats.entry(p.src).or_default() += 1;
                        continue;
                    };
                    if reported.insert(key, ()).is_some() {
                        // A second source of one network in the same batch: a repeat.
                        *repeats.entry(p.src).or_default() += 1;
                        continue;
                    }
                    self.outcome(&done[i], job)
                }
            };
            self.report(Report::Act {
                probe: *p,
                outcome,
                at: epoch,
            });
        }
        repeats
    }

    /// One report per repeating source, saying whether a block holds it.
    fn report_repeats(&self, repeats: HashMap<IpAddr, u32>, settings: &Settings) {
        if repeats.is_empty() {
            return;
        }
        let book = self.lock();
        let reports: Vec<Report> = repeats
            .into_iter()
            .map(|(addr, n)| Report::Repeats {
                addr,
                n,
                blocked: book
                    .covering_end(block_key(addr, settings.ipv6_prefix, book.protected()))
                    .is_some(),
            })
            .collect();
        drop(book);
        for r in reports {
            self.report(r);
        }
    }

    /// Plans, writes and records `wants`; with the blocks still waiting for a retry. The
    /// lock is held to plan and to commit, never across the kernel's write: the packet
    /// path, `list` and the state writer need it meanwhile (as the fleet's pull does).
    fn write(&mut self, wants: &[Want], epoch: u64) -> (Vec<Done>, usize) {
        if wants.is_empty() {
            return (Vec::new(), self.lock().pending());
        }
        let plan = self.lock().plan(wants, epoch);
        if !plan.remove.is_empty() {
            if let Err(e) = self.fw.remove_blocks(Set::Local, &plan.remove) {
                tracing::error!("adminalert: ERROR: could not remove blocks to make room: {e}");
            }
        }
        // An evicted block's source is in the open again: detection must see it afresh.
        for k in &plan.evicted {
            let _ = self.shared.control.send(Control::Forget(*k));
        }
        let report = self.fw.add_blocks(&plan.add);
        let stats = &self.shared.stats;
        stats
            .blocks_written
            .fetch_add(report.written as u64, Relaxed);
        stats
            .block_failures
            .fetch_add(report.failed.len() as u64, Relaxed);
        let failed: HashMap<IpNet, String> = report
            .failed
            .into_iter()
            .map(|(k, e)| (k, e.to_string()))
            .collect();
        let mut book = self.lock();
        let done = book.commit(wants, &plan, &failed, epoch);
        let (pending, lifted) = (book.pending(), book.take_lifted());
        drop(book);
        // Unblocked by the administrator while written: this write may have landed after
        // the unblock's delete, so it is undone here.
        if !lifted.is_empty() {
            if let Err(e) = self.fw.remove_blocks(Set::Local, &lifted) {
                tracing::error!("adminalert: ERROR: could not remove unblocked blocks: {e}");
            }
        }
        (done, pending)
    }

    /// The reporter's view of a block decision; a written block also runs the actions.
    fn outcome(&self, d: &Done, job: Job) -> Outcome {
        match d {
            Done::Blocked {
                key,
                timeout,
                count,
            } => {
                self.queue_job(job);
                Outcome::Blocked {
                    key: *key,
                    timeout: *timeout,
                    count: *count,
                }
            }
            Done::Covered(k) => Outcome::Covered(*k),
            Done::Refused(_) => Outcome::Refused,
            Done::Failed { error, .. } => Outcome::Failed(error.clone()),
        }
    }

    fn log_refusals(&mut self, refused: u64, now: Instant) {
        if refused == 0
            || self
                .last_cap_log
                .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.last_cap_log = Some(now);
        let cfg = self.lock().config().clone();
        tracing::error!(
            "adminalert: ERROR: {refused} blocks refused by the caps (max_blocked {}, max_per_second {}); their next probes are looked at again",
            cfg.max_blocked,
            cfg.max_per_second
        );
    }

    fn report(&self, r: Report) {
        if !self.reports.send(r) {
            Stats::inc(&self.shared.stats.reports_dropped);
        }
    }

    fn queue_job(&self, job: Job) {
        if !self.actions_enabled {
            return;
        }
        if let Some(tx) = &self.actions {
            if tx.try_send(job).is_err() {
                Stats::inc(&self.shared.stats.commands_dropped);
            }
        }
    }
}

/// The legacy actions' job for a probe (its mode names the 1.2 mode, e.g. "atcp").
fn job(p: &crate::core::probe::Probe, settings: &Settings, block: bool) -> Job {
    Job {
        addr: p.src,
        port: p.dst_port,
        proto: p.proto,
        mode: match p.proto {
            Proto::Tcp => settings.tcp_mode,
            Proto::Udp => settings.udp_mode,
            Proto::Sctp => "sctp",
            Proto::Ip => "ip",
        },
        block,
    }
}

/// Whether a block decision for `key` only repeats one just written. Two packet threads
/// can decide on one network before its block drops the rest of its probes (a source's
/// shard only changes with the configuration). A thread acts on a network again only once
/// its block has ended (its hold is the block timeout) or was lifted, so a block written
/// here a moment ago (by the monotonic clock) that has time to run means a race, not a
/// return.
fn raced(
    book: &Blocks,
    written: &HashMap<IpNet, Instant>,
    key: IpNet,
    now: Instant,
    epoch: u64,
) -> bool {
    book.covering_end(key).is_some_and(|(k, expires)| {
        written
            .get(&k)
            .is_some_and(|at| now.saturating_duration_since(*at) <= RACE)
            && expires.is_none_or(|e| e > epoch.saturating_add(RACE.as_secs()))
    })
}

/// How long after a block another thread's decision for it counts as a race.
const RACE: Duration = Duration::from_secs(2);

/// Why a network was blocked, as `list` shows it.
fn reason(p: &crate::core::probe::Probe) -> String {
    format!(
        "{} to {} from {}",
        alert::scan_description(p.kind).trim(),
        alert::target(p).replace(':', ""),
        p.src
    )
}

/// The actions thread: runs each job's actions in turn.
pub fn run_actions(
    rx: Receiver<Job>,
    cfg: Arc<RwLock<crate::daemon::actions::ActionsConfig>>,
    stats: Arc<Stats>,
) {
    while let Ok(job) = rx.recv() {
        let cfg = {
            let g = cfg.read().unwrap_or_else(|e| e.into_inner());
            if g.is_empty() {
                continue;
            }
            g.clone()
        };
        let out = crate::daemon::actions::perform(&cfg, &job);
        stats
            .commands_run
            .fetch_add(u64::from(out.ok + out.failed), Relaxed);
        stats
            .commands_failed
            .fetch_add(u64::from(out.failed), Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ignore::IgnoreList;
    use crate::core::policy::PolicyConfig;
    use crate::core::probe::{Probe, ScanKind, TcpFlags};
    use crate::daemon::reporter::Reporter;
    use crate::firewall::memory::Memory;
    use std::io::Write;

    fn policy() -> PolicyConfig {
        PolicyConfig {
            timeout: Some(Duration::from_secs(3600)),
            repeat_factor: 4,
            max_timeout: Some(Duration::from_secs(86400)),
            max_blocked: 2,
            max_per_second: 1000,
        }
    }

    /// Fresh shared state with `policy`, and where the responder's Forget requests go.
    fn shared(policy: PolicyConfig) -> (Shared, Receiver<Control>) {
        let (control, forgotten) = std::sync::mpsc::channel();
        let shared = Shared {
            settings: Arc::new(RwLock::new(settings())),
            blocks: Arc::new(Mutex::new(Blocks::new(
                policy,
                IgnoreList::new(["192.0.2.1/32".parse().unwrap()]),
            ))),
            stats: Arc::new(Stats::default()),
            control: control.into(),
            time_to_block: crate::output::metrics::time_to_block(),
        };
        (shared, forgotten)
    }

    /// A firewall with its table in place.
    fn firewall() -> Memory {
        let mut fw = Memory::default();
        fw.build(&crate::firewall::TableSpec::default()).unwrap();
        fw
    }

    fn blocked(fw: &Memory) -> Vec<String> {
        fw.state()
            .table
            .as_ref()
            .map(|t| {
                t.blocked
                    .keys()
                    .map(|k| crate::core::ignore::net_text(*k))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A report channel nobody reads (these tests look at blocks and state).
    fn unread() -> ReportSender {
        crate::daemon::reporter::report_queue(1).0
    }

    fn settings() -> Settings {
        Settings {
            resolve_host: false,
            tcp_mode: "atcp",
            udp_mode: "audp",
            actions: false,
            ipv6_prefix: 64,
            fleet: None,
        }
    }

    fn act(src: &str) -> Event {
        Event {
            probe: Probe {
                src: src.parse().unwrap(),
                dst: "192.0.2.1".parse().unwrap(),
                proto: Proto::Tcp,
                src_port: 1,
                dst_port: 111,
                kind: ScanKind::Syn,
                flags: TcpFlags(2),
                ip_options: false,
                live_client: false,
                client_net: false,
            },
            decision: Decision::Act {
                action: Action::Block,
                hits: 1,
            },
            at: Instant::now(),
            count: 1,
        }
    }

    #[test]
    fn new_blocks_per_second_are_capped() {
        let fw = firewall();
        let (shared, _forgotten) = shared(PolicyConfig {
            max_blocked: 100,
            max_per_second: 3,
            ..policy()
        });
        let mut r = Responder::new(fw.clone(), shared, unread(), None);
        let t0 = Instant::now();
        let batch: Vec<Event> = (1..=5).map(|i| act(&format!("198.18.0.{i}"))).collect();
        r.handle(&batch, t0, 1000);
        assert_eq!(blocked(&fw).len(), 3);
        r.handle(&[act("198.18.1.1")], t0 + Duration::from_millis(500), 1000);
        assert_eq!(blocked(&fw).len(), 3);
        r.handle(&[act("198.18.1.1")], t0 + Duration::from_millis(1001), 1001);
        assert_eq!(blocked(&fw).len(), 4);
    }

    /// The lines the code under `f` writes through tracing.
    fn lines_of(f: impl FnOnce()) -> Vec<String> {
        #[derive(Clone, Default)]
        struct Capture(Arc<Mutex<Vec<u8>>>);
        impl Write for Capture {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let out = Capture::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .without_time()
            .with_level(false)
            .with_target(false)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            // Other tests' threads may have cached "no interest" in these callsites.
            tracing::callsite::rebuild_interest_cache();
            f()
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn a_blocked_sources_repeats_get_one_line_then_a_count_a_period_later() {
        let lines = lines_of(|| {
            let (shared, _) = shared(policy());
            // The responder decides, the reporter writes: both halves, through the channel.
            let mut reporter = Reporter::new(shared.settings.clone(), None, None, 100);
            let (tx, rx) = crate::daemon::reporter::report_queue(1024);
            let mut r = Responder::new(firewall(), shared, tx, None);
            let mut round = |r: &mut Responder<Memory>, batch: &[Event], now: Instant| {
                r.handle(batch, now, 1000);
                let mut reports = Vec::new();
                rx.recv_batch(Duration::ZERO, 1024, &mut reports).unwrap();
                reporter.handle(&reports, now);
            };
            let t0 = Instant::now();
            round(&mut r, &[act("198.18.0.1")], t0);
            let mut repeat = act("198.18.0.1");
            repeat.decision = Decision::Repeat;
            let repeats = vec![repeat; 500];
            round(&mut r, &repeats, t0 + Duration::from_millis(1));
            round(&mut r, &repeats, t0 + Duration::from_millis(2));
            reporter.summarise(t0 + Duration::from_secs(30));
            reporter.summarise(t0 + Duration::from_millis(60_001));
            reporter.summarise(t0 + Duration::from_secs(200));
        });
        assert_eq!(
            lines,
            [
                "attackalert: TCP SYN/Normal scan from host: 198.18.0.1/198.18.0.1 to TCP port: 111",
                "attackalert: Host 198.18.0.1 has been blocked via nftables set: \"inet portsentry blocked4\" timeout: 3600s",
                "attackalert: Host: 198.18.0.1/198.18.0.1 is already blocked Ignoring",
                "attackalert: Host: 198.18.0.1/198.18.0.1 sent 999 more probes in the last 60 s, dropped",
            ]
        );
    }

    #[test]
    fn one_block_per_source_per_batch_and_the_cap_holds() {
        let fw = firewall();
        let (shared, forgotten) = shared(PolicyConfig {
            max_per_second: 2,
            max_blocked: 100,
            ..policy()
        });
        let blocks = shared.blocks.clone();
        let mut r = Responder::new(fw.clone(), shared, unread(), None);
        let batch = [
            act("198.18.0.1"),
            act("198.18.0.1"),
            act("198.18.0.2"),
            act("198.18.0.3"),
        ];
        r.handle(&batch, Instant::now(), 1000);
        assert_eq!(blocked(&fw), vec!["198.18.0.1", "198.18.0.2"]);
        assert_eq!(blocks.lock().unwrap().len(), 2);
        // The refused source is handed back to the detector so a later probe can act.
        assert!(
            matches!(forgotten.try_recv(), Ok(Control::Forget(a)) if a.to_string() == "198.18.0.3/32")
        );
        // A second block of the same address counts as a repeat.
        r.handle(&[act("198.18.0.1")], Instant::now(), 5000);
        let rec = blocks
            .lock()
            .unwrap()
            .get("198.18.0.1/32".parse().unwrap())
            .unwrap();
        assert_eq!((rec.count, rec.expires), (2, Some(5000 + 4 * 3600)));
    }

    /// A block evicted to make room no longer stands: detection must look at its source
    /// again, or the scanner, back in the open, is only counted as "already blocked" for
    /// the rest of its hold.
    #[test]
    fn an_evicted_block_hands_its_source_back_to_detection() {
        let fw = firewall();
        let (shared, forgotten) = shared(policy()); // max_blocked 2
        let mut r = Responder::new(fw.clone(), shared, unread(), None);
        r.handle(&[act("198.18.0.1")], Instant::now(), 1000);
        r.handle(&[act("198.18.0.2")], Instant::now(), 1001);
        r.handle(&[act("198.18.0.3")], Instant::now(), 1002);
        assert_eq!(blocked(&fw), vec!["198.18.0.2", "198.18.0.3"]);
        let forgot: Vec<String> = forgotten
            .try_iter()
            .map(|c| match c {
                Control::Forget(k) => k.to_string(),
                _ => String::new(),
            })
            .collect();
        assert_eq!(forgot, vec!["198.18.0.1/32"]);
    }

    /// A block the kernel refuses (its set was missing) hands the source back to
    /// detection, and is written as soon as it is retried.
    #[test]
    fn a_refused_block_is_retried_and_detection_sees_the_source_again() {
        let fw = firewall();
        fw.state().refuse = Some(libc::ENOENT);
        let (shared, forgotten) = shared(policy());
        let blocks = shared.blocks.clone();
        let mut r = Responder::new(fw.clone(), shared, unread(), None);
        r.handle(&[act("198.18.0.9")], Instant::now(), 1000);
        assert!(blocked(&fw).is_empty());
        assert!(matches!(forgotten.try_recv(), Ok(Control::Forget(_))));
        assert_eq!(blocks.lock().unwrap().pending(), 1);
        // Still refused at the first retry; then the set is back.
        r.handle(&[], Instant::now(), 1001);
        assert!(blocked(&fw).is_empty());
        fw.state().refuse = None;
        r.handle(&[], Instant::now(), 1003);
        assert_eq!(blocked(&fw), vec!["198.18.0.9"]);
        assert_eq!(blocks.lock().unwrap().pending(), 0);
    }

    /// Detection blocks go to the fleet's push thread, once each; the administrator's do
    /// not, and a push thread that never takes them costs nothing here.
    #[test]
    fn detection_blocks_go_to_the_fleet_and_nothing_else_does() {
        let fw = firewall();
        let (shared, _) = shared(PolicyConfig {
            max_blocked: 100,
            ..policy()
        });
        let stats = shared.stats.clone();
        let blocks = shared.blocks.clone();
        let (out, rx) = Outbox::new(stats.clone());
        let mut r = Responder::new(fw.clone(), shared, unread(), None).with_fleet(out);
        r.handle(
            &[act("198.18.0.1"), act("198.18.0.1")],
            Instant::now(),
            1000,
        );
        let got: Vec<LocalBlock> = rx.try_iter().collect();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].net.to_string(), "198.18.0.1/32");
        assert_eq!(got[0].timeout, Some(Duration::from_secs(3600)));
        assert_eq!(got[0].probe.unwrap().dst_port, 111);
        // An administrator's block waiting for a retry is written by the responder: not
        // pushed.
        {
            let mut book = blocks.lock().unwrap();
            let wants = [Want {
                key: "198.51.100.7/32".parse().unwrap(),
                origin: Origin::Admin,
                timeout: crate::core::policy::Timeout::Default,
                reason: "admin".into(),
                probe: None,
            }];
            let plan = book.plan(&wants, 1000);
            let failed = [(wants[0].key, "ENOENT".to_string())].into_iter().collect();
            book.commit(&wants, &plan, &failed, 1000);
        }
        r.handle(&[], Instant::now(), 1002);
        assert!(blocked(&fw).contains(&"198.51.100.7".to_string()));
        assert_eq!(rx.try_iter().count(), 0);
        // Nobody reads: the hand-off fills, then drops and counts, never waits.
        let t0 = Instant::now();
        for i in 0..(crate::fleet::OUTBOX_CAPACITY as u32 + 5) {
            let a = std::net::Ipv4Addr::from(0xC612_0000 + 0x100 + i);
            r.handle(&[act(&a.to_string())], t0, 2000 + u64::from(i) / 1000);
        }
        assert!(t0.elapsed() < Duration::from_secs(10));
        assert!(Stats::get(&stats.fleet.alerts_dropped) > 0);
    }

    #[test]
    fn ipv6_scanners_are_blocked_by_prefix_unless_it_holds_a_protected_address() {
        let fw = firewall();
        let (shared, _) = shared(PolicyConfig {
            max_blocked: 100,
            ..policy()
        });
        shared.blocks.lock().unwrap().reconfigure(
            policy(),
            IgnoreList::new(["2001:db8::1/128".parse().unwrap()]),
        );
        let mut r = Responder::new(fw.clone(), shared, unread(), None);
        r.handle(
            &[act("2001:db8:5::7"), act("2001:db8::2")],
            Instant::now(),
            1000,
        );
        assert_eq!(blocked(&fw), vec!["2001:db8::2", "2001:db8:5::/64"]);
    }

    /// The clock set back (an NTP step, a VM resumed): a block that began "in the future"
    /// is no race once the kernel has ended it. A scanner back after its block ended in the
    /// kernel is blocked again, not taken for a second thread's decision (which would leave
    /// it free for the detector's whole hold).
    #[test]
    fn a_return_after_the_clock_was_set_back_is_blocked_again() {
        let fw = firewall();
        let (shared, _forgotten) = shared(PolicyConfig {
            timeout: Some(Duration::from_secs(60)),
            ..policy()
        });
        let stats = shared.stats.clone();
        let mut r = Responder::new(fw.clone(), shared, unread(), None);
        let t0 = Instant::now();
        r.handle(&[act("198.18.0.1")], t0, 10_000);
        assert_eq!(Stats::get(&stats.blocks_written), 1);
        // An hour set back: 61 s later (the kernel's timeout has run out) the wall clock
        // says 6_461, before the block "began".
        fw.state().table.as_mut().unwrap().blocked.clear();
        r.handle(&[act("198.18.0.1")], t0 + Duration::from_secs(61), 6_461);
        assert_eq!(Stats::get(&stats.blocks_written), 2);
        assert_eq!(blocked(&fw), vec!["198.18.0.1"]);
    }

    #[test]
    fn two_threads_racing_to_one_prefix_make_one_alert_and_a_return_is_acted_on() {
        let lines = lines_of(|| {
            let (shared, _) = shared(PolicyConfig {
                timeout: Some(Duration::from_secs(10)),
                ..policy()
            });
            let blocks = shared.blocks.clone();
            let mut reporter = Reporter::new(shared.settings.clone(), None, None, 100);
            let (tx, rx) = crate::daemon::reporter::report_queue(1024);
            let mut r = Responder::new(firewall(), shared, tx, None);
            let mut round = |r: &mut Responder<Memory>, batch: &[Event], epoch: u64| {
                r.handle(batch, Instant::now(), epoch);
                let mut reports = Vec::new();
                rx.recv_batch(Duration::ZERO, 1024, &mut reports).unwrap();
                reporter.handle(&reports, Instant::now());
            };
            // Two addresses of one /64, decided by two threads, reaching us a batch apart.
            round(&mut r, &[act("2001:db8:ff:1::1")], 1000);
            round(&mut r, &[act("2001:db8:ff:1::2")], 1001);
            assert_eq!(
                blocks
                    .lock()
                    .unwrap()
                    .covering("2001:db8:ff:1::/64".parse().unwrap())
                    .unwrap()
                    .count,
                1
            );
            // Back after its block ended (and before the record was pruned): a new block.
            round(&mut r, &[act("2001:db8:ff:1::3")], 1010);
        });
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.contains("scan from host"))
                .count(),
            2,
            "{lines:#?}"
        );
        assert_eq!(
            lines[2],
            "attackalert: Host: 2001:db8:ff:1::2/2001:db8:ff:1::2 is already blocked Ignoring",
            "{lines:#?}"
        );
    }
}
