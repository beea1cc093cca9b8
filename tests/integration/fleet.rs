//! The fleet against a real CrowdSec Local API (Debian's crowdsec, started by the test in
//! a namespace of its own lab, listening only there): hosts running our daemon push their
//! blocks and pull each other's; cscli adds and deletes decisions; the LAPI goes away and
//! comes back; CrowdSec's own firewall bouncer takes what we reported.

use crate::lab::*;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LAPI: &str = "192.0.2.10";
const PULL: Duration = Duration::from_secs(2);

/// A LAPI alone (`crowdsec -no-cs`): sqlite in the lab directory, one profile, no online
/// client, listening on 192.0.2.10:8080 inside its host's namespace.
pub struct Lapi {
    ns: String,
    dir: PathBuf,
    config: PathBuf,
    child: Option<Child>,
}

impl Lapi {
    pub fn start(lab: &Lab, host: &Host) -> Lapi {
        Lapi::start_tls(lab, host, None)
    }

    /// With `tls` (certificate and key files), the LAPI speaks https only.
    pub fn start_tls(lab: &Lab, host: &Host, tls: Option<(&Path, &Path)>) -> Lapi {
        let dir = lab.dir.join("lapi");
        fs::create_dir_all(dir.join("data")).unwrap();
        fs::create_dir_all(dir.join("hub")).unwrap();
        let d = dir.display();
        fs::write(
            dir.join("config.yaml"),
            format!(
                "common:\n  daemonize: false\n  log_media: stdout\n  log_level: info\n  working_dir: {d}\n\
                 config_paths:\n  config_dir: {d}/\n  data_dir: {d}/data/\n  simulation_path: {d}/simulation.yaml\n  hub_dir: {d}/hub/\n  index_path: {d}/hub/.index.json\n\
                 db_config:\n  log_level: info\n  type: sqlite\n  db_path: {d}/data/crowdsec.db\n  use_wal: true\n\
                 api:\n  client:\n    insecure_skip_verify: true\n    credentials_path: {d}/cscli.yaml\n  server:\n    log_level: info\n    listen_uri: {LAPI}:8080\n    profiles_path: {d}/profiles.yaml\n{tls}\
                 prometheus:\n  enabled: false\n"
            ,
                tls = tls.map_or(String::new(), |(cert, key)| format!(
                    "    tls:\n      cert_file: {}\n      key_file: {}\n",
                    cert.display(),
                    key.display()
                ))
            ),
        )
        .unwrap();
        fs::write(
            dir.join("profiles.yaml"),
            "name: default_ip_remediation\nfilters:\n - Alert.Remediation == true && Alert.GetScope() == \"Ip\"\ndecisions:\n - type: ban\n   duration: 4h\non_success: break\n",
        )
        .unwrap();
        fs::write(dir.join("simulation.yaml"), "simulation: false\n").unwrap();
        let mut lapi = Lapi {
            ns: host.ns.clone(),
            config: dir.join("config.yaml"),
            dir,
            child: None,
        };
        lapi.run(host);
        // cscli talks to the LAPI as a machine of its own.
        let creds = lapi.dir.join("cscli.yaml");
        lapi.cscli(&[
            "machines",
            "add",
            "cscli",
            "--auto",
            "-f",
            creds.to_str().unwrap(),
        ]);
        if tls.is_some() {
            let text = fs::read_to_string(&creds).unwrap();
            fs::write(&creds, text.replace("url: http://", "url: https://")).unwrap();
        }
        lapi
    }

