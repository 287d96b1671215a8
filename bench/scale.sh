#!/usr/bin/env bash
# 100,000 concurrent connections to one server thread (issue 11, row 5):
#
#   echo   netloop echo (--idle-timeout armed) | mio-echo | tokio-echo
#   HTTP   netloop http (--idle-timeout armed) | nginx (worker_connections raised)
#
# For each server, in interleaved rounds:
#   idle   N connections (1 active at 10 req/s, N-1 idle: each makes one
#          exchange when it opens, then stays silent), opened 256 at a time
#          from the --sources addresses: the time to open them all, and the
#          server's VmRSS with all open minus its VmRSS before, per
#          connection (user space: the kernel's socket memory is not in RSS).
#   alone  ACTIVE connections, closed loop at depth 1: requests/s.
#   crowd  the same ACTIVE connections while N-ACTIVE others sit idle.
# Then, netloop echo only:
#   timers   one more crowd run under `perf record` and `perf stat`: the
#            share of the server's samples in its timer code, and that
#            share's time per loop turn (turns = epoll waits).
#   arming   echo 64 B, depth 1, 50 connections, with --idle-timeout 60
#            and without, interleaved: ops per server CPU-second.
#
# Server on CPU 0, client (`netloop load`, one thread) on CPU 1. Needs
# root (or a hard RLIMIT_NOFILE above 2 N) to raise the open-files limit.
#
# Writes bench/scale-runs.csv and the section between
# "<!-- scale.sh: begin -->" and "<!-- scale.sh: end -->" of
# bench/RESULTS.md (appended after the proxy section the first time).
#
# usage: bench/scale.sh [ROUNDS] [DURATION]
#   ROUNDS        interleaved rounds (default 3)
#   DURATION      seconds per measured run (default 3)
#   N             connections in all (default 100000)
#   ACTIVE        active connections (default 1000)
#   SOURCES       client source addresses (default 127.0.0.2-127.0.0.9)
#   IDLE_TIMEOUT  netloop's --idle-timeout, seconds (default 300)
#   SCALE_SERVERS servers (default "netloop-echo mio-echo tokio-echo netloop-http nginx")
#   ARMING_ROUNDS rounds of the arming comparison (default 7: its 2 % target
#                 is below the round-to-round noise of 3 rounds)
#   SKIP_TIMERS=1, SKIP_ARMING=1 leave those parts out
set -euo pipefail

bench=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$bench")
ROUNDS=${1:-${ROUNDS:-3}}
DURATION=${2:-${DURATION:-3}}
N=${N:-100000}
ACTIVE=${ACTIVE:-1000}
SOURCES=${SOURCES:-127.0.0.2-127.0.0.9}
IDLE_TIMEOUT=${IDLE_TIMEOUT:-300}
SERVERS=${SCALE_SERVERS:-"netloop-echo mio-echo tokio-echo netloop-http nginx"}
SKIP_TIMERS=${SKIP_TIMERS:-0}
SKIP_ARMING=${SKIP_ARMING:-0}
ARMING_ROUNDS=${ARMING_ROUNDS:-7}

# shellcheck source=bench/servers.sh
. "$bench/servers.sh"

[ "$(nproc)" -ge 2 ] || die "needs at least 2 CPUs"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$root/target/release/netloop" ] || die "build first: cargo build --release -p netloop-cli"
PEERS=$bench/target/release

# ---------------------------------------------------------------- limits
# Server and client each hold N descriptors (plus a few): each needs a limit above N.
N_WANTED=$N
need_fds=$((N + 1000))
nr_open=$(cat /proc/sys/fs/nr_open)
[ "$nr_open" -ge "$need_fds" ] || die "fs.nr_open $nr_open < $need_fds: sysctl -w fs.nr_open=$need_fds"
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$need_fds" ]; then
  if ! ulimit -Hn "$need_fds" 2>/dev/null; then
    # Raising the hard limit needs CAP_SYS_RESOURCE; without it, run as many
    # connections as the limit allows and say so in the report.
    N=$(( $(ulimit -Hn) - 1000 ))
    log "cannot raise the hard RLIMIT_NOFILE $(ulimit -Hn) to $need_fds (no CAP_SYS_RESOURCE): N=$N instead of $N_WANTED"
    need_fds=$(ulimit -Hn)
  fi
