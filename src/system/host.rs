//! The host's own infrastructure, which must never be blocked: its addresses, the gateways
//! of its routes (every table, multipath next hops included), and its resolvers (the
//! upstream ones too when systemd-resolved stands in front). Read over rtnetlink; a
//! `Watch` says when addresses or routes change.

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteVia};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::io;
use std::net::IpAddr;

/// Where resolvers are listed: the system's file, and systemd-resolved's list of the real
/// upstream servers (the first only names its own stub, 127.0.0.53).
pub const RESOLV_FILES: [&str; 2] = ["/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"];

/// What the host depends on, each list sorted and without duplicates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Infrastructure {
    pub addresses: Vec<IpAddr>,
    pub gateways: Vec<IpAddr>,
    pub resolvers: Vec<IpAddr>,
}

impl Infrastructure {
    /// Reads it all now.
    pub fn read() -> io::Result<Infrastructure> {
        let mut nl = Rtnl::open()?;
        let mut i = Infrastructure {
            addresses: nl.addresses()?,
            gateways: [nl.gateways()?, nl.nexthop_gateways()?].concat(),
            resolvers: RESOLV_FILES
                .iter()
                .filter_map(|f| std::fs::read_to_string(f).ok())
                .flat_map(|t| parse_resolv_conf(&t))
                .collect(),
        };
        for v in [&mut i.addresses, &mut i.gateways, &mut i.resolvers] {
            v.sort();
            v.dedup();
        }
        Ok(i)
    }

    pub fn all(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.addresses
            .iter()
            .chain(&self.gateways)
            .chain(&self.resolvers)
            .copied()
    }
}

struct Rtnl {
    sock: Socket,
    seq: u32,
}

impl Rtnl {
    fn open() -> io::Result<Rtnl> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        set_timeout(&sock)?;
        Ok(Rtnl { sock, seq: 0 })
    }

    fn dump(&mut self, msg: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq += 1;
        let mut hdr = NetlinkHeader::default();
        hdr.flags = NLM_F_REQUEST | NLM_F_DUMP;
        hdr.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(hdr, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.sock.send(&buf, 0)?;
        let mut out = Vec::new();
        loop {
            let (bytes, _) = self.sock.recv_from_full()?;
            let mut at = 0;
            while at < bytes.len() {
                let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[at..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = m.header.length as usize;
                if m.header.sequence_number == self.seq {
                    match m.payload {
                        NetlinkPayload::Done(_) => return Ok(out),
                        NetlinkPayload::Error(e) => {
                            return Err(e.code.map_or_else(
                                || io::Error::other("netlink error"),
                                |c| io::Error::from_raw_os_error(-c.get()),
                            ))
                        }
                        NetlinkPayload::InnerMessage(m) => out.push(m),
                        _ => {}
                    }
                }
                if len == 0 {
                    break;
                }
                at += len.next_multiple_of(4);
            }
        }
    }

    fn addresses(&mut self) -> io::Result<Vec<IpAddr>> {
        let msgs = self.dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()))?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => Some(a),
                _ => None,
            })
            .flat_map(address_of)
            .collect())
    }

    fn gateways(&mut self) -> io::Result<Vec<IpAddr>> {
        // A dump without a table filter lists every table (policy routing included).
        let msgs = self.dump(RouteNetlinkMessage::GetRoute(RouteMessage::default()))?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => Some(r),
                _ => None,
            })
            .flat_map(|r| gateways_of(&r.attributes))
            .collect())
    }
}

const RTM_NEWNEXTHOP: u16 = 104;
const RTM_GETNEXTHOP: u16 = 106;
/// `RTNLGRP_NEXTHOP`: nexthop objects' changes.
const RTNLGRP_NEXTHOP: u32 = 32;
const NHA_GATEWAY: u16 = 6;

