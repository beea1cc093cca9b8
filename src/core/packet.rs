//! Bytes from the queue → `Probe`. Pure, allocation-free, and total: any input either yields
//! a probe or a reason it does not, never a panic (hostile bytes land here first).

use crate::core::ignore::canonical;
use crate::core::probe::{Probe, ScanKind, TcpFlags};
use etherparse::{Ipv4HeaderSlice, Ipv6HeaderSlice};
use std::net::IpAddr;

/// Why a queued packet could not be read as a probe. The packet is still given a verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unparsed {
    /// Not an IPv4/IPv6 header we can read.
    BadIp,
    /// ICMP, ICMPv6 or IGMP: the host's own control traffic, never a probe (our rules do
    /// not steer it).
    OtherProtocol,
    /// A later fragment: no transport header to read.
    Fragment,
    /// An IPv6 packet from an IPv4-mapped address (`::ffff:a.b.c.d`), which no host sends
    /// on the wire: a forgery aimed at the IPv4 host, which the table's live-client
    /// lookup (by IPv6 address) would not recognise. Dropped, never a reason to block.
    MappedSource,
}

const ICMP: u8 = 1;
const IGMP: u8 = 2;
const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMPV6: u8 = 58;
const SCTP: u8 = 132;

/// Parses a layer-3 packet as delivered by NFQUEUE. The copy range usually truncates the
/// packet, so length fields are checked laxly: only the bytes we read must be present.
///
/// A packet whose transport header lies beyond the bytes we have (a long IPv6 extension
/// header chain, cut by the copy range) is still a probe from its source, to a port we
/// cannot name (`ScanKind::Unreadable`): the kernel steered it here because it found a
/// watched port or an unserved protocol there.
pub fn parse(bytes: &[u8]) -> Result<Probe, Unparsed> {
    let (src, dst, ip_options, transport) = match bytes.first().map(|b| b >> 4) {
        Some(4) => ipv4(bytes)?,
        Some(6) => ipv6(bytes)?,
        _ => return Err(Unparsed::BadIp),
    };
    let probe = |kind: ScanKind, src_port: u16, dst_port: u16, flags: TcpFlags| Probe {
        // An IPv4-mapped address is the IPv4 host: say so once, here, so the detector, the
        // block sets, the logs and `unblock` all see one address.
        src: canonical(src),
        dst: canonical(dst),
        proto: kind.proto(),
        src_port,
        dst_port,
        kind,
        flags,
        ip_options,
        live_client: false,
        client_net: false,
    };
    let unreadable = probe(ScanKind::Unreadable, 0, 0, TcpFlags(0));
    let Some((proto, t)) = transport else {
        return Ok(unreadable);
    };
    Ok(match proto {
        // Ports and flags sit in the first 14 bytes; a hostile data offset does not stop us
        // reading them.
        TCP if t.len() >= 14 => {
            let flags = TcpFlags(t[13]);
            probe(ScanKind::classify_tcp(flags), be16(t, 0), be16(t, 2), flags)
        }
        UDP if t.len() >= 4 => probe(ScanKind::Udp, be16(t, 0), be16(t, 2), TcpFlags(0)),
        // Common header (12 bytes), then the first chunk's type.
        SCTP if t.len() >= 13 => probe(
            ScanKind::classify_sctp(t[12]),
            be16(t, 0),
            be16(t, 2),
            TcpFlags(0),
        ),
        TCP | UDP | SCTP => unreadable,
        ICMP | IGMP | ICMPV6 => return Err(Unparsed::OtherProtocol),
        other => probe(ScanKind::IpProtocol, 0, other.into(), TcpFlags(0)),
    })
}

/// Source, destination, IPv4 options present, and the transport protocol with its bytes
/// (`None`: the header chain runs past the bytes we have).
type Layer3<'a> = (IpAddr, IpAddr, bool, Option<(u8, &'a [u8])>);

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
        Some((h.protocol().0, &bytes[header_len..])),
    ))
}

