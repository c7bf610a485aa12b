#!/usr/bin/env bash
# Measures the platform on this machine and writes docs/benchmarks.md from the
# results (scripts/benchmarks_report.py). Everything runs here: broker,
# databases, services and the load tools share the machine's cores.
#
#   scripts/benchmarks.sh                 # all of it (about 25 minutes on two cores)
#   FANS=300 scripts/benchmarks.sh        # a smaller load run
#   ONLY="hop idle" scripts/benchmarks.sh # some parts (hop idle load holds http),
#                                         # the others' last results are reused
#
# Plain nisshi is measured beside the embedded broker when it is installed
# (`cargo install nisshi --version 0.8.1 --locked --ignore-rust-version`, or
# NISSHI_BIN=path); without it those rows say so.
set -euo pipefail
cd "$(dirname "$0")/.."

FANS=${FANS:-1000}
CONCURRENCY=${CONCURRENCY:-100}
# The load runs lift the queue's admission policy (by default 50 admissions
# a second and 100 active passes per concert, a business choice) so that the
# saga chain is measured, not the policy; ADMISSION_RATE=50 MAX_ACTIVE=100
# measures with the defaults.
ADMISSION_RATE=${ADMISSION_RATE:-1000}
MAX_ACTIVE=${MAX_ACTIVE:-1000}
# The holds-only run: HOLD_FANS fans admitted first, then holds arriving at
# HOLD_RATE a second (open loop), each fan a seat of its own.
HOLD_RATE=${HOLD_RATE:-1000}
HOLD_FANS=${HOLD_FANS:-10000}
ONLY=${ONLY:-"hop idle load holds http"}
POSTGRES=${POSTGRES:-postgres://postgres@127.0.0.1:5432}
results=target/bench
mkdir -p "$results"
say() { printf '[bench] %s\n' "$*" >&2; }
wants() { [[ " $ONLY " == *" $1 "* ]]; }

bash scripts/setup.sh >&2
if ! command -v wrk >/dev/null; then
  say "installing wrk"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get install -y -qq wrk >&2
fi
say "building the release binaries"
cargo build --release -q -p ticketctl --bin ticketctl --example bench
ticketctl=$PWD/target/release/ticketctl
bench=$PWD/target/release/examples/bench
broker=$(command -v ticket-broker || echo "${CARGO_HOME:-$HOME/.cargo}/bin/ticket-broker")
nisshi=${NISSHI_BIN:-$(command -v nisshi || echo "${CARGO_HOME:-$HOME/.cargo}/bin/nisshi")}
[ -x "$nisshi" ] || nisshi=""

# The machine, for the report's first lines.
python3 - "$results/machine.json" <<'EOF'
import json, os, platform, subprocess, sys, datetime
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
pg = subprocess.run(["psql", "--version"], capture_output=True, text=True).stdout.strip()
json.dump({"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "cores": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem / 1048576, 1),
           "kernel": platform.release(), "rustc": rustc, "postgres": pg},
          open(sys.argv[1], "w"), indent=1)
EOF

# One hop (bench hop): commit → broker → the other service's handler.
if wants hop; then
  for backend in sqlite postgres; do
    flag=""; [ $backend = postgres ] && flag="--postgres"
    say "hop, $backend, ticket-broker"
    TICKET_BROKER_BIN=$broker "$bench" hop $flag >"$results/hop-ticket-broker-$backend.txt"
    if [ -n "$nisshi" ]; then
      say "hop, $backend, plain nisshi (fetch wait 25 ms, its old default)"
      TICKET_BROKER_BIN=$nisshi FETCH_WAIT_MS=25 "$bench" hop $flag >"$results/hop-nisshi-$backend.txt"
    fi
  done
fi

# A cluster of `ticketctl up` in a fresh folder; sets $up_pid and $data.
start_cluster() { # label broker-binary backend [extra env...]
  local label=$1 binary=$2 backend=$3
  shift 3
  data=$(mktemp -d /tmp/bench-XXXXXX)/data
  local database=()
  db_prefix=""
  if [ "$backend" = postgres ]; then
    db_prefix="bench_$(date +%s)"
    database=(--database "$POSTGRES/$db_prefix")
  fi
  local started
  started=$(date +%s.%N)
  env TICKET_BROKER_BIN="$binary" "$@" "$ticketctl" up --data-dir "$data" "${database[@]}" \
    >"$results/up-$label.log" 2>&1 &
  up_pid=$!
  until grep -q "ticketing platform is ready" "$results/up-$label.log"; do
    kill -0 $up_pid 2>/dev/null || { say "up failed: $results/up-$label.log"; exit 1; }
    sleep 0.1
  done
  python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 2))" \
    "$started" "$(date +%s.%N)" >"$results/startup-$label.txt"
}

