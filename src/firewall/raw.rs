//! What nftnl's safe API lacks, built on its re-exported `nftnl_sys` and public traits:
//! set-element messages with timeouts and interval flags (and without `NLM_F_EXCL`, so
//! re-adding refreshes instead of aborting the transaction), the native `queue` expression,
//! the xt `NFQUEUE` compat target, and a single-table lookup message.
//!
//! Most `unsafe` of the firewall lives here: libnftnl is C, reached through its raw
//! bindings. The safe functions below cannot overflow a buffer whatever they are given:
//! names are bounded (`NAME_MAX`), keys are 16 bytes at most (Elem's constructors), element
//! lists go through libnftnl's bounded builder, and parsing checks a message's length
//! before libnftnl trusts it.
#![allow(unsafe_code)]

use ipnet::IpNet;
use netlink_packet_core::{NetlinkBuffer, NlasIterator};
use nftnl::expr::Expression;
use nftnl::nftnl_sys::{self as sys, libc};
use nftnl::{MsgType, NlMsg, Rule};
use std::ffi::CStr;
use std::io;
use std::net::IpAddr;
use std::ops::Range;
use std::os::raw::c_char;
use std::ptr::NonNull;

/// `NFT_SET_ELEM_INTERVAL_END`: marks the first address past an interval.
pub const ELEM_INTERVAL_END: u32 = 1;
/// `NFT_QUEUE_FLAG_BYPASS`: accept instead of drop when no process listens on the queue.
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
    #[must_use]
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
    #[must_use]
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
    #[must_use]
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

    #[must_use]
    pub fn with_timeout_ms(mut self, ms: Option<u64>) -> Elem {
        self.timeout_ms = ms;
        self
    }

    #[must_use]
    pub fn with_flags(mut self, flags: u32) -> Elem {
        self.flags = flags;
        self
    }

    #[must_use]
    pub fn key(&self) -> &[u8] {
        &self.key[..usize::from(self.key_len)]
    }
}

/// NEWSETELEM / DELSETELEM for one named set, any number of elements: `Tx::add_elems`
/// writes them as as many messages as they need. With no elements, Del flushes the set.
/// Fields are private so that only `new` (names checked) makes one.
pub struct SetElems<'a> {
    table: &'a CStr,
    set: &'a CStr,
    family: u16,
    elems: &'a [Elem],
}

/// `NFT_NAME_MAXLEN` less its NUL: the kernel's limit on table and set names, and what keeps
/// a message's fixed part (two names) small next to its bounded element list.
pub const NAME_MAX: usize = 255;

/// `name` if the kernel could know such a table or set, else `InvalidInput`.
fn checked(name: &CStr) -> io::Result<&CStr> {
    if name.to_bytes().len() <= NAME_MAX {
        Ok(name)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("nftables name longer than {NAME_MAX} bytes"),
        ))
    }
}

impl<'a> SetElems<'a> {
    pub fn new(
        table: &'a CStr,
        set: &'a CStr,
        family: u16,
        elems: &'a [Elem],
    ) -> io::Result<SetElems<'a>> {
        Ok(SetElems {
            table: checked(table)?,
            set: checked(set)?,
            family,
            elems,
        })
    }
}

/// Elements per message: 500 IPv6 elements with timeouts stay well under the 64 KiB a
/// netlink message may carry (1,000 fail with EINVAL on these kernels). A message is
/// bounded by libnftnl besides (see `Tx::add_elems`), so this is about what the kernel
/// takes, not about memory.
pub const MAX_ELEMS_PER_MSG: usize = 500;

/// Room for one message as libnftnl builds it: `nft_nlmsg_maxsize()` bytes (64 KiB and a
/// page), in u32 words so the headers libnftnl writes and reads in place are aligned.
struct Scratch(Vec<u32>);

impl Scratch {
    fn new() -> Scratch {
        Scratch(vec![
            0u32;
            (nftnl::nft_nlmsg_maxsize() as usize).div_ceil(4)
        ])
    }

    fn ptr(&mut self) -> *mut c_char {
        self.0.as_mut_ptr().cast()
    }

    /// Starts a message: nlmsghdr and nfgenmsg, 20 bytes at the start of the buffer.
    fn header(&mut self, ty: i32, family: u16, flags: u16, seq: u32) -> *mut libc::nlmsghdr {
        // SAFETY: the buffer is aligned and far longer than the 20 bytes written.
        unsafe { sys::nftnl_nlmsg_build_hdr(self.ptr(), ty as u16, family, flags, seq) }
    }

