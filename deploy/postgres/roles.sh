#!/bin/sh
# The postgres-roles step of docker-compose.yml: applies roles.sql with the
# passwords `ticketctl secrets` made, read from postgres' share of them
# (this one-shot container runs nothing else that could see them).
set -eu
secrets=/run/secrets/ticketing
PGPASSWORD=$(cat "$secrets/postgres-password")
export PGPASSWORD
psql --host postgres --username postgres --dbname postgres --quiet \
  -v prefix=ticketing \
  -v concert="$(cat "$secrets/ticketing_concert.password")" \
  -v queue="$(cat "$secrets/ticketing_queue.password")" \
  -v reservation="$(cat "$secrets/ticketing_reservation.password")" \
  -v member_balance="$(cat "$secrets/ticketing_member_balance.password")" \
  -v payment="$(cat "$secrets/ticketing_payment.password")" \
  -f /deploy/roles.sql
echo "postgres roles and databases in place"
