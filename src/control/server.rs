//! The control server: the daemon's end of the socket (root only). Each client is served
//! on a thread of its own with a short deadline, so an idle client holds up nobody.

use super::protocol::{parse_request, Request};
use crate::config::settings::Settings;
use crate::core::ignore::{block_key, net_text};
use crate::core::policy::{Blocks, Origin, Outcome, Refusal, Timeout, Want};
use crate::core::stats::Stats;
use crate::dataplane::{Control, Controls};
use crate::firewall::{Firewall, FirewallError, Set};
use crate::system::clock::epoch_now;
use crate::system::proc::queue_counters;
use ipnet::IpNet;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Clients served at once; more are told to come back.
const MAX_CLIENTS: usize = 16;
/// How long a client has to send its request line.
const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// Longest a single write to a client may wait for it to read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest request line read.
const MAX_REQUEST: usize = 4096;

/// Facts for `status` that only change at start or reload.
#[derive(Clone, Debug, Default)]
pub struct StatusInfo {
    pub version: &'static str,
    pub queue: u16,
    /// Queues `queue`.., one packet thread each.
    pub queues: u16,
    pub steering: String,
    pub tcp: String,
    pub udp: String,
}

pub struct Server<F: Firewall> {
    pub fw: Mutex<F>,
    pub blocks: Arc<Mutex<Blocks>>,
    pub settings: Arc<RwLock<Settings>>,
    pub control: Controls,
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
        // Per write: a reader paging through a million blocks slowly is still served.
        let _ = conn.set_write_timeout(Some(WRITE_TIMEOUT));
        let Some(line) = read_request(&conn, Instant::now() + REQUEST_DEADLINE) else {
            return;
        };
        let reply = match parse_request(line.trim()) {
            // Streamed: a million blocks are not held in memory as one reply.
            Ok(Request::List { json }) => {
                // This client's own thread, which ends with the request: a million blocks
                // formatted must not take a CPU from the packet threads and the writer.
                crate::system::proc::lower_this_thread();
                let mut out = std::io::BufWriter::new(&conn);
                if let Err(e) = self.list(json, &mut out) {
                    let _ = writeln!(out, "error: {e}");
                }
                return;
            }
            Ok(req) => self.handle(req).unwrap_or_else(|e| format!("error: {e}\n")),
            Err(e) => format!("error: {e}\n"),
        };
        let _ = conn.write_all(reply.as_bytes());
    }

    /// Writes `ok` and every block: this host's records a page under the lock at a time
    /// (the block writer needs it), the fleet's, then blocks added to the sets outside
    /// portsentry. Written as it goes, so the first line leaves at once.
    fn list(&self, json: bool, out: &mut impl Write) -> Result<(), ControlError> {
        out.write_all(b"ok\n")?;
        if json {
            out.write_all(b"[")?;
        } else {
            writeln!(
                out,
                "{:<40} {:>12} {:>6}  {:<6} REASON",
                "ADDRESS", "REMAINING", "BLOCKS", "SOURCE"
            )?;
        }
        let mut first = true;
        let mut emit = |out: &mut dyn Write, r: ListRow| -> Result<(), ControlError> {
            if json {
                out.write_all(if first { b"\n" } else { b",\n" })?;
                serde_json::to_writer(&mut *out, &r)?;
            } else {
                let left = r
                    .remaining_seconds
                    .map_or("permanent".to_string(), fmt_secs);
                writeln!(
                    out,
                    "{:<40} {:>12} {:>6}  {:<6} {}",
                    r.address, left, r.blocks, r.source, r.reason
                )?;
            }
            first = false;
            Ok(())
        };
        let now = epoch_now();
        let mut after = None;
        let mut local = 0usize;
        loop {
            let page = self.book().page(after, LIST_CHUNK);
            let Some(last) = page.last_key() else { break };
            after = Some(last);
            local += page.len();
            for r in &page.records() {
                emit(out, ListRow::of(r, "local", now))?;
            }
            // Background work (the thread runs at nice 10): a busy CPU goes to the packet
            // path and the block writer between pages. The lock is held only to copy a
            // page, so a preempted lister holds nobody up for long.
            std::thread::yield_now();
        }
        let fleet = self.book().fleet_book().records();
        for r in &fleet {
            emit(out, ListRow::of(r, "fleet", now))?;
        }
        // The kernel dumps a large set slowly (it walks it from the start for each
        // message: half a minute for a million), so blocks added outside portsentry are
        // looked for only while the table is small.
        if local <= OUTSIDE_DUMP_MAX {
            let kernel = self.fw().list_blocks()?;
            let outside: Vec<_> = {
                let book = self.book();
                kernel
                    .into_iter()
                    .filter(|l| match l.set {
                        Set::Local => !book.stands(l.net),
                        Set::Fleet => book.fleet_book().get(l.net).is_none(),
                    })
                    .collect()
            };
            for l in outside {
                emit(
                    out,
                    ListRow {
                        address: net_text(l.net),
                        remaining_seconds: l.left.map(|d| d.as_secs()),
                        blocks: 1,
                        source: match l.set {
                            Set::Local => "local",
                            Set::Fleet => "fleet",
                        },
                        origin: "outside",
                        reason: "added outside portsentry".into(),
                    },
                )?;
            }
        } else if !json {
            writeln!(
                out,
                "# more than {OUTSIDE_DUMP_MAX} blocks: those added outside portsentry are not \
                 looked for (nft list set inet portsentry blocked4 shows them)"
            )?;
        }
        if json {
            out.write_all(b"\n]\n")?;
        }
        Ok(out.flush()?)
    }

    fn fw(&self) -> std::sync::MutexGuard<'_, F> {
        self.fw.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Blocks> {
        self.blocks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The reply to one request (`list` whole: the socket streams it instead).
    ///
    /// # Errors
    /// `ControlError`, whose text the client is shown after `error: `.
    pub fn handle(&self, req: Request) -> Result<String, ControlError> {
        let now = epoch_now();
        match req {
            Request::List { json } => {
                let mut out = Vec::new();
                self.list(json, &mut out)?;
                Ok(String::from_utf8_lossy(&out).into_owned())
            }
            Request::Block { addr, timeout } => self.block(addr, timeout, now),
            Request::Unblock { addr } => self.unblock(addr, now),
            Request::Status { json } => Ok(self.status(json, now)),
        }
    }

    fn ipv6_prefix(&self) -> u8 {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .ipv6_prefix
    }

    /// `block`: through the policy like a detection, then the kernel.
    fn block(&self, addr: IpAddr, timeout: Timeout, now: u64) -> Result<String, ControlError> {
        let prefix = self.ipv6_prefix();
        let mut book = self.book();
        let key = block_key(addr, prefix, book.protected());
        let want = Want {
            key,
            origin: Origin::Admin,
            timeout: timeout.clamped(),
            reason: "blocked by the administrator (portsentry block)".into(),
            probe: None,
        };
        let wants = [want];
        let plan = book.plan(&wants, now);
        // Planned under the lock, written without it, committed under it again:
        // the packet path and the block writer never wait on this netlink I/O.
        drop(book);
        let mut fw = self.fw();
        if !plan.remove.is_empty() {
            let _ = fw.remove_blocks(Set::Local, &plan.remove);
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
        let (done, lifted) = {
            let mut book = self.book();
            (book.commit(&wants, &plan, &failed, now), book.take_lifted())
        };
        if !lifted.is_empty() {
            // Unblocked meanwhile: this write may have landed after that delete.
            let _ = self.fw().remove_blocks(Set::Local, &lifted);
        }
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
            Outcome::Refused(Refusal::Protected) => Err(ControlError::Protected(addr)),
            Outcome::Refused(Refusal::Lifted) => Err(ControlError::Lifted(addr)),
            Outcome::Refused(r) => Err(ControlError::Capped(*r)),
            Outcome::Failed { error, .. } => Err(ControlError::KernelRefused(error.clone())),
        }
    }

    /// `unblock`: this host's blocks that hold `addr`, the fleet's, and those added
    /// outside portsentry; detection is told to see the source afresh.
    fn unblock(&self, addr: IpAddr, now: u64) -> Result<String, ControlError> {
        let prefix = self.ipv6_prefix();
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
        let lifted = self.lift_fleet(exact, now);
        // Blocks added outside portsentry too: the exact address, and for IPv6 any
        // interval of the kernel's set that holds it.
        keys.push(exact);
        self.remove_holding(addr, &mut keys)?;
        let was = was || lifted > 0;
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

    /// The fleet's blocks that hold `exact` go too, here, until the LAPI sends them
    /// again (`cscli decisions delete` lifts them everywhere); how many. The book before
    /// the firewall, as everywhere.
    fn lift_fleet(&self, exact: IpNet, now: u64) -> usize {
        // Planned under the lock, written without it, committed under it again.
        let (lifted, plan) = {
            let mut book = self.book();
            let (fleet, _) = book.fleet();
            let lifted = fleet.lift(exact);
            fleet.prune(now);
            (lifted, fleet.plan(now))
        };
        if !plan.is_empty() {
            let mut fw = self.fw();
            let removed = fw.remove_blocks(Set::Fleet, &plan.remove).is_ok();
            let report = fw.add_blocks(&plan.add);
            drop(fw);
            let failed: Vec<IpNet> = report.failed.into_iter().map(|(n, _)| n).collect();
            self.book().fleet().0.commit(&plan, removed, &failed, now);
        }
        lifted
    }

    /// Removes `keys` from the local sets, with the intervals added outside portsentry
    /// that hold `addr` (added to `keys`), and the fleet sets' such intervals.
    fn remove_holding(&self, addr: IpAddr, keys: &mut Vec<IpNet>) -> Result<(), ControlError> {
        let mut fw = self.fw();
        // As for `list`: the kernel dumps a large set slowly, so intervals added
        // outside portsentry are looked for only while the table is small.
        let small = self.book().len() <= OUTSIDE_DUMP_MAX;
        let listed = if small {
            fw.list_blocks().unwrap_or_default()
        } else {
            Vec::new()
        };
        if addr.is_ipv6() {
            keys.extend(
                listed
                    .iter()
                    .filter(|l| l.set == Set::Local)
                    .filter(|l| l.net.contains(&addr) && l.net.addr().is_ipv6())
                    .map(|l| l.net),
            );
        }
        keys.sort();
        keys.dedup();
        fw.remove_blocks(Set::Local, keys)?;
        let outside: Vec<IpNet> = listed
            .iter()
            .filter(|l| l.set == Set::Fleet && l.net.contains(&addr))
            .map(|l| l.net)
            .collect();
        fw.remove_blocks(Set::Fleet, &outside)?;
        Ok(())
    }

    /// `status`: the facts of the start or reload, the blocks, the counters.
    fn status(&self, json: bool, now: u64) -> String {
        let info = self.info.read().unwrap_or_else(|e| e.into_inner()).clone();
        let (blocked, pending) = {
            let mut book = self.book();
            book.prune(now);
            (book.len(), book.pending())
        };
        let counters = counters(&self.stats, &info);
        let fleet = fleet_status(&self.settings, &self.stats, now);
        if json {
            let status = serde_json::json!({
                "version": info.version,
                "queue": info.queue,
                "queues": info.queues,
                "steering": info.steering,
                "tcp": info.tcp,
                "udp": info.udp,
                "blocked": blocked,
                "blocks_to_retry": pending,
                "counters": counters
                    .iter()
                    .map(|(k, v)| (k.replace(' ', "_"), serde_json::json!(v)))
                    .collect::<serde_json::Map<_, _>>(),
                "crowdsec": fleet.as_ref().map(FleetStatus::json),
            });
            return format!("ok\n{status:#}\n");
        }
        let mut out = String::from("ok\n");
        let _ = writeln!(out, "portsentry {}", info.version);
        let _ = writeln!(
            out,
            "queue:            {}{} ({})",
            info.queue,
            if info.queues > 1 {
                format!("-{}", u32::from(info.queue) + u32::from(info.queues) - 1)
            } else {
                String::new()
            },
            info.steering
        );
        let _ = writeln!(out, "tcp:              {}", info.tcp);
        let _ = writeln!(out, "udp:              {}", info.udp);
        let _ = writeln!(out, "blocked now:      {blocked}");
        let _ = writeln!(out, "blocks to retry:  {pending}");
        match &fleet {
            Some(f) => f.text(&mut out),
            None => {
                let _ = writeln!(out, "crowdsec:         off");
            }
        }
        for (name, v) in counters {
            let _ = writeln!(out, "{:<17} {v}", format!("{name}:"));
        }
        out
    }
}

/// What the control server could not do; the text goes back as `error: …`.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Firewall(#[from] FirewallError),
    #[error("{0} is protected (the host's own address, a gateway, a resolver, loopback or the ignore list); not blocking it")]
    Protected(IpAddr),
    #[error("{0} was unblocked while it was being blocked; not blocking it")]
    Lifted(IpAddr),
    #[error("refused by the caps ({0:?})")]
    Capped(Refusal),
    #[error("the kernel refused the block: {0} (it will be retried)")]
    KernelRefused(String),
}

