//! One netfilter netlink socket: send a transaction, collect the answer to every message.
// Socket options on the mnl socket (setsockopt, poll) are C calls.
#![allow(unsafe_code)]

use super::raw::Tx;
use crate::system::socket;
use netlink_packet_core::{ErrorBuffer, NetlinkBuffer, NLMSG_DONE, NLMSG_ERROR};
use std::io;
use std::num::NonZeroI32;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// One netlink message of a received datagram.
struct Msg<'a> {
    ty: u16,
    seq: u32,
    pid: u32,
    /// The error code of an `NLMSG_ERROR` (0 = an ack).
    error: Option<i32>,
    bytes: &'a [u8],
}

/// Walks the messages of a datagram, decoded by netlink-packet-core; stops at a malformed
/// length.
fn messages(bytes: &[u8]) -> impl Iterator<Item = Msg<'_>> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        // new_checked: a whole header, and a length field within `rest` and >= 16.
        let nl = NetlinkBuffer::new_checked(rest).ok()?;
        let len = nl.length() as usize;
        let ty = nl.message_type();
        let error = if ty == NLMSG_ERROR {
            ErrorBuffer::new_checked(nl.payload())
                .ok()
                .map(|e| e.code().map_or(0, NonZeroI32::get))
        } else {
            None
        };
        let m = Msg {
            ty,
            seq: nl.sequence_number(),
            pid: nl.port_number(),
            error,
            bytes: &rest[..len],
        };
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or_default();
        Some(m)
    })
}

#[derive(Debug)]
pub struct MsgError {
    pub seq: u32,
    pub error: io::Error,
}

pub struct Netlink {
    sock: mnl::Socket,
    portid: u32,
    /// The next sequence number: unique over the socket's life, so an answer that arrives
    /// after its request timed out is never taken for a later request's.
    seq: u32,
    /// One datagram: every read of it is bounds-checked, so plain bytes do.
    buf: Vec<u8>,
    /// Transactions sent so far: each commit walks a whole interval set on recent kernels,
    /// so how many a write takes is what it costs (tests count them).
    transactions: u64,
}

// SAFETY: mnl::Socket is not Send only because it holds a raw pointer to its C struct
// (an fd and its address), which nothing else points into and which no thread-local state
// ties to its thread; Netlink owns it, is moved to one thread and used there only (no
// Sync: never shared).
unsafe impl Send for Netlink {}

impl Netlink {
    pub fn open() -> io::Result<Netlink> {
        let sock = mnl::Socket::new(mnl::Bus::Netfilter)?;
        let fd = sock.as_raw_fd();
        // A transaction of thousands of elements answers with thousands of acks; a small
        // receive buffer would lose them (ENOBUFS).
        socket::set_receive_buffer(fd, 8 << 20);
        // Never wait forever on the kernel.
        socket::set_receive_timeout(fd, Duration::from_secs(5))?;
        let portid = sock.portid();
        Ok(Netlink {
            sock,
            portid,
            seq: 1,
            buf: vec![0u8; nftnl::nft_nlmsg_maxsize() as usize],
            transactions: 0,
        })
    }

    /// A transaction numbered from this socket's next sequence number.
    pub fn tx(&mut self) -> Tx {
        // Start again long before a transaction could wrap around u32 (answers to
        // messages two billion numbers ago are long gone).
        if self.seq > u32::MAX / 2 {
            self.seq = 1;
        }
        Tx::new(self.seq)
    }

    /// Takes the next sequence number for a request outside a transaction.
    pub fn next_seq(&mut self) -> u32 {
        if self.seq > u32::MAX / 2 {
            self.seq = 1;
        }
        let s = self.seq;
        self.seq += 1;
        s
    }

    /// Sends the transaction and waits for the answer to each message. `Ok(errors)`: the
    /// transaction was answered; if `errors` is empty it was committed, otherwise the kernel
    /// aborted all of it.
    pub fn transact(&mut self, tx: Tx) -> io::Result<Vec<MsgError>> {
        let (bytes, seqs, next) = tx.finish();
        // Numbers used by this transaction are never handed out again.
        self.seq = self.seq.max(next);
        self.transactions += 1;
        self.sock.send(&bytes)?;
        self.collect(seqs)
    }

    pub fn transactions(&self) -> u64 {
        self.transactions
    }

    /// Sends one request message (e.g. a GET) and returns its error, if any.
    pub fn request(&mut self, msg: &[u8], seq: u32) -> io::Result<Option<io::Error>> {
        self.sock.send(msg)?;
        let mut errors = self.collect(seq..seq.wrapping_add(1))?;
        Ok(errors.pop().map(|e| e.error))
    }

