#!/usr/bin/env bash
# Installs what building and testing need on a fresh machine, and starts
# PostgreSQL when it is installed but stopped. Safe to run again.
set -euo pipefail

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

nisshi_version="0.8.1"
nisshi_bin="$(command -v nisshi || true)"
[ -n "$nisshi_bin" ] || [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/nisshi" ] || nisshi_bin="${CARGO_HOME:-$HOME/.cargo}/bin/nisshi"
if [ -z "$nisshi_bin" ] || ! "$nisshi_bin" --version 2>/dev/null | grep -q "$nisshi_version"; then
  say "installing the nisshi broker $nisshi_version (once; about 20 minutes on two cores)"
  cargo install nisshi --version "$nisshi_version" --locked --ignore-rust-version
fi

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
