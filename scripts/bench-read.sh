#!/usr/bin/env bash
# The local read path benchmark (root: FUSE mounts, drop_caches). Prints one JSON line.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --quiet --bin swarmfs --example read_bench
exec target/release/examples/read_bench