fi
ulimit -n "$need_fds"
[ "$ACTIVE" -lt "$N" ] || die "ACTIVE=$ACTIVE must be below N=$N"
log "RLIMIT_NOFILE $(ulimit -n); fs.nr_open $nr_open; ports $(cat /proc/sys/net/ipv4/ip_local_port_range | tr '\t' -); somaxconn $(cat /proc/sys/net/core/somaxconn)"

tmp=$(mktemp -d /tmp/netloop-scale.XXXXXX)
cp "$root/target/release/netloop" "$tmp/netloop"
NETLOOP=$tmp/netloop
HZ=$(getconf CLK_TCK)
export RUST_LOG=${RUST_LOG:-warn}
# nginx starts closing idle keep-alive connections ("worker_connections are
# not enough, reusing connections") well before worker_connections is reached.
NGINX_CONNS=$((N * 2))
SPID="" LPID=""
cleanup() {
  if [ -n "$LPID" ]; then kill -KILL "$LPID" 2>/dev/null || true; fi
  if [ -n "$SPID" ]; then kill -KILL "$SPID" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

runs=$bench/scale-runs.csv
echo "kind,round,server,rss_before_kib,rss_kib,conns_seen,cpu_s,json" >"$runs"

workload_of() { case $1 in *echo) echo "echo --size 64" ;; *) echo http ;; esac; }
extra_of() {
  case $1 in
    netloop-*) echo "--idle-timeout $IDLE_TIMEOUT --max-connections $((N + 1000))" ;;
    *) echo "" ;;
  esac
}
fd_count() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }

# run_case KIND ROUND SERVER: one run, one row of scale-runs.csv.
run_case() {
  local kind=$1 round=$2 server=$3 mode rss0 rss1="" seen=0 json
  SERVER_EXTRA_ARGS=$(extra_of "$server")
  if ! start_server "$server"; then stop_server; echo "$kind,$round,$server,,,,,\"{}\"" >>"$runs"; return 0; fi
  case $kind in
    idle) mode="--conns 1 --idle-conns $((N - 1)) --rate 10" ;;
    alone) mode="--conns $ACTIVE --depth 1" ;;
    crowd | timers) mode="--conns $ACTIVE --idle-conns $((N - ACTIVE)) --depth 1" ;;
  esac
  sleep 0.2
  rss0=$(rss_kib "$SPID")
  local before; before=$(cpu_ticks "$SPID")
  # shellcheck disable=SC2046,SC2086
  taskset -c "$CLIENT_CPU" "$NETLOOP" load $(workload_of "$server") --target "$SADDR" $mode \
    --sources "$SOURCES" --duration "$DURATION" --json >"$tmp/client.out" 2>"$tmp/client.err" &
  LPID=$!
  if [ "$kind" = idle ] || [ "$kind" = timers ]; then
    # Wait until the server holds them all (or the client is done).
    while kill -0 "$LPID" 2>/dev/null; do
      seen=$(fd_count "$SPID")
      [ "$seen" -ge "$N" ] && break
      sleep 0.2
    done
    sleep 0.5
    seen=$(fd_count "$SPID")
    rss1=$(rss_kib "$SPID")
    if [ "$kind" = timers ]; then
      sleep 0.3
      local secs; secs=$(awk -v d="$DURATION" 'BEGIN{print d - 1.2}')
      perf stat -e 'syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_pwait2' -x, -o "$tmp/perf-stat.txt" \
        -p "$SPID" -- sleep "$secs" 2>/dev/null &
      local statpid=$!
      perf record -F 4999 -g -o "$tmp/perf.data" -p "$SPID" -- sleep "$secs" >/dev/null 2>&1 || true
      wait "$statpid" || true
    fi
  fi
  wait "$LPID" || true
  LPID=""
  local after; after=$(cpu_ticks "$SPID" || echo "$before")
  stop_server
  json=$(tail -1 "$tmp/client.out")
  [ -n "$json" ] || json="{\"failed\": \"$(tail -1 "$tmp/client.err" | tr -d '"\\')\"}"
  printf '%s,%s,%s,%s,%s,%s,%s,%s\n' "$kind" "$round" "$server" "$rss0" "$rss1" "$seen" \
    "$(awk -v t=$((after - before)) -v hz="$HZ" 'BEGIN{print t/hz}')" \
    "$(python3 -c 'import csv,sys; csv.writer(sys.stdout, lineterminator="").writerow([sys.argv[1]])' "$json")" >>"$runs"
  python3 -c '
