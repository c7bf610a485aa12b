#!/usr/bin/env bash
# Installs the embedded broker, ticket-broker (tools/broker), in cargo's bin
# folder when it is missing or was built from other sources than this
# checkout's. The one rule for it: scripts/setup.sh runs this, and so does
# `ticketctl up` (unless TICKET_BROKER_BIN names a broker), so whichever of
# the README's commands comes first builds the broker and the other finds it.
# A no-op when nothing changed; safe to run from several processes at once.
set -euo pipefail

cd "$(dirname "$0")/.."

cargo_home="${CARGO_HOME:-$HOME/.cargo}"
binary="$cargo_home/bin/ticket-broker"
# The hash of the sources the installed binary was built from, beside it.
stamp="$cargo_home/ticket-broker.sources"
# The services' target folder (git ignores it): the broker's dependencies
# that are theirs too (tokio, serde, ...) are built once for both, and a
# rebuild after a change to the broker compiles only what changed.
target_dir="${CARGO_TARGET_DIR:-$(pwd -P)/target}"

# Every file under tools/broker except build output: manifests, lock file,
# sources, the broker-wake crate, cargo settings. Names are hashed too, so a
# file added or moved counts as a change.
sources_hash() {
  find tools/broker -name target -prune -o -type f -print0 \
    | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1
}

installed() {
  [ -x "$binary" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$(sources_hash)" ]
}

installed && exit 0

mkdir -p "$cargo_home"
# One build at a time: a second caller waits, then finds it installed.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$stamp.lock"
  flock 9
  installed && exit 0
fi

sources="$(sources_hash)"
printf '[install-broker] building ticket-broker (nisshi 0.8.1 inside; about 20 minutes on two cores the first time, a few after a change) into %s\n' \
  "$target_dir" >&2
"${CARGO:-cargo}" install --path tools/broker --locked --ignore-rust-version --force \
  --root "$cargo_home" --target-dir "$target_dir"
echo "$sources" >"$stamp"
