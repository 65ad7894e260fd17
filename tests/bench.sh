#!/usr/bin/env bash
# make bench: figures, not pass/fail. For each image: mount time, server RSS,
# `find -ls` time, sequential read MB/s and random 4 KiB read IOPS through a
# fresh lazyimg mount (page cache dropped first), beside the kernel's EROFS
# on the same tree where an --aligned image makes that possible; then
# conversion speed and size per compressor on a debootstrap-sized tree.
# Inputs are generated once into $BUILD/bench-cache. Then lazy pull from a
# loopback registry with `lazyimg bench` (tests/bench/lazy.sh).
# BENCH_PART=local or BENCH_PART=lazy runs only that part.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
if [ "${BENCH_PART:-}" = lazy ]; then
	BUILD=$BUILD exec bash tests/bench/lazy.sh
fi
TOP=$PWD
L=$TOP/$BUILD/bin/lazyimg
RR=$TOP/$BUILD/bench/randread
FIX=${LAZYIMG_FIXTURES:-$TOP/../shared/fixtures}/rafs
CACHE=$TOP/$BUILD/bench-cache
mkdir -p "$CACHE"
W=$(mktemp -d /tmp/lazyimg-bench.XXXXXX)
MNT=$W/mnt; mkdir -p "$MNT"
LOOPS=()
cleanup() {
	mountpoint -q "$MNT" && { "$L" umount "$MNT" 2>/dev/null || umount -l "$MNT"; }
	for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null || true; done
	rm -rf "$W"
}
trap cleanup EXIT

drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
now() { date +%s.%N; }
ms() { echo "($2 - $1) * 1000" | bc -l | xargs printf '%.1f'; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
server_pid() { local h; h=$(python3 -c 'import sys,os; print(os.path.realpath(sys.argv[1]))' "$MNT"); pgrep -f "lazyimg mount .* $h\$" | head -n 1 || true; }
largest_file() { find "$1" -type f -printf '%s %p\n' | sort -n | tail -n 1 | cut -d' ' -f2-; }

printf '%-28s %9s %9s %10s %10s %10s %9s %10s\n' image mount_ms rss_MiB find_ls_ms files seq_MBps rand_IOPS peak_MiB
row() { printf '%-28s %9s %9s %10s %10s %10s %9s %10s\n' "$@"; }

bench_lazyimg() { # label boot blobdir
	local label=$1 boot=$2 blobs=$3 t0 t1 pid rss fl t2 t3 files bytes t4 t5 big iops hwm
	drop
	t0=$(now); "$L" mount -b "$boot" -B "$blobs" "$MNT"; t1=$(now)
	pid=$(server_pid)
	rss=$(rss_kb "$pid")
	t2=$(now); files=$(find "$MNT" -ls | wc -l); t3=$(now)
	"$L" umount "$MNT"; drop
	"$L" mount -b "$boot" -B "$blobs" "$MNT"; pid=$(server_pid)
	bytes=$(du -sb --apparent-size "$MNT" | cut -f1)
	t4=$(now); find "$MNT" -type f -print0 | xargs -0 -r cat > /dev/null; t5=$(now)
	big=$(largest_file "$MNT")
	"$L" umount "$MNT"; drop
	"$L" mount -b "$boot" -B "$blobs" "$MNT"; pid=$(server_pid)
	iops=$("$RR" "$big" 4000 | awk '/iops/ {print $2}')
	hwm=$(hwm_kb "$pid")
	"$L" umount "$MNT"
	row "$label" "$(ms "$t0" "$t1")" "$(echo "$rss/1024" | bc -l | xargs printf '%.1f')" "$(ms "$t2" "$t3")" "$files" \
		"$(echo "$bytes/1048576/($t5-$t4)" | bc -l | xargs printf '%.1f')" "$iops" "$(echo "$hwm/1024" | bc -l | xargs printf '%.1f')"
}

bench_kernel() { # label boot blob
	local label=$1 meta blob t0 t1 t2 t3 files bytes t4 t5 big iops
	drop
	meta=$(losetup -f --show -r "$2"); LOOPS+=("$meta")
	blob=$(losetup -f --show -r "$3"); LOOPS+=("$blob")
	t0=$(now); mount -t erofs -o ro,device="$blob" "$meta" "$MNT"; t1=$(now)
	t2=$(now); files=$(find "$MNT" -ls | wc -l); t3=$(now)
	umount "$MNT"; drop; mount -t erofs -o ro,device="$blob" "$meta" "$MNT"
	bytes=$(du -sb --apparent-size "$MNT" | cut -f1)
	t4=$(now); find "$MNT" -type f -print0 | xargs -0 -r cat > /dev/null; t5=$(now)
	big=$(largest_file "$MNT")
	umount "$MNT"; drop; mount -t erofs -o ro,device="$blob" "$meta" "$MNT"
	iops=$("$RR" "$big" 4000 | awk '/iops/ {print $2}')
	umount "$MNT"
	losetup -d "$meta" "$blob"; LOOPS=()
	row "$label" "$(ms "$t0" "$t1")" "-" "$(ms "$t2" "$t3")" "$files" \
		"$(echo "$bytes/1048576/($t5-$t4)" | bc -l | xargs printf '%.1f')" "$iops" "-"
}

# 1. the largest fixture
bench_lazyimg "fixture v5 (repeatable)" "$FIX/sha256-nocompress-repeatable" "$FIX/blobs"

# 2. a generated 100k-file tree (plus a few large files for the read figures)
T100=$CACHE/tree100k
if [ ! -f "$T100/.done" ]; then
	rm -rf "$T100"
	python3 - "$T100" <<'PY'
import os, random, sys
root = sys.argv[1]
rnd = random.Random(42)
for d in range(200):
    p = os.path.join(root, f"dir{d:03d}", f"sub{d % 7}")
    os.makedirs(p, exist_ok=True)
    for f in range(500):
        n = rnd.choice((0, 100, 700, 3000, 9000))
        with open(os.path.join(p, f"file{f:04d}.txt"), "wb") as fh:
            fh.write((f"{d}/{f} ".encode() * (n // 8 + 1))[:n])
os.makedirs(os.path.join(root, "big"), exist_ok=True)
for i in range(2):
    with open(os.path.join(root, "big", f"random{i}.bin"), "wb") as fh:
        fh.write(rnd.randbytes(64 << 20))
open(os.path.join(root, ".done"), "w").close()
PY
fi
for v in 5 6; do
	out=$W/img100k-v$v
	t0=$(now); "$L" convert -q --fs-version $v "$T100" "$out"; t1=$(now)
	echo "# convert 100k-file tree, v$v zstd: $(ms "$t0" "$t1") ms, image.boot $(stat -c %s "$out/image.boot") B" >&2
	bench_lazyimg "100k files, v$v zstd" "$out/image.boot" "$out/blobs"
done
out=$W/img100k-aligned
"$L" convert -q --aligned "$T100" "$out"
bench_lazyimg "100k files, v6 aligned" "$out/image.boot" "$out/blobs"
if grep -qw erofs /proc/filesystems; then
	bench_kernel "100k files, kernel EROFS" "$out/image.boot" "$(ls "$out"/blobs/* | head -n 1)"
fi
rm -rf "$W"/img100k-*

# 2b. eStargz TOC parsing: a 100k-entry TOC through the streaming parser and tree build
echo
echo "eStargz TOC parse (yajl callbacks + tree build), time and RSS above the JSON buffer:"
TOP=$TOP BUILD=$BUILD "$TOP/$BUILD/bench/estargz_toc_parse" 100000 || echo "# estargz_toc_parse failed" >&2

# 3. conversion speed and size on a debootstrap-sized tree
DEB=$CACHE/debian
if [ ! -f "$DEB/.done" ] && command -v debootstrap >/dev/null; then
	mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
	rm -rf "$DEB"
	debootstrap --variant=minbase bookworm "$DEB" "${mirror:-http://deb.debian.org/debian}" >/dev/null 2>&1 \
		&& rm -rf "$DEB"/var/cache/apt/archives/*.deb "$DEB"/dev/* && touch "$DEB/.done" || rm -rf "$DEB"
fi
src=$DEB; [ -f "$DEB/.done" ] || { src=/usr/share; echo "# debootstrap unavailable: using /usr/share" >&2; }
insize=$(du -sb --apparent-size "$src" | cut -f1)
echo
printf '%-26s %10s %10s %12s %12s\n' "convert ($(basename "$src"))" seconds MB/s blob_MiB boot_KiB
for c in zstd lz4 none; do
	out=$W/conv-$c
	t0=$(now); "$L" convert -q --compressor $c "$src" "$out"; t1=$(now)
	bsz=$(du -sb "$out/blobs" | cut -f1)
	printf '%-26s %10.2f %10.1f %12.1f %12.1f\n' "v6 $c" "$(echo "$t1-$t0" | bc -l)" \
		"$(echo "$insize/1048576/($t1-$t0)" | bc -l)" "$(echo "$bsz/1048576" | bc -l)" \
		"$(echo "$(stat -c %s "$out/image.boot")/1024" | bc -l)"
	rm -rf "$out"
done
echo "# input: $(echo "$insize/1048576" | bc) MiB; machine: $(nproc) cores, $(uname -r)"

# 4. lazy pull from a registry: lazyimg bench against full pull and stargz-store
if [ "${BENCH_PART:-}" != local ]; then
	echo
	BUILD=$BUILD bash tests/bench/lazy.sh
fi
