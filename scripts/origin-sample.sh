#!/usr/bin/env bash
# While a ../shared/bench fleet run is going (start it in another shell, or first:
#   scripts/origin-sample.sh OUT & scripts/bench-fleet.sh ...), sample every 0.5 s what
# the origin's TCP connections are doing (`ss -tin` in its namespace: congestion window,
# round trip, bytes in flight, retransmissions) and every link queue's drop counter.
# This is how the request windows of 542a973 were found: the origin's flows had 22-70
# packets in flight at 50 ms round trips, without loss. Root. Usage: origin-sample.sh OUT
set -euo pipefail
out=${1:?usage: origin-sample.sh OUT}
prefix=${FB_PREFIX:-fleetb}
: >"$out"
until ip netns list | grep -q "^$prefix-origin"; do sleep 0.2; done
while ip netns list | grep -q "^$prefix-origin"; do
	echo "T $(date +%s.%N)" >>"$out"
	ip netns exec "$prefix-origin" ss -tin state established >>"$out" 2>/dev/null || true
	echo "Q" >>"$out"
	tc -n "$prefix-br" -s qdisc show 2>/dev/null | grep -A1 bfifo | grep -E 'dev|Sent' >>"$out" || true
	tc -n "$prefix-origin" -s qdisc show 2>/dev/null | grep -A1 bfifo | grep -E 'dev|Sent' | sed 's/^/O /' >>"$out" || true
	sleep 0.5
done
