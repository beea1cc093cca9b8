//! Alert lines to syslog as PortSentry 1.2 wrote them: ident `portsentry`, LOG_PID,
//! facility daemon, level notice (errors at err).

use std::ffi::CString;
use std::fmt::Write as _;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

pub struct SyslogLayer;

impl SyslogLayer {
    pub fn open() -> SyslogLayer {
        // SAFETY: the ident is a 'static C string, as openlog requires.
        unsafe { libc::openlog(c"portsentry".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
        SyslogLayer
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
        if let Ok(c) = CString::new(m.0.replace('\0', " ")) {
            // SAFETY: "%s" with one C string argument.
            unsafe { libc::syslog(prio | libc::LOG_DAEMON, c"%s".as_ptr(), c.as_ptr()) };
        }
    }
}
