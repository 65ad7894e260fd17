#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Round trip of a layer tarball through `lazyimg convert` and a FUSE mount. The tree of
# tests/tools/gentree.py (every kind of entry) is archived with GNU tar as `tar --xattrs -cf`
# (PAX: nanosecond mtimes, xattrs, long and non-UTF-8 names, big uid/gid) and converted
#   as .tar, .tar.gz and .tar.zst files, and each of them on stdin ('-'), as RAFS v6;
#   as .tar as RAFS v5 (lz4, sha256);
#   with docker-style names (no "./" prefix, no entry for the root directory);
#   in GNU format (--format=gnu: 'L'/'K' long names, base-256 numbers; no xattrs, mtimes
#   in whole seconds, so those are compared that way);
#   and, to tell one failure from another, as .tar without the two files dated before 1970.
# Each mount must equal the source tree by tests/tools/treecmp.py; tar cannot hold sockets,
# so the source's sockets are left out of the comparison (--no-sockets) and the image must
# have none. Determinism: the same tar converted twice, and the same tar stream as .tar,
# .tar.gz, .tar.zst and on stdin, give byte-identical image.boot and blob.
# Prints the time of every step. Exit 0 pass, 1 fail.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
W=$(mktemp -d /tmp/lazyimg-t31.XXXXXX)
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
GEN=$TOOLS/gentree.py
CMP=$TOOLS/treecmp.py
echo "workdir $W, lazyimg $LAZYIMG"
[ -x "$LAZYIMG" ] || die "$LAZYIMG is not built"
for t in tar gzip zstd; do command -v "$t" > /dev/null || die "$t is not installed"; done

T_START=$(date +%s.%N)
now() { date +%s.%N; }
since() { printf '%.1f' "$(echo "$(now) - $1" | bc)"; }

# convert_ok DESC OUT STDIN_FILE|"" ARGS...: lazyimg convert -q ARGS OUT [< STDIN_FILE]
convert_ok() {
	local what=$1 out=$2 in=$3 t rc=0; shift 3
	t=$(now)
	if [ -n "$in" ]; then
		timeout -k 5 300 "$LAZYIMG" convert -q "$@" "$out" < "$in" > "$out.convert.log" 2>&1 || rc=$?
	else
		timeout -k 5 300 "$LAZYIMG" convert -q "$@" "$out" > "$out.convert.log" 2>&1 || rc=$?
	fi
	CONV_SECS=$(since "$t")
	if [ "$rc" -ne 0 ]; then
		bad "$what: lazyimg convert $* $out${in:+ < $in} exited $rc:"
		sed 's/^/    | /' "$out.convert.log" | head -n 20
		return 1
	fi
	if [ ! -s "$out/image.boot" ] || [ "$(find "$out/blobs" -type f | wc -l)" -ne 1 ]; then
		bad "$what: convert did not write image.boot and one blob: $(ls -R "$out" | head -c 300)"
		return 1
	fi
	ok "$what: converted in ${CONV_SECS}s"
}

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

same_image() {
	local what=$1 a=$2 b=$3 ba bb
	ba=$(cd "$a/blobs" && ls)
	bb=$(cd "$b/blobs" && ls)
	if ! cmp -s "$a/image.boot" "$b/image.boot"; then
		bad "$what: image.boot differs: $(cmp "$a/image.boot" "$b/image.boot" 2>&1 | head -n 1)"
	elif [ "$ba" != "$bb" ]; then
		bad "$what: blob ids differ: $ba vs $bb"
	elif ! cmp -s "$a/blobs/$ba" "$b/blobs/$bb"; then
		bad "$what: blob $ba differs: $(cmp "$a/blobs/$ba" "$b/blobs/$bb" 2>&1 | head -n 1)"
	else
		ok "$what: image.boot and blob ${ba:0:16}... byte-identical"
	fi
}

# roundtrip NAME STDIN_FILE|"" TREECMP_OPTS CONVERT_ARGS...: convert (kept in $W/NAME),
# check, mount, compare with $W/src, unmount
roundtrip() {
	local name=$1 in=$2 copts=$3 out=$W/$1 mnt=$W/mnt-$1 t; shift 3
	t=$(now)
	convert_ok "$name" "$out" "$in" "$@" || return 0
	check "$name: lazyimg check" timeout -k 5 300 "$LAZYIMG" check -B "$out/blobs" "$out/image.boot"
	mount_img "$mnt" -b "$out/image.boot" -B "$out/blobs" || { bad "$name: cannot mount"; return 0; }
	# shellcheck disable=SC2086 # copts is a list of options
	cmp_trees "$name: source vs lazyimg mount" "$W/src" "$mnt" --no-sockets $copts
	umount_img "$mnt"
	echo "time $name: $(since "$t")s"
}

