#!/usr/bin/env bash
# Crash and restart: the lazyimg server is killed with SIGKILL in the middle of
# reading a large file (blobs/random-4m.bin of an image converted with 64 KiB
# chunks: 64 incompressible chunks, fetched one per request (--merge-max 0) and slowly through tests/tools/faultproxy.py
# with a delay per range request). The dead mount is detached with umount -l and
# the image mounted again with the same --cache-dir. Then:
#  - re-reading the part the reader had received before the kill costs no
#    registry request (those chunks were durable in the cache before the reads
#    returned: backend_bytes 0, and the proxy sees no range request);
#  - reading the whole file fetches only chunks outside that part, each once,
#    strictly fewer bytes than a cold read, with lazyimg stats agreeing with the
#    proxy's log byte for byte;
#  - the file and the whole tree equal the source.
set -euo pipefail
. "$(dirname "$0")/reglib.sh"
W=$(mktemp -d /tmp/lazyimg-t43.XXXXXX)
MNT=$W/mnt
REG_DIRS=()
cleanup() {
	[ -n "${READER:-}" ] && kill "$READER" 2>/dev/null || true
	reg_cleanup
	awk -v w="$W/" 'index($2, w) == 1 { f = 1 } END { exit !f }' /proc/mounts || rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
export LC_ALL=C
F=blobs/random-4m.bin
CHUNK=65536
NCHUNK=64

start_registry "$W/reg"
push_small_image "$W/img"
unpack_small "$W/img" "$W/rootfs"
small_nydus v1-nydus64k --chunk-size 64K
start_faultproxy "$W/fp" "$REGISTRY_HOST"
REF=$PROXY_HOST/small:v1-nydus64k
echo "registry $REGISTRY_HOST, proxy $PROXY_HOST, image converted with 64 KiB chunks"

# "offset length" of each range request after FROM_LINE, in request order
ranges_after() {
	fp_lines "$PROXY_LOG" "$1" | awk -F'\t' '$5 ~ /^bytes=/ { split(substr($5, 7), r, "-"); print $4, r[1], r[2] - r[1] + 1 }'
}

echo "== cold reference read (fresh cache, O_DIRECT, one 64 KiB read per chunk in order)"
reg_mount "$MNT" --insecure --no-prefetch --merge-max 0 --cache-dir "$W/cache-cold" "$REF" || reg_die "mount failed: $(cat "$MNT.err")"
mark=$(wc -l < "$PROXY_LOG")
b0=$(reg_stat "$MNT" backend_bytes)
timeout 60 dd if="$MNT/$F" of="$W/cold.out" bs=$CHUNK iflag=direct status=none || reg_die "cold read failed"
cmp -s "$W/cold.out" "$W/rootfs/$F" || reg_die "cold read gave wrong bytes"
COLD_BYTES=$(( $(reg_stat "$MNT" backend_bytes) - b0 ))
ranges_after "$mark" > "$W/cold.ranges"
COLD_REQS=$(wc -l < "$W/cold.ranges")
echo "  cold: $COLD_REQS range requests, $COLD_BYTES bytes"
[ "$COLD_REQS" -eq "$NCHUNK" ] || reg_bad "a cold read of the $NCHUNK-chunk file took $COLD_REQS range requests"
reg_umount "$MNT"

echo "== read $F through a slow proxy (0.1 s per range), kill -9 the server half way"
fp_set "$PROXY_CTL" "delay 0.1"
reg_mount "$MNT" --insecure --no-prefetch --merge-max 0 --cache-dir "$W/cache" "$REF" || reg_die "mount failed: $(cat "$MNT.err")"
PID=${REG_SERVER_PID[$MNT]}
pg=$(pgrep -f "lazyimg mount .* $MNT\$" || true)
[ "$pg" = "$PID" ] || echo "  note: pgrep found '$pg', /proc scan found $PID"
mark=$(wc -l < "$PROXY_LOG")
cat "$MNT/$F" > "$W/part.out" 2> "$W/reader.err" &
READER=$!
for _ in $(seq 600); do
	[ "$(stat -c %s "$W/part.out")" -ge $((NCHUNK / 3 * CHUNK)) ] && break
	kill -0 "$READER" 2>/dev/null || break
	sleep 0.05
done
kill -9 "$PID"
KILLED_AT=$(stat -c %s "$W/part.out")
rc=0; timeout 30 tail --pid="$READER" -f /dev/null || true
kill -0 "$READER" 2>/dev/null && { reg_bad "the reader still hangs 30 s after the server died"; kill -9 "$READER"; }
wait "$READER" || rc=$?
READER=
P=$(stat -c %s "$W/part.out")
echo "  server $PID killed with $KILLED_AT bytes delivered to the reader; the reader exited $rc ($(head -c 200 "$W/reader.err")) with $P bytes"
[ "$P" -gt 0 ] && [ "$P" -lt $((NCHUNK * CHUNK)) ] || reg_die "the kill did not land in the middle of the read ($P of $((NCHUNK * CHUNK)) bytes)"
[ "$rc" -ne 0 ] && reg_ok "the reader saw the crash (exit $rc: $(head -c 120 "$W/reader.err"))" ||
	reg_bad "the reader of a killed server exited 0 with $P bytes"
cmp -s "$W/part.out" <(head -c "$P" "$W/rootfs/$F") && reg_ok "the $P bytes the reader got before the crash are correct" ||
	reg_bad "the bytes read before the crash are wrong"
for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$PID" 2>/dev/null && reg_die "server $PID survived kill -9"
fp_lines "$PROXY_LOG" "$mark" > "$W/before-kill"
echo "  the proxy served $(awk -F'\t' '$5 != "-"' "$W/before-kill" | wc -l) range requests before the kill"

# the dead mount: "Transport endpoint is not connected"; detach it
err=$(stat "$MNT/etc" 2>&1 >/dev/null || true)
echo "  dead mount: stat says: ${err:-(nothing)}"
umount -l "$MNT" && reg_ok "umount -l of the dead mount" || reg_bad "umount -l $MNT failed"
reg_is_mounted "$MNT" && reg_die "$MNT still mounted after umount -l"
ls "$W/cache/blobs" | sed 's/^/  cache: /'

echo "== mount again with the same cache (no delay)"
fp_set "$PROXY_CTL" pass
reg_mount "$MNT" --insecure --no-prefetch --merge-max 0 --cache-dir "$W/cache" "$REF" ||
	reg_die "mount with the cache of the killed server failed: $(cat "$MNT.err"; tail -n 5 "$MNT.log")"
reg_ok "mounted again with the same --cache-dir (server pid ${REG_SERVER_PID[$MNT]})"
grep -i "discard\|corrupt\|invalid" "$MNT.log" | sed 's/^/  log: /' || true

# 1. the part the reader had received: every chunk of it is in the cache
K=$((P / CHUNK))
mark=$(wc -l < "$PROXY_LOG")
b0=$(reg_stat "$MNT" backend_bytes)
timeout 60 dd if="$MNT/$F" of="$W/prefix.out" bs=$CHUNK count="$K" iflag=direct status=none || reg_bad "re-reading the first $K chunks failed"
db=$(( $(reg_stat "$MNT" backend_bytes) - b0 ))
nr=$(ranges_after "$mark" | wc -l)
cmp -s "$W/prefix.out" <(head -c $((K * CHUNK)) "$W/rootfs/$F") || reg_bad "re-read prefix differs from the source"
if [ "$db" -eq 0 ] && [ "$nr" -eq 0 ]; then
	reg_ok "re-reading the $K chunks ($((K * CHUNK)) bytes) read before the crash: 0 backend bytes, 0 range requests"
else
	reg_bad "re-reading the $K chunks read before the crash fetched $db bytes in $nr range requests (want 0: they were ready)"
fi

# 2. the whole file: only chunks past the read part are fetched, each once
mark=$(wc -l < "$PROXY_LOG")
b0=$(reg_stat "$MNT" backend_bytes)
timeout 60 dd if="$MNT/$F" of="$W/full.out" bs=$CHUNK iflag=direct status=none || reg_bad "reading the whole file failed"
cmp -s "$W/full.out" "$W/rootfs/$F" && reg_ok "$F equals the source after the restart" || reg_bad "$F differs after the restart"
WARM_BYTES=$(( $(reg_stat "$MNT" backend_bytes) - b0 ))
ranges_after "$mark" > "$W/warm.ranges"
WARM_REQS=$(wc -l < "$W/warm.ranges")
proxy_bytes=$(awk '{ s += $3 } END { print s + 0 }' "$W/warm.ranges")
dups=$(sort "$W/warm.ranges" | uniq -d | wc -l)
# the ranges of the first K chunks in the cold read must not come back
head -n "$K" "$W/cold.ranges" | sort > "$W/prefix.ranges"
again=$(sort "$W/warm.ranges" | comm -12 - "$W/prefix.ranges" | wc -l)
# expected: at most the chunks past the read part, at most their cold bytes
max_reqs=$((NCHUNK - K))
max_bytes=$(tail -n +"$((K + 1))" "$W/cold.ranges" | awk '{ s += $3 } END { print s + 0 }')
echo "  after restart: $WARM_REQS range requests, $WARM_BYTES bytes (cold: $COLD_REQS, $COLD_BYTES; expected at most $max_reqs, $max_bytes)"
[ "$again" -eq 0 ] && reg_ok "none of the ranges of the $K chunks read before the crash was fetched again" ||
	reg_bad "$again range(s) of chunks read before the crash were fetched again"
[ "$dups" -eq 0 ] && reg_ok "no range fetched twice" || reg_bad "$dups range(s) fetched twice"
[ "$WARM_REQS" -le "$max_reqs" ] && [ "$WARM_BYTES" -le "$max_bytes" ] && [ "$WARM_BYTES" -lt "$COLD_BYTES" ] &&
	reg_ok "the rest of the file cost $WARM_BYTES bytes <= $max_bytes (cold read: $COLD_BYTES): $((NCHUNK - WARM_REQS)) of $NCHUNK chunks came from the cache" ||
	reg_bad "the rest of the file cost $WARM_BYTES bytes in $WARM_REQS requests; expected at most $max_bytes in $max_reqs (cold: $COLD_BYTES)"
[ "$proxy_bytes" -eq "$WARM_BYTES" ] && reg_ok "lazyimg stats backend_bytes equals the bytes of the proxy's range requests ($proxy_bytes)" ||
	reg_bad "lazyimg stats says $WARM_BYTES backend bytes, the proxy served $proxy_bytes in range requests"
if tree_same "$W/rootfs" "$MNT"; then reg_ok "the whole tree equals the source"; else reg_bad "the tree differs from the source"; fi
echo "  stats: $(timeout 10 "$LAZYIMG" stats "$MNT")"
reg_umount "$MNT"

# 3. a third mount: everything is in the cache now
reg_mount "$MNT" --insecure --no-prefetch --merge-max 0 --cache-dir "$W/cache" "$REF" || reg_die "third mount failed"
timeout 60 cat "$MNT/$F" > "$W/third.out"
cmp -s "$W/third.out" "$W/rootfs/$F" || reg_bad "$F differs on the third mount"
bb=$(reg_stat "$MNT" backend_bytes)
[ "$bb" -eq 0 ] && reg_ok "third mount: $F read entirely from the cache (backend_bytes 0)" ||
	reg_bad "third mount: $F cost $bb backend bytes although it was fully read before"
reg_umount "$MNT"
reg_finish
