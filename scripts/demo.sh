#!/usr/bin/env bash
# The swarmfs demo: generate a sample release, publish it, seed it (announcing to a local
# opentracker), mount it on a "second host" (its own cache), read the start-up files at
# once, prewarm the rest, check every byte through the mount, unmount. Everything runs
# on 127.0.0.1 and is removed at the end.
#   scripts/demo.sh [SIZE]     (default 256M)
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-256M}
scripts/install-deps.sh
echo "== building swarmfs (release)" >&2
cargo build --release --quiet
sw=$PWD/target/release/swarmfs

work=$(mktemp -d /tmp/swarmfs-demo.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

echo "== generating a $size sample release in $work/release" >&2
"$sw" sample "$work/release" --size "$size"

port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
tport=$(port) sport=$(port)
tracker=http://127.0.0.1:$tport/announce

echo "== publishing" >&2
t0=$(date +%s.%N)
ih=$("$sw" publish "$work/release" --out "$work/release.torrent" --tracker "$tracker" | head -1)
t1=$(date +%s.%N)
echo "infohash $ih (publish took $(awk "BEGIN{printf \"%.2f\", $t1 - $t0}") s)" >&2

mkdir -p "$work/tracker"
echo "$ih" >"$work/tracker/whitelist"
(cd "$work/tracker" && exec opentracker -i 127.0.0.1 -p "$tport" -P "$tport" -d "$work/tracker" -w whitelist) \
	>"$work/tracker.log" 2>&1 &
pids+=($!)

echo "== seeding on 127.0.0.1:$sport (TCP and uTP)" >&2
"$sw" seed "$work/release.torrent" --data "$work/release" --listen "127.0.0.1:$sport" --no-lsd \
	2>"$work/seed.log" &
pids+=($!)
for _ in $(seq 100); do grep -q "^seeding " "$work/seed.log" && break; sleep 0.1; done
grep "^seeding " "$work/seed.log" >&2

echo "== mounting the release on a second host (its own cache, no data yet)" >&2
mkdir -p "$work/mnt"
mport=$(port)
t0=$(date +%s.%N)
"$sw" mount --cache-dir "$work/cache" --listen "127.0.0.1:$mport" --peer "127.0.0.1:$sport" \
	--no-lsd "$work/release.torrent" "$work/mnt"
pids+=("$(pgrep -n -f "swarmfs mount --cache-dir $work/cache")")
t1=$(date +%s.%N)
echo "== reading the start-up files through the mount" >&2
for f in bin/appserver lib/libcore.so.1 lib/libnet.so.1 config/app.yaml config/current.yaml; do
	head -c 1048576 "$work/mnt/$f" >/dev/null
done
t2=$(date +%s.%N)
"$sw" prewarm "$work/mnt"
t3=$(date +%s.%N)
"$sw" status "$work/mnt" >&2
echo "== checking every file through the mount" >&2
(cd "$work/release" && find . -type f -print0 | xargs -0 sha1sum) >"$work/sums"
(cd "$work/mnt" && sha1sum --quiet -c "$work/sums")
"$sw" unmount "$work/mnt"
awk "BEGIN{printf \"mount took %.2f s; start-up files readable %.2f s after mount; whole release local after %.2f s (start-up = %.0f%% of the full download time)\\n\", $t1-$t0, $t2-$t1, $t3-$t1, 100*($t2-$t1)/($t3-$t1)}" >&2
echo "all $(wc -l <"$work/sums") files identical through the mount; the published directory was only read" >&2
