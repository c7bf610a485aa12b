#!/bin/sh
# What the official image's entrypoint does that compose depends on: a
# first start initialises the data folder as uid 999 with the superuser
# password from POSTGRES_PASSWORD_FILE (read as that user), runs a
# socket-only server for a while (the official image runs its init scripts
# on one; a TCP health check must not pass then), and the real server
# listens on every address with password authentication over TCP.
set -eu
[ "${1:-}" = postgres ] || exec "$@"
mkdir -p "$PGDATA" /var/run/postgresql
chown postgres:postgres "$PGDATA" /var/run/postgresql
chmod 700 "$PGDATA"
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  as_postgres initdb --username=postgres --pwfile="$POSTGRES_PASSWORD_FILE" \
    --auth-local=trust --auth-host=scram-sha-256 -D "$PGDATA"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  as_postgres pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
  sleep 5
  as_postgres pg_ctl -D "$PGDATA" -m fast -w stop
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups postgres -D "$PGDATA" -c listen_addresses='*'
