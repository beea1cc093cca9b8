//! The pure core: probes in, decisions out, time passed in. No I/O, no clock, no allocation
//! per probe once the source table has reached its capacity.

use crate::core::ignore::{block_key, canonical, IgnoreList};
use crate::core::probe::{Probe, Proto};
use ipnet::IpNet;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// What to do once a source reaches the trigger (PortSentry's BLOCK_TCP / BLOCK_UDP 0/1/2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Report only.
    Off,
    /// Add the source to the block set (and run the legacy actions and command, if any).
    Block,
    /// Run the configured command only.
    Command,
}

#[derive(Clone, Debug)]
pub struct DetectorConfig {
    /// Act on this hit per source (PortSentry SCAN_TRIGGER: 0 and 1 both mean the first).
    pub trigger: u32,
    /// A source's hits older than this are forgotten.
    pub window: Duration,
    pub tcp: Action,
    pub udp: Action,
    /// How long an acted-on source stays quiet here; matches the block timeout so a source
    /// that comes back after its block expired is acted on again.
    pub hold: Duration,
    /// Most sources tracked at once; the oldest is forgotten first.
    pub max_sources: usize,
    /// When non-zero, act on a weighted count of distinct ports instead of `trigger`
    /// (scanlogd-style: a port below 1024 weighs `LOW_PORT_WEIGHT`, others 1).
    pub score: u32,
    /// IPv6 sources are counted by this prefix, as they are blocked: rotating addresses
    /// inside one subscriber's network is one source.
    pub ipv6_prefix: u8,
    /// A probe from a source holding a live connection is reported, never acted on
    /// (`Decision::Spare`): it may be forged.
    pub spare_clients: bool,
}

/// How long a spared source's further probes are only counted: at most one report a
/// minute per live client, whatever a forger sends in its name.
pub const SPARE_QUIET: Duration = Duration::from_secs(60);

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// scanlogd's weights: privileged ports are what scanners look for first.
pub const LOW_PORT_WEIGHT: u32 = 3;
/// Distinct ports remembered per source for scoring (fixed, so no allocation per source).
const PORT_MEMORY: usize = 8;

pub fn port_weight(port: u16) -> u32 {
    if port < 1024 {
        LOW_PORT_WEIGHT
    } else {
        1
    }
}

/// The verdict the packet itself gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Ignored or protected source: let the packet through, say nothing.
    Pass,
    /// Not evidence of a scan (backscatter such as RST or SYN+ACK): drop quietly.
    Discard,
    /// A hit below the trigger: drop, remember.
    Count { hits: u32 },
    /// The trigger is reached by this probe: report it and carry out `action`.
    Act { action: Action, hits: u32 },
    /// The trigger is reached, but the source holds a live connection to this host and
    /// the probe could be forged in its name: report it, do not carry out `action`.
    Spare { action: Action, hits: u32 },
    /// Already acted on within `hold`: drop, and only count it for the summary.
    Repeat,
}

impl Decision {
    pub fn verdict(self) -> Verdict {
        match self {
            Decision::Pass => Verdict::Accept,
            _ => Verdict::Drop,
        }
    }
}

/// Per-source state, kept small (48 bytes): a flood of spoofed sources fills a table of
/// these. Times are milliseconds since the detector's epoch.
#[derive(Clone, Copy, Debug)]
struct Source {
    first_hit: u64,
    /// Acted on until this time; 0 = not acted on.
    acted_until: u64,
    hits: u32,
    /// Weighted distinct ports in the current window (score mode).
    score: u32,
    /// The last distinct ports seen, a ring; a port seen again adds nothing.
    ports: [u16; PORT_MEMORY],
    ports_len: u8,
    ports_next: u8,
    /// The protocols acted on until `acted_until` (`Proto::bit`): 1.2 ran a sentry per
    /// protocol, and each reported the source, so a new protocol is acted on again.
    acted_protos: u8,
}

impl Source {
    fn new(now: u64) -> Source {
        Source {
            first_hit: now,
            acted_until: 0,
            hits: 0,
            score: 0,
            ports: [0; PORT_MEMORY],
            ports_len: 0,
            ports_next: 0,
            acted_protos: 0,
        }
    }

    fn reset(&mut self, now: u64) {
        *self = Source::new(now);
    }

