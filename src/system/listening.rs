//! Which ports have a listening socket now, from /proc/net. The kernel itself skips such
//! ports at packet time (the include's `socket` rule); this is for telling the administrator.

use crate::core::ports::PortSet;
use crate::core::probe::Proto;

/// TCP_LISTEN in /proc/net/tcp*; for UDP every bound socket counts (TCP_CLOSE, 07).
const TCP_LISTEN: &str = "0A";
const UDP_BOUND: &str = "07";

/// Parses the text of /proc/net/{tcp,tcp6,udp,udp6}: local ports of sockets in the given
/// state. Malformed lines are skipped.
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
            u16::from_str_radix(local.rsplit(':').next()?, 16).ok()
        })
        .collect()
}

/// Ports with a listener in this network namespace.
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
    fn parses_listeners_only() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0100007F:A1B2 0100007F:0016 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
garbage
";
        assert_eq!(parse_proc_net(text, TCP_LISTEN), vec![22, 80]);
    }
}