    /// Appends the message in the buffer (length from its header, padded to 4 bytes).
    /// Safe code: words copied out one by one.
    fn append_to(&self, out: &mut Vec<u8>) {
        let len = (self.0[0] as usize).min(self.0.len() * 4); // nlmsg_len, first field
        let start = out.len();
        for w in &self.0[..len.div_ceil(4)] {
            out.extend_from_slice(&w.to_ne_bytes());
        }
        out.truncate(start + len);
        out.resize(out.len().next_multiple_of(4), 0);
    }

    fn message(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.append_to(&mut out);
        out
    }
}

/// Panics on a name the kernel could not hold: names here are our constants, and the bound
/// is what keeps a request within its buffer.
fn name(n: &CStr) -> &CStr {
    match checked(n) {
        Ok(n) => n,
        Err(e) => panic!("{e}"),
    }
}

/// An `nftnl_set` owned here and freed on drop: the carrier of table and set names and of
/// elements for the messages built below.
struct OwnedSet(NonNull<sys::nftnl_set>);

impl OwnedSet {
    fn new(table: &CStr, set: Option<&CStr>, family: u16) -> OwnedSet {
        // SAFETY: no preconditions; NULL (out of memory) is handled below.
        let s = NonNull::new(unsafe { sys::nftnl_set_alloc() })
            .unwrap_or_else(|| std::process::abort());
        // SAFETY: `s` is a live set; libnftnl copies the NUL-terminated strings (strdup).
        unsafe {
            sys::nftnl_set_set_str(s.as_ptr(), sys::NFTNL_SET_TABLE as u16, table.as_ptr());
            if let Some(set) = set {
                sys::nftnl_set_set_str(s.as_ptr(), sys::NFTNL_SET_NAME as u16, set.as_ptr());
            }
            sys::nftnl_set_set_u32(s.as_ptr(), sys::NFTNL_SET_FAMILY as u16, u32::from(family));
        }
        OwnedSet(s)
    }

    /// Adds an element: its key (at most 16 bytes, which libnftnl's 64-byte key storage
    /// holds), timeout and flags.
    fn add(&mut self, e: &Elem) {
        // SAFETY: no preconditions; NULL (out of memory) is handled below.
        let el = NonNull::new(unsafe { sys::nftnl_set_elem_alloc() })
            .unwrap_or_else(|| std::process::abort());
        // SAFETY: `el` is a live element; the key is read for `key_len` bytes (16 at most,
        // by Elem's constructors) and copied; the set takes ownership of `el` in
        // nftnl_set_elem_add and frees it with itself.
        unsafe {
            sys::nftnl_set_elem_set(
                el.as_ptr(),
                sys::NFTNL_SET_ELEM_KEY as u16,
                e.key.as_ptr().cast(),
                u32::from(e.key_len),
            );
            if let Some(ms) = e.timeout_ms {
                sys::nftnl_set_elem_set_u64(el.as_ptr(), sys::NFTNL_SET_ELEM_TIMEOUT as u16, ms);
            }
            if e.flags != 0 {
                sys::nftnl_set_elem_set_u32(el.as_ptr(), sys::NFTNL_SET_ELEM_FLAGS as u16, e.flags);
            }
            sys::nftnl_set_elem_add(self.0.as_ptr(), el.as_ptr());
        }
    }
}

impl Drop for OwnedSet {
    fn drop(&mut self) {
        // SAFETY: allocated by nftnl_set_alloc, freed once, here (with its elements).
        unsafe { sys::nftnl_set_free(self.0.as_ptr()) };
    }
}

/// GETTABLE for one table: answered with the table, or ENOENT.
#[must_use]
pub fn get_table_msg(table: &CStr, family: u16, seq: u32) -> Vec<u8> {
    let table = name(table);
    let mut buf = Scratch::new();
    let nlh = buf.header(libc::NFT_MSG_GETTABLE, family, libc::NLM_F_ACK as u16, seq);
    // SAFETY: no preconditions; NULL (out of memory) is handled below.
    let t =
        NonNull::new(unsafe { sys::nftnl_table_alloc() }).unwrap_or_else(|| std::process::abort());
    // SAFETY: `t` is live until freed at the end; the name is copied. The payload is the
    // name (NAME_MAX at most) and the family: far within the scratch buffer after `nlh`.
    unsafe {
        sys::nftnl_table_set_str(t.as_ptr(), sys::NFTNL_TABLE_NAME as u16, table.as_ptr());
        sys::nftnl_table_set_u32(
            t.as_ptr(),
            sys::NFTNL_TABLE_FAMILY as u16,
            u32::from(family),
        );
        sys::nftnl_table_nlmsg_build_payload(nlh, t.as_ptr());
        sys::nftnl_table_free(t.as_ptr());
    }
    buf.message()
}

