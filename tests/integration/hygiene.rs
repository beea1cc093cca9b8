//! Production hygiene: a broken daemon never looks healthy, logs survive rotation, files
//! are written safely, metrics can be read, the control plane never stalls blocking.

use crate::lab::*;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// Starts the daemon with `PORTSENTRY_FAULT=fault` and a notify socket the test reads.
fn with_fault(lab: &Lab, host: &Host, fault: &str) -> (Daemon, UnixDatagram) {
    let sock = lab.dir.join("notify.sock");
    let notify = UnixDatagram::bind(&sock).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let config = Daemon::config(lab, "");
    let fault = format!("PORTSENTRY_FAULT={fault}");
    let socket = format!("NOTIFY_SOCKET={}", sock.display());
    let d = Daemon::start_wrapped(lab, host, &config, &["env", &fault, &socket]);
    (d, notify)
}

/// Empties the socket of what was sent before now.
fn drain(notify: &UnixDatagram) {
    notify.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 256];
    while notify.recv(&mut buf).is_ok() {}
    notify.set_nonblocking(false).unwrap();
}

/// The notify messages received within `limit`.
fn messages(notify: &UnixDatagram, limit: Duration) -> Vec<String> {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    while start.elapsed() < limit {
        if let Ok(n) = notify.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    out
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn a_panicking_thread_ends_the_daemon_and_the_host_fails_open() {
    let mut lab = Lab::new();
    let target = lab.host("target", 1);
    let scanner = lab.host("scanner", 2);
    let client = lab.host("client", 3);
    let (mut d, _notify) = with_fault(&lab, &target, "panic-responder");
    // The block is written, then the block writer panics: the whole process ends.
    assert_eq!(scanner.tcp_connect(TARGET4, 111), "timeout");
    let status = d.wait_exit(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| !s.success()),
        "still running:\n{}",
        d.log_text()
    );
    assert!(
        d.log_text().contains("adminalert: ERROR: panicked at")
            && d.log_text()
                .contains("stopping so the service is restarted"),
        "{}",
        d.log_text()
    );
    // Nobody on the queue: the kernel answers as if portsentry were not there.
    assert_eq!(client.tcp_connect(TARGET4, 112), "refused");
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn a_stalled_block_writer_stops_the_watchdog() {
    let mut lab = Lab::new();
    let target = lab.host("target", 1);
    let scanner = lab.host("scanner", 2);
    let (d, notify) = with_fault(&lab, &target, "stall-responder");
    // Healthy: the watchdog is fed every second.
    let before = messages(&notify, Duration::from_secs(3));
    assert!(
        before.iter().filter(|m| *m == "WATCHDOG=1").count() >= 2,
        "{before:?}"
    );
    // The first block stalls the block writer.
    assert_eq!(scanner.tcp_connect(TARGET4, 111), "timeout");
    assert!(
        d.wait_log("the block writer thread stops here"),
        "{}",
        d.log_text()
    );
    // Within the stall limit (10 s here) the feeding stops and stays stopped.
    assert!(
        d.wait_log_for(
            "the block writer has made no progress",
            Duration::from_secs(15)
        ),
        "{}",
        d.log_text()
    );
    drain(&notify);
    let after = messages(&notify, Duration::from_secs(3));
    assert!(!after.iter().any(|m| m == "WATCHDOG=1"), "{after:?}");
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn a_stalled_packet_thread_stops_the_watchdog() {
    let mut lab = Lab::new();
    let target = lab.host("target", 1);
    let scanner = lab.host("scanner", 2);
    let (d, notify) = with_fault(&lab, &target, "stall-queue");
    assert!(messages(&notify, Duration::from_secs(3))
        .iter()
        .any(|m| m == "WATCHDOG=1"));
    assert_eq!(scanner.tcp_connect(TARGET4, 111), "timeout");
    assert!(
        d.wait_log_for(
            "the packet thread has made no progress",
            Duration::from_secs(15)
        ),
        "{}",
        d.log_text()
    );
    drain(&notify);
    let after = messages(&notify, Duration::from_secs(3));
    assert!(!after.iter().any(|m| m == "WATCHDOG=1"), "{after:?}");
}

/// logrotate moves the history away: the next block lands in the new file, where
/// fail2ban's stock filter finds it.
#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn after_logrotate_the_next_block_lands_in_the_new_history() {
    let mut lab = Lab::new();
    let target = lab.host("target", 1);
    let first = lab.host("first", 2);
    let second = lab.host("second", 3);
    let d = Daemon::start(&lab, &target, "");
    let history = lab.dir.join("portsentry.history");
    assert_eq!(first.tcp_connect(TARGET4, 111), "timeout");
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&history).is_ok_and(|t| t.contains("192.0.2.2/192.0.2.2"))
    }));
    // The shipped logrotate configuration, pointed at the lab's history.
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/portsentry.logrotate"
    ))
    .unwrap();
    let conf = lab.write(
        "logrotate.conf",
        &shipped.replace(
            "/var/lib/portsentry/portsentry.history",
            history.to_str().unwrap(),
        ),
    );
    let state = lab.dir.join("logrotate.state");
    ok(&[
        "logrotate",
        "-f",
        "-s",
        state.to_str().unwrap(),
        conf.to_str().unwrap(),
    ]);
    let rotated = lab.dir.join("portsentry.history.1");
    assert!(std::fs::read_to_string(&rotated)
        .unwrap()
        .contains("192.0.2.2/192.0.2.2"));
    assert_eq!(second.tcp_connect(TARGET4, 111), "timeout");
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::read_to_string(&history)
            .is_ok_and(|t| t.contains("192.0.2.3/192.0.2.3"))),
        "{}",
        d.log_text()
    );
    assert!(!std::fs::read_to_string(&rotated)
        .unwrap()
        .contains("192.0.2.3"));
    let out = run(&[
        "fail2ban-regex",
        history.to_str().unwrap(),
        "/etc/fail2ban/filter.d/portsentry.conf",
    ]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("1 matched, 0 missed"), "{report}");
}