/// Walks the extension chain by hand, every index checked (etherparse 0.21's extension
/// iterator reads out of bounds on some truncated hostile chains, which our fuzz target
/// found), as far as the bytes go: the kernel accepts any number of extension headers,
/// and each is at least 8 bytes, so the walk ends within `bytes.len() / 8` steps.
/// Hop-by-hop, routing, destination options, fragment and AH are followed, as the
/// kernel's own walk (`ipv6_skip_exthdr`) does; any other next header is the transport.
fn ipv6(bytes: &[u8]) -> Result<Layer3<'_>, Unparsed> {
    let h = Ipv6HeaderSlice::from_slice(bytes).map_err(|_| Unparsed::BadIp)?;
    if h.source_addr().to_ipv4_mapped().is_some() {
        return Err(Unparsed::MappedSource);
    }
    let (src, dst) = (h.source_addr().into(), h.destination_addr().into());
    let mut next = h.next_header().0;
    let mut at = h.slice().len();
    loop {
        let ext = |i: usize| bytes.get(at + i).copied();
        let len = match next {
            // hop-by-hop, routing, destination options: (hdr ext len + 1) × 8
            0 | 43 | 60 => ext(1).map(|l| (usize::from(l) + 1) * 8),
            // fragment: fixed 8 bytes; a later fragment carries no transport header
            44 => match (ext(2), ext(3)) {
                (Some(a), Some(b)) if u16::from_be_bytes([a, b]) >> 3 != 0 => {
                    return Err(Unparsed::Fragment)
                }
                (Some(_), Some(_)) => Some(8),
                _ => None,
            },
            // authentication header: (payload len + 2) × 4
            51 => ext(1).map(|l| (usize::from(l) + 2) * 4),
            _ => break,
        };
        match (len, ext(0)) {
            (Some(len), Some(n)) => {
                next = n;
                at += len;
            }
            // The whole packet is here (the payload length says so) and the header does
            // not fit in it: nothing follows, the header itself is what was sent (nmap -6
            // -sO's bare AH). Otherwise the copy range cut it.
            _ if bytes.len() >= 40 + usize::from(h.payload_length()) => {
                return Ok((src, dst, false, Some((next, &[]))))
            }
            _ => return Ok((src, dst, false, None)),
        }
    }
    Ok((src, dst, false, bytes.get(at..).map(|t| (next, t))))
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
    use crate::core::probe::Proto;
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
        // Cut inside the TCP header: still a probe from that source, port unknown.
        let p = parse(&pkt[..30]).unwrap();
        assert_eq!(
            (p.kind, p.proto, p.dst_port),
            (ScanKind::Unreadable, Proto::Ip, 0)
        );
        assert_eq!(p.src.to_string(), "192.0.2.2");
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
    fn ipv4_mapped_sources_are_forgeries_never_probes() {
        // On the wire no host sends from ::ffff:a.b.c.d: taken as the IPv4 host, a forger
        // on IPv6 would get that host blocked past the live-client check.
        let mut src = [0u8; 16];
        src[10..].copy_from_slice(&[0xff, 0xff, 192, 0, 2, 2]);
        let mut dst = [0u8; 16];
        dst[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        dst[15] = 1;
        assert_eq!(parse(&udp6(src, dst, 9)), Err(Unparsed::MappedSource));
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

    /// IPv6 header, then `exts` (each: next header, payload bytes), then `transport` with
    /// protocol `proto`.
    fn ipv6_chain(exts: &[(u8, usize)], proto: u8, transport: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 0, 0, 64];
        p.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        p.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        let mut next = proto;
        let mut hdrs: Vec<Vec<u8>> = Vec::new();
        for &(kind, len) in exts.iter().rev() {
            let mut h = match kind {
                44 => vec![next, 0, 0, 0, 0, 0, 0, 1],
                51 => {
                    let mut h = vec![next, (len / 4 - 2) as u8];
                    h.resize(len, 0);
                    h
                }
                _ => {
                    let mut h = vec![next, (len / 8 - 1) as u8, 1, (len - 4) as u8];
                    h.resize(len, 0);
                    h
                }
            };
            h.truncate(len.max(8));
            hdrs.push(h);
            next = kind;
        }
        p[6] = next;
        for h in hdrs.iter().rev() {
            p.extend_from_slice(h);
        }
        p.extend_from_slice(transport);
        let plen = (p.len() - 40) as u16;
        p[4..6].copy_from_slice(&plen.to_be_bytes());
        p
    }

    const SYN_TO_22: [u8; 20] = [
        0x9c, 0x40, 0, 22, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 4, 0, 0, 0, 0, 0,
    ];

    #[test]
    fn every_extension_the_kernel_walks_is_walked_however_many() {
        // Twelve headers, every kind the kernel skips: more than the 8 we used to stop at.
        let mut exts = vec![(0, 8), (43, 24), (60, 16), (51, 16), (44, 8)];
        exts.extend([(60, 8); 7]);
        let pkt = ipv6_chain(&exts, 6, &SYN_TO_22);
        let p = parse(&pkt).unwrap();
        assert_eq!((p.kind, p.dst_port), (ScanKind::Syn, 22));
    }

    #[test]
    fn a_chain_past_the_copy_range_is_a_probe_to_an_unknown_port() {
        // The 256-byte destination options header of issue 24, then a SYN: cut at 256.
        let pkt = ipv6_chain(&[(60, 256)], 6, &SYN_TO_22);
        let p = parse(&pkt).unwrap();
        assert_eq!((p.kind, p.dst_port), (ScanKind::Syn, 22));
        for cut in [40, 41, 47, 48, 200, 256, 296, 300] {
            let p = parse(&pkt[..cut]).unwrap();
            assert_eq!(
                (p.kind, p.proto),
                (ScanKind::Unreadable, Proto::Ip),
                "{cut}"
            );
            assert_eq!(p.src.to_string(), "2001:db8::2");
            assert!(p.kind.is_scan());
        }
    }

    #[test]
    fn other_ip_protocols_are_named_by_number() {
        let mut pkt = tcp4([192, 0, 2, 2], [192, 0, 2, 1], 1, true, false);
        pkt[9] = 47; // GRE
        let p = parse(&pkt).unwrap();
        assert_eq!(
            (p.kind, p.proto, p.dst_port),
            (ScanKind::IpProtocol, Proto::Ip, 47)
        );
        pkt[9] = 1; // ICMP is the host's own
        assert_eq!(parse(&pkt), Err(Unparsed::OtherProtocol));
        // IPv6: the protocol after the extension headers; ICMPv6 is the host's own.
        let p = parse(&ipv6_chain(&[(0, 8), (60, 8)], 50, &[0; 8])).unwrap();
        assert_eq!((p.kind, p.dst_port), (ScanKind::IpProtocol, 50));
        let p = parse(&ipv6_chain(&[(60, 8)], 59, &[])).unwrap();
        assert_eq!((p.kind, p.dst_port), (ScanKind::IpProtocol, 59));
        // nmap -6 -sO's probe for AH: a bare IPv6 header whose next header is AH.
        let mut bare = ipv6_chain(&[], 6, &[]);
        bare[6] = 51;
        let p = parse(&bare).unwrap();
        assert_eq!((p.kind, p.dst_port), (ScanKind::IpProtocol, 51));
        assert_eq!(
            parse(&ipv6_chain(&[(0, 8)], 58, &[128, 0, 0, 0])),
            Err(Unparsed::OtherProtocol)
        );
    }

    #[test]
    fn sctp_init_and_cookie_echo() {
        // Common header (ports 5000 -> 80, vtag, checksum), then the first chunk.
        let sctp = |chunk: u8| {
            let mut t = vec![0x13, 0x88, 0, 80, 0, 0, 0, 0, 0, 0, 0, 0, chunk, 0, 0, 4];
            t.resize(20, 0);
            t
        };
        let mut pkt = tcp4([192, 0, 2, 2], [192, 0, 2, 1], 1, true, false);
        pkt.truncate(20);
        pkt[9] = 132;
        for (chunk, kind) in [(1, ScanKind::SctpInit), (10, ScanKind::SctpCookieEcho)] {
            let mut p4 = pkt.clone();
            p4.extend(sctp(chunk));
            let p = parse(&p4).unwrap();
            assert_eq!((p.kind, p.proto, p.dst_port), (kind, Proto::Sctp, 80));
            let p = parse(&ipv6_chain(&[(60, 8)], 132, &sctp(chunk))).unwrap();
            assert_eq!((p.kind, p.dst_port), (kind, 80));
        }
        let mut abort = pkt.clone();
        abort.extend(sctp(6));
        assert!(!parse(&abort).unwrap().kind.is_scan());
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

        /// A hostile IPv6 chain: any next headers and lengths, any cut.
        #[test]
        fn never_panics_on_hostile_ipv6_chains(
            exts in proptest::collection::vec((prop_oneof![Just(0u8), Just(43), Just(44), Just(51), Just(60), any::<u8>()], any::<u8>()), 0..40),
            cut in 0usize..600,
        ) {
            let mut p = vec![0x60, 0, 0, 0, 0, 0, exts.first().map_or(6, |e| e.0), 64];
            p.extend_from_slice(&[0x20; 32]);
            for (i, (_, len)) in exts.iter().enumerate() {
                let next = exts.get(i + 1).map_or(6, |e| e.0);
                p.extend_from_slice(&[next, *len, 0, 0, 0, 0, 0, 0]);
            }
            p.extend_from_slice(&SYN_TO_22);
            p.truncate(cut);
            if let Ok(probe) = parse(&p) {
                prop_assert!(probe.src.is_ipv6());
            }
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
