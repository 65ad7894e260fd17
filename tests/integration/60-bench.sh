#!/usr/bin/env bash
# lazyimg bench on a real docker-registry (127.0.0.1) with the small 3-layer
# image converted to nydus: every metric present and plausible against
# independent figures (the manifest's layer sizes, the source layers unpacked
# by tests/tools/oci_unpack.py); a warm run fetches nothing; the shaping
# qdisc is on lo during a --netem run and gone after it, also after the bench
# is interrupted with SIGINT mid-run; --record writes the files read and the
# next cold mount of that image prefetches the recorded list by itself.
set -euo pipefail
. "$(dirname "$0")/reglib.sh"
W=$(mktemp -d /tmp/lazyimg-t60.XXXXXX)
MNT=$W/mnt
REG_DIRS=()
BENCH_PID=
cleanup() {
	[ -n "$BENCH_PID" ] && kill "$BENCH_PID" 2>/dev/null && wait "$BENCH_PID" 2>/dev/null || true
	mountpoint -q "$MNT" 2>/dev/null && { "$LAZYIMG" umount "$MNT" || umount -l "$MNT"; }
	reg_cleanup
	rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$MNT"

start_registry "$W/reg"
push_small_image "$W/img"
small_nydus v1-nydus
REF=$REGISTRY_HOST/small:v1-nydus
echo "registry $REGISTRY_HOST, $REF converted"
unpack_small "$W/img" "$W/rootfs"
TREE_BYTES=$(find "$W/rootfs" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
# the image's bytes from its manifest, fetched here with curl (not through lazyimg)
man=$(curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$REGISTRY_URL/v2/small/manifests/v1-nydus")
BLOB_BYTES=$(jq '[.layers[].size] | add' <<< "$man")
OCI_BYTES=$(curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$REGISTRY_URL/v2/small/manifests/v1" |
	jq '[.layers[].size] | add + 0')
echo "tree $TREE_BYTES B, nydus layers $BLOB_BYTES B, OCI layers $OCI_BYTES B"

# j FILE MODE METRIC [STAT]: one figure of a --json file ("null" when absent)
j() { jq -r --arg m "$2" --arg k "$3" --arg s "${4:-median}" \
	'.modes[] | select(.mode == $m) | .[$k] | if type == "object" then .[$s] else . end' "$1"; }
# le A B: A <= B (floats)
le() { python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) <= float(sys.argv[2]) else 1)' "$1" "$2"; }
qdisc_ours() { tc qdisc show dev lo 2>/dev/null | grep -q ' 1a7: root'; }

# 1. --read-all, 2 cold runs + warm + full pull: each metric present and plausible
t0=$(reg_now)
timeout -k 5 120 "$LAZYIMG" bench --insecure --runs 2 --read-all --ttfb-file etc/hello.txt \
	--baseline full-pull --full-pull-ref "$REGISTRY_HOST/small:v1" \
	--json "$W/b1.json" --csv "$W/b1.csv" --plot "$W/b1.svg" "$REF" > "$W/b1.out" 2> "$W/b1.err" ||
	{ cat "$W/b1.out" "$W/b1.err"; reg_die "lazyimg bench --read-all failed"; }
cat "$W/b1.out"
echo "($(reg_secs "$t0" "$(reg_now)") s)"
for k in ready_ms ttfb_ms workload_ms total_ms fetched_bytes requests server_cpu_s server_peak_rss_kib cache_hit_rate; do
	for m in "lazyimg cold" "lazyimg warm"; do
		v=$(j "$W/b1.json" "$m" "$k")
		reg_check "$m: $k present ($v)" '[ "$v" != null ] && [ -n "$v" ]'
	done
done
reg_check "2 cold runs recorded, each with its own figures" \
	'[ "$(jq -r ".modes[] | select(.mode == \"lazyimg cold\") | .ready_ms.values | length" "$W/b1.json")" = 2 ]'
v=$(j "$W/b1.json" "lazyimg cold" ready_ms max)
reg_check "cold mount ready in (0, 30 s): $v ms" 'le 0.01 "$v" && le "$v" 30000'
v=$(j "$W/b1.json" "lazyimg cold" ttfb_ms)
reg_check "time to first byte in (0, 10 s): $v ms" 'le 0.001 "$v" && le "$v" 10000'
v=$(j "$W/b1.json" "lazyimg cold" workload_read_bytes)
reg_check "the workload read the whole tree: $v B = $TREE_BYTES B (unpacked source)" '[ "${v%.*}" = "$TREE_BYTES" ]'
v=$(j "$W/b1.json" "lazyimg cold" fetched_bytes max)
lo=$((BLOB_BYTES * 95 / 100)) hi=$((BLOB_BYTES + 65536))
reg_check "cold --read-all fetched $v B: within [95 %, +64 KiB] of the manifest's $BLOB_BYTES B" \
	'le "$lo" "$v" && le "$v" "$hi"'
v=$(j "$W/b1.json" "lazyimg cold" image_bytes)
reg_check "bench read the manifest's layer bytes itself: $v" '[ "$v" = "$BLOB_BYTES" ]'
v=$(j "$W/b1.json" "lazyimg cold" requests)
reg_check "cold requests counted: $v (>= manifest + bootstrap + data)" 'le 3 "$v"'
v=$(j "$W/b1.json" "lazyimg cold" server_peak_rss_kib)
reg_check "server peak RSS plausible: $v KiB" 'le 1000 "$v" && le "$v" 1048576'
v=$(j "$W/b1.json" "lazyimg cold" server_cpu_s)
reg_check "server CPU seconds plausible: $v" 'le 0 "$v" && le "$v" 60'
v=$(j "$W/b1.json" "lazyimg warm" fetched_bytes_by_workload)
reg_check "warm run: the workload fetched $v bytes (want 0)" '[ "$v" = 0 ]'
v=$(j "$W/b1.json" "lazyimg warm" cache_hit_rate)
reg_check "warm run: cache hit rate $v (want 1)" '[ "$v" = 1 ]'
v=$(j "$W/b1.json" "full pull" fetched_bytes)
reg_check "full pull fetched $v B >= the OCI layers' $OCI_BYTES B" 'le "$OCI_BYTES" "$v" && le "$v" "$((OCI_BYTES + 65536))"'
v=$(j "$W/b1.json" "full pull" workload_read_bytes)
reg_check "full pull: same tree read ($v B)" '[ "${v%.*}" = "$TREE_BYTES" ]'
reg_check "csv: one row per mode and metric" '[ "$(grep -c "^\"lazyimg cold\",.*,ready_ms," "$W/b1.csv")" = 1 ] && [ "$(wc -l < "$W/b1.csv")" -gt 30 ]'
reg_check "plot: an SVG from gnuplot" 'grep -q "<svg" "$W/b1.svg" && grep -q "lazyimg cold" "$W/b1.svg"'
reg_check "table on stdout names each mode" 'grep -q "^lazyimg cold" "$W/b1.out" && grep -q "^full pull" "$W/b1.out"'

# 2. --rand4k: IOPS
timeout -k 5 60 "$LAZYIMG" bench --insecure --runs 1 --no-warm --rand4k 300 --json "$W/b2.json" "$REF" \
	> "$W/b2.out" 2>&1 || { cat "$W/b2.out"; reg_die "bench --rand4k failed"; }
v=$(j "$W/b2.json" "lazyimg cold" iops)
reg_check "--rand4k 300: $v IOPS" '[ "$v" != null ] && le 1 "$v"'
v=$(j "$W/b2.json" "lazyimg cold" workload_read_bytes)
reg_check "--rand4k read 300 blocks ($v B)" '[ "${v%.*}" = $((300 * 4096)) ]'

# 3. --netem: the qdisc is on lo during the run and gone afterwards
if ! tc qdisc show dev lo >/dev/null 2>&1; then
	reg_bad "tc cannot show qdiscs here"
fi
# another bench may be shaping lo right now (a concurrent suite): let it finish
for _ in $(seq 120); do qdisc_ours || break; sleep 0.5; done
qdisc_ours && reg_die "a lazyimg qdisc stayed on lo for 60 s before the test"
timeout -k 5 120 "$LAZYIMG" bench --insecure --runs 3 --no-warm --read-all --netem "delay 5ms rate 1gbit" \
	--json "$W/b3.json" "$REF" > "$W/b3.out" 2> "$W/b3.err" &
BENCH_PID=$!
seen=no
for _ in $(seq 200); do
	qdisc_ours && { seen=yes; break; }
	kill -0 "$BENCH_PID" 2>/dev/null || break
	sleep 0.05
done
wait "$BENCH_PID" || { cat "$W/b3.out" "$W/b3.err"; reg_die "bench --netem failed"; }
BENCH_PID=
net=$(jq -r .network "$W/b3.json")
echo "network: $net"
if grep -q "tc netem on lo\|by tc tbf on lo" <<< "$net"; then
	reg_check "the bench's qdisc was on lo during the run" '[ $seen = yes ]'
else
	echo "note: neither netem nor tbf could be installed here: only the absence afterwards is checked"
fi
reg_check "no lazyimg qdisc on lo after the run" '! qdisc_ours'
v=$(j "$W/b3.json" "lazyimg cold" ready_ms min)
reg_check "5 ms each way shows in the cold mount: ready $v ms >= 20 (2 round trips)" \
	'grep -q "NO delay\|without shaping" <<< "$net" || le 20 "$v"'

# 4. SIGINT mid-run: qdisc, mount and server gone
timeout -k 5 120 "$LAZYIMG" bench --insecure --runs 50 --read-all --netem "delay 5ms rate 1gbit" \
	--workdir "$W" "$REF" > "$W/b4.out" 2> "$W/b4.err" &
BENCH_PID=$!
mounted=no srv=
for _ in $(seq 400); do
	BMNT=$(ls -d "$W"/lazyimg-bench.*/mnt 2>/dev/null | head -n 1 || true)
	if [ -n "$BMNT" ] && grep -q " $BMNT fuse" /proc/mounts; then
		srv=$(reg_server_pid "$BMNT" || true)
		[ -n "$srv" ] && { mounted=yes; break; }
	fi
	sleep 0.02
done
reg_check "the interrupted bench had its mount up" '[ $mounted = yes ]'
grep -q "tc netem on lo\|by tc tbf on lo" <<< "$net" && reg_check "and its qdisc on lo when interrupted" 'qdisc_ours'
kill -INT "$BENCH_PID"
rc=0; wait "$BENCH_PID" || rc=$?
BENCH_PID=
reg_check "bench exits 130 on SIGINT (rc $rc)" '[ "$rc" = 130 ]'
reg_check "the interruption is reported" 'grep -q interrupted "$W/b4.err"'
reg_check "no lazyimg qdisc on lo after SIGINT" '! qdisc_ours'
reg_check "no FUSE mount left under the work dir" '! grep -q " $W/lazyimg-bench" /proc/mounts'
sleep 0.5
reg_check "the mount's server (pid ${srv:-?}) was found, and is gone" '[ -n "$srv" ] && ! reg_serves "$srv" "$BMNT"'
reg_check "the work dir was removed" '! ls -d "$W"/lazyimg-bench.* >/dev/null 2>&1'

# 5. --record through bench: the list, then cold mounts that prefetch it
printf '%s\n' etc/hello.txt data/many/f03.txt data/many/f01.txt > "$W/list"
timeout -k 5 120 "$LAZYIMG" bench --insecure --runs 1 --no-warm --read "$W/list" --record "$W/rec.list" \
	--json "$W/b5.json" "$REF" > "$W/b5.out" 2>&1 || { cat "$W/b5.out"; reg_die "bench --record failed"; }
cat "$W/b5.out"
reg_check "--record wrote the files read, in order" \
	'[ "$(cat "$W/rec.list")" = "$(printf "/%s\n" etc/hello.txt data/many/f03.txt data/many/f01.txt)" ]'
v=$(j "$W/b5.json" "lazyimg +recorded" prefetch_bytes max)
reg_check "recorded mode: the cold mounts prefetched ($v B)" '[ "$v" != null ] && le 1 "$v"'
reg_check "recorded mode: stats said prefetch_source recorded" \
	'[ "$(jq -r ".modes[] | select(.mode == \"lazyimg +recorded\") | .prefetch_source" "$W/b5.json")" = recorded ]'
reg_check "plain mode: prefetch_source table" \
	'[ "$(jq -r ".modes[] | select(.mode == \"lazyimg cold\") | .prefetch_source" "$W/b5.json")" = table ]'

# 6. --record on lazyimg mount itself; the next mount of the image uses the kept list
C=$W/cache-rec
"$LAZYIMG" mount --insecure --cache-dir "$C" --record "$W/m.list" "$REF" "$MNT"
reg_check "stats while recording" '[ "$(reg_stat "$MNT" recording)" = True ]'
cat "$MNT/data/many/f07.txt" "$MNT/etc/hello.txt" > /dev/null
reg_check "recorded_files counts 2" '[ "$(reg_stat "$MNT" recorded_files)" = 2 ]'
"$LAZYIMG" umount "$MNT"
reg_check "mount --record wrote the list" '[ "$(cat "$W/m.list")" = "$(printf "/%s\n" data/many/f07.txt etc/hello.txt)" ]'
reg_check "a copy is kept per image digest" 'cmp -s "$W/m.list" "$C"/records/*.list'
find "$C" -mindepth 1 -maxdepth 1 ! -name records -exec rm -rf {} +
"$LAZYIMG" mount --insecure --cache-dir "$C" "$REF" "$MNT"
for _ in $(seq 50); do [ "$(reg_stat "$MNT" prefetch_bytes)" != 0 ] && break; sleep 0.1; done
reg_check "the next cold mount says prefetch_source recorded" '[ "$(reg_stat "$MNT" prefetch_source)" = recorded ]'
reg_check "and prefetched ($(reg_stat "$MNT" prefetch_bytes) B)" '[ "$(reg_stat "$MNT" prefetch_bytes)" -gt 0 ]'
"$LAZYIMG" umount "$MNT"
"$LAZYIMG" mount --insecure --cache-dir "$C" --no-prefetch "$REF" "$MNT"
reg_check "an explicit --no-prefetch wins over the recorded list" '[ "$(reg_stat "$MNT" prefetch_source)" = none ]'
"$LAZYIMG" umount "$MNT"

# 7. --run CMD --wait-line: a shell-less image whose /bin/sh is a static stub that reads
# /app/data (so the start-up fetches it) and then prints a line, hangs, or fails
mkdir -p "$W/stub/root/bin" "$W/stub/root/app" "$W/stub/oci/blobs/sha256"
cat > "$W/stub/sh.c" <<'C'
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv)
{
	const char *cmd = argc > 2 ? argv[2] : "";
	char buf[65536];
	long total = 0;
	ssize_t n;
	int fd = open("/app/data", O_RDONLY);

	while (fd >= 0 && (n = read(fd, buf, sizeof(buf))) > 0)
		total += n;
	printf("stub: read %ld bytes\n", total);
	fflush(stdout);
	if (strstr(cmd, "hang"))
		sleep(100);
	if (strstr(cmd, "fail"))
		return 1;
	printf("app: READY\n");
	return 0;
}
C
gcc -static -O1 -o "$W/stub/root/bin/sh" "$W/stub/sh.c" || reg_die "cannot build the static stub shell"
head -c $((3 << 20)) /dev/urandom > "$W/stub/root/app/data"
tar -C "$W/stub/root" --numeric-owner --owner=0 --group=0 -cf - bin app | gzip -n > "$W/stub/layer.tgz"
diffid=$(gzip -dc "$W/stub/layer.tgz" | sha256sum | cut -d' ' -f1)
ld=$(sha256sum < "$W/stub/layer.tgz" | cut -d' ' -f1)
cp "$W/stub/layer.tgz" "$W/stub/oci/blobs/sha256/$ld"
printf '{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$diffid" \
	> "$W/stub/config.json"
cd_=$(sha256sum < "$W/stub/config.json" | cut -d' ' -f1)
cp "$W/stub/config.json" "$W/stub/oci/blobs/sha256/$cd_"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%d}]}' \
	"$cd_" "$(stat -c %s "$W/stub/config.json")" "$ld" "$(stat -c %s "$W/stub/layer.tgz")" > "$W/stub/manifest.json"
