//! The control socket: `portsentry list | block | unblock | status` talk to the running
//! daemon over a unix socket (root only). One request line, a response ending at EOF whose
//! first line is `ok` or `error: …`. Each client is served on a thread of its own with a
//! short deadline, so an idle client holds up nobody.

use crate::firewall::Firewall;
use crate::ignore::{block_key, canonical, net_text};
use crate::policy::{clamp_timeout, Blocks, Origin, Outcome, Refusal, Want, MAX_TIMEOUT};
use crate::queue::Control;
use crate::responder::{epoch_now, Settings};
use crate::stats::Stats;
use ipnet::IpNet;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Clients served at once; more are told to come back.
const MAX_CLIENTS: usize = 16;
/// How long a client has to send its request line.
const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// Longest request line read.
const MAX_REQUEST: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    List,
    Status,
    /// `timeout`: `None` = the configured one; `Some(None)` = permanent.
    Block {
        addr: IpAddr,
        timeout: Option<Option<Duration>>,
    },
    Unblock {
        addr: IpAddr,
    },
}

pub fn parse_request(line: &str) -> Result<Request, String> {
    let mut w = line.split_whitespace();
    let verb = w.next().ok_or("empty request")?;
    let addr = |w: &mut std::str::SplitWhitespace| -> Result<IpAddr, String> {
        let a = w.next().ok_or(format!("{verb}: missing address"))?;
        a.parse::<IpAddr>()
            .map(canonical)
            .map_err(|_| format!("{verb}: '{a}' is not an IP address"))
    };
    let req = match verb {
        "list" => Request::List,
        "status" => Request::Status,
        "unblock" => Request::Unblock {
            addr: addr(&mut w)?,
        },
        "block" => {
            let a = addr(&mut w)?;
            let timeout = match w.next() {
                None => None,
                Some("permanent" | "0") => Some(None),
                Some(t) => {
                    let secs = t
                        .parse::<u64>()
                        .map_err(|_| format!("block: '{t}' is not a number of seconds"))?;
                    if secs == 0 || secs > MAX_TIMEOUT.as_secs() {
                        return Err(format!(
                            "block: {secs} s is outside 1 s to 100 years (\"permanent\" for no end)"
                        ));
                    }
                    Some(Some(Duration::from_secs(secs)))
                }
            };
            Request::Block { addr: a, timeout }
        }
        other => return Err(format!("unknown request '{other}'")),
    };
    match w.next() {
        Some(extra) => Err(format!("{verb}: unexpected '{extra}'")),
        None => Ok(req),
    }
}

/// Facts for `status` that only change at start or reload.
#[derive(Clone, Debug, Default)]
pub struct StatusInfo {
    pub version: &'static str,
    pub queue: u16,
    pub steering: String,
    pub tcp: String,
    pub udp: String,
}

pub struct Server<F: Firewall> {
    pub fw: Mutex<F>,
    pub blocks: Arc<Mutex<Blocks>>,
    pub settings: Arc<RwLock<Settings>>,
    pub control: Sender<Control>,
    pub stats: Arc<Stats>,
    pub info: Arc<RwLock<StatusInfo>>,
}

/// Binds the socket (replacing a stale one), readable and writable by root only.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

