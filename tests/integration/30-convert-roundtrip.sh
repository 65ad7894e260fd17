#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Round trip of a directory through `lazyimg convert` and a FUSE mount: tests/tools/gentree.py
# makes a tree with every kind of entry (see its header), which is converted in all 12
# combinations of --fs-version {5,6} x --compressor {zstd,lz4,none} x --digester
# {blake3,sha256}; each image passes `lazyimg check`, is mounted with `lazyimg mount`, and
# tests/tools/treecmp.py must find the mount identical to the source (content, sizes, modes,
# owners, mtimes to the ns, symlink targets, hard link groups, xattrs, device numbers).
# Determinism: converting the same directory again, and a `cp -a` copy of it (other inode
# numbers, other readdir order), gives byte-identical image.boot and blob.
# The 100k-entry variant (gentree.py --files 100000) runs in one combination per fs-version.
# Prints the time of every step. Exit 0 pass, 1 fail.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
W=$(mktemp -d /tmp/lazyimg-t30.XXXXXX)
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
GEN=$TOOLS/gentree.py
CMP=$TOOLS/treecmp.py
NFILES=${LAZYIMG_T30_FILES:-100000}
CMP_TIMEOUT=600
echo "workdir $W, lazyimg $LAZYIMG"
[ -x "$LAZYIMG" ] || die "$LAZYIMG is not built"

T_START=$(date +%s.%N)
now() { date +%s.%N; }
since() { printf '%.1f' "$(echo "$(now) - $1" | bc)"; }

# convert_ok DESC OUT ARGS...: lazyimg convert -q ARGS OUT; sets CONV_SECS
convert_ok() {
	local what=$1 out=$2 t rc=0; shift 2
	t=$(now)
	timeout -k 5 300 "$LAZYIMG" convert -q "$@" "$out" > "$out.convert.log" 2>&1 || rc=$?
	CONV_SECS=$(since "$t")
	if [ "$rc" -ne 0 ]; then
		bad "$what: lazyimg convert $* $out exited $rc:"
		sed 's/^/    | /' "$out.convert.log" | head -n 20
		return 1
	fi
	if [ ! -s "$out/image.boot" ] || [ "$(find "$out/blobs" -type f | wc -l)" -ne 1 ]; then
		bad "$what: convert did not write image.boot and one blob: $(ls -R "$out" | head -c 300)"
		return 1
	fi
	return 0
}

# cmp_trees DESC A B [treecmp options...]
cmp_trees() {
	local what=$1 a=$2 b=$3 rc=0 t; shift 3
	t=$(now)
	timeout -k 5 "$CMP_TIMEOUT" python3 "$CMP" "$@" "$a" "$b" > "$W/treecmp.out" 2>&1 || rc=$?
	if [ "$rc" -eq 0 ]; then
		ok "$what: $(tail -n 1 "$W/treecmp.out") ($(since "$t") s)"
	else
		bad "$what: treecmp exit $rc ($(since "$t") s):"
		head -n 60 "$W/treecmp.out" | sed 's/^/    | /'
		[ "$(wc -l < "$W/treecmp.out")" -le 60 ] || { echo "    | ..."; tail -n 1 "$W/treecmp.out" | sed 's/^/    | /'; }
	fi
}

# same_image DESC OUT1 OUT2: byte-identical image.boot and blob (same blob id)
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
		ok "$what: image.boot ($(stat -c %s "$a/image.boot") bytes) and blob ${ba:0:16}... ($(stat -c %s "$a/blobs/$ba") bytes) byte-identical"
	fi
}

# check_inspect OUT VERSION COMPRESSOR DIGESTER: the image says what was asked for
# (inspect names lz4 as nydus does: lz4_block)
check_inspect() {
	local got want
	want="$2 ${3/#lz4/lz4_block} $4 $(cd "$1/blobs" && ls)"
	got=$("$LAZYIMG" inspect --json "$1/image.boot" | python3 -c 'import json, sys
d = json.load(sys.stdin)
print(d["version"], d["compressor"], d["digester"], " ".join(b["id"] for b in d["blobs"]))') || got="(inspect failed)"
	check_eq "$(basename "$1"): inspect: version compressor digester blob-id" "$got" "$want"
}

# roundtrip SRC NAME ARGS...: convert, check, mount, compare, unmount
roundtrip() {
	local src=$1 name=$2 out=$W/$2 t mnt=$W/mnt-$2; shift 2
	t=$(now)
	convert_ok "$name" "$out" "$@" "$src" || return 0
	local cs=$CONV_SECS t2
	t2=$(now)
	check "$name: lazyimg check" timeout -k 5 300 "$LAZYIMG" check -B "$out/blobs" "$out/image.boot"
	local ks
	ks=$(since "$t2")
	mount_img "$mnt" -b "$out/image.boot" -B "$out/blobs" || { bad "$name: cannot mount"; return 0; }
	cmp_trees "$name: source vs lazyimg mount" "$src" "$mnt"
	umount_img "$mnt"
	echo "time $name: convert ${cs}s, check ${ks}s, total $(since "$t")s"
}

# --- the full tree ---
t=$(now)
python3 "$GEN" "$W/src" || die "gentree.py failed"
echo "time gentree: $(since "$t")s ($(find "$W/src" | wc -l) entries, $(du -sh --apparent-size "$W/src" | cut -f1))"

for v in 5 6; do
	for c in zstd lz4 none; do
		for d in blake3 sha256; do
			name=v$v-$c-$d
			roundtrip "$W/src" "$name" --fs-version "$v" --compressor "$c" --digester "$d"
			if [ -s "$W/$name/image.boot" ]; then check_inspect "$W/$name" "$v" "$c" "$d"; fi
			# determinism: the same input again
			if [ -d "$W/$name" ] && convert_ok "$name (again)" "$W/$name.again" --fs-version "$v" \
				--compressor "$c" --digester "$d" "$W/src"; then
				same_image "$name: converted twice" "$W/$name" "$W/$name.again"
				rm -rf "$W/$name.again"
			fi
			rm -rf "${W:?}/$name"
		done
	done
done

# determinism across a copy: other inode numbers and readdir order, same content
t=$(now)
cp -a "$W/src" "$W/src-copy"
cmp_trees "cp -a copy of the source is identical to it" "$W/src" "$W/src-copy"
for v in 5 6; do
	if convert_ok "v$v copy" "$W/copy-a" --fs-version "$v" "$W/src" &&
		convert_ok "v$v copy" "$W/copy-b" --fs-version "$v" "$W/src-copy"; then
		same_image "v$v: the source and its cp -a copy" "$W/copy-a" "$W/copy-b"
	fi
	rm -rf "$W/copy-a" "$W/copy-b"
done
rm -rf "$W/src-copy"
echo "time copy determinism: $(since "$t")s"

# --- the big variant: one directory of $NFILES entries ---
rm -rf "$W/src"
t=$(now)
python3 "$GEN" --files "$NFILES" "$W/many" || die "gentree.py --files failed"
echo "time gentree --files $NFILES: $(since "$t")s"
roundtrip "$W/many" "many-v5-lz4-sha256" --fs-version 5 --compressor lz4 --digester sha256
roundtrip "$W/many" "many-v6-zstd-blake3" --fs-version 6 --compressor zstd --digester blake3

echo "time total: $(since "$T_START")s"
finish
