#!/usr/bin/env bash
# `lazyimg serve`: many mounts in one process, its control API, and open files
# surviving kill -9 of the server.
#  A. mount --server / list / stats / usage / umount through the CLI; bytes equal the
#     source layers; usage equals du -B1 of the blob's cache files; /metrics.
#  B. control API faults (curl on the unix socket): bad JSON, missing/invalid fields,
#     unknown ids and routes, wrong methods, bad digests, an oversized body, a plain OCI
#     image, removal of a blob in use, and one id mounted and unmounted concurrently
#     while its mount is slow (a delaying proxy): clear JSON errors, the server stays up.
#  C. kill -9 of the server while python readers hold files open: one between two reads,
#     one whose read is being served (the registry answers slowly) at the moment of the
#     kill. A new server adopts the FUSE fds kept by the fd holder and the first reader
#     finishes; the second mount's registry fails during the restore, so it is listed
#     as failed while its kernel mount (and reader) waits; a new Mount of that id, with
#     the registry back, adopts it and the second reader finishes too. Both sha256 right,
#     every mount back.
#  D. a full disk under the cache (a 3 MiB tmpfs at <root>/cache): a mount that cannot
#     store its bootstrap fails with 507 and a clear message; reads of a mounted image
#     whose chunks cannot be cached still return the right bytes; after space is freed
#     the same mount succeeds. Nothing lost, server up throughout.
set -euo pipefail
. "$(dirname "$0")/reglib.sh"
W=$(mktemp -d /tmp/lazyimg-t50.XXXXXX)
R=$W/root
R2=$W/root2
REG_DIRS=()
SERVE_PIDS=()
RPIDS=()
export LC_ALL=C

# holder pid of a root (the holder writes <socket>.pid)
holder_pid() { cat "$1/fdholder.sock.pid" 2>/dev/null || true; }

