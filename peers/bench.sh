#!/usr/bin/env bash
# Runs the full peers benchmark (every system in its own child process,
# 5 runs each, medians) and prints the result as a markdown table on stdout,
# ready for BENCHMARKS.md. Progress goes to stderr.
#
#   peers/bench.sh > table.md             # full run (several minutes on 2 cores)
#   peers/bench.sh --quick > table.md     # quick run (N = 20,000, one run each)
#   PEERS_JSON=/tmp/peers.json peers/bench.sh   # keep the JSON somewhere else
#   peers/bench.sh --scale > scale.md     # the scale tier: N = 100k, 1M, 10M (about half an hour)
#
# Extra arguments go to the bench binary (--quick, --scale, --system NAME, --runs K).
# The BEAM peer (elixir_registry, peers/beam/) needs Debian's `elixir`: it is
# installed with apt-get when missing (as root), else skipped with a note.
# The JSON array of {system, metric, value, unit} is written to $PEERS_JSON
# (default: target/peers.json at the workspace root, or under
# $CARGO_TARGET_DIR when that is set).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
json="${PEERS_JSON:-$target/peers.json}"
mkdir -p "$(dirname "$json")"

if ! command -v elixir >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing Debian's elixir package for the BEAM peer (elixir_registry)" >&2
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq elixir; } >&2 \
            || echo "could not install elixir: the BEAM peer (elixir_registry) is skipped" >&2
    else
        echo "no elixir, and no apt-get as root to install it: the BEAM peer (elixir_registry) is skipped" >&2
    fi
fi
md="$(mktemp)"
trap 'rm -f "$md"' EXIT

# The bench runs with the package directory as its working directory, so
# every path handed to it is absolute. Its plain-text table goes to stderr
# here, so that stdout carries the markdown only.
(cd "$root" && cargo bench -p gen_registry_peers --bench peers -- \
    --json "$json" --markdown "$md" "$@") 1>&2

cat "$md"
echo "JSON written to $json" >&2
