//! Off the blocking path: what the responder did, in PortSentry 1.2's words. Alert lines
//! (rate-limited, repeats summarised), history and blocked-file lines, and host names when
//! resolve_host is on. A thread of its own: a name lookup takes as long as the scanner's
//! DNS makes it, and a log can stall; neither may delay a block.

use super::names::{Names, LOOKUP_WAIT};
use crate::config::settings::Settings;
use crate::core::probe::Probe;
use crate::core::ratelimit::RateLimit;
use crate::core::repeats::{Repeats, Summary};
use crate::output::alert::{self, LocalTime};
use crate::system::files;
use ipnet::IpNet;
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// What became of a source that reached the trigger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Blocking is off for its protocol: reported only.
    Reported,
    /// Handed to the command (the actions thread says how that went).
    Command,
    /// In the block set as `key` (the address, or its IPv6 prefix), for the `count`-th time.
    Blocked {
        key: IpNet,
        timeout: Option<Duration>,
        count: u32,
    },
    /// Already inside a wider block.
    Covered(IpNet),
    /// The kernel refused the block.
    Failed(String),
    /// Not blocked: the caps on blocks were reached (the responder logs those).
    Refused,
    /// Not acted on: the source holds a live connection to this host, and the probe may
    /// have been forged in its name.
    Spared,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// `probe` reached the trigger at `at` (epoch seconds).
    Act {
        probe: Probe,
        outcome: Outcome,
        at: u64,
    },
    /// `n` more probes from a source already acted on; `blocked` if it is in the set.
    Repeats { addr: IpAddr, n: u32, blocked: bool },
}

/// The responder's end of the reporter's queue. It never waits, holds at most `cap`
/// reports (past that they are refused, for the caller to count), and allocates only as
/// reports come: nothing is held while idle.
#[derive(Clone)]
pub struct ReportSender {
    tx: Sender<Report>,
    pending: Arc<AtomicUsize>,
    cap: usize,
}

impl ReportSender {
    /// Queues `r`; false if the queue is full or the reporter gone.
    pub fn send(&self, r: Report) -> bool {
        if self.pending.fetch_add(1, Relaxed) >= self.cap || self.tx.send(r).is_err() {
            self.pending.fetch_sub(1, Relaxed);
            return false;
        }
        true
    }
}

pub struct ReportReceiver {
    rx: Receiver<Report>,
    pending: Arc<AtomicUsize>,
}

impl ReportReceiver {
    /// Waits up to `timeout` for a report, then takes those waiting, `max` in all.
    pub fn recv_batch(
        &self,
        timeout: Duration,
        max: usize,
        out: &mut Vec<Report>,
    ) -> Result<(), RecvTimeoutError> {
        out.push(self.rx.recv_timeout(timeout)?);
        out.extend(self.rx.try_iter().take(max.saturating_sub(1)));
        self.pending.fetch_sub(out.len(), Relaxed);
        Ok(())
    }
}

pub fn report_queue(cap: usize) -> (ReportSender, ReportReceiver) {
    let (tx, rx) = std::sync::mpsc::channel();
    let pending = Arc::new(AtomicUsize::new(0));
    (
        ReportSender {
            tx,
            pending: pending.clone(),
            cap,
        },
        ReportReceiver { rx, pending },
    )
}

/// Reports taken in one round, so one round's memory stays bounded.
const MAX_BATCH: usize = 4096;
/// How often an idle reporter writes the summaries that are due.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// A file of 1.2 lines (history, blocked) that follows logrotate: when the path no longer
/// names the file open (moved away, removed), or on request (SIGHUP), it is reopened.
struct LogFile {
    path: PathBuf,
    file: Option<File>,
    /// The last failure to open, logged once until it changes.
    failed: Option<String>,
}

impl LogFile {
    fn open(path: &Path, truncate: bool) -> LogFile {
        let mut f = LogFile {
            path: path.to_path_buf(),
            file: None,
            failed: None,
        };
        f.reopen(truncate);
        f
    }

    fn reopen(&mut self, truncate: bool) {
        self.file = match files::open_for_writing(&self.path, truncate, LOG_MODE) {
            Ok(f) => {
                self.failed = None;
                Some(f)
            }
            Err(e) => {
                let e = e.to_string();
                if self.failed.as_ref() != Some(&e) {
                    tracing::error!(
                        "adminalert: ERROR: cannot open {}: {e}; continuing without it (tried again every second)",
                        self.path.display()
                    );
                    self.failed = Some(e);
                }
                None
            }
        };
    }