/// `status`'s counters, in the order shown.
fn counters(s: &Stats, info: &StatusInfo) -> [(&'static str, u64); 18] {
    let (waiting, qdrop, udrop) =
        queue_counters(info.queue, info.queues.max(1)).unwrap_or((0, 0, 0));
    [
        ("packets", Stats::get(&s.packets)),
        ("acted", Stats::get(&s.acted)),
        ("spared", Stats::get(&s.spared)),
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
        ("events deferred", Stats::get(&s.events_deferred)),
        ("events dropped", Stats::get(&s.events_dropped)),
        ("queue waiting", waiting),
        ("queue dropped", qdrop),
        ("user dropped", udrop),
    ]
}

/// One line of `list`; with `--json`, these field names are an interface for scripts.
#[derive(serde::Serialize)]
struct ListRow {
    address: String,
    /// `null`: permanent.
    remaining_seconds: Option<u64>,
    blocks: u32,
    /// "local" (blocked4/blocked6) or "fleet" (fleet4/fleet6).
    source: &'static str,
    /// "scan", "admin", "fleet" (a CrowdSec decision), or "outside" (added to the set by
    /// someone else).
    origin: &'static str,
    reason: String,
}

/// Records taken per hold of the policy's lock while listing.
#[cfg(not(test))]
const LIST_CHUNK: usize = 256;
/// Small in tests, so they go through more than one page.
#[cfg(test)]
const LIST_CHUNK: usize = 2;
/// Records above which `list` does not dump the kernel's sets for blocks added outside
/// portsentry (see `list`).
const OUTSIDE_DUMP_MAX: usize = 65_536;

impl ListRow {
    fn of(r: &crate::core::policy::Record, source: &'static str, now: u64) -> ListRow {
        ListRow {
            address: net_text(r.key),
            remaining_seconds: r.expires.map(|e| e.saturating_sub(now)),
            blocks: r.count,
            source,
            origin: match r.origin {
                Origin::Scan => "scan",
                Origin::Admin => "admin",
                Origin::Fleet => "fleet",
            },
            reason: r.reason.to_string(),
        }
    }
}

/// The fleet's part of `status`: the LAPI connection, the last pull, alerts waiting, and
/// the fleet's counters. `None` without `[crowdsec]`.
struct FleetStatus {
    lapi_url: String,
    /// "connected", "not contacted yet", or "unreachable".
    state: &'static str,
    error: Option<String>,
    /// Seconds since the last pull answered; `None`: never.
    last_pull_ago: Option<u64>,
    counters: [(&'static str, u64); 9],
}

fn fleet_status(settings: &RwLock<Settings>, s: &Stats, now: u64) -> Option<FleetStatus> {
    use crate::core::stats::FleetStats;
    let lapi_url = settings
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .fleet
        .as_ref()?
        .lapi_url
        .clone();
    let f = &s.fleet;
    let (state, error) = match Stats::get(&f.state) {
        FleetStats::UP => ("connected", None),
        FleetStats::WAITING => ("not contacted yet", None),
        _ => (
            "unreachable",
            Some(
                f.last_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
            ),
        ),
    };
    Some(FleetStatus {
        lapi_url,
        state,
        error,
        last_pull_ago: match Stats::get(&f.last_pull) {
            0 => None,
            t => Some(now.saturating_sub(t)),
        },
        counters: [
            ("alerts waiting", f.waiting()),
            ("alerts pushed", Stats::get(&f.alerts_pushed)),
            ("alerts dropped", Stats::get(&f.alerts_dropped)),
            ("push failures", Stats::get(&f.push_failures)),
            ("pulls", Stats::get(&f.pulls)),
            ("pull failures", Stats::get(&f.pull_failures)),
            ("fleet blocks", Stats::get(&f.blocked)),
            ("fleet decisions", Stats::get(&f.decisions)),
            ("fleet refused", Stats::get(&f.refused)),
        ],
    })
}

impl FleetStatus {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "lapi_url": self.lapi_url,
            "state": self.state,
            "error": self.error,
            "last_pull_seconds_ago": self.last_pull_ago,
            "counters": self.counters
                .iter()
                .map(|(k, v)| (k.replace(' ', "_"), serde_json::json!(v)))
                .collect::<serde_json::Map<_, _>>(),
        })
    }

    fn text(&self, out: &mut String) {
        let state = match &self.error {
            Some(e) => format!("{} ({e})", self.state),
            None => self.state.to_string(),
        };
        let _ = writeln!(out, "crowdsec:         {} {state}", self.lapi_url);
        let last = self
            .last_pull_ago
            .map_or("never".to_string(), |t| format!("{} ago", fmt_secs(t)));
        let _ = writeln!(out, "last pull:        {last}");
        for (name, v) in self.counters {
            let _ = writeln!(out, "{:<17} {v}", format!("{name}:"));
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

fn fmt_secs(s: u64) -> String {
    humantime::format_duration(Duration::from_secs(s)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::core::ignore::IgnoreList;
    use crate::firewall::memory::Memory;
    use crate::firewall::TableSpec;

    fn server(fw: Memory) -> (Server<Memory>, std::sync::mpsc::Receiver<Control>) {
        let cfg = Config::parse("t", "").unwrap();
        let mut fw = fw;
        fw.build(&TableSpec::default()).unwrap();
        let (control, forgotten) = std::sync::mpsc::channel();
        let protected = IgnoreList::new([
            "192.0.2.1/32".parse().unwrap(),
            "2001:db8::1/128".parse().unwrap(),
        ]);
        let s = Server {
            fw: Mutex::new(fw),
            blocks: Arc::new(Mutex::new(Blocks::new(cfg.policy(), protected))),
            settings: Arc::new(RwLock::new(cfg.settings())),
            control: control.into(),
            stats: Arc::new(Stats::default()),
            info: Arc::new(RwLock::new(StatusInfo::default())),
        };
        (s, forgotten)
    }

    fn held(fw: &Memory) -> Vec<String> {
        let s = fw.state();
        s.table
            .as_ref()
            .unwrap()
            .blocked
            .keys()
            .map(|k| net_text(*k))
            .collect()
    }

    /// A client that sends its request a byte at a time, each within the read timeout,
    /// must still be cut off at the request deadline: sixteen of them held every slot (for
    /// as long as they kept trickling, up to 4096 bytes × 2 s each) and `status` got
    /// "busy".
    #[test]
    fn trickling_clients_are_cut_off_at_the_request_deadline() {
        use crate::core::ignore::IgnoreList;
        use crate::core::policy::PolicyConfig;
        use crate::firewall::memory::Memory;
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
                fleet: None,
            })),
            control: control.into(),
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
        let reply = crate::control::request(&path, "status");
        trickle.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(reply.is_ok(), "{reply:?}");
    }

    #[test]
    fn block_and_unblock_go_through_the_policy_and_reach_the_firewall() {
        let fw = Memory::default();
        let (s, forgotten) = server(fw.clone());
        let block = |a: &str, t| Request::Block {
            addr: a.parse().unwrap(),
            timeout: t,
        };
        assert!(s.handle(block("198.51.100.7", Timeout::Default)).is_ok());
        // IPv6: the prefix, as detection blocks it; the host's own LAN: the address.
        assert!(s.handle(block("2001:db8:5::9", Timeout::Permanent)).is_ok());
        assert!(s.handle(block("2001:db8::9", Timeout::Default)).is_ok());
        assert_eq!(
            held(&fw),
            ["198.51.100.7", "2001:db8::9", "2001:db8:5::/64"]
        );
        let refused = s
            .handle(block("192.0.2.1", Timeout::Default))
            .unwrap_err()
            .to_string();
        assert!(refused.contains("is protected"), "{refused}");

        // Any address of a prefix block unblocks the prefix, and detection is told.
        let out = s
            .handle(Request::Unblock {
                addr: "2001:db8:5::77".parse().unwrap(),
            })
            .unwrap();
        assert!(out.starts_with("ok\nunblocked"), "{out}");
        assert_eq!(held(&fw), ["198.51.100.7", "2001:db8::9"]);
        assert!(forgotten
            .try_iter()
            .any(|c| matches!(c, Control::Forget(n) if n.to_string() == "2001:db8:5::/64")));
        assert!(s
            .blocks
            .lock()
            .unwrap()
            .covering("2001:db8:5::/64".parse().unwrap())
            .is_none());

        // A block added outside portsentry goes too.
        fw.state()
            .table
            .as_mut()
            .unwrap()
            .blocked
            .insert("198.51.100.8/32".parse().unwrap(), None);
        let out = s
            .handle(Request::Unblock {
                addr: "198.51.100.8".parse().unwrap(),
            })
            .unwrap();
        assert!(out.contains("not in portsentry's records"), "{out}");
        assert_eq!(held(&fw), ["198.51.100.7", "2001:db8::9"]);
        let list = s.handle(Request::List { json: false }).unwrap();
        assert_eq!(list.matches("198.51.100.7 ").count(), 1, "{list}");
        // For scripts: one JSON array, stable field names.
        let json = s.handle(Request::List { json: true }).unwrap();
        let rows: serde_json::Value =
            serde_json::from_str(json.strip_prefix("ok\n").unwrap()).unwrap();
        let row = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["address"] == "198.51.100.7")
            .unwrap();
        assert_eq!(row["origin"], "admin");
        assert_eq!(row["blocks"], 1);
        assert!(
            row["remaining_seconds"].as_u64().is_some_and(|s| s > 3500),
            "{row}"
        );
        let status = s.handle(Request::Status { json: true }).unwrap();
        let status: serde_json::Value =
            serde_json::from_str(status.strip_prefix("ok\n").unwrap()).unwrap();
        assert_eq!(status["blocked"], 2, "{status}");
        assert!(
            status["counters"]["blocks_written"].as_u64().is_some(),
            "{status}"
        );
    }

    /// `list` says where each block came from; `unblock` lifts a fleet block holding the
    /// address, and `status` shows the fleet's state.
    #[test]
    fn fleet_blocks_are_listed_as_such_and_unblock_lifts_them() {
        use crate::core::decisions::Decision;
        let fw = Memory::default();
        let (s, _) = server(fw.clone());
        assert!(s
            .handle(Request::Block {
                addr: "198.51.100.7".parse().unwrap(),
                timeout: Timeout::Default
            })
            .is_ok());
        let now = epoch_now();
        {
            let mut book = s.book();
            let (fleet, protected) = book.fleet();
            let protected = protected.clone();
            fleet.apply(
                vec![Decision {
                    id: 9,
                    net: "198.18.4.0/24".parse().unwrap(),
                    expires: now + 600,
                    reason: "portsentry/port-scan (crowdsec)".into(),
                }],
                &[],
                &protected,
                now,
            );
            let mut w = fw.clone();
            fleet.write(now, |plan| {
                (
                    true,
                    w.add_blocks(&plan.add)
                        .failed
                        .into_iter()
                        .map(|(n, _)| n)
                        .collect(),
                )
            });
        }
        let list = s.handle(Request::List { json: false }).unwrap();
        let line = |needle: &str| {
            list.lines()
                .find(|l| l.starts_with(needle))
                .unwrap_or("")
                .to_string()
        };
        assert!(
            line("198.51.100.7 ").contains(" local  blocked by the administrator"),
            "{list}"
        );
        assert!(
            line("198.18.4.0/24 ").contains(" fleet  portsentry/port-scan (crowdsec)"),
            "{list}"
        );
        s.handle(Request::Unblock {
            addr: "198.18.4.9".parse().unwrap(),
        })
        .unwrap();
        assert!(fw.state().table.as_ref().unwrap().fleet.is_empty());
        let status = s.handle(Request::Status { json: false }).unwrap();
        assert!(status.contains("crowdsec:         off"), "{status}");
    }
}
