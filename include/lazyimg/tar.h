/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tar.h - streaming reader for (optionally gzip- or zstd-compressed) tar
 * archives: ustar, GNU long names and PAX extended headers (path, linkpath,
 * size, uid, gid, mtime, SCHILY.xattr.*). Input is hostile: every header is
 * checksummed and every size capped.
 */
#ifndef LAZYIMG_TAR_H
#define LAZYIMG_TAR_H

#include "lazyimg/lz.h"

#define LZ_TAR_MAX_PATH 4096
#define LZ_TAR_MAX_PAX (1u << 20)    /* one PAX header block */
#define LZ_TAR_MAX_XATTRS 128
#define LZ_TAR_MAX_XATTR_VALUE 65536
#define LZ_TAR_MAX_SIZE (1ull << 40)  /* 1 TiB per entry */

struct lz_tar;

struct lz_tar_xattr {
	char *name;
	uint8_t *value;
	size_t len;
};

struct lz_tar_entry {
	char *path;           /* as in the archive, NUL-terminated */
	char *linkname;       /* symlink target or hard-link path, or NULL */
	char type;            /* '0' reg, '1' hard link, '2' symlink, '3' chr, '4' blk, '5' dir, '6' fifo */
	uint32_t mode;        /* permission bits (07777) */
	uint32_t uid, gid;
	uint64_t size;        /* data bytes that follow (regular files) */
	int64_t mtime;
	uint32_t mtime_nsec;
	uint32_t devmajor, devminor;
	struct lz_tar_xattr *xattrs;
	size_t nxattrs;
};

/* Wrap a readable fd (not owned). Compression is detected from magic bytes. */
int lz_tar_open_fd(int fd, struct lz_tar **out);
/* Over a memory buffer that must outlive the reader. */
int lz_tar_open_mem(const void *buf, size_t len, struct lz_tar **out);
/*
 * Next entry: 1 with *e filled (valid until the next call), 0 at the end of
 * the archive, or -EFSCORRUPTED/-EIO/-ENOMEM. Unread data of the previous
 * entry is skipped.
 */
int lz_tar_next(struct lz_tar *t, struct lz_tar_entry *e);
/* Read the current entry's data; returns bytes (0 at its end) or an error. */
ssize_t lz_tar_read(struct lz_tar *t, void *buf, size_t len);
/* Compressed bytes consumed so far (for progress). */
uint64_t lz_tar_consumed(const struct lz_tar *t);
void lz_tar_close(struct lz_tar *t);

#endif
