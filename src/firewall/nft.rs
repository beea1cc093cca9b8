//! The kernel backend: our table through nftnl/mnl transactions, the include's definition
//! loaded with `nft -f`, and the table checked against what was put in place.

use super::netlink::{MsgError, Netlink};
use super::raw::{self, Elem, Get, SetElems, Tx, ELEM_INTERVAL_END, MAX_ELEMS_PER_MSG};
use super::{
    Block, BlockReport, Built, Firewall, FirewallError, Health, Listed, Set, Steering, TableSpec,
    ALLOW4, ALLOW6, BLOCKED4, BLOCKED6, FLEET4, FLEET6, SERVED_TCP, SERVED_UDP, STEER, TABLE,
    WATCH_TCP, WATCH_UDP,
};
use crate::core::ports::PortSet;
use ipnet::{IpNet, Ipv4Subnets, Ipv6Subnets};
use nftnl::{Chain, MsgType, ProtoFamily, Rule, Table};
use std::ffi::CStr;
use std::io::{self, Write};
use std::net::IpAddr;
use std::time::Duration;

/// Messages per transaction: 8 × 500 elements keeps the kernel's answer within the socket
/// buffer (a single 100,000-element transaction fails with ENOBUFS).
const MSGS_PER_TX: usize = 8;

/// The table as the kernel describes it: sets, chains and rules (message bodies), and the
/// elements of the allow and watch sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Fingerprint {
    /// The table itself: its flags (`dormant` switches the whole table off).
    table: Vec<Vec<u8>>,
    sets: Vec<Vec<u8>>,
    chains: Vec<Vec<u8>>,
    rules: Vec<Vec<u8>>,
    elems: Vec<(&'static CStr, Vec<KeyFlags>)>,
}

/// A set element as compared: its key and flags.
type KeyFlags = (Vec<u8>, u32);

impl Fingerprint {
    fn same_structure(&self, other: &Fingerprint) -> bool {
        (&self.table, &self.sets, &self.chains, &self.rules)
            == (&other.table, &other.sets, &other.chains, &other.rules)
    }

    /// What differs from `want`, for the log.
    fn diff(&self, want: &Fingerprint) -> String {
        let mut parts = Vec::new();
        for (name, now, then) in [
            ("table flags", &self.table, &want.table),
            ("sets", &self.sets, &want.sets),
            ("chains", &self.chains, &want.chains),
            ("rules", &self.rules, &want.rules),
        ] {
            if now != then {
                parts.push(format!(
                    "{name} changed ({} now, {} expected)",
                    now.len(),
                    then.len()
                ));
            }
        }
        for ((set, now), (_, then)) in self.elems.iter().zip(&want.elems) {
            if now != then {
                parts.push(format!(
                    "set {} changed ({} elements now, {} expected)",
                    set.to_string_lossy(),
                    now.len(),
                    then.len()
                ));
            }
        }
        if parts.is_empty() {
            "changed".into()
        } else {
            parts.join(", ")
        }
    }
}

pub struct Nft {
    nl: Netlink,
    /// The ruleset generation and fingerprint sealed last: a check with the same
    /// generation costs one small request.
    sealed: Option<(u32, Fingerprint)>,
    /// The spec last built, and the table as it was last sealed for it: a later build of
    /// the same spec must give the same table, or something changed it while we sealed.
    built: Option<(TableSpec, Fingerprint)>,
    /// The allow and watch elements last written, as the kernel lists them.
    written: Vec<(&'static CStr, Vec<KeyFlags>)>,
    /// A table that could not be sealed because it differed from the last one.
    unsettled: Option<Fingerprint>,
}

const INET: u16 = ProtoFamily::Inet as u16;

impl Nft {
    pub fn open() -> Result<Nft, FirewallError> {
        Ok(Nft {
            nl: Netlink::open()?,
            sealed: None,
            built: None,
            written: Vec::new(),
            unsettled: None,
        })
    }

    pub fn table_exists(&mut self) -> Result<bool, FirewallError> {
        let seq = self.nl.next_seq();
        let msg = raw::get_table_msg(TABLE, INET, seq);
        match self.nl.request(&msg, seq)? {
            None => Ok(true),
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Some(e) => Err(e.into()),
        }
    }

    /// The ruleset generation: it changes with every committed transaction.
    fn generation(&mut self) -> Result<u32, FirewallError> {
        let msgs = self.get(Get::Gen)?;
        msgs.iter()
            .find_map(|m| raw::parse_gen(m))
            .ok_or_else(|| io::Error::other("no generation in the kernel's answer").into())
    }

