//! Off the packet path: turns decisions into blocks (one batch for everything waiting),
//! records them in the block state, hands actions to the actions thread, and tells the
//! reporter what became of each source. Nothing here waits on a log or a name lookup.

use crate::actions::Job;
use crate::alert;
use crate::detector::{Action, Decision};
use crate::firewall::{Block, Firewall};
use crate::probe::Proto;
use crate::queue::{Control, Event, Handoff};
use crate::reporter::{Outcome, Report, ReportSender};
use crate::state::{BlockState, Record};
use crate::stats::Stats;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What a reload may change; read once per batch.
#[derive(Clone, Debug)]
pub struct Settings {
    /// First block's timeout; `None` = permanent.
    pub timeout: Option<Duration>,
    /// Each further block of the same address lasts this many times longer (1 = off).
    pub repeat_factor: u32,
    pub max_timeout: Option<Duration>,
    /// Most addresses blocked at once (spoofed floods cannot fill the kernel).
    pub max_blocked: usize,
    /// Most new blocks per second.
    pub max_per_second: u32,
    pub resolve_host: bool,
    /// 1.2's $MODE$ per protocol.
    pub tcp_mode: &'static str,
    pub udp_mode: &'static str,
    /// Any command, hosts.deny line or route configured.
    pub actions: bool,
}

impl Settings {
    /// The timeout for the `count`-th block of an address.
    pub fn timeout_for(&self, count: u32) -> Option<Duration> {
        let base = self.timeout?;
        let factor =
            u64::from(self.repeat_factor.max(1)).saturating_pow(count.saturating_sub(1).min(32));
        let t = Duration::from_secs(base.as_secs().saturating_mul(factor));
        Some(match self.max_timeout {
            Some(max) if self.repeat_factor > 1 => t.min(max.max(base)),
            _ => t,
        })
    }
}

pub struct Shared {
    pub settings: Arc<RwLock<Settings>>,
    pub state: Arc<Mutex<BlockState>>,
    pub stats: Arc<Stats>,
    pub control: Sender<Control>,
}

pub struct Responder<F: Firewall> {
    fw: F,
    shared: Shared,
    /// To the reporter thread: never waited on (a full queue drops and counts).
    reports: ReportSender,
    actions: Option<SyncSender<Job>>,
    /// Start of the current one-second window and the new blocks made in it.
    rate: (Option<Instant>, u32),
    last_cap_log: Option<Instant>,
    /// Whether any action is configured (read once per batch): no job, no wake-up otherwise.
    actions_enabled: bool,
}

