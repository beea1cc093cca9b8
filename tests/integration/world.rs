//! What PortSentry users rely on: control commands, persistence, self-healing, legacy
//! actions, history files that fail2ban reads.

use crate::lab::*;
use std::time::Duration;

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn control_commands_work_and_blocks_survive_a_restart() {
    let mut lab = Lab::new();
    let target = lab.host("target", 1);
    let scanner = lab.host("scanner", 2);
    let metrics = lab.dir.join("portsentry.prom");
    let mut d = Daemon::start(
        &lab,
        &target,
        &format!("[metrics]\ntextfile = \"{}\"\n", metrics.display()),
    );
    assert_eq!(scanner.tcp_connect(TARGET4, 111), "timeout");
    assert!(target.becomes_blocked("192.0.2.2"));
    // The Prometheus textfile follows within its 5 s period.
    let prom = || std::fs::read_to_string(&metrics).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(8), || prom()
            .contains("portsentry_blocks_total 1\n")
            && prom().contains("portsentry_blocked 1\n")),
        "{}",
        prom()
    );
    assert!(
        prom().contains("portsentry_probes_total{proto=\"tcp\",type=\"syn\"} 1\n"),
        "{}",
        prom()
    );

    let (ok, list) = d.cli(&target, &["list"]);
    assert!(ok, "{list}");
    let line = list
        .lines()
        .find(|l| l.starts_with("192.0.2.2 "))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(
        line.contains("TCP SYN/Normal scan to TCP port 111") && line.contains("59m"),
        "{line}"
    );

    let (ok, out) = d.cli(&target, &["block", "198.51.100.7", "--timeout", "2h"]);
    assert!(ok, "{out}");
    assert!(target
        .nft_set("blocked4")
        .contains("198.51.100.7 timeout 2h"));
    let (ok, out) = d.cli(&target, &["block", "2001:db8::77", "--timeout", "0"]);
    assert!(ok, "{out}");
    assert!(target.nft_set("blocked6").contains("2001:db8::77"));

    // The host's own address is never blocked, even on request.
    let (ok, out) = d.cli(&target, &["block", "192.0.2.1"]);
    assert!(!ok && out.contains("is protected"), "{out}");

    // Unblock: gone from the set, and the next scan is caught again.
    let (ok, out) = d.cli(&target, &["unblock", "192.0.2.2"]);
    assert!(ok, "{out}");
    assert!(!target.nft_set("blocked4").contains("192.0.2.2 "));
    assert_eq!(scanner.tcp_connect(TARGET4, 112), "timeout");
    assert!(target.becomes_blocked("192.0.2.2"));

    let (ok, status) = d.cli(&target, &["status"]);
    assert!(ok, "{status}");
    assert!(
        status.contains("xt NFQUEUE compat target") && status.contains("unblocks:         1"),
        "{status}"
    );

    // Restart after the sets were lost (a reboot): every unexpired block comes back.
    assert!(d.stop_with(libc::SIGTERM).success());
    target.ok(&["nft", "flush", "set", "inet", "portsentry", "blocked4"]);
    target.ok(&["nft", "flush", "set", "inet", "portsentry", "blocked6"]);
    let d = Daemon::start_with(&lab, &target, &d.config.clone());
    let set4 = target.nft_set("blocked4");
    assert!(
        set4.contains("198.51.100.7 timeout") && set4.contains("192.0.2.2 timeout"),
        "{set4}"
    );
    assert!(target.nft_set("blocked6").contains("2001:db8::77"));
    assert!(
        d.log_text().contains("restored 3 blocks"),
        "{}",
        d.log_text()
    );

    // Without a daemon, the commands say so.
    drop(d);
    let (ok, out) = Daemon::cli_without_daemon(&lab, &target, &["list"]);
    assert!(!ok && out.contains("is it running?"), "{out}");
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn an_nftables_reload_or_flush_is_healed_within_3_seconds() {
    let mut lab = Lab::new();
    let target = lab.host("target", 1);
    let scanner = lab.host("scanner", 2);
    let late = lab.host("late", 3);
    let d = Daemon::start(&lab, &target, "");
    assert_eq!(scanner.tcp_connect(TARGET4, 111), "timeout");
    assert!(target.becomes_blocked("192.0.2.2"));

    // What nftables.service does on reload: flush everything, load the configuration.
    target.ok(&["nft", "flush", "ruleset"]);
    target.ok(&["nft", "-f", nft_include().to_str().unwrap()]);
    let healed = wait_until(Duration::from_secs(3), || {
        target.nft_set("blocked4").contains("192.0.2.2")
            && target
                .ok(&["nft", "list", "chain", "inet", "portsentry", "steer"])
                .contains("queue num 0")
    });
    assert!(healed, "not restored within 3 s:\n{}", d.log_text());
    // (Or, if the check fell between the flush and the load, "re-created".)
    assert!(wait_until(Duration::from_secs(5), || {
        let log = d.log_text();
        log.contains("restored its sets, rules, steering and 1 blocks")
            || log.contains("re-created it with steering and 1 blocks")
    }));

    // The table gone altogether: re-created.
    target.ok(&["nft", "flush", "ruleset"]);
    assert!(
        wait_until(Duration::from_secs(3), || target
            .run(&["nft", "list", "set", "inet", "portsentry", "blocked4"])
            .status
            .success()
            && target.nft_set("blocked4").contains("192.0.2.2")),
        "{}",
        d.log_text()
    );
    assert!(d.wait_log("table inet portsentry had disappeared; re-created it"));
    // And it still protects.
    assert_eq!(late.tcp_connect(TARGET4, 111), "timeout");
    assert!(target.becomes_blocked("192.0.2.3"));
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn legacy_actions_run_without_a_shell_and_history_matches_fail2ban() {
    let mut lab = Lab::new();
    let target = lab.host("target", 1);
    let scanner = lab.host("scanner", 2);
    let udp_scanner = lab.host("udpscan", 3);
    lab.etc_file(
        &target,
        "hosts",
        "127.0.0.1 localhost\n192.0.2.2 evil.example\n",
    );
    let dir = lab.dir.display().to_string();
    let d = Daemon::start(
        &lab,
        &target,
        &format!(
            r#"[block]
tcp = "block"
udp = "command"
run = ["/usr/bin/touch", "{dir}/ran-$TARGET$-$PORT$-$MODE$"]
hosts_deny = "ALL: $TARGET$ : DENY"
hosts_deny_file = "{dir}/hosts.deny"
route = ["/usr/sbin/ip", "route", "add", "blackhole", "$TARGET$"]
[log]
resolve_host = true
"#
        ),
    );
    assert_eq!(scanner.tcp_connect(TARGET4, 111), "timeout");
    assert!(
        d.wait_log("External command run for host: 192.0.2.2"),
        "{}",
        d.log_text()
    );
    let log = d.log_text();
    assert!(
        log.contains(
            "attackalert: TCP SYN/Normal scan from host: evil.example/192.0.2.2 to TCP port: 111"
        ),
        "{log}"
    );
    assert!(log.contains("attackalert: Host 192.0.2.2 has been blocked via wrappers with string: \"ALL: 192.0.2.2 : DENY\""), "{log}");
    assert!(log.contains("has been blocked via dropped route using command: \"/usr/sbin/ip route add blackhole 192.0.2.2\""), "{log}");
    // 1.2's order: hosts.deny, route, command.
    let pos = |s: &str| log.find(s).unwrap();
    assert!(
        pos("via wrappers") < pos("via dropped route")
            && pos("via dropped route") < pos("External command")
    );
    assert!(lab.dir.join("ran-192.0.2.2-111-atcp").exists());
    assert_eq!(
        std::fs::read_to_string(lab.dir.join("hosts.deny")).unwrap(),
        "ALL: 192.0.2.2 : DENY\n"
    );
    assert!(target.ok(&["ip", "route"]).contains("blackhole 192.0.2.2"));

    // UDP is set to "command": the command runs, nothing is blocked.
    udp_scanner.ok(&["sh", "-c", "echo x | socat -u - UDP4:192.0.2.1:161"]);
    assert!(wait_until(Duration::from_secs(5), || lab
        .dir
        .join("ran-192.0.2.3-161-audp")
        .exists()));
    assert!(!target.nft_set("blocked4").contains("192.0.2.3"));

    // The history lines, as fail2ban's stock filter reads them: one for the blocked TCP
    // scanner, and, as 1.2 wrote it, one for the UDP scanner acted on by command only.
    let history = lab.dir.join("portsentry.history");
    let text = std::fs::read_to_string(&history).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].ends_with("Host: evil.example/192.0.2.2 Port: 111 TCP Blocked"),
        "{text}"
    );
    assert!(
        lines[1].ends_with("Host: 192.0.2.3/192.0.2.3 Port: 161 UDP Blocked"),
        "{text}"
    );
    let out = run(&[
        "fail2ban-regex",
        history.to_str().unwrap(),
        "/etc/fail2ban/filter.d/portsentry.conf",
    ]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains("Lines: 2 lines, 0 ignored, 2 matched, 0 missed"),
        "{report}"
    );
}

