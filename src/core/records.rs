//! How a standing block is kept, pure: records of 28 bytes with no allocation of their own,
//! reason texts interned, B-trees rebuilt whole. A million blocks must fit a small VPS
//! (bench/million); the policy (`core::policy`) decides, this only stores.
//!
//! May use: core::block.

use crate::core::block::{Origin, Record};
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// Where a scan record sorts in `Blocks::ends`: (0, its end) or, permanent, (1, since).
/// Two u32 and the key make 28 bytes where (u64, IpNet) took 32.
pub(super) type Rank = (u32, u32);

/// What is kept of a standing record: no heap allocation of its own, 28 bytes (a million
/// of them must fit a small VPS, and a B-tree node holds 11 beside their keys). The key is
/// the map's; the reason is interned, its "from SRC" tail kept as the source's host bits
/// under the key (80 of them: IPv6 networks of /48 and narrower; a wider one keeps its
/// source in the text, one text per record). Times are epoch seconds in a u32, which lasts
/// until 2106: a later end (a timeout near the 100-year maximum) is kept as 2106.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Rec {
    pub(super) since: u32,
    /// 0: permanent.
    pub(super) ends: u32,
    pub(super) count: u32,
    /// Index into `Reasons`.
    pub(super) reason: u32,
    /// The host bits of the probe's source under the key, when the reason named one: bits
    /// 0–63 as two u32 and 64–79 as a u16, so that the record keeps 4-byte alignment.
    src: [u32; 2],
    src_high: u16,
    has_src: bool,
    pub(super) origin: Origin,
}

/// Epoch seconds as a record keeps them.
pub(super) fn secs(t: u64) -> u32 {
    u32::try_from(t).unwrap_or(u32::MAX)
}

/// Host bits a record keeps (`Rec::src`).
const HOST_BITS: u32 = 80;

/// `src`'s bits under `key`, when `src` is inside it and they fit `HOST_BITS` (every IPv4
/// network, IPv6 networks of /48 and narrower).
fn host_bits(key: IpNet, src: IpAddr) -> Option<u128> {
    if !key.contains(&src) {
        return None;
    }
    let bits = match (key, src) {
        (IpNet::V4(n), IpAddr::V4(a)) => u128::from(u32::from(a) & u32::from(n.hostmask())),
        (IpNet::V6(n), IpAddr::V6(a)) => u128::from(a) & u128::from(n.hostmask()),
        _ => return None,
    };
    (bits >> HOST_BITS == 0).then_some(bits)
}

impl Rec {
    pub(super) fn src(&self, key: IpNet) -> Option<IpAddr> {
        if !self.has_src {
            return None;
        }
        let bits = u128::from(self.src_high) << 64
            | u128::from(self.src[0]) << 32
            | u128::from(self.src[1]);
        Some(match key {
            IpNet::V4(n) => IpAddr::V4(Ipv4Addr::from(
                u32::from(n.network()) | u32::try_from(bits).unwrap_or(0),
            )),
            IpNet::V6(n) => IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) | bits)),
        })
    }

    pub(super) fn record(&self, key: IpNet, text: &Arc<str>) -> Record {
        Record {
            key,
            since: u64::from(self.since),
            expires: self.expires(),
            count: self.count,
            reason: match self.src(key) {
                Some(src) => Arc::from(format!("{text} from {src}")),
                None => text.clone(),
            },
            origin: self.origin,
        }
    }

    pub(super) fn expires(&self) -> Option<u64> {
        (self.ends != 0).then_some(u64::from(self.ends))
    }

    /// Where it sorts among the records that may end: soonest first, permanent ones
    /// last (oldest first among them).
    pub(super) fn rank(&self) -> Rank {
        match self.ends {
            0 => (1, self.since),
            e => (0, e),
        }
    }
}

/// A page of records as they are kept (see `Blocks::page`).
#[derive(Debug, Default)]
pub struct Page(pub(super) Vec<(IpNet, Rec, Arc<str>)>);

