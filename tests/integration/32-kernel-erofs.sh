#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The kernel as an oracle: an `lazyimg convert --fs-version 6 --aligned` image of the
# tests/tools/gentree.py tree mounts with the kernel's EROFS, the bootstrap and the blob on
# read-only loop devices (mount -t erofs -o ro,device=BLOBLOOP METALOOP), and
#   the kernel mount equals the source tree (tests/tools/treecmp.py: content, sizes, modes,
#   owners, ns mtimes, symlink targets, hard link groups, xattrs, device numbers);
#   the lazyimg FUSE mount of the same image equals the source and the kernel mount
#   (there nothing is ignored: not even directory nlink);
# for the default chunk size, for 4 KiB chunks, and for the 100k-entry variant (kernel only).
# Anything the kernel logs about our loop devices is printed; an EROFS error fails the test.
# Skips (77) only when /proc/filesystems has no erofs or losetup is missing.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

modprobe erofs > /dev/null 2>&1 || true
if ! grep -qw erofs /proc/filesystems; then
	echo "SKIP: the kernel has no EROFS (not in /proc/filesystems)"
	exit 77
fi
if ! command -v losetup > /dev/null; then
	echo "SKIP: losetup is not installed"
	exit 77
fi

W=$(mktemp -d /tmp/lazyimg-t32.XXXXXX)
KMOUNTS=()
LOOPS=()
KLOOPS=()
# lib.sh's cleanup stays in charge of the lazyimg mounts and $W; ours first undoes the
# kernel mounts and detaches the loop devices this script attached (backed by files in $W)
eval "lib_$(declare -f cleanup)"
cleanup() {
	local rc=$? m l
	set +e
	trap - EXIT
	for m in "${KMOUNTS[@]}"; do
		if is_mounted "$m"; then
			echo "cleanup: unmounting $m"
			umount "$m" || umount -l "$m"
		fi
	done
	for l in "${LOOPS[@]}"; do
		case $(losetup -n -O BACK-FILE "$l" 2>/dev/null) in
		"$W"/*) echo "cleanup: detaching $l"; losetup -d "$l" ;;
		esac
	done
	(exit "$rc")
	lib_cleanup
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
GEN=$TOOLS/gentree.py
CMP=$TOOLS/treecmp.py
echo "workdir $W, lazyimg $LAZYIMG, kernel $(uname -r)"
[ -x "$LAZYIMG" ] || die "$LAZYIMG is not built"

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

DMESG_MARK=0
dmesg_mark() { DMESG_MARK=$(dmesg | wc -l); }
# dmesg_check WHAT LOOP...: print what the kernel said about these loop devices since the
# mark; any EROFS error about them is a failure
dmesg_check() {
	local what=$1 l re="" new; shift
	for l in "$@"; do re="$re|${l#/dev/}[^0-9]"; done
	re="(${re#|})"
	new=$(dmesg | tail -n +"$((DMESG_MARK + 1))" | grep -E "$re" || true)
	[ -n "$new" ] && printf 'dmesg (%s):\n%s\n' "$what" "$(sed 's/^/    | /' <<< "$new")"
	if grep -iE 'erofs.*(err|fail|corrupt|invalid|unsupported|bad)' <<< "$new" > /dev/null; then
		bad "$what: the kernel logged EROFS errors (above)"
	fi
	return 0
}

# kmount OUT MNT: attach image.boot and the blob read-only, mount -t erofs; sets KLOOPS
kmount() {
	local out=$1 mnt=$2 blob meta bl rc=0
	blob=$(cd "$out/blobs" && ls)
	mkdir -p "$mnt"
	dmesg_mark
	meta=$(losetup -f --show -r "$out/image.boot") || { bad "losetup of image.boot failed"; return 1; }
	LOOPS+=("$meta")
	bl=$(losetup -f --show -r "$out/blobs/$blob" 2> "$W/losetup.err") || { bad "losetup of the blob failed: $(cat "$W/losetup.err")"; return 1; }
	LOOPS+=("$bl")
	[ -s "$W/losetup.err" ] && echo "losetup of the blob said: $(cat "$W/losetup.err")"
	KMOUNTS+=("$mnt")
	mount -t erofs -o "ro,device=$bl" "$meta" "$mnt" 2> "$W/mount.err" || rc=$?
	KLOOPS=("$meta" "$bl")
	if [ "$rc" -ne 0 ]; then
		bad "mount -t erofs -o ro,device=$bl $meta $mnt: exit $rc: $(cat "$W/mount.err")"
		dmesg | tail -n +"$((DMESG_MARK + 1))" | tail -n 20 | sed 's/^/    | dmesg: /'
		return 1
	fi
	ok "kernel EROFS mount of $(basename "$out"): $(awk -v m="$mnt" '$2 == m { print $1, $3, $4 }' /proc/mounts)"
}

kumount() {
	local mnt=$1 l
	umount "$mnt" || bad "umount $mnt failed"
	for l in "${KLOOPS[@]}"; do losetup -d "$l" || bad "losetup -d $l failed"; done
}

convert_aligned() { # OUT SRC ARGS...
	local out=$1 src=$2 t rc=0; shift 2
	t=$(now)
	timeout -k 5 300 "$LAZYIMG" convert -q --fs-version 6 --aligned "$@" "$src" "$out" > "$out.log" 2>&1 || rc=$?
	if [ "$rc" -ne 0 ]; then
		bad "lazyimg convert --fs-version 6 --aligned $* $src $out: exit $rc: $(head -c 400 "$out.log")"
		return 1
	fi
	ok "convert --fs-version 6 --aligned $* $(basename "$src") in $(since "$t")s ($(stat -c %s "$out/image.boot") + $(du -b "$out/blobs" | cut -f1) bytes)"
}

# kernel_case NAME SRC FUSE(1/0) CONVERT_ARGS...
kernel_case() {
	local name=$1 src=$2 fuse=$3 out=$W/out-$1 t; shift 3
	t=$(now)
	convert_aligned "$out" "$src" "$@" || return 0
	check "$name: lazyimg check" timeout -k 5 300 "$LAZYIMG" check -B "$out/blobs" "$out/image.boot"
	if kmount "$out" "$W/k-$name"; then
		cmp_trees "$name: source vs kernel EROFS mount" "$src" "$W/k-$name"
		if [ "$fuse" = 1 ]; then
			if mount_img "$W/f-$name" -b "$out/image.boot" -B "$out/blobs"; then
				cmp_trees "$name: source vs lazyimg mount" "$src" "$W/f-$name"
				cmp_trees "$name: kernel EROFS mount vs lazyimg mount of the same image" "$W/k-$name" "$W/f-$name"
				umount_img "$W/f-$name"
			else
				bad "$name: lazyimg cannot mount the aligned image"
			fi
		fi
		dmesg_check "$name" "${KLOOPS[@]}"
		kumount "$W/k-$name"
	fi
	echo "time $name: $(since "$t")s"
}

t=$(now)
python3 "$GEN" "$W/src" || die "gentree.py failed"
echo "time gentree: $(since "$t")s"
kernel_case full "$W/src" 1
kernel_case full-4k-chunks "$W/src" 1 --chunk-size 4096 --digester sha256
rm -rf "$W/src" "$W/out-full" "$W/out-full-4k-chunks"

t=$(now)
python3 "$GEN" --files "${LAZYIMG_T32_FILES:-100000}" "$W/many" || die "gentree.py --files failed"
echo "time gentree --files: $(since "$t")s"
kernel_case many "$W/many" 0

echo "time total: $(since "$T_START")s"
finish
