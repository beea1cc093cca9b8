//! The block policy, pure: what a block covers, how long it lasts, what the caps allow, what
//! a full table gives up, and what becomes of a block the kernel refused. State + requests +
//! `now` (epoch seconds) in, what to write out; the caller writes it and reports back.
//!
//! Rules (portsentry.toml(5) says the same to administrators):
//! - Expired blocks never count against `max_blocked`.
//! - A full table still blocks the next scanner: the scan block that would end soonest makes
//!   room. Blocks made by the administrator are never evicted.
//! - A block the kernel refused is retried (1 s, 2 s, 4 s … 60 s apart) until it is written
//!   or would have ended anyway; the caller lets detection see the source again meanwhile.
//! - Timeouts are whole seconds from 1 s to `MAX_TIMEOUT`; `None` is permanent. Repeat
//!   offenders' blocks grow by `repeat_factor` up to `max_timeout`, in checked arithmetic.

pub use crate::core::block::{
    clamp_timeout, Block, Origin, Record, Set, Timeout, MAX_TIMEOUT, MIN_TIMEOUT,
};
use crate::core::decisions::FleetBook;
use crate::core::ignore::IgnoreList;
use crate::core::probe::Probe;
pub use crate::core::records::Page;
use crate::core::records::{rebuild_map, rebuild_set, Fields, Rank, Reasons, Rec};
use ipnet::{IpNet, Ipv6Net};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

/// Newest insertions remembered for the spot check (`newest`).
const RECENT: usize = 1024;
/// Tables smaller than this are never rebuilt (`Blocks::compact`): too little to gain.
const COMPACT_MIN: usize = 65_536;

/// The B-trees `Blocks::compact` rebuilds, one per call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tree {
    Records,
    Ends,
}

/// Blocks waiting for a retry at most; past it the oldest is given up.
const MAX_PENDING: usize = 65_536;
/// Offence counts remembered after their block ended (for `repeat_factor`).
const MAX_PAST: usize = 131_072;
/// Longest wait between two tries of a refused block.
const MAX_BACKOFF: u64 = 60;
/// Fleet decisions held at most, unless configured.
pub const DEFAULT_MAX_DECISIONS: usize = 100_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyConfig {
    /// First block's timeout; `None` = permanent.
    pub timeout: Option<Duration>,
    /// Each further block of the same network lasts this many times longer (1 = off).
    pub repeat_factor: u32,
    pub max_timeout: Option<Duration>,
    /// Most networks blocked at once.
    pub max_blocked: usize,
    /// Most new blocks per second (detection only; the administrator is not limited).
    pub max_per_second: u32,
}

impl PolicyConfig {
    /// The timeout of the `count`-th block of a network.
    pub fn timeout_for(&self, count: u32) -> Option<Duration> {
        let base = clamp_timeout(self.timeout?);
        if self.repeat_factor <= 1 || count <= 1 {
            return Some(base);
        }
        let cap = clamp_timeout(self.max_timeout.unwrap_or(MAX_TIMEOUT)).max(base);
        let factor = u32::try_from(u64::from(self.repeat_factor).saturating_pow(count - 1))
            .unwrap_or(u32::MAX);
        Some(base.checked_mul(factor).map_or(cap, |t| t.min(cap)))
    }
}

/// A request for a block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Want {
    pub key: IpNet,
    pub origin: Origin,
    pub timeout: Timeout,
    pub reason: String,
    /// The probe that asked, for the caller's report.
    pub probe: Option<Probe>,
}

/// Why a block was not made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `max_blocked` networks are blocked and none may make room.
    Full,
    /// `max_per_second` new blocks were made this second.
    Rate,
    /// The host's own address, gateway, resolver or ignore list.
    Protected,
    /// The administrator unblocked it while it was being written: the writer takes it
    /// off the kernel again (`Blocks::take_lifted`).
    Lifted,
}

/// The plan for one want.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Write {
        block: Block,
        count: u32,
        /// Whose block it is once written: the administrator's when it takes one of theirs
        /// in (never evicted).
        origin: Origin,
    },
    /// Already blocked by a wider block.
    Covered(IpNet),
    /// The same network is already being written in this plan.
    Duplicate,
    Refused(Refusal),
}

#[derive(Debug, Default)]
pub struct Plan {
    /// To write (add, or refresh the timeout).
    pub add: Vec<Block>,
    /// To delete: evicted, or inside a wider block being added.
    pub remove: Vec<IpNet>,
    /// Those of `remove` evicted to make room: no longer blocked at all, so detection
    /// must look at their sources again.
    pub evicted: Vec<IpNet>,
    /// One step per want, in order.
    pub steps: Vec<Step>,
    /// This plan's number (`Blocks::plans`): an unblock lifts the writes of the plans made
    /// before it.
    seq: u64,
}

/// What became of one want.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Blocked {
        key: IpNet,
        timeout: Option<Duration>,
        count: u32,
    },
    Covered(IpNet),
    Refused(Refusal),
    /// The kernel refused it; it will be retried.
    Failed {
        key: IpNet,
        error: String,
    },
}

#[derive(Clone, Debug)]
struct Pending {
    want: Want,
    first: u64,
    attempts: u32,
    next_at: u64,
}

/// Every block the daemon made and still stands, with what is needed to retry the ones
/// the kernel refused.
#[derive(Debug)]
pub struct Blocks {
    cfg: PolicyConfig,
    protected: IgnoreList,
    /// Ordered: IPv6 networks inside another are a range, and the state writer pages
    /// through it.
    records: BTreeMap<IpNet, Rec>,
    reasons: Reasons,
    /// Scan records in eviction order (`Rec::rank`): pruning is a pop, eviction the first.
    ends: BTreeSet<(Rank, IpNet)>,
    /// The administrator's records that end, soonest first (never evicted).
    admin_ends: BTreeSet<(u32, IpNet)>,
    /// The latest insertions, newest last: what a spot check looks for, without a scan.
    recent: VecDeque<IpNet>,
    /// How many IPv6 records of each prefix length stand (to look for wider ones).
    v6_lens: [u32; 129],
    pending: HashMap<IpNet, Pending>,
    pending_order: VecDeque<IpNet>,
    /// Offence counts of ended blocks: (count, ended at).
    past: HashMap<IpNet, (u32, u64)>,
    past_order: VecDeque<IpNet>,
    /// Epoch second and new blocks made in it.
    window: (u64, u32),
    dirty: bool,
    /// Records at their most since memory was last given back (see `shrink`).
    peak: usize,
    /// Records inserted since the B-trees were last built whole (`compact`).
    inserted: usize,
    /// Records removed so far: a page written without the lock needs checking against
    /// the table only if this moved meanwhile.
    removals: u64,
    /// Networks planned for writing and not committed yet, with how many plans hold each:
    /// no lock is held across the kernel's write, so an `unblock` can come between.
    /// And the newest plan among them: a block planned after an unblock must survive the
    /// lifting of the writes planned before it.
    writing: HashMap<IpNet, (u32, u64)>,
    /// Those of `writing` unblocked meanwhile, with the last plan made before the unblock:
    /// the commits of that plan and earlier ones record nothing. (A plan's number, not a
    /// flag: should a writer die between plan and commit, later blocks still stand.)
    lifted: HashMap<IpNet, u64>,
    /// Plans made so far (`Plan::seq`).
    plans: u64,
    /// Lifted networks whose write was committed: the writer deletes them after its own
    /// write, which may have landed after the unblock's delete.
    to_lift: Vec<IpNet>,
    /// Blocks given up (retry queue full, or ended before they could be written).
    pub given_up: u64,
    /// The fleet's blocks: same protection, their own sets and rules.
    fleet: FleetBook,
}

