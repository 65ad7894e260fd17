#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# `lazyimg merge` against the kernel's overlayfs. tests/tools/gentree.py --layers makes three
# layer trees in OCI form (whiteouts .wh.NAME, opaque directories marked by .wh..wh..opq):
# a file and a directory deleted by whiteouts, opaque directories with new and with no
# content, a file replaced by a directory and the reverse, a symlink replaced by a directory
# and a file by a symlink, a changed file (content, mode, owner, mtime, xattrs), a directory
# whose attributes change, a deleted directory re-created, whiteouts of names that share a
# prefix with names that stay, a 600-entry directory merged across all layers, hard links
# in every layer (see gen_layers() there). Each layer is converted with `lazyimg convert`,
# the three are merged with `lazyimg merge` (fs-version 5 and 6, and v6 layers into a v5
# merge) and mounted with a blob dir of symlinks to all the layers' blobs.
# The reference: the same layers in overlayfs form (whiteout -> `mknod NAME c 0 0`, opaque
# -> trusted.overlay.opaque=y), mounted as `mount -t overlay -o lowerdir=L3:L2:L1`.
# Compared with tests/tools/treecmp.py:
#   overlay vs the merged mount, ignoring trusted.overlay.* xattrs and directory nlink:
#   overlayfs reports nlink 1 for every merged directory (the only quirk ignored);
#   a `cp -a` copy of the overlay view vs the merged mount, ignoring nothing;
# and a list of paths that must and must not be there is checked on both (so that a
# wrong reference cannot pass unnoticed). Exit 0 pass, 1 fail.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
W=$(mktemp -d /tmp/lazyimg-t33.XXXXXX)
KMOUNTS=()
eval "lib_$(declare -f cleanup)"
cleanup() {
	local rc=$? m
	set +e
	trap - EXIT
	for m in "${KMOUNTS[@]}"; do
		if is_mounted "$m"; then
			echo "cleanup: unmounting $m"
			umount "$m" || umount -l "$m"
		fi
	done
	(exit "$rc")
	lib_cleanup
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
GEN=$TOOLS/gentree.py
CMP=$TOOLS/treecmp.py
echo "workdir $W, lazyimg $LAZYIMG"
[ -x "$LAZYIMG" ] || die "$LAZYIMG is not built"
grep -qw overlay /proc/filesystems || modprobe overlay 2> /dev/null || true
grep -qw overlay /proc/filesystems || die "the kernel has no overlayfs: no reference to compare with"

T_START=$(date +%s.%N)
now() { date +%s.%N; }
since() { printf '%.1f' "$(echo "$(now) - $1" | bc)"; }

cmp_trees() {
	local what=$1 a=$2 b=$3 rc=0 t; shift 3
	t=$(now)
	timeout -k 5 600 python3 "$CMP" "$@" "$a" "$b" > "$W/treecmp.out" 2>&1 || rc=$?
	if [ "$rc" -eq 0 ]; then
		ok "$what: $(tail -n 1 "$W/treecmp.out") ($(since "$t") s)"
	else
		bad "$what: treecmp exit $rc ($(since "$t") s):"
		head -n 60 "$W/treecmp.out" | sed 's/^/    | /'
		[ "$(wc -l < "$W/treecmp.out")" -le 60 ] || { echo "    | ..."; tail -n 1 "$W/treecmp.out" | sed 's/^/    | /'; }
	fi
}

# python3 $EXPECT MNT: what the merge of gen_layers() must show, independent of overlayfs
EXPECT=$W/expect.py
cat > "$EXPECT" <<'PY'
import os, stat, sys
m = os.fsencode(sys.argv[1])
bad = []
def p(rel):
    return os.path.join(m, rel)
def kind(rel):
    try:
        st = os.lstat(p(rel))
    except (FileNotFoundError, NotADirectoryError):
        return None
    return "d" if stat.S_ISDIR(st.st_mode) else "l" if stat.S_ISLNK(st.st_mode) else "f" if stat.S_ISREG(st.st_mode) else "?"
def content(rel):
    with open(p(rel), "rb") as f:
        return f.read()
absent = [b"del-file", b"del-dir", b"opq/old1", b"opq/oldsub", b"opq2/a", b"d2f/under",
          b"keep/gone", b"deep/a/b/c/file", b"recreated/old", b"pfx/name", b"pfx/namedir",
          b"pfx/\xff odd\n", b"big/f0000", b"big/f0007", b"big/f0799", b"never-existed"]
present = {b"keep/file": "f", b"opq/new1": "f", b"opq/same-name": "f", b"opq2": "d",
           b"f2d": "d", b"f2d/inner": "f", b"d2f": "f", b"recreated/new": "f",
           b"deep/a/b/c/stays": "f", b"pfx/name-1": "f", b"pfx/name.1": "f", b"pfx/name1": "f",
           b"pfx/nam": "f", b"pfx/\xff odd\nkeep": "f", b"pfx/namedir-keep/x": "f",
           b"big/f0001": "f", b"big/f0014": "f", b"big/f0700": "f", b"sym2dir": "d",
           b"sym2dir/in": "f", b"file2sym": "l", b"hl1-a": "f", b"sub/hl1-b": "f",
           b"hl2/x": "f", b"hl2/y": "f", b"hl2-z": "f", b"hl3-p": "f", b"keep/replaced": "f",
           b"changed": "f", b"attrs/f": "f"}
for rel in absent:
    if kind(rel) is not None:
        bad.append("%r must have been deleted" % rel)
for rel, k in present.items():
    if kind(rel) != k:
        bad.append("%r: want type %s, got %s" % (rel, k, kind(rel)))
for d, _, files in os.walk(m):
    for n in files + _:
        if n.startswith(b".wh."):
            bad.append("whiteout %r is visible" % os.path.join(d, n))
if kind(b"opq2") == "d" and os.listdir(p(b"opq2")):
    bad.append("opq2 (opaque, empty in l3) lists %r" % os.listdir(p(b"opq2")))
if kind(b"opq") == "d" and sorted(os.listdir(p(b"opq"))) != [b"new1", b"same-name"]:
    bad.append("opq lists %r, want new1 and same-name" % sorted(os.listdir(p(b"opq"))))
if kind(b"recreated") == "d" and os.listdir(p(b"recreated")) != [b"new"]:
    bad.append("recreated lists %r" % os.listdir(p(b"recreated")))
big = set(os.listdir(p(b"big"))) if kind(b"big") == "d" else set()
want = {b"f%04d" % i for i in range(800) if (i % 7 or i >= 600 or i % 11 == 3) and i != 799}
if big != want:
    bad.append("big: %d entries, want %d (extra %r, missing %r)" % (
        len(big), len(want), sorted(big - want)[:5], sorted(want - big)[:5]))
checks = [(b"changed", b"l3 content of changed"), (b"opq/same-name", b"l2 version\n"),
          (b"keep/replaced", b"hard link pair in l3\n"), (b"big/f0003", b"l3 big 3\n"),
          (b"big/f0001", b"l1 big 1\n"), (b"big/f0601", b"l2 big 601\n"), (b"d2f", b"d2f is a file now\n")]
for rel, want_c in checks:
    try:
        c = content(rel)
        if not c.startswith(want_c):
            bad.append("%r holds %r..., want %r..." % (rel, c[:40], want_c))
    except OSError as e:
        bad.append("%r: %s" % (rel, e))
st = [os.lstat(p(r)) for r in (b"hl2/x", b"hl2/y", b"hl2-z")]
if len({s.st_ino for s in st}) != 1 or {s.st_nlink for s in st} != {3}:
    bad.append("hl2/x, hl2/y, hl2-z: st_ino %s, nlink %s; want one inode with nlink 3" %
               ([s.st_ino for s in st], [s.st_nlink for s in st]))
st = os.lstat(p(b"changed"))
if (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) != (0o755, 100000, 3):
    bad.append("changed: mode %o uid %d gid %d, want l3's 755 100000 3" % (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid))
xs = sorted(os.listxattr(p(b"changed")))
if xs != ["user.layer"] or os.getxattr(p(b"changed"), "user.layer") != b"3":
    bad.append("changed: xattrs %r, want only l3's user.layer=3" % xs)
st = os.lstat(p(b"attrs"))
if (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) != (0o751, 70000, 70001):
    bad.append("attrs: mode %o uid %d gid %d, want l3's 751 70000 70001" % (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid))
for b in bad:
    print(b)
print("%d expectations failed" % len(bad) if bad else "all expectations hold")
sys.exit(1 if bad else 0)
PY

# --- the layers, in OCI form and in overlayfs form ---
t=$(now)
python3 "$GEN" --layers "$W/oci" || die "gentree.py --layers failed"
for l in l1 l2 l3; do
	cp -a "$W/oci/$l" "$W/ovl-$l"
	python3 - "$W/ovl-$l" <<'PY' || die "overlayfs form of $l failed"
# .wh.NAME -> a 0:0 character device NAME; .wh..wh..opq -> trusted.overlay.opaque=y on its
# directory; the directory's mtime is put back (the layer's own, as in the OCI form)
import os, stat, sys
for d, dirs, files in os.walk(os.fsencode(sys.argv[1]), topdown=False):
    st = os.lstat(d)
    changed = False
    for f in files:
        if f == b".wh..wh..opq":
            os.unlink(os.path.join(d, f))
            os.setxattr(d, b"trusted.overlay.opaque", b"y")
            changed = True
        elif f.startswith(b".wh."):
            os.unlink(os.path.join(d, f))
            os.mknod(os.path.join(d, f[4:]), stat.S_IFCHR | 0o600, os.makedev(0, 0))
            changed = True
    if changed:
        os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns))
