//! What nftnl's safe API lacks, built on its re-exported `nftnl_sys` and public traits:
//! set-element messages with timeouts and interval flags (and without NLM_F_EXCL, so
//! re-adding refreshes instead of aborting the transaction), the native `queue` expression,
//! the xt `NFQUEUE` compat target, and a single-table lookup message.
//!
//! All `unsafe` of the firewall lives here.

use ipnet::IpNet;
use nftnl::expr::Expression;
use nftnl::nftnl_sys::{self as sys, libc};
use nftnl::{MsgType, NlMsg, Rule};
use std::ffi::{c_void, CStr};
use std::net::IpAddr;
use std::ops::Range;
use std::os::raw::c_char;
use std::ptr::NonNull;

/// NFT_SET_ELEM_INTERVAL_END: marks the first address past an interval.
pub const ELEM_INTERVAL_END: u32 = 1;
/// NFT_QUEUE_FLAG_BYPASS: accept instead of drop when no process listens on the queue.
pub const QUEUE_BYPASS: u16 = 1;

/// One set element: a key of up to 16 bytes, an optional timeout, flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elem {
    key: [u8; 16],
    key_len: u8,
    pub timeout_ms: Option<u64>,
    pub flags: u32,
}

impl Elem {
    pub fn addr(addr: IpAddr) -> Elem {
        let mut key = [0; 16];
        let key_len = match addr {
            IpAddr::V4(a) => {
                key[..4].copy_from_slice(&a.octets());
                4
            }
            IpAddr::V6(a) => {
                key.copy_from_slice(&a.octets());
                16
            }
        };
        Elem {
            key,
            key_len,
            timeout_ms: None,
            flags: 0,
        }
    }

    /// An `inet_service` key: two bytes, network order.
    pub fn port(port: u16) -> Elem {
        let mut key = [0; 16];
        key[..2].copy_from_slice(&port.to_be_bytes());
        Elem {
            key,
            key_len: 2,
            timeout_ms: None,
            flags: 0,
        }
    }

    /// The elements of a block: one for a set of single addresses, and for an interval set
    /// the first address plus an end marker one past the last (none past the top).
    pub fn net(net: IpNet, interval: bool) -> Vec<Elem> {
        let start = Elem::addr(net.network());
        if !interval {
            return vec![start];
        }
        let end = match net {
            IpNet::V4(n) => u32::from(n.broadcast())
                .checked_add(1)
                .map(|e| IpAddr::from(e.to_be_bytes())),
            IpNet::V6(n) => u128::from(n.broadcast())
                .checked_add(1)
                .map(|e| IpAddr::from(e.to_be_bytes())),
        };
        let mut v = vec![start];
        v.extend(end.map(|e| Elem::addr(e).with_flags(ELEM_INTERVAL_END)));
        v
    }

    pub fn with_timeout_ms(mut self, ms: Option<u64>) -> Elem {
        self.timeout_ms = ms;
        self
    }

    pub fn with_flags(mut self, flags: u32) -> Elem {
        self.flags = flags;
        self
    }

    pub fn key(&self) -> &[u8] {
        &self.key[..usize::from(self.key_len)]
    }
}

/// NEWSETELEM / DELSETELEM for one named set. With no elements, Del flushes the set.
pub struct SetElems<'a> {
    pub table: &'a CStr,
    pub set: &'a CStr,
    pub family: u16,
    pub elems: &'a [Elem],
}

