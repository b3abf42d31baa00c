#!/usr/bin/env bash
# Sourced by the bench scripts whose Python probe starts the processes: makes `$work`, a
# scratch directory named after PREFIX, and `$token`; every process of the run carries
# SHOAL_BENCH_RUN=$token in its environment (the probe sets it, not this shell), and on exit
# whatever still carries it is killed and the directory removed, Ctrl-C included.
#
#   source bench/run-scratch.sh PREFIX
work=$(mktemp -d -t "shoal-bench-$1.XXXXXX")
token="$$-$RANDOM$RANDOM"
cleanup() {
    local environ pid
    for environ in /proc/[0-9]*/environ; do
        if grep -qzx "SHOAL_BENCH_RUN=$token" "$environ" 2>/dev/null; then
            pid=${environ#/proc/}
            kill -KILL "${pid%/environ}" 2>/dev/null || true
        fi
    done
    rm -rf "$work"
}
trap cleanup EXIT
