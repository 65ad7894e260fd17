/* SPDX-License-Identifier: Apache-2.0 */
/*
 * metrics.c - Prometheus text exposition (format 0.0.4) of every mount and
 * the shared cache, and the `lazyimg stats` JSON of one mount.
 */
#define LZ_MOD "snapfs"
#include "lazyimg/bcache.h"
#include "snapfs_int.h"

#include <stdio.h>
#include <stdlib.h>

char *snapfs_stats_json(const struct snap_fs_stats *st)
{
	char *s = NULL;

	if (asprintf(&s,
		     "{\"backend_bytes\":%llu,\"backend_requests\":%llu,\"cache_hits\":%llu,"
		     "\"cache_misses\":%llu,\"prefetch_bytes\":%llu,\"chunk_errors\":%llu,"
		     "\"reads\":%llu,\"read_bytes\":%llu,\"read_errors\":%llu,\"lookups\":%llu,"
		     "\"read_latency_us\":{\"p50\":%llu,\"p90\":%llu,\"p99\":%llu,\"max\":%llu},"
		     "\"prefetch_source\":\"%s\",\"recording\":false,\"recorded_files\":0,"
		     "\"inflight\":%llu,\"hung\":%llu}\n",
		     (unsigned long long)st->src.backend_bytes, (unsigned long long)st->src.backend_requests,
		     (unsigned long long)st->src.cache_hits, (unsigned long long)st->src.cache_misses,
		     (unsigned long long)st->src.prefetch_bytes, (unsigned long long)st->src.chunk_errors,
		     (unsigned long long)st->reads, (unsigned long long)st->read_bytes,
		     (unsigned long long)st->read_errors, (unsigned long long)st->lookups,
		     (unsigned long long)st->lat_p50_us, (unsigned long long)st->lat_p90_us,
		     (unsigned long long)st->lat_p99_us, (unsigned long long)st->lat_max_us,
		     st->prefetch_source ? st->prefetch_source : "table",
		     (unsigned long long)st->inflight, (unsigned long long)st->hung) < 0)
		return NULL;
	return s;
}

struct sbuf {
	char *p;
	size_t len, cap;
	bool oom;
};

__attribute__((format(printf, 2, 3))) static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->oom)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->oom = true;
			return;
		}
		if (b->p && b->len + (size_t)n < b->cap) {
			b->len += (size_t)n;
			return;
		}
		{
			size_t nc = LZ_MAX(b->cap * 2, b->len + (size_t)n + 4096);
			char *np = nc <= (64u << 20) ? lz_realloc(b->p, nc) : NULL;

			if (!np) {
				b->oom = true;
				return;
			}
			b->p = np;
			b->cap = nc;
		}
	}
}

struct counter {
	const char *name, *help, *type;
	size_t off;  /* offset of the uint64_t in struct snap_fs_stats */
};

#define C(n, h, t, f) { "lazyimg_" n, h, t, offsetof(struct snap_fs_stats, f) }
static const struct counter counters[] = {
	C("backend_bytes_total", "Bytes fetched from the registry.", "counter", src.backend_bytes),
	C("backend_requests_total", "Registry requests.", "counter", src.backend_requests),
	C("cache_hits_total", "Chunk reads served from the blob cache.", "counter", src.cache_hits),
	C("cache_misses_total", "Chunk reads that had to fetch.", "counter", src.cache_misses),
	C("prefetch_bytes_total", "Bytes fetched by background prefetch.", "counter", src.prefetch_bytes),
	C("chunk_errors_total", "Chunk fetches or checks that failed.", "counter", src.chunk_errors),
	C("reads_total", "FUSE read requests.", "counter", reads),
	C("read_bytes_total", "Bytes returned by FUSE reads.", "counter", read_bytes),
	C("read_errors_total", "FUSE reads answered with an error.", "counter", read_errors),
	C("lookups_total", "FUSE lookups.", "counter", lookups),
	C("inflight_requests", "FUSE reads being served now.", "gauge", inflight),
	C("hung_requests", "FUSE reads running longer than the hung threshold (serve --hung-ms, default 10 s).", "gauge", hung),
};
#undef C

