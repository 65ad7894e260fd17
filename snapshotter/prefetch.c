/* SPDX-License-Identifier: Apache-2.0 */
#define LZ_MOD "prefetch"
#include "lazyimg/bcache.h"
#include "lazyimg/estargz.h"
#include "lazyimg/imgfs.h"
#include "snap_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>

/* bytes one prefetch request may cover: large, since prefetch is throughput */
#define SNAP_PREFETCH_MERGE_MAX (8u << 20)

struct pf {
	struct snap_source *s;
	uint8_t *buf;              /* eStargz: one decoded chunk */
	size_t bufcap;
	uint64_t *inos;
	size_t n, cap;
	struct img_chunk pend[RAFS_MERGE_MAX_CHUNKS]; /* stored back to back, not yet fetched */
	size_t npend;
	uint64_t span;
};

static int push(struct pf *p, uint64_t ino)
{
	if (p->n == p->cap) {
		size_t nc = p->cap ? 2 * p->cap : 256;
		uint64_t *ni = lz_realloc(p->inos, nc * sizeof(*ni));

		if (!ni)
			return -ENOMEM;
		p->inos = ni;
		p->cap = nc;
	}
	p->inos[p->n++] = ino;
	return 0;
}

static int collect_all(void *arg, const char *path, const struct img_attr *a)
{
	return S_ISREG(a->mode) ? push(arg, a->ino) : 0;
}

/* Every regular file under directory `dir` (a prefetch-table directory means "all below"). */
static int collect_dir(struct pf *p, uint64_t dir, int depth);

struct dctx {
	struct pf *p;
	uint64_t *kids;
	uint32_t *types;
	size_t n, cap;
};

static int dfill(void *arg, const struct img_dirent *de)
{
	struct dctx *d = arg;

	if ((de->name_len == 1 && de->name[0] == '.') || (de->name_len == 2 && !memcmp(de->name, "..", 2)))
		return 0;
	if (d->n == d->cap) {
		size_t nc = d->cap ? 2 * d->cap : 64;
		uint64_t *nk = lz_realloc(d->kids, nc * sizeof(*nk));
		uint32_t *nt;

		if (!nk)
			return 1;
		d->kids = nk;
		nt = lz_realloc(d->types, nc * sizeof(*nt));
		if (!nt)
			return 1;
		d->types = nt;
		d->cap = nc;
	}
	d->kids[d->n] = de->ino;
	d->types[d->n++] = de->type;
	return 0;
}

static int collect_dir(struct pf *p, uint64_t dir, int depth)
{
	struct image *img = snap_source_image(p->s);
	struct dctx d = { .p = p };
	int ret;

	if (depth > 256)
		return 0;
	ret = img->ops->readdir(img, dir, 0, dfill, &d);
	for (size_t i = 0; !ret && i < d.n; i++) {
		if (d.types[i] == S_IFREG)
			ret = push(p, d.kids[i]);
		else if (d.types[i] == S_IFDIR)
			ret = collect_dir(p, d.kids[i], depth + 1);
	}
	free(d.kids);
	free(d.types);
	return ret;
}

/* readers first: wait while any on-demand fetch is in flight */
static void yield_to_readers(struct snap_source *s)
{
	while (atomic_load(&s->ondemand) > 0 && !atomic_load(&s->stop)) {
		struct timespec ts = { 0, 2 * 1000 * 1000 };

		nanosleep(&ts, NULL);
	}
}

/* eStargz: one chunk (gzip member) per request for now */
static int esgz_fetch(struct pf *p)
{
	int ret = 0;

	for (size_t i = 0; i < p->npend && !atomic_load(&p->s->stop); i++) {
		const struct img_chunk *c = &p->pend[i];
		int r;

		if (c->uncompressed_size > p->bufcap) {
			uint8_t *nb = lz_realloc(p->buf, c->uncompressed_size);

			if (!nb)
				return -ENOMEM;
			p->buf = nb;
			p->bufcap = c->uncompressed_size;
		}
		r = estargz_read_chunk(p->s->es, c, p->buf);
		if (r && !ret)
			ret = r;
	}
	return ret;
}

static void flush(struct pf *p)
{
	int ret;

	if (!p->npend)
		return;
	yield_to_readers(p->s);
	if (atomic_load(&p->s->stop))
		ret = 0;
	else if (p->s->es)
		ret = esgz_fetch(p);
	else
		ret = rafs_fetch_chunks(p->s->fs, p->pend, p->npend, SNAP_PREFETCH_MERGE_MAX);
	if (ret)
		lz_warn("prefetch: %zu chunk(s) from blob %u offset %llu failed; a reader will retry them",
			p->npend, p->pend[0].blob_index, (unsigned long long)p->pend[0].compressed_offset);
	p->npend = 0;
	p->span = 0;
}

/*
 * Queue each missing chunk; chunks stored back to back (a file's chunks,
 * or small files written one after another) go out as one request.
 */
static int fetch_chunk(void *arg, const struct img_chunk *c)
{
	struct pf *p = arg;
	struct snap_source *s = p->s;
	const struct img_chunk *last = p->npend ? &p->pend[p->npend - 1] : NULL;

	if (atomic_load(&s->stop))
		return -ECANCELED;
	if (c->flags & IMG_CHUNK_HOLE)
		return 0;
	if (s->blobs && c->blob_index < s->nblobs && s->blobs[c->blob_index] &&
	    bcache_chunk_ready(s->blobs[c->blob_index], c->index))
		return 0;
	if (last && (c->blob_index != last->blob_index ||
		     c->compressed_offset != last->compressed_offset + last->compressed_size ||
		     p->npend == LZ_ARRAY_SIZE(p->pend) || p->span + c->compressed_size > SNAP_PREFETCH_MERGE_MAX))
		flush(p);
	p->pend[p->npend++] = *c;
	p->span += c->compressed_size;
	return 0;
}

