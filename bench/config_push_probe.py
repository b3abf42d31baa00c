"""Measures a central configuration push to N simulated agents against etcd's watch
notification to N watchers (bench/config-push.sh runs it).

shoal: a fresh center (`shoal center`, its own process) on loopback ports; a join token with
N uses; `shoal bench center-sim --app NAME` starts N agents in one process, each with the real
link and reporting app NAME running (the center sends configuration NAME only to agents
listing app NAME); each applies every valid version at once, reports it and answers
`config.applied`. One untimed push first (version 1: every instance recorded), then PUSHES
pushes of new content, one after the other: each timed from just before
`POST /api/v1/configs/NAME/versions` is sent until the first `GET /api/v1/configs/NAME/status`
that lists N instances, every one `applied` at the new version (desired == applied ==
version). Between status calls the probe sleeps POLL ms; the resolution is one status call
plus POLL. After the pushes, STATUS_CALLS status calls at rest are timed on their own.

etcd: bench/etcd_watch_probe.py's measure() (one etcd on loopback, N watchers on one key,
PUSHES puts, each timed until the last watcher has read it).

Prints both, p50/p99/max, and the ratio of the p99s.
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import center_sim_probe as sim  # noqa: E402
import etcd_watch_probe as etcd  # noqa: E402

CONFIG = "bench-app"


def simulate(shoal, work, env, listen, join, n, stagger):
    """center_sim_probe.simulate with `--app CONFIG`: the agents report the app."""
    log_path = os.path.join(work, "sim.log")
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [shoal, "bench", "center-sim", "--center", listen, "--join", join, "--agents", str(n),
         "--data-dir", os.path.join(work, "agents"), "--stagger", stagger, "--app", CONFIG],
        stdout=subprocess.PIPE, stderr=log, env=env, text=True)
    line = proc.stdout.readline()
    if not line.startswith("all "):
        sim.stop(proc)
        tail = open(log_path, errors="replace").read().splitlines()[-15:]
        sys.exit("the simulator ended before all agents were online:\n" + "\n".join(tail))
    return proc


def all_applied(status, n, version):
    instances = status["instances"]
    done = sum(1 for i in instances
               if i["state"] == "applied" and i["desired"] == version and i["applied"] == version)
    return len(instances) == n and done == n, done


def push(base, token, n, i, poll, deadline_s=60):
    """One push, timed until every instance is applied at its version: (seconds, polls,
    seconds until the push call answered)."""
    body = {"content": f"# push {i}\nvalue = {i}\nat = {time.time_ns()}\n",
            "message": f"bench push {i}"}
    path = f"/api/v1/configs/{CONFIG}"
    t0 = time.monotonic()
    version = sim.api(base, token, "POST", path + "/versions", body)["version"]["version"]
    answered = time.monotonic() - t0
    polls = 0
    while True:
        status = sim.api(base, token, "GET", path + "/status")
        polls += 1
        done, applied = all_applied(status, n, version)
        if done:
            return time.monotonic() - t0, polls, answered
        if time.monotonic() - t0 > deadline_s:
            sys.exit(f"push {i} (version {version}): {applied} of {n} applied after {deadline_s} s")
        time.sleep(poll)


def status_cost(base, token, calls):
    times = []
    for _ in range(calls):
        t0 = time.monotonic()
        sim.api(base, token, "GET", f"/api/v1/configs/{CONFIG}/status")
        times.append(time.monotonic() - t0)
    return times


def shoal_half(args, n):
    work = os.path.join(args.work, "shoal")
    os.makedirs(work)
    env = dict(os.environ, SHOAL_BENCH_RUN=args.token, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
    center, listen, base, admin = sim.start_center(args.shoal, work, env)
    agents = None
    try:
        join = sim.api(base, admin, "POST", "/api/v1/tokens", {"role": "join", "uses": n})["token"]
        agents = simulate(args.shoal, work, env, listen, join, n, args.stagger)
        online = sum(1 for a in sim.api(base, admin, "GET", "/api/v1/agents") if a["online"])
        if online != n:
            sys.exit(f"the simulator says {n} online, the center {online}")
        first, _, _ = push(base, admin, n, 0, args.poll)
        times, polls, answers = [], [], []
        ticks = (sim.cpu_ticks(center.pid), sim.cpu_ticks(agents.pid))
        for i in range(1, args.pushes + 1):
            time.sleep(args.pause)
            t, p, a = push(base, admin, n, i, args.poll)
            times.append(t)
            polls.append(p)
            answers.append(a)
        cpu = [(sim.cpu_ticks(p) - t0) / sim.CLK_TCK / args.pushes
               for p, t0 in zip((center.pid, agents.pid), ticks)]
        cost = status_cost(base, admin, args.status_calls)
        return {"first_s": first, "times": times, "polls": polls, "answers": answers, "cpu": cpu,
                "status": cost}
    finally:
        if agents is not None:
            sim.stop(agents)
        sim.stop(center)


def ms(x):
    return f"{x * 1000:.1f} ms"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shoal", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--agents", type=int, default=1000)
    p.add_argument("--stagger", default="2ms")
    p.add_argument("--pushes", type=int, default=20)
    p.add_argument("--pause", type=float, default=0.2, help="seconds between pushes")
    p.add_argument("--poll", type=float, default=0.005, help="seconds between status calls")
    p.add_argument("--status-calls", type=int, default=20)
    args = p.parse_args()
    n = args.agents

    s = shoal_half(args, n)
    t, st = s["times"], s["status"]
    sp50, sp99 = sim.percentile(t, 50), sim.percentile(t, 99)
    print(f"shoal: {n:,} agents, {args.pushes} pushes: publish -> every applied at the center "
          f"p50 {ms(sp50)}, p99 {ms(sp99)}, max {ms(max(t))} (first push, untimed in these: "
          f"{ms(s['first_s'])}; status polls per push {min(s['polls'])}-{max(s['polls'])})",
          flush=True)
    a = s["answers"]
    print(f"shoal: the push call alone (stored, audited, answered) p50 "
          f"{ms(sim.percentile(a, 50))}, p99 {ms(sim.percentile(a, 99))}", flush=True)
    print(f"shoal: CPU per push (pause and polling included): center "
          f"{ms(s['cpu'][0])}, simulator {ms(s['cpu'][1])}", flush=True)
    print(f"shoal: one status call of {n:,} instances at rest: p50 {ms(sim.percentile(st, 50))},"
          f" max {ms(max(st))}; poll pause {args.poll * 1000:.0f} ms", flush=True)

    e = etcd.measure(args.shoal, os.path.join(args.work, "etcd"), n, args.pushes, dict(os.environ))
    print(f"etcd:  {n:,} watchers, {args.pushes} puts: put -> every watcher notified "
          f"p50 {e['p50_ms']:.1f} ms, p99 {e['p99_ms']:.1f} ms, max {e['max_ms']:.1f} ms",
          flush=True)

    ratio = sp99 * 1000 / e["p99_ms"]
    ok = sp99 <= 0.5 and ratio <= 2
    print(f"ratio of p99s shoal/etcd: {ratio:.2f}x; target p99 <= 500 ms and <= 2x etcd: "
          f"{'met' if ok else 'missed'}")
    print(json.dumps({"shoal_ms": [round(x * 1000, 1) for x in t],
                      "etcd_ms": [round(x, 1) for x in e["times_ms"]]}))


if __name__ == "__main__":
    main()
