#!/usr/bin/env bash
# A lazy mount's registry round trips do not hold the snapshotter up: while a
# remote Prepare of a nydus meta layer waits on a registry that answers every
# request 2 s late (tests/tools/faultproxy.py), a Prepare of a plain snapshot
# and a Stat complete; the remote Prepare then ends as containerd expects
# (ALREADY_EXISTS: the layer was committed as a remote snapshot), and a second
# remote Prepare of the same layer finds it committed at once.
set -euo pipefail
. "$(dirname "$0")/reglib.sh"
POKE=$TOP/$BUILD/tests/grpcpoke
M=/containerd.services.snapshots.v1.Snapshots
W=$(mktemp -d /tmp/lazyimg-t72.XXXXXX)
SOCK=$W/s.sock
REG_DIRS=()
SPID=
cleanup() {
	[ -n "$SPID" ] && kill "$SPID" 2>/dev/null && wait "$SPID" 2>/dev/null
	reg_cleanup
	awk -v w="$W/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r | xargs -r -n 1 umount -l 2>/dev/null || true
	rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

start_registry "$W/reg"
push_small_image "$W/img"
small_nydus v1-nydus
start_faultproxy "$W/fp" "$REGISTRY_HOST"
fp_set "$PROXY_CTL" "delay 2" "scope all"

"$LAZYIMG" snapshotter --root "$W/root" --address "$SOCK" --insecure --log-level info > "$W/snap.log" 2>&1 &
SPID=$!
for _ in $(seq 100); do
	[ -S "$SOCK" ] && "$POKE" "$SOCK" $M/Stat "" > /dev/null 2>&1 && break
	sleep 0.1
done
[ -S "$SOCK" ] || reg_die "the snapshotter did not start: $(tail -5 "$W/snap.log")"

# prepare_req KEY [LABEL=VALUE...]: PrepareSnapshotRequest (key = 2, labels = map 4) in hex
prepare_req() {
	python3 - "$@" <<'PY'
import sys
def ld(field, b):
    n, v = len(b), bytearray()
    while True:
        v.append((n & 0x7f) | (0x80 if n > 0x7f else 0)); n >>= 7
        if not n: break
    return bytes([field << 3 | 2]) + bytes(v) + b
out = ld(2, sys.argv[1].encode())
for kv in sys.argv[2:]:
    k, v = kv.split("=", 1)
    out += ld(4, ld(1, k.encode()) + ld(2, v.encode()))
print(out.hex())
PY
}
TARGET=sha256:$(printf 'layer t72' | sha256sum | cut -c1-64)
REMOTE=$(prepare_req "default/1/extract-t72" "containerd.io/snapshot.ref=$TARGET" \
	"containerd.io/snapshot/cri.image-ref=$PROXY_HOST/small:v1-nydus" "containerd.io/snapshot/nydus-bootstrap=true")

"$POKE" "$SOCK" $M/Prepare "$REMOTE" > "$W/remote.out" 2>&1 &
RPID=$!
sleep 0.5
kill -0 "$RPID" 2>/dev/null || reg_die "the remote Prepare ended within 0.5 s: the proxy did not delay it ($(cat "$W/remote.out"))"
t0=$(reg_now)
"$POKE" "$SOCK" $M/Prepare "$(prepare_req default/2/plain)" > "$W/plain.out" 2>&1 || true
"$POKE" "$SOCK" $M/Stat "$(python3 -c 'print((b"\x12" + bytes([len(b"default/2/plain")]) + b"default/2/plain").hex())')" > "$W/stat.out" 2>&1 || true
t1=$(reg_now)
if kill -0 "$RPID" 2>/dev/null; then
	reg_ok "a plain Prepare and a Stat finished in $(reg_secs "$t0" "$t1") s while the remote Prepare still waited on the registry"
else
	reg_bad "the remote Prepare was over before the plain Prepare and Stat finished: they waited for it"
fi
reg_check "the plain Prepare succeeded ($(head -n 1 "$W/plain.out"))" 'grep -q "^status 0 " "$W/plain.out"'
reg_check "the Stat found it ($(head -n 1 "$W/stat.out"))" 'grep -q "^status 0 " "$W/stat.out"'
wait "$RPID" || true
# ALREADY_EXISTS is 6: containerd then skips downloading the layer
reg_check "the remote Prepare answered ALREADY_EXISTS ($(head -n 1 "$W/remote.out"))" 'grep -q "^status 6 " "$W/remote.out"'
again=$(prepare_req "default/3/extract-t72" "containerd.io/snapshot.ref=$TARGET" \
	"containerd.io/snapshot/cri.image-ref=$PROXY_HOST/small:v1-nydus" "containerd.io/snapshot/nydus-bootstrap=true")
t0=$(reg_now)
"$POKE" "$SOCK" $M/Prepare "$again" > "$W/again.out" 2>&1 || true
reg_check "a second remote Prepare of the committed layer: ALREADY_EXISTS in $(reg_secs "$t0" "$(reg_now)") s, no registry request" \
	'grep -q "^status 6 " "$W/again.out"'
kill "$SPID"; rc=0; wait "$SPID" || rc=$?; SPID=
reg_check "the snapshotter exited cleanly on SIGTERM (exit $rc)" '[ "$rc" -eq 0 ]'
san=$(grep -lE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$W/snap.log" || true)
reg_check "no sanitizer report in the snapshotter's log" '[ -z "$san" ]'
reg_finish