impl Rtnl {
    /// The gateways of nexthop objects (`ip nexthop`): with `nexthop_compat_mode` off, a
    /// route using one names only its id, so the route dump shows no gateway. netlink-
    /// packet-route has no nexthop messages: the request and the answer are read by hand.
    fn nexthop_gateways(&mut self) -> io::Result<Vec<IpAddr>> {
        self.seq += 1;
        let seq = self.seq;
        let mut req = Vec::with_capacity(24);
        req.extend_from_slice(&24u32.to_ne_bytes());
        req.extend_from_slice(&RTM_GETNEXTHOP.to_ne_bytes());
        req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        req.extend_from_slice(&seq.to_ne_bytes());
        req.extend_from_slice(&0u32.to_ne_bytes());
        req.extend_from_slice(&[0u8; 8]); // struct nhmsg: any family
        self.sock.send(&req, 0)?;
        let mut out = Vec::new();
        loop {
            let (bytes, _) = self.sock.recv_from_full()?;
            let mut at = 0;
            while let Some(h) = bytes.get(at..at + 16) {
                let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
                let ty = u16::from_ne_bytes([h[4], h[5]]);
                let mseq = u32::from_ne_bytes([h[8], h[9], h[10], h[11]]);
                let Some(msg) = bytes.get(at..at + len).filter(|_| len >= 16) else {
                    break;
                };
                if mseq == seq {
                    match ty {
                        3 => return Ok(out), // NLMSG_DONE
                        2 => {
                            // NLMSG_ERROR: a kernel without nexthop objects has none.
                            let code = msg
                                .get(16..20)
                                .map_or(0, |c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
                            return match -code {
                                0 | libc::EINVAL | libc::EOPNOTSUPP => Ok(out),
                                e => Err(io::Error::from_raw_os_error(e)),
                            };
                        }
                        RTM_NEWNEXTHOP => out.extend(nexthop_gateway(msg)),
                        _ => {}
                    }
                }
                at += len.next_multiple_of(4);
            }
        }
    }
}

/// `NHA_GATEWAY` of one `RTM_NEWNEXTHOP` (header, struct nhmsg, attributes).
fn nexthop_gateway(msg: &[u8]) -> Option<IpAddr> {
    let mut at = 24;
    while let Some(h) = msg.get(at..at + 4) {
        let len = usize::from(u16::from_ne_bytes([h[0], h[1]]));
        let ty = u16::from_ne_bytes([h[2], h[3]]) & 0x3fff;
        let payload = msg.get(at + 4..at + len.max(4))?;
        if ty == NHA_GATEWAY {
            return match payload.len() {
                4 => Some(IpAddr::from(<[u8; 4]>::try_from(payload).ok()?)),
                16 => Some(IpAddr::from(<[u8; 16]>::try_from(payload).ok()?)),
                _ => None,
            };
        }
        at += len.max(4).next_multiple_of(4);
    }
    None
}

/// The address of an `RTM_NEWADDR`: `IFA_LOCAL` where present (point-to-point links put the
/// peer in `IFA_ADDRESS`), else `IFA_ADDRESS`.
fn address_of(a: &AddressMessage) -> Option<IpAddr> {
    let local = a.attributes.iter().find_map(|x| match x {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        a.attributes.iter().find_map(|x| match x {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}

/// Every next hop of a route: `RTA_GATEWAY`, `RTA_VIA` (an IPv4 route through an IPv6 next
/// hop), and those of each path of a multipath route.
fn gateways_of(attrs: &[RouteAttribute]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for a in attrs {
        match a {
            RouteAttribute::Gateway(g) => out.extend(route_addr(g)),
            RouteAttribute::Via(RouteVia::Inet(v)) => out.push(IpAddr::V4(*v)),
            RouteAttribute::Via(RouteVia::Inet6(v)) => out.push(IpAddr::V6(*v)),
            RouteAttribute::MultiPath(hops) => {
                for h in hops {
                    out.extend(gateways_of(&h.attributes));
                }
            }
            _ => {}
        }
    }
    out
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
        RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        _ => None,
    }
}

fn set_timeout(sock: &Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // netlink-sys has no receive timeout of its own.
    super::socket::set_receive_timeout(sock.as_raw_fd(), std::time::Duration::from_secs(5))
}

/// Address and route changes, as the kernel announces them.
pub struct Watch {
    sock: Socket,
}

impl Watch {
    pub fn open() -> io::Result<Watch> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        let groups = libc::RTMGRP_IPV4_IFADDR
            | libc::RTMGRP_IPV6_IFADDR
            | libc::RTMGRP_IPV4_ROUTE
            | libc::RTMGRP_IPV6_ROUTE;
        sock.bind(&SocketAddr::new(0, groups as u32))?;
        // Not in the legacy group mask; a kernel without nexthop objects refuses it.
        let _ = sock.add_membership(RTNLGRP_NEXTHOP);
        sock.set_non_blocking(true)?;
        Ok(Watch { sock })
    }

    /// Whether anything was announced since the last call (never waits). A lost
    /// announcement (ENOBUFS: a burst overran the socket) counts as a change.
    pub fn changed(&mut self) -> bool {
        let mut changed = false;
        let mut buf = vec![0u8; 16 * 1024];
        // Bounded: a link flapping faster than we read cannot keep us here.
        for _ in 0..1024 {
            match self.sock.recv(&mut &mut buf[..], 0) {
                Ok(0) => break,
                Ok(_) => changed = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => changed = true,
            }
        }
        changed
    }
}

#[must_use]
pub fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().split('%').next()?.parse().ok())
        .collect()
}

/// The name a reverse lookup gives, if any (`RESOLVE_HOST`). Blocking; used off the
/// packet path only.
#[must_use]
pub fn reverse_name(addr: IpAddr) -> Option<String> {
    let mut host = [0u8; 256];
    let rc = match addr {
        IpAddr::V4(a) => name_info(
            &libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from(a).to_be(),
                },
                sin_zero: [0; 8],
            },
            &mut host,
        ),
        IpAddr::V6(a) => name_info(
            &libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.octets(),
                },
                sin6_scope_id: 0,
            },
            &mut host,
        ),
    };
    if rc != 0 {
        return None;
    }
    let name = std::ffi::CStr::from_bytes_until_nul(&host).ok()?;
    Some(name.to_string_lossy().into_owned())
}

