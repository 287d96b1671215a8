#!/usr/bin/env bash
# netloop proxy side by side with nginx's stream module and HAProxy (mode tcp),
# each an L4 proxy with one worker/thread, in front of the same echo backend:
#
#   echo 64 B, depth 1 and 16 (netloop load)   ops per proxy CPU-second
#   echo 64 KiB, depth 1 (bulk)                MB per proxy CPU-second
#   syscalls per relayed message               perf stat, a separate pass
#   RSS per idle session, 10,000 sessions      bench/idle_rss.py
#
# The proxy runs on CPU 0. The load client and the backend (`netloop echo
# --threads 1`, one for the whole run) share CPU 1 (taskset), so only the
# proxy has a core to itself. Rounds are interleaved (netloop nginx haproxy
# netloop ...) with a fresh proxy process per run, and medians reported. For
# every run: the client's messages/s, the proxy's CPU seconds (utime+stime
# from /proc/PID/stat), so messages (or MB) per proxy CPU-second. Syscalls
# per message come from a separate, shorter pass under `perf stat -e
# raw_syscalls:sys_enter -p PID` (strace -c -f if perf cannot).
#
# Writes bench/proxy-results.csv (medians), bench/proxy-results-runs.csv
# (every run), bench/proxy-results.svg (chart, if bench/target/release/chart
# is built) and the section "netloop proxy vs nginx stream vs HAProxy" of
# bench/RESULTS.md (between the `proxy.sh` markers; the rest of the file is
# left as it is, and compare.sh keeps the section when it rewrites the file).
#
# usage: bench/proxy.sh [ROUNDS] [DURATION]
#   ROUNDS            interleaved rounds (default 3)
#   DURATION          seconds per measured run (default 5)
#   SYSCALL_DURATION  seconds per run of the syscall pass (default 2)
#   IDLE_CONNS        sessions for the idle-RSS test (default 10000)
#   SKIP_IDLE=1       leave out the idle-RSS test
#   NETLOOP_BIN=PATH  the netloop binary (default target/release/netloop)
# All are environment variables; ROUNDS and DURATION may also be arguments.
set -euo pipefail

bench=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$bench")
ROUNDS=${1:-${ROUNDS:-3}}
DURATION=${2:-${DURATION:-5}}
SYSCALL_DURATION=${SYSCALL_DURATION:-2}
IDLE_CONNS=${IDLE_CONNS:-10000}
SKIP_IDLE=${SKIP_IDLE:-0}
NETLOOP_BIN=${NETLOOP_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/netloop}
PROXY_CPU=0
CLIENT_CPU=1
CONNS=50

