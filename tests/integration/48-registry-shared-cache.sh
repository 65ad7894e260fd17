#!/usr/bin/env bash
# Standalone mounts sharing one --cache-dir (the default, for a user who mounts
# several images by hand): two `lazyimg mount` processes of the same image and
# one of a different image run at once on one cache directory.
#  - a file read through mount A costs mount B no registry byte (B takes the
#    chunks A made ready from the shared state file), and B reads it right;
#  - chunks made ready by A and by B both survive in the state file: a third
#    mount after both are gone fetches nothing for either file;
#  - RemoveCache-like removal and eviction never take a blob another process
#    has open (unit test test_bcache covers those; here: `--cache-max-size 1`
#    on a third mount while A holds the blob leaves A reading right).
set -euo pipefail
. "$(dirname "$0")/reglib.sh"
W=$(mktemp -d /tmp/lazyimg-t48.XXXXXX)
REG_DIRS=()
cleanup() {
	reg_cleanup
	awk -v w="$W/" 'index($2, w) == 1 { f = 1 } END { exit !f }' /proc/mounts || rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
export LC_ALL=C
C=$W/cache

start_registry "$W/reg"
push_small_image "$W/img"
unpack_small "$W/img" "$W/rootfs"
small_nydus v1-nydus
small_nydus v1-nydus-lz4 --compressor lz4
REF=$REGISTRY_HOST/small:v1-nydus
echo "registry $REGISTRY_HOST, image converted"

reg_mount "$W/a" --insecure --no-prefetch --cache-dir "$C" "$REF" || reg_die "mount A failed: $(cat "$W/a.err")"
reg_mount "$W/b" --insecure --no-prefetch --cache-dir "$C" "$REF" ||
	reg_die "mount B on the same cache dir failed: $(cat "$W/b.err")"
reg_ok "two standalone mounts of one image run on one cache directory"
reg_mount "$W/c" --insecure --no-prefetch --cache-dir "$C" "$REGISTRY_HOST/small:v1-nydus-lz4" ||
	reg_die "mount C (another image) on the same cache dir failed: $(cat "$W/c.err")"
reg_check "a third mount, of another image, too" 'cmp "$W/c/etc/hello.txt" "$W/rootfs/etc/hello.txt"'

F1=blobs/random-1m.bin F2=blobs/text-16m.txt
a0=$(reg_stat "$W/a" backend_bytes)
reg_check "A reads $F1 right" 'cmp "$W/a/$F1" "$W/rootfs/$F1"'
a1=$(reg_stat "$W/a" backend_bytes)
b0=$(reg_stat "$W/b" backend_bytes)
reg_check "B reads $F1 right" 'cmp "$W/b/$F1" "$W/rootfs/$F1"'
b1=$(reg_stat "$W/b" backend_bytes)
reg_check "A fetched $((a1 - a0)) bytes for it, B then $((b1 - b0)): the chunks A made ready are B's hits" \
	'[ "$((a1 - a0))" -gt 0 ] && [ "$((b1 - b0))" -eq 0 ]'
# the other way round, on another file, while A also reads it (both may fetch; both are right)
reg_check "B reads $F2 right" 'cmp "$W/b/$F2" "$W/rootfs/$F2"'
b2=$(reg_stat "$W/b" backend_bytes)
a2=$(reg_stat "$W/a" backend_bytes)
reg_check "A reads $F2 right" 'cmp "$W/a/$F2" "$W/rootfs/$F2"'
a3=$(reg_stat "$W/a" backend_bytes)
reg_check "B fetched $((b2 - b1)) bytes for $F2, A then $((a3 - a2))" '[ "$((b2 - b1))" -gt 0 ] && [ "$((a3 - a2))" -eq 0 ]'

# a capped mount on the same directory while A and B hold the blob: nothing of theirs is evicted
reg_mount "$W/d" --insecure --no-prefetch --cache-dir "$C" --cache-max-size 1 "$REGISTRY_HOST/small:v1-nydus-lz4" ||
	reg_die "mount D failed: $(cat "$W/d.err")"
cmp "$W/d/etc/hello.txt" "$W/rootfs/etc/hello.txt" > /dev/null 2>&1 || true
reg_umount "$W/d"
a4=$(reg_stat "$W/a" backend_bytes)
reg_check "a capped mount beside them evicted nothing A holds: A re-reads both files for 0 bytes" \
	'sync; echo 3 > /proc/sys/vm/drop_caches; cmp "$W/a/$F1" "$W/rootfs/$F1" && cmp "$W/a/$F2" "$W/rootfs/$F2" && [ "$(reg_stat "$W/a" backend_bytes)" -eq "$a4" ]'

reg_umount "$W/a"
reg_umount "$W/b"
reg_umount "$W/c"
reg_mount "$W/e" --insecure --no-prefetch --cache-dir "$C" "$REF" || reg_die "mount E failed: $(cat "$W/e.err")"
reg_check "after both are gone, a new mount reads $F1 and $F2 right for 0 registry bytes (bits of A and B kept)" \
	'cmp "$W/e/$F1" "$W/rootfs/$F1" && cmp "$W/e/$F2" "$W/rootfs/$F2" && [ "$(reg_stat "$W/e" backend_bytes)" -eq 0 ]'
reg_check "the whole tree is right" 'tree_same "$W/rootfs" "$W/e"'
reg_umount "$W/e"
reg_finish
