//! Detection semantics on real hosts: watch modes, services, the host's own traffic,
//! reload, score mode, fragments and IP options.

use crate::lab::*;
use std::time::Duration;

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn ports_mode_watches_only_the_list() {
    let mut lab = Lab::new();
    let target = lab.host("target", 1);
    let client = lab.host("client", 2);
    let _d = Daemon::start(
        &lab,
        &target,
        "[tcp]\nmode = \"ports\"\nports = \"1,11,100-111\"\n",
    );
    // Port 112 is not watched: the kernel answers as usual and nobody is blocked.
    assert_eq!(client.tcp_connect(TARGET4, 112), "refused");
    assert!(!target.nft_set("blocked4").contains("192.0.2.2"));
    assert_eq!(client.tcp_connect(TARGET4, 105), "timeout");
    assert!(target.nft_set("blocked4").contains("192.0.2.2 timeout"));
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn a_service_started_later_on_a_watched_port_gets_its_traffic() {
    let mut lab = Lab::new();
    let target = lab.host("target", 1);
    let client = lab.host("client", 2);
    let d = Daemon::start(&lab, &target, "");
    // 111 is watched (advanced mode) and nothing listens yet; now a service takes it.
    lab.serve(&target, 111);
    for _ in 0..3 {
        assert_eq!(client.fetch(TARGET4, 111).trim(), "hello");
    }
    assert!(
        !target.nft_set("blocked4").contains("192.0.2.2"),
        "{}",
        d.log_text()
    );
    assert!(!d.log_text().contains("attackalert"), "{}", d.log_text());
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn replies_to_the_hosts_own_connections_are_not_scans() {
    let mut lab = Lab::new();
    let target = lab.host("target", 1);
    let peer = lab.host("peer", 2);
    lab.serve(&peer, 2000);
    let udp = peer.spawn(&["socat", "UDP4-RECVFROM:5000,fork", "SYSTEM:echo pong"]);
    lab.keep(udp);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let d = Daemon::start(&lab, &target, "");
    // Outbound from watched low source ports: the replies arrive on those ports.
    let tcp = target.ok(&[
        "socat",
        "-T2",
        "-u",
        "TCP4:192.0.2.2:2000,sourceport=100,connect-timeout=2",
        "-",
    ]);
    assert_eq!(tcp.trim(), "hello");
    let udp = target.ok(&[
        "sh",
        "-c",
        "echo ping | socat -T2 - UDP4:192.0.2.2:5000,sourceport=53",
    ]);
    assert_eq!(udp.trim(), "pong");
    assert!(
        !target.nft_set("blocked4").contains("192.0.2.2"),
        "{}",
        d.log_text()
    );
    assert!(!d.log_text().contains("attackalert"), "{}", d.log_text());
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn sighup_reloads_the_ignore_file_and_keeps_a_good_config_over_a_bad_one() {
    let mut lab = Lab::new();
    let target = lab.host("target", 1);
    let friend = lab.host("friend", 2);
    let scanner = lab.host("scanner", 3);
    let ignore = lab.write("portsentry.ignore", "# nobody yet\n");
    let mut d = Daemon::start(
        &lab,
        &target,
        &format!("[ignore]\nfile = \"{}\"\n", ignore.display()),
    );
    lab.write(
        "portsentry.ignore",
        "# the admin's workstation\n192.0.2.2/32\n",
    );
    d.signal(libc::SIGHUP);
    assert!(d.wait_log("configuration reloaded"), "{}", d.log_text());
    assert!(target
        .ok(&["nft", "list", "set", "inet", "portsentry", "allow4"])
        .contains("192.0.2.2"));
    assert_eq!(friend.tcp_connect(TARGET4, 111), "refused");
    assert!(!target.nft_set("blocked4").contains("192.0.2.2"));

    // A broken config on reload is reported; the daemon keeps protecting.
    let good = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&d.config, format!("{good}\n[tcp]\nmode = \"sometimes\"\n")).unwrap();
    d.signal(libc::SIGHUP);
    assert!(
        d.wait_log("reload failed, keeping the running configuration"),
        "{}",
        d.log_text()
    );
    assert_eq!(scanner.tcp_connect(TARGET4, 111), "timeout");
    assert!(target.nft_set("blocked4").contains("192.0.2.3 timeout"));
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn score_mode_lets_a_stray_probe_pass_and_blocks_a_scan() {
    let mut lab = Lab::new();
    let target = lab.host("target", 1);
    let scanner = lab.host("scanner", 2);
    let _d = Daemon::start(&lab, &target, "[detect]\nscore = 21\n");
    // One port, even probed twice, weighs 3: dropped, not blocked.
    assert_eq!(scanner.tcp_connect(TARGET4, 25), "timeout");
    assert_eq!(scanner.tcp_connect(TARGET4, 25), "timeout");
    assert!(!target.nft_set("blocked4").contains("192.0.2.2"));
    nmap(&scanner, &["-sS", "-p", "1-100"], TARGET4);
    assert!(target.nft_set("blocked4").contains("192.0.2.2 timeout"));
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn fragmented_and_ip_option_probes_are_caught() {
    let mut lab = Lab::new();
    let target = lab.host("target", 1);
    let frag = lab.host("frag", 2);
    let opts = lab.host("opts", 3);
    let d = Daemon::start(&lab, &target, "");
    nmap(&frag, &["-sS", "-f", "-p", "1-50"], TARGET4);
    assert!(target.nft_set("blocked4").contains("192.0.2.2 timeout"));
    nmap(&opts, &["-sS", "--ip-options", "R", "-p", "1-50"], TARGET4);
    assert!(target.nft_set("blocked4").contains("192.0.2.3 timeout"));
    assert!(
        d.wait_log("attackalert: Packet from host: 192.0.2.3/192.0.2.3 to TCP port: "),
        "{}",
        d.log_text()
    );
    assert!(d
        .log_text()
        .contains("has IP options set (detection avoidance technique)."));
}

/// Several queues, one packet thread each: the kernel sends all of one scanner's probes to
/// one queue, so a scan of 1,000 ports is one source reaching the trigger once, not one
/// per thread.
#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn with_four_queues_a_scanner_is_counted_by_one_thread() {
    let mut lab = Lab::new();
    let target = lab.host("target", 1);
    let scanner = lab.host("scanner", 2);
    let other = lab.host("other", 3);
    let d = Daemon::start(
        &lab,
        &target,
        "[queue]\nqueues = 4\n[detect]\ntrigger = 3\n",
    );
    let bound = target.ok(&["cat", "/proc/net/netfilter/nfnetlink_queue"]);
    assert_eq!(bound.lines().count(), 4, "{bound}");
    let steer = target.ok(&["nft", "list", "chain", "inet", "portsentry", "steer"]);
    assert!(steer.contains("queue num 0-3 bypass"), "{steer}");
    assert!(!steer.contains("fanout"), "{steer}");
    nmap(&scanner, &["-sS", "-p", "1-1000"], TARGET4);
    nmap(&other, &["-sS", "-p", "1-1000"], TARGET4);
    assert!(target.becomes_blocked("192.0.2.2") && target.becomes_blocked("192.0.2.3"));
    let log = d.log_text();
    for who in ["192.0.2.2", "192.0.2.3"] {
        let alerts = log
            .lines()
            .filter(|l| l.contains(&format!("SYN/Normal scan from host: {who}/")))
            .count();
        assert_eq!(alerts, 1, "{who}:\n{log}");
    }
    let (ok, status) = d.cli(&target, &["status"]);
    assert!(ok && status.contains("queue:            0-3"), "{status}");
}

/// With several queues, a subscriber rotating through its IPv6 /64 is still one source:
/// every address of the prefix is counted by one packet thread, so the trigger is reached
/// on the trigger-th probe, whichever addresses sent them (the kernel's own balancing
/// hashes the low 32 bits of the address and would spread them over the threads).
#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn with_four_queues_an_ipv6_prefix_rotating_its_addresses_is_counted_once() {
    let mut lab = Lab::new();
    let target = lab.host("target", 1);
    let attacker = lab.host("attacker", 66);
    accept_spoofed(&target);
    let d = Daemon::start(
        &lab,
        &target,
        "[queue]\nqueues = 4\n[detect]\ntrigger = 3\n",
    );
    // Ten subscribers, three probes each, each probe from another address of its /64.
    let mut args = vec![
        "python3".to_string(),
        craft(),
        "syn6".into(),
        TARGET6.into(),
        "111".into(),
    ];
    for net in 1..=10 {
        for host in 1..=3 {
            args.push(format!("2001:db8:ff:{net:x}::{:x}", host * 0x1111));
        }
    }
    attacker.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let all = || {
        let set = target.nft_set("blocked6");
        (1..=10).all(|net| set.contains(&format!("2001:db8:ff:{net:x}::/64")))
    };
    assert!(
        wait_until(Duration::from_secs(5), all),
        "{}\n{}",
        target.nft_set("blocked6"),
        d.log_text()
    );
}

/// With several queues, one IPv4 source probing TCP and UDP is one source: the kernel's
/// balancing hashes the protocol too and would count each on a thread of its own.
#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn with_four_queues_tcp_and_udp_probes_of_one_source_are_counted_together() {
    let mut lab = Lab::new();
    let target = lab.host("target", 1);
    let d = Daemon::start(
        &lab,
        &target,
        "[queue]\nqueues = 4\n[detect]\ntrigger = 2\n",
    );
    // Eight scanners, one TCP and one UDP probe each.
    let mut scanners = Vec::new();
    for last in 2..=9u8 {
        scanners.push(lab.host(&format!("s{last}"), last));
    }
    let probes = format!(
        "import socket\n\
         t = socket.socket(); t.setblocking(False); t.connect_ex(('{TARGET4}', 111))\n\
         socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('{TARGET4}', 161))\n\
         import time; time.sleep(0.2)\n"
    );
    for h in &scanners {
        h.ok(&["python3", "-c", &probes]);
    }
    let all = || scanners.iter().all(|h| target.is_blocked(&h.v4));
    assert!(
        wait_until(Duration::from_secs(5), all),
        "{}\n{}",
        target.nft_set("blocked4"),
        d.log_text()
    );
}

/// The queues are bound at start: a reload that changes `num` or `queues` must not steer
/// probes to queues nobody reads (with `bypass` the kernel would accept them, unseen).
#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn a_reload_changing_the_queues_keeps_steering_to_the_bound_ones() {
    let mut lab = Lab::new();
    let target = lab.host("target", 1);
    let mut d = Daemon::start(&lab, &target, "[queue]\nqueues = 1\n");
    let good = std::fs::read_to_string(&d.config).unwrap();
    for (change, n) in [
        ("queues = 2", 1),
        ("num = 5\nqueues = 2", 2),
        ("queues = 1\nfail_open = true", 3),
    ] {
        std::fs::write(
            &d.config,
            good.replace("[queue]\nqueues = 1\n", &format!("[queue]\n{change}\n")),
        )
        .unwrap();
        d.signal(libc::SIGHUP);
        assert!(
            wait_until(Duration::from_secs(10), || d
                .log_text()
                .matches("configuration reloaded")
                .count()
                == n),
            "{}",
            d.log_text()
        );
        let steer = target.ok(&["nft", "list", "chain", "inet", "portsentry", "steer"]);
        assert!(steer.contains("queue num 0 bypass"), "{change}: {steer}");
        assert_eq!(
            d.log_text()
                .matches("take effect at the next restart")
                .count(),
            n,
            "{change}"
        );
    }
    // Every scanner is still seen.
    let scanners: Vec<Host> = (2..=7u8)
        .map(|last| lab.host(&format!("s{last}"), last))
        .collect();
    for s in &scanners {
        assert_eq!(s.tcp_connect(TARGET4, 111), "timeout", "{}", s.v4);
        assert!(target.becomes_blocked(&s.v4), "{}", s.v4);
    }
}
