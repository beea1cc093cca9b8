//! The packet path: drain → parse → detector → batch verdict, plus a non-blocking hand-off
//! of decisions to the responder. Up to `BATCH` packets per receive (one or two system
//! calls), one verdict message per run of drops; repeats from sources already acted on are
//! counted here and handed on as one summary per source a tick. No allocation or
//! formatting per packet.

use super::nfqueue::{Binding, QueueSocket, Verdict as QueueVerdict, BATCH};
use super::shards::{Shard, Shards};
use super::{stall, Event, Fault, Handoff, QueueOptions, Served};
use crate::core::detector::{Decision, Verdict};
use crate::core::packet;
use crate::core::probe::{Probe, ScanKind, CLIENT_NET_MARK, LIVE_CLIENT_MARK};
use crate::core::stats::{kind_index, Stats};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

/// Events between two wake-ups of the responder under a flood.
const WAKE_EVERY: u32 = 256;
/// Receive buffer of the queue socket: room for tens of thousands of queued headers.
const SOCKET_BUFFER: usize = 64 << 20;
/// The longest the packet thread sleeps on an idle queue.
pub const IDLE_WAKE: Duration = Duration::from_secs(1);
/// How often the repeats counted here are handed on.
const REPEAT_TICK: Duration = Duration::from_millis(100);
/// Act and Spare events a packet thread holds while the hand-off is full, handed on first
/// thing every batch (and every millisecond while any wait): a scanner that sends one
/// probe inside a flood is not forgotten. Past it the newest is dropped and its source
/// retracted (its next probe acts again). About 100 bytes each.
const OVERFLOW: usize = 16_384;
/// How often a thread holding deferred events looks again with no packet to read.
const OVERFLOW_POLL: Duration = Duration::from_millis(1);
/// Sources whose repeats are counted here at once; past that they are handed on one by
/// one (bounded memory under a flood of sources).
const REPEAT_SOURCES: usize = 4096;

/// Opens and binds the queue. Binding fails if another process holds the queue.
pub fn open(opts: &QueueOptions) -> std::io::Result<QueueSocket> {
    let q = QueueSocket::open(&Binding {
        num: opts.num,
        copy_range: opts.copy_range,
        max_len: opts.max_len,
        fail_open: opts.fail_open,
        idle_wake: IDLE_WAKE,
        socket_buffer: SOCKET_BUFFER,
    })?;
    tracing::info!(
        "queue {} bound; socket receive buffer {} bytes",
        opts.num,
        q.receive_buffer()
    );
    Ok(q)
}

/// Repeats from sources already acted on, counted where they are decided: a flood of
/// them costs a hash update per probe, not a hand-off.
struct Tally {
    by_src: HashMap<IpAddr, (Probe, u32), ahash::RandomState>,
    since: Option<Instant>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            by_src: HashMap::with_hasher(ahash::RandomState::new()),
            since: None,
        }
    }

    /// Counts `probe`; false if the tally is full (hand it on by itself).
    fn add(&mut self, probe: &Probe, now: Instant) -> bool {
        if let Some(e) = self.by_src.get_mut(&probe.src) {
            e.1 = e.1.saturating_add(1);
            return true;
        }
        if self.by_src.len() >= REPEAT_SOURCES {
            return false;
        }
        self.by_src.insert(probe.src, (*probe, 1));
        self.since.get_or_insert(now);
        true
    }

    /// Hands the counts on if a tick has passed (or `force`); how many were handed on.
    fn flush(&mut self, now: Instant, force: bool, handoff: &Handoff, stats: &Stats) -> u32 {
        let due = self
            .since
            .is_some_and(|t| force || now.saturating_duration_since(t) >= REPEAT_TICK);
        if !due {
            return 0;
        }
        self.since = None;
        let mut sent = 0;
        for (_, (probe, count)) in self.by_src.drain() {
            let ev = Event {
                probe,
                decision: Decision::Repeat,
                at: now,
                count,
            };
            if handoff.events.push(ev).is_ok() {
                sent += 1;
            } else {
                Stats::inc(&stats.events_dropped);
            }
        }
        sent
    }
}