impl<F: Firewall + 'static> Server<F> {
    pub fn serve(self, listener: UnixListener) {
        let server = Arc::new(self);
        let active = Arc::new(AtomicUsize::new(0));
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            if active.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
                active.fetch_sub(1, Ordering::SeqCst);
                let _ = conn.set_write_timeout(Some(REQUEST_DEADLINE));
                let _ = conn.write_all(b"error: busy, try again\n");
                continue;
            }
            let (server, active) = (server.clone(), active.clone());
            let spawned = std::thread::Builder::new()
                .name("control client".into())
                .spawn(move || {
                    server.client(conn);
                    active.fetch_sub(1, Ordering::SeqCst);
                });
            if spawned.is_err() {
                // The closure (and its count) is gone with the failed spawn.
                tracing::warn!("control: cannot start a thread for a client");
            }
        }
    }

    fn client(&self, mut conn: UnixStream) {
        let _ = conn.set_write_timeout(Some(Duration::from_secs(30)));
        let Some(line) = read_request(&conn, Instant::now() + REQUEST_DEADLINE) else {
            return;
        };
        let reply = match parse_request(line.trim()) {
            Ok(req) => self.handle(req).unwrap_or_else(|e| format!("error: {e}\n")),
            Err(e) => format!("error: {e}\n"),
        };
        let _ = conn.write_all(reply.as_bytes());
    }

    fn fw(&self) -> std::sync::MutexGuard<'_, F> {
        self.fw.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Blocks> {
        self.blocks.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn handle(&self, req: Request) -> Result<String, String> {
        let now = epoch_now();
        match req {
            Request::List => {
                let kernel = self.fw().list_blocks().map_err(|e| e.to_string())?;
                let book = self.book();
                let mut out = String::from("ok\n");
                let _ = writeln!(
                    out,
                    "{:<40} {:>12} {:>6}  REASON",
                    "ADDRESS", "REMAINING", "BLOCKS"
                );
                for l in kernel {
                    let rec = book.get(l.net);
                    let left = l
                        .left
                        .map_or("permanent".to_string(), |d| fmt_secs(d.as_secs()));
                    let why = rec.map_or("added outside portsentry", |r| r.reason.as_str());
                    let _ = writeln!(
                        out,
                        "{:<40} {:>12} {:>6}  {}",
                        net_text(l.net),
                        left,
                        rec.map_or(1, |r| r.count),
                        why
                    );
                }
                Ok(out)
            }
            Request::Block { addr, timeout } => {
                let prefix = self
                    .settings
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .ipv6_prefix;
                let mut book = self.book();
                let key = block_key(addr, prefix, book.protected());
                let want = Want {
                    key,
                    origin: Origin::Admin,
                    timeout: timeout.map(|t| t.map(clamp_timeout)),
                    reason: "blocked by the administrator (portsentry block)".into(),
                    probe: None,
                };
                let wants = [want];
                let plan = book.plan(&wants, now);
                let mut fw = self.fw();
                if !plan.remove.is_empty() {
                    let _ = fw.remove_blocks(&plan.remove);
                }
                for k in &plan.evicted {
                    let _ = self.control.send(Control::Forget(*k));
                }
                let report = fw.add_blocks(&plan.add);
                drop(fw);
                let failed: HashMap<IpNet, String> = report
                    .failed
                    .into_iter()
                    .map(|(k, e)| (k, e.to_string()))
                    .collect();
                let done = book.commit(&wants, &plan, &failed, now);
                drop(book);
                match &done[0] {
                    Outcome::Blocked { key, timeout, .. } => {
                        Stats::inc(&self.stats.blocks_written);
                        tracing::warn!(
                            "adminalert: Host {} blocked by the administrator",
                            net_text(*key)
                        );
                        Ok(format!(
                            "ok\nblocked {} ({})\n",
                            net_text(*key),
                            timeout.map_or("permanent".into(), |t| fmt_secs(t.as_secs()))
                        ))
                    }
                    Outcome::Covered(k) => Ok(format!(
                        "ok\n{addr} is already blocked as part of {}\n",
                        net_text(*k)
                    )),
                    Outcome::Refused(Refusal::Protected) => Err(format!(
                        "{addr} is protected (the host's own address, a gateway, a resolver, loopback or the ignore list); not blocking it"
                    )),
                    Outcome::Refused(r) => Err(format!("refused by the caps ({r:?})")),
                    Outcome::Failed { error, .. } => Err(format!(
                        "the kernel refused the block: {error} (it will be retried)"
                    )),
                }
            }
            Request::Unblock { addr } => {
                let prefix = self
                    .settings
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .ipv6_prefix;
                let exact = IpNet::from(addr);
                let (mut keys, key) = {
                    let mut book = self.book();
                    let key = block_key(addr, prefix, book.protected());
                    let mut keys = book.unblock(exact);
                    keys.extend(book.unblock(key));
                    // Room was made: blocks the kernel refused (a full set) go now.
                    book.retry_now();
                    (keys, key)
                };
                let was = !keys.is_empty();
                let mut fw = self.fw();
                // Blocks added outside portsentry too: the exact address, and for IPv6 any
                // interval of the kernel's set that holds it.
                keys.push(exact);
                if addr.is_ipv6() {
                    if let Ok(listed) = fw.list_blocks() {
                        keys.extend(
                            listed
                                .iter()
                                .filter(|l| l.net.contains(&addr) && l.net.addr().is_ipv6())
                                .map(|l| l.net),
                        );
                    }
                }
                keys.sort();
                keys.dedup();
                fw.remove_blocks(&keys).map_err(|e| e.to_string())?;
                drop(fw);
                for k in keys.iter().copied().chain([key]) {
                    let _ = self.control.send(Control::Forget(k));
                }
                Stats::inc(&self.stats.unblocks);
                tracing::warn!("adminalert: Host {addr} unblocked by the administrator");
                Ok(format!(
                    "ok\nunblocked {addr}{}\n",
                    if was {
                        ""
                    } else {
                        " (it was not in portsentry's records)"
                    }
                ))
            }
            Request::Status => {
                let info = self.info.read().unwrap_or_else(|e| e.into_inner()).clone();
                let (blocked, pending) = {
                    let mut book = self.book();
                    book.prune(now);
                    (book.len(), book.pending())
                };
                let s = &self.stats;
                let (waiting, qdrop, udrop) = queue_counters(info.queue).unwrap_or((0, 0, 0));
                let mut out = String::from("ok\n");
                let _ = writeln!(out, "portsentry {}", info.version);
                let _ = writeln!(out, "queue:            {} ({})", info.queue, info.steering);
                let _ = writeln!(out, "tcp:              {}", info.tcp);
                let _ = writeln!(out, "udp:              {}", info.udp);
                let _ = writeln!(out, "blocked now:      {blocked}");
                let _ = writeln!(out, "blocks to retry:  {pending}");
                for (name, v) in [
                    ("packets", Stats::get(&s.packets)),
                    ("acted", Stats::get(&s.acted)),
                    ("repeats", Stats::get(&s.repeats)),
                    ("passed", Stats::get(&s.passed)),
                    ("unparsed", Stats::get(&s.unparsed)),
                    ("blocks written", Stats::get(&s.blocks_written)),
                    ("block failures", Stats::get(&s.block_failures)),
                    ("unblocks", Stats::get(&s.unblocks)),
                    ("commands run", Stats::get(&s.commands_run)),
                    ("commands failed", Stats::get(&s.commands_failed)),
                    ("log dropped", Stats::get(&s.log_dropped)),
                    ("reports dropped", Stats::get(&s.reports_dropped)),
                    ("queue waiting", waiting),
                    ("queue dropped", qdrop),
                    ("user dropped", udrop),
                ] {
                    let _ = writeln!(out, "{:<17} {v}", format!("{name}:"));
                }
                Ok(out)
            }
        }
    }
}