log() { printf '[proxy %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(nproc)" -ge 2 ] || die "needs at least 2 CPUs (proxy on CPU $PROXY_CPU, client and backend on CPU $CLIENT_CPU)"

# ---------------------------------------------------------------- packages
NGINX_STREAM_SO=/usr/lib/nginx/modules/ngx_stream_module.so
need_pkgs=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_pkgs+=(nginx)
[ -f "$NGINX_STREAM_SO" ] || need_pkgs+=(libnginx-mod-stream)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need_pkgs+=(haproxy)
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
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

# ---------------------------------------------------------------- builds
if [ ! -x "$NETLOOP_BIN" ]; then
  log "building netloop (release)"
  (cd "$root" && cargo build --release -p netloop-cli -j1) >&2
fi
[ -x "$NETLOOP_BIN" ] || die "missing $NETLOOP_BIN"

tmp=$(mktemp -d /tmp/netloop-proxybench.XXXXXX)
# A private copy, so a rebuild during the run changes nothing.
cp "$NETLOOP_BIN" "$tmp/netloop"
NETLOOP=$tmp/netloop
HZ=$(getconf CLK_TCK)
# 10,000 idle sessions are 20,000 descriptors in the proxy: raise the limits
# (root may raise the hard one); the proxies and idle_rss.py inherit them.
ulimit -Hn 65536 2>/dev/null || true
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
[ "$NOFILE" = unlimited ] && NOFILE=1048576
# Sessions a proxy can hold within it (2 descriptors each, a margin for the rest).
MAX_SESSIONS=$(( (NOFILE - 64) / 2 ))
[ "$MAX_SESSIONS" -gt 30000 ] && MAX_SESSIONS=30000
IDLE_NOTE=""
if [ "$IDLE_CONNS" -gt "$MAX_SESSIONS" ]; then
  new=$(( MAX_SESSIONS / 100 * 100 ))
  IDLE_NOTE="RLIMIT_NOFILE is $NOFILE here (its hard limit could not be raised) and a proxy needs 2 descriptors per session, so the idle test holds $new sessions, not $IDLE_CONNS"
  log "$IDLE_NOTE"
  IDLE_CONNS=$new
fi
export RUST_LOG=${RUST_LOG:-warn}

PPID_="" BPID="" TRACER=""
cleanup() {
  if [ -n "$TRACER" ]; then kill -INT "$TRACER" 2>/dev/null || true; fi
  if [ -n "$PPID_" ]; then kill -KILL "$PPID_" 2>/dev/null || true; fi
  if [ -n "$BPID" ]; then kill -KILL "$BPID" 2>/dev/null || true; fi
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

# ---------------------------------------------------------------- processes
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # port -> 0 once something accepts on 127.0.0.1:port
  for _ in $(seq 250); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.02
  done
  return 1
}
cpu_ticks() { # pid -> utime+stime in clock ticks (fields 14 and 15, counted after the "(comm)")
  local stat; stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  echo "${stat##*) }" | awk '{print $12 + $13}'
}

# The echo backend: one for the whole run, on the client's CPU.
: >"$tmp/backend.out"
taskset -c $CLIENT_CPU "$NETLOOP" echo --addr 127.0.0.1:0 --threads 1 --max-connections 16384 \
  >"$tmp/backend.out" 2>"$tmp/backend.err" &
BPID=$!
for _ in $(seq 250); do [ -s "$tmp/backend.out" ] && break; sleep 0.02; done
BACKEND=$(sed -n '1s/^listening on //p' "$tmp/backend.out")
[ -n "$BACKEND" ] || die "the echo backend did not print its address: $(tail -3 "$tmp/backend.err")"
log "echo backend on $BACKEND (pid $BPID, CPU $CLIENT_CPU)"

# start_proxy NAME -> sets PPID_ and PADDR; the proxy runs on PROXY_CPU.
start_proxy() {
  local name=$1 port
  port=$(free_port)
  case $name in
    netloop)
      taskset -c $PROXY_CPU "$NETLOOP" proxy --addr "127.0.0.1:$port" --upstream "$BACKEND" --threads 1 \
        >"$tmp/proxy.out" 2>"$tmp/proxy.err" & ;;
    nginx-stream)
      rm -rf "$tmp/nginx" && mkdir -p "$tmp/nginx"
      sed -e "s|@PREFIX@|$tmp/nginx|g" -e "s|@PORT@|$port|g" -e "s|@BACKEND@|$BACKEND|g" \
        -e "s|@WORKER_CONNECTIONS@|$((2 * MAX_SESSIONS + 32))|g" -e "s|/usr/lib/nginx/modules/ngx_stream_module.so|$NGINX_STREAM_SO|" \
        "$bench/peers/nginx-stream.conf.template" >"$tmp/nginx/nginx.conf"
      taskset -c $PROXY_CPU "$NGINX" -p "$tmp/nginx" -e stderr -c "$tmp/nginx/nginx.conf" \
        >"$tmp/proxy.out" 2>"$tmp/proxy.err" & ;;
    haproxy)
      sed -e "s|@PORT@|$port|g" -e "s|@BACKEND@|$BACKEND|g" -e "s|@MAXCONN@|$MAX_SESSIONS|g" \
        "$bench/peers/haproxy.cfg.template" >"$tmp/haproxy.cfg"
      taskset -c $PROXY_CPU "$HAPROXY" -db -f "$tmp/haproxy.cfg" >"$tmp/proxy.out" 2>"$tmp/proxy.err" & ;;
    *) die "unknown proxy $name" ;;
  esac
  PPID_=$!
  PADDR=127.0.0.1:$port
  wait_port "$port" || { log "$name did not listen: $(tail -3 "$tmp/proxy.err")"; return 1; }
  # wait_port's probe opened (and closed) one session; let it finish.
  sleep 0.1
}

