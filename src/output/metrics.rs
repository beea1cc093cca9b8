//! Prometheus text exposition for node_exporter's textfile collector. No per-address
//! labels: cardinality stays fixed whatever the traffic.

use crate::core::stats::{Stats, KINDS};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

/// Gauges and counters that do not live in `Stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Extra {
    pub blocked_now: u64,
    pub queue_dropped: u64,
    pub user_dropped: u64,
}

pub fn render(s: &Stats, extra: Extra) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP portsentry_{name} {help}");
        let _ = writeln!(out, "# TYPE portsentry_{name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "portsentry_{name}{labels} {v}");
        }
    };
    let probes: Vec<(String, u64)> = KINDS
        .iter()
        .zip(&s.probes)
        .map(|((proto, kind), c)| {
            (
                format!("{{proto=\"{proto}\",type=\"{kind}\"}}"),
                Stats::get(c),
            )
        })
        .collect();
    metric(
        "probes_total",
        "counter",
        "Probes to watched ports, by protocol and scan type.",
        &probes,
    );
    // Metrics with one unlabelled sample, in exposition order.
    let single: [(&str, &str, &str, u64); 11] = [
        ("alerts_total", "counter", "Sources that reached the trigger.", Stats::get(&s.acted)),
        ("blocks_total", "counter", "Addresses written to the block sets.", Stats::get(&s.blocks_written)),
        ("block_failures_total", "counter", "Blocks the kernel refused.", Stats::get(&s.block_failures)),
        ("unblocks_total", "counter", "Addresses unblocked by the administrator.", Stats::get(&s.unblocks)),
        ("commands_total", "counter", "Actions run (command, hosts.deny, route).", Stats::get(&s.commands_run)),
        ("command_failures_total", "counter", "Actions that failed.", Stats::get(&s.commands_failed)),
        ("log_lines_dropped_total", "counter", "Log lines dropped because the journal or syslog was not keeping up.", Stats::get(&s.log_dropped)),
        ("reports_dropped_total", "counter", "Blocks and alerts whose lines were not written: reporting (name lookups, the log) was behind.", Stats::get(&s.reports_dropped)),
        ("unparsed_total", "counter", "Queued packets that were not readable probes.", Stats::get(&s.unparsed)),
        ("queue_dropped_total", "counter", "Packets the kernel dropped because the queue was full.", extra.queue_dropped),
        ("queue_user_dropped_total", "counter", "Packets the kernel could not hand to the daemon.", extra.user_dropped),
    ];
    for (name, kind, help, v) in single {
        metric(name, kind, help, &[(String::new(), v)]);
    }
    metric(
        "blocked",
        "gauge",
        "Addresses blocked now.",
        &[(String::new(), extra.blocked_now)],
    );
    fleet(&mut out, &s.fleet);
    out
}

/// The fleet (CrowdSec LAPI) metrics: pushes, pulls, failures, fleet blocks.
fn fleet(out: &mut String, f: &crate::core::stats::FleetStats) {
    let up = u64::from(Stats::get(&f.state) == crate::core::stats::FleetStats::UP);
    #[rustfmt::skip]
    let rows: [(&str, &str, &str, u64); 10] = [
        ("fleet_lapi_up", "gauge", "1 when the CrowdSec LAPI answered the last call.", up),
        ("fleet_alerts_pushed_total", "counter", "Alerts the LAPI accepted.", Stats::get(&f.alerts_pushed)),
        ("fleet_push_failures_total", "counter", "Calls to push alerts that failed.", Stats::get(&f.push_failures)),
        ("fleet_alerts_dropped_total", "counter", "Blocks not handed to the push thread (it was behind).", Stats::get(&f.alerts_dropped)),
        ("fleet_alerts_waiting", "gauge", "Alerts waiting for the LAPI (spooled on disk while it is away).", f.waiting()),
        ("fleet_pulls_total", "counter", "Decision stream calls answered.", Stats::get(&f.pulls)),
        ("fleet_pull_failures_total", "counter", "Decision stream calls that failed.", Stats::get(&f.pull_failures)),
        ("fleet_blocked", "gauge", "Elements of the fleet sets now.", Stats::get(&f.blocked)),
        ("fleet_decisions", "gauge", "Fleet decisions held now.", Stats::get(&f.decisions)),
        ("fleet_refused_total", "counter", "Fleet decisions not enforced: protected networks, or past max_decisions.", Stats::get(&f.refused)),
    ];
    for (name, kind, help, v) in rows {
        let _ = writeln!(out, "# HELP portsentry_{name} {help}");
        let _ = writeln!(out, "# TYPE portsentry_{name} {kind}");
        let _ = writeln!(out, "portsentry_{name} {v}");
    }
}

/// Writes the file atomically, as the textfile collector expects (it may read at any time).
pub fn write(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("prom.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::probe::ScanKind;
    use crate::core::stats::kind_index;

    #[test]
    fn renders_prometheus_text() {
        let s = Stats::default();
        Stats::inc(&s.probes[kind_index(ScanKind::Xmas)]);
        Stats::inc(&s.acted);
        let text = render(
            &s,
            Extra {
                blocked_now: 3,
                queue_dropped: 0,
                user_dropped: 0,
            },
        );
        assert!(
            text.contains("portsentry_probes_total{proto=\"tcp\",type=\"xmas\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE portsentry_blocked gauge\nportsentry_blocked 3\n"),
            "{text}"
        );
        assert!(text.contains("portsentry_alerts_total 1\n"));
        // Every sample line is `name{labels} value` or `name value`.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, v) = l.rsplit_once(' ').unwrap();
            assert!(
                name.starts_with("portsentry_") && v.parse::<u64>().is_ok(),
                "{l}"
            );
        }
    }
}