    fn get(&mut self, what: Get) -> Result<Vec<Vec<u8>>, FirewallError> {
        let seq = self.nl.next_seq();
        let msg = raw::get_msg(what, TABLE, INET, seq);
        Ok(self.nl.dump(&msg, seq)?)
    }

    /// Our table's objects of one kind, in the kernel's order, as the attributes that say
    /// what they are: counts and counters, which change as the table is used, are left out.
    fn ours(&mut self, what: Get) -> Result<Vec<Vec<u8>>, FirewallError> {
        // Handles change when an object is put back; counts and counters change as the
        // table is used: neither says what the object is.
        let volatile: &[u16] = match what {
            // NFTA_TABLE_USE, NFTA_TABLE_HANDLE
            Get::Tables => &[3, 4],
            // NFTA_SET_HANDLE, NFTA_SET_TYPE (the backend), NFTA_SET_COUNT
            Get::Sets => &[16, 19, 20],
            // NFTA_CHAIN_HANDLE, NFTA_CHAIN_COUNTERS
            Get::Chains => &[2, 8],
            // NFTA_RULE_HANDLE, NFTA_RULE_POSITION (the handle of the rule before)
            Get::Rules => &[3, 6],
            Get::Gen => &[],
        };
        Ok(self
            .get(what)?
            .iter()
            .filter(|m| {
                raw::family(m) == Some(libc::NFPROTO_INET as u8)
                    && raw::table_of(m) == Some(TABLE.to_bytes())
            })
            .map(|m| {
                raw::attrs(m)
                    .filter(|(ty, _)| !volatile.contains(ty))
                    .flat_map(|(ty, p)| {
                        [&ty.to_ne_bytes()[..], &(p.len() as u32).to_ne_bytes(), p].concat()
                    })
                    .collect()
            })
            .collect())
    }

    fn fingerprint(&mut self) -> Result<Fingerprint, FirewallError> {
        let mut f = Fingerprint {
            table: self.ours(Get::Tables)?,
            sets: self.ours(Get::Sets)?,
            chains: self.ours(Get::Chains)?,
            rules: self.ours(Get::Rules)?,
            elems: Vec::new(),
        };
        for set in [ALLOW4, ALLOW6, WATCH_TCP, WATCH_UDP] {
            let mut e: Vec<KeyFlags> = match self.elements(set) {
                Ok(list) => list.into_iter().map(|e| (e.key, e.flags)).collect(),
                Err(FirewallError::Io(e)) if e.raw_os_error() == Some(libc::ENOENT) => Vec::new(),
                Err(e) => return Err(e),
            };
            e.sort();
            f.elems.push((set, e));
        }
        Ok(f)
    }

    fn elements(&mut self, set: &CStr) -> Result<Vec<raw::ListedElem>, FirewallError> {
        let seq = self.nl.next_seq();
        let req = raw::get_set_elems_msg(TABLE, set, INET, seq);
        let mut out = Vec::new();
        for msg in self.nl.dump(&req, seq)? {
            out.extend(raw::parse_set_elems(&msg));
        }
        Ok(out)
    }

