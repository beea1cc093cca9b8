//! PortSentry's actions beyond the nft block: an external command, a hosts.deny line and a
//! route, in 1.2's order. Commands are argv arrays run directly (never through a shell:
//! $TARGET$ comes from a packet), with a time limit, on their own thread.

use crate::core::probe::Proto;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One source to act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Job {
    pub addr: IpAddr,
    pub port: u16,
    pub proto: Proto,
    /// 1.2's $MODE$: atcp/audp (advanced), stcp/sudp (port lists).
    pub mode: &'static str,
    /// `true` for `block` (all actions), `false` for `command` (the command only).
    pub block: bool,
}

fn has_command(commands: &[Vec<String>]) -> bool {
    commands.iter().any(|c| !c.is_empty())
}

pub use crate::config::ActionsConfig;

/// Replaces $TARGET$, $PORT$ and $MODE$.
pub fn substitute(template: &str, job: &Job) -> String {
    template
        .replace("$TARGET$", &job.addr.to_string())
        .replace("$PORT$", &job.port.to_string())
        .replace("$MODE$", job.mode)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Run,
    HostsDeny,
    Route,
}

/// 1.2's order: hosts.deny, route, command; the command first with KILL_RUN_CMD_FIRST.
fn steps(cfg: &ActionsConfig, job: &Job) -> Vec<Step> {
    let mut s = if !job.block {
        vec![Step::Run]
    } else if cfg.run_first {
        vec![Step::Run, Step::HostsDeny, Step::Route]
    } else {
        vec![Step::HostsDeny, Step::Route, Step::Run]
    };
    s.retain(|st| match st {
        Step::Run => has_command(&cfg.run),
        Step::HostsDeny => cfg.hosts_deny.is_some(),
        Step::Route => has_command(&cfg.route),
    });
    s
}

/// Outcome counters for status/metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub ok: u32,
    pub failed: u32,
}

/// Carries out every configured action for `job`; returns how many succeeded and failed.
/// Each result is logged with 1.2's wording.
pub fn perform(cfg: &ActionsConfig, job: &Job) -> Outcome {
    let mut out = Outcome::default();
    for step in steps(cfg, job) {
        let result = match step {
            Step::Run => run_sequence(&cfg.run, job, cfg.run_timeout).map(|cmd| {
                format!(
                    "attackalert: External command run for host: {} using command: \"{cmd}\"",
                    job.addr
                )
            }),
            Step::HostsDeny => {
                let (template, path) = cfg.hosts_deny.as_ref().expect("step filtered");
                // tcp_wrappers writes an IPv6 address in brackets.
                let target = match job.addr {
                    IpAddr::V6(a) => format!("[{a}]"),
                    a => a.to_string(),
                };
                let line = substitute(&template.replace("$TARGET$", &target), job);
                append_once(path, &line).map(|()| {
                    format!("attackalert: Host {} has been blocked via wrappers with string: \"{line}\"", job.addr)
                })
            }
            Step::Route => run_sequence(&cfg.route, job, cfg.run_timeout).map(|cmd| {
                format!(
                    "attackalert: Host {} has been blocked via dropped route using command: \"{cmd}\"",
                    job.addr
                )
            }),
        };
        match result {
            Ok(line) => {
                out.ok += 1;
                tracing::warn!("{line}");
            }
            Err(e) => {
                out.failed += 1;
                tracing::error!(
                    "adminalert: ERROR: action for host {} failed: {e}",
                    job.addr
                );
            }
        }
    }
    out
}

