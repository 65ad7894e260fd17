#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The catalogue of malformed bootstraps (tests/bad/rafs/CATALOGUE): each case is a
# fixture mutated at test time in a private temp dir (fixtures are never copied into
# the repository) or a crafted file from tests/bad/rafs. Every case must end with the
# exact error the catalogue names: a clear message at open (`lazyimg inspect` and
# `lazyimg mount` both refuse), while walking the tree, or EIO at read with the
# server logging why; never a crash (exit >= 128), never a hang (timeout).
# Prints one line per case; exits 1 if any case fails, 77 if /dev/fuse is missing
# (the open/list checks of `lazyimg inspect` still run then). BAD_RAFS_ONLY=REGEX
# runs only the cases whose names match.
set -uo pipefail
: "${LAZYIMG:?run through tests/run.sh, which exports LAZYIMG}"
: "${TOP:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${LAZYIMG_FIXTURES:=$TOP/../shared/fixtures}"
FIX=$LAZYIMG_FIXTURES/rafs
BAD=$TOP/tests/bad/rafs
CATALOGUE=$BAD/CATALOGUE
MUTATE=$TOP/tests/bad/mutate.py
T=20        # seconds any one command may take
export LC_ALL=C
# the interpreter itself, not a version-manager shim that costs 0.2 s per call
PY=$(python3 -c 'import sys; print(sys.executable)') || { echo "python3 is needed"; exit 1; }

W=$(mktemp -d /tmp/lazyimg-t20.XXXXXX)
MOUNTS=()
SERVERS=()

is_mounted() { awk -v m="$1" '$2 == m { f = 1 } END { exit !f }' /proc/mounts; }

# serves PID MNT: PID is a `lazyimg mount ... MNT` server (so that cleanup kills only ours)
serves() {
	local args=()
	[ -r "/proc/$1/cmdline" ] || return 1
	mapfile -d '' args < "/proc/$1/cmdline" 2>/dev/null || return 1
	[ "${#args[@]}" -ge 3 ] && [ "$(basename -- "${args[0]}")" = lazyimg ] &&
		[ "${args[1]}" = mount ] && [ "${args[${#args[@]} - 1]}" = "$2" ]
}

