#!/usr/bin/env bash
# Live binary upgrade under load, netloop and nginx side by side:
#
#   netloop http   SIGUSR2 to the serving process: it starts its executable
#                  again (a fresh copy is installed over it before each
#                  upgrade), passes the listening socket, waits for READY=1,
#                  then stops accepting and lets its connections finish.
#   nginx          the binary upgrade of nginx's documentation: SIGUSR2 to
#                  the master (a new master and workers start on the
#                  inherited sockets), then SIGWINCH (old workers shut down
#                  gracefully) and SIGQUIT to the old master.
#
# Each server has one worker (netloop --threads 1, nginx worker_processes
# 1) on CPU 0 and answers `GET /` with "Hello, World!". Two wrk clients on
# CPU 1 run through all the upgrades: one keeps its connections alive
# (KEEPALIVE_CONNS), one opens a new connection per request (SHORT_CONNS,
# `Connection: close`), so connections arrive while the processes change.
# Reported per client: requests served during the run, connection errors
# (wrk's connect/read/write/timeout socket errors and non-2xx responses),
# and the longest stall a client saw (wrk's maximum latency).
#
# usage: bench/upgrade.sh [UPGRADES] [INTERVAL]
#   UPGRADES         upgrades per server (default 10)
#   INTERVAL         seconds between upgrades (default 1)
#   KEEPALIVE_CONNS  keep-alive connections (default 50)
#   SHORT_CONNS      connections of the one-request-per-connection client (default 8)
#   NETLOOP_BIN=PATH the netloop binary (default target/release/netloop)
# Writes the section "Live binary upgrade under load" of bench/RESULTS.md,
# between the `upgrade.sh` markers (appended after the proxy section the
# first time; compare.sh keeps everything from the proxy section on).
set -euo pipefail

bench=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$bench")
UPGRADES=${1:-${UPGRADES:-10}}
INTERVAL=${2:-${INTERVAL:-1}}
KEEPALIVE_CONNS=${KEEPALIVE_CONNS:-50}
SHORT_CONNS=${SHORT_CONNS:-8}
NETLOOP_BIN=${NETLOOP_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/netloop}
SERVER_CPU=0
CLIENT_CPU=1
DURATION=$((UPGRADES * INTERVAL + 3))

