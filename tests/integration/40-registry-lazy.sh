#!/usr/bin/env bash
# Lazy pull from a real docker-registry on 127.0.0.1: a 3-layer OCI image is
# converted with `lazyimg convert` registry-to-registry, mounted by reference,
# and compared with the source layers unpacked independently; reading one
# small file fetches only the manifest, the bootstrap layer and that file's
# chunk (checked from `lazyimg stats` and the registry's access log).
set -euo pipefail
. "$(dirname "$0")/reglib.sh"
W=$(mktemp -d /tmp/lazyimg-t40.XXXXXX)
MNT=$W/mnt
REG_DIRS=()
cleanup() {
	mountpoint -q "$MNT" 2>/dev/null && { "$LAZYIMG" umount "$MNT" || umount -l "$MNT"; }
	stop_registries
	rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$MNT" "$W/reg"

start_registry "$W/reg"
push_small_image "$W/img"
echo "registry $REGISTRY_HOST, source image pushed"

"$LAZYIMG" convert -q --insecure "$REGISTRY_HOST/small:v1" "$REGISTRY_HOST/small:v1-nydus"
echo "converted to $REGISTRY_HOST/small:v1-nydus"

# a non-nydus image gets a clear message
if "$LAZYIMG" mount --insecure --cache-dir "$W/cache0" "$REGISTRY_HOST/small:v1" "$MNT" 2> "$W/err"; then
	echo "FAIL: mounting a plain OCI image succeeded"; exit 1
fi
grep -q "is neither a nydus image nor an eStargz image" "$W/err" && grep -q "is a plain layer, not eStargz" "$W/err" || { echo "FAIL: unclear error:"; cat "$W/err"; exit 1; }
echo "ok: plain OCI image refused: $(grep -o "is neither.*" "$W/err" | head -c 120)"

python3 "$TOP/tests/tools/oci_unpack.py" "$W/rootfs" "$W/img/small/l1.tar" "$W/img/small/l2.tar" "$W/img/small/l3.tar"

# 1. read one small file on a fresh mount: manifest + bootstrap layer + one range
mark=$(wc -l < "$REGISTRY_LOG")
"$LAZYIMG" mount --insecure --cache-dir "$W/cache1" "$REGISTRY_HOST/small:v1-nydus" "$MNT"
cmp "$MNT/etc/hello.txt" "$W/rootfs/etc/hello.txt" || { echo "FAIL: etc/hello.txt differs"; exit 1; }
stats=$("$LAZYIMG" stats "$MNT")
echo "stats after one small file: $stats"
reqs=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["backend_requests"])' <<< "$stats")
[ "$reqs" -eq 3 ] || { echo "FAIL: expected 3 registry requests (manifest, bootstrap, one range), got $reqs"; exit 1; }
sleep 0.2
registry_blob_gets "$REGISTRY_LOG" "$mark" > "$W/gets"
cat "$W/gets"
n200=$(awk '$1 == 200' "$W/gets" | wc -l); n206=$(awk '$1 == 206' "$W/gets" | wc -l)
ranged=$(awk '$1 == 206 {s += $2} END {print s + 0}' "$W/gets")
[ "$n200" -eq 1 ] && [ "$n206" -eq 1 ] || { echo "FAIL: expected 1 whole-blob GET (bootstrap) and 1 ranged GET, got $n200 and $n206"; exit 1; }
[ "$ranged" -le 4096 ] || { echo "FAIL: reading a small file fetched $ranged bytes of data"; exit 1; }
echo "ok: one small file cost one ranged request of $ranged bytes"
"$LAZYIMG" umount "$MNT"

# 2. the whole tree equals the source layers unpacked with whiteouts applied
"$LAZYIMG" mount --insecure --cache-dir "$W/cache2" "$REGISTRY_HOST/small:v1-nydus" "$MNT"
diff -r --no-dereference "$W/rootfs" "$MNT" || { echo "FAIL: content differs from the source image"; exit 1; }
python3 - "$W/rootfs" "$MNT" <<'PY'
import os, stat, sys
a, b = sys.argv[1], sys.argv[2]
bad = 0
for root, dirs, files in os.walk(a):
    for n in dirs + files:
        pa = os.path.join(root, n); pb = os.path.join(b, os.path.relpath(pa, a))
        sa, sb = os.lstat(pa), os.lstat(pb)
        for f in ("st_mode", "st_uid", "st_gid"):
            if getattr(sa, f) != getattr(sb, f):
                print("differs:", pa, f, getattr(sa, f), getattr(sb, f)); bad += 1
        # python's tarfile does not set symlink mtimes: compare those without it
        mt = (lambda s: 0) if stat.S_ISLNK(sa.st_mode) else (lambda s: int(s.st_mtime))
        if not stat.S_ISDIR(sa.st_mode) and (sa.st_size, sa.st_nlink, mt(sa)) != (sb.st_size, sb.st_nlink, mt(sb)):
            print("differs:", pa, "size/nlink/mtime", (sa.st_size, sa.st_nlink, mt(sa)), (sb.st_size, sb.st_nlink, mt(sb))); bad += 1
        if stat.S_ISLNK(sa.st_mode) and os.readlink(pa) != os.readlink(pb):
            print("differs:", pa, "link target"); bad += 1
sys.exit(1 if bad else 0)
PY
echo "ok: mounted tree equals the unpacked source (content, modes, owners, sizes, links, mtimes)"
"$LAZYIMG" umount "$MNT"

# 3. --prefetch-all: everything arrives in the background, in blob order, in few requests
"$LAZYIMG" mount --insecure --prefetch-all --log-file "$W/pf.log" --log-level info --cache-dir "$W/cache3" \
	"$REGISTRY_HOST/small:v1-nydus" "$MNT"
for _ in $(seq 100); do grep -q "prefetch done" "$W/pf.log" && break; sleep 0.1; done
grep -q "prefetch done" "$W/pf.log" || { echo "FAIL: prefetch did not finish in 10 s"; cat "$W/pf.log"; exit 1; }
stats=$("$LAZYIMG" stats "$MNT")
js() { python3 -c "import json,sys; print(json.load(sys.stdin)[\"$1\"])" <<< "$stats"; }
nfiles=$(find "$W/rootfs" -type f -size +0 | wc -l)
echo "after prefetch: $stats ($nfiles non-empty files)"
[ "$(js prefetch_bytes)" -gt 0 ] || { echo "FAIL: prefetch_bytes is 0"; exit 1; }
[ $((2 * $(js backend_requests))) -lt "$nfiles" ] ||
	{ echo "FAIL: prefetching $nfiles files took $(js backend_requests) requests (want fewer than half)"; exit 1; }
b0=$(js backend_bytes)
diff -r --no-dereference "$W/rootfs" "$MNT" > /dev/null || { echo "FAIL: prefetched content differs"; exit 1; }
stats=$("$LAZYIMG" stats "$MNT")
[ "$(js backend_bytes)" = "$b0" ] || { echo "FAIL: reading the prefetched tree fetched $(( $(js backend_bytes) - b0 )) more bytes"; exit 1; }
echo "ok: --prefetch-all fetched every file in $(js backend_requests) requests; reading the tree then fetched nothing"
"$LAZYIMG" umount "$MNT"
echo PASS
