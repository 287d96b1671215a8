#!/usr/bin/env bash
# netloop side by side with its peers, one server thread each:
#
#   echo 64 B, depth 1 and 16 (netloop load)   netloop echo | mio-echo | tokio-echo
#   HTTP hello, plain and pipelined 16 (wrk)   netloop http | hyper-hello | nginx
#   RESP ping/set/get, -P 1 and -P 16          netloop kv   | redis-server
#   bulk echo 64 KiB and 1 MiB (netloop load)  netloop echo | mio-echo | tokio-echo   (MB per CPU-s)
#   one-way stream to a discard sink           echo --discard of each               (MB per CPU-s)
#   idle RSS with 10,000 connections           netloop echo/http | mio | tokio | hyper | nginx
#   a CPU profile of depth-16 echo             netloop echo | mio-echo | tokio-echo   (perf record)
#
# The server runs on CPU 0, the client on CPU 1 (taskset). Rounds are
# interleaved (A B C A B C ...) and medians reported. For every run: ops/s
# from the client, server CPU seconds (utime+stime from /proc/PID/stat), so
# ops per server CPU-second, and the client's latency percentiles. Syscalls
# per op come from a separate, shorter pass under `perf stat -e
# raw_syscalls:sys_enter -p PID` (strace -c -f if perf cannot), so perf's
# overhead does not touch the throughput figures.
#
# Writes bench/results.csv (medians), bench/results-runs.csv (every run),
# bench/results.svg (chart) and bench/RESULTS.md (keeping the section that
# bench/proxy.sh writes there: netloop proxy vs nginx stream vs HAProxy).
#
# usage: bench/compare.sh [ROUNDS] [DURATION]
#   ROUNDS            interleaved rounds (default 3)
#   DURATION          seconds per measured run (default 5)
#   SYSCALL_DURATION  seconds per run of the syscall pass (default 2)
#   IDLE_CONNS        connections for the idle-RSS test (default 10000)
#   REDIS_N_P1        redis-benchmark -n for -P 1  (default 20000 x DURATION)
#   REDIS_N_P16       redis-benchmark -n for -P 16 (default 300000 x DURATION)
#                     (redis-benchmark runs to n requests per test, four tests: about
#                     DURATION seconds in all at ~90k and ~1.4M requests/s)
#   SKIP_IDLE=1       leave out the idle-RSS test
#   SKIP_PROFILE=1    leave out the profile pass (perf record of depth-16 echo)
#   PROFILE_DURATION  seconds of the profile pass per server (default 5)
#   WORKLOADS         the workloads to run, space-separated (default all:
#                     echo-d1 echo-d16 http http-p16 resp-p1 resp-p16 bulk-64k bulk-1m stream)
#   BEFORE_BIN=PATH   also run this netloop binary (an older build) as the
#                     servers before-echo, before-http and before-kv, in the
#                     same interleaved rounds: a before/after comparison
# All are environment variables; ROUNDS and DURATION may also be arguments.
set -euo pipefail

bench=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$bench")
ROUNDS=${1:-${ROUNDS:-3}}
DURATION=${2:-${DURATION:-5}}
SYSCALL_DURATION=${SYSCALL_DURATION:-2}
IDLE_CONNS=${IDLE_CONNS:-10000}
REDIS_N_P1=${REDIS_N_P1:-$((20000 * DURATION))}
REDIS_N_P16=${REDIS_N_P16:-$((300000 * DURATION))}
SKIP_IDLE=${SKIP_IDLE:-0}
SKIP_PROFILE=${SKIP_PROFILE:-0}
PROFILE_DURATION=${PROFILE_DURATION:-5}
SERVER_CPU=0
CLIENT_CPU=1
CONNS=50

