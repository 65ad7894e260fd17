/* SPDX-License-Identifier: Apache-2.0 */
/* estargz_int.h - internals shared by the stargz/ files. */
#ifndef LAZYIMG_ESTARGZ_INT_H
#define LAZYIMG_ESTARGZ_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "lazyimg/codec.h"
#include "lazyimg/estargz.h"

#define ES_DEFAULT_CACHE_SLOTS 16
#define ES_MAX_POOL (UINT32_MAX - 1u)   /* string pool offsets are 32-bit */
#define ES_NONE UINT32_MAX

/* One data entry (reg with data, or chunk) of a layer, in TOC order. */
struct es_chunk {
	uint64_t offset;      /* blob offset of the gzip member / zstd frame holding it */
	uint64_t next;        /* nextOffset: end of the compressed range to fetch */
	uint64_t file_off;    /* chunkOffset within the file */
	uint64_t space_off;   /* place in the layer's synthetic uncompressed space */
	uint32_t size;        /* effective chunk size (uncompressed bytes) */
	uint32_t inner;       /* innerOffset: bytes to skip in the inflated member */
	uint8_t digest[32];
	uint8_t has_digest;   /* 1: chunkDigest; 2: the file's digest (unchunked file) */
};

#define ES_I_OPAQUE   0x1   /* non-merged layer: the directory had .wh..wh..opq */

struct es_inode {
	uint64_t size;
	int64_t mtime;
	uint64_t rdev;
	uint32_t mtime_nsec;
	uint32_t mode;        /* S_IFMT | 07777 */
	uint32_t uid, gid;
	uint32_t nlink;
	uint32_t layer;
	uint32_t data, ndata; /* dir: first dirent, count; reg: first chunk, count; symlink: pool off, len */
	uint32_t xattr;       /* pool offset of nxattr packed records */
	uint16_t nxattr;
	uint16_t flags;       /* ES_I_* */
	uint32_t parent;      /* final: parent's inode number (dirs) */
	uint32_t name_de;     /* final: a dirent naming it (messages); ES_NONE for the root */
	uint32_t fino;        /* build: final inode number, 0 = unreachable */
};

struct es_dirent {
	uint32_t name;        /* pool offset */
	uint32_t ino;         /* final inode number */
	uint16_t len;
	uint16_t pad;
};

struct es_layer {
	char id[65];
	uint64_t blob_size;
	uint64_t limit;       /* data ends before this: the TOC offset, or blob_size */
	enum estargz_kind kind;
	struct es_chunk *chunks;
	uint32_t nchunks, chunks_cap;
	uint64_t space;
	uint64_t entries;
	_Atomic long bad_log;
};

struct es_slot {
	pthread_mutex_t lock;
	uint8_t *buf;         /* protected by lock */
	size_t cap;           /* protected by lock */
	uint32_t layer;       /* protected by lock */
	uint32_t index;       /* protected by lock */
	uint32_t len;         /* protected by lock; 0 = empty */
};

struct estargz {
	struct image img;     /* first: image.h downcasts */
	struct es_layer *layers;
	unsigned nlayers;
	bool merge, validate;

	char *pool;
	size_t pool_len, pool_cap;

	struct es_inode *inodes;   /* final: inode number i at index i - 1 */
	uint32_t ninodes;
	struct es_dirent *dirents;
	uint32_t ndirents;
	uint64_t *prefetch;
	size_t nprefetch;
	struct estargz_info info;

	const struct img_backend_ops *backend;
	void *backend_ctx;
	const struct img_cache_ops *cache;
	void *cache_ctx;
	int fd;               /* estargz_open_file's blob, or -1 */

	struct es_slot *slots;
	size_t nslots;

	_Atomic uint64_t st_fills, st_hits, st_bytes, st_reads, st_errors, st_merged;
	_Atomic long read_log;
};

/* toc.c: parse every layer's TOC and build the final tree into es. */
int es_build(struct estargz *es, const struct estargz_layer *layers, size_t n);
/* Pool helpers: append bytes, returning the offset (or -ENOMEM / -EFBIG). */
int64_t es_pool_add(struct estargz *es, const void *p, size_t len);

/* image.c */
extern const struct image_ops es_image_ops;
const struct es_inode *es_inode_get(const struct estargz *es, uint64_t ino);
/* "/a/b" of an inode for messages (never fails; truncated when long). */
void es_inode_path(const struct estargz *es, uint64_t ino, char *buf, size_t size);

/* chunk.c */
int es_chunks_init(struct estargz *es, const struct estargz_opts *o);
void es_chunks_exit(struct estargz *es);
void es_fill_img_chunk(const struct estargz *es, uint32_t layer, uint32_t index, struct img_chunk *c);
/* Copy n bytes at skip of the chunk into dst, through the slot cache. */
int es_chunk_copy(struct estargz *es, uint32_t layer, uint32_t index, uint64_t skip, void *dst, size_t n);

#endif
