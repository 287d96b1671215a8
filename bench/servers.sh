# Shared pieces of bench/latency.sh and bench/scale.sh, sourced, never run:
# the conventions of bench/compare.sh (server on CPU 0, client on CPU 1,
# servers started the same way, each printing or listening on its address).
#
# The sourcing script sets: bench, tmp, NETLOOP (a private copy of the
# binary), PEERS (bench/target/release), NGINX, and optionally
# SERVER_EXTRA_ARGS (extra netloop server flags) and NGINX_CONNS
# (worker_connections for nginx; default 20000 as in the template). nginx
# takes its open-files limit from the caller.

SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}

log() { printf '[%s %s] %s\n' "$(basename "$0" .sh)" "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

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
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# start_server NAME -> sets SPID and SADDR; the server runs on SERVER_CPU.
# NAME: netloop-echo netloop-http netloop-kv mio-echo tokio-echo hyper-hello
# nginx redis-server; netloop servers take SERVER_EXTRA_ARGS.
start_server() {
  local name=$1 port=""
  : >"$tmp/server.out"
  case $name in
    netloop-echo | netloop-http | netloop-kv)
      # shellcheck disable=SC2086
      taskset -c "$SERVER_CPU" "$NETLOOP" "${name#netloop-}" --addr 127.0.0.1:0 --threads 1 ${SERVER_EXTRA_ARGS:-} \
        >"$tmp/server.out" 2>"$tmp/server.err" & ;;
    mio-echo | tokio-echo | hyper-hello)
      taskset -c "$SERVER_CPU" "$PEERS/$name" --addr 127.0.0.1:0 --threads 1 >"$tmp/server.out" 2>"$tmp/server.err" & ;;
    nginx)
      port=$(free_port)
      rm -rf "$tmp/nginx" && mkdir -p "$tmp/nginx"
      sed -e "s|@PREFIX@|$tmp/nginx|g" -e "s|@PORT@|$port|g" \
        -e "s|worker_connections 20000;|worker_connections ${NGINX_CONNS:-20000};|" \
        "$bench/peers/nginx.conf.template" >"$tmp/nginx/nginx.conf"
      taskset -c "$SERVER_CPU" "$NGINX" -p "$tmp/nginx" -e stderr -c "$tmp/nginx/nginx.conf" >"$tmp/server.out" 2>"$tmp/server.err" & ;;
    redis-server)
      port=$(free_port)
      taskset -c "$SERVER_CPU" redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --daemonize no \
        --maxclients 10000 >"$tmp/server.out" 2>"$tmp/server.err" & ;;
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
  [ -n "${SPID:-}" ] || return 0
  kill -TERM "$SPID" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.05; done
  kill -KILL "$SPID" 2>/dev/null || true
  wait "$SPID" 2>/dev/null || true
  SPID=""
}

# replace_section FILE NAME MARKDOWN_FILE: puts MARKDOWN_FILE between
# "<!-- NAME: begin -->" and "<!-- NAME: end -->" in FILE, or appends it
# (markers included) at the end when the markers are not there yet.
replace_section() {
  python3 - "$1" "$2" "$3" <<'PY'
import sys
path, name, part = sys.argv[1:4]
begin, end = f"<!-- {name}: begin -->", f"<!-- {name}: end -->"
body = open(part).read().strip("\n")
md = open(path).read() if __import__("os").path.exists(path) else ""
if begin in md and end in md:
    head, rest = md.split(begin, 1)
    tail = rest.split(end, 1)[1]
    md = f"{head}{begin}\n{body}\n{end}{tail}"
else:
    md = md.rstrip("\n") + f"\n\n{begin}\n{body}\n{end}\n"
open(path, "w").write(md)
PY
}
