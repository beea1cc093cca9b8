//! Bytes from the queue → `Probe`. Pure, allocation-free, and total: any input either yields
//! a probe or a reason it does not, never a panic (hostile bytes land here first).

use crate::probe::{Probe, Proto, ScanKind, TcpFlags};
use etherparse::{IpNumber, Ipv6ExtensionSlice, LaxNetSlice, LaxSlicedPacket};

/// Why a queued packet could not be read as a probe. The packet is still given a verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unparsed {
    /// Not an IPv4/IPv6 header we can read.
    BadIp,
    /// A protocol other than TCP or UDP (our rules only steer those).
    OtherProtocol,
    /// A later fragment: no transport header to read.
    Fragment,
    /// Transport header cut short.
    Truncated,
}

/// Parses a layer-3 packet as delivered by NFQUEUE. The copy range usually truncates the
/// packet, so length fields are checked laxly: only the bytes we read must be present.
pub fn parse(bytes: &[u8]) -> Result<Probe, Unparsed> {
    let sliced = LaxSlicedPacket::from_ip(bytes).map_err(|_| Unparsed::BadIp)?;
    let net = sliced.net.as_ref().ok_or(Unparsed::BadIp)?;
    let (src, dst, ip_options, later_fragment, payload) = match net {
        LaxNetSlice::Ipv4(v4) => {
            let h = v4.header();
            (
                h.source_addr().into(),
                h.destination_addr().into(),
                !h.options().is_empty(),
                h.fragments_offset().value() != 0,
                v4.payload(),
            )
        }
        LaxNetSlice::Ipv6(v6) => {
            let h = v6.header();
            let later = v6.extensions().clone().into_iter().any(|e| match e {
                Ipv6ExtensionSlice::Fragment(f) => f.fragment_offset().value() != 0,
                _ => false,
            });
            (
                h.source_addr().into(),
                h.destination_addr().into(),
                false,
                later,
                v6.payload(),
            )
        }
        LaxNetSlice::Arp(_) => return Err(Unparsed::BadIp),
    };
    if later_fragment {
        return Err(Unparsed::Fragment);
    }
    let t = payload.payload;
    let (proto, src_port, dst_port, flags) = match payload.ip_number {
        IpNumber::TCP => {
            // Ports and flags sit in the first 14 bytes; a hostile data offset does not stop
            // us reading them.
            if t.len() < 14 {
                return Err(Unparsed::Truncated);
            }
            (Proto::Tcp, be16(t, 0), be16(t, 2), TcpFlags(t[13]))
        }
        IpNumber::UDP => {
            if t.len() < 4 {
                return Err(Unparsed::Truncated);
            }
            (Proto::Udp, be16(t, 0), be16(t, 2), TcpFlags(0))
        }
        _ => return Err(Unparsed::OtherProtocol),
    };
    let kind = match proto {
        Proto::Tcp => ScanKind::classify_tcp(flags),
        Proto::Udp => ScanKind::Udp,
    };
    Ok(Probe {
        src,
        dst,
        proto,
        src_port,
        dst_port,
        kind,
        flags,
        ip_options,
    })
}

#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Test and fuzz helpers: build real packets with etherparse.
#[cfg(test)]
pub(crate) mod build {
    use etherparse::PacketBuilder;

    pub fn tcp4(src: [u8; 4], dst: [u8; 4], dport: u16, syn: bool, fin: bool) -> Vec<u8> {
        let mut b = PacketBuilder::ipv4(src, dst, 64).tcp(40000, dport, 1, 1024);
        if syn {
            b = b.syn();
        }
        if fin {
            b = b.fin();
        }
        let mut out = Vec::new();
        b.write(&mut out, &[]).unwrap();
        out
    }

    pub fn udp6(src: [u8; 16], dst: [u8; 16], dport: u16) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ipv6(src, dst, 64)
            .udp(5353, dport)
            .write(&mut out, &[1, 2, 3])
            .unwrap();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ipv4_syn() {
        let p = parse(&tcp4([192, 0, 2, 2], [192, 0, 2, 1], 111, true, false)).unwrap();
        assert_eq!(p.src.to_string(), "192.0.2.2");
        assert_eq!(p.dst_port, 111);
        assert_eq!(p.kind, ScanKind::Syn);
        assert!(!p.ip_options);
    }

