#!/usr/bin/env bash
# make demo: mount a real Nydus image with lazyimg, look around, verify, unmount.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
L=$PWD/$BUILD/bin/lazyimg
FIX=${LAZYIMG_FIXTURES:-$PWD/../shared/fixtures}/rafs
[ -d "$FIX" ] || { echo "demo: fixtures not found at $FIX (set LAZYIMG_FIXTURES)" >&2; exit 1; }
PEERS=${LAZYIMG_PEERS:-$PWD/../shared/peers}
mnt=$(mktemp -d /tmp/lazyimg-demo.XXXXXX)
W=$(mktemp -d /tmp/lazyimg-demo-reg.XXXXXX)
cleanup() {
	"$L" umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
	rmdir "$mnt" 2>/dev/null || true
	"$L" umount "$W/mnt" 2>/dev/null || umount -l "$W/mnt" 2>/dev/null || true
	[ -d "$W/reg" ] && bash "$PEERS/registry-up.sh" --stop --dir "$W/reg" > /dev/null 2>&1 || true
	mountpoint -q "$W/mnt" || rm -rf "$W"
}
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

# part 2, the main job: lazy pull from a registry on 127.0.0.1
if [ ! -f "$PEERS/registry-up.sh" ]; then
	echo "demo: $PEERS not found: skipping the registry part" >&2
	exit 0
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
echo
echo "demo: starting a docker-registry on 127.0.0.1:$port and pushing a 3-layer OCI image (small:v1, 5 MB)"
bash "$PEERS/registry-up.sh" --dir "$W/reg" --port "$port" > "$W/reg.out" 2>&1 || { cat "$W/reg.out"; exit 1; }
bash "$PEERS/build-test-images.sh" --work "$W/img" --registry "127.0.0.1:$port" --no-debian > "$W/img.log" 2>&1 ||
	{ tail -20 "$W/img.log"; exit 1; }
R=127.0.0.1:$port
mkdir -p "$W/mnt"
step "$L" convert -q --insecure "$R/small:v1" "$R/small:v1-nydus"
step "$L" mount --insecure --cache-dir "$W/cache" "$R/small:v1-nydus" "$W/mnt"
step ls -la "$W/mnt" "$W/mnt/blobs"
step cat "$W/mnt/etc/hello.txt"
echo
echo "demo: only what was read came from the registry (5 MB image):"
step "$L" stats "$W/mnt"
step sh -c "cat '$W/mnt/blobs/random-1m.bin' | sha256sum"
step "$L" stats "$W/mnt"
step "$L" umount "$W/mnt"
echo
echo "demo: the same image converted to nydus in the registry, mounted by reference and read lazily."
