#!/usr/bin/env bash
# `lazyimg serve` with eStargz images (tests/../shared/peers/estargz-convert.sh --via go):
#  A. Mount by reference only: the layers merged, equal to the source layers unpacked.
#  B. Mount with the labels a snapshotter passes for one layer (cri.image-ref,
#     cri.layer-digest, stargz/toc.digest), one snapshot per layer: each shows exactly
#     its tar's entries, whiteouts in overlayfs form (char 0:0, trusted.overlay.opaque).
#     CacheUsage of a layer digest equals du -B1 of its cache files (blob, state, TOC).
#  C. kill -9 of the server while a reader holds a file of the merged mount open;
#     the next server adopts every mount (layer choice and pinned manifest restored
#     from the state) and the reader gets the right sha256.
set -euo pipefail
. "$(dirname "$0")/reglib.sh"
W=$(mktemp -d /tmp/lazyimg-t51.XXXXXX)
R=$W/root
SOCK=$R/lazyimg.sock
REG_DIRS=()
SERVE_PIDS=()
RPIDS=()
export LC_ALL=C

cleanup() {
	local p m
	trap - EXIT
	for p in "${RPIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
	for p in "${SERVE_PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
	for m in $(awk -v w="$W/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r); do
		umount -l "$m" 2>/dev/null || true
	done
	p=$(cat "$R/fdholder.sock.pid" 2>/dev/null || true)
	[ -n "$p" ] && kill "$p" 2>/dev/null || true
	reg_cleanup
	awk -v w="$W/" 'index($2, w) == 1 { f = 1 } END { exit !f }' /proc/mounts || rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

start_serve() {
	"$LAZYIMG" serve --root "$R" --insecure --log-level info >> "$W/serve.log" 2>&1 &
	SERVE_PID=$!
	SERVE_PIDS+=("$SERVE_PID")
	for _ in $(seq 200); do
		curl -s --unix-socket "$SOCK" http://x/api/v1/mounts > /dev/null 2>&1 && return 0
		kill -0 "$SERVE_PID" 2>/dev/null || break
		sleep 0.05
	done
	tail -20 "$W/serve.log"
	return 1
}
post() { curl -s --max-time 60 --unix-socket "$SOCK" -X POST -w '\n%{http_code}' --data-binary "$1" http://x/api/v1/mounts; }

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
timeout -k 5 300 bash "$PEERS/estargz-convert.sh" --via go "$REGISTRY_HOST/small:v1" "$REGISTRY_HOST/small:v1-esgz" \
	> "$W/esgz.log" 2>&1 || { tail -20 "$W/esgz.log"; reg_die "eStargz conversion failed"; }
unpack_small "$W/img" "$W/rootfs"
REF=$REGISTRY_HOST/small:v1-esgz
curl -s -H "Accept: application/vnd.oci.image.manifest.v1+json" "http://$REGISTRY_HOST/v2/small/manifests/v1-esgz" \
	> "$W/manifest.json"
mapfile -t LAYERS < <(jq -r '.layers[].digest' "$W/manifest.json")
mapfile -t TOCS < <(jq -r '.layers[].annotations["containerd.io/snapshot/stargz/toc.digest"]' "$W/manifest.json")
[ "${#LAYERS[@]}" = 3 ] || reg_die "expected 3 eStargz layers, manifest: $(head -c 300 "$W/manifest.json")"
echo "registry $REGISTRY_HOST, eStargz image with layers ${LAYERS[*]:0:3}"

start_serve || reg_die "lazyimg serve did not come up"

# ---------------------------------------------------------------- A. merged
mp=$("$LAZYIMG" mount --server "$SOCK" "$REF" merged) || reg_die "mount of the eStargz image failed"
reg_check "merged eStargz mount equals the source layers unpacked" 'tree_same "$W/rootfs" "$mp"'

# ---------------------------------------------------------------- B. one snapshot per layer
for i in 0 1 2; do
	body=$(jq -nc --arg id "layer$i" --arg ref "$REF" --arg d "${LAYERS[$i]}" --arg t "${TOCS[$i]}" \
		'{id: $id, labels: {"containerd.io/snapshot/cri.image-ref": $ref,
		  "containerd.io/snapshot/cri.layer-digest": $d, "containerd.io/snapshot/stargz/toc.digest": $t}}')
	out=$(post "$body")
	[ "$(tail -n 1 <<< "$out")" = 200 ] || { reg_bad "mount of layer $i: $(head -c 300 <<< "$out")"; continue; }
	m=$R/mnt/layer$i
	# the tar's entries, whiteout files turned into the names they hide, opaque markers dropped
	tar tf "$W/img/small/l$((i + 1)).tar" | sed -E 's|/$||; s|^\./||' | grep -v '\.wh\.\.wh\.\.opq$' |
		sed -E 's|(^\|/)\.wh\.([^/]*)$|\1\2|' | grep -v '^\.\?$' | sort -u > "$W/want$i"
	(cd "$m" && find . -mindepth 1 | sed 's|^\./||' | sort) > "$W/got$i"
	reg_check "layer $i alone: the entries of l$((i + 1)).tar ($(wc -l < "$W/want$i") paths)" 'cmp -s "$W/got$i" "$W/want$i" || { diff "$W/got$i" "$W/want$i" | head; false; }'
	while IFS= read -r wh; do
		name=$(sed -E 's|(^\|/)\.wh\.([^/]*)$|\1\2|' <<< "$wh")
		reg_check "layer $i: whiteout $name is a 0:0 character device" \
			'[ "$(stat -c "%F %t:%T" "$m/$name")" = "character special file 0:0" ]'
	done < <(tar tf "$W/img/small/l$((i + 1)).tar" | grep -E '(^|/)\.wh\.[^/]+$' | grep -v '\.wh\.\.wh\.\.opq$' || true)
	while IFS= read -r opq; do
		d=$(dirname "$opq")
		reg_check "layer $i: $d is opaque (trusted.overlay.opaque=y)" \
			'[ "$(getfattr --only-values -n trusted.overlay.opaque "$m/$d" 2>/dev/null)" = y ]'
	done < <(tar tf "$W/img/small/l$((i + 1)).tar" | grep -E '\.wh\.\.wh\.\.opq$' || true)
done
# CacheUsage of the big layer, after reading a file of it: its blob, state and TOC
cat "$R/mnt/merged/blobs/random-1m.bin" > /dev/null
big=$(jq -r '.layers | max_by(.size) | .digest' "$W/manifest.json")
u=$("$LAZYIMG" usage --server "$SOCK" "$big")
du=$(du -B1 -c "$R"/cache/*/"${big#sha256:}"* | tail -n 1 | cut -f1)
reg_check "usage $big = $u bytes = du -B1 of its cache files ($(ls "$R"/cache/*/"${big#sha256:}"* | sed "s|$R/cache/||" | tr '\n' ' '): $du)" \
	'[ "$u" = "$du" ] && [ "$u" -ge 1048576 ]'
out=$(curl -s --unix-socket "$SOCK" -X DELETE -w '\n%{http_code}' "http://x/api/v1/cache/$big")
reg_check "its cache is not removed while mounted: $(head -n 1 <<< "$out" | head -c 100)" '[ "$(tail -n 1 <<< "$out")" = 409 ]'

# ---------------------------------------------------------------- C. kill -9 and restore
# O_DIRECT: every read reaches the server (the tree comparison above filled the page cache)
cat > "$W/reader.py" <<'PY'
import hashlib, mmap, os, sys, time
path, ready, go, out = sys.argv[1:5]
h = hashlib.sha256()
fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
buf = mmap.mmap(-1, 65536)
n = os.readv(fd, [buf]); h.update(buf[:n])
open(ready, 'w').write('1')
while not os.path.exists(go):
    time.sleep(0.02)
while True:
    n = os.readv(fd, [buf])
    if n <= 0:
        break
    h.update(buf[:n])
os.close(fd)
open(out, 'w').write(h.hexdigest())
PY
python3 "$W/reader.py" "$R/mnt/merged/blobs/random-4m.bin" "$W/ready" "$W/go" "$W/sha" &
RP=$!; RPIDS+=("$RP")
for _ in $(seq 200); do [ -e "$W/ready" ] && break; sleep 0.05; done
kill -9 "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true
touch "$W/go"
sleep 0.5
reg_check "the reader waits while no server runs" 'kill -0 "$RP" && [ ! -e "$W/sha" ]'
start_serve || reg_die "the second lazyimg serve did not come up"
wait "$RP" || reg_bad "the reader failed"
reg_check "the reader got the right sha256" '[ "$(cat "$W/sha" 2>/dev/null)" = "$(sha256sum "$W/rootfs/blobs/random-4m.bin" | cut -c1-64)" ]'
wait_restored || reg_bad "restores still running after 15 s"
got=$(curl -s --unix-socket "$SOCK" http://x/api/v1/mounts)
reg_check "every mount is back, ready and adopted: $(jq -c '[.mounts[] | [.id, .state, .adopted]]' <<< "$got")" \
	'[ "$(jq -r "[.mounts[] | select(.ready and .adopted) | .id] | sort | join(\" \")" <<< "$got")" = "layer0 layer1 layer2 merged" ]'
reg_check "layer 2 still shows only its own entries after the restore" \
	'(cd "$R/mnt/layer2" && find . -mindepth 1 | sed "s|^\./||" | sort) | cmp -s - "$W/want2"'
reg_check "the merged mount still equals the source" 'tree_same "$W/rootfs" "$R/mnt/merged"'
for id in merged layer0 layer1 layer2; do "$LAZYIMG" umount --server "$SOCK" "$id" || reg_bad "umount $id"; done
out=$(curl -s --unix-socket "$SOCK" -X DELETE -w '\n%{http_code}' "http://x/api/v1/cache/$big")
reg_check "after umount its cache is removed" '[ "$(tail -n 1 <<< "$out")" = 200 ] && [ "$("$LAZYIMG" usage --server "$SOCK" "$big")" = 0 ]'
kill "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true
reg_check "nothing of ours is mounted any more" '! awk -v w="$W/" "index(\$2, w) == 1 { f = 1 } END { exit !f }" /proc/mounts'
if grep -qE 'ERROR: (Address|Leak|Memory)Sanitizer|runtime error:' "$W/serve.log"; then
	reg_bad "sanitizer report in the server log: $(grep -m1 -E 'Sanitizer|runtime error:' "$W/serve.log" | head -c 200)"
fi
reg_finish
