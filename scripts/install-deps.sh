#!/usr/bin/env bash
# Installs what swarmfs's build, tests and demo need on Debian 12, as root.
# Safe to run again: it installs only what is missing.
# With --bench, also what ../shared/bench/fleet.sh runs beside swarmfs (btfs, curl, tc).
set -euo pipefail

pkgs=(
	build-essential pkg-config  # C code in the TLS and uTP crates
	fuse3                       # /dev/fuse helpers (fusermount3) for mounts
	aria2 opentracker           # third-party peer and tracker for interop tests and the demo
	transmission-cli            # transmission-show, to check our torrents
	python3 python3-libtorrent  # a libtorrent peer for interop tests
	mktorrent                   # torrents made by another tool
	nginx                       # the web server of the deploy test
	iproute2                    # ip netns: Transmission in its own namespace (interop test)
)
if [ "${1:-}" = --bench ]; then
	pkgs+=(btfs curl)           # the fleet benchmark's lazy-FS rival, HTTP origin
fi
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "install-deps: need root to install: ${missing[*]}" >&2
		exit 1
	fi
	echo "install-deps: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
