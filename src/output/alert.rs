//! Log and history lines, byte-compatible with PortSentry 1.2 where 1.2 had them (logcheck
//! rules and fail2ban's `portsentry` filter read them).

use crate::core::probe::{Probe, Proto, ScanKind, TcpFlags};
use std::fmt::Write as _;
use std::net::IpAddr;

/// 1.2's description of a TCP probe; new kinds follow the same style.
pub fn scan_description(kind: ScanKind) -> String {
    match kind {
        ScanKind::Syn => "TCP SYN/Normal scan".into(),
        ScanKind::Fin => "TCP FIN scan".into(),
        // The leading space is 1.2's (two spaces after "attackalert:"); rules match it.
        ScanKind::Null => " TCP NULL scan".into(),
        ScanKind::Xmas => "TCP XMAS scan".into(),
        ScanKind::Ack => "TCP ACK/Window scan".into(),
        ScanKind::Maimon => "TCP Maimon scan".into(),
        ScanKind::Udp => "UDP scan".into(),
        ScanKind::SctpInit => "SCTP INIT scan".into(),
        ScanKind::SctpCookieEcho => "SCTP COOKIE-ECHO scan".into(),
        ScanKind::SctpOther(c) => format!("Unknown Type: SCTP Chunk: {c}"),
        ScanKind::IpProtocol => "IP protocol scan".into(),
        ScanKind::Unreadable => "Unreadable header chain".into(),
        ScanKind::Other(f) => format!(
            "Unknown Type: TCP Packet Flags: SYN: {} FIN: {} ACK: {} PSH: {} URG: {} RST: {}",
            f.bit(TcpFlags::SYN),
            f.bit(TcpFlags::FIN),
            f.bit(TcpFlags::ACK),
            f.bit(TcpFlags::PSH),
            f.bit(TcpFlags::URG),
            f.bit(TcpFlags::RST),
        ),
    }
}

/// `name/ip`, or `ip/ip` when names are not resolved (RESOLVE_HOST=0).
pub fn host_field(addr: IpAddr, name: Option<&str>) -> String {
    format!(
        "{}/{}",
        name.map_or_else(|| addr.to_string(), str::to_string),
        addr
    )
}

/// What a probe was aimed at: `TCP port: 111`, `SCTP port: 80`, `IP protocol: 47`, or
/// `unknown port` (its header lay beyond the bytes the queue copies).
pub fn target(probe: &Probe) -> String {
    match probe.kind {
        ScanKind::IpProtocol => format!("IP protocol: {}", probe.dst_port),
        ScanKind::Unreadable => "unknown port".into(),
        _ => format!("{} port: {}", probe.proto.name(), probe.dst_port),
    }
}

/// `attackalert: TCP SYN/Normal scan from host: 192.0.2.2/192.0.2.2 to TCP port: 111`
pub fn attack_line(probe: &Probe, host: &str) -> String {
    format!(
        "attackalert: {} from host: {} to {}",
        scan_description(probe.kind),
        host,
        target(probe)
    )
}

pub fn ip_options_line(probe: &Probe, host: &str) -> String {
    format!(
        "attackalert: Packet from host: {} to {} has IP options set (detection avoidance technique).",
        host,
        target(probe)
    )
}

pub fn already_blocked_line(host: &str) -> String {
    format!("attackalert: Host: {host} is already blocked Ignoring")
}

/// Our line for a source that reached the trigger while it held a live connection.
pub fn spared_line(host: &str) -> String {
    format!(
        "attackalert: Host: {host} holds a live connection to this host: not blocked (anyone can forge its address); its probes are dropped"
    )
}

/// Our line for a source reported (not blocked: mode off or command) and probing again.
pub fn already_reported_line(host: &str) -> String {
    format!("attackalert: Host: {host} is already reported Ignoring")
}

/// The count of further probes from a source already acted on (see repeats.rs).
pub fn repeats_line(host: &str, count: u64, secs: u64) -> String {
    format!("attackalert: Host: {host} sent {count} more probes in the last {secs} s, dropped")
}

pub fn other_repeats_line(count: u64) -> String {
    format!("attackalert: {count} more probes from other hosts already acted on, dropped")
}

pub fn ignoring_response_line(proto: Proto) -> String {
    format!(
        "attackalert: Ignoring {} response per configuration file setting.",
        proto.name()
    )
}

