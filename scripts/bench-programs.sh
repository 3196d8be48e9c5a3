#!/usr/bin/env bash
# Real programs booted from a mount: a Python interpreter importing part of its standard
# library (many small files), and `rustc --version --verbose` (a 0.6 MB binary whose two
# shared libraries are 350 MB: a large dynamically linked program). Each runs from a
# swarmfs mount that one seed feeds over 127.0.0.1 at --rate-mbit (the seed's upload and
# the mount's download limited), against the same run from a local directory. Root
# (FUSE, drop_caches).
#
# Cases, per program:
#   local-warm    the release directory, page cache warm: the floor
#   local-cold    the same after drop_caches (the directory is on /var/tmp, a disk)
#   mount-cold    a fresh cache, no boot profile anywhere (a first release)
#   mount-learnt  a fresh cache booting from the start-up the cold mount recorded (what
#                 the next release, or a peer that booted this one, gives a mount)
# Prints one JSON line per program and case: seconds to done, bytes the mount had
# downloaded when the program finished, and the release's full time at the rate.
#
# Usage: [SWARMFS_BIN=...] scripts/bench-programs.sh [--rate-mbit 100] [--keep]
set -euo pipefail
cd "$(dirname "$0")/.."
RATE_MBIT=100
KEEP=
while [ $# -gt 0 ]; do
	case $1 in
	--rate-mbit) RATE_MBIT=$2; shift 2 ;;
	--keep) KEEP=1; shift ;;
	-h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "bench-programs: unknown option $1 (see --help)" >&2; exit 2 ;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "bench-programs: needs root (FUSE mounts, drop_caches)" >&2; exit 2; }
scripts/install-deps.sh
# SWARMFS_BIN benches a binary built elsewhere (say, an earlier commit's, side by side).
if [ -z "${SWARMFS_BIN:-}" ]; then
	cargo build --release --quiet --bin swarmfs
	SWARMFS_BIN=$PWD/target/release/swarmfs
fi
BIN=$SWARMFS_BIN
RATE=$((RATE_MBIT * 125000))
WORK=/var/tmp/swarmfs-programs
PY=$(readlink -f /usr/bin/python3)
PYVER=$(basename "$PY")
TOOLCHAIN=$(rustc --print sysroot)

# The release: python/{bin,lib/pythonX.Y} and rust/{bin/rustc,lib/*.so*}, copied once.
REL=$WORK/release
if [ ! -e "$REL.complete" ]; then
	rm -rf "$REL"
	mkdir -p "$REL/python/bin" "$REL/python/lib" "$REL/rust/bin" "$REL/rust/lib"
	cp "$PY" "$REL/python/bin/"
	# (symlinks followed: a release holds no link that leaves it)
	cp -rL --preserve=mode "/usr/lib/$PYVER" "$REL/python/lib/"
	find "$REL/python/lib" -name __pycache__ -prune -exec rm -rf {} +
	cp "$TOOLCHAIN/bin/rustc" "$REL/rust/bin/"
	cp -L "$TOOLCHAIN"/lib/*.so* "$REL/rust/lib/"
	touch "$REL.complete"
fi
rm -f "$WORK/release.torrent"
"$BIN" publish "$REL" --out "$WORK/release.torrent" >/dev/null
size=$(du -sb "$REL" | cut -f1)

MNT=$WORK/mnt
mkdir -p "$MNT"
seed_pid=
cleanup() {
	mountpoint -q "$MNT" && "$BIN" unmount "$MNT" >/dev/null 2>&1 || true
	[ -n "$seed_pid" ] && kill "$seed_pid" 2>/dev/null && wait "$seed_pid" 2>/dev/null || true
	[ -n "$KEEP" ] || rm -rf "$WORK/cache" "$WORK/seed.log"
}
trap cleanup EXIT
port=$((20000 + RANDOM % 20000))
RUST_LOG=swarmfs=warn "$BIN" seed "$WORK/release.torrent" --data "$REL" --listen "127.0.0.1:$port" \
	--upload-limit "$RATE" --no-lsd >"$WORK/seed.log" 2>&1 &
seed_pid=$!
for _ in $(seq 100); do
	ss -ltn "sport = :$port" | grep -q LISTEN && break
	sleep 0.1
done

# The programs, run with ROOT as the release's root; what each prints goes to /dev/null.
run_program() {
	local prog=$1 root=$2
	case $prog in
	python) PYTHONHOME=$root/python PYTHONDONTWRITEBYTECODE=1 "$root/python/bin/$PYVER" -S -c \
		'import json, email.message, http.client, asyncio, decimal, logging.handlers, xml.dom.minidom, argparse, sqlite3, unittest, urllib.request, csv, zipfile, tarfile' ;;
	rustc) "$root/rust/bin/rustc" --version --verbose ;;
	esac >/dev/null
}
seconds() { python3 -c 'import sys, time; print(round(time.time() - float(sys.argv[1]), 3))' "$1"; }
report() { # program case seconds downloaded
	printf '{"bench": "programs", "program": "%s", "case": "%s", "seconds": %s, "downloaded_bytes": %s, "release_bytes": %s, "rate_mbit": %s, "full_bound_s": %s}\n' \
		"$1" "$2" "$3" "$4" "$size" "$RATE_MBIT" "$(python3 -c "print(round($size / $RATE, 2))")"
}

for prog in python rustc; do
	run_program "$prog" "$REL"
	t=$(date +%s.%N); run_program "$prog" "$REL"; report "$prog" local-warm "$(seconds "$t")" 0
	sync; echo 3 >/proc/sys/vm/drop_caches
	t=$(date +%s.%N); run_program "$prog" "$REL"; report "$prog" local-cold "$(seconds "$t")" 0
	profile=
	for case in mount-cold mount-learnt; do
		rm -rf "$WORK/cache"
		args=()
		[ "$case" = mount-learnt ] && args=(--boot-profile "$profile")
		"$BIN" mount "$WORK/release.torrent" "$MNT" --cache-dir "$WORK/cache" --peer "127.0.0.1:$port" \
			--listen 127.0.0.2:0 --download-limit "$RATE" --no-lsd "${args[@]}"
		t=$(date +%s.%N); run_program "$prog" "$MNT"; took=$(seconds "$t")
		got=$("$BIN" status "$MNT" --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["downloaded_bytes"])')
		report "$prog" "$case" "$took" "$got"
		if [ "$case" = mount-cold ]; then
			# The start-up ends 5 s after the last read; then the recording is whole.
			sleep 6
			profile=$WORK/$prog.profile
			cp "$WORK"/cache/*/startup.profile "$profile"
		fi
		"$BIN" unmount "$MNT" >/dev/null
	done
done
