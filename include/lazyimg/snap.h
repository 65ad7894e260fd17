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

struct bcache;

struct snap_source_opts {
	const char *cache_dir;      /* blob cache and bootstraps; required */
	uint64_t cache_max;         /* bytes, 0 = no cap */
	struct reg_opts reg;
	bool validate;              /* verify chunk digests when filling the cache */
	int fetch_timeout_ms;       /* how long a reader waits for a chunk; default 60 s */
	int prefetch;               /* SNAP_PREFETCH_*; default: the image's prefetch table */
	const char *prefetch_files; /* with SNAP_PREFETCH_LIST: paths, one per line */
	/* A blob cache shared by several sources in one process (borrowed; must
	 * outlive them). NULL: snap_source_start opens <cache_dir>/blobs itself,
	 * which only one source per process can do (the directory is flocked). */
	struct bcache *shared_cache;
	/* eStargz only: serve just this layer ("sha256:..."), whiteouts shown in
	 * overlayfs form, as a snapshotter needs. NULL: all layers merged. */
	const char *layer;
	/* compressed bytes one merged fetch may cover (RAFS: rafs_opts.merge_max);
	 * 0: default; 1: one chunk per request */
	uint64_t merge_max;
};

enum { SNAP_PREFETCH_TABLE = 0, SNAP_PREFETCH_NONE, SNAP_PREFETCH_LIST, SNAP_PREFETCH_ALL };

struct snap_stats {
	uint64_t backend_bytes, backend_requests, cache_hits, cache_misses, prefetch_bytes;
	uint64_t chunk_errors;
};

struct snap_source;

/* Resolve REF, fetch its bootstrap (once per manifest digest) and open it. */
int snap_source_open(const char *ref, const struct snap_source_opts *opts, struct snap_source **out);
/*
 * Open the blob cache and start background work (threads). Call it in the
 * process that will serve the mount: after a daemonising fork(), never
 * before (threads do not survive fork). Until then reads go uncached.
 */
int snap_source_start(struct snap_source *s);
struct image *snap_source_image(struct snap_source *s);
const char *snap_source_digest(const struct snap_source *s);
void snap_source_stats(const struct snap_source *s, struct snap_stats *st);
void snap_source_close(struct snap_source *s);

/*
 * Recording (snapshotter/record.c): an image wrapper that notes the regular
 * files a workload reads, in first-read order, and writes them at flush as a
 * prefetch list (one path per line, the --prefetch-files format) to
 * out_file and/or keep_file (either may be NULL). The inner image is
 * borrowed and must outlive the recorder; closing the wrapper image leaves
 * it open.
 */
struct snap_record;
int snap_record_new(struct image *inner, const char *out_file, const char *keep_file,
		    struct snap_record **out);
struct image *snap_record_image(struct snap_record *r);
size_t snap_record_count(struct snap_record *r);
int snap_record_flush(struct snap_record *r);
void snap_record_free(struct snap_record *r);
/* <cache_dir>/records/<hex>.list: where a mount keeps the list recorded for a manifest digest. */
int snap_record_path(const char *cache_dir, const char *digest, char *buf, size_t size);
/* Change what snap_source_start prefetches (SNAP_PREFETCH_*; path kept, not copied). */
int snap_source_set_prefetch(struct snap_source *s, int mode, const char *path);
/*
 * Replay a recorded list: nthreads threads read the listed files through
 * img (so through its cache), several files in flight at once, in list
 * order. Start after snap_source_start; stop before closing the source.
 */
struct snap_replay;
int snap_replay_start(struct image *img, const char *list, unsigned nthreads, struct snap_replay **out);
uint64_t snap_replay_bytes(struct snap_replay *rp);
void snap_replay_stop(struct snap_replay *rp);

#endif