log() { printf '[compare %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(nproc)" -ge 2 ] || die "needs at least 2 CPUs (server on CPU $SERVER_CPU, client on CPU $CLIENT_CPU)"

# ---------------------------------------------------------------- packages
need_pkgs=()
command -v wrk >/dev/null || need_pkgs+=(wrk)
command -v redis-server >/dev/null || need_pkgs+=(redis-server)
command -v redis-benchmark >/dev/null || need_pkgs+=(redis-tools)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_pkgs+=(nginx-light)
command -v perf >/dev/null || command -v strace >/dev/null || need_pkgs+=(linux-perf strace)
command -v python3 >/dev/null || need_pkgs+=(python3)
command -v taskset >/dev/null || need_pkgs+=(util-linux)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  [ "$(id -u)" = 0 ] || die "not root: apt-get install ${need_pkgs[*]} first"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq "${need_pkgs[@]}" >&2
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# ---------------------------------------------------------------- builds
if [ ! -x "$root/target/release/netloop" ]; then
  log "building netloop (release)"
  (cd "$root" && cargo build --release -p netloop-cli -j1) >&2
fi
# Peers and chart: cargo is a no-op when they are up to date.
log "building peers and chart (bench workspace, release)"
(cd "$bench" && cargo build --release -j1 --quiet) >&2
for b in tokio-echo mio-echo hyper-hello chart; do
  [ -x "$bench/target/release/$b" ] || die "missing $bench/target/release/$b"
done

tmp=$(mktemp -d /tmp/netloop-compare.XXXXXX)
# A private copy, so a rebuild of the root workspace during the run changes nothing.
cp "$root/target/release/netloop" "$tmp/netloop"
NETLOOP=$tmp/netloop
BEFORE=""
if [ -n "${BEFORE_BIN:-}" ]; then
  [ -x "$BEFORE_BIN" ] || die "BEFORE_BIN=$BEFORE_BIN is not an executable"
  cp "$BEFORE_BIN" "$tmp/before"
  BEFORE=$tmp/before
fi
PEERS=$bench/target/release
HZ=$(getconf CLK_TCK)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true   # servers and idle_rss.py inherit it
export RUST_LOG=${RUST_LOG:-warn}

SPID="" TRACER=""
cleanup() {
  if [ -n "$TRACER" ]; then kill -INT "$TRACER" 2>/dev/null || true; fi
  if [ -n "$SPID" ]; then kill -KILL "$SPID" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- syscall counter
SYSCALL_TOOL=none
if command -v perf >/dev/null && perf stat -e raw_syscalls:sys_enter -x, -o "$tmp/perfcheck" -- true 2>/dev/null \
   && grep -q '^[0-9]' "$tmp/perfcheck"; then
  SYSCALL_TOOL=perf
elif command -v strace >/dev/null; then
  SYSCALL_TOOL=strace
fi
log "syscall counter: $SYSCALL_TOOL"

# ---------------------------------------------------------------- servers
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # port -> 0 once something accepts on 127.0.0.1:port
  for _ in $(seq 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.02
  done
  return 1
}
cpu_ticks() { # pid -> utime+stime in clock ticks (fields 14 and 15, counted after the "(comm)")
  local stat; stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  echo "${stat##*) }" | awk '{print $12 + $13}'
}

# start_server NAME -> sets SPID and SADDR; the server runs on SERVER_CPU.
start_server() {
  local name=$1 port=""
  : >"$tmp/server.out"
  case $name in
    netloop-echo) taskset -c $SERVER_CPU "$NETLOOP" echo --addr 127.0.0.1:0 --threads 1 >"$tmp/server.out" 2>"$tmp/server.err" & ;;
    netloop-http) taskset -c $SERVER_CPU "$NETLOOP" http --addr 127.0.0.1:0 --threads 1 >"$tmp/server.out" 2>"$tmp/server.err" & ;;
    netloop-kv) taskset -c $SERVER_CPU "$NETLOOP" kv --addr 127.0.0.1:0 --threads 1 >"$tmp/server.out" 2>"$tmp/server.err" & ;;
    netloop-discard) taskset -c $SERVER_CPU "$NETLOOP" echo --discard --addr 127.0.0.1:0 --threads 1 >"$tmp/server.out" 2>"$tmp/server.err" & ;;
    before-discard) taskset -c $SERVER_CPU "$BEFORE" echo --discard --addr 127.0.0.1:0 --threads 1 >"$tmp/server.out" 2>"$tmp/server.err" & ;;
    mio-discard | tokio-discard)
      taskset -c $SERVER_CPU "$PEERS/${name%-discard}-echo" --discard --addr 127.0.0.1:0 --threads 1 >"$tmp/server.out" 2>"$tmp/server.err" & ;;
    before-echo | before-http | before-kv)
      taskset -c $SERVER_CPU "$BEFORE" "${name#before-}" --addr 127.0.0.1:0 --threads 1 >"$tmp/server.out" 2>"$tmp/server.err" & ;;
    mio-echo | tokio-echo | hyper-hello)
      taskset -c $SERVER_CPU "$PEERS/$name" --addr 127.0.0.1:0 --threads 1 >"$tmp/server.out" 2>"$tmp/server.err" & ;;
    nginx)
      port=$(free_port)
      rm -rf "$tmp/nginx" && mkdir -p "$tmp/nginx"
      sed -e "s|@PREFIX@|$tmp/nginx|g" -e "s|@PORT@|$port|g" "$bench/peers/nginx.conf.template" >"$tmp/nginx/nginx.conf"
      taskset -c $SERVER_CPU "$NGINX" -p "$tmp/nginx" -e stderr -c "$tmp/nginx/nginx.conf" >"$tmp/server.out" 2>"$tmp/server.err" & ;;
    redis-server)
      port=$(free_port)
      taskset -c $SERVER_CPU redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --daemonize no \
        >"$tmp/server.out" 2>"$tmp/server.err" & ;;
    *) die "unknown server $name" ;;
  esac
  SPID=$!
  if [ -n "$port" ]; then
    wait_port "$port" || { log "$name did not listen: $(tail -3 "$tmp/server.err")"; return 1; }
    SADDR=127.0.0.1:$port
  else
    for _ in $(seq 250); do [ -s "$tmp/server.out" ] && break; sleep 0.02; done
    SADDR=$(sed -n '1s/^listening on //p' "$tmp/server.out")
    [ -n "$SADDR" ] || { log "$name did not print its address: $(tail -3 "$tmp/server.err")"; return 1; }
  fi
}

stop_server() {
  [ -n "$SPID" ] || return 0
  kill -TERM "$SPID" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.05; done
  kill -KILL "$SPID" 2>/dev/null || true
  wait "$SPID" 2>/dev/null || true
  SPID=""
}

# ---------------------------------------------------------------- workloads
ALL_WORKLOADS="echo-d1 echo-d16 http http-p16 resp-p1 resp-p16 bulk-64k bulk-1m stream"
read -r -a WORKLOADS <<<"${WORKLOADS:-$ALL_WORKLOADS}"
for w in "${WORKLOADS[@]}"; do
  [[ " $ALL_WORKLOADS " == *" $w "* ]] || die "unknown workload $w (known: $ALL_WORKLOADS)"