// SAFETY: `write` only writes a message libnftnl builds into `buf`, which the caller (nftnl's
// Batch) guarantees to be at least nft_nlmsg_maxsize() bytes; callers keep `elems` small
// enough to fit (see MAX_ELEMS_PER_MSG).
unsafe impl NlMsg for SetElems<'_> {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, msg_type: MsgType) {
        let (ty, flags) = match msg_type {
            MsgType::Add => (
                libc::NFT_MSG_NEWSETELEM,
                libc::NLM_F_CREATE | libc::NLM_F_ACK,
            ),
            MsgType::Del => (libc::NFT_MSG_DELSETELEM, libc::NLM_F_ACK),
        };
        unsafe {
            let set = sys::nftnl_set_alloc();
            if set.is_null() {
                std::process::abort();
            }
            sys::nftnl_set_set_str(set, sys::NFTNL_SET_TABLE as u16, self.table.as_ptr());
            sys::nftnl_set_set_str(set, sys::NFTNL_SET_NAME as u16, self.set.as_ptr());
            sys::nftnl_set_set_u32(set, sys::NFTNL_SET_FAMILY as u16, u32::from(self.family));
            for e in self.elems {
                let el = sys::nftnl_set_elem_alloc();
                if el.is_null() {
                    std::process::abort();
                }
                sys::nftnl_set_elem_set(
                    el,
                    sys::NFTNL_SET_ELEM_KEY as u16,
                    e.key.as_ptr().cast(),
                    u32::from(e.key_len),
                );
                if let Some(ms) = e.timeout_ms {
                    sys::nftnl_set_elem_set_u64(el, sys::NFTNL_SET_ELEM_TIMEOUT as u16, ms);
                }
                if e.flags != 0 {
                    sys::nftnl_set_elem_set_u32(el, sys::NFTNL_SET_ELEM_FLAGS as u16, e.flags);
                }
                sys::nftnl_set_elem_add(set, el); // the set owns `el` from here
            }
            let nlh = sys::nftnl_nlmsg_build_hdr(
                buf.cast::<c_char>(),
                ty as u16,
                self.family,
                flags as u16,
                seq,
            );
            sys::nftnl_set_elems_nlmsg_build_payload(nlh, set);
            sys::nftnl_set_free(set);
        }
    }
}

/// Elements per message: 500 IPv6 elements with timeouts stay well under the 64 KiB a
/// netlink message may carry (1,000 fail with EINVAL on these kernels).
pub const MAX_ELEMS_PER_MSG: usize = 500;

/// GETTABLE for one table: answered with the table, or ENOENT.
pub fn get_table_msg(buf: &mut [u8], table: &CStr, family: u16, seq: u32) -> usize {
    assert!(buf.len() >= nftnl::nft_nlmsg_maxsize() as usize);
    unsafe {
        let t = sys::nftnl_table_alloc();
        if t.is_null() {
            std::process::abort();
        }
        sys::nftnl_table_set_str(t, sys::NFTNL_TABLE_NAME as u16, table.as_ptr());
        sys::nftnl_table_set_u32(t, sys::NFTNL_TABLE_FAMILY as u16, u32::from(family));
        let nlh = sys::nftnl_nlmsg_build_hdr(
            buf.as_mut_ptr().cast::<c_char>(),
            libc::NFT_MSG_GETTABLE as u16,
            family,
            libc::NLM_F_ACK as u16,
            seq,
        );
        sys::nftnl_table_nlmsg_build_payload(nlh, t);
        sys::nftnl_table_free(t);
        (*nlh).nlmsg_len as usize
    }
}

/// The native nft `queue` statement (needs the kernel's nft_queue).
pub struct QueueExpr {
    pub num: u16,
    pub total: u16,
    pub flags: u16,
}

impl Expression for QueueExpr {
    fn to_expr(&self, _rule: &Rule) -> NonNull<sys::nftnl_expr> {
        unsafe {
            let e = alloc_expr(c"queue");
            sys::nftnl_expr_set_u16(e.as_ptr(), sys::NFTNL_EXPR_QUEUE_NUM as u16, self.num);
            sys::nftnl_expr_set_u16(e.as_ptr(), sys::NFTNL_EXPR_QUEUE_TOTAL as u16, self.total);
            sys::nftnl_expr_set_u16(e.as_ptr(), sys::NFTNL_EXPR_QUEUE_FLAGS as u16, self.flags);
            e
        }
    }
}

/// The xt `NFQUEUE` target, revision 3, through nft_compat: what `iptables-nft -j NFQUEUE`
/// installs. Works where nft_queue is missing.
pub struct CompatQueueTarget {
    pub num: u16,
    pub total: u16,
    pub flags: u16,
}

