//! Alert lines to syslog as PortSentry 1.2 wrote them: ident `portsentry`, LOG_PID,
//! facility daemon, level notice (errors at err). The layer only queues each line; a
//! writer thread of its own calls syslog(3), which blocks when syslog stops reading.
// syslog(3) is C: unsafe for the FFI calls only.
#![allow(unsafe_code)]

use crate::output::writer;
use std::ffi::CString;
use std::fmt::Write as _;
use std::io::Write as _;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, WorkerGuard};
use tracing_subscriber::layer::{Context, Layer};

pub struct SyslogLayer {
    queue: NonBlocking,
}

impl SyslogLayer {
    /// The layer, and the guard that keeps its writer thread.
    pub fn open() -> (SyslogLayer, WorkerGuard) {
        // SAFETY: the ident is a 'static C string, as openlog requires.
        unsafe { libc::openlog(c"portsentry".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
        let (queue, guard) = writer::queue("syslog", Sink);
        (SyslogLayer { queue }, guard)
    }

    pub fn error_counter(&self) -> ErrorCounter {
        self.queue.error_counter()
    }
}

/// Writes one queued line: its first byte is the priority, the rest the message.
struct Sink;

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some((&prio, text)) = buf.split_first() {
            if let Ok(c) = CString::new(text) {
                // SAFETY: "%s" with one C string argument.
                unsafe {
                    libc::syslog(
                        libc::c_int::from(prio) | libc::LOG_DAEMON,
                        c"%s".as_ptr(),
                        c.as_ptr(),
                    )
                };
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        }
    }
}

impl<S: Subscriber> Layer<S> for SyslogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let prio = match *event.metadata().level() {
            Level::ERROR => libc::LOG_ERR,
            Level::WARN => libc::LOG_NOTICE,
            Level::INFO => libc::LOG_INFO,
            _ => return,
        };
        let mut m = Message(String::new());
        event.record(&mut m);
        // The priority (0–7) in the first byte; a NUL in the text would cut it short.
        let mut line = Vec::with_capacity(m.0.len() + 1);
        line.push(prio as u8);
        line.extend_from_slice(m.0.replace('\0', " ").as_bytes());
        let _ = self.queue.clone().write_all(&line);
    }
}
