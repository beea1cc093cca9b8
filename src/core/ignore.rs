//! Addresses that are never acted on: the configured ignore list, the portsentry.ignore file,
//! and the host's own addresses, gateways and resolvers. Also the one place that decides
//! which network a block covers (`block_key`).

use crate::core::probe::Probe;
use ipnet::{IpNet, Ipv6Net};
use std::net::IpAddr;
use thiserror::Error;

/// One bad line of an ignore file. The line is shown cut short: a hostile file must not
/// be able to write megabytes into the log.
#[derive(Debug, Error, PartialEq, Eq, Clone)]
#[error("{path}:{line}: {message}: '{text}'")]
pub struct IgnoreLineError {
    pub path: String,
    pub line: usize,
    pub text: String,
    pub message: NetError,
}

/// What an ignore file gave: the entries that parsed, and each bad line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IgnoreFile {
    pub nets: Vec<IpNet>,
    pub errors: Vec<IgnoreLineError>,
    /// The file could not be read at all (e.g. it does not exist).
    pub unreadable: Option<String>,
}

/// Bad-line text kept in messages.
const SHOWN_CHARS: usize = 60;

/// A set of networks, kept as merged, sorted ranges per family: membership is a binary
/// search, whatever the size of the list (an ignore file may hold 160,000 entries and is
/// consulted for every probe).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IgnoreList {
    nets: Vec<IpNet>,
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl IgnoreList {
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        let mut list = IgnoreList::default();
        list.extend(nets);
        list
    }

    /// Adds networks; duplicates and overlaps are merged (n log n, not n²).
    pub fn extend(&mut self, nets: impl IntoIterator<Item = IpNet>) {
        self.nets
            .extend(nets.into_iter().map(|n| canonical_net(n).trunc()));
        self.nets.sort_unstable();
        self.nets.dedup();
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for n in &self.nets {
            match n {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
            }
        }
        self.v4 = merge(v4);
        self.v6 = merge(v6);
    }

    #[inline]
    pub fn contains(&self, addr: IpAddr) -> bool {
        match canonical(addr) {
            IpAddr::V4(a) => covers(&self.v4, u32::from(a), u32::from(a)),
            IpAddr::V6(a) => covers(&self.v6, u128::from(a), u128::from(a)),
        }
    }

    /// Whether any address of `net` is in the list.
    pub fn overlaps(&self, net: IpNet) -> bool {
        match canonical_net(net).trunc() {
            IpNet::V4(n) => overlap(&self.v4, n.network().into(), n.broadcast().into()),
            IpNet::V6(n) => overlap(&self.v6, n.network().into(), n.broadcast().into()),
        }
    }

    /// The networks, sorted, without duplicates.
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }
}

fn merge<T: Copy + Ord + num_like::One>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match out.last_mut() {
            Some(last) if a <= last.1.plus_one() => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Whether one merged range holds all of `a..=b`.
fn covers<T: Copy + Ord>(ranges: &[(T, T)], a: T, b: T) -> bool {
    let i = ranges.partition_point(|r| r.1 < a);
    ranges.get(i).is_some_and(|r| r.0 <= a && b <= r.1)
}

/// Whether any merged range meets `a..=b`.
fn overlap<T: Copy + Ord>(ranges: &[(T, T)], a: T, b: T) -> bool {
    let i = ranges.partition_point(|r| r.1 < a);
    ranges.get(i).is_some_and(|r| r.0 <= b)
}

mod num_like {
    /// `x + 1`, saturating: the end of a range that may reach the top of the space.
    pub trait One {
        fn plus_one(self) -> Self;
    }
    impl One for u32 {
        fn plus_one(self) -> u32 {
            self.saturating_add(1)
        }
    }
    impl One for u128 {
        fn plus_one(self) -> u128 {
            self.saturating_add(1)
        }
    }
}

/// Addresses that must never be blocked whatever the configuration says: a block on them
/// would cut the host off from itself, and a source address that is not unicast cannot be
/// a scanner's own (multicast, broadcast, "this network").
pub fn always_protected() -> Vec<IpNet> {
    [
        "127.0.0.0/8",
        "::1/128",
        "0.0.0.0/8",
        "::/128",
        "224.0.0.0/4",
        "255.255.255.255/32",
        "ff00::/8",
    ]
    .iter()
    .map(|s| s.parse().expect("static network"))
    .collect()
}

/// IPv4-mapped IPv6 (`::ffff:192.0.2.1`) is the same host as its IPv4 form.
#[inline]
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => addr,
        },
        v4 => v4,
    }
}

