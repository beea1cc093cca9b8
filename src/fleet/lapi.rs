//! The LAPI's HTTP API, blocking, every call bounded in time and every answer in size:
//! machine login, alerts, the decision stream.

use super::wire::{parse_stream, Delta, SCENARIO};
use super::FleetError;
use serde_json::{json, Value};
use std::io::Read;
use std::time::Duration;
use ureq::tls::{PemItem, RootCerts, TlsConfig};

/// Connecting (and resolving the name) at most.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A login or an alert batch, answer included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// A pull, answer included: a startup answer of a large fleet takes a while to read.
pub const STREAM_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest answer read from a login or a push (we need only a token).
const MAX_SMALL_REPLY: u64 = 1 << 20;
/// Largest decision stream read (about two million decisions).
pub const MAX_STREAM_REPLY: u64 = 512 << 20;
/// Where Debian keeps the system's certificates (ca-certificates).
const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";

pub struct Lapi {
    agent: ureq::Agent,
    base: String,
}

impl Lapi {
    /// A client for `base` (http or https, no trailing slash). An https LAPI is checked
    /// against `ca_pem` when given, else the system's certificates.
    pub fn new(base: &str, ca_pem: Option<&[u8]>) -> Result<Lapi, FleetError> {
        let system;
        let pem = match ca_pem {
            Some(p) => Some(p),
            None => {
                system = std::fs::read(SYSTEM_CAS).ok();
                system.as_deref()
            }
        };
        let roots = match pem {
            Some(p) => {
                let certs: Vec<_> = ureq::tls::parse_pem(p)
                    .filter_map(|item| match item {
                        Ok(PemItem::Certificate(c)) => Some(c),
                        _ => None,
                    })
                    .collect();
                if certs.is_empty() {
                    return Err(FleetError::Tls(
                        "no usable certificate in the CA file".into(),
                    ));
                }
                RootCerts::new_with_certs(&certs)
            }
            None => RootCerts::WebPki,
        };
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_resolve(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(CALL_TIMEOUT))
            // The credentials go where the configuration says, nowhere else.
            .max_redirects(0)
            .proxy(None)
            .user_agent(format!("portsentry/{}", env!("CARGO_PKG_VERSION")))
            .tls_config(TlsConfig::builder().root_certs(roots).build())
            .build();
        Ok(Lapi {
            agent: config.into(),
            base: base.trim_end_matches('/').to_string(),
        })
    }

    /// Logs in as a machine; returns the bearer token.
    pub fn login(&self, login: &str, password: &str) -> Result<String, FleetError> {
        let body = json!({
            "machine_id": login,
            "password": password,
            "scenarios": [SCENARIO],
        });
        let resp = self
            .agent
            .post(format!("{}/v1/watchers/login", self.base))
            .content_type("application/json")
            .send(body.to_string())
            .map_err(|e| transport(e, CALL_TIMEOUT))?;
        let text = checked(resp)?;
        let v: Value =
            serde_json::from_slice(&text).map_err(|e| FleetError::Reply(e.to_string()))?;
        let token = v.get("token").and_then(Value::as_str).unwrap_or("");
        if token.is_empty()
            || token.len() > 16 << 10
            || !token.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(FleetError::Reply(
                "login answer without a usable token".into(),
            ));
        }
        Ok(token.to_string())
    }

    /// Sends alerts (a JSON array, as the LAPI wants).
    pub fn push(&self, token: &str, alerts: &[Value]) -> Result<(), FleetError> {
        let body = serde_json::to_vec(alerts).map_err(|e| FleetError::Reply(e.to_string()))?;
        let resp = self
            .agent
            .post(format!("{}/v1/alerts", self.base))
            .header("Authorization", format!("Bearer {token}"))
            .content_type("application/json")
            .send(&body[..])
            .map_err(|e| transport(e, CALL_TIMEOUT))?;
        checked(resp).map(|_| ())
    }

    /// One call of the decision stream: every active decision with `startup`, else what
    /// changed since this bouncer's last call. At most `max` new decisions are kept.
    pub fn stream(
        &self,
        key: &str,
        startup: bool,
        now: u64,
        max: usize,
    ) -> Result<Delta, FleetError> {
        let mut resp = self
            .agent
            .get(format!(
                "{}/v1/decisions/stream?startup={startup}",
                self.base
            ))
            .config()
            .timeout_global(Some(STREAM_TIMEOUT))
            .build()
            .header("X-Api-Key", key)
            .call()
            .map_err(|e| transport(e, STREAM_TIMEOUT))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(status_error(status, &small_body(resp.body_mut())));
        }
        let reader = resp
            .body_mut()
            .with_config()
            .limit(MAX_STREAM_REPLY)
            .reader();
        parse_stream(reader, now, max).map_err(|e| {
            if e.is_io() && e.to_string().contains("timed out") {
                FleetError::Timeout(STREAM_TIMEOUT)
            } else {
                FleetError::Reply(e.to_string())
            }
        })
    }
}

/// The body of a 2xx answer (bounded), or the error the status means.
fn checked(mut resp: ureq::http::Response<ureq::Body>) -> Result<Vec<u8>, FleetError> {
    let status = resp.status().as_u16();
    let body = small_body(resp.body_mut());
    if (200..300).contains(&status) {
        Ok(body)
    } else {
        Err(status_error(status, &body))
    }
}