impl Expression for CompatQueueTarget {
    fn to_expr(&self, _rule: &Rule) -> NonNull<sys::nftnl_expr> {
        // struct xt_NFQ_info_v3 { u16 queuenum; u16 queues_total; u16 flags; } padded to 8.
        let mut info = [0u8; 8];
        info[0..2].copy_from_slice(&self.num.to_ne_bytes());
        info[2..4].copy_from_slice(&self.total.max(1).to_ne_bytes());
        info[4..6].copy_from_slice(&self.flags.to_ne_bytes());
        unsafe {
            let e = alloc_expr(c"target");
            sys::nftnl_expr_set_str(
                e.as_ptr(),
                sys::NFTNL_EXPR_TG_NAME as u16,
                c"NFQUEUE".as_ptr(),
            );
            sys::nftnl_expr_set_u32(e.as_ptr(), sys::NFTNL_EXPR_TG_REV as u16, 3);
            // libnftnl takes ownership of the info buffer and frees it with the expression.
            let data = libc::malloc(info.len()).cast::<u8>();
            if data.is_null() {
                std::process::abort();
            }
            std::ptr::copy_nonoverlapping(info.as_ptr(), data, info.len());
            sys::nftnl_expr_set(
                e.as_ptr(),
                sys::NFTNL_EXPR_TG_INFO as u16,
                data.cast(),
                info.len() as u32,
            );
            e
        }
    }
}

unsafe fn alloc_expr(name: &CStr) -> NonNull<sys::nftnl_expr> {
    match NonNull::new(unsafe { sys::nftnl_expr_alloc(name.as_ptr()) }) {
        Some(e) => e,
        None => std::process::abort(),
    }
}

/// GETRULE dump of one chain.
pub fn get_rules_msg(buf: &mut [u8], table: &CStr, chain: &CStr, family: u16, seq: u32) -> usize {
    assert!(buf.len() >= nftnl::nft_nlmsg_maxsize() as usize);
    unsafe {
        let r = sys::nftnl_rule_alloc();
        if r.is_null() {
            std::process::abort();
        }
        sys::nftnl_rule_set_str(r, sys::NFTNL_RULE_TABLE as u16, table.as_ptr());
        sys::nftnl_rule_set_str(r, sys::NFTNL_RULE_CHAIN as u16, chain.as_ptr());
        sys::nftnl_rule_set_u32(r, sys::NFTNL_RULE_FAMILY as u16, u32::from(family));
        let nlh = sys::nftnl_nlmsg_build_hdr(
            buf.as_mut_ptr().cast::<c_char>(),
            libc::NFT_MSG_GETRULE as u16,
            family,
            (libc::NLM_F_DUMP | libc::NLM_F_ACK) as u16,
            seq,
        );
        sys::nftnl_rule_nlmsg_build_payload(nlh, r);
        sys::nftnl_rule_free(r);
        (*nlh).nlmsg_len as usize
    }
}

/// GETSETELEM dump of one set.
pub fn get_set_elems_msg(buf: &mut [u8], table: &CStr, set: &CStr, family: u16, seq: u32) -> usize {
    assert!(buf.len() >= nftnl::nft_nlmsg_maxsize() as usize);
    unsafe {
        let s = sys::nftnl_set_alloc();
        if s.is_null() {
            std::process::abort();
        }
        sys::nftnl_set_set_str(s, sys::NFTNL_SET_TABLE as u16, table.as_ptr());
        sys::nftnl_set_set_str(s, sys::NFTNL_SET_NAME as u16, set.as_ptr());
        sys::nftnl_set_set_u32(s, sys::NFTNL_SET_FAMILY as u16, u32::from(family));
        let nlh = sys::nftnl_nlmsg_build_hdr(
            buf.as_mut_ptr().cast::<c_char>(),
            libc::NFT_MSG_GETSETELEM as u16,
            family,
            (libc::NLM_F_DUMP | libc::NLM_F_ACK) as u16,
            seq,
        );
        sys::nftnl_set_elems_nlmsg_build_payload(nlh, s);
        sys::nftnl_set_free(s);
        (*nlh).nlmsg_len as usize
    }
}

/// An element read back from the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedElem {
    pub key: Vec<u8>,
    /// Time left, when the element has a timeout.
    pub expires_ms: Option<u64>,
    /// ELEM_INTERVAL_END marks the first address past an interval.
    pub flags: u32,
}

