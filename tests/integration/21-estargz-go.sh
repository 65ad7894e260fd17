#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The eStargz reader against the reference writer: a source tree with every
# file type (hard links, symlinks, devices, a fifo, xattrs, setuid, long and
# non-ASCII names, files over and exactly at the chunk size) is tarred with GNU
# tar and converted by the Go estargz package itself (Debian's
# golang-github-containerd-stargz-snapshotter-dev, estargz.Build: gzip and
# zstd:chunked, small chunks, prioritized files). Each blob is mounted through
# /dev/fuse (build/tests/test_estargz serve) and compared with the source tree:
# contents (cmp of every regular file), mode, owner, size, mtime, rdev, symlink targets, user
# xattrs, hard-link groups; the TOC digest equals the one Go computed; the
# landmark files are hidden.
set -euo pipefail
: "${TOP:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${BUILD:=build}"
export LC_ALL=C
T=60
SERVE=$TOP/$BUILD/tests/test_estargz
W=$(mktemp -d /tmp/lazyimg-t21.XXXXXX)
PIDS=()
MNTS=()
NFAIL=0

is_mounted() { awk -v m="$1" '$2 == m { f = 1 } END { exit !f }' /proc/mounts; }

cleanup() {
	local m p
	trap - EXIT
	for m in "${MNTS[@]}"; do is_mounted "$m" && umount -l "$m"; done
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	if awk -v w="$W/" 'index($2, w) == 1 { f = 1 } END { exit !f }' /proc/mounts; then
		echo "cleanup: something is still mounted under $W; leaving it" >&2
	else
		rm -rf "$W"
	fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

ok() { echo "ok: $*"; }
bad() { NFAIL=$((NFAIL + 1)); echo "FAIL: $*"; }

[ -x "$SERVE" ] || { echo "FAIL: $SERVE not built (make test-bins)"; exit 1; }
[ -c /dev/fuse ] || { echo "no /dev/fuse"; exit 77; }

# the reference writer: Go and the Debian stargz library (installed as the peers scripts do)
GOSRC=/usr/share/gocode/src/github.com/containerd/stargz-snapshotter/estargz
if ! command -v go >/dev/null || [ ! -d "$GOSRC" ]; then
	DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y --no-install-recommends \
		golang-go golang-github-containerd-stargz-snapshotter-dev >/dev/null 2>&1 ||
		{ echo "FAIL: cannot install golang-go golang-github-containerd-stargz-snapshotter-dev"; exit 1; }
fi
mkdir -p "$W/gotool"
cat > "$W/gotool/main.go" <<'EOF'
// mkesgz IN.tar OUT gzip|zstd CHUNK [PRIORITIZED,...]: estargz.Build, prints the TOC digest
package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
)

type zstdCompression struct {
	*zstdchunked.Compressor
	*zstdchunked.Decompressor
}

func main() {
	f, err := os.Open(os.Args[1])
	if err != nil {
		panic(err)
	}
	st, _ := f.Stat()
	cs, _ := strconv.Atoi(os.Args[4])
	opts := []estargz.Option{estargz.WithChunkSize(cs)}
	if os.Args[3] == "zstd" {
		opts = append(opts, estargz.WithCompression(&zstdCompression{
			&zstdchunked.Compressor{CompressionLevel: 3}, &zstdchunked.Decompressor{}}))
	}
	if len(os.Args) > 5 && os.Args[5] != "" {
		opts = append(opts, estargz.WithPrioritizedFiles(strings.Split(os.Args[5], ",")))
	}
	b, err := estargz.Build(io.NewSectionReader(f, 0, st.Size()), opts...)
	if err != nil {
		panic(err)
	}
	out, err := os.Create(os.Args[2])
	if err != nil {
		panic(err)
	}
	if _, err := io.Copy(out, b); err != nil {
		panic(err)
	}
	b.Close()
	out.Close()
	fmt.Println(b.TOCDigest())
}
EOF
(cd "$W/gotool" && GOPATH=/usr/share/gocode GO111MODULE=off timeout 300 go build -o mkesgz main.go) ||
	{ echo "FAIL: cannot build the Go estargz tool"; exit 1; }

