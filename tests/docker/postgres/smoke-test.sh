#!/bin/sh
# Checks tandem/postgres:15 on its own, without Tandem: a container on an empty
# bind-mounted data directory initialises its cluster, becomes healthy, keeps a
# table, runs pgbench, and its indexes pass amcheck. Everything it creates (the
# container and the data directory) is removed when it ends, also on failure.
#
# Needs root and a running Docker daemon; builds the image first if needed.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
image=${TANDEM_PG_IMAGE:-tandem/postgres:15}
"$here/build-image.sh"

data=$(mktemp -d /var/tmp/tandem-pg-smoke.XXXXXX)
name=tandem-pg-smoke-$$
cleanup() {
    rc=$?
    if [ "$rc" != 0 ]; then
        docker logs "$name" 2>&1 | tail -n 30 >&2 || true
    fi
    docker rm -f "$name" >/dev/null 2>&1 || true
    rm -rf --one-file-system "$data"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# No network: the checks talk to the server over its unix socket through exec.
docker run -d --name "$name" --network none -v "$data:/var/lib/postgresql/data" "$image" >/dev/null

i=0
until [ "$(docker inspect --format '{{.State.Health.Status}}' "$name")" = healthy ]; do
    i=$((i + 1))
    [ "$i" -le 120 ] || { echo "smoke: not healthy after 60 s" >&2; exit 1; }
    [ "$(docker inspect --format '{{.State.Running}}' "$name")" = true ] ||
        { echo "smoke: the container stopped" >&2; exit 1; }
    sleep 0.5
done
echo "smoke: healthy after about $((i / 2)) s"

psql() { docker exec "$name" psql -X -v ON_ERROR_STOP=1 -U postgres -Atq "$@"; }

[ "$(stat -c %u "$data")" = 999 ] || { echo "smoke: the data directory is not owned by uid 999" >&2; exit 1; }
settings=$(psql -c "SELECT string_agg(name || '=' || setting, ' ' ORDER BY name) FROM pg_settings
    WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes', 'listen_addresses', 'wal_sync_method')")
echo "smoke: $settings"
[ "$settings" = "fsync=on full_page_writes=on listen_addresses=* synchronous_commit=on wal_sync_method=fdatasync" ] ||
    { echo "smoke: unexpected settings" >&2; exit 1; }
psql -c "SELECT count(*) FROM pg_hba_file_rules WHERE address = '10.213.7.0'" | grep -qx 1 ||
    { echo "smoke: no pg_hba rule for the lab subnet" >&2; exit 1; }

psql -c "CREATE TABLE smoke (id int PRIMARY KEY, note text)"
psql -c "INSERT INTO smoke SELECT g, 'row ' || g FROM generate_series(1, 1000) g"
[ "$(psql -c 'SELECT count(*) FROM smoke')" = 1000 ] || { echo "smoke: rows missing" >&2; exit 1; }

docker exec "$name" pgbench -U postgres -i -s 1 -q postgres
docker exec "$name" pgbench -U postgres -c 4 -j 2 -T 10 -n postgres | grep -E '^(number of transactions actually processed|number of failed|latency average|tps)'

psql -c "CREATE EXTENSION amcheck"
checked=$(psql -c "SELECT count(bt_index_check(c.oid, true)) FROM pg_index i
    JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
    WHERE a.amname = 'btree' AND c.relname IN ('pgbench_accounts_pkey', 'pgbench_branches_pkey', 'pgbench_tellers_pkey', 'smoke_pkey')")
[ "$checked" = 4 ] || { echo "smoke: amcheck checked $checked indexes, not 4" >&2; exit 1; }
echo "smoke: amcheck bt_index_check passed on $checked indexes"

# A clean stop with the image's stop signal (SIGINT, fast shutdown).
docker stop -t 30 "$name" >/dev/null
docker logs "$name" 2>&1 | grep -q "database system is shut down" ||
    { echo "smoke: no clean shutdown" >&2; exit 1; }
echo "smoke: passed"