/// Parses one NEWSETELEM message of a dump. `msg` must hold a whole netlink message.
pub fn parse_set_elems(msg: &[u8]) -> Vec<ListedElem> {
    let mut out = Vec::new();
    if msg.len() < 16 {
        return out;
    }
    // Copy into u32 storage: libnftnl reads the header in place and wants it aligned.
    let mut aligned = vec![0u32; msg.len().div_ceil(4)];
    unsafe {
        std::ptr::copy_nonoverlapping(msg.as_ptr(), aligned.as_mut_ptr().cast::<u8>(), msg.len());
        let s = sys::nftnl_set_alloc();
        if s.is_null() {
            std::process::abort();
        }
        if sys::nftnl_set_elems_nlmsg_parse(aligned.as_ptr().cast(), s) >= 0 {
            let it = sys::nftnl_set_elems_iter_create(s);
            if !it.is_null() {
                // `iter_next` returns the current element, then moves on: starting from
                // `iter_cur` as well listed the first element twice.
                loop {
                    let e = sys::nftnl_set_elems_iter_next(it);
                    if e.is_null() {
                        break;
                    }
                    let mut len: u32 = 0;
                    let key = sys::nftnl_set_elem_get(e, sys::NFTNL_SET_ELEM_KEY as u16, &mut len);
                    if !key.is_null() {
                        let key =
                            std::slice::from_raw_parts(key.cast::<u8>(), len as usize).to_vec();
                        let expires_ms =
                            if sys::nftnl_set_elem_is_set(e, sys::NFTNL_SET_ELEM_EXPIRATION as u16)
                            {
                                Some(sys::nftnl_set_elem_get_u64(
                                    e,
                                    sys::NFTNL_SET_ELEM_EXPIRATION as u16,
                                ))
                            } else {
                                None
                            };
                        let flags =
                            if sys::nftnl_set_elem_is_set(e, sys::NFTNL_SET_ELEM_FLAGS as u16) {
                                sys::nftnl_set_elem_get_u32(e, sys::NFTNL_SET_ELEM_FLAGS as u16)
                            } else {
                                0
                            };
                        out.push(ListedElem {
                            key,
                            expires_ms,
                            flags,
                        });
                    }
                }
                sys::nftnl_set_elems_iter_destroy(it);
            }
        }
        sys::nftnl_set_free(s);
    }
    out
}

/// A transaction under construction: the batch begin and end messages around our own, with
/// sequence numbers from `first` on. nftnl's `Batch` numbers from 1 every time; the socket
/// needs numbers unique over its life, or a late answer could be taken for a new one.
/// Only our own messages ask for an answer: kernels before 6.10 never answer the batch
/// begin and end messages, and waiting for them would stall every transaction there.
pub struct Tx {
    buf: Vec<u8>,
    scratch: Vec<u32>,
    first: u32,
    next: u32,
    messages: usize,
}

impl Tx {
    pub fn new(first: u32) -> Tx {
        let mut tx = Tx {
            buf: Vec::with_capacity(4096),
            scratch: vec![0u32; nftnl::nft_nlmsg_maxsize() as usize / 4 + 1],
            first,
            next: first,
            messages: 0,
        };
        tx.control(sys::nftnl_batch_begin);
        tx
    }

    pub fn add(&mut self, msg: &impl NlMsg, ty: MsgType) {
        let seq = self.next;
        // SAFETY: `scratch` holds nft_nlmsg_maxsize() bytes, what `write` may use.
        unsafe { msg.write(self.scratch.as_mut_ptr().cast(), seq, ty) };
        self.take_written();
        self.messages += 1;
    }

    /// Messages added (begin and end not counted).
    pub fn len(&self) -> usize {
        self.messages
    }

    pub fn is_empty(&self) -> bool {
        self.messages == 0
    }

    /// The bytes to send, the sequence numbers that expect an answer (our messages), and
    /// the first number after the transaction.
    pub fn finish(mut self) -> (Vec<u8>, Range<u32>, u32) {
        let answered = self.first.wrapping_add(1)..self.next;
        self.control(sys::nftnl_batch_end);
        (self.buf, answered, self.next)
    }

    fn control(&mut self, f: unsafe extern "C" fn(*mut c_char, u32) -> *mut libc::nlmsghdr) {
        let seq = self.next;
        // SAFETY: as in `add`; the batch header is a few bytes.
        unsafe { f(self.scratch.as_mut_ptr().cast(), seq) };
        self.take_written();
    }

