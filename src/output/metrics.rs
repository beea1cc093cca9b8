//! Prometheus metrics, encoded by the prometheus-client crate: for node_exporter's
//! textfile collector, and for a scrape of `[metrics] listen`. No per-address labels:
//! cardinality stays fixed whatever the traffic. The counters live in `Stats` (the packet
//! path's relaxed atomics) and are read at encode time.

use crate::core::stats::{FleetStats, Stats, KINDS};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::path::Path;
use std::sync::Arc;

/// Figures that do not live in `Stats`, read when the metrics are encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Extra {
    pub blocked_now: u64,
    pub blocks_pending: u64,
    pub queue_dropped: u64,
    pub user_dropped: u64,
}

/// Where `Extra` comes from (the daemon: the block policy, /proc).
pub type ExtraSource = Arc<dyn Fn() -> Extra + Send + Sync>;

/// Time to block, in seconds: from the probe's arrival to its block in the set. Buckets
/// from 50 µs (a lone scanner) to 10 s (a retry).
pub fn time_to_block() -> Histogram {
    Histogram::new([
        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 1.0, 10.0,
    ])
}

/// The registry: the counters and gauges of `Stats` and `Extra`, and the time-to-block
/// histogram.
pub struct Metrics {
    registry: Registry,
}

#[derive(Clone)]
struct StatsCollector {
    stats: Arc<Stats>,
    extra: ExtraSource,
}

impl std::fmt::Debug for StatsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatsCollector")
    }
}

impl Collector for StatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.stats;
        let extra = (self.extra)();
        probes(&mut encoder, s)?;
        for (name, help, v) in counters(s, &extra) {
            let c = ConstCounter::new(v);
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        let gauges: [(&str, &str, u64); 2] = [
            (
                "portsentry_blocked",
                "Blocks standing now.",
                extra.blocked_now,
            ),
            (
                "portsentry_blocks_pending",
                "Blocks the kernel refused, waiting for a retry.",
                extra.blocks_pending,
            ),
        ];
        for (name, help, v) in gauges {
            let g = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        fleet(&mut encoder, &s.fleet)
    }
}

/// Probes by protocol and scan type, one family.
fn probes(encoder: &mut DescriptorEncoder, s: &Stats) -> Result<(), std::fmt::Error> {
    let counter = ConstCounter::new(0u64);
    let mut family = encoder.encode_descriptor(
        "portsentry_probes",
        "Probes to watched ports, by protocol and scan type.",
        None,
        counter.metric_type(),
    )?;
    for ((proto, kind), c) in KINDS.iter().zip(&s.probes) {
        let labels = [("proto", *proto), ("type", *kind)];
        let m = family.encode_family(&labels)?;
        ConstCounter::new(Stats::get(c)).encode(m)?;
    }
    Ok(())
}

/// The plain counters: name, help, value.
fn counters(s: &Stats, extra: &Extra) -> [(&'static str, &'static str, u64); 13] {
    [
            (
                "portsentry_alerts",
                "Sources that reached the trigger.",
                Stats::get(&s.acted),
            ),
            (
                "portsentry_spared",
                "Sources that reached the trigger while holding a live connection: reported, not blocked.",
                Stats::get(&s.spared),
            ),
            (
                "portsentry_blocks",
                "Blocks written to the sets.",
                Stats::get(&s.blocks_written),
            ),
            (
                "portsentry_block_failures",
                "Block writes the kernel refused (each is retried).",
                Stats::get(&s.block_failures),
            ),
            (
                "portsentry_unblocks",
                "Blocks lifted by the administrator.",
                Stats::get(&s.unblocks),
            ),
            (
                "portsentry_commands",
                "Actions run (command, hosts.deny, route).",
                Stats::get(&s.commands_run),
            ),
            (
                "portsentry_command_failures",
                "Actions that failed.",
                Stats::get(&s.commands_failed),
            ),
            (
                "portsentry_log_lines_dropped",
                "Log lines dropped because the journal or syslog was not keeping up.",
                Stats::get(&s.log_dropped),
            ),
            (
                "portsentry_reports_dropped",
                "Blocks and alerts whose lines were not written: reporting was behind.",
                Stats::get(&s.reports_dropped),
            ),
            (
                "portsentry_unparsed",
                "Queued packets that were not readable probes.",
                Stats::get(&s.unparsed),
            ),
            (
                "portsentry_queue_dropped",
                "Packets the kernel dropped because the queue was full.",
                extra.queue_dropped,
            ),
            (
                "portsentry_queue_user_dropped",
                "Packets the kernel could not hand to the daemon.",
                extra.user_dropped,
            ),
            (
                "portsentry_packets",
                "Packets read from the queue.",
                Stats::get(&s.packets),
            ),
    ]
}

