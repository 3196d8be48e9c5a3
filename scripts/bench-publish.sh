#!/usr/bin/env bash
# Publish speed against `sha1sum` over the same files (page cache warm for both).
#   scripts/bench-publish.sh [SIZE] [RUNS]    default 512M, 5 runs; prints one JSON line
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-512M} runs=${2:-5}
cargo build --release --quiet
sw=$PWD/target/release/swarmfs
work=$(mktemp -d /tmp/swarmfs-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
"$sw" sample "$work/rel" --size "$size" --small-files 2000 2>/dev/null
now() { date +%s.%N; }
best_pub=999999 best_sha=999999
for _ in $(seq "$runs"); do
	t0=$(now); (cd "$work/rel" && find . -type f -print0 | xargs -0 sha1sum >/dev/null); t1=$(now)
	best_sha=$(awk "BEGIN{d=$t1-$t0; print (d<$best_sha)?d:$best_sha}")
	t0=$(now); "$sw" publish "$work/rel" --out "$work/rel.torrent" >/dev/null 2>&1; t1=$(now)
	best_pub=$(awk "BEGIN{d=$t1-$t0; print (d<$best_pub)?d:$best_pub}")
done
bytes=$(du -sb "$work/rel" | cut -f1)
awk "BEGIN{printf \"{\\\"bench\\\":\\\"publish\\\",\\\"bytes\\\":%d,\\\"cores\\\":$(nproc),\\\"publish_s\\\":%.3f,\\\"sha1sum_s\\\":%.3f,\\\"ratio\\\":%.3f}\\n\", $bytes, $best_pub, $best_sha, $best_pub/$best_sha}"
