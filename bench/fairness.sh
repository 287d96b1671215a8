#!/usr/bin/env bash
# Fairness (issue 11, row 3): 50 light request/response clients at depth 1,
# with and without one heavy connection moving bytes as fast as it can.
#
#   echo 64 B    netloop echo | mio-echo | tokio-echo
#                heavy: `netloop load stream --read-back` (64 KiB writes,
#                everything echoed back and read)
#   HTTP hello   netloop http --large-body 1 MiB | nginx (a 1 MiB static
#                file, sendfile on)
#                heavy: `wrk -t1 -c1` fetching GET /large in a loop
#
# The light clients' p99 is the figure: with the heavy flow beside them it
# should stay within 2x of its value alone. The heavy flow's own rate is
# reported too, since a server that starved it would pass trivially.
#
# Server on CPU 0, clients on CPU 1 (taskset), one thread each. Both
# clients share CPU 1, so the heavy client runs at nice 19: the light
# client gets the CPU whenever it wants it, and the heavy one takes the
# rest (it still saturates the server, see its MB/s). Rounds interleaved
# (every server and case once per round), medians of the rounds reported.
#
# Writes bench/fairness-runs.csv (every run) and the section between
# "<!-- fairness.sh: begin -->" and "<!-- fairness.sh: end -->" in
# bench/RESULTS.md.
#
# usage: bench/fairness.sh [ROUNDS] [DURATION]
#   ROUNDS      interleaved rounds (default 3)
#   DURATION    seconds of the light clients' run (default 4)
#   LARGE       bytes of the HTTP heavy flow's response (default 1048576)
#   FAIR_GROUPS which groups (default "echo http")
set -euo pipefail

bench=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$bench")
ROUNDS=${1:-${ROUNDS:-3}}
DURATION=${2:-${DURATION:-4}}
LARGE=${LARGE:-1048576}
GROUPS_=${FAIR_GROUPS:-"echo http"}
CONNS=50

# shellcheck source=bench/servers.sh
. "$bench/servers.sh"

[ "$(nproc)" -ge 2 ] || die "needs at least 2 CPUs"
for t in wrk taskset python3; do command -v "$t" >/dev/null || die "missing $t (bench/compare.sh installs the peers)"; done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || die "missing nginx (bench/compare.sh installs the peers)"
[ -x "$root/target/release/netloop" ] || die "build first: cargo build --release -p netloop-cli"
PEERS=$bench/target/release
for b in mio-echo tokio-echo; do [ -x "$PEERS/$b" ] || die "build the peers first: (cd bench && cargo build --release)"; done

tmp=$(mktemp -d /tmp/netloop-fairness.XXXXXX)
cp "$root/target/release/netloop" "$tmp/netloop"
NETLOOP=$tmp/netloop
export RUST_LOG=${RUST_LOG:-warn}
SPID="" HPID=""
cleanup() {
  if [ -n "$HPID" ]; then kill -KILL "$HPID" 2>/dev/null || true; fi
  if [ -n "$SPID" ]; then kill -KILL "$SPID" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

servers_of() {
  case $1 in
    echo) echo "netloop-echo mio-echo tokio-echo" ;;
    http) echo "netloop-http nginx" ;;
  esac
}
light_of() { case $1 in echo) echo "echo --size 64" ;; http) echo http ;; esac; }
# heavy_cmd GROUP ADDR SECONDS -> the heavy client's command line
heavy_cmd() {
  case $1 in
    echo) echo "$NETLOOP load stream --target $2 --conns 1 --chunk 65536 --read-back --duration $3 --json" ;;
    http) echo "wrk -t1 -c1 -d${3}s http://$2/large" ;;
  esac
}

runs=$bench/fairness-runs.csv
echo "round,group,server,case,light_json,heavy_mb_s,heavy_note" >"$runs"

