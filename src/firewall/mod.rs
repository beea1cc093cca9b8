//! The firewall seam: our nftables table, its sets and the steering rule, written through
//! nftnl/mnl in batched transactions. The names here are a contract with users' scripts.

pub mod netlink;
pub mod raw;

use crate::ports::PortSet;
use ipnet::IpNet;
use netlink::{MsgError, Netlink};
use nftnl::{Batch, Chain, MsgType, ProtoFamily, Rule, Table};
use raw::{Elem, SetElems, ELEM_INTERVAL_END, MAX_ELEMS_PER_MSG};
use std::ffi::CStr;
use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

pub const TABLE: &CStr = c"portsentry";
pub const BLOCKED4: &CStr = c"blocked4";
pub const BLOCKED6: &CStr = c"blocked6";
pub const ALLOW4: &CStr = c"allow4";
pub const ALLOW6: &CStr = c"allow6";
pub const WATCH_TCP: &CStr = c"watch_tcp";
pub const WATCH_UDP: &CStr = c"watch_udp";
pub const STEER: &CStr = c"steer";

/// Messages per transaction: 8 × 500 elements keeps the kernel's answer within the socket
/// buffer (a single 100,000-element transaction fails with ENOBUFS).
const MSGS_PER_TX: usize = 8;

/// How probes reach the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Steering {
    /// nft `queue` statement (kernel module nft_queue).
    Native,
    /// xt NFQUEUE target through nft_compat, for kernels without nft_queue.
    Compat,
}

impl Steering {
    pub fn name(self) -> &'static str {
        match self {
            Steering::Native => "native nft queue",
            Steering::Compat => "xt NFQUEUE compat target",
        }
    }

    /// The kernel module that provides it.
    pub fn module(self) -> &'static str {
        match self {
            Steering::Native => "nft_queue",
            Steering::Compat => "xt_NFQUEUE",
        }
    }
}

/// Where the package lists the modules steering needs; systemd-modules-load loads them at
/// boot (the daemon has CAP_NET_ADMIN only and cannot load modules itself).
pub const MODULES_LOAD_FILE: &str = "/usr/lib/modules-load.d/portsentry.conf";