    /// Records `port`; returns whether it is new for this window.
    fn note_port(&mut self, port: u16) -> bool {
        if self.ports[..usize::from(self.ports_len)].contains(&port) {
            return false;
        }
        self.ports[usize::from(self.ports_next)] = port;
        self.ports_next = ((usize::from(self.ports_next) + 1) % PORT_MEMORY) as u8;
        self.ports_len = (usize::from(self.ports_len) + 1).min(PORT_MEMORY) as u8;
        true
    }
}

/// The table starts this large and grows (amortised, rarely) up to `max_sources`, so an
/// idle daemon does not hold memory for a million sources.
const INITIAL_SOURCES: usize = 16_384;

pub struct Detector {
    cfg: DetectorConfig,
    ignore: IgnoreList,
    /// Keyed with a random per-process seed: sources are attacker-chosen, so the table must
    /// resist collision floods (HashDoS); ahash does at a fraction of SipHash's cost.
    sources: HashMap<IpNet, Source, ahash::RandomState>,
    /// Insertion order, for evicting the oldest source when the table is full.
    order: VecDeque<IpNet>,
    /// Time zero for the per-source timestamps: the first probe's `now` (the core reads
    /// no clock).
    epoch: Option<Instant>,
}

impl Detector {
    pub fn new(cfg: DetectorConfig, ignore: IgnoreList) -> Self {
        let cap = cfg.max_sources.clamp(1, INITIAL_SOURCES);
        Detector {
            sources: HashMap::with_capacity_and_hasher(cap, ahash::RandomState::new()),
            order: VecDeque::with_capacity(cap),
            epoch: None,
            cfg,
            ignore,
        }
    }

    /// Replaces the ignore list (SIGHUP, address changes) without losing state.
    pub fn set_ignore(&mut self, ignore: IgnoreList) {
        self.ignore = ignore;
    }

    pub fn ignore(&self) -> &IgnoreList {
        &self.ignore
    }

    pub fn tracked(&self) -> usize {
        self.sources.len()
    }

    pub fn observe(&mut self, probe: &Probe, now: Instant) -> Decision {
        let src = canonical(probe.src);
        // Only a packet addressed to one of the host's own addresses is a probe (the
        // ruleset filters the rest; this holds whatever ruleset steered the packet).
        if self.ignore.contains(src) || !unicast(probe.dst) {
            return Decision::Pass;
        }
        if !probe.kind.is_scan() {
            return Decision::Discard;
        }
        // SCTP and IP-protocol probes have no 1.2 setting of their own: they follow
        // [block] tcp.
        let action = match probe.proto {
            Proto::Tcp | Proto::Sctp | Proto::Ip => self.cfg.tcp,
            Proto::Udp => self.cfg.udp,
        };
        let (trigger, score) = (self.cfg.trigger.max(1), self.cfg.score);
        let window = millis(self.cfg.window);
        let hold = millis(self.cfg.hold);
        let epoch = *self.epoch.get_or_insert(now);
        let now = millis(now.saturating_duration_since(epoch));
        let spare = self.cfg.spare_clients && probe.live_client;
        let act = |hits| {
            if spare {
                Decision::Spare { action, hits }
            } else {
                Decision::Act { action, hits }
            }
        };
        let proto = probe.proto.bit();
        // Counted by the network even where a live client shares it (the block then covers
        // the address alone): one scanner rotating through its /64 is one source.
        let key = self.key(src);
        let s = self.entry(key, now);
        if s.acted_until != 0 {
            if now < s.acted_until {
                if s.acted_protos & proto != 0 {
                    return Decision::Repeat;
                }
                // Already a scanner: its first probe of another protocol is reported
                // (and acted on) as that protocol's sentry would have.
                s.acted_protos |= proto;
                s.hits = s.hits.saturating_add(1);
                return act(s.hits);
            }
            s.reset(now);
        }
        if s.hits == 0 || now.saturating_sub(s.first_hit) > window {
            s.reset(now);
        }
        s.hits = s.hits.saturating_add(1);
        if s.note_port(probe.dst_port) {
            s.score = s.score.saturating_add(port_weight(probe.dst_port));
        }
        let reached = if score > 0 {
            s.score >= score
        } else {
            s.hits >= trigger
        };
        if reached {
            let quiet = if spare {
                hold.min(millis(SPARE_QUIET))
            } else {
                hold
            };
            s.acted_until = now.saturating_add(quiet).max(1);
            s.acted_protos = proto;
            act(s.hits)
        } else {
            Decision::Count { hits: s.hits }
        }
    }