log() { printf '[upgrade %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs (server on $SERVER_CPU, clients on $CLIENT_CPU)"
command -v wrk >/dev/null || die "wrk is not installed (apt-get install wrk)"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || die "nginx is not installed (apt-get install nginx-light)"
# nginx re-executes argv[0] on SIGUSR2: it must be an absolute path.
NGINX=$(readlink -f "$NGINX")
if [ ! -x "$NETLOOP_BIN" ]; then
  log "building netloop (release)"
  (cd "$root" && cargo build --release -p netloop-cli -j1) >&2
fi

tmp=$(mktemp -d /tmp/netloop-upgradebench.XXXXXX)
started=()   # every server process this script started, for the cleanup

cleanup() {
  local pid workers=()
  # A killed nginx master leaves its workers running: take them too.
  for pid in "${started[@]}"; do
    workers+=($(pgrep -P "$pid" 2>/dev/null || true))
  done
  for pid in "${started[@]}" "${workers[@]}"; do
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Servers must not inherit the machine lock's descriptor (`flock FILE
# bench/upgrade.sh`): a server process outliving the run would hold the
# lock for everybody.
close_lock_fds() {
  local fd
  for fd in /proc/$BASHPID/fd/*; do
    case "$(readlink "$fd" 2>/dev/null)" in
      *netloop-heavy.lock) eval "exec ${fd##*/}>&-" ;;
    esac
  done
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits (up to $2 seconds) until the command $1 succeeds.
wait_for() {
  local deadline=$((SECONDS + $2))
  until eval "$1"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.01
  done
}

# Running (a zombie has exited: an orphaned nginx master whose new parent
# does not reap it stays one).
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

start_clients() {
  local name=$1 port=$2
  taskset -c $CLIENT_CPU wrk -t1 -c"$KEEPALIVE_CONNS" -d"${DURATION}s" --latency \
    "http://127.0.0.1:$port/" >"$tmp/$name-keepalive.txt" 2>&1 &
  clients=($!)
  started+=($!)
  taskset -c $CLIENT_CPU wrk -t1 -c"$SHORT_CONNS" -d"${DURATION}s" --latency \
    -H 'Connection: close' "http://127.0.0.1:$port/" >"$tmp/$name-short.txt" 2>&1 &
  clients+=($!)
  started+=($!)
}

# The pid in nginx's pid file once it names a master other than $1.
new_master() {
  local pid
  pid=$(cat "$prefix/nginx.pid" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && [ "$pid" != "$1" ] && echo "$pid"
}

# ---------------------------------------------------------------- netloop
run_netloop() {
  local port pid new
  port=$(free_port)
  cp "$NETLOOP_BIN" "$tmp/netloop"
  (close_lock_fds; NO_COLOR=1 exec taskset -c $SERVER_CPU "$tmp/netloop" http \
    --addr "127.0.0.1:$port" --threads 1 --stop-timeout 60 \
    >"$tmp/netloop.out" 2>"$tmp/netloop.err") &
  pid=$!
  local first=$pid
  started+=("$pid")
  wait_for "grep -qs 'listening on' '$tmp/netloop.out'" 10 || die "netloop did not start"
  start_clients netloop "$port"
  sleep 1.5
  local pids=("$pid")
  for i in $(seq 1 "$UPGRADES"); do
    # Install a new copy of the binary, as a package upgrade does.
    cp "$NETLOOP_BIN" "$tmp/netloop.new" && mv -f "$tmp/netloop.new" "$tmp/netloop"
    kill -USR2 "$pid"
    wait_for "grep -qE 'the new process is ready.* pid=$pid new_pid' '$tmp/netloop.err'" 10 \
      || die "netloop upgrade $i did not complete"
    new=$(grep -E "the new process is ready.* pid=$pid new_pid" "$tmp/netloop.err" | sed 's/.*new_pid=\([0-9]*\).*/\1/')
    log "netloop upgrade $i: $pid -> $new"
    pid=$new
    pids+=("$pid")
    started+=("$pid")
    sleep "$INTERVAL"
  done
  wait "${clients[@]}" || true
  kill -TERM "$pid"
  local p
  for p in "${pids[@]}"; do
    wait_for "! alive $p" 70 || die "netloop process $p did not exit"
  done
  local status=0
  wait "$first" || status=$?
  netloop_stopped=$(grep -c 'INFO netloop::serve: stopped' "$tmp/netloop.err" || true)
  netloop_failed=$(grep -c 'upgrade failed' "$tmp/netloop.err" || true)
  log "netloop: $netloop_stopped of $((UPGRADES + 1)) processes stopped after draining; first exited $status"
  cp "$tmp/netloop.err" "$tmp/netloop-log.txt"
}

# ---------------------------------------------------------------- nginx
run_nginx() {
  local port old new pid
  prefix=$tmp/nginx
  port=$(free_port)
  mkdir -p "$prefix/logs"
  cat >"$prefix/nginx.conf" <<EOF
worker_processes 1;
daemon on;
master_process on;
pid $prefix/nginx.pid;
error_log $prefix/error.log notice;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$port;
    location / { default_type text/plain; return 200 "Hello, World!"; }
  }
}
EOF
  (close_lock_fds; exec taskset -c $SERVER_CPU "$NGINX" -p "$prefix" -c "$prefix/nginx.conf")
  wait_for "[ -s '$prefix/nginx.pid' ]" 10 || die "nginx did not start"
  old=$(cat "$prefix/nginx.pid")
  started+=("$old")
  start_clients nginx "$port"
  sleep 1.5
  local olds=()
  for i in $(seq 1 "$UPGRADES"); do
    kill -USR2 "$old"
    wait_for "new_master $old >/dev/null" 10 || die "nginx upgrade $i: no new master"
    new=$(new_master "$old")
    started+=("$new")
    # The new master's worker is up before the old one is told to go.
    wait_for "pgrep -P $new >/dev/null" 10 || die "nginx upgrade $i: no new worker"
    kill -WINCH "$old"
    kill -QUIT "$old"
    olds+=("$old")
    log "nginx upgrade $i: $old -> $new"
    old=$new
    sleep "$INTERVAL"
  done
  wait "${clients[@]}" || true
  nginx_old_exited=0
  for pid in "${olds[@]}"; do
    if wait_for "! alive $pid" 10; then nginx_old_exited=$((nginx_old_exited + 1)); fi
  done
  kill -QUIT "$old"
  wait_for "! alive $old" 10 || log "nginx master $old did not exit"
  cp "$prefix/error.log" "$tmp/nginx-log.txt"
}

# ---------------------------------------------------------------- report
# requests served, errors (socket errors + non-2xx), max latency (ms)
wrk_requests() { awk '/requests in/ {print $1}' "$1"; }
wrk_errors() {
  awk '/Socket errors/ {gsub(",", ""); n += $4 + $6 + $8 + $10}
       /Non-2xx/ {n += $NF} END {print n + 0}' "$1"
}
wrk_error_text() { grep -E 'Socket errors|Non-2xx' "$1" | sed 's/^ *//' | tr '\n' ' ' || true; }
wrk_max_ms() {
  awk '/^ +Latency/ && !done {v = $4; done = 1
       if (v ~ /us$/) {sub("us", "", v); v /= 1000}
       else if (v ~ /ms$/) {sub("ms", "", v)}
       else if (v ~ /s$/) {sub("s", "", v); v *= 1000}
       printf "%.1f", v}' "$1"
}

