#!/usr/bin/env bash
# Runs the full peers benchmark (every system in its own child process,
# 5 runs each, medians), prints the result as a markdown table on stdout,
# ready for BENCHMARKS.md, and writes the run's JSON and its chart (SVG).
# Progress goes to stderr.
#
#   peers/bench.sh > table.md             # full run (several minutes on 2 cores)
#   peers/bench.sh --quick > table.md     # quick run (N = 20,000, one run each)
#   peers/bench.sh --scale > scale.md     # the scale tier: N = 100k, 1M, 10M (about half an hour)
#   peers/bench.sh --scale --sizes 100000,1000000   # the scale tier at some sizes only
#   PEERS_RESULTS=/tmp/run peers/bench.sh # the JSON and the chart into /tmp/run
#   PEERS_JSON=/tmp/peers.json peers/bench.sh       # the JSON there, the chart beside it
#
# Extra arguments go to the bench binary (--quick, --scale, --sizes N,N,
# --system NAME, --runs K).
# The BEAM peer (elixir_registry, peers/beam/) needs Debian's `elixir`: it is
# installed with apt-get when missing (as root), else skipped with a note.
#
# The JSON (the run's date, commit, cores and load average, and its rows
# {system, metric, value, unit}, with n in the scale tier) and the chart
# drawn from it go to guide/src/benchmarks/ for a full run, as standard.json
# and standard.svg (scale.json and scale.svg with --scale): the run
# BENCHMARKS.md and the guide show, committed with its chart. A --quick run
# writes them under target/peers/ instead (or $CARGO_TARGET_DIR/peers/).
# To redraw a chart from a saved JSON alone:
#
#   cargo run --release -p gen_registry_peers --bin charts -- guide/src/benchmarks/standard.json guide/src/benchmarks
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
tier=standard results="$root/guide/src/benchmarks"
for arg in "$@"; do
    case "$arg" in
        --scale) tier=scale ;;
        --quick) results="$target/peers" ;;
    esac
done
results="${PEERS_RESULTS:-$results}"
json="${PEERS_JSON:-$results/$tier.json}"
case "$json" in /*) ;; *) json="$PWD/$json" ;; esac
charts="$(dirname "$json")"
mkdir -p "$charts"

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
    --json "$json" --charts "$charts" --markdown "$md" "$@") 1>&2

cat "$md"
echo "JSON written to $json, its chart to $charts/$tier.svg" >&2