/// A history file swapped for a symlink by someone who can write to its directory: root
/// never writes through it.
#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn the_history_is_never_written_through_a_planted_symlink() {
    let mut lab = Lab::new();
    let target = lab.host("target", 1);
    let scanner = lab.host("scanner", 2);
    let victim = lab.write("victim", "precious\n");
    std::os::unix::fs::symlink(&victim, lab.dir.join("portsentry.history")).unwrap();
    let d = Daemon::start(&lab, &target, "");
    assert!(
        d.log_text().contains("symlink: refused"),
        "{}",
        d.log_text()
    );
    assert_eq!(scanner.tcp_connect(TARGET4, 111), "timeout");
    assert!(target.becomes_blocked("192.0.2.2"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
}

/// resolve_host with the scanners' DNS swallowing every query: every history line is
/// written, promptly, with the address where the name did not come in time.
#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn slow_reverse_dns_never_drops_or_holds_a_history_line() {
    let mut lab = Lab::new();
    let target = lab.host("target", 1);
    let attacker = lab.host("attacker", 66);
    let dns = lab.host("dns", 53);
    accept_spoofed(&target);
    let swallow = dns.spawn(&["socat", "-u", "UDP4-RECV:53", "OPEN:/dev/null"]);
    lab.keep(swallow);
    lab.etc_file(
        &target,
        "resolv.conf",
        "nameserver 192.0.2.53\noptions timeout:5 attempts:2\n",
    );
    let d = Daemon::start(&lab, &target, "[log]\nresolve_host = true\n");
    spoofed_syns(&attacker, 300, 5);
    let history = lab.dir.join("portsentry.history");
    let lines = || {
        std::fs::read_to_string(&history)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(10), || lines() == 300),
        "{} of 300 history lines:\n{}",
        lines(),
        d.log_text()
    );
    let text = std::fs::read_to_string(&history).unwrap();
    assert!(
        text.contains("Host: 198.18.0.1/198.18.0.1 Port: 111"),
        "{text}"
    );
    let (ok, status) = d.cli(&target, &["status"]);
    assert!(ok && counter(&status, "reports dropped") == 0, "{status}");
}

/// A name with characters no hostname has (the scanner controls its PTR record) is never
/// written: the address stands in for it. A real name is.
#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn a_hostile_reverse_name_never_reaches_the_logs() {
    let mut lab = Lab::new();
    let target = lab.host("target", 1);
    let evil = lab.host("evil", 2);
    let good = lab.host("good", 3);
    lab.etc_file(
        &target,
        "hosts",
        "127.0.0.1 localhost\n192.0.2.2 ev;il|$(reboot)\n192.0.2.3 good.example\n",
    );
    let d = Daemon::start(&lab, &target, "[log]\nresolve_host = true\n");
    assert_eq!(evil.tcp_connect(TARGET4, 111), "timeout");
    assert_eq!(good.tcp_connect(TARGET4, 111), "timeout");
    let history = lab.dir.join("portsentry.history");
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&history).is_ok_and(|t| t.lines().count() == 2)
    }));
    let text = std::fs::read_to_string(&history).unwrap();
    assert!(
        text.contains("Host: 192.0.2.2/192.0.2.2 Port: 111"),
        "{text}"
    );
    assert!(
        text.contains("Host: good.example/192.0.2.3 Port: 111"),
        "{text}"
    );
    assert!(!d.log_text().contains("ev;il"), "{}", d.log_text());
}

