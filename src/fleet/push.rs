//! The push thread: this host's blocks to the LAPI as alerts, in batches, logged in as a
//! machine (again when the token is refused: it expires, and every LAPI restart voids it).
//! While the LAPI cannot be reached the alerts wait in the spool, on disk, and go later
//! with their original times.

use super::lapi::Lapi;
use super::spool::Spool;
use super::wire::{alert, epoch, pending};
use super::{answered, failed, FleetError, LocalBlock};
use crate::config::settings::{FleetSettings, Settings};
use crate::core::stats::Stats;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// Alerts per call at most.
const BATCH: usize = 100;
/// How long a first block waits for others to share its call.
const GATHER: Duration = Duration::from_millis(100);
/// Longest wait between two tries while the LAPI is away.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A token is used this long at most (the LAPI's last an hour), then renewed.
const TOKEN_LIFE: Duration = Duration::from_secs(50 * 60);
/// Tries of one batch the LAPI answers with a server error before it is given up (a batch
/// it can never take must not hold up the others for ever).
const MAX_STRIKES: u32 = 10;

pub struct Pusher {
    settings: Arc<RwLock<Settings>>,
    stats: Arc<Stats>,
    spool: Spool,
    client: Option<(String, Option<Vec<u8>>, Lapi)>,
    /// The bearer token, when it was given, and for which login and password.
    token: Option<(String, Instant, (String, String))>,
    backoff: Duration,
    next_try: Instant,
    strikes: u32,
    /// The LAPI was reachable at the last call (for saying when that changes, once).
    up: bool,
}

impl Pusher {
    /// The push thread's state, with the alerts an earlier run left in `spool`.
    pub fn new(
        settings: Arc<RwLock<Settings>>,
        spool: std::path::PathBuf,
        stats: Arc<Stats>,
    ) -> Pusher {
        let (spool, err) = Spool::open(spool, now());
        if let Some(e) = err {
            tracing::error!("adminalert: ERROR: CrowdSec alert spool: {e}");
        }
        if !spool.is_empty() {
            tracing::warn!(
                "adminalert: {} alerts for the CrowdSec LAPI waiting from an earlier run ({})",
                spool.len(),
                spool.path().display()
            );
        }
        Stats::set(&stats.fleet.alerts_waiting, spool.len() as u64);
        Pusher {
            settings,
            stats,
            spool,
            client: None,
            token: None,
            backoff: Duration::ZERO,
            next_try: Instant::now(),
            strikes: 0,
            up: true,
        }
    }

