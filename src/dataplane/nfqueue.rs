//! The NFQUEUE socket, ours: bound to one queue, drained many packets to a system call
//! (recvmmsg), answered with one batch verdict per run of drops. The nfq crate sends one
//! verdict per packet and hides its socket; this is the little of `nfnetlink_queue` we need.
//!
//! Replies to our requests are decoded by netlink-packet-core (`NetlinkBuffer`,
//! `ErrorBuffer`). A queued packet's message is walked here, in safe code whose every index
//! is checked against the message's length first (property-tested below): it is the
//! per-packet path, and netlink-packet-core's `NlasIterator` (a checked buffer and a
//! `Result` per attribute, field reads through non-inlined parsers) costs about 2.5 times
//! as much there. `portsentry-bench queue-parse` (20 million kernel-like messages of 6
//! attributes, best of 5, release build, 2 shared cores, 2026-12-05, three runs): this
//! walk 30 to 37 ns a message, the crate's 79 to 81 ns; the whole parse + classify +
//! decide of a probe is 68 ns (BENCHMARKS.md).
//!
//! A message longer than its slot arrives cut (`MSG_TRUNC`). The slot is sized from the copy
//! range so that it never should (checked at compile time); if the kernel ever adds more
//! metadata than allowed for, the packet is still answered: its id comes first (in
//! `NFQA_PACKET_HDR`) and its payload, the last attribute, is read as far as it came, like a
//! packet copied with a shorter range.
// Our own netlink socket (socket, bind, recvmmsg, send) is made of C calls.
#![allow(unsafe_code)]

use crate::system::socket;
use netlink_packet_core::{ErrorBuffer, NetlinkBuffer, NLA_TYPE_MASK, NLMSG_ERROR};
use std::io;
use std::num::NonZeroI32;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQNL_MSG_VERDICT_BATCH: u16 = 3;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_MARK: u16 = 3;
const NFQA_PAYLOAD: u16 = 10;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_PACKET: u8 = 2;
const NFQA_CFG_F_FAIL_OPEN: u32 = 1;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const HDR: usize = 16;
const NFGEN: usize = 4;
const NLA_HDR: usize = 4;
/// The message type of a queued packet.
const PACKET: u16 = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET;

/// Packets taken from the socket in one system call at most: bounds both the work done
/// before the first verdict and the memory held.
pub const BATCH: usize = 64;
/// Bytes of each packet copied to us: its headers (IPv4 options, IPv6 extension headers,
/// the transport header). The one place to change it: the slots follow.
pub const COPY_RANGE: u16 = 256;
/// What the kernel puts before the payload, at most: nlmsghdr and nfgenmsg (20), and the
/// attributes `nfqnl_build_packet_message` may add first: packet header (12), four interface
/// indexes (32), mark, priority, skb info and cap len (32), hardware address (16), timestamp
/// (20), VLAN and L2 header on a bridge (40): 172 bytes. Uid, gid, security context and
/// conntrack come only when asked for, and we never ask. Rounded up generously.
const META_MAX: usize = 512;
/// Room for one queued packet: metadata, the payload attribute's header and the copy range,
/// rounded up to a power of two.
const SLOT: usize = (META_MAX + NLA_HDR + COPY_RANGE as usize).next_power_of_two();
// The copy range and the headers fit a slot whatever COPY_RANGE becomes.
const _: () = assert!(SLOT >= META_MAX + NLA_HDR + COPY_RANGE as usize);

/// The verdict a packet gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
}

/// What the socket is bound to.
#[derive(Clone, Copy, Debug)]
pub struct Binding {
    pub num: u16,
    pub copy_range: u16,
    pub max_len: u32,
    pub fail_open: bool,
    /// A blocking receive returns (`WouldBlock`) after this long with nothing queued.
    pub idle_wake: Duration,
    pub socket_buffer: usize,
}

pub struct QueueSocket {
    fd: OwnedFd,
    num: u16,
    seq: u32,
    /// BATCH slots of SLOT bytes. Every read is bounds-checked and byte-wise
    /// (`from_ne_bytes`), so no alignment is needed.
    slots: Vec<u8>,
    lens: [usize; BATCH],
    /// Which messages of the last `receive` came cut (`MSG_TRUNC`).
    cut: [bool; BATCH],
    /// Messages that came cut, ever: none is expected (see the module header).
    truncated: u64,
    out: Vec<u8>,
}

/// One queued packet: its id, its mark and the bytes of its network header onwards.
pub struct Packet<'a> {
    pub id: u32,
    /// The packet mark (0 when the kernel sent none): the table marks live clients' probes.
    pub mark: u32,
    pub payload: &'a [u8],
}

