#!/usr/bin/env bash
# Echo throughput per server CPU-second for each threading mode of
# `netloop echo`, with 1 and 2 server threads, driven by `netloop load`.
# Rounds are interleaved (mode A, B, C, A, B, C, ...) and medians reported,
# because a shared machine is noisy.
#
# usage: bench/modes.sh [ROUNDS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
seconds=${2:-4}
bin=target/release/netloop
[ -x "$bin" ] || cargo build --release -p netloop-cli >/dev/null
hz=$(getconf CLK_TCK)
out=$(mktemp -d)

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

run_one() { # mode-args threads depth -> "msgs cpu_seconds"
  local args=$1 threads=$2 depth=$3
  # shellcheck disable=SC2086
  $bin echo --addr 127.0.0.1:0 --threads "$threads" $args >"$out/addr" 2>/dev/null &
  local pid=$!
  for _ in $(seq 100); do [ -s "$out/addr" ] && break; sleep 0.02; done
  local addr; addr=$(sed 's/listening on //' "$out/addr")
  local before; before=$(cpu_ticks $pid)
  $bin load echo --target "$addr" --conns 50 --size 64 --depth "$depth" \
    --duration "$seconds" --threads 1 --json >"$out/load.json"
  local after; after=$(cpu_ticks $pid)
  kill -INT $pid; wait $pid || true
  python3 - "$out/load.json" "$((after - before))" "$hz" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
print(j["messages"], int(sys.argv[2]) / int(sys.argv[3]), j["msgs_per_s"], j["errors"])
PY
}

modes=("--mode reuseport" "--mode reuseport --exclusive" "--mode acceptor" "--mode oneshot")
echo "# netloop echo by mode: 64 B messages, 50 connections, ${seconds}s x ${rounds} rounds, $(date -u +%F)"
for depth in 1 16; do
  for threads in 1 2; do
    declare -A per_cpu=() rate=()
    for round in $(seq "$rounds"); do
      for m in "${modes[@]}"; do
        read -r msgs cpu mps errors < <(run_one "$m" "$threads" "$depth")
        [ "$errors" = 0 ] || { echo "verification errors in $m" >&2; exit 1; }
        per_cpu[$m]+="$(python3 -c "print($msgs / max($cpu, 0.01))") "
        rate[$m]+="$mps "
      done
    done
    for m in "${modes[@]}"; do
      python3 - "$m" "$threads" "$depth" "${per_cpu[$m]}" "${rate[$m]}" <<'PY'
import statistics, sys
mode, threads, depth = sys.argv[1:4]
per_cpu = [float(x) for x in sys.argv[4].split()]
rate = [float(x) for x in sys.argv[5].split()]
print(f"| {mode:28s} | {threads} | {depth:>2} | {statistics.median(rate):>10.0f} | {statistics.median(per_cpu):>12.0f} |")
PY
    done
    unset per_cpu rate
  done
done
rm -rf "$out"
