//! The settings a reload cannot change: what the daemon bound or opened at start (the
//! queues, the steering it chose, the control socket, the state directory). A reload
//! compares them as one value; every field of `Config` is sorted here into restart-only or
//! reloadable, so a new field does not compile until someone decides which it is.

use super::model::Config;
use super::raw::SteeringChoice;
use std::path::PathBuf;
use std::time::Duration;

/// What takes effect only at the next start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartOnly {
    pub queue_num: u16,
    pub queues: u16,
    pub queue_max_len: u32,
    pub fail_open: bool,
    pub queue_coalesce: Duration,
    pub steering: SteeringChoice,
    pub control_socket: PathBuf,
    pub state_dir: PathBuf,
}

impl Config {
    /// The restart-only settings; a reload that changes them says they wait for a restart.
    #[must_use]
    pub fn restart_only(&self) -> RestartOnly {
        // Exhaustive on purpose: a field added to `Config` must be placed here.
        let Config {
            queue_num,
            queues,
            queue_max_len,
            fail_open,
            queue_coalesce,
            steering,
            control_socket,
            state_dir,
            // Reloadable: the daemon applies these on SIGHUP.
            source: _,
            tcp: _,
            udp: _,
            trigger: _,
            window: _,
            max_sources: _,
            score: _,
            served_protocols: _,
            block_tcp: _,
            block_udp: _,
            block_timeout: _,
            ignore: _,
            ignore_file: _,
            history: _,
            blocked: _,
            include: _,
            repeat_factor: _,
            max_timeout: _,
            max_blocked: _,
            max_per_second: _,
            ipv6_prefix: _,
            spare_clients: _,
            client_timeout: _,
            listener_grace: _,
            actions: _,
            block_log: _,
            syslog: _,
            resolve_host: _,
            alerts_per_second: _,
            metrics_textfile: _,
            metrics_listen: _,
            state_file: _,
            // Its LAPI, keys and interval reload; push or pull turned on or off waits for
            // a restart, which the reload says on its own.
            crowdsec: _,
        } = self;
        RestartOnly {
            queue_num: *queue_num,
            queues: *queues,
            queue_max_len: *queue_max_len,
            fail_open: *fail_open,
            queue_coalesce: *queue_coalesce,
            steering: *steering,
            control_socket: control_socket.clone(),
            state_dir: state_dir.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_only_settings_are_told_from_reloadable_ones() {
        let base = Config::parse("t", "").unwrap();
        for (text, restart) in [
            ("[queue]\nnum = 3\n", true),
            ("[queue]\nqueues = 1\nmax_len = 7\n", true),
            ("[queue]\nfail_open = true\n", true),
            ("[queue]\ncoalesce = \"0\"\n", true),
            ("[firewall]\nsteering = \"compat\"\n", true),
            ("[control]\nsocket = \"/run/x.sock\"\n", true),
            ("[files]\nstate_dir = \"/var/lib/x\"\n", true),
            ("[block]\ntimeout = \"2h\"\n", false),
            ("[detect]\ntrigger = 2\n", false),
            ("[tcp]\nmode = \"off\"\n", false),
            ("[files]\nhistory = \"/var/log/h\"\n", false),
        ] {
            let c = Config::parse("t", text).unwrap();
            assert_eq!(c.restart_only() != base.restart_only(), restart, "{text}");
        }
    }
}
