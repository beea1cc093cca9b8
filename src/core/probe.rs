//! What a packet aimed at a watched port says about the sender: the probe and its scan kind.

use std::fmt;
use std::net::IpAddr;

/// TCP flag bits as on the wire (byte 13 of the TCP header).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;

    #[inline]
    pub fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }

    /// 0 or 1 for `bit`, as PortSentry prints flags.
    pub fn bit(self, bit: u8) -> u8 {
        u8::from(self.has(bit))
    }
}

impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(u8, &str); 8] = [
            (TcpFlags::FIN, "FIN"),
            (TcpFlags::SYN, "SYN"),
            (TcpFlags::RST, "RST"),
            (TcpFlags::PSH, "PSH"),
            (TcpFlags::ACK, "ACK"),
            (TcpFlags::URG, "URG"),
            (TcpFlags::ECE, "ECE"),
            (TcpFlags::CWR, "CWR"),
        ];
        let mut first = true;
        for (bit, name) in NAMES {
            if self.has(bit) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
    /// Another IP protocol (`dst_port` holds its number), or a transport header we could
    /// not read (`ScanKind::Unreadable`, port 0).
    Ip,
}

impl Proto {
    /// One bit per protocol, for remembering which ones a source was reported for.
    pub fn bit(self) -> u8 {
        match self {
            Proto::Tcp => 1,
            Proto::Udp => 2,
            Proto::Sctp => 4,
            Proto::Ip => 8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
            Proto::Sctp => "SCTP",
            Proto::Ip => "IP",
        }
    }
}

/// The scan technique a probe belongs to. ACK and Window scans send the same packet (a bare
/// ACK); nmap only reads the answers differently, so they are one kind here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScanKind {
    /// SYN alone (half-open `-sS` and connect `-sT` scans); ECN bits allowed.
    Syn,
    Fin,
    Null,
    /// FIN+PSH+URG.
    Xmas,
    /// Bare ACK: `-sA` and `-sW`.
    Ack,
    /// FIN+ACK: `-sM`.
    Maimon,
    /// Any other combination, named by its flags.
    Other(TcpFlags),
    Udp,
    /// SCTP INIT (`-sY`): a new association.
    SctpInit,
    /// SCTP COOKIE-ECHO (`-sZ`): the second step of an association, sent without the first.
    SctpCookieEcho,
    /// SCTP with another first chunk: an existing association's traffic or backscatter.
    SctpOther(u8),
    /// An IP protocol the host does not serve (`-sO`); the port field holds its number.
    IpProtocol,
    /// The transport header lies beyond what the queue copies (a long IPv6 extension
    /// header chain): a probe from this source to a port we cannot name.
    Unreadable,
}

impl ScanKind {
    pub fn classify_tcp(flags: TcpFlags) -> ScanKind {
        // ECE/CWR ride along on SYNs from ECN-enabled stacks; they do not change the technique.
        let core = flags.0 & !(TcpFlags::ECE | TcpFlags::CWR);
        const FPU: u8 = TcpFlags::FIN | TcpFlags::PSH | TcpFlags::URG;
        match core {
            TcpFlags::SYN => ScanKind::Syn,
            0 if flags.0 == 0 => ScanKind::Null,
            FPU if flags.0 == FPU => ScanKind::Xmas,
            TcpFlags::FIN if flags.0 == TcpFlags::FIN => ScanKind::Fin,
            TcpFlags::ACK if flags.0 == TcpFlags::ACK => ScanKind::Ack,
            x if x == TcpFlags::FIN | TcpFlags::ACK && flags.0 == x => ScanKind::Maimon,
            _ => ScanKind::Other(flags),
        }
    }

    /// Whether this probe is evidence of a scan. RST, RST+ACK and SYN+ACK to an unused port
    /// are what a host sees as backscatter when somebody else spoofs its address; acting on
    /// them would let an attacker make us block innocent third parties. But no stack answers
    /// with RST together with SYN or FIN, or SYN+ACK together with FIN: those are crafted.
    pub fn is_scan(self) -> bool {
        match self {
            ScanKind::Other(f) => {
                let crafted = f.has(TcpFlags::SYN) || f.has(TcpFlags::FIN);
                let backscatter = (f.has(TcpFlags::RST) && !crafted)
                    || (f.has(TcpFlags::SYN)
                        && f.has(TcpFlags::ACK)
                        && !f.has(TcpFlags::RST)
                        && !f.has(TcpFlags::FIN));
                !backscatter
            }
            // ABORT, SHUTDOWN-ACK, HEARTBEAT...: an association's traffic or answers to a
            // forged one; only INIT and COOKIE-ECHO open one.
            ScanKind::SctpOther(_) => false,
            _ => true,
        }
    }

    /// The protocol family of the kind, for the alert line and the action taken.
    pub fn proto(self) -> Proto {
        match self {
            ScanKind::Udp => Proto::Udp,
            ScanKind::SctpInit | ScanKind::SctpCookieEcho | ScanKind::SctpOther(_) => Proto::Sctp,
            ScanKind::IpProtocol | ScanKind::Unreadable => Proto::Ip,
            _ => Proto::Tcp,
        }
    }

