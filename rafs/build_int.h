/* SPDX-License-Identifier: Apache-2.0 */
/* build_int.h - the in-memory tree shared by the RAFS builder, merger and writers. */
#ifndef LAZYIMG_BUILD_INT_H
#define LAZYIMG_BUILD_INT_H

#include "lazyimg/codec.h"
#include "lazyimg/rafs_build.h"
#include "rafs_int.h"

struct bx {
	char *name;
	uint8_t *value;
	uint32_t len;
};

/* Data shared by all links of one inode. */
struct bdata {
	uint32_t *chunks;        /* ids into b->chunks, positional (chunk k at k*chunk_size) */
	uint32_t nchunks;
	uint32_t links;          /* surviving links, counted at layout */
	struct bnode *owner;     /* first link met at layout: it holds the inode */
	uint8_t digest[32];      /* v5 inode digest */
};

struct bnode {
	char *name;
	uint16_t name_len;
	struct bnode *parent;
	struct bnode **kids;
	uint32_t nkids, kcap;
	bool kids_sorted;
	uint32_t mode, uid, gid;
	uint64_t size;
	int64_t mtime;
	uint32_t mtime_nsec;
	uint32_t rmajor, rminor;
	char *target;            /* symlink */
	struct bx *xattrs;
	uint32_t nx;
	struct bdata *data;      /* regular files; shared between hard links */
	int layer;               /* merge: which layer put it here */
	bool deleted;            /* merge: removed by a whiteout */
	/* layout */
	uint64_t index;          /* v5 table index */
	uint64_t ino;            /* v5 i_ino / v6 nid of the owning inode */
	uint64_t off;            /* v6: byte offset of the inode */
	uint32_t xsize;          /* v6 xattr area */
	uint32_t layout;         /* v6 data layout */
	uint64_t dsize;          /* v6 dir data size */
	uint64_t blk;            /* v6 first plain data block */
	uint8_t digest[32];      /* v5 */
	uint32_t nsubdirs;
};

struct bchunk {
	uint8_t digest[32];
	uint64_t coff, uoff;
	uint32_t csize, usize;
	uint32_t blob;
	uint32_t index;          /* index within its blob */
	bool compressed;
};

struct bblob {
	char id[RAFS_MAX_BLOB_ID + 1];
	uint32_t chunk_count;
	uint32_t features;
	int comp;
	uint64_t csize, usize;
	int ci_comp;
	uint64_t ci_off, ci_csize, ci_usize;
};

struct builder {
	struct rafs_build_opts o;
	struct bnode *root;
	uint64_t nentries;
	struct bchunk *chunks;
	uint32_t nchunks, ccap;
	uint32_t *dedup;         /* open addressing: chunk id + 1, 0 = empty */
	uint32_t dcap;
	struct bblob *blobs;
	uint32_t nblobs;
	/* convert: the blob being written */
	int blob_fd;
	uint64_t blob_off, blob_uoff;
	void *sha;               /* EVP_MD_CTX */
	uint8_t *cbuf, *rbuf;
	size_t cbuf_cap;
	struct rafs_build_result res;
	/* prefetch */
	struct bnode **prefetch;
	uint32_t nprefetch;
	/* progress */
	uint64_t last_progress_ns, start_ns;
	uint64_t src_size;
	void *tar;               /* struct lz_tar while reading one */
	struct bnode **dead;     /* detached by merges; freed with the builder */
	size_t ndead;
};

struct bnode *bnode_new(struct builder *b, struct bnode *parent, const char *name, size_t len);
struct bnode *bnode_find(struct bnode *dir, const char *name, size_t len);
int bnode_add_kid(struct bnode *dir, struct bnode *kid);
void bnode_remove_kid(struct bnode *dir, struct bnode *kid);
void bnode_sort(struct bnode *n);
void builder_free(struct builder *b);
/* Double the chunk dedup table (4096 slots at first), rehashing by key. */
int builder_dedup_grow(struct builder *b, uint32_t (*key)(const struct bchunk *c));
/* The next chunk entry, b->chunks[b->nchunks], zeroed; the caller counts it. NULL: no memory. */
struct bchunk *builder_chunk_slot(struct builder *b);
struct bdata *rafs_bdata_new(void);
int builder_bury(struct builder *b, struct bnode *n);
int bx_add(struct bnode *n, const char *name, const void *val, size_t len);
struct bnode *bnode_lookup_path(struct bnode *root, const char *path);

int rafs_write_v5(struct builder *b, uint8_t **out, size_t *len);
int rafs_write_v6(struct builder *b, uint8_t **out, size_t *len);
int rafs_write_file(const char *path, const void *buf, size_t len);
int rafs_build_prefetch(struct builder *b, const char *list);

#endif