    /// Runs `nft -f -` with `text` (argv, no shell; the text is ours and the log prefix is
    /// checked by the configuration).
    fn load(text: &str) -> Result<(), FirewallError> {
        let mut child = std::process::Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| FirewallError::Definition(format!("cannot run nft: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(text.as_bytes())
                .map_err(|e| FirewallError::Definition(e.to_string()))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| FirewallError::Definition(e.to_string()))?;
        if out.status.success() {
            Ok(())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            // nft prints a warning about the compat target; the error is the rest.
            let err: Vec<&str> = err
                .lines()
                .filter(|l| !l.contains("managed by iptables-nft") && !l.contains("libxtables"))
                .collect();
            Err(FirewallError::Definition(err.join(" ").trim().to_string()))
        }
    }

    fn delete_table(&mut self) -> Result<(), FirewallError> {
        let mut tx = self.nl.tx();
        tx.add(&Table::new(TABLE, ProtoFamily::Inet), MsgType::Del);
        self.commit("table removal", tx)
    }

    /// Installs the one rule of chain `steer` (replacing whatever is there), choosing
    /// native queue or the compat target as asked or, for `None`, whichever the kernel has.
    pub fn install_steering(
        &mut self,
        prefer: Option<Steering>,
        queue: u16,
        queues: u16,
    ) -> Result<Steering, FirewallError> {
        // No CPU fanout: over several queues the kernel then picks one by a hash of the
        // addresses (a source's probes are counted in its own shard whichever queue they
        // reach: dataplane::shards).
        let flags = raw::QUEUE_BYPASS;
        let try_one = |nft: &mut Nft, s: Steering| -> Result<(), FirewallError> {
            let table = Table::new(TABLE, ProtoFamily::Inet);
            let chain = Chain::new(STEER, &table);
            let mut tx = nft.nl.tx();
            tx.add(&Rule::new(&chain), MsgType::Del); // flush the chain
            let mut rule = Rule::new(&chain);
            match s {
                Steering::Native => rule.add_expr(&raw::QueueExpr {
                    num: queue,
                    total: queues,
                    flags,
                }),
                Steering::Compat => rule.add_expr(&raw::CompatQueueTarget {
                    num: queue,
                    total: queues,
                    flags,
                }),
            }
            tx.add(&rule, MsgType::Add);
            // The kernel may load the module first (nft_queue is autoloaded): on a slow
            // machine that outlasts the socket's 5 s wait. Ask again, a few times.
            let mut waited = 0;
            loop {
                match nft.commit("steering rule", tx) {
                    Err(FirewallError::Io(e))
                        if e.kind() == io::ErrorKind::WouldBlock && waited < 5 =>
                    {
                        waited += 1;
                        tx = nft.nl.tx();
                        tx.add(&Rule::new(&chain), MsgType::Del);
                        tx.add(&rule, MsgType::Add);
                    }
                    other => return other,
                }
            }
        };
        match prefer {
            Some(s) => try_one(self, s).map(|()| s).map_err(|e| match e {
                FirewallError::Rejected { error, .. } => {
                    FirewallError::Steering { steering: s, error }
                }
                other => other,
            }),
            None => match try_one(self, Steering::Native) {
                Ok(()) => Ok(Steering::Native),
                Err(native) => match try_one(self, Steering::Compat) {
                    Ok(()) => Ok(Steering::Compat),
                    Err(compat) => Err(FirewallError::NoSteering {
                        native: into_io(native),
                        compat: into_io(compat),
                    }),
                },
            },
        }
    }

    fn replace_sets(
        &mut self,
        what: &'static str,
        sets: &[(&'static CStr, &[Elem])],
    ) -> Result<(), FirewallError> {
        for (set, elems) in sets {
            let mut e: Vec<KeyFlags> = elems.iter().map(|e| (e.key().to_vec(), e.flags)).collect();
            e.sort();
            self.written.retain(|(s, _)| s != set);
            self.written.push((set, e));
        }
        let mut tx = self.nl.tx();
        for (set, elems) in sets {
            tx.add_elems(&SetElems::new(TABLE, set, INET, &[])?, MsgType::Del);
            tx.add_elems(&SetElems::new(TABLE, set, INET, elems)?, MsgType::Add);
        }
        self.commit(what, tx)
    }

    fn commit(&mut self, what: &'static str, tx: Tx) -> Result<(), FirewallError> {
        let errors = self.nl.transact(tx)?;
        match errors.into_iter().next() {
            None => Ok(()),
            Some(MsgError { error, .. }) => Err(FirewallError::Rejected { what, error }),
        }
    }

    /// Writes blocks in as few transactions as fit; a rejected transaction is retried
    /// block by block so one bad element cannot cost the others their block.
    fn write_blocks(&mut self, blocks: &[Block]) -> BlockReport {
        let mut report = BlockReport::default();
        for set in [BLOCKED4, BLOCKED6, FLEET4, FLEET6] {
            let list: Vec<Block> = blocks
                .iter()
                .filter(|b| set_of(b.set, &b.net) == set)
                .copied()
                .collect();
            // An interval block is two elements: keep a whole block in one message.
            let per_msg = if is_interval(set) {
                MAX_ELEMS_PER_MSG / 2
            } else {
                MAX_ELEMS_PER_MSG
            };
            for tx in list.chunks(per_msg * MSGS_PER_TX) {
                self.write_some(set, tx, per_msg, &mut report);
            }
        }
        report
    }

    /// One transaction; if the kernel refuses it (one refused element aborts the whole),
    /// each half alone, down to the blocks it refuses. k refused blocks cost about
    /// 2k·log2(n) transactions, not one per block: on recent kernels (6.18 here) every
    /// commit walks the whole interval set, about 0.15 s at a million blocks.
    fn write_some(
        &mut self,
        set: &CStr,
        blocks: &[Block],
        per_msg: usize,
        report: &mut BlockReport,
    ) {
        match self.send_blocks(set, blocks, per_msg) {
            Ok(()) => report.written += blocks.len(),
            Err(e) if blocks.len() == 1 => report.failed.push((blocks[0].net, e)),
            Err(_) => {
                let (a, b) = blocks.split_at(blocks.len() / 2);
                self.write_some(set, a, per_msg, report);
                self.write_some(set, b, per_msg, report);
            }
        }
    }

    /// `write_some` for deletions from one set, `per_msg` blocks a message: an element
    /// already gone (ENOENT) is not an error.
    fn remove_some(
        &mut self,
        set: &CStr,
        nets: &[IpNet],
        per_msg: usize,
    ) -> Result<(), FirewallError> {
        let mut tx = self.nl.tx();
        for chunk in nets.chunks(per_msg) {
            let elems: Vec<Elem> = chunk
                .iter()
                .flat_map(|n| Elem::net(*n, is_interval(set)))
                .collect();
            tx.add_elems(&SetElems::new(TABLE, set, INET, &elems)?, MsgType::Del);
        }
        if tx.is_empty() {
            return Ok(());
        }
        match self.commit("unblock", tx) {
            Ok(()) => Ok(()),
            Err(FirewallError::Rejected { error, .. })
                if nets.len() == 1 && error.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(())
            }
            // Only a refusal is halved: after a lost answer (a timeout) the transaction may
            // have landed, and every half would then be refused down to single blocks.
            Err(FirewallError::Rejected { .. }) if nets.len() > 1 => {
                let (a, b) = nets.split_at(nets.len() / 2);
                // Both halves are tried whatever the first gives.
                let first = self.remove_some(set, a, per_msg);
                first.and(self.remove_some(set, b, per_msg))
            }
            Err(e) => Err(e),
        }
    }

    /// Transactions sent so far (see `write_some`).
    pub fn transactions(&self) -> u64 {
        self.nl.transactions()
    }

    fn send_blocks(&mut self, set: &CStr, blocks: &[Block], per_msg: usize) -> io::Result<()> {
        if let Some(b) = blocks
            .iter()
            .find(|b| set == BLOCKED4 && b.net.prefix_len() != 32)
        {
            return Err(io::Error::other(format!(
                "{}: IPv4 blocks are single addresses",
                b.net
            )));
        }
        let mut tx = self.nl.tx();
        for chunk in blocks.chunks(per_msg) {
            let elems: Vec<Elem> = chunk
                .iter()
                .flat_map(|b| {
                    let ms = b
                        .timeout
                        .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
                    let mut e = Elem::net(b.net, is_interval(set));
                    e[0] = e[0].with_timeout_ms(ms);
                    e
                })
                .collect();
            tx.add_elems(&SetElems::new(TABLE, set, INET, &elems)?, MsgType::Add);
        }
        let errors = self.nl.transact(tx)?;
        match errors.into_iter().next() {
            None => Ok(()),
            Some(e) => Err(e.error),
        }
    }
}

fn set_of(set: Set, net: &IpNet) -> &'static CStr {
    match (set, net.addr().is_ipv4()) {
        (Set::Local, true) => BLOCKED4,
        (Set::Local, false) => BLOCKED6,
        (Set::Fleet, true) => FLEET4,
        (Set::Fleet, false) => FLEET6,
    }
}

/// Every set but blocked4 holds intervals (blocked4 is single addresses, a contract).
fn is_interval(set: &CStr) -> bool {
    set != BLOCKED4
}

impl Firewall for Nft {
    fn add_blocks(&mut self, blocks: &[Block]) -> BlockReport {
        self.write_blocks(blocks)
    }

