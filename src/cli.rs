//! Command-line definition (one source for help, completions and the man page).

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "portsentry",
    version,
    about = "Port-scan detector and blocker (nftables + NFQUEUE)"
)]
pub struct Cli {
    /// More log output (-v: debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Run {
        /// Configuration file [default: /etc/portsentry/portsentry.toml, or built-in
        /// defaults when it does not exist].
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Check a configuration file and print the settings it gives; exit 78 on error.
    CheckConfig {
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}
