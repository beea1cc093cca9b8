//! portsentry-bench: the pieces `bench/run` puts together in network namespaces.
//!
//!   pure [--packets N]                       ns per packet for parse + classify + decide
//!   queue-parse [--messages N]               ns per queued-packet message for the queue
//!                                            socket's decoding, and for the same through
//!                                            netlink-packet-core
//!   flood DST PORT --count N --sources K [--first I] [--udp] [--pace-us U] [--times FILE]
//!                                            spoofed probes (198.18.0.0/15 for IPv4,
//!                                            a /64 each in 2001:db8:100::/40 for IPv6), one core, sendmmsg
//!   floor [--queue Q] [--idle-ms MS]         minimal queue consumer: recv + drop verdict
//!   steer [--queue Q] [--queues N]           the daemon's steering rule, to queues Q..Q+N-1
//!   monitor --count N [--timeout-ms MS] [--times FILE] [--routes] [--only A.B]
//!                                            timestamps each address added to a portsentry set
//!                                            (--routes: each IPv4 host route added, which
//!                                            is how PortSentry 1.2's KILL_ROUTE blocks;
//!                                            --only 198.18: addresses whose first bytes are these)
//!
//! Every output line is `key value` so the run script can read it.

use std::collections::HashSet;
use std::io::Write;
use std::net::IpAddr;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = args.first().map(String::as_str).unwrap_or("");
    let rest = &args[1.min(args.len())..];
    match cmd {
        "pure" => pure(rest),
        "queue-parse" => queue_parse(rest),
        "flood" => flood(rest),
        "floor" => floor(rest),
        "monitor" => monitor(rest),
        "steer" => steer(rest),
        _ => {
            eprintln!("usage: portsentry-bench pure|flood|floor|monitor …");
            std::process::exit(2);
        }
    }
}

