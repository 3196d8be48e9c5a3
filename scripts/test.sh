#!/usr/bin/env bash
# Installs the test dependencies and runs the whole test suite (unit, real swarms on
# 127.0.0.1, third-party clients). Release mode: one build serves tests, demo and bench.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
exec cargo test --release "$@"
