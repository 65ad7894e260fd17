#!/usr/bin/env bash
# Mount a single-file v6 image: toc/2fa78cad… is a data blob that carries its bootstrap
# inline behind a RAFS ToC (image.boot, zstd 501 -> 20480 bytes). It is given as the
# bootstrap (-b) with its own directory as the blob dir; lazyimg extracts the bootstrap and
# reads the chunks from the same file. Checked against the toc expected file: listing,
# md5, no xattrs, reads, readdir offsets, EROFS, statfs, `lazyimg check`, unmount. Also
# mounts it without -B (blob dir defaults to the file's directory).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lib_init

BOOT=$FIX/toc/2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca
BLOBDIR=$FIX/toc
EXPECTED=$BOOT.expected.txt
MD5_REF=$BOOT.expected.txt
INODES=4 # the inlined bootstrap's EROFS superblock: root + 3 files

check_image
umount_img "$MNT"

mount_img "$W/mnt2" -b "$BOOT" || die "cannot mount $BOOT without -B"
(cd "$W/mnt2" && md5sum error.rs lib.rs logger.rs) | sed 's#  #  /#' | sort > "$W/m2.md5" || true
md5_lines "$EXPECTED" > "$W/m2.ref"
check_same "md5 with the blob dir defaulting to the file's directory" "$W/m2.md5" "$W/m2.ref"
umount_img "$W/mnt2"
finish
