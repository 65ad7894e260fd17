# SPDX-License-Identifier: Apache-2.0
# Shared helpers for the fixture mount tests 10-17 (sourced, after `set -euo pipefail`).
#
#   lib_init                 private temp dir $W, `trap cleanup EXIT`
#   mount_img MNT ARGS...    lazyimg mount ARGS MNT (log in MNT.log); records the server pid
#   umount_img MNT           lazyimg umount, then: server gone, MNT not in /proc/mounts
#   check_image              the per-fixture checks, driven by the variables documented there
#   ok/bad/check/finish      result bookkeeping: every check prints "ok: ..." or "FAIL: ...",
#                            the script goes on, and `finish` exits 1 if anything failed
#
# cleanup unmounts whatever this script mounted (lazyimg umount, else umount -l), kills
# only the server pids it recorded (after checking the pid still serves that mountpoint),
# and removes $W.

: "${LAZYIMG:?run through tests/run.sh, which exports LAZYIMG}"
: "${TOP:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${BUILD:=build}"
: "${LAZYIMG_FIXTURES:=$TOP/../shared/fixtures}"
FIX=$LAZYIMG_FIXTURES/rafs
TOOLS=$TOP/tests/tools
HELPERS=$TOP/$BUILD/tests
STEP_TIMEOUT=${STEP_TIMEOUT:-60}
export LC_ALL=C

NFAIL=0
NCHECK=0
MOUNTS=()
declare -A SERVER_PID=()

ok() { NCHECK=$((NCHECK + 1)); echo "ok: $*"; }
bad() { NCHECK=$((NCHECK + 1)); NFAIL=$((NFAIL + 1)); echo "FAIL: $*"; }
die() { echo "FAIL: $*"; echo "aborting"; exit 1; }

# check DESCRIPTION CMD...: run CMD (with a timeout); ok if it exits 0, else FAIL with its output
check() {
	local what=$1 out rc=0; shift
	out=$(timeout -k 5 "$STEP_TIMEOUT" "$@" 2>&1) || rc=$?
	if [ "$rc" -eq 0 ]; then
		ok "$what"
	else
		bad "$what (exit $rc)"
		printf '%s\n' "$out" | head -n 40 | sed 's/^/    | /' || true
	fi
}

# check_eq DESCRIPTION GOT WANT
check_eq() {
	if [ "$2" = "$3" ]; then ok "$1: $2"; else bad "$1: got '$2', want '$3'"; fi
}

# check_same DESCRIPTION FILE_GOT FILE_WANT: byte-identical, else a diff
check_same() {
	if cmp -s "$2" "$3"; then
		ok "$1 ($(wc -l < "$3") lines identical)"
	else
		bad "$1 differs (< got, > want)"
		diff "$2" "$3" | head -n 40 | sed 's/^/    | /' || true
	fi
}

# must_fail DESCRIPTION EXPECTED_MESSAGE_REGEX CMD...: CMD fails, its stderr matches the regex
must_fail() {
	local what=$1 re=$2 rc=0 err; shift 2
	err=$(timeout -k 5 "$STEP_TIMEOUT" "$@" 2>&1 >/dev/null) || rc=$?
	if [ "$rc" -eq 0 ]; then
		bad "$what: succeeded, want failure"
	elif ! grep -qiE -- "$re" <<< "$err"; then
		bad "$what: failed (exit $rc) but the message does not match /$re/: $(head -c 300 <<< "$err")"
	else
		ok "$what: exit $rc, \"$(grep -iE -- "$re" <<< "$err" | head -n 1 | head -c 160)\""
	fi
}

finish() {
	echo "$NCHECK checks, $NFAIL failed"
	[ "$NFAIL" -eq 0 ] || exit 1
	exit 0
}

T() { timeout -k 5 "$STEP_TIMEOUT" "$@"; }

is_mounted() { awk -v m="$1" '$2 == m { f = 1 } END { exit !f }' /proc/mounts; }

