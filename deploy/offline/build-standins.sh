#!/bin/sh
# Builds, from Debian's packages, local stand-ins for the images
# docker-compose.yml names, for a Docker engine that cannot pull from a
# registry (docs/deployment.md, "Run on a real engine"). Needs root,
# debootstrap, a running engine, the Rust toolchain in ~/.rustup and the
# embedded broker (ticket-broker, which scripts/setup.sh installs). Images already present are kept.
#   sh deploy/offline/build-standins.sh [work-folder]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
work=${1:-/var/tmp/ticketing-standins}
mkdir -p "$work"
have() { docker image inspect "$1" > /dev/null 2>&1; }

if ! have debian:bookworm-slim; then
  [ -d "$work/rootfs/etc/apt" ] ||
    debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian
  cat > "$work/rootfs/etc/apt/sources.list" <<SOURCES
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SOURCES
  # This host's trusted certificates, for images that fetch over TLS
  # through it (a machine behind an intercepting proxy needs its CA).
  mkdir -p "$work/rootfs/usr/local/share/ca-certificates"
  cp /etc/ssl/certs/ca-certificates.crt "$work/rootfs/usr/local/share/ca-certificates/host.crt"
  tar -C "$work/rootfs" -c . | docker import - debian:bookworm-slim
fi

if ! have rust:1.95-bookworm; then
  rm -rf "$work/rust" && mkdir -p "$work/rust"
  cp "$here/rust/Dockerfile" "$work/rust/"
  toolchain=$(rustc --print sysroot)
  cp -al "$toolchain" "$work/rust/toolchain" 2> /dev/null || cp -a "$toolchain" "$work/rust/toolchain"
  docker build -t rust:1.95-bookworm "$work/rust"
fi

have postgres:16 || docker build -t postgres:16 "$here/postgres"
have nginx:1.27 || docker build -t nginx:1.27 "$here/nginx"
have prom/prometheus:v2.55.1 || docker build -t prom/prometheus:v2.55.1 "$here/prometheus"
have jaegertracing/all-in-one:1.62.0 || docker build -t jaegertracing/all-in-one:1.62.0 "$here/jaeger"
if ! have apache/kafka:3.9.0; then
  rm -rf "$work/kafka" && mkdir -p "$work/kafka"
  cp "$here/kafka/Dockerfile" "$work/kafka/"
  cp "$(command -v ticket-broker || echo "$HOME/.cargo/bin/ticket-broker")" "$work/kafka/ticket-broker"
  docker build -t apache/kafka:3.9.0 "$work/kafka"
fi

echo "stand-ins ready; no stand-in for grafana/grafana and kafbat/kafka-ui"