    /// Starts the LAPI and waits until it takes connections (0.2 s here).
    pub fn run(&mut self, host: &Host) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("lapi.log"))
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "crowdsec", "-no-cs", "-c"])
            .arg(&self.config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start crowdsec (scripts/deps installs it)");
        self.child = Some(child);
        assert!(
            wait_until(Duration::from_secs(15), || host.tcp_connect(LAPI, 8080)
                == "ok"),
            "the LAPI did not start:\n{}",
            fs::read_to_string(self.dir.join("lapi.log")).unwrap_or_default()
        );
    }

    /// Kills the LAPI (its database stays).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn cscli(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "cscli", "-c"])
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cscli {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `cscli machines add NAME --auto -f FILE`: the credentials file a host pushes with.
    pub fn machine(&self, name: &str) -> PathBuf {
        let f = self.dir.join(format!("{name}.yaml"));
        self.cscli(&["machines", "add", name, "--auto", "-f", f.to_str().unwrap()]);
        fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
        f
    }

    /// `cscli bouncers add NAME -o raw` into a file: the key a host pulls with.
    pub fn bouncer(&self, name: &str) -> PathBuf {
        let key = self.cscli(&["bouncers", "add", name, "-o", "raw"]);
        let f = self.dir.join(format!("{name}.key"));
        fs::write(&f, key).unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
        f
    }

    /// Every active decision, all origins.
    pub fn decisions(&self) -> Vec<Value> {
        let text = self.cscli(&["decisions", "list", "-a", "-o", "json"]);
        let alerts: Value = serde_json::from_str(text.trim()).unwrap_or(Value::Null);
        alerts
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|a| {
                a["decisions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |mut d| {
                        d["machine_id"] = a["machine_id"].clone();
                        d["start_at"] = a["start_at"].clone();
                        d
                    })
            })
            .collect()
    }

    /// Our decision for `value` (scenario portsentry/port-scan), if the LAPI holds one.
    pub fn ours(&self, value: &str) -> Option<Value> {
        self.decisions()
            .into_iter()
            .find(|d| d["value"] == value && d["scenario"] == "portsentry/port-scan")
    }
}

impl Drop for Lapi {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A daemon of the fleet: its own directory (state, socket, log) in the lab; `crowdsec`
/// holds `[crowdsec]`'s lines past `lapi_url` and `pull_interval` (none: no section).
fn member(lab: &Lab, host: &Host, name: &str, crowdsec: &str) -> Daemon {
    member_with(lab, host, name, "http", crowdsec)
}

/// `member`, the LAPI reached with `scheme`.
fn member_with(lab: &Lab, host: &Host, name: &str, scheme: &str, crowdsec: &str) -> Daemon {
    let dir = lab.dir.join(name);
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    let config = dir.join("portsentry.toml");
    // Empty: no [crowdsec] at all.
    let section = if crowdsec.is_empty() {
        String::new()
    } else {
        format!(
            "[crowdsec]\nlapi_url = \"{scheme}://{LAPI}:8080/\"\npull_interval = \"{}s\"\n{crowdsec}\n",
            PULL.as_secs()
        )
    };
    fs::write(
        &config,
        format!(
            "[udp]\nmode = \"off\"\n\n{section}\n[files]\nstate_dir = \"{d}\"\n\n[firewall]\ninclude = \"{inc}\"\n\n[control]\nsocket = \"{d}/control.sock\"\n",
            d = dir.display(),
            inc = nft_include().display()
        ),
    )
    .unwrap();
    Daemon::start_with(lab, host, &config)
}

fn both(creds: &Path, key: &Path) -> String {
    format!(
        "credentials = \"{}\"\nbouncer_key_file = \"{}\"",
        creds.display(),
        key.display()
    )
}

/// Whether `what` (an address or a network) is an element of the host's fleet sets.
fn in_fleet(host: &Host, what: &str) -> bool {
    let set = if what.contains(':') {
        "fleet6"
    } else {
        "fleet4"
    };
    let out = host.run(&["nft", "list", "set", "inet", "portsentry", set]);
    String::from_utf8_lossy(&out.stdout)
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | '{' | '}'))
        .any(|w| w == what)
}