fn opt<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn flag(args: &[String], name: &str) -> bool {
    args.iter().any(|a| a == name)
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into ts.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The i-th spoofed source: 198.18.0.0/15 (131,072 addresses) for IPv4; for IPv6, a /64
/// of its own (portsentry counts and blocks IPv6 by /64) in 2001:db8:100::/40, host ::1.
fn source(i: u32, v6: bool) -> IpAddr {
    if v6 {
        let net = 0x0100_0000 + (i & 0x00ff_ffff);
        let mut o = [0u8; 16];
        o[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        o[4..8].copy_from_slice(&net.to_be_bytes());
        o[15] = 1;
        IpAddr::from(o)
    } else {
        IpAddr::from((0xC612_0000u32 + (i % 131_072)).to_be_bytes())
    }
}

fn csum(data: &[u8], mut sum: u32) -> u16 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = chunks.remainder() {
        sum += u32::from(*b) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A TCP SYN or UDP probe from `src` to `dst:port`, checksums filled in.
fn probe(src: IpAddr, dst: IpAddr, port: u16, udp: bool, seq: u32, pad: usize) -> Vec<u8> {
    let mut l4: Vec<u8> = if udp {
        let mut u = vec![0u8; 8];
        u[0..2].copy_from_slice(&5353u16.to_be_bytes());
        u[2..4].copy_from_slice(&port.to_be_bytes());
        u[4..6].copy_from_slice(&(8 + pad as u16).to_be_bytes());
        u
    } else {
        let mut t = vec![0u8; 20];
        t[0..2].copy_from_slice(&(40000 + (seq % 20000) as u16).to_be_bytes());
        t[2..4].copy_from_slice(&port.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = 0x02;
        t[14..16].copy_from_slice(&1024u16.to_be_bytes());
        t
    };
    // Payload: a large probe costs more to copy to the queue consumer (bench/copy-range).
    l4.resize(l4.len() + pad, 0);
    let proto = if udp { 17u8 } else { 6 };
    let ck_at = if udp { 6 } else { 16 };
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut pseudo = Vec::with_capacity(12);
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&[0, proto]);
            pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            let pre: u32 = pseudo.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
            let ck = csum(&l4, pre);
            l4[ck_at..ck_at + 2].copy_from_slice(&ck.to_be_bytes());
            let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0];
            ip[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let ck = csum(&ip, 0);
            ip[10..12].copy_from_slice(&ck.to_be_bytes());
            ip.extend_from_slice(&l4);
            ip
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut pre = 0u32;
            for c in s.octets().chunks(2).chain(d.octets().chunks(2)) {
                pre += u32::from(u16::from_be_bytes([c[0], c[1]]));
            }
            pre += l4.len() as u32 + u32::from(proto);
            let ck = csum(&l4, pre);
            l4[ck_at..ck_at + 2].copy_from_slice(&ck.to_be_bytes());
            let mut ip = vec![0x60, 0, 0, 0];
            ip.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            ip.extend_from_slice(&[proto, 64]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            ip.extend_from_slice(&l4);
            ip
        }
        _ => panic!("address families differ"),
    }
}

/// Sends `--count` probes round-robin over `--sources` spoofed addresses, 64 per sendmmsg.
fn flood(args: &[String]) {
    let dst: IpAddr = args[0].parse().expect("destination address");
    let port: u16 = args[1].parse().expect("port");
    let count: u32 = opt(args, "--count", 100_000);
    let sources: u32 = opt(args, "--sources", 65_536).max(1);
    let first: u32 = opt(args, "--first", 0);
    let pace_us: u64 = opt(args, "--pace-us", 0);
    let udp = flag(args, "--udp");
    let pad: usize = opt(args, "--pad", 0);
    let times: Option<String> = args.iter().position(|a| a == "--times").map(|i| args[i + 1].clone());
    let v6 = dst.is_ipv6();
    // Pre-build one packet per source (bounded: sources ≤ count).
    let distinct = sources.min(count);
    let packets: Vec<Vec<u8>> = (0..distinct).map(|i| probe(source(first + i, v6), dst, port, udp, i, pad)).collect();
    // SAFETY: plain socket calls; buffers outlive the sendmmsg calls that use them.
    let fd = unsafe {
        libc::socket(if v6 { libc::AF_INET6 } else { libc::AF_INET }, libc::SOCK_RAW, libc::IPPROTO_RAW)
    };
    assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    let mut sa4: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut sa6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    let (sa, salen) = match dst {
        IpAddr::V4(d) => {
            sa4.sin_family = libc::AF_INET as u16;
            sa4.sin_addr.s_addr = u32::from_ne_bytes(d.octets());
            ((&sa4 as *const libc::sockaddr_in).cast::<libc::c_void>(), std::mem::size_of::<libc::sockaddr_in>())
        }
        IpAddr::V6(d) => {
            sa6.sin6_family = libc::AF_INET6 as u16;
            sa6.sin6_addr.s6_addr = d.octets();
            ((&sa6 as *const libc::sockaddr_in6).cast::<libc::c_void>(), std::mem::size_of::<libc::sockaddr_in6>())
        }
    };
    let mut log: Vec<(IpAddr, u64)> = Vec::new();
    let batch = if pace_us > 0 { 1 } else { 64 };
    let mut iov: Vec<libc::iovec> = vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; batch];
    let mut msgs: Vec<libc::mmsghdr> = (0..batch).map(|_| unsafe { std::mem::zeroed() }).collect();
    let start = Instant::now();
    let mut sent = 0u32;
    while sent < count {
        let n = batch.min((count - sent) as usize);
        for k in 0..n {
            let p = &packets[((sent + k as u32) % distinct) as usize];
            iov[k] = libc::iovec { iov_base: p.as_ptr() as *mut libc::c_void, iov_len: p.len() };
            msgs[k].msg_hdr.msg_iov = &mut iov[k];
            msgs[k].msg_hdr.msg_iovlen = 1;
            msgs[k].msg_hdr.msg_name = sa as *mut libc::c_void;
            msgs[k].msg_hdr.msg_namelen = salen as u32;
        }
        if times.is_some() {
            let t = monotonic_ns();
            for k in 0..n {
                log.push((source(first + (sent + k as u32) % distinct, v6), t));
            }
        }
        let r = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as u32, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOBUFS) {
                std::thread::yield_now();
                continue;
            }
            panic!("sendmmsg: {e}");
        }
        sent += r as u32;
        if pace_us > 0 {
            std::thread::sleep(Duration::from_micros(pace_us));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!("end_ns {}", monotonic_ns());
    println!("sent {sent}");
    println!("seconds {secs:.6}");
    println!("pps {:.0}", f64::from(sent) / secs);
    if let Some(path) = times {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
        for (a, t) in log {
            writeln!(f, "{a} {t}").unwrap();
        }
    }
}

fn cpu_ns_self() -> u64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills ru.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    (us(ru.ru_utime) + us(ru.ru_stime)) * 1000
}