# the source tree
S=$W/src
mkdir -p "$S/dir/sub" "$S/empty-dir" "$S/deep/a/b/c/d/e"
head -c 300000 /dev/urandom > "$S/dir/random.bin"
seq 1 20000 > "$S/dir/seq.txt"
head -c 8192 /dev/zero > "$S/dir/sub/exact-chunk"     # exactly two 4 KiB chunks
head -c 4096 /dev/urandom > "$S/dir/sub/one-chunk"
printf 'hello\n' > "$S/hello"
: > "$S/empty"
ln -s hello "$S/link"
ln -s /nonexistent/absolute "$S/abslink"
ln "$S/dir/seq.txt" "$S/dir/seq-hard"
ln "$S/dir/seq.txt" "$S/deep/a/b/c/d/e/seq-hard2"
mkfifo "$S/fifo"
mknod "$S/chr" c 1 3
mknod "$S/blk" b 8 1
chmod 4755 "$S/hello"
chmod 0700 "$S/dir/sub"
chmod 1777 "$S/empty-dir"
setfattr -n user.test -v "value 1" "$S/hello"
setfattr -n user.bin -v 0x00ff00 "$S/dir/seq.txt"
printf x > "$S/$(printf 'n%.0s' $(seq 1 200))"
printf u > "$S/ünï cödé"
chown 123:456 "$S/dir/seq.txt"
chown 7:8 "$S/link"
touch -h -d '2021-03-04 05:06:07' "$S/hello" "$S/link"
touch -d '1999-12-31 23:59:59' "$S/dir/sub"
tar --xattrs --xattrs-include='user.*' --format=pax --numeric-owner -cf "$W/src.tar" -C "$S" .

# metadata of a tree, one line per path, hard links as groups of paths; mtimes to the
# nearest second, as the Go writer rounds them (estargz.go formatModtime)
listing() {
	python3 - "$1" <<'EOF'
import os, stat, sys
root = sys.argv[1]
groups = {}
out = []
for dp, dns, fns in os.walk(root):
    for n in sorted(dns + fns) + ([] if dp != root else ["."]):
        p = os.path.normpath(os.path.join(dp, n))
        st = os.lstat(p)
        rel = os.path.relpath(p, root)
        x = ""
        if not stat.S_ISLNK(st.st_mode):
            x = ",".join("%s=%s" % (a, os.getxattr(p, a, follow_symlinks=False).hex())
                         for a in sorted(os.listxattr(p, follow_symlinks=False)) if a.startswith("user."))
        tgt = os.readlink(p) if stat.S_ISLNK(st.st_mode) else ""
        size = st.st_size if not stat.S_ISDIR(st.st_mode) else "-"
        out.append("%s mode=%o uid=%d gid=%d size=%s mtime=%d rdev=%d:%d nlink=%s link=%s xattr=%s" % (
            rel, st.st_mode, st.st_uid, st.st_gid, size, (st.st_mtime_ns + 500000000) // 1000000000,
            os.major(st.st_rdev), os.minor(st.st_rdev),
            st.st_nlink if not stat.S_ISDIR(st.st_mode) else "-", tgt, x))
        if not stat.S_ISDIR(st.st_mode):
            groups.setdefault((st.st_dev, st.st_ino), []).append(rel)
for l in sorted(set(out)):
    print(l)
for g in sorted(sorted(v) for v in groups.values() if len(v) > 1):
    print("hardlinks", " ".join(g))
EOF
}
listing "$S" > "$W/want.txt"

# test_estargz serve BLOB MNT: prints "toc DIGEST kind K", then "ready"
serve() {
	local blob=$1 mnt=$2 out=$3 i
	mkdir -p "$mnt"
	"$SERVE" serve "$blob" "$mnt" > "$out" 2> "$out.err" &
	PIDS+=($!)
	MNTS+=("$mnt")
	for i in $(seq 1 200); do
		grep -q '^ready' "$out" 2>/dev/null && return 0
		kill -0 "${PIDS[-1]}" 2>/dev/null || break
		sleep 0.05
	done
	echo "FAIL: mount of $blob: $(cat "$out" "$out.err" | head -c 400)"
	return 1
}

unserve() {
	local mnt=$1 pid=$2 i
	umount "$mnt" || umount -l "$mnt"
	for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.05; done
	bad "server of $mnt did not exit after the unmount"
	kill "$pid" 2>/dev/null || true
}

