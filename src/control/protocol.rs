//! The control protocol: one request line, a response ending at EOF whose first line is
//! `ok` or `error: …`; and the client side, used by `portsentry list | block | unblock |
//! status`.

use crate::core::ignore::canonical;
use crate::core::policy::{Timeout, MAX_TIMEOUT};
use std::io::{BufRead, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// `json`: one JSON array for scripts instead of the table.
    List {
        json: bool,
    },
    Status {
        json: bool,
    },
    /// `timeout`: none given is `Default` (the configured one); "permanent" or "0" is
    /// `Permanent`; seconds are `For`.
    Block {
        addr: IpAddr,
        timeout: Timeout,
    },
    Unblock {
        addr: IpAddr,
    },
}

/// A request line the daemon cannot take; the text goes back as `error: …`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("empty request")]
    Empty,
    #[error("unknown request '{0}'")]
    Unknown(String),
    #[error("{verb}: missing address")]
    MissingAddress { verb: String },
    #[error("{verb}: '{text}' is not an IP address")]
    NotAnAddress { verb: String, text: String },
    #[error("{verb}: unexpected '{text}'")]
    Unexpected { verb: String, text: String },
    #[error("block: '{0}' is not a number of seconds")]
    NotSeconds(String),
    #[error("block: {0} s is outside 1 s to 100 years (\"permanent\" for no end)")]
    OutOfRange(u64),
}

/// One request line.
///
/// # Errors
/// `RequestError` says what is wrong with the line, in the words the client is shown.
pub fn parse_request(line: &str) -> Result<Request, RequestError> {
    let mut w = line.split_whitespace();
    let verb = w.next().ok_or(RequestError::Empty)?;
    let unexpected = |text: &str| RequestError::Unexpected {
        verb: verb.to_string(),
        text: text.to_string(),
    };
    let req = match verb {
        "list" => Request::List {
            json: json_flag(&mut w).map_err(unexpected)?,
        },
        "status" => Request::Status {
            json: json_flag(&mut w).map_err(unexpected)?,
        },
        "unblock" => Request::Unblock {
            addr: address(verb, &mut w)?,
        },
        "block" => Request::Block {
            addr: address(verb, &mut w)?,
            timeout: block_timeout(w.next())?,
        },
        other => return Err(RequestError::Unknown(other.to_string())),
    };
    match w.next() {
        Some(extra) => Err(unexpected(extra)),
        None => Ok(req),
    }
}

/// `list` and `status`'s optional `json`; the word found instead if another.
fn json_flag<'a>(w: &mut std::str::SplitWhitespace<'a>) -> Result<bool, &'a str> {
    match w.next() {
        None => Ok(false),
        Some("json") => Ok(true),
        Some(other) => Err(other),
    }
}

fn address(verb: &str, w: &mut std::str::SplitWhitespace) -> Result<IpAddr, RequestError> {
    let a = w.next().ok_or_else(|| RequestError::MissingAddress {
        verb: verb.to_string(),
    })?;
    a.parse::<IpAddr>()
        .map(canonical)
        .map_err(|_| RequestError::NotAnAddress {
            verb: verb.to_string(),
            text: a.to_string(),
        })
}

/// `block`'s optional length: seconds, or "permanent" (also "0").
fn block_timeout(word: Option<&str>) -> Result<Timeout, RequestError> {
    match word {
        None => Ok(Timeout::Default),
        Some("permanent" | "0") => Ok(Timeout::Permanent),
        Some(t) => {
            let secs = t
                .parse::<u64>()
                .map_err(|_| RequestError::NotSeconds(t.to_string()))?;
            if secs == 0 || secs > MAX_TIMEOUT.as_secs() {
                return Err(RequestError::OutOfRange(secs));
            }
            Ok(Timeout::For(Duration::from_secs(secs)))
        }
    }
}

/// Why a client's request got no answer; `Daemon` is the daemon's `error: …` text.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the portsentry daemon at {}: {error} (is it running?)", socket.display())]
    Connect {
        socket: PathBuf,
        error: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("unexpected reply: {0}")]
    NotText(#[from] std::string::FromUtf8Error),
    #[error("unexpected reply: {0:?}")]
    Unexpected(String),
    #[error("{0}")]
    Daemon(String),
}