    /// The key a source is counted (and blocked) under.
    pub fn key(&self, addr: IpAddr) -> IpNet {
        block_key(addr, self.cfg.ipv6_prefix, &self.ignore)
    }

    /// Undo an `Act` whose action could not be queued, so the next probe tries again.
    pub fn retract(&mut self, probe: &Probe) {
        let key = self.key(probe.src);
        if let Some(s) = self.sources.get_mut(&key) {
            s.acted_until = 0;
        }
    }

    /// Forget that a source was acted on: it was unblocked, or its block could not be
    /// made. Its next probe is looked at afresh.
    pub fn forget(&mut self, net: IpNet) {
        let keys = [net, self.key(net.addr())];
        for k in keys {
            if let Some(s) = self.sources.get_mut(&k) {
                s.reset(s.first_hit);
            }
        }
    }

    /// Applies a reloaded configuration; per-source state is kept.
    pub fn reconfigure(&mut self, cfg: DetectorConfig) {
        self.cfg = cfg;
    }

    /// The source's state; one hash lookup for a known source (the common case).
    fn entry(&mut self, src: IpNet, now: u64) -> &mut Source {
        // Make room first, so the new entry is never the one evicted.
        if self.sources.len() >= self.cfg.max_sources.max(1) && !self.sources.contains_key(&src) {
            if let Some(old) = self.order.pop_front() {
                self.sources.remove(&old);
            }
        }
        match self.sources.entry(src) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                self.order.push_back(src);
                v.insert(Source::new(now))
            }
        }
    }
}

