//! Socket options the netlink and queue sockets share: a receive buffer and a receive
//! timeout. Narrow on purpose: each function passes the option's own C type, so no caller
//! can hand the kernel a wrong size.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// Asks for a receive buffer of `bytes`: past the system's limit as root (FORCE), within
/// it otherwise. Best effort; the size the kernel grants is not checked.
pub fn set_receive_buffer(fd: RawFd, bytes: usize) {
    let size = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    if set(fd, libc::SO_RCVBUFFORCE, &size).is_err() {
        let _ = set(fd, libc::SO_RCVBUF, &size);
    }
}

/// A read waits at most `wait` (never forever on the kernel).
pub fn set_receive_timeout(fd: RawFd, wait: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(wait.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(wait.subsec_micros()),
    };
    set(fd, libc::SO_RCVTIMEO, &tv)
}

/// A `SOL_SOCKET` option; private, so only the option types above reach it.
#[allow(unsafe_code)] // setsockopt: no safe wrapper in std
fn set<T>(fd: RawFd, opt: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` is a live T and its size is given; the kernel copies it. The two callers
    // pass the option's own type (c_int for the buffer, timeval for the timeout).
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    /// The timeout lands on a real socket, as std reads it back.
    #[test]
    fn the_receive_timeout_is_set() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        super::set_receive_timeout(sock.as_raw_fd(), Duration::from_millis(1500)).unwrap();
        assert_eq!(
            sock.read_timeout().unwrap(),
            Some(Duration::from_millis(1500))
        );
        super::set_receive_buffer(sock.as_raw_fd(), 1 << 20);
    }
}