/// What to do when the kernel rejects a steering rule with ENOENT: the module that provides
/// it is not loaded (the kernel never autoloads xt_NFQUEUE for an `inet` table).
fn module_hint(steering: Steering, error: &io::Error) -> String {
    if error.raw_os_error() != Some(libc::ENOENT) {
        return String::new();
    }
    let m = steering.module();
    let without = match steering {
        Steering::Native => "; a kernel without nft_queue needs steering = \"compat\" or \"auto\"",
        Steering::Compat => "",
    };
    format!(
        ": kernel module {m} is not loaded; load it with `modprobe {m}`, or at every boot with \
         {MODULES_LOAD_FILE} (shipped by the package; `systemctl restart systemd-modules-load` \
         applies it now){without}"
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    pub addr: IpAddr,
    /// `None`: permanent.
    pub timeout: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("netlink: {0}")]
    Io(#[from] io::Error),
    #[error("{what} was rejected by the kernel: {error}")]
    Rejected {
        what: &'static str,
        error: io::Error,
    },
    #[error("steering rule ({}) was rejected by the kernel: {error}{}", .steering.name(), module_hint(*.steering, .error))]
    Steering {
        steering: Steering,
        error: io::Error,
    },
    /// Neither steering works (`auto`). Where the kernel has no nft_queue, the compat target
    /// is the way, so only its module is named.
    #[error("cannot steer packets to the queue: native queue: {native}; compat NFQUEUE target: {compat}{}", module_hint(Steering::Compat, .compat))]
    NoSteering {
        native: io::Error,
        compat: io::Error,
    },
    #[error("loading {path} with nft failed: {message}")]
    Include { path: String, message: String },
}

/// What a batch of blocks came to.
#[derive(Debug, Default)]
pub struct BlockReport {
    pub written: usize,
    pub failed: Vec<(IpAddr, io::Error)>,
}

/// Where decisions turn into kernel state. The daemon uses `Nft`; the seam keeps the
/// responder's logic testable on its own.
pub trait Firewall: Send {
    fn add_blocks(&mut self, blocks: &[Block]) -> BlockReport;
}

pub struct Nft {
    nl: Netlink,
    /// Sequence numbers for requests outside batches.
    seq: u32,
}

impl Nft {
    pub fn open() -> Result<Nft, FirewallError> {
        Ok(Nft {
            nl: Netlink::open()?,
            seq: 1_000_000,
        })
    }

    pub fn table_exists(&mut self) -> Result<bool, FirewallError> {
        let mut buf = vec![0u8; nftnl::nft_nlmsg_maxsize() as usize];
        let len = raw::get_table_msg(&mut buf, TABLE, ProtoFamily::Inet as u16, 1);
        match self.nl.request(&buf[..len], 1)? {
            None => Ok(true),
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Some(e) => Err(e.into()),
        }
    }

    /// Loads the include with `nft -f` (argv, no shell). The include is idempotent.
    pub fn load_include(path: &Path) -> Result<(), FirewallError> {
        let out = std::process::Command::new("nft")
            .arg("-f")
            .arg(path)
            .output()
            .map_err(|e| FirewallError::Include {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(FirewallError::Include {
                path: path.display().to_string(),
                message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    }

    /// Replaces the contents of the watched-port sets in one transaction.
    pub fn sync_watch(&mut self, tcp: &PortSet, udp: &PortSet) -> Result<(), FirewallError> {
        let tcp: Vec<Elem> = tcp.iter().map(Elem::port).collect();
        let udp: Vec<Elem> = udp.iter().map(Elem::port).collect();
        self.replace_sets("watched-port sets", &[(WATCH_TCP, &tcp), (WATCH_UDP, &udp)])
    }

    /// Replaces the allow sets (interval sets) with `nets`, merged.
    pub fn sync_allow(&mut self, nets: &[IpNet]) -> Result<(), FirewallError> {
        let (v4, v6) = interval_elems(nets);
        self.replace_sets("allow sets", &[(ALLOW4, &v4), (ALLOW6, &v6)])
    }

    fn replace_sets(
        &mut self,
        what: &'static str,
        sets: &[(&CStr, &[Elem])],
    ) -> Result<(), FirewallError> {
        let mut batch = Batch::new();
        for (set, elems) in sets {
            let flush = SetElems {
                table: TABLE,
                set,
                family: ProtoFamily::Inet as u16,
                elems: &[],
            };
            batch.add(&flush, MsgType::Del);
            for chunk in elems.chunks(MAX_ELEMS_PER_MSG) {
                let msg = SetElems {
                    table: TABLE,
                    set,
                    family: ProtoFamily::Inet as u16,
                    elems: chunk,
                };
                batch.add(&msg, MsgType::Add);
            }
        }
        self.commit(what, batch)
    }

    /// Installs the one rule of chain `steer` (replacing whatever is there), choosing
    /// native queue or the compat target as asked or, for `None`, whichever the kernel has.
    pub fn install_steering(
        &mut self,
        prefer: Option<Steering>,
        queue: u16,
        queues: u16,
    ) -> Result<Steering, FirewallError> {
        let flags = raw::QUEUE_BYPASS | if queues > 1 { raw::QUEUE_FANOUT } else { 0 };
        let try_one = |nft: &mut Nft, s: Steering| -> Result<(), FirewallError> {
            let table = Table::new(TABLE, ProtoFamily::Inet);
            let chain = Chain::new(STEER, &table);
            let mut batch = Batch::new();
            batch.add(&Rule::new(&chain), MsgType::Del); // flush the chain
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
            batch.add(&rule, MsgType::Add);
            nft.commit("steering rule", batch)
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

    /// Whether chain `steer` still holds a rule (an nftables reload empties it).
    pub fn steering_present(&mut self) -> Result<bool, FirewallError> {
        let mut buf = vec![0u8; nftnl::nft_nlmsg_maxsize() as usize];
        let seq = self.next_seq();
        let len = raw::get_rules_msg(&mut buf, TABLE, STEER, ProtoFamily::Inet as u16, seq);
        match self.nl.dump(&buf[..len], seq) {
            Ok(rules) => Ok(!rules.is_empty()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The blocked addresses the kernel holds now, with the time each has left.
    pub fn list_blocks(&mut self) -> Result<Vec<(IpAddr, Option<Duration>)>, FirewallError> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; nftnl::nft_nlmsg_maxsize() as usize];
        for set in [BLOCKED4, BLOCKED6] {
            let seq = self.next_seq();
            let len = raw::get_set_elems_msg(&mut buf, TABLE, set, ProtoFamily::Inet as u16, seq);
            for msg in self.nl.dump(&buf[..len], seq)? {
                for e in raw::parse_set_elems(&msg) {
                    let addr = match e.key.len() {
                        4 => IpAddr::from(<[u8; 4]>::try_from(&e.key[..]).expect("4 bytes")),
                        16 => IpAddr::from(<[u8; 16]>::try_from(&e.key[..]).expect("16 bytes")),
                        _ => continue,
                    };
                    out.push((addr, e.expires_ms.map(Duration::from_millis)));
                }
            }
        }
        Ok(out)
    }

    /// Removes addresses from the block sets. Absent ones are not an error.
    pub fn remove_blocks(&mut self, addrs: &[IpAddr]) -> Result<(), FirewallError> {
        for addr in addrs {
            let set = if addr.is_ipv4() { BLOCKED4 } else { BLOCKED6 };
            let elems = [Elem::addr(*addr)];
            let mut batch = Batch::new();
            batch.add(
                &SetElems {
                    table: TABLE,
                    set,
                    family: ProtoFamily::Inet as u16,
                    elems: &elems,
                },
                MsgType::Del,
            );
            match self.commit("unblock", batch) {
                Err(FirewallError::Rejected { error, .. })
                    if error.raw_os_error() == Some(libc::ENOENT) => {}
                other => other?,
            }
        }
        Ok(())
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// Empties chain `steer`: probes are no longer queued (used on a clean stop).
    pub fn remove_steering(&mut self) -> Result<(), FirewallError> {
        let table = Table::new(TABLE, ProtoFamily::Inet);
        let chain = Chain::new(STEER, &table);
        let mut batch = Batch::new();
        batch.add(&Rule::new(&chain), MsgType::Del);
        self.commit("steering flush", batch)
    }

    fn commit(&mut self, what: &'static str, batch: Batch) -> Result<(), FirewallError> {
        let errors = self.nl.transact(&batch.finalize())?;
        match errors.into_iter().next() {
            None => Ok(()),
            Some(MsgError { error, .. }) => Err(FirewallError::Rejected { what, error }),
        }
    }

    /// Writes blocks in as few transactions as fit; a rejected transaction is retried
    /// element by element so one bad element cannot cost the others their block.
    fn write_blocks(&mut self, blocks: &[Block]) -> BlockReport {
        let mut report = BlockReport::default();
        let (v4, v6): (Vec<Block>, Vec<Block>) = blocks.iter().partition(|b| b.addr.is_ipv4());
        for (set, list) in [(BLOCKED4, v4), (BLOCKED6, v6)] {
            for tx in list.chunks(MAX_ELEMS_PER_MSG * MSGS_PER_TX) {
                match self.send_blocks(set, tx) {
                    Ok(()) => report.written += tx.len(),
                    Err(_) if tx.len() > 1 => {
                        for b in tx {
                            match self.send_blocks(set, std::slice::from_ref(b)) {
                                Ok(()) => report.written += 1,
                                Err(e) => report.failed.push((b.addr, e)),
                            }
                        }
                    }
                    Err(e) => report.failed.push((tx[0].addr, e)),
                }
            }
        }
        report
    }

    fn send_blocks(&mut self, set: &CStr, blocks: &[Block]) -> io::Result<()> {
        let elems: Vec<Elem> = blocks
            .iter()
            .map(|b| Elem::addr(b.addr).with_timeout_ms(b.timeout.map(|t| t.as_millis() as u64)))
            .collect();
        let mut batch = Batch::new();
        for chunk in elems.chunks(MAX_ELEMS_PER_MSG) {
            let msg = SetElems {
                table: TABLE,
                set,
                family: ProtoFamily::Inet as u16,
                elems: chunk,
            };
            batch.add(&msg, MsgType::Add);
        }
        let errors = self.nl.transact(&batch.finalize())?;
        match errors.into_iter().next() {
            None => Ok(()),
            Some(e) => Err(e.error),
        }
    }
}

impl Firewall for Nft {
    fn add_blocks(&mut self, blocks: &[Block]) -> BlockReport {
        self.write_blocks(blocks)
    }
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
