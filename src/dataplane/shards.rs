//! The detector's sources, split in shards by the network a source is counted under (an
//! IPv4 address, an IPv6 prefix), one shard per packet thread. A packet thread counts each
//! probe in the shard its network belongs to, whichever queue the kernel put it on: the
//! kernel balances queues by a hash of both addresses, the protocol (IPv4) and only the low
//! 32 bits of an IPv6 address, so one scanner's TCP and UDP probes, its probes to two of the
//! host's addresses, or a subscriber rotating through its /64 would otherwise be counted by
//! several threads, each seeing only its share (the trigger multiplied by the queues).
//!
//! A packet's verdict never waits on a shard's state (it only depends on the ignore list),
//! so a shard is held only to count. Each shard takes its own control messages, applied by
//! whichever thread locks it next.

use super::Control;
use crate::core::detector::{Detector, DetectorConfig};
use crate::core::ignore::{canonical, IgnoreList};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::mpsc::Receiver;
use std::sync::{Mutex, MutexGuard};

pub struct Shard {
    pub detector: Detector,
    control: Receiver<Control>,
}

pub struct Shards {
    shards: Box<[Mutex<Shard>]>,
    /// The IPv6 prefix sources are counted under (followed on reload).
    ipv6_prefix: AtomicU8,
    hasher: ahash::RandomState,
}