/// Client side: sends one request and returns the body, or the daemon's error.
///
/// # Errors
/// As `request_to`, and a reply that is not UTF-8.
pub fn request(socket: &Path, line: &str) -> Result<String, ClientError> {
    let mut body = Vec::new();
    request_to(socket, line, &mut body)?;
    Ok(String::from_utf8(body)?)
}

/// How long one read may wait for the daemon (a million blocks stream for seconds, the
/// daemon's first line leaves at once).
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// Client side: sends one request and copies the body to `out` as it arrives (a list of
/// a million blocks is never held whole), or returns the daemon's error.
///
/// # Errors
/// `ClientError`: no daemon at `socket`, the socket's I/O, a malformed reply, or the
/// daemon's own `error: …` (`Daemon`, its text without the prefix).
pub fn request_to(socket: &Path, line: &str, out: &mut impl Write) -> Result<(), ClientError> {
    let mut conn = UnixStream::connect(socket).map_err(|error| ClientError::Connect {
        socket: socket.to_path_buf(),
        error,
    })?;
    conn.set_read_timeout(Some(READ_TIMEOUT))?;
    conn.write_all(format!("{line}\n").as_bytes())?;
    let mut reply = std::io::BufReader::with_capacity(1 << 16, conn);
    let mut first = String::new();
    reply.read_line(&mut first)?;
    match first.strip_suffix('\n') {
        Some("ok") => {
            // A reader that stopped early (`| head`) is not an error.
            match std::io::copy(&mut reply, out).and_then(|_| out.flush()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(()),
            }
        }
        Some(err) => Err(ClientError::Daemon(
            err.strip_prefix("error: ").unwrap_or(err).to_string(),
        )),
        None => Err(ClientError::Unexpected(first)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        assert_eq!(parse_request("list"), Ok(Request::List { json: false }));
        assert_eq!(parse_request("list json"), Ok(Request::List { json: true }));
        assert_eq!(
            parse_request("status json"),
            Ok(Request::Status { json: true })
        );
        assert!(parse_request("status yaml").is_err());
        assert_eq!(
            parse_request("block 192.0.2.9 60"),
            Ok(Request::Block {
                addr: "192.0.2.9".parse().unwrap(),
                timeout: Timeout::For(Duration::from_secs(60))
            })
        );
        assert_eq!(
            parse_request("block ::ffff:192.0.2.9 permanent"),
            Ok(Request::Block {
                addr: "192.0.2.9".parse().unwrap(),
                timeout: Timeout::Permanent
            })
        );
        assert!(parse_request("block 192.0.2.300").is_err());
        // A timeout the kernel cannot take is refused, not wrapped.
        assert!(parse_request("block 192.0.2.9 18446744073709552").is_err());
        assert!(parse_request("block 192.0.2.9 18446744073709551615").is_err());
        assert!(parse_request("block 192.0.2.9 3155760001").is_err());
        assert!(parse_request("unblock").is_err());
        assert!(parse_request("list extra").is_err());
        assert!(parse_request("reboot").is_err());
    }

    /// The texts a client sees after "error: ", as scripts may match them.
    #[test]
    fn request_errors_keep_their_wording() {
        let text = |line: &str| parse_request(line).unwrap_err().to_string();
        assert_eq!(text(""), "empty request");
        assert_eq!(text("reboot now"), "unknown request 'reboot'");
        assert_eq!(text("unblock"), "unblock: missing address");
        assert_eq!(
            text("block 192.0.2.300"),
            "block: '192.0.2.300' is not an IP address"
        );
        assert_eq!(text("status yaml"), "status: unexpected 'yaml'");
        assert_eq!(text("list json x"), "list: unexpected 'x'");
        assert_eq!(
            text("block 192.0.2.9 soon"),
            "block: 'soon' is not a number of seconds"
        );
        assert_eq!(
            text("block 192.0.2.9 3155760001"),
            "block: 3155760001 s is outside 1 s to 100 years (\"permanent\" for no end)"
        );
    }
}