/// The floor: bind the queue, receive, drop, nothing else. Stops after `--idle-ms`
/// without packets (a watchdog thread ends the process; recv blocks).
fn floor(args: &[String]) {
    let num: u16 = opt(args, "--queue", 0);
    let idle_ms: u64 = opt(args, "--idle-ms", 1500);
    let mut q = nfq::Queue::open().expect("queue");
    q.bind(num).expect("bind");
    q.set_copy_range(num, 256).expect("copy range");
    q.set_queue_max_len(num, 4096).expect("max len");
    println!("ready 1");
    std::io::stdout().flush().unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let c2 = count.clone();
    let cpu0 = cpu_ns_self();
    std::thread::spawn(move || {
        let mut last = 0;
        let mut quiet = 0;
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let n = c2.load(std::sync::atomic::Ordering::Relaxed);
            quiet = if n == last && n > 0 { quiet + 100 } else { 0 };
            last = n;
            if quiet >= idle_ms {
                let cpu = cpu_ns_self() - cpu0;
                println!("packets {n}");
                println!("cpu_ns {cpu}");
                println!("cpu_ns_per_packet {:.1}", cpu as f64 / n as f64);
                std::process::exit(0);
            }
        }
    });
    loop {
        if let Ok(mut m) = q.recv() {
            m.set_verdict(nfq::Verdict::Drop);
            let _ = q.verdict(m);
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Installs the steering rule the daemon would (native or compat, chosen the same way),
/// so the floor consumer sees exactly the daemon's traffic.
fn steer(args: &[String]) {
    let q: u16 = opt(args, "--queue", 0);
    let n: u16 = opt(args, "--queues", 1);
    let mut nft = portsentry::firewall::nft::Nft::open().expect("netlink");
    let s = nft.install_steering(None, q, n).expect("steering");
    println!("steering {s:?}");
}

/// Watches nftables events (or, with --routes, route events) and records when each
/// address first appears in a set (or as a host route).
fn monitor(args: &[String]) {
    let want: usize = opt(args, "--count", 1);
    let timeout = Duration::from_millis(opt(args, "--timeout-ms", 10_000));
    let times: Option<String> = args.iter().position(|a| a == "--times").map(|i| args[i + 1].clone());
    let routes = flag(args, "--routes");
    // Only addresses starting with these bytes count (a restore's million others do not).
    let only: Vec<u8> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.split('.').filter_map(|b| b.parse().ok()).collect())
        .unwrap_or_default();
    const NFNLGRP_NFTABLES: libc::c_int = 7;
    const RTNLGRP_IPV4_ROUTE: libc::c_int = 7;
    const NEWSETELEM: u16 = (10 << 8) | 12; // NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWSETELEM
    // SAFETY: netlink socket setup with plain values.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW,
            if routes { libc::NETLINK_ROUTE } else { libc::NETLINK_NETFILTER },
        )
    };
    assert!(fd >= 0);
    unsafe {
        let mut sa: libc::sockaddr_nl = std::mem::zeroed();
        sa.nl_family = libc::AF_NETLINK as u16;
        assert_eq!(libc::bind(fd, (&sa as *const libc::sockaddr_nl).cast(), std::mem::size_of::<libc::sockaddr_nl>() as u32), 0);
        let g = if routes { RTNLGRP_IPV4_ROUTE } else { NFNLGRP_NFTABLES };
        libc::setsockopt(fd, libc::SOL_NETLINK, libc::NETLINK_ADD_MEMBERSHIP, (&g as *const libc::c_int).cast(), 4);
        let size: libc::c_int = 64 << 20;
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, (&size as *const libc::c_int).cast(), 4);
        let tv = libc::timeval { tv_sec: 0, tv_usec: 200_000 };
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, (&tv as *const libc::timeval).cast(), std::mem::size_of::<libc::timeval>() as u32);
    }
    println!("ready 1");
    std::io::stdout().flush().unwrap();
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    let mut log: Vec<(Vec<u8>, u64)> = Vec::new();
    let mut buf = vec![0u32; (1 << 20) / 4];
    let start = Instant::now();
    let (mut first, mut last) = (None, 0u64);
    while seen.len() < want && start.elapsed() < timeout {
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len() * 4, 0) };
        if n <= 0 {
            continue;
        }
        let now = monotonic_ns();
        let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n as usize) };
        let mut at = 0usize;
        while at + 16 <= bytes.len() {
            let len = u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            let ty = u16::from_ne_bytes(bytes[at + 4..at + 6].try_into().unwrap());
            if len < 16 || at + len > bytes.len() {
                break;
            }
            let keys = if routes && ty == libc::RTM_NEWROUTE {
                route_dst(&bytes[at + 16..at + len]).into_iter().collect()
            } else if !routes && ty == NEWSETELEM {
                portsentry::firewall::raw::parse_set_elems(&bytes[at..at + len])
                    .into_iter()
                    .map(|e| e.key)
                    .collect()
            } else {
                Vec::new()
            };
            for key in keys {
                if (key.len() == 4 || key.len() == 16)
                    && key.starts_with(&only)
                    && seen.insert(key.clone())
                {
                    first.get_or_insert(now);
                    last = now;
                    log.push((key, now));
                }
            }
            at += (len + 3) & !3;
        }
    }
    println!("seen {}", seen.len());
    println!("first_ns {}", first.unwrap_or(0));
    println!("last_ns {last}");
    if let Some(path) = times {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
        for (k, t) in log {
            let a = if k.len() == 4 {
                IpAddr::from(<[u8; 4]>::try_from(&k[..]).unwrap())
            } else {
                IpAddr::from(<[u8; 16]>::try_from(&k[..]).unwrap())
            };
            writeln!(f, "{a} {t}").unwrap();
        }
    }
}

