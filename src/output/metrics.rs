//! Prometheus text exposition for node_exporter's textfile collector. No per-address
//! labels: cardinality stays fixed whatever the traffic.

use crate::core::stats::{Stats, KINDS};
use std::fmt::Write as _;
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
    out
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
