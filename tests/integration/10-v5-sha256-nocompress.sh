#!/usr/bin/env bash
# Mount the RAFS v5 fixture sha256-nocompress-repeatable (flags 0x9: no compression,
# SHA-256, extended blob table) with blobs/ and compare everything a client sees with
# the upstream .result file (tree JSON + md5 lines, authoritative) and the decoded
# listing in repeatable.expected.txt (Part B): names, types, modes, owners, sizes,
# nlink, symlink targets, xattrs (none), hard links, chunk-boundary reads, readdir
# offsets, EROFS on writes, statfs, `lazyimg check`, and a clean unmount.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lib_init

BOOT=$FIX/sha256-nocompress-repeatable
BLOBDIR=$FIX/blobs
EXPECTED=$FIX/repeatable.expected.txt
MD5_REF=$FIX/sha256-nocompress-repeatable.result
TREE_RESULT=$FIX/sha256-nocompress-repeatable.result
HARDLINKS="/hardlink-test/foo /hardlink-test/test.sh /normal-file-test/test.sh"
HARDLINK_NLINK=3
INODES=51 # s_inodes_count (superblock offset 24) of all four v5 repeatable bootstraps

check_image
umount_img "$MNT"
finish
