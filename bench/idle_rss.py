#!/usr/bin/env python3
"""Idle memory of a server holding many connections.

Opens --conns connections (default 10,000) to --target, makes each exchange
one small message, leaves them all open and idle, and prints the server's
VmRSS (from /proc/PID/status) before and after as one JSON object:

    {"server_pid": ..., "conns": 10000, "rss_before_kib": ..., "rss_kib": ...,
     "per_conn_bytes": ..., "open_after": 10000}

--proto echo: send b"x", read b"x" back.
--proto http: one `GET / HTTP/1.1` keep-alive request, read the whole
response (head and Content-Length body).

Only --target is contacted (loopback in compare.sh). Exits non-zero if a
connection or an exchange fails, or if the server closed some of them.
"""

import argparse
import json
import resource
import socket
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(need, soft)
    if hard != resource.RLIM_INFINITY and hard < want:
        try:  # root may raise the hard limit too
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return
        except (ValueError, OSError):
            want = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < need:
        sys.exit(f"RLIMIT_NOFILE hard limit {hard} is below the {need} descriptors needed")


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("server closed the connection")
        data += chunk
    return data


def http_exchange(sock, host):
    sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if not lines[0].startswith(b"HTTP/1.1 200"):
        raise ConnectionError(f"unexpected status line {lines[0]!r}")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if len(body) < length:
        body += recv_exact(sock, length - len(body))


def echo_exchange(sock):
    sock.sendall(b"x")
    if recv_exact(sock, 1) != b"x":
        raise ConnectionError("echo mismatch")


def still_open(sock):
    """True unless the server has closed (or reset) the connection."""
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", required=True, help="HOST:PORT")
    ap.add_argument("--pid", type=int, required=True, help="the server's process id")
    ap.add_argument("--proto", choices=["echo", "http"], default="echo")
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--settle", type=float, default=1.0, help="seconds idle before reading VmRSS")
    args = ap.parse_args()

    host, _, port = args.target.rpartition(":")
    raise_nofile(args.conns + 100)
    before = rss_kib(args.pid)
    socks = []
    try:
        for i in range(args.conns):
            s = socket.create_connection((host, int(port)), timeout=10)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            socks.append(s)
            if args.proto == "echo":
                echo_exchange(s)
            else:
                http_exchange(s, args.target)
        time.sleep(args.settle)
        after = rss_kib(args.pid)
        open_after = sum(1 for s in socks if still_open(s))
    except OSError as e:
        sys.exit(f"idle_rss: connection {len(socks)} of {args.conns}: {e}")
    finally:
        for s in socks:
            s.close()
    print(json.dumps({
        "server_pid": args.pid,
        "proto": args.proto,
        "conns": args.conns,
        "rss_before_kib": before,
        "rss_kib": after,
        "per_conn_bytes": round((after - before) * 1024 / args.conns),
        "open_after": open_after,
    }))
    if open_after != args.conns:
        sys.exit(f"idle_rss: the server closed {args.conns - open_after} of {args.conns} connections")


if __name__ == "__main__":
    main()
