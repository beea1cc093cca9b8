//! The fleet's blocks, pure: CrowdSec decisions (ban, scope Ip or Range) in, the elements
//! of our fleet sets (`fleet4`, `fleet6`) out. Time is passed in.
//!
//! Rules (portsentry.toml(5) and the README say the same to administrators):
//! - A decision whose network holds anything protected (the host's own addresses,
//!   gateways, resolvers, ignore list, loopback…), or is wider than a /8 (a /16 for
//!   IPv6), is refused whole, and said once.
//! - The same decision seen again changes nothing; a network held by several decisions
//!   stays blocked until the last of them ends or is deleted.
//! - Fleet blocks are kept apart from this host's own: they never count against
//!   `max_blocked`, never evict or get evicted, and a deletion in the LAPI lifts only them.
//! - The kernel's interval sets hold no overlapping elements: a network inside a wider one
//!   is not written while the wider one stands, and is written when it goes.
//! - At most `max` decisions are held: a flood from a hostile or misconfigured LAPI costs
//!   bounded memory, the excess is counted.

use crate::core::block::{clamp_timeout, Block, Origin, Record, Set};
use crate::core::ignore::IgnoreList;
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

/// The widest networks a decision may ban: past them it is a mistake or an attack, not a
/// scanner's network (and would take the host's upstream with it).
pub const WIDEST_V4: u8 = 8;
pub const WIDEST_V6: u8 = 16;

/// Whether `net` is wider than a decision may ban.
pub fn too_wide(net: IpNet) -> bool {
    let floor = if net.addr().is_ipv4() {
        WIDEST_V4
    } else {
        WIDEST_V6
    };
    net.prefix_len() < floor
}

/// Refused decision ids remembered so each is said once (cleared when full).
const MAX_REFUSED_IDS: usize = 65_536;

/// One ban from the LAPI, as the fleet layer read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub id: u64,
    pub net: IpNet,
    /// Epoch seconds.
    pub expires: u64,
    /// What `list` shows: the scenario and the decision's origin, bounded and printable.
    pub reason: String,
}

/// A network some decision bans.
#[derive(Clone, Debug)]
struct Entry {
    /// Decision ids holding it.
    holders: Vec<u64>,
    /// Expiry remembered from the state file, until the first full sync says otherwise.
    remembered: Option<u64>,
    /// The latest expiry of its holders.
    expires: u64,
    since: u64,
    reason: String,
}

/// Networks ordered by family, start and length: what lies inside a network is a range.
type NetKey = (u8, u128, u8);

fn key(net: IpNet) -> NetKey {
    match net.trunc() {
        IpNet::V4(n) => (4, u32::from(n.network()).into(), n.prefix_len()),
        IpNet::V6(n) => (6, u128::from(n.network()), n.prefix_len()),
    }
}

fn net_of((fam, start, len): NetKey) -> Option<IpNet> {
    match fam {
        4 => ipnet::Ipv4Net::new(u32::try_from(start).ok()?.into(), len)
            .ok()
            .map(IpNet::V4),
        _ => ipnet::Ipv6Net::new(start.into(), len).ok().map(IpNet::V6),
    }
}

/// The last address of a network, as a number.
fn end_of(net: IpNet) -> u128 {
    match net.trunc() {
        IpNet::V4(n) => u32::from(n.broadcast()).into(),
        IpNet::V6(n) => n.broadcast().into(),
    }
}

/// What to write to the fleet sets.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FleetPlan {
    /// Elements to delete first (a changed timeout is a delete and an add: kernels before
    /// 6.x do not update an element's timeout in place).
    pub remove: Vec<IpNet>,
    pub add: Vec<Block>,
}

impl FleetPlan {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.add.is_empty()
    }
}

/// What taking in decisions came to, for the caller's log and counters.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Taken {
    /// New bans held.
    pub added: usize,
    /// Bans lifted.
    pub deleted: usize,
    /// Refused for the first time (protected, or too wide): to be logged, once.
    pub refused: Vec<Decision>,
    /// Left out because `max` decisions are held.
    pub over_cap: u64,
}

