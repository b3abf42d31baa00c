#!/usr/bin/env bash
# Writes crates/shoal/examples/hello.layout and crates/shoal-cli/agent.layout: the functions
# the hello example and the agent run, which their release builds lay out first in their code
# (crates/shoal/layout.rs), so that each maps few 64 KiB windows of it. Each runs under
# bench/first_calls.py (one-shot breakpoints) through what it does most
# (bench/code_layout_probe.py); about three minutes once built.
#
#   bash bench/code-layout.sh            # both lists; then commit them
#   bash bench/code-layout.sh agent      # one of them: hello or agent
#
# Run it again when bench/hello-startup.sh or bench/agent-vs-supervisord.sh shows the layout
# has gone stale: a new toolchain or new dependency versions rename most functions.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-both}" in
    both | hello | agent) which=${1:-both} ;;
    *) echo "usage: bash bench/code-layout.sh [hello|agent]" >&2; exit 2 ;;
esac

# The shoal binary runs the hello example's calls too.
cargo build --release -q -p shoal-cli
target=${CARGO_TARGET_DIR:-target}/release
shoal=$(realpath "$target/shoal")
lists=()
if [[ $which != agent ]]; then
    cargo build --release -q -p shoal --example hello
    lists+=(--hello "$(realpath "$target/examples/hello")"
            --hello-out crates/shoal/examples/hello.layout)
fi
if [[ $which != hello ]]; then
    lists+=(--agent-out crates/shoal-cli/agent.layout)
fi

source bench/run-scratch.sh layout

python3 bench/code_layout_probe.py --shoal "$shoal" --work "$work" --token "$token" "${lists[@]}"
