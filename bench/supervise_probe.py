"""Driver for bench/agent-vs-supervisord.sh: shoal's agent and supervisord each managing the
same N `/bin/sleep` programs, measured in one run from /proc.

    python3 bench/supervise_probe.py --shoal BIN --supervisord BIN --work DIR --token TOKEN

Standard library only. Every process it starts carries SHOAL_BENCH_RUN=TOKEN in its
environment (the managers' environment is their programs'), so that whatever is left when it
stops, however it stops, can be found and killed by that token alone; the shell script's
trap does the same as a last resort.

What is measured, for each manager:

- all running: from just before the manager is spawned until its N programs are all in /proc
  (a child of the manager whose cmdline is one of the programs'), polled every millisecond;
  STARTS times each, alternating which manager goes first, only one manager running at a
  time; the manager is stopped (with its programs) between starts.
- memory: VmRSS (and its anonymous and file-backed parts) of the manager process with all N
  running, after SETTLE seconds; again after IDLE seconds idle and after the kills.
- idle CPU: utime + stime of the manager (all its threads) over IDLE seconds, both managers
  running their N programs side by side and nothing else asked of them.
- crash to restart: KILLS distinct programs, picked at random; each is sent SIGKILL and the
  time until a new process with its cmdline is a child of its manager is measured, polling
  /proc every 0.2 ms. Kills alternate between the managers, program by program. Every killed
  program has been up longer than IDLE seconds (at least 30 s), so the agent's backoff has
  reset and its first restart is due at once.

Program i runs `/bin/sleep 1000001+i` under the agent and `/bin/sleep 2000001+i` under
supervisord: unique argvs, found by cmdline.
"""

import argparse
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import time

SLEEP = "/bin/sleep"
AGENT_BASE = 1_000_001
PEER_BASE = 2_000_001
STARTUP_POLL_S = 0.001
RESTART_POLL_S = 0.0002
TIMEOUT_S = 60.0
RESTART_TIMEOUT_S = 10.0
PAUSE_BETWEEN_KILLS_S = 0.1

# Targets from /work/shared/ANCHORS.md ("Agent"), start and restart tightened since: all running
# in a tenth of supervisord's time, restart p99 within 5 ms.
START_TARGET = 1 / 10
RSS_TARGET = 1 / 4
RESTART_P99_TARGET_MS = 5.0
CHURN_FLAT = 0.05


class Interrupted(Exception):
    pass


def cmdline(number):
    return f"{SLEEP}\0{number}\0".encode()


def read(path):
    with open(path, "rb") as f:
        return f.read()


def stat_fields(pid):
    """/proc/PID/stat after the command name: index 0 is the state, 1 the ppid."""
    data = read(f"/proc/{pid}/stat")
    return data[data.rindex(b")") + 2:].split()


def cpu_ticks(pid):
    fields = stat_fields(pid)
    return int(fields[11]) + int(fields[12])


def memory(pid):
    """VmRSS, VmHWM, RssAnon, RssFile (kB) and Threads from /proc/PID/status, open fds."""
    out = {}
    for line in read(f"/proc/{pid}/status").decode().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
            out[key] = int(value.split()[0])
    out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return out


class Watch:
    """The manager's programs as /proc shows them: which pid runs which program.

    A pid is looked at once: a process that is not the manager's child, or that has exec'd
    one of the programs, never changes. Only the manager's children that have not exec'd
    yet (between fork and exec their cmdline is the manager's) or are zombies are looked at
    again on the next poll.
    """

    def __init__(self, manager_pid, wanted):
        self.manager = manager_pid
        self.wanted = wanted  # cmdline -> program index
        self.settled = set()
        self.ignored = set()
        self.pid_of = {}  # program index -> latest pid

    def poll(self):
        """Looks at the pids not seen before; returns the programs found started."""
        started = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            if pid in self.settled or pid in self.ignored:
                continue
            try:
                ppid = int(stat_fields(pid)[1])
                if ppid != self.manager:
                    self.ignored.add(pid)
                    continue
                index = self.wanted.get(read(f"/proc/{pid}/cmdline"))
            except (FileNotFoundError, ProcessLookupError):
                self.ignored.add(pid)
                continue
            if index is not None:
                self.settled.add(pid)
                self.pid_of[index] = pid
                started.append(index)
        return started


