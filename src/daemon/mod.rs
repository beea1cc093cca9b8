//! `portsentry run`: bind the queue, put the table, sets and steering in place, restore
//! blocks, start the threads, then hand the main thread to `upkeep`. This file wires; the
//! settings each part gets come from `config::settings`.
//!
//! May use: `core`, `config`, `control`, `dataplane`, `firewall`, `fleet`, `output`,
//! `system`.
//! Nothing imports the daemon.

pub mod actions;
pub mod liveness;
pub mod names;
pub mod reporter;
pub mod responder;
pub mod state;
pub mod upkeep;

use crate::config::Config;
use crate::control;
use crate::core::ignore::IgnoreFile;
use crate::core::ignore::IgnoreList;
use crate::core::policy::Blocks;
use crate::core::stats::Stats;
use crate::dataplane::nfqueue::QueueSocket;
use crate::dataplane::shards::Shards;
use crate::dataplane::{self, Control, Controls, Handoff};
use crate::firewall::nft::Nft;
use crate::firewall::{Firewall, FirewallError, Set, Steering};
use crate::output::logging::Logging;
use crate::output::metrics::{Extra, ExtraSource, Metrics};
use crate::output::scrape;
use crate::system::clock::epoch_now;
use crate::system::host::{Infrastructure, Watch};
use crate::system::notify::notify;
use crate::system::proc::queue_counters;
use reporter::{report_queue, Reporter};
use responder::{run_actions, Responder, Shared};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use state::StateFile;
use std::sync::mpsc::{channel, sync_channel, Receiver};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;
use upkeep::{
    apply_sets, check_include, ignore_entries, protected, restore, status_info, Handles, Running,
    Table,
};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Firewall(#[from] FirewallError),
    #[error("cannot bind NFQUEUE {num}: {error} (is another process using this queue number?)")]
    Queue { num: u16, error: std::io::Error },
    #[error("{0}")]
    Setup(String),
}

/// Capacity of the decision channel: room for a burst of distinct sources.
const EVENT_CAPACITY: usize = 65_536;
const ACTION_CAPACITY: usize = 4096;
/// Outcomes waiting for the reporter at most (about 100 bytes each, allocated as they come).
const REPORT_CAPACITY: usize = 65_536;

/// Runs the daemon until SIGTERM or SIGINT.
///
/// # Errors
/// `DaemonError` when it cannot start: a queue taken, the table refused, a thread or the
/// signal handlers not had.
pub fn run(
    cfg: Config,
    ignore_file: Option<IgnoreFile>,
    logging: &Logging,
) -> Result<(), DaemonError> {
    tracing::warn!(
        "adminalert: PortSentry {} is starting.",
        env!("CARGO_PKG_VERSION")
    );
    // Files and sockets are opened as root; from here on only CAP_NET_ADMIN is needed.
    if let Err(e) = crate::system::privileges::keep_only_net_admin() {
        tracing::warn!("could not drop capabilities other than CAP_NET_ADMIN: {e}");
    }
    check_include(&cfg);
    let infra = Infrastructure::read().unwrap_or_else(|e| {
        tracing::error!("adminalert: ERROR: cannot read the host's addresses and routes: {e}");
        Infrastructure::default()
    });
    warn_resolvers_outside(&cfg, &infra);
    let ignore_nets = ignore_entries(ignore_file, &[]);
    let protected = protected(&cfg, &ignore_nets, &infra);
    let state_file = StateFile::new(cfg.state_file.clone());
    let book = load_blocks(&cfg, &state_file, &protected);

    // Bind before steering: with `bypass`, packets steered before we listen are accepted.
    let queues = bind_queues(&cfg)?;
    let (table, book) = put_table(&cfg, &protected, book, &state_file)?;
    let Started {
        handles,
        handoff,
        control_rxs,
    } = start_threads(&cfg, book, table.steering)?;
    start_queues(
        &cfg,
        queues,
        &protected,
        &handles.stats,
        &handoff,
        control_rxs,
    )?;
    tracing::warn!("adminalert: PortSentry is now active and listening.");
    notify("READY=1");

    let signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| DaemonError::Setup(format!("signal handlers: {e}")))?;
    let watch = Watch::open()
        .map_err(|e| tracing::error!("adminalert: ERROR: cannot follow address and route changes: {e}; re-reading them every {}s instead", upkeep::RESOLVER_REFRESH.as_secs()))
        .ok();
    let running = Running::new(cfg, table, handles, state_file, infra, ignore_nets);
    running.serve(signals, watch, logging);
    Ok(())
}

/// The block state of the last run, for the policy's book.
fn load_blocks(cfg: &Config, state_file: &StateFile, protected: &IgnoreList) -> Blocks {
    let records = state_file.load().unwrap_or_else(|e| {
        tracing::error!("adminalert: ERROR: block state: {e}; starting with no remembered blocks");
        Vec::new()
    });
    let mut book = Blocks::new(cfg.policy(), protected.clone());
    book.load(records, epoch_now());
    book
}