/// The fleet (CrowdSec LAPI) metrics: pushes, pulls, failures, fleet blocks.
fn fleet(encoder: &mut DescriptorEncoder, f: &FleetStats) -> Result<(), std::fmt::Error> {
    let up = u64::from(Stats::get(&f.state) == FleetStats::UP);
    #[rustfmt::skip]
    let counters: [(&str, &str, u64); 6] = [
        ("portsentry_fleet_alerts_pushed", "Alerts the LAPI accepted.", Stats::get(&f.alerts_pushed)),
        ("portsentry_fleet_push_failures", "Calls to push alerts that failed.", Stats::get(&f.push_failures)),
        ("portsentry_fleet_alerts_dropped", "Blocks not handed to the push thread (it was behind).", Stats::get(&f.alerts_dropped)),
        ("portsentry_fleet_pulls", "Decision stream calls answered.", Stats::get(&f.pulls)),
        ("portsentry_fleet_pull_failures", "Decision stream calls that failed.", Stats::get(&f.pull_failures)),
        ("portsentry_fleet_refused", "Fleet decisions not enforced: protected networks, or past max_decisions.", Stats::get(&f.refused)),
    ];
    for (name, help, v) in counters {
        let c = ConstCounter::new(v);
        c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
    }
    #[rustfmt::skip]
    let gauges: [(&str, &str, u64); 4] = [
        ("portsentry_fleet_lapi_up", "1 when the CrowdSec LAPI answered the last call.", up),
        ("portsentry_fleet_alerts_waiting", "Alerts waiting for the LAPI (spooled on disk while it is away).", f.waiting()),
        ("portsentry_fleet_blocked", "Elements of the fleet sets now.", Stats::get(&f.blocked)),
        ("portsentry_fleet_decisions", "Fleet decisions held now.", Stats::get(&f.decisions)),
    ];
    for (name, help, v) in gauges {
        let g = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
        g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
    }
    Ok(())
}

impl Metrics {
    pub fn new(stats: Arc<Stats>, extra: ExtraSource, time_to_block: Histogram) -> Metrics {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(StatsCollector { stats, extra }));
        registry.register_with_unit(
            "portsentry_time_to_block",
            "From a probe's arrival to its source's block in the set.",
            Unit::Seconds,
            time_to_block,
        );
        Metrics { registry }
    }

    /// The Prometheus text exposition format (0.0.4), as node_exporter and a scrape read it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Only a formatter error can fail, and a String never gives one.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// Writes the file atomically, as the textfile collector expects (it may read at any time),
/// readable by all: node_exporter runs as its own user.
pub fn write(path: &Path, text: &str) -> std::io::Result<()> {
    crate::system::files::replace(path, text.as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::probe::ScanKind;
    use crate::core::stats::kind_index;

    #[test]
    fn renders_prometheus_text() {
        let s = Arc::new(Stats::default());
        Stats::inc(&s.probes[kind_index(ScanKind::Xmas)]);
        Stats::inc(&s.acted);
        let h = time_to_block();
        h.observe(0.000_2);
        let m = Metrics::new(
            s,
            Arc::new(|| Extra {
                blocked_now: 3,
                ..Extra::default()
            }),
            h,
        );
        let text = m.render();
        assert!(
            text.contains("portsentry_probes_total{proto=\"tcp\",type=\"xmas\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE portsentry_blocked gauge\nportsentry_blocked 3\n"),
            "{text}"
        );
        assert!(text.contains("portsentry_alerts_total 1\n"), "{text}");
        assert!(text.contains("portsentry_fleet_lapi_up 0\n"), "{text}");
        assert!(text.contains("portsentry_fleet_pulls_total 0\n"), "{text}");
        assert!(
            text.contains("portsentry_time_to_block_seconds_bucket{le=\"0.00025\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("portsentry_time_to_block_seconds_count 1\n"),
            "{text}"
        );
        // Every sample line is `name{labels} value` or `name value`.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, v) = l.rsplit_once(' ').unwrap();
            assert!(
                name.starts_with("portsentry_") && v.parse::<f64>().is_ok(),
                "{l}"
            );
        }
    }
}
