#!/usr/bin/env bash
# The benchmark of issue "Benchmarks: how fast, how big, how close to the limit": prints ONE table.
#
#   benches/run.sh                 N = 1,000 and 10,000 forms (about 5 minutes on 2 cores, plus the build)
#   BENCH_NS="1000" benches/run.sh only N = 1,000
#
# For each N: a deterministic corpus (N forms and N/5 services over the five regions, see
# benches/support/corpus.rs), the per-stage throughput on one core through the library API
# (cargo bench --bench bridge -- stages), and whole runs of the release binary measured with
# /usr/bin/time (wall, peak RSS): a fresh migrate of the forms to the outbox with SQLite, the same to
# portal-sim over loopback HTTP, no-change re-runs, a run after 1 % of the forms changed, and the
# services. Stage rows also for the real XDatenfelder 2.0 exports of ../shared/fim (each alone and all
# together, when the directory is there) and the demo forms, with the hand-written reference of
# xdatenfelder2-to-xdf3 beside the jq mapping (checked byte-identical; the table's notes give the
# jq / hand-written ratio per group). Repeats and medians: see REPEATS below; every repeat is a line in results.jsonl and the
# table shows medians. Work files: $BENCH_DIR (default target/bench-run), kept for inspection.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"

NS="${BENCH_NS:-1000 10000}"
WORK="$(realpath -m "${BENCH_DIR:-target/bench-run}")"
SEED="${BENCH_SEED:-20251127}"
# Repeats of the stage measurement and of the cheap runs; fresh migrations of 10,000 forms take
# minutes each, so they run once at that size (FRESH_REPEATS_LARGE).
STAGE_REPEATS="${BENCH_STAGE_REPEATS:-3}"
REPEATS="${BENCH_REPEATS:-3}"
FRESH_REPEATS_LARGE="${BENCH_FRESH_REPEATS_LARGE:-1}"
# The stage measurement runs on a sample of this many forms per region, spread evenly over the
# corpus (every 4th at N = 1,000, every 34th at N = 10,000).
STAGE_LIMIT="${BENCH_STAGE_LIMIT:-60}"
# Repeats of the stage measurement on the real exports and the demo forms (a second or two each).
REAL_REPEATS="${BENCH_REAL_REPEATS:-7}"

mkdir -p "$WORK"
RESULTS="$WORK/results.jsonl"
LOG="$WORK/log.txt"
: >"$RESULTS"
: >"$LOG"
started=$(date +%s)

say() { echo "== $*" >&2; echo "== $*" >>"$LOG"; }

say "building (release)"
cargo build --release --bins >>"$LOG" 2>&1
TOOL="$(cargo bench --no-run --bench bridge --message-format=json 2>>"$LOG" |
  grep '"kind":\["bench"\]' | grep '"name":"bridge"' |
  sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)"
[ -x "$TOOL" ] || { echo "cannot find the bench tool" >&2; exit 1; }
BRIDGE="$ROOT/target/release/portal-bridge"
SIM="$ROOT/target/release/portal-sim"

# json_counts FILE → "new updated unchanged failed quarantined conflict"
json_counts() {
  sed -e 's/[{}"]//g' -e 's/,/\n/g' "$1" | awk -F: '{v[$1]=$2} END {print v["new"]+0, v["updated"]+0, v["unchanged"]+0, v["failed"]+0, v["quarantined"]+0, v["conflict"]+0}'
}

# run_bridge NAME N ITEMS BYTES CONFIG [migrate args…]: one timed run, one results line.
run_bridge() {
  local name="$1" n="$2" items="$3" bytes="$4" config="$5"
  shift 5
  local rc=0
  /usr/bin/time -f "%e %M" -o "$WORK/time.txt" \
    "$BRIDGE" --config "$config" migrate --json "$@" >"$WORK/last.json" 2>>"$LOG" || rc=$?
  local wall rss
  read -r wall rss < <(tail -1 "$WORK/time.txt")
  local counts
  counts="$(json_counts "$WORK/last.json")"
  echo "   $name (N=$n): ${wall}s, ${rss} KB, exit $rc, new/updated/unchanged/failed/quarantined/conflict = $counts" >&2
  echo "$name N=$n exit=$rc $(cat "$WORK/last.json")" >>"$LOG"
  local note=""
  read -r _ _ _ failed quarantined conflict <<<"$counts"
  if [ "$rc" != 0 ] || [ "$failed" != 0 ] || [ "$quarantined" != 0 ] || [ "$conflict" != 0 ]; then
    note=",\"note\":\"exit $rc; counts new/updated/unchanged/failed/quarantined/conflict $counts\""
  fi
  printf '{"kind":"run","n":%s,"group":"","name":"%s","items":%s,"bytes":%s,"secs":%s,"rss_kb":%s%s}\n' \
    "$n" "$name" "$items" "$bytes" "$wall" "$rss" "$note" >>"$RESULTS"
}

form_sources=()
service_sources=()
for r in aachen bergisches-staedtedreieck emscher-lippe owl soest; do
  form_sources+=(--source "$r-forms")
  service_sources+=(--source "$r-services")
done

SIM_PID=""
stop_sim() { if [ -n "$SIM_PID" ]; then kill "$SIM_PID" 2>/dev/null || true; wait "$SIM_PID" 2>/dev/null || true; SIM_PID=""; fi; }
trap stop_sim EXIT