# alive PID: exists and is not a zombie
alive() {
	local st
	[ -r "/proc/$1/stat" ] || return 1
	st=$(sed -E 's/^[0-9]+ \(.*\) ([A-Z]).*/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# serves PID MNT: PID is a `lazyimg mount ... MNT` process
serves() {
	local args=()
	[ -r "/proc/$1/cmdline" ] || return 1
	{ mapfile -d '' args < "/proc/$1/cmdline"; } 2>/dev/null || return 1
	[ "${#args[@]}" -ge 3 ] && [ "$(basename -- "${args[0]}")" = lazyimg ] &&
		[ "${args[1]}" = mount ] && [ "${args[${#args[@]} - 1]}" = "$2" ]
}

# server_pid MNT: the pid of the background server of MNT (lazyimg mount forks it)
server_pid() {
	local p
	for p in /proc/[0-9]*; do
		p=${p#/proc/}
		serves "$p" "$1" && alive "$p" && { echo "$p"; return 0; }
	done
	return 1
}

lib_init() {
	W=$(mktemp -d /tmp/lazyimg-it.XXXXXX)
	trap cleanup EXIT
	trap 'exit 1' INT TERM HUP
	echo "workdir $W, fixtures $FIX, lazyimg $LAZYIMG"
	[ -d "$FIX" ] || die "fixtures not found at $FIX"
	[ -x "$LAZYIMG" ] || die "$LAZYIMG is not built"
}

cleanup() {
	local rc=$? m p i
	trap - EXIT
	# background jobs of this script still running (readers, a foreground server)
	for p in $(jobs -p); do
		kill "$p" 2>/dev/null || true
	done
	for m in "${MOUNTS[@]}"; do
		if is_mounted "$m"; then
			echo "cleanup: unmounting $m"
			timeout -k 5 20 "$LAZYIMG" umount "$m" >/dev/null 2>&1 || umount -l "$m" 2>/dev/null || true
		fi
		p=${SERVER_PID[$m]:-}
		if [ -n "$p" ] && alive "$p" && serves "$p" "$m"; then
			echo "cleanup: stopping server $p of $m"
			kill "$p" 2>/dev/null || true
			for i in $(seq 50); do alive "$p" || break; sleep 0.1; done
			alive "$p" && serves "$p" "$m" && kill -9 "$p" 2>/dev/null
		fi
	done
	if [ -n "${W:-}" ] && [ -d "$W" ]; then
		if awk -v w="$W/" 'index($2, w) == 1 { f = 1 } END { exit !f }' /proc/mounts; then
			echo "cleanup: something is still mounted under $W; leaving it" >&2
		else
			rm -rf "$W"
		fi
	fi
	exit "$rc"
}

# mount_img MNT ARGS...: background mount, log to MNT.log; sets SERVER_PID[MNT]
mount_img() {
	local mnt=$1 rc=0; shift
	mkdir -p "$mnt"
	MOUNTS+=("$mnt")
	T "$LAZYIMG" mount --log-file "$mnt.log" "$@" "$mnt" 2> "$mnt.err" || rc=$?
	if [ "$rc" -ne 0 ]; then
		echo "lazyimg mount $* $mnt: exit $rc; its stderr and the server log:"
		sed 's/^/    | /' "$mnt.err" "$mnt.log" 2>/dev/null | head -n 60 || true
		if is_mounted "$mnt" && SERVER_PID[$mnt]=$(server_pid "$mnt"); then
			# the mount is up: record the failure and go on checking it
			bad "lazyimg mount exited $rc although $mnt is mounted (server pid ${SERVER_PID[$mnt]})"
			return 0
		fi
		return 1
	fi
	[ -s "$mnt.err" ] && { echo "lazyimg mount wrote to stderr:"; sed 's/^/    | /' "$mnt.err" || true; }
	is_mounted "$mnt" || { echo "lazyimg mount returned 0 but $mnt is not in /proc/mounts"; return 1; }
	SERVER_PID[$mnt]=$(server_pid "$mnt") || { echo "no server process found for $mnt"; return 1; }
	echo "mounted $mnt: server pid ${SERVER_PID[$mnt]}, $(awk -v m="$mnt" '$2 == m { print $1, $3, $4 }' /proc/mounts)"
}

# umount_img MNT: lazyimg umount must succeed, the server exit and MNT leave /proc/mounts
umount_img() {
	local mnt=$1 p=${SERVER_PID[$1]:-} rc=0 i
	T "$LAZYIMG" umount "$mnt" 2> "$W/umount.err" || rc=$?
	check_eq "lazyimg umount $mnt exit status" "$rc" 0
	[ -s "$W/umount.err" ] && { sed 's/^/    | /' "$W/umount.err" | head -n 40 || true; }
	for i in $(seq 50); do
		{ [ -n "$p" ] && alive "$p"; } || break
		sleep 0.1
	done
	if [ -z "$p" ]; then
		bad "no server pid was recorded for $mnt"
	elif alive "$p"; then
		bad "server pid $p still running 5 s after umount"
	else
		ok "server pid $p has exited"
	fi
	if is_mounted "$mnt"; then bad "$mnt still in /proc/mounts"; else ok "$mnt no longer in /proc/mounts"; fi
	no_sanitizer_report "$mnt.log" "server log of $mnt"
	if [ -s "$mnt.log" ]; then
		echo "server log of $mnt:"
		sed 's/^/    | /' "$mnt.log" | head -n 20 || true
	fi
}

# no_sanitizer_report FILE WHAT: ASan/UBSan/TSan/LSan reports in a server's log or stderr fail
# the test (TSan only reports races, the server keeps running and exits 0)
no_sanitizer_report() {
	[ -f "$1" ] || return 0
	if grep -qE 'ERROR: (Address|Thread|Leak|Memory)Sanitizer|WARNING: ThreadSanitizer|runtime error:' "$1"; then
		bad "$2 has a sanitizer report: $(grep -m1 -E 'Sanitizer|runtime error:' "$1" | head -c 200)"
	fi
	return 0
}

# rows of a listing file (fixture expected file or listing.py output)
listing_rows() { grep -P '^/.*\t' "$1" || true; }
# "md5  /path" lines of a .result/expected/listing file, sorted
md5_lines() { grep -E '^[0-9a-f]{32}  /' "$1" | sort || true; }

# The per-fixture checks on a fresh mount. Inputs (variables):
#   BOOT BLOBDIR     what to mount (lazyimg mount -b BOOT -B BLOBDIR)
#   EXPECTED         fixture file with the listing rows ('/...' TAB ...) and md5 lines
#   MD5_REF          authoritative md5 lines (.result or expected file)
#   TREE_RESULT      optional: .result file whose JSON part `tree -a -J -v` must reproduce
#   HARDLINKS        optional: paths (image paths) that are one inode
#   HARDLINK_NLINK   their link count
#   FIX_WANT         optional: name of a filter applied to the expected rows only, for
#                    columns the expected file says differ in this fixture (2020 images)
#   INODES           expected f_files of `stat -f` (the superblock's inode count)
# Leaves the image mounted at $MNT for the script's own extra checks; call umount_img after.
check_image() {
	MNT=$W/mnt
	mount_img "$MNT" -b "$BOOT" -B "$BLOBDIR" || die "cannot mount $BOOT"
	check_ranges
	check_listing
	check_contents
	check_tree
	check_symlinks
	check_xattrs
	check_hardlinks
	check_readdir
	check "lazyimg check -B $(basename "$BLOBDIR") $(basename "$BOOT") passes" "$LAZYIMG" check -B "$BLOBDIR" "$BOOT"
	check_readonly
	check_statfs
}

# Reads through the mount (O_DIRECT so that each one reaches the server, then buffered) of
# ranges around every chunk boundary and at a few odd offsets of every file, done on the
# cold mount first; then compared with the same ranges of the whole file read with cat.
check_ranges() {
	local chunks=$W/chunks path size offs n=0 nmulti=0 b r spec dir=$W/ranges
	mkdir -p "$dir"
	python3 "$TOOLS/listing.py" chunks --bootstrap "$BOOT" > "$chunks" || die "listing.py chunks failed"
	exec 3< "$chunks"
	while IFS=$'\t' read -r -u 3 path size offs; do
		local f=$MNT$path specs=() id
		id=$(printf '%s' "$path" | md5sum | cut -c1-12)
		# byte ranges "skip count": start, end, page edges, an odd middle
		specs+=("0 1" "0 4095" "0 4096" "1 4096" "$((size / 2)) 131072" "$((size > 0 ? size - 1 : 0)) 1"
			"$size 10" "$((size > 4097 ? 4095 : 0)) 2")
		IFS=, read -r -a b <<< "$offs"
		if [ "${#b[@]}" -gt 1 ]; then
			nmulti=$((nmulti + 1))
			for r in "${b[@]:1}"; do
				specs+=("$((r - 1)) 2" "$((r - 1000)) 5000" "$((r - 131072)) 262144" "$((r - 8192)) 16384"
					"$r 1" "$((r - 1)) 1")
			done
		fi
		local i=0
		for spec in "${specs[@]}"; do
			set -- $spec
			[ "$1" -ge 0 ] || { i=$((i + 1)); continue; }
			# iflag=direct first (server path), then the page cache path
			T dd if="$f" of="$dir/$id.$i.d" iflag=direct,skip_bytes,count_bytes bs=4096 skip="$1" count="$2" status=none ||
				bad "dd iflag=direct $path bytes $1+$2 failed"
			T dd if="$f" of="$dir/$id.$i.b" iflag=skip_bytes,count_bytes bs=4096 skip="$1" count="$2" status=none ||
				bad "dd $path bytes $1+$2 failed"
			i=$((i + 1))
		done
		# aligned 4 KiB blocks across each chunk boundary, as `dd bs=4096 skip=` does
		for r in "${b[@]:1}"; do
			T dd if="$f" of="$dir/$id.blk$r" bs=4096 skip=$((r / 4096 - 2)) count=4 status=none ||
				bad "dd bs=4096 $path blocks around $r failed"
		done
		T cat "$f" > "$dir/$id.full" || bad "cat $path failed"
		local fsize
		fsize=$(stat -c %s "$dir/$id.full")
		[ "$fsize" = "$size" ] || bad "$path: cat read $fsize bytes, want $size"
		i=0
		for spec in "${specs[@]}"; do
			set -- $spec
			[ "$1" -ge 0 ] || { i=$((i + 1)); continue; }
			dd if="$dir/$id.full" of="$dir/$id.$i.ref" iflag=skip_bytes,count_bytes bs=4096 skip="$1" count="$2" status=none
			if ! cmp -s "$dir/$id.$i.d" "$dir/$id.$i.ref" || ! cmp -s "$dir/$id.$i.b" "$dir/$id.$i.ref"; then
				bad "$path bytes $1+$2 read through the mount differ from the same range of the whole file"
			fi
			n=$((n + 1))
			i=$((i + 1))
		done
		for r in "${b[@]:1}"; do
			dd if="$dir/$id.full" of="$dir/$id.blkref" bs=4096 skip=$((r / 4096 - 2)) count=4 status=none
			cmp -s "$dir/$id.blk$r" "$dir/$id.blkref" || bad "$path: 4 KiB blocks around chunk boundary $r differ"
			n=$((n + 1))
		done
	done
	exec 3<&-
	ok "$n range reads (O_DIRECT and buffered) equal the whole-file bytes ($nmulti file(s) with more than one chunk: every chunk boundary crossed)"
	rm -rf "$dir"
}

check_listing() {
	python3 "$TOOLS/listing.py" list --bootstrap "$BOOT" "$MNT" > "$W/listing" || { bad "listing.py list failed"; return; }
	listing_rows "$W/listing" > "$W/got.rows"
	listing_rows "$EXPECTED" > "$W/want.rows"
	if [ -n "${FIX_WANT:-}" ]; then
		"$FIX_WANT" < "$W/want.rows" > "$W/want.rows2"
		mv "$W/want.rows2" "$W/want.rows"
	fi
	[ -s "$W/want.rows" ] || die "no listing rows in $EXPECTED"
	check_same "listing (path type perm uid gid size nlink chunks xattrs target) vs $(basename "$EXPECTED")" \
		"$W/got.rows" "$W/want.rows"
	md5_lines "$W/listing" > "$W/got.md5"
	md5_lines "$EXPECTED" > "$W/want.md5"
	check_same "listing.py md5 section vs $(basename "$EXPECTED")" "$W/got.md5" "$W/want.md5"
	check "every entry's lstat (mode, uid, gid, size, nlink, ino, mtime, rdev) equals lazyimg inspect --json" \
		python3 "$TOOLS/listing.py" vs-inspect --bootstrap "$BOOT" "$MNT"
}

# md5sum over the mount (the upstream test's `find -type f -exec md5sum {} + | sort`)
check_contents() {
	if ! (cd "$MNT" && T find . -type f -exec md5sum {} +) > "$W/md5sum.raw" 2> "$W/md5sum.err"; then
		bad "find -type f -exec md5sum failed: $(head -c 300 "$W/md5sum.err")"
	fi
	sed 's#  \./#  /#' "$W/md5sum.raw" | sort > "$W/md5sum.out"
	md5_lines "$MD5_REF" > "$W/md5.ref"
	[ -s "$W/md5.ref" ] || die "no md5 lines in $MD5_REF"
	check_same "md5sum of every regular file vs $(basename "$MD5_REF")" "$W/md5sum.out" "$W/md5.ref"
}

check_tree() {
	[ -n "${TREE_RESULT:-}" ] || return 0
	command -v tree >/dev/null || { bad "tree is not installed (Debian package tree)"; return; }
	T python3 "$TOOLS/treejson.py" "$MNT" > "$W/tree.json" || { bad "tree -a -J -v failed"; return; }
	sed -n '/^\[$/,/^\]$/p' "$TREE_RESULT" > "$W/tree.ref"
	check_same "tree -a -J -v ($(tree --version | grep -o 'v[0-9][0-9.]*' | head -n 1), mount path as \"\") vs JSON of $(basename "$TREE_RESULT")" \
		"$W/tree.json" "$W/tree.ref"
}

check_symlinks() {
	local path t want got n=0 nbad=0
	while IFS=$'\t' read -r path t _ _ _ _ _ _ _ want; do
		[ "$t" = l ] || continue
		got=$(T readlink "$MNT$path") || got="(readlink failed)"
		n=$((n + 1))
		[ "$got" = "$want" ] || { bad "readlink $path: '$got', want '$want'"; nbad=$((nbad + 1)); }
	done < <(listing_rows "$EXPECTED")
	[ "$nbad" -eq 0 ] && ok "readlink of all $n symlinks gives the expected targets"
	return 0
}

# the fixtures carry no xattrs (every row says '-'): getfattr must find none, without errors
check_xattrs() {
	local rc=0
	if listing_rows "$EXPECTED" | awk -F'\t' '$9 != "-" { f = 1 } END { exit !f }'; then
		bad "check_xattrs only knows fixtures without xattrs"; return
	fi
	T getfattr -R -h -d -m - "$MNT" > "$W/xattrs.out" 2> "$W/xattrs.err" || rc=$?
	if [ "$rc" -ne 0 ] || [ -s "$W/xattrs.err" ]; then
		bad "getfattr -R -h -d -m - failed (exit $rc): $(head -c 300 "$W/xattrs.err")"
	elif [ -s "$W/xattrs.out" ]; then
		bad "getfattr found xattrs on an image that has none: $(head -c 300 "$W/xattrs.out")"
	else
		ok "getfattr -R -h -d -m - finds no xattrs (the image has none)"
	fi
}

check_hardlinks() {
	local p inos=() nl=()
	[ -n "${HARDLINKS:-}" ] || return 0
	for p in $HARDLINKS; do
		inos+=("$(stat -c %i "$MNT$p" || echo "stat-failed")")
		nl+=("$(stat -c %h "$MNT$p" || echo "stat-failed")")
	done
	if [ "$(printf '%s\n' "${inos[@]}" | sort -u | wc -l)" -eq 1 ]; then
		ok "hard links $HARDLINKS share st_ino ${inos[0]}"
	else
		bad "hard links $HARDLINKS: st_ino ${inos[*]}"
	fi
	if [ "$(printf '%s\n' "${nl[@]}" | sort -u)" = "$HARDLINK_NLINK" ]; then
		ok "hard links have nlink $HARDLINK_NLINK"
	else
		bad "hard links: nlink ${nl[*]}, want $HARDLINK_NLINK"
	fi
}

# readdir offsets are stable: ls -f twice, and getdents64 with tiny buffers plus lseek to every
# offset the server handed out (tests/tools/dirseek.c)
check_readdir() {
	local d nd=0 nbad=0 a b
	[ -x "$HELPERS/dirseek" ] || { bad "$HELPERS/dirseek is not built (make test-bins)"; return; }
	while IFS= read -r -d '' d; do
		nd=$((nd + 1))
		a=$(T ls -f -a "$d") || { bad "ls -f $d failed"; nbad=$((nbad + 1)); continue; }
		b=$(T ls -f -a "$d") || true
		[ "$a" = "$b" ] || { bad "ls -f $d: two listings differ"; nbad=$((nbad + 1)); }
		if ! T "$HELPERS/dirseek" "$d" 96 > "$W/ds1" 2> "$W/ds.err"; then
			bad "dirseek $d 96: $(cat "$W/ds.err")"; nbad=$((nbad + 1)); continue
		fi
		T "$HELPERS/dirseek" "$d" 4096 > "$W/ds2" 2>> "$W/ds.err" ||
			{ bad "dirseek $d 4096: $(cat "$W/ds.err")"; nbad=$((nbad + 1)); continue; }
		cmp -s "$W/ds1" "$W/ds2" ||
			{ bad "$d: getdents64 with 96- and 4096-byte buffers disagree"; nbad=$((nbad + 1)); }
		[ "$(cut -f4 "$W/ds1")" = "$a" ] ||
			{ bad "$d: getdents64 order differs from ls -f"; nbad=$((nbad + 1)); }
	done < <(find "$MNT" -type d -print0)
	[ "$nbad" -eq 0 ] && ok "readdir of all $nd directories: stable across listings, buffer sizes and lseek to every d_off"
	return 0
}

check_readonly() {
	local f d
	f=$MNT$(listing_rows "$EXPECTED" | awk -F'\t' '$2 == "f" { print $1; exit }')
	d=$MNT
	must_fail "touch (new file)" "Read-only file system" touch "$d/new-file"
	must_fail "touch (existing file)" "Read-only file system" touch "$f"
	must_fail "mkdir" "Read-only file system" mkdir "$d/new-dir"
	must_fail "rm" "Read-only file system" rm -f "$f"
	must_fail "echo > file" "Read-only file system" sh -c 'echo x > "$1"' sh "$f"
	must_fail "echo >> file" "Read-only file system" sh -c 'echo x >> "$1"' sh "$f"
	must_fail "ln -s" "Read-only file system" ln -s target "$d/new-link"
	must_fail "ln (hard link)" "Read-only file system" ln "$f" "$d/new-hardlink"
	must_fail "mv" "Read-only file system" mv "$f" "$f.moved"
	must_fail "chmod" "Read-only file system" chmod 600 "$f"
	must_fail "truncate" "Read-only file system" truncate -s 0 "$f"
	must_fail "setfattr" "Read-only file system" setfattr -n user.x -v 1 "$f"
	if [ -e "$d/new-file" ] || [ -e "$d/new-dir" ] || [ -e "$d/new-link" ]; then
		bad "a write attempt left something behind"
	fi
	check "file still readable after the write attempts" cat "$f"
}

check_statfs() {
	local out
	if ! out=$(T stat -f -c '%b %c %S %l %T' "$MNT" 2>&1); then
		bad "stat -f $MNT: $out"; return
	fi
	ok "stat -f: blocks files bsize namemax type = $out"
	set -- $out
	check_eq "stat -f: fundamental block size" "$3" 4096
	check_eq "stat -f: max name length" "$4" 255
	check_eq "stat -f: f_files (the superblock's inode count)" "$2" "$INODES"
	check_eq "stat -f: mount options say ro" \
		"$(awk -v m="$MNT" '$2 == m { print ($4 ~ /(^|,)ro(,|$)/) ? "ro" : $4 }' /proc/mounts)" ro
}

# The 2020 (old builder) v5 images: what MANIFEST.md verified for them and what
# repeatable.expected.txt says differs from Part B (uid/gid, modes, nlink, dir sizes).
#   fix_2020_rows: Part B rows as the 2020 images must show them. uid/gid are
#   $UID2020/$GID2020; directories have nlink 1; the root's mode is 0775 (the 2020 builder
#   stored 040775 in the root's inode record, offset 60; the current one 040755).
fix_2020_rows() {
	awk -F'\t' -v OFS='\t' -v u="$UID2020" -v g="$GID2020" '
		{ $4 = u; $5 = g }
		$2 == "d" { $7 = 1 }
		$1 == "/" { $3 = "0775" }
		{ print }'
}

check_2020_extras() {
	local n
	n=$(find "$MNT" -printf '%T@\n' | sort -u) || true
	check_eq "every mtime is 0 (2020 builder)" "$n" "0.0000000000"
	check_eq "root directory size is the old builder's byte count" "$(stat -c %s "$MNT")" 71
	n=$(find "$MNT" -type d -printf '%s\n' | awk '$1 % 4096 == 0' | wc -l) || true
	check_eq "directories whose size is a multiple of 4096" "$n" 0
	n=$(find "$MNT" -type d -printf '%n\n' | sort -u) || true
	check_eq "nlink of every directory" "$n" 1
	n=$(find "$MNT" -printf '%U:%G\n' | sort -u) || true
	check_eq "owner of every entry" "$n" "$UID2020:$GID2020"
	n=$("$LAZYIMG" inspect --json "$BOOT" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["flags"], len(d["blobs"]), d["blobs"][0]["id"], d["blobs"][0]["chunk_count"])') || true
	check_eq "inspect: flags, blobs, blob id, chunk_count (no extended blob table)" "$n" "$FLAGS2020 1 $BLOB2020 0"
}
