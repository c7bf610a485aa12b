#!/usr/bin/env bash
# The whole test suite: unit tests, and integration tests against a real
# Kafka-protocol broker (a private nisshi per test process, or KAFKA_BROKERS),
# SQLite files and PostgreSQL on 127.0.0.1:5432, the console in headless
# Chromium; then a bounded HTTP fuzz. Before them, the Kubernetes manifests
# are built and validated offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Chromium (Debian) and playwright-core (npm) for the console's browser test.
bash scripts/install-browser.sh

# The Kubernetes manifests, offline (deploy/k8s): a few seconds, so first.
bash scripts/k8s-check.sh

cargo test --workspace --all-targets "$@"

# A bounded HTTP fuzz (docs/reliability.md, "HTTP fuzzing"): schemathesis
# against a cluster of the ticketctl the tests just built, correctness only.
# About a minute; for the whole suite, not for a run narrowed by arguments.
if [ $# -eq 0 ]; then
  TICKETCTL="${CARGO_TARGET_DIR:-target}/debug/ticketctl" FUZZ_EXAMPLES="${FUZZ_EXAMPLES:-20}" \
    bash scripts/fuzz.sh
fi