/// How long until `f` holds (polled every 50 ms), up to `limit`.
fn time_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// `pull_interval` plus one second: how soon the fleet must follow a change.
fn soon() -> Duration {
    PULL + Duration::from_secs(1)
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn a_scanner_caught_on_one_host_is_blocked_on_the_others_and_cscli_rules() {
    let mut lab = Lab::new();
    let a = lab.host("a", 1);
    let scanner = lab.host("scanner", 2);
    let b = lab.host("b", 3);
    let lapi_host = lab.host("lapi", 10);
    let lapi = Lapi::start(&lab, &lapi_host);
    lab.serve(&b, 80);
    let (ma, ka) = (lapi.machine("hostA"), lapi.bouncer("hostA"));
    let (mb, kb) = (lapi.machine("hostB"), lapi.bouncer("hostB"));
    let da = member(&lab, &a, "a", &both(&ma, &ka));
    let db = member(&lab, &b, "b", &both(&mb, &kb));
    assert_eq!(scanner.fetch(&b.v4, 80).trim(), "hello");

    nmap(&scanner, &["-sS", "-p", "1-100"], &a.v4);
    assert!(
        a.becomes_blocked(&scanner.v4),
        "A did not block the scanner"
    );
    let lag = time_until(Duration::from_secs(10), || in_fleet(&b, &scanner.v4));
    eprintln!("A's block reached B's fleet4 after {lag:?} (pull_interval {PULL:?})");
    assert!(
        lag.is_some_and(|l| l <= soon()),
        "B did not block the scanner within {:?}: {lag:?}\n{}",
        soon(),
        db.log_text()
    );
    // B was never scanned, and the scanner gets nothing from it any more.
    assert!(
        !db.log_text().contains("attackalert: TCP"),
        "{}",
        db.log_text()
    );
    assert_eq!(scanner.tcp_connect(&b.v4, 80), "timeout");
    let (_, list) = db.cli(&b, &["list"]);
    let line = list
        .lines()
        .find(|l| l.starts_with(&format!("{} ", scanner.v4)))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(
        line.contains(" fleet  portsentry/port-scan (crowdsec)"),
        "{list}"
    );

    // The LAPI holds A's decision: our scenario, scope Ip, about the block's hour.
    let d = lapi.ours(&scanner.v4).expect("the LAPI holds our decision");
    assert_eq!(
        (&d["scope"], &d["type"]),
        (&Value::from("Ip"), &Value::from("ban"))
    );
    assert_eq!(d["machine_id"], "hostA");
    let left = d["duration"].as_str().unwrap();
    assert!(left.starts_with("59m") || left.starts_with("1h"), "{d}");
    // No echo: B pushed nothing (it blocked nothing of its own).
    assert!(
        lapi.decisions().iter().all(|d| d["machine_id"] != "hostB"),
        "{:?}",
        lapi.decisions()
    );

    // cscli deletes it: lifted on B within the interval (A's own block stays A's).
    lapi.cscli(&["decisions", "delete", "--ip", &scanner.v4]);
    let gone = time_until(Duration::from_secs(10), || !in_fleet(&b, &scanner.v4));
    assert!(
        gone.is_some_and(|l| l <= soon()),
        "not lifted on B: {gone:?}"
    );
    assert_eq!(scanner.fetch(&b.v4, 80).trim(), "hello");
    assert!(a.is_blocked(&scanner.v4));

    // cscli adds decisions: an address, an IPv4 range, an IPv6 range reach both hosts.
    lapi.cscli(&["decisions", "add", "--ip", "198.18.0.9", "--duration", "1h"]);
    lapi.cscli(&[
        "decisions",
        "add",
        "--range",
        "198.18.1.0/24",
        "--duration",
        "1h",
    ]);
    lapi.cscli(&[
        "decisions",
        "add",
        "--range",
        "2001:db8:77::/48",
        "--duration",
        "1h",
    ]);
    for host in [&a, &b] {
        for what in ["198.18.0.9", "198.18.1.0/24", "2001:db8:77::/48"] {
            let t = time_until(Duration::from_secs(10), || in_fleet(host, what));
            assert!(
                t.is_some_and(|l| l <= soon()),
                "{what} did not reach {} within {:?}",
                host.ns,
                soon()
            );
        }
    }
    let (_, status) = db.cli(&b, &["status"]);
    assert!(
        status.contains(&format!("crowdsec:         http://{LAPI}:8080 connected")),
        "{status}"
    );
    assert!(counter(&status, "fleet blocks") >= 3, "{status}");
    assert!(counter(&status, "pulls") >= 2, "{status}");
    let (_, status) = da.cli(&a, &["status"]);
    assert!(counter(&status, "alerts pushed") >= 1, "{status}");
    assert_eq!(counter(&status, "alerts waiting"), 0, "{status}");
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn decisions_for_a_hosts_own_addresses_are_not_enforced_there() {
    let mut lab = Lab::new();
    let a = lab.host("a", 1);
    let lapi_host = lab.host("lapi", 10);
    let lapi = Lapi::start(&lab, &lapi_host);
    // A's gateway: a default route through 192.0.2.254.
    a.ok(&["ip", "route", "add", "default", "via", "192.0.2.254"]);
    let key = lapi.bouncer("hostA");
    let da = member(
        &lab,
        &a,
        "a",
        &format!("bouncer_key_file = \"{}\"", key.display()),
    );
    for (flag, what) in [
        ("--ip", "192.0.2.1"),       // A itself
        ("--ip", "192.0.2.254"),     // its gateway
        ("--ip", LAPI),              // the LAPI it talks to
        ("--range", "192.0.2.0/24"), // its LAN
        ("--range", "0.0.0.0/0"),
        ("--range", "::/0"),
        ("--ip", "2001:db8::1"),
    ] {
        lapi.cscli(&["decisions", "add", flag, what, "--duration", "1h"]);
    }
    // A marker after them: once it is in, the others have been looked at.
    lapi.cscli(&[
        "decisions",
        "add",
        "--ip",
        "198.18.0.77",
        "--duration",
        "1h",
    ]);
    assert!(wait_until(Duration::from_secs(10), || in_fleet(
        &a,
        "198.18.0.77"
    )));
    // A few more pulls: still refused, and said once each.
    std::thread::sleep(PULL * 2);
    for what in [
        "192.0.2.1",
        "192.0.2.254",
        LAPI,
        "192.0.2.0/24",
        "0.0.0.0/0",
        "::/0",
        "2001:db8::1",
    ] {
        assert!(!in_fleet(&a, what), "{what} enforced on A");
    }
    let log = da.log_text();
    for what in [
        "192.0.2.1 ",
        "192.0.2.254 ",
        "192.0.2.0/24 ",
        "0.0.0.0/0 ",
        "::/0 ",
    ] {
        let said = log
            .lines()
            .filter(|l| l.contains(&format!("for {what}")) && l.contains("not enforced"))
            .count();
        assert_eq!(said, 1, "{what}: said {said} times\n{log}");
    }
    // A can still reach the LAPI (and so still pulls).
    let (_, status) = da.cli(&a, &["status"]);
    assert!(status.contains("connected"), "{status}");

    // Pull turned off: the fleet's blocks of this run do not outlive it.
    let mut da = da;
    assert!(da.stop_with(libc::SIGTERM).success());
    assert!(
        in_fleet(&a, "198.18.0.77"),
        "the sets keep their elements over a stop"
    );
    let _da = member(&lab, &a, "a", "");
    assert!(
        !in_fleet(&a, "198.18.0.77"),
        "a fleet block outlived [crowdsec]"
    );
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn with_the_lapi_down_blocking_goes_on_and_alerts_arrive_when_it_is_back() {
    let mut lab = Lab::new();
    let a = lab.host("a", 1);
    let s1 = lab.host("scanner1", 2);
    let b = lab.host("b", 3);
    let s2 = lab.host("scanner2", 5);
    let s3 = lab.host("scanner3", 6);
    let lapi_host = lab.host("lapi", 10);
    let mut lapi = Lapi::start(&lab, &lapi_host);
    let ma = lapi.machine("hostA");
    let kb = lapi.bouncer("hostB");
    let mut da = member(
        &lab,
        &a,
        "a",
        &format!("credentials = \"{}\"", ma.display()),
    );
    let _db = member(
        &lab,
        &b,
        "b",
        &format!("bouncer_key_file = \"{}\"", kb.display()),
    );

    // With the LAPI up: A pushes (and holds a token), B pulls.
    nmap(&s1, &["-sS", "-p", "1-100"], &a.v4);
    assert!(wait_until(Duration::from_secs(10), || lapi
        .ours(&s1.v4)
        .is_some()));
    assert!(wait_until(Duration::from_secs(10), || in_fleet(&b, &s1.v4)));

    // The LAPI dies (its restart voids A's token): A still blocks at once, B keeps
    // enforcing what it pulled.
    lapi.kill();
    let started = Instant::now();
    nmap(&s2, &["-sS", "-p", "1-100"], &a.v4);
    assert!(a.becomes_blocked(&s2.v4));
    eprintln!("scan and block with the LAPI down: {:?}", started.elapsed());
    std::thread::sleep(PULL * 2);
    assert!(
        in_fleet(&b, &s1.v4),
        "B dropped a fleet block while the LAPI was down"
    );
    assert_eq!(s1.tcp_connect(&b.v4, 22), "timeout");
    let (_, status) = da.cli(&a, &["status"]);
    assert!(status.contains("unreachable"), "{status}");
    assert_eq!(counter(&status, "alerts waiting"), 1, "{status}");
    let spool = lab.dir.join("a/crowdsec-spool.json");
    assert!(spool.exists(), "the alert is not on disk");

    // Back: A logs in again (401 on the old token) and the alert goes, with its time.
    lapi.run(&lapi_host);
    let arrived = time_until(Duration::from_secs(30), || lapi.ours(&s2.v4).is_some());
    eprintln!("the alert made while the LAPI was down arrived {arrived:?} after its return");
    assert!(arrived.is_some(), "{}", da.log_text());
    assert!(wait_until(Duration::from_secs(5), || !spool.exists()));

    // Down again, a third scanner, and A restarts meanwhile: the spool survives it.
    lapi.kill();
    let before = portsentry::fleet::wire::epoch(std::time::SystemTime::now());
    nmap(&s3, &["-sS", "-p", "1-100"], &a.v4);
    assert!(a.becomes_blocked(&s3.v4));
    assert!(wait_until(Duration::from_secs(15), || spool.exists()));
    assert!(da.stop_with(libc::SIGTERM).success());
    let da = Daemon::start_with(&lab, &a, &lab.dir.join("a/portsentry.toml"));
    assert!(da.wait_log("alerts for the CrowdSec LAPI waiting from an earlier run"));
    std::thread::sleep(Duration::from_secs(2));
    lapi.run(&lapi_host);
    assert!(
        wait_until(Duration::from_secs(30), || lapi.ours(&s3.v4).is_some()),
        "{}",
        da.log_text()
    );
    // Replayed with its original time, not the time it was sent.
    let d = lapi.ours(&s3.v4).unwrap();
    let start = d["start_at"].as_str().unwrap_or_default().to_string();
    let at = humantime::parse_rfc3339_weak(&start.replace(" +0000 UTC", "").replace(' ', "T"))
        .map(portsentry::fleet::wire::epoch)
        .unwrap_or(0);
    assert!(
        at >= before.saturating_sub(1) && at <= before + 15,
        "{start} vs {before}"
    );
}

/// A LAPI that takes the connection and never answers: the push thread waits out its
/// timeout; blocking never waits for it.
#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn a_lapi_that_hangs_never_delays_a_local_block() {
    let mut lab = Lab::new();
    let a = lab.host("a", 1);
    let lapi_host = lab.host("lapi", 10);
    let hang = lapi_host.spawn(&[
        "socat",
        &format!("TCP4-LISTEN:8080,bind={LAPI},fork,reuseaddr"),
        "EXEC:sleep 600",
    ]);
    lab.keep(hang);
    assert!(wait_until(Duration::from_secs(5), || {
        lapi_host.ok(&["ss", "-Htln"]).contains(":8080 ")
    }));
    let creds = lab.write("hang.yaml", "login: a\npassword: b\n");
    fs::set_permissions(&creds, fs::Permissions::from_mode(0o600)).unwrap();
    let key = lab.write("hang.key", "k\n");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let da = member(&lab, &a, "a", &both(&creds, &key));
    let mut worst = Duration::ZERO;
    for last in [2u8, 5, 6, 7] {
        let s = lab.host(&format!("s{last}"), last);
        // One probe (a SYN to watched port 111), and the time until its block.
        let probe = s.spawn(&[
            "socat",
            "-T1",
            "-u",
            "OPEN:/dev/null",
            &format!("TCP4:{}:111,connect-timeout=1", a.v4),
        ]);
        lab.keep(probe);
        let t = time_until(Duration::from_secs(5), || a.is_blocked(&s.v4));
        assert!(t.is_some(), "{}", da.log_text());
        worst = worst.max(t.unwrap_or_default());
    }
    eprintln!("slowest probe-to-block with a hung LAPI: {worst:?}");
    // The push thread sits in a 15 s call meanwhile; each block still comes at once (the
    // polling here is 50 ms, and starting the probe's process counts too).
    assert!(worst < Duration::from_secs(1), "{worst:?}");
    let (_, status) = da.cli(&a, &["status"]);
    assert!(counter(&status, "alerts waiting") >= 1, "{status}");
}

/// CrowdSec's own nftables bouncer, on a third host, blocks the scanner our daemon
/// reported: the alert is a decision any bouncer takes.
#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn crowdsecs_own_firewall_bouncer_blocks_what_we_reported() {
    let mut lab = Lab::new();
    let a = lab.host("a", 1);
    let scanner = lab.host("scanner", 2);
    let c = lab.host("c", 4);
    let lapi_host = lab.host("lapi", 10);
    let lapi = Lapi::start(&lab, &lapi_host);
    lab.serve(&c, 80);
    let ma = lapi.machine("hostA");
    let _da = member(
        &lab,
        &a,
        "a",
        &format!("credentials = \"{}\"", ma.display()),
    );
    let key = lapi.cscli(&["bouncers", "add", "fwbouncer", "-o", "raw"]);
    let dir = lab.dir.join("fwbouncer");
    fs::create_dir_all(&dir).unwrap();
    let cfg = lab.write(
        "fwbouncer/crowdsec-firewall-bouncer.yaml",
        &format!(
            "mode: nftables\npid_dir: {d}/\nupdate_frequency: 1s\ndaemonize: false\nlog_mode: stdout\nlog_level: info\n\
             api_url: http://{LAPI}:8080/\napi_key: {key}\ninsecure_skip_verify: false\ndisable_ipv6: false\n\
             deny_action: DROP\ndeny_log: false\nsupported_decisions_types:\n  - ban\n\
             blacklists_ipv4: crowdsec-blacklists\nblacklists_ipv6: crowdsec6-blacklists\n\
             nftables:\n  ipv4:\n    enabled: true\n    set-only: false\n    table: crowdsec\n    chain: crowdsec-chain\n\
             \x20 ipv6:\n    enabled: true\n    set-only: false\n    table: crowdsec6\n    chain: crowdsec6-chain\n\
             prometheus:\n  enabled: false\n",
            d = dir.display(),
            key = key.trim()
        ),
    );
    let log = fs::File::create(dir.join("bouncer.log")).unwrap();
    let bouncer = c
        .cmd(&["crowdsec-firewall-bouncer", "-c", cfg.to_str().unwrap()])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    lab.keep(bouncer);
    assert_eq!(scanner.fetch(&c.v4, 80).trim(), "hello");
    nmap(&scanner, &["-sS", "-p", "1-100"], &a.v4);
    let listed = |c: &Host| {
        String::from_utf8_lossy(
            &c.run(&[
                "nft",
                "list",
                "set",
                "ip",
                "crowdsec",
                "crowdsec-blacklists",
            ])
            .stdout,
        )
        .into_owned()
    };
    assert!(
        wait_until(Duration::from_secs(10), || listed(&c).contains(&scanner.v4)),
        "{}\n{}",
        listed(&c),
        fs::read_to_string(dir.join("bouncer.log")).unwrap_or_default()
    );
    assert_eq!(scanner.tcp_connect(&c.v4, 80), "timeout");
}

/// A startup pull of a large list (20,000 decisions, imported with cscli) reaches the
/// fleet sets in one go, and a probe meanwhile is blocked as fast as ever: the fleet's
/// writes never hold the book the responder needs.
#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn a_large_decision_list_is_taken_without_holding_up_local_blocks() {
    const N: u32 = 20_000;
    let mut lab = Lab::new();
    let a = lab.host("a", 1);
    let s = lab.host("scanner", 2);
    let lapi_host = lab.host("lapi", 10);
    let lapi = Lapi::start(&lab, &lapi_host);
    let mut csv = String::from("duration,scope,value,reason\n");
    for i in 0..N {
        let addr = std::net::Ipv4Addr::from(0xC612_0000u32 + 0x100 + i);
        csv.push_str(&format!("4h,Ip,{addr},test-list\n"));
    }
    let list = lab.write("list.csv", &csv);
    let t = Instant::now();
    lapi.cscli(&["decisions", "import", "-i", list.to_str().unwrap()]);
    eprintln!("cscli imported {N} decisions in {:?}", t.elapsed());
    let key = lapi.bouncer("hostA");
    let t = Instant::now();
    let da = member(
        &lab,
        &a,
        "a",
        &format!("bouncer_key_file = \"{}\"", key.display()),
    );
    // A probe while the list comes in.
    let probe = s.spawn(&[
        "socat",
        "-T1",
        "-u",
        "OPEN:/dev/null",
        &format!("TCP4:{}:111,connect-timeout=1", a.v4),
    ]);
    lab.keep(probe);
    let blocked = time_until(Duration::from_secs(5), || a.is_blocked(&s.v4));
    let all = time_until(Duration::from_secs(60), || {
        let (_, status) = da.cli(&a, &["status"]);
        counter(&status, "fleet blocks") == u64::from(N)
    });
    eprintln!(
        "{N} decisions enforced {:?} after the daemon started ({:?} after it was ready); a probe meanwhile was blocked in {blocked:?}",
        t.elapsed(),
        all
    );
    assert!(all.is_some(), "{}", da.log_text());
    assert!(
        blocked.is_some_and(|b| b < Duration::from_secs(1)),
        "{blocked:?}"
    );
    assert!(in_fleet(&a, "198.18.1.0") && in_fleet(&a, "198.18.78.31"));
}

