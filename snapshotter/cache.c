/* SPDX-License-Identifier: Apache-2.0 */
#define LZ_MOD "source"
#include "snap_int.h"

/* No blob cache yet: every chunk comes from the registry. */
int snap_cache_init(struct snap_source *s)
{
	return 0;
}

void snap_cache_rafs_opts(struct snap_source *s, struct rafs_opts *ro)
{
}

int snap_cache_attach(struct snap_source *s)
{
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
}
