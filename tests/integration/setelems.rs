//! The netlink writer against a real set: one `SetElems` of any size lands whole, each
//! element once (libnftnl's bounded builder and our 500-a-message split make the messages).

// unshare: no safe wrapper in std.
#![allow(unsafe_code)]

use crate::lab::require_root;
use portsentry::firewall::netlink::Netlink;
use portsentry::firewall::raw::{Elem, SetElems};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn five_thousand_elements_in_one_message_set_land_in_a_real_set() {
    require_root();
    // This test's thread only moves to a new, empty network namespace; so do the commands
    // it starts. It goes with the thread.
    // SAFETY: unshare takes a flag and touches no memory of ours.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
    let table = concat!(env!("CARGO_MANIFEST_DIR"), "/nft/portsentry.nft");
    assert!(Command::new("nft")
        .args(["-f", table])
        .status()
        .unwrap()
        .success());

    // 5,000 addresses of the benchmarking range, with timeouts: ten times what one message
    // held before, and past the ~1,500 that overflowed the unbounded builder's buffer.
    let sent: Vec<Ipv4Addr> = (0..5_000u32)
        .map(|i| Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 1)) + i))
        .collect();
    let elems: Vec<Elem> = sent
        .iter()
        .map(|a| Elem::addr(IpAddr::V4(*a)).with_timeout_ms(Some(3_600_000)))
        .collect();
    let mut nl = Netlink::open().unwrap();
    let mut tx = nl.tx();
    let inet = libc::NFPROTO_INET as u16;
    let msg = SetElems::new(c"portsentry", c"blocked4", inet, &elems).unwrap();
    tx.add_elems(&msg, nftnl::MsgType::Add);
    assert_eq!(tx.len(), 10);
    let errors = nl.transact(tx).unwrap();
    assert!(errors.is_empty(), "{errors:?}");

    let out = Command::new("nft")
        .args(["list", "set", "inet", "portsentry", "blocked4"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let listed: Vec<Ipv4Addr> = text
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter_map(|w| w.parse().ok())
        .collect();
    let listed_set: BTreeSet<Ipv4Addr> = listed.iter().copied().collect();
    assert_eq!(listed.len(), 5_000, "each element once");
    assert_eq!(listed_set, sent.iter().copied().collect::<BTreeSet<_>>());
}
