//! The control protocol: one request line, a response ending at EOF whose first line is
//! `ok` or `error: …`; and the client side, used by `portsentry list | block | unblock |
//! status`.

use crate::core::ignore::canonical;
use crate::core::policy::MAX_TIMEOUT;
use std::io::{BufRead, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
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
    /// `timeout`: `None` = the configured one; `Some(None)` = permanent.
    Block {
        addr: IpAddr,
        timeout: Option<Option<Duration>>,
    },
    Unblock {
        addr: IpAddr,
    },
}

pub fn parse_request(line: &str) -> Result<Request, String> {
    let mut w = line.split_whitespace();
    let verb = w.next().ok_or("empty request")?;
    let addr = |w: &mut std::str::SplitWhitespace| -> Result<IpAddr, String> {
        let a = w.next().ok_or(format!("{verb}: missing address"))?;
        a.parse::<IpAddr>()
            .map(canonical)
            .map_err(|_| format!("{verb}: '{a}' is not an IP address"))
    };
    let req = match verb {
        "list" | "status" => {
            let json = match w.next() {
                None => false,
                Some("json") => true,
                Some(other) => return Err(format!("{verb}: unexpected '{other}'")),
            };
            if verb == "list" {
                Request::List { json }
            } else {
                Request::Status { json }
            }
        }
        "unblock" => Request::Unblock {
            addr: addr(&mut w)?,
        },
        "block" => {
            let a = addr(&mut w)?;
            let timeout = match w.next() {
                None => None,
                Some("permanent" | "0") => Some(None),
                Some(t) => {
                    let secs = t
                        .parse::<u64>()
                        .map_err(|_| format!("block: '{t}' is not a number of seconds"))?;
                    if secs == 0 || secs > MAX_TIMEOUT.as_secs() {
                        return Err(format!(
                            "block: {secs} s is outside 1 s to 100 years (\"permanent\" for no end)"
                        ));
                    }
                    Some(Some(Duration::from_secs(secs)))
                }
            };
            Request::Block { addr: a, timeout }
        }
        other => return Err(format!("unknown request '{other}'")),
    };
    match w.next() {
        Some(extra) => Err(format!("{verb}: unexpected '{extra}'")),
        None => Ok(req),
    }
}

/// Client side: sends one request and returns the body, or the daemon's error.
pub fn request(socket: &Path, line: &str) -> Result<String, String> {
    let mut body = Vec::new();
    request_to(socket, line, &mut body)?;
    String::from_utf8(body).map_err(|e| format!("unexpected reply: {e}"))
}

/// How long one read may wait for the daemon (a million blocks stream for seconds, the
/// daemon's first line leaves at once).
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// Client side: sends one request and copies the body to `out` as it arrives (a list of
/// a million blocks is never held whole), or returns the daemon's error.
pub fn request_to(socket: &Path, line: &str, out: &mut impl Write) -> Result<(), String> {
    let mut conn = UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot reach the portsentry daemon at {}: {e} (is it running?)",
            socket.display()
        )
    })?;
    conn.set_read_timeout(Some(READ_TIMEOUT))
        .map_err(|e| e.to_string())?;
    conn.write_all(format!("{line}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut reply = std::io::BufReader::with_capacity(1 << 16, conn);
    let mut first = String::new();
    reply.read_line(&mut first).map_err(|e| e.to_string())?;
    match first.strip_suffix('\n') {
        Some("ok") => {
            // A reader that stopped early (`| head`) is not an error.
            match std::io::copy(&mut reply, out).and_then(|_| out.flush()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.to_string()),
                _ => Ok(()),
            }
        }
        Some(err) => Err(err.strip_prefix("error: ").unwrap_or(err).to_string()),
        None => Err(format!("unexpected reply: {first:?}")),
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
                timeout: Some(Some(Duration::from_secs(60)))
            })
        );
        assert_eq!(
            parse_request("block ::ffff:192.0.2.9 permanent"),
            Ok(Request::Block {
                addr: "192.0.2.9".parse().unwrap(),
                timeout: Some(None)
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
}
