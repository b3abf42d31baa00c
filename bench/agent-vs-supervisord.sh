#!/usr/bin/env bash
# shoal's agent against supervisord, side by side in one run, each managing the same N=200
# `sleep` programs: time until all run, the manager's resident memory (with all running,
# after idling, after the kills), its CPU over 60 idle seconds, and crash-to-restart latency
# (p50, p90, p99 over 50 kills). Prints both figures, shoal/supervisord, and the targets.
#
#   bash bench/agent-vs-supervisord.sh                 # about 9 minutes (7 of them installing)
#   PROGRAMS=200 STARTS=3 IDLE=60 KILLS=50 SEED=1 bash bench/agent-vs-supervisord.sh
#
# Measured by bench/supervise_probe.py (Python 3, standard library only), which describes
# the method. Needs supervisord (Debian: supervisor); installed with apt-get if missing and
# this runs as root. Every process the run starts is stopped when it ends, Ctrl-C included.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v supervisord >/dev/null; then
    if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "installing supervisord (Debian supervisor)" >&2
        # Debian's package also enables a system-wide supervisord service; this bench runs
        # its own, from a generated config, and does not use that one.
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends supervisor >/dev/null
    else
        echo "missing supervisord (apt-get install -y supervisor)" >&2
        exit 2
    fi
fi
command -v python3 >/dev/null || { echo "missing python3" >&2; exit 2; }

# With 200 programs each manager holds about 1,000 descriptors (the agent 5 a program), at
# the edge of the usual soft limit of 1024; both run under a raised one. supervisord raises
# its own to `minfds` (default 1024); the agent does not raise its own.
if [[ $(ulimit -Sn) != unlimited ]] && (($(ulimit -Sn) < 4096)); then
    ulimit -Sn 4096 2>/dev/null || ulimit -Sn "$(ulimit -Hn)"
fi

cargo build --release -q -p shoal-cli
SHOAL=$(realpath "${CARGO_TARGET_DIR:-target}/release/shoal")

source bench/run-scratch.sh agent

echo "shoal $(git rev-parse --short HEAD), $(nproc) cores" >&2
python3 bench/supervise_probe.py --shoal "$SHOAL" --supervisord "$(command -v supervisord)" \
    --work "$work" --token "$token" \
    --programs "${PROGRAMS:-200}" --starts "${STARTS:-3}" --idle "${IDLE:-60}" \
    --kills "${KILLS:-50}" ${SEED:+--seed "$SEED"}