/// syslog as 1.2 wrote it (ident portsentry with the pid, facility daemon), and a scan of
/// 1000 ports summarised: the first hit is reported and blocked, the rest are not lines.
#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn syslog_gets_1_2_lines_and_a_1000_port_scan_only_a_few() {
    let mut lab = Lab::new();
    let target = lab.host("target", 1);
    let scanner = lab.host("scanner", 2);
    let (d, syslog) = Daemon::start_with_syslog(&lab, &target, "");
    syslog
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let out = nmap(&scanner, &["-sS", "-p", "1-1000"], TARGET4);
    assert!(target.nft_set("blocked4").contains("192.0.2.2"), "{out}");

    let mut lines = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok(n) = syslog.recv(&mut buf) {
        lines.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let all = lines.join("\n");
    // `<PRI>Mmm dd hh:mm:ss portsentry[PID]: MESSAGE`, PRI = facility daemon (3) * 8 +
    // level: notice (5), as 1.2 logged its adminalert and attackalert lines.
    let tag = format!(" portsentry[{}]: ", d.pid());
    let message = |pri: &str, text: &str| {
        lines
            .iter()
            .any(|l| l.starts_with(pri) && l.split_once(&tag).is_some_and(|(_, m)| m == text))
    };
    assert!(
        message(
            "<29>",
            "adminalert: PortSentry is now active and listening."
        ),
        "{all}"
    );
    let alerts: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("<29>") && l.contains(&tag) && l.contains("attackalert: "))
        .collect();
    assert!(
        alerts.iter().any(|l| l.contains(&format!(
            "{tag}attackalert: TCP SYN/Normal scan from host: 192.0.2.2/192.0.2.2 to TCP port: "
        ))),
        "{all}"
    );
    assert!(
        message(
            "<29>",
            "attackalert: Host 192.0.2.2 has been blocked via nftables set: \"inet portsentry blocked4\" timeout: 3600s"
        ),
        "{all}"
    );
    // One report, one block line, and at most a few "already blocked" for the probes that
    // were in flight while the block was written; never one line per port.
    assert!(alerts.len() <= 10, "{} alert lines:\n{all}", alerts.len());
    // The same lines go to stderr (the journal under systemd).
    assert!(d
        .log_text()
        .contains("attackalert: TCP SYN/Normal scan from host: 192.0.2.2/192.0.2.2"));
}

