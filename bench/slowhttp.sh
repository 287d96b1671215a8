#!/usr/bin/env bash
# Slow HTTP attacks against `netloop http` with slowhttptest: slowloris (-H)
# and slow body (-B), CONNS connections (default 2000) against a pool of
# half that, with 2 s header and body timeouts. Fails if slowhttptest ever
# finds the service unavailable (its probe connection is not answered within
# 3 s), or if the attack connections were not closed by the timeouts.
#
#   bench/slowhttp.sh [CONNS] [SECONDS]
#
# Needs slowhttptest (Debian: apt-get install slowhttptest). Uses the debug
# build of the netloop binary (cargo build -p netloop-cli).
set -euo pipefail
cd "$(dirname "$0")/.."
conns=${1:-2000}
seconds=${2:-15}
command -v slowhttptest >/dev/null || { echo "slowhttptest is not installed (apt-get install slowhttptest)" >&2; exit 2; }
bin=${CARGO_TARGET_DIR:-target}/debug/netloop
[ -x "$bin" ] || cargo build -p netloop-cli
work=$(mktemp -d)
server_pid=
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

"$bin" http --addr 127.0.0.1:0 --threads 1 --header-timeout 2 --body-timeout 2 \
  --max-connections $((conns / 2)) --pool-full backlog >"$work/server.out" 2>/dev/null &
server_pid=$!
for _ in $(seq 50); do grep -q listening "$work/server.out" && break; sleep 0.1; done
port=$(sed -n 's/^listening on 127.0.0.1://p' "$work/server.out")
[ -n "$port" ] || { echo "netloop http did not start" >&2; exit 1; }

status=0
for mode in H B; do
  slowhttptest -$mode -c "$conns" -r 1000 -i 3 -l "$seconds" -p 3 -s 8192 \
    -g -o "$work/$mode" -u "http://127.0.0.1:$port/" >"$work/$mode.log" 2>&1 || true
  csv="$work/$mode.csv"
  [ -s "$csv" ] || { echo "-$mode: no report"; cat "$work/$mode.log"; status=1; continue; }
  # Columns: Seconds,Closed,Pending,Connected,Service Available (0 = down).
  down=$(awk -F, 'NR > 1 && $5 == 0' "$csv" | wc -l)
  peak=$(awk -F, 'NR > 1 && $4 > m { m = $4 } END { print m + 0 }' "$csv")
  closed=$(tail -1 "$csv" | cut -d, -f2)
  echo "-$mode: peak $peak connected, $closed closed by the server, service down in $down of $(($(wc -l <"$csv") - 1)) seconds"
  [ "$down" -eq 0 ] || status=1
  [ "$closed" -ge $((conns / 2)) ] || { echo "-$mode: the timeouts did not close the attack"; status=1; }
done
exit $status
