//! Integration tests. Namespace tests: real hosts (network namespaces), real nft, real NFQUEUE, real nmap.
//! They need root; they run in CI.

mod clients;
mod detection;
mod docs;
mod fleet;
mod forgery;
mod hygiene;
mod lab;
mod layout;
mod migration;
mod protocols;
mod reliability;
mod scans;
mod setelems;
mod trust;
mod world;

use lab::*;

/// Watched in the default (advanced) mode: every port below 1024 but 113 and 139, and
/// but the ports a service listens on.
fn watched_by_default(port: u16, served: &[u16]) -> bool {
    port < 1024 && port != 113 && port != 139 && !served.contains(&port)
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn syn_scan_is_dropped_and_blocked_and_ignored_host_is_served() {
    let mut lab = Lab::new();
    let target = lab.host("target", 1);
    let scanner = lab.host("scanner", 2);
    let friend = lab.host("friend", 3);
    lab.serve(&target, 80);
    let d = Daemon::start(
        &lab,
        &target,
        "[ignore]\naddresses = [\"127.0.0.0/8\", \"::1/128\", \"192.0.2.3\"]\n",
    );

    // The ignored host probes a watched port: the kernel's own answer (refused), no block.
    assert_eq!(friend.tcp_connect(TARGET4, 111), "refused");

    let out = nmap(&scanner, &["-sS", "-p", "1-1023"], TARGET4);
    for (port, state) in nmap_ports(&out) {
        assert!(
            !watched_by_default(port, &[80]) || state == "filtered",
            "watched port {port} showed as {state}:\n{out}"
        );
    }
    let set = target.nft_set("blocked4");
    assert!(
        set.contains("192.0.2.2 timeout 1h"),
        "scanner not blocked with timeout:\n{set}"
    );
    assert!(!set.contains("192.0.2.3"), "ignored host blocked:\n{set}");

    // Everything from the scanner is dropped now, even the open service.
    assert_eq!(scanner.tcp_connect(TARGET4, 80), "timeout");
    // The ignored host still gets its service.
    assert_eq!(friend.fetch(TARGET4, 80).trim(), "hello");

    assert!(
        d.wait_log("attackalert: TCP SYN/Normal scan from host: 192.0.2.2/192.0.2.2 to TCP port: ")
    );
    assert!(d
        .log_text()
        .contains("has been blocked via nftables set: \"inet portsentry blocked4\""));
    let history = std::fs::read_to_string(lab.dir.join("portsentry.history")).unwrap();
    // 1.2's format, which fail2ban's stock filter reads: `<epoch> - MM/DD/YYYY HH:MM:SS
    // Host: ip/ip Port: N TCP Blocked`.
    let line = history.lines().next().unwrap_or_default();
    let (epoch, rest) = line.split_once(" - ").expect("history line");
    assert!(epoch.parse::<u64>().is_ok(), "{line}");
    assert!(
        rest.contains(" Host: 192.0.2.2/192.0.2.2 Port: ") && rest.ends_with(" TCP Blocked"),
        "{line}"
    );
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn ipv6_scan_is_blocked_in_blocked6() {
    let mut lab = Lab::new();
    let target = lab.host("target", 1);
    let scanner = lab.host("scanner", 2);
    let _d = Daemon::start(&lab, &target, "");
    let out = nmap(&scanner, &["-6", "-sS", "-p", "1-200"], TARGET6);
    assert!(
        nmap_ports(&out)
            .iter()
            .all(|(p, s)| !watched_by_default(*p, &[]) || s == "filtered"),
        "{out}"
    );
    let set = target.nft_set("blocked6");
    assert!(set.contains("2001:db8::2 timeout 1h"), "{set}");
    assert!(!target.nft_set("blocked4").contains("192.0.2.2"));
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn include_loads_twice_keeping_elements_and_rules_single() {
    let mut lab = Lab::new();
    let host = lab.host("host", 1);
    let inc = nft_include();
    let inc = inc.to_str().unwrap();
    host.ok(&["nft", "-f", inc]);
    host.ok(&[
        "nft",
        "add",
        "element",
        "inet",
        "portsentry",
        "blocked4",
        "{ 192.0.2.99 timeout 1h }",
    ]);
    host.ok(&["nft", "-f", inc]);
    assert!(host.nft_set("blocked4").contains("192.0.2.99"));
    let rules = host.ok(&["nft", "list", "chain", "inet", "portsentry", "prerouting"]);
    assert_eq!(
        rules.matches("@blocked4 goto blocked_early").count(),
        1,
        "{rules}"
    );
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn stopped_daemon_fails_open_and_clean_stop_removes_steering() {
    let mut lab = Lab::new();
    let target = lab.host("target", 1);
    let client = lab.host("client", 2);
    // `ports` mode on one port so the client is not blocked by its own probe below.
    let mut d = Daemon::start(
        &lab,
        &target,
        "[tcp]\nmode = \"ports\"\nports = \"111\"\n[udp]\nmode = \"off\"\n",
    );
    let steer = target.ok(&["nft", "list", "chain", "inet", "portsentry", "steer"]);
    // One queue per core by default: "queue num 0 bypass", or "queue num 0-1 bypass".
    assert!(
        steer.contains("queue num 0") && steer.contains("bypass"),
        "{steer}"
    );

    // kill -9: the rule stays, but with nobody on the queue `bypass` accepts: the kernel
    // answers normally (refused) instead of blackholing.
    d.stop_with(libc::SIGKILL);
    assert_eq!(client.tcp_connect(TARGET4, 111), "refused");
    assert!(!target.nft_set("blocked4").contains("192.0.2.2"));

    // A clean stop empties the steering chain.
    let mut d = Daemon::start_with(&lab, &target, &d.config.clone());
    assert!(d.stop_with(libc::SIGTERM).success());
    let steer = target.ok(&["nft", "list", "chain", "inet", "portsentry", "steer"]);
    assert!(!steer.contains("queue"), "{steer}");
    assert!(d
        .log_text()
        .contains("adminalert: PortSentry is shutting down"));
}