#[derive(Debug)]
pub struct FleetBook {
    max: usize,
    decisions: HashMap<u64, (IpNet, u64)>,
    /// (expires, id), soonest first.
    expiry: BTreeSet<(u64, u64)>,
    entries: BTreeMap<NetKey, Entry>,
    /// How many entries of each family (0: v4, 1: v6) and length: the wider networks of a
    /// network are looked up only at lengths in use.
    lens: [[u32; 129]; 2],
    /// What the fleet sets hold, as far as we wrote them: network → expiry.
    kernel: HashMap<IpNet, u64>,
    /// Networks whose element may differ from what it should be.
    dirty: BTreeSet<NetKey>,
    refused: HashSet<u64>,
    changed: bool,
}

impl FleetBook {
    pub fn new(max: usize) -> FleetBook {
        FleetBook {
            max: max.max(1),
            decisions: HashMap::new(),
            expiry: BTreeSet::new(),
            entries: BTreeMap::new(),
            lens: [[0; 129]; 2],
            kernel: HashMap::new(),
            dirty: BTreeSet::new(),
            refused: HashSet::new(),
            changed: false,
        }
    }

    pub fn set_max(&mut self, max: usize) {
        self.max = max.max(1);
    }

    /// Decisions held.
    pub fn decisions(&self) -> usize {
        self.decisions.len()
    }

    /// Elements in the fleet sets.
    pub fn blocked(&self) -> usize {
        self.kernel.len()
    }

    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Takes in a delta: new bans, and the ids of deleted ones. Repeats change nothing.
    pub fn apply(
        &mut self,
        new: Vec<Decision>,
        deleted: &[u64],
        protected: &IgnoreList,
        now: u64,
    ) -> Taken {
        let mut taken = Taken::default();
        for id in deleted {
            if self.drop_decision(*id) {
                taken.deleted += 1;
            }
        }
        for d in new {
            if d.expires <= now || self.decisions.contains_key(&d.id) {
                continue;
            }
            if too_wide(d.net) || protected.overlaps(d.net) {
                if self.refused.len() >= MAX_REFUSED_IDS {
                    self.refused.clear();
                }
                if self.refused.insert(d.id) {
                    taken.refused.push(d);
                }
                continue;
            }
            if self.decisions.len() >= self.max {
                taken.over_cap += 1;
                continue;
            }
            let net = d.net.trunc();
            self.decisions.insert(d.id, (net, d.expires));
            self.expiry.insert((d.expires, d.id));
            let k = key(net);
            let entry = self.entries.entry(k).or_insert_with(|| Entry {
                holders: Vec::new(),
                remembered: None,
                expires: 0,
                since: now,
                reason: String::new(),
            });
            let fresh = entry.holders.is_empty() && entry.remembered.is_none();
            entry.holders.push(d.id);
            if d.expires >= entry.expires {
                entry.reason = d.reason;
            }
            entry.expires = entry.expires.max(d.expires);
            if fresh {
                self.lens[fam_index(k)][usize::from(k.2)] += 1;
            }
            self.touch(net);
            taken.added += 1;
        }
        taken
    }

    /// Replaces everything with a full list (the stream's startup answer): what the LAPI
    /// no longer holds goes, what was remembered from the state file is confirmed or goes.
    pub fn sync(&mut self, all: Vec<Decision>, protected: &IgnoreList, now: u64) -> Taken {
        let before: Vec<NetKey> = self.entries.keys().copied().collect();
        self.dirty.extend(before);
        self.dirty.extend(self.kernel.keys().map(|n| key(*n)));
        self.decisions.clear();
        self.expiry.clear();
        self.entries.clear();
        self.lens = [[0; 129]; 2];
        self.changed = true;
        self.apply(all, &[], protected, now)
    }

