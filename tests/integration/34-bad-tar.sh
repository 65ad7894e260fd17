#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Bad layer tarballs give clear errors. Each case is crafted here with python3 (tarfile plus
# byte patching, gzip, the zstd CLI) into the temp dir: truncated mid-header and mid-data,
# a bad header checksum, path traversal (../x, a/../../x, /etc/x, and ../x through a PAX
# path record and through a hard link target), a 1 PiB size field (GNU base-256 and PAX),
# a hard link to a missing target, an unknown entry type, random bytes; gzip streams with a
# corrupt deflate block, with corrupt data in a stored block (only the CRC can tell), with a
# bad CRC, truncated; zstd streams with a corrupt frame, with corrupt data in a raw block
# (only the frame checksum can tell), truncated.
# `lazyimg convert` of each, given as a file and on stdin ('-'), and again with -q, must
#   exit non-zero and not by a signal (status < 128; not the 124 of the timeout);
#   print a message that names the problem (a regex per case, below; matched with the
#   tarball's own path blanked out, so that its name cannot match);
#   leave no image.boot and no blob in OUTDIR (nor a temporary file);
# and a failed convert into an OUTDIR that holds a good image leaves that image.boot as it
# was (or removes it), never half-written. A good tarball crafted the same way converts
# (the control). Exit 0 pass, 1 fail.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
W=$(mktemp -d /tmp/lazyimg-t34.XXXXXX)
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
echo "workdir $W, lazyimg $LAZYIMG"
[ -x "$LAZYIMG" ] || die "$LAZYIMG is not built"
command -v zstd > /dev/null || die "zstd is not installed"
C=$W/cases
mkdir -p "$C"

python3 - "$C" <<'PY' || die "crafting the bad tarballs failed"
import gzip, io, os, random, subprocess, sys, tarfile
out = sys.argv[1]
rng = random.Random(34)

def member(name, data=b"", type=tarfile.REGTYPE, linkname="", mode=0o644):
    ti = tarfile.TarInfo(name)
    ti.type = type
    ti.mode = mode
    ti.mtime = 1600000000
    ti.size = len(data) if type == tarfile.REGTYPE else 0
    ti.linkname = linkname
    return ti, data

def build(members, fmt=tarfile.PAX_FORMAT):
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w", format=fmt) as t:
        for ti, data in members:
            t.addfile(ti, io.BytesIO(data) if ti.size else None)
    return bio.getvalue()

def write(name, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)

def checksum(h):
    h = bytearray(h)
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)

big = rng.randbytes(300000)
good_members = [member("d/", type=tarfile.DIRTYPE, mode=0o755),
                member("d/a", rng.randbytes(3000)),
                member("d/b", b"0123456789"),
                member("d/big", big),
                member("d/l", type=tarfile.SYMTYPE, linkname="a"),
                member("d/h", type=tarfile.LNKTYPE, linkname="d/a")]
good = build(good_members, tarfile.USTAR_FORMAT)
write("good.tar", good)
# ustar: each member is one 512-byte header then data; find offsets by walking headers
offs = []
with tarfile.open(fileobj=io.BytesIO(good)) as t:
    for m in t.getmembers():
        offs.append((m.name, m.offset, m.offset_data, m.size))
off = {n: (o, od, s) for n, o, od, s in offs}

write("trunc-header.tar", good[:off["d/b"][0] + 100])
write("trunc-data.tar", good[:off["d/a"][1] + 1000])
h = bytearray(good)
o = off["d/b"][0]
h[o + 136] = ord("7") if h[o + 136] != ord("7") else ord("6")  # mtime digit, checksum now wrong
write("bad-checksum.tar", bytes(h))

write("traversal-dotdot.tar", build([member("../x", b"escape\n")], tarfile.USTAR_FORMAT))
write("traversal-nested.tar", build([member("a/", type=tarfile.DIRTYPE, mode=0o755),
                                     member("a/../../x", b"escape\n")], tarfile.USTAR_FORMAT))
