#!/usr/bin/env bash
# Runs the full peers benchmark (every system in its own child process,
# 5 runs each, medians) and prints the result as a markdown table on stdout,
# ready for BENCHMARKS.md. Progress goes to stderr.
#
#   peers/bench.sh > table.md             # full run (several minutes on 2 cores)
#   peers/bench.sh --quick > table.md     # quick run (N = 20,000, one run each)
#   PEERS_JSON=/tmp/peers.json peers/bench.sh   # keep the JSON somewhere else
#
# Extra arguments go to the bench binary (--quick, --system NAME, --runs K).
# The JSON array of {system, metric, value, unit} is written to $PEERS_JSON
# (default: target/peers.json at the workspace root, or under
# $CARGO_TARGET_DIR when that is set).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
json="${PEERS_JSON:-$target/peers.json}"
mkdir -p "$(dirname "$json")"
md="$(mktemp)"
trap 'rm -f "$md"' EXIT

# The bench runs with the package directory as its working directory, so
# every path handed to it is absolute. Its plain-text table goes to stderr
# here, so that stdout carries the markdown only.
(cd "$root" && cargo bench -p gen_registry_peers --bench peers -- \
    --json "$json" --markdown "$md" "$@") 1>&2

cat "$md"
echo "JSON written to $json" >&2
