//! Addresses that are never acted on: the configured ignore list, the portsentry.ignore file,
//! and the host's own addresses.

use ipnet::IpNet;
use std::net::IpAddr;
use std::path::Path;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("{path}:{line}: {message}: '{text}'")]
pub struct IgnoreFileError {
    pub path: String,
    pub line: usize,
    pub text: String,
    pub message: String,
}

/// A list of networks. Membership is checked on every probe, so it is kept as per-family
/// (network, mask) pairs: one AND and one compare per entry, which beats a trie for the
/// handful of entries real ignore lists have.
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

    pub fn extend(&mut self, nets: impl IntoIterator<Item = IpNet>) {
        for n in nets {
            let n = n.trunc();
            if !self.nets.contains(&n) {
                self.nets.push(n);
                match n {
                    IpNet::V4(n) => self
                        .v4
                        .push((u32::from(n.network()), u32::from(n.netmask()))),
                    IpNet::V6(n) => self
                        .v6
                        .push((u128::from(n.network()), u128::from(n.netmask()))),
                }
            }
        }
    }

    #[inline]
    pub fn contains(&self, addr: IpAddr) -> bool {
        match canonical(addr) {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4.iter().any(|(net, mask)| a & mask == *net)
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6.iter().any(|(net, mask)| a & mask == *net)
            }
        }
    }

    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }
}

/// Addresses that must never be blocked whatever the configuration says: a block on them
/// would cut the host off from itself.
pub fn always_protected() -> Vec<IpNet> {
    ["127.0.0.0/8", "::1/128", "0.0.0.0/32", "::/128"]
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

/// Parses one entry: an address, or address/bits.
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    if s.contains('/') {
        s.parse::<IpNet>()
            .map_err(|_| "not an address/prefix-length".to_string())
    } else {
        s.parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| "not an IP address".to_string())
    }
}

/// Parses the portsentry.ignore format: one address or address/bits per line, `#` comments
/// (whole-line or trailing) and blank lines skipped.
pub fn parse_ignore_file(path: &str, text: &str) -> Result<Vec<IpNet>, IgnoreFileError> {
    let mut nets = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let net = parse_net(line).map_err(|message| IgnoreFileError {
            path: path.to_string(),
            line: i + 1,
            text: line.to_string(),
            message,
        })?;
        nets.push(net);
    }
    Ok(nets)
}

pub fn read_ignore_file(path: &Path) -> Result<Vec<IpNet>, IgnoreFileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| IgnoreFileError {
        path: shown.clone(),
        line: 0,
        text: String::new(),
        message: e.to_string(),
    })?;
    parse_ignore_file(&shown, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stock_ignore_file_parses() {
        let nets = parse_ignore_file(
            "x",
            "# comment\n127.0.0.1/32\n0.0.0.0\n\n10.0.0.0/8 # lan\n",
        )
        .unwrap();
        assert_eq!(nets.len(), 3);
        let list = IgnoreList::new(nets);
        assert!(list.contains("10.9.8.6".parse().unwrap()));
        assert!(list.contains("::ffff:10.1.1.1".parse().unwrap()));
        assert!(!list.contains("192.0.2.2".parse().unwrap()));
    }

    #[test]
    fn bad_line_names_its_number() {
        let err = parse_ignore_file("/etc/p.ignore", "127.0.0.1\n10.0.0.300\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert_eq!(
            err.to_string(),
            "/etc/p.ignore:2: not an IP address: '10.0.0.300'"
        );
    }

    #[test]
    fn host_bits_are_truncated() {
        let list = IgnoreList::new([parse_net("192.0.2.77/24").unwrap()]);
        assert_eq!(list.nets()[0].to_string(), "192.0.2.0/24");
    }
}
