//! One netfilter netlink socket: send a transaction, collect the answer to every message.

use super::raw::Tx;
use std::io;
use std::ops::Range;
use std::time::Duration;

/// The error of one message in a transaction, by its position in the batch.
/// One netlink message of a received datagram.
struct Msg<'a> {
    ty: u16,
    seq: u32,
    pid: u32,
    /// The error code of an NLMSG_ERROR (0 = an ack).
    error: Option<i32>,
    bytes: &'a [u8],
}

/// Walks the messages of a datagram; stops at a malformed length.
fn messages(bytes: &[u8]) -> impl Iterator<Item = Msg<'_>> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let hdr = bytes.get(at..at + HDR_LEN)?;
        let len = u32::from_ne_bytes(hdr[0..4].try_into().ok()?) as usize;
        if len < HDR_LEN || at + len > bytes.len() {
            return None;
        }
        let ty = u16::from_ne_bytes(hdr[4..6].try_into().ok()?);
        let error = (ty == NLMSG_ERROR && len >= HDR_LEN + 4)
            .then(|| i32::from_ne_bytes(bytes[at + 16..at + 20].try_into().unwrap()));
        let m = Msg {
            ty,
            seq: u32::from_ne_bytes(hdr[8..12].try_into().ok()?),
            pid: u32::from_ne_bytes(hdr[12..16].try_into().ok()?),
            error,
            bytes: &bytes[at..at + len],
        };
        at += (len + 3) & !3;
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
    /// u32 storage keeps nlmsghdr reads aligned.
    buf: Vec<u32>,
}

// SAFETY: an mnl socket is an fd plus its address; it is moved to one thread and used there
// only, never shared.
unsafe impl Send for Netlink {}

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const HDR_LEN: usize = 16;

impl Netlink {
    pub fn open() -> io::Result<Netlink> {
        let sock = mnl::Socket::new(mnl::Bus::Netfilter)?;
        let fd = unsafe { mnl::mnl_sys::mnl_socket_get_fd(sock.as_raw_socket()) };
        // A transaction of thousands of elements answers with thousands of acks; a small
        // receive buffer would lose them (ENOBUFS). FORCE works as root, plain as fallback.
        let size: libc::c_int = 8 << 20;
        unsafe {
            let p = (&size as *const libc::c_int).cast();
            let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            if libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, p, len) != 0 {
                libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, p, len);
            }
            // Never wait forever on the kernel.
            let tv = libc::timeval {
                tv_sec: 5,
                tv_usec: 0,
            };
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        let portid = sock.portid();
        Ok(Netlink {
            sock,
            portid,
            seq: 1,
            buf: vec![0u32; nftnl::nft_nlmsg_maxsize() as usize / 4 + 1],
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
        self.sock.send(&bytes)?;
        self.collect(seqs)
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

    /// Receives one datagram into the aligned buffer; returns its length.
    fn recv(&mut self) -> io::Result<usize> {
        // SAFETY: the u32 buffer viewed as bytes, same length in bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(self.buf.as_mut_ptr().cast::<u8>(), self.buf.len() * 4)
        };
        self.sock.recv_raw(bytes)
    }

    fn received(&self, n: usize) -> &[u8] {
        // SAFETY: as in `recv`; n is at most the buffer length.
        unsafe {
            std::slice::from_raw_parts(self.buf.as_ptr().cast::<u8>(), n.min(self.buf.len() * 4))
        }
    }

    fn more_waiting(&self) -> bool {
        let fd = unsafe { mnl::mnl_sys::mnl_socket_get_fd(self.sock.as_raw_socket()) };
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        unsafe { libc::poll(&mut pfd, 1, Duration::from_millis(50).as_millis() as i32) > 0 }
    }
}
