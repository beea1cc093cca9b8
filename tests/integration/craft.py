#!/usr/bin/env python3
"""Hostile and flood packets for the namespace tests, sent with raw sockets.

Sources are spoofed from the benchmarking range 198.18.0.0/15 (IPv4) and the
documentation range 2001:db8:ff::/48 (IPv6); every run is bounded by --count.

  craft.py hostile DST4 DST6 PORT --count N   malformed TCP/UDP/IPv6 chains
  craft.py syn DST4 PORT --count N [--pace-ms MS]   well-formed SYNs, one new source each
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


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    count = int(args[args.index("--count") + 1]) if "--count" in args else 1000
    random.seed(7)
    if cmd == "hostile":
        hostile(args[0], args[1], int(args[2]), count)
    elif cmd == "syn":
        pace = float(args[args.index("--pace-ms") + 1]) if "--pace-ms" in args else 0
        syn(args[0], int(args[1]), count, pace)
    else:
        sys.exit("unknown command " + cmd)