impl Blocks {
    pub fn new(cfg: PolicyConfig, protected: IgnoreList) -> Blocks {
        Blocks {
            cfg,
            protected,
            records: BTreeMap::new(),
            reasons: Reasons::default(),
            ends: BTreeSet::new(),
            admin_ends: BTreeSet::new(),
            recent: VecDeque::new(),
            v6_lens: [0; 129],
            pending: HashMap::new(),
            pending_order: VecDeque::new(),
            past: HashMap::new(),
            past_order: VecDeque::new(),
            window: (0, 0),
            dirty: false,
            peak: 0,
            inserted: 0,
            removals: 0,
            writing: HashMap::new(),
            lifted: HashMap::new(),
            plans: 0,
            to_lift: Vec::new(),
            given_up: 0,
            fleet: FleetBook::new(DEFAULT_MAX_DECISIONS),
        }
    }

    /// Takes records remembered from an earlier run; ended ones are dropped.
    pub fn load(&mut self, records: Vec<Record>, now: u64) {
        let (fleet, records): (Vec<Record>, Vec<Record>) =
            records.into_iter().partition(|r| r.origin == Origin::Fleet);
        self.fleet.load(fleet, &self.protected, now);
        let standing = records
            .into_iter()
            .filter(|r| r.expires.is_none_or(|e| e > now))
            .map(|r| Record {
                key: r.key.trunc(),
                ..r
            });
        if self.records.is_empty() {
            self.load_bulk(standing.collect());
        } else {
            for r in standing {
                self.insert(r.key, &(&r).into());
            }
        }
        self.dirty = false;
    }

    /// `load` into an empty table, built in bulk from sorted input: the B-trees' nodes
    /// come out full, where inserting in key order leaves them about half full (a
    /// restored million then costs about half the memory).
    fn load_bulk(&mut self, mut standing: Vec<Record>) {
        // A key given twice: the last one stands, as one insert after another would have.
        standing.reverse();
        standing.sort_by_key(|r| r.key);
        standing.dedup_by_key(|r| r.key);
        let mut records = Vec::with_capacity(standing.len());
        let (mut ends, mut admin_ends) = (Vec::new(), Vec::new());
        for r in &standing {
            let rec = self.reasons.keep(r.key, &r.into());
            match r.origin {
                Origin::Scan => ends.push((rec.rank(), r.key)),
                _ => admin_ends.extend((rec.ends != 0).then_some((rec.ends, r.key))),
            }
            if let IpNet::V6(n) = r.key {
                self.v6_lens[usize::from(n.prefix_len())] += 1;
            }
            records.push((r.key, rec));
        }
        let mut by_since: Vec<(u64, IpNet)> = standing.iter().map(|r| (r.since, r.key)).collect();
        by_since.sort_unstable();
        let skip = by_since.len().saturating_sub(RECENT);
        self.recent = by_since[skip..].iter().map(|(_, k)| *k).collect();
        self.records = records.into_iter().collect();
        self.ends = ends.into_iter().collect();
        self.admin_ends = admin_ends.into_iter().collect();
        self.dirty = true;
    }

    pub fn reconfigure(&mut self, cfg: PolicyConfig, protected: IgnoreList) {
        self.cfg = cfg;
        if protected != self.protected {
            self.fleet.reprotect(&protected);
        }
        self.protected = protected;
    }

    /// The fleet's blocks, with the protected list they are checked against.
    pub fn fleet(&mut self) -> (&mut FleetBook, &IgnoreList) {
        (&mut self.fleet, &self.protected)
    }

    pub fn fleet_book(&self) -> &FleetBook {
        &self.fleet
    }

    pub fn config(&self) -> &PolicyConfig {
        &self.cfg
    }

