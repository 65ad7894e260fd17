#!/usr/bin/env bash
# Faults between lazyimg and a real docker-registry, injected by
# tests/tools/faultproxy.py (lazyimg mounts the image through the proxy's
# host:port): connection reset mid-body, 500, 503/429 with Retry-After, a
# truncated body, stalls longer than --timeout 2 (before the headers and mid-body),
# a wrong Content-Range, a 200 with the whole blob, a short 206 and flipped bytes.
#  0. faults on the mount's own requests (manifest, bootstrap): retried; permanent
#     ones make the mount fail within a bounded time;
#  1. each kind alone, on one cold file: the read returns the source bytes;
#  2. faults on every 3rd blob range request: the whole tree still equals the source;
#  3. permanent faults (every request 500, every request stalls) with --retries 2:
#     reads fail with EIO within a bounded time, the FUSE request does not hang, the
#     mount stays usable, and the same file reads fine once the faults stop;
#  4. afterwards both caches hold no bad chunk: each is mounted again straight from
#     the registry (no proxy) and the whole tree compared with the source.
set -euo pipefail
. "$(dirname "$0")/reglib.sh"
W=$(mktemp -d /tmp/lazyimg-t42.XXXXXX)
MNT=$W/mnt
REG_DIRS=()
cleanup() {
	reg_cleanup
	awk -v w="$W/" 'index($2, w) == 1 { f = 1 } END { exit !f }' /proc/mounts || rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
export LC_ALL=C
STALL=8           # the proxy's stall; lazyimg gives up after --timeout 2
BOUND=60          # a read against a permanently failing registry must end within this

start_registry "$W/reg"
push_small_image "$W/img"
unpack_small "$W/img" "$W/rootfs"
small_nydus v1-nydus
start_faultproxy "$W/fp" "$REGISTRY_HOST" --stall "$STALL" --retry-after 1
echo "registry $REGISTRY_HOST, fault proxy $PROXY_HOST (pid $PROXY_PID), image converted"
REF=$PROXY_HOST/small:v1-nydus

# timed_read FILE: cat MNT/FILE into $W/out with a hard bound; sets RC and SECS
timed_read() {
	local t0
	t0=$(reg_now)
	RC=0
	timeout -k 2 "$BOUND" cat "$MNT/$1" > "$W/out" 2> "$W/cat.err" || RC=$?
	SECS=$(reg_secs "$t0" "$(reg_now)")
}

# faults FROM_LINE: "kind=count ..." of the faults the proxy injected after FROM_LINE
faults() {
	fp_lines "$PROXY_LOG" "$1" | awk -F'\t' '$6 != "-" { n[$6]++ } END { for (k in n) printf "%s=%d ", k, n[k] }'
}

echo "== 0. faults while mounting (manifest and bootstrap requests), fresh caches"
fp_set "$PROXY_CTL" "scope all" "queue 500 reset truncate 503 stall"
mark=$(wc -l < "$PROXY_LOG")
t0=$(reg_now)
if reg_mount "$MNT" --insecure --no-prefetch --timeout 2 --retries 6 --cache-dir "$W/cache0" "$REF"; then
	reg_ok "mount succeeded in $(reg_secs "$t0" "$(reg_now)") s through faults on its first requests: $(faults "$mark")"
	timeout 30 cmp -s "$MNT/etc/hello.txt" "$W/rootfs/etc/hello.txt" || reg_bad "etc/hello.txt differs"
	reg_umount "$MNT"
else
	reg_bad "mount failed although only its first 5 requests were faulted: $(cat "$MNT.err")"
fi
for kind in 503 stall; do
	fp_set "$PROXY_CTL" "scope all" "always $kind"
	t0=$(reg_now)
	rc=0
	reg_mount "$MNT" --insecure --no-prefetch --timeout 2 --retries 2 --cache-dir "$W/cache0-$kind" "$REF" || rc=$?
	secs=$(reg_secs "$t0" "$(reg_now)")
	if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && ! reg_is_mounted "$MNT"; then
		reg_ok "mount against a registry that always answers $kind fails in $secs s: \"$(tail -n 1 "$MNT.err" | head -c 160)\""
	else
		reg_bad "mount against a registry that always answers $kind: exit $rc after $secs s"
		reg_umount "$MNT"
	fi
done
fp_set "$PROXY_CTL" pass

echo "== 1. one fault of each kind, each on one cold file (--timeout 2 --retries 4)"
# --merge-max 0: one request per chunk, so that every file read below costs its own
# request for the fault to hit (merged, a read also fetches the next files' chunks)
reg_mount "$MNT" --insecure --no-prefetch --timeout 2 --retries 4 --merge-max 0 --cache-dir "$W/cacheA" "$REF" ||
	reg_die "mount through the proxy failed: $(cat "$MNT.err")"
i=0
for kind in reset truncate 500 503 429 stall stallbody badrange whole shortbody; do
	i=$((i + 1))
	f=data/many/f$(printf %02d "$i").txt
	mark=$(wc -l < "$PROXY_LOG")
	fp_set "$PROXY_CTL" "queue $kind"
	timed_read "$f"
	fp_set "$PROXY_CTL" pass
	fp_lines "$PROXY_LOG" "$mark" > "$W/seen"
	nreq=$(wc -l < "$W/seen")
	first=$(awk -F'\t' '$5 != "-" { print $6; exit }' "$W/seen")
	if [ "$RC" -eq 0 ] && cmp -s "$W/out" "$W/rootfs/$f"; then
		if [ "$first" = "$kind" ] || [ "$first" = "$kind!BrokenPipeError" ] || [ "$first" = "$kind!ConnectionResetError" ]; then
			reg_ok "$kind: $f read correctly in $SECS s after the fault ($nreq requests: $(awk -F'\t' '{ printf "%s/%s ", $6, $7 }' "$W/seen"))"
		else
			reg_bad "$kind: the first range request after the mark was not faulted (got '$first'): the test did not inject the fault"
		fi
	else
		reg_bad "$kind: reading $f failed (exit $RC: $(cat "$W/cat.err")) or gave wrong bytes; requests: $(awk -F'\t' '{ printf "%s/%s ", $6, $7 }' "$W/seen")"
	fi
	if [ "$kind" = 503 ] || [ "$kind" = 429 ]; then
		# the fault answered with Retry-After: 1; when did the client come back?
		gap=$(awk -F'\t' '$5 != "-" { t[++n] = $1 - $9 ; e[n] = $1 } END { if (n >= 2) printf "%.2f", t[2] - e[1]; else print "none" }' "$W/seen")
		if [ "$gap" != none ] && python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) >= 0.9 else 1)" "$gap"; then
			echo "  ($kind: the retry came $gap s after the answer: Retry-After: 1 honoured)"
		else
			echo "  note: $kind with Retry-After: 1, but the retry came $gap s after the answer (Retry-After not honoured)"
		fi
	fi