done
# Bulk messages: 64 KiB and 1 MiB echoed whole, 50 connections at depth 1;
# the stream: 4 connections writing 64 KiB at a time to a server that reads
# and drops (no echo), so the figure is the server's receive path alone.
BULK_CONNS=50
STREAM_CONNS=4
servers_of() {
  local before=""
  case $1 in
    bulk-*) [ -n "$BEFORE" ] && before=" before-echo"; echo "netloop-echo$before mio-echo tokio-echo" ;;
    stream) [ -n "$BEFORE" ] && before=" before-discard"; echo "netloop-discard$before mio-discard tokio-discard" ;;
    echo-*) [ -n "$BEFORE" ] && before=" before-echo"; echo "netloop-echo$before mio-echo tokio-echo" ;;
    http*) [ -n "$BEFORE" ] && before=" before-http"; echo "netloop-http$before hyper-hello nginx" ;;
    resp-*) [ -n "$BEFORE" ] && before=" before-kv"; echo "netloop-kv$before redis-server" ;;
  esac
}

# client_cmd WORKLOAD ADDR SECONDS -> the client command line (runs on CLIENT_CPU)
client_cmd() {
  local w=$1 addr=$2 secs=$3 n
  case $w in
    echo-d1) echo "$NETLOOP load echo --target $addr --conns $CONNS --size 64 --depth 1 --duration $secs --json" ;;
    echo-d16) echo "$NETLOOP load echo --target $addr --conns $CONNS --size 64 --depth 16 --duration $secs --json" ;;
    bulk-64k) echo "$NETLOOP load echo --target $addr --conns $BULK_CONNS --size 65536 --depth 1 --duration $secs --json" ;;
    bulk-1m) echo "$NETLOOP load echo --target $addr --conns $BULK_CONNS --size 1048576 --depth 1 --duration $secs --json" ;;
    stream) echo "$NETLOOP load stream --target $addr --conns $STREAM_CONNS --chunk 65536 --duration $secs --json" ;;
    http) echo "wrk -t1 -c$CONNS -d${secs}s --latency http://$addr/" ;;
    http-p16) echo "wrk -t1 -c$CONNS -d${secs}s --latency -s $bench/pipeline.lua http://$addr/ -- 16" ;;
    resp-p1 | resp-p16)
      local p=${w#resp-p}
      if [ "$p" = 1 ]; then n=$REDIS_N_P1; else n=$REDIS_N_P16; fi
      n=$((n * secs / DURATION))
      echo "redis-benchmark -h ${addr%:*} -p ${addr##*:} -t ping,set,get -c $CONNS -n $n -P $p --csv" ;;
  esac
}
tool_of() { case $1 in echo-* | bulk-*) echo load ;; stream) echo stream ;; http*) echo wrk ;; resp-*) echo redis ;; esac; }

# run_case KIND ROUND WORKLOAD SERVER -> appends a row to runs.csv
#   KIND=measure: DURATION seconds, no tracing
#   KIND=syscalls: SYSCALL_DURATION seconds under perf/strace
run_case() {
  local kind=$1 round=$2 w=$3 s=$4 secs=$DURATION rc=0
  [ "$kind" = syscalls ] && secs=$SYSCALL_DURATION
  if ! start_server "$s"; then
    stop_server
    python3 "$tmp/bench.py" record --kind "$kind" --round "$round" --workload "$w" --server "$s" \
      --tool "$(tool_of "$w")" --failed "server did not start" --runs "$tmp/runs.csv"
    return 0
  fi
  local cmd; cmd=$(client_cmd "$w" "$SADDR" "$secs")
  : >"$tmp/trace.txt"
  if [ "$kind" = syscalls ]; then
    if [ "$SYSCALL_TOOL" = perf ]; then
      taskset -c $CLIENT_CPU perf stat -e raw_syscalls:sys_enter -x, -o "$tmp/trace.txt" -p "$SPID" 2>/dev/null &
    else
      taskset -c $CLIENT_CPU strace -c -f -q -o "$tmp/trace.txt" -p "$SPID" 2>/dev/null &
    fi
    TRACER=$!
    sleep 0.3 # let the tracer attach
  fi
  local before; before=$(cpu_ticks "$SPID")
  local t0; t0=$(date +%s.%N)
  # shellcheck disable=SC2086
  timeout $((secs * 4 + 60)) taskset -c $CLIENT_CPU $cmd >"$tmp/client.out" 2>"$tmp/client.err" || rc=$?
  local t1; t1=$(date +%s.%N)
  local after died=""
  after=$(cpu_ticks "$SPID") || { after=$before; died="server exited during the run"; }
  if [ -n "$TRACER" ]; then
    kill -INT "$TRACER" 2>/dev/null || true
    wait "$TRACER" 2>/dev/null || true
    TRACER=""
  fi
  stop_server
  python3 "$tmp/bench.py" record --kind "$kind" --round "$round" --workload "$w" --server "$s" \
    --tool "$(tool_of "$w")" --client "$tmp/client.out" --client-err "$tmp/client.err" --rc "$rc" --failed "$died" \
    --ticks $((after - before)) --hz "$HZ" --wall "$(echo "$t0 $t1" | awk '{print $2 - $1}')" --trace "$tmp/trace.txt" --trace-tool "$SYSCALL_TOOL" \
    --redis-n "$(echo "$cmd" | sed -n 's/.* -n \([0-9]*\) .*/\1/p')" --runs "$tmp/runs.csv"
}

# ---------------------------------------------------------------- python helper
cat >"$tmp/bench.py" <<'PY'
import argparse, csv, datetime, json, math, os, re, statistics, sys

FIELDS = ["kind", "round", "workload", "server", "ops", "ops_s", "wall_s", "cpu_s", "cpu_util", "ops_per_cpu_s",
          "p50_us", "p90_us", "p99_us", "p999_us", "errors", "syscalls", "syscalls_per_op", "note"]
