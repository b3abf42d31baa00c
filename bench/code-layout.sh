#!/usr/bin/env bash
# Writes crates/shoal/examples/hello.layout and crates/shoal-cli/agent.layout: the functions
# the hello example and the agent run, which their release builds lay out first in their code
# (crates/shoal/layout.rs), so that each maps few 64 KiB windows of it. Each runs under
# bench/first_calls.py (one-shot breakpoints) through what it does most
# (bench/code_layout_probe.py); about two minutes once built.
#
#   bash bench/code-layout.sh            # then commit the two lists
#
# Run it again when bench/hello-startup.sh or bench/agent-vs-supervisord.sh shows the layout
# has gone stale: a new toolchain or new dependency versions rename most functions.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -q -p shoal-cli
cargo build --release -q -p shoal --example hello
target=${CARGO_TARGET_DIR:-target}/release

source bench/run-scratch.sh layout

python3 bench/code_layout_probe.py --shoal "$(realpath "$target/shoal")" \
    --hello "$(realpath "$target/examples/hello")" --work "$work" --token "$token" \
    --hello-out crates/shoal/examples/hello.layout --agent-out crates/shoal-cli/agent.layout