import json, sys
j = json.loads(sys.argv[1])
rss = "  rss %d KiB for %s fds" % (int(sys.argv[4]) - int(sys.argv[3]), sys.argv[5]) if sys.argv[4] else ""
print("[scale] %-22s %10.0f/s  opened %s in %s s  errors %s%s" % (
    sys.argv[2], j.get("msgs_per_s", 0), j.get("opened"), j.get("open_s"), j.get("errors"), rss), file=sys.stderr)
' "$json" "$kind $server" "$rss0" "$rss1" "$seen" || log "$server: $json"
}

for round in $(seq "$ROUNDS"); do
  for server in $SERVERS; do
    for kind in idle alone crowd; do
      run_case "$kind" "$round" "$server"
    done
  done
done

# ---------------------------------------------------------------- timers
: >"$tmp/timers.txt"
if [ "$SKIP_TIMERS" != 1 ] && command -v perf >/dev/null; then
  run_case timers 1 netloop-echo
  if [ -s "$tmp/perf.data" ]; then
    perf report -i "$tmp/perf.data" --no-children --sort symbol --stdio 2>/dev/null \
      | grep -E '^ +[0-9.]+%' >"$tmp/timers.txt" || true
    cp "$tmp/perf-stat.txt" "$tmp/timers-stat.txt" 2>/dev/null || true
  fi
fi

# ---------------------------------------------------------------- arming
if [ "$SKIP_ARMING" != 1 ]; then
  for round in $(seq "$ARMING_ROUNDS"); do
    for variant in without with; do
      if [ "$variant" = with ]; then SERVER_EXTRA_ARGS="--idle-timeout 60"; else SERVER_EXTRA_ARGS=""; fi
      start_server netloop-echo || { stop_server; continue; }
      before=$(cpu_ticks "$SPID")
      taskset -c "$CLIENT_CPU" "$NETLOOP" load echo --size 64 --target "$SADDR" --conns 50 --depth 1 \
        --duration "$DURATION" --json >"$tmp/client.out" 2>"$tmp/client.err" || true
      after=$(cpu_ticks "$SPID" || echo "$before")
      stop_server
      json=$(tail -1 "$tmp/client.out")
      printf '%s,%s,%s,,,,%s,%s\n' "arming-$variant" "$round" netloop-echo \
        "$(awk -v t=$((after - before)) -v hz="$HZ" 'BEGIN{print t/hz}')" \
        "$(python3 -c 'import csv,sys; csv.writer(sys.stdout, lineterminator="").writerow([sys.argv[1]])' "${json:-{\}}")" >>"$runs"
      log "arming $variant r$round: $(echo "$json" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("msgs_per_s"))' 2>/dev/null)"
    done
  done
fi

# ---------------------------------------------------------------- report
PYTHONPATH="$bench" python3 - "$runs" "$tmp/section.md" "$tmp/timers.txt" "$tmp/timers-stat.txt" "$ROUNDS" "$DURATION" "$N" "$ACTIVE" \
  "$SOURCES" "$IDLE_TIMEOUT" "$(ulimit -n)" "$N_WANTED" <<'PY'
import os, platform, sys, datetime
from report import cpu_model, fmt, load_runs, med
runs, out, timers, timer_stat, rounds, duration, n, active, sources, idle_timeout, nofile, n_wanted = sys.argv[1:13]
n_wanted = int(n_wanted)
n, active, duration = int(n), int(active), float(duration)
rows = load_runs(runs, "json")
def num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None
cpu = cpu_model()
L = []
p = L.append
p("## 100,000 connections to one loop (bench/scale.sh)")
p("")
if int(n) < n_wanted:
    p(f"**Run with N={int(n):,}, not {n_wanted:,}**: on this machine the hard RLIMIT_NOFILE is {nofile} and the "
      "sandbox lacks CAP_SYS_RESOURCE, so no process (not even root) may hold more descriptors; one server "
      f"loop can hold at most that many connections here. On a machine where `ulimit -Hn` can be raised the same "
      f"command runs {n_wanted:,}.")
    p("")
