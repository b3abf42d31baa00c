"""etcd's half of bench/config-push.sh: one etcd (Debian's etcd-server) on loopback ports and
a fresh data directory, WATCHERS watchers on one key (`shoal bench etcd-watch`, each watcher
its own connection to etcd's HTTP gateway), then PUTS puts of that key one after the other.
For each put: the time from sending it until the last watcher has read the new value. Prints
one JSON object: {"p50_ms", "p99_ms", "max_ms", "times_ms"}.

Run alone: python3 bench/etcd_watch_probe.py --shoal target/release/shoal --work DIR
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def wait_for_port(port, proc, deadline, log):
    while True:
        if proc.poll() is not None:
            sys.exit(f"etcd exited ({proc.returncode}); see {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                sys.exit(f"etcd did not listen on 127.0.0.1:{port} in time; see {log}")
            time.sleep(0.1)


def start_etcd(work, env):
    etcd = shutil.which("etcd")
    if etcd is None:
        sys.exit("missing etcd: apt-get install etcd-server")
    client, peer = free_port(), free_port()
    log_path = os.path.join(work, "etcd.log")
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [etcd, "--name", "bench", "--data-dir", os.path.join(work, "etcd"),
         "--listen-client-urls", f"http://127.0.0.1:{client}",
         "--advertise-client-urls", f"http://127.0.0.1:{client}",
         "--listen-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-cluster", f"bench=http://127.0.0.1:{peer}",
         "--log-level", "warn"],
        stdout=log, stderr=log, env=env)
    wait_for_port(client, proc, time.monotonic() + 60, log_path)
    return proc, f"127.0.0.1:{client}"


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measure(shoal, work, watchers, puts, env):
    os.makedirs(work, exist_ok=True)
    proc, endpoint = start_etcd(work, env)
    try:
        out = subprocess.run(
            [shoal, "bench", "etcd-watch", "--endpoint", endpoint, "--watchers", str(watchers),
             "--puts", str(puts)],
            capture_output=True, text=True, env=env, timeout=600)
        if out.returncode != 0:
            sys.exit("shoal bench etcd-watch failed:\n" + out.stderr[-2000:])
        times = [float(x) for x in out.stdout.split()]
        return {"p50_ms": percentile(times, 50), "p99_ms": percentile(times, 99),
                "max_ms": max(times), "times_ms": times}
    finally:
        stop(proc)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shoal", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--watchers", type=int, default=1000)
    p.add_argument("--puts", type=int, default=20)
    args = p.parse_args()
    print(json.dumps(measure(args.shoal, args.work, args.watchers, args.puts, dict(os.environ))))


if __name__ == "__main__":
    main()
