/* SPDX-License-Identifier: Apache-2.0 */
#define LZ_MOD "source"
#include "lazyimg/bcache.h"
#include "lazyimg/estargz.h"
#include "snap_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

/* a FUSE worker never waits longer than this for another thread's fetch */
#define SNAP_DEFAULT_FETCH_TIMEOUT_MS 60000

static _Thread_local bool tl_prefetching;

void snap_cache_set_prefetch_thread(bool on)
{
	tl_prefetching = on;
}

static struct bcache_blob *blob_for(struct snap_source *s, unsigned bi, const struct img_chunk *c)
{
	struct bcache_blob *b;

	if (!s->blobs || bi >= s->nblobs || !(b = s->blobs[bi]))
		return NULL;
	/* a chunk the cache geometry cannot hold is fetched uncached */
	if (c->index >= s->blob_chunks[bi] ||
	    !lz_range_ok(c->uncompressed_offset, c->uncompressed_size, s->blob_space[bi]))
		return NULL;
	return b;
}

static int cache_begin(void *ctx, unsigned bi, const struct img_chunk *c, void *buf)
{
	struct snap_source *s = ctx;
	struct bcache_blob *b = blob_for(s, bi, c);
	int ret;

	if (!tl_prefetching)
		atomic_fetch_add(&s->ondemand, 1);
	if (!b) {
		atomic_fetch_add(&s->misses, 1);
		return 0;
	}
	ret = bcache_chunk_claim(b, c->index, s->o.fetch_timeout_ms ? s->o.fetch_timeout_ms :
						       SNAP_DEFAULT_FETCH_TIMEOUT_MS);
	if (ret == 0) {
		ret = bcache_read(b, buf, c->uncompressed_size, c->uncompressed_offset);
		if (!tl_prefetching)
			atomic_fetch_sub(&s->ondemand, 1);
		if (ret)
			return ret;
		atomic_fetch_add(&s->hits, 1);
		return 1;
	}
	if (ret == 1) {
		atomic_fetch_add(&s->misses, 1);
		return 0;
	}
	if (!tl_prefetching)
		atomic_fetch_sub(&s->ondemand, 1);
	if (ret == -ETIMEDOUT)
		lz_err("blob %d chunk %u: another reader's fetch did not finish in time", (int)bi, c->index);
	return ret;
}

static int cache_try_begin(void *ctx, unsigned bi, const struct img_chunk *c)
{
	struct snap_source *s = ctx;
	struct bcache_blob *b = blob_for(s, bi, c);
	int ret;

	if (!b)
		return 0; /* uncached: nothing to coordinate, so no merging either */
	ret = bcache_chunk_claim(b, c->index, 0);
	if (ret != 1)
		return ret == -ETIMEDOUT ? 0 : ret; /* ready, or another thread's */
	/* the same accounting begin() does for an owned fetch: done() undoes it */
	if (!tl_prefetching)
		atomic_fetch_add(&s->ondemand, 1);
	atomic_fetch_add(&s->misses, 1);
	return 1;
}

static void cache_done(void *ctx, unsigned bi, const struct img_chunk *c, const void *buf, int err)
{
	struct snap_source *s = ctx;
	struct bcache_blob *b = blob_for(s, bi, c);

	if (!tl_prefetching)
		atomic_fetch_sub(&s->ondemand, 1);
	if (err)
		atomic_fetch_add(&s->errors, 1);
	else if (tl_prefetching)
		atomic_fetch_add(&s->prefetch_bytes, c->compressed_size);
	if (!b)
		return;
	if (err)
		bcache_chunk_abort(b, c->index, err);
	else if (bcache_chunk_fill(b, c->index, buf, c->uncompressed_size, c->uncompressed_offset))
		lz_warn("chunk %u could not be stored in the cache; it will be fetched again", c->index);
}

