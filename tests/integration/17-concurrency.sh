#!/usr/bin/env bash
# 8 parallel readers of every file of two mounted fixtures (the lz4 v5 image, whose reads
# decompress, and the zstd v6 image), 3 rounds. Readers use O_DIRECT with different block
# sizes (so every read reaches the multithreaded server) or plain cat, each in its own
# file order; every md5 must match the fixture's reference, no reader may fail, and the
# server must count no read or chunk errors.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lib_init

READERS=8
ROUNDS=3
A=$W/lz4 B=$W/v6
mount_img "$A" -b "$FIX/repeatable-2020/blake3-lz4_block-non_repeatable" -B "$FIX/blobs" || die "mount lz4 fixture"
mount_img "$B" -b "$FIX/rafs-v6-2.2.boot" -B "$FIX/blobs" || die "mount v6 fixture"

# reference "md5  /abs/path" for both mounts, from the fixtures' md5 lists
{ md5_lines "$FIX/blake3-lz4_block-non_repeatable.result" | sed "s#  /#  $A/#"
  md5_lines "$FIX/rafs-v6-2.2.expected.txt" | sed "s#  /#  $B/#"; } | sort > "$W/ref"
cut -d' ' -f3- "$W/ref" > "$W/files"
nfiles=$(wc -l < "$W/files")
echo "$nfiles files, $READERS readers, $ROUNDS rounds"

# reader N ROUND: all files, rotated by N, reversed for odd N; block size by N
reader() {
	local n=$1 out=$2 bs f
	case $((n % 4)) in
	0) bs=4096 ;; 1) bs=65536 ;; 2) bs=1048576 ;; 3) bs=cat ;;
	esac
	{ tail -n +$((n + 1)) "$W/files"; head -n "$n" "$W/files"; } |
		if [ $((n % 2)) -eq 1 ]; then tac; else cat; fi |
		while IFS= read -r f; do
			if [ "$bs" = cat ]; then
				printf '%s  %s\n' "$(cat "$f" | md5sum | cut -d' ' -f1)" "$f"
			else
				printf '%s  %s\n' "$(dd if="$f" bs="$bs" iflag=direct status=none | md5sum | cut -d' ' -f1)" "$f"
			fi
		done > "$out"
}

for round in $(seq "$ROUNDS"); do
	pids=()
	for n in $(seq 0 $((READERS - 1))); do
		reader "$n" "$W/r$round.$n" &
		pids+=("$!")
	done
	nbad=0
	for n in "${!pids[@]}"; do
		rc=0
		T bash -c "while kill -0 ${pids[$n]} 2>/dev/null; do sleep 0.05; done" || rc=$?
		[ "$rc" -eq 0 ] || { bad "round $round: reader $n did not finish"; nbad=$((nbad + 1)); continue; }
		rc=0; wait "${pids[$n]}" || rc=$?
		[ "$rc" -eq 0 ] || { bad "round $round: reader $n exited $rc"; nbad=$((nbad + 1)); continue; }
		sort "$W/r$round.$n" > "$W/r$round.$n.sorted"
		if ! cmp -s "$W/r$round.$n.sorted" "$W/ref"; then
			bad "round $round: reader $n got wrong content:"
			diff "$W/r$round.$n.sorted" "$W/ref" | head -n 10 | sed 's/^/    | /' || true
			nbad=$((nbad + 1))
		fi
	done
	[ "$nbad" -eq 0 ] && ok "round $round: $READERS concurrent readers, every md5 of all $nfiles files correct"
done

for m in "$A" "$B"; do
	s=$("$LAZYIMG" stats "$m" 2>&1) || { bad "lazyimg stats $m: $s"; continue; }
	v=$(python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["read_errors"], d["chunk_errors"], d["reads"])' <<< "$s") || v="x x 0"
	set -- $v
	check_eq "$m: server read_errors chunk_errors" "$1 $2" "0 0"
	if [ "$3" -gt 0 ]; then ok "$m: the server answered $3 reads"; else bad "$m: the server saw no reads"; fi
	alive "${SERVER_PID[$m]}" && ok "$m: server still running" || bad "$m: server died"
done
umount_img "$A"
umount_img "$B"
finish
