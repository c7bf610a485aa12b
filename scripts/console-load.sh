#!/usr/bin/env bash
# docs/benchmarks.md, "The saga console under a load run". Needs the ports of
# `ticketctl up` (8081-8085, 8090, 9092) and 8088 free.
# The console under a `ticketctl load` run: a page reading at full speed and
# one reading 4 KB/s through a small socket buffer (scripts/console_slow_page.py),
# the console's CPU, and the first page's time.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ticketctl
T=${CARGO_TARGET_DIR:-target}/release/ticketctl
D=$(mktemp -d)
$T up --data-dir $D/data > $D/up.log 2>&1 &
UP=$!
trap 'kill $UP 2>/dev/null; kill $CON 2>/dev/null; true' EXIT
until grep -q "press Ctrl-C" $D/up.log; do sleep 1; done
$T console --data-dir $D/data > $D/console.log 2>&1 &
CON=$!
until grep -q "console: http" $D/console.log; do sleep 0.2; done
KEY=$(cat $D/data/admin-key)
curl -s -c $D/jar -o /dev/null -w "sign-in %{http_code}\n" --data-urlencode "key=$KEY" -H "Origin: http://127.0.0.1:8088" http://127.0.0.1:8088/sign-in
echo "first page (GET /, 10 times, seconds):"
for i in $(seq 10); do curl -s -b $D/jar -o /dev/null -w "%{time_total} " http://127.0.0.1:8088/; done; echo
for a in app.js app.css; do curl -s -b $D/jar -o /dev/null -w "$a %{time_total} %{size_download}B\n" http://127.0.0.1:8088/assets/$a; done
SINCE=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
curl -sN -b $D/jar http://127.0.0.1:8088/api/events/live > $D/fast.sse &
F=$!
python3 scripts/console_slow_page.py $D/jar 30 > $D/slow.txt &
S=$!
sleep 1
ticks() { awk '{print $14+$15}' /proc/$CON/stat; }
C0=$(ticks); T0=$(date +%s.%N)
$T load --data-dir $D/data --fans 1000 --concurrency 100 > $D/load.log 2>&1 || true
sleep 5
C1=$(ticks); T1=$(date +%s.%N)
UNTIL=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ); kill $F || true; wait $S || true; cat $D/slow.txt
grep -E "sagas|completed|elapsed" $D/load.log | head -5
PRODUCED=$($T events --since "$SINCE" --until "$UNTIL" --json 2>/dev/null | wc -l)
echo "events written while the pages were open: $PRODUCED"
for f in fast; do
  R=$(grep -c "^event: record" $D/$f.sse || true)
  DR=$(grep -A1 "^event: dropped" $D/$f.sse | grep -o '"dropped":[0-9]*' | cut -d: -f2 | paste -sd+ | bc)
  echo "$f page: $R records received (history included), $DR reported dropped"
done
echo "console CPU during the run: $(( C1 - C0 )) ticks ($(getconf CLK_TCK)/s) over $(echo "$T1 - $T0" | bc) s"
