/* SPDX-License-Identifier: Apache-2.0 */
/*
 * snap.h - the mount/usage layer: open an image by registry reference
 * (bootstrap fetched and cached, chunks fetched lazily through the blob
 * cache), the job nydus-snapshotter's pkg/filesystem does with nydusd.
 */
#ifndef LAZYIMG_SNAP_H
#define LAZYIMG_SNAP_H

#include "lazyimg/image.h"
#include "lazyimg/reg.h"

struct snap_source_opts {
	const char *cache_dir;      /* blob cache and bootstraps; required */
	uint64_t cache_max;         /* bytes, 0 = no cap */
	struct reg_opts reg;
	bool validate;              /* verify chunk digests when filling the cache */
	int fetch_timeout_ms;       /* how long a reader waits for a chunk; default 60 s */
};

struct snap_stats {
	uint64_t backend_bytes, backend_requests, cache_hits, cache_misses, prefetch_bytes;
	uint64_t chunk_errors;
};

struct snap_source;

/* Resolve REF, fetch its bootstrap (once per manifest digest) and open it. */
int snap_source_open(const char *ref, const struct snap_source_opts *opts, struct snap_source **out);
struct image *snap_source_image(struct snap_source *s);
const char *snap_source_digest(const struct snap_source *s);
void snap_source_stats(const struct snap_source *s, struct snap_stats *st);
void snap_source_close(struct snap_source *s);

#endif
