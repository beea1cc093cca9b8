//! What each component gets from the configuration, derived here and nowhere else: the
//! daemon wires these to the components, it does not translate.

use super::{Config, Secrets, SteeringChoice, WatchMode};
use crate::core::detector::DetectorConfig;
use crate::core::policy::{PolicyConfig, MAX_TIMEOUT};
use crate::core::probe::Proto;
use crate::dataplane::QueueOptions;
use crate::firewall::{LogRule, Steering, TableSpec};

/// What the fleet threads (push and pull) read at each call; a reload may change it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetSettings {
    /// http(s)://host:port, without a trailing slash.
    pub lapi_url: String,
    /// The machine's login and password (push), the bouncer key (pull), the CA file's PEM.
    pub secrets: Secrets,
    pub pull_interval: std::time::Duration,
    pub max_decisions: usize,
    /// Alerts waiting for the LAPI (`state_dir/crowdsec-spool.json`).
    pub spool: std::path::PathBuf,
}

/// What a reload may change and the threads off the packet path read: once per batch.
#[derive(Clone, Debug)]
pub struct Settings {
    pub resolve_host: bool,
    /// 1.2's $MODE$ per protocol.
    pub tcp_mode: &'static str,
    pub udp_mode: &'static str,
    /// Any command, hosts.deny line or route configured.
    pub actions: bool,
    /// IPv6 blocks cover this prefix.
    pub ipv6_prefix: u8,
    /// `[crowdsec]`, for the fleet threads (shared: a batch clones `Settings`).
    pub fleet: Option<std::sync::Arc<FleetSettings>>,
}

impl Config {
    /// The packet thread's detector.
    #[must_use]
    pub fn detector(&self) -> DetectorConfig {
        DetectorConfig {
            trigger: self.trigger,
            window: self.window,
            tcp: self.block_tcp,
            udp: self.block_udp,
            // A source stays "acted on" as long as its first block lasts (a century for
            // permanent); one whose block could not be made is handed back at once.
            hold: self.block_timeout.unwrap_or(MAX_TIMEOUT),
            // Each shard (one per packet thread) tracks its share of the sources.
            max_sources: (self.max_sources / usize::from(self.queues.max(1))).max(1),
            score: self.score,
            ipv6_prefix: self.ipv6_prefix,
            spare_clients: self.spare_clients,
        }
    }

    /// The block policy.
    #[must_use]
    pub fn policy(&self) -> PolicyConfig {
        PolicyConfig {
            timeout: self.block_timeout,
            repeat_factor: self.repeat_factor,
            max_timeout: self.max_timeout,
            max_blocked: self.max_blocked,
            max_per_second: self.max_per_second,
        }
    }

    /// The table: steering and the optional log rule.
    #[must_use]
    pub fn table(&self) -> TableSpec {
        TableSpec {
            queue: self.queue_num,
            queues: self.queues,
            steering: match self.steering {
                SteeringChoice::Auto => None,
                SteeringChoice::Native => Some(Steering::Native),
                SteeringChoice::Compat => Some(Steering::Compat),
            },
            log: self.block_log.as_ref().map(|b| LogRule {
                prefix: b.prefix.clone(),
                rate: b.rate,
                per: b.per.as_str(),
                burst: b.burst,
            }),
            client_timeout: self.client_timeout,
            ipv6_prefix: self.ipv6_prefix,
            listener_grace: self.listener_grace,
        }
    }

    /// The fleet threads; `None` without `[crowdsec]`.
    #[must_use]
    pub fn fleet(&self) -> Option<FleetSettings> {
        let cs = self.crowdsec.as_ref()?;
        Some(FleetSettings {
            lapi_url: cs.lapi_url.clone(),
            secrets: cs.secrets.clone(),
            pull_interval: cs.pull_interval,
            max_decisions: cs.max_decisions,
            spool: self.state_dir.join("crowdsec-spool.json"),
        })
    }

    /// The queue socket of packet thread `i`.
    #[must_use]
    pub fn queue(&self, i: u16) -> QueueOptions {
        QueueOptions {
            num: self.queue_num + i,
            max_len: self.queue_max_len,
            fail_open: self.fail_open,
            copy_range: crate::dataplane::nfqueue::COPY_RANGE,
            coalesce: self.queue_coalesce,
        }
    }

    /// What the responder, the reporter and the control server read.
    pub fn settings(&self) -> Settings {
        Settings {
            resolve_host: self.resolve_host,
            tcp_mode: mode_name(self.tcp.mode, Proto::Tcp),
            udp_mode: mode_name(self.udp.mode, Proto::Udp),
            actions: !self.actions.is_empty(),
            ipv6_prefix: self.ipv6_prefix,
            fleet: self.fleet().map(std::sync::Arc::new),
        }
    }
}

/// 1.2's $MODE$ names.
fn mode_name(mode: WatchMode, proto: Proto) -> &'static str {
    match (mode, proto) {
        (WatchMode::Advanced, Proto::Tcp) => "atcp",
        (WatchMode::Advanced, Proto::Udp) => "audp",
        (_, Proto::Tcp) => "stcp",
        (_, Proto::Udp) => "sudp",
        // No 1.2 mode: SCTP and IP-protocol probes follow [block] tcp.
        (_, Proto::Sctp) => "sctp",
        (_, Proto::Ip) => "ip",
    }
}
