/* SPDX-License-Identifier: Apache-2.0 */
/* rafs_int.h - internals shared by the rafs/ files. */
#ifndef LAZYIMG_RAFS_INT_H
#define LAZYIMG_RAFS_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "lazyimg/codec.h"
#include "lazyimg/rafs.h"
#include "rafs_ondisk.h"

#define RAFS_DEFAULT_CACHE_SLOTS 16
/* compressed bytes one on-demand request may cover when merging chunks */
#define RAFS_DEFAULT_MERGE_MAX (2u << 20)
#define RAFS_MAX_XATTR_BLOCK (1u << 20)
#define RAFS_MAX_SYMLINK 4096

/* A v6 blob's chunk-info array entry, resolved from the bootstrap chunk
 * table or the blob meta. */
struct rafs_ci {
	uint64_t coff;
	uint64_t uoff;
	uint32_t csize;
	uint32_t usize;
	uint32_t flags;          /* IMG_CHUNK_*; 0x80000000: entry present */
	const uint8_t *digest;   /* into the bootstrap, or NULL */
};
#define RAFS_CI_PRESENT 0x80000000u

struct rafs_blob {
	char id[RAFS_MAX_BLOB_ID + 1];
	uint32_t chunk_count;
	uint32_t features;
	int comp;
	int digester;
	uint64_t csize, usize;
	int ci_comp;
	uint64_t ci_off, ci_csize, ci_usize;

	/* lock order: blob->lock, then nothing (no I/O waits under it except the
	 * one-time open and blob-meta load, which are what it serialises) */
	pthread_mutex_t lock;
	_Atomic int fd;                      /* -1 until opened; then constant */
	struct rafs_ci *_Atomic ci;          /* v6: set once under lock */
	uint32_t nci;                        /* protected by lock until ci is published */
	/* raw chunks whose digest was checked once: later reads go straight to the blob */
	_Atomic uint64_t *verified;          /* chunk_count bits, or NULL when unknown */
	_Atomic long missing_log;            /* rate limit for "blob missing" */
	_Atomic long bad_log;                /* rate limit for decode/digest errors */
};

struct rafs_cslot {
	pthread_mutex_t lock;
	uint8_t *buf;       /* protected by lock */
	size_t cap;         /* protected by lock */
	uint64_t coff;      /* protected by lock */
	uint32_t blob;      /* protected by lock */
	uint32_t len;       /* protected by lock; 0 = empty */
};

struct rafs {
	struct image img;           /* first: image.h downcasts */
	const uint8_t *base;
	uint64_t len;
	void *map;                  /* mmap to unmap, or NULL */
	void *owned;                /* malloc'd buffer to free, or NULL */

	int version;
	uint64_t flags;
	uint32_t chunk_size;
	int comp;
	int digester;
	uint32_t uid, gid;          /* reported when !EXPLICIT_UID_GID */
	bool validate;

	/* v5 */
	uint64_t v5_inodes_count;
	uint64_t v5_itable_off;
	uint32_t v5_itable_entries;
	uint64_t v5_prefetch_off;
	uint32_t v5_prefetch_entries;

	/* v6 */
	uint32_t blkbits;
	uint64_t meta_off;          /* bytes */
	uint64_t root_nid;
	uint64_t max_nid;           /* exclusive */
	uint64_t v6_inos;
	int64_t build_time;
	uint32_t build_time_nsec;
	uint64_t chunk_table_off, chunk_table_size;
	uint64_t v6_prefetch_off;
	uint32_t v6_prefetch_size;

	struct rafs_blob *blobs;
	uint32_t nblobs;

	char *blob_dir;
	const struct img_backend_ops *backend;
	void *backend_ctx;
	const struct img_cache_ops *cache;
	void *cache_ctx;

	struct rafs_cslot *slots;
	size_t nslots;

	_Atomic uint64_t st_fills, st_hits, st_bytes, st_reads, st_errors, st_merged;
	uint64_t merge_max;
	_Atomic long unsupported_log;
};

static inline struct rafs *rafs_from_img(struct image *img)
{
	return (struct rafs *)img;
}

extern const struct image_ops rafs_v5_ops;
extern const struct image_ops rafs_v6_ops;

int rafs_v5_validate(struct rafs *fs);
int rafs_v6_validate(struct rafs *fs);

/* blob.c */
int rafs_blobs_init(struct rafs *fs, const struct rafs_opts *opts);
void rafs_blobs_exit(struct rafs *fs);
/* Copy n bytes at `skip` of chunk c's uncompressed data into dst. */
/* How a read finds the chunks after the one it needs (for merged fetches):
 * fn fills chunk number k of the file being read (0 or negative errno). */
struct rafs_next {
	int (*fn)(struct rafs *fs, void *arg, uint64_t k, struct img_chunk *c);
	void *arg;
	uint64_t k;        /* the number of the chunk being read */
	uint64_t nchunks;  /* chunks in the file */
};
/* next may be NULL (no merging) */
int rafs_chunk_copy(struct rafs *fs, const struct img_chunk *c, uint64_t skip, void *dst, size_t n,
		    const struct rafs_next *next);
/* v6: resolve (blob_index, ci_index) to a chunk via the blob's CI array. */
int rafs_v6_ci_get(struct rafs *fs, uint32_t blob_index, uint32_t ci_index, struct img_chunk *c);
int rafs_blob_id_ok(const char *id, size_t len);
uint64_t rafs_decode_rdev(uint32_t dev);
int rafs_flags_compressor(uint64_t flags);

/* imgops.c: shared by the v5 and v6 image_ops */
static inline int rafs_name_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
	int c = memcmp(a, b, LZ_MIN(alen, blen));

	if (c)
		return c;
	return alen < blen ? -1 : alen > blen;
}
/* a->mode set first: owner (the image's unless it records them), rdev, mtime */
void rafs_attr_fill(const struct rafs *fs, struct img_attr *a, uint32_t uid, uint32_t gid, uint32_t rdev,
		    int64_t mtime, uint32_t mtime_nsec);
/* One xattr as a walk hands it out: name = prefix + suffix (v5: prefix ""). */
typedef int (*rafs_xattr_fn)(void *arg, const char *prefix, const char *suffix, size_t slen,
			     const uint8_t *val, size_t vlen);
struct rafs_xctx {
	char *buf;          /* listxattr: names out; size 0 asks for the size */
	size_t size, used;
	const char *want;   /* getxattr: the name, value into vbuf */
	void *vbuf;
	ssize_t found;      /* start at -ENODATA */
};
int rafs_xlist_fn(void *arg, const char *prefix, const char *suffix, size_t slen, const uint8_t *val,
		  size_t vlen);
/* 1 when found (stops the walk) */
int rafs_xget_fn(void *arg, const char *prefix, const char *suffix, size_t slen, const uint8_t *val,
		 size_t vlen);
/* fn for chunks 0..file->nchunks of a file, fetched through file->fn */
int rafs_each_chunk(struct rafs *fs, const struct rafs_next *file, img_chunk_fn fn, void *arg);
/* blocks: the bootstrap's own, to which the blobs' are added */
void rafs_statfs_fill(const struct rafs *fs, struct img_statfs *st, uint64_t blocks, uint64_t files);
void rafs_img_close(struct image *img);

#endif
