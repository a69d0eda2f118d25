#!/bin/sh
# Entrypoint of tandem/postgres:15: creates the cluster in $PGDATA when the
# directory is empty, then runs PostgreSQL as the postgres user.
#
# Environment:
#   PGDATA                  data directory (default /var/lib/postgresql/data)
#   POSTGRES_HOST_AUTH_CIDR network whose TCP clients are accepted
#                           (default 10.213.7.0/24, the lab subnet of `tandem lab`)
#   POSTGRES_PASSWORD       if set at initialisation, the postgres role gets this
#                           password and TCP clients must give it (scram-sha-256);
#                           without it they are trusted, which is only for labs.
set -eu

PGDATA=${PGDATA:-/var/lib/postgresql/data}
export PGDATA

case "${1:-postgres}" in
-*) set -- postgres "$@" ;;
esac
[ $# -gt 0 ] || set -- postgres

if [ "$1" != postgres ]; then
    exec "$@"
fi

if [ "$(id -u)" = 0 ]; then
    # The data directory is normally a bind mount created by root on the host.
    # Only the directory itself is handed over: a recursive chown on every start
    # would rewrite the metadata of every file of a replicated copy for nothing.
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -n "$(ls -A "$PGDATA" 2>/dev/null)" ]; then
        # Never initialise over files we don't know: that could be a copy that
        # lost its PG_VERSION, and initdb would overwrite what is left of it.
        echo "tandem-postgres: $PGDATA is not empty and has no PG_VERSION; refusing to initdb" >&2
        exit 1
    fi
    cidr=${POSTGRES_HOST_AUTH_CIDR:-10.213.7.0/24}
    if [ -n "${POSTGRES_PASSWORD:-}" ]; then
        pwfile=$(mktemp)
        printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
        initdb --username=postgres --pwfile="$pwfile" --encoding=UTF8 \
            --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256
        rm -f "$pwfile"
        method=scram-sha-256
    else
        initdb --username=postgres --encoding=UTF8 --locale=C.UTF-8 \
            --auth-local=trust --auth-host=trust
        method=trust
    fi
    # The durability settings are PostgreSQL's defaults on Linux, written out so
    # that nobody changes them by accident: with them, every COMMIT the server
    # acknowledges has had its WAL fdatasync'ed, and under Tandem's barrier that
    # fdatasync returns only once the peer holds the WAL. wal_sync_method matters
    # as much: open_sync and open_datasync make WAL writes durable through
    # O_SYNC/O_DSYNC descriptors, which the barrier does not hold.
    cat >>"$PGDATA/postgresql.conf" <<CONF

# --- tandem/postgres:15 ---
listen_addresses = '*'
port = 5432
unix_socket_directories = '/var/run/postgresql'
fsync = on
synchronous_commit = on
full_page_writes = on
wal_sync_method = fdatasync
CONF
    printf 'host all all %s %s\n' "$cidr" "$method" >>"$PGDATA/pg_hba.conf"
    echo "tandem-postgres: initialised $PGDATA (TCP clients from $cidr: $method)"
fi

shift
exec postgres -D "$PGDATA" "$@"