done

echo "== 1b. flipped bytes (digest mismatch): never wrong bytes, and not remembered"
f=data/many/f12.txt
mark=$(wc -l < "$PROXY_LOG")
fp_set "$PROXY_CTL" "queue corrupt"
timed_read "$f"
fp_set "$PROXY_CTL" pass
grep -q $'\tcorrupt\t' <(fp_lines "$PROXY_LOG" "$mark") || reg_bad "corrupt: the proxy injected nothing"
if [ "$RC" -eq 0 ]; then
	cmp -s "$W/out" "$W/rootfs/$f" && reg_ok "corrupt: $f read correctly (the bad chunk was refetched)" ||
		reg_bad "corrupt: $f read WRONG BYTES without an error"
else
	grep -q "Input/output error" "$W/cat.err" && reg_ok "corrupt: $f failed with EIO in $SECS s (digest mismatch), no wrong bytes" ||
		reg_bad "corrupt: $f failed, but not with EIO: $(cat "$W/cat.err")"
	timed_read "$f"
	[ "$RC" -eq 0 ] && cmp -s "$W/out" "$W/rootfs/$f" && reg_ok "corrupt: the next read of $f returns the source bytes" ||
		reg_bad "corrupt: the next read of $f, with no fault, failed (exit $RC: $(cat "$W/cat.err"))"
