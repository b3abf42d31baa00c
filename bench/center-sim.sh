#!/usr/bin/env bash
# One shoal center with N simulated agents (N=1,000 then 5,000): time until all are online,
# the center's CPU (fraction of a core) and resident memory while idle with all online, and
# the time until a `ps` to all N has every result (p50, p99 over 20 commands).
#
#   bash bench/center-sim.sh                   # about 5 minutes
#   AGENTS="1000 5000" STAGGER=2ms IDLE=30 COMMANDS=20 bash bench/center-sim.sh
#
# The center is its own process (`shoal center`, release build), measured alone from /proc;
# the agents run in one other process (`shoal bench center-sim`), each with the real link.
# bench/center_sim_probe.py (Python 3, standard library only) describes the method. Every
# process the run starts is stopped when it ends, Ctrl-C included.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v python3 >/dev/null || { echo "missing python3" >&2; exit 2; }

# Each agent holds one descriptor in the simulator and one in the center.
ulimit -Sn "$(ulimit -Hn)"

cargo build --release -q -p shoal-cli
SHOAL=$(realpath "${CARGO_TARGET_DIR:-target}/release/shoal")

source bench/run-scratch.sh center

echo "shoal $(git rev-parse --short HEAD), $(nproc) cores" >&2
python3 bench/center_sim_probe.py --shoal "$SHOAL" --work "$work" --token "$token" \
    --agents "${AGENTS:-1000 5000}" --stagger "${STAGGER:-2ms}" --idle "${IDLE:-30}" \
    --commands "${COMMANDS:-20}"