log "netloop: $UPGRADES upgrades, ${INTERVAL}s apart, under wrk for ${DURATION}s"
run_netloop
log "nginx: $UPGRADES upgrades, ${INTERVAL}s apart, under wrk for ${DURATION}s"
run_nginx

rows=""
for name in netloop nginx; do
  for kind in keepalive short; do
    f=$tmp/$name-$kind.txt
    rows+="| $name | $kind | $(wrk_requests "$f") | $(wrk_errors "$f") | $(wrk_max_ms "$f") | $(wrk_error_text "$f") |"$'\n'
  done
done
table="| server | client | requests | connection errors | longest stall (ms) | wrk's error lines |
|---|---|---:|---:|---:|---|
$rows"
echo "$table"

section="<!-- upgrade.sh: begin -->
## Live binary upgrade under load (bench/upgrade.sh)

$(date -u +%Y-%m-%d), \`bench/upgrade.sh $UPGRADES $INTERVAL\`: $UPGRADES upgrades ${INTERVAL} s apart while two wrk
clients run for ${DURATION} s against a one-worker server on CPU 0 (clients on CPU 1): one with
$KEEPALIVE_CONNS keep-alive connections, one with $SHORT_CONNS connections that each carry one request
(\`Connection: close\`), so new connections arrive throughout the upgrades. netloop upgrades on
SIGUSR2 (a new copy of the binary installed before each); nginx $("$NGINX" -v 2>&1 | sed 's/.*\///')
by its documented binary upgrade (SIGUSR2 to the master, then SIGWINCH and SIGQUIT to the old
master). Requests are those served during the whole run; connection errors are wrk's socket
errors (connect, read, write, timeout) plus non-2xx responses; the longest stall is wrk's maximum
latency.

$table
netloop: $netloop_stopped of $((UPGRADES + 1)) processes logged \`stopped\` after draining (exit 0), $netloop_failed failed upgrades.
nginx: $nginx_old_exited of $UPGRADES old masters had exited by the end of the run.
<!-- upgrade.sh: end -->"

results=$bench/RESULTS.md
SECTION="$section" python3 - "$results" <<'EOF'
import os, sys
path = sys.argv[1]
section = os.environ["SECTION"]
text = open(path).read() if os.path.exists(path) else ""
begin, end = "<!-- upgrade.sh: begin -->", "<!-- upgrade.sh: end -->"
if begin in text and end in text:
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    text = head + section + tail
else:
    text = text.rstrip("\n") + "\n\n" + section + "\n"
open(path, "w").write(text)
EOF
log "wrote the upgrade section of $results"