/// Runs until the process exits. `now` is the clock seam, read once per batch. Each probe
/// is counted in the shard of its source (`shards`), whichever thread reads it.
///
/// `coalesce`: a thread woken for every few packets spends more on the wake-ups than on the
/// packets (10 µs a wake-up measured here, against 1–2 µs a packet). So once probes flow
/// (a read found some, but not a full batch), it pauses `coalesce` and reads what gathered
/// meanwhile without waiting; only when that finds nothing does it wait for the next
/// packet again. A lone probe is read at once; under a flood a probe waits at most
/// `coalesce` more, and its verdict goes as soon as it is read.
// Each argument comes from a different owner (queue, shards, responder, stats, config, host).
#[allow(clippy::too_many_arguments)]
pub fn run(
    queue: &mut QueueSocket,
    shards: &Shards,
    handoff: &Handoff,
    stats: &Stats,
    shard: usize,
    coalesce: Duration,
    served: &mut dyn Served,
    now: impl Fn() -> Instant,
) -> ! {
    let mut t = PacketThread {
        shards,
        handoff,
        stats,
        shard,
        served,
        unannounced: 0,
        verdicts: Vec::with_capacity(BATCH),
        tally: Tally::new(),
        overflow: VecDeque::new(),
        fault: Fault::from_env(),
    };
    if !coalesce.is_zero() {
        tighten_timer_slack();
    }
    let mut flowing = false;
    loop {
        if !t.overflow.is_empty() {
            t.unannounced += drain(&mut t.overflow, handoff);
            if t.unannounced > 0 {
                let _ = handoff.wake.try_send(());
                t.unannounced = 0;
            }
        }
        // Deferred events are looked at again soon even when no packet comes.
        let polling = flowing || !t.overflow.is_empty();
        if polling {
            std::thread::sleep(if flowing { coalesce } else { OVERFLOW_POLL });
        }
        let n = match queue.receive(!polling) {
            Ok(n) => n,
            Err(e) if polling && e.kind() == std::io::ErrorKind::WouldBlock => {
                // Nothing gathered: the flow stopped; wait for the next packet.
                flowing = false;
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                t.idle(now());
                continue;
            }
            Err(e) => {
                // ENOBUFS and friends: the kernel dropped something; keep serving.
                count_error(&stats.recv_errors, "queue receive error", &e);
                continue;
            }
        };
        flowing = !coalesce.is_zero() && n < BATCH;
        stats.round(shard);
        if t.fault == Some(Fault::StallQueue) {
            stall("packet");
        }
        let at = now();
        t.batch(queue, n, at);
        t.unannounced += t.tally.flush(at, false, handoff, stats);
        // A short batch means the queue ran empty: a lone scanner is blocked now. A full
        // one means a flood: wake the responder every WAKE_EVERY events, for large
        // transactions.
        if t.unannounced > 0 && (n < BATCH || t.unannounced >= WAKE_EVERY) {
            // A full wake channel means a wake is already pending.
            let _ = handoff.wake.try_send(());
            t.unannounced = 0;
        }
    }
}

/// The default timer slack (50 µs) would stretch each coalescing pause by half.
fn tighten_timer_slack() {
    #[allow(unsafe_code)] // no safe wrapper for prctl
    // SAFETY: prctl(PR_SET_TIMERSLACK) takes an integer (ns) and touches no memory of
    // ours; it changes this thread only.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1_000 as libc::c_ulong)
    };
}

/// Counts an error of the queue socket; logs it at the 1st, 2nd, 4th, 8th… time.
#[cold]
fn count_error(counter: &std::sync::atomic::AtomicU64, what: &str, e: &std::io::Error) {
    Stats::inc(counter);
    if Stats::get(counter).is_power_of_two() {
        tracing::warn!("{what} (total {}): {e}", Stats::get(counter));
    }
}

/// A packet thread's state between batches, and what it shares.
struct PacketThread<'a> {
    shards: &'a Shards,
    handoff: &'a Handoff,
    stats: &'a Stats,
    shard: usize,
    served: &'a mut dyn Served,
    /// Events handed on since the responder was last woken.
    unannounced: u32,
    verdicts: Vec<(u32, QueueVerdict)>,
    tally: Tally,
    overflow: VecDeque<Event>,
    fault: Option<Fault>,
}

