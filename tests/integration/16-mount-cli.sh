#!/usr/bin/env bash
# The lazyimg command line around mounting: usage and --help, every error exits non-zero
# with a message naming the bad thing (and leaves nothing mounted or running), umount of
# something that is not a mount, foreground mode (-f), and a mount whose blob directory
# is empty: metadata works, reading data fails with EIO and the log names the blob.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lib_init

V5=$FIX/sha256-nocompress-repeatable
BLOB=7334a2594e133cf8ae364189c2276b090fc490c627bcc3fb1077f0419a538e00
MNT=$W/mnt
mkdir -p "$MNT" "$W/empty"
: > "$W/plainfile"

# --- usage ---
ALL_CMDS="mount umount stats inspect check convert merge serve list usage fdholder snapshotter bench"
for c in $ALL_CMDS; do
	rc=0
	out=$("$LAZYIMG" "$c" --help 2>/dev/null) || rc=$?
	if [ "$rc" -eq 0 ] && grep -q "^usage: lazyimg $c" <<< "$out"; then
		ok "lazyimg $c --help: exit 0, prints its usage on stdout"
	else
		bad "lazyimg $c --help: exit $rc, output: $(head -c 200 <<< "$out")"
	fi
done
must_fail "lazyimg without a command" "usage: lazyimg" "$LAZYIMG"
must_fail "unknown command" "unknown command 'frobnicate'" "$LAZYIMG" frobnicate

# --- mount errors: message names the bad thing; nothing is mounted, no server remains ---
nothing_left() {
	if is_mounted "$MNT"; then
		bad "$1: $MNT got mounted"; "$LAZYIMG" umount "$MNT" || umount -l "$MNT"
	elif p=$(server_pid "$MNT"); then
		bad "$1: a server (pid $p) is left running"
	fi
	return 0
}
must_fail "mount without --bootstrap" "--bootstrap" "$LAZYIMG" mount "$MNT"
nothing_left "mount without --bootstrap"
must_fail "mount with -B but without --bootstrap" "--bootstrap" "$LAZYIMG" mount -B "$FIX/blobs" "$MNT"
nothing_left "mount with -B but without --bootstrap"
must_fail "nonexistent bootstrap" "$W/no-such-boot.*No such file" \
	"$LAZYIMG" mount -b "$W/no-such-boot" -B "$FIX/blobs" "$MNT"
nothing_left "nonexistent bootstrap"
must_fail "mountpoint is a regular file" "$W/plainfile.*not a directory" \
	"$LAZYIMG" mount -b "$V5" -B "$FIX/blobs" "$W/plainfile"
must_fail "mountpoint does not exist" "$W/no-such-dir.*No such file" \
	"$LAZYIMG" mount -b "$V5" -B "$FIX/blobs" "$W/no-such-dir"
must_fail "blob dir does not exist" "$W/no-such-blobs" \
	"$LAZYIMG" mount -b "$V5" -B "$W/no-such-blobs" "$MNT"
nothing_left "blob dir does not exist"
must_fail "a text file as bootstrap (.result)" "sha256-nocompress-repeatable.result.*(corrupt|not a RAFS)" \
	"$LAZYIMG" mount -b "$FIX/sha256-nocompress-repeatable.result" -B "$FIX/blobs" "$MNT"
nothing_left "a text file as bootstrap"
must_fail "a layer tarball as bootstrap (snapshotter negative fixture)" "invalid-bootstrap-file-size-133513.tar.gz.*(corrupt|not a RAFS)" \
	"$LAZYIMG" mount -b "$FIX/snapshotter/invalid-bootstrap-file-size-133513.tar.gz" -B "$FIX/blobs" "$MNT"
nothing_left "a layer tarball as bootstrap"
must_fail "a directory as bootstrap" "$FIX/blobs.*(not a regular file|Is a directory|Invalid argument)" \
	"$LAZYIMG" mount -b "$FIX/blobs" -B "$FIX/blobs" "$MNT"
nothing_left "a directory as bootstrap"
must_fail "unknown mount option" "--no-such-option" "$LAZYIMG" mount --no-such-option -b "$V5" "$MNT"
nothing_left "unknown mount option"
must_fail "bad --log-level" "--log-level.*loud" "$LAZYIMG" mount --log-level loud -b "$V5" "$MNT"
nothing_left "bad --log-level"
must_fail "two mountpoints" "MOUNTPOINT" "$LAZYIMG" mount -b "$V5" "$MNT" "$W/empty"
nothing_left "two mountpoints"

# --- other subcommands ---
# every subcommand: an unknown flag exits 2 and names it, and nothing runs
for c in $ALL_CMDS; do
	rc=0
	err=$(timeout 10 "$LAZYIMG" "$c" --no-such-option 2>&1 >/dev/null) || rc=$?
	[ "$rc" -eq 2 ] && grep -q -- "--no-such-option" <<< "$err" &&
		ok "lazyimg $c --no-such-option: exit 2 naming it" ||
		bad "lazyimg $c --no-such-option: exit $rc: $(head -c 200 <<< "$err")"