impl Page {
    /// The last key, to ask for the next page after it; `None`: the table ended.
    pub fn last_key(&self) -> Option<IpNet> {
        self.0.last().map(|(k, ..)| *k)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn records(&self) -> Vec<Record> {
        self.0.iter().map(|(k, r, t)| r.record(*k, t)).collect()
    }
}

/// Interned reason texts, counted: a flood's million blocks share a few dozen.
#[derive(Debug, Default)]
pub(super) struct Reasons {
    pub(super) texts: Vec<(Arc<str>, u32)>,
    pub(super) ids: HashMap<Arc<str>, u32>,
    free: Vec<u32>,
}

/// A record as the policy hands it over: borrowed, so keeping one allocates nothing.
pub(super) struct Fields<'a> {
    pub(super) since: u64,
    pub(super) expires: Option<u64>,
    pub(super) count: u32,
    pub(super) reason: &'a str,
    pub(super) origin: Origin,
}

impl<'a> From<&'a Record> for Fields<'a> {
    fn from(r: &'a Record) -> Self {
        Fields {
            since: r.since,
            expires: r.expires,
            count: r.count,
            reason: &r.reason,
            origin: r.origin,
        }
    }
}

impl Reasons {
    /// A record as it is kept, its reason interned.
    pub(super) fn keep(&mut self, key: IpNet, f: &Fields) -> Rec {
        let Fields {
            since,
            expires,
            count,
            reason,
            origin,
        } = *f;
        // A source outside the key, or under a wide IPv6 network, stays in the text.
        let (text, bits) = match split_reason(reason) {
            (text, Some(src)) => match host_bits(key, src) {
                Some(bits) => (text, Some(bits)),
                None => (reason, None),
            },
            (text, None) => (text, None),
        };
        let (has_src, bits) = (bits.is_some(), bits.unwrap_or(0));
        Rec {
            since: secs(since),
            // An expiry of 0 would read as permanent: the epoch's first second has passed.
            ends: expires.map_or(0, |e| secs(e).max(1)),
            count,
            reason: self.intern(text),
            // Below 2^80 (`host_bits`): each part fits.
            src: [(bits >> 32) as u32, (bits & 0xffff_ffff) as u32],
            src_high: (bits >> 64) as u16,
            has_src,
            origin,
        }
    }

    pub(super) fn intern(&mut self, text: &str) -> u32 {
        if let Some(&id) = self.ids.get(text) {
            let uses = &mut self.texts[id as usize].1;
            *uses = uses.saturating_add(1);
            return id;
        }
        let text: Arc<str> = Arc::from(text);
        let id = match self.free.pop() {
            Some(id) => {
                self.texts[id as usize] = (text.clone(), 1);
                id
            }
            None => {
                self.texts.push((text.clone(), 1));
                u32::try_from(self.texts.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.ids.insert(text, id);
        id
    }

    pub(super) fn release(&mut self, id: u32) {
        let Some(e) = self.texts.get_mut(id as usize) else {
            return;
        };
        e.1 = e.1.saturating_sub(1);
        if e.1 == 0 {
            let text = std::mem::replace(&mut e.0, Arc::from(""));
            self.ids.remove(&text);
            self.free.push(id);
        }
        if self.ids.is_empty() {
            // All gone (a flood's blocks ended): give the memory back.
            *self = Reasons::default();
        }
    }

    pub(super) fn text(&self, id: u32) -> &Arc<str> {
        &self.texts[id as usize].0
    }
}

/// `append` into a non-empty tree builds a new one from both sorted iterators, nodes
/// full, freeing the old nodes as it goes (no copy of the whole, unlike `collect`); into
/// an empty one it would only swap, hence the first element taken out first.
pub(super) fn rebuild_map<K: Ord, V>(tree: &mut BTreeMap<K, V>) {
    if let Some(first) = tree.pop_first() {
        let mut whole = BTreeMap::from([first]);
        whole.append(tree);
        *tree = whole;
    }
}

/// `rebuild_map` for a set.
pub(super) fn rebuild_set<T: Ord>(tree: &mut BTreeSet<T>) {
    if let Some(first) = tree.pop_first() {
        let mut whole = BTreeSet::from([first]);
        whole.append(tree);
        *tree = whole;
    }
}

/// A reason split into its shared text and the source it names ("… from 192.0.2.7").
fn split_reason(reason: &str) -> (&str, Option<IpAddr>) {
    match reason.rsplit_once(" from ") {
        Some((head, tail)) => match tail.parse::<IpAddr>() {
            Ok(a) => (head, Some(a)),
            Err(_) => (reason, None),
        },
        None => (reason, None),
    }
}
