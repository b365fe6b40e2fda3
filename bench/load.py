#!/usr/bin/env python3
"""A fixed number of HTTP operations, for the per-operation counts (the
timed runs use wrk, which runs for a time, not a count).

  load.py close HOST PORT N   N connections, one GET each (Connection: close)
  load.py keep  HOST PORT N   one kept-alive connection, N GETs on it

Each answer must be a 200; exits 1 on the first failure. Every socket
operation has a 5 s timeout, so the whole run is bounded.
"""
import socket
import sys

REQUEST_CLOSE = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
REQUEST_KEEP = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


def read_response(sock, buffer):
    """Read one response with a Content-Length body; return the leftover."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the headers")
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(head.split(b"\r\n")[0].decode(errors="replace"))
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed in the body")
        rest += chunk
    return rest[length:]


def main():
    mode, host, port, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    if mode == "close":
        for _ in range(count):
            with socket.create_connection((host, port), timeout=5) as sock:
                sock.sendall(REQUEST_CLOSE)
                read_response(sock, b"")
                while sock.recv(4096):
                    pass
    elif mode == "keep":
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            buffer = b""
            for _ in range(count):
                sock.sendall(REQUEST_KEEP)
                buffer = read_response(sock, buffer)
    else:
        print(f"unknown mode {mode}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (OSError, ValueError) as error:
        print(f"load.py: {error}", file=sys.stderr)
        sys.exit(1)