/// The native nft `queue` statement (needs the kernel's `nft_queue`).
pub struct QueueExpr {
    pub num: u16,
    pub total: u16,
    pub flags: u16,
}

impl Expression for QueueExpr {
    fn to_expr(&self, _rule: &Rule) -> NonNull<sys::nftnl_expr> {
        let e = alloc_expr(c"queue");
        // SAFETY: `e` is a live expression, owned by the caller from here.
        unsafe {
            sys::nftnl_expr_set_u16(e.as_ptr(), sys::NFTNL_EXPR_QUEUE_NUM as u16, self.num);
            sys::nftnl_expr_set_u16(e.as_ptr(), sys::NFTNL_EXPR_QUEUE_TOTAL as u16, self.total);
            sys::nftnl_expr_set_u16(e.as_ptr(), sys::NFTNL_EXPR_QUEUE_FLAGS as u16, self.flags);
        }
        e
    }
}

/// The xt `NFQUEUE` target, revision 3, through `nft_compat`: what `iptables-nft -j NFQUEUE`
/// installs. Works where `nft_queue` is missing.
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
        let e = alloc_expr(c"target");
        // SAFETY: `e` is a live expression; the name is copied. libnftnl takes ownership of
        // the info buffer without copying it and frees it with the expression, so it must
        // come from malloc: it does, and is filled with exactly its `info.len()` bytes.
        unsafe {
            sys::nftnl_expr_set_str(
                e.as_ptr(),
                sys::NFTNL_EXPR_TG_NAME as u16,
                c"NFQUEUE".as_ptr(),
            );
            sys::nftnl_expr_set_u32(e.as_ptr(), sys::NFTNL_EXPR_TG_REV as u16, 3);
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
        }
        e
    }
}

fn alloc_expr(name: &CStr) -> NonNull<sys::nftnl_expr> {
    // SAFETY: a NUL-terminated expression name; NULL (unknown name, out of memory) aborts.
    NonNull::new(unsafe { sys::nftnl_expr_alloc(name.as_ptr()) })
        .unwrap_or_else(|| std::process::abort())
}

/// GETRULE dump of one chain.
#[must_use]
pub fn get_rules_msg(table: &CStr, chain: &CStr, family: u16, seq: u32) -> Vec<u8> {
    let (table, chain) = (name(table), name(chain));
    let mut buf = Scratch::new();
    let dump = (libc::NLM_F_DUMP | libc::NLM_F_ACK) as u16;
    let nlh = buf.header(libc::NFT_MSG_GETRULE, family, dump, seq);
    rule_payload(nlh, table, Some(chain), family);
    buf.message()
}

/// The payload of a rule request: table, chain (optional), family.
fn rule_payload(nlh: *mut libc::nlmsghdr, table: &CStr, chain: Option<&CStr>, family: u16) {
    // SAFETY: no preconditions; NULL (out of memory) is handled below.
    let r =
        NonNull::new(unsafe { sys::nftnl_rule_alloc() }).unwrap_or_else(|| std::process::abort());
    // SAFETY: `r` is live until freed at the end; names are copied, and checked to be
    // NAME_MAX at most by the callers, so the payload stays far within the scratch buffer
    // `nlh` heads.
    unsafe {
        sys::nftnl_rule_set_str(r.as_ptr(), sys::NFTNL_RULE_TABLE as u16, table.as_ptr());
        if let Some(chain) = chain {
            sys::nftnl_rule_set_str(r.as_ptr(), sys::NFTNL_RULE_CHAIN as u16, chain.as_ptr());
        }
        sys::nftnl_rule_set_u32(r.as_ptr(), sys::NFTNL_RULE_FAMILY as u16, u32::from(family));
        sys::nftnl_rule_nlmsg_build_payload(nlh, r.as_ptr());
        sys::nftnl_rule_free(r.as_ptr());
    }
}

