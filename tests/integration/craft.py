#!/usr/bin/env python3
"""Hostile and flood packets for the namespace tests, sent with raw sockets.

Sources are spoofed from the benchmarking range 198.18.0.0/15 (IPv4) and the
documentation range 2001:db8:ff::/48 (IPv6); every run is bounded by --count.

  craft.py hostile DST4 DST6 PORT --count N   malformed TCP/UDP/IPv6 chains
  craft.py syn DST4 PORT --count N [--pace-ms MS]   well-formed SYNs, one new source each
  craft.py syn6 DST6 PORT SRC6...    one well-formed SYN from each IPv6 source given
  craft.py udp6 DST6 PORT SRC6...    one UDP datagram from each IPv6 source given
  craft.py proto DST PROTO           one IPv4 or IPv6 packet of IP protocol PROTO
  craft.py chain6 DST6 PORT SRC6 long|many   a SYN behind a 256-byte destination options
                                     header (past the queue's copy range), or behind 12
                                     extension headers
"""
import random
import socket
import struct
import sys
import time


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def src4(i):
    """A distinct source for each i in 1..65535 (198.18.1.0 is a host in a /15)."""
    return socket.inet_aton("198.18.%d.%d" % ((i >> 8) & 0xFF, i & 0xFF))


def ipv4(src, dst, proto, payload, options=b""):
    ihl = 5 + len(options) // 4
    total = 4 * ihl + len(payload)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total, random.getrandbits(16), 0, 64, proto, 0, src, dst)
    hdr += options
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    return hdr + payload


def tcp(sport, dport, flags, offset=5, extra=b""):
    return struct.pack("!HHIIBBHHH", sport, dport, random.getrandbits(32), 0, offset << 4, flags, 1024, 0, 0) + extra


def hostile(dst4, dst6, port, count):
    s4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
    d4 = socket.inet_aton(dst4)
    d6 = socket.inet_pton(socket.AF_INET6, dst6)
    sent = 0
    for i in range(count):
        kind = i % 6
        src = src4(i + 1)
        if kind == 0:  # random flags, random data offset (0..15, most of them lies)
            pkt = ipv4(src, d4, 6, tcp(random.randrange(1, 65535), port, random.getrandbits(8), random.randrange(16)))
        elif kind == 1:  # TCP header cut short (the IP length agrees, the header does not fit)
            pkt = ipv4(src, d4, 6, tcp(40000, port, 0x02)[: random.randrange(4, 19)])
        elif kind == 2:  # UDP header cut short
            pkt = ipv4(src, d4, 17, struct.pack("!HH", 5353, port)[: random.randrange(4, 8)])
        elif kind == 3:  # TCP with option bytes of garbage
            opts = bytes(random.getrandbits(8) for _ in range(40))
            pkt = ipv4(src, d4, 6, tcp(40001, port, random.getrandbits(8), 15, opts))
        else:  # IPv6 with odd extension chains before TCP
            chain = b""
            n = random.randrange(1, 9)
            nexts = [random.choice([0, 43, 60, 44, 51]) for _ in range(n)]
            for j, h in enumerate(nexts):
                nxt = nexts[j + 1] if j + 1 < n else 6
                if h == 44:
                    chain += struct.pack("!BBHI", nxt, 0, random.choice([0, 0, 8]) << 3, random.getrandbits(32))
                elif h == 51:
                    chain += struct.pack("!BBH", nxt, 1, 0) + bytes(8)
                else:
                    ln = random.randrange(0, 3)
                    chain += struct.pack("!BB", nxt, ln) + bytes(6 + 8 * ln)
            payload = chain + tcp(40002, port, random.getrandbits(8), random.randrange(16))
            if kind == 5:
                payload = payload[: random.randrange(1, len(payload))]
            first = nexts[0]
            src6 = socket.inet_pton(socket.AF_INET6, "2001:db8:ff::%x" % (i + 1))
            pkt6 = struct.pack("!IHBB16s16s", 0x60000000, len(payload), first, 64, src6, d6) + payload
            try:
                s6.sendto(pkt6, (dst6, 0))
                sent += 1
            except OSError:
                pass
            continue
        try:
            s4.sendto(pkt, (dst4, 0))
            sent += 1
        except OSError:
            pass
    print("sent %d" % sent)


