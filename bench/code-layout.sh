#!/usr/bin/env bash
# Writes crates/shoal/examples/hello.layout: the functions the hello example runs, which its
# release build lays out first in its code (crates/shoal/build.rs), so that it maps few
# 64 KiB windows of it. hello runs under valgrind's callgrind through a start, calls and
# reloads (bench/code_layout_probe.py); about a minute once built.
#
#   bash bench/code-layout.sh            # then commit the list
#
# Run it again when bench/hello-startup.sh shows the layout has gone stale: a new toolchain or
# new dependency versions rename most functions.
# Needs valgrind (Debian: valgrind); installed with apt-get if missing and this runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v valgrind >/dev/null; then
    if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "installing valgrind" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends valgrind >/dev/null
    else
        echo "missing valgrind (apt-get install -y valgrind)" >&2
        exit 2
    fi
fi

cargo build --release -q -p shoal-cli
cargo build --release -q -p shoal --example hello
target=${CARGO_TARGET_DIR:-target}/release

source bench/run-scratch.sh layout

python3 bench/code_layout_probe.py --shoal "$(realpath "$target/shoal")" \
    --hello "$(realpath "$target/examples/hello")" --work "$work" \
    --out crates/shoal/examples/hello.layout