PY
done
OVL=$W/overlay
mkdir -p "$OVL"
KMOUNTS+=("$OVL")
mount -t overlay overlay -o "lowerdir=$W/ovl-l3:$W/ovl-l2:$W/ovl-l1" "$OVL" ||
	die "mount -t overlay -o lowerdir=L3:L2:L1 failed: $(dmesg | tail -n 3)"
ok "overlayfs reference mounted: $(awk -v m="$OVL" '$2 == m { print $3, $4 }' /proc/mounts | head -c 200)"
check "the overlayfs reference shows what the layers mean" python3 "$EXPECT" "$OVL"
cp -a "$OVL" "$W/flat"
cmp_trees "cp -a copy of the overlay view vs the overlay (sanity)" "$OVL" "$W/flat" --ignore-dir-nlink
echo "time layers and reference: $(since "$t")s"

# merge_case NAME LAYER_FS_VERSION MERGE_FS_VERSION
merge_case() {
	local name=$1 lv=$2 mv=$3 d=$W/$1 l boots=() rc=0 mnt=$W/mnt-$1 t
	t=$(now)
	mkdir -p "$d/blobs"
	for l in l1 l2 l3; do
		if ! T "$LAZYIMG" convert -q --fs-version "$lv" "$W/oci/$l" "$d/$l" > "$d/$l.log" 2>&1; then
			bad "$name: lazyimg convert --fs-version $lv $l: $(head -c 300 "$d/$l.log")"
			return 0
		fi
		ln -s "../$l/blobs/$(cd "$d/$l/blobs" && ls)" "$d/blobs/"
		boots+=("$d/$l/image.boot")
	done
	T "$LAZYIMG" merge --fs-version "$mv" "$d/merged.boot" "${boots[@]}" > "$d/merge.log" 2>&1 || rc=$?
	if [ "$rc" -ne 0 ]; then
		bad "$name: lazyimg merge --fs-version $mv exited $rc: $(head -c 400 "$d/merge.log")"
		return 0
	fi
	ok "$name: layers converted as v$lv, merged as v$mv: $("$LAZYIMG" inspect "$d/merged.boot" | head -n 1)"
	check "$name: lazyimg check of the merged bootstrap" "$LAZYIMG" check -B "$d/blobs" "$d/merged.boot"
	mount_img "$mnt" -b "$d/merged.boot" -B "$d/blobs" || { bad "$name: cannot mount the merge"; return 0; }
	check "$name: the merge shows what the layers mean" python3 "$EXPECT" "$mnt"
	cmp_trees "$name: overlayfs vs merged mount (ignoring trusted.overlay.* and directory nlink)" \
		"$OVL" "$mnt" --ignore-xattr-prefix trusted.overlay. --ignore-dir-nlink
	cmp_trees "$name: cp -a copy of the overlay view vs merged mount (nothing ignored)" "$W/flat" "$mnt"
	umount_img "$mnt"
	echo "time $name: $(since "$t")s"
}

merge_case v5 5 5
merge_case v6 6 6
merge_case v6-layers-v5-merge 6 5

echo "time total: $(since "$T_START")s"
finish