/* ids are [A-Za-z0-9._-]: safe inside a label value as they are */
int snapfs_metrics(struct snap_fs *fs, char **out)
{
	struct snap_fs_info *v = NULL;
	struct snap_fs_stats *st;
	struct bcache_stats bs;
	struct sbuf b = { 0 };
	size_t n = 0, nready = 0;
	int ret = snap_fs_list(fs, &v, &n);

	if (ret)
		return ret;
	st = lz_calloc(n ? n : 1, sizeof(*st));
	if (!st) {
		free(v);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++)
		if (snap_fs_stats(fs, v[i].id, &st[i]) == 0)
			nready++;
		else
			v[i].state = NULL; /* gone or not ready since the listing: no series */
	sb_printf(&b, "# HELP lazyimg_mounts Mounts known to the server.\n# TYPE lazyimg_mounts gauge\n"
		      "lazyimg_mounts %zu\n", n);
	sb_printf(&b, "# HELP lazyimg_mount_ready 1 if the mount serves.\n# TYPE lazyimg_mount_ready gauge\n");
	for (size_t i = 0; i < n; i++)
		sb_printf(&b, "lazyimg_mount_ready{id=\"%s\"} %d\n", v[i].id, v[i].state ? 1 : 0);
	for (size_t c = 0; c < LZ_ARRAY_SIZE(counters); c++) {
		sb_printf(&b, "# HELP %s %s\n# TYPE %s %s\n", counters[c].name, counters[c].help,
			  counters[c].name, counters[c].type);
		for (size_t i = 0; i < n; i++)
			if (v[i].state)
				sb_printf(&b, "%s{id=\"%s\"} %llu\n", counters[c].name, v[i].id,
					  (unsigned long long)*(const uint64_t *)((const char *)&st[i] +
										  counters[c].off));
	}
	sb_printf(&b, "# HELP lazyimg_read_latency_seconds FUSE read latency.\n"
		      "# TYPE lazyimg_read_latency_seconds histogram\n");
	for (size_t i = 0; i < n; i++) {
		uint64_t acc = 0;

		if (!v[i].state)
			continue;
		/* bucket j holds [2^j, 2^(j+1)) us: its upper edge is the "le" */
		for (int j = 0; j < 25; j++) {
			acc += st[i].lat[j];
			sb_printf(&b, "lazyimg_read_latency_seconds_bucket{id=\"%s\",le=\"%.6f\"} %llu\n", v[i].id,
				  (double)(2ull << j) / 1e6, (unsigned long long)acc);
		}
		for (int j = 25; j < 32; j++)
			acc += st[i].lat[j];
		sb_printf(&b, "lazyimg_read_latency_seconds_bucket{id=\"%s\",le=\"+Inf\"} %llu\n", v[i].id,
			  (unsigned long long)acc);
		sb_printf(&b, "lazyimg_read_latency_seconds_sum{id=\"%s\"} %.6f\n", v[i].id,
			  (double)st[i].lat_sum_us / 1e6);
		sb_printf(&b, "lazyimg_read_latency_seconds_count{id=\"%s\"} %llu\n", v[i].id,
			  (unsigned long long)acc);
	}
	sb_printf(&b, "# HELP lazyimg_fuse_worker_threads FUSE worker threads shared by all mounts.\n"
		      "# TYPE lazyimg_fuse_worker_threads gauge\nlazyimg_fuse_worker_threads %d\n",
		  snap_pool_threads(fs->pool));
	bcache_get_stats(fs->cache, &bs);
	sb_printf(&b, "# HELP lazyimg_cache_usage_bytes Bytes the shared blob cache uses on disk.\n"
		      "# TYPE lazyimg_cache_usage_bytes gauge\nlazyimg_cache_usage_bytes %llu\n",
		  (unsigned long long)snap_fs_cache_total(fs));
	sb_printf(&b, "# HELP lazyimg_cache_fill_bytes_total Bytes written into the blob cache.\n"
		      "# TYPE lazyimg_cache_fill_bytes_total counter\nlazyimg_cache_fill_bytes_total %llu\n",
		  (unsigned long long)bs.fill_bytes);
	sb_printf(&b, "# HELP lazyimg_cache_evictions_total Blobs evicted under the size cap.\n"
		      "# TYPE lazyimg_cache_evictions_total counter\nlazyimg_cache_evictions_total %llu\n",
		  (unsigned long long)bs.evictions);
	free(st);
	free(v);
	if (b.oom) {
		free(b.p);
		return -ENOMEM;
	}
	*out = b.p;
	return 0;
}
