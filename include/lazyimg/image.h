/* SPDX-License-Identifier: Apache-2.0 */
/*
 * image.h - the one interface between the FUSE layer (fs/) and an image
 * format (rafs/, stargz/). Inode numbers are the image's own; the image
 * guarantees the root is IMG_ROOT_INO so fs/ maps it to FUSE_ROOT_ID 1:1.
 *
 * Thread-safety: every op may be called concurrently from any thread. Parsed
 * metadata is immutable after open; ops return 0/length or a negative errno.
 */
#ifndef LAZYIMG_IMAGE_H
#define LAZYIMG_IMAGE_H

#include "lazyimg/lz.h"

#define IMG_ROOT_INO 1
#define IMG_NAME_MAX 255

struct img_attr {
	uint64_t ino;
	uint64_t size;
	uint64_t blocks; /* 512-byte units */
	uint32_t mode;   /* st_mode: type and permission bits */
	uint32_t nlink;
	uint32_t uid;
	uint32_t gid;
	uint64_t rdev;   /* dev_t as makedev() builds it */
	int64_t mtime;   /* seconds */
	uint32_t mtime_nsec;
};

struct img_dirent {
	const char *name;  /* not NUL-terminated */
	size_t name_len;
	uint64_t ino;
	uint64_t next_off; /* offset to pass to readdir to continue after this entry */
	uint32_t type;     /* S_IF* type bits */
};

/* Return non-zero to stop the walk (e.g. the reply buffer is full). */
typedef int (*img_filldir_fn)(void *arg, const struct img_dirent *de);

/* One chunk of a file's data as the format stores it. */
struct img_chunk {
	uint64_t file_offset;
	uint64_t compressed_offset;
	uint64_t uncompressed_offset;
	uint32_t compressed_size;
	uint32_t uncompressed_size;
	uint32_t blob_index;
	uint32_t index;   /* chunk index within its blob */
	uint32_t flags;   /* IMG_CHUNK_* */
	const uint8_t *digest; /* 32 bytes, or NULL when the image has none */
};
#define IMG_CHUNK_COMPRESSED 0x1
#define IMG_CHUNK_HOLE       0x2  /* reads as zeros; no blob data */
#define IMG_CHUNK_BATCH      0x8
#define IMG_CHUNK_ZRAN       0x20
#define IMG_CHUNK_ENCRYPTED  0x40

typedef int (*img_chunk_fn)(void *arg, const struct img_chunk *c);

/*
 * Where chunk data comes from: a format's reads go through these when the
 * caller provides them (registry backends, the blob cache). Formats that
 * index chunks by blob give the blob's index and id ("sha256" hex for
 * registry layers); `off` and `len` are compressed-blob coordinates.
 */
struct img_backend_ops {
	/* Read exactly len bytes at off of blob `blob_id`; 0 or negative errno. */
	int (*read)(void *ctx, unsigned blob_index, const char *blob_id, void *buf, size_t len,
		    uint64_t off);
};

/*
 * A cache of verified, uncompressed chunks in front of the backend. begin()
 * returns 1 when it filled buf from the cache, 0 when the caller must fetch
 * (and then must call done() with the verified data or the error: this is
 * the single-flight contract), or a negative errno. Chunks are identified by
 * (blob_index, c->index) and stored at c->uncompressed_offset.
 */
struct img_cache_ops {
	int (*begin)(void *ctx, unsigned blob_index, const struct img_chunk *c, void *buf);
	void (*done)(void *ctx, unsigned blob_index, const struct img_chunk *c, const void *buf, int err);
	/* Optional, never waits: 1 when the caller now owns the fetch of c (and
	 * must call done()), 0 when it is not needed (ready, or another thread
	 * fetches it), or a negative errno. Lets a reader fetch neighbours of a
	 * chunk in the same request. */
	int (*try_begin)(void *ctx, unsigned blob_index, const struct img_chunk *c);
};

struct img_statfs {
	uint64_t blocks, files;
	uint32_t bsize;
};

struct image;

struct image_ops {
	int (*getattr)(struct image *img, uint64_t ino, struct img_attr *attr);
	/* -ENOENT when absent; fills attr of the child on success */
	int (*lookup)(struct image *img, uint64_t dir, const char *name, size_t len,
		      struct img_attr *attr);
	/* Entries from `off` (0 = start, including "." and ".."); offsets are stable. */
	int (*readdir)(struct image *img, uint64_t dir, uint64_t off, img_filldir_fn fill, void *arg);
	/* Copies at most size bytes, returns the full target length. */
	ssize_t (*readlink)(struct image *img, uint64_t ino, char *buf, size_t size);
	/* size 0 asks for the length needed; -ERANGE when buf is too small. */
	ssize_t (*listxattr)(struct image *img, uint64_t ino, char *buf, size_t size);
	ssize_t (*getxattr)(struct image *img, uint64_t ino, const char *name, void *buf, size_t size);
	/* Reads never return wrong bytes: a decode/digest failure is -EIO-class. */
	ssize_t (*read)(struct image *img, uint64_t ino, void *buf, size_t size, uint64_t off);
	int (*chunks)(struct image *img, uint64_t ino, img_chunk_fn fn, void *arg);
	void (*statfs)(struct image *img, struct img_statfs *st);
	void (*close)(struct image *img);
};

/* Embedded as the first member of each format's image object. */
struct image {
	const struct image_ops *ops;
	const char *format; /* "rafs-v5", "rafs-v6", "estargz" */
};

static inline void img_close(struct image *img)
{
	if (img)
		img->ops->close(img);
}

#endif