cleanup() {
	local p m
	trap - EXIT
	for p in "${RPIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
	for p in "${SERVE_PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
	for m in $(awk -v w="$W/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r); do
		umount -l "$m" 2>/dev/null || true
	done
	for p in "$(holder_pid "$R")" "$(holder_pid "$R2")"; do
		[ -n "$p" ] && kill "$p" 2>/dev/null || true
	done
	reg_cleanup
	awk -v w="$W/" 'index($2, w) == 1 { f = 1 } END { exit !f }' /proc/mounts || rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

# start_serve ROOT LOG [args]: background server; waits for its socket; sets SERVE_PID
start_serve() {
	local root=$1 log=$2; shift 2
	"$LAZYIMG" serve --root "$root" --insecure --log-level info "$@" >> "$log" 2>&1 &
	SERVE_PID=$!
	SERVE_PIDS+=("$SERVE_PID")
	for _ in $(seq 200); do
		curl -s --unix-socket "$root/lazyimg.sock" http://x/api/v1/mounts > /dev/null 2>&1 && return 0
		kill -0 "$SERVE_PID" 2>/dev/null || { tail -20 "$log"; return 1; }
		sleep 0.05
	done
	tail -20 "$log"
	return 1
}

# api METHOD PATH [BODY]: prints "STATUS BODY" (socket $SOCK)
api() {
	local out
	out=$(curl -s --max-time 30 --unix-socket "$SOCK" -X "$1" -w '\n%{http_code}' \
		${3+--data-binary "$3"} "http://x$2") || true
	printf '%s %s\n' "$(tail -n 1 <<< "$out")" "$(sed '$d' <<< "$out")"
}

# expect DESCRIPTION STATUS METHOD PATH [BODY]: the status matches and the body has an "error"
expect_err() {
	local what=$1 want=$2 got st; shift 2
	got=$(api "$@")
	st=${got%% *}
	if [ "$st" = "$want" ] && jq -e '.error | length > 0' <<< "${got#* }" > /dev/null 2>&1; then
		reg_ok "$what: $st $(jq -r .error <<< "${got#* }" | head -c 110)"
	else
		reg_bad "$what: want $want with a JSON error, got: $(head -c 300 <<< "$got")"
	fi
}

sha() { sha256sum "$1" | cut -c1-64; }
serve_up() { curl -s --max-time 5 --unix-socket "$SOCK" http://x/api/v1/mounts > /dev/null; }
# metrics_has REGEX: a line of /metrics matches (fetched whole first: no SIGPIPE under pipefail)
metrics_has() {
	curl -s --max-time 5 --unix-socket "$SOCK" http://x/metrics > "$W/metrics.now" || return 1
	grep -q "$1" "$W/metrics.now"
}

# wait_restored: until no mount is "mounting" (restores finish in the background), 15 s at most
wait_restored() {
	for _ in $(seq 150); do
		curl -s --max-time 5 --unix-socket "$SOCK" http://x/api/v1/mounts | jq -e '[.mounts[] | select(.state == "mounting")] | length == 0' > /dev/null && return 0
		sleep 0.1
	done
	return 1
}

mkdir -p "$W/reg" "$R"
start_registry "$W/reg"
push_small_image "$W/img"
small_nydus v1-nydus
unpack_small "$W/img" "$W/rootfs"
REF=$REGISTRY_HOST/small:v1-nydus
start_faultproxy "$W/proxy" "$REGISTRY_HOST"
PREF=$PROXY_HOST/small:v1-nydus
echo "registry $REGISTRY_HOST, proxy $PROXY_HOST, image converted ($(( $(date +%s) - REG_T0 )) s)"

# ---------------------------------------------------------------- A. CLI
SOCK=$R/lazyimg.sock
start_serve "$R" "$W/serve.log" --hung-ms 1000 || reg_die "lazyimg serve did not come up"
reg_check "control socket is mode 0600" '[ "$(stat -c %a "$SOCK")" = 600 ]'
if timeout 10 "$LAZYIMG" serve --root "$R" --socket "$W/second.sock" > "$W/second.out" 2>&1; then
	reg_bad "a second server on the same root started"
else
	reg_check "a second server on the same root is refused: $(grep -m1 -o 'root .*' "$W/second.out" | head -c 100)" \
		'grep -q "in use by another lazyimg process" "$W/second.out" && serve_up'
fi
m1=$("$LAZYIMG" mount --server "$SOCK" "$REF" m1) || reg_die "mount --server m1 failed"
reg_check "mount --server prints the mountpoint $m1" '[ "$m1" = "$R/mnt/m1" ]'
"$LAZYIMG" mount --server "$SOCK" "$REF" "$W/anywhere/m2" > /dev/null || reg_bad "mount --server m2"
m1b=$("$LAZYIMG" mount --server "$SOCK" "$REF" m1) || true
reg_check "mounting m1 again is a no-op (idempotent, one kernel mount)" \
	'[ "$m1b" = "$m1" ] && [ "$(awk -v m="$m1" "\$2 == m" /proc/mounts | wc -l)" = 1 ]'
"$LAZYIMG" list --server "$SOCK" > "$W/list"
reg_check "list shows m1 and m2 ready" '[ "$(awk "\$2 == \"ready\" { print \$1 }" "$W/list" | sort | tr "\n" " ")" = "m1 m2 " ]'
reg_check "m1 and m2 serve the source bytes (hello.txt, random-1m.bin)" \
	'cmp "$R/mnt/m1/etc/hello.txt" "$W/rootfs/etc/hello.txt" && cmp "$R/mnt/m2/blobs/random-1m.bin" "$W/rootfs/blobs/random-1m.bin"'
st=$("$LAZYIMG" stats --server "$SOCK" m2)
# the same keys as `lazyimg stats` of a single mount (plus inflight and hung)
mkdir -p "$W/single"
"$LAZYIMG" mount --insecure --cache-dir "$W/single-cache" --log-file "$W/single.log" "$REF" "$W/single"
k1=$("$LAZYIMG" stats "$W/single" | jq -c 'keys')
"$LAZYIMG" umount "$W/single"
reg_check "stats --server has every key of lazyimg stats ($k1)" \
	'[ "$(jq -c --argjson k "$k1" "[\$k[] as \$x | select(has(\$x) | not)]" <<< "$st")" = "[]" ]'
reg_check "stats --server m2 has the lazyimg stats keys ($(head -c 140 <<< "$st")...)" \
	'jq -e "(.backend_bytes > 0) and (.read_bytes >= 1048576) and has(\"cache_hits\") and has(\"read_latency_us\")" <<< "$st" > /dev/null'
# the data blob holding random-1m.bin: the largest file in the cache
hex=$(ls -S "$R/cache/blobs" | grep -Ev '\.state$' | head -n 1)
u=$("$LAZYIMG" usage --server "$SOCK" "sha256:$hex")
du=$(du -B1 -c "$R/cache/blobs/$hex" "$R/cache/blobs/$hex.state" | tail -n 1 | cut -f1)
reg_check "usage sha256:${hex:0:12}... = $u bytes = du -B1 of its cache files ($du)" '[ "$u" = "$du" ] && [ "$u" -ge 1048576 ]'
must() { if "$@" > "$W/out" 2>&1; then reg_bad "$* succeeded"; else reg_ok "$(head -c 150 "$W/out")"; fi; }
must "$LAZYIMG" usage --server "$SOCK" "sha256:${hex^^}"
must "$LAZYIMG" umount --server "$SOCK" nosuch
must "$LAZYIMG" stats --server "$SOCK" nosuch
curl -s --unix-socket "$SOCK" http://x/metrics > "$W/metrics"
reg_check "/metrics: per-mount bytes, hits, latency histogram, in-flight, hung, cache usage" \
	'grep -q "^lazyimg_backend_bytes_total{id=\"m2\"} [1-9]" "$W/metrics" &&
	 grep -q "^lazyimg_cache_hits_total{id=\"m1\"}" "$W/metrics" &&
	 grep -q "^lazyimg_read_latency_seconds_bucket{id=\"m2\",le=\"+Inf\"} [1-9]" "$W/metrics" &&
	 grep -q "^lazyimg_inflight_requests{id=\"m1\"} 0" "$W/metrics" &&
	 grep -q "^lazyimg_hung_requests{id=\"m1\"} 0" "$W/metrics" &&
	 grep -q "^lazyimg_cache_usage_bytes [1-9]" "$W/metrics"'
# an independent parser: Debian's python3-prometheus-client (installed if missing)
/usr/bin/python3 -c 'import prometheus_client' 2> /dev/null ||
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-prometheus-client > /dev/null 2>&1 || true
cat > "$W/prom.py" <<'PY'
import sys
from prometheus_client.parser import text_string_to_metric_families
fams = {f.name: f for f in text_string_to_metric_families(open(sys.argv[1]).read())}
h = fams["lazyimg_read_latency_seconds"]
assert h.type == "histogram", h.type
ids = {s.labels["id"] for s in h.samples}
for i in ids:
    b = [(float(s.labels["le"]), s.value) for s in h.samples if s.labels["id"] == i and s.name.endswith("_bucket")]
    b.sort()
    assert all(x[1] <= y[1] for x, y in zip(b, b[1:])), "buckets not cumulative"
    cnt = [s.value for s in h.samples if s.labels["id"] == i and s.name.endswith("_count")][0]
    sm = [s.value for s in h.samples if s.labels["id"] == i and s.name.endswith("_sum")][0]
    assert b[-1][0] == float("inf") and b[-1][1] == cnt and sm >= 0, (b[-1], cnt, sm)
for n in ("lazyimg_backend_bytes", "lazyimg_cache_hits", "lazyimg_reads"):
    assert fams[n].type == "counter", n
for n in ("lazyimg_inflight_requests", "lazyimg_hung_requests", "lazyimg_cache_usage_bytes"):
    assert fams[n].type == "gauge", n
print(len(fams), "families,", len(ids), "mounts in the histogram")
PY
reg_check "/metrics parses as Prometheus text (python3-prometheus-client): $(/usr/bin/python3 "$W/prom.py" "$W/metrics" 2>&1 | tail -n 1)" \
	'/usr/bin/python3 "$W/prom.py" "$W/metrics" > /dev/null'
nw=$(awk '$1 == "lazyimg_fuse_worker_threads" { print $2 }' "$W/metrics")
reg_check "two mounts share $nw FUSE worker threads (a pool, not a loop per mount)" '[ -n "$nw" ] && [ "$nw" -ge 1 ] && [ "$nw" -le 8 ]'

# an admin unmounts m2 behind the server's back: it is reported, and a Mount re-makes it
umount "$R/mnt/m2"
for _ in $(seq 40); do [ "$(api GET /api/v1/mounts/m2 | cut -d' ' -f2- | jq -r .state)" = failed ] && break; sleep 0.05; done
got=$(api GET /api/v1/mounts/m2)
reg_check "m2 unmounted outside the server shows as failed: $(jq -c '{state, error}' <<< "${got#* }")" \
	'[ "$(jq -r .state <<< "${got#* }")" = failed ]'
"$LAZYIMG" mount --server "$SOCK" "$REF" m2 > /dev/null || reg_bad "mount --server m2 again"
reg_check "Mount of m2 again: mounted and serving" \
	'reg_is_mounted "$R/mnt/m2" && cmp "$R/mnt/m2/etc/hello.txt" "$W/rootfs/etc/hello.txt"'

# ---------------------------------------------------------------- B. API faults
expect_err "bad JSON" 400 POST /api/v1/mounts '{"id": "x", "ref": '
expect_err "trailing garbage after the JSON" 400 POST /api/v1/mounts '{"id":"x","ref":"a/b:c"} xx'
expect_err "not an object" 400 POST /api/v1/mounts '["x"]'
expect_err "empty body" 400 POST /api/v1/mounts ''
expect_err "missing id" 400 POST /api/v1/mounts "{\"ref\":\"$REF\"}"
expect_err "invalid id" 400 POST /api/v1/mounts "{\"id\":\"../etc\",\"ref\":\"$REF\"}"
expect_err "labels without an image reference" 400 POST /api/v1/mounts '{"id":"x","labels":{"a":"b"}}'
expect_err "labels not strings" 400 POST /api/v1/mounts '{"id":"x","labels":{"containerd.io/snapshot/cri.image-ref":5}}'
expect_err "not a reference" 400 POST /api/v1/mounts '{"id":"x","ref":"::"}'
expect_err "plain OCI image (not nydus)" 422 POST /api/v1/mounts "{\"id\":\"oci\",\"ref\":\"$REGISTRY_HOST/small:v1\"}"
expect_err "unknown id (GET)" 404 GET /api/v1/mounts/nosuch
expect_err "unknown id (DELETE)" 404 DELETE /api/v1/mounts/nosuch
expect_err "unknown id (stats)" 404 GET /api/v1/mounts/nosuch/stats
expect_err "unknown route" 404 GET /api/v2/whatever
expect_err "wrong method" 405 PUT /api/v1/mounts/m1
expect_err "usage without a digest" 400 GET /api/v1/usage
expect_err "usage of a bad digest" 400 GET '/api/v1/usage?digest=sha256:abc'
expect_err "remove a bad digest" 400 DELETE /api/v1/cache/md5:abc
expect_err "remove a blob in use" 409 DELETE "/api/v1/cache/sha256:$hex"
big=$(head -c 70000 /dev/zero | tr '\0' 'a')
expect_err "oversized body" 413 POST /api/v1/mounts "{\"id\":\"x\",\"ref\":\"$big\"}"
reg_check "the blob in use is still there" '[ -f "$R/cache/blobs/$hex" ]'
# one id, concurrently: a mount made slow by the proxy (1.5 s per manifest/blob request)
fp_set "$PROXY_CTL" "scope all" "delay 1.5"
api POST /api/v1/mounts "{\"id\":\"c1\",\"ref\":\"$PREF\"}" > "$W/c1.first" &
RPIDS+=($!)
sleep 0.5
expect_err "second mount of c1 while its first mount runs" 409 POST /api/v1/mounts "{\"id\":\"c1\",\"ref\":\"$PREF\"}"
expect_err "umount of c1 while its mount runs" 409 DELETE /api/v1/mounts/c1
got=$(api GET /api/v1/mounts/c1)
reg_check "c1 is listed as mounting meanwhile" '[ "$(jq -r .state <<< "${got#* }")" = mounting ]'
reg_check "other requests are served meanwhile (list, metrics)" 'serve_up && metrics_has "^lazyimg_mounts 3"'
wait "${RPIDS[-1]}" || true
reg_check "the first mount of c1 finished: $(head -c 100 "$W/c1.first")" '[ "$(cut -d" " -f1 "$W/c1.first")" = 200 ]'
got=$(api POST /api/v1/mounts "{\"id\":\"sec\",\"labels\":{\"containerd.io/snapshot/cri.image-ref\":\"$REF\",\"containerd.io/snapshot/pullsecret\":\"hunter2\"}}")
reg_check "a mount with a credential label works, and the credential is not in its state file" \
	'[ "${got%% *}" = 200 ] && [ -f "$R/state/sec.json" ] && ! grep -q hunter2 "$R/state/sec.json" && grep -q cri.image-ref "$R/state/sec.json"'
"$LAZYIMG" umount --server "$SOCK" sec || reg_bad "umount sec"
fp_set "$PROXY_CTL" pass
reg_check "c1 serves the source bytes" 'cmp "$R/mnt/c1/etc/hello.txt" "$W/rootfs/etc/hello.txt"'
reg_check "the server is still up after the faults" serve_up

# ---------------------------------------------------------------- C. kill -9 with open files
cat > "$W/reader.py" <<'PY'
import hashlib, os, sys, time
path, ready, go, out = sys.argv[1:5]
h = hashlib.sha256()
with open(path, 'rb', buffering=0) as f:
    h.update(f.read(65536))
    open(ready, 'w').write('1')
    while not os.path.exists(go):
        time.sleep(0.02)
    while True:
        b = f.read(65536)
        if not b:
            break
        h.update(b)
        time.sleep(0.001)
open(out, 'w').write(h.hexdigest())
PY
# reader 1: between two reads at the kill, on m1 (direct registry)
python3 "$W/reader.py" "$R/mnt/m1/blobs/text-16m.txt" "$W/r1.ready" "$W/r1.go" "$W/r1.sha" &
R1=$!; RPIDS+=("$R1")
# reader 2: its next read is served by a slow registry (proxy, 3 s per range) at the kill
# (random bytes: the first read cannot bring the whole compressed file in one range)
python3 "$W/reader.py" "$R/mnt/c1/blobs/random-4m.bin" "$W/r2.ready" "$W/r2.go" "$W/r2.sha" &
R2P=$!; RPIDS+=("$R2P")
for _ in $(seq 200); do [ -e "$W/r1.ready" ] && [ -e "$W/r2.ready" ] && break; sleep 0.05; done
fp_set "$PROXY_CTL" "delay 3"
touch "$W/r2.go"
for _ in $(seq 60); do
	metrics_has '^lazyimg_inflight_requests{id="c1"} [1-9]' && break
	sleep 0.05
done
reg_check "reader 2's read is in flight in the server" \
	'metrics_has "^lazyimg_inflight_requests{id=\"c1\"} [1-9]"'
for _ in $(seq 40); do metrics_has '^lazyimg_hung_requests{id="c1"} [1-9]' && break; sleep 0.05; done
reg_check "after 1 s it counts as hung (--hung-ms 1000), the other mounts have none" \
	'metrics_has "^lazyimg_hung_requests{id=\"c1\"} [1-9]" && grep -q "^lazyimg_hung_requests{id=\"m1\"} 0" "$W/metrics.now"'
OLD=$SERVE_PID
kill -9 "$OLD"
wait "$OLD" 2>/dev/null || true
# while the server is down the proxy starts failing: c1's restore will fail at first
fp_set "$PROXY_CTL" "scope all" "delay 3" "always 500"
touch "$W/r1.go"
sleep 1
reg_check "server $OLD is dead, its mounts are still in /proc/mounts, the holder lives" \
	'! kill -0 "$OLD" 2>/dev/null && reg_is_mounted "$R/mnt/m1" && reg_is_mounted "$R/mnt/c1" && kill -0 "$(holder_pid "$R")"'
reg_check "both readers wait (alive, no result yet)" 'kill -0 "$R1" && kill -0 "$R2P" && [ ! -e "$W/r1.sha" ] && [ ! -e "$W/r2.sha" ]'
t0=$(reg_now)
start_serve "$R" "$W/serve.log" --retries 1 || reg_die "the second lazyimg serve did not come up"
RSERVE=$SERVE_PID
wait "$R1" || reg_bad "reader 1 failed"
t1=$(reg_secs "$t0" "$(reg_now)")
reg_check "reader 1 finished $t1 s after the new server started, while c1's restore still waits on its slow, failing registry (restores run in parallel)" \
	'python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < 2.5 else 1)" "$t1"'
# (failed, then mounting again in the background now and then: catch it failed)
for _ in $(seq 200); do
	got=$(api GET /api/v1/mounts/c1)
	[ "$(jq -r .state <<< "${got#* }")" = failed ] && break
	sleep 0.1
done
reg_check "reader 1 (between reads at the kill) got the right sha256" \
	'[ "$(cat "$W/r1.sha" 2>/dev/null)" = "$(sha "$W/rootfs/blobs/text-16m.txt")" ]'
reg_check "c1 could not be restored (registry failing): $(head -c 160 <<< "${got#* }")" \
	'[ "$(jq -r .state <<< "${got#* }")" = failed ] && jq -e ".error | length > 0" <<< "${got#* }" > /dev/null'
reg_check "c1's kernel mount is kept and reader 2 still waits" 'reg_is_mounted "$R/mnt/c1" && kill -0 "$R2P" && [ ! -e "$W/r2.sha" ]'
# (each try costs a few seconds against the slow, failing proxy; allow for a loaded machine)
t0=$(reg_now)
for _ in $(seq 600); do grep -q "snapshot c1: mounting again failed" "$W/serve.log" && break; sleep 0.1; done
echo "first background retry of c1 failed after $(reg_secs "$t0" "$(reg_now)") s of waiting"
reg_check "the server retries c1 by itself, with backoff: $(grep -m 1 "snapshot c1: mounting again failed" "$W/serve.log" | cut -c 1-160)" \
	'grep -q "snapshot c1: mounting again failed" "$W/serve.log" && [ "$(jq -r .state <<< "$(api GET /api/v1/mounts/c1 | cut -d" " -f2-)")" != ready ]'
fp_set "$PROXY_CTL" pass
t0=$(reg_now)
for _ in $(seq 600); do
	got=$(api GET /api/v1/mounts/c1)
	jq -e ".ready" <<< "${got#* }" > /dev/null 2>&1 && break
	sleep 0.1
done
reg_check "registry back: c1 mounted again by the retry thread, nobody asked, $(reg_secs "$t0" "$(reg_now)") s later, its held fd adopted" \
	'jq -e ".ready and .adopted" <<< "${got#* }" > /dev/null'
got=$(api POST /api/v1/mounts "{\"id\":\"c1\",\"ref\":\"$PREF\"}")
reg_check "Mount of c1 then is a no-op (200, ready, adopted)" \
	'[ "${got%% *}" = 200 ] && jq -e ".ready and .adopted" <<< "${got#* }" > /dev/null'
wait "$R2P" || reg_bad "reader 2 failed"
reg_check "reader 2 (read in flight at the kill) got the right sha256" \
	'[ "$(cat "$W/r2.sha" 2>/dev/null)" = "$(sha "$W/rootfs/blobs/random-4m.bin")" ]'
wait_restored || reg_bad "restores still running after 15 s"
got=$(api GET /api/v1/mounts)
reg_check "every mount is back, ready and adopted: $(jq -c '[.mounts[] | [.id, .state, .adopted]]' <<< "${got#* }")" \
	'[ "$(jq -r "[.mounts[] | select(.ready and .adopted) | .id] | sort | join(\" \")" <<< "${got#* }")" = "c1 m1 m2" ]'
reg_check "a new file reads right through an adopted mount" 'cmp "$R/mnt/m2/blobs/random-1m.bin" "$W/rootfs/blobs/random-1m.bin" && cmp "$R/mnt/m2/etc/hello.txt" "$W/rootfs/etc/hello.txt"'
reg_check "no stale or doubled kernel mounts" \
	'[ "$(awk -v r="$R/mnt/" "index(\$2, r) == 1" /proc/mounts | wc -l)" = 3 ]'
"$LAZYIMG" umount --server "$SOCK" m2 || reg_bad "umount --server m2"
reg_check "umount --server m2: gone from the list and /proc/mounts" \
	'! reg_is_mounted "$R/mnt/m2" && ! "$LAZYIMG" list --server "$SOCK" | grep -q "^m2 "'
expect_err "usage still refuses a bad digest after the restart" 400 GET '/api/v1/usage?digest=nope'

# server and holder both gone (a reboot, an OOM kill of both): the kernel mounts die with the
# last fd; the next server detaches them and mounts afresh from the persisted state
HP=$(holder_pid "$R")
kill -9 "$RSERVE" "$HP"; wait "$RSERVE" 2>/dev/null || true
for _ in $(seq 50); do kill -0 "$HP" 2>/dev/null || break; sleep 0.05; done
reg_check "with server and holder dead, m1 answers ENOTCONN" '! stat "$R/mnt/m1/etc" 2> "$W/stat.err" && grep -q "not connected" "$W/stat.err"'
start_serve "$R" "$W/serve.log" || reg_die "the third lazyimg serve did not come up"
RSERVE=$SERVE_PID
wait_restored || reg_bad "restores still running after 15 s"
got=$(api GET /api/v1/mounts)
reg_check "m1 and c1 are mounted afresh (not adopted): $(jq -c '[.mounts[] | [.id, .state, .adopted]]' <<< "${got#* }")" \
	'[ "$(jq -r "[.mounts[] | select(.ready and (.adopted | not)) | .id] | sort | join(\" \")" <<< "${got#* }")" = "c1 m1" ]'
reg_check "... and serve the source bytes, one kernel mount each" \
	'cmp "$R/mnt/m1/blobs/random-4m.bin" "$W/rootfs/blobs/random-4m.bin" && cmp "$R/mnt/c1/etc/hello.txt" "$W/rootfs/etc/hello.txt" &&
	 [ "$(awk -v r="$R/mnt/" "index(\$2, r) == 1" /proc/mounts | wc -l)" = 2 ]'

# ---------------------------------------------------------------- D. full disk under the cache
mkdir -p "$R2/cache"
mount -t tmpfs -o size=3m tmpfs "$R2/cache"
SOCK=$R2/lazyimg.sock
start_serve "$R2" "$W/serve2.log" || reg_die "lazyimg serve on $R2 did not come up"
# fill the tmpfs completely
dd if=/dev/zero of="$R2/cache/filler" bs=64k 2> /dev/null || true
expect_err "mount with a full cache disk" 507 POST /api/v1/mounts "{\"id\":\"f1\",\"ref\":\"$REF\"}"
reg_check "the server is up after the failed mount" serve_up
reg_check "the failed mount left nothing behind (not listed, no state, not mounted)" \
	'[ "$(api GET /api/v1/mounts/f1 | cut -d" " -f1)" = 404 ] && [ ! -e "$R2/state/f1.json" ] && ! reg_is_mounted "$R2/mnt/f1"'
rm -f "$R2/cache/filler"
got=$(api POST /api/v1/mounts "{\"id\":\"f1\",\"ref\":\"$REF\"}")
reg_check "with space freed, the same mount succeeds" '[ "${got%% *}" = 200 ]'
dd if=/dev/zero of="$R2/cache/filler" bs=64k 2> /dev/null || true
reg_check "the cache disk is full again ($(df -B1 --output=avail "$R2/cache" | tail -n 1 | tr -d ' ') bytes free)" \
	'[ "$(df -B1 --output=avail "$R2/cache" | tail -n 1)" -lt 65536 ]'
reg_check "a 16 MiB file read with the cache disk full: right bytes" \
	'cmp "$R2/mnt/f1/blobs/text-16m.txt" "$W/rootfs/blobs/text-16m.txt"'
reg_check "... and the 4 MiB one" 'cmp "$R2/mnt/f1/blobs/random-4m.bin" "$W/rootfs/blobs/random-4m.bin"'
grep -q "could not be stored in the cache" "$W/serve2.log" &&
	reg_ok "the server logged that chunks could not be cached: $(grep -m1 'could not be stored' "$W/serve2.log" | head -c 120)" ||
	reg_bad "no log line about chunks that could not be cached"
reg_check "the server is up with the disk full" serve_up
reg_check "and still serves stats" '"$LAZYIMG" stats --server "$SOCK" f1 | jq -e ".read_bytes >= 16777216" > /dev/null'
rm -f "$R2/cache/filler"

# ---------------------------------------------------------------- shutdown
# SIGTERM with --cleanup-on-exit unmounts everything; the holder then leaves by itself
kill "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true
reg_check "SIGTERM without --cleanup-on-exit leaves f1 mounted for the next server" 'reg_is_mounted "$R2/mnt/f1"'
start_serve "$R2" "$W/serve2.log" --cleanup-on-exit || reg_die "restart on $R2"
reg_check "f1 adopted again after a clean restart" 'cmp "$R2/mnt/f1/etc/hello.txt" "$W/rootfs/etc/hello.txt"'
kill "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true
reg_check "--cleanup-on-exit: f1 unmounted and forgotten" '! reg_is_mounted "$R2/mnt/f1" && [ ! -e "$R2/state/f1.json" ]'
h2=$(holder_pid "$R2")
for _ in $(seq 80); do { [ -n "$h2" ] && kill -0 "$h2" 2>/dev/null; } || break; sleep 0.1; done
reg_check "the fd holder of $R2 exited once it held nothing" '[ -z "$h2" ] || ! kill -0 "$h2" 2>/dev/null'
umount "$R2/cache"
SOCK=$R/lazyimg.sock
for id in m1 c1; do "$LAZYIMG" umount --server "$SOCK" "$id" || reg_bad "umount --server $id"; done
kill "$RSERVE"; wait "$RSERVE" 2>/dev/null || true
reg_check "nothing of ours is mounted any more" '! awk -v w="$W/" "index(\$2, w) == 1 { f = 1 } END { exit !f }" /proc/mounts'
for f in "$W/serve.log" "$W/serve2.log"; do
	if grep -qE 'ERROR: (Address|Leak|Memory)Sanitizer|runtime error:' "$f"; then
		reg_bad "sanitizer report in $f: $(grep -m1 -E 'Sanitizer|runtime error:' "$f" | head -c 200)"
	fi
done
reg_finish
