#!/usr/bin/env bash
# Eight concurrent readers of one cold large file (--no-prefetch): every chunk
# is fetched once (single flight), and all eight get the source bytes.
#  A. blobs/text-16m.txt, default 1 MiB chunks, through tests/tools/faultproxy.py in
#     pass-through mode with 50 ms per range request (so that the readers overlap),
#     which logs every Range: no byte of the blob requested twice; the registry's own
#     access log agrees (one 206 per proxy range request, same bytes), and so do
#     lazyimg stats (backend_bytes, cache_misses).
#  B. blobs/random-4m.bin of an image with 64 KiB chunks (64 distinct chunks), same checks;
#     neighbouring missing chunks go out merged (2..8 requests of at most 2 MiB).
#  C. A again straight against the registry (no proxy): the registry log shows as
#     many 206 answers, with the same bytes, as there are distinct ranges in A.
# Readers: four `cat` (page cache, kernel readahead) and four `dd iflag=direct`
# with different block sizes (each read reaches the server), released together.
set -euo pipefail
. "$(dirname "$0")/reglib.sh"
W=$(mktemp -d /tmp/lazyimg-t44.XXXXXX)
MNT=$W/mnt
REG_DIRS=()
RPIDS=()
cleanup() {
	local p
	for p in "${RPIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
	reg_cleanup
	awk -v w="$W/" 'index($2, w) == 1 { f = 1 } END { exit !f }' /proc/mounts || rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
export LC_ALL=C

start_registry "$W/reg"
push_small_image "$W/img"
unpack_small "$W/img" "$W/rootfs"
small_nydus v1-nydus
small_nydus v1-nydus64k --chunk-size 64K
start_faultproxy "$W/fp" "$REGISTRY_HOST"
echo "registry $REGISTRY_HOST, proxy $PROXY_HOST; images converted with 1 MiB and 64 KiB chunks"

# eight_readers NAME FILE: start 8 readers of MNT/FILE at once, wait (bounded), check outputs
eight_readers() {
	local name=$1 f=$2 i p rc nbad=0 want
	rm -f "$W/go"
	RPIDS=()
	for i in 1 2 3 4 5 6 7 8; do
		case $i in
		[1-4]) cmd="cat '$MNT/$f' > '$W/r$i.out'" ;;
		5) cmd="dd if='$MNT/$f' of='$W/r$i.out' bs=128k iflag=direct status=none" ;;
		6) cmd="dd if='$MNT/$f' of='$W/r$i.out' bs=4k iflag=direct status=none" ;;
		7) cmd="dd if='$MNT/$f' of='$W/r$i.out' bs=1M iflag=direct status=none" ;;
		8) cmd="dd if='$MNT/$f' of='$W/r$i.out' bs=300000 iflag=direct status=none" ;;
		esac
		timeout -k 2 120 sh -c "while [ ! -e '$W/go' ]; do sleep 0.01; done; $cmd" 2> "$W/r$i.err" &
		RPIDS+=($!)
	done
	sleep 0.2
	touch "$W/go"
	i=0
	for p in "${RPIDS[@]}"; do
		i=$((i + 1)); rc=0
		wait "$p" || rc=$?
		[ "$rc" -eq 0 ] || { echo "  reader $i exited $rc: $(head -c 200 "$W/r$i.err")"; nbad=$((nbad + 1)); }
	done
	RPIDS=()
	want=$(sha256sum < "$W/rootfs/$f" | cut -c1-64)
	for i in 1 2 3 4 5 6 7 8; do
		[ "$(sha256sum < "$W/r$i.out" | cut -c1-64)" = "$want" ] || { echo "  reader $i got different bytes ($(stat -c %s "$W/r$i.out") bytes)"; nbad=$((nbad + 1)); }
	done
	[ "$nbad" -eq 0 ] && reg_ok "$name: 8 concurrent readers of $f all got the source bytes (sha256 ${want:0:16}...)" ||
		reg_bad "$name: $nbad reader(s) failed or got wrong bytes"
}

