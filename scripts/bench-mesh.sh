#!/usr/bin/env bash
# The floor under the fleet benchmark's figures: HOSTS hosts behind the same shaped links
# as ../shared/bench/fleet.sh (its topology.sh), each receiving MB MiB, an equal share
# from the origin and from every other host at once, by the cheapest means
# (scripts/mesh-floor.py: sendfile from tmpfs, no protocol, no hashing, no cache writes).
# Prints when the median and the last host had every byte, and each host's CPU seconds
# (its server's and its fetcher's) per GB received: the kernel's floor under a client's
# cost per byte on these links. Root (network namespaces).
# Usage: scripts/bench-mesh.sh HOSTS MB [RATE]
#   e.g. scripts/bench-mesh.sh 16 128      # the bytes of 16 x 128 MB
#        scripts/bench-mesh.sh 16 16.75    # a boot profile of 536 pieces of 32 KiB each
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ "${1:-}" = --inside ]; then
	# Inside the topology: origin 10.77.0.1, host I 10.77.0.(10+I).
	hosts=$2 share=$3
	data=$(mktemp /dev/shm/mesh-floor.XXXXXX)
	trap 'kill $(jobs -p) 2>/dev/null; rm -f "$data"' EXIT
	head -c "$share" /dev/urandom >"$data"
	ns() { nsenter --net="/run/netns/fleetb-$1" -- "${@:2}"; }
	out=$(mktemp -d)
	ns origin python3 "$here/mesh-floor.py" serve 10.77.0.1 9000 "$data" "$share" "$hosts" >/dev/null &
	servers=()
	for i in $(seq "$hosts"); do
		ns "h$i" python3 "$here/mesh-floor.py" serve "10.77.0.$((10 + i))" 9000 "$data" "$share" "$((hosts - 1))" >"$out/s$i" &
		servers+=($!)
	done
	sleep 1
	t0=$(python3 -c 'import time; print(time.time() + 1.5)')
	fetchers=()
	for i in $(seq "$hosts"); do
		peers=(10.77.0.1:9000)
		for j in $(seq "$hosts"); do [ "$j" = "$i" ] || peers+=("10.77.0.$((10 + j)):9000"); done
		ns "h$i" python3 "$here/mesh-floor.py" fetch "$t0" "$share" "${peers[@]}" >"$out/h$i" &
		fetchers+=($!)
	done
	wait "${fetchers[@]}" "${servers[@]}"
	# a host's CPU: its server's and its fetcher's, over the bytes it received
	for i in $(seq "$hosts"); do
		echo "$(cat "$out/h$i") $(cat "$out/s$i")"
	done | python3 -c '
import json, sys
hosts, nbytes = int(sys.argv[1]), int(sys.argv[2])
rows = [[float(x) for x in l.split()] for l in sys.stdin if l.strip()]
t = sorted(r[0] for r in rows)
c = sorted((r[1] + r[2]) / (nbytes / 1e9) for r in rows)
print(json.dumps({"floor": "mesh", "hosts": hosts, "bytes_per_host": nbytes,
                  "median_s": round(t[(len(t) - 1) // 2], 2), "last_s": round(t[-1], 2),
                  "cpu_s_per_gb_median": round(c[(len(c) - 1) // 2], 2), "cpu_s_per_gb_max": round(c[-1], 2)}))
' "$hosts" "$((share * hosts))"
	rm -rf "$out"
	exit 0
fi
[ $# -ge 2 ] || { sed -n '2,9p' "$0" >&2; exit 2; }
hosts=$1 mb=$2 rate=${3:-100mbit}
BENCH=${FLEET_BENCH:-$(cd "$here/../.." && pwd)/shared/bench}
[ -x "$BENCH/topology.sh" ] || { echo "no fleet benchmark at $BENCH (set FLEET_BENCH)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "bench-mesh.sh needs root (network namespaces)" >&2; exit 2; }
# each node sends each host an equal share: the origin and HOSTS-1 others
share=$(python3 -c "print(int($mb * 1048576 / $hosts))")
"$BENCH/topology.sh" --hosts "$hosts" --rate "$rate" -- "$0" --inside "$hosts" "$share" 2>/dev/null