impl QueueSocket {
    /// Opens a netfilter netlink socket and binds it to the queue. Fails if another
    /// process holds the queue (EBUSY) or the kernel lacks NFQUEUE.
    pub fn open(b: &Binding) -> io::Result<QueueSocket> {
        if b.copy_range > COPY_RANGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("copy range {} exceeds COPY_RANGE", b.copy_range),
            ));
        }
        // SAFETY: socket() takes integers and touches no memory; the fd it returns is
        // owned from here.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a valid descriptor (checked above) that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut q = QueueSocket {
            fd,
            num: b.num,
            seq: 0,
            slots: vec![0u8; BATCH * SLOT],
            lens: [0; BATCH],
            cut: [false; BATCH],
            truncated: 0,
            out: Vec::with_capacity(256),
        };
        // SAFETY: sockaddr_nl is integers (and padding): all zeroes is a valid value, and
        // nl_pid 0 means "the kernel picks the port".
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `sa` is a whole sockaddr_nl, alive for the call, its size given; the
        // kernel copies it.
        unsafe {
            if libc::bind(
                raw,
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        // A burst waits in the socket rather than being dropped by the kernel.
        socket::set_receive_buffer(raw, b.socket_buffer);
        socket::set_receive_timeout(raw, b.idle_wake)?;
        // Bind, then the copy range (headers only), the queue length and fail-open.
        let mut cmd = [0u8; 4];
        cmd[0] = NFQNL_CFG_CMD_BIND;
        q.config(&[(NFQA_CFG_CMD, &cmd)])?;
        let mut params = [0u8; 5];
        params[..4].copy_from_slice(&u32::from(b.copy_range).to_be_bytes());
        params[4] = NFQNL_COPY_PACKET;
        let fail_open = if b.fail_open { NFQA_CFG_F_FAIL_OPEN } else { 0 };
        q.config(&[
            (NFQA_CFG_PARAMS, &params),
            (NFQA_CFG_QUEUE_MAXLEN, &b.max_len.to_be_bytes()),
            (NFQA_CFG_MASK, &NFQA_CFG_F_FAIL_OPEN.to_be_bytes()),
            (NFQA_CFG_FLAGS, &fail_open.to_be_bytes()),
        ])?;
        Ok(q)
    }

    /// The receive buffer the kernel granted.
    #[must_use]
    pub fn receive_buffer(&self) -> usize {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: SO_RCVBUF is an int: getsockopt writes at most `len` (its size) bytes
        // into `v`, ours and alive for the call.
        unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            );
        }
        usize::try_from(v).unwrap_or(0)
    }

    /// Sends a CONFIG message with `attrs` and waits for its acknowledgement.
    fn config(&mut self, attrs: &[(u16, &[u8])]) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.out.clear();
        put_header(
            &mut self.out,
            NFQNL_MSG_CONFIG,
            (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16,
            seq,
            self.num,
        );
        for (ty, payload) in attrs {
            put_attr(&mut self.out, *ty, payload);
        }
        finish(&mut self.out);
        self.send()?;
        loop {
            let n = self.recv_into(0, 0)?;
            let Ok(nl) = NetlinkBuffer::new_checked(self.slot(0, n)) else {
                continue;
            };
            if nl.message_type() != NLMSG_ERROR || nl.sequence_number() != seq {
                continue;
            }
            if let Ok(e) = ErrorBuffer::new_checked(nl.payload()) {
                return match e.code().map(NonZeroI32::get) {
                    None => Ok(()),
                    Some(code) => Err(io::Error::from_raw_os_error(-code)),
                };
            }
        }
    }

    fn send(&self) -> io::Result<()> {
        // SAFETY: send reads `out.len()` bytes of `out`, ours and alive for the call.
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                self.out.as_ptr().cast(),
                self.out.len(),
                0,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn slot(&self, i: usize, n: usize) -> &[u8] {
        &self.slots[i * SLOT..][..n.min(SLOT)]
    }

    /// One datagram into slot `i`; `flags` e.g. `MSG_DONTWAIT`.
    fn recv_into(&mut self, i: usize, flags: libc::c_int) -> io::Result<usize> {
        let slot = &mut self.slots[i * SLOT..][..SLOT];
        // SAFETY: recv writes at most `slot.len()` bytes into `slot`, ours and alive for
        // the call.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                slot.as_mut_ptr().cast(),
                slot.len(),
                flags,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Takes what is queued, BATCH at most, in one system call; with `wait`, waits for
    /// the first packet (up to the idle wake; `MSG_WAITFORONE`). Nothing: `WouldBlock`.
    /// ENOBUFS (the kernel dropped some for want of room) is an error to count; the next
    /// call goes on.
    pub fn receive(&mut self, wait: bool) -> io::Result<usize> {
        // One iovec per slot: disjoint chunks of our buffer.
        let mut iovs: [libc::iovec; BATCH] = std::array::from_fn(|_| libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        });
        for (iov, slot) in iovs.iter_mut().zip(self.slots.chunks_exact_mut(SLOT)) {
            iov.iov_base = slot.as_mut_ptr().cast();
            iov.iov_len = slot.len();
        }
        // SAFETY: msghdr is integers and pointers, for which all zeroes (NULL, 0) is a valid
        // value: no address, no control data; each gets its iovec below.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (h, iov) in hdrs.iter_mut().zip(iovs.iter_mut()) {
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: BATCH headers, each with one iovec naming its own SLOT bytes of
        // `self.slots`; all of them ours and alive (and not otherwise borrowed) for the
        // call, which writes only there and into the headers.
        let got = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                if wait {
                    libc::MSG_WAITFORONE
                } else {
                    libc::MSG_DONTWAIT
                },
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        let got = (got as usize).min(BATCH);
        for (i, h) in hdrs[..got].iter().enumerate() {
            self.lens[i] = h.msg_len as usize;
            self.cut[i] = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            if self.cut[i] {
                self.truncated += 1;
                if self.truncated.is_power_of_two() {
                    tracing::warn!(
                        "queue {}: {} messages longer than a slot ({SLOT} bytes); answered \
                         on what arrived",
                        self.num,
                        self.truncated
                    );
                }
            }
        }
        Ok(got)
    }

    /// The packets of the last `receive`, in queue order (ids rise); a cut message too
    /// (see the module header).
    pub fn packets(&self, n: usize) -> impl Iterator<Item = Packet<'_>> {
        (0..n.min(BATCH)).filter_map(move |i| parse(self.slot(i, self.lens[i]), self.cut[i]))
    }

    /// Answers packets in order: `verdicts` (id, verdict) as given by `packets`. Each run
    /// of drops is one batch verdict (every queued packet up to its last id); an accept is
    /// a verdict of its own. No acknowledgements: nothing waits on the kernel here.
    pub fn answer(&mut self, verdicts: &[(u32, Verdict)]) -> io::Result<()> {
        let mut run_end: Option<u32> = None;
        for &(id, v) in verdicts {
            match v {
                Verdict::Drop => run_end = Some(id),
                Verdict::Accept => {
                    if let Some(last) = run_end.take() {
                        self.verdict(NFQNL_MSG_VERDICT_BATCH, last, NF_DROP)?;
                    }
                    self.verdict(NFQNL_MSG_VERDICT, id, NF_ACCEPT)?;
                }
            }
        }
        if let Some(last) = run_end {
            self.verdict(NFQNL_MSG_VERDICT_BATCH, last, NF_DROP)?;
        }
        Ok(())
    }

    fn verdict(&mut self, msg: u16, id: u32, verdict: u32) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        self.out.clear();
        put_header(
            &mut self.out,
            msg,
            libc::NLM_F_REQUEST as u16,
            self.seq,
            self.num,
        );
        let mut hdr = [0u8; 8];
        hdr[..4].copy_from_slice(&verdict.to_be_bytes());
        hdr[4..].copy_from_slice(&id.to_be_bytes());
        put_attr(&mut self.out, NFQA_VERDICT_HDR, &hdr);
        finish(&mut self.out);
        self.send()
    }
}