/// getnameinfo(3) for a `sockaddr_in` or `sockaddr_in6` (`T`), name into `host`.
fn name_info<T>(sa: &T, host: &mut [u8]) -> libc::c_int {
    #[allow(unsafe_code)] // the C resolver (nsswitch, /etc/hosts) has no safe wrapper
    // SAFETY: `sa` is a whole sockaddr_in/_in6 of size_of::<T>() bytes and `host` a buffer
    // of the length given, both alive for the call; getnameinfo writes at most that many
    // bytes, NUL included, and keeps no pointer.
    unsafe {
        libc::getnameinfo(
            (sa as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
            host.as_mut_ptr().cast(),
            host.len() as libc::socklen_t,
            std::ptr::null_mut(),
            0,
            libc::NI_NAMEREQD,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_listed() {
        let i = Infrastructure::read().unwrap();
        assert!(i.addresses.iter().any(|a| a.is_loopback()), "{i:?}");
    }

    #[test]
    fn multipath_and_via_next_hops_are_gateways() {
        use netlink_packet_route::route::RouteNextHop;
        let hop = |a: &str| {
            let mut h = RouteNextHop::default();
            h.attributes = vec![RouteAttribute::Gateway(RouteAddress::from(
                a.parse::<IpAddr>().unwrap(),
            ))];
            h
        };
        let attrs = vec![
            RouteAttribute::Table(100),
            RouteAttribute::MultiPath(vec![hop("192.0.2.253"), hop("192.0.2.254")]),
            RouteAttribute::Via(RouteVia::Inet6("fe80::1".parse().unwrap())),
        ];
        let got: Vec<String> = gateways_of(&attrs).iter().map(|a| a.to_string()).collect();
        assert_eq!(got, ["192.0.2.253", "192.0.2.254", "fe80::1"]);
    }

    #[test]
    fn resolvers_parse() {
        let rc = "# x\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nsearch example\n";
        assert_eq!(parse_resolv_conf(rc).len(), 2);
    }

    #[test]
    fn localhost_resolves_by_hosts_file() {
        let name = reverse_name("127.0.0.1".parse().unwrap());
        assert!(name.is_some_and(|n| n.contains("localhost")));
    }
}