write("traversal-absolute.tar", build([member("/etc/x", b"escape\n")], tarfile.USTAR_FORMAT))
# PAX: the ustar name is harmless, the path record is not
ti, _ = member("harmless", b"escape\n")
ti.pax_headers = {"path": "../x"}
pax = build([(ti, b"escape\n")], tarfile.PAX_FORMAT)
write("traversal-pax-path.tar", pax)
write("traversal-hardlink.tar", build([member("h", type=tarfile.LNKTYPE, linkname="../etc/passwd")],
                                      tarfile.USTAR_FORMAT))

# 1 PiB size: GNU base-256 in the header, and a PAX size record; a little data follows
PIB = 1 << 50
ti = tarfile.TarInfo("huge")
ti.size = PIB
ti.mtime = 1600000000
hdr = ti.tobuf(tarfile.GNU_FORMAT)
write("huge-size-gnu.tar", hdr + b"x" * 4096 + b"\0" * 1024)
hdr = ti.tobuf(tarfile.PAX_FORMAT)
write("huge-size-pax.tar", hdr + b"x" * 4096 + b"\0" * 1024)

write("hardlink-missing.tar", build([member("d/", type=tarfile.DIRTYPE, mode=0o755),
                                     member("d/h", type=tarfile.LNKTYPE, linkname="d/nope")],
                                    tarfile.USTAR_FORMAT))
u = bytearray(build([member("d/", type=tarfile.DIRTYPE, mode=0o755), member("d/q", b"data\n")],
                    tarfile.USTAR_FORMAT))
o = 512  # the second header
u[o + 156] = ord("Q")
u[o:o + 512] = checksum(u[o:o + 512])
write("unknown-type.tar", bytes(u))
write("random-bytes.tar", rng.randbytes(8192))

gz = gzip.compress(good, mtime=0)
write("good.tar.gz", gz)
g = bytearray(gz)
for i in range(10, 40):  # the first deflate block header and code lengths
    g[i] ^= 0xa5