/// Why an action failed; the text goes to the log after "action for host … failed: ".
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("empty command")]
    Empty,
    #[error("{prog}: {error}")]
    Start { prog: String, error: std::io::Error },
    #[error("{prog} exited with {status}: {stderr}")]
    Exited {
        prog: String,
        status: std::process::ExitStatus,
        /// Trimmed.
        stderr: String,
    },
    #[error("{prog} killed after {}s time limit", limit.as_secs_f32())]
    TimedOut { prog: String, limit: Duration },
    #[error("{error} (command {n} of {of}; the rest not run)")]
    InSequence {
        error: Box<ActionError>,
        n: usize,
        of: usize,
    },
    #[error("{}: {error}", path.display())]
    File {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// Runs `commands` (tokens replaced) one after the other until one fails, all within
/// `limit`; returns them as 1.2 showed its command line, joined with " && ".
fn run_sequence(
    commands: &[Vec<String>],
    job: &Job,
    limit: Duration,
) -> Result<String, ActionError> {
    let start = Instant::now();
    let mut shown = Vec::with_capacity(commands.len());
    let commands: Vec<&Vec<String>> = commands.iter().filter(|c| !c.is_empty()).collect();
    for (i, cmd) in commands.iter().enumerate() {
        let argv: Vec<String> = cmd.iter().map(|a| substitute(a, job)).collect();
        let left = limit.saturating_sub(start.elapsed());
        if let Err(e) = run_argv(&argv, left) {
            return Err(if commands.len() > 1 {
                ActionError::InSequence {
                    error: Box::new(e),
                    n: i + 1,
                    of: commands.len(),
                }
            } else {
                e
            });
        }
        shown.push(argv.join(" "));
    }
    Ok(shown.join(" && "))
}

/// Runs `argv` with no shell, no stdin, and kills it at `limit`.
///
/// # Errors
/// `ActionError`: an empty `argv`, a program that cannot start, exits unsuccessfully
/// (with its stderr) or outlives `limit`.
pub fn run_argv(argv: &[String], limit: Duration) -> Result<(), ActionError> {
    let (prog, args) = argv.split_first().ok_or(ActionError::Empty)?;
    let start_error = |error| ActionError::Start {
        prog: prog.clone(),
        error,
    };
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(start_error)?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                return Err(ActionError::Exited {
                    prog: prog.clone(),
                    status,
                    stderr: err.trim().to_string(),
                });
            }
            Ok(None) if start.elapsed() >= limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ActionError::TimedOut {
                    prog: prog.clone(),
                    limit,
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(start_error(e)),
        }
    }
}

