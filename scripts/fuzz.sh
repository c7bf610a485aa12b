#!/usr/bin/env bash
# HTTP fuzzing with schemathesis against the five services' served OpenAPI
# documents (/docs/openapi.json), authenticated with a real member token, a
# queue pass and the admin key so that requests reach the handlers.
# Fails on any 5xx, on any answer the document does not allow (status code,
# content type, headers, body schema) and on schemathesis' other checks
# (valid requests refused, invalid ones accepted, missing auth not refused,
# a method a path does not take not answered 405 with Allow, ...).
# scripts/fuzz_hooks.py holds the two narrow exceptions and why.
#
#   scripts/fuzz.sh                     the long run (over 1,000 cases per service)
#   FUZZ_EXAMPLES=20 scripts/fuzz.sh    a bounded run (scripts/test.sh does this)
#   scripts/fuzz.sh --install           only install schemathesis (scripts/setup.sh)
#
# It starts a cluster (`ticketctl up`, SQLite, in a temporary folder, on free
# ports) and stops it at the end. Environment:
#   FUZZ_EXAMPLES    cases per operation and phase (default 600)
#   FUZZ_SEED        schemathesis' seed for every service (each service's own is
#                    in its output: with FUZZ_SERVICES, that run again)
#   FUZZ_SERVICES    which services, comma-separated (default all five)
#   FUZZ_DATABASE    postgres://USER@HOST:5432/NAME: the cluster on PostgreSQL
#   FUZZ_DATA_DIR, FUZZ_PORT_BASE: fuzz the running cluster of
#                    `ticketctl up --data-dir DIR --port-base N` instead
#   FUZZ_REPORTS     where schemathesis' outputs and reports go (default: a
#                    temporary folder, kept when the run fails)
#   TICKETCTL        the ticketctl binary to run (default: a debug build of
#                    this checkout, `cargo build -p ticketctl`)
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
say() { printf '[fuzz] %s\n' "$*"; }

# The pinned schemathesis: the one python3 has, else a virtualenv of its own
# in the user's cache (never pip into a system Python).
schemathesis_python() {
  local venv="${XDG_CACHE_HOME:-$HOME/.cache}/ticketing/schemathesis-$SCHEMATHESIS_VERSION"
  local check="import schemathesis, sys; sys.exit(schemathesis.__version__ != '$SCHEMATHESIS_VERSION')"
  if python3 -c "$check" 2>/dev/null; then
    echo python3
    return
  fi
  if ! "$venv/bin/python" -c "$check" 2>/dev/null; then
    say "installing schemathesis $SCHEMATHESIS_VERSION into $venv" >&2
    python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
      "schemathesis==$SCHEMATHESIS_VERSION" >&2
  fi
  echo "$venv/bin/python"
}

st_python="$(schemathesis_python)"
if [ "${1:-}" = "--install" ]; then
  exit 0
fi

examples="${FUZZ_EXAMPLES:-600}"
work="$(mktemp -d "${TMPDIR:-/tmp}/fuzz.XXXXXX")"
reports="${FUZZ_REPORTS:-$work/reports}"
cluster_pid=""

finish() {
  local status=$?
  if [ -n "$cluster_pid" ] && kill -0 "$cluster_pid" 2>/dev/null; then
    # `up` stops its services, then the broker, on SIGTERM.
    kill -TERM "$cluster_pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$cluster_pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$cluster_pid" 2>/dev/null || true
  fi
  if [ "$status" -eq 0 ]; then
    rm -rf "$work"
  else
    say "outputs kept in $work"
  fi
}
trap finish EXIT

if [ -n "${FUZZ_DATA_DIR:-}" ]; then
  data_dir="$FUZZ_DATA_DIR"
  port_base="${FUZZ_PORT_BASE:?FUZZ_PORT_BASE goes with FUZZ_DATA_DIR}"
  ticketctl="${TICKETCTL:-${CARGO_TARGET_DIR:-target}/debug/ticketctl}"
else
  if [ -z "${TICKETCTL:-}" ]; then
    say "building ticketctl"
    cargo build -q -p ticketctl
  fi
  built="${TICKETCTL:-${CARGO_TARGET_DIR:-target}/debug/ticketctl}"
  # A copy: a build during the run does not swap the binary under the cluster.
  ticketctl="$work/ticketctl"
  cp "$built" "$ticketctl"
  if ! command -v ticket-broker >/dev/null 2>&1 && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/ticket-broker" ] \
    && [ -z "${TICKET_BROKER_BIN:-}" ]; then
    say "the broker (ticket-broker) is not installed: run scripts/setup.sh first"
    exit 1
  fi
  # Free ports: the services at BASE+1..5, the data platform at BASE+10,
  # the broker at BASE+20.
  port_base="$(python3 - <<'EOF'
import random, socket
for _ in range(200):
    base = random.randrange(20000, 60000, 100)
    try:
        for port in [base + i for i in (1, 2, 3, 4, 5, 10, 20)]:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))
    except OSError:
        continue
    print(base)
    break
EOF
)"
  data_dir="$work/data"
  up_args=(up --data-dir "$data_dir" --port-base "$port_base" --broker-port $((port_base + 20)))
  if [ -n "${FUZZ_DATABASE:-}" ]; then
    up_args+=(--database "$FUZZ_DATABASE")
  fi
  say "starting a cluster in $data_dir (ports $((port_base + 1))-$((port_base + 5)))"
  "$ticketctl" "${up_args[@]}" >"$work/up.log" 2>&1 &
  cluster_pid=$!
  for _ in $(seq 1 360); do
    grep -q "ticketing platform is ready" "$work/up.log" && break
    if ! kill -0 "$cluster_pid" 2>/dev/null; then
      tail -20 "$work/up.log"
      say "the cluster did not start"
      exit 1
    fi
    sleep 0.5
  done
  if ! grep -q "ticketing platform is ready" "$work/up.log"; then
    tail -20 "$work/up.log"
    say "the cluster was not ready in 3 minutes"
    exit 1
  fi
fi

args=(--data-dir "$data_dir" --port-base "$port_base" --ticketctl "$ticketctl"
  --st "$st_python -m schemathesis.cli" --examples "$examples" --work-dir "$reports")
if [ -n "${FUZZ_SEED:-}" ]; then args+=(--seed "$FUZZ_SEED"); fi
if [ -n "${FUZZ_SERVICES:-}" ]; then args+=(--services "$FUZZ_SERVICES"); fi
python3 scripts/fuzz.py "${args[@]}"
