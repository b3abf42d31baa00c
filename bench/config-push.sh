#!/usr/bin/env bash
# A central configuration version published to N simulated agents (N=1,000): the time from
# the push until the center holds every agent's `applied` acknowledgement (p50, p99 over 20
# pushes); in the same run, etcd (Debian's etcd-server) with N watchers on one key: the time
# from a put until every watcher is notified. Prints both and the ratio of the p99s.
#
#   bash bench/config-push.sh                  # about 2 minutes
#   AGENTS=1000 PUSHES=20 POLL=0.005 STAGGER=2ms bash bench/config-push.sh
#
# The center is its own process (`shoal center`, release build); the agents run in one other
# process (`shoal bench center-sim --app NAME`), each with the real link; etcd's watchers in
# a third (`shoal bench etcd-watch`). bench/config_push_probe.py (Python 3, standard library
# only) describes the method. Every process the run starts is stopped when it ends, Ctrl-C
# included.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v python3 >/dev/null || { echo "missing python3" >&2; exit 2; }
command -v etcd >/dev/null || { echo "missing etcd: apt-get install etcd-server" >&2; exit 2; }

# Each agent holds one descriptor in the simulator and one in the center; each watcher one.
ulimit -Sn "$(ulimit -Hn)"

cargo build --release -q -p shoal-cli
SHOAL=$(realpath "${CARGO_TARGET_DIR:-target}/release/shoal")

source bench/run-scratch.sh config
export SHOAL_BENCH_RUN="$token"

echo "shoal $(git rev-parse --short HEAD), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
python3 bench/config_push_probe.py --shoal "$SHOAL" --work "$work" --token "$token" \
    --agents "${AGENTS:-1000}" --pushes "${PUSHES:-20}" --poll "${POLL:-0.005}" \
    --stagger "${STAGGER:-2ms}"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
