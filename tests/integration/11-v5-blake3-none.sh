#!/usr/bin/env bash
# Mount the RAFS v5 fixture blake3-lz4_block-non_repeatable (current version). Despite its
# name it is flags 0x5 = COMPRESSION_NONE + HASH_BLAKE3 over the uncompressed blob 7334a259…
# Same checks and references as 10 (the .result file applies to all four repeatable images,
# Part B of repeatable.expected.txt to both current ones); chunk digests are BLAKE3 here.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lib_init

BOOT=$FIX/blake3-lz4_block-non_repeatable
BLOBDIR=$FIX/blobs
EXPECTED=$FIX/repeatable.expected.txt
MD5_REF=$FIX/blake3-lz4_block-non_repeatable.result
TREE_RESULT=$FIX/blake3-lz4_block-non_repeatable.result
HARDLINKS="/hardlink-test/foo /hardlink-test/test.sh /normal-file-test/test.sh"
HARDLINK_NLINK=3
INODES=51

n=$("$LAZYIMG" inspect --json "$BOOT" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["flags"], d["compressor"], d["digester"])') || true
check_eq "inspect: flags compressor digester" "$n" "5 none blake3"

check_image
umount_img "$MNT"
finish