    pub fn protected(&self) -> &IgnoreList {
        &self.protected
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    pub fn get(&self, key: IpNet) -> Option<Record> {
        self.records.get(&key).map(|r| self.record(key, r))
    }

    fn record(&self, key: IpNet, r: &Rec) -> Record {
        r.record(key, self.reasons.text(r.reason))
    }

    /// The block that covers `addr`, if any: exact, or a wider IPv6 block.
    pub fn covering(&self, net: IpNet) -> Option<Record> {
        self.get(net)
            .or_else(|| self.wider(net).and_then(|k| self.get(k)))
    }

    /// The block covering `net` (exact, or a wider IPv6 block) and when it ends
    /// (`Some(None)`: permanent): what the hot checks need, with no copy of the reason.
    pub fn covering_end(&self, net: IpNet) -> Option<(IpNet, Option<u64>)> {
        let key = if self.records.contains_key(&net) {
            net
        } else {
            self.wider(net)?
        };
        self.records.get(&key).map(|r| (key, r.expires()))
    }

    /// Drops the records that ended at `now`.
    pub fn prune(&mut self, now: u64) {
        for admin in [false, true] {
            loop {
                let first = if admin {
                    self.admin_ends.first().map(|&(e, key)| (e, key))
                } else {
                    // Permanent ones (1, since) sort last and never end.
                    self.ends
                        .first()
                        .and_then(|&((p, e), key)| (p == 0).then_some((e, key)))
                };
                let Some((e, key)) = first else { break };
                if u64::from(e) > now {
                    break;
                }
                if let Some(r) = self.remove_record(key) {
                    self.remember(key, r.count, u64::from(e));
                }
            }
        }
        self.shrink();
    }

    /// Whether `compact` would give much back: a quarter of a large table or more was
    /// inserted one by one since its B-trees were last built whole.
    pub fn worth_compacting(&self) -> bool {
        let n = self.records.len();
        n >= COMPACT_MIN && self.inserted >= n / 4
    }

    /// Rebuilds a B-tree from its sorted keys. Inserted one by one (a flood), its nodes
    /// are about two thirds full; built whole, full: a million blocks then take about
    /// 50 MB less. Some 40–70 ms a tree with a million records here, so the caller takes
    /// the lock for one tree at a time, when the block writer is idle.
    pub fn compact(&mut self, tree: Tree) {
        match tree {
            Tree::Records => rebuild_map(&mut self.records),
            Tree::Ends => {
                rebuild_set(&mut self.ends);
                self.inserted = 0;
            }
        }
    }

    /// Gives memory back once the table fell well below its peak (a flood's blocks ended):
    /// a B-tree frees its nodes as it goes; the maps kept beside it do not.
    fn shrink(&mut self) {
        let n = self.records.len();
        self.peak = self.peak.max(n);
        if self.peak >= 4096 && n < self.peak / 4 {
            self.peak = n;
            self.pending.shrink_to_fit();
            self.pending_order.shrink_to_fit();
            self.past.shrink_to_fit();
            self.past_order.shrink_to_fit();
            self.reasons.ids.shrink_to_fit();
        }
    }

    /// Up to `n` records after `after` (from the first when `None`), in key order: the
    /// state writer and `list` page through the table, a lock at a time. The page is
    /// copied as it is kept (a few words a record); `Page::records` builds the records,
    /// reasons and all, after the lock is let go.
    pub fn page(&self, after: Option<IpNet>, n: usize) -> Page {
        use std::ops::Bound::{Excluded, Unbounded};
        let from = after.map_or(Unbounded, Excluded);
        Page(
            self.records
                .range((from, Unbounded))
                .take(n)
                .map(|(k, r)| (*k, *r, self.reasons.text(r.reason).clone()))
                .collect(),
        )
    }

    /// Whether this host's records changed since the last call (ended ones pruned
    /// first), and the fleet's records when they changed: what the state writer needs.
    /// `None`: nothing to save.
    pub fn take_saved(&mut self, now: u64) -> Option<Option<Vec<Record>>> {
        self.prune(now);
        self.fleet.prune(now);
        let fleet = self.fleet.take_changed();
        if !std::mem::take(&mut self.dirty) && !fleet {
            return None;
        }
        Some(fleet.then(|| self.fleet.records()))
    }

    /// Decides what to write for `wants`. Evictions take effect now; blocks are recorded by
    /// `commit` once written.
    pub fn plan(&mut self, wants: &[Want], now: u64) -> Plan {
        self.prune(now);
        if self.window.0 != now {
            self.window = (now, 0);
        }
        self.plans += 1;
        let mut plan = Plan {
            seq: self.plans,
            ..Plan::default()
        };
        let mut planned: HashMap<IpNet, ()> = HashMap::new();
        // Prefix lengths of the IPv6 blocks planned so far.
        let mut planned_v6_lens: BTreeSet<u8> = BTreeSet::new();
        // New blocks planned but not yet recorded take room too.
        let mut new = 0usize;
        // Wider networks first, so a narrower one in the same batch (two retries, say) is
        // found inside a planned one rather than written beside it: the kernel's interval
        // set takes no overlaps. Steps stay in the order of `wants`.
        let mut order: Vec<usize> = (0..wants.len()).collect();
        order.sort_by_key(|&i| wants[i].key.prefix_len());
        let mut steps: Vec<Option<Step>> = (0..wants.len()).map(|_| None).collect();
        for i in order {
            let w = &wants[i];
            let key = w.key.trunc();
            let planned_wider = match key {
                IpNet::V6(k) => planned_v6_lens
                    .range(..k.prefix_len())
                    .filter_map(|&l| Ipv6Net::new(k.network(), l).ok().map(|n| n.trunc()))
                    .map(IpNet::V6)
                    .find(|n| planned.contains_key(n)),
                IpNet::V4(_) => None,
            };
            let step = if self.protected.overlaps(key) {
                Step::Refused(Refusal::Protected)
            } else if planned.contains_key(&key) {
                Step::Duplicate
            } else if let Some(wider) = planned_wider {
                Step::Covered(wider)
            } else if let Some(r) = self.records.get(&key) {
                // A re-block takes no new room: refresh it, one count more. It never
                // shortens what stands, unless the administrator says how long.
                let count = r.count.saturating_add(1);
                let mut timeout = self.timeout(w, count);
                let mut origin = w.origin;
                if !(w.origin == Origin::Admin && w.timeout != Timeout::Default) {
                    timeout = longest(timeout, remaining(r, now));
                    origin = origin.max(r.origin);
                }
                Step::Write {
                    block: Block {
                        net: key,
                        timeout,
                        set: Set::Local,
                    },
                    count,
                    origin,
                }
            } else if let Some(wider) = self.wider(key) {
                match (w.origin, self.records.get(&wider)) {
                    // The administrator's block inside a wider one: the wider one becomes
                    // theirs and lasts at least as long as they asked.
                    (Origin::Admin, Some(r)) if !planned.contains_key(&wider) => Step::Write {
                        block: Block {
                            net: wider,
                            timeout: longest(self.timeout(w, 1), remaining(r, now)),
                            set: Set::Local,
                        },
                        count: r.count,
                        origin: Origin::Admin,
                    },
                    _ => Step::Covered(wider),
                }
            } else {
                let step = self.plan_new(w, key, new, now, &planned, &mut plan);
                new += usize::from(matches!(step, Step::Write { .. }));
                step
            };
            if let Step::Write { block, .. } = &step {
                planned.insert(block.net, ());
                if let IpNet::V6(n) = block.net {
                    planned_v6_lens.insert(n.prefix_len());
                }
                plan.add.push(*block);
                let w = self.writing.entry(block.net).or_insert((0, 0));
                *w = (w.0 + 1, self.plans);
            }
            steps[i] = Some(step);
        }
        plan.steps = steps.into_iter().flatten().collect();
        plan
    }

    fn plan_new(
        &mut self,
        w: &Want,
        key: IpNet,
        new: usize,
        now: u64,
        planned: &HashMap<IpNet, ()>,
        plan: &mut Plan,
    ) -> Step {
        if w.origin == Origin::Scan && self.window.1 >= self.cfg.max_per_second {
            return Step::Refused(Refusal::Rate);
        }
        let inside = self.narrower(key);
        // As many as it takes: a reload may have lowered the cap below what stands.
        while self.records.len() + new - inside.len() >= self.cfg.max_blocked.max(1) {
            let victim = self
                .ends
                .iter()
                .find(|(_, k)| !inside.contains(k) && !planned.contains_key(k));
            match victim {
                Some(&(_, victim)) => {
                    self.remove_record(victim);
                    plan.remove.push(victim);
                    plan.evicted.push(victim);
                }
                None => return Step::Refused(Refusal::Full),
            }
        }
        let count = self.past.get(&key).map_or(1, |(c, _)| c.saturating_add(1));
        let mut timeout = self.timeout(w, count);
        let mut origin = w.origin;
        // Narrower blocks inside this one go (the kernel's interval set holds no
        // overlaps); this one lasts as long as the longest of them, and is the
        // administrator's if one of them was.
        for k in inside {
            if let Some(r) = self.remove_record(k) {
                timeout = longest(timeout, remaining(&r, now));
                origin = origin.max(r.origin);
            }
            plan.remove.push(k);
        }
        if w.origin == Origin::Scan {
            self.window.1 += 1;
        }
        Step::Write {
            block: Block {
                net: key,
                timeout,
                set: Set::Local,
            },
            count,
            origin,
        }
    }

    fn timeout(&self, w: &Want, count: u32) -> Option<Duration> {
        w.timeout.clamped().or(|| self.cfg.timeout_for(count))
    }

    /// Records what was written. `failed` holds the networks the kernel refused.
    pub fn commit(
        &mut self,
        wants: &[Want],
        plan: &Plan,
        failed: &HashMap<IpNet, String>,
        now: u64,
    ) -> Vec<Outcome> {
        let mut out = Vec::with_capacity(wants.len());
        for (w, step) in wants.iter().zip(&plan.steps) {
            out.push(match step {
                Step::Write { block, .. } if self.end_write(block.net, plan.seq) => {
                    Outcome::Refused(Refusal::Lifted)
                }
                Step::Write {
                    block,
                    count,
                    origin,
                } => match failed.get(&block.net) {
                    Some(e) => {
                        self.retry_later(w, now);
                        Outcome::Failed {
                            key: block.net,
                            error: e.clone(),
                        }
                    }
                    None => {
                        self.drop_pending(block.net);
                        self.past.remove(&block.net);
                        let expires = block
                            .timeout
                            .map(|t| now.saturating_add(t.as_secs().max(1)));
                        let since = self
                            .records
                            .get(&block.net)
                            .map_or(now, |r| u64::from(r.since));
                        let since = if w.origin == Origin::Admin {
                            now
                        } else {
                            since
                        };
                        self.insert(
                            block.net,
                            &Fields {
                                since,
                                expires,
                                count: *count,
                                reason: &w.reason,
                                origin: *origin,
                            },
                        );
                        Outcome::Blocked {
                            key: block.net,
                            timeout: block.timeout,
                            count: *count,
                        }
                    }
                },
                Step::Covered(k) => Outcome::Covered(*k),
                Step::Duplicate => Outcome::Covered(w.key.trunc()),
                Step::Refused(r) => Outcome::Refused(*r),
            });
        }
        out
    }

    /// One plan's write of `net` is over; whether it was unblocked meanwhile. Its write
    /// is taken back from the kernel (`take_lifted`) unless a block of the same network
    /// planned after the unblock stands or is being written: that one wrote it too.
    fn end_write(&mut self, net: IpNet, seq: u64) -> bool {
        let unblocked = self.lifted.get(&net).copied();
        let lifted = unblocked.is_some_and(|last| seq <= last);
        let newer = self
            .writing
            .get(&net)
            .is_some_and(|&(_, newest)| unblocked.is_some_and(|last| newest > last));
        if lifted && !newer && !self.records.contains_key(&net) {
            self.to_lift.push(net);
        }
        if let Some(w) = self.writing.get_mut(&net) {
            w.0 -= 1;
            if w.0 == 0 {
                self.writing.remove(&net);
                self.lifted.remove(&net);
            }
        }
        if self.writing.is_empty() && self.writing.capacity() > 4096 {
            // A flood's batch of writes is over: its room goes back.
            self.writing = HashMap::new();
        }
        lifted
    }

    /// Networks unblocked while they were written, to delete from the kernel now that
    /// the write is over.
    pub fn take_lifted(&mut self) -> Vec<IpNet> {
        std::mem::take(&mut self.to_lift)
    }

    /// Blocks refused earlier whose time to try again has come.
    pub fn due(&mut self, now: u64) -> Vec<Want> {
        let mut due = Vec::new();
        let mut ended = Vec::new();
        for (key, p) in &self.pending {
            let lasts = p.want.timeout.or(|| self.cfg.timeout);
            if lasts.is_some_and(|t| p.first.saturating_add(t.as_secs()) <= now) {
                ended.push(*key);
            } else if p.next_at <= now {
                due.push(p.want.clone());
            }
        }
        for k in ended {
            self.drop_pending(k);
            self.given_up += 1;
        }
        due
    }

    /// Makes every refused block due now (the firewall was just repaired).
    pub fn retry_now(&mut self) {
        for p in self.pending.values_mut() {
            p.next_at = 0;
        }
    }

    fn retry_later(&mut self, w: &Want, now: u64) {
        let key = w.key.trunc();
        if let Some(p) = self.pending.get_mut(&key) {
            p.attempts = p.attempts.saturating_add(1);
            p.next_at = now.saturating_add(backoff(p.attempts));
            return;
        }
        if self.pending.len() >= MAX_PENDING {
            while let Some(old) = self.pending_order.pop_front() {
                if self.pending.remove(&old).is_some() {
                    self.given_up += 1;
                    break;
                }
            }
        }
        compact(&mut self.pending_order, &self.pending);
        self.pending.insert(
            key,
            Pending {
                want: w.clone(),
                first: now,
                attempts: 1,
                next_at: now.saturating_add(backoff(1)),
            },
        );
        self.pending_order.push_back(key);
    }

    fn drop_pending(&mut self, key: IpNet) {
        self.pending.remove(&key);
    }

    /// Removes the block covering `net` (exact, wider, or narrower ones inside it); returns
    /// the networks to delete from the kernel.
    pub fn unblock(&mut self, net: IpNet) -> Vec<IpNet> {
        let net = net.trunc();
        let mut keys: Vec<IpNet> = self.narrower(net);
        if self.records.contains_key(&net) {
            keys.push(net);
        }
        if let Some(w) = self.wider(net) {
            keys.push(w);
        }
        let racing: Vec<IpNet> = self
            .writing
            .keys()
            .filter(|k| k.contains(&net.addr()) || net.contains(&k.addr()))
            .copied()
            .collect();
        for k in racing {
            self.lifted.insert(k, self.plans);
            keys.push(k);
        }
        keys.sort();
        keys.dedup();
        for k in &keys {
            self.remove_record(*k);
            self.past.remove(k);
        }
        let pending: Vec<IpNet> = self
            .pending
            .keys()
            .filter(|k| k.contains(&net.addr()) || net.contains(&k.addr()))
            .copied()
            .collect();
        for k in pending {
            self.drop_pending(k);
        }
        keys
    }

    /// Every standing block with the time it has left. A clock set back must not stretch a
    /// block: the time left is never more than the block's own length.
    pub fn restore(&mut self, now: u64) -> Vec<Block> {
        let mut v = self.restore_page(None, usize::MAX, now);
        v.extend(self.fleet.restore(now));
        v
    }

    /// `restore` of this host's blocks a page at a time: up to `n` after `after`, in key
    /// order (the caller writes each page with the lock released).
    pub fn restore_page(&mut self, after: Option<IpNet>, n: usize, now: u64) -> Vec<Block> {
        use std::ops::Bound::{Excluded, Unbounded};
        self.prune(now);
        self.records
            .range((after.map_or(Unbounded, Excluded), Unbounded))
            .take(n)
            .map(|(k, r)| Block {
                net: *k,
                timeout: r.expires().map(|e| {
                    let left = e
                        .saturating_sub(now)
                        .min(e.saturating_sub(u64::from(r.since)));
                    clamp_timeout(Duration::from_secs(left))
                }),
                set: Set::Local,
            })
            .collect()
    }

    /// How many records were removed so far (ended, evicted, unblocked, replaced).
    pub fn removals(&self) -> u64 {
        self.removals
    }

    /// Whether `key` is a standing record of this host.
    pub fn stands(&self, key: IpNet) -> bool {
        self.records.contains_key(&key)
    }

    /// The `n` newest standing records, leaving out those about to end (the kernel counts
    /// milliseconds, the records seconds): what a spot check looks for in the kernel.
    pub fn newest(&mut self, n: usize, now: u64) -> Vec<IpNet> {
        self.prune(now);
        let mut seen = std::collections::HashSet::new();
        self.recent
            .iter()
            .rev()
            .filter(|k| seen.insert(**k))
            .filter(|k| {
                self.records
                    .get(k)
                    .is_some_and(|r| r.expires().is_none_or(|e| e > now.saturating_add(1)))
            })
            .take(n)
            .copied()
            .collect()
    }

    fn insert(&mut self, key: IpNet, f: &Fields) {
        self.remove_record(key);
        let r = self.reasons.keep(key, f);
        match f.origin {
            Origin::Scan => {
                self.ends.insert((r.rank(), key));
            }
            _ => {
                if r.ends != 0 {
                    self.admin_ends.insert((r.ends, key));
                }
            }
        }
        if let IpNet::V6(n) = key {
            self.v6_lens[usize::from(n.prefix_len())] += 1;
        }
        if self.recent.len() >= RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(key);
        self.records.insert(key, r);
        self.inserted = self.inserted.saturating_add(1);
        self.dirty = true;
    }

    fn remove_record(&mut self, key: IpNet) -> Option<Rec> {
        let r = self.records.remove(&key)?;
        match r.origin {
            Origin::Scan => {
                self.ends.remove(&(r.rank(), key));
            }
            _ => {
                if r.ends != 0 {
                    self.admin_ends.remove(&(r.ends, key));
                }
            }
        }
        if let IpNet::V6(n) = key {
            self.v6_lens[usize::from(n.prefix_len())] -= 1;
        }
        self.reasons.release(r.reason);
        self.removals += 1;
        self.dirty = true;
        Some(r)
    }

    /// Keeps the offence count of an ended block (bounded, oldest forgotten first).
    fn remember(&mut self, key: IpNet, count: u32, at: u64) {
        if self.cfg.repeat_factor <= 1 {
            return;
        }
        if self.past.len() >= MAX_PAST {
            while let Some(old) = self.past_order.pop_front() {
                if self.past.remove(&old).is_some() {
                    break;
                }
            }
        }
        compact(&mut self.past_order, &self.past);
        if self.past.insert(key, (count, at)).is_none() {
            self.past_order.push_back(key);
        }
    }

    /// A standing IPv6 block wider than `net` that contains it.
    fn wider(&self, net: IpNet) -> Option<IpNet> {
        let IpNet::V6(n) = net else { return None };
        (0..n.prefix_len())
            .filter(|&len| self.v6_lens[usize::from(len)] > 0)
            .filter_map(|len| ipnet::Ipv6Net::new(n.network(), len).ok())
            .map(|w| IpNet::V6(w.trunc()))
            .find(|w| self.records.contains_key(w))
    }

    /// Standing IPv6 blocks strictly inside `net`: a range of the ordered keys.
    fn narrower(&self, net: IpNet) -> Vec<IpNet> {
        let IpNet::V6(n) = net else { return Vec::new() };
        let (Ok(lo), Ok(hi)) = (
            Ipv6Net::new(n.network(), 0),
            Ipv6Net::new(n.broadcast(), 128),
        ) else {
            return Vec::new();
        };
        self.records
            .range(IpNet::V6(lo)..=IpNet::V6(hi))
            .map(|(k, _)| *k)
            .filter(|k| k.prefix_len() > n.prefix_len())
            .collect()
    }
}

/// The longer of two timeouts (`None`: permanent, the longest).
fn longest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    Some(a?.max(b?))
}