fi

# the same with O_DIRECT, where the kernel does not retry a failed read by itself
f=data/many/f13.txt
fp_set "$PROXY_CTL" "queue corrupt"
rc=0; timeout -k 2 "$BOUND" dd if="$MNT/$f" of="$W/out" bs=64k iflag=direct status=none 2> "$W/cat.err" || rc=$?
fp_set "$PROXY_CTL" pass
if [ "$rc" -eq 0 ]; then
	cmp -s "$W/out" "$W/rootfs/$f" && reg_ok "corrupt, O_DIRECT: $f read correctly (refetched after the digest mismatch)" ||
		reg_bad "corrupt, O_DIRECT: $f read WRONG BYTES without an error"
elif grep -q "Input/output error" "$W/cat.err"; then
	reg_ok "corrupt, O_DIRECT: EIO, no wrong bytes"
	echo "  note: a chunk failing its digest check is not refetched: one corrupted answer costs the reader an EIO"
else
	reg_bad "corrupt, O_DIRECT: $f failed, but not with EIO: $(cat "$W/cat.err")"
fi

echo "== 2. faults on every 3rd blob range request, cycling through all kinds: whole tree"
mark=$(wc -l < "$PROXY_LOG")
fp_set "$PROXY_CTL" "every 3 reset,500,503,truncate,stall,badrange,whole,shortbody,stallbody,429"
t0=$(reg_now)
if tree_same "$W/rootfs" "$MNT" 300; then
	reg_ok "every file equals the source in $(reg_secs "$t0" "$(reg_now)") s, despite the faults: $(faults "$mark")"
else
	reg_bad "the tree read through the faulty proxy differs (faults: $(faults "$mark"))"
fi
fp_set "$PROXY_CTL" pass
nf=$(fp_lines "$PROXY_LOG" "$mark" | awk -F'\t' '$6 != "-"' | wc -l)
[ "$nf" -ge 5 ] && reg_ok "$nf faults were injected during the tree read" || reg_bad "only $nf faults were injected: the test is too weak"
echo "  stats: $(timeout 10 "$LAZYIMG" stats "$MNT")"
[ "$(reg_stat "$MNT" read_errors)" = 0 ] || echo "  note: read_errors $(reg_stat "$MNT" read_errors) (from part 1b)"
reg_umount "$MNT"

echo "== 3. permanent faults, --timeout 2 --retries 2, fresh cache"
reg_mount "$MNT" --insecure --no-prefetch --timeout 2 --retries 2 --cache-dir "$W/cacheB" "$REF" ||
	reg_die "mount through the proxy failed: $(cat "$MNT.err")"