fn small_body(body: &mut ureq::Body) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = body
        .with_config()
        .limit(MAX_SMALL_REPLY)
        .reader()
        .take(MAX_SMALL_REPLY)
        .read_to_end(&mut out);
    out
}

fn status_error(status: u16, body: &[u8]) -> FleetError {
    // Enough of the body to say why, printable and short (it goes to the log).
    let body: String = String::from_utf8_lossy(body)
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(200)
        .collect();
    match status {
        401 | 403 => FleetError::Unauthorized { status, body },
        _ => FleetError::Status { status, body },
    }
}

fn transport(e: ureq::Error, limit: Duration) -> FleetError {
    match e {
        ureq::Error::Timeout(_) => FleetError::Timeout(limit),
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            FleetError::Timeout(limit)
        }
        other => {
            let text = other.to_string();
            // What a connect under the unit's IPAddressDeny=any looks like.
            let hint = if text.contains("Operation not permitted") {
                " (the systemd unit denies IP traffic: allow the LAPI's address with an IPAddressAllow= drop-in, see the README's \"Fleet\" section)"
            } else {
                ""
            };
            FleetError::Transport(format!("{text}{hint}"))
        }
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    /// A stand-in LAPI on 127.0.0.1: answers each request with what `answer` says (status
    /// and body) for its method and path, and records the requests (head and body).
    pub struct Fake {
        pub url: String,
        pub seen: Arc<Mutex<Vec<(String, String)>>>,
    }

    pub type Answer = dyn Fn(&str, &str) -> Option<(u16, String)> + Send + Sync;

    impl Fake {
        /// `answer(request line, body)`: `None` hangs the connection (accept, never answer).
        pub fn start(answer: Arc<Answer>) -> Fake {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let seen = Arc::new(Mutex::new(Vec::new()));
            let log = seen.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming().flatten() {
                    let (answer, log) = (answer.clone(), log.clone());
                    std::thread::spawn(move || serve(conn, &*answer, &log));
                }
            });
            Fake { url, seen }
        }

        pub fn requests(&self, path: &str) -> Vec<String> {
            self.seen
                .lock()
                .unwrap()
                .iter()
                .filter(|(l, _)| l.contains(path))
                .map(|(_, b)| b.clone())
                .collect()
        }
    }

    fn serve(conn: TcpStream, answer: &Answer, log: &Mutex<Vec<(String, String)>>) {
        let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
        let mut r = BufReader::new(conn.try_clone().unwrap());
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let mut len = 0usize;
            let mut head = line.clone();
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 {
                    return;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&h);
                if h == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; len];
            if r.read_exact(&mut body).is_err() {
                return;
            }
            let body = String::from_utf8_lossy(&body).into_owned();
            log.lock().unwrap().push((head.clone(), body.clone()));
            let Some((status, text)) = answer(&head, &body) else {
                std::thread::sleep(Duration::from_secs(3600));
                return;
            };
            let mut c = &conn;
            let _ = write!(
                c,
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
                text.len()
            );
        }
    }

    #[test]
    fn a_lapi_that_accepts_and_never_answers_costs_a_bounded_wait() {
        let fake = Fake::start(Arc::new(|_: &str, _: &str| None));
        let lapi = Lapi::new(&fake.url, None).unwrap();
        let t = Instant::now();
        let e = lapi.login("a", "b").unwrap_err();
        assert!(matches!(e, FleetError::Timeout(_)), "{e}");
        assert!(t.elapsed() < CALL_TIMEOUT + Duration::from_secs(2));
    }

    #[test]
    fn answers_are_told_apart() {
        let fake = Fake::start(Arc::new(|head: &str, _: &str| {
            Some(if head.contains("login") {
                (200, r#"{"code":200,"expire":"x","token":"tok"}"#.into())
            } else if head.contains("stream") {
                if head.contains("X-Api-Key: good") || head.contains("x-api-key: good") {
                    (200, r#"{"new":null,"deleted":null}"#.into())
                } else {
                    (403, r#"{"message":"access forbidden"}"#.into())
                }
            } else {
                (500, "validation failure list".into())
            })
        }));
        let lapi = Lapi::new(&fake.url, None).unwrap();
        assert_eq!(lapi.login("a", "b").unwrap(), "tok");
        let login = &fake.requests("login")[0];
        assert!(login.contains("\"machine_id\":\"a\""), "{login}");
        assert_eq!(lapi.stream("good", true, 0, 10).unwrap(), Delta::default());
        assert!(matches!(
            lapi.stream("bad", true, 0, 10),
            Err(FleetError::Unauthorized { status: 403, .. })
        ));
        assert!(matches!(
            lapi.push("tok", &[json!({})]),
            Err(FleetError::Status { status: 500, .. })
        ));
        // Nobody listening: a transport error, at once.
        let closed = Lapi::new("http://127.0.0.1:9", None).unwrap();
        assert!(matches!(
            closed.login("a", "b"),
            Err(FleetError::Transport(_))
        ));
    }
}