write("corrupt-deflate.tar.gz", bytes(g))
g = bytearray(gz)
for i in range(len(g) // 2, len(g) // 2 + 64):  # inside a stored block: only the CRC can tell
    g[i] ^= 0x5a
write("corrupt-data.tar.gz", bytes(g))
write("truncated.tar.gz", gz[:len(gz) // 2])
g = bytearray(gz)
g[-8] ^= 0xff  # the CRC32 in the trailer
write("bad-crc.tar.gz", bytes(g))

zs = subprocess.run(["zstd", "-q", "-c", "--check"], input=good, stdout=subprocess.PIPE, check=True).stdout
write("good.tar.zst", zs)
z = bytearray(zs)
for i in range(6, 30):  # frame and first block headers
    z[i] ^= 0xa5
write("corrupt-frame.tar.zst", bytes(z))
z = bytearray(zs)
for i in range(len(z) // 2, len(z) // 2 + 64):  # inside a raw block: only the checksum can tell
    z[i] ^= 0x5a
write("corrupt-data.tar.zst", bytes(z))
write("truncated.tar.zst", zs[:len(zs) // 2])
PY

# case  regex (case-insensitive) the message must match
CASES=(
	"trunc-header.tar|truncat|unexpected end|incomplete|short read"
	"trunc-data.tar|truncat|unexpected end|short read"
	"bad-checksum.tar|checksum"
	"traversal-dotdot.tar|\.\./x"
	"traversal-nested.tar|a/\.\./\.\./x"
	"traversal-absolute.tar|/etc/x"
	"traversal-pax-path.tar|\.\./x"
	"traversal-hardlink.tar|\.\./etc/passwd"
	"huge-size-gnu.tar|size|too large|exceed"
	"huge-size-pax.tar|size|too large|exceed"
	"hardlink-missing.tar|d/nope"
	"unknown-type.tar|type.*(Q|0x51)"
	"random-bytes.tar|checksum|not a tar"
	"corrupt-deflate.tar.gz|gzip|deflate|inflate"
	"corrupt-data.tar.gz|crc|checksum|gzip.*corrupt"
	"truncated.tar.gz|truncat|unexpected end"
	"bad-crc.tar.gz|crc|checksum|gzip.*corrupt"
	"corrupt-frame.tar.zst|zstd"
	"corrupt-data.tar.zst|checksum|zstd.*corrupt"
	"truncated.tar.zst|truncat|unexpected end"
)

# control: the good tarballs convert
for g in good.tar good.tar.gz good.tar.zst; do
	check "control: $g converts" "$LAZYIMG" convert -q "$C/$g" "$W/out-$g"
done

# try CASE MODE(file|stdin) QUIET(""|-q) REGEX
try() {
	local case=$1 mode=$2 q=$3 re=$4 out=$W/out rc=0 what left
	what="$case ($mode${q:+, $q})"
	rm -rf "$out"
	if [ "$mode" = stdin ]; then
		timeout -k 5 60 "$LAZYIMG" convert ${q:+"$q"} - "$out" < "$C/$case" > "$W/stdout" 2> "$W/stderr" || rc=$?
	else
		timeout -k 5 60 "$LAZYIMG" convert ${q:+"$q"} "$C/$case" "$out" > "$W/stdout" 2> "$W/stderr" || rc=$?
	fi
	if [ "$rc" -eq 0 ]; then
		bad "$what: convert succeeded, want an error ($(find "$out" -type f | wc -l) files written)"
	elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
		bad "$what: convert hung (killed by the 60 s timeout)"
	elif [ "$rc" -ge 128 ]; then
		bad "$what: convert died of signal $((rc - 128)): $(tail -n 3 "$W/stderr" | head -c 300)"
	elif ! sed "s|$C/$case|SRC|g" "$W/stderr" | grep -qiE -- "$re"; then
		bad "$what: exit $rc, but the message does not match /$re/: $(head -c 400 "$W/stderr")"
	else
		ok "$what: exit $rc: $(sed "s|$C/$case|SRC|g" "$W/stderr" | grep -iE -- "$re" | head -n 1 | head -c 200)"
	fi
	[ -s "$W/stdout" ] && echo "    (stdout: $(head -c 200 "$W/stdout"))"
	if [ "$rc" -ne 0 ]; then
		[ -e "$out/image.boot" ] && bad "$what: an image.boot was left behind ($(stat -c %s "$out/image.boot") bytes)"
		left=$(find "$out" -type f 2> /dev/null | sed "s|^$out/||" | head -n 5 | tr '\n' ' ')
		[ -n "$left" ] && bad "$what: files left in OUTDIR: $left"
	fi
	return 0
}

for c in "${CASES[@]}"; do
	case=${c%%|*}
	re=${c#*|}
	try "$case" file "" "$re"
	try "$case" stdin "" "$re"
	try "$case" file -q "$re"
done

# a failed convert into an OUTDIR with a good image leaves that image alone (or removes it)
if [ -s "$W/out-good.tar/image.boot" ]; then
	cp "$W/out-good.tar/image.boot" "$W/good.boot"
	for c in trunc-data.tar corrupt-frame.tar.zst hardlink-missing.tar; do
		rc=0
		timeout -k 5 60 "$LAZYIMG" convert -q "$C/$c" "$W/out-good.tar" > /dev/null 2>&1 || rc=$?
		if [ "$rc" -eq 0 ]; then
			bad "$c over a good OUTDIR: convert succeeded"
		elif [ ! -e "$W/out-good.tar/image.boot" ]; then
			ok "$c over a good OUTDIR: exit $rc, image.boot removed"
		elif cmp -s "$W/good.boot" "$W/out-good.tar/image.boot"; then
			ok "$c over a good OUTDIR: exit $rc, image.boot unchanged"
		else
			bad "$c over a good OUTDIR: exit $rc, and image.boot changed ($(stat -c %s "$W/out-good.tar/image.boot") bytes, was $(stat -c %s "$W/good.boot"))"
		fi
		cp "$W/good.boot" "$W/out-good.tar/image.boot"
	done
fi
finish
