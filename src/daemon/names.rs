//! Host names for RESOLVE_HOST: reverse lookups on threads of their own, with a deadline
//! and a cache, and names held to hostname syntax. The scanner controls its own PTR
//! records: a slow server must not hold up or drop a history line, and a name with a
//! newline or control characters must not forge the lines fail2ban acts on.

use crate::system::host::reverse_name;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Lookups running at once; more wait in a bounded queue, past which they are skipped.
const WORKERS: usize = 4;
const QUEUED: usize = 1024;
/// Names remembered, and for how long (no name: for less).
const CACHED: usize = 4096;
const KEEP_NAME: Duration = Duration::from_secs(3600);
const KEEP_NONE: Duration = Duration::from_secs(300);
/// The longest a batch of lines waits for names before writing addresses instead.
pub const LOOKUP_WAIT: Duration = Duration::from_millis(200);

/// A name fit for a log line: hostname characters only (letters, digits, `-`, `_`, dots
/// between labels of 1 to 63), 253 characters at most.
pub fn valid_hostname(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[derive(Default)]
struct Cache {
    /// `None`: looked up, no (usable) name.
    entries: HashMap<IpAddr, (Option<String>, Instant)>,
    order: VecDeque<IpAddr>,
    /// Asked and not answered yet.
    pending: HashMap<IpAddr, ()>,
}

impl Cache {
    fn get(&self, addr: IpAddr, now: Instant) -> Option<Option<String>> {
        let (name, at) = self.entries.get(&addr)?;
        let keep = if name.is_some() { KEEP_NAME } else { KEEP_NONE };
        (now.saturating_duration_since(*at) < keep).then(|| name.clone())
    }

    fn put(&mut self, addr: IpAddr, name: Option<String>, now: Instant) {
        self.pending.remove(&addr);
        if self.entries.len() >= CACHED && !self.entries.contains_key(&addr) {
            while let Some(old) = self.order.pop_front() {
                if self.entries.remove(&old).is_some() {
                    break;
                }
            }
        }
        if self.entries.insert(addr, (name, now)).is_none() {
            self.order.push_back(addr);
        }
    }
}

type Lookup = Arc<dyn Fn(IpAddr) -> Option<String> + Send + Sync>;

/// The resolver: asked for a batch of addresses, it answers what it knows by a deadline.
#[derive(Clone)]
pub struct Names {
    shared: Arc<(Mutex<Cache>, Condvar)>,
    jobs: SyncSender<IpAddr>,
}

impl Names {
    /// Names from the system's resolver (getnameinfo).
    pub fn system() -> Names {
        Names::with(Arc::new(reverse_name))
    }

    /// Names from `lookup`, which may block as long as it likes.
    pub fn with(lookup: Lookup) -> Names {
        let shared = Arc::new((Mutex::new(Cache::default()), Condvar::new()));
        let (jobs, rx) = sync_channel::<IpAddr>(QUEUED);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..WORKERS {
            let (shared, rx, lookup) = (shared.clone(), rx.clone(), lookup.clone());
            let _ = std::thread::Builder::new()
                .name(format!("names {i}"))
                .spawn(move || worker(&rx, &shared, &*lookup));
        }
        Names { shared, jobs }
    }

    /// The names of `addrs` known by `deadline` (cached, or looked up in time); an
    /// address missing from the answer is written as itself. Lookups not finished go on
    /// and fill the cache for later lines.
    pub fn resolve(&self, addrs: &[IpAddr], deadline: Instant) -> HashMap<IpAddr, String> {
        let (lock, cv) = &*self.shared;
        let mut cache = lock.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        for a in addrs {
            if cache.get(*a, now).is_none() && !cache.pending.contains_key(a) {
                match self.jobs.try_send(*a) {
                    Ok(()) => {
                        cache.pending.insert(*a, ());
                    }
                    Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {}
                }
            }
        }
        loop {
            let now = Instant::now();
            let waiting = addrs.iter().any(|a| cache.pending.contains_key(a));
            if !waiting || now >= deadline {
                break;
            }
            cache = cv
                .wait_timeout(cache, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let now = Instant::now();
        addrs
            .iter()
            .filter_map(|a| Some((*a, cache.get(*a, now)??)))
            .collect()
    }
}

fn worker(
    rx: &Mutex<Receiver<IpAddr>>,
    shared: &(Mutex<Cache>, Condvar),
    lookup: &(dyn Fn(IpAddr) -> Option<String> + Send + Sync),
) {
    loop {
        let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(addr) = next else { return };
        let name = lookup(addr).filter(|n| valid_hostname(n));
        let (lock, cv) = shared;
        lock.lock()
            .unwrap_or_else(|e| e.into_inner())
            .put(addr, name, Instant::now());
        cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    #[test]
    fn only_hostname_syntax_is_a_name() {
        for good in ["evil.example", "a-b_c.example.", "x", &"a.".repeat(120)] {
            assert!(valid_hostname(good), "{good}");
        }
        for bad in [
            "",
            "evil\n1795703903 - 11/26/2026 Host: 203.0.113.9/203.0.113.9 Port: 1 TCP Blocked",
            "evil\u{1b}[31m",
            "ev il",
            "a..b",
            "$(reboot)",
            "é.example",
            &"a".repeat(64),
            &"a.".repeat(128),
        ] {
            assert!(!valid_hostname(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_slow_lookup_is_waited_for_only_until_the_deadline_and_then_cached() {
        let names = Names::with(Arc::new(|addr: IpAddr| {
            if addr == a(9) {
                std::thread::sleep(Duration::from_millis(300));
            }
            Some(format!(
                "host{}.example",
                addr.to_string().rsplit('.').next().unwrap()
            ))
        }));
        let t = Instant::now();
        let got = names.resolve(&[a(1), a(9)], t + Duration::from_millis(100));
        assert!(t.elapsed() < Duration::from_millis(250));
        assert_eq!(got.get(&a(1)).map(String::as_str), Some("host1.example"));
        assert!(!got.contains_key(&a(9)), "the slow one is not waited for");
        std::thread::sleep(Duration::from_millis(400));
        let got = names.resolve(&[a(9)], Instant::now());
        assert_eq!(got.get(&a(9)).map(String::as_str), Some("host9.example"));
    }

    #[test]
    fn a_hostile_name_is_never_given_out() {
        let names = Names::with(Arc::new(|_| Some("evil\nforged line".to_string())));
        let got = names.resolve(&[a(2)], Instant::now() + Duration::from_secs(1));
        assert!(got.is_empty());
    }

    #[test]
    fn a_flood_of_addresses_never_waits_past_the_deadline_or_grows_without_bound() {
        let names = Names::with(Arc::new(|_| {
            std::thread::sleep(Duration::from_secs(5));
            None
        }));
        let addrs: Vec<IpAddr> = (0..5000u32)
            .map(|i| IpAddr::from((0xC612_0000u32 + i).to_be_bytes()))
            .collect();
        let t = Instant::now();
        let got = names.resolve(&addrs, t + LOOKUP_WAIT);
        assert!(got.is_empty());
        assert!(t.elapsed() < Duration::from_secs(1));
        let cache = names.shared.0.lock().unwrap();
        assert!(
            cache.pending.len() <= QUEUED + WORKERS,
            "{}",
            cache.pending.len()
        );
    }
}