/// nlmsghdr (length filled in by `finish`) and nfgenmsg for the queue subsystem.
fn put_header(out: &mut Vec<u8>, msg: u16, flags: u16, seq: u32, queue: u16) {
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | msg).to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&[libc::AF_UNSPEC as u8, 0]);
    out.extend_from_slice(&queue.to_be_bytes());
}

fn put_attr(out: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len().next_multiple_of(4), 0);
}

fn finish(out: &mut [u8]) {
    let len = out.len() as u32;
    out[..4].copy_from_slice(&len.to_ne_bytes());
}

/// A PACKET message: its id and payload. Anything else (or a malformed one) is `None`.
#[must_use]
pub fn parse_packet(bytes: &[u8]) -> Option<Packet<'_>> {
    parse(bytes, false)
}

/// `cut`: the message was longer than `bytes` (`MSG_TRUNC`), so its length field says more
/// than arrived: its attributes are read as far as they came, and the payload, the last
/// attribute, as far as it came.
fn parse(bytes: &[u8], cut: bool) -> Option<Packet<'_>> {
    let len = u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let ty = u16::from_ne_bytes(bytes.get(4..6)?.try_into().ok()?);
    if ty != PACKET || len < HDR + NFGEN || (len > bytes.len() && !cut) {
        return None;
    }
    let end = len.min(bytes.len());
    let (mut id, mut mark, mut payload) = (None, 0, &[][..]);
    let mut at = HDR + NFGEN;
    while at + NLA_HDR <= end {
        let alen = usize::from(u16::from_ne_bytes([bytes[at], bytes[at + 1]]));
        let kind = u16::from_ne_bytes([bytes[at + 2], bytes[at + 3]]) & NLA_TYPE_MASK;
        if alen < NLA_HDR {
            break;
        }
        if at + alen > end {
            // A cut message ends inside its last attribute, the payload.
            if cut && kind == NFQA_PAYLOAD {
                payload = &bytes[at + NLA_HDR..end];
            }
            break;
        }
        let value = &bytes[at + NLA_HDR..at + alen];
        match kind {
            NFQA_PACKET_HDR if value.len() >= 4 => {
                id = Some(u32::from_be_bytes(value[..4].try_into().ok()?));
            }
            NFQA_MARK if value.len() >= 4 => {
                mark = u32::from_be_bytes(value[..4].try_into().ok()?);
            }
            NFQA_PAYLOAD => payload = value,
            _ => {}
        }
        at += alen.next_multiple_of(4);
    }
    Some(Packet {
        id: id?,
        mark,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A PACKET message as the kernel writes it.
    fn packet_msg(id: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        put_header(&mut m, NFQNL_MSG_PACKET, 0, 0, 0);
        let mut hdr = [0u8; 7];
        hdr[..4].copy_from_slice(&id.to_be_bytes());
        put_attr(&mut m, NFQA_PACKET_HDR, &hdr);
        put_attr(&mut m, NFQA_PAYLOAD, payload);
        finish(&mut m);
        m
    }

    #[test]
    fn a_packet_message_reads_back() {
        let m = packet_msg(77, &[0x45, 0, 0, 20]);
        let p = parse_packet(&m).unwrap();
        assert_eq!((p.id, p.mark, p.payload), (77, 0, &[0x45, 0, 0, 20][..]));
        // Cut short, or another message: nothing.
        assert!(parse_packet(&m[..10]).is_none());
        let mut other = m.clone();
        other[4] = NFQNL_MSG_CONFIG as u8;
        assert!(parse_packet(&other).is_none());
    }

    #[test]
    fn the_mark_reads_back() {
        let mut m = Vec::new();
        put_header(&mut m, NFQNL_MSG_PACKET, 0, 0, 0);
        put_attr(&mut m, NFQA_PACKET_HDR, &[0, 0, 0, 9, 0, 0, 0]);
        put_attr(&mut m, NFQA_MARK, &0x0010_0001u32.to_be_bytes());
        put_attr(&mut m, NFQA_PAYLOAD, &[0x45]);
        finish(&mut m);
        let p = parse_packet(&m).unwrap();
        assert_eq!((p.id, p.mark), (9, 0x0010_0001));
    }

    #[test]
    fn a_cut_message_is_still_answered_on_what_arrived() {
        let full: Vec<u8> = (0..200u8).collect();
        let m = packet_msg(78, &full);
        // Cut inside the payload, as recvmmsg leaves a message longer than its slot.
        let cut = &m[..m.len() - 150];
        assert!(
            parse_packet(cut).is_none(),
            "without MSG_TRUNC a short message is junk"
        );
        let p = parse(cut, true).unwrap();
        assert_eq!(p.id, 78);
        assert_eq!(p.payload, &full[..p.payload.len()]);
        assert_eq!(p.payload.len(), 200 - 150);
        // Cut right after the packet header: the id, no payload.
        let p = parse(&m[..HDR + NFGEN + 12], true).unwrap();
        assert_eq!((p.id, p.payload.len()), (78, 0));
        // Whole, MSG_TRUNC or not: the same packet.
        let p = parse(&m, true).unwrap();
        assert_eq!((p.id, p.payload), (78, &full[..]));
    }

    #[test]
    fn a_slot_holds_the_copy_range_and_the_metadata() {
        // The compile-time check, spelled out: a packet copied in full fits a slot.
        let m = packet_msg(1, &[0u8; COPY_RANGE as usize]);
        assert!(m.len() + META_MAX - (HDR + NFGEN + 12) <= SLOT);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5_000))]
        #[test]
        fn hostile_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            cut in any::<bool>(),
        ) {
            if let Some(p) = parse(&bytes, cut) {
                // The payload is a part of what was given.
                let range = bytes.as_ptr_range();
                prop_assert!(p.payload.is_empty() || (range.contains(&p.payload.as_ptr())
                    && p.payload.as_ptr_range().end <= range.end));
            }
        }

        #[test]
        fn mutated_messages_never_panic(idx in 0usize..60, val in any::<u8>(), cut in 0usize..60) {
            let mut m = packet_msg(5, &[0x45; 24]);
            if idx < m.len() { m[idx] = val; }
            m.truncate(cut);
            let _ = parse_packet(&m);
            let _ = parse(&m, true);
        }
    }
}