done
must_fail "unknown umount option" "--no-such-option" "$LAZYIMG" umount --no-such-option "$MNT"
must_fail "unknown inspect option" "--no-such-option" "$LAZYIMG" inspect --no-such-option "$V5"
must_fail "unknown check option" "--no-such-option" "$LAZYIMG" check --no-such-option "$V5"
must_fail "inspect of a nonexistent file" "$W/nope.*No such file" "$LAZYIMG" inspect "$W/nope"
must_fail "inspect of a text file" "\.result.*(corrupt|not a RAFS)" "$LAZYIMG" inspect "$FIX/sha256-nocompress-repeatable.result"
must_fail "check of a text file" "\.result.*(corrupt|not a RAFS)" "$LAZYIMG" check -B "$FIX/blobs" "$FIX/sha256-nocompress-repeatable.result"
must_fail "umount of a directory that is not a mount" "$W/empty" "$LAZYIMG" umount "$W/empty"
must_fail "umount of a nonexistent path" "$W/no-such-dir.*No such file" "$LAZYIMG" umount "$W/no-such-dir"
must_fail "umount without a mountpoint" "MOUNTPOINT" "$LAZYIMG" umount

# --- foreground mode ---
MOUNTS+=("$MNT")
"$LAZYIMG" mount -f -b "$FIX/rafs-v6-2.2.boot" -B "$FIX/blobs" "$MNT" 2> "$W/fg.err" &
fg=$!
SERVER_PID[$MNT]=$fg
for i in $(seq 100); do is_mounted "$MNT" && break; alive "$fg" || break; sleep 0.1; done
if is_mounted "$MNT"; then
	ok "mount -f: $MNT appears in /proc/mounts, server pid $fg in the foreground"
	got=$(T md5sum < "$MNT/lib.rs" | cut -d' ' -f1) || true
	check_eq "mount -f: md5 of /lib.rs" "$got" 4709cf8873e419ecedc7d43fdee4a75f
	rc=0; T "$LAZYIMG" umount "$MNT" || rc=$?
	check_eq "umount of the foreground mount" "$rc" 0
	rc=0; T bash -c "while kill -0 $fg 2>/dev/null; do sleep 0.1; done" || rc=$?
	[ "$rc" -eq 0 ] || bad "foreground server $fg did not exit after umount"
	rc=0; wait "$fg" || rc=$?
	check_eq "exit status of lazyimg mount -f after umount" "$rc" 0
	if is_mounted "$MNT"; then bad "$MNT still mounted"; else ok "$MNT no longer in /proc/mounts"; fi
	no_sanitizer_report "$W/fg.err" "stderr of lazyimg mount -f"
else
	bad "mount -f: $MNT never appeared in /proc/mounts; stderr: $(head -c 300 "$W/fg.err")"
fi

# --- empty blob dir: metadata needs no blob, data does ---
mount_img "$MNT" -b "$V5" -B "$W/empty" || die "cannot mount with an empty blob dir"
check "ls -lR works without blobs" ls -lR "$MNT"
check "stat of every entry works without blobs" bash -c 'find "$1" -exec stat {} + > /dev/null' sh "$MNT"
check_eq "readlink without blobs" "$(readlink "$MNT/symlink-test/test.sh")" ../normal-file-test/test.sh
check_eq "size without blobs" "$(stat -c %s "$MNT/normal-file-test/busybox/1f777dbdd68d1c4d554bc0d20e027bfef9ed2dfe2d8d5f029e958552a0e12475/layer.tar")" 1415680
must_fail "reading a file whose blob is missing gives EIO" "Input/output error" cat "$MNT/hardlink-test/foo"
must_fail "dd of a file whose blob is missing gives EIO" "Input/output error" \
	dd if="$MNT/normal-file-test/holefiles/chsum" of=/dev/null iflag=direct status=none
if grep -q "$BLOB" "$MNT.log"; then
	ok "server log names the missing blob: $(grep "$BLOB" "$MNT.log" | head -n 1 | head -c 200)"
else
	bad "server log does not name blob $BLOB: $(head -c 300 "$MNT.log")"
fi
must_fail "lazyimg check with an empty blob dir names the blob" "$BLOB" "$LAZYIMG" check -B "$W/empty" "$V5"
umount_img "$MNT"

# --- convert refuses an OUTDIR inside its own SRC (the image would swallow its own blob) ---
mkdir -p "$W/csrc/d" && echo x > "$W/csrc/d/f"
must_fail "convert SRC SRC/out is refused" "is inside SRC" "$LAZYIMG" convert -q "$W/csrc" "$W/csrc/out"
must_fail "convert SRC SRC is refused" "is inside SRC" "$LAZYIMG" convert -q "$W/csrc/d" "$W/csrc/d"
[ ! -e "$W/csrc/out" ] && ok "nothing was written inside SRC" || bad "convert wrote $W/csrc/out"
check "convert SRC to a sibling OUTDIR works" "$LAZYIMG" convert -q "$W/csrc" "$W/cout"
finish
