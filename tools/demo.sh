#!/usr/bin/env bash
# make demo: mount a real Nydus image with lazyimg, look around, verify, unmount.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
L=$PWD/$BUILD/bin/lazyimg
FIX=${LAZYIMG_FIXTURES:-$PWD/../shared/fixtures}/rafs
[ -d "$FIX" ] || { echo "demo: fixtures not found at $FIX (set LAZYIMG_FIXTURES)" >&2; exit 1; }
mnt=$(mktemp -d /tmp/lazyimg-demo.XXXXXX)
cleanup() { "$L" umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true; rmdir "$mnt" 2>/dev/null || true; }
trap cleanup EXIT
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

step "$L" inspect --no-chunks "$FIX/rafs-v6-2.2.boot"
step "$L" mount --bootstrap "$FIX/rafs-v6-2.2.boot" --blob-dir "$FIX/blobs" "$mnt"
step ls -la "$mnt"
step sh -c "head -n 12 '$mnt/lib.rs'"
step md5sum "$mnt/lib.rs" "$mnt/sync_io.rs"
step "$L" check --blob-dir "$FIX/blobs" "$FIX/rafs-v6-2.2.boot"
step "$L" umount "$mnt"
echo
echo "demo: a RAFS v6 (EROFS-based) image was mounted, read, verified and unmounted."