stop_proxy() {
  [ -n "$PPID_" ] || return 0
  kill -TERM "$PPID_" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$PPID_" 2>/dev/null || break; sleep 0.05; done
  kill -KILL "$PPID_" 2>/dev/null || true
  wait "$PPID_" 2>/dev/null || true
  PPID_=""
}

# ---------------------------------------------------------------- workloads
WORKLOADS=(echo-d1 echo-d16 bulk-64k)
PROXIES=(netloop nginx-stream haproxy)
size_of() { case $1 in bulk-*) echo 65536 ;; *) echo 64 ;; esac; }
depth_of() { case $1 in echo-d16) echo 16 ;; *) echo 1 ;; esac; }
client_cmd() { # WORKLOAD ADDR SECONDS
  echo "$NETLOOP load echo --target $2 --conns $CONNS --size $(size_of "$1") --depth $(depth_of "$1") --duration $3 --json"
}

# run_case KIND ROUND WORKLOAD PROXY -> appends a row to runs.csv
run_case() {
  local kind=$1 round=$2 w=$3 s=$4 secs=$DURATION rc=0
  [ "$kind" = syscalls ] && secs=$SYSCALL_DURATION
  if ! start_proxy "$s"; then
    stop_proxy
    PYTHONPATH="$bench" python3 "$tmp/pbench.py" record --kind "$kind" --round "$round" --workload "$w" --server "$s" \
      --size "$(size_of "$w")" --failed "proxy did not start" --runs "$tmp/runs.csv"
    return 0
  fi
  local cmd; cmd=$(client_cmd "$w" "$PADDR" "$secs")
  : >"$tmp/trace.txt"
  if [ "$kind" = syscalls ]; then
    if [ "$SYSCALL_TOOL" = perf ]; then
      taskset -c $CLIENT_CPU perf stat -e raw_syscalls:sys_enter -x, -o "$tmp/trace.txt" -p "$PPID_" 2>/dev/null &
    else
      taskset -c $CLIENT_CPU strace -c -f -q -o "$tmp/trace.txt" -p "$PPID_" 2>/dev/null &
    fi
    TRACER=$!
    sleep 0.3 # let the tracer attach
  fi
  local before; before=$(cpu_ticks "$PPID_")
  local t0; t0=$(date +%s.%N)
  # shellcheck disable=SC2086
  timeout $((secs * 4 + 60)) taskset -c $CLIENT_CPU $cmd >"$tmp/client.out" 2>"$tmp/client.err" || rc=$?
  local t1; t1=$(date +%s.%N)
  local after died=""
  after=$(cpu_ticks "$PPID_") || { after=$before; died="proxy exited during the run"; }
  if [ -n "$TRACER" ]; then
    kill -INT "$TRACER" 2>/dev/null || true
    wait "$TRACER" 2>/dev/null || true
    TRACER=""
  fi
  stop_proxy
  kill -0 "$BPID" 2>/dev/null || die "the echo backend died: $(tail -3 "$tmp/backend.err")"
  PYTHONPATH="$bench" python3 "$tmp/pbench.py" record --kind "$kind" --round "$round" --workload "$w" --server "$s" \
    --size "$(size_of "$w")" --client "$tmp/client.out" --client-err "$tmp/client.err" --rc "$rc" --failed "$died" \
    --ticks $((after - before)) --hz "$HZ" --wall "$(echo "$t0 $t1" | awk '{print $2 - $1}')" \
    --trace "$tmp/trace.txt" --trace-tool "$SYSCALL_TOOL" --runs "$tmp/runs.csv"
}

# ---------------------------------------------------------------- python helper
cat >"$tmp/pbench.py" <<'PY'
import argparse, csv, json, math, os, sys
from report import fmt, med