md=$(sha256sum < "$W/stub/manifest.json" | cut -d' ' -f1)
cp "$W/stub/manifest.json" "$W/stub/oci/blobs/sha256/$md"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%d,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}' \
	"$md" "$(stat -c %s "$W/stub/manifest.json")" > "$W/stub/oci/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' > "$W/stub/oci/oci-layout"
skopeo copy -q --dest-tls-verify=false "oci:$W/stub/oci:v1" "docker://$REGISTRY_HOST/stub:v1" ||
	reg_die "cannot push the stub image"
timeout -k 5 120 "$LAZYIMG" convert -q --insecure "$REGISTRY_HOST/stub:v1" "$REGISTRY_HOST/stub:v1-nydus"
timeout -k 5 120 "$LAZYIMG" bench --insecure --runs 1 --run "start app" --wait-line "app: READY" \
	--baseline full-pull --full-pull-ref "$REGISTRY_HOST/stub:v1" --json "$W/b7.json" \
	"$REGISTRY_HOST/stub:v1-nydus" > "$W/b7.out" 2>&1 || { cat "$W/b7.out"; reg_die "bench --run failed"; }
for m in "lazyimg cold" "lazyimg warm" "full pull"; do
	v=$(j "$W/b7.json" "$m" workload_errors)
	reg_check "--run, $m: the line appeared (workload errors $v)" '[ "$v" = 0 ]'