/// Whether `dst` is one host's address: not multicast, not the limited broadcast.
fn unicast(dst: IpAddr) -> bool {
    match canonical(dst) {
        IpAddr::V4(a) => !a.is_multicast() && !a.is_broadcast() && !a.is_unspecified(),
        IpAddr::V6(a) => !a.is_multicast() && !a.is_unspecified(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::probe::{ScanKind, TcpFlags};
    use proptest::prelude::*;

    fn cfg(trigger: u32) -> DetectorConfig {
        DetectorConfig {
            trigger,
            window: Duration::from_secs(60),
            tcp: Action::Block,
            udp: Action::Off,
            hold: Duration::from_secs(3600),
            max_sources: 1000,
            score: 0,
            ipv6_prefix: 64,
            spare_clients: true,
        }
    }

    fn score_cfg(score: u32) -> DetectorConfig {
        DetectorConfig { score, ..cfg(0) }
    }

    fn probe(src: &str, port: u16, kind: ScanKind) -> Probe {
        Probe::example(src, port, kind)
    }

    fn ignore() -> IgnoreList {
        IgnoreList::new([
            "127.0.0.0/8".parse().unwrap(),
            "192.0.2.3/32".parse().unwrap(),
        ])
    }

    #[test]
    fn per_source_state_stays_small() {
        // 131,072 tracked sources must fit well inside 64 MiB with the hash table around them.
        assert!(
            std::mem::size_of::<Source>() <= 48,
            "{}",
            std::mem::size_of::<Source>()
        );
    }

    #[test]
    fn trigger_zero_and_one_act_on_first_hit() {
        for t in [0, 1] {
            let mut d = Detector::new(cfg(t), ignore());
            let now = Instant::now();
            assert_eq!(
                d.observe(&probe("192.0.2.2", 111, ScanKind::Syn), now),
                Decision::Act {
                    action: Action::Block,
                    hits: 1
                }
            );
            assert_eq!(
                d.observe(&probe("192.0.2.2", 112, ScanKind::Syn), now),
                Decision::Repeat
            );
        }
    }

    #[test]
    fn trigger_three_acts_on_third_hit_and_action_follows_protocol() {
        let mut d = Detector::new(cfg(3), ignore());
        let now = Instant::now();
        let p = probe("2001:db8::2", 161, ScanKind::Udp);
        assert_eq!(d.observe(&p, now), Decision::Count { hits: 1 });
        assert_eq!(d.observe(&p, now), Decision::Count { hits: 2 });
        assert_eq!(
            d.observe(&p, now),
            Decision::Act {
                action: Action::Off,
                hits: 3
            }
        );
    }

    #[test]
    fn hits_outside_the_window_are_forgotten() {
        let mut d = Detector::new(cfg(2), ignore());
        let t0 = Instant::now();
        let p = probe("192.0.2.2", 1, ScanKind::Fin);
        assert_eq!(d.observe(&p, t0), Decision::Count { hits: 1 });
        assert_eq!(
            d.observe(&p, t0 + Duration::from_secs(61)),
            Decision::Count { hits: 1 }
        );
        assert!(matches!(
            d.observe(&p, t0 + Duration::from_secs(62)),
            Decision::Act { .. }
        ));
    }

    #[test]
    fn acts_again_after_hold_expires() {
        let mut d = Detector::new(cfg(0), ignore());
        let t0 = Instant::now();
        let p = probe("192.0.2.2", 1, ScanKind::Null);
        assert!(matches!(d.observe(&p, t0), Decision::Act { .. }));
        assert_eq!(
            d.observe(&p, t0 + Duration::from_secs(3599)),
            Decision::Repeat
        );
        assert!(matches!(
            d.observe(&p, t0 + Duration::from_secs(3601)),
            Decision::Act { .. }
        ));
    }

    #[test]
    fn ignored_and_mapped_sources_pass() {
        let mut d = Detector::new(cfg(0), ignore());
        let now = Instant::now();
        assert_eq!(
            d.observe(&probe("192.0.2.3", 1, ScanKind::Syn), now),
            Decision::Pass
        );
        assert_eq!(
            d.observe(&probe("::ffff:192.0.2.3", 1, ScanKind::Syn), now),
            Decision::Pass
        );
        assert_eq!(
            d.observe(&probe("127.0.0.9", 1, ScanKind::Syn), now),
            Decision::Pass
        );
    }

    #[test]
    fn broadcast_and_multicast_packets_are_not_probes() {
        let mut d = Detector::new(cfg(0), ignore());
        let now = Instant::now();
        for dst in [
            "255.255.255.255",
            "224.0.0.1",
            "ff02::1",
            "::ffff:224.0.0.9",
        ] {
            let p = Probe {
                dst: dst.parse().unwrap(),
                ..probe("192.0.2.2", 9, ScanKind::Udp)
            };
            assert_eq!(d.observe(&p, now), Decision::Pass, "{dst}");
        }
        assert_eq!(d.tracked(), 0);
    }

    #[test]
    fn rotating_through_an_ipv6_prefix_is_one_source_and_mapped_is_v4() {
        let mut d = Detector::new(cfg(3), ignore());
        let now = Instant::now();
        for (i, a) in ["2001:db8:7::1", "2001:db8:7::2", "2001:db8:7::3"]
            .iter()
            .enumerate()
        {
            let dec = d.observe(&probe(a, 10 + i as u16, ScanKind::Syn), now);
            assert_eq!(matches!(dec, Decision::Act { .. }), i == 2, "{a}: {dec:?}");
        }
        let mut d = Detector::new(cfg(2), ignore());
        d.observe(&probe("::ffff:198.18.0.9", 1, ScanKind::Syn), now);
        assert!(matches!(
            d.observe(&probe("198.18.0.9", 2, ScanKind::Syn), now),
            Decision::Act { .. }
        ));
        assert_eq!(d.tracked(), 1);
    }

    #[test]
    fn backscatter_is_discarded() {
        let mut d = Detector::new(cfg(0), ignore());
        let rst = ScanKind::classify_tcp(TcpFlags(TcpFlags::RST));
        assert_eq!(
            d.observe(&probe("192.0.2.2", 1, rst), Instant::now()),
            Decision::Discard
        );
        assert_eq!(d.tracked(), 0);
    }

    #[test]
    fn a_live_client_is_spared_and_reported_at_most_once_a_quiet_period() {
        let mut d = Detector::new(cfg(0), ignore());
        let t0 = Instant::now();
        let forged = Probe {
            live_client: true,
            ..probe("192.0.2.5", 1, ScanKind::Syn)
        };
        assert_eq!(
            d.observe(&forged, t0),
            Decision::Spare {
                action: Action::Block,
                hits: 1
            }
        );
        // A thousand more in its name: counted, not reported again.
        for i in 0..1000u16 {
            assert_eq!(
                d.observe(
                    &Probe {
                        dst_port: i,
                        ..forged
                    },
                    t0
                ),
                Decision::Repeat
            );
        }
        assert!(matches!(
            d.observe(&forged, t0 + SPARE_QUIET + Duration::from_secs(1)),
            Decision::Spare { .. }
        ));
        // Its verdict is still a drop: nothing is learned through it.
        assert_eq!(
            Decision::Spare {
                action: Action::Block,
                hits: 1
            }
            .verdict(),
            Verdict::Drop
        );
        // Once it holds no live connection, the same address is a scanner like any other.
        let later = t0 + SPARE_QUIET * 3;
        assert!(matches!(
            d.observe(&probe("192.0.2.5", 1, ScanKind::Syn), later),
            Decision::Act { .. }
        ));
    }

    #[test]
    fn a_scanner_sharing_a_live_clients_ipv6_network_is_still_one_source() {
        // The block covers its address alone (the responder's `probe_key`), but rotating
        // through the /64 does not make a new source of each address: one block, then
        // repeats (dropped), not a block and a history line per address.
        let mut d = Detector::new(cfg(0), ignore());
        let now = Instant::now();
        let near = |a| Probe {
            client_net: true,
            ..probe(a, 1, ScanKind::Syn)
        };
        assert!(matches!(
            d.observe(&near("2001:db8::2"), now),
            Decision::Act { .. }
        ));
        assert_eq!(d.observe(&near("2001:db8::7"), now), Decision::Repeat);
        // Without a client there, the /64 is one source.
        assert!(matches!(
            d.observe(&probe("2001:db8:1::2", 1, ScanKind::Syn), now),
            Decision::Act { .. }
        ));
        assert_eq!(
            d.observe(&probe("2001:db8:1::7", 1, ScanKind::Syn), now),
            Decision::Repeat
        );
    }

    #[test]
    fn sparing_can_be_turned_off() {
        let cfg = DetectorConfig {
            spare_clients: false,
            ..cfg(0)
        };
        let mut d = Detector::new(cfg, ignore());
        let p = Probe {
            live_client: true,
            ..probe("192.0.2.5", 1, ScanKind::Syn)
        };
        assert!(matches!(
            d.observe(&p, Instant::now()),
            Decision::Act { .. }
        ));
    }

    #[test]
    fn a_second_protocol_from_a_source_is_acted_on_once_more() {
        // Log-only TCP and UDP (BLOCK_TCP="0", BLOCK_UDP="0"): 1.2's two sentries each
        // reported the source, and fail2ban counts both history lines.
        let cfg = DetectorConfig {
            tcp: Action::Off,
            udp: Action::Off,
            ..cfg(0)
        };
        let mut d = Detector::new(cfg, ignore());
        let now = Instant::now();
        let tcp = probe("192.0.2.2", 11, ScanKind::Syn);
        let udp = probe("192.0.2.2", 11, ScanKind::Udp);
        assert!(matches!(d.observe(&tcp, now), Decision::Act { .. }));
        assert_eq!(d.observe(&tcp, now), Decision::Repeat);
        assert_eq!(
            d.observe(&udp, now),
            Decision::Act {
                action: Action::Off,
                hits: 2
            }
        );
        assert_eq!(d.observe(&udp, now), Decision::Repeat);
        assert_eq!(d.observe(&tcp, now), Decision::Repeat);
    }

    #[test]
    fn udp_blocks_after_tcp_was_only_reported() {
        // tcp = "off", udp = "block": the UDP probe must block, not be a repeat of the
        // TCP report.
        let cfg = DetectorConfig {
            tcp: Action::Off,
            udp: Action::Block,
            ..cfg(0)
        };
        let mut d = Detector::new(cfg, ignore());
        let now = Instant::now();
        assert!(matches!(
            d.observe(&probe("192.0.2.2", 11, ScanKind::Syn), now),
            Decision::Act {
                action: Action::Off,
                ..
            }
        ));
        assert!(matches!(
            d.observe(&probe("192.0.2.2", 11, ScanKind::Udp), now),
            Decision::Act {
                action: Action::Block,
                ..
            }
        ));
    }

    #[test]
    fn retract_lets_the_next_probe_act() {
        let mut d = Detector::new(cfg(0), ignore());
        let now = Instant::now();
        let p = probe("192.0.2.2", 1, ScanKind::Syn);
        assert!(matches!(d.observe(&p, now), Decision::Act { .. }));
        d.retract(&p);
        assert!(matches!(d.observe(&p, now), Decision::Act { .. }));
    }

    #[test]
    fn table_is_bounded_and_evicts_oldest() {
        let mut c = cfg(2);
        c.max_sources = 100;
        let mut d = Detector::new(c, ignore());
        let now = Instant::now();
        for i in 0..1000u32 {
            let a = std::net::Ipv4Addr::from(0xC612_0000 + i); // 198.18.0.0/15
            d.observe(&probe(&a.to_string(), 1, ScanKind::Syn), now);
        }
        assert_eq!(d.tracked(), 100);
        // The newest source still has its first hit; the oldest was forgotten.
        let newest = std::net::Ipv4Addr::from(0xC612_0000 + 999u32).to_string();
        assert!(matches!(
            d.observe(&probe(&newest, 1, ScanKind::Syn), now),
            Decision::Act { .. }
        ));
        let oldest = std::net::Ipv4Addr::from(0xC612_0000u32).to_string();
        assert_eq!(
            d.observe(&probe(&oldest, 1, ScanKind::Syn), now),
            Decision::Count { hits: 1 }
        );
    }

    #[test]
    fn score_counts_distinct_ports_with_low_ports_weighing_more() {
        let mut d = Detector::new(score_cfg(21), ignore());
        let now = Instant::now();
        // The same port again and again is one port: a stray retransmission never blocks.
        for _ in 0..50 {
            assert!(matches!(
                d.observe(&probe("192.0.2.2", 25, ScanKind::Syn), now),
                Decision::Count { .. }
            ));
        }
        // 6 more low ports: 7 × 3 = 21.
        for p in 1..=5 {
            assert!(matches!(
                d.observe(&probe("192.0.2.2", p, ScanKind::Syn), now),
                Decision::Count { .. }
            ));
        }
        assert!(matches!(
            d.observe(&probe("192.0.2.2", 6, ScanKind::Syn), now),
            Decision::Act { .. }
        ));
    }

    proptest! {
        /// Score mode with high ports (weight 1): N distinct ports in the window act,
        /// N-1 do not, and the order they come in does not matter.
        #[test]
        fn n_distinct_ports_act_in_any_order(
            n in 2u32..=16,
            mut ports in proptest::sample::subsequence((1024u16..1100).collect::<Vec<_>>(), 16),
            seed in any::<u64>(),
        ) {
            ports.truncate(n as usize);
            // A permutation from the seed.
            let len = ports.len();
            for i in (1..len).rev() {
                ports.swap(i, (seed.wrapping_mul(i as u64 + 7) % (i as u64 + 1)) as usize);
            }
            let mut d = Detector::new(score_cfg(n), ignore());
            let now = Instant::now();
            for (i, p) in ports.iter().enumerate() {
                let dec = d.observe(&probe("198.18.0.7", *p, ScanKind::Fin), now + Duration::from_millis(i as u64));
                if i + 1 < len {
                    prop_assert!(matches!(dec, Decision::Count { .. }), "port {} of {}: {:?}", i + 1, len, dec);
                } else {
                    prop_assert!(matches!(dec, Decision::Act { .. }), "last port: {:?}", dec);
                }
            }
        }

        /// With trigger N, the Nth hit inside the window acts and N-1 hits never do,
        /// whatever the ports and their order.
        #[test]
        fn nth_hit_acts(n in 1u32..20, ports in proptest::collection::vec(1u16..1024, 20)) {
            let mut d = Detector::new(cfg(n), ignore());
            let now = Instant::now();
            for (i, port) in ports.iter().take(n as usize).enumerate() {
                let dec = d.observe(&probe("198.18.0.1", *port, ScanKind::Syn), now);
                if (i as u32) + 1 < n {
                    prop_assert_eq!(dec, Decision::Count { hits: i as u32 + 1 });
                } else {
                    prop_assert!(matches!(dec, Decision::Act { .. }), "expected Act, got {:?}", dec);
                }
            }
        }

        #[test]
        fn ignored_sources_never_act(last in 0u8..=255, kinds in proptest::collection::vec(0u8..=255, 1..50)) {
            let mut d = Detector::new(cfg(0), IgnoreList::new(["192.0.2.0/24".parse().unwrap()]));
            let src = format!("192.0.2.{last}");
            for f in kinds {
                let dec = d.observe(&probe(&src, 7, ScanKind::classify_tcp(TcpFlags(f))), Instant::now());
                prop_assert_eq!(dec, Decision::Pass);
            }
        }
    }
}