# run_one ROUND GROUP SERVER CASE(alone|heavy)
run_one() {
  local round=$1 group=$2 server=$3 case=$4 json heavy_mb="" heavy_note=""
  SERVER_EXTRA_ARGS=""
  [ "$group" = http ] && SERVER_EXTRA_ARGS="--large-body $LARGE"
  if ! start_server "$server"; then
    stop_server
    echo "$round,$group,$server,$case,,,server did not start" >>"$runs"
    return 0
  fi
  [ "$server" = nginx ] && head -c "$LARGE" /dev/urandom >"$tmp/nginx/large"
  if [ "$case" = heavy ]; then
    # The heavy flow starts first and outlasts the light run by a second
    # on each side, so the light clients see it all the time.
    # shellcheck disable=SC2046
    nice -n 19 taskset -c "$CLIENT_CPU" $(heavy_cmd "$group" "$SADDR" $((DURATION + 2))) \
      >"$tmp/heavy.out" 2>"$tmp/heavy.err" &
    HPID=$!
    sleep 1
  fi
  # shellcheck disable=SC2046,SC2086
  taskset -c "$CLIENT_CPU" "$NETLOOP" load $(light_of "$group") --target "$SADDR" --conns $CONNS --depth 1 \
    --duration "$DURATION" --json >"$tmp/client.out" 2>"$tmp/client.err" || true
  if [ -n "$HPID" ]; then
    wait "$HPID" || heavy_note="heavy client exit $?"
    HPID=""
    heavy_mb=$(python3 - "$group" "$tmp/heavy.out" <<'PY'
import json, re, sys
group, path = sys.argv[1:3]
text = open(path).read()
try:
    if group == "echo":
        print(f"{json.loads(text.strip().splitlines()[-1])['received_per_s'] / 1e6:.1f}")
    else:
        m = re.search(r"Transfer/sec:\s+([\d.]+)(B|KB|MB|GB)", text)
        print(f"{float(m.group(1)) * {'B': 1, 'KB': 1024, 'MB': 1024**2, 'GB': 1024**3}[m.group(2)] / 1e6:.1f}")
except Exception:
    print("")
PY
)
    [ -n "$heavy_mb" ] || heavy_note="${heavy_note:+$heavy_note; }no heavy figure: $(tail -c 200 "$tmp/heavy.err" | tr '\n,"' '   ')"
  fi
  stop_server
  json=$(tail -1 "$tmp/client.out")
  [ -n "$json" ] || json="{\"failed\": \"$(tail -1 "$tmp/client.err" | tr -d '"\\')\"}"
  printf '%s,%s,%s,%s,%s,%s,%s\n' "$round" "$group" "$server" "$case" \
    "$(python3 -c 'import csv,sys; csv.writer(sys.stdout, lineterminator="").writerow([sys.argv[1]])' "$json")" \
    "$heavy_mb" "$heavy_note" >>"$runs"
  python3 -c '
import json, sys
j = json.loads(sys.argv[1]); l = j.get("latency_us", {})
print("[fairness] %-4s %-13s %-5s light %9.0f/s p50 %s p99 %s  heavy %s MB/s %s" % (
    sys.argv[2], sys.argv[3], sys.argv[4], j.get("msgs_per_s", 0), l.get("p50"), l.get("p99"), sys.argv[5] or "-",
    sys.argv[6]), file=sys.stderr)
' "$json" "$group" "$server" "$case" "$heavy_mb" "$heavy_note" || log "$server $case: $json"
}

for round in $(seq "$ROUNDS"); do
  for group in $GROUPS_; do
    for server in $(servers_of "$group"); do
      for case in alone heavy; do
        run_one "$round" "$group" "$server" "$case"
      done
    done
  done
done

# ---------------------------------------------------------------- report
PYTHONPATH="$bench" python3 - "$runs" "$tmp/section.md" "$ROUNDS" "$DURATION" "$LARGE" <<'PY'
import datetime, platform, subprocess, sys
from report import cpu_model, fmt, load_runs, med
runs, out, rounds, duration, large = sys.argv[1:6]
rows = load_runs(runs, "light_json")
def ok(r):
    return bool(r["j"].get("messages")) and not r["j"].get("errors") and not r["heavy_note"]