/// The request line (at most 4096 bytes), read by `deadline` in all: a read timeout alone
/// is renewed by every byte a slow client trickles.
fn read_request(mut conn: &UnixStream, deadline: Instant) -> Option<String> {
    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 512];
    while !buf.contains(&b'\n') && buf.len() < MAX_REQUEST {
        let left = deadline.checked_duration_since(Instant::now())?;
        if left.is_zero() {
            return None;
        }
        conn.set_read_timeout(Some(left)).ok()?;
        let want = chunk.len().min(MAX_REQUEST - buf.len());
        match conn.read(&mut chunk[..want]) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    let end = buf
        .iter()
        .position(|b| *b == b'\n')
        .map_or(buf.len(), |i| i + 1);
    String::from_utf8(buf[..end].to_vec()).ok()
}

/// (waiting, queue_dropped, user_dropped) for `queue` from /proc/net/netfilter/nfnetlink_queue.
pub fn queue_counters(queue: u16) -> Option<(u64, u64, u64)> {
    let text = std::fs::read_to_string("/proc/net/netfilter/nfnetlink_queue").ok()?;
    parse_queue_counters(&text, queue)
}

pub fn parse_queue_counters(text: &str, queue: u16) -> Option<(u64, u64, u64)> {
    text.lines().find_map(|l| {
        let f: Vec<u64> = l
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        (f.len() >= 7 && f[0] == u64::from(queue)).then(|| (f[2], f[5], f[6]))
    })
}