stop_cluster() {
  kill -INT $up_pid 2>/dev/null || true
  wait $up_pid 2>/dev/null || true
  rm -rf "$(dirname "$data")"
  # The run's five databases, so repeated runs leave nothing behind.
  if [ -n "$db_prefix" ]; then
    for service in concert queue reservation member_balance payment; do
      psql "$POSTGRES/postgres" -qc "DROP DATABASE IF EXISTS ${db_prefix}_$service" || true
    done
  fi
}

# CPU ticks and memory of every process of the cluster (and of the load
# generator, when given): `cpu_snapshot FILE [PID]`, then
# `cpu_report BEFORE AFTER OUT` for CPU as a share of one core between them.
cpu_snapshot() {
  python3 - "$up_pid" "${2:-}" "$1" <<'EOF'
import json, os, sys, time
root, extra, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
def children(pid):
    try:
        kids = open(f"/proc/{pid}/task/{pid}/children").read().split()
    except OSError:
        return []
    return [int(k) for k in kids] + [g for k in kids for g in children(int(k))]
def name(pid):
    args = open(f"/proc/{pid}/cmdline").read().split("\0")
    exe = os.path.basename(args[0])
    if exe == "ticketctl" and len(args) > 2 and args[1] == "serve":
        return args[2]
    if exe == "ticketctl" and len(args) > 1 and args[1] != "up":
        return "ticketctl " + args[1]
    return "ticketctl up" if exe == "ticketctl" else exe
rows = {}
for pid in [root] + children(root) + ([int(extra)] if extra else []):
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        rss = next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS"))
        rows[name(pid)] = {"ticks": int(fields[11]) + int(fields[12]), "rss_mib": round(rss / 1024, 1)}
    except (OSError, StopIteration):
        pass
json.dump({"at": time.time(), "tick": os.sysconf("SC_CLK_TCK"), "processes": rows}, open(out, "w"))
EOF
}

cpu_report() {
  python3 - "$1" "$2" "$3" <<'EOF'
import json, sys
before, after = (json.load(open(p)) for p in sys.argv[1:3])
seconds = after["at"] - before["at"]
rows = {}
for name, p in after["processes"].items():
    if name in before["processes"]:
        used = (p["ticks"] - before["processes"][name]["ticks"]) / after["tick"]
        rows[name] = {"cpu_percent": round(100 * used / seconds, 2), "cpu_seconds": round(used, 2), "rss_mib": p["rss_mib"]}
json.dump({"seconds": round(seconds, 1), "processes": rows,
           "total_cpu_percent": round(sum(r["cpu_percent"] for r in rows.values()), 2)},
          open(sys.argv[3], "w"), indent=1)
EOF
}