server_pid() {
	local p
	for p in /proc/[0-9]*; do
		p=${p#/proc/}
		serves "$p" "$1" && { echo "$p"; return 0; }
	done
	return 1
}

cleanup() {
	local m s
	trap - EXIT
	for m in "${MOUNTS[@]}"; do
		is_mounted "$m" && { timeout -k 5 "$T" "$LAZYIMG" umount "$m" >/dev/null 2>&1 || umount -l "$m"; }
	done
	for s in "${SERVERS[@]}"; do
		# "pid mountpoint": kill a leftover server only if it still serves that mountpoint
		serves "${s%% *}" "${s#* }" && kill "${s%% *}" 2>/dev/null
	done
	if awk -v w="$W/" 'index($2, w) == 1 { f = 1 } END { exit !f }' /proc/mounts; then
		echo "cleanup: something is still mounted under $W; leaving it" >&2
	else
		rm -rf "$W"
	fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

[ -d "$FIX" ] || { echo "fixtures not found at $FIX"; exit 1; }
[ -f "$CATALOGUE" ] || { echo "no catalogue at $CATALOGUE"; exit 1; }
FUSE=1
[ -c /dev/fuse ] || { FUSE=0; echo "note: no /dev/fuse; mount checks are skipped"; }

trim() { local s=$1; s=${s#"${s%%[![:space:]]*}"}; printf '%s' "${s%"${s##*[![:space:]]}"}"; }

# run_cmd OUT_ERRFILE CMD...: runs CMD with the timeout; echoes its exit status
run_cmd() {
	local err=$1 rc=0; shift
	timeout -k 5 "$T" "$@" > "$err.out" 2> "$err" || rc=$?
	echo "$rc"
}

# verdict on an exit status: "" when acceptable for a command that must fail cleanly
bad_exit() { # rc want_failure(1/0)
	if [ "$1" -eq 124 ] || [ "$1" -eq 137 ]; then echo "timed out after ${T}s (a hang)"
	elif [ "$1" -ge 128 ]; then echo "killed by signal $(($1 - 128)) (a crash)"
	elif [ "$2" = 1 ] && [ "$1" -eq 0 ]; then echo "succeeded, but must fail"
	fi
}

# mount_case DIR FILE BLOBDIR: mounts DIR/mnt, log DIR/log; returns non-zero on failure
mount_case() {
	local d=$1 rc pid
	mkdir -p "$d/mnt"
	MOUNTS+=("$d/mnt")
	rc=$(run_cmd "$d/mount.err" "$LAZYIMG" mount -b "$2" -B "$3" --log-file "$d/log" "$d/mnt")
	[ "$rc" -eq 0 ] && is_mounted "$d/mnt" || return 1
	pid=$(server_pid "$d/mnt") && SERVERS+=("$pid $d/mnt")
	return 0
}

umount_case() {
	timeout -k 5 "$T" "$LAZYIMG" umount "$1/mnt" > /dev/null 2>&1 || umount -l "$1/mnt" 2>/dev/null
	! is_mounted "$1/mnt"
}

# the inode number of a path in the mount (hard links share it)
ino_of() { stat -c %i "$1" 2>/dev/null; }

npass=0 nfail=0 ncase=0
declare -A seen_names=()

# run_case NAME BASE MUTATIONS WHEN EXPECTED: prints PASS/FAIL line
run_case() {
	local name=$1 base=$2 muts=$3 when=$4 want=$5
	local d=$W/$name src file=$W/$name/image blobdir=$FIX/blobs
	local ops=() blobops=() op why="" rc msg
	mkdir -p "$d"

	# the input
	case $base in
	bad:*) src=$BAD/${base#bad:} ;;
	*'!'*)
		mkdir -p "$d/x"
		tar -xzf "$FIX/${base%%!*}" -C "$d/x" "${base#*!}" 2> "$d/tar.err" ||
			{ echo "FAIL  $name: cannot extract ${base#*!} from ${base%%!*}: $(cat "$d/tar.err")"; return 1; }
		src=$d/x/${base#*!} ;;
	*) src=$FIX/$base ;;
	esac
	[ -f "$src" ] || { echo "FAIL  $name: base $src not found"; return 1; }
	IFS=';' read -r -a ops <<< "$muts"
	local bops=()
	for op in "${ops[@]}"; do
		op=$(trim "$op")
		case $op in
		noblobs) blobdir=$d/blobs; mkdir -p "$blobdir" ;;
		blob\ *) blobops+=("${op#blob }") ;;
		*) bops+=("$op") ;;
		esac
	done
	"$PY" "$MUTATE" "$src" "$file" "${bops[@]}" 2> "$d/mutate.err" ||
		{ echo "FAIL  $name: mutation failed: $(cat "$d/mutate.err")"; return 1; }
	if [ ${#blobops[@]} -gt 0 ]; then
		# a private blob directory: the mutated blob copied, the others linked
		blobdir=$d/blobs
		mkdir -p "$blobdir"
		ln -s "$FIX"/blobs/* "$blobdir"/
		for op in "${blobops[@]}"; do
			local id=${op%% *} b
			b=$(cd "$FIX/blobs" && ls -d "$id"* 2>/dev/null | head -n 1)
			[ -n "$b" ] || { echo "FAIL  $name: no blob $id* in $FIX/blobs"; return 1; }
			[ -L "$blobdir/$b" ] && { rm "$blobdir/$b"; cp "$FIX/blobs/$b" "$blobdir/$b"; chmod u+w "$blobdir/$b"; }
			"$PY" "$MUTATE" "$blobdir/$b" "$blobdir/$b" "${op#* }" 2> "$d/mutate.err" ||
				{ echo "FAIL  $name: blob mutation failed: $(cat "$d/mutate.err")"; return 1; }
		done
	fi

	# lazyimg inspect: must fail for open/list, must not crash or hang for read cases
	rc=$(run_cmd "$d/inspect.err" "$LAZYIMG" inspect "$file")
	case $when in
	open|list|walk)
		why=$(bad_exit "$rc" 1)
		[ -z "$why" ] && ! grep -qF -- "$want" "$d/inspect.err" &&
			why="lazyimg inspect (exit $rc) did not print \"$want\"; it printed: $(head -c 400 "$d/inspect.err")" ;;
	*)
		why=$(bad_exit "$rc" 0)
		[ -n "$why" ] && why="lazyimg inspect $why" ;;
	esac
	if [ -z "$why" ] && [ "$when" = open ] && ! grep -qF "lazyimg inspect: $file: " "$d/inspect.err"; then
		why="lazyimg inspect did not name the file in its error"
	fi

	# through FUSE
	if [ -z "$why" ] && [ "$FUSE" = 1 ]; then
		case $when in
		open)
			mkdir -p "$d/mnt"
			rc=$(run_cmd "$d/mount.err" "$LAZYIMG" mount -b "$file" -B "$blobdir" --log-file "$d/log" "$d/mnt")
			if is_mounted "$d/mnt"; then
				MOUNTS+=("$d/mnt"); umount_case "$d"
				why="lazyimg mount mounted it"
			else
				why=$(bad_exit "$rc" 1)
				[ -n "$why" ] && why="lazyimg mount $why"
				[ -z "$why" ] && ! grep -qF -- "$want" "$d/mount.err" &&
					why="lazyimg mount (exit $rc) did not print \"$want\": $(head -c 300 "$d/mount.err")"
			fi ;;
		list)
			if ! mount_case "$d" "$file" "$blobdir"; then
				why="mount failed: $(head -c 300 "$d/mount.err")"
			else
				# walking the mount must end, and the broken part must show up as an
				# error (EIO; ELOOP when the kernel itself refuses a directory cycle)
				local tool
				: > "$d/walk.err"
				for tool in "find $d/mnt" "ls -lR $d/mnt" "getfattr -R -h -d -m - $d/mnt"; do
					rc=$(run_cmd "$d/tool.err" $tool)
					cat "$d/tool.err" >> "$d/walk.err"
					why=$(bad_exit "$rc" 0)
					[ -n "$why" ] && { why="${tool%% *} over the mount $why"; break; }
				done
				if [ -z "$why" ] && ! grep -qE "Input/output error|Too many levels of symbolic links" "$d/walk.err"; then
					why="no command over the mount met an I/O error (find, ls -lR, getfattr -R)"
				fi
				umount_case "$d" || why="${why:-umount failed}"
			fi ;;
		read\ *|readall)
			local path=${when#read } target_ino="" f n=0 nbad=0 nok=0 first=""
			if ! mount_case "$d" "$file" "$blobdir"; then
				why="mount failed: $(head -c 300 "$d/mount.err")"
			else
				rc=$(run_cmd "$d/find.err" find "$d/mnt")
				[ "$rc" -eq 0 ] || why="listing failed (find exit $rc): $(head -c 300 "$d/find.err")"
				if [ -z "$why" ] && [ "$when" != readall ]; then
					target_ino=$(ino_of "$d/mnt$path") || why="$path is missing from the listing"
					if [ -z "$why" ]; then
						rc=$(run_cmd "$d/cat.err" cat "$d/mnt$path")
						why=$(bad_exit "$rc" 1)
						[ -z "$why" ] && ! grep -q "Input/output error" "$d/cat.err" &&
							why="reading $path: want EIO, got: $(head -c 200 "$d/cat.err")"
						[ -n "$why" ] && why="cat $path: $why"
					fi
				fi
				# every other regular file: reads fine (read) or fails with EIO (readall)
				if [ -z "$why" ]; then
					while IFS= read -r -d '' f; do
						[ -n "$target_ino" ] && [ "$(ino_of "$f")" = "$target_ino" ] && continue
						[ "$when" = readall ] && [ ! -s "$f" ] && continue
						n=$((n + 1))
						rc=$(run_cmd "$d/other.err" cat "$f")
						if [ "$when" = readall ]; then
							if [ "$rc" -eq 0 ] || ! grep -q "Input/output error" "$d/other.err"; then
								nbad=$((nbad + 1)); first=${first:-${f#"$d/mnt"}}
							fi
						elif [ "$rc" -ne 0 ]; then
							nbad=$((nbad + 1)); first=${first:-${f#"$d/mnt"}: $(head -c 100 "$d/other.err")}
						fi
					done < <(find "$d/mnt" -type f -print0)
					if [ "$nbad" -gt 0 ]; then
						[ "$when" = readall ] && why="$nbad of $n files did not fail with EIO, e.g. $first" ||
							why="$nbad of $n other files failed to read, e.g. $first"
					elif [ "$n" -eq 0 ]; then
						why="no files to read"
					fi
				fi
				umount_case "$d" || why="${why:-umount failed}"
				if [ -z "$why" ] && ! grep -qF -- "$want" "$d/log"; then
					why="the server log lacks \"$want\"; it has: $(grep -i error "$d/log" | head -n 3 | cut -c1-300)"
				fi
			fi ;;
		walk) ;;
		*) why="unknown 'when' field: $when" ;;
		esac
	elif [ -z "$why" ]; then
		case $when in open|list|walk|read\ *|readall) ;; *) why="unknown 'when' field: $when" ;; esac
	fi

	if [ -n "$why" ]; then
		echo "FAIL  $name: $why"
		return 1
	fi
	msg=$want
	[ "${#msg}" -gt 110 ] && msg="${msg:0:107}..."
	printf 'ok    %-38s %-8s %s\n' "$name" "${when%% *}" "$msg"
	rm -rf "$d"
	return 0
}

# the catalogue is read on fd 3, so that nothing a case runs can eat it from stdin
while IFS= read -r -u 3 line || [ -n "$line" ]; do
	case $line in ''|'#'*) continue ;; esac
	# name | base | mutations | when | expected (the message may not contain " | ")
	IFS='|' read -r name base muts when want <<< "$line"
	name=$(trim "$name"); base=$(trim "$base"); muts=$(trim "$muts"); when=$(trim "$when")
	want=$(trim "$want")
	if [ -z "$name" ] || [ -z "$base" ] || [ -z "$muts" ] || [ -z "$when" ] || [ -z "$want" ]; then
		echo "FAIL  malformed catalogue line: $line"; nfail=$((nfail + 1)); continue
	fi
	if [ -n "${seen_names[$name]:-}" ]; then
		echo "FAIL  duplicate case name $name"; nfail=$((nfail + 1)); continue
	fi
	seen_names[$name]=1
	# BAD_RAFS_ONLY=REGEX runs just the matching cases (for debugging one)
	[ -n "${BAD_RAFS_ONLY:-}" ] && ! [[ $name =~ $BAD_RAFS_ONLY ]] && continue
	ncase=$((ncase + 1))
	if run_case "$name" "$base" "$muts" "$when" "$want"; then
		npass=$((npass + 1))
	else
		nfail=$((nfail + 1))
	fi
done 3< "$CATALOGUE"

echo "$ncase cases: $npass passed, $nfail failed"
[ "$nfail" -eq 0 ] || exit 1
[ "$FUSE" = 1 ] || { echo "skipped the mount checks: no /dev/fuse"; exit 77; }
exit 0
