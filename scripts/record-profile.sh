#!/usr/bin/env bash
# Records a boot profile the way an operator would on a canary host: serve the release
# from DATA_DIR on 127.0.0.1, mount TORRENT with --record-profile OUT in a scratch
# directory, run COMMAND (the service's start-up) with $MNT set to the mount, unmount.
# Usage: scripts/record-profile.sh TORRENT DATA_DIR OUT -- COMMAND [ARGS...]
#   e.g. scripts/record-profile.sh rel.torrent rel/ boot.profile -- sh -c 'cat "$MNT"/etc/*.conf'
# Root (FUSE). DATA_DIR is only read; the scratch cache and mountpoint are removed after.
set -euo pipefail
[ $# -ge 5 ] && [ "$4" = "--" ] || { sed -n '2,7p' "$0" >&2; exit 2; }
torrent=$1 data=$2 out=$3
shift 4
bin=${SWARMFS_BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release/swarmfs}
scratch=$(mktemp -d /tmp/swarmfs-record.XXXXXX)
seed_pid=""
cleanup() {
	"$bin" unmount "$scratch/mnt" 2>/dev/null || true
	[ -n "$seed_pid" ] && kill "$seed_pid" 2>/dev/null && wait "$seed_pid" 2>/dev/null
	rm -rf "$scratch"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" seed "$torrent" --data "$data" --listen "127.0.0.1:$port" --no-lsd 2>"$scratch/seed.log" &
seed_pid=$!
for _ in $(seq 600); do
	grep -q "seeding" "$scratch/seed.log" 2>/dev/null && break
	kill -0 "$seed_pid" 2>/dev/null || { cat "$scratch/seed.log" >&2; exit 1; }
	sleep 0.1
done
mkdir -p "$scratch/mnt"
# No prefetch: only what the start-up reads comes in, so each read waits and is seen.
"$bin" mount --no-prefetch --no-lsd --cache-dir "$scratch/cache" --peer "127.0.0.1:$port" \
	--listen 127.0.0.1:0 --record-profile "$out" "$torrent" "$scratch/mnt"
MNT=$scratch/mnt "$@"
"$bin" unmount "$scratch/mnt"
echo "recorded $(grep -vc '^#' "$out") reads in $out" >&2
