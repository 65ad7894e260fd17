#!/usr/bin/env bash
# make bench, part 2: lazy pull measured by `lazyimg bench` on the debootstrap
# Debian image (../shared/peers/build-test-images.sh), converted to nydus by
# `lazyimg convert` and to eStargz by the peers' estargz-convert.sh, served
# by a real docker-registry on 127.0.0.1; beside a full pull (skopeo copy +
# untar) and stargz-store; on plain loopback and again with netem delay.
# Results (tables, JSON, CSV, SVG plots) go to $BUILD/bench-out/.
#
#   BUILD=build tests/bench/lazy.sh
#   LAZY_RUNS=3 LAZY_NETEM="delay 20ms rate 100mbit" (defaults)
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
TOP=$PWD
L=$TOP/$BUILD/bin/lazyimg
PEERS=${LAZYIMG_PEERS:-$TOP/../shared/peers}
CACHE=$TOP/$BUILD/bench-cache
OUT=$TOP/$BUILD/bench-out
RUNS=${LAZY_RUNS:-3}
NETEM=${LAZY_NETEM:-delay 20ms rate 100mbit}
mkdir -p "$CACHE" "$OUT"
W=$(mktemp -d /tmp/lazyimg-lazybench.XXXXXX)
REGDIR=$W/reg
cleanup() {
	bash "$PEERS/registry-up.sh" --stop --dir "$REGDIR" >/dev/null 2>&1 || true
	rm -rf "$W"
}
trap cleanup EXIT