/// Blocking off ("log only"): nothing stops the scanner's 1000 probes reaching the daemon,
/// yet it reports the first, says it ignores the rest, and writes no line per port.
#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn a_1000_port_scan_with_blocking_off_writes_a_few_lines() {
    let mut lab = Lab::new();
    let target = lab.host("target", 1);
    let scanner = lab.host("scanner", 2);
    let d = Daemon::start(&lab, &target, "[block]\ntcp = \"off\"\n");
    let out = nmap(&scanner, &["-sS", "-p", "1-1000"], TARGET4);
    // Every watched port still looked filtered: the probes were dropped, not answered.
    assert!(
        nmap_ports(&out)
            .iter()
            .all(|(p, s)| !crate::watched_by_default(*p, &[]) || s == "filtered"),
        "{out}"
    );
    assert!(!target.nft_set("blocked4").contains("192.0.2.2"));
    assert!(
        d.wait_log("is already reported Ignoring"),
        "{}",
        d.log_text()
    );
    let log = d.log_text();
    let alerts: Vec<&str> = log.lines().filter(|l| l.contains("attackalert:")).collect();
    assert_eq!(alerts.len(), 3, "{log}");
    assert!(alerts[0]
        .contains("attackalert: TCP SYN/Normal scan from host: 192.0.2.2/192.0.2.2 to TCP port: "));
    assert!(
        alerts[1].ends_with("attackalert: Ignoring TCP response per configuration file setting.")
    );
    assert!(
        alerts[2].ends_with("attackalert: Host: 192.0.2.2/192.0.2.2 is already reported Ignoring")
    );
}