LABEL = {
    "echo-d1": "echo 64 B, depth 1",
    "echo-d16": "echo 64 B, depth 16",
    "http": "HTTP hello, no pipelining",
    "http-p16": "HTTP hello, pipelined 16",
    "resp-p1": "RESP ping/set/get, -P 1",
    "resp-p16": "RESP ping/set/get, -P 16",
    "bulk-64k": "echo 64 KiB, depth 1 (MB)",
    "bulk-1m": "echo 1 MiB, depth 1 (MB)",
    "stream": "one-way stream to discard (MB)",
}
# Bulk rows count megabytes (10^6 bytes of payload: each echoed message once,
# the stream's bytes sent) where the others count operations.
MB_WORKLOADS = {"bulk-64k", "bulk-1m", "stream"}
SHORT = {"netloop-echo": "netloop", "netloop-http": "netloop", "netloop-kv": "netloop", "netloop-discard": "netloop"}

def parse_load(text):
    j = json.loads(text.strip().splitlines()[-1])
    lat = j.get("latency_us", {})
    return dict(ops=j["messages"], ops_s=j["msgs_per_s"], errors=j.get("errors", 0),
                p50_us=lat.get("p50"), p90_us=lat.get("p90"), p99_us=lat.get("p99"), p999_us=lat.get("p999"))

def parse_load_bulk(text):
    """A bulk echo run in megabytes: `bytes_per_s` counts each echoed message once."""
    j = json.loads(text.strip().splitlines()[-1])
    r = parse_load(text)
    r.update(ops=j["bytes_per_s"] * j["elapsed_s"] / 1e6, ops_s=j["bytes_per_s"] / 1e6)
    return r

def parse_stream(text):
    j = json.loads(text.strip().splitlines()[-1])
    return dict(ops=j["bytes_sent"] / 1e6, ops_s=j["sent_per_s"] / 1e6, errors=j.get("errors", 0),
                p50_us=None, p90_us=None, p99_us=None, p999_us=None)

def wrk_time_us(s):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", s)
    v, u = float(m.group(1)), m.group(2)
    return v * {"us": 1, "ms": 1e3, "s": 1e6, "m": 60e6}[u]