    /// SCTP's first chunk type (byte 12 of the packet) as a kind.
    pub fn classify_sctp(chunk: u8) -> ScanKind {
        match chunk {
            1 => ScanKind::SctpInit,
            10 => ScanKind::SctpCookieEcho,
            c => ScanKind::SctpOther(c),
        }
    }
}

/// One packet aimed at a watched port, reduced to what detection needs. `Copy`, so it
/// travels through channels without allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: Proto,
    pub src_port: u16,
    pub dst_port: u16,
    pub kind: ScanKind,
    pub flags: TcpFlags,
    /// IPv4 options present (PortSentry's "detection avoidance technique" alert).
    pub ip_options: bool,
    /// The source held a live connection to this host when the probe came (the table's
    /// mark, `LIVE_CLIENT_MARK`): anybody can forge such a probe, so it never blocks.
    pub live_client: bool,
    /// IPv6: a live client shares the source's network (`ipv6_prefix`), so a block of the
    /// source must not cover the network.
    pub client_net: bool,
}

/// The packet-mark bit the table (chain `watched`) sets on a queued probe whose source is
/// in `clients4`/`clients6`; it clears the bit first, so nothing else can set it for us.
pub const LIVE_CLIENT_MARK: u32 = 0x0010_0000;
/// The bit it sets when the source's IPv6 network is in `clientnets6`.
pub const CLIENT_NET_MARK: u32 = 0x0020_0000;

#[cfg(test)]
impl Probe {
    /// A probe of `kind` from `src` to `port` of 192.0.2.1, as the unit tests build them.
    pub fn example(src: &str, port: u16, kind: ScanKind) -> Probe {
        Probe {
            src: src.parse().unwrap(),
            dst: "192.0.2.1".parse().unwrap(),
            proto: kind.proto(),
            src_port: 40000,
            dst_port: port,
            kind,
            flags: TcpFlags(if kind == ScanKind::Syn {
                TcpFlags::SYN
            } else {
                0
            }),
            ip_options: false,
            live_client: false,
            client_net: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const F: u8 = TcpFlags::FIN;
    const S: u8 = TcpFlags::SYN;
    const R: u8 = TcpFlags::RST;
    const P: u8 = TcpFlags::PSH;
    const A: u8 = TcpFlags::ACK;
    const U: u8 = TcpFlags::URG;

    fn k(f: u8) -> ScanKind {
        ScanKind::classify_tcp(TcpFlags(f))
    }

    #[test]
    fn nmap_scan_types() {
        assert_eq!(k(S), ScanKind::Syn);
        assert_eq!(k(S | TcpFlags::ECE | TcpFlags::CWR), ScanKind::Syn);
        assert_eq!(k(F), ScanKind::Fin);
        assert_eq!(k(0), ScanKind::Null);
        assert_eq!(k(F | P | U), ScanKind::Xmas);
        assert_eq!(k(A), ScanKind::Ack);
        assert_eq!(k(F | A), ScanKind::Maimon);
        assert_eq!(k(S | F), ScanKind::Other(TcpFlags(S | F)));
        assert_eq!(
            k(F | P | U | TcpFlags::ECE),
            ScanKind::Other(TcpFlags(F | P | U | 0x40))
        );
    }

    #[test]
    fn backscatter_is_not_a_scan() {
        assert!(!k(R).is_scan());
        assert!(!k(R | A).is_scan());
        assert!(!k(S | A).is_scan());
        assert!(k(S | F).is_scan());
        assert!(k(A).is_scan());
        // Backscatter with the ECN or PSH bits some stacks set is still backscatter.
        assert!(!k(R | A | P).is_scan());
        assert!(!k(S | A | TcpFlags::ECE).is_scan());
    }

    #[test]
    fn impossible_flag_sets_are_scans() {
        // nmap --scanflags URGACKPSHRSTSYNFIN, and RST or SYN+ACK with SYN or FIN added.
        for f in [
            S | R,
            F | R,
            S | F | R,
            R | A | F,
            R | A | S,
            U | A | P | R | S | F,
            S | A | F,
            S | F,
            F | P | U | S,
        ] {
            assert!(k(f).is_scan(), "{:?}", TcpFlags(f));
        }
    }

    #[test]
    fn sctp_chunks() {
        assert_eq!(ScanKind::classify_sctp(1), ScanKind::SctpInit);
        assert_eq!(ScanKind::classify_sctp(10), ScanKind::SctpCookieEcho);
        assert!(ScanKind::SctpInit.is_scan() && ScanKind::SctpCookieEcho.is_scan());
        // ABORT (6) and SHUTDOWN-ACK (8) are what a forged association brings back.
        assert!(!ScanKind::classify_sctp(6).is_scan());
        assert!(!ScanKind::classify_sctp(8).is_scan());
        assert_eq!(ScanKind::SctpInit.proto(), Proto::Sctp);
        assert_eq!(ScanKind::IpProtocol.proto(), Proto::Ip);
    }

    #[test]
    fn flags_print_by_name() {
        assert_eq!(format!("{:?}", TcpFlags(S | F)), "FIN|SYN");
        assert_eq!(format!("{:?}", TcpFlags(0)), "none");
    }
}
