#!/usr/bin/env bash
# Installs what building and testing need on a fresh machine, and starts
# PostgreSQL when it is installed but stopped. Safe to run again.
set -euo pipefail

cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*"; }

missing_packages=()
for package in libpq-dev libsqlite3-dev libssl-dev pkg-config; do
  dpkg -s "$package" >/dev/null 2>&1 || missing_packages+=("$package")
done
if ((${#missing_packages[@]})); then
  say "installing ${missing_packages[*]}"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${missing_packages[@]}"
fi

# The embedded broker (tools/broker): built from this checkout, and again
# whenever its sources change (`ticketctl up` follows the same rule).
bash scripts/install-broker.sh

# schemathesis for scripts/fuzz.sh, at the version pinned there: the one
# python3 has, else a virtualenv of its own in ~/.cache/ticketing.
bash scripts/fuzz.sh --install

if command -v pg_isready >/dev/null 2>&1; then
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    say "starting PostgreSQL"
    for version in /etc/postgresql/*; do
      pg_ctlcluster --skip-systemctl-redirect "$(basename "$version")" main start || true
    done
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  fi
  pg_isready -h 127.0.0.1 -p 5432
else
  say "PostgreSQL is not installed: the PostgreSQL tests need a server on 127.0.0.1:5432 (user postgres, trust auth)"
  exit 1
fi
