#!/usr/bin/env bash
# Syscalls per echoed message, counted by the kernel (perf's syscall
# tracepoints) on the server process while `netloop load` drives it.
#
# usage: bench/syscalls.sh DEPTH [SERVER ARGS...]
#   bench/syscalls.sh 1                      # one loop, reuseport mode
#   bench/syscalls.sh 16 --mode oneshot
set -euo pipefail
cd "$(dirname "$0")/.."
depth=${1:-1}; shift || true
bin=target/release/netloop
[ -x "$bin" ] || cargo build --release -p netloop-cli >/dev/null
out=$(mktemp -d)
taskset -c 0 "$bin" echo --addr 127.0.0.1:0 --threads 1 "$@" >"$out/addr" 2>/dev/null &
server=$!
for _ in $(seq 100); do [ -s "$out/addr" ] && break; sleep 0.02; done
addr=$(sed 's/listening on //' "$out/addr")
events=raw_syscalls:sys_enter,syscalls:sys_enter_read,syscalls:sys_enter_sendto,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_ctl
perf stat -x, -e "$events" -p "$server" -o "$out/perf" &
perf=$!
sleep 0.2
taskset -c 1 "$bin" load echo --target "$addr" --conns 50 --size 64 --depth "$depth" --duration 5 --json >"$out/load.json"
kill -INT $perf; wait $perf || true
kill -INT $server; wait $server || true
python3 - "$out/load.json" "$out/perf" "$*" <<'PY'
import json, sys
load = json.load(open(sys.argv[1]))
messages = load["messages"]
print(f"echo 64 B, depth {load['depth']}, 50 conns, server args [{sys.argv[3]}]: {messages} messages")
for line in open(sys.argv[2]):
    parts = line.strip().split(",")
    if len(parts) > 2 and parts[0].replace(".", "").isdigit():
        count = int(float(parts[0]))
        print(f"  {parts[2]:34s} {count:>10d}  per message {count / messages:.4f}")
PY
rm -rf "$out"