# start_sim → sets SIM_URL
start_sim() {
  stop_sim
  : >"$WORK/sim.out"
  RUST_LOG=warn "$SIM" --listen 127.0.0.1:0 >"$WORK/sim.out" 2>>"$LOG" &
  SIM_PID=$!
  for _ in $(seq 100); do
    if grep -q "listening on" "$WORK/sim.out"; then break; fi
    sleep 0.05
  done
  SIM_URL="$(sed -n 's/^listening on //p' "$WORK/sim.out")"
  [ -n "$SIM_URL" ] || { echo "portal-sim did not start" >&2; exit 1; }
}

for N in $NS; do
  per_region=$((N / 5))
  services_per_region=$((N / 25))
  services=$((services_per_region * 5))
  corpus="$WORK/corpus-$N"
  say "N=$N: generating $N forms and $services services (seed $SEED)"
  rm -rf "$corpus"
  summary="$("$TOOL" gen --out "$corpus" --forms-per-region "$per_region" \
    --services-per-region "$services_per_region" --seed "$SEED")"
  echo "   $summary" >&2
  echo "N=$N corpus $summary" >>"$LOG"
  form_bytes="$(sed -n 's/.*"form_bytes":\([0-9]*\).*/\1/p' <<<"$summary")"
  service_bytes="$(sed -n 's/.*"service_bytes":\([0-9]*\).*/\1/p' <<<"$summary")"

  stride=$(( (per_region + STAGE_LIMIT - 1) / STAGE_LIMIT ))
  say "N=$N: stages on one core (library API), $STAGE_REPEATS repeats, every ${stride}th form, at most $STAGE_LIMIT per region"
  "$TOOL" stages --config "$corpus/bridge.toml" --n "$N" --repeat "$STAGE_REPEATS" \
    --limit "$STAGE_LIMIT" --stride "$stride" --sources forms >>"$RESULTS"
  "$TOOL" stages --config "$corpus/bridge.toml" --n "$N" --repeat "$STAGE_REPEATS" \
    --limit 20 --sources services >>"$RESULTS"
  say "N=$N: stages on the real exports of ../shared/fim and the demo forms, $REAL_REPEATS repeats"
  "$TOOL" real --n "$N" --repeat "$REAL_REPEATS" >>"$RESULTS"

  fresh_repeats=$REPEATS
  if [ "$N" -gt 2000 ]; then fresh_repeats=$FRESH_REPEATS_LARGE; fi
  outbox_config="$corpus/bridge.toml"
  db="$corpus/var/bridge.db"

  say "N=$N: migrate forms, directory → outbox + SQLite ($fresh_repeats× fresh)"
  for i in $(seq "$fresh_repeats"); do
    rm -rf "$corpus/var"; mkdir -p "$corpus/var"
    run_bridge "migrate forms → outbox (fresh)" "$N" "$N" "$form_bytes" "$outbox_config" "${form_sources[@]}"
  done
  say "N=$N: no-change re-runs"
  run_bridge "no-change re-run, 1st after delivery" "$N" "$N" "$form_bytes" "$outbox_config" "${form_sources[@]}"
  for i in $(seq "$REPEATS"); do
    run_bridge "no-change re-run (steady)" "$N" "$N" "$form_bytes" "$outbox_config" "${form_sources[@]}"
  done
  say "N=$N: 1 % of the forms changed"
  for i in $(seq "$REPEATS"); do
    echo "   $("$TOOL" change --corpus "$corpus" --percent 1 --round "$i")" >&2
    run_bridge "re-run after 1 % changed" "$N" "$N" "$form_bytes" "$outbox_config" "${form_sources[@]}"
  done
  say "N=$N: services ($services records in 5 feeds; their forms are delivered)"
  run_bridge "migrate services → outbox (fresh)" "$N" "$services" "$service_bytes" "$outbox_config" "${service_sources[@]}"
  for i in $(seq "$REPEATS"); do
    run_bridge "services no-change re-run" "$N" "$services" "$service_bytes" "$outbox_config" "${service_sources[@]}"
  done

  say "N=$N: migrate forms → portal-sim over loopback HTTP ($fresh_repeats× fresh)"
  echo sim-token >"$WORK/token"
  for i in $(seq "$fresh_repeats"); do
    start_sim
    "$TOOL" config --corpus "$corpus" --db "$WORK/http-$N.db" --http "$SIM_URL" --token-file "$WORK/token" \
      --concurrency 8 --out "$WORK/http-$N.toml"
    rm -f "$WORK/http-$N.db" "$WORK/http-$N.db-wal" "$WORK/http-$N.db-shm"
    run_bridge "migrate forms → portal-sim HTTP (fresh)" "$N" "$N" "$form_bytes" "$WORK/http-$N.toml" "${form_sources[@]}"
    echo "   sim stats: $(curl -s "$SIM_URL/_sim/stats" | head -c 300)" >>"$LOG"
    stop_sim
  done
  rm -rf "$corpus/var/outbox"
done

say "done in $(( $(date +%s) - started )) s; results in $RESULTS, log in $LOG"
echo
echo "portal-bridge benchmark, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ), seed $SEED"
"$TOOL" report --results "$RESULTS"
