#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# eStargz end to end, with a real docker-registry on 127.0.0.1 and images converted by
# the real eStargz converter (../shared/peers/estargz-convert.sh: --via go is a small
# tool on Debian's stargz library, estargz.Build; --via containerd is Debian's
# ctr-remote driving a containerd, used here for the prefetch image, `i optimize`).
#
#  1. small:v1 (3 layers: whiteout, opaque dir, changed file, hard link; made by
#     push_small_image), converted --via go and mounted by reference, equals the source
#     layers unpacked (treecmp.py: content, size, mode, owner, mtime, symlink target,
#     xattrs, hard links).
#  2. A 3-layer image from gentree.py --layers (deletions, opaque dirs, type changes,
#     hard links, xattrs, odd names; packed with GNU tar, the OCI layout built by hand
#     and pushed with skopeo by tests/tools/oci_layers_push.sh), converted --via go:
#     the merged mount equals the kernel's overlayfs of the same layers, and
#     `--layer <top layer>` equals that layer in overlayfs form.
#  3. Lazy: on a fresh cache dir, reading one small file costs, per the registry's
#     access log, a footer and a TOC range per layer plus one range for the file;
#     a second mount on the same cache dir fetches no TOC and the read no data.
#  4. A flipped byte in one file's compressed data in the registry's storage: that
#     file gives EIO, others read, the log names the chunk digest mismatch; once the
#     byte is put back the same mount reads the file right (nothing bad was cached).
#  5. A manifest whose toc.digest annotation was changed (PUT under a new tag): mount
#     error naming the TOC digest mismatch; a TOC altered in the cache dir: refused too.
#  6. The plain gzip image small:v1: a clear "neither nydus nor eStargz" message.
#  7. Prefetch: an image made with `ctr-remote i optimize` (files read by a static
#     program put before .prefetch.landmark): prefetch_bytes > 0 shortly after mount,
#     reading a prefetched file costs no request, a file after the landmark does.
# The references are transformed only where the eStargz format cannot say more (see
# tests/tools/esgz_ref.py toc): mtimes rounded to whole seconds by the converter,
# non-UTF-8 name bytes replaced with U+FFFD by its JSON encoder.
# Exit 0 pass, 1 fail.
set -euo pipefail
. "$(dirname "$0")/reglib.sh"
W=$(mktemp -d /tmp/lazyimg-t47.XXXXXX)
REG_DIRS=()
KMOUNTS=()
export LC_ALL=C
CMP=$TOOLS/treecmp.py
REF=$TOOLS/esgz_ref.py

