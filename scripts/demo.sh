#!/usr/bin/env bash
# The swarmfs demo: generate a sample release, publish it, seed it, and let a second,
# independent BitTorrent peer (aria2c, via a local opentracker) fetch it; then check
# every byte. Everything runs on 127.0.0.1 and is removed at the end.
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

echo "== a second peer (aria2c) fetches the release through the tracker" >&2
t0=$(date +%s.%N)
aria2c --no-conf=true --enable-dht=false --bt-enable-lpd=false --seed-time=0 \
	--summary-interval=0 --console-log-level=error --download-result=hide \
	--stop=300 -d "$work/peer" "$work/release.torrent" >/dev/null
t1=$(date +%s.%N)
bytes=$(du -sb --exclude=.pad "$work/release" | cut -f1)
awk "BEGIN{s=$t1-$t0; printf \"fetched %d bytes in %.2f s (%.0f MiB/s)\\n\", $bytes, s, $bytes/s/1048576}" >&2

echo "== checking every file" >&2
(cd "$work/release" && find . -type f -print0 | xargs -0 sha1sum) >"$work/sums"
(cd "$work/peer/release" && sha1sum --quiet -c "$work/sums")
echo "all $(wc -l <"$work/sums") files identical; the published directory was only read" >&2
