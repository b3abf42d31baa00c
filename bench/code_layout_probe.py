"""Which functions the hello example runs, for bench/code-layout.sh: runs it under valgrind's
callgrind through a start, calls, a reload, a refused reload, status and a close (calling it
with `shoal call`), and writes the names of the functions it ran that the binary defines, one per
line, for crates/shoal/build.rs.

    python3 bench/code_layout_probe.py --shoal SHOAL --hello HELLO --work DIR --out FILE

Standard library only.
"""

import argparse
import glob
import os
import re
import signal
import socket
import subprocess
import sys
import time

TIMEOUT_S = 120


def callgrind(out_dir, argv):
    """argv under callgrind, writing one profile per process to out_dir."""
    return ["valgrind", "--tool=callgrind", "--demangle=no",
            f"--callgrind-out-file={out_dir}/callgrind.%p"] + argv


def wait_for(what, ready, proc):
    deadline = time.monotonic() + TIMEOUT_S
    while not ready():
        if proc.poll() is not None:
            raise RuntimeError(f"exited before {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


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


def profile_hello(args, out_dir):
    port = free_port()
    config = os.path.join(args.work, "hello.toml")
    log_path = os.path.join(args.work, "hello.log")
    hello_config(config, port, '"Hello"')
    with open(log_path, "w") as log:
        proc = subprocess.Popen(callgrind(out_dir, [args.hello, "--config", config]),
                                stdout=log, stderr=log)
    try:
        wait_for("hello to listen", lambda: listening(port), proc)
        for _ in range(3):
            call(args.shoal, port, "shoal.ping")
            call(args.shoal, port, "greet", '"layout"')
        hello_config(config, port, '"Hi"')
        proc.send_signal(signal.SIGHUP)
        wait_for("the reload", lambda: call(args.shoal, port, "greet", '"x"') == '"Hi, x"', proc)
        hello_config(config, port, "5")
        proc.send_signal(signal.SIGHUP)
        wait_for("the refused reload",
                 lambda: "previous configuration stays" in read(log_path), proc)
        for _ in range(3):
            call(args.shoal, port, "shoal.status")
            call(args.shoal, port, "greet", '"layout"')
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()


def read(path):
    with open(path) as f:
        return f.read()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ran(out_dir):
    """The names of every function the profiles in out_dir ran."""
    names = set()
    for path in glob.glob(os.path.join(out_dir, "callgrind.*")):
        ids = {}
        with open(path, errors="replace") as f:
            for line in f:
                m = re.match(r"^c?fn=\((\d+)\)(?: (.+))?$", line.rstrip("\n"))
                if m:
                    if m.group(2):
                        ids[m.group(1)] = m.group(2)
                    names.add(ids.get(m.group(1)))
    # callgrind marks recursion depth as NAME'2; a build may suffix a function .llvm.N.
    return {re.sub(r"(\.llvm\.\d+)?('\d+)?$", "", n) for n in names if n}


def defined(binary, ran):
    """The function symbols binary defines that ran, without their .llvm.N suffixes. The
    compiler merges identical functions into one body with several names and callgrind
    reports one of them, while the body's section is named after another: every name of a
    body that ran is listed."""
    out = subprocess.run(["nm", "--defined-only", binary],
                         capture_output=True, text=True, check=True).stdout
    names = {}
    for f in (line.split() for line in out.splitlines()):
        if len(f) == 3 and f[1] in "tTwW":
            names.setdefault(f[0], set()).add(re.sub(r"\.llvm\.\d+$", "", f[2]))
    return {name for body in names.values() if body & ran for name in body}


def write_list(path, what, names):
    with open(path, "w") as f:
        f.write(f"# The functions {what} runs, written by bench/code-layout.sh and read by\n"
                "# crates/shoal/build.rs, which lays them out first in the binary's code.\n")
        for name in sorted(names):
            f.write(name + "\n")
    print(f"{path}: {len(names)} functions", file=sys.stderr)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shoal", required=True)
    p.add_argument("--hello", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    out_dir = os.path.join(args.work, "profiles")
    os.makedirs(out_dir)
    profile_hello(args, out_dir)
    write_list(args.out, "the hello example", defined(args.hello, ran(out_dir)))


if __name__ == "__main__":
    main()
