//! A real server's clients stay connected: forged probes in a live client's name, decoy
//! scans carrying it, and a service restarting under its clients. Each test counts the
//! clients cut off (goal: 0) and prints the count.

use crate::lab::*;
use std::process::{Child, Stdio};
use std::time::Duration;

fn clients_py() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/integration/clients.py").to_string()
}

/// Starts a clients.py command in `host` whose JSON result `finish` reads.
fn start(host: &Host, args: &[&str]) -> Child {
    let mut all = vec!["python3", "-u"];
    let script = clients_py();
    all.push(&script);
    all.extend_from_slice(args);
    host.cmd(&all)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {args:?}: {e}"))
}

fn finish(child: Child) -> serde_json::Value {
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "clients.py said {text:?} ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Starts a clients.py server in `host` and waits until it listens on `port`.
fn service(host: &Host, args: &[&str], port: u16, tcp: bool) -> Child {
    let script = clients_py();
    let mut all = vec!["python3", script.as_str()];
    all.extend_from_slice(args);
    let child = host.spawn(&all);
    let flag = if tcp { "-Htln" } else { "-Huln" };
    assert!(wait_until(Duration::from_secs(5), || {
        host.ok(&["ss", flag]).contains(&format!(":{port} "))
    }));
    child
}

/// `service`, stopped with the lab.
fn serve(lab: &mut Lab, host: &Host, args: &[&str], port: u16, tcp: bool) {
    let child = service(host, args, port, tcp);
    lab.keep(child);
}

/// The target with an echo service on 2222 and a line service on 80, a client holding a
/// session (`client`), an attacker forging probes in its name; the session's result.
fn forged_while_live(v6: bool) {
    let mut lab = Lab::new();
    let target = lab.host("target", 1);
    let attacker = lab.host("attacker", 2);
    let client = lab.host("client", 3);
    serve(&mut lab, &target, &["echo", "2222"], 2222, true);
    lab.serve(&target, 80);
    let d = Daemon::start(&lab, &target, "");
    let (dst, c, me) = if v6 {
        (TARGET6, client.v6.as_str(), attacker.v6.as_str())
    } else {
        (TARGET4, client.v4.as_str(), attacker.v4.as_str())
    };
    let session = start(&client, &["session", dst, "2222", "80", "12"]);
    // The session is live before the forger starts.
    std::thread::sleep(Duration::from_secs(2));

    // 1. One forged SYN in the client's name, to a watched port.
    // 2. A thousand more, to ports 1..1000.
    if v6 {
        attacker.ok(&["python3", &clients_py(), "forge6", dst, c, "1", "1"]);
        std::thread::sleep(Duration::from_millis(500));
        attacker.ok(&["python3", &clients_py(), "forge6", dst, c, "1", "1000"]);
    } else {
        let syn = |extra: &[&str]| {
            let mut a = vec!["hping3", "-q", "-S", "-a", c];
            a.extend_from_slice(extra);
            a.push(dst);
            attacker.run(&a);
        };
        syn(&["-p", "1", "-c", "1"]);
        std::thread::sleep(Duration::from_millis(500));
        syn(&["-p", "++1", "-c", "1000", "-i", "u500"]);
    }
    // 3. A decoy scan carrying the client's address, from the attacker's own.
    let mut args = vec!["-sS", "-p", "1-200", "-D"];
    let decoys = format!("{c},ME");
    args.push(&decoys);
    if v6 {
        args.insert(0, "-6");
    }
    let out = nmap(&attacker, &args, dst);

    let r = finish(session);
    let cut_off = u32::from(r["session"] != "alive" || r["new_failed"].as_u64() != Some(0));
    println!("clients cut off: {cut_off} of 1 ({r})");
    assert_eq!(r["session"], "alive", "{r}\n{}", d.log_text());
    assert_eq!(r["new_failed"], 0, "{r}");
    assert!(r["new_ok"].as_u64().unwrap() >= 15, "{r}");
    assert!(!target.is_blocked(c), "{}", d.log_text());
    // The scanner itself is blocked, on its own address, and learned nothing.
    assert!(target.becomes_blocked(me), "{}", d.log_text());
    if v6 {
        // It shares the client's /64: blocked alone, not by the network.
        let set = target.nft_set("blocked6");
        assert!(!set.contains("2001:db8::/64"), "{set}");
    }
    assert!(
        nmap_ports(&out)
            .iter()
            .all(|(p, s)| !crate::watched_by_default(*p, &[80]) || s == "filtered"),
        "{out}"
    );
    // The client's probes were reported, once, with the reason it was not blocked.
    let log = d.log_text();
    let spared = format!("Host: {c}/{c} holds a live connection to this host: not blocked");
    assert!(log.contains(&spared), "{log}");
    assert!(
        log.contains(&format!("scan from host: {c}/{c} to TCP port: 1")),
        "{log}"
    );
    assert!(log.matches(&spared).count() <= 2, "{log}");
    // The kernel's own changes to the client and served sets are not damage to heal.
    assert!(!log.contains("table inet portsentry"), "{log}");
    // fail2ban reads the history file: nothing there names the client.
    let history = std::fs::read_to_string(lab.dir.join("portsentry.history")).unwrap_or_default();
    assert!(!history.contains(&format!("/{c} ")), "{history}");
    assert!(history.contains(&format!("/{me} ")), "{history}");
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn forged_probes_never_cut_off_a_live_ipv4_client() {
    forged_while_live(false);
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn forged_probes_never_cut_off_a_live_ipv6_client() {
    forged_while_live(true);
}

/// A container host: the client's connection goes to a port the host publishes by DNAT
/// (Docker's way), so its packets are forwarded and never reach input. It is a live client
/// all the same.
#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn a_live_client_of_a_published_container_port_is_spared() {
    let mut lab = Lab::new();
    let target = lab.host("target", 1);
    let attacker = lab.host("attacker", 2);
    let client = lab.host("client", 3);
    let container = lab.host("ctr", 50);
    serve(&mut lab, &container, &["echo", "2222"], 2222, true);
    target.ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    target.ok(&[
        "nft",
        "add table ip dockerish; \
         add chain ip dockerish pre { type nat hook prerouting priority dstnat; }; \
         add chain ip dockerish post { type nat hook postrouting priority srcnat; }; \
         add rule ip dockerish pre tcp dport 8022 dnat to 192.0.2.50:2222; \
         add rule ip dockerish post ip daddr 192.0.2.50 masquerade",
    ]);
    let d = Daemon::start(&lab, &target, "");
    let session = start(&client, &["session", TARGET4, "8022", "8022", "6"]);
    std::thread::sleep(Duration::from_secs(2));
    let c = client.v4.as_str();
    attacker.run(&["hping3", "-q", "-S", "-a", c, "-p", "1", "-c", "1", TARGET4]);
    attacker.run(&[
        "hping3", "-q", "-S", "-a", c, "-p", "++1", "-c", "300", "-i", "u500", TARGET4,
    ]);
    let r = finish(session);
    let cut_off = u32::from(r["session"] != "alive" || r["new_failed"].as_u64() != Some(0));
    println!("clients cut off: {cut_off} of 1 ({r})");
    assert_eq!(r["session"], "alive", "{r}\n{}", d.log_text());
    assert_eq!(r["new_failed"], 0, "{r}");
    assert!(!target.is_blocked(c), "{}", d.log_text());
    assert!(d
        .log_text()
        .contains("holds a live connection to this host: not blocked"));
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn with_spare_clients_off_a_live_client_is_blocked_like_anyone() {
    let mut lab = Lab::new();
    let target = lab.host("target", 1);
    let attacker = lab.host("attacker", 2);
    let client = lab.host("client", 3);
    serve(&mut lab, &target, &["echo", "2222"], 2222, true);
    lab.serve(&target, 80);
    let d = Daemon::start(&lab, &target, "[block]\nspare_clients = false\n");
    let session = start(&client, &["session", TARGET4, "2222", "80", "3"]);
    std::thread::sleep(Duration::from_secs(1));
    attacker.run(&[
        "hping3", "-q", "-S", "-a", &client.v4, "-p", "1", "-c", "1", TARGET4,
    ]);
    assert!(target.becomes_blocked(&client.v4), "{}", d.log_text());
    let r = finish(session);
    assert_ne!(r["session"], "alive", "{r}");
}

/// A service below 1024 restarts (stopped 1.5 s) while 20 clients connect every 100 ms,
/// TCP to 443 and UDP to 53.
#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn a_restarting_service_blocks_none_of_its_clients() {
    let mut lab = Lab::new();
    let target = lab.host("target", 1);
    let clients = lab.host("clients", 3);
    let scanner = lab.host("scanner", 2);
    let sources: Vec<String> = (10..30).map(|i| format!("192.0.2.{i}")).collect();
    for s in &sources {
        clients.ok(&["ip", "addr", "add", &format!("{s}/24"), "dev", "eth0"]);
    }
    let d = Daemon::start(&lab, &target, "[detect]\nlistener_grace = \"5s\"\n");
    // Up after the daemon: a service that nobody has reached yet is marked by the
    // daemon's look at the host's sockets.
    let tcp = service(&target, &["echo", "443"], 443, true);
    let udp = service(&target, &["udp-echo", "53"], 53, false);
    // Longer than the daemon's look at the sockets (every 2 s).
    std::thread::sleep(Duration::from_secs(3));

    let mut args = vec!["many", TARGET4, "443", "53", "7"];
    args.extend(sources.iter().map(String::as_str));
    let load = start(&clients, &args);
    std::thread::sleep(Duration::from_secs(2));
    // The restart: both services down for 1.5 s, then up again.
    for mut c in [tcp, udp] {
        let _ = c.kill();
        let _ = c.wait();
    }
    std::thread::sleep(Duration::from_millis(1500));
    serve(&mut lab, &target, &["echo", "443"], 443, true);
    serve(&mut lab, &target, &["udp-echo", "53"], 53, false);
    let r = finish(load);

    let blocked: Vec<&String> = sources.iter().filter(|s| target.is_blocked(s)).collect();
    println!("clients cut off: {} of {}", blocked.len(), sources.len());
    assert!(blocked.is_empty(), "{blocked:?}\n{}", d.log_text());
    for s in &sources {
        let c = &r[s.as_str()];
        assert_eq!(c["recovered"], true, "{s}: {c}");
        // During the gap they got the kernel's answer (refused), or lost a datagram.
        assert!(
            c["refused"].as_u64().unwrap() + c["lost"].as_u64().unwrap() > 0,
            "{s}: {c}"
        );
    }
    assert!(!d.log_text().contains("attackalert"), "{}", d.log_text());

    // A port that never had a listener is a trap as before.
    scanner.run(&["hping3", "-q", "-S", "-p", "444", "-c", "1", TARGET4]);
    assert!(target.becomes_blocked(&scanner.v4));
}

/// Once the grace has passed, a port whose service is gone is a trap again. (The daemon
/// renews a served port every 2 s at most: a grace of 4 s outlives the gap.)
#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn a_port_whose_listener_went_long_ago_is_a_trap_again() {
    let mut lab = Lab::new();
    let target = lab.host("target", 1);
    let scanner = lab.host("scanner", 2);
    let d = Daemon::start(&lab, &target, "[detect]\nlistener_grace = \"4s\"\n");
    let mut svc = service(&target, &["echo", "443"], 443, true);
    std::thread::sleep(Duration::from_secs(3));
    let _ = svc.kill();
    let _ = svc.wait();
    // Within the grace: the kernel's own answer, no alert.
    assert_eq!(scanner.tcp_connect(TARGET4, 443), "refused");
    assert!(!target.is_blocked(&scanner.v4));
    std::thread::sleep(Duration::from_secs(5));
    scanner.run(&["hping3", "-q", "-S", "-p", "443", "-c", "1", TARGET4]);
    assert!(target.becomes_blocked(&scanner.v4), "{}", d.log_text());
}

/// Log-only (1.2's BLOCK_TCP="0", BLOCK_UDP="0"): a source probing TCP port 11 and then
/// UDP port 11 is reported for each, with a history line each, as 1.2's two sentries did.
#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn each_protocol_of_a_source_is_reported_in_log_only_mode() {
    let mut lab = Lab::new();
    let target = lab.host("target", 1);
    let scanner = lab.host("scanner", 2);
    let d = Daemon::start(&lab, &target, "[block]\ntcp = \"off\"\nudp = \"off\"\n");
    scanner.run(&["hping3", "-q", "-S", "-p", "11", "-c", "1", TARGET4]);
    assert!(d.wait_log("to TCP port: 11"));
    scanner.run(&["hping3", "-q", "-2", "-p", "11", "-c", "1", TARGET4]);
    assert!(d.wait_log("attackalert: UDP scan from host: 192.0.2.2/192.0.2.2 to UDP port: 11"));
    let history = lab.dir.join("portsentry.history");
    let lines = || {
        std::fs::read_to_string(&history)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert!(
        wait_until(Duration::from_secs(3), || lines().len() == 2),
        "{:?}",
        lines()
    );
    let l = lines();
    assert!(l[0].ends_with("Port: 11 TCP Blocked"), "{l:?}");
    assert!(l[1].ends_with("Port: 11 UDP Blocked"), "{l:?}");
    assert!(!target.is_blocked(&scanner.v4));
}