    /// Appends the message in `scratch` (length from its header, padded to 4 bytes).
    fn take_written(&mut self) {
        let len = self.scratch[0] as usize; // nlmsg_len, native endian, first field
        let bytes = len.min(self.scratch.len() * 4);
        // SAFETY: u32 storage viewed as bytes, within its length.
        let msg = unsafe { std::slice::from_raw_parts(self.scratch.as_ptr().cast::<u8>(), bytes) };
        self.buf.extend_from_slice(msg);
        self.buf.resize(self.buf.len().next_multiple_of(4), 0);
        self.next = self.next.wrapping_add(1);
    }
}

/// A request with a table, chain or set name filter, built by libnftnl: GETRULE dump,
/// GETSET dump, GETCHAIN or GETTABLE dump of a family, or GETGEN.
pub fn get_msg(buf: &mut [u8], what: Get, table: &CStr, family: u16, seq: u32) -> usize {
    assert!(buf.len() >= nftnl::nft_nlmsg_maxsize() as usize);
    let dump = (libc::NLM_F_DUMP | libc::NLM_F_ACK) as u16;
    unsafe {
        let mut hdr = |ty: i32, flags: u16, family: u16| {
            sys::nftnl_nlmsg_build_hdr(
                buf.as_mut_ptr().cast::<c_char>(),
                ty as u16,
                family,
                flags,
                seq,
            )
        };
        let nlh = match what {
            Get::Gen => hdr(libc::NFT_MSG_GETGEN, libc::NLM_F_ACK as u16, 0),
            Get::Chains => hdr(libc::NFT_MSG_GETCHAIN, dump, family),
            Get::Tables => hdr(libc::NFT_MSG_GETTABLE, dump, family),
            Get::Rules => {
                let r = sys::nftnl_rule_alloc();
                if r.is_null() {
                    std::process::abort();
                }
                sys::nftnl_rule_set_str(r, sys::NFTNL_RULE_TABLE as u16, table.as_ptr());
                sys::nftnl_rule_set_u32(r, sys::NFTNL_RULE_FAMILY as u16, u32::from(family));
                let nlh = hdr(libc::NFT_MSG_GETRULE, dump, family);
                sys::nftnl_rule_nlmsg_build_payload(nlh, r);
                sys::nftnl_rule_free(r);
                nlh
            }
            Get::Sets => {
                let s = sys::nftnl_set_alloc();
                if s.is_null() {
                    std::process::abort();
                }
                sys::nftnl_set_set_str(s, sys::NFTNL_SET_TABLE as u16, table.as_ptr());
                sys::nftnl_set_set_u32(s, sys::NFTNL_SET_FAMILY as u16, u32::from(family));
                let nlh = hdr(libc::NFT_MSG_GETSET, dump, family);
                sys::nftnl_set_nlmsg_build_payload(nlh, s);
                sys::nftnl_set_free(s);
                nlh
            }
        };
        (*nlh).nlmsg_len as usize
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Get {
    Gen,
    Tables,
    Chains,
    Rules,
    Sets,
}

/// GETSETELEM (not a dump) of one element: answered with it, or ENOENT.
pub fn get_elem_msg(
    buf: &mut [u8],
    table: &CStr,
    set: &CStr,
    family: u16,
    e: &Elem,
    seq: u32,
) -> usize {
    assert!(buf.len() >= nftnl::nft_nlmsg_maxsize() as usize);
    unsafe {
        let s = sys::nftnl_set_alloc();
        if s.is_null() {
            std::process::abort();
        }
        sys::nftnl_set_set_str(s, sys::NFTNL_SET_TABLE as u16, table.as_ptr());
        sys::nftnl_set_set_str(s, sys::NFTNL_SET_NAME as u16, set.as_ptr());
        sys::nftnl_set_set_u32(s, sys::NFTNL_SET_FAMILY as u16, u32::from(family));
        let el = sys::nftnl_set_elem_alloc();
        if el.is_null() {
            std::process::abort();
        }
        sys::nftnl_set_elem_set(
            el,
            sys::NFTNL_SET_ELEM_KEY as u16,
            e.key.as_ptr().cast(),
            u32::from(e.key_len),
        );
        sys::nftnl_set_elem_add(s, el);
        let nlh = sys::nftnl_nlmsg_build_hdr(
            buf.as_mut_ptr().cast::<c_char>(),
            libc::NFT_MSG_GETSETELEM as u16,
            family,
            libc::NLM_F_ACK as u16,
            seq,
        );
        sys::nftnl_set_elems_nlmsg_build_payload(nlh, s);
        sys::nftnl_set_free(s);
        (*nlh).nlmsg_len as usize
    }
}

/// nlmsghdr (16 bytes) and nfgenmsg (4): what every nftables message starts with.
const NFT_HDR: usize = 20;

/// The attributes of an nftables message: (type without flags, payload). Stops at the first
/// malformed length.
pub fn attrs(msg: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = NFT_HDR;
    std::iter::from_fn(move || {
        let h = msg.get(at..at + 4)?;
        let len = usize::from(u16::from_ne_bytes([h[0], h[1]]));
        let ty = u16::from_ne_bytes([h[2], h[3]]) & 0x3fff;
        let payload = msg.get(at + 4..at + len.max(4))?;
        at += len.max(4).next_multiple_of(4);
        Some((ty, payload))
    })
}

/// The nfgenmsg family of a message.
pub fn family(msg: &[u8]) -> Option<u8> {
    msg.get(16).copied()
}

/// NFTA_GEN_ID of a NEWGEN message.
pub fn parse_gen(msg: &[u8]) -> Option<u32> {
    attrs(msg)
        .find(|(ty, _)| *ty == 1)
        .and_then(|(_, p)| Some(u32::from_be_bytes(p.get(..4)?.try_into().ok()?)))
}

/// The table name of a table, chain, set or rule message (attribute 1 in all four).
pub fn table_of(msg: &[u8]) -> Option<&[u8]> {
    attrs(msg)
        .find(|(ty, _)| *ty == 1)
        .map(|(_, p)| p.split(|b| *b == 0).next().unwrap_or(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Messages of a built transaction: (type, flags, seq).
    fn headers(bytes: &[u8]) -> Vec<(u16, u16, u32)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + 16 <= bytes.len() {
            let len = u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            let ty = u16::from_ne_bytes(bytes[at + 4..at + 6].try_into().unwrap());
            let flags = u16::from_ne_bytes(bytes[at + 6..at + 8].try_into().unwrap());
            let seq = u32::from_ne_bytes(bytes[at + 8..at + 12].try_into().unwrap());
            out.push((ty, flags, seq));
            at += len.next_multiple_of(4);
        }
        out
    }

    #[test]
    fn a_transaction_numbers_from_where_it_is_told() {
        let mut tx = Tx::new(1000);
        let elems = [Elem::addr("192.0.2.9".parse().unwrap())];
        let msg = SetElems {
            table: c"portsentry",
            set: c"blocked4",
            family: 1,
            elems: &elems,
        };
        tx.add(&msg, MsgType::Add);
        tx.add(&msg, MsgType::Del);
        assert_eq!(tx.len(), 2);
        let (bytes, answered, next) = tx.finish();
        assert_eq!((answered, next), (1001..1003, 1004));
        let h = headers(&bytes);
        assert_eq!(
            h.iter().map(|m| m.2).collect::<Vec<_>>(),
            [1000, 1001, 1002, 1003]
        );
        // Our messages ask for an answer; the batch begin and end do not (kernels before
        // 6.10 never give one).
        let acked: Vec<bool> = h
            .iter()
            .map(|m| m.1 & libc::NLM_F_ACK as u16 != 0)
            .collect();
        assert_eq!(acked, [false, true, true, false]);
    }

    #[test]
    fn attributes_of_a_short_or_hostile_message_end_cleanly() {
        assert_eq!(attrs(&[0; 10]).count(), 0);
        let mut m = vec![0u8; 20];
        m.extend_from_slice(&[200, 0, 1, 0, 1, 2]); // claims 200 bytes, has 2
        assert_eq!(attrs(&m).count(), 0);
        let mut m = vec![0u8; 20];
        m.extend_from_slice(&[8, 0, 1, 0, 0, 0, 0, 7]);
        assert_eq!(parse_gen(&m), Some(7));
    }
}
