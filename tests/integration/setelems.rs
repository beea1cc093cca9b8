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

/// Moves this test's thread (and the commands it starts) to a new, empty network
/// namespace, with our table loaded. The namespace goes with the thread.
fn in_a_fresh_namespace_with_our_table() {
    require_root();
    // SAFETY: unshare takes a flag and touches no memory of ours.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
    let table = concat!(env!("CARGO_MANIFEST_DIR"), "/nft/portsentry.nft");
    assert!(Command::new("nft")
        .args(["-f", table])
        .status()
        .unwrap()
        .success());
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn five_thousand_elements_in_one_message_set_land_in_a_real_set() {
    in_a_fresh_namespace_with_our_table();

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

/// Blocks the kernel refuses, or that are gone already, are found by halving: a handful
/// of them among thousands cost a few dozen transactions, not one per block (each commit
/// walks the whole interval set on recent kernels: at a million blocks, one transaction
/// per block stalled the block writer for minutes).
#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn refused_and_absent_blocks_cost_a_few_transactions_not_one_each() {
    use portsentry::core::block::{Block, Set};
    use portsentry::firewall::nft::Nft;
    use portsentry::firewall::Firewall;
    use std::net::Ipv6Addr;
    use std::time::Duration;
    in_a_fresh_namespace_with_our_table();
    let mut fw = Nft::open().unwrap();
    let block = |net: ipnet::IpNet| Block {
        net,
        timeout: Some(Duration::from_secs(3600)),
        set: Set::Local,
    };
    let v6 = |i: u32| -> ipnet::IpNet {
        let a = Ipv6Addr::from((0x2001_0db8_0100_0000_u128 + u128::from(i)) << 64);
        ipnet::IpNet::new(IpAddr::V6(a), 64).unwrap()
    };

    // 2,000 IPv4 addresses with two /24s among them (blocked4 takes single addresses only).
    let mut blocks: Vec<Block> = (0..2_000u32)
        .map(|i| block(IpAddr::V4(Ipv4Addr::from(0xC612_0000 + i)).into()))
        .collect();
    blocks[700] = block("198.19.1.0/24".parse().unwrap());
    blocks[1_500] = block("198.19.2.0/24".parse().unwrap());
    let t0 = fw.transactions();
    let report = fw.add_blocks(&blocks);
    assert_eq!(report.written, 1_998);
    let failed: Vec<String> = report.failed.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(failed, ["198.19.1.0/24", "198.19.2.0/24"]);
    let adds = fw.transactions() - t0;
    assert!(
        adds <= 40,
        "{adds} transactions for 2,000 blocks, 2 refused"
    );

    // 3,000 IPv6 networks written, then removed with 3 that were never there among them.
    let nets: Vec<ipnet::IpNet> = (0..3_000).map(v6).collect();
    let report = fw.add_blocks(&nets.iter().map(|n| block(*n)).collect::<Vec<_>>());
    assert_eq!((report.written, report.failed.len()), (3_000, 0));
    let mut gone = nets.clone();
    for (at, i) in [(10, 5_000), (1_200, 5_001), (2_999, 5_002)] {
        gone.insert(at, v6(i));
    }
    let t0 = fw.transactions();
    fw.remove_blocks(Set::Local, &gone).unwrap();
    let removes = fw.transactions() - t0;
    // About 2·3·log2(2,000) + 2: one per block would be 3,003.
    assert!(
        removes <= 80,
        "{removes} transactions for 3,003 blocks, 3 absent"
    );
    let out = Command::new("nft")
        .args(["list", "set", "inet", "portsentry", "blocked6"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("2001:db8:100"),
        "left in the kernel:\n{text}"
    );
}