class Side:
    def __init__(self, name, argv, base, n, env, log):
        self.name = name
        self.argv = argv
        self.wanted = {cmdline(base + i): i for i in range(n)}
        self.n = n
        self.env = env
        self.log = log
        self.proc = None
        self.watch = None

    def start(self):
        """Spawns the manager; returns the start time (ns) and its Watch."""
        t0 = time.perf_counter_ns()
        # A session of its own: Ctrl-C reaches the driver, which stops the manager in order.
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=self.log,
                                     env=self.env, start_new_session=True)
        self.watch = Watch(self.proc.pid, self.wanted)
        return t0

    def wait_all(self, t0, poll_s):
        """Polls until every program runs; returns ms since t0."""
        found = set()
        while True:
            found.update(self.watch.poll())
            now = time.perf_counter_ns()
            if len(found) == self.n:
                return (now - t0) / 1e6
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} "
                                   f"with {len(found)} of {self.n} programs running")
            if now - t0 > TIMEOUT_S * 1e9:
                raise RuntimeError(f"{self.name}: only {len(found)} of {self.n} programs "
                                   f"running after {TIMEOUT_S:g} s")
            time.sleep(poll_s)

    def running(self):
        """How many of the programs are alive now, by the pids last seen."""
        alive = 0
        for pid in self.watch.pid_of.values():
            try:
                if stat_fields(pid)[0] != b"Z":
                    alive += 1
            except FileNotFoundError:
                pass
        return alive

    def kill_and_time(self, index):
        """SIGKILLs program `index`; returns ms until its new process runs."""
        old = self.watch.pid_of[index]
        self.watch.poll()  # nothing new should be pending, but start from a clean slate
        t0 = time.perf_counter_ns()
        os.kill(old, signal.SIGKILL)
        while True:
            if index in self.watch.poll() and self.watch.pid_of[index] != old:
                return (time.perf_counter_ns() - t0) / 1e6
            if time.perf_counter_ns() - t0 > RESTART_TIMEOUT_S * 1e9:
                return math.inf
            time.sleep(RESTART_POLL_S)

    def stop(self, timeout=60):
        """SIGTERM, then SIGKILL after `timeout`; both managers stop their programs first."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"warning: {self.name} did not stop within {timeout} s; killed",
                  file=sys.stderr)
            self.proc.kill()
            self.proc.wait()


def leftovers(token):
    """Pids of processes carrying SHOAL_BENCH_RUN=token (this run's managers and programs)."""
    marker = f"SHOAL_BENCH_RUN={token}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if marker in read(f"/proc/{entry}/environ").split(b"\0"):
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


def wait_no_leftovers(token, what, timeout=30):
    deadline = time.monotonic() + timeout
    while pids := leftovers(token):
        if time.monotonic() > deadline:
            raise RuntimeError(f"after stopping {what}, {len(pids)} of its processes remain")
        time.sleep(0.05)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          **kw)


