//! The pull thread: the fleet's decisions, streamed from the LAPI every `pull_interval`
//! (everything at first and after any failure, then what changed), enforced in the fleet
//! sets through the block policy's protection. While the LAPI is away what was pulled
//! stays enforced until it ends.

use super::lapi::Lapi;
use super::wire::{epoch, Delta};
use super::{answered, failed, FleetError};
use crate::config::settings::{FleetSettings, Settings};
use crate::core::decisions::{too_wide, Taken};
use crate::core::ignore::net_text;
use crate::core::policy::Blocks;
use crate::core::stats::Stats;
use crate::firewall::{Firewall, Set};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// Refused decisions named one by one in a pull at most; the rest are counted.
const NAMED_REFUSALS: usize = 10;
/// The same trouble (decisions over the cap, skipped items) is said at most this often.
const SAY_EVERY: Duration = Duration::from_secs(600);

pub struct Puller<F: Firewall> {
    fw: F,
    blocks: Arc<Mutex<Blocks>>,
    settings: Arc<RwLock<Settings>>,
    stats: Arc<Stats>,
    client: Option<(String, Option<Vec<u8>>, Lapi)>,
    /// The bouncer key of the last call: a new key starts with everything.
    key: String,
    /// The next call asks for everything (start, and after a failure: the LAPI may have
    /// restarted, or changes were missed).
    resync: bool,
    up: bool,
    said: Option<Instant>,
}

impl<F: Firewall> Puller<F> {
    pub fn new(
        fw: F,
        blocks: Arc<Mutex<Blocks>>,
        settings: Arc<RwLock<Settings>>,
        stats: Arc<Stats>,
    ) -> Puller<F> {
        Puller {
            fw,
            blocks,
            settings,
            stats,
            client: None,
            key: String::new(),
            resync: true,
            up: true,
            said: None,
        }
    }

    /// Pulls every `pull_interval`, for ever.
    pub fn run(mut self) {
        loop {
            let started = Instant::now();
            let fleet = self.fleet();
            if let Some(s) = &fleet {
                if let Some(key) = s.secrets.bouncer_key.clone() {
                    self.pull(s, &key);
                }
            }
            // Ended decisions go even while the LAPI is away (and ranges that ended give
            // back the addresses inside them).
            self.write(now());
            let every = fleet.map_or(Duration::from_secs(10), |s| s.pull_interval);
            std::thread::sleep(every.saturating_sub(started.elapsed()));
        }
    }

    /// `[crowdsec]` as last loaded (a reload may change it, or take it out).
    fn fleet(&self) -> Option<Arc<FleetSettings>> {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .fleet
            .clone()
    }

    /// One call of the stream, taken in.
    pub fn pull(&mut self, s: &FleetSettings, key: &str) {
        match self.call(s, key) {
            Ok(delta) => {
                Stats::inc(&self.stats.fleet.pulls);
                Stats::set(&self.stats.fleet.last_pull, now());
                answered(&self.stats);
                if !self.up {
                    self.up = true;
                    tracing::warn!(
                        "adminalert: CrowdSec LAPI {} answers again; fleet decisions resynced",
                        s.lapi_url
                    );
                }
                let startup = std::mem::replace(&mut self.resync, false);
                self.take(delta, startup, now());
            }
            Err(e) => {
                Stats::inc(&self.stats.fleet.pull_failures);
                failed(&self.stats, &e);
                self.resync = true;
                if self.up {
                    self.up = false;
                    let held = self.lock().fleet_book().blocked();
                    tracing::error!(
                        "adminalert: ERROR: CrowdSec LAPI {}: cannot pull decisions: {e}; the {held} fleet blocks stay until they end, retrying every {}",
                        s.lapi_url,
                        humantime::format_duration(s.pull_interval)
                    );
                }
            }
        }
    }