LABEL = {"echo": "echo 64 B beside a read-back stream", "http": f"HTTP hello beside GET /large ({int(large):,} B)"}
cpu = cpu_model()
nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
lines = []
p = lines.append
p("## Fairness: light clients beside one heavy flow (bench/fairness.sh)")
p("")
p(f"Machine: {cpu}, {nproc} CPUs, Linux {platform.release()}; server on CPU 0, both clients on CPU 1, one "
  f"thread each. {rounds} interleaved rounds; medians. Generated "
  f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by `bench/fairness.sh {rounds} {duration}`.")
p("")
p(f"Light: `netloop load echo --size 64` or `netloop load http`, `--conns 50 --depth 1 --duration {duration} --json`. "
  "Heavy, started a second before and ending a second after, at nice 19 on the same CPU: "
  "`netloop load stream --conns 1 --chunk 65536 --read-back` against the echo servers (64 KiB writes, all of it "
  f"echoed and read back); `wrk -t1 -c1 http://ADDR/large` against `netloop http --large-body {large}` and "
  f"nginx serving a {int(large):,}-byte file with sendfile. *heavy MB/s* is what the heavy client moved (read back, "
  "or wrk's Transfer/sec) over its whole run.")
p("")
p("| workload | server | light req/s alone | with heavy | light p50 µs alone | with heavy | light p99 µs alone | with heavy | p99 with ÷ alone | heavy MB/s |")
p("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
verdicts = []
for g in ["echo", "http"]:
    sel = [r for r in rows if r["group"] == g]
    servers = list(dict.fromkeys(r["server"] for r in sel))
    stat = {}
    for s in servers:
        st = {}
        for c in ["alone", "heavy"]:
            rs = [r for r in sel if r["server"] == s and r["case"] == c and ok(r)]
            st[c] = dict(n=len(rs), rate=med([r["j"].get("msgs_per_s") for r in rs]),
                         p50=med([r["j"].get("latency_us", {}).get("p50") for r in rs]),
                         p99=med([r["j"].get("latency_us", {}).get("p99") for r in rs]),
                         mb=med([float(r["heavy_mb_s"]) for r in rs if r["heavy_mb_s"]]),
                         failed=len([r for r in sel if r["server"] == s and r["case"] == c]) - len(rs))
        a, h = st["alone"], st["heavy"]
        st["ratio"] = h["p99"] / a["p99"] if a["p99"] and h["p99"] else None
        stat[s] = st
        failed = a["failed"] + h["failed"]
        note = f" ({failed} failed runs)" if failed else ""
        p(f"| {g} | {s}{note} | {fmt(a['rate'])} | {fmt(h['rate'])} | {fmt(a['p50'], 1)} | {fmt(h['p50'], 1)} | "
          f"{fmt(a['p99'], 1)} | {fmt(h['p99'], 1)} | {fmt(st['ratio'], 2)} | {fmt(h['mb'])} |")
    nl = next((s for s in servers if s.startswith("netloop")), None)
    if nl and stat[nl]["ratio"] is not None:
        peers = [(s, stat[s]["heavy"]["p99"]) for s in servers if s != nl and stat[s]["heavy"]["p99"]]
        best = min(peers, key=lambda x: x[1]) if peers else None
        verdicts.append((g, nl, stat[nl], best))
p("")
p("Targets: the light clients' p99 with the heavy flow at most 2× its value alone, and no worse than the best peer's.")
p("")
for g, nl, st, best in verdicts:
    r = st["ratio"]
    p(f"- {LABEL[g]}: netloop p99 {st['heavy']['p99']:,.1f} µs with the heavy flow, {st['alone']['p99']:,.1f} µs "
      f"alone ({r:.2f}×): **{'met' if r <= 2.0 else 'missed'}**" + (
          f"; best peer {best[0]} {best[1]:,.1f} µs: **{'met' if st['heavy']['p99'] <= best[1] else 'missed'}**"
          if best else ""))
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
NOTES_FILE=${NOTES_FILE:-$bench/fairness-notes.md}
if [ -f "$NOTES_FILE" ]; then
  { echo; cat "$NOTES_FILE"; } >>"$tmp/section.md"
fi
replace_section "$bench/RESULTS.md" fairness.sh "$tmp/section.md"
log "wrote $runs and the fairness.sh section of $bench/RESULTS.md"