def prepare_agent(args, data, env, log):
    """Builds and installs the N packages (not timed), then stops the agent with its
    programs, which stay recorded as should-run: the next agent starts them all."""
    pkgs = os.path.join(args.work, "pkgs")
    for i in range(args.programs):
        name = f"p{i + 1:03d}"
        src = os.path.join(args.work, "src", name)
        os.makedirs(src)
        with open(os.path.join(src, "shoal.toml"), "w") as f:
            f.write(f'[package]\nname = "{name}"\nversion = "1.0.0"\nkind = "service"\n\n'
                    f'[run]\ncommand = "{SLEEP}"\nargs = ["{AGENT_BASE + i}"]\n'
                    f'restart = "always"\n')
        run([args.shoal, "pkg", "build", src, "-o", pkgs])
    agent = subprocess.Popen([args.shoal, "agent", "--data-dir", data, "--stop-on-exit"],
                             stdout=log, stderr=log, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not os.path.exists(os.path.join(data, "agent.sock")):
            if agent.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the agent did not start; see its log")
            time.sleep(0.01)
        # A few installs at once: each waits until its program runs.
        files = [os.path.join(pkgs, f"p{i + 1:03d}-1.0.0.tar.gz") for i in range(args.programs)]
        pending = []
        for file in files:
            pending.append(subprocess.Popen([args.shoal, "install", file, "--data-dir", data],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                            env=env))
            if len(pending) >= 4:
                finish(pending.pop(0))
        for p in pending:
            finish(p)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)


def finish(p):
    _, err = p.communicate()
    if p.returncode != 0:
        raise RuntimeError(f"shoal install failed: {err.decode().strip()}")


def supervisord_config(args):
    d = os.path.join(args.work, "supervisord")
    os.makedirs(os.path.join(d, "logs"))
    lines = [
        "[supervisord]",
        "nodaemon=true",
        f"logfile={d}/supervisord.log",
        f"pidfile={d}/supervisord.pid",
        f"childlogdir={d}/logs",
        "",
        "[unix_http_server]",
        f"file={d}/supervisor.sock",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{d}/supervisor.sock",
        "",
    ]
    for i in range(args.programs):
        # startsecs stays at its default (1 s): it decides when supervisord calls a start
        # successful, not when it forks, and every killed program has run far longer.
        lines += [f"[program:p{i + 1:03d}]", f"command={SLEEP} {PEER_BASE + i}",
                  "autorestart=true", ""]
    path = os.path.join(d, "supervisord.conf")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def pct(xs, q):
    """Nearest-rank percentile (of 50 samples, p99 is the largest)."""
    s = sorted(xs)
    return s[max(0, math.ceil(q * len(s)) - 1)]


def mb(kib):
    return kib * 1024 / 1e6