p(f"Machine: {cpu}, {os.cpu_count()} CPUs, Linux {platform.release()}; server on CPU 0, client on CPU 1, one thread each. "
  f"{rounds} interleaved rounds, medians. Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by "
  f"`bench/scale.sh {rounds} {int(duration)}` (N={n:,}, ACTIVE={active:,}, sources {sources}, RLIMIT_NOFILE {nofile}).")
p("")
p(f"- **idle**: `netloop load W --target ADDR --conns 1 --idle-conns {n - 1} --rate 10 --sources {sources} --duration {int(duration)} --json`: "
  "every connection makes one exchange when it opens, then stays silent; at most 256 connects in flight. "
  "*Open time* is the client's time to open all of them; *RSS per connection* is (server VmRSS with all open − VmRSS before) / connections the server holds.")
p(f"- **alone**: `--conns {active} --depth 1`; **crowd**: `--conns {active} --idle-conns {n - active} --depth 1` (the active ones start once all are open). "
  "W is `echo --size 64` for the echo servers, `http` (GET /) for netloop http and nginx.")
p(f"- netloop servers run with `--threads 1 --idle-timeout {idle_timeout} --max-connections {n + 1000}` (an idle timer armed on every connection); "
  f"nginx with `worker_connections {2 * n}` (at N + 1,000 it closes idle connections: \"worker_connections are not enough, reusing connections\").")
p("")
p("| server | connections held | open time s | RSS per connection, bytes | req/s, active alone | req/s, active among idle | crowd ÷ alone |")
p("|---|---:|---:|---:|---:|---:|---:|")
verdict = {}
servers = list(dict.fromkeys(r["server"] for r in rows if r["kind"] in ("idle", "alone", "crowd")))
for s in servers:
    idle = [r for r in rows if r["kind"] == "idle" and r["server"] == s and r["rss_kib"]]
    per = med([(int(r["rss_kib"]) - int(r["rss_before_kib"])) * 1024 / max(int(r["conns_seen"]) - 5, 1) for r in idle])
    held = med([int(r["conns_seen"]) for r in idle])
    opent = med([r["j"].get("open_s") for r in idle if r["j"].get("opened")])
    ok = lambda r: r["j"].get("messages") and not r["j"].get("errors")
    alone = med([r["j"].get("msgs_per_s") for r in rows if r["kind"] == "alone" and r["server"] == s and ok(r)])
    crowd = med([r["j"].get("msgs_per_s") for r in rows if r["kind"] == "crowd" and r["server"] == s and ok(r)])
    ratio = crowd / alone if crowd and alone else None
    errs = sum(int(r["j"].get("errors") or 0) for r in rows if r["server"] == s)
    note = f" ({errs} client errors)" if errs else ""
    p(f"| {s}{note} | {fmt(held)} | {fmt(opent, 2)} | {fmt(per)} | {fmt(alone)} | {fmt(crowd)} | {fmt(ratio, 2)} |")
    verdict[s] = (per, ratio)
p("")
p("RSS is user space only (the kernel's socket buffers and structures are not in VmRSS); connections held counts the server's open descriptors (N plus its listener, epoll and the like).")
p("")
# Timers.
tl = open(timers).read().splitlines() if os.path.exists(timers) else []
keys = ("netloop::timer", "Timers", "timeouts", "expire_timers", "idle_check", "next_deadline", "wait_timeout", "arm_idle_timer", "BTreeMap", "btree")
hits = [l for l in tl if any(k in l for k in keys)]
share = sum(float(l.split("%")[0]) for l in hits)
turns = None
if os.path.exists(timer_stat):
    for line in open(timer_stat):
        f = line.split(",")
        if len(f) > 2 and "sys_enter_epoll" in f[2] and f[0].strip().isdigit():
            turns = (turns or 0) + int(f[0])
