"""Measures one shoal center with N simulated agents (bench/center-sim.sh runs it).

For each N: a fresh center (`shoal center`, its own process) on loopback ports; a join
token with N uses made through its API; `shoal bench center-sim` starts N agents in one
process, each with the real link (enrollment, own key and certificate, own mutual-TLS
connection, hello, heartbeats, exec), started STAGGER apart. Figures:

- online: from the simulator's start until every agent has said hello (the simulator's own
  count), checked against the center's registry (GET /api/v1/agents, all N online).
- idle CPU and RSS: after SETTLE seconds, the center's utime+stime from /proc/PID/stat over
  IDLE seconds, as a fraction of one core; VmRSS at the end of that window.
- fan-out: COMMANDS times POST /api/v1/commands {"selector":{"all":true},"action":{"action":
  "ps"}} with the admin token, one after the other; the call answers when every target's
  result is in. Each answer is checked: N results, all "ok". p50 and p99 of the call time.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(base, token, method, path, body=None, timeout=120):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("authorization", "Bearer " + token)
    if data is not None:
        req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def wait_until(what, deadline, check):
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.2)


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_center(shoal, work, env):
    listen, http = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    data = os.path.join(work, "center")
    log = open(os.path.join(work, "center.log"), "wb")
    proc = subprocess.Popen(
        [shoal, "center", "--data-dir", data, "--listen", listen, "--http", http],
        stdout=log, stderr=log, env=env)
    token_file = os.path.join(data, "admin.token")
    base = "http://" + http
    deadline = time.monotonic() + 60

    def ready():
        if proc.poll() is not None:
            sys.exit(f"the center exited ({proc.returncode}); see {work}/center.log")
        if not os.path.exists(token_file):
            return None
        token = open(token_file).read().strip().splitlines()[-1]
        try:
            api(base, token, "GET", "/api/v1/agents", timeout=5)
            return token
        except OSError:
            return None

    return proc, listen, base, wait_until("the center's API", deadline, ready)


def simulate(shoal, work, env, listen, join, n, stagger):
    log = open(os.path.join(work, "sim.log"), "wb")
    proc = subprocess.Popen(
        [shoal, "bench", "center-sim", "--center", listen, "--join", join, "--agents", str(n),
         "--data-dir", os.path.join(work, "agents"), "--stagger", stagger],
        stdout=subprocess.PIPE, stderr=log, env=env, text=True)
    line = proc.stdout.readline()
    if not line.startswith("all "):
        stop(proc)
        log.close()
        tail = open(os.path.join(work, "sim.log"), errors="replace").read().splitlines()[-15:]
        sys.exit("the simulator ended before all agents were online:\n" + "\n".join(tail))
    return proc, float(line.split(" in ")[1].split()[0])


def fan_out(base, token, n, commands):
    times = []
    body = {"selector": {"all": True}, "action": {"action": "ps"}}
    for _ in range(commands):
        t0 = time.monotonic()
        view = api(base, token, "POST", "/api/v1/commands", body)
        times.append(time.monotonic() - t0)
        results = view["results"]
        ok = sum(1 for r in results.values() if r["status"] == "ok")
        if len(results) != n or ok != n:
            sys.exit(f"a ps command got {ok} ok of {len(results)} results, not {n}")
    return times


def one(args, n):
    work = os.path.join(args.work, f"n{n}")
    os.makedirs(work)
    env = dict(os.environ, SHOAL_BENCH_RUN=args.token, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
    center, listen, base, admin = start_center(args.shoal, work, env)
    sim = None
    try:
        join = api(base, admin, "POST", "/api/v1/tokens", {"role": "join", "uses": n})["token"]
        sim, online = simulate(args.shoal, work, env, listen, join, n, args.stagger)
        agents = api(base, admin, "GET", "/api/v1/agents")
        up = sum(1 for a in agents if a["online"])
        if up != n:
            sys.exit(f"the simulator says {n} online, the center {up}")
        time.sleep(args.settle)
        t0, c0 = time.monotonic(), cpu_ticks(center.pid)
        time.sleep(args.idle)
        cpu = (cpu_ticks(center.pid) - c0) / CLK_TCK / (time.monotonic() - t0)
        rss = status_kb(center.pid, "VmRSS") / 1024
        times = fan_out(base, admin, n, args.commands)
        return {"agents": n, "online_s": online, "idle_cpu": cpu, "rss_mb": rss,
                "sim_rss_mb": status_kb(sim.pid, "VmRSS") / 1024,
                "ps_p50_s": percentile(times, 50), "ps_p99_s": percentile(times, 99),
                "ps_max_s": max(times)}
    finally:
        if sim is not None:
            stop(sim)
        stop(center)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shoal", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--agents", default="1000 5000")
    p.add_argument("--stagger", default="2ms")
    p.add_argument("--settle", type=float, default=10)
    p.add_argument("--idle", type=float, default=30)
    p.add_argument("--commands", type=int, default=20)
    args = p.parse_args()
    print("| agents | all online | center idle CPU | center RSS | ps p50 | ps p99 | sim RSS |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n in (int(x) for x in args.agents.split()):
        r = one(args, n)
        print(f"| {n:,} | {r['online_s']:.1f} s | {r['idle_cpu']:.3f} core | "
              f"{r['rss_mb']:.0f} MB | {r['ps_p50_s'] * 1000:.0f} ms | "
              f"{r['ps_p99_s'] * 1000:.0f} ms | {r['sim_rss_mb']:.0f} MB |", flush=True)
    print("targets: 5,000 agents idle < 0.5 core and < 300 MB RSS; ps to 1,000 agents p99 < 1 s")


if __name__ == "__main__":
    main()
