#!/bin/sh
# The PostgreSQL stand-in's entry point (docker/standin/build.sh): what the official postgres image's
# docker-entrypoint.sh does for docker-compose.yaml, on Debian's postgresql-15. On the first start with an
# empty PGDATA: a cluster owned by POSTGRES_USER, whose password is read from POSTGRES_PASSWORD_FILE (a
# compose secret), scram-sha-256 for every network client, trust on the container's own socket (as the
# official image), and the database POSTGRES_DB. Then the server runs as the account `postgres`.
set -eu
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }

if [ "${1:-}" = postgres ] && [ "$(id -u)" = 0 ]; then
  user=${POSTGRES_USER:-postgres}
  db=${POSTGRES_DB:-$user}
  mkdir -p "$PGDATA"
  chown postgres:postgres "$PGDATA"
  chmod 0700 "$PGDATA"
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp)
    chown postgres "$pwfile"
    if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then cat "$POSTGRES_PASSWORD_FILE" > "$pwfile"
    else printf %s "${POSTGRES_PASSWORD:-}" > "$pwfile"; fi
    if [ ! -s "$pwfile" ]; then
      rm -f "$pwfile"
      echo "postgres: no password for $user: set POSTGRES_PASSWORD_FILE (a secret) or POSTGRES_PASSWORD" >&2
      exit 1
    fi
    as_postgres initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" --auth-host=scram-sha-256 --auth-local=trust \
      -E UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$pwfile"
    echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    as_postgres pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    if [ "$db" != postgres ]; then
      as_postgres psql -v ON_ERROR_STOP=1 -q -U "$user" -d postgres -c "CREATE DATABASE \"$db\" OWNER \"$user\""
    fi
    as_postgres pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    echo "postgres: cluster created in $PGDATA, database $db owned by $user"
  fi
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$@"
fi
exec "$@"