/// An https LAPI signed by a CA of our own: trusted through `ca_file`, refused (and said
/// why) with the system's certificates.
#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn an_https_lapi_is_trusted_through_ca_file_only() {
    let mut lab = Lab::new();
    let a = lab.host("a", 1);
    let scanner = lab.host("scanner", 2);
    let b = lab.host("b", 3);
    let lapi_host = lab.host("lapi", 10);
    let pki = lab.dir.join("pki");
    fs::create_dir_all(&pki).unwrap();
    let p = |name: &str| pki.join(name).to_str().unwrap().to_string();
    fs::write(
        pki.join("ext.cnf"),
        format!(
            "subjectAltName=IP:{LAPI}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
        ),
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let (ca_key, ca) = (p("ca.key"), p("ca.pem"));
    let mut req = vec!["openssl", "req", "-x509"];
    req.extend(ec);
    req.extend([
        "-keyout",
        &ca_key,
        "-out",
        &ca,
        "-days",
        "2",
        "-subj",
        "/CN=portsentry test CA",
    ]);
    ok(&req);
    let (key, csr, cert, ext) = (p("lapi.key"), p("lapi.csr"), p("lapi.pem"), p("ext.cnf"));
    let mut req = vec!["openssl", "req"];
    req.extend(ec);
    req.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=lapi"]);
    ok(&req);
    ok(&[
        "openssl",
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        &cert,
        "-days",
        "2",
        "-extfile",
        &ext,
    ]);
    let lapi = Lapi::start_tls(&lab, &lapi_host, Some((Path::new(&cert), Path::new(&key))));
    let (ma, ka) = (lapi.machine("hostA"), lapi.bouncer("hostA"));
    let da = member_with(
        &lab,
        &a,
        "a",
        "https",
        &format!("{}\nca_file = \"{ca}\"", both(&ma, &ka)),
    );
    let kb = lapi.bouncer("hostB");
    let db = member_with(
        &lab,
        &b,
        "b",
        "https",
        &format!("bouncer_key_file = \"{}\"", kb.display()),
    );
    nmap(&scanner, &["-sS", "-p", "1-100"], &a.v4);
    assert!(
        wait_until(Duration::from_secs(10), || lapi.ours(&scanner.v4).is_some()),
        "{}",
        da.log_text()
    );
    lapi.cscli(&["decisions", "add", "--ip", "198.18.0.9", "--duration", "1h"]);
    assert!(wait_until(Duration::from_secs(10), || in_fleet(
        &a,
        "198.18.0.9"
    )));
    // B trusts only the system's certificates: no pull, and status says why.
    std::thread::sleep(PULL);
    assert!(!in_fleet(&b, "198.18.0.9"));
    let (_, status) = db.cli(&b, &["status"]);
    let line = status
        .lines()
        .find(|l| l.starts_with("crowdsec:"))
        .unwrap_or("");
    assert!(
        line.contains("unreachable") && line.to_lowercase().contains("certificate"),
        "{status}"
    );
}