t=$(now)
python3 "$GEN" "$W/src" || die "gentree.py failed"
# GNU tar records hard links of regular files and symlinks only: fifos and
# devices linked together come out of the archive as separate inodes. Make
# the source say what a tar can say, so the comparison tests lazyimg only.
python3 - "$W/src" <<'PY' || die "cannot split device/fifo hard links"
import os, stat, sys
for root, dirs, files in os.walk(sys.argv[1]):
    for n in files:
        p = os.path.join(root, n); st = os.lstat(p)
        if st.st_nlink > 1 and (stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
            x = {k: os.getxattr(p, k, follow_symlinks=False) for k in os.listxattr(p, follow_symlinks=False)}
            os.unlink(p)
            os.mknod(p, st.st_mode, st.st_rdev)
            os.chown(p, st.st_uid, st.st_gid, follow_symlinks=False)
            for k, v in x.items():
                os.setxattr(p, k, v, follow_symlinks=False)
            os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
PY
echo "time gentree: $(since "$t")s ($(find "$W/src" | wc -l) entries)"

# --- the tarballs ---
t=$(now)
rc=0
tar --xattrs -C "$W/src" -cf "$W/full.tar" . 2> "$W/tar.err" || rc=$?
[ "$rc" -eq 0 ] || die "tar --xattrs -cf exited $rc: $(head -c 300 "$W/tar.err")"
echo "tar said (expected: sockets ignored):"; sed 's/^/    | /' "$W/tar.err"
gzip -n -c "$W/full.tar" > "$W/full.tar.gz"
zstd -q -c "$W/full.tar" > "$W/full.tar.zst"
# docker-style: names without "./", no entry for the root directory
(cd "$W/src" && find . -mindepth 1 ! -type s -printf '%P\0' | LC_ALL=C sort -z) > "$W/names0"
tar --xattrs -C "$W/src" --no-recursion --null -T "$W/names0" -cf "$W/noprefix.tar" 2> "$W/tar.err" ||
	die "tar (docker-style) failed: $(head -c 300 "$W/tar.err")"
# the same without the two files dated before 1970, so that a failure of negative mtimes
# alone shows as such
tar --xattrs -C "$W/src" --exclude ./times/pre-1970 --exclude ./times/minus-1s -cf "$W/post1970.tar" . 2> /dev/null ||
	die "tar (without pre-1970 files) failed"
rc=0
tar --format=gnu -C "$W/src" -cf "$W/gnu.tar" . 2> "$W/tar.err" || rc=$?
[ "$rc" -eq 0 ] || die "tar --format=gnu exited $rc: $(head -c 300 "$W/tar.err")"
echo "time tar, gzip, zstd: $(since "$t")s ($(stat -c %s "$W/full.tar") bytes of tar)"
if tar -tvf "$W/full.tar" 2>/dev/null | grep -q '^s'; then bad "tar archived a socket"; fi

roundtrip tar "" "" "$W/full.tar"
roundtrip tar.gz "" "" "$W/full.tar.gz"
roundtrip tar.zst "" "" "$W/full.tar.zst"
roundtrip stdin-tar "$W/full.tar" "" -
roundtrip stdin-tar.gz "$W/full.tar.gz" "" -
roundtrip stdin-tar.zst "$W/full.tar.zst" "" -
roundtrip tar-v5-lz4-sha256 "" "" --fs-version 5 --compressor lz4 --digester sha256 "$W/full.tar"
roundtrip noprefix "" "--ignore-root-attrs" "$W/noprefix.tar"
roundtrip gnu-format "" "--mtime-seconds --no-xattrs" "$W/gnu.tar"
roundtrip tar-without-pre-1970 "" "--exclude times/pre-1970 --exclude times/minus-1s" "$W/post1970.tar"

# --- determinism ---
if [ -s "$W/tar/image.boot" ]; then
	if convert_ok "tar (again)" "$W/tar.again" "" "$W/full.tar"; then
		same_image "full.tar converted twice" "$W/tar" "$W/tar.again"
	fi
	for v in tar.gz tar.zst stdin-tar stdin-tar.gz stdin-tar.zst; do
		if [ -s "$W/$v/image.boot" ]; then same_image "the same tar stream as $v and as .tar" "$W/$v" "$W/tar"; fi
	done
fi

echo "time total: $(since "$T_START")s"
finish