/// Upper bound on events handled in one round, so one flood round cannot grow memory.
const MAX_BATCH: usize = 100_000;
/// Longest a block waits for others to share its transaction.
const MAX_WAIT: Duration = Duration::from_millis(2);

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
            rate: (None, 0),
            last_cap_log: None,
            actions_enabled: true,
        }
    }

    /// Sleeps until woken, takes every waiting event, handles them as one batch: a lone
    /// scanner is blocked at once, a flood in large transactions. After a busy round it
    /// looks again within MAX_WAIT even without a wake, so events that came in under a
    /// never-empty queue do not wait for the next WAKE_EVERY.
    pub fn run(mut self, handoff: Arc<Handoff>, wake: Receiver<()>) {
        let mut batch = Vec::with_capacity(1024);
        let mut busy = false;
        loop {
            if busy {
                let _ = wake.recv_timeout(MAX_WAIT);
            } else if wake.recv().is_err() {
                return; // the packet thread is gone
            }
            while batch.len() < MAX_BATCH {
                match handoff.events.pop() {
                    Some(ev) => batch.push(ev),
                    None => break,
                }
            }
            busy = !batch.is_empty();
            if busy {
                self.handle(&batch, Instant::now(), epoch_now());
                batch.clear();
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

    pub fn handle(&mut self, batch: &[Event], now: Instant, epoch: u64) {
        let settings = self.settings();
        self.actions_enabled = settings.actions;

        // 1. Blocks first: protection before paperwork.
        let mut blocks: Vec<Block> = Vec::new();
        let mut counts: HashMap<IpAddr, u32> = HashMap::new();
        let mut refused = 0u64;
        if self
            .rate
            .0
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1))
        {
            self.rate = (Some(now), 0);
        }
        {
            let state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            let mut room = settings.max_blocked.saturating_sub(state.len());
            for e in batch {
                if !matches!(
                    e.decision,
                    Decision::Act {
                        action: Action::Block,
                        ..
                    }
                ) || counts.contains_key(&e.probe.src)
                {
                    continue;
                }
                let known = state.get(e.probe.src);
                // A re-block of a recorded address takes no new room under the cap.
                if known.is_none() {
                    if room == 0 || self.rate.1 >= settings.max_per_second {
                        refused += 1;
                        let _ = self.shared.control.send(Control::Forget(e.probe.src));
                        continue;
                    }
                    room -= 1;
                    self.rate.1 += 1;
                }
                let count = known.map_or(1, |r| r.count.saturating_add(1));
                counts.insert(e.probe.src, count);
                blocks.push(Block {
                    addr: e.probe.src,
                    timeout: settings.timeout_for(count),
                });
            }
        }
        if refused > 0
            && self
                .last_cap_log
                .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1))
        {
            self.last_cap_log = Some(now);
            tracing::error!(
                "adminalert: ERROR: {refused} blocks refused by the caps (max_blocked {}, max_per_second {}); their next probes are looked at again",
                settings.max_blocked,
                settings.max_per_second
            );
        }
        let mut failed: HashMap<IpAddr, std::io::Error> = HashMap::new();
        if !blocks.is_empty() {
            let report = self.fw.add_blocks(&blocks);
            self.shared
                .stats
                .blocks_written
                .fetch_add(report.written as u64, Relaxed);
            self.shared
                .stats
                .block_failures
                .fetch_add(report.failed.len() as u64, Relaxed);
            failed.extend(report.failed);
        }

        // 2. Remember them, queue the other actions, and tell the reporter.
        let state_lock = self.shared.state.clone();
        let mut state = state_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut repeats: HashMap<IpAddr, u32> = HashMap::new();
        for ev in batch {
            let p = &ev.probe;
            let Decision::Act { action, .. } = ev.decision else {
                if ev.decision == Decision::Repeat {
                    *repeats.entry(p.src).or_default() += 1;
                }
                continue;
            };
            let mode = match p.proto {
                Proto::Tcp => settings.tcp_mode,
                Proto::Udp => settings.udp_mode,
            };
            let job = Job {
                addr: p.src,
                port: p.dst_port,
                proto: p.proto,
                mode,
                block: action == Action::Block,
            };
            let outcome = match action {
                Action::Off => Outcome::Reported,
                Action::Command => {
                    self.queue_job(job);
                    Outcome::Command
                }
                Action::Block => match (counts.get(&p.src), failed.get(&p.src)) {
                    (None, _) => Outcome::Refused,
                    (Some(_), Some(e)) => Outcome::Failed(e.to_string()),
                    (Some(&count), None) => {
                        let timeout = settings.timeout_for(count);
                        state.upsert(Record {
                            addr: p.src,
                            since: epoch,
                            expires: timeout.map(|t| epoch + t.as_secs()),
                            count,
                            reason: format!(
                                "{} to {} port {}",
                                alert::scan_description(p.kind).trim(),
                                p.proto.name(),
                                p.dst_port
                            ),
                        });
                        self.queue_job(job);
                        Outcome::Blocked { timeout, count }
                    }
                },
            };
            self.report(Report::Act {
                probe: *p,
                outcome,
                at: epoch,
            });
        }
        for (addr, n) in repeats {
            let blocked = state.get(addr).is_some();
            self.report(Report::Repeats { addr, n, blocked });
        }
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

