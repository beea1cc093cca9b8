mod cli;

use clap::Parser;
use cli::{Cli, Command};
use portsentry::config::{Config, ConfigError};
use portsentry::ports::compact;
use std::path::Path;
use std::process::ExitCode;

/// sysexits EX_CONFIG: systemd's RestartPreventExitStatus keeps a bad config from looping.
const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match cli.command {
        Command::CheckConfig { config } => match load(config.as_deref()) {
            Ok(cfg) => {
                print_summary(&cfg);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EX_CONFIG)
            }
        },
        Command::Run { config } => {
            let cfg = match load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EX_CONFIG);
                }
            };
            match portsentry::daemon::run(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("adminalert: ERROR: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    match path {
        Some(p) => Config::load(p),
        None => Config::load_default(),
    }
}

fn print_summary(cfg: &Config) {
    let src = cfg
        .source
        .as_ref()
        .map_or("<built-in defaults>".to_string(), |p| {
            p.display().to_string()
        });
    println!("{src}: OK");
    println!(
        "  tcp: {:?}, {} ports: {}",
        cfg.tcp.mode,
        cfg.tcp.ports.len(),
        compact(&cfg.tcp.ports)
    );
    println!(
        "  udp: {:?}, {} ports: {}",
        cfg.udp.mode,
        cfg.udp.ports.len(),
        compact(&cfg.udp.ports)
    );
    println!(
        "  trigger: {}, block tcp: {:?}, udp: {:?}, timeout: {}",
        cfg.trigger,
        cfg.block_tcp,
        cfg.block_udp,
        cfg.block_timeout
            .map_or("permanent".to_string(), |d| humantime::format_duration(d)
                .to_string())
    );
    println!(
        "  ignore: {}",
        cfg.ignore
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
}

fn init_logging(verbose: u8) {
    let level = if verbose > 0 {
        tracing::Level::DEBUG
    } else {
        tracing::Level::INFO
    };
    let b = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .with_writer(std::io::stderr);
    // Under systemd the journal adds its own timestamp and priority.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        b.without_time().with_level(false).with_ansi(false).init();
    } else {
        b.with_ansi(false).init();
    }
}