    /// Drops what ended at `now`; the kernel has timed out the elements itself.
    pub fn prune(&mut self, now: u64) {
        while let Some(&(e, id)) = self.expiry.first() {
            if e > now {
                break;
            }
            self.drop_decision(id);
        }
        let ended: Vec<NetKey> = self
            .entries
            .iter()
            .filter(|(_, e)| e.holders.is_empty() && e.remembered.is_some_and(|r| r <= now))
            .map(|(k, _)| *k)
            .collect();
        for k in ended {
            self.remove_entry(k);
        }
        let before = self.kernel.len();
        self.kernel.retain(|_, e| *e > now);
        if self.kernel.len() != before {
            self.changed = true;
        }
    }

    /// Drops the networks that overlap `protected` now (the host's addresses changed).
    pub fn reprotect(&mut self, protected: &IgnoreList) {
        let hit: Vec<NetKey> = self
            .entries
            .keys()
            .filter(|k| net_of(**k).is_some_and(|n| protected.overlaps(n)))
            .copied()
            .collect();
        for k in hit {
            if let Some(e) = self.entries.get(&k) {
                for id in e.holders.clone() {
                    if let Some((_, exp)) = self.decisions.remove(&id) {
                        self.expiry.remove(&(exp, id));
                    }
                }
            }
            self.remove_entry(k);
        }
    }

    /// The writes that make the fleet sets what the decisions say. Call `commit` with what
    /// the kernel refused.
    pub fn plan(&mut self, now: u64) -> FleetPlan {
        let mut plan = FleetPlan::default();
        for k in std::mem::take(&mut self.dirty) {
            let Some(net) = net_of(k) else { continue };
            let want = self
                .entries
                .get(&k)
                .filter(|e| e.expires > now && !self.covered(k))
                .map(|e| e.expires);
            let have = self.kernel.get(&net).copied();
            if want == have {
                continue;
            }
            if have.is_some() {
                plan.remove.push(net);
            }
            if let Some(e) = want {
                plan.add.push(Block {
                    net,
                    timeout: Some(clamp_timeout(Duration::from_secs(e - now))),
                    set: Set::Fleet,
                });
            }
        }
        plan
    }

    /// Records what was written: `removed` whether the deletions went through, `failed` the
    /// additions the kernel refused (both tried again at the next plan).
    pub fn commit(&mut self, plan: &FleetPlan, removed: bool, failed: &[IpNet], now: u64) {
        if removed {
            for n in &plan.remove {
                self.kernel.remove(n);
            }
        } else {
            self.dirty.extend(plan.remove.iter().map(|n| key(*n)));
        }
        for b in &plan.add {
            if failed.contains(&b.net) || (!removed && plan.remove.contains(&b.net)) {
                self.dirty.insert(key(b.net));
            } else {
                let secs = b.timeout.map_or(0, |t| t.as_secs());
                self.kernel.insert(b.net, now.saturating_add(secs));
            }
        }
        self.changed = true;
    }

    /// Plans, has `write` carry the plan out (it answers whether the deletions went
    /// through, and which additions the kernel refused), and records the outcome.
    pub fn write(
        &mut self,
        now: u64,
        write: impl FnOnce(&FleetPlan) -> (bool, Vec<IpNet>),
    ) -> FleetPlan {
        self.prune(now);
        let plan = self.plan(now);
        if !plan.is_empty() {
            let (removed, failed) = write(&plan);
            self.commit(&plan, removed, &failed, now);
        }
        plan
    }

    /// Lifts every network that holds `net` or lies inside it, with their decisions
    /// (`portsentry unblock`): until the LAPI sends them again. Returns how many.
    pub fn lift(&mut self, net: IpNet) -> usize {
        let k = key(net);
        let (fam, start, len) = k;
        let bits: u8 = if fam == 4 { 32 } else { 128 };
        let mut hit: Vec<NetKey> = (0..=len.min(bits))
            .map(|l| (fam, start & mask(bits, l), l))
            .filter(|k| self.entries.contains_key(k))
            .collect();
        hit.extend(
            self.entries
                .range((fam, start, len)..=(fam, end_of(net), 128))
                .map(|(k, _)| *k)
                .filter(|k| k.2 > len),
        );
        hit.sort_unstable();
        hit.dedup();
        for k in &hit {
            if let Some(e) = self.entries.get(k) {
                for id in e.holders.clone() {
                    if let Some((_, exp)) = self.decisions.remove(&id) {
                        self.expiry.remove(&(exp, id));
                    }
                }
            }
            self.remove_entry(*k);
        }
        hit.len()
    }