def syn(dst4, port, count, pace_ms=0):
    s4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    d4 = socket.inet_aton(dst4)
    for i in range(count):
        src = src4(i + 1)
        seg = tcp(40000 + i % 20000, port, 0x02)
        pseudo = src + d4 + struct.pack("!BBH", 0, 6, len(seg))
        seg = seg[:16] + struct.pack("!H", csum(pseudo + seg)) + seg[18:]
        s4.sendto(ipv4(src, d4, 6, seg), (dst4, 0))
        if pace_ms:
            time.sleep(pace_ms / 1000)
    print("sent %d" % count)


def ipv6_probe(dst6, port, sources, proto):
    """One SYN (proto 6) or UDP datagram (17) from each source, checksums right."""
    s6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
    d6 = socket.inet_pton(socket.AF_INET6, dst6)
    for i, a in enumerate(sources):
        src6 = socket.inet_pton(socket.AF_INET6, a)
        if proto == 6:
            seg = tcp(40000 + i, port, 0x02)
        else:
            seg = struct.pack("!HHHH", 40000 + i, port, 8 + 4, 0) + b"ping"
        pseudo = src6 + d6 + struct.pack("!IxxxB", len(seg), proto)
        c = csum(pseudo + seg)
        at = 16 if proto == 6 else 6
        seg = seg[:at] + struct.pack("!H", c) + seg[at + 2:]
        pkt6 = struct.pack("!IHBB16s16s", 0x60000000, len(seg), proto, 64, src6, d6) + seg
        s6.sendto(pkt6, (dst6, 0))
    print("sent %d" % len(sources))


def proto_probe(dst, proto):
    """Eight zero bytes of protocol `proto`, the way nmap -sO sends an unknown protocol."""
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_RAW, proto)
    s.sendto(bytes(8), (dst, 0))
    print("sent 1")


def destopt(nxt, length):
    """A destination options header of `length` bytes (a multiple of 8): one option of
    experimental type 0x1e (RFC 4727; skipped by a receiver that does not know it), then
    padding. The kernel refuses more than 7 bytes of padding in a row."""
    body = length - 2
    if body >= 8:
        opt = struct.pack("!BB", 0x1E, body - 2) + bytes(body - 2)
    else:
        opt = struct.pack("!BB", 1, body - 2) + bytes(body - 2)
    return struct.pack("!BB", nxt, length // 8 - 1) + opt


def chain6(dst6, port, src, mode):
    s6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
    d6 = socket.inet_pton(socket.AF_INET6, dst6)
    src6 = socket.inet_pton(socket.AF_INET6, src)
    seg = tcp(40000, port, 0x02)
    pseudo = src6 + d6 + struct.pack("!IxxxB", len(seg), 6)
    seg = seg[:16] + struct.pack("!H", csum(pseudo + seg)) + seg[18:]
    if mode == "long":
        first, chain = 60, destopt(6, 256)
    else:
        # hop-by-hop, routing (experimental type 253, no segments left: skipped), ten destination options
        # headers, an atomic fragment header, then TCP: the kernel walks them all.
        hops = [0, 43] + [60] * 10 + [44]
        chain = b""
        for j, h in enumerate(hops):
            nxt = hops[j + 1] if j + 1 < len(hops) else 6
            if h == 44:
                chain += struct.pack("!BBHI", nxt, 0, 0, random.getrandbits(32))
            elif h == 43:
                chain += struct.pack("!BBBB", nxt, 0, 253, 0) + bytes(4)
            else:
                chain += destopt(nxt, 8)
        first = hops[0]
    payload = chain + seg
    pkt6 = struct.pack("!IHBB16s16s", 0x60000000, len(payload), first, 64, src6, d6) + payload
    s6.sendto(pkt6, (dst6, 0))
    print("sent 1")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    count = int(args[args.index("--count") + 1]) if "--count" in args else 1000
    random.seed(7)
    if cmd == "hostile":
        hostile(args[0], args[1], int(args[2]), count)
    elif cmd == "syn":
        pace = float(args[args.index("--pace-ms") + 1]) if "--pace-ms" in args else 0
        syn(args[0], int(args[1]), count, pace)
    elif cmd in ("syn6", "udp6"):
        ipv6_probe(args[0], int(args[1]), args[2:], 6 if cmd == "syn6" else 17)
    elif cmd == "proto":
        proto_probe(args[0], int(args[1]))
    elif cmd == "chain6":
        chain6(args[0], int(args[1]), args[2], args[3])
    else:
        sys.exit("unknown command " + cmd)
