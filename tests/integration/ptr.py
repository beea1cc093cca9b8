#!/usr/bin/env python3
"""A minimal DNS server for tests: answers every PTR query with one name.

  ptr.py ADDR PORT NAME      serves until killed
"""
import socket
import struct
import sys


def answer(query, name):
    tid, flags, qd = struct.unpack("!HHH", query[:6])
    # The question: labels up to the zero byte, then type and class.
    end = query.index(b"\0", 12) + 5
    question = query[12:end]
    rdata = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    rr = b"\xc0\x0c" + struct.pack("!HHIH", 12, 1, 60, len(rdata)) + rdata
    header = struct.pack("!HHHHHH", tid, 0x8180, 1, 1, 0, 0)
    return header + question + rr


def main():
    addr, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))
    while True:
        query, peer = s.recvfrom(512)
        try:
            s.sendto(answer(query, name), peer)
        except (ValueError, struct.error):
            pass


main()
