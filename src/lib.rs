//! portsentry: a port-scan detector and blocker on nftables and NFQUEUE.
//!
//! One packet, top to bottom: [`queue`] (recv) → [`packet`] (bytes → [`probe::Probe`]) →
//! [`detector`] (probe + now → [`detector::Decision`]) → verdict, and off the packet path
//! [`responder`] → [`firewall`] (batched set updates) + [`alert`] lines.

pub mod actions;
pub mod alert;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod detector;
pub mod firewall;
pub mod host;
pub mod ignore;
pub mod legacy;
pub mod listening;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod packet;
pub mod policy;
pub mod ports;
pub mod privileges;
pub mod probe;
pub mod queue;
pub mod ratelimit;
pub mod repeats;
pub mod reporter;
pub mod responder;
pub mod state;
pub mod stats;
pub mod syslog;