    /// Sends a dump request and returns every message of the answer (headers included).
    pub fn dump(&mut self, msg: &[u8], seq: u32) -> io::Result<Vec<Vec<u8>>> {
        self.sock.send(msg)?;
        let mut out = Vec::new();
        loop {
            let n = self.recv()?;
            for m in messages(self.received(n)).filter(|m| m.seq == seq && m.pid == self.portid) {
                match (m.ty, m.error) {
                    (NLMSG_DONE, _) | (NLMSG_ERROR, Some(0)) => return Ok(out),
                    (NLMSG_ERROR, Some(code)) => return Err(io::Error::from_raw_os_error(-code)),
                    _ => out.push(m.bytes.to_vec()),
                }
            }
        }
    }

    fn collect(&mut self, seqs: Range<u32>) -> io::Result<Vec<MsgError>> {
        let mut pending: Vec<bool> = vec![true; seqs.len()];
        let mut left = seqs.len();
        let mut errors = Vec::new();
        while left > 0 {
            let n = self.recv()?;
            for m in messages(self.received(n)) {
                if m.pid != self.portid || !seqs.contains(&m.seq) {
                    continue;
                }
                let done = match (m.ty, m.error) {
                    (NLMSG_ERROR, Some(code)) => {
                        if code != 0 {
                            errors.push(MsgError {
                                seq: m.seq,
                                error: io::Error::from_raw_os_error(-code),
                            });
                        }
                        true
                    }
                    (NLMSG_DONE, _) => true,
                    _ => false, // data for a GET; its ack follows
                };
                let idx = (m.seq - seqs.start) as usize;
                if done && pending[idx] {
                    pending[idx] = false;
                    left -= 1;
                }
            }
            // After an error the kernel answers every message it processed; a message it
            // never reached would otherwise keep us waiting until the socket timeout.
            if !errors.is_empty() && left > 0 && !self.more_waiting() {
                break;
            }
        }
        Ok(errors)
    }

    /// Receives one datagram into the buffer; returns its length.
    fn recv(&mut self) -> io::Result<usize> {
        self.sock.recv_raw(&mut self.buf)
    }

    fn received(&self, n: usize) -> &[u8] {
        &self.buf[..n.min(self.buf.len())]
    }

    fn more_waiting(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, ours and alive for the call, as the count says.
        unsafe { libc::poll(&mut pfd, 1, Duration::from_millis(50).as_millis() as i32) > 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn msg(ty: u16, seq: u32, pid: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&(16 + payload.len() as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&pid.to_ne_bytes());
        m.extend_from_slice(payload);
        m.resize(m.len().next_multiple_of(4), 0);
        m
    }

    fn error(code: i32) -> Vec<u8> {
        let mut p = code.to_ne_bytes().to_vec();
        p.extend_from_slice(&[0; 16]); // the request's header
        p
    }

    #[test]
    fn a_datagram_of_acks_errors_data_and_done_reads_back() {
        let mut d = msg(NLMSG_ERROR, 7, 42, &error(0));
        d.extend(msg(NLMSG_ERROR, 8, 42, &error(-libc::ENOENT)));
        d.extend(msg(0x0a06, 9, 42, &[1, 2, 3])); // data, padded to 4
        d.extend(msg(NLMSG_DONE, 9, 42, &[0; 4]));
        let got: Vec<(u16, u32, u32, Option<i32>, usize)> = messages(&d)
            .map(|m| (m.ty, m.seq, m.pid, m.error, m.bytes.len()))
            .collect();
        assert_eq!(
            got,
            [
                (NLMSG_ERROR, 7, 42, Some(0), 36),
                (NLMSG_ERROR, 8, 42, Some(-libc::ENOENT), 36),
                (0x0a06, 9, 42, None, 19),
                (NLMSG_DONE, 9, 42, None, 20),
            ]
        );
        // A length past the end, or below a header, ends the walk.
        let mut bad = msg(NLMSG_ERROR, 7, 42, &error(0));
        bad[0] = 200;
        assert_eq!(messages(&bad).count(), 0);
        bad[0] = 8;
        assert_eq!(messages(&bad).count(), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5_000))]
        #[test]
        fn hostile_replies_never_panic_and_stay_in_bounds(
            bytes in proptest::collection::vec(any::<u8>(), 0..300)
        ) {
            let mut seen = 0;
            for m in messages(&bytes) {
                prop_assert!(m.bytes.len() >= 16);
                seen += m.bytes.len();
                prop_assert!(seen <= bytes.len());
            }
        }

        #[test]
        fn mutated_replies_never_panic(idx in 0usize..80, val in any::<u8>(), cut in 0usize..80) {
            let mut d = msg(NLMSG_ERROR, 1, 2, &error(-1));
            d.extend(msg(0x0a06, 3, 2, &[9; 12]));
            if idx < d.len() { d[idx] = val; }
            d.truncate(cut);
            let _ = messages(&d).count();
        }
    }
}
