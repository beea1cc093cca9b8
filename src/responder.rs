//! Off the packet path: turns decisions into blocks (one batch for everything waiting),
//! alert lines (rate-limited, repeats summarised) and history/blocked file lines.

use crate::alert::{self, LocalTime};
use crate::detector::{Action, Decision};
use crate::firewall::{Block, Firewall};
use crate::queue::Event;
use crate::ratelimit::RateLimit;
use crate::stats::Stats;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub struct ResponderConfig {
    /// Shared with the daemon so a reload changes the timeout of later blocks.
    pub timeout: Arc<RwLock<Option<Duration>>>,
    pub history: Option<PathBuf>,
    pub blocked: Option<PathBuf>,
    pub lines_per_second: u32,
}

pub struct Responder<F: Firewall> {
    fw: F,
    timeout_setting: Arc<RwLock<Option<Duration>>>,
    timeout: Option<Duration>,
    history: Option<File>,
    blocked: Option<File>,
    limit: RateLimit,
    last_summary: Option<Instant>,
    stats: Arc<Stats>,
}

/// Upper bound on events handled in one round, so one flood round cannot grow memory.
const MAX_BATCH: usize = 100_000;

impl<F: Firewall> Responder<F> {
    pub fn new(fw: F, cfg: ResponderConfig, stats: Arc<Stats>) -> Self {
        let history = cfg.history.as_deref().and_then(|p| open_log(p, false));
        // BLOCKED_FILE lists this session's blocks only: start it empty.
        let blocked = cfg.blocked.as_deref().and_then(|p| open_log(p, true));
        let timeout = *cfg.timeout.read().unwrap_or_else(|e| e.into_inner());
        Responder {
            fw,
            timeout,
            timeout_setting: cfg.timeout,
            history,
            blocked,
            limit: RateLimit::new(cfg.lines_per_second),
            last_summary: None,
            stats,
        }
    }

    /// Blocks for the first event, then takes everything else already waiting: a lone
    /// scanner is blocked at once, a flood in large transactions.
    pub fn run(mut self, rx: Receiver<Event>) {
        let mut batch = Vec::with_capacity(1024);
        while let Ok(first) = rx.recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(ev) => batch.push(ev),
                    Err(_) => break,
                }
            }
            self.handle(&batch, Instant::now(), epoch_now());
            batch.clear();
        }
    }

    pub fn handle(&mut self, batch: &[Event], now: Instant, epoch: i64) {
        self.timeout = *self
            .timeout_setting
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let blocks: Vec<Block> = batch
            .iter()
            .filter(|e| {
                matches!(
                    e.decision,
                    Decision::Act {
                        action: Action::Block,
                        ..
                    }
                )
            })
            .map(|e| Block {
                addr: e.probe.src,
                timeout: self.timeout,
            })
            .collect();
        let mut failed: HashMap<IpAddr, std::io::Error> = HashMap::new();
        if !blocks.is_empty() {
            let report = self.fw.add_blocks(&blocks);
            self.stats
                .blocks_written
                .fetch_add(report.written as u64, std::sync::atomic::Ordering::Relaxed);
            self.stats.block_failures.fetch_add(
                report.failed.len() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            failed.extend(report.failed);
        }

        let mut repeats: HashMap<IpAddr, u32> = HashMap::new();
        let mut history = String::new();
        for ev in batch {
            let host = alert::host_field(ev.probe.src, None);
            match ev.decision {
                Decision::Act { action, .. } => {
                    self.line(now, alert::attack_line(&ev.probe, &host));
                    if ev.probe.ip_options {
                        self.line(now, alert::ip_options_line(&ev.probe, &host));
                    }
                    match action {
                        Action::Block => match failed.get(&ev.probe.src) {
                            None => {
                                self.line(now, self.blocked_line(ev.probe.src));
                                let t = LocalTime::from_epoch(epoch);
                                history.push_str(&alert::history_line(
                                    epoch,
                                    t,
                                    &host,
                                    ev.probe.dst_port,
                                    ev.probe.proto,
                                ));
                                history.push('\n');
                            }
                            Some(e) => tracing::error!(
                                "adminalert: ERROR: could not block host {}: {e}",
                                ev.probe.src
                            ),
                        },
                        Action::Off => {
                            self.line(now, alert::ignoring_response_line(ev.probe.proto))
                        }
                        Action::Command => {}
                    }
                }
                Decision::Repeat => *repeats.entry(ev.probe.src).or_default() += 1,
                _ => {}
            }
        }
        for (addr, _) in repeats {
            self.line(
                now,
                alert::already_blocked_line(&alert::host_field(addr, None)),
            );
        }
        if !history.is_empty() {
            for f in [&mut self.history, &mut self.blocked].into_iter().flatten() {
                if let Err(e) = f.write_all(history.as_bytes()) {
                    tracing::error!("adminalert: ERROR: cannot write history: {e}");
                }
            }
        }
        self.summarise(now);
    }

    fn blocked_line(&self, addr: IpAddr) -> String {
        let set = if addr.is_ipv4() {
            "blocked4"
        } else {
            "blocked6"
        };
        let t = match self.timeout {
            Some(t) => format!("{}s", t.as_secs()),
            None => "none".into(),
        };
        format!("attackalert: Host {addr} has been blocked via nftables set: \"inet portsentry {set}\" timeout: {t}")
    }

    fn line(&mut self, now: Instant, line: String) {
        if self.limit.allow(now) {
            tracing::warn!("{line}");
        }
    }

    fn summarise(&mut self, now: Instant) {
        if self
            .last_summary
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        let n = self.limit.take_suppressed();
        if n > 0 {
            tracing::warn!("attackalert: {n} alert lines suppressed by the rate limit; history file has every block");
            self.last_summary = Some(now);
        }
    }
}

fn open_log(path: &Path, truncate: bool) -> Option<File> {
    let mut o = OpenOptions::new();
    o.create(true);
    if truncate {
        o.write(true).truncate(true);
    } else {
        o.append(true);
    }
    match o.open(path) {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::error!(
                "adminalert: ERROR: cannot open {}: {e}; continuing without it",
                path.display()
            );
            None
        }
    }
}

fn epoch_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