FIELDS = ["kind", "round", "workload", "server", "size", "ops", "ops_s", "mb_s", "wall_s", "cpu_s", "cpu_util",
          "ops_per_cpu_s", "mb_per_cpu_s", "p50_us", "p99_us", "errors", "syscalls", "syscalls_per_op", "note"]
LABEL = {
    "echo-d1": "echo 64 B, depth 1 (messages per proxy CPU-s)",
    "echo-d16": "echo 64 B, depth 16 (messages per proxy CPU-s)",
    "bulk-64k": "bulk: echo 64 KiB, depth 1 (MB per proxy CPU-s)",
}
BULK = lambda w: w.startswith("bulk")
BEGIN, END = "<!-- proxy.sh: begin -->", "<!-- proxy.sh: end -->"

def num(x):
    try:
        v = float(x)
        return v if math.isfinite(v) else None
    except (TypeError, ValueError):
        return None

def parse_trace(path, tool):
    text = open(path).read() if os.path.exists(path) else ""
    if tool == "perf":
        for line in text.splitlines():
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
    row = dict(kind=a.kind, round=a.round, workload=a.workload, server=a.server, size=a.size, note="")
    try:
        if a.failed:
            raise ValueError(a.failed)
        j = json.loads(open(a.client).read().strip().splitlines()[-1])
        lat = j.get("latency_us", {})
        ops = j["messages"]
        row.update(ops=ops, ops_s=j["msgs_per_s"], mb_s=j["msgs_per_s"] * a.size / 1e6, errors=j.get("errors", 0),
                   p50_us=lat.get("p50"), p99_us=lat.get("p99"))
        notes = []
        if a.rc not in (0, None):
            notes.append(f"client exit {a.rc}")
        if row["errors"]:
            notes.append(f"{row['errors']} errors reported by the client")
        row["note"] = "; ".join(notes)
        cpu = a.ticks / a.hz
        row.update(cpu_s=cpu, wall_s=a.wall, cpu_util=cpu / a.wall if a.wall else None)
        row["ops_per_cpu_s"] = ops / cpu if cpu > 0 else None
        row["mb_per_cpu_s"] = ops * a.size / 1e6 / cpu if cpu > 0 else None
        if a.kind == "syscalls":
            n = parse_trace(a.trace, a.trace_tool)
            row["syscalls"] = n
            row["syscalls_per_op"] = n / ops if n is not None and ops else None
    except Exception as e:
        err = ""
        if a.client_err and os.path.exists(a.client_err):
            err = " ".join(open(a.client_err).read().split())[:160]
        row["note"] = f"failed: {e} {err}".strip()
        row["ops"] = row["ops_s"] = row["ops_per_cpu_s"] = None
        print(f"[proxy] {a.kind} {a.workload} {a.server}: {row['note']}", file=sys.stderr)
    new = not os.path.exists(a.runs)
    with open(a.runs, "a", newline="") as f:
        w = csv.DictWriter(f, FIELDS, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow(row)
    if row.get("ops_s") is not None:
        extra = f" syscalls/msg {row['syscalls_per_op']:.3f}" if row.get("syscalls_per_op") is not None else ""
        print(f"[proxy] {a.kind} r{a.round} {a.workload:8s} {a.server:12s} {row['ops_s']:>11,.0f} msg/s "
              f"cpu {row['cpu_s']:.2f}s {row['ops_per_cpu_s'] or 0:>11,.0f} msg/cpu-s "
              f"{row['mb_per_cpu_s'] or 0:>9,.1f} MB/cpu-s{extra}", file=sys.stderr)

def report(a):
    runs = list(csv.DictReader(open(a.runs)))
    meta = json.load(open(a.meta))
    idle = [json.loads(l) for l in open(a.idle)] if a.idle and os.path.exists(a.idle) else []
    order = list(dict.fromkeys((r["workload"], r["server"]) for r in runs))
    rows = []
    for w, s in order:
        m = [r for r in runs if r["workload"] == w and r["server"] == s and r["kind"] == "measure"]
        sc = [r for r in runs if r["workload"] == w and r["server"] == s and r["kind"] == "syscalls"]
        ok = [r for r in m if num(r["ops_s"]) is not None and not r["note"]]
        row = dict(workload=w, label=LABEL.get(w, w), server=s, runs_ok=len(ok), runs=len(m))
        for k in ["ops_s", "mb_s", "cpu_util", "ops_per_cpu_s", "mb_per_cpu_s", "p50_us", "p99_us"]:
            row[k] = med([num(r[k]) for r in ok])
        row["syscalls_per_op"] = med([num(r["syscalls_per_op"]) for r in sc if not r["note"]])
        row["syscall_run_ops_s"] = med([num(r["ops_s"]) for r in sc if not r["note"]])
        row["notes"] = "; ".join(sorted({r["note"] for r in m + sc if r["note"]}))
        # The chart's value column: MB per CPU-s for the bulk row, messages otherwise.
        row["per_cpu_s"] = row["mb_per_cpu_s"] if BULK(w) else row["ops_per_cpu_s"]
        rows.append(row)
    for row in rows:
        base = next((r for r in rows if r["workload"] == row["workload"] and r["server"] == "netloop"), None)
        b, v = (base or {}).get("per_cpu_s"), row["per_cpu_s"]
        row["netloop_over_this"] = b / v if b and v else None

    cols = ["workload", "label", "server", "runs_ok", "runs", "ops_s", "mb_s", "cpu_util", "ops_per_cpu_s",
            "mb_per_cpu_s", "netloop_over_this", "p50_us", "p99_us", "syscalls_per_op", "syscall_run_ops_s", "notes"]
    with open(a.csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow(["" if r[c] is None else (f"{r[c]:.6g}" if isinstance(r[c], float) else r[c]) for c in cols])
    # For the chart: one value column, per_cpu_s as ops_per_cpu_s.
    with open(a.chart_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["workload", "label", "server", "ops_per_cpu_s"])
        for r in rows:
            w.writerow([r["workload"], r["label"], r["server"], "" if r["per_cpu_s"] is None else f"{r['per_cpu_s']:.6g}"])

    out = []
    p = out.append
    p(BEGIN)
    p("## netloop proxy vs nginx stream vs HAProxy")
    p("")
    p(f"Produced by `bench/proxy.sh {meta['rounds']} {meta['duration']}` on {meta['date']}; rerun it to refresh "
      "this section (and only this section), `bench/proxy-results.csv` (medians), `bench/proxy-results-runs.csv` "
      "(every run) and `bench/proxy-results.svg`.")
    p("")
    for k in ["machine at start", "netloop", "nginx", "haproxy", "perf", "limits"]:
        p(f"- {k}: {meta[k]}")
    p("")
    p("### Method")
    p("")
    p(f"- Three L4 proxies, one worker/thread each, pinned to CPU {meta['proxy_cpu']}: `netloop proxy "
      "--threads 1`, nginx's stream module (`proxy_pass`, 1 worker, no master) and HAProxy (`mode tcp`, "
      "`nbthread 1`), all in front of the same echo backend, `netloop echo --threads 1`. The load client "
      f"(`netloop load echo`, {meta['conns']} connections) **and the backend share CPU {meta['client_cpu']}**; "
      "only the proxy has a core to itself, so the client+backend core may be the bottleneck and messages/s "
      "are capped by it; the per-proxy-CPU-second figures are what compares the proxies.")
    p("- Equivalent configurations (`bench/peers/nginx-stream.conf.template`, `bench/peers/haproxy.cfg.template`, "
      "netloop's defaults): no access logging, buffers at their defaults (nginx `proxy_buffer_size` 16k, "
      "HAProxy `tune.bufsize` 16384, netloop's 16 KiB reads and `--high-water` 1 MiB), connect timeout 60 s, "
      "idle timeouts 600 s.")
    p(f"- {meta['rounds']} round(s), interleaved (netloop, nginx stream, HAProxy, in turn, per workload), "
      f"{meta['duration']} s per run, a fresh proxy process for every run; every figure is the median over the rounds.")
    p("- **per proxy CPU-s**: the client's completed messages (or messages × 65,536 bytes / 10⁶ for the bulk row, "
      "i.e. MB echoed; each of those bytes crosses the proxy twice, to the backend and back) ÷ the proxy "
      "process's utime+stime from `/proc/PID/stat`, read just before the client starts and just after it "
      f"exits (CLK_TCK = {meta['hz']}). **netloop ÷ this**: netloop's figure over this proxy's (above 1: netloop "
      "relays the same traffic with less CPU). Softirq work the kernel does outside the proxy's process "
      "context is not counted.")
    p(f"- **syscalls/msg**: a separate pass after the rounds, one {meta['syscall_duration']} s run per proxy and "
      f"workload under `{meta['syscall_cmd']}`, divided by the client's messages in that run. A message is one "
      "request and its echo, so it is relayed twice (client → backend and back); halve for per relay.")
    p("")
    p("```sh")
    for c in meta["commands"]:
        p(c)
    p("```")
    p("")
    p("### Results")
    p("")
    if meta.get("chart"):
        p("![per proxy CPU-second, median per workload and proxy](proxy-results.svg)")
        p("")
    for w in dict.fromkeys(r["workload"] for r in rows):
        rs = [r for r in rows if r["workload"] == w]
        bulk = BULK(w)
        p(f"#### {LABEL.get(w, w)}")
        p("")
        unit = "MB" if bulk else "msgs"
        p(f"| proxy | {unit}/s | proxy CPU | {unit} per proxy CPU-s | netloop ÷ this | p50 µs | p99 µs | syscalls/msg | runs ok |")
        p("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rs:
            util = f"{r['cpu_util'] * 100:.0f} %" if r["cpu_util"] is not None else "—"
            rate = fmt(r["mb_s"], 1) if bulk else fmt(r["ops_s"])
            per = fmt(r["mb_per_cpu_s"], 1) if bulk else fmt(r["ops_per_cpu_s"])
            p(f"| {r['server']} | {rate} | {util} | {per} | {fmt(r['netloop_over_this'], 2)} | {fmt(r['p50_us'])} "
              f"| {fmt(r['p99_us'])} | {fmt(r['syscalls_per_op'], 3 if not bulk else 1)} | {r['runs_ok']}/{r['runs']} |")
        notes = [f"{r['server']}: {r['notes']}" for r in rs if r["notes"]]
        if notes:
            p("")
            for n in notes:
                p(f"- {n}")
        p("")
    if idle:
        p(f"### Idle memory: {idle[0].get('conns', '?'):,} open sessions")
        p("")
        p("`bench/idle_rss.py --proto echo` through the proxy: it opens the client connections one by one, each "
          "echoes one byte through the proxy and the backend (so every session has its upstream connection "
          "established), leaves them idle for a second, and reads the proxy's VmRSS from `/proc/PID/status`. One "
          "run per proxy. What a proxy allocates at start (netloop's pool of 2 × `--max-connections` slots, "
          "nginx's `worker_connections`, HAProxy's pools) is in the first column, so compare the per-session column.")
        p("")
        if meta.get("idle_note"):
            p(f"{meta['idle_note']}.")
            p("")
        p("| proxy | RSS before (MiB) | RSS with sessions (MiB) | per session (bytes) | still open | netloop ÷ this (memory) |")
        p("|---|---:|---:|---:|---:|---:|")
        base = next((r for r in idle if r.get("server") == "netloop" and "error" not in r), None)
        for r in idle:
            if "error" in r:
                p(f"| {r['server']} | — | — | — | failed: {r['error']} | — |")
                continue
            ratio = fmt(base["per_conn_bytes"] / r["per_conn_bytes"], 2) if base and r["per_conn_bytes"] > 0 else "—"
            p(f"| {r['server']} | {r['rss_before_kib'] / 1024:.1f} | {r['rss_kib'] / 1024:.1f} "
              f"| {r['per_conn_bytes']:,} | {r['open_after']:,} | {ratio} |")
        p("")
        p("(For memory, netloop ÷ this below 1 means netloop uses less per session.)")
        p("")
    p(END)
    section = "\n".join(out)
    md = open(a.md).read() if os.path.exists(a.md) else ""
    if BEGIN in md and END in md:
        head, rest = md.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        md = head + section + tail
    else:
        md = md.rstrip("\n") + "\n\n" + section + "\n"
    open(a.md, "w").write(md)

ap = argparse.ArgumentParser()
sub = ap.add_subparsers(dest="cmd", required=True)
r = sub.add_parser("record")
for k in ["kind", "round", "workload", "server", "client", "client_err", "trace", "trace_tool", "failed", "runs"]:
    r.add_argument("--" + k.replace("_", "-"), default=None)
r.add_argument("--size", type=int, default=64)
r.add_argument("--rc", type=int, default=None)
r.add_argument("--ticks", type=int, default=0)
r.add_argument("--hz", type=int, default=100)
r.add_argument("--wall", type=float, default=None)
rp = sub.add_parser("report")
for k in ["runs", "meta", "idle", "csv", "chart_csv", "md"]:
    rp.add_argument("--" + k.replace("_", "-"), default=None)
a = ap.parse_args()
record(a) if a.cmd == "record" else report(a)
PY

# ---------------------------------------------------------------- the rounds
start=$(date +%s)
cpu_busy() { # percent of all CPUs busy over one second, from /proc/stat
  local a b
  a=$(awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat); sleep 1
  b=$(awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat)
  echo "$a $b" | awk '{printf "%.0f", 100 * ($3 - $1) / (($4 - $2) > 0 ? ($4 - $2) : 1)}'
}
busy=$(cpu_busy)
busy_note="$busy % of the CPUs busy in the second before the start"
[ "$busy" -le 20 ] || log "warning: $busy_note: something else is running; the figures will be noisy"
log "rounds: $ROUNDS x ${DURATION}s; syscall pass ${SYSCALL_DURATION}s"
for round in $(seq "$ROUNDS"); do
  for w in "${WORKLOADS[@]}"; do
    for s in "${PROXIES[@]}"; do
      run_case measure "$round" "$w" "$s"
    done
  done
done
if [ "$SYSCALL_TOOL" != none ]; then
  log "syscall pass ($SYSCALL_TOOL)"
  for w in "${WORKLOADS[@]}"; do
    for s in "${PROXIES[@]}"; do
      run_case syscalls 1 "$w" "$s"
    done
  done
fi

# ---------------------------------------------------------------- idle RSS
: >"$tmp/idle.jsonl"
if [ "$SKIP_IDLE" != 1 ]; then
  log "idle RSS with $IDLE_CONNS sessions"
  for s in "${PROXIES[@]}"; do
    if start_proxy "$s" && timeout 300 taskset -c $CLIENT_CPU python3 "$bench/idle_rss.py" --target "$PADDR" \
         --pid "$PPID_" --proto echo --conns "$IDLE_CONNS" >"$tmp/idle.out" 2>"$tmp/idle.err"; then
      python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); j["server"]=sys.argv[2]; print(json.dumps(j))' \
        "$tmp/idle.out" "$s" >>"$tmp/idle.jsonl"
      log "idle $s: $(cat "$tmp/idle.out")"
    else
      err=$(tr '\n"' ' ' <"$tmp/idle.err" 2>/dev/null | cut -c1-120)
      printf '{"server": "%s", "proto": "echo", "error": "%s"}\n' "$s" "$err" >>"$tmp/idle.jsonl"
      log "idle $s failed: $err"
    fi
    stop_proxy
    sleep 1 # let the backend see the 10,000 closes before the next proxy
  done
fi

# ---------------------------------------------------------------- report
git_rev=$(cd "$root" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
git_dirty=$(cd "$root" && git status --porcelain -- netloop netloop-servers netloop-cli Cargo.toml Cargo.lock 2>/dev/null | head -1 || true)
bin_time=$(date -u -r "$NETLOOP_BIN" '+%Y-%m-%d %H:%M UTC')
if [ "$SYSCALL_TOOL" = perf ]; then syscall_cmd="perf stat -e raw_syscalls:sys_enter -x, -p PROXY_PID"
else syscall_cmd="strace -c -f -q -p PROXY_PID"; fi
commands=(
  "taskset -c $CLIENT_CPU netloop echo --addr 127.0.0.1:0 --threads 1 --max-connections 16384   # the backend, BACKEND"
  "taskset -c $PROXY_CPU netloop proxy --addr 127.0.0.1:PORT --upstream BACKEND --threads 1"
  "taskset -c $PROXY_CPU nginx -p DIR -e stderr -c DIR/nginx.conf   # bench/peers/nginx-stream.conf.template"
  "taskset -c $PROXY_CPU haproxy -db -f haproxy.cfg                 # bench/peers/haproxy.cfg.template"
)
for w in "${WORKLOADS[@]}"; do
  commands+=("taskset -c $CLIENT_CPU $(client_cmd "$w" ADDR "$DURATION" | sed -e "s|$tmp/netloop|netloop|")")
done
[ "$SYSCALL_TOOL" = none ] || commands+=("$syscall_cmd   # syscall pass, around the same clients run ${SYSCALL_DURATION}s")
[ "$SKIP_IDLE" = 1 ] || commands+=("taskset -c $CLIENT_CPU python3 bench/idle_rss.py --target ADDR --pid PROXY_PID --proto echo --conns $IDLE_CONNS")
chart=""
CHART=$bench/target/release/chart
[ -x "$CHART" ] && chart=1
python3 - "$tmp/meta.json" "${commands[@]}" <<PY
import json, sys
meta = {
    "date": "$(date -u '+%Y-%m-%d %H:%M UTC')",
    "machine at start": "$busy_note; $(nproc) CPUs, kernel $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')",
    "netloop": "commit $git_rev${git_dirty:+ (working tree has uncommitted changes)}, binary built $bin_time",
    "nginx": "$("$NGINX" -v 2>&1 | sed 's/.*version: //') with the stream module of Debian's libnginx-mod-stream",
    "haproxy": "$("$HAPROXY" -v 2>&1 | head -1 | sed 's/ - https.*//')",
    "perf": "$(perf version 2>/dev/null || echo none) (syscall counter: $SYSCALL_TOOL)",
    "rounds": $ROUNDS, "duration": $DURATION, "syscall_duration": $SYSCALL_DURATION, "hz": $HZ,
    "proxy_cpu": $PROXY_CPU, "client_cpu": $CLIENT_CPU, "conns": $CONNS,
    "syscall_cmd": "$syscall_cmd", "chart": "$chart", "idle_note": "$IDLE_NOTE",
    "limits": "RLIMIT_NOFILE $NOFILE; nginx worker_connections $((2 * MAX_SESSIONS + 32)), HAProxy maxconn $MAX_SESSIONS, netloop --max-connections 16384 (default)",
    "commands": sys.argv[2:],
}
json.dump(meta, open(sys.argv[1], "w"))
PY
cp "$tmp/runs.csv" "$bench/proxy-results-runs.csv"
PYTHONPATH="$bench" python3 "$tmp/pbench.py" report --runs "$tmp/runs.csv" --meta "$tmp/meta.json" --idle "$tmp/idle.jsonl" \
  --csv "$bench/proxy-results.csv" --chart-csv "$tmp/chart.csv" --md "$bench/RESULTS.md"
if [ -n "$chart" ]; then
  "$CHART" "$tmp/chart.csv" "$bench/proxy-results.svg" \
    "per proxy CPU-second (messages; MB for bulk), median of $ROUNDS round(s) x ${DURATION}s (one proxy thread)"
else
  log "no chart: $CHART is not built (cd bench && cargo build --release -p chart); the CSV is bench/proxy-results.csv"
fi
log "done in $(($(date +%s) - start)) s: bench/RESULTS.md (proxy section), bench/proxy-results.csv, bench/proxy-results-runs.csv"