pub fn epoch_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The actions thread: runs each job's actions in turn.
pub fn run_actions(
    rx: Receiver<Job>,
    cfg: Arc<RwLock<crate::actions::ActionsConfig>>,
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
        let out = crate::actions::perform(&cfg, &job);
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
    use crate::firewall::BlockReport;
    use crate::probe::{Probe, ScanKind, TcpFlags};
    use crate::reporter::Reporter;
    use std::io::Write;

    /// Records what it is asked to block; the kernel path is covered by the namespace tests.
    struct Recorder(Arc<Mutex<Vec<Block>>>);
    impl Firewall for Recorder {
        fn add_blocks(&mut self, blocks: &[Block]) -> BlockReport {
            self.0.lock().unwrap().extend_from_slice(blocks);
            BlockReport {
                written: blocks.len(),
                failed: vec![],
            }
        }
    }

    /// Fresh shared state with `settings`, and where the responder's Forget requests go.
    fn shared(settings: Settings) -> (Shared, Receiver<Control>) {
        let (control, forgotten) = std::sync::mpsc::channel();
        let shared = Shared {
            settings: Arc::new(RwLock::new(settings)),
            state: Arc::new(Mutex::new(BlockState::default())),
            stats: Arc::new(Stats::default()),
            control,
        };
        (shared, forgotten)
    }

    /// A report channel nobody reads (these tests look at blocks and state).
    fn unread() -> ReportSender {
        crate::reporter::report_queue(1).0
    }

    fn settings() -> Settings {
        Settings {
            timeout: Some(Duration::from_secs(3600)),
            repeat_factor: 4,
            max_timeout: Some(Duration::from_secs(86400)),
            max_blocked: 2,
            max_per_second: 1000,
            resolve_host: false,
            tcp_mode: "atcp",
            udp_mode: "audp",
            actions: false,
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
            },
            decision: Decision::Act {
                action: Action::Block,
                hits: 1,
            },
        }
    }

    #[test]
    fn new_blocks_per_second_are_capped() {
        let blocked = Arc::new(Mutex::new(Vec::new()));
        let (shared, _forgotten) = shared(Settings {
            max_blocked: 100,
            max_per_second: 3,
            ..settings()
        });
        let mut r = Responder::new(Recorder(blocked.clone()), shared, unread(), None);
        let t0 = Instant::now();
        let batch: Vec<Event> = (1..=5).map(|i| act(&format!("198.18.0.{i}"))).collect();
        r.handle(&batch, t0, 1000);
        assert_eq!(blocked.lock().unwrap().len(), 3);
        r.handle(&[act("198.18.1.1")], t0 + Duration::from_millis(500), 1000);
        assert_eq!(blocked.lock().unwrap().len(), 3);
        r.handle(&[act("198.18.1.1")], t0 + Duration::from_millis(1001), 1001);
        assert_eq!(blocked.lock().unwrap().len(), 4);
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
            let (shared, _) = shared(settings());
            // The responder decides, the reporter writes: both halves, through the channel.
            let mut reporter = Reporter::new(shared.settings.clone(), None, None, 100);
            let (tx, rx) = crate::reporter::report_queue(1024);
            let mut r = Responder::new(Recorder(Default::default()), shared, tx, None);
            let mut round = |r: &mut Responder<Recorder>, batch: &[Event], now: Instant| {
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
    fn repeat_offenders_get_longer_blocks_up_to_the_maximum() {
        let s = settings();
        assert_eq!(s.timeout_for(1), Some(Duration::from_secs(3600)));
        assert_eq!(s.timeout_for(2), Some(Duration::from_secs(4 * 3600)));
        assert_eq!(s.timeout_for(3), Some(Duration::from_secs(16 * 3600)));
        assert_eq!(s.timeout_for(4), Some(Duration::from_secs(86400)));
        assert_eq!(s.timeout_for(40), Some(Duration::from_secs(86400)));
        assert_eq!(Settings { timeout: None, ..s }.timeout_for(3), None);
    }

    #[test]
    fn one_block_per_source_per_batch_and_the_cap_holds() {
        let blocked = Arc::new(Mutex::new(Vec::new()));
        let (shared, forgotten) = shared(settings());
        let state = shared.state.clone();
        let mut r = Responder::new(Recorder(blocked.clone()), shared, unread(), None);
        let batch = [
            act("198.18.0.1"),
            act("198.18.0.1"),
            act("198.18.0.2"),
            act("198.18.0.3"),
        ];
        r.handle(&batch, Instant::now(), 1000);
        let got: Vec<String> = blocked
            .lock()
            .unwrap()
            .iter()
            .map(|b| b.addr.to_string())
            .collect();
        assert_eq!(got, vec!["198.18.0.1", "198.18.0.2"]);
        assert_eq!(state.lock().unwrap().len(), 2);
        // The refused source is handed back to the detector so a later probe can act.
        assert!(
            matches!(forgotten.try_recv(), Ok(Control::Forget(a)) if a.to_string() == "198.18.0.3")
        );
        // A second block of the same address counts as a repeat.
        r.handle(&[act("198.18.0.1")], Instant::now(), 5000);
        let rec = state
            .lock()
            .unwrap()
            .get("198.18.0.1".parse().unwrap())
            .cloned()
            .unwrap();
        assert_eq!((rec.count, rec.expires), (2, Some(5000 + 4 * 3600)));
    }
}