    /// Every element the fleet sets should hold, with the time it has left: what a rebuilt
    /// table gets back.
    pub fn restore(&mut self, now: u64) -> Vec<Block> {
        self.prune(now);
        self.kernel
            .iter()
            .map(|(net, e)| Block {
                net: *net,
                timeout: Some(clamp_timeout(Duration::from_secs(e.saturating_sub(now)))),
                set: Set::Fleet,
            })
            .collect()
    }

    /// Up to `n` elements that should be in the fleet sets and are not about to end.
    pub fn sample(&self, n: usize, now: u64) -> Vec<IpNet> {
        self.kernel
            .iter()
            .filter(|(_, e)| **e > now.saturating_add(1))
            .map(|(k, _)| *k)
            .take(n)
            .collect()
    }

    /// The record `list` shows for an element of the fleet sets.
    pub fn get(&self, net: IpNet) -> Option<Record> {
        let k = key(net);
        self.entries.get(&k).map(|e| record(net.trunc(), e))
    }

    /// Every network held, for the state file.
    pub fn records(&self) -> Vec<Record> {
        self.entries
            .iter()
            .filter_map(|(k, e)| Some(record(net_of(*k)?, e)))
            .collect()
    }

    /// Takes records remembered from an earlier run: enforced (and put back in the sets)
    /// until the first full sync with the LAPI confirms or lifts them.
    pub fn load(&mut self, records: Vec<Record>, protected: &IgnoreList, now: u64) {
        for r in records {
            let Some(expires) = r.expires.filter(|e| *e > now) else {
                continue;
            };
            if protected.overlaps(r.key) || self.entries.len() >= self.max {
                continue;
            }
            let k = key(r.key);
            if self.entries.contains_key(&k) {
                continue;
            }
            self.lens[fam_index(k)][usize::from(k.2)] += 1;
            self.entries.insert(
                k,
                Entry {
                    holders: Vec::new(),
                    remembered: Some(expires),
                    expires,
                    since: r.since,
                    reason: r.reason.to_string(),
                },
            );
            self.dirty.insert(k);
        }
        // What the sets held before the restart is what gets put back now.
        let keys: Vec<NetKey> = self.entries.keys().copied().collect();
        for k in keys {
            if let (Some(net), false) = (net_of(k), self.covered(k)) {
                self.kernel.insert(net, self.entries[&k].expires);
            }
        }
        self.changed = false;
    }

    fn drop_decision(&mut self, id: u64) -> bool {
        let Some((net, exp)) = self.decisions.remove(&id) else {
            return false;
        };
        self.expiry.remove(&(exp, id));
        let k = key(net);
        if let Some(e) = self.entries.get_mut(&k) {
            e.holders.retain(|h| *h != id);
            if e.holders.is_empty() && e.remembered.is_none() {
                self.remove_entry(k);
            } else {
                let latest = e
                    .holders
                    .iter()
                    .filter_map(|h| self.decisions.get(h).map(|(_, x)| *x))
                    .chain(e.remembered)
                    .max()
                    .unwrap_or(0);
                e.expires = latest;
                self.touch(net);
            }
        }
        true
    }

    fn remove_entry(&mut self, k: NetKey) {
        if self.entries.remove(&k).is_some() {
            self.lens[fam_index(k)][usize::from(k.2)] -= 1;
        }
        if let Some(net) = net_of(k) {
            self.touch(net);
        }
    }