/// The metrics a scrape reads: counters by protocol and scan kind, blocks, and how long
/// blocking took.
#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn metrics_are_served_for_a_scrape() {
    let mut lab = Lab::new();
    let target = lab.host("target", 1);
    let scanner = lab.host("scanner", 2);
    let d = Daemon::start(&lab, &target, "[metrics]\nlisten = \"127.0.0.1:9707\"\n");
    assert_eq!(scanner.tcp_connect(TARGET4, 111), "timeout");
    assert!(target.becomes_blocked("192.0.2.2"));
    let scrape = || {
        target.ok(&[
            "python3",
            "-c",
            "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9707/metrics', timeout=5).read().decode())",
        ])
    };
    assert!(
        wait_until(Duration::from_secs(3), || scrape()
            .contains("portsentry_blocks_total 1\n")),
        "{}\n{}",
        scrape(),
        d.log_text()
    );
    let text = scrape();
    for line in [
        "portsentry_probes_total{proto=\"tcp\",type=\"syn\"} 1\n",
        "portsentry_blocked 1\n",
        "# TYPE portsentry_time_to_block_seconds histogram\n",
        "portsentry_time_to_block_seconds_count 1\n",
    ] {
        assert!(text.contains(line), "{line:?} not in\n{text}");
    }
    // Scripts read the same through the control socket, as JSON.
    let (ok, out) = d.cli(&target, &["list", "--json"]);
    assert!(ok, "{out}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["address"], "192.0.2.2", "{rows}");
    assert_eq!(rows[0]["origin"], "scan", "{rows}");
    let (ok, out) = d.cli(&target, &["status", "--json"]);
    assert!(ok, "{out}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["blocked"], 1, "{status}");
    // Nothing else is served.
    let other = target.run(&[
        "python3",
        "-c",
        "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9707/', timeout=5)",
    ]);
    assert!(!other.status.success());
}

/// A spoofed flood of single-probe sources fills the hand-off to the block writer (64
/// events with this fault); a real scanner sending exactly one probe in the middle of it
/// is still blocked, and so is every flood source: an Act the hand-off cannot take waits
/// in its packet thread instead of being forgotten (none of them probes twice).
#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn one_probe_inside_a_flood_that_fills_the_handoff_is_blocked() {
    let mut lab = Lab::new();
    let target = lab.host("target", 1);
    let scanner = lab.host("scanner", 2);
    let attacker = lab.host("attacker", 66);
    accept_spoofed(&target);
    let (d, _notify) = with_fault(&lab, &target, "small-handoff");
    const FLOOD: usize = 8000;
    let mut flood = attacker.spawn(&[
        "python3",
        &craft(),
        "syn",
        TARGET4,
        "111",
        "--count",
        &FLOOD.to_string(),
    ]);
    std::thread::sleep(Duration::from_millis(150));
    let sent = Instant::now();
    // No answer comes (the probe is dropped): hping3 waits a second for one.
    let mut probe = scanner.spawn(&["hping3", "-q", "-S", "-p", "111", "-c", "1", TARGET4]);
    assert!(
        target.becomes_blocked(&scanner.v4),
        "the one-probe scanner was not blocked:\n{}",
        d.log_text()
    );
    eprintln!("one probe blocked {:?} after it was sent", sent.elapsed());
    let _ = probe.wait();
    assert!(flood.wait().unwrap().success());
    let blocked = || target.nft_set("blocked4").matches("198.18.").count();
    assert!(
        wait_until(Duration::from_secs(10), || blocked() == FLOOD),
        "{} of {FLOOD} single-probe flood sources blocked:\n{}",
        blocked(),
        d.log_text()
    );
    // The hand-off was full: events waited in the packet thread, none was dropped.
    let (_, status) = d.cli(&target, &["status"]);
    assert!(counter(&status, "events deferred") > 0, "{status}");
    assert_eq!(counter(&status, "events dropped"), 0, "{status}");
}