    fn call(&mut self, s: &FleetSettings, key: &str) -> Result<Delta, FleetError> {
        let fresh = self
            .client
            .as_ref()
            .is_some_and(|(url, ca, _)| *url == s.lapi_url && *ca == s.secrets.ca_pem);
        if !fresh {
            let lapi = Lapi::new(&s.lapi_url, s.secrets.ca_pem.as_deref())?;
            self.client = Some((s.lapi_url.clone(), s.secrets.ca_pem.clone(), lapi));
            self.resync = true;
        }
        if self.key != key {
            self.key = key.to_string();
            self.resync = true;
        }
        let Some((_, _, lapi)) = &self.client else {
            return Err(FleetError::Transport("no client".into()));
        };
        lapi.stream(key, self.resync, now(), s.max_decisions)
    }

    /// Takes in one answer of the stream (all of it with `startup`) and writes the sets.
    pub fn take(&mut self, delta: Delta, startup: bool, now: u64) {
        let max = self
            .fleet()
            .map_or(crate::core::policy::DEFAULT_MAX_DECISIONS, |s| {
                s.max_decisions
            });
        let taken = {
            let mut book = self.lock();
            let (fleet, protected) = book.fleet();
            let protected = protected.clone();
            fleet.set_max(max);
            if startup {
                fleet.sync(delta.new, &protected, now)
            } else {
                fleet.apply(delta.new, &delta.deleted, &protected, now)
            }
        };
        self.write(now);
        self.report(&taken, delta.skipped, delta.over + taken.over_cap, max);
    }

    /// Makes the fleet sets what the decisions say. The book is not held while the kernel
    /// is written: a startup pull of a large fleet must not hold up the responder's next
    /// block. A change made meanwhile (an unblock) is set right by the next write.
    pub fn write(&mut self, now: u64) {
        let plan = {
            let mut book = self.lock();
            let (fleet, _) = book.fleet();
            fleet.prune(now);
            fleet.plan(now)
        };
        let mut failures = Vec::new();
        let (removed, refused) = if plan.is_empty() {
            (true, Vec::new())
        } else {
            let removed = match self.fw.remove_blocks(Set::Fleet, &plan.remove) {
                Ok(()) => true,
                Err(e) => {
                    failures.push(format!("removing fleet blocks: {e}"));
                    false
                }
            };
            let report = self.fw.add_blocks(&plan.add);
            failures.extend(
                report
                    .failed
                    .iter()
                    .take(3)
                    .map(|(n, e)| format!("{}: {e}", net_text(*n))),
            );
            (removed, report.failed.into_iter().map(|(n, _)| n).collect())
        };
        let (blocked, held) = {
            let mut book = self.lock();
            let (fleet, _) = book.fleet();
            if !plan.is_empty() {
                fleet.commit(&plan, removed, &refused, now);
            }
            (fleet.blocked(), fleet.decisions())
        };
        Stats::set(&self.stats.fleet.blocked, blocked as u64);
        Stats::set(&self.stats.fleet.decisions, held as u64);
        if !failures.is_empty() {
            // Retried at the next pull (and the table's heal puts the sets back).
            tracing::error!(
                "adminalert: ERROR: the kernel refused fleet blocks ({}); retrying",
                failures.join(", ")
            );
        }
    }

