//! Command-line definition (one source for help, completions and the man page).

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "portsentry",
    version,
    about = "Port-scan detector and blocker (nftables + NFQUEUE)",
    long_about = "Detects port scans aimed at unused ports, drops the probes and blocks the scanner \
                  in an nftables set, with PortSentry 1.2 compatible logs and history."
)]
pub struct Cli {
    /// More log output (-v: debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Configuration file [default: /etc/portsentry/portsentry.toml, or built-in defaults
    /// when it does not exist].
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Run(ConfigArg),
    /// Check a configuration file and print the settings it gives; exit 78 on error.
    CheckConfig(ConfigArg),
    /// List blocked addresses with the time they have left and why.
    List {
        /// One JSON array, for scripts (fields: see portsentry(8)).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Block an address now.
    Block {
        /// IPv4 or IPv6 address.
        addr: std::net::IpAddr,
        /// How long, e.g. 90s, 2h, 7d; "0" for permanent [default: the configured timeout].
        #[arg(long, value_name = "DURATION")]
        timeout: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Remove an address from the block sets.
    Unblock {
        addr: std::net::IpAddr,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Show modes, steering and counters of the running daemon.
    Status {
        /// One JSON object, for scripts (fields: see portsentry(8)).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print a TOML configuration equivalent to a PortSentry 1.2 portsentry.conf.
    ImportLegacy {
        /// PortSentry 1.2 configuration, e.g. /etc/portsentry/portsentry.conf.
        conf: PathBuf,
        /// Debian's /etc/default/portsentry (TCP_MODE, UDP_MODE) [default:
        /// /etc/default/portsentry when it exists, else Debian's packaged tcp and udp].
        #[arg(long, value_name = "FILE")]
        default: Option<PathBuf>,
        /// An ignore file whose entries become [ignore] addresses.
        #[arg(long, value_name = "FILE")]
        ignore: Option<PathBuf>,
    },
}
