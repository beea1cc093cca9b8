//! `[crowdsec]`: the validated section, its LAPI URL checked, and the files it names
//! (cscli's credentials YAML, the bouncer key, a CA) read under the configuration's rule.

use super::error::{trusted, ConfigError};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `[crowdsec]`, validated. Push is on with `credentials`, pull with `bouncer_key_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crowdsec {
    /// http:// or https://, without a trailing slash.
    pub lapi_url: String,
    pub credentials: Option<PathBuf>,
    pub bouncer_key_file: Option<PathBuf>,
    pub pull_interval: Duration,
    pub ca_file: Option<PathBuf>,
    pub max_decisions: usize,
    /// What the files above hold, read by `Config::load_trusted` (none from `parse`).
    pub secrets: Secrets,
}

impl Crowdsec {
    /// The LAPI's address when `lapi_url` names one by address: never blocked, or a fleet
    /// decision (or a scan spoofed from it) would cut this host off from its fleet.
    #[must_use]
    pub fn lapi_addr(&self) -> Option<std::net::IpAddr> {
        let host = self.lapi_url.split_once("://")?.1.split('/').next()?;
        match host.strip_prefix('[') {
            Some(r) => r.split(']').next()?.parse().ok(),
            None => host.split(':').next()?.parse().ok(),
        }
    }
}

/// The machine's login and password and the bouncer's key; never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    pub machine: Option<(String, String)>,
    pub bouncer_key: Option<String>,
    /// The `ca_file`'s PEM text.
    pub ca_pem: Option<Vec<u8>>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("machine", &self.machine.as_ref().map(|(login, _)| login))
            .field("bouncer_key", &self.bouncer_key.as_ref().map(|_| "…"))
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .finish()
    }
}

/// Longest pull interval: past it a fleet is hardly one.
pub const MAX_PULL_INTERVAL: Duration = Duration::from_secs(3600);
/// Most decisions `max_decisions` may allow (a few hundred bytes of memory each).
pub const MAX_MAX_DECISIONS: usize = 10_000_000;
/// Longest credentials, key or CA file read.
const MAX_SECRET_FILE: u64 = 1 << 20;

/// A `lapi_url` refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lapi_url '{url}': {problem}")]
pub struct LapiUrlError {
    pub url: String,
    pub problem: UrlProblem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UrlProblem {
    #[error("must start with http:// or https://")]
    Scheme,
    #[error("has no host")]
    NoHost,
    #[error("must not hold credentials, a query, a fragment or spaces")]
    Extra,
    #[error("has an unclosed '['")]
    Unclosed,
    #[error("has a bad IPv6 address")]
    BadIpv6,
    #[error("has a bad port")]
    BadPort,
}

/// The LAPI's address: http or https, a host, an optional port and path prefix; no
/// credentials, query or fragment. Returned without its trailing slash.
///
/// # Errors
/// A `LapiUrlError` naming what is wrong with the URL.
pub fn lapi_url(text: &str) -> Result<String, LapiUrlError> {
    let t = text.trim();
    let bad = |problem| LapiUrlError {
        url: t.to_string(),
        problem,
    };
    let rest = t
        .strip_prefix("http://")
        .or_else(|| t.strip_prefix("https://"))
        .ok_or_else(|| bad(UrlProblem::Scheme))?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return Err(bad(UrlProblem::NoHost));
    }
    if rest.contains(['@', '?', '#']) || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(UrlProblem::Extra));
    }
    let port = match host.strip_prefix('[') {
        Some(r) => {
            let (addr, after) = r.split_once(']').ok_or_else(|| bad(UrlProblem::Unclosed))?;
            addr.parse::<std::net::Ipv6Addr>()
                .map_err(|_| bad(UrlProblem::BadIpv6))?;
            match after {
                "" => None,
                a => Some(
                    a.strip_prefix(':')
                        .ok_or_else(|| bad(UrlProblem::BadPort))?,
                ),
            }
        }
        None => host.split_once(':').map(|(_, p)| p),
    };
    if port.is_some_and(|p| p.parse::<u16>().map_or(true, |p| p == 0)) {
        return Err(bad(UrlProblem::BadPort));
    }
    Ok(t.trim_end_matches('/').to_string())
}

/// Reads the files `[crowdsec]` names, each held to the configuration's rule (changeable
/// by root alone: the machine password and the bouncer key are the fleet's trust).
pub(super) fn read_secrets(cs: &Crowdsec) -> Result<Secrets, ConfigError> {
    let read = |p: &Path| -> Result<String, ConfigError> {
        trusted(p).map_err(|e| match e {
            ConfigError::Unsafe(u) => ConfigError::UnsafeSecret(u),
            other => other,
        })?;
        let io = |source| ConfigError::Io {
            path: p.display().to_string(),
            source,
        };
        let f = std::fs::File::open(p).map_err(io)?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::Read::take(f, MAX_SECRET_FILE), &mut text)
            .map_err(io)?;
        Ok(text)
    };
    let secret = |p: &Path, why: String| ConfigError::Secret {
        path: p.display().to_string(),
        why,
    };
    let mut out = Secrets::default();
    if let Some(p) = &cs.credentials {
        out.machine = Some(parse_credentials(&read(p)?).map_err(|e| secret(p, e.to_string()))?);
    }
    if let Some(p) = &cs.bouncer_key_file {
        let key = read(p)?.trim().to_string();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_graphic()) {
            return Err(secret(
                p,
                "not a bouncer key (the one line `cscli bouncers add NAME -o raw` prints)".into(),
            ));
        }
        out.bouncer_key = Some(key);
    }
    if let Some(p) = &cs.ca_file {
        let pem = read(p)?;
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(secret(p, "holds no PEM certificate".into()));
        }
        out.ca_pem = Some(pem.into_bytes());
    }
    Ok(out)
}

/// A credentials file without both a login and a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no login and password (write it with `cscli machines add NAME --auto -f FILE`)")]
pub struct NoCredentials;

/// The machine's login and password from `cscli machines add … -f FILE`'s YAML (`url:`,
/// `login:`, `password:` lines; values plain or quoted).
///
/// # Errors
/// `NoCredentials` without both a login and a password.
pub fn parse_credentials(text: &str) -> Result<(String, String), NoCredentials> {
    let mut login = None;
    let mut password = None;
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = unquote(v.trim());
        match k.trim() {
            "login" => login = Some(v),
            "password" => password = Some(v),
            _ => {}
        }
    }
    match (login, password) {
        (Some(l), Some(p)) if !l.is_empty() && !p.is_empty() => Ok((l, p)),
        _ => Err(NoCredentials),
    }
}

/// A YAML scalar as cscli writes one: plain, 'single' ('' for ') or "double" (\" and \\).
fn unquote(v: &str) -> String {
    if v.len() >= 2
        && ((v.starts_with('\'') && v.ends_with('\'')) || (v.starts_with('"') && v.ends_with('"')))
    {
        let inner = &v[1..v.len() - 1];
        if v.starts_with('\'') {
            inner.replace("''", "'")
        } else {
            inner.replace("\\\"", "\"").replace("\\\\", "\\")
        }
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_files_read_as_cscli_writes_them() {
        let text = "url: http://192.0.2.10:8080/\nlogin: hostA\npassword: s3cr3t\n";
        assert_eq!(
            parse_credentials(text),
            Ok(("hostA".to_string(), "s3cr3t".to_string()))
        );
        let quoted = "login: 'a b'\npassword: \"p: \\\"q\\\"\"\n";
        assert_eq!(
            parse_credentials(quoted),
            Ok(("a b".to_string(), "p: \"q\"".to_string()))
        );
        assert!(parse_credentials("url: http://x/\n").is_err());
        assert!(parse_credentials("").is_err());
    }
}