    /// Marks `net` and every network inside it for a look at the next plan: its coverage
    /// of them may have changed.
    fn touch(&mut self, net: IpNet) {
        let k = key(net);
        self.changed = true;
        self.dirty.insert(k);
        let (fam, start, len) = k;
        let end = end_of(net);
        let inside: Vec<NetKey> = self
            .entries
            .range((fam, start, len)..=(fam, end, 128))
            .map(|(k, _)| *k)
            .filter(|k| k.2 > len)
            .collect();
        // Elements inside it are entries inside it: a removed entry was marked itself.
        self.dirty.extend(inside);
    }

    /// Whether a wider network than `k` is held.
    fn covered(&self, k: NetKey) -> bool {
        let (fam, start, len) = k;
        let bits: u8 = if fam == 4 { 32 } else { 128 };
        (0..len)
            .filter(|l| self.lens[fam_index(k)][usize::from(*l)] > 0)
            .any(|l| self.entries.contains_key(&(fam, start & mask(bits, l), l)))
    }
}

/// The network mask of length `len` in a `bits`-bit address space, as a number.
fn mask(bits: u8, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        (u128::MAX << (bits - len.min(bits))) & (u128::MAX >> (128 - bits))
    }
}

fn fam_index(k: NetKey) -> usize {
    usize::from(k.0 == 6)
}

