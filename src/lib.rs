//! portsentry: a port-scan detector and blocker on nftables and NFQUEUE.
//!
//! One packet, top to bottom: [`dataplane`] (recv) → [`core::packet`] (bytes →
//! [`core::probe::Probe`]) → [`core::detector`] (probe + now → decision) → verdict, and off
//! the packet path [`daemon::responder`] → [`core::policy`] → [`firewall`] (batched set
//! updates) + [`daemon::reporter`] → [`output`] lines.
//!
//! The folders are the layers, each saying in its `mod.rs` what it may use:
//! `core` (pure) ← `config` ← `daemon`, with `firewall`, `dataplane`, `system`, `output`
//! and `control` in between; nothing imports what imports it.

pub mod cli;
pub mod config;
pub mod control;
pub mod core;
pub mod daemon;
pub mod dataplane;
pub mod firewall;
pub mod fleet;
pub mod output;
pub mod system;
