//! Test hosts in network namespaces: a switch namespace with a bridge and one veth per host,
//! documentation addresses only. Everything is torn down on drop; nothing leaves the lab.
// geteuid and kill: libc calls with no safe wrapper in std.
#![allow(unsafe_code)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub const TARGET4: &str = "192.0.2.1";
pub const TARGET6: &str = "2001:db8::1";

pub fn require_root() {
    assert!(
        // SAFETY: geteuid takes nothing, touches no memory and cannot fail.
        unsafe { libc::geteuid() } == 0,
        "the namespace tests need root (CAP_NET_ADMIN, ip netns); run them as root, as CI does"
    );
}

/// Runs a command and returns its output; panics with stderr if it could not start.
pub fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"))
}

pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub struct Host {
    pub ns: String,
    pub v4: String,
    pub v6: String,
}

impl Host {
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {args:?} in {}: {e}", self.ns))
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} in {} failed: {}{}",
            self.ns,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.cmd(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {args:?}: {e}"))
    }

    /// A TCP connect with a short timeout: "ok", "refused" or "timeout".
    pub fn tcp_connect(&self, addr: &str, port: u16) -> &'static str {
        let target = socat_tcp(addr, port);
        let out = self.run(&["socat", "-T2", "-u", "OPEN:/dev/null", &target]);
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            "ok"
        } else if err.contains("refused") {
            "refused"
        } else {
            "timeout"
        }
    }

    /// Reads what a line-server at addr:port says.
    pub fn fetch(&self, addr: &str, port: u16) -> String {
        let target = socat_tcp(addr, port);
        let out = self.run(&["socat", "-T2", "-u", &target, "-"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn nft_set(&self, set: &str) -> String {
        self.ok(&["nft", "list", "set", "inet", "portsentry", set])
    }

    /// Whether `addr` is an element of its block set now (the exact address: 192.0.2.2
    /// does not match 192.0.2.22).
    pub fn is_blocked(&self, addr: &str) -> bool {
        let set = if addr.contains(':') {
            "blocked6"
        } else {
            "blocked4"
        };
        // No set at all (a damaged table) is "not blocked", not a failure.
        let out = self.run(&["nft", "list", "set", "inet", "portsentry", set]);
        String::from_utf8_lossy(&out.stdout)
            .split(|c: char| c.is_whitespace() || matches!(c, ',' | '{' | '}'))
            .any(|word| word == addr)
    }

    /// Waits up to 5 s for `addr` to be blocked: blocks are written off the packet path.
    pub fn becomes_blocked(&self, addr: &str) -> bool {
        wait_until(Duration::from_secs(5), || self.is_blocked(addr))
    }
}

/// socat's address for a TCP connection with a short connect timeout.
fn socat_tcp(addr: &str, port: u16) -> String {
    if addr.contains(':') {
        format!("TCP6:[{addr}]:{port},connect-timeout=2")
    } else {
        format!("TCP4:{addr}:{port},connect-timeout=2")
    }
}

pub struct Lab {
    pub prefix: String,
    pub dir: PathBuf,
    switch: String,
    hosts: Vec<String>,
    children: Vec<Child>,
}

impl Lab {
    pub fn new() -> Lab {
        require_root();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("pst{}x{n}", std::process::id() % 100_000);
        let dir = std::env::temp_dir().join(&prefix);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let switch = format!("{prefix}-sw");
        ok(&["ip", "netns", "add", &switch]);
        ok(&["ip", "-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ok(&["ip", "-n", &switch, "link", "set", "br0", "up"]);
        Lab {
            prefix,
            dir,
            switch,
            hosts: Vec::new(),
            children: Vec::new(),
        }
    }

    /// A host with `192.0.2.<last>` and `2001:db8::<last>` on eth0, plugged into the switch.
    pub fn host(&mut self, name: &str, last: u8) -> Host {
        let ns = format!("{}-{name}", self.prefix);
        let port = format!("p{last}");
        ok(&["ip", "netns", "add", &ns]);
        self.hosts.push(ns.clone());
        ok(&[
            "ip",
            "link",
            "add",
            "eth0",
            "netns",
            &ns,
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            &self.switch,
        ]);
        ok(&[
            "ip",
            "-n",
            &self.switch,
            "link",
            "set",
            &port,
            "master",
            "br0",
            "up",
        ]);
        let v4 = format!("192.0.2.{last}");
        let v6 = format!("2001:db8::{last:x}");
        ok(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{v4}/24"),
            "dev",
            "eth0",
        ]);
        ok(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{v6}/64"),
            "dev",
            "eth0",
            "nodad",
        ]);
        ok(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        ok(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        Host { ns, v4, v6 }
    }

    /// Keeps a background process for teardown.
    pub fn keep(&mut self, child: Child) {
        self.children.push(child);
    }

    /// A line server on `port` of `host`: answers "hello" to every connection.
    pub fn serve(&mut self, host: &Host, port: u16) {
        let child = host.spawn(&[
            "socat",
            &format!("TCP6-LISTEN:{port},fork,reuseaddr,ipv6only=0"),
            "SYSTEM:echo hello",
        ]);
        self.keep(child);
        wait_until(Duration::from_secs(5), || {
            host.ok(&["ss", "-Htln"]).contains(&format!(":{port} "))
        });
    }

    /// Gives `host` its own /etc/`name`, e.g. hosts or resolv.conf (`ip netns exec`
    /// bind-mounts /etc/netns/NS/NAME over it). With a directory, `default/portsentry`,
    /// that whole directory of /etc is the host's own.
    pub fn etc_file(&mut self, host: &Host, name: &str, text: &str) {
        let path = Path::new("/etc/netns").join(&host.ns).join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    /// A whole configuration (import-legacy's, say) with the daemon's files, hosts.deny,
    /// include and socket moved into the lab directory; returns its path.
    pub fn config_in_lab(&self, toml: &str) -> PathBuf {
        let mut cfg: toml::Table = toml.parse().unwrap_or_else(|e| panic!("{e}\n{toml}"));
        let dir = self.dir.display().to_string();
        let set = |cfg: &mut toml::Table, section: &str, key: &str, value: String| {
            cfg.entry(section)
                .or_insert_with(|| toml::Value::Table(Default::default()))
                .as_table_mut()
                .unwrap()
                .insert(key.into(), toml::Value::String(value));
        };
        set(&mut cfg, "files", "state_dir", dir.clone());
        set(
            &mut cfg,
            "files",
            "history",
            format!("{dir}/portsentry.history"),
        );
        set(
            &mut cfg,
            "files",
            "blocked",
            format!("{dir}/portsentry.blocked"),
        );
        set(
            &mut cfg,
            "block",
            "hosts_deny_file",
            format!("{dir}/hosts.deny"),
        );
        set(
            &mut cfg,
            "firewall",
            "include",
            nft_include().display().to_string(),
        );
        set(&mut cfg, "control", "socket", format!("{dir}/control.sock"));
        self.write("portsentry.toml", &toml::to_string(&cfg).unwrap())
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.join(name);
        fs::File::create(&p)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        p
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.hosts.iter().chain([&self.switch]) {
            let _ = run(&["ip", "netns", "del", ns]);
            let _ = fs::remove_dir_all(Path::new("/etc/netns").join(ns));
        }
    }
}

pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

pub fn nft_include() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("nft/portsentry.nft")
}

/// The portsentry daemon running in a host, logging to a file in the lab directory.
pub struct Daemon {
    child: Option<Child>,
    pub log: PathBuf,
    pub config: PathBuf,
}

impl Daemon {
    /// Starts `portsentry run` with `extra` TOML appended to a config that points its files
    /// into the lab directory, and waits until it says it is listening.
    pub fn start(lab: &Lab, host: &Host, extra: &str) -> Daemon {
        Daemon::start_with(lab, host, &Daemon::config(lab, extra))
    }

    /// `extra` TOML, with the daemon's files, include and socket in the lab directory.
    pub fn config(lab: &Lab, extra: &str) -> PathBuf {
        lab.write(
            "portsentry.toml",
            &format!(
                "{extra}\n[files]\nstate_dir = \"{dir}\"\n\n[firewall]\ninclude = \"{inc}\"\n\n[control]\nsocket = \"{dir}/control.sock\"\n",
                dir = lab.dir.display(),
                inc = nft_include().display()
            ),
        )
    }

    /// Like `start`, with `[log] syslog = true` and a private /dev whose /dev/log is the
    /// returned socket (`ip netns exec` gives the daemon its own mount namespace), read only
    /// by the test; /dev/null stays the real one.
    pub fn start_with_syslog(
        lab: &Lab,
        host: &Host,
        extra: &str,
    ) -> (Daemon, std::os::unix::net::UnixDatagram) {
        let dev = lab.dir.join("dev");
        fs::create_dir(&dev).unwrap();
        fs::File::create(dev.join("null")).unwrap();
        let syslog = std::os::unix::net::UnixDatagram::bind(dev.join("log")).unwrap();
        let config = Daemon::config(lab, &format!("{extra}\n[log]\nsyslog = true\n"));
        let wrapper = [
            "sh",
            "-c",
            r#"mount --bind /dev/null "$0/null" && mount --bind "$0" /dev && exec "$@""#,
            dev.to_str().unwrap(),
        ];
        let d = Daemon::start_wrapped(lab, host, &config, &wrapper);
        (d, syslog)
    }

    pub fn start_with(lab: &Lab, host: &Host, config: &Path) -> Daemon {
        Daemon::start_wrapped(lab, host, config, &[])
    }

    /// Like `start_with`, the daemon's command line given to `wrapper` (which must exec
    /// it, so that the pid stays the daemon's).
    pub fn start_wrapped(lab: &Lab, host: &Host, config: &Path, wrapper: &[&str]) -> Daemon {
        // Beside its configuration: several daemons in one lab keep apart.
        let log = config.parent().unwrap_or(&lab.dir).join("daemon.log");
        let file = fs::File::create(&log).unwrap();
        let mut args = wrapper.to_vec();
        args.extend([
            env!("CARGO_BIN_EXE_portsentry"),
            "run",
            "-c",
            config.to_str().unwrap(),
        ]);
        let child = host
            .cmd(&args)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start portsentry");
        let mut d = Daemon {
            child: Some(child),
            log,
            config: config.to_path_buf(),
        };
        let ready = wait_until(Duration::from_secs(15), || {
            d.log_text().contains("now active and listening") || d.exited()
        });
        assert!(
            ready && !d.exited(),
            "daemon did not start:\n{}",
            d.log_text()
        );
        d
    }

    /// Runs `portsentry ARGS -c CONFIG` in `host`; returns (success, stdout + stderr).
    pub fn cli(&self, host: &Host, args: &[&str]) -> (bool, String) {
        let mut all = vec![env!("CARGO_BIN_EXE_portsentry")];
        all.extend_from_slice(args);
        all.extend(["-c", self.config.to_str().unwrap()]);
        let out = host.run(&all);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// Runs the CLI with the lab's config when no daemon is running.
    pub fn cli_without_daemon(lab: &Lab, host: &Host, args: &[&str]) -> (bool, String) {
        let d = Daemon {
            child: None,
            log: lab.dir.join("none.log"),
            config: lab.dir.join("portsentry.toml"),
        };
        d.cli(host, args)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(Some(_))))
    }

    pub fn signal(&mut self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill takes two integers and touches no memory of ours.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// Sends `sig` and waits for the process to end.
    pub fn stop_with(&mut self, sig: i32) -> std::process::ExitStatus {
        self.signal(sig);
        let mut c = self.child.take().expect("running");
        // `ip netns exec` execs the binary, so the pid is the daemon's own.
        let start = Instant::now();
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "daemon did not stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for a log line containing `needle`.
    pub fn wait_log(&self, needle: &str) -> bool {
        self.wait_log_for(needle, Duration::from_secs(10))
    }

    pub fn wait_log_for(&self, needle: &str, limit: Duration) -> bool {
        wait_until(limit, || self.log_text().contains(needle))
    }

    /// Waits up to `limit` for the daemon to end on its own; its status if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(st) = self.child.as_mut()?.try_wait().unwrap() {
                self.child = None;
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs nmap from `host` and returns its grepable output (`-oG -`).
pub fn nmap(host: &Host, args: &[&str], target: &str) -> String {
    // nmap throttles itself hard once some probes are answered and the rest vanish (which
    // is what a block does to it); a minimum rate keeps the tests short.
    let mut all = vec![
        "timeout",
        "300",
        "nmap",
        "-n",
        "-Pn",
        "--max-retries",
        "1",
        "--min-rate",
        "2000",
        "--host-timeout",
        "120s",
        "-oG",
        "-",
    ];
    all.extend_from_slice(args);
    all.push(target);
    host.ok(&all)
}

/// (port, state) for every port nmap reports explicitly (not in an "ignored states" summary).
pub fn nmap_ports(grepable: &str) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    for line in grepable.lines() {
        if let Some(rest) = line.split("Ports: ").nth(1) {
            let rest = rest.split('\t').next().unwrap_or("");
            for entry in rest.split(", ") {
                let mut f = entry.split('/');
                if let (Some(p), Some(s)) = (f.next(), f.next()) {
                    if let Ok(p) = p.trim().parse() {
                        out.push((p, s.to_string()));
                    }
                }
            }
        }
    }
    out
}

pub fn craft() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/integration/craft.py").to_string()
}

/// (waiting, queue_dropped, user_dropped) of queue 0 inside `host`.
/// (waiting, queue_dropped, user_dropped) of every queue of `host`, summed.
pub fn queue_counters(host: &Host) -> (u64, u64, u64) {
    let text = host.ok(&["cat", "/proc/net/netfilter/nfnetlink_queue"]);
    (0..=u16::MAX)
        .take_while(|q| *q < 64)
        .filter_map(|q| portsentry::system::proc::parse_queue_counters(&text, q))
        .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2))
}

/// A counter from `portsentry status` output.
pub fn counter(status: &str, name: &str) -> u64 {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")));
    line.and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {status}"))
}

/// Spoofed sources from 198.18.0.0/15 must reach the target: a route back and no
/// reverse-path filter.
/// SYNs to watched port 111 of the target from `count` spoofed sources (198.18.0.1, …),
/// `pace_ms` apart.
pub fn spoofed_syns(attacker: &Host, count: u32, pace_ms: u32) {
    attacker.ok(&[
        "python3",
        &craft(),
        "syn",
        TARGET4,
        "111",
        "--count",
        &count.to_string(),
        "--pace-ms",
        &pace_ms.to_string(),
    ]);
}

pub fn accept_spoofed(target: &Host) {
    target.ok(&[
        "sysctl",
        "-qw",
        "net.ipv4.conf.all.rp_filter=0",
        "net.ipv4.conf.eth0.rp_filter=0",
    ]);
    target.ok(&["ip", "route", "add", "198.18.0.0/15", "dev", "eth0"]);
    target.ok(&[
        "ip",
        "-6",
        "route",
        "add",
        "2001:db8:ff::/48",
        "dev",
        "eth0",
    ]);
}