    fn remove_blocks(&mut self, set: Set, nets: &[IpNet]) -> Result<(), FirewallError> {
        // Transactions sized as for adds (one for 60,000 blocks fails with ENOBUFS, one
        // message a block with EMSGSIZE). Every one is tried; the first error is the answer.
        let mut result = Ok(());
        for v4 in [true, false] {
            let list: Vec<IpNet> = nets
                .iter()
                .filter(|n| n.addr().is_ipv4() == v4)
                .copied()
                .collect();
            let Some(first) = list.first() else { continue };
            let s = set_of(set, first);
            // An interval block is two elements: keep a whole block in one message.
            let per_msg = if is_interval(s) {
                MAX_ELEMS_PER_MSG / 2
            } else {
                MAX_ELEMS_PER_MSG
            };
            for tx in list.chunks(per_msg * MSGS_PER_TX) {
                let r = self.remove_some(s, tx, per_msg);
                result = result.and(r);
            }
        }
        result
    }

    fn list_blocks(&mut self) -> Result<Vec<Listed>, FirewallError> {
        let mut out = Vec::new();
        for e in self.elements(BLOCKED4)? {
            if let Ok(k) = <[u8; 4]>::try_from(&e.key[..]) {
                out.push(Listed {
                    net: IpNet::from(IpAddr::from(k)),
                    left: e.expires_ms.map(Duration::from_millis),
                    set: Set::Local,
                });
            }
        }
        out.extend(intervals(&self.elements(BLOCKED6)?, Set::Local));
        // A table from before the fleet sets has none: nothing to list there.
        for set in [FLEET4, FLEET6] {
            match self.elements(set) {
                Ok(elems) => out.extend(intervals(&elems, Set::Fleet)),
                Err(FirewallError::Io(e)) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn missing_blocks(&mut self, set: Set, nets: &[IpNet]) -> Result<Vec<IpNet>, FirewallError> {
        let mut missing = Vec::new();
        for n in nets {
            let seq = self.nl.next_seq();
            let msg = raw::get_elem_msg(TABLE, set_of(set, n), INET, &Elem::addr(n.network()), seq);
            match self.nl.dump(&msg, seq) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => missing.push(*n),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(missing)
    }

    /// Replaces the allow sets (interval sets) with `nets`, merged.
    fn sync_allow(&mut self, nets: &[IpNet]) -> Result<(), FirewallError> {
        let (v4, v6) = interval_elems(nets);
        self.replace_sets("allow sets", &[(ALLOW4, &v4), (ALLOW6, &v6)])
    }

    /// Replaces the contents of the watched-port sets in one transaction.
    fn sync_watch(&mut self, tcp: &PortSet, udp: &PortSet) -> Result<(), FirewallError> {
        let tcp: Vec<Elem> = tcp.iter().map(Elem::port).collect();
        let udp: Vec<Elem> = udp.iter().map(Elem::port).collect();
        self.replace_sets("watched-port sets", &[(WATCH_TCP, &tcp), (WATCH_UDP, &udp)])
    }

    /// Adds (or refreshes) the ports with their grace as timeout: the kernel's own rule
    /// does the same for every connection to a service.
    fn note_served(
        &mut self,
        tcp: &PortSet,
        udp: &PortSet,
        grace: Duration,
    ) -> Result<(), FirewallError> {
        let ms = Some(u64::try_from(grace.as_millis()).unwrap_or(u64::MAX));
        let mut tx = self.nl.tx();
        for (set, ports) in [(SERVED_TCP, tcp), (SERVED_UDP, udp)] {
            let elems: Vec<Elem> = ports
                .iter()
                .map(|p| Elem::port(p).with_timeout_ms(ms))
                .collect();
            tx.add_elems(&SetElems::new(TABLE, set, INET, &elems)?, MsgType::Add);
        }
        if tx.is_empty() {
            return Ok(());
        }
        self.commit("served-port sets", tx)
    }

    fn build(&mut self, spec: &TableSpec) -> Result<Built, FirewallError> {
        self.sealed = None;
        if self.built.as_ref().is_some_and(|(s, _)| s != spec) {
            self.built = None;
        }
        let existed = self.table_exists()?;
        let text = spec.text();
        let mut recreated = !existed;
        if let Err(first) = Nft::load(&text) {
            if !existed {
                return Err(first);
            }
            // A set or chain of ours changed shape (an older definition, or someone's
            // hand): nft cannot redefine it in place, so the table is replaced whole.
            tracing::warn!("adminalert: table inet portsentry could not be updated in place ({first}); replacing it");
            self.delete_table()?;
            Nft::load(&text)?;
            recreated = true;
        }
        let steering = self.install_steering(spec.steering, spec.queue, spec.queues)?;
        self.built = Some((
            spec.clone(),
            self.built.take().map(|(_, f)| f).unwrap_or_default(),
        ));
        Ok(Built {
            steering,
            recreated,
        })
    }

    fn seal(&mut self) -> Result<(), FirewallError> {
        let gen = self.generation()?;
        let print = self.fingerprint()?;
        // What we wrote must be what is there, and a rebuild of the same spec must give
        // the same table as before: otherwise someone changed it while we worked, and
        // sealing now would take their change for ours.
        let mut wrong = Vec::new();
        for (set, now) in &print.elems {
            let wrote = self.written.iter().find(|(s, _)| s == set).map(|(_, e)| e);
            if wrote.is_some_and(|w| w != now) {
                wrong.push(format!(
                    "set {} changed while it was written",
                    set.to_string_lossy()
                ));
            }
        }
        if let Some((_, before)) = &self.built {
            // Two rebuilds in a row that agree with each other are what the table is now
            // (someone's lasting addition to it, say): accept that rather than rebuild
            // forever.
            let settled = self
                .unsettled
                .as_ref()
                .is_some_and(|u| u.same_structure(&print));
            if *before != Fingerprint::default() && !before.same_structure(&print) && !settled {
                wrong.push(print.diff(before));
            }
        }
        if !wrong.is_empty() {
            self.unsettled = Some(print);
            return Err(FirewallError::Unsettled(wrong.join(", ")));
        }
        self.unsettled = None;
        if let Some((_, before)) = &mut self.built {
            *before = print.clone();
        }
        self.sealed = Some((gen, print));
        Ok(())
    }

    fn check(&mut self) -> Result<Health, FirewallError> {
        let gen = self.generation()?;
        if self.sealed.as_ref().is_some_and(|(g, _)| *g == gen) {
            return Ok(Health::Intact);
        }
        if !self.table_exists()? {
            return Ok(Health::Missing);
        }
        let now = self.fingerprint()?;
        match &mut self.sealed {
            Some((g, want)) if *want == now => {
                *g = gen;
                Ok(Health::Intact)
            }
            Some((_, want)) => Ok(Health::Damaged(now.diff(want))),
            None => Ok(Health::Damaged("not checked yet".into())),
        }
    }

    fn remove_steering(&mut self) -> Result<(), FirewallError> {
        let table = Table::new(TABLE, ProtoFamily::Inet);
        let chain = Chain::new(STEER, &table);
        let mut tx = self.nl.tx();
        tx.add(&Rule::new(&chain), MsgType::Del);
        self.sealed = None;
        self.commit("steering flush", tx)
    }
}

/// Blocks of an interval set as listed (IPv4 or IPv6 keys): start elements and end
/// markers, in any order.
fn intervals(elems: &[raw::ListedElem], set: Set) -> Vec<Listed> {
    let v4 = elems.iter().any(|e| e.key.len() == 4);
    let top: u128 = if v4 { u32::MAX.into() } else { u128::MAX };
    let mut points: Vec<(u128, bool, Option<u64>)> = elems
        .iter()
        .filter_map(|e| {
            let k = match e.key.len() {
                4 => u32::from_be_bytes(<[u8; 4]>::try_from(&e.key[..]).ok()?).into(),
                16 => u128::from_be_bytes(<[u8; 16]>::try_from(&e.key[..]).ok()?),
                _ => return None,
            };
            Some((k, e.flags & ELEM_INTERVAL_END != 0, e.expires_ms))
        })
        .collect();
    points.sort_by_key(|p| (p.0, !p.1));
    let mut out = Vec::new();
    let mut open: Option<(u128, Option<u64>)> = None;
    let close = |start: u128, last: u128, left: Option<u64>, out: &mut Vec<Listed>| {
        let left = left.map(Duration::from_millis);
        if v4 {
            let (a, b) = (start as u32, last as u32);
            for net in Ipv4Subnets::new(a.into(), b.into(), 0) {
                out.push(Listed {
                    net: IpNet::V4(net),
                    left,
                    set,
                });
            }
        } else {
            for net in Ipv6Subnets::new(start.into(), last.into(), 0) {
                out.push(Listed {
                    net: IpNet::V6(net),
                    left,
                    set,
                });
            }
        }
    };
    for (k, end, left) in points {
        match (end, open.take()) {
            (true, Some((s, l))) if k > s => close(s, k - 1, l, &mut out),
            (true, other) => open = other,
            (false, prev) => {
                if let Some((s, l)) = prev {
                    close(s, s, l, &mut out);
                }
                open = Some((k, left));
            }
        }
    }
    if let Some((s, l)) = open {
        close(s, top, l, &mut out);
    }
    out
}

fn into_io(e: FirewallError) -> io::Error {
    match e {
        FirewallError::Io(e)
        | FirewallError::Rejected { error: e, .. }
        | FirewallError::Steering { error: e, .. } => e,
        other => io::Error::other(other.to_string()),
    }
}

/// Interval-set elements for `nets`, the way nft encodes them: merged ranges as a start
/// element and an end marker one past the last address, with a leading end marker at 0
/// when the first range does not start there.
pub fn interval_elems(nets: &[IpNet]) -> (Vec<Elem>, Vec<Elem>) {
    let mut v4: Vec<(u128, u128)> = Vec::new();
    let mut v6: Vec<(u128, u128)> = Vec::new();
    for n in nets {
        match n {
            IpNet::V4(n) => v4.push((
                u32::from(n.network()).into(),
                u32::from(n.broadcast()).into(),
            )),
            IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
        }
    }
    let to_elem4 = |x: u128| Elem::addr(IpAddr::V4((x as u32).into()));
    let to_elem6 = |x: u128| Elem::addr(IpAddr::V6(x.into()));
    (
        encode_ranges(v4, u32::MAX.into(), to_elem4),
        encode_ranges(v6, u128::MAX, to_elem6),
    )
}

fn encode_ranges(
    mut ranges: Vec<(u128, u128)>,
    max: u128,
    elem: impl Fn(u128) -> Elem,
) -> Vec<Elem> {
    ranges.sort_unstable();
    let mut merged: Vec<(u128, u128)> = Vec::new();
    for (a, b) in ranges {
        match merged.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    let mut out = Vec::new();
    if merged.first().is_some_and(|r| r.0 != 0) {
        out.push(elem(0).with_flags(ELEM_INTERVAL_END));
    }
    for (a, b) in merged {
        out.push(elem(a));
        if b != max {
            out.push(elem(b + 1).with_flags(ELEM_INTERVAL_END));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{LogRule, DEFINITION, MODULES_LOAD_FILE};
    use super::*;

    #[test]
    fn intervals_are_merged_and_encoded_like_nft() {
        let nets: Vec<IpNet> = [
            "10.0.0.0/8",
            "192.0.2.7/32",
            "10.1.0.0/16",
            "11.0.0.0/8",
            "::1/128",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let (v4, v6) = interval_elems(&nets);
        let shown: Vec<(String, u32)> = v4
            .iter()
            .map(|e| (format!("{:?}", e.key()), e.flags))
            .collect();
        assert_eq!(
            shown,
            vec![
                ("[0, 0, 0, 0]".into(), 1),
                ("[10, 0, 0, 0]".into(), 0),
                ("[12, 0, 0, 0]".into(), 1),
                ("[192, 0, 2, 7]".into(), 0),
                ("[192, 0, 2, 8]".into(), 1),
            ]
        );
        assert_eq!(v6.len(), 3);
    }

    #[test]
    fn listed_intervals_become_networks() {
        let e = |k: u128, end: bool, left: Option<u64>| raw::ListedElem {
            key: k.to_be_bytes().to_vec(),
            expires_ms: left,
            flags: if end { ELEM_INTERVAL_END } else { 0 },
        };
        let p64 = u128::from("2001:db8::".parse::<std::net::Ipv6Addr>().unwrap());
        let one = u128::from("2001:db8:1::7".parse::<std::net::Ipv6Addr>().unwrap());
        // The kernel lists an rbtree set highest first.
        let listed = intervals(
            &[
                e(one + 1, true, None),
                e(one, false, Some(5000)),
                e(p64 + (1 << 64), true, None),
                e(p64, false, Some(1000)),
            ],
            Set::Local,
        );
        let shown: Vec<String> = listed.iter().map(|l| l.net.to_string()).collect();
        assert_eq!(shown, ["2001:db8::/64", "2001:db8:1::7/128"]);
        assert_eq!(listed[1].left, Some(Duration::from_secs(5)));
        // A block reaching the top of the space has no end marker.
        let top = intervals(&[e(u128::MAX - 255, false, None)], Set::Local);
        assert_eq!(
            top[0].net.to_string(),
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/120"
        );
    }

    #[test]
    fn listed_ipv4_intervals_become_networks() {
        let e = |k: u32, end: bool| raw::ListedElem {
            key: k.to_be_bytes().to_vec(),
            expires_ms: Some(2000),
            flags: if end { ELEM_INTERVAL_END } else { 0 },
        };
        let base = u32::from(std::net::Ipv4Addr::new(198, 18, 0, 0));
        let listed = intervals(
            &[
                e(base + 256, true),
                e(base, false),
                e(base + 1001, true),
                e(base + 1000, false),
                e(0xFFFF_FF00, false),
            ],
            Set::Fleet,
        );
        let shown: Vec<String> = listed.iter().map(|l| l.net.to_string()).collect();
        assert_eq!(
            shown,
            ["198.18.0.0/24", "198.18.3.232/32", "255.255.255.0/24"]
        );
        assert!(listed.iter().all(|l| l.set == Set::Fleet));
    }

    #[test]
    fn the_configured_client_and_listener_timeouts_and_prefix_replace_the_includes() {
        let spec = TableSpec {
            client_timeout: Duration::from_secs(900),
            ipv6_prefix: 48,
            listener_grace: Duration::from_secs(7200),
            ..TableSpec::default()
        };
        let t = spec.text();
        assert!(
            t.contains("update @clients4 { ip saddr timeout 900s }"),
            "{t}"
        );
        assert!(
            t.contains("update @clients6 { ip6 saddr timeout 900s }"),
            "{t}"
        );
        assert!(
            t.contains("update @clientnets6 { ip6 saddr & ffff:ffff:ffff:: timeout 900s }"),
            "{t}"
        );
        assert!(
            t.contains("ip6 saddr & ffff:ffff:ffff:: @clientnets6 meta mark"),
            "{t}"
        );
        assert!(
            t.contains("update @served_tcp { tcp dport timeout 2h }"),
            "{t}"
        );
        assert!(
            t.contains("update @served_udp { udp dport timeout 2h }"),
            "{t}"
        );
        assert!(!t.contains("timeout 1h"), "{t}");
        assert!(!t.contains("ffff:ffff:ffff:ffff::"), "{t}");
        // The mark the rules set is the one the packet thread reads.
        use crate::core::probe::{CLIENT_NET_MARK, LIVE_CLIENT_MARK};
        for m in [LIVE_CLIENT_MARK, CLIENT_NET_MARK] {
            let mark = format!("{m:#010x}");
            assert!(
                t.contains(&format!("meta mark set meta mark | {mark}")),
                "{mark}\n{t}"
            );
        }
        // Bits are only ever added: other rulesets' marks stay as they set them.
        assert!(!t.contains("meta mark set meta mark &"), "{t}");
    }

    #[test]
    fn the_log_rule_goes_before_the_drop() {
        let spec = TableSpec {
            log: Some(LogRule {
                prefix: "Portsentry: dropping: ".into(),
                rate: 3,
                per: "minute",
                burst: 5,
            }),
            ..TableSpec::default()
        };
        assert!(spec.text().ends_with(
            "insert rule inet portsentry blocked limit rate 3/minute burst 5 packets log prefix \"Portsentry: dropping: \"\n"
        ));
        assert_eq!(TableSpec { log: None, ..spec }.text(), DEFINITION);
    }

    #[test]
    fn a_missing_steering_module_is_named_with_what_to_do() {
        let enoent = || io::Error::from_raw_os_error(libc::ENOENT);
        let compat = FirewallError::Steering {
            steering: Steering::Compat,
            error: enoent(),
        }
        .to_string();
        assert!(
            compat.starts_with(
                "steering rule (xt NFQUEUE compat target) was rejected by the kernel: "
            ) && compat.contains(
                "kernel module xt_NFQUEUE is not loaded; load it with `modprobe xt_NFQUEUE`"
            ) && compat.contains(MODULES_LOAD_FILE),
            "{compat}"
        );
        let native = FirewallError::Steering {
            steering: Steering::Native,
            error: enoent(),
        }
        .to_string();
        assert!(
            native.contains("`modprobe nft_queue`") && native.contains("steering = \"compat\""),
            "{native}"
        );
        let auto = FirewallError::NoSteering {
            native: enoent(),
            compat: enoent(),
        }
        .to_string();
        assert!(
            auto.contains("`modprobe xt_NFQUEUE`") && !auto.contains("modprobe nft_queue"),
            "{auto}"
        );
        // Another error is not about a module.
        let other = FirewallError::Steering {
            steering: Steering::Compat,
            error: io::Error::from_raw_os_error(libc::EINVAL),
        }
        .to_string();
        assert!(!other.contains("modprobe"), "{other}");
    }

    #[test]
    fn full_range_has_no_end_marker() {
        let (v4, _) = interval_elems(&["0.0.0.0/0".parse().unwrap()]);
        assert_eq!(v4.len(), 1);
        assert_eq!(v4[0].flags, 0);
    }
}
