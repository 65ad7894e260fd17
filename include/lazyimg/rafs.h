/* SPDX-License-Identifier: Apache-2.0 */
/*
 * rafs.h - Nydus RAFS v5/v6 bootstraps: open, validate, and serve through
 * the image interface (image.h). Blobs are opened lazily on first read.
 */
#ifndef LAZYIMG_RAFS_H
#define LAZYIMG_RAFS_H

#include "lazyimg/image.h"

#define RAFS_MAX_BOOTSTRAP	(4ull << 30)	/* 4 GiB */
#define RAFS_MAX_BLOBS		255		/* v6 device ids are 8 bits */
#define RAFS_MAX_BLOB_ID	128
#define RAFS_MAX_CHUNK_SIZE	(16u << 20)
#define RAFS_MIN_CHUNK_SIZE	4096u
#define RAFS_MAX_CHUNKS_PER_BLOB (1u << 24)
#define RAFS_MERGE_MAX_CHUNKS	64		/* chunks one merged request may cover */

struct rafs;

struct rafs_opts {
	const char *blob_dir;      /* localfs backend directory (may be NULL: no data) */
	bool validate;             /* verify chunk digests on every cache fill */
	/* Blob id to use for blobs whose bootstrap came out of that blob (inlined
	 * meta): nydus ignores the recorded id then. NULL: none. */
	const char *inlined_blob_id;
	const struct img_backend_ops *backend; /* NULL: localfs */
	void *backend_ctx;
	const struct img_cache_ops *cache;
	void *cache_ctx;
	size_t chunk_cache_slots;  /* decoded-chunk cache slots; 0: default */
	/* With a cache that has try_begin: a read that must fetch a chunk also
	 * fetches the following chunks of the file that are stored right behind
	 * it and missing, in one request of at most merge_max compressed bytes.
	 * 0: default (2 MiB). */
	uint64_t merge_max;
};

struct rafs_info {
	int version;            /* 5 or 6 */
	uint64_t flags;         /* RafsSuperFlags */
	uint32_t chunk_size;
	int compressor;         /* enum lz_compressor (v5 fs-wide; v6 default) */
	int digester;           /* enum lz_digester */
	uint64_t inodes;
	uint32_t nblobs;
	uint32_t prefetch_entries;
	uint64_t bootstrap_size;
	bool explicit_uid_gid;
	/* v6 only */
	uint32_t meta_blkaddr;
	uint64_t root_nid;
	uint64_t chunk_table_entries;
};

struct rafs_blob_info {
	char id[RAFS_MAX_BLOB_ID + 1];
	uint32_t chunk_count;   /* 0 when unknown (old v5 images) */
	uint32_t features;
	int compressor;
	int digester;
	uint64_t compressed_size;
	uint64_t uncompressed_size;
	/* v6 blob meta location */
	int ci_compressor;
	uint64_t ci_offset, ci_compressed_size, ci_uncompressed_size;
};

/*
 * Open a bootstrap file (mmapped), or a data blob that carries an inlined
 * bootstrap in its ToC. Only the superblock and tables are validated here;
 * inodes are checked as they are reached. Returns 0, -EFSCORRUPTED (with a
 * log line naming the field), -EOPNOTSUPP, or an I/O errno.
 */
int rafs_open_file(const char *path, const struct rafs_opts *opts, struct rafs **out);
/* Same over a caller buffer that must outlive the rafs object. */
int rafs_open_mem(const void *buf, size_t len, const struct rafs_opts *opts, struct rafs **out);
void rafs_close(struct rafs *fs);

struct image *rafs_image(struct rafs *fs);
void rafs_get_info(const struct rafs *fs, struct rafs_info *info);
int rafs_get_blob(const struct rafs *fs, unsigned idx, struct rafs_blob_info *bi);
/* Prefetch table entries (image inode numbers); returns the count written. */
size_t rafs_prefetch_list(const struct rafs *fs, uint64_t *inos, size_t max);

/* Read, decompress and (when validating) verify one chunk into buf
 * (uncompressed_size bytes). -EBADMSG on a digest mismatch. */
int rafs_read_chunk(struct rafs *fs, const struct img_chunk *c, void *buf);

/*
 * Fill the cache with chunks cs[0..n) (for prefetch): chunks the cache
 * already has or another thread is fetching are skipped; runs stored back to
 * back in a blob are fetched with one request of at most max compressed
 * bytes. Needs cache ops with try_begin (-EOPNOTSUPP otherwise). Returns 0
 * or the first error (the cache saw every error).
 */
int rafs_fetch_chunks(struct rafs *fs, const struct img_chunk *cs, size_t n, uint64_t max);

/* Totals across all blobs since open: chunks decoded, bytes read from blobs,
 * chunks that rode along in another chunk's request. */
struct rafs_stats {
	uint64_t chunk_fills, chunk_cache_hits, backend_bytes, backend_reads, errors, merged;
};
void rafs_get_stats(const struct rafs *fs, struct rafs_stats *st);

/*
 * Blob meta (chunk-info array plus its 4096-byte header), in nydus's local
 * cache-file layout: round_up_4k(ci_uncompressed_size) bytes of CI data
 * followed by the header. Parses and validates the header and counts.
 */
struct rafs_blobmeta {
	uint32_t features;
	uint32_t ci_compressor;
	uint32_t ci_entries;
	uint64_t ci_offset, ci_compressed_size, ci_uncompressed_size;
	uint64_t zran_offset, zran_size;
	uint32_t zran_count;
};
int rafs_blobmeta_parse(const void *buf, size_t len, struct rafs_blobmeta *bm);

/*
 * Find the RAFS ToC at the tail of a data blob and extract one entry
 * (e.g. "image.boot"), decompressing it and checking its sha256. *out is
 * malloc'd. -ENOENT when the blob has no ToC or no such entry.
 */
int rafs_toc_extract(const void *blob, size_t len, const char *name, void **out, size_t *outlen);


#include <stdio.h>
/*
 * Print the superblock summary, blob table, tree and per-file chunks (what
 * `nydus-image inspect` shows), as text or JSON, to `out`. Returns 0 or the
 * first error met while walking.
 */
int rafs_inspect(struct rafs *fs, FILE *out, bool json, bool chunks);
/*
 * Read and verify every chunk the tree references (each distinct chunk once).
 * On the first bad one, prints which file, chunk, blob and offset to `out`
 * and returns its error. `verified`/`bytes` report the work done.
 */
int rafs_check(struct rafs *fs, FILE *out, uint64_t *verified, uint64_t *bytes);

#endif