struct chunk_list {
	struct img_chunk *v;
	size_t n, cap;
};

static int collect_chunk(void *arg, const struct img_chunk *c)
{
	struct chunk_list *l = arg;

	if (c->flags & IMG_CHUNK_HOLE)
		return 0;
	if (l->n == l->cap) {
		size_t nc = l->cap ? 2 * l->cap : 1024;
		struct img_chunk *nv = lz_realloc(l->v, nc * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		l->v = nv;
		l->cap = nc;
	}
	l->v[l->n++] = *c;
	return 0;
}

static int chunk_order(const void *a, const void *b)
{
	const struct img_chunk *x = a, *y = b;

	if (x->blob_index != y->blob_index)
		return x->blob_index < y->blob_index ? -1 : 1;
	return x->compressed_offset < y->compressed_offset ? -1 : x->compressed_offset > y->compressed_offset;
}

/*
 * --prefetch-all has no order to keep: fetch in blob order, so that files
 * stored one after another go out in a few large requests instead of one
 * request per file in the order a directory walk meets them.
 */
static bool prefetch_in_blob_order(struct pf *p, struct image *img)
{
	struct chunk_list l = { 0 };

	for (size_t i = 0; i < p->n && !atomic_load(&p->s->stop); i++)
		if (img->ops->chunks(img, p->inos[i], collect_chunk, &l) == -ENOMEM) {
			free(l.v);
			return false; /* fall back to file order */
		}
	qsort(l.v, l.n, sizeof(*l.v), chunk_order);
	for (size_t i = 0; i < l.n && !atomic_load(&p->s->stop); i++) {
		/* a chunk shared by several files (dedup) is fetched once */
		if (i && l.v[i].blob_index == l.v[i - 1].blob_index &&
		    l.v[i].compressed_offset == l.v[i - 1].compressed_offset)
			continue;
		fetch_chunk(p, &l.v[i]);
	}
	free(l.v);
	return true;
}

static void *prefetch_main(void *arg)
{
	struct pf *p = arg;
	struct image *img = snap_source_image(p->s);
	uint64_t fetched_before = atomic_load(&p->s->prefetch_bytes);

	snap_cache_set_prefetch_thread(true);
	if (p->s->o.prefetch != SNAP_PREFETCH_ALL || !prefetch_in_blob_order(p, img)) {
		for (size_t i = 0; i < p->n && !atomic_load(&p->s->stop); i++)
			if (img->ops->chunks(img, p->inos[i], fetch_chunk, p) == -ECANCELED)
				break;
	}
	flush(p);
	lz_info("prefetch done: %zu files, %llu bytes fetched", p->n,
		(unsigned long long)(atomic_load(&p->s->prefetch_bytes) - fetched_before));
	free(p->inos);
	free(p->buf);
	free(p);
	return NULL;
}

int snap_prefetch_start(struct snap_source *s)
{
	struct image *img = snap_source_image(s);
	struct pf *p;
	int ret = 0;

	if (s->o.prefetch == SNAP_PREFETCH_NONE)
		return 0;
	p = lz_calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->s = s;
	if (s->o.prefetch == SNAP_PREFETCH_ALL) {
		ret = imgfs_walk(img, collect_all, p);
	} else if (s->o.prefetch_files) {
		FILE *f = fopen(s->o.prefetch_files, "re");
		char line[8192];

		if (!f) {
			lz_err("--prefetch-files %s: %s", s->o.prefetch_files, strerror(errno));
			ret = -errno;
		}
		while (f && !ret && fgets(line, sizeof(line), f)) {
			struct img_attr a;
			uint64_t ino = IMG_ROOT_INO;
			char *save = NULL, *tok;

			line[strcspn(line, "\r\n")] = 0;
			/* walk the path from the root */
			for (tok = strtok_r(line, "/", &save); tok; tok = strtok_r(NULL, "/", &save)) {
				if (img->ops->lookup(img, ino, tok, strlen(tok), &a))
					break;
				ino = a.ino;
			}
			if (tok || !line[0] || img->ops->getattr(img, ino, &a))
				continue;
			ret = S_ISDIR(a.mode) ? collect_dir(p, ino, 0) : S_ISREG(a.mode) ? push(p, ino) : 0;
		}
		if (f)
			fclose(f);
	} else {
		uint64_t list[4096];
		size_t n = s->es ? estargz_prefetch_list(s->es, list, LZ_ARRAY_SIZE(list)) :
				   rafs_prefetch_list(s->fs, list, LZ_ARRAY_SIZE(list));

		for (size_t i = 0; !ret && i < n; i++) {
			struct img_attr a;

			if (img->ops->getattr(img, list[i], &a))
				continue; /* a hint only */
			ret = S_ISDIR(a.mode) ? collect_dir(p, list[i], 0) : S_ISREG(a.mode) ? push(p, list[i]) : 0;
		}
	}
	if (ret || !p->n) {
		free(p->inos);
		free(p->buf);
		free(p);
		return ret;
	}
	lz_info("prefetching %zu files in the background", p->n);
	ret = -pthread_create(&s->prefetch_th, NULL, prefetch_main, p);
	if (ret) {
		free(p->inos);
		free(p->buf);
		free(p);
		return ret;
	}
	s->prefetch_running = true;
	return 0;
}

void snap_prefetch_stop(struct snap_source *s)
{
	if (!s->prefetch_running)
		return;
	atomic_store(&s->stop, true);
	pthread_join(s->prefetch_th, NULL);
	s->prefetch_running = false;
}