    /// Reopens the file if it was rotated away (or `now` is asked for).
    fn follow(&mut self, now: bool) {
        let rotated = match &self.file {
            Some(f) => !files::same_file(f, &self.path),
            None => true,
        };
        if now || rotated {
            self.reopen(false);
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        if let Some(f) = &mut self.file {
            if let Err(e) = f.write_all(bytes) {
                tracing::error!(
                    "adminalert: ERROR: cannot write {}: {e}",
                    self.path.display()
                );
            }
        }
    }
}

/// History and blocked files: root's, readable by the group (fail2ban, logcheck).
const LOG_MODE: u32 = 0o640;

pub struct Reporter {
    settings: Arc<RwLock<Settings>>,
    names: Names,
    history: Option<LogFile>,
    blocked: Option<LogFile>,
    /// Set by a reload (SIGHUP): reopen the files now.
    reopen: Arc<AtomicBool>,
    last_follow: Option<Instant>,
    limit: RateLimit,
    last_summary: Option<Instant>,
    repeats: Repeats,
    summaries: Vec<Summary>,
}

impl Reporter {
    pub fn new(
        settings: Arc<RwLock<Settings>>,
        history: Option<&Path>,
        blocked: Option<&Path>,
        lines_per_second: u32,
    ) -> Self {
        Reporter {
            settings,
            names: Names::system(),
            history: history.map(|p| LogFile::open(p, false)),
            // BLOCKED_FILE lists this session's blocks only: start it empty.
            blocked: blocked.map(|p| LogFile::open(p, true)),
            reopen: Arc::new(AtomicBool::new(false)),
            last_follow: None,
            limit: RateLimit::new(lines_per_second),
            last_summary: None,
            repeats: Repeats::default(),
            summaries: Vec::new(),
        }
    }

    /// What a reload sets to have the files reopened.
    pub fn reopen_flag(&self) -> Arc<AtomicBool> {
        self.reopen.clone()
    }