/// GETSETELEM dump of one set.
#[must_use]
pub fn get_set_elems_msg(table: &CStr, set: &CStr, family: u16, seq: u32) -> Vec<u8> {
    let s = OwnedSet::new(name(table), Some(name(set)), family);
    let mut buf = Scratch::new();
    let dump = (libc::NLM_F_DUMP | libc::NLM_F_ACK) as u16;
    let nlh = buf.header(libc::NFT_MSG_GETSETELEM, family, dump, seq);
    // SAFETY: a set with two names (NAME_MAX at most) and no elements: the payload stays
    // far within the scratch buffer `nlh` heads.
    unsafe { sys::nftnl_set_elems_nlmsg_build_payload(nlh, s.0.as_ptr()) };
    buf.message()
}

/// An element read back from the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedElem {
    pub key: Vec<u8>,
    /// Time left, when the element has a timeout.
    pub expires_ms: Option<u64>,
    /// `ELEM_INTERVAL_END` marks the first address past an interval.
    pub flags: u32,
}

/// Parses one NEWSETELEM message of a dump. Anything but a whole netlink message (its
/// length field within `msg`) gives nothing: libnftnl trusts that field.
#[must_use]
pub fn parse_set_elems(msg: &[u8]) -> Vec<ListedElem> {
    let mut out = Vec::new();
    let Ok(nl) = NetlinkBuffer::new_checked(msg) else {
        return out;
    };
    let msg = &msg[..nl.length() as usize];
    if msg.len() < NFT_HDR {
        return out;
    }
    // Copied into u32 words: libnftnl reads the header in place and wants it aligned.
    let aligned: Vec<u32> = msg
        .chunks(4)
        .map(|c| {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            u32::from_ne_bytes(w)
        })
        .collect();
    let s = OwnedSet::new(c"", None, 0);
    // SAFETY: `aligned` holds a netlink message whose length field is within it; libmnl
    // checks every attribute against that length, and libnftnl copies what it keeps.
    if unsafe { sys::nftnl_set_elems_nlmsg_parse(aligned.as_ptr().cast(), s.0.as_ptr()) } < 0 {
        return out;
    }
    // SAFETY: the set outlives the iterator, destroyed below; NULL: out of memory.
    let it = unsafe { sys::nftnl_set_elems_iter_create(s.0.as_ptr()) };
    if it.is_null() {
        return out;
    }
    // `iter_next` returns the current element, then moves on: starting from `iter_cur` as
    // well listed the first element twice.
    loop {
        // SAFETY: a live iterator over a set not changed meanwhile.
        let e = unsafe { sys::nftnl_set_elems_iter_next(it) };
        if e.is_null() {
            break;
        }
        let mut len: u32 = 0;
        // SAFETY: `e` is an element of the live set; the key pointer, when not NULL, points
        // at `len` bytes inside it, copied out at once.
        let key = unsafe {
            let key = sys::nftnl_set_elem_get(e, sys::NFTNL_SET_ELEM_KEY as u16, &mut len);
            (!key.is_null())
                .then(|| std::slice::from_raw_parts(key.cast::<u8>(), len as usize).to_vec())
        };
        let Some(key) = key else { continue };
        // SAFETY: reading attributes of a live element, each only if it is set.
        let (expires_ms, flags) = unsafe {
            let has = |a: u32| sys::nftnl_set_elem_is_set(e, a as u16);
            (
                has(sys::NFTNL_SET_ELEM_EXPIRATION)
                    .then(|| sys::nftnl_set_elem_get_u64(e, sys::NFTNL_SET_ELEM_EXPIRATION as u16)),
                if has(sys::NFTNL_SET_ELEM_FLAGS) {
                    sys::nftnl_set_elem_get_u32(e, sys::NFTNL_SET_ELEM_FLAGS as u16)
                } else {
                    0
                },
            )
        };
        out.push(ListedElem {
            key,
            expires_ms,
            flags,
        });
    }
    // SAFETY: created above, destroyed once.
    unsafe { sys::nftnl_set_elems_iter_destroy(it) };
    out
}

/// A transaction under construction: the batch begin and end messages around our own, with
/// sequence numbers from `first` on. nftnl's `Batch` numbers from 1 every time; the socket
/// needs numbers unique over its life, or a late answer could be taken for a new one.
/// Only our own messages ask for an answer: kernels before 6.10 never answer the batch
/// begin and end messages, and waiting for them would stall every transaction there.
pub struct Tx {
    buf: Vec<u8>,
    scratch: Scratch,
    first: u32,
    next: u32,
    messages: usize,
}

