#!/usr/bin/env bash
# What the mapping budget costs (docs/performance.md, "The budget's overhead"): the release binary of
# this checkout against a reference binary built without it (e.g. the commit before the budget),
# each mapping the demo forms ROUNDS times in one `map` call, REPEATS times in turns; prints the
# median wall times and their ratio. Both use the same config (the shipped one without the
# [limits] budget keys, which the reference does not know).
#
# Usage: REFERENCE_BIN=/path/to/old/portal-bridge benches/budget-overhead.sh [MAPPING]
set -euo pipefail
cd "$(dirname "$0")/.."
mapping="${1:-xdatenfelder2-to-form}"
rounds="${ROUNDS:-40}"; repeats="${REPEATS:-5}"
cargo build --release --bin portal-bridge >&2
new_bin="$(pwd)/target/release/portal-bridge"
old_bin="${REFERENCE_BIN:?set REFERENCE_BIN to a portal-bridge built without the budget}"
config="$(mktemp)"; trap 'rm -f "$config"' EXIT
sed -e '/^max_mapping_seconds = /d' -e '/^max_mapping_bytes = /d' -e "s#^root = .*#root = \"$(pwd)\"#" \
  config/bridge.toml >"$config"
inputs=(); for _ in $(seq "$rounds"); do inputs+=(demo/*/forms/*.xml); done
wall() { /usr/bin/time -f %e "$1" --config "$config" map --mapping "$mapping" "${inputs[@]}" 2>&1 >/dev/null | tail -1; }
old=(); new=()
for _ in $(seq "$repeats"); do old+=("$(wall "$old_bin")"); new+=("$(wall "$new_bin")"); done
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
o="$(median "${old[@]}")"; n="$(median "${new[@]}")"
echo "$mapping, ${#inputs[@]} forms per call, median of $repeats: reference ${o} s, with budget ${n} s, ratio $(echo "scale=3; $n / $o" | bc)"
