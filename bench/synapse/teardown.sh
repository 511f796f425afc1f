#!/usr/bin/env bash
# Stops what bench/synapse/setup.sh DIR and DIR/start.sh started, by PID: Synapse (DIR/synapse.pid,
# only if that PID still runs Synapse) and the PostgreSQL postmaster (DIR/pg/data/postmaster.pid).
# SIGTERM (PostgreSQL: SIGINT, its fast shutdown), wait up to 30 s, then SIGKILL.
#   bench/synapse/teardown.sh DIR
set -uo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
dir="$(cd "$1" && pwd)" || exit 1

stop() {  # stop PID SIGNAL NAME
  local pid=$1 sig=$2 name=$3 i
  kill -s "$sig" "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 300; i++)); do
    kill -0 "$pid" 2>/dev/null || { echo "stopped $name ($pid)"; return 0; }
    sleep 0.1
  done
  kill -s KILL "$pid" 2>/dev/null && echo "killed $name ($pid) after 30 s"
}

if [ -f "$dir/synapse.pid" ]; then
  pid="$(cat "$dir/synapse.pid")"
  if tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline" | grep -q synapse.app.homeserver; then
    stop "$pid" TERM synapse
  fi
  rm -f "$dir/synapse.pid"
fi
if [ -f "$dir/pg/data/postmaster.pid" ]; then
  pid="$(head -1 "$dir/pg/data/postmaster.pid")"
  if tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline" | grep -q postgres; then
    stop "$pid" INT postgres
  fi
fi
