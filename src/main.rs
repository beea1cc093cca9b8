use clap::{CommandFactory, Parser};
use portsentry::cli::{Cli, Command, ConfigArg};
use portsentry::config::{parse_duration, Config, ConfigError};
use portsentry::core::ports::compact;
use std::path::Path;
use std::process::ExitCode;

/// sysexits EX_CONFIG: systemd's RestartPreventExitStatus keeps a bad config from looping.
const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig(c) => {
            let _logging = portsentry::output::logging::init(cli.verbose > 0, false);
            match Config::load_trusted(c.config.as_deref()) {
                Ok((cfg, ignore)) => {
                    print_summary(&cfg);
                    print_managers();
                    // The daemon skips a bad ignore line and goes on; a check says so.
                    let mut bad = false;
                    if let Some(f) = ignore {
                        for e in &f.errors {
                            eprintln!("{e}");
                        }
                        if let Some(why) = &f.unreadable {
                            eprintln!("warning: ignore file: {why}; portsentry runs without it");
                        }
                        bad = !f.errors.is_empty();
                        println!(
                            "  ignore file: {} entries, {} bad lines",
                            f.nets.len(),
                            f.errors.len()
                        );
                    }
                    if bad {
                        ExitCode::from(EX_CONFIG)
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => config_error(&e),
            }
        }
        Command::Run(c) => {
            let (cfg, ignore) = match Config::load_trusted(c.config.as_deref()) {
                Ok(loaded) => loaded,
                Err(e) => return config_error(&e),
            };
            let logging = portsentry::output::logging::init(cli.verbose > 0, cfg.syslog);
            // A thread that dies must not leave a daemon that looks healthy: the packet
            // thread's socket would close (bypass lets everything through) or blocking
            // would stop. End the process; systemd restarts it, blocks come back from the
            // state file. Straight to stderr: the log writers are threads too.
            std::panic::set_hook(Box::new(|info| {
                eprintln!("adminalert: ERROR: {info}; stopping so the service is restarted");
                std::process::abort();
            }));
            match portsentry::daemon::run(cfg, ignore, &logging) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("adminalert: ERROR: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::List { json, config } => {
            control(&config, if json { "list json" } else { "list" }.into())
        }
        Command::Status { json, config } => {
            control(&config, if json { "status json" } else { "status" }.into())
        }
        Command::Unblock { addr, config } => control(&config, format!("unblock {addr}")),
        Command::Block {
            addr,
            timeout,
            config,
        } => {
            let t = match timeout.as_deref().map(|t| parse_duration(t, true)) {
                None => String::new(),
                Some(Ok(None)) => " permanent".into(),
                Some(Ok(Some(d))) => format!(" {}", d.as_secs()),
                Some(Err(e)) => {
                    eprintln!("--timeout: {e}");
                    return ExitCode::from(2);
                }
            };
            control(&config, format!("block {addr}{t}"))
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "portsentry",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Command::ImportLegacy {
            conf,
            default,
            ignore,
        } => import_legacy(&conf, default.as_deref(), ignore.as_deref()),
    }
}

fn load(c: &ConfigArg) -> Result<Config, ConfigError> {
    match &c.config {
        Some(p) => Config::load(p),
        None => Config::load_default(),
    }
}

fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("{e}");
    ExitCode::from(EX_CONFIG)
}

fn control(c: &ConfigArg, request: String) -> ExitCode {
    let cfg = match load(c) {
        Ok(cfg) => cfg,
        Err(e) => return config_error(&e),
    };
    let stdout = std::io::stdout();
    match portsentry::control::request_to(&cfg.control_socket, &request, &mut stdout.lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portsentry: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Where Debian's PortSentry 1.2 kept its modes (TCP_MODE, UDP_MODE).
const LEGACY_DEFAULT: &str = "/etc/default/portsentry";

fn import_legacy(conf: &Path, default: Option<&Path>, ignore: Option<&Path>) -> ExitCode {
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    let result = (|| -> Result<String, String> {
        let text = read(conf)?;
        // Without --default, the file 1.2's init script read, when this host has it.
        let default = default.or_else(|| Some(Path::new(LEGACY_DEFAULT)).filter(|p| p.exists()));
        let default_text = default.map(read).transpose()?;
        let default_path = default.map(|p| p.display().to_string());
        let ignore_text = ignore.map(read).transpose()?;
        let ignore_path = ignore.map(|p| p.display().to_string());
        portsentry::config::legacy::import(
            &conf.display().to_string(),
            &text,
            default_path.as_deref().zip(default_text.as_deref()),
            ignore_path.as_deref().zip(ignore_text.as_deref()),
            &which,
        )
        .map_err(|e| e.to_string())
    })();
    match result {
        Ok(toml) => {
            print!("{toml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("portsentry: {e}");
            ExitCode::from(EX_CONFIG)
        }
    }
}

/// A bare program name as PortSentry 1.2's `sh -c` found it: first on the PATH Debian's init
/// script gave the daemon, then on ours. Directories are canonicalised (/sbin → /usr/sbin
/// on merged-/usr systems), never the program: iptables is a symlink that dispatches on
/// its name.
fn which(name: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let ours = std::env::var_os("PATH").unwrap_or_default();
    ["/bin", "/usr/bin", "/sbin", "/usr/sbin"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .chain(std::env::split_paths(&ours))
        .filter(|d| d.is_absolute())
        .map(|d| d.canonicalize().unwrap_or(d).join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .map(|p| p.display().to_string())
}

/// The host's firewall managers and what, if anything, to do about them.
fn print_managers() {
    use portsentry::core::managers::{advise, Level};
    let seen = portsentry::system::managers::look();
    let found: Vec<&str> = seen.managers().iter().map(|m| m.name()).collect();
    println!(
        "  firewall managers: {}",
        if found.is_empty() {
            "none".to_string()
        } else {
            found.join(", ")
        }
    );
    for a in advise(&seen) {
        let level = match a.level {
            Level::Ok => "ok",
            Level::Note => "note",
            Level::Warning => "warning",
        };
        println!("  {level}: {}", a.text);
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
        "  trigger: {}, score: {}, block tcp: {:?}, udp: {:?}, timeout: {}",
        cfg.trigger,
        cfg.score,
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
    print_crowdsec(cfg);
    print_actions(cfg);
    if let Some(log) = &cfg.block_log {
        println!(
            "  log of blocked sources' dropped packets: prefix \"{}\", {}/{}, burst {}",
            log.prefix, log.rate, log.per, log.burst
        );
    }
}

/// `check`'s CrowdSec lines: the LAPI, push and pull, and what the unit must allow.
fn print_crowdsec(cfg: &Config) {
    let Some(cs) = &cfg.crowdsec else { return };
    let on = |p: &Option<std::path::PathBuf>, what: &str| {
        p.as_ref().map_or(format!("no {what}"), |p| {
            format!("{what} ({})", p.display())
        })
    };
    println!(
        "  crowdsec: {}, {}, {} every {}",
        cs.lapi_url,
        on(&cs.credentials, "push"),
        on(&cs.bouncer_key_file, "pull"),
        humantime::format_duration(cs.pull_interval)
    );
    // The unit denies IP traffic; say exactly what to allow.
    let allow = match cs.lapi_addr() {
        Some(a) => a.to_string(),
        None => {
            let host = cs.lapi_url.split_once("://").map_or("", |(_, r)| r);
            let host = host.split('/').next().unwrap_or("");
            let with_port = if host.contains(':') {
                host.to_string()
            } else {
                format!("{host}:443")
            };
            let mut addrs: Vec<String> = std::net::ToSocketAddrs::to_socket_addrs(&with_port)
                .map(|a| a.map(|a| a.ip().to_string()).collect())
                .unwrap_or_default();
            addrs.sort();
            addrs.dedup();
            addrs.push("and your DNS resolvers".into());
            addrs.join(" ")
        }
    };
    println!(
        "  crowdsec: under the systemd unit (IPAddressDeny=any), allow the LAPI with `systemctl edit portsentry`: [Service] IPAddressAllow={allow}"
    );
}

/// `check`'s actions line, if any is configured.
fn print_actions(cfg: &Config) {
    let a = &cfg.actions;
    let mut actions = Vec::new();
    if !a.run.is_empty() {
        actions.push(format!(
            "run ({} command{})",
            a.run.len(),
            if a.run.len() == 1 { "" } else { "s" }
        ));
    }
    if let Some((_, file)) = &a.hosts_deny {
        actions.push(format!("hosts.deny line ({})", file.display()));
    }
    if !a.route.is_empty() {
        actions.push(format!(
            "route ({} command{})",
            a.route.len(),
            if a.route.len() == 1 { "" } else { "s" }
        ));
    }
    if !actions.is_empty() {
        println!("  actions: {}", actions.join(", "));
    }
}