say() { echo "# $*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# registry and images (the Debian rootfs and layouts are cached between runs in $CACHE/peers)
port=$(free_port)
bash "$PEERS/registry-up.sh" --dir "$REGDIR" --port "$port" > "$W/registry.out" 2>&1 ||
	{ cat "$W/registry.out" >&2; exit 1; }
# shellcheck disable=SC1091
. "$REGDIR/registry.env"
H=$REGISTRY_HOST
say "registry $H; building and pushing debian:bookworm (debootstrap, cached in $CACHE/peers)"
bash "$PEERS/build-test-images.sh" --work "$CACHE/peers" --registry "$H" > "$W/images.log" 2>&1 ||
	{ tail -20 "$W/images.log" >&2; exit 1; }
t0=$(date +%s.%N)
"$L" convert -q --insecure "$H/debian:bookworm" "$H/debian:bookworm-nydus"
say "lazyimg convert debian:bookworm -> nydus (registry to registry): $(echo "$(date +%s.%N) - $t0" | bc | xargs printf '%.1f') s"
ESGZ=no
if bash "$PEERS/estargz-convert.sh" "$H/debian:bookworm" "$H/debian:bookworm-esgz" --via go > "$W/esgz.log" 2>&1; then
	ESGZ=yes
	say "eStargz: $(tail -n 1 "$W/esgz.log")"
else
	say "eStargz conversion failed (tail of its log below): no eStargz rows"
	tail -5 "$W/esgz.log" >&2
fi

REFS=("$H/debian:bookworm-nydus")
BASE=(--baseline full-pull --full-pull-ref "$H/debian:bookworm")
if [ $ESGZ = yes ]; then
	# lazyimg mounts eStargz once the eStargz reader is in: probe it rather than assume
	mkdir -p "$W/probe"
	if timeout 60 "$L" mount --insecure --cache-dir "$W/probe-cache" "$H/debian:bookworm-esgz" "$W/probe" 2> "$W/probe.err" &&
		cat "$W/probe/etc/debian_version" > /dev/null; then
		REFS+=("$H/debian:bookworm-esgz")
		say "lazyimg mounts the eStargz image: measured too"
	else
		say "lazyimg cannot mount the eStargz image yet ($(head -c 200 "$W/probe.err")): nydus only"
	fi
	mountpoint -q "$W/probe" && "$L" umount "$W/probe"
	STORE=$(bash "$PEERS/stargz-store-up.sh" --build-only 2> "$W/store-build.log" | sed -n 's/^STARGZ_STORE_BIN=//p')
	if [ -n "$STORE" ] && [ -x "$STORE" ]; then
		BASE+=(--baseline stargz-store --stargz-ref "$H/debian:bookworm-esgz" --stargz-store "$STORE")
	else
		say "stargz-store could not be built: no stargz-store rows"
	fi
fi

# HelloBench-style start-up: the package database, apt and perl, until READY is printed
# (no /dev/null in the command: the image has an empty /dev and the mount is read-only)
RUN='dpkg -l | tail -n 1 && apt-get --version | head -n 1 && perl -v | grep -c . && echo READY'
COMMON=(--insecure --runs "$RUNS" --ttfb-file etc/debian_version --registry-log "$REGISTRY_LOG" "${BASE[@]}")

echo
echo "## lazy pull, debian:bookworm, loopback (no shaping): start-up workload"
"$L" bench "${COMMON[@]}" --run "$RUN" --wait-line READY --record "$OUT/recorded-lo.list" \
	--json "$OUT/lazy-lo.json" --csv "$OUT/lazy-lo.csv" --plot "$OUT/lazy-lo.svg" "${REFS[@]}" | tee "$OUT/lazy-lo.txt"

echo
echo "## lazy pull, debian:bookworm, netem '$NETEM': start-up workload"
"$L" bench "${COMMON[@]}" --run "$RUN" --wait-line READY --record "$OUT/recorded-netem.list" --netem "$NETEM" \
	--json "$OUT/lazy-netem.json" --csv "$OUT/lazy-netem.csv" --plot "$OUT/lazy-netem.svg" "${REFS[@]}" |
	tee "$OUT/lazy-netem.txt"

echo
echo "## lazy pull, debian:bookworm, loopback: read the whole tree (the worst case for lazy pull)"
"$L" bench --insecure --runs 1 --no-warm --read-all --ttfb-file etc/debian_version --registry-log "$REGISTRY_LOG" \
	"${BASE[@]}" --json "$OUT/lazy-readall.json" --plot "$OUT/lazy-readall.svg" "${REFS[@]}" | tee "$OUT/lazy-readall.txt"

# warm reads: the cache is full, the page cache dropped; a whole-tree read and
# random 4 KiB reads, each format beside stargz-store (its warm run, same rules)
echo
echo "## debian:bookworm, loopback: whole tree read cold and then warm (cache full, page cache dropped)"
"$L" bench --insecure --runs 1 --read-all --registry-log "$REGISTRY_LOG" "${BASE[@]}" \
	--json "$OUT/lazy-warm.json" "${REFS[@]}" | tee "$OUT/lazy-warm.txt"
echo
echo "## debian:bookworm, loopback: 20000 random 4 KiB reads over the tree's files"
"$L" bench --insecure --runs 1 --rand4k 20000 --registry-log "$REGISTRY_LOG" "${BASE[@]}" \
	--json "$OUT/lazy-rand.json" "${REFS[@]}" | tee "$OUT/lazy-rand.txt"

# a 100k-entry eStargz TOC: time to ready (footer, TOC fetch and parse) and server RSS,
# then `find -ls` over the whole tree, lazyimg beside stargz-store
T100=$TOP/$BUILD/bench-cache/tree100k
if [ "$ESGZ" = yes ] && [ -d "$T100/dir000" ] && [ -n "${STORE:-}" ] && [ -x /bin/busybox ]; then
	echo
	echo "## 100k-entry eStargz image (tree100k without its big files), loopback: ready (TOC fetch + parse), RSS, ls -lR of the tree"
	# the tree has no programs: a static busybox as /bin/sh, ls and wc runs the workload
	# chrooted (`ls -lR` stats every entry, as find -ls does)
	mkdir -p "$W/t100/extra/bin"
	cp /bin/busybox "$W/t100/extra/bin/busybox"
	for a in sh ls wc; do ln -s busybox "$W/t100/extra/bin/$a"; done
	tar --sort=name --numeric-owner -cf "$W/t100/l1.tar" -C "$T100" --exclude=./big --exclude=./.done . \
		-C "$W/t100/extra" ./bin
	if bash "$TOP/tests/tools/oci_layers_push.sh" "$W/t100/oci" "$H/t100k:v1" "$W/t100/l1.tar" > /dev/null 2>&1 &&
		bash "$PEERS/estargz-convert.sh" "$H/t100k:v1" "$H/t100k:v1-esgz" --via go > "$W/t100/conv.log" 2>&1; then
		"$L" bench --insecure --runs 3 --no-warm --run 'ls -lR / | wc -l; echo FOUND' --wait-line FOUND \
			--registry-log "$REGISTRY_LOG" --baseline stargz-store --stargz-ref "$H/t100k:v1-esgz" \
			--stargz-store "$STORE" --json "$OUT/lazy-t100k.json" "$H/t100k:v1-esgz" | tee "$OUT/lazy-t100k.txt"
	else
		say "the 100k-entry eStargz image could not be built: $(tail -n 2 "$W/t100/conv.log" 2>/dev/null)"
	fi
fi

# the recorded list under delay: faster or not, say it as measured
echo
python3 - "$OUT/lazy-netem.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
modes = {m["mode"]: m for m in d["modes"]}
for fmt in ("", " nydus", " estargz"):
    cold, rec = modes.get(f"lazyimg{fmt} cold"), modes.get(f"lazyimg{fmt} +recorded")
    if not cold or not rec:
        continue
    a, b = cold["total_ms"]["median"], rec["total_ms"]["median"]
    wa, wb = cold["workload_ms"]["median"], rec["workload_ms"]["median"]
    verdict = f"faster: {a / b:.1f}x" if b < a else "NOT faster"
    print(f"# under '{d['netem_requested']}': with the recorded list{fmt} the cold start-up (mount + workload) took "
          f"{b:.0f} ms vs {a:.0f} ms without ({verdict}); workload alone {wb:.0f} vs {wa:.0f} ms")
PY
echo "# outputs: $OUT (lazy-*.txt/json/csv/svg)"
