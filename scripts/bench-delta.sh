#!/usr/bin/env bash
# The delta-deploy benchmark: a fleet that holds release N in its caches mounts N+1 at
# once, on the shaped network namespaces of ../shared/bench/topology.sh (root). For each
# variant of N+1 (scripts/delta-variant.py), one JSON line for swarmfs and one for aria2
# (which downloads N+1 whole): per host bytes downloaded and reused, the changed bytes,
# the origin's bytes sent, boot and complete times, mismatches.
# Usage: scripts/bench-delta.sh [--hosts 8] [--rate 100mbit] [--size-mb 128]
#            [--variants change1,change5,change20,add-middle,rename,insert,nobase,mktorrent]
#            [--no-aria2] [--learnt none|one|all]
#   --learnt: which hosts booted N before (N mounted, its boot set read, unmounted: the
#   mount recorded its start-up); N+1 is mounted with no flag either way.
#   nobase: the change5 tree published without --base; mktorrent: the change5 tree in a
#   torrent made by mktorrent (no BEP 47 sha1, no padding), N too.
set -euo pipefail
cd "$(dirname "$0")/.."
hosts=8 rate=100mbit size=128 aria2=1 learnt=none
variants=change1,change5,change20,add-middle,rename,insert,nobase,mktorrent
while [ $# -gt 0 ]; do
	case $1 in
	--hosts) hosts=$2; shift 2 ;;
	--rate) rate=$2; shift 2 ;;
	--size-mb) size=$2; shift 2 ;;
	--variants) variants=$2; shift 2 ;;
	--no-aria2) aria2=0; shift ;;
	--learnt) learnt=$2; shift 2 ;;
	*) sed -n '2,13p' "$0" >&2; exit 2 ;;
	esac
done
BENCH=${FLEET_BENCH:-$(cd .. && pwd)/shared/bench}
[ -x "$BENCH/topology.sh" ] || { echo "no fleet benchmark at $BENCH (set FLEET_BENCH)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "bench-delta.sh needs root (network namespaces, FUSE)" >&2; exit 2; }
scripts/install-deps.sh --bench
if [ -z "${SWARMFS_BIN:-}" ]; then
	cargo build --release --quiet --bin swarmfs
	SWARMFS_BIN=$PWD/target/release/swarmfs
fi
WORK=${DELTA_WORKDIR:-/dev/shm/swarmfs-delta}
mkdir -p "$WORK"
n=$WORK/rel-${size}m
python3 "$BENCH/gen_release.py" --out "$n" --size-mb "$size" --seed 1 --reuse >&2
ih() { "$SWARMFS_BIN" info "$1" 2>/dev/null | head -1; }
"$SWARMFS_BIN" publish "$n" --out "$WORK/n.torrent" >/dev/null 2>&1
rm -f "$WORK/n-mk.torrent"
mktorrent -l 15 -a "http://10.77.0.1:6969/announce" -o "$WORK/n-mk.torrent" "$n" >/dev/null
IFS=, read -ra list <<<"$variants"
for v in "${list[@]}"; do
	case $v in nobase | mktorrent) tree=change5 ;; *) tree=$v ;; esac
	m=$WORK/m-${size}m-$tree
	if [ ! -d "$m" ]; then
		python3 scripts/delta-variant.py "$n" "$m" "$tree" >"$m.json"
	fi
	meta=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d["variant"]=sys.argv[2]; print(json.dumps(d))' "$m.json" "$v")
	base_torrent=$WORK/n.torrent seeder=swarmfs
	case $v in
	nobase) "$SWARMFS_BIN" publish "$m" --out "$WORK/m-${size}m-$v.torrent" >/dev/null 2>&1 ;;
	mktorrent)
		rm -f "$WORK/m-${size}m-$v.torrent"
		mktorrent -l 15 -a "http://10.77.0.1:6969/announce" -o "$WORK/m-${size}m-$v.torrent" "$m" >/dev/null
		base_torrent=$WORK/n-mk.torrent seeder=aria2 ;;
	*) "$SWARMFS_BIN" publish "$m" --base "$WORK/n.torrent" --out "$WORK/m-${size}m-$v.torrent" >/dev/null 2>&1 ;;
	esac
	clients=(swarmfs)
	[ "$aria2" = 1 ] && clients+=(aria2)
	for c in "${clients[@]}"; do
		"$BENCH/topology.sh" --hosts "$hosts" --rate "$rate" --force-clean -- \
			python3 scripts/delta-fleet.py "$c" --hosts "$hosts" --bin "$SWARMFS_BIN" \
			--torrent "$WORK/m-${size}m-$v.torrent" --data "$m" --infohash "$(ih "$WORK/m-${size}m-$v.torrent")" \
			--base-torrent "$base_torrent" --base-data "$n" --base-infohash "$(ih "$base_torrent")" \
			--bootset "$n.bootset" --learnt "$learnt" --meta "$meta" --work "$WORK/run" \
			--seeder "$seeder" --bench "$BENCH" 2>>"$WORK/bench.log"
	done
done
