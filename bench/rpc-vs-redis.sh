#!/usr/bin/env bash
# shoal's echo RPC against redis PING, side by side in one run on this machine, at the same
# shapes: 1 connection x 1 in flight, 50 x 1, and 50 x 16 (redis -P 16, against a shoal
# pipeline of 16 calls; and, for comparison, 16 calls in flight each on its own). Prints both
# figures and shoal/redis for throughput and p99 latency, then one-way notifications against
# calls of the same kind.
#
#   bash bench/rpc-vs-redis.sh            # 5 s per shoal run
#   DURATION=10 bash bench/rpc-vs-redis.sh
#
# Both sides get the same resources: redis serves from one thread and redis-benchmark loads
# from one, so shoal's server and load generator each run one runtime thread too (THREADS to
# change it). Four busy threads on a 2-core machine would measure the scheduler, not the RPC.
#
# Latency is taken the way redis-benchmark takes it: from the request's write to the answer's
# arrival (redis-benchmark: its loop's read event for the connection; shoal: its connection's
# reader waking the caller). Neither counts the load generator's own wait between an answer
# and the next write. shoal_seen is shoal's p99 until the caller ran again with its answer,
# that wait included. As redis-benchmark writes a connection's next request on its loop's
# next turn, shoal's load generator makes a connection's next call on its runtime's next turn
# when it drives more than one connection.
#
# Needs redis-server and redis-benchmark (Debian: redis-server redis-tools).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-5}
THREADS=${THREADS:-1}
for tool in redis-server redis-benchmark python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y redis-server redis-tools)" >&2; exit 2; }
done

cargo build --release -q -p shoal-cli
SHOAL=target/release/shoal

work=$(mktemp -d)
cleanup() {
    [[ -n "${shoal_pid:-}" ]] && kill "$shoal_pid" 2>/dev/null || true
    [[ -n "${redis_pid:-}" ]] && kill "$redis_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    >"$work/redis.log" 2>&1 &
redis_pid=$!

"$SHOAL" bench serve --listen 127.0.0.1:0 --threads "$THREADS" >"$work/shoal.out" 2>"$work/shoal.err" &
shoal_pid=$!

deadline=$((SECONDS + 20))
until grep -q "listening on" "$work/shoal.out" 2>/dev/null && redis-cli -p "$redis_port" ping >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then
        echo "servers did not start" >&2
        cat "$work"/*.log "$work"/shoal.* >&2
        exit 1
    fi
    sleep 0.1
done
shoal_addr=$(sed -n 's/^listening on //p' "$work/shoal.out")

printf '%-16s %12s %12s %7s %11s %11s %7s %11s\n' shape redis_rps shoal_rps ratio redis_p99 shoal_p99 ratio \
    shoal_seen
row() {
    python3 - "$1" "$2" "$3" <<'PY'
import csv, json, sys
shape, redis_line, shoal = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
row = next(csv.reader([redis_line]))
redis_rps, redis_p99_us = float(row[1]), float(row[6]) * 1000
ratio_rps = shoal["rps"] / redis_rps
# For latency, above 1.0 means shoal is slower.
ratio_p99 = shoal["p99_us"] / redis_p99_us
print(f"{shape:<16} {redis_rps:12.0f} {shoal['rps']:12.0f} {ratio_rps:7.2f} "
      f"{redis_p99_us:9.0f}us {shoal['p99_us']:9.0f}us {ratio_p99:7.2f} "
      f"{shoal['seen_p99_us']:9.0f}us")
PY
}
shoal_run() {
    "$SHOAL" bench run --addr "$shoal_addr" --duration "$DURATION" --warmup 1 --threads "$THREADS" \
        --json "$@"
}
for shape in "1 1 100000" "50 1 400000" "50 16 4000000"; do
    read -r conns depth requests <<<"$shape"
    pipeline=()
    ((depth > 1)) && pipeline=(-P "$depth")
    redis_csv=$(redis-benchmark -h 127.0.0.1 -p "$redis_port" -t ping -c "$conns" "${pipeline[@]}" \
        -n "$requests" --csv 2>/dev/null | grep PING_MBULK)
    if ((depth == 1)); then
        row "$conns x $depth" "$redis_csv" "$(shoal_run --connections "$conns" --in-flight 1)"
        continue
    fi
    # redis -P sends its calls together and waits for all their answers: a shoal pipeline
    # does the same. The second row keeps each call in flight on its own, for comparison.
    piped_json=$(shoal_run --connections "$conns" --in-flight "$depth" --pipeline)
    row "$conns x $depth" "$redis_csv" "$piped_json"
    alone_json=$(shoal_run --connections "$conns" --in-flight "$depth")
    row "$conns x $depth alone" "$redis_csv" "$alone_json"
done
echo "(throughput ratio = shoal/redis, higher is better; p99 ratio = shoal/redis, lower is better;"
echo " 'alone': the same calls in flight each on its own, not pipelined; shoal_seen: p99 until"
echo " shoal's caller ran again with its answer)"

# One-way notifications against calls of the same kind: pipelined (each in-flight slot's 64
# notifications and barrier call in one pipeline) and one at a time.
piped_notify_json=$(shoal_run --connections 50 --in-flight 16 --pipeline --notify)
alone_notify_json=$(shoal_run --connections 50 --in-flight 16 --notify)
python3 - "$piped_notify_json" "$piped_json" "$alone_notify_json" "$alone_json" <<'PY'
import json, sys
pn, pc, an, ac = (json.loads(a) for a in sys.argv[1:5])
print(f"one-way notifications 50 x 16, pipelined: {pn['rps']:.0f}/s vs calls {pc['rps']:.0f}/s: "
      f"{pn['rps']/pc['rps']:.2f}x")
print(f"one-way notifications 50 x 16, alone: {an['rps']:.0f}/s vs calls {ac['rps']:.0f}/s: "
      f"{an['rps']/ac['rps']:.2f}x")
PY