/// `canonical` for networks: `::ffff:192.0.2.0/120` is `192.0.2.0/24`.
pub fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(n) if n.prefix_len() >= 96 => match n.network().to_ipv4_mapped() {
            Some(v4) => IpNet::new(IpAddr::V4(v4), n.prefix_len() - 96).unwrap_or(net),
            None => net,
        },
        other => other,
    }
}

/// The network a block of `addr` covers: the address itself for IPv4, its `/ipv6_prefix`
/// for IPv6 (one subscriber usually holds a whole /64 and can rotate through it), unless
/// that prefix holds a protected address (a scanner on the host's own LAN), then the
/// address alone.
pub fn block_key(addr: IpAddr, ipv6_prefix: u8, protected: &IgnoreList) -> IpNet {
    match canonical(addr) {
        IpAddr::V4(a) => IpNet::from(IpAddr::V4(a)),
        IpAddr::V6(a) => {
            let prefix = Ipv6Net::new(a, ipv6_prefix.min(128))
                .map(|n| n.trunc())
                .unwrap_or_else(|_| Ipv6Net::from(a));
            if prefix.prefix_len() < 128 && protected.overlaps(IpNet::V6(prefix)) {
                IpNet::V6(Ipv6Net::from(a))
            } else {
                IpNet::V6(prefix)
            }
        }
    }
}

/// The key a probe's source is counted and blocked under: `block_key`, but the address
/// alone where a live client shares its IPv6 network (the table marks such probes).
pub fn probe_key(probe: &Probe, ipv6_prefix: u8, protected: &IgnoreList) -> IpNet {
    if probe.client_net {
        IpNet::from(canonical(probe.src))
    } else {
        block_key(probe.src, ipv6_prefix, protected)
    }
}

/// A single address or a network as text: `192.0.2.7`, `2001:db8::/64`.
pub fn net_text(net: IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// Why an entry is not an address or a network.
#[derive(Debug, Error, PartialEq, Eq, Clone, Copy)]
pub enum NetError {
    #[error("not an address/prefix-length")]
    NotNetwork,
    #[error("not an IP address")]
    NotAddress,
}

/// Parses one entry: an address, or address/bits.
pub fn parse_net(s: &str) -> Result<IpNet, NetError> {
    if s.contains('/') {
        s.parse::<IpNet>()
            .map(canonical_net)
            .map_err(|_| NetError::NotNetwork)
    } else {
        s.parse::<IpAddr>()
            .map(|a| IpNet::from(canonical(a)))
            .map_err(|_| NetError::NotAddress)
    }
}

/// Parses the portsentry.ignore format: one address or address/bits per line, `#` comments
/// (whole-line or trailing) and blank lines skipped. A bad line is reported and skipped;
/// the others still apply (dropping the whole file would block trusted hosts).
pub fn parse_ignore_file(path: &str, text: &str) -> IgnoreFile {
    let mut out = IgnoreFile::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        match parse_net(line) {
            Ok(net) => out.nets.push(net),
            Err(message) => out.errors.push(IgnoreLineError {
                path: path.to_string(),
                line: i + 1,
                text: shorten(line),
                message,
            }),
        }
    }
    out
}

