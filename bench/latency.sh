#!/usr/bin/env bash
# Open-loop tail latency at a fixed offered rate (issue 11, row 4):
#
#   echo 64 B     netloop echo | mio-echo | tokio-echo
#   HTTP hello    netloop http | nginx
#   RESP set/get  netloop kv   | redis-server
#
# First each server's peak: `netloop load W --depth 1` (closed loop, 50
# connections), interleaved rounds, median. Then, per group, the offered
# rate is 50 % and 90 % of the group's lowest peak, so every server of a
# group gets the same rate and none is pushed past its own peak;
# `netloop load W --rate R` sends on a fixed schedule and measures each
# latency from the request's intended send time (no coordinated
# omission). Its own lateness (actual against intended send time) is
# reported beside the latencies, so a reader can see the client is not
# what the figures measure.
#
# Server on CPU 0, client on CPU 1 (taskset), one thread each; rounds
# interleaved (A B C A B C ...), medians of the rounds reported.
#
# Writes bench/latency-runs.csv (every run) and the section between
# "<!-- latency.sh: begin -->" and "<!-- latency.sh: end -->" in
# bench/RESULTS.md (appended after the proxy section the first time).
#
# usage: bench/latency.sh [ROUNDS] [DURATION]
#   ROUNDS         interleaved rounds (default 3)
#   DURATION       seconds per open-loop run (default 4)
#   PEAK_DURATION  seconds per closed-loop peak run (default 3)
#   FRACTIONS      offered rates as fractions of the peak (default "0.5 0.9")
#   LATENCY_GROUPS which groups (default "echo http kv")
set -euo pipefail

bench=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$bench")
ROUNDS=${1:-${ROUNDS:-3}}
DURATION=${2:-${DURATION:-4}}
PEAK_DURATION=${PEAK_DURATION:-3}
FRACTIONS=${FRACTIONS:-"0.5 0.9"}
GROUPS_=${LATENCY_GROUPS:-"echo http kv"}
CONNS=50

# shellcheck source=bench/servers.sh
. "$bench/servers.sh"

[ "$(nproc)" -ge 2 ] || die "needs at least 2 CPUs"
for t in nginx redis-server taskset python3; do
  command -v "$t" >/dev/null || [ "$t" = nginx -a -x /usr/sbin/nginx ] || die "missing $t (bench/compare.sh installs the peers)"
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$root/target/release/netloop" ] || die "build first: cargo build --release -p netloop-cli"
PEERS=$bench/target/release
for b in mio-echo tokio-echo; do [ -x "$PEERS/$b" ] || die "build the peers first: (cd bench && cargo build --release)"; done

tmp=$(mktemp -d /tmp/netloop-latency.XXXXXX)
cp "$root/target/release/netloop" "$tmp/netloop"
NETLOOP=$tmp/netloop
HZ=$(getconf CLK_TCK)
export RUST_LOG=${RUST_LOG:-warn}
SPID=""
cleanup() { if [ -n "$SPID" ]; then kill -KILL "$SPID" 2>/dev/null || true; fi; rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

servers_of() {
  case $1 in
    echo) echo "netloop-echo mio-echo tokio-echo" ;;
    http) echo "netloop-http nginx" ;;
    kv) echo "netloop-kv redis-server" ;;
  esac
}
load_of() { case $1 in echo) echo "echo --size 64" ;; http) echo http ;; kv) echo resp ;; esac; }

runs=$bench/latency-runs.csv
echo "kind,round,group,server,fraction,offered,json,cpu_s" >"$runs"

