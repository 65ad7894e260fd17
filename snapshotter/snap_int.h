/* SPDX-License-Identifier: Apache-2.0 */
#ifndef LAZYIMG_SNAP_INT_H
#define LAZYIMG_SNAP_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "lazyimg/rafs.h"
#include "lazyimg/snap.h"

struct bcache;
struct bcache_blob;
struct estargz;

struct snap_source {
	struct snap_source_opts o;
	struct reg_ref ref;
	struct reg_client *reg;
	struct reg_manifest man;
	struct rafs *fs;               /* a nydus image, or */
	struct estargz *es;            /* an eStargz image */
	struct bcache *cache;
	struct bcache_blob **blobs;    /* per rafs blob index, opened at attach; NULL: uncached */
	uint64_t *blob_space;          /* cache geometry per blob */
	uint32_t *blob_chunks;
	uint32_t nblobs;
	_Atomic uint64_t hits, misses, errors, prefetch_bytes;
	_Atomic int ondemand;          /* reader fetches in flight: prefetch yields to them */
	pthread_t prefetch_th;
	bool prefetch_running;
	_Atomic bool stop;
};

/* eStargz images (esgz.c) */
bool snap_manifest_is_nydus(const struct reg_manifest *m);
int snap_esgz_open(struct snap_source *s, const struct img_backend_ops *backend,
		   const struct img_cache_ops *cache);
/* The header line of a TOC kept in the cache dir ("lazyimg-toc 1 KIND OFF SIZE
 * USIZE sha256:HEX\n", at most SNAP_TOC_HEADER_MAX bytes with the newline):
 * the footer's facts and the digest the JSON after it must have. Checked
 * against blob_size; -EFSCORRUPTED for anything else. Exposed for fuzzing. */
#define SNAP_TOC_HEADER_MAX 256
struct estargz_footer;
int snap_toc_header_parse(const char *buf, size_t len, uint64_t blob_size, struct estargz_footer *f,
			  char want[72], size_t *hdr_len);

/* cache glue (cache.c) */
const struct img_cache_ops *snap_cache_ops(void);
int snap_cache_init(struct snap_source *s);
void snap_cache_rafs_opts(struct snap_source *s, struct rafs_opts *ro);
int snap_cache_attach(struct snap_source *s);
void snap_cache_stats(const struct snap_source *s, struct snap_stats *st);
void snap_cache_exit(struct snap_source *s);
void snap_cache_set_prefetch_thread(bool on);
int snap_prefetch_start(struct snap_source *s);
void snap_prefetch_stop(struct snap_source *s);

#endif
