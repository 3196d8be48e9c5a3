#!/usr/bin/env bash
# The fleet benchmark (../shared/bench/fleet.sh, root: network namespaces), with swarmfs's
# own cost per host added. Usage: scripts/bench-fleet.sh [fleet.sh options...]
#   e.g. scripts/bench-fleet.sh --scenario swarmfs-lazy,bt-aria2 --hosts 8 --size-mb 256 --rate 100mbit
# Prints fleet.sh's JSON lines; after each swarmfs-lazy line, one more line with every
# host's CPU seconds per GB received and peak RSS (from the "mount ends" log line), and
# one with where the boot time went (scripts/boot-trace.py).
# With SWARMFS_PROFILE=record, a boot profile is first recorded the way an operator would
# (scripts/record-profile.sh: one local mount of the release, the benchmark's boot reader
# run through it) and every host mounts with --boot-profile.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=${FLEET_BENCH:-$(cd .. && pwd)/shared/bench}
WORKDIR=${FLEET_WORKDIR:-/dev/shm/swarmfs-fleet}
[ -x "$BENCH/fleet.sh" ] || { echo "no fleet benchmark at $BENCH (set FLEET_BENCH)" >&2; exit 2; }
# The rivals it runs side by side (btfs, aria2, opentracker, curl): a scenario whose tool
# is missing is skipped, not failed, so install them first.
scripts/install-deps.sh --bench
# SWARMFS_BIN benches a binary built elsewhere (say, the last commit's, side by side).
if [ -z "${SWARMFS_BIN:-}" ]; then
	cargo build --release --quiet --bin swarmfs
	SWARMFS_BIN=$PWD/target/release/swarmfs
fi
export SWARMFS_BIN
# The mounts log every read that waited and every piece's source (target swarmfs::piece),
# for scripts/boot-trace.py.
export RUST_LOG=${RUST_LOG:-swarmfs=info,librqbit=warn,librqbit_core=warn,swarmfs::piece=debug}
if [ "${SWARMFS_PROFILE:-}" = record ]; then
	size=256 seed=1 piece=256
	args=("$@")
	for ((i = 0; i < ${#args[@]} - 1; i++)); do
		case ${args[i]} in
		--size-mb) size=${args[i + 1]} ;;
		--seed) seed=${args[i + 1]} ;;
		--piece-kb) piece=${args[i + 1]} ;;
		esac
	done
	rel=$WORKDIR/releases/rel-${size}m-s$seed
	mkdir -p "$WORKDIR/releases"
	python3 "$BENCH/gen_release.py" --out "$rel" --size-mb "$size" --seed "$seed" --reuse >&2
	# swarmfs's own torrent of the release: a profile names paths, so it serves the
	# fleet's torrent (made by mktorrent) as well.
	"$SWARMFS_BIN" publish "$rel" --piece-size "${piece}K" --out "$WORKDIR/record.torrent" >/dev/null
	profile=$WORKDIR/boot.profile
	RUST_LOG=swarmfs=warn scripts/record-profile.sh "$WORKDIR/record.torrent" "$rel" "$profile" -- \
		sh -c 'python3 "$0/reader.py" boot --root "$MNT" --manifest "$1" --out /dev/null' "$BENCH" "$rel.manifest.json"
	export SWARMFS_MOUNT_ARGS="${SWARMFS_MOUNT_ARGS:-} --boot-profile $profile"
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
# This run's directory is the one fleet.sh adds (the newest by mtime need not be: a
# directory of an earlier run changes when its data is deleted).
before=$(ls "$WORKDIR/runs" 2>/dev/null | sort || true)
"$BENCH/fleet.sh" --workdir "$WORKDIR" "$@" | tee "$out"
run=$WORKDIR/runs/$(comm -13 <(echo "$before") <(ls "$WORKDIR/runs" | sort) | tail -1)/
python3 - "$run" <<'PY'
import glob, json, os, re, sys
run = sys.argv[1]
logs = sorted(glob.glob(os.path.join(run, "swarmfs-lazy", "h*", "client.log")),
              key=lambda p: int(re.search(r"/h(\d+)/", p).group(1)))
cpu, rss, gb, sys_share, waits, discarded = [], [], [], [], [], []
for p in logs:
    text = re.sub(r"\x1b\[[0-9;]*m", "", open(p, errors="replace").read())
    m = [l for l in text.splitlines() if "mount ends" in l]
    if not m:
        continue
    f = dict(re.findall(r'(\w+)=("?[^ "]*"?)', m[-1]))
    got = int(f["downloaded_bytes"])
    c = float(f["cpu_seconds"].strip('"'))
    cpu.append(round(c / max(got / 1e9, 1e-9), 2))
    rss.append(int(f["peak_rss_mib"]))
    gb.append(round(got / 1e9, 3))
    # The kernel's share of the CPU and the wake-ups per MB received (logged since the
    # mount's usage split them; older binaries' lines lack them).
    if "system_seconds" in f and c > 0:
        sys_share.append(round(float(f["system_seconds"].strip('"')) / c, 2))
        waits.append(round(int(f["waits"]) / max(got / 1e6, 1e-9), 1))
    if "discarded_bytes" in f:
        discarded.append(round(int(f["discarded_bytes"]) / max(got, 1), 3))
if cpu:
    print(json.dumps({"scenario": "swarmfs-lazy", "cost": "per host",
                      "cpu_s_per_gb": cpu, "cpu_s_per_gb_max": max(cpu),
                      "peak_rss_mib": rss, "peak_rss_mib_max": max(rss),
                      "received_gb": gb,
                      **({"system_share": sys_share, "waits_per_mb": waits} if sys_share else {}),
                      **({"discarded_share": discarded} if discarded else {})}))
PY
# Where the boot time went (one more JSON line), when the run had swarmfs hosts.
if [ -d "$run/swarmfs-lazy" ]; then
	python3 scripts/boot-trace.py "$run" || true
fi
