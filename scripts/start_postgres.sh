#!/usr/bin/env bash
# Start (or reuse) a throw-away PostgreSQL server on 127.0.0.1 for the PostgreSQL tests.
#
#   scripts/start_postgres.sh          # prints the database URL on stdout (logs go to stderr)
#   scripts/start_postgres.sh stop     # stops the server (its files are kept for the next start)
#   scripts/start_postgres.sh status   # exit 0 when the server is running
#   scripts/start_postgres.sh release PID   # client PID is done (see below)
#   export MLFF_TEST_POSTGRES_URL="$(scripts/start_postgres.sh)"
#
# Clients (test sessions): with MLFF_PG_CLIENT=<pid> set, a start registers that process as a
# client, and a server started by a client is marked so. `release PID` unregisters it (and
# every client process that no longer exists); when no client is left and a client had started
# the server, it is stopped: test runs stop what they start, never a server started by hand or
# by .ci/run, never one another session is still using.
#
# Idempotent: a server already running from $MLFF_PG_DIR is reused. When the PostgreSQL server
# programs are missing it installs Debian's `postgresql` package (root only). PostgreSQL refuses
# to run as root, so as root the cluster belongs to the `postgres` system user (runuser).
# The cluster lives in $MLFF_PG_DIR (default ${TMPDIR:-/tmp}/mlff-postgres-$UID); the URL is
# also written to $MLFF_PG_DIR/url. The role `mlff` (password random, kept in the cluster dir)
# may create databases: the tests create and drop their own database in it.
set -euo pipefail

DIR=${MLFF_PG_DIR:-${TMPDIR:-/tmp}/mlff-postgres-$(id -u)}
DB_USER=mlff
DB_NAME=mlff_test
log() { echo "start_postgres: $*" >&2; }

find_bindir() {
    local d
    if command -v pg_config >/dev/null 2>&1; then
        d=$(pg_config --bindir 2>/dev/null || true)
        if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
    fi
    # Debian/Ubuntu keep the server programs out of PATH, one folder per major version
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -n -r); do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
    done
    d=$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
    return 1
}

BIN=$(find_bindir || true)
if [ -z "$BIN" ] && [ -n "${1:-}" ]; then  # status/stop/release never install anything
    log "PostgreSQL server programs not found: nothing is running"
    if [ "$1" = status ]; then exit 1; else exit 0; fi
fi
if [ -z "$BIN" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        log "PostgreSQL server programs (initdb, pg_ctl) not found and not root: cannot install them"
        exit 1
    fi
    log "installing Debian's postgresql package"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
    BIN=$(find_bindir) || { log "postgresql installed but initdb/pg_ctl not found"; exit 1; }
fi

# as root, run the server as the `postgres` system user (created by Debian's package)
if [ "$(id -u)" -eq 0 ]; then
    if ! id postgres >/dev/null 2>&1; then
        useradd --system --home-dir /var/lib/postgresql --shell /bin/false postgres
    fi
    as_pg() { runuser -u postgres -- "$@"; }
else
    as_pg() { "$@"; }
fi
pg_ctl_() { as_pg "$BIN/pg_ctl" -D "$DIR/data" "$@"; }

if [ "${1:-}" = "stop" ]; then
    if [ -f "$DIR/data/postmaster.pid" ]; then pg_ctl_ -m fast -w stop >&2; else log "not running"; fi
    rm -f "$DIR/started-by-client"
    exit 0
fi

if [ "${1:-}" = "status" ]; then
    [ -d "$DIR/data" ] && pg_ctl_ status >/dev/null 2>&1
    exit $?
fi

# one start/release at a time (parallel test sessions)
lock() { mkdir -p -m 700 "$DIR"; exec 9>"$DIR/.clients.lock"; flock 9; }

if [ "${1:-}" = "release" ]; then
    [ -n "${2:-}" ] || { log "usage: $0 release PID"; exit 2; }
    [ -d "$DIR" ] || exit 0
    lock
    rm -f "$DIR/clients/$2"
    for f in "$DIR"/clients/*; do  # forget clients that died without releasing
        [ -e "$f" ] || continue
        kill -0 "$(basename "$f")" 2>/dev/null || rm -f "$f"
    done
    if [ -f "$DIR/started-by-client" ] && [ -z "$(ls -A "$DIR/clients" 2>/dev/null)" ]; then
        log "last client gone: stopping the server a client started"
        if [ -f "$DIR/data/postmaster.pid" ]; then pg_ctl_ -m fast -w stop >&2 || true; fi
        rm -f "$DIR/started-by-client"
    fi
    exit 0
fi

if [ -n "${MLFF_PG_CLIENT:-}" ]; then
    lock
    mkdir -p "$DIR/clients"
    : > "$DIR/clients/$MLFF_PG_CLIENT"
fi

free_port() {
    python3 - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
EOF
}

if [ "$(id -u)" -eq 0 ]; then
    mkdir -p "$DIR"
    chown postgres: "$DIR"
    chmod 700 "$DIR"
else
    mkdir -p -m 700 "$DIR"
fi

if [ ! -f "$DIR/data/PG_VERSION" ]; then
    log "initdb in $DIR/data"
    as_pg sh -c "umask 077; head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n' > '$DIR/password'"
    # local (socket) connections: trust, for the setup below; TCP: password (scram-sha-256)
    as_pg "$BIN/initdb" -D "$DIR/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        -E UTF8 --locale=C.UTF-8 --no-sync >"$DIR/initdb.log" 2>&1 || {
        cat "$DIR/initdb.log" >&2; exit 1; }
fi

if pg_ctl_ status >/dev/null 2>&1 && [ -f "$DIR/url" ]; then
    log "already running"
else
    PORT=$(free_port)
    log "starting on 127.0.0.1:$PORT"
    if [ -n "${MLFF_PG_CLIENT:-}" ]; then : > "$DIR/started-by-client"; fi
    # 9>&-: the server must not inherit the clients lock (it would hold it for its lifetime)
    pg_ctl_ -l "$DIR/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c fsync=off -c full_page_writes=off" start >&2 9>&- || {
        tail -n 30 "$DIR/server.log" >&2; exit 1; }
    PASSWORD=$(cat "$DIR/password")
    psql_() { as_pg psql -h "$DIR" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qAt "$@"; }
    if [ "$(psql_ -c "SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER'")" != 1 ]; then
        psql_ -c "CREATE ROLE $DB_USER LOGIN CREATEDB PASSWORD '$PASSWORD'"
    fi
    if [ "$(psql_ -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" != 1 ]; then
        psql_ -c "CREATE DATABASE $DB_NAME OWNER $DB_USER"
    fi
    as_pg sh -c "umask 077; echo 'postgresql://$DB_USER:$PASSWORD@127.0.0.1:$PORT/$DB_NAME' > '$DIR/url'"
fi
cat "$DIR/url"
