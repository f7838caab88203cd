#!/usr/bin/env bash
# Runs the mapping files of an earlier revision and the current ones over the same inputs and reports
# every input whose `map` result (document, errors, exit code) differs. For changes to the mapping
# programs or the engine that must not change any output, e.g. for speed (docs/performance.md).
# Not part of CI.
#
# Usage: scripts/compare-mappings.sh REV [INPUT…]
#   REV    the git revision whose mappings/ and schemas/ are the reference (e.g. HEAD, main, a tag)
#   INPUT  more input files; each goes to every mapping whose input format it has (.xml or .json),
#          e.g. a generated benchmark corpus: $(ls target/bench-run/corpus-1000/*/forms/*.xml)
# Inputs always compared: the demo data, the mapping fixtures, the bad-input corpus and, when the
# sibling ../shared/fim/samples exists, the FIM samples (more/ and handmade/ included). Each input is
# mapped on its own, and then all inputs of a mapping in one `map` call (so that what a run keeps
# across records, the memo of building blocks, is compared too). The current binary is built (release) and
# runs both sides, so an engine change is compared by building the reference revision's binary
# instead: REFERENCE_BIN=/path/to/old/portal-bridge scripts/compare-mappings.sh REV.
set -euo pipefail

cd "$(dirname "$0")/.."
repo="$(pwd)"
[ "$#" -ge 1 ] || { sed -n '2,14p' "$0" >&2; exit 2; }
rev="$1"; shift

cargo build --release --bin portal-bridge >&2
new_bin="$repo/target/release/portal-bridge"
old_bin="${REFERENCE_BIN:-$new_bin}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/old"
git archive "$rev" mappings schemas | tar -x -C "$work/old"

# One config per side: the default config with absolute paths and its own mapping directory.
config() { # NAME MAPPINGS_DIR
  sed -e "s#^root = .*#root = \"$repo\"#" \
      -e "s#^url = \"sqlite://.*#url = \"sqlite://$work/$1.db\"#" \
      -e "/^\[paths\]/,/^\[/ s#^mappings = .*#mappings = \"$2\"#" \
      -e "/^\[paths\]/,/^\[/ s#^outbox = .*#outbox = \"$work/outbox-$1\"#" \
      config/bridge.toml >"$work/$1.toml"
}
config old "$work/old/mappings"
config new "$repo/mappings"

shopt -s nullglob
samples=../shared/fim/samples
xml=(demo/*/forms/*.xml mappings/tests/*/*.xml tests/bad-input/forms/*.xml
     "$samples"/xdatenfelder-2/*.xml "$samples"/xdatenfelder-2/handmade/*.xml "$samples"/xdatenfelder-2/more/*.xml
     "$samples"/xdatenfelder-3/*.xml "$samples"/xdatenfelder-3/handmade/*.xml)
json=(demo/*/services.json mappings/tests/*/*.json tests/bad-input/services/*.json)
for extra in "$@"; do
  case "$extra" in
    *.xml) xml+=("$extra") ;;
    *.json) json+=("$extra") ;;
    *) echo "skipping $extra: neither .xml nor .json" >&2 ;;
  esac
done

compared=0; differ=0
for toml in mappings/*.toml; do
  mapping="$(basename "$toml" .toml)"
  case "$mapping" in
    zufi-*) inputs=("${json[@]}") ;;
    *) inputs=("${xml[@]}") ;;
  esac
  for input in "${inputs[@]}"; do
    [[ "$input" == *.expected.json ]] && continue
    old="$(timeout 120 "$old_bin" --config "$work/old.toml" map --mapping "$mapping" "$input" 2>&1; echo "exit $?")"
    new="$(timeout 120 "$new_bin" --config "$work/new.toml" map --mapping "$mapping" "$input" 2>&1; echo "exit $?")"
    compared=$((compared + 1))
    if [ "$old" != "$new" ]; then
      differ=$((differ + 1))
      echo "DIFFERS: $mapping $input"
      diff <(echo "$old") <(echo "$new") | head -10 || true
    fi
  done
  # all of them in one call (documents in the order given, errors and warnings on stderr)
  batch=()
  for input in "${inputs[@]}"; do [[ "$input" == *.expected.json ]] || batch+=("$input"); done
  # (stdout and stderr apart: how the two interleave depends on buffering, not on the mapping)
  for side in old new; do
    bin="$old_bin"; [ "$side" = new ] && bin="$new_bin"
    set +e
    timeout 1200 "$bin" --config "$work/$side.toml" map --mapping "$mapping" "${batch[@]}" >"$work/$side.out" 2>"$work/$side.err"
    echo "exit $?" >>"$work/$side.err"
    set -e
  done
  compared=$((compared + 1))
  if ! cmp -s "$work/old.out" "$work/new.out" || ! cmp -s "$work/old.err" "$work/new.err"; then
    differ=$((differ + 1))
    echo "DIFFERS: $mapping, all ${#batch[@]} inputs in one call"
    diff "$work/old.err" "$work/new.err" | head -10 || true
  fi
done
echo "$compared comparisons, $differ differ"
[ "$differ" -eq 0 ]