impl Tx {
    pub fn new(first: u32) -> Tx {
        let mut tx = Tx {
            buf: Vec::with_capacity(4096),
            scratch: Scratch::new(),
            first,
            next: first,
            messages: 0,
        };
        tx.control(sys::nftnl_batch_begin);
        tx
    }

    /// Adds one message of nftnl's own kinds (tables, chains, rules).
    pub fn add(&mut self, msg: &impl NlMsg, ty: MsgType) {
        let seq = self.next;
        // SAFETY: NlMsg's contract: `write` puts at most nft_nlmsg_maxsize() bytes, which
        // is what `scratch` holds.
        unsafe { msg.write(self.scratch.ptr().cast(), seq, ty) };
        self.take_written();
        self.messages += 1;
    }

    /// Adds the elements of `m` as as many messages as they need: `MAX_ELEMS_PER_MSG`
    /// elements each at most, and fewer if libnftnl's bounded builder finds a message's
    /// element list full (it is one netlink attribute, 64 KiB at most). Any number of
    /// elements is safe. With none: for Del one message, a flush; for Add nothing (the
    /// kernel refuses an empty NEWSETELEM).
    pub fn add_elems(&mut self, m: &SetElems, ty: MsgType) {
        self.add_elems_by(m, ty, MAX_ELEMS_PER_MSG);
    }

    fn add_elems_by(&mut self, m: &SetElems, ty: MsgType, per_msg: usize) {
        if m.elems.is_empty() && matches!(ty, MsgType::Del) {
            self.elems_msgs(m, &[], ty);
        }
        for chunk in m.elems.chunks(per_msg.max(1)) {
            self.elems_msgs(m, chunk, ty);
        }
    }

    /// One message, or more if libnftnl stops at a full element list.
    fn elems_msgs(&mut self, m: &SetElems, elems: &[Elem], ty: MsgType) {
        let (msg_ty, flags) = match ty {
            MsgType::Add => (
                libc::NFT_MSG_NEWSETELEM,
                libc::NLM_F_CREATE | libc::NLM_F_ACK,
            ),
            MsgType::Del => (libc::NFT_MSG_DELSETELEM, libc::NLM_F_ACK),
        };
        let mut set = OwnedSet::new(m.table, Some(m.set), m.family);
        for e in elems {
            set.add(e);
        }
        // SAFETY: the set outlives the iterator, destroyed below; NULL: out of memory.
        let it = unsafe { sys::nftnl_set_elems_iter_create(set.0.as_ptr()) };
        if it.is_null() {
            std::process::abort();
        }
        // Every message takes at least one element, so this many rounds always suffice.
        for _ in 0..=elems.len() {
            let nlh = self
                .scratch
                .header(msg_ty, m.family, flags as u16, self.next);
            // SAFETY: the message is its 20-byte header, two names of NAME_MAX at most
            // (SetElems::new checks them) and an element list the builder closes once it
            // passes 65,535 bytes, dropping the one element (under 64 bytes: keys are 16
            // at most) that crossed: far within the scratch buffer's 64 KiB and a page.
            let more = unsafe { sys::nftnl_set_elems_nlmsg_build_payload_iter(nlh, it) };
            self.take_written();
            self.messages += 1;
            // 1: stopped at a full list, the iterator on the element that did not fit.
            if more != 1 {
                break;
            }
        }
        // SAFETY: created above, destroyed once.
        unsafe { sys::nftnl_set_elems_iter_destroy(it) };
    }

    /// Messages added (begin and end not counted).
    #[must_use]
    pub fn len(&self) -> usize {
        self.messages
    }

    #[must_use]
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
        // SAFETY: the batch begin/end message is 20 bytes, into the aligned scratch buffer.
        unsafe { f(self.scratch.ptr(), seq) };
        self.take_written();
    }

    /// Appends the message in `scratch`, and numbers the next one.
    fn take_written(&mut self) {
        self.scratch.append_to(&mut self.buf);
        self.next = self.next.wrapping_add(1);
    }
}

