//! The data plane: the queue socket and the packet loop (queue → parse → detector →
//! verdict), and the messages it exchanges with the rest of the daemon: events out to the
//! responder, control in from upkeep and the control server.
//!
//! May use: `core`, `system` (socket options).

pub mod nfqueue;
pub mod queue;
pub mod shards;

use crate::core::detector::{Decision, DetectorConfig};
use crate::core::ignore::IgnoreList;
use crate::core::probe::Probe;
use ipnet::IpNet;
use std::sync::mpsc::{Sender, SyncSender};

/// Whether something on this host serves what a probe was aimed at, for what the kernel's
/// `socket` lookup cannot see (SCTP endpoints, raw sockets and tunnels of other IP
/// protocols): such a packet is a client's, and passes. The daemon answers from `system`;
/// it is asked only about SCTP INIT / COOKIE-ECHO and other-protocol probes.
pub trait Served: Send {
    fn serves(&mut self, probe: &Probe) -> bool;
}

/// What the packet path tells the responder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub probe: Probe,
    pub decision: Decision,
    /// When the packet was read: time to block is measured from here.
    pub at: std::time::Instant,
    /// How many probes this event stands for: repeats are counted where they are decided
    /// and handed on as one event per source a tick.
    pub count: u32,
}

/// Events waiting for the responder: a lock-free bounded queue, so the packet path makes
/// no syscall to hand one over. The responder is woken through `wake` only when the kernel
/// queue runs empty (a lone scanner: block it now) or every `WAKE_EVERY` events (a flood:
/// large transactions).
pub struct Handoff {
    pub events: crossbeam_queue::ArrayQueue<Event>,
    pub wake: SyncSender<()>,
}

/// Changes for the packet thread, applied before the next packet (state only matters when
/// a packet arrives, so nothing waits on them).
#[derive(Clone, Debug)]
pub enum Control {
    Reconfigure(DetectorConfig, IgnoreList),
    /// This network is not blocked (unblocked, or the block could not be made): the next
    /// probe from it is looked at afresh.
    Forget(IpNet),
}

#[derive(Clone, Copy, Debug)]
pub struct QueueOptions {
    pub num: u16,
    pub max_len: u32,
    pub fail_open: bool,
    /// Bytes of each packet copied to us: headers only.
    pub copy_range: u16,
    /// While probes flow, the pause between two reads (see `queue::run`).
    pub coalesce: std::time::Duration,
}

/// A fault the tests can switch on (environment `PORTSENTRY_FAULT`, read once per thread)
/// to prove that a stalled or dead thread is noticed: the watchdog, the panic handler and
/// systemd's restart. Unset in production, where nothing here runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The packet thread stops after its first packet.
    StallQueue,
    /// The block writer stops after its first round with work.
    StallResponder,
    /// The block writer panics after its first round with work.
    PanicResponder,
    /// The hand-off to the block writer holds 64 events: a bounded test flood fills it.
    SmallHandoff,
}

impl Fault {
    pub fn from_env() -> Option<Fault> {
        match std::env::var("PORTSENTRY_FAULT").ok()?.as_str() {
            "stall-queue" => Some(Fault::StallQueue),
            "stall-responder" => Some(Fault::StallResponder),
            "panic-responder" => Some(Fault::PanicResponder),
            "small-handoff" => Some(Fault::SmallHandoff),
            _ => None,
        }
    }
}

/// The test fault: this thread stops for good.
pub fn stall(thread: &str) -> ! {
    tracing::warn!("PORTSENTRY_FAULT: the {thread} thread stops here (test fault)");
    loop {
        std::thread::park();
    }
}

/// The control channels of the detector's shards, one per queue: a message goes to every
/// one (a source is counted in one shard, but which one only a hash says).
#[derive(Clone, Debug, Default)]
pub struct Controls(Vec<Sender<Control>>);

impl Controls {
    pub fn new(senders: Vec<Sender<Control>>) -> Controls {
        Controls(senders)
    }

    /// Sends `c` to every packet thread; an error if one of them is gone.
    pub fn send(&self, c: Control) -> Result<(), Gone> {
        let mut result = Ok(());
        for tx in &self.0 {
            if tx.send(c.clone()).is_err() {
                result = Err(Gone);
            }
        }
        result
    }
}

/// A packet thread no longer takes control messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

impl From<Sender<Control>> for Controls {
    fn from(tx: Sender<Control>) -> Controls {
        Controls(vec![tx])
    }
}
