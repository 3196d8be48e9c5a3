#!/usr/bin/env bash
# Switch back to the release deployed before the current one (see deploy.sh for the
# environment). The previous release is still mounted; if it is not (say, after a
# reboot), it is mounted again from its cached metadata and pieces; with SWARMFS_TRUST
# its signature is checked again and the older sequence number allowed (--allow-rollback).
set -euo pipefail
SWARMFS=${SWARMFS:-swarmfs}
RELEASES=${SWARMFS_RELEASES:-/srv/releases}
CURRENT=${SWARMFS_CURRENT:-/srv/current}
RELOAD=${SWARMFS_RELOAD:-systemctl reload nginx}
hist=$RELEASES/.history
n=$(wc -l <"$hist" 2>/dev/null || echo 0)
[ "$n" -ge 2 ] || { echo "rollback: no previous release recorded in $hist" >&2; exit 1; }
cur=$(sed -n "${n}p" "$hist")
prev=$(sed -n "$((n - 1))p" "$hist")
mnt=$RELEASES/$prev
if ! "$SWARMFS" status "$mnt" >/dev/null 2>&1; then
	mkdir -p "$mnt"
	# shellcheck disable=SC2086
	"$SWARMFS" mount $SWARMFS_MOUNT_ARGS ${SWARMFS_TRUST:+--trust "$SWARMFS_TRUST" --allow-rollback} "$prev" "$mnt"
fi
ln -sfn "$mnt" "$CURRENT.new.$$"
mv -T "$CURRENT.new.$$" "$CURRENT"
eval "$RELOAD"
# The release rolled back from becomes the "previous" one.
{ grep -vx -e "$prev" -e "$cur" "$hist" || true; echo "$cur"; echo "$prev"; } >"$hist.new" && mv "$hist.new" "$hist"
echo "rollback: $CURRENT -> $mnt (was $cur)" >&2