fn fmt_secs(s: u64) -> String {
    humantime::format_duration(Duration::from_secs(s)).to_string()
}

/// Client side: sends one request and returns the body, or the daemon's error.
pub fn request(socket: &Path, line: &str) -> Result<String, String> {
    let mut conn = UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot reach the portsentry daemon at {}: {e} (is it running?)",
            socket.display()
        )
    })?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    conn.write_all(format!("{line}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply).map_err(|e| e.to_string())?;
    match reply.split_once('\n') {
        Some(("ok", body)) => Ok(body.to_string()),
        Some((err, _)) => Err(err.strip_prefix("error: ").unwrap_or(err).to_string()),
        None => Err(format!("unexpected reply: {reply:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        assert_eq!(parse_request("list"), Ok(Request::List));
        assert_eq!(
            parse_request("block 192.0.2.9 60"),
            Ok(Request::Block {
                addr: "192.0.2.9".parse().unwrap(),
                timeout: Some(Some(Duration::from_secs(60)))
            })
        );
        assert_eq!(
            parse_request("block ::ffff:192.0.2.9 permanent"),
            Ok(Request::Block {
                addr: "192.0.2.9".parse().unwrap(),
                timeout: Some(None)
            })
        );
        assert!(parse_request("block 192.0.2.300").is_err());
        // A timeout the kernel cannot take is refused, not wrapped.
        assert!(parse_request("block 192.0.2.9 18446744073709552").is_err());
        assert!(parse_request("block 192.0.2.9 18446744073709551615").is_err());
        assert!(parse_request("block 192.0.2.9 3155760001").is_err());
        assert!(parse_request("unblock").is_err());
        assert!(parse_request("list extra").is_err());
        assert!(parse_request("reboot").is_err());
    }

    /// A client that sends its request a byte at a time, each within the read timeout,
    /// must still be cut off at the request deadline: sixteen of them held every slot (for
    /// as long as they kept trickling, up to 4096 bytes × 2 s each) and `status` got
    /// "busy".
    #[test]
    fn trickling_clients_are_cut_off_at_the_request_deadline() {
        use crate::firewall::memory::Memory;
        use crate::ignore::IgnoreList;
        use crate::policy::PolicyConfig;
        let dir = std::env::temp_dir().join(format!("ps-control-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("control.sock");
        let listener = bind(&path).unwrap();
        let (control, _forgotten) = std::sync::mpsc::channel();
        let server = Server {
            fw: Mutex::new(Memory::default()),
            blocks: Arc::new(Mutex::new(Blocks::new(
                PolicyConfig {
                    timeout: Some(Duration::from_secs(3600)),
                    repeat_factor: 1,
                    max_timeout: None,
                    max_blocked: 10,
                    max_per_second: 10,
                },
                IgnoreList::default(),
            ))),
            settings: Arc::new(RwLock::new(Settings {
                resolve_host: false,
                tcp_mode: "atcp",
                udp_mode: "audp",
                actions: false,
                ipv6_prefix: 64,
            })),
            control,
            stats: Arc::new(Stats::default()),
            info: Arc::default(),
        };
        std::thread::spawn(move || server.serve(listener));
        let mut slow: Vec<UnixStream> = (0..MAX_CLIENTS)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        let started = Instant::now();
        let trickle = std::thread::spawn(move || {
            while started.elapsed() < REQUEST_DEADLINE * 3 {
                for c in &mut slow {
                    let _ = c.write_all(b"s");
                }
                std::thread::sleep(REQUEST_DEADLINE / 4);
            }
        });
        std::thread::sleep(REQUEST_DEADLINE + Duration::from_millis(700));
        let reply = request(&path, "status");
        trickle.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(reply.is_ok(), "{reply:?}");
    }

    #[test]
    fn queue_counters_parse() {
        let text = "    0  12345     3 2   256     7     9       42  1\n    1  0 0 2 256 0 0 0 1\n";
        assert_eq!(parse_queue_counters(text, 0), Some((3, 7, 9)));
        assert_eq!(parse_queue_counters(text, 5), None);
    }
}