    #[test]
    fn ipv4_fin_truncated_by_copy_range() {
        let mut pkt = tcp4([192, 0, 2, 2], [192, 0, 2, 1], 1, false, true);
        pkt.extend_from_slice(&[0; 400]);
        // total length field still says 40, extra bytes are ignored; then cut to 34 bytes.
        let p = parse(&pkt[..34]).unwrap();
        assert_eq!(p.kind, ScanKind::Fin);
        assert_eq!(parse(&pkt[..30]), Err(Unparsed::Truncated));
    }

    #[test]
    fn ipv6_udp() {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        let mut b = a;
        a[15] = 2;
        b[15] = 1;
        let p = parse(&udp6(a, b, 161)).unwrap();
        assert_eq!(p.src.to_string(), "2001:db8::2");
        assert_eq!(p.proto, Proto::Udp);
        assert_eq!(p.dst_port, 161);
    }

    #[test]
    fn ipv4_options_are_seen() {
        let mut pkt = tcp4([192, 0, 2, 2], [192, 0, 2, 1], 111, true, false);
        // Rebuild with IHL=6 and one NOP+EOL option word inserted after the base header.
        pkt[0] = 0x46;
        pkt.splice(20..20, [1, 1, 1, 0]);
        let len = pkt.len() as u16;
        pkt[2..4].copy_from_slice(&len.to_be_bytes());
        let p = parse(&pkt).unwrap();
        assert!(p.ip_options);
        assert_eq!(p.dst_port, 111);
    }

    #[test]
    fn later_fragment_has_no_ports() {
        let mut pkt = tcp4([192, 0, 2, 2], [192, 0, 2, 1], 111, true, false);
        pkt[6] = 0x00;
        pkt[7] = 0x10; // fragment offset 16 (x8 bytes)
        assert_eq!(parse(&pkt), Err(Unparsed::Fragment));
    }

    /// IPv6 with a hop-by-hop header and a (first) fragment header before TCP.
    fn ipv6_with_extensions(fragment_offset: u16) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 0, 0, 64];
        p.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        p.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        // hop-by-hop: next = fragment (44), len 0, PadN(4)
        p.extend_from_slice(&[44, 0, 1, 4, 0, 0, 0, 0]);
        // fragment: next = TCP, offset in 8-byte units << 3, more fragments flag set
        let off = (fragment_offset << 3) | 1;
        p.extend_from_slice(&[6, 0, (off >> 8) as u8, off as u8, 0, 0, 0, 9]);
        // TCP: ports 40000 -> 22, flags XMAS (FIN|PSH|URG)
        let mut tcp = vec![
            0x9c, 0x40, 0, 22, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x29, 4, 0, 0, 0, 0, 0,
        ];
        p.append(&mut tcp);
        let plen = (p.len() - 40) as u16;
        p[4..6].copy_from_slice(&plen.to_be_bytes());
        p
    }

    #[test]
    fn ipv6_extension_chain_is_walked() {
        let p = parse(&ipv6_with_extensions(0)).unwrap();
        assert_eq!((p.dst_port, p.kind), (22, ScanKind::Xmas));
        assert_eq!(parse(&ipv6_with_extensions(3)), Err(Unparsed::Fragment));
    }

    #[test]
    fn junk_is_rejected() {
        assert_eq!(parse(&[]), Err(Unparsed::BadIp));
        assert_eq!(parse(&[0x45]), Err(Unparsed::BadIp));
        assert_eq!(parse(&[0x70; 60]), Err(Unparsed::BadIp));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]
        #[test]
        fn never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn never_panics_on_mutated_real_packets(
            idx in 0usize..60, val in any::<u8>(), cut in 0usize..80, v6 in any::<bool>()
        ) {
            let mut pkt = if v6 { udp6([0x20; 16], [0x21; 16], 7) }
                          else { tcp4([192, 0, 2, 2], [192, 0, 2, 1], 7, true, true) };
            if idx < pkt.len() { pkt[idx] = val; }
            pkt.truncate(cut);
            let _ = parse(&pkt);
        }
    }
}
