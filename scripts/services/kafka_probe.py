#!/usr/bin/env python3
"""Readiness probe for a Kafka broker, standard library only.

usage: kafka_probe.py HOST PORT

Sends ApiVersions (v0) to learn the broker's supported Metadata versions, then a
non-flexible Metadata request (v4..v8) for no topics, and exits 0 only if the
broker answers with a broker list that contains HOST:PORT. Exits 1 otherwise.
"""

import socket
import struct
import sys

API_METADATA, API_VERSIONS = 3, 18


def request(sock, api_key, version, corr, body):
    client = b"pushplat-probe"
    header = struct.pack(">hhih", api_key, version, corr, len(client)) + client
    msg = header + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)
    size = struct.unpack(">i", recv_exact(sock, 4))[0]
    data = recv_exact(sock, size)
    if struct.unpack(">i", data[:4])[0] != corr:
        raise RuntimeError("correlation id mismatch")
    return data[4:]


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise RuntimeError("connection closed by broker")
        buf += chunk
    return buf


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.settimeout(5)
        data = request(sock, API_VERSIONS, 0, 1, b"")
        err, count = struct.unpack(">hi", data[:6])
        if err:
            raise RuntimeError(f"ApiVersions error {err}")
        versions = {}
        for i in range(count):
            key, lo, hi = struct.unpack(">hhh", data[6 + 6 * i : 12 + 6 * i])
            versions[key] = (lo, hi)
        lo, hi = versions[API_METADATA]
        v = max(lo, 4)
        if v > min(hi, 8):
            raise RuntimeError(f"no non-flexible Metadata version in {(lo, hi)}")
        body = struct.pack(">i", 0) + b"\x00"  # topics: empty array; allow_auto_create
        if v >= 8:
            body += b"\x00\x00"  # include cluster/topic authorized operations
        data = request(sock, API_METADATA, v, 2, body)
        off = 4  # throttle_time_ms
        (nbrokers,) = struct.unpack(">i", data[off : off + 4])
        off += 4
        brokers = []
        for _ in range(nbrokers):
            node_id, hlen = struct.unpack(">ih", data[off : off + 6])
            off += 6
            bhost = data[off : off + hlen].decode()
            off += hlen
            bport, rlen = struct.unpack(">ih", data[off : off + 6])
            off += 6 + max(rlen, 0)
            brokers.append((node_id, bhost, bport))
    if not any(b[2] == port for b in brokers):
        raise RuntimeError(f"broker list {brokers!r} lacks port {port}")
    print(f"ok metadata v{v} brokers={brokers!r}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    try:
        main()
    except Exception as e:
        print(f"not ready: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