def verdict(ok):
    return "met" if ok else "MISSED"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shoal", required=True)
    ap.add_argument("--supervisord", required=True)
    ap.add_argument("--work", required=True, help="an empty directory for this run")
    ap.add_argument("--token", required=True)
    ap.add_argument("--programs", type=int, default=200)
    ap.add_argument("--starts", type=int, default=3)
    ap.add_argument("--idle", type=float, default=60.0)
    ap.add_argument("--settle", type=float, default=2.0)
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    if args.kills > args.programs:
        ap.error("--kills is at most --programs: each kill is a different program")

    def on_term(signum, frame):
        raise Interrupted()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    env["SHOAL_BENCH_RUN"] = args.token
    data = os.path.join(args.work, "agent")
    log = open(os.path.join(args.work, "managers.log"), "w+")
    sides = {}
    try:
        t = time.monotonic()
        prepare_agent(args, data, env, log)
        wait_no_leftovers(args.token, "the preparing agent")
        config = supervisord_config(args)
        print(f"prepared {args.programs} packages and the supervisord config "
              f"in {time.monotonic() - t:.1f} s (not timed)", file=sys.stderr)

        sides = {
            "supervisord": Side("supervisord", [args.supervisord, "-n", "-c", config],
                                PEER_BASE, args.programs, env, log),
            "shoal": Side("shoal", [args.shoal, "agent", "--data-dir", data, "--stop-on-exit"],
                          AGENT_BASE, args.programs, env, log),
        }
        starts = {name: [] for name in sides}
        start_mem = {name: [] for name in sides}
        for r in range(args.starts + 1):
            order = list(sides) if r % 2 else list(reversed(sides))
            for name in order:
                side = sides[name]
                t0 = side.start()
                ms = side.wait_all(t0, STARTUP_POLL_S)
                time.sleep(args.settle)
                mem = memory(side.proc.pid)
                last = r == args.starts
                if last:
                    # Both stay up for the rest; this start is not timed (the other is running).
                    continue
                starts[name].append(ms)
                start_mem[name].append(mem)
                print(f"  start {r + 1}: {name} all {args.programs} running in {ms:.1f} ms",
                      file=sys.stderr)
                side.stop()
                wait_no_leftovers(args.token, name)

        settled = {name: memory(s.proc.pid) for name, s in sides.items()}
        print(f"  both running; {args.idle:g} s idle", file=sys.stderr)
        ticks0 = {name: cpu_ticks(s.proc.pid) for name, s in sides.items()}
        t_idle = time.monotonic()
        time.sleep(args.idle)
        idle_s = time.monotonic() - t_idle
        ticks = {name: cpu_ticks(s.proc.pid) - ticks0[name] for name, s in sides.items()}
        idle_mem = {name: memory(s.proc.pid) for name, s in sides.items()}
        for name, s in sides.items():
            if s.running() != args.programs:
                raise RuntimeError(f"{name}: {s.running()} of {args.programs} running after idle")

        seed = args.seed if args.seed is not None else random.randrange(1 << 32)
        victims = random.Random(seed).sample(range(args.programs), args.kills)
        print(f"  {args.kills} kills each (seed {seed})", file=sys.stderr)
        restarts = {name: [] for name in sides}
        for k, index in enumerate(victims):
            order = list(sides) if k % 2 else list(reversed(sides))
            for name in order:
                restarts[name].append(sides[name].kill_and_time(index))
                time.sleep(PAUSE_BETWEEN_KILLS_S)
        time.sleep(args.settle)
        churn_mem = {name: memory(s.proc.pid) for name, s in sides.items()}
        for name, s in sides.items():
            if s.running() != args.programs:
                raise RuntimeError(f"{name}: {s.running()} of {args.programs} running after kills")
        ps = run([args.shoal, "ps", "--json", "--data-dir", data], env=env).stdout
        agent_restarts = sum(app["restarts"] for app in json.loads(ps))
    finally:
        for side in sides.values():
            side.stop()
        for pid in leftovers(args.token):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    version = run([args.supervisord, "--version"]).stdout.decode().strip()
    # supervisord's own interpreter, from its #! line.
    interpreter = read(args.supervisord).split(b"\n", 1)[0][2:].split()[0].decode()
    py = run([interpreter, "--version"]).stdout.decode().strip()
    tick = os.sysconf("SC_CLK_TCK")
    n = args.programs
    print(f"\nagent vs supervisord: {n} programs ({SLEEP} N), {args.starts} starts each "
          f"(alternating, one manager at a time), {args.idle:g} s idle with both, "
          f"{args.kills} kills each (seed {seed})")
    print(f"  shoal: {args.shoal} agent --stop-on-exit (restart = \"always\")")
    print(f"  peer:  supervisord {version} ({py}), autorestart=true, startsecs=1 (default)")
    print("  MB = 10^6 bytes; ratio = shoal/supervisord, lower is better\n")

    rows = []

    def row(label, peer, shoal, unit, fmt="{:.1f}", target=None, ratio=True):
        if not ratio:
            ratio = "-"
        elif peer:
            ratio = f"{shoal / peer:.3f}"
        else:
            ratio = "0.000" if shoal == 0 else "inf"
        t = ""
        if target is not None:
            limit, ok = target
            t = f"{limit:<10} {verdict(ok)}"
        rows.append((label, fmt.format(peer) + unit, fmt.format(shoal) + unit, ratio, t))

    sp, ss = statistics.median(starts["supervisord"]), statistics.median(starts["shoal"])
    row(f"all {n} running, median", sp, ss, " ms",
        target=(f"<= {START_TARGET:.2f}", ss / sp <= START_TARGET))
    for r in range(args.starts):
        row(f"  start {r + 1}", starts["supervisord"][r], starts["shoal"][r], " ms")
    mp, ms_ = settled["supervisord"], settled["shoal"]
    row(f"RSS, {n} running", mb(mp["VmRSS"]), mb(ms_["VmRSS"]), " MB", "{:.2f}",
        target=(f"<= {RSS_TARGET:.2f}", ms_["VmRSS"] / mp["VmRSS"] <= RSS_TARGET))
    row("  anonymous", mb(mp["RssAnon"]), mb(ms_["RssAnon"]), " MB", "{:.2f}")
    row("  file-backed", mb(mp["RssFile"]), mb(ms_["RssFile"]), " MB", "{:.2f}")
    row("  RSS after each start, median", mb(statistics.median(m["VmRSS"] for m in start_mem["supervisord"])),
        mb(statistics.median(m["VmRSS"] for m in start_mem["shoal"])), " MB", "{:.2f}")
    row(f"RSS after {args.idle:g} s idle", mb(idle_mem["supervisord"]["VmRSS"]),
        mb(idle_mem["shoal"]["VmRSS"]), " MB", "{:.2f}")
    grow = {k: churn_mem[k]["VmRSS"] - idle_mem[k]["VmRSS"] for k in sides}
    flat = grow["shoal"] <= CHURN_FLAT * idle_mem["shoal"]["VmRSS"]
    row(f"RSS after {args.kills} kills", mb(churn_mem["supervisord"]["VmRSS"]),
        mb(churn_mem["shoal"]["VmRSS"]), " MB", "{:.2f}",
        target=("flat", flat))
    row("  change over the kills", grow["supervisord"], grow["shoal"], " kB", "{:+.0f}",
        ratio=False)
    row("  anonymous", mb(churn_mem["supervisord"]["RssAnon"]), mb(churn_mem["shoal"]["RssAnon"]),
        " MB", "{:.2f}")
    row("  file-backed", mb(churn_mem["supervisord"]["RssFile"]),
        mb(churn_mem["shoal"]["RssFile"]), " MB", "{:.2f}")
    row("peak RSS (VmHWM)", mb(churn_mem["supervisord"]["VmHWM"]),
        mb(churn_mem["shoal"]["VmHWM"]), " MB", "{:.2f}")
    row("threads", mp["Threads"], ms_["Threads"], "", "{:.0f}")
    row("open fds", mp["fds"], ms_["fds"], "", "{:.0f}")
    cp, cs = ticks["supervisord"] / tick, ticks["shoal"] / tick
    row(f"CPU over {idle_s:.0f} s idle", cp, cs, " s", "{:.2f}")
    row("  as % of one core", 100 * cp / idle_s, 100 * cs / idle_s, " %", "{:.3f}")
    rp, rs = restarts["supervisord"], restarts["shoal"]
    row("crash->restart p50", pct(rp, 0.5), pct(rs, 0.5), " ms", "{:.2f}")
    row("crash->restart p90", pct(rp, 0.9), pct(rs, 0.9), " ms", "{:.2f}")
    row("crash->restart p99", pct(rp, 0.99), pct(rs, 0.99), " ms", "{:.2f}",
        target=(f"<= {RESTART_P99_TARGET_MS:g} ms", pct(rs, 0.99) <= RESTART_P99_TARGET_MS))

    widths = [max(len(r[i]) for r in rows + [("", "supervisord", "shoal", "ratio", "target")])
              for i in range(5)]
    print(f"{'':{widths[0]}}  {'supervisord':>{widths[1]}}  {'shoal':>{widths[2]}}  "
          f"{'ratio':>{widths[3]}}  target")
    for label, peer, shoal, ratio, target in rows:
        print(f"{label:{widths[0]}}  {peer:>{widths[1]}}  {shoal:>{widths[2]}}  "
              f"{ratio:>{widths[3]}}  {target}")
    print(f"\nrestarts the agent counted: {agent_restarts} (kills: {args.kills}); "
          f"every program of both running at the end")


if __name__ == "__main__":
    try:
        main()
    except (KeyboardInterrupt, Interrupted):
        print("interrupted; every process of this run stopped", file=sys.stderr)
        sys.exit(130)
