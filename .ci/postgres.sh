#!/usr/bin/env bash
# A throwaway PostgreSQL on loopback for the referral store's tests, from Debian's binaries.
#   .ci/postgres.sh start DIR   prints `export MCDROP_TEST_DATABASE_URL=...` (eval it); exit 1
#                               when no server could be started (the tests then skip)
#   .ci/postgres.sh stop DIR    stops that server and deletes DIR
# Trust authentication, loopback only, fsync off: for tests, never for data you keep.
set -uo pipefail
action=${1:?start or stop}
dir=${2:?a scratch folder}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
as_owner() {  # PostgreSQL refuses to run as root: use its own account then
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$action" in
start)
    if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
        echo "postgres.sh: no PostgreSQL binaries under /usr/lib/postgresql" >&2; exit 1
    fi
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        echo "postgres.sh: running as root and there is no 'postgres' user" >&2; exit 1
    fi
    mkdir -p "$dir" && chmod 700 "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_owner "$bin/initdb" -D "$dir/data" -U mcdrop --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1 \
        || { echo "postgres.sh: initdb failed: $(tail -n 3 "$dir/initdb.log")" >&2; exit 1; }
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off" start >/dev/null \
        || { echo "postgres.sh: server did not start: $(tail -n 3 "$dir/server.log")" >&2; exit 1; }
    as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U mcdrop mcdrop_test \
        || { echo "postgres.sh: createdb failed" >&2; "$0" stop "$dir"; exit 1; }
    echo "export MCDROP_TEST_DATABASE_URL=postgresql+psycopg://mcdrop@127.0.0.1:$port/mcdrop_test"
    ;;
stop)
    if [ -n "$bin" ] && [ -f "$dir/data/postmaster.pid" ]; then
        as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    fi
    rm -rf "$dir"
    ;;
*)
    echo "usage: $0 start|stop DIR" >&2; exit 2
    ;;
esac
