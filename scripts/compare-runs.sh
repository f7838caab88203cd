#!/usr/bin/env bash
# Runs the same sequence of migrations on the demo data with two binaries and reports whether
# anything a run leaves differs: the `migrate --json` reports and exit codes, the outbox files, the
# ledger, the migration log (events per run, in any order: deliveries run concurrently), the runs'
# counts and the intents left. For changes to the pipeline or the delivery code that must not change
# any outcome (e.g. a refactoring). Not part of CI.
#
# Usage: scripts/compare-runs.sh REFERENCE_BIN [NEW_BIN]
#   REFERENCE_BIN  a portal-bridge binary built from the reference revision, e.g.
#                  git archive main | tar -x -C /tmp/ref && (cd /tmp/ref && cargo build --release)
#   NEW_BIN        defaults to target/release/portal-bridge of this checkout
# The sequence: a fresh run, an unchanged run, a run after an outbox file was deleted, a forced run,
# a run after a record vanished (the guard holds its withdrawal), the same with --allow-withdrawals,
# a dry run, `status` and `log`. Both sides run in the same directory, one after the other, so that
# paths (and the settings hashes that include them) are equal.
set -euo pipefail

cd "$(dirname "$0")/.."
repo="$(pwd)"
[ "$#" -ge 1 ] || { sed -n '2,15p' "$0" >&2; exit 2; }
ref_bin="$(realpath "$1")"
new_bin="$(realpath "${2:-$repo/target/release/portal-bridge}")"
command -v sqlite3 >/dev/null || { echo "sqlite3 is needed" >&2; exit 2; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
run="$work/run"

# Timestamps and durations differ between any two runs; lines are compared in any order.
normalise() { sed -E 's/[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z?//g' "$1" | sort; }

for side in ref new; do
  bin="$ref_bin"; [ "$side" = new ] && bin="$new_bin"
  mkdir -p "$run"
  cp -a "$repo/demo" "$run/demo"
  ln -s "$repo/schemas" "$run/schemas"
  sed -e "s#^root = .*#root = \"$run\"#" \
      -e "s#^url = \"sqlite://.*#url = \"sqlite://$run/bridge.db\"#" \
      -e "/^\[paths\]/,/^\[/ s#^mappings = .*#mappings = \"$repo/mappings\"#" \
      -e "/^\[paths\]/,/^\[/ s#^outbox = .*#outbox = \"$run/outbox\"#" \
      "$repo/config/bridge.toml" >"$run/bridge.toml"
  n=1
  step() {
    local code=0
    "$bin" --config "$run/bridge.toml" "$@" >"$run/$n.out" 2>"$run/$n.err" || code=$?
    echo "exit $code" >>"$run/$n.out"
    n=$((n + 1))
  }
  step migrate --json
  step migrate --json
  rm "$run/outbox/portal-xml/$(ls "$run/outbox/portal-xml" | sort | head -n 1)"
  step migrate --json
  step migrate --json --force
  rm "$run/demo/aachen/forms/$(ls "$run/demo/aachen/forms" | sort | head -n 1)"
  step migrate --json
  step migrate --json --allow-withdrawals
  step migrate --json --dry-run
  step status
  step log
  db="$run/bridge.db"
  sqlite3 "$db" "SELECT item_key, target, source_id, origin, content_hash, mapping, mapping_version, output_hash,
      output_path, status, attempts, last_error, target_version, adoptions, settings_hash, revision
      FROM items ORDER BY item_key, target" >"$run/items.txt"
  sqlite3 "$db" "SELECT run_id, item_key, target, stage, level, message FROM events" >"$run/events.txt"
  sqlite3 "$db" "SELECT id, trigger, sources, status, new_count, updated_count, unchanged_count, failed_count,
      quarantined_count, withdrawn_count, message FROM runs ORDER BY id" >"$run/runs.txt"
  sqlite3 "$db" "SELECT item_key, target, action, output_hash FROM intents" >"$run/intents.txt"
  mv "$run" "$work/$side"
done

differ=0
compare() { # NAME
  if diff <(normalise "$work/ref/$1") <(normalise "$work/new/$1") >"$work/diff"; then
    echo "same:    $1 ($(wc -l <"$work/ref/$1") lines)"
  else
    echo "DIFFERS: $1"; head -n 20 "$work/diff"; differ=1
  fi
}
for name in $(cd "$work/ref" && ls ./*.out ./*.txt); do compare "${name#./}"; done
if diff -r "$work/ref/outbox" "$work/new/outbox" >"$work/diff"; then
  echo "same:    outbox ($(find "$work/ref/outbox" -type f | wc -l) files)"
else
  echo "DIFFERS: outbox"; head -n 20 "$work/diff"; differ=1
fi
exit "$differ"
