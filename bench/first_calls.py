"""Which of a binary's functions a run of it calls, by one-shot breakpoints: for
bench/code_layout_probe.py, where valgrind cannot follow (it lacks pidfd_open, which the agent
needs to start programs).

    python3 bench/first_calls.py OUT -- PROGRAM ARGS...

Starts PROGRAM under ptrace, puts a breakpoint on the first byte of each function its binary
defines (from `nm`), and at each one's first hit records the function, puts the byte back
and lets the thread go on: each function costs one stop, whatever it is called after. Every
thread is followed, and so is a process the program starts with `vfork` (the agent's start
of a program) until its exec, since it runs the program's code in the program's memory until
then; the functions it runs count as the program's. Once the
program runs, writes its pid to OUT.pid (signal it, not this process); when it exits, writes
the names of the functions that ran to OUT, one per line, in the order they first ran.

SIGUSR1 to this process marks a point of the run: the breakpoints go back on every function
that ran, and OUT.after gets the names of the functions that ran after the (last) mark, in
the order they first ran after it. Linux x86-64 only; standard library only.
"""

import ctypes
import os
import signal
import subprocess
import sys

PTRACE_TRACEME, PTRACE_CONT, PTRACE_GETREGS, PTRACE_SETREGS = 0, 7, 12, 13
PTRACE_DETACH = 17
PTRACE_SETOPTIONS, PTRACE_O_TRACECLONE, PTRACE_O_EXITKILL = 0x4200, 0x8, 0x100000
PTRACE_O_TRACEVFORK, PTRACE_O_TRACEEXEC = 0x4, 0x10
PTRACE_EVENT_VFORK, PTRACE_EVENT_CLONE, PTRACE_EVENT_EXEC = 2, 3, 4
WALL = 0x40000000
RIP = 16  # the index of rip in struct user_regs_struct

libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
libc.ptrace.restype = ctypes.c_long


def ptrace(request, pid, addr=None, data=None):
    if libc.ptrace(request, pid, addr, data) == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"ptrace({request}, {pid}): {os.strerror(err)}")


def functions(binary):
    """Each function's address in the file (for a PIE, relative to where it loads) -> its
    names: the compiler merges identical functions into one body with several names."""
    out = subprocess.run(["nm", "--defined-only", binary],
                         capture_output=True, text=True, check=True).stdout
    found = {}
    for f in (line.split() for line in out.splitlines()):
        if len(f) == 3 and f[1] in "tTwW":
            found.setdefault(int(f[0], 16), []).append(f[2])
    return found


def load_base(pid, binary):
    real = os.path.realpath(binary)
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            f = line.split()
            if len(f) >= 6 and f[5] == real and int(f[2], 16) == 0:
                return int(f[0].split("-")[0], 16)
    raise RuntimeError(f"{binary} is not mapped in {pid}")


def main():
    out, sep, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
    if sep != "--" or not argv:
        sys.exit(__doc__)
    binary = argv[0] if "/" in argv[0] else subprocess.check_output(
        ["which", argv[0]], text=True).strip()
    pid = os.fork()
    if pid == 0:
        ptrace(PTRACE_TRACEME, 0)
        os.execv(binary, argv)
    os.waitpid(pid, 0)  # stopped at the exec
    options = PTRACE_O_TRACECLONE | PTRACE_O_TRACEVFORK | PTRACE_O_TRACEEXEC | PTRACE_O_EXITKILL
    ptrace(PTRACE_SETOPTIONS, pid, None, options)
    # A PIE's symbols are offsets; a fixed-address binary's are addresses already.
    with open(binary, "rb") as f:
        pie = f.read(18)[16] == 3  # e_type ET_DYN
    base = load_base(pid, binary) if pie else 0
    names = functions(binary)
    original = {}
    with open(f"/proc/{pid}/mem", "r+b", buffering=0) as mem:
        for addr in names:
            mem.seek(base + addr)
            original[base + addr] = mem.read(1)
            mem.seek(base + addr)
            mem.write(b"\xcc")
        with open(out + ".pid.new", "w") as f:
            f.write(f"{pid}\n")
        os.rename(out + ".pid.new", out + ".pid")  # whole when it appears
        ran, after = trace(pid, mem, original)
    for path, addrs in ((out, ran), (out + ".after", after)):
        if path == out or after is not None:
            with open(path, "w") as f:
                for addr in addrs:
                    for name in names[addr - base]:
                        f.write(name + "\n")


def trace(pid, mem, original):
    """Follows every thread until the main one exits; returns the breakpoints hit, in the
    order of their first hits, and those hit after the last mark (None: no mark)."""
    regs = (ctypes.c_ulonglong * 27)()
    hit, after = {}, None
    fd = mem.fileno()  # written with pwrite: a write never depends on a shared position
    state = {"waiting": False, "pending": False}

    def rearm():
        nonlocal after
        state["pending"], after = False, {}
        # One byte written at a time: a thread runs either the old byte or the int3.
        for addr in list(hit):
            os.pwrite(fd, b"\xcc", addr)

    def on_mark(signum, frame):
        # While the loop waits for a stop it touches neither the breakpoints nor the lists,
        # so the handler re-arms then; otherwise the loop does before its next wait.
        state["pending"] = True
        if state["waiting"]:
            rearm()

    signal.signal(signal.SIGUSR1, on_mark)
    ptrace(PTRACE_CONT, pid)
    while True:
        state["waiting"] = True
        if state["pending"]:
            rearm()
        try:
            tid, status = os.waitpid(-1, WALL)
        except ChildProcessError:
            return hit, after
        finally:
            state["waiting"] = False
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            if tid == pid:
                return hit, after
            continue
        sig = os.WSTOPSIG(status)
        deliver = 0
        event = status >> 16
        if sig == signal.SIGTRAP and event in (PTRACE_EVENT_CLONE, PTRACE_EVENT_VFORK):
            pass  # the new thread or vfork child is followed and stops once by itself
        elif sig == signal.SIGTRAP and event == PTRACE_EVENT_EXEC and tid != pid:
            # A vfork child ran the program's code until here; what it runs now is another.
            try:
                ptrace(PTRACE_DETACH, tid, None, 0)
            except OSError:
                pass
            continue
        elif sig == signal.SIGTRAP and event == PTRACE_EVENT_EXEC:
            pass
        elif sig == signal.SIGTRAP:
            ptrace(PTRACE_GETREGS, tid, None, ctypes.addressof(regs))
            addr = regs[RIP] - 1
            if addr in original:
                os.pwrite(fd, original[addr], addr)
                hit[addr] = None
                if after is not None:
                    after[addr] = None
                regs[RIP] = addr
                ptrace(PTRACE_SETREGS, tid, None, ctypes.addressof(regs))
            else:
                deliver = sig
        elif sig != signal.SIGSTOP:
            deliver = sig
        try:
            ptrace(PTRACE_CONT, tid, None, deliver)
        except OSError:
            pass  # the thread went away meanwhile


if __name__ == "__main__":
    main()
