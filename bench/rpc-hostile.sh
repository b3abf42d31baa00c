#!/usr/bin/env bash
# shoal's RPC server under one hostile peer at a time (bench/hostile_peer.py), while a
# well-behaved client calls it: for each case, the server's peak memory (VmHWM), its CPU
# over the case, and the good client's calls, p50 and p99. Loopback only, each case bounded
# by DURATION seconds; the server is restarted for each, on one runtime thread (THREADS).
#
#   bash bench/rpc-hostile.sh              # DURATION=10 seconds per case
#   DURATION=20 CASES="notify-flood reset-calls" bash bench/rpc-hostile.sh
#
# The server runs with --stall-timeout 5s (default 30 s) so that the partial-frame case
# shows its connections closed within the run. "emfile" runs the server with 256
# descriptors and floods it with connections.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
THREADS=${THREADS:-1}
PROFILE=${PROFILE:-release}
CASES=${CASES:-"baseline unread-replies unread-small nil-bombs notify-flood unknown-flood reset-calls partial-frames connection-flood emfile huge-method"}
command -v python3 >/dev/null || { echo "missing python3" >&2; exit 2; }

cargo build --profile "$PROFILE" -q -p shoal-cli
dir=$PROFILE
[[ $PROFILE == dev ]] && dir=debug
SHOAL=${CARGO_TARGET_DIR:-target}/$dir/shoal

work=$(mktemp -d)
cleanup() {
    [[ -n "${server_pid:-}" ]] && kill "$server_pid" 2>/dev/null || true
    [[ -n "${peer_pid:-}" ]] && kill "$peer_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

printf '%-17s %9s %5s %9s %10s %9s %9s  %s\n' case peak_MiB cpu% log_lines good_calls p50 p99 "hostile peer"
for case in $CASES; do
    # The last case's file would race the new server's truncation of it.
    rm -f "$work/server.out"
    limit=()
    [[ $case == emfile ]] && limit=(prlimit --nofile=256:256)
    "${limit[@]}" "$SHOAL" bench serve --listen 127.0.0.1:0 --threads "$THREADS" \
        --stall-timeout 5s --grace 1s >"$work/server.out" 2>"$work/server.err" &
    server_pid=$!
    deadline=$((SECONDS + 20))
    until grep -q "listening on" "$work/server.out" 2>/dev/null; do
        ((SECONDS < deadline)) || { echo "server did not start" >&2; cat "$work/server.err" >&2; exit 1; }
        sleep 0.1
    done
    addr=$(sed -n 's/^listening on //p' "$work/server.out")
    port=${addr##*:}
    ticks0=$(cpu_ticks "$server_pid")
    start=$(date +%s.%N)
    # The good client connects first, so it holds its connection even when descriptors
    # run out, then measures for the case's length while the hostile peer runs.
    "$SHOAL" bench run --addr "$addr" --connections 1 --in-flight 1 --threads 1 \
        --warmup 0.5 --duration "$((DURATION - 1))" --json >"$work/good.json" 2>"$work/good.err" &
    good_pid=$!
    if [[ $case != baseline ]]; then
        sleep 0.5
        timeout $((DURATION + 5)) python3 bench/hostile_peer.py "$case" 127.0.0.1 "$port" "$DURATION" \
            >"$work/peer.out" 2>&1 &
        peer_pid=$!
    fi
    wait "$good_pid" || true
    [[ -n "${peer_pid:-}" ]] && { wait "$peer_pid" || true; peer_pid=; }
    ticks1=$(cpu_ticks "$server_pid")
    end=$(date +%s.%N)
    peak_kb=$(awk '/VmHWM/ {print $2}' "/proc/$server_pid/status")
    kill -TERM "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=
    hz=$(getconf CLK_TCK)
    cpu=$(awk -v a="$ticks0" -v b="$ticks1" -v s="$start" -v e="$end" -v hz="$hz" \
        'BEGIN {printf "%.0f", 100 * (b - a) / hz / (e - s)}')
    read -r calls p50 p99 < <(python3 - "$work/good.json" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
    print(r["calls"], f'{r["p50_us"]:.0f}us', f'{r["p99_us"]:.0f}us')
except Exception:
    print("failed - -")
PY
)
    peer=$([[ $case == baseline ]] && echo "none" || cat "$work/peer.out" | tail -1)
    log_lines=$(wc -l <"$work/server.err")
    printf '%-17s %9.1f %5s %9s %10s %9s %9s  %s\n' "$case" "$(echo "$peak_kb / 1024" | bc -l)" \
        "$cpu" "$log_lines" "$calls" "$p50" "$p99" "$peer"
done