    fn report(&mut self, taken: &Taken, skipped: u64, over: u64, max: usize) {
        for d in taken.refused.iter().take(NAMED_REFUSALS) {
            let why = if too_wide(d.net) {
                "it is wider than a /8 (a /16 for IPv6)"
            } else {
                "it covers this host's own address, a gateway, a resolver or the ignore list"
            };
            tracing::warn!(
                "adminalert: fleet decision {} for {} ({}) not enforced: {why}",
                d.id,
                net_text(d.net),
                d.reason
            );
        }
        if taken.refused.len() > NAMED_REFUSALS {
            tracing::warn!(
                "adminalert: {} more fleet decisions not enforced: too wide, or covering protected addresses",
                taken.refused.len() - NAMED_REFUSALS
            );
        }
        let refused = taken.refused.len() as u64 + over;
        self.stats.fleet.refused.fetch_add(refused, Relaxed);
        if over + skipped > 0 && self.said.is_none_or(|t| t.elapsed() >= SAY_EVERY) {
            self.said = Some(Instant::now());
            if over > 0 {
                tracing::error!(
                    "adminalert: ERROR: {over} fleet decisions left out: max_decisions ({max}) are held"
                );
            }
            if skipped > 0 {
                tracing::info!(
                    "{skipped} fleet decisions skipped: not bans of scope Ip or Range, or unreadable"
                );
            }
        }
        if taken.added + taken.deleted > 0 {
            tracing::info!(
                "fleet: {} decisions taken, {} lifted",
                taken.added,
                taken.deleted
            );
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Blocks> {
        self.blocks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn now() -> u64 {
    epoch(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::super::lapi::tests::Fake;
    use super::super::wire::parse_stream;
    use super::*;
    use crate::config::Secrets;
    use crate::core::ignore::IgnoreList;
    use crate::core::policy::PolicyConfig;
    use crate::firewall::memory::Memory;
    use crate::firewall::TableSpec;

    fn puller(url: &str) -> (Puller<Memory>, Memory, Arc<Stats>) {
        let mut fw = Memory::default();
        fw.build(&TableSpec::default()).unwrap();
        let mut protected = crate::core::ignore::always_protected();
        protected
            .extend(["192.0.2.1/32", "192.0.2.254/32"].map(|s| s.parse::<ipnet::IpNet>().unwrap()));
        let blocks = Blocks::new(
            PolicyConfig {
                timeout: Some(Duration::from_secs(3600)),
                repeat_factor: 1,
                max_timeout: None,
                max_blocked: 10,
                max_per_second: 10,
            },
            IgnoreList::new(protected),
        );
        let mut all = crate::config::Config::parse("t", "").unwrap().settings();
        all.fleet = Some(Arc::new(FleetSettings {
            lapi_url: url.into(),
            secrets: Secrets {
                machine: None,
                bouncer_key: Some("key".into()),
                ca_pem: None,
            },
            pull_interval: Duration::from_secs(1),
            max_decisions: 1000,
            spool: std::env::temp_dir().join("unused"),
        }));
        let stats = Arc::new(Stats::default());
        let p = Puller::new(
            fw.clone(),
            Arc::new(Mutex::new(blocks)),
            Arc::new(RwLock::new(all)),
            stats.clone(),
        );
        (p, fw, stats)
    }

    fn fleet_set(fw: &Memory) -> Vec<String> {
        fw.state()
            .table
            .as_ref()
            .unwrap()
            .fleet
            .keys()
            .map(|k| k.to_string())
            .collect()
    }

    fn delta(text: &str) -> Delta {
        parse_stream(text.as_bytes(), now(), 1000).unwrap()
    }

    fn item(id: u64, scope: &str, value: &str) -> String {
        format!(
            r#"{{"duration":"59m","id":{id},"origin":"cscli","scenario":"manual 'ban' from 'x'","scope":"{scope}","type":"ban","value":"{value}"}}"#
        )
    }

    /// Repeated deltas, deletions repeated, the host's own address and gateway, a range
    /// over its LAN and 0.0.0.0/0: only the real scanners end up in the fleet sets.
    #[test]
    fn decisions_reach_the_fleet_sets_through_the_protection() {
        let (mut p, fw, stats) = puller("http://127.0.0.1:9");
        let t = now();
        p.take(
            delta(&format!(
                r#"{{"new":[{},{},{},{},{},{}],"deleted":null}}"#,
                item(1, "Ip", "198.18.0.7"),
                item(2, "Range", "198.18.1.0/24"),
                item(3, "Ip", "192.0.2.1"),
                item(4, "Ip", "192.0.2.254"),
                item(5, "Range", "192.0.2.0/24"),
                item(6, "Range", "0.0.0.0/0"),
            )),
            true,
            t,
        );
        assert_eq!(fleet_set(&fw), ["198.18.0.7/32", "198.18.1.0/24"]);
        assert_eq!(Stats::get(&stats.fleet.refused), 4);
        // The same again as a delta: nothing new, nothing said twice.
        p.take(
            delta(&format!(
                r#"{{"new":[{},{}],"deleted":null}}"#,
                item(1, "Ip", "198.18.0.7"),
                item(3, "Ip", "192.0.2.1"),
            )),
            false,
            t + 1,
        );
        assert_eq!(Stats::get(&stats.fleet.refused), 4);
        // Deleted, and the deletion repeated.
        for i in 0..2 {
            p.take(
                delta(r#"{"new":null,"deleted":[{"id":1,"value":"198.18.0.7"}]}"#),
                false,
                t + 2 + i,
            );
        }
        assert_eq!(fleet_set(&fw), ["198.18.1.0/24"]);
        assert_eq!(Stats::get(&stats.fleet.blocked), 1);
        let listed = p.lock().fleet_book().get("198.18.1.0/24".parse().unwrap());
        assert_eq!(&*listed.unwrap().reason, "manual 'ban' from 'x' (cscli)");
    }

    /// The LAPI goes away: what was pulled stays; when it answers again the whole list is
    /// asked for, and what was deleted meanwhile goes.
    #[test]
    fn an_outage_keeps_the_blocks_and_the_return_resyncs() {
        let phase = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let ph = phase.clone();
        let fake = Fake::start(Arc::new(move |head: &str, _: &str| {
            match ph.load(Relaxed) {
                0 => Some((
                    200,
                    format!(
                        r#"{{"new":[{},{}],"deleted":null}}"#,
                        item(1, "Ip", "198.18.0.1"),
                        item(2, "Ip", "198.18.0.2")
                    ),
                )),
                1 => Some((503, "restarting".into())),
                _ if head.contains("startup=true") => Some((
                    200,
                    format!(
                        r#"{{"new":[{}],"deleted":null}}"#,
                        item(2, "Ip", "198.18.0.2")
                    ),
                )),
                _ => Some((200, r#"{"new":null,"deleted":null}"#.into())),
            }
        }));
        let (mut p, fw, stats) = puller(&fake.url);
        let s = p.fleet().unwrap();
        p.pull(&s, "key");
        assert_eq!(fleet_set(&fw), ["198.18.0.1/32", "198.18.0.2/32"]);
        phase.store(1, Relaxed);
        p.pull(&s, "key");
        assert_eq!(fleet_set(&fw).len(), 2, "kept while the LAPI is away");
        assert_eq!(
            Stats::get(&stats.fleet.state),
            crate::core::stats::FleetStats::DOWN
        );
        phase.store(2, Relaxed);
        p.pull(&s, "key");
        assert_eq!(fleet_set(&fw), ["198.18.0.2/32"]);
        let calls = fake.requests("/v1/decisions/stream");
        assert_eq!(calls.len(), 3);
        let heads: Vec<String> = fake
            .seen
            .lock()
            .unwrap()
            .iter()
            .map(|(h, _)| h.clone())
            .collect();
        assert!(heads[0].contains("startup=true") && heads[2].contains("startup=true"));
    }

    /// Garbage, a wrong shape or an error page from the LAPI: a failed pull, the blocks
    /// kept, no panic.
    #[test]
    fn garbage_from_the_lapi_is_a_failed_pull() {
        let fake = Fake::start(Arc::new(|_: &str, _: &str| {
            Some((200, r#"{"new": "all of them"}"#.into()))
        }));
        let (mut p, fw, stats) = puller(&fake.url);
        p.take(
            delta(&format!(r#"{{"new":[{}]}}"#, item(1, "Ip", "198.18.0.1"))),
            true,
            now(),
        );
        let s = p.fleet().unwrap();
        p.pull(&s, "key");
        assert_eq!(Stats::get(&stats.fleet.pull_failures), 1);
        assert_eq!(fleet_set(&fw), ["198.18.0.1/32"]);
        let e = stats.fleet.last_error.lock().unwrap().clone();
        assert!(e.contains("unreadable"), "{e}");
    }
}
