#!/usr/bin/env bash
# Deploy a release with swarmfs: mount it beside the running one, wait until the paths the
# application needs at start-up are readable (or, with --prewarm, everything), switch
# the "current" symlink atomically, reload the web server, keep the previous release
# mounted for rollback and unmount the one before it.
#
#   deploy.sh [--prewarm] [--wait PATH]... [--timeout SECS] SOURCE
#
# SOURCE: a .torrent file, a magnet link or an infohash (as for `swarmfs mount`).
# --wait PATH: a path inside the release to read completely before switching
#   (repeatable; default: every path listed in the release's .swarmfs-boot file if it has
#   one, else only the release's top directory).
# Environment (defaults in brackets):
#   SWARMFS             the swarmfs binary [swarmfs]
#   SWARMFS_RELEASES    where releases are mounted, one directory per infohash [/srv/releases]
#   SWARMFS_CURRENT     the symlink the web server serves from [/srv/current]
#   SWARMFS_RELOAD      command that reloads the web server [systemctl reload nginx]
#   SWARMFS_MOUNT_ARGS  extra `swarmfs mount` arguments (--tracker, --peer, --cache-dir ...)
#   SWARMFS_TRUST       a public key (file or hex, `swarmfs keygen`): mount only releases
#                       signed by it (`publish --sign`), never one older than one accepted
# Exit codes: 0 deployed, 1 usage or mount error, 2 start-up paths not readable in time.
set -euo pipefail

SWARMFS=${SWARMFS:-swarmfs}
RELEASES=${SWARMFS_RELEASES:-/srv/releases}
CURRENT=${SWARMFS_CURRENT:-/srv/current}
RELOAD=${SWARMFS_RELOAD:-systemctl reload nginx}
prewarm=0 timeout=300 waits=()
while [ $# -gt 1 ]; do
	case $1 in
	--prewarm) prewarm=1; shift ;;
	--wait) waits+=("$2"); shift 2 ;;
	--timeout) timeout=$2; shift 2 ;;
	*) echo "deploy: unknown option $1" >&2; exit 1 ;;
	esac
done
[ $# -eq 1 ] || { sed -n '2,20p' "$0" >&2; exit 1; }
source=$1

ih=$("$SWARMFS" info "$source" 2>/dev/null | head -1)
[ ${#ih} -eq 40 ] || { echo "deploy: cannot read the release $source" >&2; exit 1; }
mnt=$RELEASES/$ih
mkdir -p "$mnt"
if ! "$SWARMFS" status "$mnt" >/dev/null 2>&1; then
	# shellcheck disable=SC2086
	"$SWARMFS" mount $SWARMFS_MOUNT_ARGS ${SWARMFS_TRUST:+--trust "$SWARMFS_TRUST"} "$source" "$mnt"
fi
echo "deploy: $ih mounted at $mnt" >&2

# Wait for the start-up paths (reading them fetches them first), or for everything.
if [ ${#waits[@]} -eq 0 ] && [ -f "$mnt/.swarmfs-boot" ]; then
	mapfile -t waits <"$mnt/.swarmfs-boot"
fi
deadline=$((SECONDS + timeout))
for p in "${waits[@]}"; do
	until timeout $((deadline - SECONDS > 0 ? deadline - SECONDS : 1)) cat -- "$mnt/$p" >/dev/null 2>&1 ||
		[ -d "$mnt/$p" ]; do
		[ $SECONDS -lt "$deadline" ] || { echo "deploy: $p not readable within ${timeout}s; not switching" >&2; exit 2; }
		sleep 1
	done
done
if [ $prewarm = 1 ]; then
	"$SWARMFS" prewarm --timeout "${timeout}s" "$mnt" || { echo "deploy: prewarm failed; not switching" >&2; exit 2; }
fi

# Switch atomically: a new symlink renamed over the old one.
previous=$(readlink "$CURRENT" 2>/dev/null || true)
ln -sfn "$mnt" "$CURRENT.new.$$"
mv -T "$CURRENT.new.$$" "$CURRENT"
eval "$RELOAD"
echo "deploy: $CURRENT -> $mnt" >&2

# History: the last line is current; the one before is kept mounted for rollback.
hist=$RELEASES/.history
{ grep -vx "$ih" "$hist" 2>/dev/null || true; echo "$ih"; } >"$hist.new" && mv "$hist.new" "$hist"
[ -n "$previous" ] && echo "deploy: previous release $previous stays mounted for rollback" >&2
n=$(wc -l <"$hist")
if [ "$n" -ge 3 ]; then
	old=$(sed -n "$((n - 2))p" "$hist")
	if [ "$RELEASES/$old" != "$previous" ] && "$SWARMFS" status "$RELEASES/$old" >/dev/null 2>&1; then
		"$SWARMFS" unmount "$RELEASES/$old" && echo "deploy: unmounted $old" >&2
	fi
fi
