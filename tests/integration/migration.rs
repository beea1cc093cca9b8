//! Coming from PortSentry 1.2: real configurations converted by the real `import-legacy`,
//! then run. The debian-fr wiki's setup end to end, the mode chosen without --default,
//! and a log-only fail2ban setup in every block mode.

use crate::lab::*;
use std::path::Path;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_portsentry");
const WIKI: &str = include_str!("../data/legacy/wiki-debian-fr.conf");
const WIKI_DEFAULT: &str = include_str!("../data/legacy/wiki-debian-fr.default");
const DEBIAN_SHIPPED: &str = include_str!("../data/legacy/debian-1.2-14.conf");
const LOG_ONLY_2_0: &str = include_str!("../data/legacy/portsentry-2.0-log-only.conf");

/// `portsentry import-legacy ARGS` run in `host` (so with its /etc); the TOML it prints.
fn import_legacy(host: &Host, args: &[&str]) -> String {
    let mut all = vec![BIN, "import-legacy"];
    all.extend_from_slice(args);
    let out = host.run(&all);
    assert!(
        out.status.success(),
        "{all:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The comments as running text: where they wrap is layout.
fn prose(toml: &str) -> String {
    toml.replace("\n# ", " ")
}

fn check_config(host: &Host, config: &Path) -> String {
    let out = host.run(&[BIN, "check-config", "-c", config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// fail2ban's stock `portsentry` filter over the history: how many lines it matched.
fn fail2ban_matches(history: &Path) -> String {
    let out = run(&[
        "fail2ban-regex",
        history.to_str().unwrap(),
        "/etc/fail2ban/filter.d/portsentry.conf",
    ]);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{report}");
    report
}

/// The wiki's "Test": its portsentry.conf and /etc/default/portsentry (atcp, audp), a
/// friend in portsentry.ignore.static, converted by import-legacy, then exactly the
/// wiki's `nmap -v -PN -p 0-2000,60000` from another host. What the wiki shows after it:
/// the attackalert line, `ALL: <scanner> : DENY` in hosts.deny, the scanner cut off (the
/// nft set; the reject route is not run, see import-legacy in portsentry(8)), and its
/// dropped packets logged with the wiki's prefix (the log settings; the nft rule that
/// uses them is the daemon's). The friend scanning gets nothing.
#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn the_wiki_setup_converted_and_run_gives_what_the_wiki_shows() {
    let mut lab = Lab::new();
    let target = lab.host("target", 1);
    let scanner = lab.host("scanner", 2);
    let friend = lab.host("friend", 3);
    lab.serve(&target, 22);
    lab.serve(&target, 80);
    lab.serve(&scanner, 8080);
    // No --default below: import-legacy finds the target's /etc/default/portsentry.
    lab.etc_file(&target, "default/portsentry", WIKI_DEFAULT);
    let conf = lab.write("portsentry.conf", WIKI);
    let ignore = lab.write(
        "portsentry.ignore.static",
        "127.0.0.1/32\n0.0.0.0\n192.0.2.3\n",
    );
    let toml = import_legacy(
        &target,
        &[conf.to_str().unwrap(), "--ignore", ignore.to_str().unwrap()],
    );
    let said = prose(&toml);
    for line in [
        "Watch modes: TCP_MODE=\"atcp\", UDP_MODE=\"audp\", read from /etc/default/portsentry.",
        "KILL_RUN_CMD: \"/sbin/iptables -I INPUT -s $TARGET$ -j DROP\" is not run: the nft set (blocked4, blocked6) already drops everything from the scanner.",
        "KILL_ROUTE: \"/sbin/route add -host $TARGET$ reject\" is not run",
        "log_prefix = \"Portsentry: dropping: \"\nlog_rate = \"3/minute\"\nlog_burst = 5\n",
        "hosts_deny = \"ALL: $TARGET$ : DENY\"",
        "addresses = [\"127.0.0.0/8\", \"::1/128\", \"192.0.2.3/32\"]",
    ] {
        assert!(said.contains(line), "{line}\n{toml}");
    }
    assert!(
        !toml.contains("\nrun = ")
            && !toml.contains("\nroute = ")
            && !toml.contains("Not converted"),
        "{toml}"
    );
    let config = lab.config_in_lab(&toml);
    let summary = check_config(&target, &config);
    for line in [
        "tcp: Advanced, 1021 ports",
        "udp: Advanced, 1019 ports",
        "block tcp: Block, udp: Block",
        "actions: hosts.deny line",
        "log of blocked sources' dropped packets: prefix \"Portsentry: dropping: \", 3/minute, burst 5",
    ] {
        assert!(summary.contains(line), "{line}\n{summary}");
    }
    // Before the scan the target reaches the scanner's service.
    assert_eq!(target.tcp_connect("192.0.2.2", 8080), "ok");

    let d = Daemon::start_with(&lab, &target, &config);
    // The wiki's rate-limited LOG of the scanner's dropped packets, natively.
    let blocked = target.ok(&["nft", "list", "chain", "inet", "portsentry", "blocked"]);
    assert!(
        // (nft leaves out a burst of 5 packets: its default)
        blocked.contains("limit rate 3/minute log prefix \"Portsentry: dropping: \"")
            && blocked.contains("drop"),
        "{blocked}"
    );
    let wiki_scan = ["-v", "-PN", "-p", "0-2000,60000"];

    // The ignored host: the kernel's own answers, the services open, nothing else.
    let out = nmap(&friend, &wiki_scan, TARGET4);
    let seen = nmap_ports(&out);
    assert_eq!(
        seen,
        vec![(22, "open".to_string()), (80, "open".to_string())],
        "{out}"
    );
    assert!(out.contains("Ignored State: closed (2000)"), "{out}");

    let out = nmap(&scanner, &wiki_scan, TARGET4);
    assert!(target.becomes_blocked("192.0.2.2"), "{}", d.log_text());
    assert!(
        d.wait_log("attackalert: TCP SYN/Normal scan from host: 192.0.2.2/192.0.2.2 to TCP port: "),
        "{}",
        d.log_text()
    );
    // Every watched port looked filtered: the probes were dropped, never answered. (Port
    // 0 is never watched: the kernel answers it until the block is in place.)
    for (port, state) in nmap_ports(&out) {
        assert!(
            port == 0 || !crate::watched_by_default(port, &[22, 80]) || state == "filtered",
            "watched port {port} showed as {state}:\n{out}"
        );
    }
    assert!(
        d.wait_log("attackalert: Host 192.0.2.2 has been blocked via wrappers with string: \"ALL: 192.0.2.2 : DENY\""),
        "{}",
        d.log_text()
    );
    assert_eq!(
        std::fs::read_to_string(lab.dir.join("hosts.deny")).unwrap(),
        "ALL: 192.0.2.2 : DENY\n"
    );
    // What the wiki's reject route did, the nft set does: the target cannot talk to the
    // scanner any more (its replies are dropped). No route was added to do it.
    assert_eq!(target.tcp_connect("192.0.2.2", 8080), "timeout");
    assert!(!target.ok(&["ip", "route"]).contains("192.0.2.2"));
    let log = d.log_text();
    assert!(!log.contains("dropped route"), "{log}");

    // The friend got nothing, before or after.
    assert!(!target.is_blocked("192.0.2.3"));
    assert!(
        !log.lines()
            .any(|l| l.contains("attackalert") && l.contains("192.0.2.3")),
        "{log}"
    );

    // The history fail2ban reads: the scanner, once.
    let history = lab.dir.join("portsentry.history");
    let text = std::fs::read_to_string(&history).unwrap();
    assert!(
        text.lines().count() == 1 && text.contains(" Host: 192.0.2.2/192.0.2.2 Port: "),
        "{text}"
    );
    let report = fail2ban_matches(&history);
    assert!(report.contains("1 matched, 0 missed"), "{report}");
}

/// Without --default and without /etc/default/portsentry, Debian's packaged modes (the
/// port lists), and the output says so.
#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn without_a_default_file_debians_packaged_modes_are_assumed() {
    let mut lab = Lab::new();
    let host = lab.host("host", 1);
    // The host's own /etc/default, without portsentry in it, whatever this machine has.
    lab.etc_file(&host, "default/keep", "");
    let conf = lab.write("portsentry.conf", DEBIAN_SHIPPED);
    let toml = import_legacy(&host, &[conf.to_str().unwrap()]);
    assert!(
        prose(&toml).contains("Watch modes: TCP_MODE=\"tcp\", UDP_MODE=\"udp\", Debian's packaged default, as no /etc/default/portsentry was given or found"),
        "{toml}"
    );
    let config = lab.write("imported.toml", &toml);
    let summary = check_config(&host, &config);
    assert!(
        summary.contains("tcp: Ports, 26 ports: 1,11,15,79,111,")
            && summary.contains("udp: Ports, 21 ports: 1,7,9,69,"),
        "{summary}"
    );

    // With the file, its modes.
    lab.etc_file(
        &host,
        "default/portsentry",
        "TCP_MODE=\"atcp\"\nUDP_MODE=\"sudp\"\n",
    );
    let toml = import_legacy(&host, &[conf.to_str().unwrap()]);
    assert!(
        toml.contains("# Watch modes: TCP_MODE=\"atcp\", UDP_MODE=\"sudp\", read from /etc/default/portsentry."),
        "{toml}"
    );
}

/// PortSentry 2.0's log-only test configuration, with BLOCK_TCP/BLOCK_UDP set to `mode`
/// (2: a KILL_RUN_CMD whose program is a bare name), converted and run; one probe. The
/// stock fail2ban filter must find the scanner in the history in every mode, as it did
/// with 1.2.
fn log_only_setup_feeds_fail2ban(mode: &str) {
    let mut lab = Lab::new();
    let target = lab.host("target", 1);
    let scanner = lab.host("scanner", 2);
    let dir = lab.dir.display().to_string();
    let conf = LOG_ONLY_2_0
        .replace("BLOCK_UDP=\"0\"", &format!("BLOCK_UDP=\"{mode}\""))
        .replace("BLOCK_TCP=\"0\"", &format!("BLOCK_TCP=\"{mode}\""))
        .replace(
            "#KILL_RUN_CMD=\"/some/path/here/script $TARGET$ $PORT$\"",
            &format!(
                "KILL_RUN_CMD=\"touch {dir}/ran-$TARGET$-$PORT$ && touch '{dir}/then $MODE$'\""
            ),
        );
    let conf = lab.write("portsentry.conf", &conf);
    lab.etc_file(
        &target,
        "default/portsentry",
        "TCP_MODE=\"stcp\"\nUDP_MODE=\"sudp\"\n",
    );
    let ignore = lab.write("portsentry.ignore.static", "127.0.0.1/32\n0.0.0.0\n");
    let toml = import_legacy(
        &target,
        &[conf.to_str().unwrap(), "--ignore", ignore.to_str().unwrap()],
    );
    assert!(
        prose(&toml).contains("KILL_RUN_CMD: 'touch' resolved to /"),
        "{toml}"
    );
    let config = lab.config_in_lab(&toml);
    let d = Daemon::start_with(&lab, &target, &config);

    // One probe to TCP_PORTS' 11: dropped, whatever the mode.
    assert_eq!(scanner.tcp_connect(TARGET4, 11), "timeout");
    assert!(
        d.wait_log(
            "attackalert: TCP SYN/Normal scan from host: 192.0.2.2/192.0.2.2 to TCP port: 11"
        ),
        "{}",
        d.log_text()
    );
    match mode {
        "0" => {
            assert!(d.wait_log("attackalert: Ignoring TCP response per configuration file setting."))
        }
        "1" => assert!(target.becomes_blocked("192.0.2.2")),
        _ => {
            // Both commands of the `&&`, the quoted word whole, the tokens replaced.
            assert!(d.wait_log("/ran-192.0.2.2-11 && /"), "{}", d.log_text());
            let log = d.log_text();
            assert!(
                log.contains("External command run for host: 192.0.2.2 using command: \"/")
                    && log.contains(&format!("/touch {dir}/then stcp\"")),
                "{log}"
            );
            assert!(lab.dir.join("ran-192.0.2.2-11").exists());
            assert!(lab.dir.join("then stcp").exists());
        }
    }
    assert_eq!(target.is_blocked("192.0.2.2"), mode == "1");

    let history = lab.dir.join("portsentry.history");
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::read_to_string(&history)
            .is_ok_and(|t| t.contains("192.0.2.2"))),
        "BLOCK_TCP=\"{mode}\": no history line\n{}",
        d.log_text()
    );
    let report = fail2ban_matches(&history);
    assert!(
        report.contains("Lines: 1 lines, 0 ignored, 1 matched, 0 missed"),
        "BLOCK_TCP=\"{mode}\":\n{report}"
    );
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn fail2ban_finds_the_scanner_in_the_history_in_log_only_mode_0() {
    log_only_setup_feeds_fail2ban("0");
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn fail2ban_finds_the_scanner_in_the_history_in_block_mode_1() {
    log_only_setup_feeds_fail2ban("1");
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn fail2ban_finds_the_scanner_in_the_history_in_command_mode_2() {
    log_only_setup_feeds_fail2ban("2");
}
