//! Bytes from the queue → `Probe`. Pure, allocation-free, and total: any input either yields
//! a probe or a reason it does not, never a panic (hostile bytes land here first).

use crate::core::ignore::canonical;
use crate::core::probe::{Probe, Proto, ScanKind, TcpFlags};
use etherparse::{Ipv4HeaderSlice, Ipv6HeaderSlice};
use std::net::IpAddr;

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

const TCP: u8 = 6;
const UDP: u8 = 17;
/// IPv6 extension headers walked before giving up (a chain longer than this is hostile).
const MAX_EXTENSIONS: usize = 8;

/// Parses a layer-3 packet as delivered by NFQUEUE. The copy range usually truncates the
/// packet, so length fields are checked laxly: only the bytes we read must be present.
pub fn parse(bytes: &[u8]) -> Result<Probe, Unparsed> {
    let (src, dst, ip_options, proto, transport) = match bytes.first().map(|b| b >> 4) {
        Some(4) => ipv4(bytes)?,
        Some(6) => ipv6(bytes)?,
        _ => return Err(Unparsed::BadIp),
    };
    let t = transport;
    let (proto, src_port, dst_port, flags) = match proto {
        TCP => {
            // Ports and flags sit in the first 14 bytes; a hostile data offset does not stop
            // us reading them.
            if t.len() < 14 {
                return Err(Unparsed::Truncated);
            }
            (Proto::Tcp, be16(t, 0), be16(t, 2), TcpFlags(t[13]))
        }
        UDP => {
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
    // An IPv4-mapped address is the IPv4 host: say so once, here, so the detector, the
    // block sets, the logs and `unblock` all see one address.
    Ok(Probe {
        src: canonical(src),
        dst: canonical(dst),
        proto,
        src_port,
        dst_port,
        kind,
        flags,
        ip_options,
        live_client: false,
        client_net: false,
    })
}

type Layer3<'a> = (IpAddr, IpAddr, bool, u8, &'a [u8]);

fn ipv4(bytes: &[u8]) -> Result<Layer3<'_>, Unparsed> {
    let h = Ipv4HeaderSlice::from_slice(bytes).map_err(|_| Unparsed::BadIp)?;
    if h.fragments_offset().value() != 0 {
        return Err(Unparsed::Fragment);
    }
    let header_len = h.slice().len();
    Ok((
        h.source_addr().into(),
        h.destination_addr().into(),
        !h.options().is_empty(),
        h.protocol().0,
        &bytes[header_len..],
    ))
}

/// Walks the extension chain by hand, every index checked: etherparse 0.21's extension
/// iterator reads out of bounds (`get_unchecked`) on some truncated hostile chains, which
/// our fuzz target found.
fn ipv6(bytes: &[u8]) -> Result<Layer3<'_>, Unparsed> {
    let h = Ipv6HeaderSlice::from_slice(bytes).map_err(|_| Unparsed::BadIp)?;
    let mut next = h.next_header().0;
    let mut at = h.slice().len();
    for _ in 0..MAX_EXTENSIONS {
        let ext = |i: usize| bytes.get(at + i).copied().ok_or(Unparsed::Truncated);
        let len = match next {
            // hop-by-hop, routing, destination options: (hdr ext len + 1) × 8
            0 | 43 | 60 => (usize::from(ext(1)?) + 1) * 8,
            // fragment: fixed 8 bytes; a later fragment carries no transport header
            44 => {
                let off = u16::from_be_bytes([ext(2)?, ext(3)?]) >> 3;
                if off != 0 {
                    return Err(Unparsed::Fragment);
                }
                8
            }
            // authentication header: (payload len + 2) × 4
            51 => (usize::from(ext(1)?) + 2) * 4,
            _ => break,
        };
        next = ext(0)?;
        at += len;
    }
    let transport = bytes.get(at..).ok_or(Unparsed::Truncated)?;
    Ok((
        h.source_addr().into(),
        h.destination_addr().into(),
        false,
        next,
        transport,
    ))
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
    fn ipv4_mapped_sources_are_read_as_ipv4() {
        let mut src = [0u8; 16];
        src[10..].copy_from_slice(&[0xff, 0xff, 192, 0, 2, 2]);
        let mut dst = [0u8; 16];
        dst[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        dst[15] = 1;
        let p = parse(&udp6(src, dst, 9)).unwrap();
        assert_eq!(p.src, "192.0.2.2".parse::<IpAddr>().unwrap());
        assert!(p.src.is_ipv4());
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

    /// Found by `cargo fuzz run packet`: an IPv6 extension chain that made etherparse
    /// 0.21's iterator index out of bounds.
    #[test]
    fn fuzz_regression_truncated_ipv6_extension_chain() {
        let mut crash = vec![103, 103, 69, 0, 223, 0, 0, 103];
        crash.extend_from_slice(&[0; 10]);
        crash.extend_from_slice(&[69, 175, 1]);
        crash.extend_from_slice(&[0; 33]);
        let _ = parse(&crash);
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