/// `text` cut to SHOWN_CHARS characters, control characters escaped.
fn shorten(text: &str) -> String {
    let mut s: String = text
        .chars()
        .take(SHOWN_CHARS)
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    if text.chars().count() > SHOWN_CHARS {
        s.push_str(&format!("… ({} bytes)", text.len()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn list(nets: &[&str]) -> IgnoreList {
        IgnoreList::new(nets.iter().map(|n| n.parse().unwrap()))
    }

    #[test]
    fn stock_ignore_file_parses() {
        let f = parse_ignore_file(
            "x",
            "# comment\n127.0.0.1/32\n0.0.0.0\n\n10.0.0.0/8 # lan\n",
        );
        assert!(f.errors.is_empty());
        assert_eq!(f.nets.len(), 3);
        let list = IgnoreList::new(f.nets);
        assert!(list.contains("10.9.8.6".parse().unwrap()));
        assert!(list.contains("::ffff:10.1.1.1".parse().unwrap()));
        assert!(!list.contains("192.0.2.2".parse().unwrap()));
    }

    #[test]
    fn a_bad_line_is_reported_with_its_number_and_the_rest_applies() {
        let f = parse_ignore_file("/etc/p.ignore", "127.0.0.1\n10.0.0.300\n192.0.2.9\n");
        assert_eq!(f.nets.len(), 2);
        assert_eq!(f.errors.len(), 1);
        assert_eq!(
            f.errors[0].to_string(),
            "/etc/p.ignore:2: not an IP address: '10.0.0.300'"
        );
    }

    #[test]
    fn a_huge_bad_line_is_shown_cut_short() {
        let text = format!("192.0.2.1\n{}\n", "x".repeat(1 << 20));
        let f = parse_ignore_file("p", &text);
        assert_eq!(f.nets.len(), 1);
        let shown = f.errors[0].to_string();
        assert!(shown.len() < 200, "{} bytes", shown.len());
        assert!(shown.contains("(1048576 bytes)"), "{shown}");
    }

    #[test]
    fn host_bits_are_truncated_and_mapped_entries_are_v4() {
        let l = IgnoreList::new([parse_net("192.0.2.77/24").unwrap()]);
        assert_eq!(l.nets()[0].to_string(), "192.0.2.0/24");
        assert_eq!(
            parse_net("::ffff:192.0.2.7").unwrap().to_string(),
            "192.0.2.7/32"
        );
        assert_eq!(
            parse_net("::ffff:192.0.2.0/120").unwrap().to_string(),
            "192.0.2.0/24"
        );
    }

    #[test]
    fn overlap_and_block_keys() {
        let protected = list(&["2001:db8::1/128", "192.0.2.1/32"]);
        assert!(protected.overlaps("2001:db8::/64".parse().unwrap()));
        assert!(!protected.overlaps("2001:db8:1::/64".parse().unwrap()));
        // A remote IPv6 scanner: its /64. One on the host's own LAN: itself.
        assert_eq!(
            block_key("2001:db8:1::7".parse().unwrap(), 64, &protected).to_string(),
            "2001:db8:1::/64"
        );
        assert_eq!(
            block_key("2001:db8::7".parse().unwrap(), 64, &protected).to_string(),
            "2001:db8::7/128"
        );
        assert_eq!(
            block_key("::ffff:198.18.0.1".parse().unwrap(), 64, &protected).to_string(),
            "198.18.0.1/32"
        );
        assert_eq!(
            block_key("2001:db8:1::7".parse().unwrap(), 128, &protected).to_string(),
            "2001:db8:1::7/128"
        );
    }

    #[test]
    fn a_large_list_is_one_sorted_pass() {
        // 160,000 entries (the ignore-file reload that took 7.4 s de-duplicating pairwise).
        let nets: Vec<IpNet> = (0..160_000u32)
            .map(|i| IpNet::from(IpAddr::from((0xC612_0000u32 + i * 2).to_be_bytes())))
            .collect();
        let l = IgnoreList::new(nets);
        assert!(l.contains("198.18.0.2".parse().unwrap()));
        assert!(!l.contains("198.18.0.3".parse().unwrap()));
    }

    proptest! {
        /// The merged ranges answer exactly as a scan of every entry would.
        #[test]
        fn contains_agrees_with_a_linear_scan(
            nets in proptest::collection::vec((any::<u32>(), 16u8..=32), 0..40),
            probes in proptest::collection::vec(any::<u32>(), 50),
        ) {
            let nets: Vec<IpNet> = nets
                .iter()
                .map(|(a, p)| IpNet::new(IpAddr::from(a.to_be_bytes()), *p).unwrap().trunc())
                .collect();
            let l = IgnoreList::new(nets.clone());
            for p in probes.iter().chain(nets.iter().map(|n| match n.addr() {
                IpAddr::V4(a) => u32::from(a),
                _ => 0,
            }).collect::<Vec<_>>().iter()) {
                let a = IpAddr::from(p.to_be_bytes());
                prop_assert_eq!(l.contains(a), nets.iter().any(|n| n.contains(&a)));
            }
        }
    }
}
