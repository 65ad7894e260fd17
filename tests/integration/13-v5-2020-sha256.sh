#!/usr/bin/env bash
# Mount repeatable-2020/sha256-nocompress-repeatable: 2020 builder, flags 0x9 (no
# compression, SHA-256), no extended blob table, blob 7334a259…. Without EXPLICIT_UID_GID
# every inode is reported as owned by the server's euid/egid (format doc 1.2); mtimes 0,
# directory sizes are byte counts (root 71), directory nlink 1. References as in 12.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lib_init

BOOT=$FIX/repeatable-2020/sha256-nocompress-repeatable
BLOBDIR=$FIX/blobs
EXPECTED=$FIX/repeatable.expected.txt
MD5_REF=$FIX/sha256-nocompress-repeatable.result
TREE_RESULT=$FIX/sha256-nocompress-repeatable.result
HARDLINKS="/hardlink-test/foo /hardlink-test/test.sh /normal-file-test/test.sh"
HARDLINK_NLINK=3
INODES=51
UID2020=$(id -u) GID2020=$(id -g) # no EXPLICIT_UID_GID: the server's own ids
FLAGS2020=9 BLOB2020=7334a2594e133cf8ae364189c2276b090fc490c627bcc3fb1077f0419a538e00
FIX_WANT=fix_2020_rows

check_image
check_2020_extras
umount_img "$MNT"
finish