    /// Reports whatever is waiting, in rounds; idle, writes the summaries that are due.
    /// Once a second, follows the files if they were rotated.
    pub fn run(mut self, reports: ReportReceiver) {
        let mut batch = Vec::with_capacity(256);
        loop {
            match reports.recv_batch(IDLE_TICK, MAX_BATCH, &mut batch) {
                Ok(()) => {
                    self.follow(Instant::now());
                    self.handle(&batch, Instant::now());
                    batch.clear();
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.follow(Instant::now());
                    self.summarise(Instant::now());
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn follow(&mut self, now: Instant) {
        let asked = self.reopen.swap(false, Relaxed);
        if !asked
            && self
                .last_follow
                .is_some_and(|t| now.saturating_duration_since(t) < IDLE_TICK)
        {
            return;
        }
        self.last_follow = Some(now);
        for f in [&mut self.history, &mut self.blocked].into_iter().flatten() {
            f.follow(asked);
        }
    }

    fn settings(&self) -> Settings {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Looks names up with `names` instead of the system's resolver.
    pub fn with_names(mut self, names: Names) -> Self {
        self.names = names;
        self
    }

    /// The names of this batch's sources known within LOOKUP_WAIT: the lines are never
    /// held longer than that for a name, nor dropped for one.
    fn names_for(&self, batch: &[Report], settings: &Settings) -> HashMap<IpAddr, String> {
        if !settings.resolve_host {
            return HashMap::new();
        }
        let mut addrs: Vec<IpAddr> = batch
            .iter()
            .map(|r| match r {
                Report::Act { probe, .. } => probe.src,
                Report::Repeats { addr, .. } => *addr,
            })
            .collect();
        addrs.sort_unstable();
        addrs.dedup();
        self.names.resolve(&addrs, Instant::now() + LOOKUP_WAIT)
    }

    pub fn handle(&mut self, batch: &[Report], now: Instant) {
        let settings = self.settings();
        let names = self.names_for(batch, &settings);
        let host_of = |addr: IpAddr| alert::host_field(addr, names.get(&addr).map(String::as_str));
        let mut history = String::new();
        let mut local_time: Option<(u64, LocalTime)> = None;
        let mut repeats: HashMap<IpAddr, (u32, bool)> = HashMap::new();
        for report in batch {
            let (p, outcome, at) = match report {
                Report::Act { probe, outcome, at } => (probe, outcome, *at),
                Report::Repeats { addr, n, blocked } => {
                    let r = repeats.entry(*addr).or_default();
                    *r = (r.0.saturating_add(*n), *blocked);
                    continue;
                }
            };
            let host = || host_of(p.src);
            self.line(now, || alert::attack_line(p, &host()));
            if p.ip_options {
                self.line(now, || alert::ip_options_line(p, &host()));
            }
            // 1.2 wrote the history (and blocked-file) line for every source it acted on,
            // whatever BLOCK_TCP/BLOCK_UDP said: fail2ban jails read it in log-only setups.
            let acted = match outcome {
                Outcome::Reported => {
                    self.line(now, || alert::ignoring_response_line(p.proto));
                    true
                }
                Outcome::Command => true,
                Outcome::Refused => false,
                Outcome::Spared => {
                    self.line(now, || alert::spared_line(&host()));
                    false
                }
                Outcome::Covered(_) => {
                    self.line(now, || alert::already_blocked_line(&host()));
                    false
                }
                Outcome::Failed(e) => {
                    tracing::error!(
                        "adminalert: ERROR: could not block host {}: {e}; will try again",
                        p.src
                    );
                    false
                }
                Outcome::Blocked {
                    key,
                    timeout,
                    count,
                } => {
                    self.line(now, || blocked_line(p.src, *key, *timeout, *count));
                    true
                }
            };
            if acted {
                // Reports mostly come a second at a time: convert each second once.
                let t = match local_time {
                    Some((s, t)) if s == at => t,
                    _ => {
                        let t = LocalTime::from_epoch(at as i64);
                        local_time = Some((at, t));
                        t
                    }
                };
                history.push_str(&alert::history_line(
                    at as i64,
                    t,
                    &host(),
                    p.dst_port,
                    p.proto,
                ));
                history.push('\n');
            }
        }
        // Repeats: 1.2's line for a source's first, then only counts (see repeats.rs).
        for (addr, (n, blocked)) in repeats {
            if self.repeats.record(addr, u64::from(n), now) {
                let host = host_of(addr);
                if blocked {
                    self.line(now, || alert::already_blocked_line(&host));
                } else {
                    self.line(now, || alert::already_reported_line(&host));
                }
            }
        }
        if !history.is_empty() {
            // One stat per batch: a line is never written to a file logrotate moved away.
            for f in [&mut self.history, &mut self.blocked].into_iter().flatten() {
                f.follow(false);
                f.write(history.as_bytes());
            }
        }
        self.summarise(now);
    }

    /// Writes a line if the rate limit allows; the line is only formatted then.
    fn line(&mut self, now: Instant, line: impl FnOnce() -> String) {
        if self.limit.allow(now) {
            tracing::warn!("{}", line());
        }
    }

    pub fn summarise(&mut self, now: Instant) {
        if self
            .last_summary
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.last_summary = Some(now);
        let mut due = std::mem::take(&mut self.summaries);
        self.repeats.due(now, &mut due);
        let resolve = !due.is_empty() && self.settings().resolve_host;
        for s in due.drain(..) {
            let line = match s {
                Summary::Host { addr, count, secs } => {
                    // Cached names only: a summary never waits for DNS.
                    let names = if resolve {
                        self.names.resolve(&[addr], now)
                    } else {
                        HashMap::new()
                    };
                    let host = alert::host_field(addr, names.get(&addr).map(String::as_str));
                    alert::repeats_line(&host, count, secs)
                }
                Summary::Others { count } => alert::other_repeats_line(count),
            };
            self.line(now, || line);
        }
        self.summaries = due;
        let n = self.limit.take_suppressed();
        if n > 0 {
            tracing::warn!("attackalert: {n} alert lines suppressed by the rate limit; the history file has every block");
        }
    }
}

fn blocked_line(addr: IpAddr, key: IpNet, timeout: Option<Duration>, count: u32) -> String {
    let set = if key.addr().is_ipv4() {
        "blocked4"
    } else {
        "blocked6"
    };
    let t = timeout.map_or("permanent".to_string(), |t| format!("{}s", t.as_secs()));
    let net = if key.prefix_len() < key.max_prefix_len() {
        format!(" ({key})")
    } else {
        String::new()
    };
    let again = if count > 1 {
        format!(" (block number {count})")
    } else {
        String::new()
    };
    format!("attackalert: Host {addr} has been blocked via nftables set: \"inet portsentry {set}\"{net} timeout: {t}{again}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repeats(n: u32) -> Report {
        Report::Repeats {
            addr: IpAddr::from([198, 18, 0, 1]),
            n,
            blocked: true,
        }
    }

    #[test]
    fn the_queue_holds_at_most_its_cap_and_frees_room_as_it_is_read() {
        let (tx, rx) = report_queue(3);
        assert!((1..=3).all(|n| tx.send(repeats(n))));
        assert!(!tx.send(repeats(4)), "a full queue refuses");
        let mut got = Vec::new();
        rx.recv_batch(Duration::ZERO, 2, &mut got).unwrap();
        assert_eq!(got, [repeats(1), repeats(2)]);
        assert!(tx.send(repeats(5)) && tx.send(repeats(6)));
        assert!(!tx.send(repeats(7)));
        got.clear();
        rx.recv_batch(Duration::ZERO, 10, &mut got).unwrap();
        assert_eq!(got, [repeats(3), repeats(5), repeats(6)]);
        drop(rx);
        assert!(
            !tx.send(repeats(8)),
            "no reporter: refused, not queued forever"
        );
    }
}
