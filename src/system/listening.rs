//! Which ports have a listening socket now, from /proc/net. The kernel itself skips such
//! ports at packet time (the include's `socket` rule); the daemon marks them served, so
//! that they stay no trap while their service restarts, and tells the administrator.

use crate::core::ports::PortSet;
use crate::core::probe::Proto;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// TCP_LISTEN in /proc/net/tcp*; for UDP every bound socket counts (TCP_CLOSE, 07).
const TCP_LISTEN: &str = "0A";
const UDP_BOUND: &str = "07";

/// A local address as /proc/net prints it: the kernel's in-memory words in hex (each
/// 32-bit word in the host's byte order).
fn proc_addr(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_ne_bytes())
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

/// Whether only this host can reach a socket bound there.
fn loopback(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => a.is_loopback(),
        IpAddr::V6(a) => a.is_loopback() || a.to_ipv4_mapped().is_some_and(|m| m.is_loopback()),
    }
}

/// Parses the text of /proc/net/{tcp,tcp6,udp,udp6}: local ports of sockets in the given
/// state that other hosts can reach (a socket bound to loopback serves no probe).
/// Malformed lines are skipped.
pub fn parse_proc_net(text: &str, state: &str) -> Vec<u16> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let local = f.nth(1)?;
            let st = f.nth(1)?;
            if st != state {
                return None;
            }
            let (addr, port) = local.rsplit_once(':')?;
            if proc_addr(addr).is_none_or(loopback) {
                return None;
            }
            u16::from_str_radix(port, 16).ok()
        })
        .collect()
}

/// Ports with a listener other hosts can reach, in this network namespace.
pub fn listening(proto: Proto) -> PortSet {
    let (files, state) = match proto {
        Proto::Tcp => (["/proc/net/tcp", "/proc/net/tcp6"], TCP_LISTEN),
        Proto::Udp => (["/proc/net/udp", "/proc/net/udp6"], UDP_BOUND),
    };
    let mut set = PortSet::new();
    for f in files {
        if let Ok(text) = std::fs::read_to_string(f) {
            for p in parse_proc_net(&text, state) {
                if p != 0 {
                    set.insert(p);
                }
            }
        }
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listeners_other_hosts_can_reach() {
        // 0.0.0.0:22 and 192.0.2.1:80 serve; 127.0.0.1:8080 serves nobody outside; an
        // established connection is no listener.
        let ours = u32::from_ne_bytes([192, 0, 2, 1]);
        let lo = u32::from_ne_bytes([127, 0, 0, 1]);
        let text = format!("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: {ours:08X}:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: {lo:08X}:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   3: {ours:08X}:A1B2 {lo:08X}:0016 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
garbage
");
        assert_eq!(parse_proc_net(&text, TCP_LISTEN), vec![22, 80]);
    }

    #[test]
    fn ipv6_loopback_and_mapped_loopback_are_not_reachable() {
        let hex = |a: Ipv6Addr| {
            a.octets()
                .chunks(4)
                .map(|w| format!("{:08X}", u32::from_ne_bytes(w.try_into().unwrap())))
                .collect::<String>()
        };
        for (addr, reachable) in [
            ("::", true),
            ("2001:db8::1", true),
            ("::1", false),
            ("::ffff:127.0.0.1", false),
        ] {
            let a: Ipv6Addr = addr.parse().unwrap();
            assert_eq!(proc_addr(&hex(a)), Some(IpAddr::V6(a)), "{addr}");
            let line = format!(
                "h\n 0: {}:0035 {}:0000 07 x\n",
                hex(a),
                hex(Ipv6Addr::UNSPECIFIED)
            );
            let want: Vec<u16> = if reachable { vec![53] } else { vec![] };
            assert_eq!(parse_proc_net(&line, UDP_BOUND), want, "{addr}");
        }
    }
}
