/* SPDX-License-Identifier: Apache-2.0 */
/*
 * estargz.h - eStargz, legacy stargz (CRFS) and stargz-snapshotter's
 * zstd:chunked layers: footer, TOC, and the image interface (image.h) over
 * one layer or a merged stack of layers. Data is fetched lazily, one gzip
 * member (zstd frame) per chunk, through the caller's backend and cache ops.
 *
 * The TOC is the root of trust: the caller compares estargz_toc_digest()
 * with the layer's containerd.io/snapshot/stargz/toc.digest annotation before
 * calling estargz_open(). Every chunk is then verified against its
 * chunkDigest (or the file's digest for an unchunked file) when validating.
 *
 * Name rules (documented choices; the format doc leaves them open):
 *  - names are cleaned ("./a//b/" -> "a/b"); a name or hardlink target with a
 *    ".." component, a NUL byte, a component over 255 bytes, or a leading "/"
 *    (other than one naming the root itself) refuses the whole TOC with
 *    -EFSCORRUPTED and a message naming the entry: a TOC that tries to
 *    escape is hostile, not merely odd;
 *  - duplicate names: the later entry wins (tar extraction and the Go
 *    reader's map overwrite); a directory replacing a directory keeps its
 *    children and takes the new metadata; anything else replacing a directory
 *    drops its subtree;
 *  - a hardlink names an earlier entry of the same layer that is not a
 *    directory (symlinks, devices and fifos may be hard-linked, as in tar);
 *    a missing, later or directory target is -EFSCORRUPTED. Because targets
 *    are resolved when the link is met, a cycle cannot form;
 *  - a path below a non-directory of the same layer is -EFSCORRUPTED (below
 *    a lower layer's non-directory, in a merge, it replaces it);
 *  - .prefetch.landmark and .no.prefetch.landmark are hidden in the root only.
 *
 * Thread safety: as image.h; the estargz_* calls after open may be made from
 * any thread.
 */
#ifndef LAZYIMG_ESTARGZ_H
#define LAZYIMG_ESTARGZ_H

#include "lazyimg/image.h"

enum estargz_kind { ESTARGZ_GZIP = 1, ESTARGZ_LEGACY, ESTARGZ_ZSTD_CHUNKED };

#define ESTARGZ_TAIL_MAX 64            /* blob tail bytes enough for any footer kind (51, 47, 8+40) */
#define ESTARGZ_MAX_TOC (64u << 20)    /* cap on the compressed and on the decompressed TOC */
#define ESTARGZ_FOOTER_SIZE 51
#define ESTARGZ_LEGACY_FOOTER_SIZE 47
#define ESTARGZ_ZSTD_FOOTER_SIZE 48    /* skippable-frame header (8) + 40-byte payload */
#define ESTARGZ_MAX_ENTRIES (1u << 22) /* TOC entries per layer */
#define ESTARGZ_MAX_LAYERS 128
#define ESTARGZ_MAX_CHUNK (256u << 20) /* uncompressed bytes of one chunk (and innerOffset) */
#define ESTARGZ_MAX_FETCH (512u << 20) /* compressed bytes fetched for one chunk */
#define ESTARGZ_MAX_PATH 4096
#define ESTARGZ_MAX_XATTRS 128         /* per entry */
#define ESTARGZ_MAX_XATTR_VALUE 65536

struct estargz;

struct estargz_footer {
	enum estargz_kind kind;
	uint64_t toc_offset;
	uint64_t toc_size;     /* compressed bytes of the TOC member/frame: [toc_offset, toc_offset+toc_size) */
	/* additions */
	uint32_t footer_size;  /* 51, 47 or 48 bytes at the end of the blob */
	uint64_t toc_usize;    /* zstd:chunked: uncompressed TOC size from the footer; 0 otherwise */
};

/*
 * tail = the last min(blob_size, ESTARGZ_TAIL_MAX) bytes of the blob (len
 * bytes; any len >= the footer's size works). -EMEDIUMTYPE, without logging,
 * if it is not eStargz/stargz/zstd:chunked at all; -EOPNOTSUPP (logged) for an
 * external-TOC eStargz footer; -EFSCORRUPTED (logged) for a broken footer.
 */
int estargz_footer_parse(const void *tail, size_t len, uint64_t blob_size, struct estargz_footer *f);

/*
 * member = the bytes [toc_offset, toc_offset+toc_size). gzip kinds: inflate
 * exactly one gzip member, whose tar stream must begin with the entry
 * stargz.index.json; zstd:chunked: the zstd-compressed JSON. Out: malloc'd
 * JSON (NUL-terminated, *json_len excludes the NUL). -EFSCORRUPTED (logged)
 * for anything malformed, -EFBIG over ESTARGZ_MAX_TOC.
 */
int estargz_toc_decode(const struct estargz_footer *f, const void *member, size_t len, char **json,
		       size_t *json_len);