impl Shards {
    /// One shard per control channel, each with a detector of `cfg` (its share of the
    /// sources).
    pub fn new(
        cfg: &DetectorConfig,
        ignore: &IgnoreList,
        controls: Vec<Receiver<Control>>,
    ) -> Shards {
        Shards {
            shards: controls
                .into_iter()
                .map(|control| {
                    Mutex::new(Shard {
                        detector: Detector::new(cfg.clone(), ignore.clone()),
                        control,
                    })
                })
                .collect(),
            ipv6_prefix: AtomicU8::new(cfg.ipv6_prefix),
            hasher: ahash::RandomState::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.shards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// The shard `src` is counted in: by its IPv4 address, or its IPv6 prefix (any address
    /// of the prefix, and so any narrower key inside it, lands in the same shard).
    pub fn index(&self, src: IpAddr) -> usize {
        if self.shards.len() <= 1 {
            return 0;
        }
        let key = match canonical(src) {
            IpAddr::V4(a) => (false, u128::from(u32::from(a))),
            IpAddr::V6(a) => {
                let len = u32::from(self.ipv6_prefix.load(Relaxed).min(128));
                let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
                (true, u128::from(a) & mask)
            }
        };
        (self.hasher.hash_one(key) % self.shards.len() as u64) as usize
    }

    /// The shard `src` is counted in, locked, its waiting control messages applied; `i`
    /// is its `index`, as the caller already has it. A reconfiguration may change the
    /// prefix sources are counted under: the shard is then chosen again.
    pub fn lock_for(&self, src: IpAddr, mut i: usize) -> (usize, MutexGuard<'_, Shard>) {
        loop {
            let (guard, reconfigured) = self.take(i);
            if !reconfigured {
                return (i, guard);
            }
            let again = self.index(src);
            if again == i {
                return (i, guard);
            }
            i = again;
        }
    }

    /// Shard `i`, its waiting control messages applied.
    pub fn lock(&self, i: usize) -> MutexGuard<'_, Shard> {
        self.take(i).0
    }

    /// Shard `i`, its waiting control messages applied; whether one reconfigured it.
    fn take(&self, i: usize) -> (MutexGuard<'_, Shard>, bool) {
        let mut s = self.shards[i].lock().unwrap_or_else(|e| e.into_inner());
        let shard = &mut *s;
        let mut reconfigured = false;
        while let Ok(c) = shard.control.try_recv() {
            match c {
                Control::Reconfigure(cfg, ignore) => {
                    self.ipv6_prefix.store(cfg.ipv6_prefix, Relaxed);
                    shard.detector.reconfigure(cfg);
                    shard.detector.set_ignore(ignore);
                    reconfigured = true;
                }
                Control::Forget(net) => shard.detector.forget(net),
            }
        }
        (s, reconfigured)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::detector::{Action, Decision};
    use crate::core::probe::{Probe, Proto, ScanKind};
    use std::sync::mpsc::{channel, Sender};
    use std::time::{Duration, Instant};

    fn cfg(trigger: u32, ipv6_prefix: u8) -> DetectorConfig {
        DetectorConfig {
            trigger,
            window: Duration::from_secs(60),
            tcp: Action::Block,
            udp: Action::Block,
            hold: Duration::from_secs(3600),
            max_sources: 1000,
            score: 0,
            ipv6_prefix,
            spare_clients: true,
        }
    }

    fn shards(n: usize, cfg: &DetectorConfig) -> (Shards, Vec<Sender<Control>>) {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..n).map(|_| channel()).unzip();
        (Shards::new(cfg, &IgnoreList::new([]), rxs), txs)
    }

    fn probe(src: &str, port: u16, proto: Proto) -> Probe {
        let kind = if proto == Proto::Udp {
            ScanKind::Udp
        } else {
            ScanKind::Syn
        };
        Probe::example(src, port, kind)
    }

    /// What a packet thread does with a probe.
    fn observe(s: &Shards, p: &Probe, now: Instant) -> Decision {
        s.lock_for(p.src, s.index(p.src)).1.detector.observe(p, now)
    }

    #[test]
    fn a_prefix_is_one_shard_and_sources_spread_over_all() {
        let (s, _tx) = shards(8, &cfg(3, 64));
        let one = s.index("2001:db8:ff:1::1".parse().unwrap());
        for host in 2..200u32 {
            let a = format!(
                "2001:db8:ff:1::{host:x}:{:x}",
                host.wrapping_mul(2_654_435_761) >> 16
            );
            assert_eq!(s.index(a.parse().unwrap()), one, "{a}");
        }
        // An IPv4-mapped source is its IPv4 address.
        assert_eq!(
            s.index("::ffff:198.18.0.7".parse().unwrap()),
            s.index("198.18.0.7".parse().unwrap())
        );
        let mut seen = [false; 8];
        for i in 0..1000u32 {
            seen[s.index(std::net::Ipv4Addr::from(0xc612_0000 + i).into())] = true;
        }
        assert!(seen.iter().all(|s| *s), "{seen:?}");
    }

    #[test]
    fn probes_of_one_source_reach_the_trigger_across_threads_and_protocols() {
        let (s, _tx) = shards(4, &cfg(3, 64));
        let now = Instant::now();
        // Three addresses of one /64, TCP and UDP: one source, acted on at the third.
        let probes = [
            probe("2001:db8:ff:1::1", 111, Proto::Tcp),
            probe("2001:db8:ff:1::2", 161, Proto::Udp),
            probe("2001:db8:ff:1::3", 112, Proto::Tcp),
        ];
        assert!(matches!(
            observe(&s, &probes[0], now),
            Decision::Count { hits: 1 }
        ));
        assert!(matches!(
            observe(&s, &probes[1], now),
            Decision::Count { hits: 2 }
        ));
        assert!(matches!(
            observe(&s, &probes[2], now),
            Decision::Act { hits: 3, .. }
        ));
    }

    #[test]
    fn control_reaches_every_shard_and_a_new_prefix_is_followed() {
        let (s, tx) = shards(4, &cfg(2, 64));
        let now = Instant::now();
        let a = probe("2001:db8:ff:1::1", 111, Proto::Tcp);
        let b = probe("2001:db8:ff:1::2", 112, Proto::Tcp);
        observe(&s, &a, now);
        assert!(matches!(observe(&s, &b, now), Decision::Act { .. }));
        assert_eq!(observe(&s, &a, now), Decision::Repeat);
        // Unblocked: every shard forgets.
        for t in &tx {
            t.send(Control::Forget("2001:db8:ff:1::/64".parse().unwrap()))
                .unwrap();
        }
        assert!(matches!(observe(&s, &a, now), Decision::Count { hits: 1 }));
        // Counted by /48 now: two /64s of one /48 are one source.
        for t in &tx {
            t.send(Control::Reconfigure(cfg(2, 48), IgnoreList::new([])))
                .unwrap();
        }
        let c = probe("2001:db8:ff:2::1", 113, Proto::Tcp);
        let d = probe("2001:db8:ff:3::1", 114, Proto::Tcp);
        observe(&s, &c, now);
        assert_eq!(
            s.index(c.src),
            s.index(d.src),
            "one /48, one shard once reconfigured"
        );
        assert!(matches!(observe(&s, &d, now), Decision::Act { .. }));
    }
}