# variant NAME COMPRESSION CHUNK PRIORITIZED WANT_KIND
variant() {
	local name=$1 comp=$2 chunk=$3 prio=$4 kind=$5 blob=$W/$1.blob mnt=$W/$1.mnt dg got
	dg=$(timeout "$T" "$W/gotool/mkesgz" "$W/src.tar" "$blob" "$comp" "$chunk" "$prio") ||
		{ bad "$name: the Go writer failed"; return; }
	serve "$blob" "$mnt" "$W/$name.out" || { NFAIL=$((NFAIL + 1)); return; }
	local pid=${PIDS[-1]}
	got=$(sed -n 's/^toc \([^ ]*\) kind \([0-9]*\)$/\1 \2/p' "$W/$name.out")
	[ "$got" = "$dg $kind" ] && ok "$name: TOC digest $dg, footer kind $kind" ||
		bad "$name: TOC digest/kind '$got', Go says '$dg' (kind $kind)"
	# every regular file's bytes (diff -r cannot compare fifos and devices; the listing covers those)
	local f n=0 nd=0
	while IFS= read -r -d '' f; do
		n=$((n + 1))
		timeout "$T" cmp -s "$S/$f" "$mnt/$f" || { nd=$((nd + 1)); echo "    | differs: $f"; }
	done < <(cd "$S" && find . -type f -print0)
	[ "$nd" -eq 0 ] && [ "$n" -ge 10 ] && ok "$name: contents of all $n regular files" ||
		bad "$name: $nd of $n regular files differ"
	listing "$mnt" > "$W/$name.got"
	if cmp -s "$W/want.txt" "$W/$name.got"; then
		ok "$name: mode, owner, size, mtime, rdev, nlink, symlink targets, xattrs, hard-link groups ($(wc -l < "$W/want.txt") lines)"
	else
		bad "$name: metadata differs (< want, > got)"; diff "$W/want.txt" "$W/$name.got" | head -n 20 | sed 's/^/    | /'
	fi
	if [ -e "$mnt/.prefetch.landmark" ] || [ -e "$mnt/.no.prefetch.landmark" ] || [ -e "$mnt/stargz.index.json" ]; then
		bad "$name: a landmark or the TOC is visible"
	else
		ok "$name: landmarks and stargz.index.json hidden"
	fi
	unserve "$mnt" "$pid"
}

variant gzip-4k gzip 4096 "" 1
variant zstd-4k zstd 4096 "" 3
variant gzip-prio gzip 4096 "./hello,./dir/seq.txt" 1
variant gzip-default gzip 4194304 "" 1

# --- two layers with deletions, against the kernel's overlayfs of the source trees.
# LO is the lower tree; UP the upper one in overlayfs form (a 0:0 char device deletes,
# trusted.overlay.opaque=y hides the lower directory's children). UP's OCI layer tar
# spells those as .wh.NAME and .wh..wh..opq, as image builders do.
LO=$W/lower
UP=$W/upper
mkdir -p "$LO/a" "$LO/b/sub" "$LO/d/deep" "$LO/gone-dir/x" "$UP/a" "$UP/b" "$UP/c-file"
printf 'lower x\n' > "$LO/a/x"
printf 'lower y\n' > "$LO/a/y"
printf 'old\n' > "$LO/b/old1"
printf 'old2\n' > "$LO/b/sub/old2"
printf 'file\n' > "$LO/c-file"
printf 'keep\n' > "$LO/keep"
printf 'f\n' > "$LO/d/deep/f"
printf 'g\n' > "$LO/gone-dir/x/g"
ln -s keep "$LO/keep-link"
printf 'upper x, longer\n' > "$UP/a/x"
mknod "$UP/a/y" c 0 0
mknod "$UP/gone-dir" c 0 0
setfattr -n trusted.overlay.opaque -v y "$UP/b"
printf 'new\n' > "$UP/b/new"
printf 'inner\n' > "$UP/c-file/inner"
printf 'top\n' > "$UP/top-new"
chmod 0700 "$UP/a"
touch -d '2010-01-01 00:00:00' "$LO" "$UP"
tar --format=pax --numeric-owner -cf "$W/lower.tar" -C "$LO" .
python3 - "$UP" "$W/upper.tar" <<'PYEOF'
import os, stat, sys, tarfile
root, out = sys.argv[1], sys.argv[2]
with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as t:
    for dp, dns, fns in os.walk(root):
        dns.sort()
        rel = os.path.relpath(dp, root)
        t.add(dp, arcname=rel, recursive=False)
        if "trusted.overlay.opaque" in os.listxattr(dp) and os.getxattr(dp, "trusted.overlay.opaque") == b"y":
            ti = tarfile.TarInfo(os.path.join(rel, ".wh..wh..opq"))
            ti.mtime = int(os.lstat(dp).st_mtime)
            t.addfile(ti)
        for n in sorted(fns):
            p = os.path.join(dp, n)
            st = os.lstat(p)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                ti = tarfile.TarInfo(os.path.join(rel, ".wh." + n))
                ti.mtime = int(st.st_mtime)
                t.addfile(ti)
            else:
                t.add(p, arcname=os.path.join(rel, n), recursive=False)