trow = [r for r in rows if r["kind"] == "timers"]
if tl:
    secs = duration - 1.2
    p(f"**Timers' cost per turn** (netloop echo, {active:,} active among {n - active:,} idle, each with an idle timer): "
      f"`perf record -F 4999 -g -p SERVER_PID -- sleep {secs:.1f}` and `perf stat -e syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_pwait2 -p SERVER_PID`, "
      f"then `perf report --no-children --sort symbol`. Symbols of the timer path ({', '.join(keys)}): **{share:.2f} %** of the server's samples.")
    if turns:
        # The server's CPU is near 100 % under this load; the share of the window's wall time, per turn.
        ns = share / 100 * secs * 1e9 / turns
        p(f"{turns:,} turns (epoll waits) in {secs:.1f} s: about **{ns:,.0f} ns of timer work per turn** (share × window ÷ turns, the server's CPU being near 100 %).")
    p("")
    p("| self % | symbol |")
    p("|---:|---|")
    for l in (hits or [])[:8]:
        pct, sym = l.split("%", 1)
        p(f"| {pct.strip()} | `{sym.split('] ', 1)[-1].strip()[:110]}` |")
    if not hits:
        p("| — | no timer symbol among the sampled ones |")
    p("")
    p("Top entries of the same profile:")
    p("")
    p("| self % | symbol |")
    p("|---:|---|")
    for l in tl[:8]:
        pct, sym = l.split("%", 1)
        p(f"| {pct.strip()} | `{sym.split('] ', 1)[-1].strip()[:110]}` |")
    p("")
# Arming.
arm = {}
for v in ("without", "with"):
    rs = [r for r in rows if r["kind"] == f"arming-{v}" and r["j"].get("messages") and not r["j"].get("errors")]
    ops = med([r["j"]["msgs_per_s"] for r in rs])
    per_cpu = med([r["j"]["messages"] / num(r["cpu_s"]) for r in rs if num(r["cpu_s"])])
    arm[v] = (ops, per_cpu, len(rs))
arm_ratio = None
if arm.get("with", (None,))[0] and arm.get("without", (None,))[0]:
    p(f"**Arming idle timeouts** (echo 64 B, depth 1, 50 connections; `netloop echo --threads 1 [--idle-timeout 60]`, "
      f"client `netloop load echo --size 64 --conns 50 --depth 1 --duration {int(duration)}`):")
    p("")
    p("| server | runs | req/s | req per server CPU-s |")
    p("|---|---:|---:|---:|")
    for v in ("without", "with"):
        ops, per_cpu, k = arm[v]
        p(f"| netloop echo, {v} --idle-timeout | {k} | {fmt(ops)} | {fmt(per_cpu)} |")
    arm_ratio = arm["with"][1] / arm["without"][1] if arm["with"][1] and arm["without"][1] else None
    p("")
    p(f"with ÷ without: {fmt(arm_ratio, 3)} per server CPU-second, {arm['with'][0] / arm['without'][0]:.3f} in req/s.")
    p("")
p("Targets:")
p("")
per, ratio = verdict.get("netloop-echo", (None, None))
if per is not None:
    p(f"- at most 250 B per idle connection in user space: netloop echo {per:,.0f} B: **{'met' if per <= 250 else 'missed'}**"
      + "".join(f"; {s} {v[0]:,.0f} B" for s, v in verdict.items() if s != "netloop-echo" and v[0] is not None))
if ratio is not None:
    p(f"- the active {active:,} at least 0.9× their throughput without the idle crowd: netloop echo {ratio:.2f}×: "
      f"**{'met' if ratio >= 0.9 else 'missed'}**"
      + "".join(f"; {s} {v[1]:.2f}×" for s, v in verdict.items() if s != "netloop-echo" and v[1] is not None))
if arm_ratio is not None:
    p(f"- arming and re-arming idle timeouts costs at most 2 % at depth 1: {(1 - arm_ratio) * 100:+.1f} % per server CPU-second "
      f"(negative: none measurable): **{'met' if arm_ratio >= 0.98 else 'missed'}**")
open(out, "w").write("\n".join(L) + "\n")
print("\n".join(L))
PY
NOTES_FILE=${NOTES_FILE:-$bench/scale-notes.md}
if [ -f "$NOTES_FILE" ]; then
  { echo; cat "$NOTES_FILE"; } >>"$tmp/section.md"
fi
replace_section "$bench/RESULTS.md" scale.sh "$tmp/section.md"
log "wrote $runs and the scale.sh section of $bench/RESULTS.md"