# through_proxy NAME TAG FILE
through_proxy() {
	local name=$1 tag=$2 f=$3 pmark rmark b0 m0 db dm
	reg_mount "$MNT" --insecure --no-prefetch --cache-dir "$W/cache-$name" "$PROXY_HOST/small:$tag" ||
		reg_die "mount failed: $(cat "$MNT.err")"
	sleep 0.3   # registry access log lines of the mount itself are written asynchronously
	pmark=$(wc -l < "$PROXY_LOG"); rmark=$(wc -l < "$REGISTRY_LOG")
	b0=$(reg_stat "$MNT" backend_bytes); m0=$(reg_stat "$MNT" cache_misses)
	eight_readers "$name" "$f"
	db=$(( $(reg_stat "$MNT" backend_bytes) - b0 )); dm=$(( $(reg_stat "$MNT" cache_misses) - m0 ))
	sleep 0.3
	fp_lines "$PROXY_LOG" "$pmark" | awk -F'\t' '$5 != "-" { print $4, $5 }' > "$W/$name.ranges"
	registry_blob_gets "$REGISTRY_LOG" "$rmark" > "$W/$name.reg"
	local n u dup pbytes r206 rbytes
	n=$(wc -l < "$W/$name.ranges"); u=$(sort -u "$W/$name.ranges" | wc -l)
	dup=$(sort "$W/$name.ranges" | uniq -c | awk '$1 > 1' | head -n 5)
	pbytes=$(awk '{ split(substr($2, 7), r, "-"); s += r[2] - r[1] + 1 } END { print s + 0 }' "$W/$name.ranges")
	r206=$(awk '$1 == 206' "$W/$name.reg" | wc -l); rbytes=$(awk '$1 == 206 { s += $2 } END { print s + 0 }' "$W/$name.reg")
	echo "  $name: $n range requests, $u distinct, $pbytes bytes; registry log: $r206 x 206, $rbytes bytes, $(awk '$1 != 206' "$W/$name.reg" | wc -l) other blob GETs; stats: +$db backend bytes, +$dm cache misses"
	[ "$n" -gt 0 ] && [ "$n" -eq "$u" ] && reg_ok "$name: each of the $u byte ranges was requested once" ||
		reg_bad "$name: $n range requests for $u distinct ranges; repeated: $(tr '\n' ';' <<< "$dup")"
	[ "$r206" -eq "$n" ] && [ "$rbytes" -eq "$pbytes" ] && reg_ok "$name: the registry access log agrees ($r206 partial answers, $rbytes bytes)" ||
		reg_bad "$name: registry log has $r206 partial answers ($rbytes bytes), the proxy saw $n range requests ($pbytes bytes)"
	# neighbouring chunks may share a request, but no byte may be asked for twice
	overlap=$(awk '{ split(substr($2, 7), r, "-"); print r[1], r[2] }' "$W/$name.ranges" | sort -n |
		awk 'NR > 1 && $1 <= e { n++ } { if ($2 > e) e = $2 } END { print n + 0 }')
	[ "$overlap" -eq 0 ] && reg_ok "$name: no byte range overlaps another" ||
		reg_bad "$name: $overlap range(s) overlap an earlier one"
	[ "$db" -eq "$pbytes" ] && [ "$dm" -ge "$n" ] && reg_ok "$name: lazyimg stats agree (backend_bytes +$db, cache_misses +$dm chunks in $n requests)" ||
		reg_bad "$name: lazyimg stats: backend_bytes +$db (proxy $pbytes), cache_misses +$dm (requests $n)"
	reg_umount "$MNT"
	LAST_U=$u LAST_BYTES=$pbytes LAST_MISSES=$dm
}

echo "== A. text-16m.txt, 1 MiB chunks, through the proxy (50 ms per range)"
fp_set "$PROXY_CTL" "delay 0.05"
through_proxy A v1-nydus blobs/text-16m.txt
A_U=$LAST_U A_BYTES=$LAST_BYTES
echo "== B. random-4m.bin, 64 KiB chunks, through the proxy (50 ms per range)"
through_proxy B v1-nydus64k blobs/random-4m.bin
[ "$LAST_MISSES" -eq 64 ] && [ "$LAST_BYTES" -ge 4194304 ] && reg_ok "B: all 64 chunks fetched once ($LAST_BYTES bytes)" ||
	reg_bad "B: $LAST_MISSES chunk fetches, $LAST_BYTES bytes for the 64-chunk file"
# 64 KiB incompressible chunks stored back to back: merged into requests of at most 2 MiB
[ "$LAST_U" -ge 2 ] && [ "$LAST_U" -le 8 ] && reg_ok "B: neighbouring missing chunks were merged: $LAST_U requests for 64 chunks" ||
	reg_bad "B: $LAST_U requests for 64 chunks (merging into <= 2 MiB requests gives 2 to 8)"
fp_set "$PROXY_CTL" pass

echo "== C. text-16m.txt, straight from the registry"
reg_mount "$MNT" --insecure --no-prefetch --cache-dir "$W/cache-C" "$REGISTRY_HOST/small:v1-nydus" || reg_die "mount failed: $(cat "$MNT.err")"
sleep 0.3
rmark=$(wc -l < "$REGISTRY_LOG")
eight_readers C blobs/text-16m.txt
sleep 0.3
registry_blob_gets "$REGISTRY_LOG" "$rmark" > "$W/C.reg"
r206=$(awk '$1 == 206' "$W/C.reg" | wc -l); rbytes=$(awk '$1 == 206 { s += $2 } END { print s + 0 }' "$W/C.reg")
other=$(awk '$1 != 206' "$W/C.reg" | wc -l)
echo "  C: registry log: $r206 x 206 ($rbytes bytes), $other other blob GETs; A had $A_U distinct ranges ($A_BYTES bytes)"
[ "$rbytes" -eq "$A_BYTES" ] && [ "$other" -eq 0 ] &&
	reg_ok "C: the registry served every chunk once ($r206 partial answers, $rbytes bytes, as in A)" ||
	reg_bad "C: the registry served $r206 partial answers ($rbytes bytes) and $other other blob GETs; every chunk once is $A_BYTES bytes"
echo "  stats: $(timeout 10 "$LAZYIMG" stats "$MNT")"
reg_umount "$MNT"
reg_finish
