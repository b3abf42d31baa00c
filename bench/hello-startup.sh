#!/usr/bin/env bash
# shoal's hello example against the same service in Python (asyncio + aio-msgpack-rpc,
# bench/hello_peer.py), side by side in one run: time from exec to the first answered
# shoal.ping, and resident memory at that moment, after 1 s idle and (shoal only) after a
# reload, a rejected reload and a few calls. Prints both figures,
# shoal/peer, and whether shoal meets its targets (< 4 MB resident at ready, < 5 MB after the
# reloads, < 20 ms to ready).
#
#   bash bench/hello-startup.sh           # 20 runs per side
#   RUNS=50 bash bench/hello-startup.sh
#
# Measured by bench/startup_probe.py; each run starts a fresh process on a free port.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -q -p shoal --example hello
# The peer and the probe need PyPI msgpack and aio-msgpack-rpc: the venv CI makes (.ci/run).
bash .ci/venv .venv aio_msgpack_rpc aio-msgpack-rpc msgpack

.venv/bin/python bench/startup_probe.py --runs "${RUNS:-20}" \
    target/release/examples/hello ".venv/bin/python bench/hello_peer.py"
