#!/usr/bin/env python3
"""A real server's clients for the namespace tests, and the forger who targets them.

Every loop is bounded by its SECONDS or COUNT; traffic goes only to the test's own hosts.

  clients.py echo PORT                        TCP echo server (both families), one thread a client
  clients.py udp-echo PORT                    UDP echo server (both families)
  clients.py session DST ECHO_PORT NEW_PORT SECONDS
        holds one TCP session to DST:ECHO_PORT, a byte echoed every 0.1 s, and opens a new
        connection to DST:NEW_PORT every 0.5 s; prints JSON: whether the session lived
        and how many new connections worked or failed
  clients.py many DST TCP_PORT UDP_PORT SECONDS SRC...
        one client per source address: a TCP connection to TCP_PORT and a UDP query to
        UDP_PORT every 0.1 s; prints JSON per source: ok, refused, lost, and whether its
        last second went well
  clients.py forge6 DST SRC FIRST_PORT COUNT  COUNT SYNs claiming to come from SRC, to
        ports FIRST_PORT.. (IPv6; hping3 has no IPv6)
"""
import json
import os
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from craft import csum  # noqa: E402  (the tests' one checksum)


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def echo(port):
    srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("::", port))
    srv.listen(64)

    def serve(c):
        with c:
            while True:
                b = c.recv(4096)
                if not b:
                    return
                c.sendall(b)

    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def udp_echo(port):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    while True:
        b, peer = s.recvfrom(2048)
        s.sendto(b, peer)


def session(dst, echo_port, new_port, seconds):
    end = time.time() + seconds
    res = {"session": "alive", "new_ok": 0, "new_failed": 0, "echoes": 0}
    s = socket.create_connection((dst, echo_port), timeout=2)
    s.settimeout(2)
    next_new = time.time()
    while time.time() < end:
        try:
            s.sendall(b"x")
            if s.recv(1) != b"x":
                raise OSError("session closed")
            res["echoes"] += 1
        except OSError as e:
            res["session"] = "died: %s" % e
            break
        if time.time() >= next_new:
            next_new += 0.5
            try:
                c = socket.create_connection((dst, new_port), timeout=2)
                c.close()
                res["new_ok"] += 1
            except OSError:
                res["new_failed"] += 1
        time.sleep(0.1)
    print(json.dumps(res), flush=True)


def many(dst, tcp_port, udp_port, seconds, sources):
    fam = family(dst)
    out = {}
    lock = threading.Lock()

    def attempt(r, src, kind, timeout, use):
        """One exchange from `src` on a fresh socket, counted as ok, refused or lost."""
        try:
            with socket.socket(fam, kind) as s:
                s.settimeout(timeout)
                s.bind((src, 0))
                use(s)
            r["ok"] += 1
            r["last_ok"] = time.time()
        except ConnectionRefusedError:
            r["refused"] += 1
        except OSError:
            r["lost"] += 1

    def query(u):
        u.sendto(b"q", (dst, udp_port))
        u.recvfrom(16)

    def client(src):
        r = {"ok": 0, "refused": 0, "lost": 0, "last_ok": 0.0}
        end = time.time() + seconds
        while time.time() < end:
            t = time.time()
            attempt(r, src, socket.SOCK_STREAM, 1, lambda c: c.connect((dst, tcp_port)))
            attempt(r, src, socket.SOCK_DGRAM, 0.5, query)
            time.sleep(max(0, 0.1 - (time.time() - t)))
        r["recovered"] = r["last_ok"] > end - 1.5
        with lock:
            out[src] = r

    threads = [threading.Thread(target=client, args=(s,)) for s in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(out), flush=True)


def forge6(dst, src, first, count):
    s6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
    d6 = socket.inet_pton(socket.AF_INET6, dst)
    s6b = socket.inet_pton(socket.AF_INET6, src)
    for i in range(count):
        port = first + i
        seg = struct.pack("!HHIIBBHHH", 40000 + i % 20000, port, i, 0, 5 << 4, 0x02, 1024, 0, 0)
        c = csum(s6b + d6 + struct.pack("!IxxxB", len(seg), 6) + seg)
        seg = seg[:16] + struct.pack("!H", c) + seg[18:]
        pkt = struct.pack("!IHBB16s16s", 0x60000000, len(seg), 6, 64, s6b, d6) + seg
        s6.sendto(pkt, (dst, 0))
    print("sent %d" % count)


if __name__ == "__main__":
    cmd, a = sys.argv[1], sys.argv[2:]
    if cmd == "echo":
        echo(int(a[0]))
    elif cmd == "udp-echo":
        udp_echo(int(a[0]))
    elif cmd == "session":
        session(a[0], int(a[1]), int(a[2]), float(a[3]))
    elif cmd == "many":
        many(a[0], int(a[1]), int(a[2]), float(a[3]), a[4:])
    elif cmd == "forge6":
        forge6(a[0], a[1], int(a[2]), min(int(a[3]), 10000))
    else:
        sys.exit("unknown command " + cmd)