PYEOF
if "$W/gotool/mkesgz" "$W/lower.tar" "$W/lower.blob" gzip 4096 > /dev/null &&
	"$W/gotool/mkesgz" "$W/upper.tar" "$W/upper.blob" gzip 4096 > /dev/null; then
	OV=$W/ov
	mkdir -p "$OV"
	if mount -t overlay overlay -o "ro,lowerdir=$UP:$LO" "$OV"; then
		MNTS+=("$OV")
		listing "$OV" > "$W/ov.want"
		# merged by this reader
		mkdir -p "$W/merged"
		"$SERVE" serve-merged "$W/merged" "$W/lower.blob" "$W/upper.blob" > "$W/merged.out" 2> "$W/merged.err" &
		MP=$!
		PIDS+=("$MP")
		MNTS+=("$W/merged")
		for i in $(seq 1 200); do grep -q '^ready' "$W/merged.out" 2>/dev/null && break; sleep 0.05; done
		if grep -q '^ready' "$W/merged.out"; then
			listing "$W/merged" > "$W/merged.got"
			if cmp -s "$W/ov.want" "$W/merged.got"; then
				ok "layers: the merged mount equals overlayfs of the source trees ($(wc -l < "$W/ov.want") lines)"
			else
				bad "layers: merged mount differs from overlayfs (< overlay, > merged)"
				diff "$W/ov.want" "$W/merged.got" | head -n 20 | sed 's/^/    | /'
			fi
			for f in a/x b/new c-file/inner top-new keep d/deep/f; do
				cmp -s "$OV/$f" "$W/merged/$f" && ok "layers: merged $f content" || bad "layers: merged $f differs"
			done
			unserve "$W/merged" "$MP"
		else
			bad "layers: merged mount failed: $(head -c 300 "$W/merged.err")"
		fi
		# each layer as it is (whiteouts in overlayfs form), stacked by the kernel: a snapshotter's view
		LP="" UPP=""
		serve "$W/lower.blob" "$W/l1" "$W/l1.out" && LP=${PIDS[-1]}
		mkdir -p "$W/l2"
		"$SERVE" serve "$W/upper.blob" "$W/l2" layer > "$W/l2.out" 2> "$W/l2.err" &
		UPP=$!
		PIDS+=("$UPP")
		MNTS+=("$W/l2")
		for i in $(seq 1 200); do grep -q '^ready' "$W/l2.out" 2>/dev/null && break; sleep 0.05; done
		OV2=$W/ov2
		mkdir -p "$OV2"
		if [ -n "$LP" ] && grep -q '^ready' "$W/l2.out" && mount -t overlay overlay -o "ro,lowerdir=$W/l2:$W/l1" "$OV2"; then
			MNTS+=("$OV2")
			listing "$OV2" > "$W/ov2.got"
			if cmp -s "$W/ov.want" "$W/ov2.got"; then
				ok "layers: overlayfs of the two layer mounts (whiteouts as 0:0 devices, opaque xattr) equals overlayfs of the source trees"
			else
				bad "layers: overlayfs of the layer mounts differs (< source overlay, > layer overlay)"
				diff "$W/ov.want" "$W/ov2.got" | head -n 20 | sed 's/^/    | /'
			fi
			umount "$OV2"
		else
			bad "layers: cannot stack the layer mounts with overlayfs: $(head -c 300 "$W/l2.err")"
		fi
		unserve "$W/l2" "$UPP"
		[ -n "$LP" ] && unserve "$W/l1" "$LP"
		umount "$OV"
	else
		bad "layers: cannot mount overlayfs of the source trees"
	fi
else
	bad "layers: the Go writer failed"
fi

[ "$NFAIL" -eq 0 ] || { echo "$NFAIL check(s) failed"; exit 1; }
echo "all checks passed"