/// The destination of an IPv4 host route (`struct rtmsg`, then attributes), from an
/// RTM_NEWROUTE payload.
fn route_dst(p: &[u8]) -> Option<Vec<u8>> {
    const RTA_DST: u16 = 1;
    if p.len() < 12 || p[0] != libc::AF_INET as u8 || p[1] != 32 {
        return None;
    }
    let mut at = 12;
    while at + 4 <= p.len() {
        let len = u16::from_ne_bytes([p[at], p[at + 1]]) as usize;
        let ty = u16::from_ne_bytes([p[at + 2], p[at + 3]]);
        if len < 4 || at + len > p.len() {
            return None;
        }
        if ty == RTA_DST && len == 8 {
            return Some(p[at + 4..at + 8].to_vec());
        }
        at += (len + 3) & !3;
    }
    None
}

/// parse + classify + decide, in process: ns per packet over realistic packets.
fn pure(args: &[String]) {
    use portsentry::core::detector::{Action, Detector, DetectorConfig};
    use portsentry::core::ignore::IgnoreList;
    let n: usize = opt(args, "--packets", 2_000_000);
    let dst4: IpAddr = "192.0.2.1".parse().unwrap();
    let dst6: IpAddr = "2001:db8::1".parse().unwrap();
    // 4096 distinct packets: SYNs and UDP, IPv4 and IPv6, from 4096 sources.
    let packets: Vec<Vec<u8>> = (0..4096u32)
        .map(|i| {
            let v6 = i % 4 == 3;
            probe(source(i, v6), if v6 { dst6 } else { dst4 }, 1 + (i % 1000) as u16, i % 4 == 2, i, 0)
        })
        .collect();
    let cfg = DetectorConfig {
        trigger: 0,
        window: Duration::from_secs(300),
        tcp: Action::Block,
        udp: Action::Block,
        hold: Duration::from_secs(3600),
        max_sources: 131_072,
        score: 0,
        ipv6_prefix: 64,
        spare_clients: true,
    };
    let ignore = IgnoreList::new(portsentry::core::ignore::always_protected());
    let mut d = Detector::new(cfg, ignore);
    // Parsing alone, for the breakdown.
    let tp = Instant::now();
    let mut ok = 0usize;
    for i in 0..n {
        ok += usize::from(portsentry::core::packet::parse(&packets[i % packets.len()]).is_ok());
    }
    let parse_ns = tp.elapsed().as_nanos() as f64 / n as f64;
    assert_eq!(ok, n);
    println!("parse_ns_per_packet {parse_ns:.1}");
    let t0 = Instant::now();
    let mut acted = 0u64;
    for i in 0..n {
        let p = portsentry::core::packet::parse(&packets[i % packets.len()]).expect("valid packet");
        if matches!(d.observe(&p, t0), portsentry::core::detector::Decision::Act { .. }) {
            acted += 1;
        }
    }
    let ns = t0.elapsed().as_nanos() as f64 / n as f64;
    println!("packets {n}");
    println!("acted {acted}");
    println!("ns_per_packet {ns:.1}");
}