# run_one KIND ROUND GROUP SERVER FRACTION RATE|- SECONDS
run_one() {
  local kind=$1 round=$2 group=$3 server=$4 fraction=$5 rate=$6 secs=$7 mode json
  if [ "$rate" = - ]; then mode="--depth 1"; else mode="--rate $rate"; fi
  if ! start_server "$server"; then
    stop_server
    echo "$kind,$round,$group,$server,$fraction,$rate,,\"server did not start\"" >>"$runs"
    return 0
  fi
  local before; before=$(cpu_ticks "$SPID")
  # shellcheck disable=SC2046,SC2086
  taskset -c "$CLIENT_CPU" "$NETLOOP" load $(load_of "$group") --target "$SADDR" --conns $CONNS $mode \
    --duration "$secs" --json >"$tmp/client.out" 2>"$tmp/client.err" || true
  local after; after=$(cpu_ticks "$SPID" || echo "$before")
  stop_server
  json=$(tail -1 "$tmp/client.out")
  [ -n "$json" ] || json="{\"failed\": \"$(tail -1 "$tmp/client.err" | tr -d '"\\')\"}"
  printf '%s,%s,%s,%s,%s,%s,%s,%s\n' "$kind" "$round" "$group" "$server" "$fraction" "$rate" \
    "$(python3 -c 'import csv,sys; csv.writer(sys.stdout, lineterminator="").writerow([sys.argv[1]])' "$json")" \
    "$(awk -v t=$((after - before)) -v hz="$HZ" 'BEGIN{print t/hz}')" >>"$runs"
  python3 -c '
import json, sys
j = json.loads(sys.argv[1]); l = j.get("latency_us", {}); s = j.get("lateness_us", {})
print("[latency] %-5s %-13s %10.0f/s  p50 %s  p99 %s  p99.9 %s  own lateness p99 %s  errors %s" % (
    sys.argv[2], sys.argv[3], j.get("msgs_per_s", 0), l.get("p50"), l.get("p99"), l.get("p999"), s.get("p99"), j.get("errors")),
    file=sys.stderr)
' "$json" "$kind" "$server" || log "$server: $json"
}

# ---------------------------------------------------------------- peaks
declare -A PEAK
for group in $GROUPS_; do
  for round in $(seq "$ROUNDS"); do
    for server in $(servers_of "$group"); do
      run_one peak "$round" "$group" "$server" 1 - "$PEAK_DURATION"
    done
  done
done
peaks=$(python3 - "$runs" <<'PY'
import csv, json, statistics, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["kind"] == "peak"]
by = {}
for r in rows:
    try:
        by.setdefault((r["group"], r["server"]), []).append(json.loads(r["json"])["msgs_per_s"])
    except Exception:
        pass
groups = {}
for (g, s), v in by.items():
    groups.setdefault(g, []).append(statistics.median(v))
for g, v in groups.items():
    print(g, int(min(v)))
PY
)
while read -r group peak; do [ -n "$group" ] && PEAK[$group]=$peak; done <<<"$peaks"

# ---------------------------------------------------------------- open loop
for group in $GROUPS_; do
  [ -n "${PEAK[$group]:-}" ] || { log "no peak for $group: skipped"; continue; }
  for fraction in $FRACTIONS; do
    rate=$(awk -v p="${PEAK[$group]}" -v f="$fraction" 'BEGIN{printf "%d", p * f}')
    log "$group at $fraction of the lowest peak ${PEAK[$group]}/s: $rate req/s"
    for round in $(seq "$ROUNDS"); do
      for server in $(servers_of "$group"); do
        run_one open "$round" "$group" "$server" "$fraction" "$rate" "$DURATION"
      done
    done
  done
done

# ---------------------------------------------------------------- report
PYTHONPATH="$bench" python3 - "$runs" "$tmp/section.md" "$ROUNDS" "$DURATION" "$PEAK_DURATION" <<'PY'
import platform, subprocess, sys, datetime
from report import cpu_model, fmt, load_runs, med
runs, out, rounds, duration, peak_duration = sys.argv[1:6]
rows = load_runs(runs, "json")
def ok(r):
    return r["j"].get("messages") and not r["j"].get("errors")
LABEL = {"echo": "echo 64 B (netloop load echo)", "http": "HTTP hello, GET / (netloop load http)",
         "kv": "RESP SET/GET pairs (netloop load resp)"}
PEER = {"echo": ["mio-echo", "tokio-echo"], "http": ["nginx"], "kv": ["redis-server"]}
cpu = cpu_model()
kernel = platform.release()
lines = []
p = lines.append
p("## Open-loop tail latency at a fixed offered rate (bench/latency.sh)")
p("")
p(f"Machine: {cpu}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} CPUs, Linux {kernel}; "
  f"server on CPU 0, client on CPU 1, one thread each. {rounds} interleaved rounds; medians. "
  f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by `bench/latency.sh {rounds} {duration}` "
  f"(peak runs {peak_duration} s).")