static const struct img_cache_ops cache_ops = {
	.begin = cache_begin,
	.done = cache_done,
	.try_begin = cache_try_begin,
};

int snap_cache_init(struct snap_source *s)
{
	char dir[4200];
	int ret;

	if (s->o.shared_cache) {
		s->cache = s->o.shared_cache;
		return 0;
	}
	snprintf(dir, sizeof(dir), "%s/blobs", s->o.cache_dir);
	ret = bcache_open(dir, s->o.cache_max, &s->cache);
	if (ret == -EBUSY)
		lz_err("cache directory %s is locked by another process", dir);
	else if (ret)
		lz_err("cannot open the blob cache in %s: %s", dir, lz_strerror(ret));
	return ret;
}

void snap_cache_rafs_opts(struct snap_source *s, struct rafs_opts *ro)
{
	ro->cache = &cache_ops;
	ro->cache_ctx = s;
}

const struct img_cache_ops *snap_cache_ops(void)
{
	return &cache_ops;
}

/* Cache geometry of blob i of either format: id, uncompressed space, chunks. */
static void blob_geometry(struct snap_source *s, uint32_t i, char *id, size_t idlen, uint64_t *space,
			  uint32_t *chunks)
{
	if (s->es) {
		struct estargz_blob_info bi;

		estargz_get_blob(s->es, i, &bi);
		snprintf(id, idlen, "%s", bi.id);
		*space = bi.space_size;
		*chunks = bi.chunk_count;
	} else {
		struct rafs_blob_info bi;

		rafs_get_blob(s->fs, i, &bi);
		snprintf(id, idlen, "%s", bi.id);
		*space = bi.uncompressed_size;
		*chunks = bi.chunk_count;
	}
}

int snap_cache_attach(struct snap_source *s)
{
	uint32_t nblobs;

	if (s->es) {
		nblobs = estargz_blob_count(s->es);
	} else {
		struct rafs_info in;

		rafs_get_info(s->fs, &in);
		nblobs = in.nblobs;
	}
	s->nblobs = nblobs;
	s->blobs = lz_calloc(nblobs ? nblobs : 1, sizeof(*s->blobs));
	s->blob_space = lz_calloc(nblobs ? nblobs : 1, sizeof(*s->blob_space));
	s->blob_chunks = lz_calloc(nblobs ? nblobs : 1, sizeof(*s->blob_chunks));
	if (!s->blobs || !s->blob_space || !s->blob_chunks)
		return -ENOMEM;
	for (uint32_t i = 0; i < nblobs; i++) {
		char id[RAFS_MAX_BLOB_ID + 1];
		uint64_t space;
		uint32_t chunks;
		int ret;

		blob_geometry(s, i, id, sizeof(id), &space, &chunks);
		if (!chunks || !space) {
			lz_warn("blob %s: no chunk count or size known; it is read uncached", id);
			continue;
		}
		ret = bcache_blob_open(s->cache, id, space, chunks, &s->blobs[i]);
		if (ret) {
			lz_err("blob %s: cannot open its cache files: %s", id, lz_strerror(ret));
			return ret;
		}
		s->blob_space[i] = space;
		s->blob_chunks[i] = chunks;
	}
	return 0;
}

void snap_cache_stats(const struct snap_source *s, struct snap_stats *st)
{
	st->cache_hits = atomic_load(&s->hits);
	st->cache_misses = atomic_load(&s->misses);
	st->prefetch_bytes = atomic_load(&s->prefetch_bytes);
	st->chunk_errors = atomic_load(&s->errors);
}

void snap_cache_exit(struct snap_source *s)
{
	for (uint32_t i = 0; s->blobs && i < s->nblobs; i++)
		bcache_blob_put(s->blobs[i]);
	free(s->blobs);
	free(s->blob_space);
	free(s->blob_chunks);
	s->blobs = NULL;
	if (s->cache != s->o.shared_cache)
		bcache_close(s->cache);
	s->cache = NULL;
}