/// One queue socket per packet thread, bound.
fn bind_queues(cfg: &Config) -> Result<Vec<QueueSocket>, DaemonError> {
    let mut queues = Vec::new();
    for i in 0..cfg.queues {
        let opts = cfg.queue(i);
        queues.push(
            dataplane::queue::open(&opts).map_err(|error| DaemonError::Queue {
                num: opts.num,
                error,
            })?,
        );
    }
    Ok(queues)
}

/// Builds the table with its sets and steering, puts back the blocks of the last run,
/// and seals it.
fn put_table(
    cfg: &Config,
    protected: &IgnoreList,
    mut book: Blocks,
    state_file: &StateFile,
) -> Result<(Table<Nft>, Blocks), DaemonError> {
    let mut fw = Nft::open()?;
    let spec = cfg.table();
    let built = fw.build(&spec)?;
    apply_sets(&mut fw, cfg, protected)?;
    // Without pull, nothing would ever lift the fleet's blocks of an earlier run.
    if cfg
        .crowdsec
        .as_ref()
        .is_none_or(|c| c.bouncer_key_file.is_none())
    {
        let now = epoch_now();
        let (fleet, protected) = book.fleet();
        let protected = protected.clone();
        fleet.sync(Vec::new(), &protected, now);
        fleet.write(now, |plan| {
            let removed = fw.remove_blocks(Set::Fleet, &plan.remove).is_ok();
            (removed, Vec::new())
        });
    }
    let book = Mutex::new(book);
    let restored = restore(&mut fw, &book);
    let book = book.into_inner().unwrap_or_else(|e| e.into_inner());
    // Reading and writing a large state left its transient memory free: hand it back.
    crate::system::proc::release_free_memory();
    if let Err(e) = fw.seal() {
        // The first check will put it right.
        tracing::warn!("adminalert: {e}");
    }
    if restored > 0 {
        tracing::warn!(
            "adminalert: restored {restored} blocks from {}",
            state_file.path().display()
        );
    }
    tracing::warn!(
        "adminalert: steering probes to {} with the {}",
        queue_range(cfg),
        built.steering.name()
    );
    let table = Table {
        fw,
        spec,
        steering: built.steering,
    };
    Ok((table, book))
}

/// What the threads off the packet path leave for the packet threads and the main one.
struct Started {
    handles: Handles,
    handoff: Arc<Handoff>,
    control_rxs: Vec<Receiver<Control>>,
}

/// Starts the threads off the packet path: actions, reporter, block writer (and the
/// fleet's), metrics and the control server.
fn start_threads(cfg: &Config, book: Blocks, steering: Steering) -> Result<Started, DaemonError> {
    let stats = Arc::new(Stats::default());
    let blocks = Arc::new(Mutex::new(book));
    let settings = Arc::new(RwLock::new(cfg.settings()));
    let actions = Arc::new(RwLock::new(cfg.actions.clone()));
    let mut control_rxs = Vec::new();
    let control_tx = Controls::new(
        (0..cfg.queues)
            .map(|_| {
                let (tx, rx) = channel();
                control_rxs.push(rx);
                tx
            })
            .collect(),
    );

    let (job_tx, job_rx) = sync_channel(ACTION_CAPACITY);
    {
        let (actions, stats) = (actions.clone(), stats.clone());
        spawn("actions", move || run_actions(job_rx, actions, stats))?;
    }

    let (wake_tx, wake_rx) = sync_channel(1);
    let handoff = Arc::new(Handoff {
        events: crossbeam_queue::ArrayQueue::new(
            if crate::dataplane::Fault::from_env() == Some(crate::dataplane::Fault::SmallHandoff) {
                64
            } else {
                EVENT_CAPACITY
            },
        ),
        wake: wake_tx.clone(),
    });
    let time_to_block = crate::output::metrics::time_to_block();
    let shared = Shared {
        settings: settings.clone(),
        blocks: blocks.clone(),
        stats: stats.clone(),
        control: control_tx.clone(),
        time_to_block: time_to_block.clone(),
    };
    let metrics = Arc::new(Metrics::new(
        stats.clone(),
        extra_source(blocks.clone(), cfg.queue_num, cfg.queues),
        time_to_block,
    ));
    serve_metrics(cfg, &metrics)?;
    let (report_tx, report_rx) = report_queue(REPORT_CAPACITY);
    let reporter = Reporter::new(
        settings.clone(),
        Some(&cfg.history),
        Some(&cfg.blocked),
        cfg.alerts_per_second,
    );
    let reopen_logs = reporter.reopen_flag();
    spawn("reporter", move || reporter.run(report_rx))?;
    let mut responder = Responder::new(Nft::open()?, shared, report_tx, Some(job_tx));
    if let Some(fleet) = cfg.fleet() {
        responder = start_fleet(fleet, &settings, &blocks, &stats, responder)?;
    }
    {
        let handoff = handoff.clone();
        spawn("responder", move || responder.run(handoff, wake_rx))?;
    }
    let handles = Handles {
        control: control_tx,
        wake: wake_tx,
        settings,
        actions,
        blocks,
        info: Arc::new(RwLock::new(status_info(cfg, steering))),
        stats,
        metrics,
        reopen_logs,
    };
    serve_control(cfg, &handles)?;
    Ok(Started {
        handles,
        handoff,
        control_rxs,
    })
}

