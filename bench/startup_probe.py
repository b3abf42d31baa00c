"""Startup probe for bench/hello-startup.sh: time from exec to the first answered `shoal.ping`
and resident memory, for shoal's hello example and its peer, in one run.

    python bench/startup_probe.py [--runs N] SHOAL_CMD PEER_CMD

Each command is a shell-quoted command line that takes `--config FILE` (the hello example's
TOML). Needs PyPI msgpack, so run it with the CI venv's python (.venv/bin/python).
"""

import argparse
import math
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version

import msgpack

RSS_TARGET_MB = 4.0
RELOADED_TARGET_MB = 5.0
READY_TARGET_MS = 20.0
IDLE_S = 1.0
GREETING = "Hello"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(sock, msgid, method, params):
    sock.sendall(msgpack.packb([0, msgid, method, params]))
    unpacker = msgpack.Unpacker(raw=False)
    while True:
        data = sock.recv(4096)
        if not data:
            raise ConnectionError("closed before answering")
        unpacker.feed(data)
        for msg in unpacker:
            if msg[0] == 1 and msg[1] == msgid:
                if msg[2] is not None:
                    raise RuntimeError(f"{method} failed: {msg[2]!r}")
                return msg[3]


def memory(pid):
    """VmRSS, VmHWM, RssAnon and RssFile from /proc, in kB."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                fields[key] = int(value.split()[0])
    return fields


def write_config(path, port, greeting):
    with open(path, "w") as f:
        f.write(f'[rpc]\nlisten = "127.0.0.1:{port}"\n\n[hello]\ngreeting = {greeting}\n')


def reload_and_call(proc, sock, config, port):
    """A reload, a rejected reload and a few calls; returns the memory after them."""
    write_config(config, port, '"Hi"')
    proc.send_signal(signal.SIGHUP)
    msgid = 100
    while call(sock, msgid, "greet", ["bench"]) != "Hi, bench":
        msgid += 1
        time.sleep(0.001)
    # A greeting that is not a string: the reload is refused and "Hi" stays in force.
    write_config(config, port, "5")
    proc.send_signal(signal.SIGHUP)
    while True:
        msgid += 1
        last = (call(sock, msgid, "shoal.status", []) or {}).get("last_reload") or {}
        if last.get("ok") is False:
            break
        time.sleep(0.001)
    for _ in range(10):
        msgid += 1
        if call(sock, msgid, "greet", ["bench"]) != "Hi, bench":
            raise RuntimeError("the rejected reload changed the greeting")
    return memory(proc.pid)


def run_once(argv, workdir, log, reloads=False):
    port = free_port()
    config = os.path.join(workdir, f"hello-{port}.toml")
    write_config(config, port, f'"{GREETING}"')

    start = time.perf_counter_ns()
    proc = subprocess.Popen(argv + ["--config", config], stdout=log, stderr=log)
    try:
        # Poll in a tight loop: a refused loopback connect costs microseconds, and sleeping
        # longer than a tenth of a millisecond would blur a startup of a few milliseconds.
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited with {proc.returncode} before answering")
            if time.perf_counter_ns() - start > 10e9:
                raise RuntimeError(f"{argv[0]} did not answer shoal.ping within 10 s")
            try:
                sock = socket.create_connection(("127.0.0.1", port))
            except ConnectionRefusedError:
                time.sleep(0.0001)
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(10)
            try:
                if call(sock, 1, "shoal.ping", []) != "pong":
                    raise RuntimeError("shoal.ping did not answer pong")
                break
            except ConnectionError:
                sock.close()
        ready_ms = (time.perf_counter_ns() - start) / 1e6
        at_ready = memory(proc.pid)
        time.sleep(IDLE_S)
        idle = memory(proc.pid)
        # Checked after the memory readings so that it does not change them.
        if call(sock, 2, "greet", ["bench"]) != f"{GREETING}, bench":
            raise RuntimeError("greet answered wrongly")
        reloaded = reload_and_call(proc, sock, config, port) if reloads else None
        sock.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
    if code != 0:
        print(f"warning: {argv[0]} exited with {code} after SIGTERM", file=sys.stderr)
    return ready_ms, at_ready, idle, reloaded


def p90(xs):
    return sorted(xs)[math.ceil(0.9 * len(xs)) - 1]


def mb(kib):
    return kib * 1024 / 1e6


def verdict(ok):
    return "met" if ok else "MISSED"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=int(os.environ.get("RUNS", 20)))
    ap.add_argument("shoal")
    ap.add_argument("peer")
    args = ap.parse_args()
    sides = {"peer": shlex.split(args.peer), "shoal": shlex.split(args.shoal)}
    results = {name: [] for name in sides}

    with tempfile.TemporaryDirectory() as workdir, open(os.path.join(workdir, "log"), "w+") as log:
        try:
            # One discarded run each so both start from a warm page cache; then alternate
            # which side goes first so drift on a shared machine falls on both alike.
            # Only shoal's side reloads: the peer has no reload.
            for name, argv in sides.items():
                run_once(argv, workdir, log, reloads=name == "shoal")
            for i in range(args.runs):
                order = list(sides) if i % 2 else list(reversed(sides))
                for name in order:
                    results[name].append(run_once(sides[name], workdir, log, name == "shoal"))
        except Exception:
            log.seek(0)
            sys.stderr.write(log.read()[-4000:])
            raise

    def figures(name):
        rs = results[name]
        ready = [r[0] for r in rs]

        def med(i, key):
            return statistics.median(r[i][key] for r in rs)

        figures = {
            "ready p50 (ms)": statistics.median(ready),
            "ready p90 (ms)": p90(ready),
            "RSS at ready p50 (MB)": mb(med(1, "VmRSS")),
            "RSS after 1 s p50 (MB)": mb(med(2, "VmRSS")),
            "  anonymous (MB)": mb(med(2, "RssAnon")),
            "  file-backed (MB)": mb(med(2, "RssFile")),
            "VmHWM p50 (MB)": mb(med(2, "VmHWM")),
        }
        if all(r[3] for r in rs):
            figures["RSS after reloads p50 (MB)"] = mb(med(3, "VmRSS"))
        return figures

    peer, shoal = figures("peer"), figures("shoal")
    print(f"hello service startup: {args.runs} runs per side, alternating, after one warm-up each")
    print(f"  shoal: {args.shoal}")
    print(f"  peer:  {args.peer}  (Python {sys.version.split()[0]}, asyncio, "
          f"aio-msgpack-rpc {version('aio-msgpack-rpc')}, msgpack {version('msgpack')})")
    print("  ready = exec to first answered shoal.ping on a fresh connection; MB = 10^6 bytes\n")
    print(f"{'':26} {'peer':>9} {'shoal':>9} {'shoal/peer':>11}")
    for key in shoal:
        if key in peer:
            print(f"{key:26} {peer[key]:9.2f} {shoal[key]:9.2f} {shoal[key] / peer[key]:11.3f}")
        else:
            print(f"{key:26} {'-':>9} {shoal[key]:9.2f} {'-':>11}")

    rss = max(shoal["RSS at ready p50 (MB)"], shoal["RSS after 1 s p50 (MB)"])
    reloaded = shoal["RSS after reloads p50 (MB)"]
    ready = shoal["ready p90 (ms)"]
    print(f"\nshoal targets: RSS < {RSS_TARGET_MB:g} MB: {verdict(rss < RSS_TARGET_MB)} ({rss:.2f} MB); "
          f"after a reload, a rejected reload and calls < {RELOADED_TARGET_MB:g} MB: "
          f"{verdict(reloaded < RELOADED_TARGET_MB)} ({reloaded:.2f} MB); "
          f"ready < {READY_TARGET_MS:g} ms: {verdict(ready < READY_TARGET_MS)} (p90 {ready:.2f} ms)")



if __name__ == "__main__":
    main()