def parse_wrk(text):
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError("no 'requests in' line in wrk output")
    ops = int(m.group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    lat = {p: wrk_time_us(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", text, re.M)}
    errors = 0
    se = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if se:
        errors += sum(int(x) for x in se.groups())
    n2 = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if n2:
        errors += int(n2.group(1))
    return dict(ops=ops, ops_s=rps, errors=errors, p50_us=lat.get("50"), p90_us=lat.get("90"),
                p99_us=lat.get("99"), p999_us=None)

def parse_redis(text, n):
    rows = [r for r in csv.reader(l for l in text.splitlines() if l.startswith('"'))]
    head, rows = rows[0], [r for r in rows[1:] if r]
    idx = {h: i for i, h in enumerate(head)}
    tests = {r[0]: r for r in rows}
    want = ["PING_INLINE", "PING_MBULK", "SET", "GET"]
    missing = [t for t in want if t not in tests]
    if missing:
        raise ValueError(f"redis-benchmark reported no {missing}")
    # Summed: every test sends n requests; the time of each is n / rps.
    secs = sum(n / float(tests[t][idx["rps"]]) for t in want)
    ops = n * len(want)
    worst = lambda col: max(float(tests[t][idx[col]]) * 1000 for t in want) if col in idx else None
    return dict(ops=ops, ops_s=ops / secs, errors=0, p50_us=worst("p50_latency_ms"), p90_us=None,
                p99_us=worst("p99_latency_ms"), p999_us=None)

def parse_trace(path, tool):
    text = open(path).read() if os.path.exists(path) else ""
    if tool == "perf":
        for line in text.splitlines():
            if line and not line.startswith("#"):
                f = line.split(",")
                if len(f) > 2 and "raw_syscalls:sys_enter" in f[2] and f[0].strip().isdigit():
                    return int(f[0])
    elif tool == "strace":
        for line in text.splitlines():
            f = line.split()
            if f and f[-1] == "total":
                return int(f[3])
    return None

def record(a):
    row = dict(kind=a.kind, round=a.round, workload=a.workload, server=a.server, note="")
    try:
        if a.failed:
            raise ValueError(a.failed)
        text = open(a.client).read()
        if a.tool == "load":
            r = parse_load_bulk(text) if a.workload in MB_WORKLOADS else parse_load(text)
        elif a.tool == "stream":
            r = parse_stream(text)
        elif a.tool == "wrk":
            r = parse_wrk(text)
            if a.workload != "http":
                # Pipelined, wrk records one latency per batch and its percentiles come out
                # broken (0.00us from p75 up): report none.
                r.update(p50_us=None, p90_us=None, p99_us=None)
        else:
            r = parse_redis(text, int(a.redis_n))
        row.update(r)
        notes = []
        if a.rc not in (0, None):
            notes.append(f"client exit {a.rc}")
        if r["errors"]:
            notes.append(f"{r['errors']} errors reported by the client")
        if a.tool == "redis" and a.client_err and "error" in open(a.client_err).read().lower():
            notes.append("redis-benchmark printed errors")
        row["note"] = "; ".join(notes)
        cpu = a.ticks / a.hz
        row["cpu_s"] = cpu
        row["wall_s"] = a.wall
        row["cpu_util"] = cpu / a.wall if a.wall else None
        row["ops_per_cpu_s"] = r["ops"] / cpu if cpu > 0 else None
        if a.kind == "syscalls":
            n = parse_trace(a.trace, a.trace_tool)
            row["syscalls"] = n
            row["syscalls_per_op"] = n / r["ops"] if n is not None and r["ops"] else None
    except Exception as e:  # a failed run stays in the record, without figures
        err = ""
        if a.client_err and os.path.exists(a.client_err):
            err = " ".join(open(a.client_err).read().split())[:160]
        row["note"] = f"failed: {e} {err}".strip()
        row["ops"] = row["ops_s"] = row["ops_per_cpu_s"] = None
        print(f"[compare] {a.kind} {a.workload} {a.server}: {row['note']}", file=sys.stderr)
    new = not os.path.exists(a.runs)
    with open(a.runs, "a", newline="") as f:
        w = csv.DictWriter(f, FIELDS, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow(row)
    if row.get("ops_s") is not None:
        extra = f" syscalls/op {row['syscalls_per_op']:.3f}" if row.get("syscalls_per_op") is not None else ""
        print(f"[compare] {a.kind} r{a.round} {a.workload:8s} {a.server:13s} {row['ops_s']:>12,.0f} ops/s "
              f"cpu {row['cpu_s']:.2f}s  {row['ops_per_cpu_s'] or 0:>12,.0f} ops/cpu-s{extra}", file=sys.stderr)

def num(x):
    try:
        v = float(x)
        return v if math.isfinite(v) else None
    except (TypeError, ValueError):
        return None

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

def fmt(v, nd=0):
    if v is None:
        return "—"
    return f"{v:,.{nd}f}"

def report(a):
    runs = list(csv.DictReader(open(a.runs)))
    meta = json.load(open(a.meta))
    idle = [json.loads(l) for l in open(a.idle)] if a.idle and os.path.exists(a.idle) else []
    order = []
    for r in runs:
        key = (r["workload"], r["server"])
        if key not in order:
            order.append(key)
    med_rows = []
    for w, s in order:
        m = [r for r in runs if r["workload"] == w and r["server"] == s and r["kind"] == "measure"]
        sc = [r for r in runs if r["workload"] == w and r["server"] == s and r["kind"] == "syscalls"]
        ok = [r for r in m if num(r["ops_s"]) is not None and not r["note"]]
        row = dict(workload=w, label=LABEL.get(w, w), server=s, runs_ok=len(ok), runs=len(m))
        for k in ["ops_s", "cpu_util", "ops_per_cpu_s", "p50_us", "p90_us", "p99_us", "p999_us"]:
            row[k] = med([num(r[k]) for r in ok])
        row["syscalls_per_op"] = med([num(r["syscalls_per_op"]) for r in sc if not r["note"]])
        row["syscall_run_ops_s"] = med([num(r["ops_s"]) for r in sc if not r["note"]])
        row["notes"] = "; ".join(sorted({r["note"] for r in m + sc if r["note"]}))
        med_rows.append(row)
    for row in med_rows:
        base = next((r for r in med_rows if r["workload"] == row["workload"] and r["server"].startswith("netloop")), None)
        b, v = (base or {}).get("ops_per_cpu_s"), row["ops_per_cpu_s"]
        row["netloop_over_this"] = b / v if b and v else None

    cols = ["workload", "label", "server", "runs_ok", "runs", "ops_s", "cpu_util", "ops_per_cpu_s", "netloop_over_this",
            "p50_us", "p90_us", "p99_us", "p999_us", "syscalls_per_op", "syscall_run_ops_s", "notes"]
    with open(a.csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in med_rows:
            r = dict(r, server=SHORT.get(r["server"], r["server"]))
            w.writerow(["" if r[c] is None else (f"{r[c]:.6g}" if isinstance(r[c], float) else r[c]) for c in cols])

    out = []
    p = out.append
    p("# netloop side by side")
    p("")
    p(f"Produced by `bench/compare.sh` on {meta['date']}. Every figure below comes from that run; "
      "rerun the script to refresh this file, `bench/results.csv` (medians), `bench/results-runs.csv` "
      "(every run) and `bench/results.svg`.")
    p("")
    p("## Machine and software")
    p("")
    for k in ["nproc", "kernel", "cpu", "machine at start", "netloop", "nginx", "redis", "wrk", "perf", "rustc"]:
        p(f"- {k}: {meta[k]}")
    p("")
    p("## Method")
    p("")
    p(f"- One server thread, pinned to CPU {meta['server_cpu']}; the client pinned to CPU {meta['client_cpu']} "
      f"(`taskset -c`). {meta['rounds']} round(s), interleaved (every server of a workload once per round, "
      f"in turn), {meta['duration']} s per run; every figure is the median over the rounds. A fresh server "
      "process for every run.")
    p("- **ops/s**: from the client: `msgs_per_s` of `netloop load`, wrk's Requests/sec, and for "
      "redis-benchmark the sum over its four tests (PING_INLINE, PING_MBULK, SET, GET; `-t ping` runs both "
      "PINGs): 4·n requests divided by the sum of n/rps of each test.")
    p(f"- **server CPU**: utime+stime of the server process (all its threads) from `/proc/PID/stat`, read "
      f"just before the client starts and just after it exits (CLK_TCK = {meta['hz']}); shown as the share "
      "of one core over the client's run (wall time of the client process). **ops per CPU-s** = the client's completed operations ÷ those CPU seconds. "
      "**netloop ÷ this** = netloop's ops per CPU-s over this server's (above 1: netloop does the work "
      "with less CPU).")
    p("- **latency**: `netloop load` per message (µs); wrk `--latency` without pipelining; none for pipelined "
      "HTTP, where wrk records one latency per batch of 16 (when the last response arrives) and prints "
      "broken percentiles (0.00us from p75 up); redis-benchmark: the worst of the four tests' p50 and p99.")
    p("- **MB** (bulk rows): megabytes (10^6 bytes) of payload, each echoed message counted once (`bytes_per_s` "
      "of `netloop load echo`), or the bytes sent by `netloop load stream` to a server started with `--discard` "
      "(it reads and drops). MB per CPU-s is the same ratio as ops per CPU-s, in bytes.")
    p("- Kernel work done outside the server's process context (softirq delivery on the loopback device, "
      "which may run on the client's CPU) is not in the server CPU figures.")
    p("- wrk counts every response of a pipelined batch as one request (its parser completes each), so the "
      "pipelined requests/s are per request, comparable to the plain run.")
    if meta["syscall_tool"] == "perf":
        p(f"- **syscalls/op**: a separate pass after the rounds, one {meta['syscall_duration']} s run per "
          "server and workload under `perf stat -e raw_syscalls:sys_enter -p PID` (all threads of the "
          "server), divided by the client's operations in that run. Tracing costs throughput, so that pass "
          "is kept out of the figures above; its own ops/s are in `results.csv` (`syscall_run_ops_s`).")
    elif meta["syscall_tool"] == "strace":
        p(f"- **syscalls/op**: perf was not usable, so `strace -c -f -p PID` in a separate "
          f"{meta['syscall_duration']} s pass; strace slows the server a lot, so those runs are kept out of "
          "the other figures.")
    else:
        p("- **syscalls/op**: neither perf nor strace was usable; not measured.")
    p("")
    p("Commands (ADDR, PORT, DIR: chosen per run; the binaries are copies of the built ones):")
    p("")
    p("```sh")
    for c in meta["commands"]:
        p(c)
    p("```")
    p("")
    p("## Results")
    p("")
    p("![ops per server CPU-second, median per workload and server](results.svg)")
    p("")
    for w in dict.fromkeys(r["workload"] for r in med_rows):
        rows = [r for r in med_rows if r["workload"] == w]
        resp = w.startswith("resp")
        p(f"### {LABEL.get(w, w)}")
        p("")
        unit = "MB" if w in MB_WORKLOADS else "ops"
        p(f"| server | {unit}/s | server CPU | {unit} per CPU-s | netloop ÷ this | p50 µs | p99 µs | syscalls/{unit.rstrip('s')} | runs ok |")
        p("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            util = f"{r['cpu_util'] * 100:.0f} %" if r["cpu_util"] is not None else "—"
            ratio = fmt(r["netloop_over_this"], 2)
            sc = fmt(r["syscalls_per_op"], 3)
            p(f"| {SHORT.get(r['server'], r['server'])} | {fmt(r['ops_s'])} | {util} | {fmt(r['ops_per_cpu_s'])} "
              f"| {ratio} | {fmt(r['p50_us'])} | {fmt(r['p99_us'])} | {sc} | {r['runs_ok']}/{r['runs']} |")
        notes = [f"{SHORT.get(r['server'], r['server'])}: {r['notes']}" for r in rows if r["notes"]]
        if notes:
            p("")
            for n in notes:
                p(f"- {n}")
        p("")
    if idle:
        p(f"## Idle memory: {idle[0].get('conns', '?')} open connections")
        p("")
        p("`bench/idle_rss.py` opens the connections one by one, makes each exchange one small message "
          "(echo: `x` and back; HTTP: one keep-alive `GET /` and its full response), leaves them open and "
          "idle for a second, then reads the server's VmRSS from `/proc/PID/status`. One run per server. "
          "What a server allocates at start (netloop's connection pool of `--max-connections` slots, nginx's "
          "`worker_connections`) is in the first column, so compare the second.")
        p("")
        p("| server | protocol | RSS before (MiB) | RSS with connections (MiB) | per connection (bytes) | still open |")
        p("|---|---|---:|---:|---:|---:|")
        for r in idle:
            if "error" in r:
                p(f"| {r['server']} | {r.get('proto', '')} | — | — | — | failed: {r['error']} |")
                continue
            p(f"| {r['server']} | {r['proto']} | {r['rss_before_kib'] / 1024:.1f} | {r['rss_kib'] / 1024:.1f} "
              f"| {r['per_conn_bytes']:,} | {r['open_after']:,} |")
        p("")
    profile = [json.loads(l) for l in open(a.profile)] if a.profile and os.path.exists(a.profile) else []
    if profile:
        p("## Where the CPU goes: depth-16 echo")
        p("")
        p(f"`perf record -e cpu-clock -g -p PID -- sleep {meta['profile_duration']}` on the server while the "
          "echo-d16 client runs (one run per server, after the rounds), then `perf report --no-children "
          "--sort dso -g none` (shares of all samples) and `--sort dso,sym` for the top user-space entries. "
          "User space is every sample outside the kernel.")
        p("")
        p("| server | kernel | own binary | libc | vDSO | other | user space |")
        p("|---|---:|---:|---:|---:|---:|---:|")
        for r in profile:
            d = dict(r["dsos"])
            kernel = d.pop("[kernel.kallsyms]", 0.0)
            binary = r["server"].replace("netloop-echo", "netloop")
            own = sum(v for k, v in d.items() if k == binary)
            libc = sum(v for k, v in d.items() if k.startswith("libc"))
            vdso = d.get("[vdso]", 0.0)
            other = sum(d.values()) - own - libc - vdso
            p(f"| {SHORT.get(r['server'], r['server'])} | {kernel:.2f} % | {own:.2f} % | {libc:.2f} % | {vdso:.2f} % "
              f"| {other:.2f} % | **{sum(d.values()):.2f} %** |")
        p("")
        for r in profile:
            if r["top"]:
                top = ", ".join(f"`{sym}` {pct:.2f}" for pct, _, sym in r["top"])
                p(f"- top user-space entries, {SHORT.get(r['server'], r['server'])}: {top}")
        p("")
    # Keep the section bench/proxy.sh writes (from its begin marker to the end of the file, so the
    # notes written after it too), which this run does not measure.
    begin = "<!-- proxy.sh: begin -->"
    prev = open(a.md).read() if os.path.exists(a.md) else ""
    if begin in prev:
        out += ["", begin + prev.split(begin, 1)[1].rstrip("\n"), ""]
    open(a.md, "w").write("\n".join(out))

ap = argparse.ArgumentParser()
sub = ap.add_subparsers(dest="cmd", required=True)
r = sub.add_parser("record")
for k in ["kind", "round", "workload", "server", "tool", "client", "client_err", "trace", "trace_tool",
          "redis_n", "failed", "runs"]:
    r.add_argument("--" + k.replace("_", "-"), default=None)
r.add_argument("--rc", type=int, default=None)
r.add_argument("--ticks", type=int, default=0)
r.add_argument("--hz", type=int, default=100)
r.add_argument("--wall", type=float, default=None)
rp = sub.add_parser("report")
for k in ["runs", "meta", "idle", "profile", "csv", "md"]:
    rp.add_argument("--" + k, default=None)
a = ap.parse_args()
record(a) if a.cmd == "record" else report(a)
PY

# ---------------------------------------------------------------- the rounds
start=$(date +%s)
# How busy the machine is before we start (other builds or benchmarks make the figures noisy).
cpu_busy() { # percent of all CPUs busy over one second, from /proc/stat
  local a b
  a=$(awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat); sleep 1
  b=$(awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat)
  echo "$a $b" | awk '{printf "%.0f", 100 * ($3 - $1) / (($4 - $2) > 0 ? ($4 - $2) : 1)}'
}
busy=$(cpu_busy)
busy_note="$busy % of the CPUs busy in the second before the start"
[ "$busy" -le 20 ] || log "warning: $busy_note: something else is running; the figures will be noisy"
log "rounds: $ROUNDS x ${DURATION}s; syscall pass ${SYSCALL_DURATION}s; redis -n $REDIS_N_P1 (-P 1) / $REDIS_N_P16 (-P 16)"
for round in $(seq "$ROUNDS"); do
  for w in "${WORKLOADS[@]}"; do
    for s in $(servers_of "$w"); do
      run_case measure "$round" "$w" "$s"
    done
  done
done
if [ "$SYSCALL_TOOL" != none ]; then
  log "syscall pass ($SYSCALL_TOOL)"
  for w in "${WORKLOADS[@]}"; do
    for s in $(servers_of "$w"); do
      run_case syscalls 1 "$w" "$s"
    done
  done
fi

# ---------------------------------------------------------------- profile
# Where a server's CPU goes on depth-16 echo: perf samples (cpu-clock, so it
# works in a VM without hardware counters) of the server process while the
# echo-d16 client runs, split by DSO (kernel, the server's own binary, libc,
# vDSO) and the top user-space symbols.
: >"$tmp/profile.jsonl"
PROFILE_SERVERS="netloop-echo mio-echo tokio-echo"
profile_server() { # server -> a JSON line in profile.jsonl
  local s=$1 data="$tmp/perf-$1.data" cpid
  start_server "$s" || return 1
  # shellcheck disable=SC2046
  taskset -c $CLIENT_CPU $(client_cmd echo-d16 "$SADDR" $((PROFILE_DURATION + 2))) >"$tmp/client.out" 2>"$tmp/client.err" &
  cpid=$!
  sleep 1
  taskset -c $CLIENT_CPU perf record -e cpu-clock -g -p "$SPID" -o "$data" -- sleep "$PROFILE_DURATION" >/dev/null 2>&1 || true
  wait "$cpid" || true
  stop_server
  perf report -i "$data" --no-children --sort dso -g none --stdio 2>/dev/null >"$tmp/dso.txt" || return 1
  perf report -i "$data" --no-children --sort dso,sym -g none --stdio 2>/dev/null >"$tmp/sym.txt" || return 1
  python3 - "$s" "$tmp/dso.txt" "$tmp/sym.txt" >>"$tmp/profile.jsonl" <<'PY'
import json, re, sys
server, dso_txt, sym_txt = sys.argv[1:4]
line = re.compile(r"^\s*([\d.]+)%\s+(\S+)(?:\s+\[[.k]\]\s+(.*\S))?\s*$")
dsos = {}
for l in open(dso_txt):
    m = line.match(l)
    if m and not l.startswith("#"):
        dsos[m.group(2)] = float(m.group(1))
top = []
for l in open(sym_txt):
    m = line.match(l)
    if m and not l.startswith("#") and m.group(2) != "[kernel.kallsyms]" and m.group(3):
        top.append([float(m.group(1)), m.group(2), m.group(3)])
print(json.dumps(dict(server=server, dsos=dsos, top=top[:8])))
PY
}
if [ "$SKIP_PROFILE" != 1 ] && [ "$SYSCALL_TOOL" = perf ]; then
  log "profile pass: perf record, depth-16 echo, ${PROFILE_DURATION}s per server"
  for s in $PROFILE_SERVERS; do
    profile_server "$s" || log "profile of $s failed"
  done
fi

# ---------------------------------------------------------------- idle RSS
: >"$tmp/idle.jsonl"
if [ "$SKIP_IDLE" != 1 ]; then
  log "idle RSS with $IDLE_CONNS connections"
  for spec in netloop-echo:echo mio-echo:echo tokio-echo:echo netloop-http:http hyper-hello:http nginx:http; do
    s=${spec%%:*} proto=${spec##*:}
    if start_server "$s" && timeout 300 taskset -c $CLIENT_CPU python3 "$bench/idle_rss.py" --target "$SADDR" \
         --pid "$SPID" --proto "$proto" --conns "$IDLE_CONNS" >"$tmp/idle.out" 2>"$tmp/idle.err"; then
      python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); j["server"]=sys.argv[2]; print(json.dumps(j))' \
        "$tmp/idle.out" "${s/netloop-*/netloop ${s#netloop-}}" >>"$tmp/idle.jsonl"
      log "idle $s: $(cat "$tmp/idle.out")"
    else
      err=$(tr '\n"' ' ' <"$tmp/idle.err" 2>/dev/null | cut -c1-120)
      printf '{"server": "%s", "proto": "%s", "error": "%s"}\n' "$s" "$proto" "$err" >>"$tmp/idle.jsonl"
      log "idle $s failed: $err"
    fi
    stop_server
  done
fi

# ---------------------------------------------------------------- report
git_rev=$(cd "$root" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
git_dirty=$(cd "$root" && git status --porcelain -- netloop netloop-servers netloop-cli Cargo.toml Cargo.lock 2>/dev/null | head -1 || true)
bin_time=$(date -u -r "$root/target/release/netloop" '+%Y-%m-%d %H:%M UTC')
A='ADDR'
commands=(
  "taskset -c $SERVER_CPU netloop echo --addr 127.0.0.1:0 --threads 1   # and: netloop http ..., netloop kv ..."
  "taskset -c $SERVER_CPU mio-echo --addr 127.0.0.1:0 --threads 1       # and: tokio-echo, hyper-hello (bench/target/release)"
  "taskset -c $SERVER_CPU nginx -p DIR -e stderr -c DIR/nginx.conf       # bench/peers/nginx.conf.template, @PREFIX@=DIR, @PORT@=PORT"
  "taskset -c $SERVER_CPU redis-server --bind 127.0.0.1 --port PORT --save '' --appendonly no --daemonize no"
)
for w in "${WORKLOADS[@]}"; do
  commands+=("taskset -c $CLIENT_CPU $(client_cmd "$w" "$A:PORT" "$DURATION" | sed -e "s|$tmp/netloop|netloop|" -e "s|$bench/|bench/|" -e "s|-h ADDR -p PORT|-h 127.0.0.1 -p PORT|" -e "s|$A:PORT|ADDR|")")
done
if [ "$SYSCALL_TOOL" = perf ]; then
  commands+=("perf stat -e raw_syscalls:sys_enter -x, -p SERVER_PID   # syscall pass, around the same clients run ${SYSCALL_DURATION}s")
elif [ "$SYSCALL_TOOL" = strace ]; then
  commands+=("strace -c -f -q -p SERVER_PID   # syscall pass, around the same clients run ${SYSCALL_DURATION}s")
fi
[ "$SKIP_IDLE" = 1 ] || commands+=("taskset -c $CLIENT_CPU python3 bench/idle_rss.py --target ADDR --pid SERVER_PID --proto echo|http --conns $IDLE_CONNS")
python3 - "$tmp/meta.json" "${commands[@]}" <<PY
import json, sys
meta = dict(
    date="$(date -u '+%Y-%m-%d %H:%M UTC')",
    nproc="$(nproc)",
    **{"machine at start": "$busy_note"},
    kernel="$(uname -r)",
    cpu="$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')",
    netloop="commit $git_rev${git_dirty:+ (working tree has uncommitted changes)}, binary built $bin_time",
    nginx="$("$NGINX" -v 2>&1 | sed 's/.*version: //')",
    redis="$(redis-server --version | sed 's/ sha=.*//')",
    wrk="$(wrk -v 2>&1 | head -1 | sed 's/ Copyright.*//')",
    perf="$(perf version 2>/dev/null || echo none) (syscall counter: $SYSCALL_TOOL)",
    rustc="$(rustc --version 2>/dev/null || echo unknown)",
    rounds=$ROUNDS, duration=$DURATION, syscall_duration=$SYSCALL_DURATION, hz=$HZ, profile_duration=$PROFILE_DURATION,
    server_cpu=$SERVER_CPU, client_cpu=$CLIENT_CPU, syscall_tool="$SYSCALL_TOOL",
    commands=sys.argv[2:],
)
json.dump(meta, open(sys.argv[1], "w"))
PY
cp "$tmp/runs.csv" "$bench/results-runs.csv"
python3 "$tmp/bench.py" report --runs "$tmp/runs.csv" --meta "$tmp/meta.json" --idle "$tmp/idle.jsonl" --profile "$tmp/profile.jsonl" \
  --csv "$bench/results.csv" --md "$bench/RESULTS.md"
"$PEERS/chart" "$bench/results.csv" "$bench/results.svg" \
  "ops per server CPU-second, median of $ROUNDS round(s) x ${DURATION}s (one server thread)"
log "done in $(($(date +%s) - start)) s: bench/RESULTS.md, bench/results.csv, bench/results-runs.csv, bench/results.svg"