if wants idle; then
  for pair in "ticket-broker:$broker" ${nisshi:+"nisshi:$nisshi"}; do
    label=${pair%%:*} binary=${pair#*:}
    extra=()
    [ "$label" = nisshi ] && extra=(APP__KAFKA__FETCH_WAIT_MAX_MS=25)
    say "idle cluster, $label"
    start_cluster "idle-$label" "$binary" sqlite "${extra[@]}"
    sleep 10
    cpu_snapshot "$results/cpu-before.json"
    sleep 30
    cpu_snapshot "$results/cpu-after.json"
    cpu_report "$results/cpu-before.json" "$results/cpu-after.json" "$results/idle-$label.json"
    stop_cluster
  done
fi

if wants load; then
  runs=("ticket-broker:$broker:sqlite" "ticket-broker:$broker:postgres")
  [ -n "$nisshi" ] && runs+=("nisshi:$nisshi:sqlite")
  for run in "${runs[@]}"; do
    IFS=: read -r label binary backend <<<"$run"
    extra=(APP__QUEUE__ADMISSION_RATE_PER_SEC="$ADMISSION_RATE" APP__QUEUE__MAX_ACTIVE="$MAX_ACTIVE")
    [ "$label" = nisshi ] && extra+=(APP__KAFKA__FETCH_WAIT_MAX_MS=25)
    say "load, $label, $backend: $FANS fans, $CONCURRENCY at a time"
    start_cluster "load-$label-$backend" "$binary" "$backend" "${extra[@]}"
    database=()
    [ "$backend" = postgres ] && database=(--database "$POSTGRES")
    # bash's `time` reports the load generator's own CPU (user, system seconds).
    (
      TIMEFORMAT='%3U %3S'
      time env "${extra[@]}" "$ticketctl" load --data-dir "$data" "${database[@]}" \
        --fans "$FANS" --concurrency "$CONCURRENCY" --abandon 0.02 --short 0.1 \
        --json "$results/load-$label-$backend.json" >"$results/load-$label-$backend.txt" 2>&1
    ) 2>"$results/cpu-loadgen-$label-$backend.txt" &
    load_pid=$!
    cpu_snapshot "$results/cpu-before.json"
    wait $load_pid || true
    cpu_snapshot "$results/cpu-after.json"
    cpu_report "$results/cpu-before.json" "$results/cpu-after.json" "$results/cpu-load-$label-$backend.json"
    stop_cluster
  done
fi

# Holds alone at a fixed arrival rate (open loop): what the hold target
# states. Every fan is admitted first (the queue lets them all in at once),
# then asks for a seat of their own when due and gives it back once decided.
if wants holds; then
  for backend in sqlite postgres; do
    extra=(APP__QUEUE__ADMISSION_RATE_PER_SEC=100000 APP__QUEUE__MAX_ACTIVE="$((HOLD_FANS + 10))")
    say "holds, $backend: $HOLD_FANS fans, $HOLD_RATE holds a second"
    start_cluster "holds-$backend" "$broker" "$backend" "${extra[@]}"
    database=()
    [ "$backend" = postgres ] && database=(--database "$POSTGRES")
    "$ticketctl" load --data-dir "$data" "${database[@]}" --holds-only --fans "$HOLD_FANS" \
      --rate "$HOLD_RATE" --floor-samples 0 --json "$results/holds-$backend.json" \
      >"$results/holds-$backend.txt" 2>&1 || true
    stop_cluster
  done
fi

# HTTP read paths (and the queue's join) with wrk, against a cluster at rest.
wrk_run() { # label wrk-args...
  local label=$1
  shift
  wrk --latency "$@" >"$results/wrk-$label.txt" 2>&1 || true
}

if wants http; then
  for backend in sqlite postgres; do
    say "http with wrk, $backend"
    start_cluster "http-$backend" "$broker" "$backend"
    concert=$(curl -sf http://127.0.0.1:8081/v1/concerts | python3 -c "import json,sys; print(json.load(sys.stdin)[0]['id'])")
    schedule=$(curl -sf "http://127.0.0.1:8081/v1/concerts/$concert/schedules" | python3 -c "import json,sys; print(json.load(sys.stdin)[0]['id'])")
    "$ticketctl" login --data-dir "$data" --fans 60000 >"$results/fans.txt"
    token=$(head -1 "$results/fans.txt" | cut -d' ' -f2)
    place=$(curl -sf -X POST http://127.0.0.1:8082/v1/queue/tokens -H "Authorization: Bearer $token" \
      -H 'Content-Type: application/json' -d "{\"concert_id\":\"$concert\"}" |
      python3 -c "import json,sys; print(json.load(sys.stdin)['token'])")
    # Each service's cheapest answer, the HTTP ceiling its paths are held to.
    wrk_run "health-concert-$backend" -t2 -c64 -d15s http://127.0.0.1:8081/health/live
    wrk_run "health-queue-$backend" -t2 -c64 -d15s http://127.0.0.1:8082/health/live
    wrk_run "seat-map-$backend" -t2 -c64 -d15s "http://127.0.0.1:8081/v1/schedules/$schedule/seats"
    wrk_run "position-$backend" -t2 -c64 -d15s -H "Authorization: Bearer $token" \
      "http://127.0.0.1:8082/v1/queue/tokens/$place"
    tail -n +2 "$results/fans.txt" >"$results/joiners.txt"
    FANS_FILE=$results/joiners.txt CONCERT_ID=$concert WRK_THREADS=2 \
      wrk_run "join-$backend" -t2 -c64 -d15s -s scripts/wrk/join.lua http://127.0.0.1:8082
    stop_cluster
  done
fi

say "writing docs/benchmarks.md"
python3 scripts/benchmarks_report.py "$results" >docs/benchmarks.md
