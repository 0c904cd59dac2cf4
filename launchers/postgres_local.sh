#!/usr/bin/env bash
# A private PostgreSQL server on loopback/unix socket, for a search's shared Optuna storage in tests
# and trials (clusters use their own server). Needs Debian's postgresql package.
#
#   launchers/postgres_local.sh start DIR [PORT]   # prints the storage URL
#   launchers/postgres_local.sh stop DIR
set -euo pipefail
cmd=${1:?start|stop}
dir=$(realpath -m "${2:?data dir}")
port=${3:-55432}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$bin" ] || { echo "postgresql is not installed (apt-get install postgresql)" >&2; exit 3; }
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi; }

if [ "$cmd" = stop ]; then
  as_pg "$bin/pg_ctl -D '$dir/data' -m fast stop" >/dev/null 2>&1 || true
  exit 0
fi
mkdir -p "$dir"
[ "$(id -u)" = 0 ] && chown postgres "$dir"
as_pg "$bin/initdb -A trust -U postgres -D '$dir/data'" >/dev/null
as_pg "$bin/pg_ctl -D '$dir/data' -l '$dir/server.log' -o \"-p $port -k '$dir' -c listen_addresses=127.0.0.1\" -w start" >/dev/null
as_pg "$bin/createdb -h '$dir' -p $port -U postgres amq"
echo "postgresql://postgres@127.0.0.1:$port/amq"