/// `/metrics` over HTTP, with `metrics_listen`; a port that cannot be had is logged.
fn serve_metrics(cfg: &Config, metrics: &Arc<Metrics>) -> Result<(), DaemonError> {
    let Some(addr) = cfg.metrics_listen else {
        return Ok(());
    };
    match std::net::TcpListener::bind(addr) {
        Ok(listener) => {
            let metrics = metrics.clone();
            spawn("metrics", move || scrape::serve(listener, metrics))?;
            tracing::info!("serving /metrics on http://{addr}");
        }
        Err(e) => {
            tracing::error!("adminalert: ERROR: [metrics] listen {addr}: {e}; no /metrics endpoint")
        }
    }
    Ok(())
}

/// The control socket's server; a socket that cannot be bound is logged.
fn serve_control(cfg: &Config, handles: &Handles) -> Result<(), DaemonError> {
    match control::bind(&cfg.control_socket) {
        Ok(listener) => {
            let server = control::Server {
                fw: Mutex::new(Nft::open()?),
                blocks: handles.blocks.clone(),
                settings: handles.settings.clone(),
                control: handles.control.clone(),
                stats: handles.stats.clone(),
                info: handles.info.clone(),
            };
            spawn("control", move || server.serve(listener))?;
        }
        Err(e) => tracing::error!(
            "adminalert: ERROR: control socket {}: {e}; list/block/unblock/status will not work",
            cfg.control_socket.display()
        ),
    }
    Ok(())
}

/// One packet thread per queue; the sources in as many shards, each counted in one
/// whichever queue its probes reach.
fn start_queues(
    cfg: &Config,
    queues: Vec<QueueSocket>,
    protected: &IgnoreList,
    stats: &Arc<Stats>,
    handoff: &Arc<Handoff>,
    control_rxs: Vec<Receiver<Control>>,
) -> Result<(), DaemonError> {
    stats.set_shards(queues.len());
    let shards = Arc::new(Shards::new(&cfg.detector(), protected, control_rxs));
    let coalesce = cfg.queue(0).coalesce;
    for (shard, mut q) in queues.into_iter().enumerate() {
        let (qstats, handoff, shards) = (stats.clone(), handoff.clone(), shards.clone());
        let mut served = HostServed::new(cfg.served_protocols.clone());
        spawn(&format!("queue {shard}"), move || {
            dataplane::queue::run(
                &mut q,
                &shards,
                &handoff,
                &qstats,
                shard,
                coalesce,
                &mut served,
                Instant::now,
            );
        })?;
    }
    Ok(())
}

/// The fleet's threads: push (with `credentials`), fed by the responder without waiting,
/// and pull (with `bouncer_key_file`), writing the fleet sets through its own netlink
/// socket. Neither is on the packet path.
fn start_fleet(
    fleet: crate::config::settings::FleetSettings,
    settings: &Arc<RwLock<crate::config::settings::Settings>>,
    blocks: &Arc<Mutex<Blocks>>,
    stats: &Arc<Stats>,
    mut responder: Responder<Nft>,
) -> Result<Responder<Nft>, DaemonError> {
    use crate::fleet::{pull::Puller, push::Pusher, Outbox};
    // Before the threads, which say how their first call went.
    Stats::set(&stats.fleet.state, crate::core::stats::FleetStats::WAITING);
    let mut ways = Vec::new();
    if fleet.secrets.machine.is_some() {
        let (outbox, rx) = Outbox::new(stats.clone());
        let pusher = Pusher::new(settings.clone(), fleet.spool.clone(), stats.clone());
        spawn("fleet push", move || pusher.run(rx))?;
        responder = responder.with_fleet(outbox);
        ways.push("pushing this host's blocks");
    }
    if fleet.secrets.bouncer_key.is_some() {
        let puller = Puller::new(
            Nft::open()?,
            blocks.clone(),
            settings.clone(),
            stats.clone(),
        );
        spawn("fleet pull", move || puller.run())?;
        ways.push("pulling the fleet's decisions");
    }
    tracing::warn!(
        "adminalert: CrowdSec LAPI {}: {} (every {})",
        fleet.lapi_url,
        ways.join(", "),
        humantime::format_duration(fleet.pull_interval)
    );
    Ok(responder)
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), DaemonError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(|_| ())
        .map_err(|e| DaemonError::Setup(format!("thread {name}: {e}")))
}

