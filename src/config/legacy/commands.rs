//! `KILL_RUN_CMD` and `KILL_ROUTE` → argv commands run without a shell: each program found
//! as 1.2's shell found it, the drop, route and LOG idioms the nft set makes redundant
//! left out (and said so), anything that needs a shell refused with the reason.

use super::idioms::{self, Idiom, LogRule};
use super::shell::{self, Sep};
use super::write::{q, shown, Out};
use crate::config::{log_prefix_problem, DEFAULT_LOG_BURST, DEFAULT_LOG_RATE};

/// Shells whose `-c` would put the scanner's address into shell code.
const SHELLS: [&str; 10] = [
    "sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "csh", "tcsh", "busybox",
];

/// Why a command cannot become an argv command as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum NotRunnable {
    #[error("'{0} -c' runs a shell on text holding the scanner's address; put the commands in a script that takes $TARGET$ as an argument")]
    ShellC(String),
    #[error("the program name is empty")]
    Empty,
    #[error("'{0}' is a relative path (1.2 ran it from its working directory); write it as an absolute path")]
    Relative(String),
    #[error("'{0}' is not found on this host's PATH; install it, or write its absolute path")]
    NotFound(String),
}

/// Whether the nft set runs wherever a key's commands run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Cover {
    /// It does: a drop, route or LOG idiom among the commands is redundant.
    BySet,
    /// These keys (`BLOCK_TCP`/`BLOCK_UDP` set to "2") run the commands alone: their idioms
    /// are the only block, and are kept.
    Alone(Vec<&'static str>),
}

impl std::fmt::Display for Cover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cover::BySet => f.write_str("the nft set runs with it"),
            Cover::Alone(keys) => write!(
                f,
                "kept whole, as {} runs it alone, without the nft set",
                keys.iter()
                    .map(|k| format!("{k}=\"2\""))
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
        }
    }
}

/// `KILL_RUN_CMD` and `KILL_ROUTE` → argv commands.
pub(super) struct Commands<'a> {
    pub(super) which: &'a dyn Fn(&str) -> Option<String>,
    /// Whole keys that could not be converted.
    pub(super) notes: Vec<String>,
    /// The first LOG rule replaced by nftables' log: (key, command, settings).
    pub(super) log: Option<(String, String, LogRule)>,
}