p("")
p("Peak: `netloop load W --target ADDR --conns 50 --depth 1 --duration "
  f"{peak_duration} --json` (closed loop). Open loop: `netloop load W --target ADDR --conns 50 --rate R --duration {duration} --json`, "
  "R = 50 % and 90 % of the lowest peak of the group, so every server of a group is offered the same rate. "
  "Latency is measured from each request's intended send time. *Client lateness* is how late the client itself sent "
  "(actual against intended send time; the client waits with `epoll_pwait2` to the nanosecond and a 1 ns timer slack).")
p("")
p("| workload | server | peak req/s (closed loop) |")
p("|---|---|---:|")
for g in ["echo", "http", "kv"]:
    for s in [s for s in dict.fromkeys(r["server"] for r in rows if r["group"] == g)]:
        v = med([r["j"].get("msgs_per_s") for r in rows if r["kind"] == "peak" and r["group"] == g and r["server"] == s and ok(r)])
        p(f"| {LABEL[g]} | {s} | {fmt(v)} |")
p("")
p("| workload | offered | server | achieved req/s | p50 µs | p99 µs | p99.9 µs | client lateness p50 / p99 µs | server CPU util | netloop p99 ÷ this p99 |")
p("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
verdicts = []
for g in ["echo", "http", "kv"]:
    fr = sorted({r["fraction"] for r in rows if r["kind"] == "open" and r["group"] == g}, key=float)
    for f in fr:
        sel = [r for r in rows if r["kind"] == "open" and r["group"] == g and r["fraction"] == f]
        rate = sel[0]["offered"] if sel else "?"
        servers = list(dict.fromkeys(r["server"] for r in sel))
        stat = {}
        for s in servers:
            rs = [r for r in sel if r["server"] == s and ok(r)]
            q = lambda k, sub="latency_us": med([r["j"].get(sub, {}).get(k) for r in rs])
            stat[s] = dict(n=len(rs), rate=med([r["j"].get("msgs_per_s") for r in rs]), p50=q("p50"), p99=q("p99"),
                           p999=q("p999"), l50=q("p50", "lateness_us"), l99=q("p99", "lateness_us"),
                           util=med([float(r["cpu_s"]) / float(duration) for r in rs if r["cpu_s"]]),
                           failed=len([r for r in sel if r["server"] == s]) - len(rs))
        nl = next((s for s in servers if s.startswith("netloop")), None)
        for s in servers:
            st = stat[s]
            ratio = stat[nl]["p99"] / st["p99"] if nl and st["p99"] and stat[nl]["p99"] and s != nl else None
            note = f" ({st['failed']} failed runs)" if st["failed"] else ""
            p(f"| {LABEL[g].split(' (')[0]} | {int(float(f) * 100)} %: {int(rate):,}/s | {s}{note} | {fmt(st['rate'])} | "
              f"{fmt(st['p50'], 1)} | {fmt(st['p99'], 1)} | {fmt(st['p999'], 1)} | {fmt(st['l50'], 1)} / {fmt(st['l99'], 1)} | "
              f"{fmt(st['util'] * 100 if st['util'] is not None else None)} % | {fmt(ratio, 2) if ratio else ''} |")
            if ratio is not None:
                verdicts.append((g, f, s, ratio, stat[nl]["p99"], st["p99"]))
p("")
p("Target: netloop's p99 no higher than each peer's at the same offered rate.")
p("")
for g, f, s, ratio, a, b in verdicts:
    word = "met" if ratio <= 1.0 else "missed"
    p(f"- {LABEL[g].split(' (')[0]} at {int(float(f) * 100)} %: netloop p99 {a:,.1f} µs against {s} {b:,.1f} µs "
      f"({ratio:.2f}×): **{word}**")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
NOTES_FILE=${NOTES_FILE:-$bench/latency-notes.md}
if [ -f "$NOTES_FILE" ]; then
  { echo; cat "$NOTES_FILE"; } >>"$tmp/section.md"
fi
replace_section "$bench/RESULTS.md" latency.sh "$tmp/section.md"
log "wrote $runs and the latency.sh section of $bench/RESULTS.md"
