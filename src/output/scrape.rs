//! `GET /metrics` over HTTP for a Prometheus scrape (`[metrics] listen`). Only that one
//! request is served: each connection gets a thread of its own (a few at most), a short
//! deadline to send its request, and the exposition; anything else gets a 404 and the
//! connection is closed.

use super::metrics::Metrics;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Scrapes served at once; more are refused (a scraper comes back).
const MAX_CLIENTS: usize = 8;
/// The whole request head must arrive within this, and be at most this long.
const DEADLINE: Duration = Duration::from_secs(2);
const MAX_HEAD: usize = 8192;

/// Serves until the process ends.
pub fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
            active.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let (metrics, active) = (metrics.clone(), active.clone());
        let spawned = std::thread::Builder::new()
            .name("metrics client".into())
            .spawn(move || {
                answer(conn, &metrics);
                active.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            tracing::warn!("metrics: cannot start a thread for a scrape");
        }
    }
}

fn answer(mut conn: TcpStream, metrics: &Metrics) {
    let _ = conn.set_write_timeout(Some(Duration::from_secs(10)));
    let Some(head) = read_head(&conn, Instant::now() + DEADLINE) else {
        return;
    };
    let path = head
        .strip_prefix("GET ")
        .and_then(|rest| rest.split_whitespace().next());
    let (status, kind, body) = match path {
        Some("/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        _ => ("404 Not Found", "text/plain", "only /metrics here\n".into()),
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// The request head (up to the blank line), read by `deadline` in all.
fn read_head(mut conn: &TcpStream, deadline: Instant) -> Option<String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        if buf.len() >= MAX_HEAD {
            return None;
        }
        let left = deadline.checked_duration_since(Instant::now())?;
        conn.set_read_timeout(Some(left)).ok()?;
        match conn.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::stats::Stats;
    use crate::output::metrics::{time_to_block, Extra};

    fn get(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(request).unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_the_exposition_on_metrics_and_nothing_else() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(Stats::default());
        Stats::inc(&stats.acted);
        let m = Arc::new(Metrics::new(
            stats,
            Arc::new(Extra::default),
            time_to_block(),
        ));
        std::thread::spawn(move || serve(listener, m));
        let ok = get(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("portsentry_alerts_total 1\n"), "{ok}");
        let other = get(addr, b"GET /etc/shadow HTTP/1.1\r\n\r\n");
        assert!(other.starts_with("HTTP/1.1 404"), "{other}");
        let junk = get(addr, &[0xff; 100]);
        assert!(
            junk.starts_with("HTTP/1.1 404") || junk.is_empty(),
            "{junk}"
        );
        // A client that sends nothing is dropped at the deadline; others are served.
        let _idle: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let ok = get(addr, b"GET /metrics HTTP/1.0\n\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
    }
}