/// A PACKET message as the kernel writes one for a probe: header, the attributes before
/// the payload (packet header, in/out interface, hardware address, timestamp, cap len),
/// then the payload.
fn packet_message(id: u32, payload: &[u8]) -> Vec<u8> {
    fn attr(m: &mut Vec<u8>, ty: u16, v: &[u8]) {
        m.extend_from_slice(&(4 + v.len() as u16).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(v);
        m.resize(m.len().next_multiple_of(4), 0);
    }
    let mut m = vec![0u8; 16];
    m[4..6].copy_from_slice(&(3u16 << 8).to_ne_bytes()); // NFNL_SUBSYS_QUEUE, PACKET
    m.extend_from_slice(&[libc::AF_INET as u8, 0, 0, 0]);
    let mut hdr = [0u8; 7];
    hdr[..4].copy_from_slice(&id.to_be_bytes());
    attr(&mut m, 1, &hdr); // NFQA_PACKET_HDR
    attr(&mut m, 4, &2u32.to_be_bytes()); // NFQA_IFINDEX_INDEV
    attr(&mut m, 9, &[0u8; 12]); // NFQA_HWADDR
    attr(&mut m, 8, &[0u8; 16]); // NFQA_TIMESTAMP
    attr(&mut m, 15, &(payload.len() as u32).to_be_bytes()); // NFQA_CAP_LEN
    attr(&mut m, 10, payload); // NFQA_PAYLOAD
    let len = m.len() as u32;
    m[..4].copy_from_slice(&len.to_ne_bytes());
    m
}

/// The same decoding through netlink-packet-core: the alternative the queue socket's
/// header weighs (src/dataplane/nfqueue.rs).
fn crate_walk(bytes: &[u8]) -> Option<(u32, &[u8])> {
    use netlink_packet_core::{NetlinkBuffer, NlasIterator};
    let nl = NetlinkBuffer::new_checked(bytes).ok()?;
    if nl.message_type() != 3 << 8 {
        return None;
    }
    let (mut id, mut payload) = (None, &[][..]);
    for a in NlasIterator::new(nl.payload().get(4..)?) {
        let a = a.ok()?;
        let len = usize::from(a.length());
        let (kind, value) = (a.kind(), &a.into_inner()[4..len]);
        match kind {
            1 if value.len() >= 4 => id = Some(u32::from_be_bytes(value[..4].try_into().ok()?)),
            10 => payload = value,
            _ => {}
        }
    }
    Some((id?, payload))
}

/// ns per message: the queue socket's decoding of PACKET messages, and netlink-packet-core's.
fn queue_parse(args: &[String]) {
    let n: usize = opt(args, "--messages", 20_000_000);
    let dst: IpAddr = "192.0.2.1".parse().unwrap();
    let msgs: Vec<Vec<u8>> = (0..1024u32)
        .map(|i| packet_message(i, &probe(source(i, false), dst, 1 + i as u16, i % 2 == 0, i, 0)))
        .collect();
    type Parse<'a> = &'a dyn Fn(&[u8]) -> Option<(u32, usize)>;
    let time = |f: Parse| {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            let mut sum = 0u64;
            for i in 0..n / 5 {
                let (id, len) = f(std::hint::black_box(&msgs[i % msgs.len()])).expect("parses");
                sum += u64::from(id) + len as u64;
            }
            std::hint::black_box(sum);
            best = best.min(t.elapsed().as_nanos() as f64 / (n / 5) as f64);
        }
        best
    };
    let ours_ns = time(&|m| {
        portsentry::dataplane::nfqueue::parse_packet(m).map(|p| (p.id, p.payload.len()))
    });
    let crate_ns = time(&|m| crate_walk(m).map(|(id, p)| (id, p.len())));
    println!("messages {n}");
    println!("queue_parse_ns_per_message {ours_ns:.2}");
    println!("netlink_packet_core_ns_per_message {crate_ns:.2}");
}