cat "$MNT/etc/hello.txt" > /dev/null
for kind in 500 stall; do
	case $kind in 500) f=data/many/f20.txt ;; stall) f=blobs/random-1m.bin ;; esac
	mark=$(wc -l < "$PROXY_LOG")
	fp_set "$PROXY_CTL" "always $kind"
	timed_read "$f"
	n=$(fp_lines "$PROXY_LOG" "$mark" | awk -F'\t' '$5 != "-"' | wc -l)
	if [ "$RC" -eq 124 ] || [ "$RC" -eq 137 ]; then
		reg_bad "always $kind: cat $f still hung after $BOUND s (FUSE request not answered)"
	elif [ "$RC" -eq 0 ]; then
		reg_bad "always $kind: cat $f succeeded although every range request fails"
	elif grep -q "Input/output error" "$W/cat.err"; then
		reg_ok "always $kind: cat $f failed with EIO after $SECS s (< $BOUND s), $n range requests tried"
	else
		reg_bad "always $kind: cat $f failed, but not with EIO: $(cat "$W/cat.err")"
	fi
	# the mount is still usable: metadata and cached data do not need the registry
	if timeout 10 ls -l "$MNT/data/many" > /dev/null && timeout 10 cmp -s "$MNT/etc/hello.txt" "$W/rootfs/etc/hello.txt"; then
		reg_ok "always $kind: ls and a cached file still work during the faults"
	else
		reg_bad "always $kind: the mount is unusable during the faults"
	fi
	fp_set "$PROXY_CTL" pass
	timed_read "$f"
	[ "$RC" -eq 0 ] && cmp -s "$W/out" "$W/rootfs/$f" && reg_ok "after the faults stop, $f reads correctly (failure not cached)" ||
		reg_bad "after the faults stop, $f: exit $RC ($(cat "$W/cat.err"))"
done
# a stall on a file another reader is waiting for: both return
fp_set "$PROXY_CTL" "always stall"
f=blobs/random-4m.bin
t0=$(reg_now)
timeout -k 2 "$BOUND" cat "$MNT/$f" > /dev/null 2> "$W/cat1.err" & p1=$!
timeout -k 2 "$BOUND" dd if="$MNT/$f" of=/dev/null bs=64k iflag=direct status=none 2> "$W/cat2.err" & p2=$!
rc1=0; rc2=0; wait "$p1" || rc1=$?; wait "$p2" || rc2=$?
secs=$(reg_secs "$t0" "$(reg_now)")
if [ "$rc1" -ne 0 ] && [ "$rc1" -ne 124 ] && [ "$rc2" -ne 0 ] && [ "$rc2" -ne 124 ] &&
	grep -q "Input/output error" "$W/cat1.err" && grep -q "Input/output error" "$W/cat2.err"; then
	reg_ok "always stall: two concurrent readers of $f both got EIO within $secs s"
else
	reg_bad "always stall: two concurrent readers of $f: exit $rc1 ($(cat "$W/cat1.err")), exit $rc2 ($(cat "$W/cat2.err")) after $secs s"
fi
fp_set "$PROXY_CTL" pass
st=$(timeout 10 "$LAZYIMG" stats "$MNT")
echo "  stats: $st"
re=$(reg_stat "$MNT" read_errors)
[ "$re" -gt 0 ] && reg_ok "lazyimg stats counts the failed reads (read_errors $re, chunk_errors $(reg_stat "$MNT" chunk_errors))" ||
	reg_bad "lazyimg stats read_errors is $re after failed reads"
reg_umount "$MNT"

echo "== 4. the caches hold no bad chunk: mount them again straight from the registry"
DIRECT=$REGISTRY_HOST/small:v1-nydus
for c in cacheA cacheB; do
	reg_mount "$MNT" --insecure --no-prefetch --cache-dir "$W/$c" "$DIRECT" || reg_die "direct mount failed: $(cat "$MNT.err")"
	if tree_same "$W/rootfs" "$MNT"; then
		reg_ok "$c: every file read through the reused cache equals the source"
	else
		reg_bad "$c: the reused cache gives wrong content"
	fi
	st=$(timeout 10 "$LAZYIMG" stats "$MNT")
	echo "  $c stats: $st"
	if [ "$c" = cacheA ]; then
		# part 2 read every file, so every chunk should have come from the cache
		bb=$(reg_stat "$MNT" backend_bytes)
		[ "$bb" -eq 0 ] && reg_ok "cacheA: everything came from the cache (backend_bytes 0, cache_hits $(reg_stat "$MNT" cache_hits))" ||
			reg_bad "cacheA: $bb bytes fetched although every file had been read through the proxy"
	fi
	reg_umount "$MNT"
done
reg_finish