/// A request with a table, chain or set name filter, built by libnftnl: GETRULE dump,
/// GETSET dump, GETCHAIN or GETTABLE dump of a family, or GETGEN.
#[must_use]
pub fn get_msg(what: Get, table: &CStr, family: u16, seq: u32) -> Vec<u8> {
    let table = name(table);
    let dump = (libc::NLM_F_DUMP | libc::NLM_F_ACK) as u16;
    let mut buf = Scratch::new();
    match what {
        Get::Gen => {
            buf.header(libc::NFT_MSG_GETGEN, 0, libc::NLM_F_ACK as u16, seq);
        }
        Get::Chains => {
            buf.header(libc::NFT_MSG_GETCHAIN, family, dump, seq);
        }
        Get::Tables => {
            buf.header(libc::NFT_MSG_GETTABLE, family, dump, seq);
        }
        Get::Rules => {
            let nlh = buf.header(libc::NFT_MSG_GETRULE, family, dump, seq);
            rule_payload(nlh, table, None, family);
        }
        Get::Sets => {
            let s = OwnedSet::new(table, None, family);
            let nlh = buf.header(libc::NFT_MSG_GETSET, family, dump, seq);
            // SAFETY: a set with a table name (NAME_MAX at most) and a family: the payload
            // stays far within the scratch buffer `nlh` heads.
            unsafe { sys::nftnl_set_nlmsg_build_payload(nlh, s.0.as_ptr()) };
        }
    }
    buf.message()
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
#[must_use]
pub fn get_elem_msg(table: &CStr, set: &CStr, family: u16, e: &Elem, seq: u32) -> Vec<u8> {
    let mut s = OwnedSet::new(name(table), Some(name(set)), family);
    s.add(&Elem {
        timeout_ms: None,
        flags: 0,
        ..*e
    });
    let mut buf = Scratch::new();
    let nlh = buf.header(
        libc::NFT_MSG_GETSETELEM,
        family,
        libc::NLM_F_ACK as u16,
        seq,
    );
    // SAFETY: two names (NAME_MAX at most) and one key of 16 bytes at most: far within
    // the scratch buffer `nlh` heads.
    unsafe { sys::nftnl_set_elems_nlmsg_build_payload(nlh, s.0.as_ptr()) };
    buf.message()
}

/// nlmsghdr (16 bytes) and nfgenmsg (4): what every nftables message starts with.
const NFT_HDR: usize = 20;

/// The attributes of an nftables message: (type without flags, payload), decoded by
/// netlink-packet-core. Stops at the first malformed length.
pub fn attrs(msg: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    NlasIterator::new(msg.get(NFT_HDR..).unwrap_or_default())
        .map_while(Result::ok)
        .map(|a| {
            // new_checked (behind the iterator) found 4 <= length <= the bytes left.
            let (kind, len) = (a.kind(), usize::from(a.length()));
            (kind, &a.into_inner()[4..len])
        })
}

/// The nfgenmsg family of a message.
#[must_use]
pub fn family(msg: &[u8]) -> Option<u8> {
    msg.get(16).copied()
}

/// `NFTA_GEN_ID` of a NEWGEN message.
#[must_use]
pub fn parse_gen(msg: &[u8]) -> Option<u32> {
    attrs(msg)
        .find(|(ty, _)| *ty == 1)
        .and_then(|(_, p)| Some(u32::from_be_bytes(p.get(..4)?.try_into().ok()?)))
}

/// The table name of a table, chain, set or rule message (attribute 1 in all four).
#[must_use]
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
        let msg = SetElems::new(c"portsentry", c"blocked4", 1, &elems).unwrap();
        tx.add_elems(&msg, MsgType::Add);
        tx.add_elems(&msg, MsgType::Del);
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

    /// The messages of a transaction between its begin and end.
    fn inner(bytes: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + 16 <= bytes.len() {
            let len = u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            out.push(&bytes[at..at + len]);
            at += len.next_multiple_of(4);
        }
        out[1..out.len() - 1].to_vec()
    }

    fn many(n: u32) -> Vec<Elem> {
        (0..n)
            .map(|i| {
                let a = std::net::Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i));
                Elem::addr(a.into()).with_timeout_ms(Some(3_600_000 + u64::from(i)))
            })
            .collect()
    }

    /// The (key, timeout) of each element of built messages. libnftnl's parser takes
    /// only what the kernel writes (every element nest typed 1; libnftnl's builder numbers
    /// them), so the nests are walked here.
    fn read_back(msgs: &[&[u8]]) -> Vec<(Vec<u8>, Option<u64>)> {
        fn nested(b: &[u8]) -> Vec<(u16, Vec<u8>)> {
            NlasIterator::new(b)
                .map(|a| {
                    let a = a.unwrap();
                    let len = usize::from(a.length());
                    (a.kind(), a.into_inner()[4..len].to_vec())
                })
                .collect()
        }
        let mut out = Vec::new();
        for m in msgs {
            for (_, list) in attrs(m).filter(|(t, _)| *t == 3) {
                for (_, elem) in nested(list) {
                    let attrs = nested(&elem);
                    let get = |t: u16| attrs.iter().find(|a| a.0 == t).map(|a| a.1.clone());
                    let key = nested(&get(1).unwrap())[0].1.clone();
                    let timeout = get(4).map(|v| u64::from_be_bytes(v[..8].try_into().unwrap()));
                    out.push((key, timeout));
                }
            }
        }
        out
    }

    fn want(elems: &[Elem]) -> Vec<(Vec<u8>, Option<u64>)> {
        elems
            .iter()
            .map(|e| (e.key().to_vec(), e.timeout_ms))
            .collect()
    }

    #[test]
    fn any_number_of_elements_is_written_in_bounded_messages() {
        let elems = many(5_000);
        let msg = SetElems::new(c"portsentry", c"blocked6", 1, &elems).unwrap();
        let mut tx = Tx::new(1);
        tx.add_elems(&msg, MsgType::Add);
        assert_eq!(tx.len(), 10, "500 a message");
        let (bytes, answered, _) = tx.finish();
        assert_eq!(answered.len(), 10);
        let msgs = inner(&bytes);
        assert!(msgs.iter().all(|m| m.len() < 65_536));
        assert!(
            read_back(&msgs) == want(&elems),
            "elements lost, doubled or out of order"
        );
    }

    #[test]
    fn libnftnl_stops_a_message_at_a_full_element_list() {
        // No chunking of ours: the bounded builder alone splits 5,000 elements (about 40
        // bytes each) into messages whose element list fits its 16-bit length, each
        // element exactly once, in order.
        let elems = many(5_000);
        let msg = SetElems::new(c"portsentry", c"blocked6", 1, &elems).unwrap();
        let mut tx = Tx::new(1);
        tx.add_elems_by(&msg, MsgType::Add, usize::MAX);
        let n = tx.len();
        assert!((3..10).contains(&n), "{n} messages");
        let (bytes, _, _) = tx.finish();
        let msgs = inner(&bytes);
        assert_eq!(msgs.len(), n);
        assert!(msgs.iter().all(|m| m.len() < 65_536 + 1_024));
        assert!(
            read_back(&msgs) == want(&elems),
            "elements lost, doubled or out of order"
        );
    }

    #[test]
    fn names_longer_than_the_kernel_takes_are_refused() {
        let long = std::ffi::CString::new(vec![b'x'; NAME_MAX + 1]).unwrap();
        assert!(SetElems::new(&long, c"blocked4", 1, &[]).is_err());
        assert!(SetElems::new(c"portsentry", &long, 1, &[]).is_err());
        let ok = std::ffi::CString::new(vec![b'x'; NAME_MAX]).unwrap();
        assert!(SetElems::new(&ok, &ok, 1, &[]).is_ok());
    }

    #[test]
    fn a_flush_is_one_message_without_elements() {
        let mut tx = Tx::new(1);
        tx.add_elems(
            &SetElems::new(c"portsentry", c"blocked4", 1, &[]).unwrap(),
            MsgType::Del,
        );
        assert_eq!(tx.len(), 1);
        let (bytes, _, _) = tx.finish();
        let msgs = inner(&bytes);
        assert_eq!(msgs.len(), 1);
        // Set name and table, no element list (attribute 3).
        assert_eq!(attrs(msgs[0]).map(|(t, _)| t).collect::<Vec<_>>(), [2, 1]);
        // Adding nothing is no message at all.
        let mut tx = Tx::new(1);
        tx.add_elems(
            &SetElems::new(c"portsentry", c"blocked4", 1, &[]).unwrap(),
            MsgType::Add,
        );
        assert!(tx.is_empty());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_000))]
        #[test]
        fn hostile_replies_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = attrs(&bytes).count();
            let _ = parse_gen(&bytes);
            let _ = table_of(&bytes);
            let _ = parse_set_elems(&bytes);
        }
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
