#!/usr/bin/env python3
"""One hostile MessagePack-RPC peer for bench/rpc-hostile.sh: python3 hostile_peer.py CASE HOST
PORT SECONDS. Plays CASE against `shoal bench serve` for at most SECONDS, then exits; loopback
only. Frames are written by hand (no msgpack module needed). Prints one line saying what it
did."""

import socket
import struct
import sys
import threading
import time


def uint(n):
    return b"\xce" + struct.pack(">I", n)


def text(s):
    b = s.encode() if isinstance(s, str) else s
    if len(b) < 32:
        return bytes([0xA0 | len(b)]) + b
    if len(b) < 1 << 16:
        return b"\xda" + struct.pack(">H", len(b)) + b
    return b"\xdb" + struct.pack(">I", len(b)) + b


def array(n):
    if n < 16:
        return bytes([0x90 | n])
    if n < 1 << 16:
        return b"\xdc" + struct.pack(">H", n)
    return b"\xdd" + struct.pack(">I", n)


def request(msgid, method, params):
    return b"\x94\x00" + uint(msgid) + text(method) + array(len(params)) + b"".join(params)


def notification(method, params):
    return b"\x93\x02" + text(method) + array(len(params)) + b"".join(params)


def connect(host, port):
    s = socket.create_connection((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def send_until(s, data, deadline):
    """Sends `data`, giving up at `deadline` (a server that stopped reading blocks us)."""
    view = memoryview(data)
    while view and time.monotonic() < deadline:
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            n = s.send(view)
        except (socket.timeout, BlockingIOError):
            continue
        except OSError:
            return False
        view = view[n:]
    return not view


def unread_replies(host, port, deadline):
    # 1,000 echo calls of 1 MiB, pipelined; the replies are never read.
    s = connect(host, port)
    payload = text("x" * (1 << 20))
    sent = 0
    for i in range(1000):
        if not send_until(s, request(i, "echo", [payload]), deadline):
            break
        sent += 1
    wait(deadline)
    return f"sent {sent} of 1000 echo calls of 1 MiB, read no reply"


def unread_small(host, port, deadline):
    # 200,000 small sleep_echo calls (50 ms), never read.
    s = connect(host, port)
    frames = b"".join(request(i, "sleep_echo", [uint(50), text("y" * 1000)]) for i in range(1000))
    sent = 0
    for _ in range(200):
        if not send_until(s, frames, deadline):
            break
        sent += 1000
    wait(deadline)
    return f"sent {sent} of 200,000 sleep_echo calls, read no reply"


def nil_bombs(host, port, deadline):
    # Four clients, each a 16 MB frame of 16 million nils.
    n = 16_000_000
    frame = request(1, "echo", []) [:-1] + array(n) + b"\xc0" * n
    results = []

    def one():
        s = connect(host, port)
        ok = send_until(s, frame, deadline)
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            reply = s.recv(4096)
        except OSError:
            reply = b""
        results.append((ok, len(reply)))

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return "4 frames of 16M nils: " + ", ".join(
        f"{'all sent' if ok else 'cut off'}, {size}-byte reply" for ok, size in results
    )


def notify_flood(host, port, deadline, method="sink", count=5_000_000):
    s = connect(host, port)
    one = notification(method, [b"\xc0"])
    chunk = one * 10_000
    sent = 0
    while sent < count and send_until(s, chunk, deadline):
        sent += 10_000
    return f"sent {sent:,} notifications to {method}"


def unknown_flood(host, port, deadline):
    return notify_flood(host, port, deadline, method="no.such.method")


def reset_calls(host, port, deadline):
    # 500 connections each send a 30 s call, then reset.
    socks = []
    for i in range(500):
        s = connect(host, port)
        s.sendall(request(i, "sleep_echo", [uint(30_000), b"\xc0"]))
        socks.append(s)
    time.sleep(0.5)
    for s in socks:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    wait(deadline)
    return "500 connections sent a 30 s call and reset"


def partial_frames(host, port, deadline):
    # 1,000 connections each send 369 KB of a 1 MiB frame, then nothing.
    frame = request(1, "echo", [text("z" * (1 << 20))])[: 369 * 1024]
    socks = []
    for _ in range(1000):
        s = connect(host, port)
        if not send_until(s, frame, deadline):
            break
        socks.append(s)
    # Count the connections the server closed by the end.
    wait(deadline - 0.5)
    closed = count_closed(socks)
    return f"{len(socks)} connections sent 369 KiB of a frame; {closed} closed by the server"


def count_closed(socks):
    """How many of `socks` the server has closed (end of stream or reset), without waiting."""
    closed = 0
    for s in socks:
        s.setblocking(False)
        try:
            closed += s.recv(1) == b""
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    return closed


def connection_flood(host, port, deadline):
    socks, refused = [], 0
    for _ in range(5000):
        if time.monotonic() > deadline:
            break
        try:
            socks.append(connect(host, port))
        except OSError:
            refused += 1
    wait(deadline - 0.5)
    closed = count_closed(socks)
    return f"opened {len(socks)} connections ({refused} failed); {closed} closed by the server"


def huge_method(host, port, deadline):
    s = connect(host, port)
    name = "m" * (16 * 1024 * 1024 - 64)
    send_until(s, request(7, name, []), deadline)
    got = b""
    s.settimeout(max(0.05, deadline - time.monotonic()))
    try:
        while len(got) < 64 * 1024:
            part = s.recv(65536)
            if not part:
                break
            got += part
            if len(got) > 32:
                break
    except OSError:
        pass
    # Read the rest briefly to learn the reply's size.
    s.settimeout(0.5)
    try:
        while True:
            part = s.recv(1 << 20)
            if not part:
                break
            got += part
    except OSError:
        pass
    return f"method name of {len(name):,} bytes: reply of {len(got):,} bytes"


def wait(deadline):
    left = deadline - time.monotonic()
    if left > 0:
        time.sleep(left)


CASES = {
    "unread-replies": unread_replies,
    "unread-small": unread_small,
    "nil-bombs": nil_bombs,
    "notify-flood": notify_flood,
    "unknown-flood": unknown_flood,
    "reset-calls": reset_calls,
    "partial-frames": partial_frames,
    "connection-flood": connection_flood,
    "emfile": connection_flood,
    "huge-method": huge_method,
}


def main():
    case, host, port, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    if host not in ("127.0.0.1", "::1", "localhost"):
        sys.exit("loopback only")
    deadline = time.monotonic() + seconds
    print(CASES[case](host, port, deadline), flush=True)


if __name__ == "__main__":
    main()
