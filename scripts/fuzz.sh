#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ (cargo-fuzz, libFuzzer) for FUZZ_SECONDS seconds each (default 60).
# Not part of CI. Usage: scripts/fuzz.sh [TARGET…]   (targets: decode_xml decode_json map_tree config)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain; without one it falls back to
# the stable toolchain with RUSTC_BOOTSTRAP=1, which is enough for libFuzzer builds. Seeds come from
# the repository (mapping fixtures, demo data, the bad-input corpus, config/); what the fuzzer finds
# goes to fuzz/corpus/<target>/, crashes to fuzz/artifacts/<target>/ (both ignored by git).
# See docs/robustness.md for turning a crash into a regression case.
set -euo pipefail

cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-60}"
if [ "$#" -gt 0 ]; then targets=("$@"); else targets=(decode_xml decode_json map_tree config); fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz" >&2
    exit 2
fi
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    fuzz=(cargo +nightly fuzz)
else
    echo "no nightly toolchain: using stable with RUSTC_BOOTSTRAP=1" >&2
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi

# Seeds: real inputs of each kind. map_tree inputs start with two bytes: the mapping (in name
# order: 0 xdatenfelder2-to-form, 1 xdatenfelder2-to-xdf3, 2 xdatenfelder3-to-form, 3 zufi-to-xzufi)
# and how the rest is read (0: the mapping's own format).
seeds=fuzz/seeds
rm -rf "$seeds"
mkdir -p "$seeds"/{decode_xml,decode_json,map_tree,config}
small() { find "$@" -type f -size -200k 2>/dev/null; }
i=0
for f in $(small mappings/tests demo tests/bad-input -name '*.xml'); do
    i=$((i + 1)); cp "$f" "$seeds/decode_xml/$i.xml"
done
for f in $(small mappings/tests demo tests/bad-input -name '*.json'); do
    i=$((i + 1)); cp "$f" "$seeds/decode_json/$i.json"
done
seed_mapping() { # INDEX FILE
    i=$((i + 1)); { printf "\\x$(printf %02x "$1")\\x00"; cat "$2"; } > "$seeds/map_tree/$i"
}
for f in mappings/tests/xdatenfelder2-to-form/*.xml; do case "$f" in *.expected.*) ;; *) seed_mapping 0 "$f" ;; esac; done
for f in mappings/tests/xdatenfelder2-to-xdf3/*.xml; do case "$f" in *.expected.*) ;; *) seed_mapping 1 "$f" ;; esac; done
for f in mappings/tests/xdatenfelder3-to-form/*.xml; do case "$f" in *.expected.*) ;; *) seed_mapping 2 "$f" ;; esac; done
for f in mappings/tests/zufi-to-xzufi/*.json; do case "$f" in *.expected.*|*.source.json) ;; *) seed_mapping 3 "$f" ;; esac; done
for f in config/*.toml; do i=$((i + 1)); cp "$f" "$seeds/config/$i.toml"; done

declare -A dict=([decode_xml]=fuzz/xml.dict [map_tree]=fuzz/xml.dict [decode_json]=fuzz/json.dict [config]=fuzz/toml.dict)
summary=()
status=0
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target"
    log="fuzz/artifacts/$target.log"
    mkdir -p fuzz/artifacts
    echo "== $target: ${seconds}s" >&2
    set +e
    "${fuzz[@]}" run "$target" "fuzz/corpus/$target" "$seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=131072 \
        -dict="${dict[$target]}" -print_final_stats=1 2>&1 | tee "$log" | grep -E '^(#[0-9]+ +(INITED|DONE|pulse))|ERROR|SUMMARY|Done [0-9]+ runs' >&2
    result=${PIPESTATUS[0]}
    set -e
    runs=$(grep -oE 'Done [0-9]+ runs' "$log" | grep -oE '[0-9]+' | tail -1 || true)
    crashes=$(find "fuzz/artifacts/$target" -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) 2>/dev/null | wc -l)
    summary+=("$target: ${runs:-?} runs, exit $result, $crashes crash/timeout/oom file(s) in fuzz/artifacts/$target")
    if [ "$result" -ne 0 ]; then status=1; fi
done
printf '%s\n' "${summary[@]}"
exit "$status"