/* "sha256:<64 hex>" of the TOC JSON bytes, to compare with the layer's
 * containerd.io/snapshot/stargz/toc.digest annotation. Returns 0. */
int estargz_toc_digest(const char *json, size_t len, char out[72]);

struct estargz_layer {
	const char *blob_id;     /* layer digest hex (64 chars, no "sha256:"); passed to the backend as blob_id */
	uint64_t blob_size;
	enum estargz_kind kind;
	const char *toc_json;    /* borrowed during estargz_open only */
	size_t toc_len;
	/* addition: estargz_footer.toc_offset, 0 if unknown. Bounds data offsets
	 * and ends the last chunk's fetch before the TOC (for zstd:chunked before
	 * the TOC's skippable-frame header) instead of at blob_size. */
	uint64_t toc_offset;
};

struct estargz_opts {
	const struct img_backend_ops *backend; /* NULL: no data (reads fail with -EIO) */
	void *backend_ctx;
	const struct img_cache_ops *cache;     /* may be NULL */
	void *cache_ctx;
	/* true: layers[0] is the lowest; whiteouts and opaque dirs applied, upper
	 * wins. false (only valid with n == 1): the layer as it is, whiteouts in
	 * overlayfs form (char dev 0:0 for .wh.NAME, trusted.overlay.opaque=y on
	 * a directory holding .wh..wh..opq). */
	bool merge;
	bool validate;           /* verify chunk digests on every fetch */
	size_t chunk_cache_slots; /* decoded-chunk cache slots; 0: default */
};

/*
 * Parse every layer's TOC and build the tree (yajl callback parser straight
 * into compact records: about 190 bytes per entry at the peak, see
 * tests/unit/test_estargz.c). -EFSCORRUPTED (one log line naming the layer,
 * entry and field), -EOPNOTSUPP (a chunk over ESTARGZ_MAX_CHUNK), -EFBIG (a
 * TOC over ESTARGZ_MAX_TOC), -EINVAL (bad arguments), -ENOMEM. A data entry
 * without a digest (legacy chunked files) opens, but reads of it fail with
 * -EBADMSG while validating. Inode numbers are assigned breadth-first from
 * IMG_ROOT_INO and are stable for a given TOC (and stack of TOCs).
 */
int estargz_open(const struct estargz_layer *layers, size_t n, const struct estargz_opts *o,
		 struct estargz **out);
void estargz_close(struct estargz *es);
struct image *estargz_image(struct estargz *es);   /* image->format = "estargz" */

/*
 * Cache geometry of layer idx: every data entry (reg or chunk) of the layer,
 * in TOC order, gets chunk index 0..chunk_count-1 and a place in a synthetic
 * uncompressed space (chunks laid end to end, space_size bytes in all). These
 * are what img_chunk.index / .uncompressed_offset carry to the cache ops.
 */
struct estargz_blob_info {
	char id[65];
	uint64_t space_size;
	uint32_t chunk_count;
};
int estargz_get_blob(const struct estargz *es, unsigned idx, struct estargz_blob_info *bi);
unsigned estargz_blob_count(const struct estargz *es);

/* Inode numbers of the files before .prefetch.landmark (in blob order, lowest
 * layer first, files shadowed in a merge left out); none for a layer with
 * .no.prefetch.landmark or no landmark. Returns the count written. */
size_t estargz_prefetch_list(const struct estargz *es, uint64_t *inos, size_t max);

/* Fetch (through the cache ops if any), inflate and verify one chunk, as the
 * chunks op describes it, into buf (c->uncompressed_size bytes). -EBADMSG on a
 * digest mismatch, -EFSCORRUPTED for a chunk this image does not have or
 * data that does not inflate. */
int estargz_read_chunk(struct estargz *es, const struct img_chunk *c, void *buf);

/* Convenience for tests and local use: a whole blob file on disk, read with
 * pread. The blob id is the file's sha256. o->backend is ignored. */
int estargz_open_file(const char *path, const struct estargz_opts *o, struct estargz **out);

struct estargz_stats {
	uint64_t chunk_fills, chunk_cache_hits, backend_bytes, backend_reads, errors;
	uint64_t merged;   /* chunks fetched in another chunk's request */
};
void estargz_get_stats(const struct estargz *es, struct estargz_stats *st);

/* Counts of what the merged tree holds (reachable inodes by type), for
 * tests and `inspect`-style tools. */
struct estargz_info {
	uint64_t inodes, dirs, regs, symlinks, chrs, blks, fifos;
	uint64_t hardlink_names;   /* names beyond the first of each non-directory */
	uint64_t toc_entries;      /* over all layers, including chunk entries */
};
void estargz_get_info(const struct estargz *es, struct estargz_info *info);

/* Choice of inflater for gzip chunks (the default is libdeflate, which
 * measured faster; zlib is kept as the fallback and for comparison). */
void estargz_set_inflater(bool use_zlib);

#endif