/// The time a record has left at `now` (`None`: permanent).
fn remaining(r: &Rec, now: u64) -> Option<Duration> {
    r.expires()
        .map(|e| clamp_timeout(Duration::from_secs(e.saturating_sub(now))))
}

/// Drops keys that left `map` from its age order once they outnumber the live ones, so
/// the order stays bounded by twice the map's cap.
fn compact<V>(order: &mut VecDeque<IpNet>, map: &HashMap<IpNet, V>) {
    if order.len() > 2 * map.len() + 64 {
        order.retain(|k| map.contains_key(k));
    }
}

fn backoff(attempts: u32) -> u64 {
    (1u64 << attempts.saturating_sub(1).min(6)).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg() -> PolicyConfig {
        PolicyConfig {
            timeout: Some(Duration::from_secs(3600)),
            repeat_factor: 1,
            max_timeout: Some(Duration::from_secs(30 * 86400)),
            max_blocked: 3,
            max_per_second: 1000,
        }
    }

    fn net(s: &str) -> IpNet {
        crate::core::ignore::parse_net(s).unwrap()
    }

    fn scan(s: &str) -> Want {
        Want {
            key: net(s),
            origin: Origin::Scan,
            timeout: Timeout::Default,
            reason: "test".into(),
            probe: None,
        }
    }

    fn admin(s: &str, t: Timeout) -> Want {
        Want {
            origin: Origin::Admin,
            timeout: t,
            ..scan(s)
        }
    }

    /// Plans and commits as if the kernel took everything but `refuse`.
    fn apply(b: &mut Blocks, wants: &[Want], now: u64, refuse: &[&str]) -> (Plan, Vec<Outcome>) {
        let plan = b.plan(wants, now);
        let failed: HashMap<IpNet, String> = refuse
            .iter()
            .map(|s| (net(s), "No such file or directory".to_string()))
            .collect();
        let out = b.commit(wants, &plan, &failed, now);
        (plan, out)
    }

    fn book(c: PolicyConfig) -> Blocks {
        Blocks::new(c, IgnoreList::new([net("192.0.2.1"), net("2001:db8::1")]))
    }

    /// The lock is not held across the kernel's write: an unblock that comes between a
    /// plan and its commit wins, and the writer is told to take its write back.
    #[test]
    fn an_unblock_between_plan_and_commit_is_not_undone() {
        let mut b = book(cfg());
        let wants = [scan("198.18.0.7"), scan("2001:db8:9::/64")];
        let plan = b.plan(&wants, 1000);
        // The administrator's unblock, while the kernel write is in flight.
        assert!(b.unblock(net("198.18.0.7")).contains(&net("198.18.0.7")));
        assert!(b
            .unblock(net("2001:db8:9::5"))
            .contains(&net("2001:db8:9::/64")));
        let out = b.commit(&wants, &plan, &HashMap::new(), 1000);
        assert_eq!(
            out,
            [
                Outcome::Refused(Refusal::Lifted),
                Outcome::Refused(Refusal::Lifted)
            ]
        );
        assert!(b.is_empty());
        assert_eq!(b.take_lifted(), [net("198.18.0.7"), net("2001:db8:9::/64")]);
        assert!(b.take_lifted().is_empty() && b.writing.is_empty() && b.lifted.is_empty());
        // Nothing lingers: the next block of the same source stands.
        let (_, out) = apply(&mut b, &[scan("198.18.0.7")], 1001, &[]);
        assert!(matches!(out[0], Outcome::Blocked { .. }), "{out:?}");
        // A writer that died between plan and commit: a later plan of the same network,
        // after an unblock, still stands.
        let _lost = b.plan(&[scan("198.18.0.20")], 1001);
        b.unblock(net("198.18.0.20"));
        let (_, out) = apply(&mut b, &[scan("198.18.0.20")], 1001, &[]);
        assert!(matches!(out[0], Outcome::Blocked { .. }), "{out:?}");
        b.unblock(net("198.18.0.20"));
        // The administrator unblocks, then blocks again, while the first write is in
        // flight: the new block stands in the book and stays in the kernel, whichever
        // commit comes first.
        for new_first in [true, false] {
            let x = "198.18.0.30";
            let old = b.plan(&[scan(x)], 1003);
            b.unblock(net(x));
            let again = [admin(x, Timeout::Permanent)];
            let new = b.plan(&again, 1003);
            let commit_new = |b: &mut Blocks| b.commit(&again, &new, &HashMap::new(), 1003);
            let out = if new_first {
                let out = commit_new(&mut b);
                b.commit(&[scan(x)], &old, &HashMap::new(), 1003);
                out
            } else {
                b.commit(&[scan(x)], &old, &HashMap::new(), 1003);
                commit_new(&mut b)
            };
            assert!(matches!(out[0], Outcome::Blocked { .. }), "{out:?}");
            assert!(b.take_lifted().is_empty(), "the new block would be deleted");
            assert_eq!(b.get(net(x)).unwrap().origin, Origin::Admin);
            b.unblock(net(x));
        }
        // An unblock of another network does not touch a write in flight.
        let plan = b.plan(&[scan("198.18.0.8")], 1002);
        b.unblock(net("198.18.0.9"));
        let out = b.commit(&[scan("198.18.0.8")], &plan, &HashMap::new(), 1002);
        assert!(matches!(out[0], Outcome::Blocked { .. }), "{out:?}");
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn the_newest_standing_blocks_are_found_without_a_scan_and_pages_cover_the_table() {
        let mut b = book(PolicyConfig {
            max_blocked: 1000,
            max_per_second: 1000,
            ..cfg()
        });
        for (i, t) in [(1, 1000), (2, 1001), (3, 1002)] {
            apply(&mut b, &[scan(&format!("198.18.0.{i}"))], t, &[]);
        }
        assert_eq!(b.newest(2, 1002), [net("198.18.0.3"), net("198.18.0.2")]);
        // Unblocked: no longer among the newest.
        b.remove_record(net("198.18.0.3"));
        assert_eq!(b.newest(2, 1002), [net("198.18.0.2"), net("198.18.0.1")]);
        // Pages of two: every record once, in key order, the reason whole.
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let p = b.page(after, 2).records();
            let Some(last) = p.last() else { break };
            after = Some(last.key);
            seen.extend(p);
        }
        let keys: Vec<IpNet> = seen.iter().map(|r| r.key).collect();
        assert_eq!(keys, [net("198.18.0.1"), net("198.18.0.2")]);
        assert_eq!(&*seen[0].reason, "test");
    }

    /// Loaded into an empty table in bulk or one record at a time: the same table, the
    /// last of a key given twice standing, ended ones dropped.
    #[test]
    fn a_bulk_load_is_the_same_table_as_inserts() {
        let rec = |k: &str, since: u64, expires: Option<u64>, origin: Origin| Record {
            key: net(k),
            since,
            expires,
            count: 2,
            reason: format!("TCP SYN/Normal scan to TCP port 111 from {}", net(k).addr()).into(),
            origin,
        };
        let records = vec![
            rec("198.18.0.9", 900, Some(5000), Origin::Scan),
            rec("2001:db8:7::/64", 950, None, Origin::Scan),
            rec("198.51.100.7", 800, Some(4000), Origin::Admin),
            rec("198.18.0.9", 990, Some(6000), Origin::Scan),
            rec("198.18.0.3", 100, Some(999), Origin::Scan),
            rec("2001:db8:8::1", 700, None, Origin::Admin),
        ];
        let mut bulk = book(cfg());
        bulk.load(records.clone(), 1000);
        let mut one = book(cfg());
        one.load(vec![records[0].clone()], 1000);
        one.load(records[1..].to_vec(), 1000);
        assert_eq!(bulk.records, one.records);
        assert_eq!(bulk.ends, one.ends);
        assert_eq!(bulk.admin_ends, one.admin_ends);
        assert_eq!(bulk.v6_lens, one.v6_lens);
        assert_eq!(bulk.len(), 4);
        assert_eq!(bulk.get(net("198.18.0.9")).unwrap().expires, Some(6000));
        assert_eq!(
            bulk.newest(2, 1000),
            [net("198.18.0.9"), net("2001:db8:7::/64")]
        );
        assert_eq!(bulk.page(None, 10).records(), one.page(None, 10).records());
    }

    /// A reason naming its source is kept as shared text plus an address, and reads back
    /// whole; the shared texts go when their last record does.
    #[test]
    fn reasons_are_shared_and_read_back_whole() {
        let mut b = book(PolicyConfig {
            max_blocked: 1000,
            ..cfg()
        });
        let wants: Vec<Want> = (1..=3)
            .map(|i| Want {
                reason: format!("TCP SYN/Normal scan to TCP port 111 from 2001:db8:{i}::7"),
                ..scan(&format!("2001:db8:{i}::/64"))
            })
            .collect();
        apply(&mut b, &wants, 1000, &[]);
        assert_eq!(b.reasons.ids.len(), 1);
        assert_eq!(
            &*b.get(net("2001:db8:2::/64")).unwrap().reason,
            "TCP SYN/Normal scan to TCP port 111 from 2001:db8:2::7"
        );
        for i in 1..=3 {
            b.unblock(net(&format!("2001:db8:{i}::/64")));
        }
        assert!(b.reasons.ids.is_empty() && b.reasons.texts.is_empty());
    }

    /// The source's host bits are kept in the record where they fit; every other reason is
    /// kept whole, so each reads back as it was given.
    #[test]
    fn every_reason_reads_back_as_given() {
        assert!(
            std::mem::size_of::<Rec>() <= 28,
            "{}",
            std::mem::size_of::<Rec>()
        );
        let mut b = book(PolicyConfig {
            max_blocked: 1000,
            ..cfg()
        });
        let cases = [
            (
                "198.18.0.7",
                "TCP SYN/Normal scan to TCP port 111 from 198.18.0.7",
            ),
            ("198.18.1.0/24", "admin: scans from 198.18.1.200"),
            (
                "2001:db8:5::/64",
                "UDP scan to UDP port 53 from 2001:db8:5:0:ffff:1:2:3",
            ),
            (
                "2001:db8:6::/48",
                "TCP SYN/Normal scan to TCP port 22 from 2001:db8:6:7::9",
            ),
            (
                "2001:db8:8::/48",
                "TCP SYN/Normal scan to TCP port 22 from 2001:db8:8:ffff:1:2:3:4",
            ),
            (
                "2001:e00::/24",
                "TCP SYN/Normal scan to TCP port 22 from 2001:e12::1",
            ),
            ("198.18.2.7", "seen on the honeypot from 203.0.113.9"),
            ("198.18.3.7", "from nowhere in particular"),
            ("2001:db8:7::/64", "TCP FIN scan from 198.18.0.1"),
        ];
        let wants: Vec<Want> = cases
            .iter()
            .map(|(k, r)| Want {
                reason: (*r).to_string(),
                ..scan(k)
            })
            .collect();
        let (_, out) = apply(&mut b, &wants, 1000, &[]);
        assert!(
            out.iter().all(|o| matches!(o, Outcome::Blocked { .. })),
            "{out:?}"
        );
        for (k, r) in cases {
            assert_eq!(&*b.get(net(k)).unwrap().reason, r, "{k}");
        }
        // /48 blocks (`ipv6_prefix = 48`) share their text as /64 ones do.
        let before = b.reasons.texts.len();
        let wants: Vec<Want> = (1..=100)
            .map(|i| Want {
                reason: format!("TCP SYN/Normal scan to TCP port 22 from 2001:db8:{i:x}:ff::{i:x}"),
                ..scan(&format!("2001:db8:{i:x}::/48"))
            })
            .filter(|w| b.get(w.key).is_none())
            .collect();
        apply(&mut b, &wants, 1001, &[]);
        assert!(
            b.reasons.texts.len() <= before + 1,
            "{}",
            b.reasons.texts.len()
        );
    }

    #[test]
    fn expired_blocks_never_count_against_the_cap() {
        let mut b = book(cfg());
        let wants: Vec<Want> = (1..=3).map(|i| scan(&format!("198.18.0.{i}"))).collect();
        apply(&mut b, &wants, 1000, &[]);
        assert_eq!(b.len(), 3);
        // An hour later they have all ended: the next scanner takes room freely.
        let (_, out) = apply(&mut b, &[scan("198.18.1.1")], 1000 + 3600, &[]);
        assert!(matches!(out[0], Outcome::Blocked { .. }), "{out:?}");
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn a_full_table_evicts_the_scan_block_that_ends_soonest_never_the_admins() {
        let mut b = book(cfg());
        apply(
            &mut b,
            &[admin("198.51.100.7", Timeout::Permanent)],
            1000,
            &[],
        );
        apply(&mut b, &[scan("198.18.0.1")], 1000, &[]);
        apply(&mut b, &[scan("198.18.0.2")], 1010, &[]);
        let (plan, out) = apply(&mut b, &[scan("198.18.0.3")], 1020, &[]);
        assert!(matches!(out[0], Outcome::Blocked { .. }));
        assert_eq!(plan.remove, vec![net("198.18.0.1")]);
        assert!(b.get(net("198.51.100.7")).is_some());
        assert_eq!(b.len(), 3);
        // Only admin blocks left to evict: refused.
        let mut b = book(PolicyConfig {
            max_blocked: 1,
            ..cfg()
        });
        apply(
            &mut b,
            &[admin("198.51.100.7", Timeout::Default)],
            1000,
            &[],
        );
        let (_, out) = apply(&mut b, &[scan("198.18.0.3")], 1020, &[]);
        assert_eq!(out, vec![Outcome::Refused(Refusal::Full)]);
    }

    #[test]
    fn new_blocks_per_second_are_capped_for_scans_only() {
        let mut b = book(PolicyConfig {
            max_per_second: 2,
            max_blocked: 100,
            ..cfg()
        });
        let wants: Vec<Want> = (1..=3).map(|i| scan(&format!("198.18.0.{i}"))).collect();
        let (_, out) = apply(&mut b, &wants, 1000, &[]);
        assert_eq!(out[2], Outcome::Refused(Refusal::Rate));
        let (_, out) = apply(&mut b, &[admin("198.18.0.9", Timeout::Default)], 1000, &[]);
        assert!(matches!(out[0], Outcome::Blocked { .. }));
        let (_, out) = apply(&mut b, &[scan("198.18.0.3")], 1001, &[]);
        assert!(matches!(out[0], Outcome::Blocked { .. }));
    }

    #[test]
    fn protected_networks_are_refused() {
        let mut b = book(cfg());
        let (_, out) = apply(
            &mut b,
            &[admin("192.0.2.1", Timeout::Default), scan("2001:db8::/64")],
            1000,
            &[],
        );
        assert_eq!(
            out,
            vec![
                Outcome::Refused(Refusal::Protected),
                Outcome::Refused(Refusal::Protected)
            ]
        );
        assert!(b.is_empty());
    }

    #[test]
    fn a_refused_write_is_retried_with_backoff_until_it_lands() {
        let mut b = book(cfg());
        let (_, out) = apply(&mut b, &[scan("198.18.0.1")], 1000, &["198.18.0.1"]);
        assert!(matches!(out[0], Outcome::Failed { .. }));
        assert!(b.is_empty());
        assert!(b.due(1000).is_empty());
        let due = b.due(1001);
        assert_eq!(due.len(), 1);
        apply(&mut b, &due, 1001, &["198.18.0.1"]);
        assert!(b.due(1002).is_empty(), "second wait is 2 s");
        // The firewall is repaired: retried at once, and it lands.
        b.retry_now();
        let due = b.due(1002);
        let (_, out) = apply(&mut b, &due, 1002, &[]);
        assert!(matches!(out[0], Outcome::Blocked { count: 1, .. }));
        assert_eq!(b.pending(), 0);
        assert_eq!(b.get(net("198.18.0.1")).unwrap().expires, Some(1002 + 3600));
    }

    #[test]
    fn a_block_that_could_not_be_written_in_its_time_is_given_up() {
        let mut b = book(cfg());
        apply(&mut b, &[scan("198.18.0.1")], 1000, &["198.18.0.1"]);
        assert!(b.due(1000 + 3600).is_empty());
        assert_eq!((b.pending(), b.given_up), (0, 1));
    }

    #[test]
    fn timeouts_stay_in_range_whatever_the_arithmetic() {
        let c = PolicyConfig {
            repeat_factor: 4,
            max_timeout: Some(Duration::from_secs(86400)),
            ..cfg()
        };
        assert_eq!(c.timeout_for(1), Some(Duration::from_secs(3600)));
        assert_eq!(c.timeout_for(2), Some(Duration::from_secs(4 * 3600)));
        assert_eq!(c.timeout_for(3), Some(Duration::from_secs(16 * 3600)));
        assert_eq!(c.timeout_for(4), Some(Duration::from_secs(86400)));
        assert_eq!(c.timeout_for(u32::MAX), Some(Duration::from_secs(86400)));
        let huge = PolicyConfig {
            timeout: Some(Duration::from_secs(u64::MAX)),
            repeat_factor: u32::MAX,
            max_timeout: None,
            ..cfg()
        };
        assert_eq!(huge.timeout_for(u32::MAX), Some(MAX_TIMEOUT));
        let tiny = PolicyConfig {
            timeout: Some(Duration::from_millis(500)),
            ..cfg()
        };
        assert_eq!(tiny.timeout_for(1), Some(Duration::from_secs(1)));
        assert_eq!(PolicyConfig { timeout: None, ..c }.timeout_for(3), None);
    }

    #[test]
    fn repeat_offenders_are_remembered_after_their_block_ends() {
        let mut b = book(PolicyConfig {
            repeat_factor: 4,
            ..cfg()
        });
        apply(&mut b, &[scan("198.18.0.1")], 1000, &[]);
        let (_, out) = apply(&mut b, &[scan("198.18.0.1")], 1000 + 3601, &[]);
        assert_eq!(
            out[0],
            Outcome::Blocked {
                key: net("198.18.0.1"),
                timeout: Some(Duration::from_secs(4 * 3600)),
                count: 2
            }
        );
    }

    #[test]
    fn restore_never_trusts_a_clock_set_back() {
        let mut b = book(cfg());
        apply(&mut b, &[scan("198.18.0.1")], 1_800_000_000, &[]);
        // The machine boots with its clock a year behind.
        let back = b.restore(1_800_000_000 - 365 * 86400);
        assert_eq!(back[0].timeout, Some(Duration::from_secs(3600)));
        let later = b.restore(1_800_000_000 + 600);
        assert_eq!(later[0].timeout, Some(Duration::from_secs(3000)));
    }

    #[test]
    fn ipv6_prefixes_swallow_narrower_blocks_and_cover_later_ones() {
        let mut b = book(cfg());
        apply(
            &mut b,
            &[admin("2001:db8:5::7", Timeout::Default)],
            1000,
            &[],
        );
        let (plan, out) = apply(&mut b, &[scan("2001:db8:5::/64")], 1000, &[]);
        assert!(matches!(out[0], Outcome::Blocked { .. }));
        assert_eq!(plan.remove, vec![net("2001:db8:5::7")]);
        // It took in the administrator's block: it is theirs now.
        assert_eq!(b.get(net("2001:db8:5::/64")).unwrap().origin, Origin::Admin);
        // A later scan inside it is covered.
        let (_, out) = apply(&mut b, &[scan("2001:db8:5::9")], 1001, &[]);
        assert_eq!(out[0], Outcome::Covered(net("2001:db8:5::/64")));
        assert_eq!(
            b.covering(net("2001:db8:5::9")).map(|r| r.key),
            Some(net("2001:db8:5::/64"))
        );
        assert_eq!(
            b.unblock(net("2001:db8:5::9")),
            vec![net("2001:db8:5::/64")]
        );
        assert!(b.is_empty());
    }

    #[test]
    fn the_block_count_saturates() {
        let mut b = book(cfg());
        b.load(
            vec![Record {
                key: net("198.18.0.1"),
                since: 1000,
                expires: None,
                count: u32::MAX,
                reason: "x".into(),
                origin: Origin::Scan,
            }],
            1000,
        );
        let (_, out) = apply(&mut b, &[scan("198.18.0.1")], 1001, &[]);
        assert!(
            matches!(
                out[0],
                Outcome::Blocked {
                    count: u32::MAX,
                    ..
                }
            ),
            "{out:?}"
        );
    }

    #[test]
    fn one_write_per_network_per_plan() {
        let mut b = book(cfg());
        let (plan, out) = apply(&mut b, &[scan("198.18.0.1"), scan("198.18.0.1")], 1000, &[]);
        assert_eq!(plan.add.len(), 1);
        assert_eq!(out[1], Outcome::Covered(net("198.18.0.1")));
    }

    #[test]
    fn records_read_back_old_and_new_forms() {
        let old = r#"{"addr":"192.0.2.2","since":1,"expires":null,"reason":"x"}"#;
        let r: Record = serde_json::from_str(old).unwrap();
        assert_eq!(
            (r.key, r.count, r.origin),
            (net("192.0.2.2"), 1, Origin::Scan)
        );
        let r = Record {
            key: net("2001:db8::/64"),
            ..r
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains("\"addr\":\"2001:db8::/64\""), "{text}");
        assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), r);
        assert!(serde_json::from_str::<Record>(&old.replace("192.0.2.2", "nope")).is_err());
    }

    /// A reload lowering `max_blocked` below what stands: the next block makes the room the
    /// new cap asks for, not one slot, or the table stays over its cap until the blocks end.
    #[test]
    fn a_lowered_cap_is_honoured_by_the_next_block() {
        let mut b = book(PolicyConfig {
            max_blocked: 10,
            ..cfg()
        });
        let wants: Vec<Want> = (1..=6).map(|i| scan(&format!("198.18.0.{i}"))).collect();
        apply(&mut b, &wants, 1000, &[]);
        b.reconfigure(
            PolicyConfig {
                max_blocked: 2,
                ..cfg()
            },
            b.protected().clone(),
        );
        let (plan, out) = apply(&mut b, &[scan("198.18.1.1")], 1001, &[]);
        assert!(matches!(out[0], Outcome::Blocked { .. }), "{out:?}");
        assert_eq!(plan.evicted.len(), 5, "{plan:?}");
        assert_eq!(b.len(), 2);
    }

    /// A scan block wider than the administrator's (after a reload widened `ipv6_prefix`)
    /// swallows it, as the interval set wants, but must not shorten it: a permanent block
    /// became a one-hour one and then nothing.
    #[test]
    fn a_wider_scan_block_never_shortens_an_admin_block_it_swallows() {
        let mut b = book(PolicyConfig {
            max_blocked: 100,
            ..cfg()
        });
        apply(
            &mut b,
            &[admin("2001:db8:5:1::/64", Timeout::Permanent)],
            1000,
            &[],
        );
        apply(&mut b, &[scan("2001:db8:5::/48")], 1000, &[]);
        b.prune(1000 + 3600 + 1);
        let r = b.covering(net("2001:db8:5:1::7"));
        assert!(
            r.as_ref().is_some_and(|r| r.expires.is_none()),
            "the administrator's permanent block ended: {r:?}"
        );
        // Nor may a flood evict it: what stands for the administrator is not evictable.
        assert_eq!(r.unwrap().origin, Origin::Admin);
    }

    /// The administrator asks for a permanent block of an address inside a scan block that
    /// ends in an hour (`ipv6_prefix` narrowed by a reload): "already blocked", and an hour
    /// later nothing is.
    #[test]
    fn an_admin_block_covered_by_a_shorter_one_is_not_lost() {
        let mut b = book(PolicyConfig {
            max_blocked: 100,
            ..cfg()
        });
        apply(&mut b, &[scan("2001:db8:5::/64")], 1000, &[]);
        apply(
            &mut b,
            &[admin("2001:db8:5::7", Timeout::Permanent)],
            1001,
            &[],
        );
        b.prune(1000 + 3600 + 1);
        let r = b.covering(net("2001:db8:5::7"));
        assert!(
            r.as_ref().is_some_and(|r| r.expires.is_none()),
            "the administrator's permanent block ended: {r:?}"
        );
    }

    /// A flood's table is rebuilt whole once it grew by a quarter, and nothing else is.
    #[test]
    fn a_table_built_one_by_one_is_worth_compacting_once() {
        let mut b = book(PolicyConfig {
            max_blocked: 1_000_000,
            max_per_second: 1_000_000,
            ..cfg()
        });
        let wants: Vec<Want> = (0..COMPACT_MIN as u32)
            .map(|i| scan(&std::net::Ipv4Addr::from(0xC612_0000 + i).to_string()))
            .collect();
        apply(&mut b, &wants, 1000, &[]);
        assert!(b.worth_compacting());
        let before = b.page(None, usize::MAX).records();
        b.compact(Tree::Records);
        assert!(b.worth_compacting(), "both trees are rebuilt");
        b.compact(Tree::Ends);
        assert!(!b.worth_compacting());
        assert_eq!(b.page(None, usize::MAX).records(), before);
        // Ended in the order they would have: the first hour's blocks go together.
        b.prune(1000 + 3600);
        assert!(b.is_empty());
    }

    proptest! {
        /// Whatever the requests and the clock, the standing blocks never exceed the cap,
        /// the kernel is never asked to hold two overlapping blocks, and every key the plan
        /// writes is either recorded or pending after commit.
        #[test]
        fn invariants_hold_under_any_sequence(
            ops in proptest::collection::vec((0u8..4, 0u16..40, 0u64..5000, any::<bool>()), 1..200),
            cap in 1usize..8,
        ) {
            let mut b = book(PolicyConfig { max_blocked: cap, max_per_second: 5, ..cfg() });
            let mut now = 1000u64;
            for (op, n, dt, fail) in ops {
                now += dt;
                let key = match op {
                    0 => format!("198.18.0.{}", n % 20),
                    1 => format!("2001:db8:{:x}::/64", n % 5),
                    2 => format!("2001:db8:{:x}::{:x}", n % 5, n),
                    _ => format!("2001:db8:{:x}::/48", n % 3),
                };
                let w = if n % 7 == 0 { admin(&key, Timeout::Default) } else { scan(&key) };
                let refuse: Vec<&str> = if fail { vec![key.as_str()] } else { vec![] };
                apply(&mut b, &[w], now, &refuse);
                if n % 11 == 0 {
                    let before = b.page(None, usize::MAX).records();
                    let ends = b.ends.clone();
                    b.compact(Tree::Records);
                    b.compact(Tree::Ends);
                    prop_assert_eq!(b.page(None, usize::MAX).records(), before);
                    prop_assert_eq!(&b.ends, &ends);
                }
                let due = b.due(now);
                apply(&mut b, &due, now, &[]);
                b.prune(now);
                prop_assert!(b.len() <= cap);
                let keys: Vec<IpNet> = b.records.keys().copied().collect();
                for a in &keys {
                    for c in &keys {
                        prop_assert!(a == c || !(a.contains(&c.network()) || c.contains(&a.network())),
                            "{} overlaps {}", a, c);
                    }
                }
                prop_assert_eq!(
                    b.ends.len() + b.admin_ends.len(),
                    b.records.values().filter(|r| r.origin == Origin::Scan || r.ends != 0).count()
                );
                let uses: u32 = b.reasons.texts.iter().map(|t| t.1).sum();
                prop_assert_eq!(uses as usize, b.records.len());
            }
        }
    }
}