fn record(net: IpNet, e: &Entry) -> Record {
    Record {
        key: net,
        since: e.since,
        expires: Some(e.expires),
        count: u32::try_from(e.holders.len().max(1)).unwrap_or(u32::MAX),
        reason: e.reason.as_str().into(),
        origin: Origin::Fleet,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        crate::core::ignore::parse_net(s).unwrap()
    }

    fn ban(id: u64, s: &str, expires: u64) -> Decision {
        Decision {
            id,
            net: net(s),
            expires,
            reason: "portsentry/port-scan (crowdsec)".into(),
        }
    }

    fn protected() -> IgnoreList {
        let mut nets = crate::core::ignore::always_protected();
        nets.extend([net("192.0.2.1"), net("192.0.2.254"), net("2001:db8::1")]);
        IgnoreList::new(nets)
    }

    /// Plans and commits as if the kernel took everything: the fleet sets after it.
    fn write(b: &mut FleetBook, now: u64) -> FleetPlan {
        let plan = b.plan(now);
        b.commit(&plan, true, &[], now);
        plan
    }

    fn held(b: &FleetBook) -> Vec<String> {
        let mut v: Vec<String> = b.kernel.keys().map(|n| n.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn repeated_deltas_change_nothing() {
        let mut b = FleetBook::new(100);
        let p = protected();
        let t = b.apply(vec![ban(1, "198.18.0.7", 2000)], &[], &p, 1000);
        assert_eq!(t.added, 1);
        let plan = write(&mut b, 1000);
        assert_eq!(plan.add.len(), 1);
        assert_eq!(plan.add[0].timeout, Some(Duration::from_secs(1000)));
        assert_eq!(plan.add[0].set, Set::Fleet);
        // The same "new" again, and a deletion of an id never seen: nothing to write.
        let t = b.apply(vec![ban(1, "198.18.0.7", 2000)], &[99], &p, 1001);
        assert_eq!((t.added, t.deleted), (0, 0));
        assert!(write(&mut b, 1001).is_empty());
        // Deleted, then the deletion repeated (the LAPI repeats it for a while).
        b.apply(vec![], &[1], &p, 1002);
        assert_eq!(write(&mut b, 1002).remove, vec![net("198.18.0.7")]);
        let t = b.apply(vec![], &[1], &p, 1003);
        assert_eq!(t.deleted, 0);
        assert!(write(&mut b, 1003).is_empty());
        assert!(held(&b).is_empty());
    }

    #[test]
    fn protected_networks_are_refused_and_said_once() {
        let mut b = FleetBook::new(100);
        let p = protected();
        let bad = vec![
            ban(1, "192.0.2.1", 2000),   // the host itself
            ban(2, "192.0.2.254", 2000), // its gateway
            ban(3, "0.0.0.0/0", 2000),
            ban(4, "::/0", 2000),
            ban(5, "192.0.2.0/24", 2000), // a range over the host's LAN
            ban(6, "127.0.0.1", 2000),
            ban(7, "64.0.0.0/2", 2000), // nothing protected in it, but a quarter of IPv4
            ban(8, "4000::/2", 2000),
        ];
        let t = b.apply(bad.clone(), &[], &p, 1000);
        assert_eq!(t.refused.len(), 8);
        assert_eq!(
            b.apply(vec![ban(9, "10.0.0.0/8", 2000)], &[], &p, 1000)
                .added,
            1
        );
        assert_eq!(t.added, 0);
        // Repeated by the next delta or a full sync: not said again.
        assert!(b.apply(bad.clone(), &[], &p, 1001).refused.is_empty());
        assert!(b.sync(bad, &p, 1002).refused.is_empty());
        assert!(write(&mut b, 1002).is_empty());
    }

    #[test]
    fn a_network_held_by_two_decisions_stays_until_both_go() {
        let mut b = FleetBook::new(100);
        let p = protected();
        b.apply(
            vec![ban(1, "198.18.0.7", 2000), ban(2, "198.18.0.7", 5000)],
            &[],
            &p,
            1000,
        );
        let plan = write(&mut b, 1000);
        assert_eq!(plan.add[0].timeout, Some(Duration::from_secs(4000)));
        // The longer one deleted: the element is rewritten with the shorter time left.
        b.apply(vec![], &[2], &p, 1010);
        let plan = write(&mut b, 1010);
        assert_eq!(plan.remove, vec![net("198.18.0.7")]);
        assert_eq!(plan.add[0].timeout, Some(Duration::from_secs(990)));
        b.apply(vec![], &[1], &p, 1020);
        assert_eq!(write(&mut b, 1020).add, vec![]);
        assert!(held(&b).is_empty());
    }

    #[test]
    fn ranges_swallow_addresses_inside_and_give_them_back() {
        let mut b = FleetBook::new(100);
        let p = protected();
        b.apply(
            vec![ban(1, "198.18.0.7", 3000), ban(2, "2001:db8:5::/64", 3000)],
            &[],
            &p,
            1000,
        );
        write(&mut b, 1000);
        b.apply(
            vec![
                ban(3, "198.18.0.0/24", 2000),
                ban(4, "2001:db8:5::/48", 2000),
            ],
            &[],
            &p,
            1001,
        );
        let plan = write(&mut b, 1001);
        assert_eq!(plan.remove.len(), 2, "{plan:?}");
        assert_eq!(held(&b), ["198.18.0.0/24", "2001:db8:5::/48"]);
        // The ranges deleted: the narrower decisions are enforced again.
        b.apply(vec![], &[3, 4], &p, 1002);
        write(&mut b, 1002);
        assert_eq!(held(&b), ["198.18.0.7/32", "2001:db8:5::/64"]);
        // A range that ends on its own gives them back too.
        b.apply(vec![ban(5, "198.18.0.0/16", 1100)], &[], &p, 1003);
        write(&mut b, 1003);
        assert_eq!(held(&b), ["198.18.0.0/16", "2001:db8:5::/64"]);
        b.prune(1100);
        write(&mut b, 1100);
        assert_eq!(held(&b), ["198.18.0.7/32", "2001:db8:5::/64"]);
    }

    #[test]
    fn a_full_sync_lifts_what_the_lapi_no_longer_holds() {
        let mut b = FleetBook::new(100);
        let p = protected();
        b.apply(
            vec![ban(1, "198.18.0.1", 3000), ban(2, "198.18.0.2", 3000)],
            &[],
            &p,
            1000,
        );
        write(&mut b, 1000);
        b.sync(
            vec![ban(2, "198.18.0.2", 3000), ban(3, "198.18.0.3", 3000)],
            &p,
            1010,
        );
        let plan = write(&mut b, 1010);
        assert_eq!(plan.remove, vec![net("198.18.0.1")]);
        assert_eq!(held(&b), ["198.18.0.2/32", "198.18.0.3/32"]);
        assert_eq!(b.decisions(), 2);
    }

    #[test]
    fn remembered_blocks_are_enforced_until_the_first_sync() {
        let mut a = FleetBook::new(100);
        let p = protected();
        a.apply(
            vec![ban(1, "198.18.0.1", 3000), ban(2, "198.18.0.0/24", 2500)],
            &[],
            &p,
            1000,
        );
        write(&mut a, 1000);
        let saved = a.records();
        assert!(saved.iter().all(|r| r.origin == Origin::Fleet));
        // A restart with the LAPI down: the sets get back what they held.
        let mut b = FleetBook::new(100);
        b.load(saved, &p, 1100);
        let back: Vec<String> = b.restore(1100).iter().map(|x| x.net.to_string()).collect();
        assert_eq!(back, ["198.18.0.0/24"]);
        assert!(write(&mut b, 1100).is_empty());
        // The LAPI is back and holds only the address: the range goes, the address shows.
        b.sync(vec![ban(1, "198.18.0.1", 3000)], &p, 1200);
        write(&mut b, 1200);
        assert_eq!(held(&b), ["198.18.0.1/32"]);
    }

    #[test]
    fn the_number_of_decisions_is_capped() {
        let mut b = FleetBook::new(1000);
        let p = protected();
        let many: Vec<Decision> = (0..5000u32)
            .map(|i| Decision {
                id: u64::from(i) + 1,
                net: IpNet::from(std::net::IpAddr::from((0xC612_0000u32 + i).to_be_bytes())),
                expires: 9000,
                reason: String::new(),
            })
            .collect();
        let t = b.apply(many, &[], &p, 1000);
        assert_eq!((t.added, t.over_cap), (1000, 4000));
        assert_eq!(write(&mut b, 1000).add.len(), 1000);
    }

    #[test]
    fn refused_writes_are_planned_again() {
        let mut b = FleetBook::new(100);
        let p = protected();
        b.apply(vec![ban(1, "198.18.0.9", 3000)], &[], &p, 1000);
        let plan = b.plan(1000);
        b.commit(&plan, true, &[net("198.18.0.9")], 1000);
        assert!(held(&b).is_empty());
        let plan = b.plan(1001);
        assert_eq!(plan.add.len(), 1);
        b.commit(&plan, true, &[], 1001);
        assert_eq!(held(&b), ["198.18.0.9/32"]);
    }

    #[test]
    fn unblock_lifts_what_holds_the_address_and_gives_back_the_rest() {
        let mut b = FleetBook::new(100);
        let p = protected();
        b.apply(
            vec![
                ban(1, "198.18.0.0/16", 3000),
                ban(2, "198.18.5.5", 3000),
                ban(3, "198.18.9.9", 3000),
            ],
            &[],
            &p,
            1000,
        );
        write(&mut b, 1000);
        assert_eq!(held(&b), ["198.18.0.0/16"]);
        assert_eq!(b.lift(net("198.18.5.5")), 2);
        let mut removed = Vec::new();
        b.write(1001, |plan| {
            removed = plan.remove.clone();
            (true, vec![])
        });
        assert_eq!(removed, [net("198.18.0.0/16")]);
        assert_eq!(held(&b), ["198.18.9.9/32"]);
    }

    #[test]
    fn a_change_of_protection_lifts_what_it_now_covers() {
        let mut b = FleetBook::new(100);
        b.apply(vec![ban(1, "198.18.0.9", 3000)], &[], &protected(), 1000);
        write(&mut b, 1000);
        let mut nets = crate::core::ignore::always_protected();
        nets.push(net("198.18.0.0/24")); // a new route's gateway
        b.reprotect(&IgnoreList::new(nets));
        assert_eq!(write(&mut b, 1001).remove, vec![net("198.18.0.9")]);
        assert_eq!(b.decisions(), 0);
    }
}
