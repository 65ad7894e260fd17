#!/usr/bin/env bash
# Mount the RAFS v6 fixture rafs-v6-2.2.boot (nydus-image 2.2: EROFS-based, zstd chunks,
# BLAKE3, EXPLICIT_UID_GID, bootstrap chunk table) with blobs/ (blob be7d77ee…, which has
# tail sections and a ToC) and compare with rafs-v6-2.2.expected.txt: listing, md5, no
# xattrs, reads at odd offsets, readdir offsets (v6 offsets encode block and entry),
# EROFS on writes, statfs (3 inodes), `lazyimg check`, and a clean unmount.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lib_init

BOOT=$FIX/rafs-v6-2.2.boot
BLOBDIR=$FIX/blobs
EXPECTED=$FIX/rafs-v6-2.2.expected.txt
MD5_REF=$FIX/rafs-v6-2.2.expected.txt
INODES=3 # MANIFEST.md: 3 inodes

n=$("$LAZYIMG" inspect --json "$BOOT" | python3 -c 'import json,sys; d=json.load(sys.stdin); b=d["blobs"]; print(d["version"], len(b), b[0]["id"], b[0]["compressor"])') || true
check_eq "inspect: version, blobs, blob id, compressor (upstream validator.rs facts)" "$n" \
	"6 1 be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef zstd"

check_image
umount_img "$MNT"
finish