impl PacketThread<'_> {
    /// Idle for IDLE_WAKE: alive, and the control messages may matter now.
    fn idle(&mut self, now: Instant) {
        Stats::inc(&self.stats.queue_idle);
        self.stats.round(self.shard);
        // This thread's own shard takes its control messages even with no probe for it.
        drop(self.shards.lock(self.shard % self.shards.len().max(1)));
        if self.tally.flush(now, true, self.handoff, self.stats) > 0 {
            let _ = self.handoff.wake.try_send(());
        }
        if self.fault == Some(Fault::StallQueue) && Stats::get(&self.stats.packets) > 0 {
            stall("packet");
        }
    }

    /// Decides the `n` packets received, answers them in one verdict message, and adds
    /// the batch's counts.
    fn batch(&mut self, queue: &mut QueueSocket, n: usize, at: Instant) {
        let shards = self.shards;
        let mut counts = Counts::default();
        self.verdicts.clear();
        // The shard last counted in, held while the probes that follow belong to it too
        // (a flood from one source takes its lock once a batch).
        let mut held: Option<(usize, MutexGuard<'_, Shard>)> = None;
        for p in queue.packets(n) {
            counts.packets += 1;
            let verdict = match packet::parse(p.payload) {
                Ok(probe)
                    if matches!(
                        probe.kind,
                        ScanKind::SctpInit | ScanKind::SctpCookieEcho | ScanKind::IpProtocol
                    ) && self.served.serves(&probe) =>
                {
                    counts.passed += 1;
                    Verdict::Accept
                }
                Ok(mut probe) => {
                    probe.live_client = p.mark & LIVE_CLIENT_MARK != 0;
                    probe.client_net = p.mark & CLIENT_NET_MARK != 0;
                    counts.probes[kind_index(probe.kind)] += 1;
                    let i = shards.index(probe.src);
                    if held.as_ref().is_some_and(|(h, _)| *h != i) {
                        held = None; // one lock at a time
                    }
                    let detector = &mut held
                        .get_or_insert_with(|| shards.lock_for(probe.src, i))
                        .1
                        .detector;
                    self.decide(&probe, detector, at, &mut counts)
                }
                Err(_) => {
                    // Junk aimed at an unused port: nothing listens there, so dropping
                    // is safe.
                    counts.unparsed += 1;
                    Verdict::Drop
                }
            };
            self.verdicts.push((
                p.id,
                match verdict {
                    Verdict::Accept => QueueVerdict::Accept,
                    Verdict::Drop => QueueVerdict::Drop,
                },
            ));
        }
        drop(held);
        if let Err(e) = queue.answer(&self.verdicts) {
            count_error(&self.stats.verdict_errors, "queue verdict error", &e);
        }
        counts.add_to(self.stats);
    }

    /// The detector's decision on one probe, counted, and handed on when it is an act, a
    /// spare, or a repeat the tally has no room for.
    #[inline]
    fn decide(
        &mut self,
        probe: &Probe,
        detector: &mut crate::core::detector::Detector,
        at: Instant,
        counts: &mut Counts,
    ) -> Verdict {
        let decision = detector.observe(probe, at);
        let hand = match decision {
            Decision::Repeat => {
                counts.repeats += 1;
                !self.tally.add(probe, at)
            }
            Decision::Act { .. } | Decision::Spare { .. } => {
                counts.acted += 1;
                true
            }
            Decision::Pass => {
                counts.passed += 1;
                false
            }
            Decision::Discard | Decision::Count { .. } => false,
        };
        if hand {
            let ev = Event {
                probe: *probe,
                decision,
                at,
                count: 1,
            };
            self.unannounced += u32::from(hand_off(
                ev,
                self.handoff,
                &mut self.overflow,
                detector,
                self.stats,
            ));
        }
        decision.verdict()
    }
}

/// A batch's counts, added to the shared counters once per batch.
#[derive(Default)]
struct Counts {
    packets: u64,
    probes: [u64; crate::core::stats::KINDS.len()],
    acted: u64,
    repeats: u64,
    passed: u64,
    unparsed: u64,
}

impl Counts {
    fn add_to(&self, stats: &Stats) {
        use std::sync::atomic::Ordering::Relaxed;
        let add = |c: &std::sync::atomic::AtomicU64, v: u64| {
            if v > 0 {
                c.fetch_add(v, Relaxed);
            }
        };
        add(&stats.packets, self.packets);
        for (c, v) in stats.probes.iter().zip(self.probes) {
            add(c, v);
        }
        add(&stats.acted, self.acted);
        add(&stats.repeats, self.repeats);
        add(&stats.passed, self.passed);
        add(&stats.unparsed, self.unparsed);
    }
}

/// Passes an event on; whether it was taken. An Act or Spare the full hand-off cannot
/// take waits in `overflow` (behind any already there, so they keep their order).
#[inline]
fn hand_off(
    ev: Event,
    handoff: &Handoff,
    overflow: &mut VecDeque<Event>,
    detector: &mut crate::core::detector::Detector,
    stats: &Stats,
) -> bool {
    let act = matches!(ev.decision, Decision::Act { .. } | Decision::Spare { .. });
    if act && !overflow.is_empty() {
        return defer(ev, overflow, detector, stats);
    }
    match handoff.events.push(ev) {
        Ok(()) => true,
        Err(ev) if act => defer(ev, overflow, detector, stats),
        Err(_) => {
            Stats::inc(&stats.events_dropped);
            false
        }
    }
}

/// Keeps an Act the hand-off could not take, if there is room; else drops it and lets
/// the source's next probe act again.
fn defer(
    ev: Event,
    overflow: &mut VecDeque<Event>,
    detector: &mut crate::core::detector::Detector,
    stats: &Stats,
) -> bool {
    if overflow.len() < OVERFLOW {
        overflow.push_back(ev);
        Stats::inc(&stats.events_deferred);
    } else {
        Stats::inc(&stats.events_dropped);
        detector.retract(&ev.probe);
    }
    false
}

/// Hands on deferred events, oldest first, while the hand-off takes them; how many.
fn drain(overflow: &mut VecDeque<Event>, handoff: &Handoff) -> u32 {
    let mut sent = 0;
    while let Some(ev) = overflow.pop_front() {
        if let Err(ev) = handoff.events.push(ev) {
            overflow.push_front(ev);
            break;
        }
        sent += 1;
    }
    if overflow.is_empty() && overflow.capacity() > 1024 {
        // The flood is over: give its memory back.
        *overflow = VecDeque::new();
    }
    sent
}
