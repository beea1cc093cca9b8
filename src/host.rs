//! The host's own addresses, which must never be blocked.

use std::net::IpAddr;

/// Every address configured on an interface of this network namespace.
pub fn local_addresses() -> std::io::Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we walk read-only and free with freeifaddrs.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut cur = head;
        while !cur.is_null() {
            let sa = (*cur).ifa_addr;
            if !sa.is_null() {
                match i32::from((*sa).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(sa as *const libc::sockaddr_in);
                        out.push(IpAddr::from(
                            u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                        ));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(sa as *const libc::sockaddr_in6);
                        out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(head);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Default gateways (IPv4 and IPv6): a spoofed scan "from the router" must not cut the
/// host off.
pub fn default_gateways() -> Vec<IpAddr> {
    let mut out = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/proc/net/route") {
        out.extend(parse_route_v4(&t));
    }
    if let Ok(t) = std::fs::read_to_string("/proc/net/ipv6_route") {
        out.extend(parse_route_v6(&t));
    }
    out
}

/// /proc/net/route: Iface Destination Gateway … in host-order hex.
pub fn parse_route_v4(text: &str) -> Vec<IpAddr> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 3 || f[1] != "00000000" {
                return None;
            }
            let gw = u32::from_str_radix(f[2], 16).ok().filter(|g| *g != 0)?;
            Some(IpAddr::from(gw.to_le_bytes()))
        })
        .collect()
}

/// /proc/net/ipv6_route: dest, dest prefix, src, src prefix, next hop, … as hex.
pub fn parse_route_v6(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 5 || f[0] != "00000000000000000000000000000000" || f[1] != "00" {
                return None;
            }
            let hop = u128::from_str_radix(f[4], 16).ok().filter(|h| *h != 0)?;
            Some(IpAddr::from(hop.to_be_bytes()))
        })
        .collect()
}

/// The resolvers in /etc/resolv.conf.
pub fn resolvers() -> Vec<IpAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .map(|t| parse_resolv_conf(&t))
        .unwrap_or_default()
}

pub fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().split('%').next()?.parse().ok())
        .collect()
}

/// The name a reverse lookup gives, if any (RESOLVE_HOST). Blocking; used off the
/// packet path only.
pub fn reverse_name(addr: IpAddr) -> Option<String> {
    let (storage, len) = sockaddr(addr);
    let mut host = [0 as libc::c_char; 256];
    // SAFETY: storage holds a valid sockaddr of `len` bytes; host is a buffer we own.
    let rc = unsafe {
        libc::getnameinfo(
            (&storage as *const libc::sockaddr_storage).cast(),
            len,
            host.as_mut_ptr(),
            host.len() as libc::socklen_t,
            std::ptr::null_mut(),
            0,
            libc::NI_NAMEREQD,
        )
    };
    if rc != 0 {
        return None;
    }
    let name = unsafe { std::ffi::CStr::from_ptr(host.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

fn sockaddr(addr: IpAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage; we fill the family-specific part.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        IpAddr::V4(a) => {
            let sin = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from(a).to_be();
            std::mem::size_of::<libc::sockaddr_in>()
        }
        IpAddr::V6(a) => {
            let sin6 = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_addr.s6_addr = a.octets();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    #[test]
    fn loopback_is_listed() {
        let addrs = super::local_addresses().unwrap();
        assert!(addrs.iter().any(|a| a.is_loopback()), "{addrs:?}");
    }

    #[test]
    fn gateways_and_resolvers_parse() {
        let v4 = "Iface\tDestination\tGateway \tFlags\n\
                  eth0\t00000000\tFE0200C0\t0003\n\
                  eth0\t000200C0\t00000000\t0001\n";
        assert_eq!(
            super::parse_route_v4(v4),
            vec!["192.0.2.254".parse::<IpAddr>().unwrap()]
        );
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 20010db80000000000000000000000fe 00000400 00000001 00000000 00000003 eth0\n\
                  20010db8000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0\n";
        assert_eq!(
            super::parse_route_v6(v6),
            vec!["2001:db8::fe".parse::<IpAddr>().unwrap()]
        );
        let rc = "# x\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nsearch example\n";
        assert_eq!(super::parse_resolv_conf(rc).len(), 2);
    }

    #[test]
    fn localhost_resolves_by_hosts_file() {
        let name = super::reverse_name("127.0.0.1".parse().unwrap());
        assert!(name.is_some_and(|n| n.contains("localhost")));
    }
}
