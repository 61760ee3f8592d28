#!/bin/sh
# Creates the cluster in $PGDATA on first start (user and database POSTGRES_USER / POSTGRES_DB
# with POSTGRES_PASSWORD, password logins from the network), then runs PostgreSQL in the
# foreground. Extra arguments go to `postgres` (`-c max_connections=200`, say).
set -eu
POSTGRES_USER="${POSTGRES_USER:-aiflow}"
POSTGRES_PASSWORD="${POSTGRES_PASSWORD:-aiflow}"
POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  echo "aiflow-postgres: creating the cluster in $PGDATA (user $POSTGRES_USER, database $POSTGRES_DB)"
  pwfile="$(mktemp)"
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" --encoding=UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  # Password logins from the other containers (the compose network), not only from loopback.
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w -s start
  if [ "$POSTGRES_DB" != postgres ]; then
    createdb -U "$POSTGRES_USER" -O "$POSTGRES_USER" "$POSTGRES_DB"
  fi
  pg_ctl -D "$PGDATA" -m fast -w -s stop
fi

exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
