//! The packet path: recv → parse → detector → verdict, plus a non-blocking hand-off of
//! decisions to the responder. One `recv` and one verdict `sendto` per packet; no
//! allocation, formatting or other syscall here.

use crate::detector::{Decision, Detector, DetectorConfig, Verdict};
use crate::ignore::IgnoreList;
use crate::packet;
use crate::probe::Probe;
use crate::stats::Stats;
use std::net::IpAddr;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::Instant;

/// What the packet path tells the responder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub probe: Probe,
    pub decision: Decision,
    pub at: Instant,
}

/// Changes for the packet thread, applied before the next packet (state only matters when
/// a packet arrives, so nothing waits on them).
#[derive(Debug)]
pub enum Control {
    Reconfigure(DetectorConfig, IgnoreList),
    /// An administrator unblocked this address: the next probe from it acts again.
    Forget(IpAddr),
}

#[derive(Clone, Copy, Debug)]
pub struct QueueOptions {
    pub num: u16,
    pub max_len: u32,
    pub fail_open: bool,
    /// Bytes of each packet copied to us: headers only.
    pub copy_range: u16,
}

/// Opens and binds the queue. Binding fails if another process holds the queue.
pub fn open(opts: &QueueOptions) -> Result<nfq::Queue, std::io::Error> {
    let mut q = nfq::Queue::open()?;
    q.bind(opts.num)?;
    // bind() sets a 64 KiB copy range; headers are all we read.
    q.set_copy_range(opts.num, opts.copy_range)?;
    q.set_queue_max_len(opts.num, opts.max_len)?;
    q.set_fail_open(opts.num, opts.fail_open)?;
    q.set_nonblocking(false);
    Ok(q)
}

/// Runs until the process exits. `now` is the clock seam.
pub fn run(
    queue: &mut nfq::Queue,
    detector: &mut Detector,
    events: &SyncSender<Event>,
    control: &Receiver<Control>,
    stats: &Stats,
    now: impl Fn() -> Instant,
) -> ! {
    loop {
        let mut msg = match queue.recv() {
            Ok(m) => m,
            Err(e) => {
                // ENOBUFS and friends: the kernel dropped something; keep serving.
                Stats::inc(&stats.recv_errors);
                if Stats::get(&stats.recv_errors).is_power_of_two() {
                    tracing::warn!(
                        "queue receive error (total {}): {e}",
                        Stats::get(&stats.recv_errors)
                    );
                }
                continue;
            }
        };
        Stats::inc(&stats.packets);
        while let Ok(c) = control.try_recv() {
            match c {
                Control::Reconfigure(cfg, ignore) => {
                    detector.reconfigure(cfg);
                    detector.set_ignore(ignore);
                }
                Control::Forget(addr) => detector.forget(addr),
            }
        }
        let verdict = match packet::parse(msg.get_payload()) {
            Ok(probe) => {
                Stats::inc(&stats.probes[crate::stats::kind_index(probe.kind)]);
                let at = now();
                let decision = detector.observe(&probe, at);
                hand_off(
                    Event {
                        probe,
                        decision,
                        at,
                    },
                    events,
                    detector,
                    stats,
                );
                decision.verdict()
            }
            Err(_) => {
                // Junk aimed at an unused port: nothing listens there, so dropping is safe.
                Stats::inc(&stats.unparsed);
                Verdict::Drop
            }
        };
        msg.set_verdict(match verdict {
            Verdict::Accept => nfq::Verdict::Accept,
            Verdict::Drop => nfq::Verdict::Drop,
        });
        if let Err(e) = queue.verdict(msg) {
            Stats::inc(&stats.verdict_errors);
            if Stats::get(&stats.verdict_errors).is_power_of_two() {
                tracing::warn!(
                    "queue verdict error (total {}): {e}",
                    Stats::get(&stats.verdict_errors)
                );
            }
        }
    }
}

fn hand_off(ev: Event, events: &SyncSender<Event>, detector: &mut Detector, stats: &Stats) {
    match ev.decision {
        Decision::Act { .. } => Stats::inc(&stats.acted),
        Decision::Repeat => Stats::inc(&stats.repeats),
        Decision::Pass => {
            Stats::inc(&stats.passed);
            return;
        }
        Decision::Discard | Decision::Count { .. } => return,
    }
    if let Err(TrySendError::Full(ev) | TrySendError::Disconnected(ev)) = events.try_send(ev) {
        Stats::inc(&stats.events_dropped);
        if matches!(ev.decision, Decision::Act { .. }) {
            // Nothing is lost: the source's next probe acts again.
            detector.retract(ev.probe.src);
        }
    }
}