/// Under the shipped unit the daemon may send IP traffic to this host only: with
/// resolve_host and a resolver elsewhere, every lookup would fail. Say what to add.
fn warn_resolvers_outside(cfg: &Config, infra: &Infrastructure) {
    let under_systemd = std::env::var_os("INVOCATION_ID").is_some();
    let outside: Vec<String> = infra
        .resolvers
        .iter()
        .filter(|r| !r.is_loopback())
        .map(ToString::to_string)
        .collect();
    if cfg.resolve_host && under_systemd && !outside.is_empty() {
        tracing::warn!(
            "adminalert: resolve_host: the unit allows IP traffic to this host only; for lookups through {} add a drop-in with IPAddressAllow={} (see portsentry(8))",
            outside.join(", "),
            outside.join(" ")
        );
    }
}

/// What the metrics read at encode time beyond the counters: the blocks standing and
/// waiting (a moment's lock), the kernel's queue counters.
fn extra_source(blocks: Arc<Mutex<Blocks>>, queue: u16, queues: u16) -> ExtraSource {
    Arc::new(move || {
        let (blocked_now, blocks_pending) = {
            let mut book = blocks.lock().unwrap_or_else(|e| e.into_inner());
            book.prune(epoch_now());
            (book.len() as u64, book.pending() as u64)
        };
        let (_, queue_dropped, user_dropped) = queue_counters(queue, queues).unwrap_or_default();
        Extra {
            blocked_now,
            blocks_pending,
            queue_dropped,
            user_dropped,
        }
    })
}

/// "queue 0", or "queues 0-3".
pub fn queue_range(cfg: &Config) -> String {
    if cfg.queues > 1 {
        format!(
            "queues {}-{}",
            cfg.queue_num,
            u32::from(cfg.queue_num) + u32::from(cfg.queues) - 1
        )
    } else {
        format!("queue {}", cfg.queue_num)
    }
}

/// What this host serves that the kernel's `socket` lookup cannot see, read from /proc and
/// /sys (system::listening) by each packet thread for itself. Read again when a quarter
/// second old: a service started a moment ago is seen before its first client is taken
/// for a scanner, and a flood of such probes costs at most four reads a second.
struct HostServed {
    configured: Vec<u8>,
    read_at: Option<Instant>,
    protocols: [bool; 256],
    sctp: crate::core::ports::PortSet,
}

impl HostServed {
    const FRESH: std::time::Duration = std::time::Duration::from_millis(250);

    fn new(configured: Vec<u8>) -> HostServed {
        HostServed {
            configured,
            read_at: None,
            protocols: [false; 256],
            sctp: crate::core::ports::PortSet::new(),
        }
    }
}

impl dataplane::Served for HostServed {
    fn serves(&mut self, probe: &crate::core::probe::Probe) -> bool {
        let now = Instant::now();
        if self
            .read_at
            .is_none_or(|t| now.duration_since(t) >= Self::FRESH)
        {
            self.protocols = crate::system::listening::served_protocols(&self.configured);
            self.sctp = crate::system::listening::listening(crate::core::probe::Proto::Sctp);
            self.read_at = Some(now);
        }
        match probe.kind {
            crate::core::probe::ScanKind::IpProtocol => self
                .protocols
                .get(usize::from(probe.dst_port))
                .copied()
                .unwrap_or(false),
            _ => self.sctp.contains(probe.dst_port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::HostServed;
    use crate::core::probe::{Probe, ScanKind};
    use crate::dataplane::Served;

    fn probe(kind: ScanKind, port: u16) -> Probe {
        Probe::example("192.0.2.2", port, kind)
    }

    #[test]
    fn configured_protocols_are_served_and_others_by_what_the_host_has() {
        let mut s = HostServed::new(vec![50, 51]);
        assert!(s.serves(&probe(ScanKind::IpProtocol, 50)));
        assert!(s.serves(&probe(ScanKind::IpProtocol, 51)));
        // Protocol 253 (experimental): no module handles it; served only with a raw socket.
        let raw = crate::system::listening::listening(crate::core::probe::Proto::Ip);
        assert_eq!(
            s.serves(&probe(ScanKind::IpProtocol, 253)),
            raw.contains(253)
        );
        // An SCTP port is served only with an endpoint (none without the sctp module).
        let eps = crate::system::listening::listening(crate::core::probe::Proto::Sctp);
        assert_eq!(
            s.serves(&probe(ScanKind::SctpInit, 36412)),
            eps.contains(36412)
        );
    }
}
