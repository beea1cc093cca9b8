//! The control socket: `portsentry list | block | unblock | status` talk to the running
//! daemon over a unix socket (root only). One request line, a response ending at EOF whose
//! first line is `ok` or `error: …`.

use crate::firewall::{Block, Firewall, Nft};
use crate::ignore::IgnoreList;
use crate::queue::Control;
use crate::responder::{epoch_now, Settings};
use crate::state::{BlockState, Record};
use crate::stats::Stats;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

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
            .map(crate::ignore::canonical)
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
                Some(t) => Some(Some(Duration::from_secs(
                    t.parse::<u64>()
                        .map_err(|_| format!("block: '{t}' is not a number of seconds"))?,
                ))),
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

pub struct Server {
    pub nft: Nft,
    pub state: Arc<Mutex<BlockState>>,
    pub settings: Arc<RwLock<Settings>>,
    pub ignore: Arc<RwLock<IgnoreList>>,
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

impl Server {
    pub fn serve(mut self, listener: UnixListener) {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut line = String::new();
            let mut reader = BufReader::new((&conn).take(4096));
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let reply = match parse_request(line.trim()) {
                Ok(req) => self.handle(req).unwrap_or_else(|e| format!("error: {e}\n")),
                Err(e) => format!("error: {e}\n"),
            };
            let _ = conn.write_all(reply.as_bytes());
        }
    }

    fn handle(&mut self, req: Request) -> Result<String, String> {
        let now = epoch_now();
        match req {
            Request::List => {
                let kernel = self.nft.list_blocks().map_err(|e| e.to_string())?;
                let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let mut out = String::from("ok\n");
                let _ = writeln!(
                    out,
                    "{:<40} {:>12} {:>6}  REASON",
                    "ADDRESS", "REMAINING", "BLOCKS"
                );
                for (addr, left) in kernel {
                    let rec = state.get(addr);
                    let left = left.map_or("permanent".to_string(), |d| fmt_secs(d.as_secs()));
                    let _ = writeln!(
                        out,
                        "{:<40} {:>12} {:>6}  {}",
                        addr.to_string(),
                        left,
                        rec.map_or(1, |r| r.count),
                        rec.map_or("added outside portsentry", |r| r.reason.as_str())
                    );
                }
                Ok(out)
            }
            Request::Block { addr, timeout } => {
                if self
                    .ignore
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(addr)
                {
                    return Err(format!(
                        "{addr} is protected (the host's own address, loopback or the ignore list); not blocking it"
                    ));
                }
                let timeout = timeout.unwrap_or_else(|| {
                    self.settings
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .timeout
                });
                let report = self.nft.add_blocks(&[Block { addr, timeout }]);
                if let Some((_, e)) = report.failed.first() {
                    return Err(format!("the kernel refused the block: {e}"));
                }
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let count = state.get(addr).map_or(1, |r| r.count + 1);
                state.upsert(Record {
                    addr,
                    since: now,
                    expires: timeout.map(|t| now + t.as_secs()),
                    count,
                    reason: "blocked by the administrator (portsentry block)".into(),
                });
                tracing::warn!("adminalert: Host {addr} blocked by the administrator");
                Ok(format!(
                    "ok\nblocked {addr} ({})\n",
                    timeout.map_or("permanent".into(), |t| fmt_secs(t.as_secs()))
                ))
            }
            Request::Unblock { addr } => {
                self.nft.remove_blocks(&[addr]).map_err(|e| e.to_string())?;
                let was = self
                    .state
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(addr);
                let _ = self.control.send(Control::Forget(addr));
                Stats::inc(&self.stats.unblocks);
                tracing::warn!("adminalert: Host {addr} unblocked by the administrator");
                Ok(format!(
                    "ok\nunblocked {addr}{}\n",
                    if was.is_some() {
                        ""
                    } else {
                        " (it was not in portsentry's records)"
                    }
                ))
            }
            Request::Status => {
                let info = self.info.read().unwrap_or_else(|e| e.into_inner()).clone();
                let blocked = self
                    .state
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .active(now)
                    .len();
                let s = &self.stats;
                let (waiting, qdrop, udrop) = queue_counters(info.queue).unwrap_or((0, 0, 0));
                let mut out = String::from("ok\n");
                let _ = writeln!(out, "portsentry {}", info.version);
                let _ = writeln!(out, "queue:            {} ({})", info.queue, info.steering);
                let _ = writeln!(out, "tcp:              {}", info.tcp);
                let _ = writeln!(out, "udp:              {}", info.udp);
                let _ = writeln!(out, "blocked now:      {blocked}");
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
        assert!(parse_request("unblock").is_err());
        assert!(parse_request("list extra").is_err());
        assert!(parse_request("reboot").is_err());
    }

    #[test]
    fn queue_counters_parse() {
        let text = "    0  12345     3 2   256     7     9       42  1\n    1  0 0 2 256 0 0 0 1\n";
        assert_eq!(parse_queue_counters(text, 0), Some((3, 7, 9)));
        assert_eq!(parse_queue_counters(text, 5), None);
    }
}
