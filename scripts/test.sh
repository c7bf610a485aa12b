#!/usr/bin/env bash
# The whole test suite: unit tests, and integration tests against a real
# Kafka-protocol broker (a private nisshi per test process, or KAFKA_BROKERS),
# SQLite files and PostgreSQL on 127.0.0.1:5432.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --workspace --all-targets "$@"
