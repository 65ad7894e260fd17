/* SPDX-License-Identifier: Apache-2.0 */
/*
 * rafs_build.h - build RAFS v5/v6 images (bootstrap + data blob) from a
 * directory or a layer tarball, and merge layer bootstraps into one image.
 * Output is deterministic: the same input gives the same bytes.
 */
#ifndef LAZYIMG_RAFS_BUILD_H
#define LAZYIMG_RAFS_BUILD_H

#include "lazyimg/lz.h"

#define RAFS_BUILD_MAX_ENTRIES (16u << 20)

struct rafs_build_opts {
	int fs_version;          /* 5 or 6 */
	int compressor;          /* enum lz_compressor; gzip is refused */
	int digester;            /* enum lz_digester */
	uint32_t chunk_size;     /* power of two, 4 KiB .. 16 MiB */
	bool aligned;            /* v6: raw chunks at 4 KiB-aligned blob offsets (kernel EROFS) */
	const char *prefetch_files; /* file listing absolute paths to prefetch, or NULL */
	bool progress;           /* progress lines on stderr */
	int level;               /* compression level, 0: library default */
};

struct rafs_build_result {
	char blob_id[65];        /* "" when the image has no data */
	uint64_t entries;        /* tree entries */
	uint64_t files;          /* regular files */
	uint64_t bytes_in;       /* file data bytes read */
	uint64_t chunks;         /* distinct chunks stored */
	uint64_t dedup_chunks;   /* chunks found identical to a stored one */
	uint64_t blob_size;      /* bytes of the data blob */
	uint64_t boot_size;      /* bytes of image.boot */
};

/*
 * Convert SRC (a directory, or a .tar/.tar.gz/.tar.zst file, or "-" for a
 * tar stream on stdin) into OUTDIR/image.boot and OUTDIR/blobs/<blob id>.
 * Returns 0 or a negative errno with a log line naming the cause.
 */
int rafs_build(const char *src, const char *outdir, const struct rafs_build_opts *opts,
	       struct rafs_build_result *res);

/*
 * Merge layer bootstraps (lowest first) into one image bootstrap at `out`,
 * applying OCI whiteouts (.wh.NAME) and opaque directories (.wh..wh..opq).
 * Every layer's blobs are referenced; fs_version 0 keeps the layers' version.
 */
int rafs_merge(const char *out, const char *const *boots, size_t n, int fs_version);

#endif
