#!/usr/bin/env bash
# Mount repeatable-2020/blake3-lz4_block-non_repeatable: the only lz4 fixture (flags 0x16 =
# LZ4 + BLAKE3 + EXPLICIT_UID_GID, raw LZ4 blocks in blob d7b86b1e…), written by the 2020
# builder: no extended blob table, uid/gid 1000, mtimes 0, directory sizes that are byte
# counts (root 71) and directory nlink 1. The .result file (tree JSON + md5) applies as is;
# Part B of repeatable.expected.txt applies with the columns the expected file says differ
# in the 2020 versions adjusted to what MANIFEST.md verified (see fix_2020_rows in lib.sh).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lib_init

BOOT=$FIX/repeatable-2020/blake3-lz4_block-non_repeatable
BLOBDIR=$FIX/blobs
EXPECTED=$FIX/repeatable.expected.txt
MD5_REF=$FIX/blake3-lz4_block-non_repeatable.result
TREE_RESULT=$FIX/blake3-lz4_block-non_repeatable.result
HARDLINKS="/hardlink-test/foo /hardlink-test/test.sh /normal-file-test/test.sh"
HARDLINK_NLINK=3
INODES=51
UID2020=1000 GID2020=1000 # EXPLICIT_UID_GID: the inode records' owners
FLAGS2020=22 BLOB2020=d7b86b1e74e316fe945741d1a9fa1b271459fe41481e304977659e0c6ecf56ac
FIX_WANT=fix_2020_rows

check_image
check_2020_extras
umount_img "$MNT"
finish