    /// Takes blocks from the responder until it is gone, sending them as they come.
    pub fn run(mut self, rx: Receiver<LocalBlock>) {
        // Log in at once: bad credentials or an unreachable LAPI are said at start, not at
        // the first scan (and what an earlier run spooled goes now).
        self.send();
        loop {
            let wait = if self.spool.is_empty() {
                Duration::from_secs(1)
            } else {
                self.next_try.saturating_duration_since(Instant::now())
            };
            match rx.recv_timeout(wait) {
                Ok(b) => {
                    self.take(&b);
                    // A moment for the rest of a burst, so it goes in one call.
                    let until = Instant::now() + GATHER;
                    while let Some(left) = until.checked_duration_since(Instant::now()) {
                        match rx.recv_timeout(left) {
                            Ok(b) => self.take(&b),
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.save();
                    return;
                }
            }
            while let Ok(b) = rx.try_recv() {
                self.take(&b);
            }
            // Before the call: a LAPI that hangs holds the call, not the count.
            Stats::set(&self.stats.fleet.alerts_waiting, self.spool.len() as u64);
            if !self.spool.is_empty() && Instant::now() >= self.next_try {
                self.send();
            }
            Stats::set(&self.stats.fleet.alerts_waiting, self.spool.len() as u64);
        }
    }

    /// A block from the responder, into the spool.
    fn take(&mut self, b: &LocalBlock) {
        self.stats.fleet.alerts_queued.fetch_sub(1, Relaxed);
        self.spool.push(pending(b), now());
    }

    /// Sends what waits, a batch at a time, until it is all sent or a call fails.
    pub fn send(&mut self) {
        // Taken out of [crowdsec] by a reload: the alerts wait (and stay on disk).
        let fleet = self
            .settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .fleet
            .clone();
        let Some((s, (login, password))) =
            fleet.and_then(|s| s.secrets.machine.clone().map(|m| (s, m)))
        else {
            // Look again in a while, not in a loop.
            self.next_try = Instant::now() + MAX_BACKOFF;
            self.save();
            return;
        };
        if self.spool.is_empty() && self.token.is_none() {
            self.hello(&s, &login, &password);
        }
        while !self.spool.is_empty() {
            let batch = self.spool.batch(BATCH, now());
            if batch.is_empty() {
                break;
            }
            let alerts: Vec<_> = batch.iter().map(|p| alert(p, &login)).collect();
            match self.call(&s, &login, &password, &alerts) {
                Ok(()) => {
                    self.spool.sent(batch.len());
                    self.stats
                        .fleet
                        .alerts_pushed
                        .fetch_add(batch.len() as u64, Relaxed);
                    self.backoff = Duration::ZERO;
                    self.strikes = 0;
                    if !self.up {
                        self.up = true;
                        tracing::warn!(
                            "adminalert: CrowdSec LAPI {} takes alerts again; sending the {} that waited",
                            s.lapi_url,
                            self.spool.len() + batch.len()
                        );
                    }
                }
                Err(e) => {
                    Stats::inc(&self.stats.fleet.push_failures);
                    failed(&self.stats, &e);
                    self.give_up_if_hopeless(&e, batch.len());
                    if self.up {
                        self.up = false;
                        tracing::error!(
                            "adminalert: ERROR: CrowdSec LAPI {}: cannot push alerts: {e}; {} alerts kept in {} until it answers (blocking goes on)",
                            s.lapi_url,
                            self.spool.len(),
                            self.spool.path().display()
                        );
                    }
                    self.backoff = (self.backoff * 2).clamp(Duration::from_secs(1), MAX_BACKOFF);
                    self.next_try = Instant::now() + self.backoff;
                    break;
                }
            }
        }
        self.save();
        self.discarded();
    }

    /// A login alone, to know the LAPI takes us.
    fn hello(&mut self, s: &FleetSettings, login: &str, password: &str) {
        let result = self.client(s).and_then(|lapi| lapi.login(login, password));
        match result {
            Ok(t) => {
                answered(&self.stats);
                self.token = Some((t, Instant::now(), (login.into(), password.into())));
            }
            Err(e) => {
                Stats::inc(&self.stats.fleet.push_failures);
                failed(&self.stats, &e);
                self.up = false;
                tracing::error!(
                    "adminalert: ERROR: CrowdSec LAPI {}: cannot log in as machine {login}: {e}; alerts will wait on disk until it can",
                    s.lapi_url
                );
            }
        }
    }

    /// The client for the configured LAPI (made anew when its address or CA changes).
    fn client(&mut self, s: &FleetSettings) -> Result<&Lapi, FleetError> {
        let fresh = self
            .client
            .as_ref()
            .is_some_and(|(url, ca, _)| *url == s.lapi_url && *ca == s.secrets.ca_pem);
        if !fresh {
            let lapi = Lapi::new(&s.lapi_url, s.secrets.ca_pem.as_deref())?;
            self.client = Some((s.lapi_url.clone(), s.secrets.ca_pem.clone(), lapi));
            self.token = None;
        }
        match &self.client {
            Some((_, _, lapi)) => Ok(lapi),
            None => Err(FleetError::Transport("no client".into())),
        }
    }

    /// One batch, logging in first if need be, and once more if the token is refused.
    fn call(
        &mut self,
        s: &FleetSettings,
        login: &str,
        password: &str,
        alerts: &[serde_json::Value],
    ) -> Result<(), FleetError> {
        let creds = (login.to_string(), password.to_string());
        for retry in [false, true] {
            let fresh = match &self.token {
                Some((t, at, who)) if at.elapsed() < TOKEN_LIFE && *who == creds => Some(t.clone()),
                _ => None,
            };
            let token = match fresh {
                Some(t) => t,
                None => {
                    let t = self.client(s)?.login(login, password)?;
                    answered(&self.stats);
                    self.token = Some((t.clone(), Instant::now(), creds.clone()));
                    t
                }
            };
            match self.client(s)?.push(&token, alerts) {
                Ok(()) => {
                    answered(&self.stats);
                    return Ok(());
                }
                // Expired, or the LAPI restarted: log in again, once.
                Err(FleetError::Unauthorized { .. }) if !retry => self.token = None,
                Err(e) => return Err(e),
            }
        }
        Err(FleetError::Transport("unreachable".into()))
    }

    /// A batch the LAPI keeps refusing as a bad request, or with a server error every
    /// time, is given up so the alerts behind it can go.
    fn give_up_if_hopeless(&mut self, e: &FleetError, n: usize) {
        let hopeless = match e {
            FleetError::Status { status, .. } if (400..500).contains(status) => {
                !matches!(status, 408 | 429)
            }
            FleetError::Status { .. } => {
                self.strikes += 1;
                self.strikes >= MAX_STRIKES
            }
            _ => false,
        };
        if hopeless {
            tracing::error!(
                "adminalert: ERROR: CrowdSec LAPI refused {n} alerts ({e}); they are given up"
            );
            self.spool.sent(n);
            self.spool.discarded += n as u64;
            self.strikes = 0;
        }
    }

    fn save(&mut self) {
        if let Err(e) = self.spool.save() {
            tracing::error!("adminalert: ERROR: CrowdSec alert spool: {e}");
        }
    }

    fn discarded(&mut self) {
        if self.spool.discarded > 0 {
            tracing::error!(
                "adminalert: ERROR: {} alerts for the CrowdSec LAPI given up (the spool was full, or their block ended before the LAPI could take them)",
                self.spool.discarded
            );
            self.spool.discarded = 0;
        }
    }

    pub fn waiting(&self) -> usize {
        self.spool.len()
    }
}

fn now() -> u64 {
    epoch(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::super::lapi::tests::Fake;
    use super::*;
    use crate::config::Secrets;
    use std::sync::atomic::{AtomicBool, AtomicU32};

    fn settings(url: &str, dir: &std::path::Path) -> Arc<RwLock<Settings>> {
        let mut s = crate::config::Config::parse("t", "").unwrap().settings();
        s.fleet = Some(Arc::new(FleetSettings {
            lapi_url: url.into(),
            secrets: Secrets {
                machine: Some(("hostA".into(), "pw".into())),
                bouncer_key: None,
                ca_pem: None,
            },
            pull_interval: Duration::from_secs(1),
            max_decisions: 100,
            spool: dir.join("crowdsec-spool.json"),
        }));
        Arc::new(RwLock::new(s))
    }

    fn block(last: u8) -> LocalBlock {
        LocalBlock {
            net: format!("198.18.0.{last}/32").parse().unwrap(),
            timeout: Some(Duration::from_secs(3600)),
            count: 1,
            at: now(),
            probe: None,
        }
    }

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ps-push-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// The LAPI is down: the alerts go to the spool on disk; a new daemon (a restart)
    /// finds them and sends them, with their original times, once the LAPI is back; a
    /// token refused after the LAPI's restart is renewed.
    #[test]
    fn alerts_wait_on_disk_while_the_lapi_is_away_and_go_when_it_is_back() {
        let d = dir("away");
        let up = Arc::new(AtomicBool::new(false));
        let logins = Arc::new(AtomicU32::new(0));
        let (u, l) = (up.clone(), logins.clone());
        let fake = Fake::start(Arc::new(move |head: &str, _: &str| {
            if !u.load(Relaxed) {
                return Some((503, "down".into()));
            }
            if head.contains("login") {
                let n = l.fetch_add(1, Relaxed);
                return Some((200, format!(r#"{{"token":"t{n}"}}"#)));
            }
            // The first token is void, as after a LAPI restart.
            if head.contains("Bearer t0") || head.contains("bearer t0") {
                return Some((401, r#"{"message":"signature is invalid"}"#.into()));
            }
            Some((201, "[\"1\"]".into()))
        }));
        let stats = Arc::new(Stats::default());
        let mut p = Pusher::new(
            settings(&fake.url, &d),
            d.join("crowdsec-spool.json"),
            stats.clone(),
        );
        let b = block(7);
        p.spool.push(pending(&b), now());
        p.send();
        assert_eq!(p.waiting(), 1);
        assert!(d.join("crowdsec-spool.json").exists());
        assert_eq!(Stats::get(&stats.fleet.push_failures), 1);
        drop(p);

        up.store(true, Relaxed);
        let mut p = Pusher::new(
            settings(&fake.url, &d),
            d.join("crowdsec-spool.json"),
            stats.clone(),
        );
        assert_eq!(p.waiting(), 1);
        p.send();
        assert_eq!(p.waiting(), 0);
        assert!(!d.join("crowdsec-spool.json").exists());
        assert_eq!(logins.load(Relaxed), 2, "logged in again after the 401");
        let sent = fake.requests("/v1/alerts");
        let last = sent.last().unwrap();
        assert!(
            last.contains(&format!(
                "\"stop_at\":\"{}\"",
                super::super::wire::rfc3339(b.at)
            )),
            "{last}"
        );
        assert_eq!(Stats::get(&stats.fleet.alerts_pushed), 1);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A batch the LAPI rejects as malformed would block every alert behind it.
    #[test]
    fn a_batch_refused_as_bad_is_given_up() {
        let d = dir("bad");
        let fake = Fake::start(Arc::new(|head: &str, _: &str| {
            Some(if head.contains("login") {
                (200, r#"{"token":"t"}"#.into())
            } else {
                (400, "bad request".into())
            })
        }));
        let mut p = Pusher::new(
            settings(&fake.url, &d),
            d.join("crowdsec-spool.json"),
            Arc::new(Stats::default()),
        );
        p.spool.push(pending(&block(1)), now());
        p.send();
        assert_eq!(p.waiting(), 0);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A LAPI that answers every batch with a server error (its database broken, or an
    /// alert it can never take: the LAPI says 500 for a missing field) is retried with
    /// backoff, and the batch given up after MAX_STRIKES tries.
    #[test]
    fn server_errors_are_retried_then_the_batch_is_given_up() {
        let d = dir("500");
        let fake = Fake::start(Arc::new(|head: &str, _: &str| {
            Some(if head.contains("login") {
                (200, r#"{"token":"t"}"#.into())
            } else {
                (500, "validation failure list".into())
            })
        }));
        let stats = Arc::new(Stats::default());
        let mut p = Pusher::new(
            settings(&fake.url, &d),
            d.join("crowdsec-spool.json"),
            stats.clone(),
        );
        p.spool.push(pending(&block(1)), now());
        for i in 1..MAX_STRIKES {
            p.send();
            assert_eq!(p.waiting(), 1, "given up after {i} tries");
            assert!(p.next_try > Instant::now(), "no backoff");
            p.next_try = Instant::now();
        }
        p.send();
        assert_eq!(p.waiting(), 0);
        assert_eq!(
            Stats::get(&stats.fleet.push_failures),
            u64::from(MAX_STRIKES)
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// The responder's hand-off never waits: a push thread stuck on a LAPI that never
    /// answers costs dropped alerts, counted, not a late block.
    #[test]
    fn a_full_outbox_drops_and_counts_without_waiting() {
        let stats = Arc::new(Stats::default());
        let (out, _rx) = super::super::Outbox::new(stats.clone());
        let t = Instant::now();
        for i in 0..(super::super::OUTBOX_CAPACITY + 10) {
            out.offer(block((i % 250) as u8));
        }
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!(Stats::get(&stats.fleet.alerts_dropped), 10);
    }
}
