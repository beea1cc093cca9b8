//! The packet path: recv → parse → detector → verdict, plus a non-blocking hand-off of
//! decisions to the responder. One `recv` and one verdict `sendto` per packet; no
//! allocation, formatting or other syscall here.

use super::{stall, Control, Event, Fault, Handoff, QueueOptions};
use crate::core::detector::{Decision, Detector, Verdict};
use crate::core::packet;
use crate::core::stats::Stats;
use std::sync::mpsc::Receiver;
use std::time::Instant;

/// Events between two wake-ups of the responder under a flood.
const WAKE_EVERY: u32 = 256;

/// Opens and binds the queue. Binding fails if another process holds the queue. The flag
/// says whether the idle queue wakes the thread every IDLE_WAKE (its socket was found).
pub fn open(opts: &QueueOptions) -> Result<(nfq::Queue, bool), std::io::Error> {
    let before = open_fds();
    let mut q = nfq::Queue::open()?;
    // A burst must wait in the socket, not be dropped by the kernel when the default
    // ~200 KiB receive buffer fills (counted as user_dropped). nfq does not expose its fd;
    // the daemon is single-threaded here, so the one new fd is the queue's socket.
    let new: Vec<i32> = open_fds()
        .into_iter()
        .filter(|(_, inode)| !before.iter().any(|(_, b)| b == inode))
        .map(|(fd, _)| fd)
        .collect();
    let wakes = new.len() == 1;
    if let [fd] = new[..] {
        let size: libc::c_int = SOCKET_BUFFER;
        // SAFETY: setsockopt on a socket we own with an int option.
        unsafe {
            let p = (&size as *const libc::c_int).cast();
            let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            if libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, p, len) != 0 {
                libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, p, len);
            }
            let mut got: libc::c_int = 0;
            let mut glen = len;
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&mut got as *mut libc::c_int).cast(),
                &mut glen,
            );
            tracing::info!("queue socket (fd {fd}) receive buffer: {got} bytes");
            // An idle queue wakes the packet thread once a second, so it can show it is
            // alive (the watchdog) and take control messages.
            let tv = libc::timeval {
                tv_sec: IDLE_WAKE.as_secs() as libc::time_t,
                tv_usec: 0,
            };
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
    } else {
        tracing::warn!("could not identify the queue socket ({} new fds); its receive buffer stays at the default", new.len());
    }
    q.bind(opts.num)?;
    // bind() sets a 64 KiB copy range; headers are all we read.
    q.set_copy_range(opts.num, opts.copy_range)?;
    q.set_queue_max_len(opts.num, opts.max_len)?;
    q.set_fail_open(opts.num, opts.fail_open)?;
    q.set_nonblocking(false);
    Ok((q, wakes))
}

/// Receive buffer of the queue socket: room for tens of thousands of queued headers.
const SOCKET_BUFFER: libc::c_int = 64 << 20;
/// The longest the packet thread sleeps on an idle queue.
pub const IDLE_WAKE: std::time::Duration = std::time::Duration::from_secs(1);

/// (fd, socket inode) of this process's open sockets. Compared by inode, since fd numbers
/// are reused (the listing's own directory fd among them).
fn open_fds() -> Vec<(i32, String)> {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| {
                let e = e.ok()?;
                let fd: i32 = e.file_name().to_str()?.parse().ok()?;
                let target = std::fs::read_link(e.path()).ok()?;
                let target = target.to_str()?;
                target
                    .starts_with("socket:")
                    .then(|| (fd, target.to_string()))
            })
            .collect()
        })
        .unwrap_or_default()
}

/// Runs until the process exits. `now` is the clock seam.
pub fn run(
    queue: &mut nfq::Queue,
    detector: &mut Detector,
    handoff: &Handoff,
    control: &Receiver<Control>,
    stats: &Stats,
    now: impl Fn() -> Instant,
) -> ! {
    let mut unannounced = 0u32;
    let fault = Fault::from_env();
    loop {
        // With events the responder has not been woken for, ask without blocking whether the
        // kernel queue is empty, and wake it before we sleep. Otherwise just block: the
        // probe would be one more syscall per packet.
        let received = if unannounced > 0 {
            queue.set_nonblocking(true);
            let r = queue.recv();
            queue.set_nonblocking(false);
            match r {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // A full wake channel means a wake is already pending.
                    let _ = handoff.wake.try_send(());
                    unannounced = 0;
                    queue.recv()
                }
                r => r,
            }
        } else {
            queue.recv()
        };
        let mut msg = match received {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // Idle for IDLE_WAKE: alive, and the control messages may matter now.
                Stats::inc(&stats.queue_idle);
                apply(control, detector);
                if fault == Some(Fault::StallQueue) && Stats::get(&stats.packets) > 0 {
                    stall("packet");
                }
                continue;
            }
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
        apply(control, detector);
        if fault == Some(Fault::StallQueue) {
            stall("packet");
        }
        let verdict = match packet::parse(msg.get_payload()) {
            Ok(probe) => {
                Stats::inc(&stats.probes[crate::core::stats::kind_index(probe.kind)]);
                let at = now();
                let decision = detector.observe(&probe, at);
                let ev = Event {
                    probe,
                    decision,
                    at,
                };
                if hand_off(ev, &handoff.events, detector, stats) {
                    unannounced += 1;
                    if unannounced >= WAKE_EVERY {
                        let _ = handoff.wake.try_send(());
                        unannounced = 0;
                    }
                }
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

/// Applies the control messages waiting (state only matters when a packet arrives).
fn apply(control: &Receiver<Control>, detector: &mut Detector) {
    while let Ok(c) = control.try_recv() {
        match c {
            Control::Reconfigure(cfg, ignore) => {
                detector.reconfigure(cfg);
                detector.set_ignore(ignore);
            }
            Control::Forget(addr) => detector.forget(addr),
        }
    }
}

/// Passes an event on if the responder needs it; returns whether one was sent.
fn hand_off(
    ev: Event,
    events: &crossbeam_queue::ArrayQueue<Event>,
    detector: &mut Detector,
    stats: &Stats,
) -> bool {
    match ev.decision {
        Decision::Act { .. } => Stats::inc(&stats.acted),
        Decision::Repeat => Stats::inc(&stats.repeats),
        Decision::Pass => {
            Stats::inc(&stats.passed);
            return false;
        }
        Decision::Discard | Decision::Count { .. } => return false,
    }
    match events.push(ev) {
        Ok(()) => true,
        Err(_) => {
            Stats::inc(&stats.events_dropped);
            if matches!(ev.decision, Decision::Act { .. }) {
                // Nothing is lost: the source's next probe acts again.
                detector.retract(ev.probe.src);
            }
            false
        }
    }
}
