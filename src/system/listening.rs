//! Which ports have a listening socket now, from /proc/net. For TCP and UDP the kernel
//! itself skips such ports at packet time (the include's `socket` rule); the daemon marks
//! them served, so that they stay no trap while their service restarts, and tells the
//! administrator. The `socket` expression finds no SCTP or raw sockets, so for SCTP ports
//! and IP protocols the packet threads ask here (`Served`).

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
    parse_owned(text, state)
        .into_iter()
        .map(|(p, _)| p)
        .collect()
}

/// `parse_proc_net`, with each socket's owner (uid).
fn parse_owned(text: &str, state: &str) -> Vec<(u16, u32)> {
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
            // tx_queue:rx_queue, tr:tm->when, retrnsmt, then uid.
            let uid = f.nth(3)?.parse().ok()?;
            Some((u16::from_str_radix(port, 16).ok()?, uid))
        })
        .collect()
}

/// The TCP or UDP ports of the host's services: listeners other hosts can reach, below
/// 1024 (only root binds those) or owned by root. A local user's socket on a higher port
/// is no service of the host's: it must not disarm a trap past its own lifetime.
pub fn services(proto: Proto) -> PortSet {
    let (files, state) = match proto {
        Proto::Tcp => (["/proc/net/tcp", "/proc/net/tcp6"], TCP_LISTEN),
        Proto::Udp => (["/proc/net/udp", "/proc/net/udp6"], UDP_BOUND),
        Proto::Sctp | Proto::Ip => return PortSet::new(),
    };
    let mut set = PortSet::new();
    for f in files {
        if let Ok(text) = std::fs::read_to_string(f) {
            for (p, uid) in parse_owned(&text, state) {
                if p != 0 && (p < 1024 || uid == 0) {
                    set.insert(p);
                }
            }
        }
    }
    set
}

/// Parses /proc/net/sctp/eps: the local port (LPORT, decimal) of every SCTP endpoint. Any
/// bound endpoint counts: it may take associations.
pub fn parse_sctp_eps(text: &str) -> Vec<u16> {
    text.lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(5)?.parse().ok())
        .collect()
}

/// IP protocols a tunnel interface of this type (/sys/class/net/*/type, ARPHRD_*) takes.
fn tunnel_protocols(arphrd: u32) -> &'static [u16] {
    match arphrd {
        768 => &[4],        // ipip
        769 => &[4, 41],    // ip6tnl: IPv4 or IPv6 over IPv6
        776 => &[41, 4],    // sit (6in4; also takes ipip)
        778 | 823 => &[47], // gre, ip6gre
        _ => &[],
    }
}

/// Kernel modules that handle an IP protocol (/sys/module/NAME exists once loaded): a host
/// that loaded esp4 terminates IPsec, one that loaded ip_gre has GRE tunnels. Such a
/// handler answers (or drops) what reaches it; the scanner learns nothing from it that a
/// drop by us would hide, and a peer's first packet must not be taken for a probe.
const PROTOCOL_MODULES: &[(&str, u8)] = &[
    ("esp4", 50),
    ("esp6", 50),
    ("ah4", 51),
    ("ah6", 51),
    ("ipcomp", 108),
    ("ipcomp6", 108),
    ("ip_gre", 47),
    ("ip6_gre", 47),
    ("gre", 47),
    ("ipip", 4),
    ("tunnel4", 4),
    ("sit", 41),
    ("tunnel6", 41),
    ("ip6_tunnel", 41),
    ("l2tp_ip", 115),
    ("l2tp_ip6", 115),
    ("dccp_ipv4", 33),
    ("dccp_ipv6", 33),
];

/// Ports with a listener other hosts can reach, in this network namespace; for
/// `Proto::Ip`, IP protocols with a raw socket (the "port" of a raw socket in /proc/net/raw
/// is its protocol).
pub fn listening(proto: Proto) -> PortSet {
    let (files, state) = match proto {
        Proto::Tcp => (["/proc/net/tcp", "/proc/net/tcp6"], TCP_LISTEN),
        Proto::Udp => (["/proc/net/udp", "/proc/net/udp6"], UDP_BOUND),
        Proto::Ip => (["/proc/net/raw", "/proc/net/raw6"], UDP_BOUND),
        Proto::Sctp => {
            let mut set = PortSet::new();
            // No file: the sctp module is not loaded, nothing serves SCTP.
            if let Ok(text) = std::fs::read_to_string("/proc/net/sctp/eps") {
                for p in parse_sctp_eps(&text) {
                    if p != 0 {
                        set.insert(p);
                    }
                }
            }
            return set;
        }
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

/// IP protocols this host serves, beyond TCP, UDP, SCTP, ICMP, ICMPv6 and IGMP (which the
/// ruleset never steers or which have their own checks): those with a raw socket (routing
/// daemons: OSPF, VRRP, PIM), those of its tunnel interfaces (IPIP, 6in4, GRE), those a
/// loaded kernel module handles (IPsec's esp4/ah4 and friends, `PROTOCOL_MODULES`), and
/// the `configured` ones (a handler built into the kernel is not seen).
pub fn served_protocols(configured: &[u8]) -> [bool; 256] {
    let mut out = [false; 256];
    for p in configured {
        out[usize::from(*p)] = true;
    }
    for p in listening(Proto::Ip).iter() {
        if let Some(s) = out.get_mut(usize::from(p)) {
            *s = true;
        }
    }
    // A raw socket bound to protocol 0 does not exist; port 0 in /proc/net/raw is IPPROTO_IP
    // (never delivered): leave it out.
    out[0] = configured.contains(&0);
    for (module, p) in PROTOCOL_MODULES {
        if std::path::Path::new("/sys/module").join(module).exists() {
            out[usize::from(*p)] = true;
        }
    }
    if let Ok(dir) = std::fs::read_dir("/sys/class/net") {
        for e in dir.flatten() {
            let ty = std::fs::read_to_string(e.path().join("type")).unwrap_or_default();
            if let Ok(ty) = ty.trim().parse::<u32>() {
                for p in tunnel_protocols(ty) {
                    out[usize::from(*p)] = true;
                }
            }
        }
    }
    out
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
    fn owners_are_read() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:3039 00000000:0000 0A 00000000:00000000 00:00000000 00000000 65534        0 1 1 0 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
";
        assert_eq!(parse_owned(text, TCP_LISTEN), vec![(12345, 65534), (22, 0)]);
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
                "h\n 0: {}:0035 {}:0000 07 00000000:00000000 00:00000000 00000000 0 0 1\n",
                hex(a),
                hex(Ipv6Addr::UNSPECIFIED)
            );
            let want: Vec<u16> = if reachable { vec![53] } else { vec![] };
            assert_eq!(parse_proc_net(&line, UDP_BOUND), want, "{addr}");
        }
    }

    #[test]
    fn parses_sctp_endpoints() {
        let text = " ENDPT     SOCK   STY SST HBKT LPORT   UID INODE LADDRS
ffff8880054a2000 ffff888004c1b200 2   10  17   5000      0 28115 192.0.2.1
ffff8880054a3000 ffff888004c1c600 1   10  30   36412     0 28120 2001:db8::1
junk
";
        assert_eq!(parse_sctp_eps(text), vec![5000, 36412]);
    }

    #[test]
    fn raw_sockets_name_their_protocol() {
        // A VRRP daemon's raw socket (protocol 112 = 0x70).
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
 112: 00000000:0070 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3 2 0 0
";
        assert_eq!(parse_proc_net(text, UDP_BOUND), vec![112]);
    }
}
