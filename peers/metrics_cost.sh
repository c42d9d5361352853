#!/usr/bin/env bash
# What the registry's metrics cost: the peers benchmark's gen_registry system
# (W1 starts, W6 calls, W8 stops) built without the cargo feature `metrics`
# and with it, run alternately in one session: without the feature, with it
# and no recorder, with it and a Prometheus recorder installed
# (PEERS_RECORDER=prometheus, nothing scraping it), ROUNDS times (each round
# starting with the next variant); prints the medians (with the range over
# the rounds) and the costs against the build without the feature as a
# markdown table (BENCHMARKS.md, "What metrics cost").
#
#   peers/metrics_cost.sh [ROUNDS] [--quick]
set -euo pipefail

rounds="${1:-5}"
quick="${2:-}"
root="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The bench binary built with the features in $1 (none if empty), copied to
# $2. Both builds share one target directory, so the dependencies that do
# not change with the feature are built once.
build() {
    local exe
    exe=$(cd "$root" && cargo bench -p gen_registry_peers --bench peers $1 --no-run 2>&1 |
        sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -n 1)
    case "$exe" in /*) ;; *) exe="$target/${exe#target/}" ;; esac
    cp "$exe" "$2"
}

echo "building the bench without and with the feature metrics" >&2
build "" "$work/peers-off"
build "--features metrics" "$work/peers-metrics"

variants=(off none prometheus)
for round in $(seq "$rounds"); do
    # Each round starts with the next variant, so none always runs first.
    for i in 0 1 2; do
        variant="${variants[$(((round + i) % 3))]}"
        echo "round $round of $rounds: $variant" >&2
        exe="$work/peers-metrics"
        [ "$variant" = off ] && exe="$work/peers-off"
        recorder=""
        [ "$variant" = prometheus ] && recorder=prometheus
        (cd "$root/peers" && PEERS_RECORDER="$recorder" "$exe" --system gen_registry --runs 1 \
            $quick --json "$work/$variant-$round.json") >/dev/null 2>&1
    done
done

python3 - "$work" "$rounds" <<'EOF'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
metrics = [("W1", "W1 starts/s ↑"), ("W6p50", "W6 call p50 µs ↓"), ("W6p99", "W6 call p99 µs ↓"), ("W8", "W8 stops/s ↑")]
def values(variant, metric):
    out = []
    for r in range(1, rounds + 1):
        run = json.load(open(f"{work}/{variant}-{r}.json"))
        # A run's record ({..., "rows": [...]}), or a bare array of rows.
        for row in run["rows"] if isinstance(run, dict) else run:
            if row["system"] == "gen_registry" and row["metric"] == metric and row["value"] is not None:
                out.append(row["value"])
    return out
def fmt(v):
    return f"{v:,.3f}" if v < 100 else f"{v:,.0f}"
def cell(vs):
    # The median, and the range over the rounds.
    return f"{fmt(statistics.median(vs))} ({fmt(min(vs))}–{fmt(max(vs))})"
print("| metric | without `metrics` | `metrics`, no recorder | cost | `metrics`, Prometheus recorder | cost |")
print("|---|---|---|---|---|---|")
for metric, label in metrics:
    base_vs = values("off", metric)
    base = statistics.median(base_vs)
    row = [label, cell(base_vs)]
    for variant in ("none", "prometheus"):
        vs = values(variant, metric)
        v = statistics.median(vs)
        # A cost is how much worse: slower calls, or fewer starts/stops per second.
        cost = (v / base - 1) if metric.startswith("W6") else (base / v - 1)
        row += [cell(vs), f"{cost * 100:+.1f} %"]
    print("| " + " | ".join(row) + " |")
EOF