cleanup() {
	local m
	trap - EXIT
	set +e
	for m in "${KMOUNTS[@]:-}"; do
		[ -n "$m" ] && reg_is_mounted "$m" && { umount "$m" || umount -l "$m"; }
	done
	reg_cleanup
	if awk -v w="$W/" 'index($2, w) == 1 { f = 1 } END { exit !f }' /proc/mounts; then
		echo "cleanup: something is still mounted under $W; leaving it" >&2
	else
		rm -rf "$W"
	fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

T0=$(reg_now)
step() { echo "--- $* ($(reg_secs "$T0" "$(reg_now)") s)"; }
[ -x "$LAZYIMG" ] || reg_die "$LAZYIMG is not built"
for t in skopeo jq curl gcc tar gzip; do command -v "$t" > /dev/null || reg_die "$t is not installed"; done
grep -qw overlay /proc/filesystems || modprobe overlay 2> /dev/null || true
grep -qw overlay /proc/filesystems || reg_die "the kernel has no overlayfs: no reference to compare with"

# cmp_trees WHAT A B [treecmp options]: A the reference, B the mount
cmp_trees() {
	local what=$1 a=$2 b=$3 rc=0; shift 3
	timeout -k 5 120 python3 "$CMP" "$@" "$a" "$b" > "$W/treecmp.out" 2>&1 || rc=$?
	if [ "$rc" -eq 0 ]; then
		reg_ok "$what: $(tail -n 1 "$W/treecmp.out")"
	else
		reg_bad "$what: treecmp exit $rc:"
		head -n 40 "$W/treecmp.out" | sed 's/^/    | /'
	fi
}

# mnt_must_fail WHAT REGEX ARGS...: lazyimg mount ARGS fails and its stderr or log matches REGEX
mnt_must_fail() {
	local what=$1 re=$2 m=$W/mnt-fail rc=0; shift 2
	rm -f "$m.err" "$m.log"
	reg_mount "$m" "$@" || rc=$?
	if [ "$rc" -eq 0 ]; then
		reg_bad "$what: the mount succeeded"
		reg_umount "$m"
	elif grep -qE -- "$re" "$m.err" "$m.log" 2> /dev/null; then
		reg_ok "$what: exit $rc, \"$(cat "$m.err" "$m.log" 2> /dev/null | grep -E -m 1 -- "$re" | head -c 260)\""
	else
		reg_bad "$what: exit $rc but no /$re/ in: $(cat "$m.err" "$m.log" 2> /dev/null | head -c 400)"
	fi
}

# manifest REPO TAG: the OCI manifest JSON
manifest() { curl -sf -H "Accept: application/vnd.oci.image.manifest.v1+json" "$REGISTRY_URL/v2/$1/manifests/$2"; }

# blob_data DIGEST: the registry's storage file of a blob
blob_data() {
	local h=${1#sha256:}
	find "$REGISTRY_DIR" -path "*/blobs/sha256/${h:0:2}/$h/data" | head -n 1
}

# toc_json CACHE_DIR LAYER_DIGEST: the JSON of a cached TOC (the file is one header
# line "lazyimg-toc 1 KIND TOC_OFFSET TOC_SIZE TOC_USIZE sha256:DIGEST", then the JSON)
toc_json() { tail -n +2 "$1/tocs/${2#sha256:}.toc"; }

# toc_entry CACHE_DIR LAYER_DIGEST NAME: "offset size" of a regular file in the cached TOC
toc_entry() {
	toc_json "$1" "$2" | jq -r --arg n "$3" '.entries[] | select(.name == $n and .type == "reg") | "\(.offset) \(.size)"' |
		head -n 1
}

# log_settle: the registry writes an access log line after its response is out, so a
# client may be done before the line is there: wait until the log has not grown for
# 0.3 s (at most 5 s)
log_settle() {
	local n=-1 m same=0
	for _ in $(seq 50); do
		m=$(wc -l < "$REGISTRY_LOG")
		if [ "$m" = "$n" ]; then
			same=$((same + 1))
			[ "$same" -ge 3 ] && return 0
		else
			same=0
		fi
		n=$m
		sleep 0.1
	done
}

# ovl_mount MNT LOWER...: the kernel's overlayfs of the layer dirs, upper first
ovl_mount() {
	local m=$1 lower; shift
	lower=$(IFS=:; echo "$*")
	mkdir -p "$m"
	KMOUNTS+=("$m")
	mount -t overlay overlay -o "lowerdir=$lower" "$m" || reg_die "mount -t overlay -o lowerdir=$lower failed"
}

# ---------------------------------------------------------------- images
step "registry and images"
mkdir -p "$W/reg"
start_registry "$W/reg"
push_small_image "$W/img" || reg_die "push_small_image failed"
python3 "$TOOLS/gentree.py" --layers "$W/gen" || reg_die "gentree.py --layers failed"
"$TOOLS/oci_layers_push.sh" "$W/oci-gen" "$REGISTRY_HOST/layers:v1" "$W/gen/l1" "$W/gen/l2" "$W/gen/l3" \
	> /dev/null 2> "$W/push-gen.log" || { cat "$W/push-gen.log"; reg_die "pushing the gentree layers failed"; }
# the prefetch image: a static program that reads the files named on its command line
# (what `ctr-remote i optimize` runs to learn which files come first), two files it
# reads and two it does not
mkdir -p "$W/pf/l1/hot" "$W/pf/l1/cold"
cat > "$W/reader.c" <<'C'
#include <fcntl.h>
#include <unistd.h>
int main(int argc, char **argv)
{
	static char buf[65536];
	for (int i = 1; i < argc; i++) {
		int fd = open(argv[i], O_RDONLY);
		if (fd < 0)
			return 1;
		while (read(fd, buf, sizeof(buf)) > 0)
			;
		close(fd);
	}
	return 0;
}
C
gcc -static -O2 -s -o "$W/pf/l1/reader" "$W/reader.c" || reg_die "gcc -static failed"
python3 - "$W/pf/l1" <<'PY'
import random, sys
r = random.Random(47)
d = sys.argv[1]
open(d + "/hot/a.txt", "w").write("".join("hot line %d\n" % i for i in range(20000)))
open(d + "/hot/b.bin", "wb").write(r.randbytes(300000))
open(d + "/cold/big.bin", "wb").write(r.randbytes(2000000))
open(d + "/cold/small.txt", "w").write("cold\n")
PY
"$TOOLS/oci_layers_push.sh" "$W/oci-pf" "$REGISTRY_HOST/pf:v1" "$W/pf/l1" > /dev/null 2> "$W/push-pf.log" ||
	{ cat "$W/push-pf.log"; reg_die "pushing the prefetch image failed"; }

step "eStargz conversions"
convert() {  # SRC DST estargz-convert.sh args...
	local src=$1 dst=$2 t; shift 2
	t=$(reg_now)
	timeout -k 5 300 bash "$PEERS/estargz-convert.sh" "$@" "$REGISTRY_HOST/$src" "$REGISTRY_HOST/$dst" \
		> "$W/convert-${dst//[:\/]/_}.log" 2>&1 || { tail -n 20 "$W/convert-${dst//[:\/]/_}.log"; reg_die "estargz-convert.sh $* $src $dst failed"; }
	echo "converted $src -> $dst ($*) in $(reg_secs "$t" "$(reg_now)") s"
}
convert small:v1 small:v1-esgz --via go
convert layers:v1 layers:v1-esgz --via go
convert pf:v1 pf:v1-opt --via containerd --optimize --optimize-args '["/reader","/hot/a.txt","/hot/b.bin"]'
for img in small:v1-esgz layers:v1-esgz pf:v1-opt; do
	manifest "${img%%:*}" "${img#*:}" > "$W/man-${img//:/_}.json" || reg_die "no manifest for $img"
	n=$(jq '[.layers[] | select(.annotations["containerd.io/snapshot/stargz/toc.digest"] != null)] | length' "$W/man-${img//:/_}.json")
	reg_check "$img: every layer has a toc.digest annotation ($n of $(jq '.layers | length' "$W/man-${img//:/_}.json"))" \
		'[ "$n" -ge 1 ] && [ "$n" = "$(jq ".layers | length" "$W/man-${img//:/_}.json")" ]'
done
SMALL=$REGISTRY_HOST/small:v1-esgz
mapfile -t SLAYERS < <(jq -r '.layers[].digest' "$W/man-small_v1-esgz.json")
SSIZE=$(jq '[.layers[].size] | add' "$W/man-small_v1-esgz.json")

# ---------------------------------------------------------------- 1. small:v1
step "1. small:v1 as eStargz vs its layers unpacked"
# The reference: the source layer dirs, whiteouts in overlayfs form, under the kernel's
# overlayfs, copied with cp -a: the layers unpacked one over the other. A copy rather than
# the overlay itself: data/hello.hard is a hard link of l1's etc/hello.txt, which l3
# replaces; unpacked, hello.hard is left with nlink 1, while overlayfs reports the lower
# inode's nlink 2 (see the report of the overlay itself below, not a check).
for l in l1 l2 l3; do
	cp -a "$W/img/small/$l" "$W/sref-$l"
	python3 "$REF" overlay "$W/sref-$l"
	python3 "$REF" toc "$W/sref-$l"
done
ovl_mount "$W/sovl" "$W/sref-l3" "$W/sref-l2" "$W/sref-l1"
cp -a "$W/sovl" "$W/sflat"
M1=$W/m1
reg_mount "$M1" --insecure --cache-dir "$W/c1" "$SMALL" || { sed 's/^/    | /' "$M1.err" "$M1.log"; reg_die "mount of $SMALL failed"; }
# --ignore-root-attrs: the layer tars have no entry for the root (build-test-images.sh
# packs `find -mindepth 1`), so its owner, mode and mtime are lazyimg's own choice
cmp_trees "small:v1-esgz merged vs the layers unpacked (only the root's attributes ignored)" \
	"$W/sflat" "$M1" --ignore-root-attrs
python3 "$CMP" -q --ignore-root-attrs --ignore-xattr-prefix trusted.overlay. --ignore-dir-nlink "$W/sovl" "$M1" |
	sed 's/^/    (vs overlayfs, for information) /' || true
# what the three layers mean, independent of any reference tree
reg_check "small: whiteout and opaque dir applied, changed file from l3, data/hello.hard from l1" '
	[ ! -e "$M1/data/gone/file" ] && [ -d "$M1/data/gone" ] && [ ! -e "$M1/data/replaced/old" ] &&
	[ "$(ls "$M1/data/replaced")" = new ] && [ "$(cat "$M1/etc/hello.txt")" = "changed in layer 3" ] &&
	[ "$(cat "$M1/data/hello.hard")" = "hello from small test image" ] &&
	[ "$(readlink "$M1/data/hello.link")" = ../etc/hello.txt ] && [ "$(ls "$M1/data/many" | wc -l)" = 50 ]'
reg_check "small: l2's files have the sha256 build-test-images.sh recorded" \
	'(cd "$M1" && sed "s|  \./|  |" "$W/img/small/l2.sha256" | sha256sum --quiet -c -)'
reg_check "small: no stargz.index.json or landmark is visible" \
	'[ -z "$(find "$M1" -name stargz.index.json -o -name ".*prefetch.landmark")" ]'
reg_umount "$M1"
# the merged view has no hard link left (l3 replaced etc/hello.txt); l1 alone has the pair
reg_mount "$M1" --insecure --cache-dir "$W/c1" --layer "${SLAYERS[0]}" "$SMALL" ||
	{ sed 's/^/    | /' "$M1.err" "$M1.log"; reg_die "mount of $SMALL --layer ${SLAYERS[0]} failed"; }
cmp_trees "small:v1-esgz --layer ${SLAYERS[0]} (l1, etc/hello.txt = data/hello.hard) vs l1 (root attrs ignored)" \
	"$W/sref-l1" "$M1" --ignore-root-attrs
reg_umount "$M1"

# ---------------------------------------------------------------- 2. gentree layers
step "2. gentree --layers as eStargz vs overlayfs"
for l in l1 l2 l3; do
	cp -a "$W/gen/$l" "$W/gref-$l"
	python3 "$REF" overlay "$W/gref-$l"
	python3 "$REF" toc "$W/gref-$l"
done
ovl_mount "$W/govl" "$W/gref-l3" "$W/gref-l2" "$W/gref-l1"
M2=$W/m2
reg_mount "$M2" --insecure --cache-dir "$W/c2" "$REGISTRY_HOST/layers:v1-esgz" ||
	{ sed 's/^/    | /' "$M2.err" "$M2.log"; reg_die "mount of layers:v1-esgz failed"; }
# as test 33: overlayfs shows trusted.overlay.* and reports nlink 1 for merged
# directories; plus the root's attributes, which no layer tar carries (see 1.)
cmp_trees "layers:v1-esgz merged vs overlayfs of the layers (ignoring trusted.overlay.*, dir nlink, root attrs)" \
	"$W/govl" "$M2" --ignore-xattr-prefix trusted.overlay. --ignore-dir-nlink --ignore-root-attrs
# what the layers mean, checked on the reference and on the mount (a wrong reference
# must not pass unnoticed)
cat > "$W/expect.sh" <<'SH'
m=$1
[ ! -e "$m/del-file" ] && [ ! -e "$m/del-dir" ] && [ ! -e "$m/keep/gone" ] && [ -f "$m/keep/file" ] &&
[ "$(ls "$m/opq" | tr '\n' ' ')" = "new1 same-name " ] && [ -z "$(ls "$m/opq2")" ] &&
[ -d "$m/f2d" ] && [ -f "$m/d2f" ] && [ -d "$m/sym2dir" ] && [ -L "$m/file2sym" ] &&
[ "$(ls "$m/recreated")" = new ] && [ ! -e "$m/deep/a/b/c/file" ] && [ -f "$m/deep/a/b/c/stays" ] &&
[ ! -e "$m/pfx/name" ] && [ -f "$m/pfx/name-1" ] && [ ! -e "$m/pfx/namedir" ] &&
[ "$(stat -c '%h %a %u %g' "$m/hl2/x")" = "3 644 0 0" ] && [ "$(stat -c %i "$m/hl2/x")" = "$(stat -c %i "$m/hl2-z")" ] &&
[ "$(stat -c '%a %u %g' "$m/changed")" = "755 100000 3" ] && [ "$(getfattr --absolute-names --only-values -n user.layer "$m/changed")" = 3 ] &&
[ "$(ls "$m/big" | wc -l)" = 721 ] && [ -z "$(find "$m" -name '.wh.*')" ]
SH
reg_check "the overlayfs reference shows what the layers mean" 'bash "$W/expect.sh" "$W/govl"'
reg_check "the merged eStargz mount shows what the layers mean" 'bash "$W/expect.sh" "$M2"'
reg_umount "$M2"
GTOP=$(jq -r '.layers[-1].digest' "$W/man-layers_v1-esgz.json")
M2L=$W/m2l
reg_mount "$M2L" --insecure --cache-dir "$W/c2" --layer "$GTOP" "$REGISTRY_HOST/layers:v1-esgz" ||
	{ sed 's/^/    | /' "$M2L.err" "$M2L.log"; reg_die "mount of layers:v1-esgz --layer $GTOP failed"; }
cmp_trees "--layer $GTOP (top) vs l3 in overlayfs form (whiteouts 0:0 char devices, opaque xattr; root attrs ignored)" \
	"$W/gref-l3" "$M2L" --ignore-root-attrs
reg_check "--layer: deep/a/b/c/file is a 0:0 whiteout, opq2 is opaque" '
	[ "$(stat -c "%F %t:%T" "$M2L/deep/a/b/c/file")" = "character special file 0:0" ] &&
	[ "$(getfattr --absolute-names --only-values -n trusted.overlay.opaque "$M2L/opq2")" = y ]'
reg_umount "$M2L"

# ---------------------------------------------------------------- 3. lazy
step "3. lazy reads: what the registry served"
M3=$W/m3
mark=$(wc -l < "$REGISTRY_LOG")
reg_mount "$M3" --insecure --cache-dir "$W/c3" "$SMALL" || reg_die "mount of $SMALL on a fresh cache failed"
log_settle
registry_blob_gets "$REGISTRY_LOG" "$mark" > "$W/gets-mount"
mark=$(wc -l < "$REGISTRY_LOG")
b0=$(reg_stat "$M3" backend_bytes); r0=$(reg_stat "$M3" backend_requests)
reg_check "fresh cache: etc/hello.txt reads as l3 wrote it" '[ "$(cat "$M3/etc/hello.txt")" = "changed in layer 3" ]'
b1=$(reg_stat "$M3" backend_bytes); r1=$(reg_stat "$M3" backend_requests)
log_settle
registry_blob_gets "$REGISTRY_LOG" "$mark" > "$W/gets-read"
sed 's/^/    mount: /' "$W/gets-mount"; sed 's/^/    read:  /' "$W/gets-read"
ok_mount=1
for d in "${SLAYERS[@]}"; do
	# per layer: the footer (the last bytes) and the TOC, both ranged (206), both small
	awk -v d="$d" '$3 == d' "$W/gets-mount" > "$W/g1"
	[ "$(wc -l < "$W/g1")" = 2 ] && [ "$(awk '$1 == 206' "$W/g1" | wc -l)" = 2 ] &&
		[ "$(head -n 1 "$W/g1" | cut -d' ' -f2)" -le 4096 ] && [ "$(tail -n 1 "$W/g1" | cut -d' ' -f2)" -le 65536 ] || ok_mount=0
done
reg_check "mount on a fresh cache: per layer 2 ranged GETs (footer, then TOC), nothing else ($(wc -l < "$W/gets-mount") GETs, $(awk '{s += $2} END {print s + 0}' "$W/gets-mount") B)" \
	'[ "$ok_mount" = 1 ] && [ "$(wc -l < "$W/gets-mount")" = $((2 * ${#SLAYERS[@]})) ]'
rb=$(awk '{s += $2} END {print s + 0}' "$W/gets-read")
reg_check "reading etc/hello.txt: one ranged GET of the top layer, $rb B (stats: +$((r1 - r0)) request, +$((b1 - b0)) B)" \
	'[ "$(wc -l < "$W/gets-read")" = 1 ] && [ "$(cut -d" " -f1,3 "$W/gets-read")" = "206 ${SLAYERS[-1]}" ] &&
	 [ "$rb" -le 4096 ] && [ $((r1 - r0)) = 1 ] && [ $((b1 - b0)) = "$rb" ]'
tot=$(awk '{s += $2} END {print s + 0}' "$W/gets-mount" "$W/gets-read")
reg_check "bytes fetched to first byte ($tot B) are under 1 % of the image ($SSIZE B)" '[ $((tot * 100)) -lt "$SSIZE" ]'
reg_umount "$M3"
reg_check "the TOCs are kept in the cache dir (one per layer)" '[ "$(ls "$W/c3/tocs"/*.toc | wc -l)" = "${#SLAYERS[@]}" ]'
mark=$(wc -l < "$REGISTRY_LOG")
reg_mount "$M3" --insecure --cache-dir "$W/c3" "$SMALL" || reg_die "second mount of $SMALL failed"
b0=$(reg_stat "$M3" backend_bytes); h0=$(reg_stat "$M3" cache_hits)
reg_check "second mount, same cache: etc/hello.txt reads" '[ "$(cat "$M3/etc/hello.txt")" = "changed in layer 3" ]'
b1=$(reg_stat "$M3" backend_bytes); h1=$(reg_stat "$M3" cache_hits)
log_settle
registry_blob_gets "$REGISTRY_LOG" "$mark" > "$W/gets-2" || true  # none is the expected answer
sed 's/^/    2nd mount + read: /' "$W/gets-2"
reg_check "second mount: the read fetched nothing (backend_bytes +$((b1 - b0)), cache_hits +$((h1 - h0)))" \
	'[ "$b1" = "$b0" ] && [ $((h1 - h0)) -ge 1 ]'
reg_check "second mount: no blob request at all: footers and TOCs come from the cache dir ($(wc -l < "$W/gets-2") GETs)" \
	'[ "$(wc -l < "$W/gets-2")" = 0 ]'
reg_umount "$M3"

# a whole-tree read on a fresh cache: files stored one after another share requests
# (neighbouring gzip members merged up to 2 MiB, 1 MiB across files)
M3T=$W/m3t
reg_mount "$M3T" --insecure --no-prefetch --cache-dir "$W/c3t" "$SMALL" || reg_die "mount of $SMALL on a fresh cache failed"
r0=$(reg_stat "$M3T" backend_requests)
nfiles=$(find "$M3T" -type f -size +0 | wc -l)
find "$M3T" -type f -exec cat {} + > /dev/null
r1=$(reg_stat "$M3T" backend_requests)
reg_check "reading all $nfiles non-empty files took $((r1 - r0)) requests (fewer than half as many)" \
	'[ $((2 * (r1 - r0))) -lt "$nfiles" ] && [ $((r1 - r0)) -ge 1 ]'
cmp_trees "and the tree read that way equals the source" "$W/sflat" "$M3T" --ignore-root-attrs
reg_umount "$M3T"

# ---------------------------------------------------------------- 4. tampered chunk
step "4. a flipped byte in one file's compressed data"
# blobs/random-1m.bin (l2, incompressible) starts its own gzip member at its TOC offset;
# the converter stored it in stored deflate blocks, so a byte 4 KiB into the member is
# a byte of the file. Two cases, each on a fresh cache dir:
#   raw   the byte flipped: the member's gzip CRC no longer matches;
#   crc   the byte flipped and the member's CRC-32 fixed up: the member inflates cleanly
#         to wrong bytes, and only the TOC's chunkDigest can tell.
read -r off size < <(toc_entry "$W/c3" "${SLAYERS[1]}" blobs/random-1m.bin) || true
BLOB1=$(blob_data "${SLAYERS[1]}")
[ -n "${off:-}" ] && [ -n "$BLOB1" ] || reg_die "no TOC entry for blobs/random-1m.bin or no blob file for ${SLAYERS[1]}"
cp "$BLOB1" "$W/blob1.orig"
cat > "$W/tamper.py" <<'PY2'
import sys, zlib
path, off, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
data = bytearray(open(path, "rb").read())
d = zlib.decompressobj(31)
out = d.decompress(bytes(data[off:]))
end = len(data) - len(d.unused_data)          # end of this gzip member
hdr = off + 10                                # the Go writer's gzip header: 10 bytes
if data[hdr] & 6 != 0 or int.from_bytes(data[hdr + 1:hdr + 3], "little") < 8192:
    sys.exit("the member does not start with a stored deflate block of 8 KiB or more")
k = 4096                                      # a byte of the first stored block's data
data[hdr + 5 + k] ^= 0xff
if mode == "crc":
    new = bytearray(out)
    new[k] ^= 0xff
    data[end - 8:end - 4] = zlib.crc32(new).to_bytes(4, "little")
d2 = zlib.decompressobj(31)
try:
    got = d2.decompress(bytes(data[off:end]))
    inflates = d2.eof
except zlib.error:
    got, inflates = b"", False
if mode == "crc" and (not inflates or got == out or len(got) != len(out)):
    sys.exit("the CRC-fixed member should inflate cleanly to different bytes")
if mode == "raw" and inflates:
    sys.exit("the flipped member should fail its gzip CRC")
open(path, "wb").write(data)
print("file byte %d flipped at blob offset %d (member %d..%d, %s)" % (k, hdr + 5 + k, off, end,
      "inflates cleanly, CRC fixed" if inflates else "gzip CRC now wrong"))
PY2
SUM1M=$(sha256sum < "$W/img/small/l2/blobs/random-1m.bin" | cut -c1-64)
SUM4M=$(sha256sum < "$W/img/small/l2/blobs/random-4m.bin" | cut -c1-64)
for mode in raw crc; do
	msg=$(python3 "$W/tamper.py" "$BLOB1" "$off" "$mode") || reg_die "tamper.py $mode: $msg"
	echo "$mode: $msg"
	M4=$W/m4$mode
	reg_mount "$M4" --insecure --cache-dir "$W/c4$mode" "$SMALL" || reg_die "mount of $SMALL (tampered chunk, $mode) failed"
	err=$(cat "$M4/blobs/random-1m.bin" 2>&1 > /dev/null) && rc=0 || rc=$?
	reg_check "$mode: the tampered file fails with EIO: cat exit $rc, \"$err\"" '[ "$rc" != 0 ] && grep -q "Input/output error" <<< "$err"'
	reg_check "$mode: a file of the same layer still reads right (blobs/random-4m.bin)" \
		'[ "$(sha256sum < "$M4/blobs/random-4m.bin" | cut -c1-64)" = "$SUM4M" ]'
	reg_check "$mode: a file of another layer still reads right (etc/hello.txt)" '[ "$(cat "$M4/etc/hello.txt")" = "changed in layer 3" ]'
	if [ "$mode" = raw ]; then want="random-1m.bin.*(does not inflate|gzip|CRC|crc)"; else want="random-1m.bin.*chunk digest mismatch|chunk digest mismatch.*random-1m.bin"; fi
	reg_check "$mode: the mount log names the file and the problem: \"$(grep -m 1 random-1m "$M4.log" | head -c 260)\"" \
		'grep -qiE "$want" "$M4.log"'
	reg_check "$mode: stats count the chunk error (chunk_errors $(reg_stat "$M4" chunk_errors))" '[ "$(reg_stat "$M4" chunk_errors)" -ge 1 ]'
	cp "$W/blob1.orig" "$BLOB1"
	reg_check "$mode: the blob put back, the same mount reads the file right (no bad data was kept)" \
		'[ "$(sha256sum < "$M4/blobs/random-1m.bin" | cut -c1-64)" = "$SUM1M" ]'
	reg_umount "$M4"
done

# ---------------------------------------------------------------- 5. tampered TOC
step "5. TOC digests"
BADTOC=sha256:$(printf 'not the TOC' | sha256sum | cut -c1-64)
jq -c --arg t "$BADTOC" '.layers[0].annotations["containerd.io/snapshot/stargz/toc.digest"] = $t' \
	"$W/man-small_v1-esgz.json" > "$W/man-badtoc.json"
code=$(curl -s -o "$W/put.out" -w '%{http_code}' -X PUT -H "Content-Type: application/vnd.oci.image.manifest.v1+json" \
	--data-binary @"$W/man-badtoc.json" "$REGISTRY_URL/v2/small/manifests/v1-badtoc")
[ "$code" = 201 ] || reg_die "PUT of the edited manifest: HTTP $code $(head -c 300 "$W/put.out")"
mnt_must_fail "manifest with a wrong toc.digest for layer 1" "TOC digest mismatch.*$BADTOC" \
	--insecure --cache-dir "$W/c5" "$REGISTRY_HOST/small:v1-badtoc"
# a TOC altered in the cache dir (c3 holds all three from 3.): one file's mode changed,
# header kept. The header's digest no longer matches: the TOC is fetched again at once
# (whether or not the layer has a toc.digest annotation: the header is checked first)
T0F=$W/c3/tocs/${SLAYERS[0]#sha256:}.toc
{ head -n 1 "$T0F"; toc_json "$W/c3" "${SLAYERS[0]}" | jq -c '(.entries[] | select(.name == "bin/hi") | .mode) = 511'; } > "$T0F.new"
mv "$T0F.new" "$T0F"
mark=$(wc -l < "$REGISTRY_LOG")
reg_mount "$M3" --insecure --cache-dir "$W/c3" "$SMALL" || reg_die "mount with an altered cached TOC failed: $(cat "$M3.err")"
# (the TOC is read before the server detaches: its warning is on mount's stderr)
reg_check "an altered cached TOC is noticed: $(cat "$M3.err" "$M3.log" | grep -m 1 -o 'cached TOC.*' | head -c 160)" \
	'cat "$M3.err" "$M3.log" | grep -q "not the sha256:.* it was saved with: fetching it again"'
reg_check "and bin/hi has its mode 755 from the TOC fetched again" '[ "$(stat -c %a "$M3/bin/hi")" = 755 ]'
log_settle
reg_check "the refetch is that layer's footer and TOC only" \
	'[ "$(registry_blob_gets "$REGISTRY_LOG" "$mark" | awk -v d="${SLAYERS[0]}" '\''$3 == d'\'' | wc -l)" = 2 ]'
reg_umount "$M3"

# ---------------------------------------------------------------- 6. plain gzip
step "6. a plain gzip image"
mnt_must_fail "small:v1 (plain gzip layers)" "is neither a nydus image nor an eStargz image" \
	--insecure --cache-dir "$W/c6" "$REGISTRY_HOST/small:v1"
reg_check "the message says which layer is plain" 'grep -q "is a plain layer, not eStargz" "$W/mnt-fail.err" "$W/mnt-fail.log"'

# ---------------------------------------------------------------- 7. prefetch
step "7. prefetch of an optimized image (ctr-remote i optimize)"
PTOC=$(jq -r '.layers[0].annotations["containerd.io/snapshot/stargz/toc.digest"]' "$W/man-pf_v1-opt.json")
M7=$W/m7
reg_mount "$M7" --insecure --cache-dir "$W/c7" --log-level info "$REGISTRY_HOST/pf:v1-opt" || reg_die "mount of pf:v1-opt failed"
PJ=$W/pf-toc.json
toc_json "$W/c7" "$(jq -r '.layers[0].digest' "$W/man-pf_v1-opt.json")" > "$PJ"
reg_check "the converter put hot/a.txt and hot/b.bin before .prefetch.landmark, cold/* after: $(jq -r '[.entries[].name] | join(" ")' "$PJ")" \
	'jq -r ".entries[].name" "$PJ" | grep -E "^(hot/a.txt|hot/b.bin|\.prefetch\.landmark|cold/big.bin)$" | tr "\n" " " |
	 grep -qx "hot/a.txt hot/b.bin .prefetch.landmark cold/big.bin "'
for _ in $(seq 50); do grep -q "prefetch done" "$M7.log" && break; sleep 0.1; done
pb=$(reg_stat "$M7" prefetch_bytes)
reg_check "prefetch_bytes $pb > 0 after a short wait ($(grep -m 1 -o "prefetch done.*" "$M7.log"))" '[ "$pb" -gt 0 ]'
r0=$(reg_stat "$M7" backend_requests)
reg_check "hot/a.txt (prefetched) reads right" 'cmp -s "$M7/hot/a.txt" "$W/pf/l1/hot/a.txt"'
r1=$(reg_stat "$M7" backend_requests)
reg_check "reading the prefetched file cost no request (backend_requests $r0 -> $r1)" '[ "$r1" = "$r0" ]'
reg_check "cold/small.txt (after the landmark) reads right" '[ "$(cat "$M7/cold/small.txt")" = cold ]'
r2=$(reg_stat "$M7" backend_requests)
reg_check "reading a file after the landmark costs a request (backend_requests $r1 -> $r2)" '[ "$r2" -gt "$r1" ]'
mkdir -p "$W/pref"; cp -a "$W/pf/l1" "$W/pref/l1"; python3 "$REF" toc "$W/pref/l1"
cmp_trees "pf:v1-opt (converted by ctr-remote) vs its source (root attrs ignored, see 1.)" "$W/pref/l1" "$M7" --ignore-root-attrs
reg_umount "$M7"
echo "toc digest of pf:v1-opt: $PTOC"

# the servers' logs (every mount above, failed ones too): no ASan/UBSan report
san=$(grep -lE 'ERROR: (Address|Leak|Memory)Sanitizer|runtime error:' "$W"/*.log "$W"/*.err 2> /dev/null || true)
reg_check "no sanitizer report in the mount logs${san:+: $san}" '[ -z "$san" ]'
step "done"
reg_finish