/// Appends `line` unless the file already has it (1.2 appended duplicates forever).
fn append_once(path: &PathBuf, line: &str) -> Result<(), ActionError> {
    let file_error = |error| ActionError::File {
        path: path.clone(),
        error,
    };
    let existing = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(file_error(e)),
    };
    if existing.lines().any(|l| l.trim() == line) {
        return Ok(());
    }
    let mut f = crate::system::files::open_for_writing(path, false, 0o644).map_err(file_error)?;
    writeln!(f, "{line}").map_err(file_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(block: bool) -> Job {
        Job {
            addr: "192.0.2.2".parse().unwrap(),
            port: 111,
            proto: Proto::Tcp,
            mode: "atcp",
            block,
        }
    }

    #[test]
    fn substitutes_tokens() {
        assert_eq!(
            substitute("ALL: $TARGET$ : DENY", &job(true)),
            "ALL: 192.0.2.2 : DENY"
        );
        assert_eq!(substitute("$MODE$/$PORT$", &job(true)), "atcp/111");
    }

    #[test]
    fn hosts_deny_writes_ipv6_in_brackets() {
        let path = std::env::temp_dir().join(format!("ps-hostsdeny6-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let cfg = ActionsConfig {
            hosts_deny: Some(("ALL: $TARGET$ : DENY".into(), path.clone())),
            ..Default::default()
        };
        let j = Job {
            addr: "2001:db8::2".parse().unwrap(),
            ..job(true)
        };
        assert_eq!(perform(&cfg, &j), Outcome { ok: 1, failed: 0 });
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "ALL: [2001:db8::2] : DENY\n"
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn order_follows_portsentry() {
        let mut cfg = ActionsConfig {
            run: vec![vec!["true".into()]],
            hosts_deny: Some(("x".into(), "/dev/null".into())),
            route: vec![vec!["true".into()]],
            ..Default::default()
        };
        assert_eq!(
            steps(&cfg, &job(true)),
            vec![Step::HostsDeny, Step::Route, Step::Run]
        );
        cfg.run_first = true;
        assert_eq!(
            steps(&cfg, &job(true)),
            vec![Step::Run, Step::HostsDeny, Step::Route]
        );
        assert_eq!(steps(&cfg, &job(false)), vec![Step::Run]);
        // An empty command is no command (the configuration never gives one).
        let cfg = ActionsConfig {
            run: vec![vec![]],
            route: vec![],
            ..Default::default()
        };
        assert!(cfg.is_empty() && steps(&cfg, &job(true)).is_empty());
    }

    #[test]
    fn commands_run_without_a_shell_and_with_a_time_limit() {
        // A target that would be dangerous in a shell stays one literal argument.
        let marker = std::env::temp_dir().join(format!("ps-noshell-{}", std::process::id()));
        let evil = format!("x; touch {}", marker.display());
        assert!(run_argv(&["echo".into(), evil], Duration::from_secs(5)).is_ok());
        assert!(!marker.exists());
        let t = Instant::now();
        let err = run_argv(&["sleep".into(), "5".into()], Duration::from_millis(200))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("time limit") && t.elapsed() < Duration::from_secs(2),
            "{err}"
        );
        assert!(run_argv(&["false".into()], Duration::from_secs(5))
            .unwrap_err()
            .to_string()
            .contains("exited"));
        assert!(run_argv(&["/nonexistent/cmd".into()], Duration::from_secs(5)).is_err());
        // The log's wording, as before the errors were typed.
        assert_eq!(
            run_argv(&["false".into()], Duration::from_secs(5))
                .unwrap_err()
                .to_string(),
            "false exited with exit status: 1: "
        );
        assert_eq!(
            run_argv(&[], Duration::from_secs(5))
                .unwrap_err()
                .to_string(),
            "empty command"
        );
    }

    #[test]
    fn hosts_deny_line_is_appended_once() {
        let path = std::env::temp_dir().join(format!("ps-hostsdeny-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let cfg = ActionsConfig {
            hosts_deny: Some(("ALL: $TARGET$ : DENY".into(), path.clone())),
            ..Default::default()
        };
        assert_eq!(perform(&cfg, &job(true)), Outcome { ok: 1, failed: 0 });
        assert_eq!(perform(&cfg, &job(true)), Outcome { ok: 1, failed: 0 });
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "ALL: 192.0.2.2 : DENY\n"
        );
        std::fs::remove_file(&path).unwrap();
    }

    /// A sequence runs in order, with the tokens replaced in every command, and stops at
    /// the first command that fails (what `&&` meant in 1.2).
    #[test]
    fn a_sequence_runs_in_order_and_stops_at_the_first_failure() {
        let dir = std::env::temp_dir().join(format!("ps-seq-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let touch = |name: &str| {
            vec![
                "/usr/bin/touch".to_string(),
                format!("{}/{name}", dir.display()),
            ]
        };
        let mut cfg = ActionsConfig {
            run: vec![touch("a-$TARGET$"), touch("b-$PORT$")],
            run_timeout: Duration::from_secs(5),
            ..Default::default()
        };
        assert_eq!(perform(&cfg, &job(true)), Outcome { ok: 1, failed: 0 });
        assert!(dir.join("a-192.0.2.2").exists() && dir.join("b-111").exists());
        assert_eq!(
            run_sequence(&cfg.run, &job(true), cfg.run_timeout).unwrap(),
            format!(
                "/usr/bin/touch {0}/a-192.0.2.2 && /usr/bin/touch {0}/b-111",
                dir.display()
            )
        );

        cfg.run = vec![touch("c"), vec!["/usr/bin/false".into()], touch("d")];
        assert_eq!(perform(&cfg, &job(false)), Outcome { ok: 0, failed: 1 });
        let err = run_sequence(&cfg.run, &job(false), cfg.run_timeout)
            .unwrap_err()
            .to_string();
        assert!(err.contains("(command 2 of 3; the rest not run)"), "{err}");
        assert!(dir.join("c").exists() && !dir.join("d").exists());

        // The time limit is for the whole sequence.
        cfg.run = vec![vec!["/usr/bin/sleep".into(), "0.3".into()]; 3];
        cfg.run_timeout = Duration::from_millis(500);
        let t = Instant::now();
        assert_eq!(perform(&cfg, &job(true)).failed, 1);
        assert!(
            t.elapsed() < Duration::from_millis(900),
            "{:?}",
            t.elapsed()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