done
v=$(j "$W/b7.json" "lazyimg cold" fetched_bytes_by_workload)
reg_check "--run, cold: the start-up fetched the 3 MiB it read ($v B)" 'le $((3 << 20)) "$v"'
v=$(j "$W/b7.json" "lazyimg warm" fetched_bytes_by_workload)
reg_check "--run, warm: nothing fetched ($v B)" '[ "$v" = 0 ]'
t0=$(reg_now)
timeout -k 5 60 "$LAZYIMG" bench --insecure --runs 1 --no-warm --run "hang" --wait-line "app: READY" --run-timeout 2 \
	--json "$W/b8.json" "$REGISTRY_HOST/stub:v1-nydus" > "$W/b8.out" 2>&1 || true
el=$(reg_secs "$t0" "$(reg_now)")
reg_check "--run-timeout 2 on a hanging command: reported, workload error, bench done in $el s" \
	'grep -q "timed out" "$W/b8.out" && [ "$(j "$W/b8.json" "lazyimg cold" workload_errors)" = 1 ] && le "$el" 20'
timeout -k 5 60 "$LAZYIMG" bench --insecure --runs 1 --no-warm --run "fail" --wait-line "app: READY" \
	"$REGISTRY_HOST/stub:v1-nydus" > "$W/b9.out" 2>&1 || true
reg_check "--run of a failing command: its last output is shown" 'grep -q "ended before printing .app: READY.; its last output: stub: read" "$W/b9.out"'

# 8. usage errors are clear
must() { local want=$1; shift; local out rc=0; out=$("$LAZYIMG" bench "$@" 2>&1) || rc=$?
	reg_check "bench $* -> exit 2, '$want'" '[ $rc = 2 ] && grep -q -- "$want" <<< "$out"'; }
must "needs --wait-line" --run "true" "$REF"
must "needs --full-pull-ref" --baseline full-pull --read-all "$REF"
must "one workload" --read-all --rand4k 5 "$REF"
reg_finish