impl Commands<'_> {
    /// The program as an absolute path, searched on PATH as 1.2's shell did; or why not.
    fn program(
        &self,
        key: &str,
        argv: &[String],
        out: &mut Out,
    ) -> Result<Vec<String>, NotRunnable> {
        let prog = argv[0].as_str();
        let base = prog.rsplit('/').next().unwrap_or(prog);
        let mut flags = argv[1..]
            .iter()
            .take_while(|a| a.starts_with('-') && *a != "--");
        if SHELLS.contains(&base) && flags.any(|f| f[1..].contains('c')) {
            return Err(NotRunnable::ShellC(prog.to_string()));
        }
        if prog.starts_with('/') {
            return Ok(argv.to_vec());
        }
        if prog.is_empty() {
            return Err(NotRunnable::Empty);
        }
        if prog.contains('/') {
            return Err(NotRunnable::Relative(prog.to_string()));
        }
        match (self.which)(prog).filter(|p| p.starts_with('/')) {
            Some(path) => {
                out.comment(&format!(
                    "{key}: '{prog}' resolved to {path} on this host (1.2's shell searched PATH for it)."
                ));
                let mut argv = argv.to_vec();
                argv[0] = path;
                Ok(argv)
            }
            None => Err(NotRunnable::NotFound(prog.to_string())),
        }
    }

    /// Writes `toml_key = …` with its comments, or notes why not. `cover`: whether the
    /// nft set runs wherever this key runs (else its drop/log idioms are kept as commands).
    pub(super) fn convert(
        &mut self,
        key: &str,
        toml_key: &str,
        text: &str,
        cover: &Cover,
        out: &mut Out,
    ) {
        let script = match shell::parse(text) {
            Ok(s) => s,
            Err(e) => {
                self.notes.push(format!(
                    "{key} needs a shell for {e}, and portsentry runs commands without one (the scanner's address must never reach a shell); put it in a script and name the script in [block] {toml_key}: {}",
                    shown(text)
                ));
                return;
            }
        };
        let mut kept: Vec<Vec<String>> = Vec::new();
        let mut problems: Vec<String> = Vec::new();
        let mut kept_idioms = false;
        // Said only if the key is converted.
        let mut resolved = Out::default();
        for cmd in &script.commands {
            let argv = match &cmd.argv {
                Ok(a) => a,
                Err(e) => {
                    problems.push(format!("'{}' needs a shell for {e}", shown(&cmd.text)));
                    continue;
                }
            };
            match (idioms::recognise(argv), cover) {
                (Some(idiom), Cover::BySet) => {
                    self.leave_out(key, toml_key, &cmd.text, argv, idiom, out);
                    continue;
                }
                (Some(_), Cover::Alone(_)) => kept_idioms = true,
                (None, _) => {}
            }
            match self.program(key, argv, &mut resolved) {
                Ok(a) => kept.push(a),
                Err(p) => problems.push(p.to_string()),
            }
        }
        if !problems.is_empty() {
            let whole = if script.commands.len() > 1 {
                " (a sequence runs whole or not at all)"
            } else {
                ""
            };
            self.notes.push(format!(
                "{key} is not converted{whole}: {}; portsentry runs commands without a shell (the scanner's address must never reach one): put them in a script and name the script in [block] {toml_key}: {}",
                problems.join("; "),
                shown(text)
            ));
            return;
        }
        if kept.is_empty() {
            return;
        }
        out.0.push_str(&resolved.0);
        if kept_idioms {
            out.comment(&format!("{key}: {cover}."));
        }
        if script.discarded_output {
            out.comment(&format!(
                "{key}: the redirections to /dev/null are dropped: portsentry throws a command's output away anyway (and logs its errors when it fails)."
            ));
        }
        if kept.len() > 1 && script.separators.contains(&Sep::Semi) {
            out.comment(&format!(
                "{key}: the commands run in order and stop at the first that fails; after a ';' the old command went on regardless."
            ));
        }
        out.line(&commands_toml(toml_key, &kept));
    }

    /// Says why a command the nft set makes redundant is not run (the first LOG rule is
    /// kept for `write_log`).
    fn leave_out(
        &mut self,
        key: &str,
        toml_key: &str,
        text: &str,
        argv: &[String],
        idiom: Idiom,
        out: &mut Out,
    ) {
        match idiom {
            Idiom::Drop => out.comment(&format!(
                "{key}: \"{}\" is not run: the nft set (blocked4, blocked6) already drops everything from the scanner.",
                shown(text)
            )),
            Idiom::Route => {
                let keep = self
                    .program(key, argv, &mut Out::default())
                    .map(|a| {
                        format!(
                            " To keep it anyway, add it to [block] {toml_key}: {}",
                            argv_toml(&a)
                        )
                    })
                    .unwrap_or_default();
                out.comment(&format!(
                    "{key}: \"{}\" is not run: the nft set (blocked4, blocked6) already drops all the scanner's traffic, replies to this host's own connections included, while a route would outlive the block (no timeout, untouched by portsentry unblock) and cost a process per block.{keep}",
                    shown(text)
                ));
            }
            Idiom::Log(rule) => {
                if self.log.is_none() {
                    self.log = Some((key.to_string(), shown(text), rule));
                } else {
                    out.comment(&format!(
                        "{key}: \"{}\" is not run: a second LOG rule; nftables' log below takes the first one's settings.",
                        shown(text)
                    ));
                }
            }
        }
    }

    /// nftables' log of blocked sources' dropped packets, from the LOG rule it replaces.
    pub(super) fn write_log(&mut self, out: &mut Out) {
        let Some((key, cmd, rule)) = self.log.take() else {
            return;
        };
        let prefix = rule
            .prefix
            .clone()
            .unwrap_or_else(|| "portsentry: dropped: ".into());
        if let Some(p) = log_prefix_problem(&prefix) {
            self.notes.push(format!(
                "{key}: \"{cmd}\" logged the scanner's packets, but its prefix cannot be an nftables log prefix ({p}); set [block] log_prefix to have nftables log them"
            ));
            return;
        }
        out.comment(&format!(
            "{key}: \"{cmd}\" is not run: nftables logs the packets it drops because their source is blocked instead (log_prefix, log_rate, log_burst)."
        ));
        if rule.prefix.is_none() {
            out.comment("The old rule had no prefix; one is needed here.");
        }
        if let Some(level) = rule
            .level
            .filter(|l| !matches!(l.as_str(), "4" | "warn" | "warning"))
        {
            out.comment(&format!(
                "Its --log-level {level} is not carried over: nftables logs at level warn."
            ));
        }
        let rate = if let Some((n, per)) = rule.limit {
            format!("{n}/{per}")
        } else {
            out.comment("The old rule logged every packet; this log is always rate-limited.");
            DEFAULT_LOG_RATE.to_string()
        };
        out.line(&format!("log_prefix = {}", q(&prefix)));
        out.line(&format!("log_rate = {}", q(&rate)));
        out.line(&format!(
            "log_burst = {}",
            rule.burst.unwrap_or(DEFAULT_LOG_BURST)
        ));
    }
}

fn argv_toml(argv: &[String]) -> String {
    format!(
        "[{}]",
        argv.iter().map(|a| q(a)).collect::<Vec<_>>().join(", ")
    )
}

/// One command: the original single-array form; several: an array of them.
fn commands_toml(key: &str, cmds: &[Vec<String>]) -> String {
    match cmds {
        [one] => format!("{key} = {}", argv_toml(one)),
        _ => format!(
            "{key} = [\n{}]",
            cmds.iter().fold(String::new(), |mut s, c| {
                s.push_str("  ");
                s.push_str(&argv_toml(c));
                s.push_str(",\n");
                s
            })
        ),
    }
}
