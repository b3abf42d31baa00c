"""Which functions the hello example and the agent run, for bench/code-layout.sh: runs each
under bench/first_calls.py (one-shot breakpoints) through what it does most, and writes the
names of the functions it ran, one per line in the order they first ran, for the build
scripts that lay them out first: what runs after the start (reloads, restarts) ends up
together at the end, where a few windows of code hold it.

- hello: a start, calls, a reload, a refused reload, status and a close (called with
  `shoal call`);
- the agent: a start with its N programs installed, an idle time, K of them killed and
  restarted over another, a stop. What runs once the start is over (marked in the tracer)
  comes first in its list, up to a line @mapped-end: the agent keeps that part mapped.

    python3 bench/code_layout_probe.py --shoal SHOAL --work DIR \\
        [--hello HELLO --hello-out FILE] [--agent-out FILE]

Standard library only; reuses bench/supervise_probe.py for the agent's programs.
"""

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import supervise_probe as sp  # noqa: E402

TIMEOUT_S = 120
TRIMMED_S = 5
FIRST_CALLS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "first_calls.py")
# In a list, the end of the functions that run once start-up is over, which the agent keeps
# mapped (crates/shoal/layout.rs).
MAPPED_END = "@mapped-end"


class Traced:
    """A program run under first_calls.py, writing the functions it ran to `out`."""

    def __init__(self, out, argv, log, env=None):
        self.out = out
        self.marked = False
        self.tracer = subprocess.Popen([sys.executable, FIRST_CALLS, out, "--"] + argv,
                                       stdout=log, stderr=log, env=env,
                                       start_new_session=True)
        wait_for("the traced program to start", lambda: os.path.exists(out + ".pid"), self)
        self.pid = int(read(out + ".pid"))

    def poll(self):
        return self.tracer.poll()

    @property
    def returncode(self):
        return self.tracer.returncode

    def mark(self):
        """From here on the tracer also records what runs after this point."""
        self.tracer.send_signal(signal.SIGUSR1)
        self.marked = True

    def stop(self):
        """SIGTERM to the program; returns the names of the functions it ran in the order they
        first ran (each name of a body the compiler merged, without the .llvm.N suffixes that
        change per build). After a mark, those that ran after it come first, then the line
        MAPPED_END, then the others."""
        os.kill(self.pid, signal.SIGTERM)
        if self.tracer.wait(timeout=TIMEOUT_S) != 0:
            raise RuntimeError(f"{FIRST_CALLS} failed; see its log")
        ran = names_in(self.out)
        if not self.marked:
            return ran
        after = names_in(self.out + ".after")
        kept = set(after)
        return after + [MAPPED_END] + [n for n in ran if n not in kept]


def names_in(path):
    names = (re.sub(r"\.llvm\.\d+$", "", n) for n in read(path).split())
    return list(dict.fromkeys(names))


def wait_for(what, ready, proc):
    deadline = time.monotonic() + TIMEOUT_S
    while not ready():
        if proc.poll() is not None:
            raise RuntimeError(f"exited before {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def read(path):
    with open(path) as f:
        return f.read()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def call(shoal, port, method, *params):
    return subprocess.run([shoal, "call", f"127.0.0.1:{port}", method, *params],
                          capture_output=True, text=True, check=True).stdout.strip()


def hello_config(path, port, greeting):
    with open(path, "w") as f:
        f.write(f'[rpc]\nlisten = "127.0.0.1:{port}"\n\n[hello]\ngreeting = {greeting}\n')


def profile_hello(args):
    port = free_port()
    config = os.path.join(args.work, "hello.toml")
    log_path = os.path.join(args.work, "hello.log")
    hello_config(config, port, '"Hello"')
    with open(log_path, "w") as log:
        hello = Traced(os.path.join(args.work, "hello.ran"), [args.hello, "--config", config],
                       log)
    wait_for("hello to listen", lambda: listening(port), hello)
    for _ in range(3):
        call(args.shoal, port, "shoal.ping")
        call(args.shoal, port, "greet", '"layout"')
    hello_config(config, port, '"Hi"')
    os.kill(hello.pid, signal.SIGHUP)
    wait_for("the reload", lambda: call(args.shoal, port, "greet", '"x"') == '"Hi, x"', hello)
    hello_config(config, port, "5")
    os.kill(hello.pid, signal.SIGHUP)
    wait_for("the refused reload", lambda: "previous configuration stays" in read(log_path),
             hello)
    for _ in range(3):
        call(args.shoal, port, "shoal.status")
        call(args.shoal, port, "greet", '"layout"')
    return hello.stop()


def profile_agent(args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    env["SHOAL_BENCH_RUN"] = args.token
    data = os.path.join(args.work, "agent")
    with open(os.path.join(args.work, "agent.log"), "a") as log:
        ns = argparse.Namespace(work=args.work, programs=args.programs, shoal=args.shoal)
        sp.prepare_agent(ns, data, env, log)
        sp.wait_no_leftovers(args.token, "the agent that installed the programs")
        agent = Traced(os.path.join(args.work, "agent.ran"),
                       [args.shoal, "agent", "--data-dir", data, "--stop-on-exit"], log, env)
    # The programs are the agent's children, not the tracer's.
    side = sp.Side("agent", [], sp.AGENT_BASE, args.programs, env, None)
    side.proc, side.watch = agent, sp.Watch(agent.pid, side.wanted)
    side.wait_all(time.perf_counter_ns(), 0.01)
    # Start-up is over and the agent has trimmed its code: what runs from here on (idle
    # timers, restarts) is what it keeps mapped.
    time.sleep(TRIMMED_S)
    agent.mark()
    # Idle, as the bench's agent is between its starts and its kills: its timers run.
    time.sleep(args.idle)
    for i in range(args.kills):
        if side.kill_and_time(i) == float("inf"):
            raise RuntimeError(f"program {i} was not restarted")
        time.sleep(args.idle / args.kills)
    return agent.stop()


def write_list(path, what, names):
    with open(path, "w") as f:
        f.write(f"# The functions {what} runs, written by bench/code-layout.sh; a build script\n"
                "# lays them out first in the binary's code.\n")
        if MAPPED_END in names:
            f.write(f"# Those before {MAPPED_END} run once start-up is over; the agent keeps them "
                    "mapped.\n")
        for name in names:
            f.write(name + "\n")
    count = sum(1 for n in names if n != MAPPED_END)
    print(f"{path}: {count} functions", file=sys.stderr)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shoal", required=True)
    p.add_argument("--hello", help="the hello example's binary, for --hello-out")
    p.add_argument("--work", required=True)
    p.add_argument("--hello-out", help="write hello's list here (none: hello is not run)")
    p.add_argument("--agent-out", help="write the agent's list here (none: it is not run)")
    p.add_argument("--token", default="code-layout")
    # As the bench runs the agent, with fewer programs (installing them takes most of the
    # time): each up longer than the backoff's reset (30 s) when it is killed, kills spread out.
    p.add_argument("--programs", type=int, default=50)
    p.add_argument("--kills", type=int, default=25)
    p.add_argument("--idle", type=float, default=36.0)
    args = p.parse_args()
    if args.hello_out and not args.hello:
        p.error("--hello-out needs --hello, the hello example's binary")
    if args.hello_out:
        write_list(args.hello_out, "the hello example", profile_hello(args))
    if args.agent_out:
        write_list(args.agent_out, "the agent", profile_agent(args))


if __name__ == "__main__":
    main()