/// Local broken-down time, as 1.2 printed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalTime {
    pub year: i32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl LocalTime {
    /// Converts epoch seconds with the process's time zone (TZ / /etc/localtime).
    pub fn from_epoch(epoch: i64) -> LocalTime {
        let t: libc::time_t = epoch as libc::time_t;
        #[allow(unsafe_code)] // localtime_r: the C library's time zone rules, no safe wrapper
        // SAFETY: libc::tm is plain integers (and a pointer to the zone name, NULL is
        // valid), so all zeroes is a valid value; localtime_r reads `t` and writes only
        // into `tm`, both ours and alive for the call.
        let tm = unsafe {
            let mut tm: libc::tm = std::mem::zeroed();
            libc::localtime_r(&t, &mut tm);
            tm
        };
        LocalTime {
            year: tm.tm_year + 1900,
            month: (tm.tm_mon + 1) as u32,
            day: tm.tm_mday as u32,
            hour: tm.tm_hour as u32,
            minute: tm.tm_min as u32,
            second: tm.tm_sec as u32,
        }
    }
}

/// `942286729 - 11/10/1999 20:18:49 Host: 192.168.2.12/192.168.2.12 Port: 111 TCP Blocked`
/// — the line fail2ban's stock filter matches (`/<HOST> Port: [0-9]+ (TCP|UDP) Blocked$`).
pub fn history_line(epoch: i64, t: LocalTime, host: &str, port: u16, proto: Proto) -> String {
    let mut s = String::with_capacity(96);
    let _ = write!(
        s,
        "{epoch} - {:02}/{:02}/{:04} {:02}:{:02}:{:02} Host: {host} Port: {port} {} Blocked",
        t.month,
        t.day,
        t.year,
        t.hour,
        t.minute,
        t.second,
        proto.name()
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(kind: ScanKind, port: u16) -> Probe {
        Probe::example("192.0.2.2", port, kind)
    }

    #[test]
    fn lines_match_portsentry_1_2_byte_for_byte() {
        let h = host_field("192.0.2.2".parse().unwrap(), None);
        assert_eq!(
            attack_line(&probe(ScanKind::Syn, 111), &h),
            "attackalert: TCP SYN/Normal scan from host: 192.0.2.2/192.0.2.2 to TCP port: 111"
        );
        assert_eq!(
            attack_line(&probe(ScanKind::Null, 1), &h),
            "attackalert:  TCP NULL scan from host: 192.0.2.2/192.0.2.2 to TCP port: 1"
        );
        assert_eq!(
            attack_line(&probe(ScanKind::Udp, 161), &h),
            "attackalert: UDP scan from host: 192.0.2.2/192.0.2.2 to UDP port: 161"
        );
        assert_eq!(
            attack_line(&probe(ScanKind::Other(TcpFlags(0x03)), 7), &h),
            "attackalert: Unknown Type: TCP Packet Flags: SYN: 1 FIN: 1 ACK: 0 PSH: 0 URG: 0 RST: 0 from host: 192.0.2.2/192.0.2.2 to TCP port: 7"
        );
        assert_eq!(
            attack_line(&probe(ScanKind::Other(TcpFlags(0x3f)), 7), &h),
            "attackalert: Unknown Type: TCP Packet Flags: SYN: 1 FIN: 1 ACK: 1 PSH: 1 URG: 1 RST: 1 from host: 192.0.2.2/192.0.2.2 to TCP port: 7"
        );
        assert_eq!(
            ip_options_line(&probe(ScanKind::Syn, 111), &h),
            "attackalert: Packet from host: 192.0.2.2/192.0.2.2 to TCP port: 111 has IP options set (detection avoidance technique)."
        );
        assert_eq!(
            already_blocked_line(&h),
            "attackalert: Host: 192.0.2.2/192.0.2.2 is already blocked Ignoring"
        );
    }

    #[test]
    fn lines_for_probes_1_2_never_saw_keep_its_shape() {
        let h = host_field("192.0.2.2".parse().unwrap(), None);
        assert_eq!(
            attack_line(&probe(ScanKind::IpProtocol, 47), &h),
            "attackalert: IP protocol scan from host: 192.0.2.2/192.0.2.2 to IP protocol: 47"
        );
        assert_eq!(
            attack_line(&probe(ScanKind::SctpInit, 80), &h),
            "attackalert: SCTP INIT scan from host: 192.0.2.2/192.0.2.2 to SCTP port: 80"
        );
        assert_eq!(
            attack_line(&probe(ScanKind::SctpCookieEcho, 80), &h),
            "attackalert: SCTP COOKIE-ECHO scan from host: 192.0.2.2/192.0.2.2 to SCTP port: 80"
        );
        assert_eq!(
            attack_line(&probe(ScanKind::Unreadable, 0), &h),
            "attackalert: Unreadable header chain from host: 192.0.2.2/192.0.2.2 to unknown port"
        );
    }

    #[test]
    fn history_line_matches_1_2_example() {
        let t = LocalTime {
            year: 1999,
            month: 11,
            day: 10,
            hour: 20,
            minute: 18,
            second: 49,
        };
        assert_eq!(
            history_line(942286729, t, "192.168.2.12/192.168.2.12", 111, Proto::Tcp),
            "942286729 - 11/10/1999 20:18:49 Host: 192.168.2.12/192.168.2.12 Port: 111 TCP Blocked"
        );
    }
}
