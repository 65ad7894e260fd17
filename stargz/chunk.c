/* SPDX-License-Identifier: Apache-2.0 */
/*
 * chunk.c - the data path: fetch a chunk's compressed range [offset,
 * nextOffset), inflate exactly one gzip member (or zstd frame), take
 * innerOffset..+chunkSize, verify, and keep a few decoded chunks in slots.
 */
#define LZ_MOD "estargz"
#include "estargz_int.h"
#include "lazyimg/defer.h"

#include <libdeflate.h>
#include <stdlib.h>
#include <zlib.h>
#include <zstd.h>

/* how far past the wanted bytes a member's ISIZE may point before we stop trusting it as a size hint */
#define ES_MEMBER_SLACK (8u << 20)
#define ES_MEMBER_TAIL (64u << 10)
/* chunks above this share one extra slot, so that 16 slots never pin 16 huge chunks */
#define ES_SLOT_MAX (16u << 20)
#define ES_SCRATCH_KEEP (32u << 20)
/* compressed bytes one merged request may cover, and chunks in it */
#define ES_MERGE_MAX (2u << 20)
#define ES_MERGE_MAX_CHUNKS 256

static atomic_bool use_zlib;

void estargz_set_inflater(bool zlib)
{
	atomic_store(&use_zlib, zlib);
}

/* Per-thread scratch: compressed input, inflated member, decoder contexts. */
struct tl_bufs {
	uint8_t *in, *out;
	size_t in_cap, out_cap;
	struct libdeflate_decompressor *ld;
	ZSTD_DCtx *zd;
};

static void tl_free(void *p)
{
	struct tl_bufs *t = p;

	if (t) {
		free(t->in);
		free(t->out);
		if (t->ld)
			libdeflate_free_decompressor(t->ld);
		ZSTD_freeDCtx(t->zd);
		free(t);
	}
}

static struct lz_tls tl_scratch = LZ_TLS_INIT(struct tl_bufs, tl_free);

/* a worker thread does not keep a huge (legacy unchunked file) scratch buffer around */
static void scratch_trim(uint8_t **buf, size_t *cap)
{
	if (*cap > ES_SCRATCH_KEEP) {
		free(*buf);
		*buf = NULL;
		*cap = 0;
	}
}

static int blob_read(struct estargz *es, uint32_t li, void *buf, size_t len, uint64_t off)
{
	struct es_layer *l = &es->layers[li];
	size_t done = 0;
	int ret = 0;

	atomic_fetch_add(&es->st_reads, 1);
	if (es->backend) {
		ret = es->backend->read(es->backend_ctx, li, l->id, buf, len, off);
		if (!ret)
			atomic_fetch_add(&es->st_bytes, len);
		return ret;
	}
	if (es->fd < 0)
		return -EIO;   /* opened without a backend: metadata only */
	ret = lz_pread_full(es->fd, buf, len, off, &done);
	if (ret == -ENODATA)
		ret = -EFSCORRUPTED;   /* the TOC points past the end of the blob */
	atomic_fetch_add(&es->st_bytes, done);
	return ret;
}

/* Inflate the first gzip member of in[0..len) until `need` bytes are out; zlib, can stop early. */
static int inflate_zlib(const uint8_t *in, size_t len, uint8_t *out, size_t need)
{
	z_stream zs = { 0 };
	int zr, ret = 0;

	if (len > UINT32_MAX || need > UINT32_MAX)
		return -EFSCORRUPTED;
	if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK)
		return -ENOMEM;
	zs.next_in = (Bytef *)(uintptr_t)in;
	zs.avail_in = (uInt)len;
	zs.next_out = out;
	zs.avail_out = (uInt)need;
	do {
		zr = inflate(&zs, Z_SYNC_FLUSH);
	} while (zr == Z_OK && zs.avail_out && zs.avail_in);
	if (zs.total_out != need || (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR))
		ret = -EFSCORRUPTED;
	inflateEnd(&zs);
	return ret;
}

/*
 * libdeflate decodes a whole member into a buffer that must hold all of it.
 * The range usually ends with the member holding the chunk, so its ISIZE
 * (last 4 bytes) says how big; when that hint does not fit, zlib streams
 * just the bytes needed.
 */
static int inflate_gzip(struct tl_bufs *t, const uint8_t *in, size_t len, size_t need, uint8_t **data)
{
	/* without a usable hint: room for the tar headers that usually follow the data */
	size_t cap = need + ES_MEMBER_TAIL, in_used = 0, out_len = 0;
	enum libdeflate_result r;
	int ret;

	if (len >= 18) {
		uint32_t isize = lz_get_le32(in + len - 4);

		if (isize >= need && isize - need <= ES_MEMBER_SLACK)
			cap = isize;
	}
	ret = lz_scratch_reserve(&t->out, &t->out_cap, cap ? cap : 1);
	if (ret)
		return ret;
	*data = t->out;
	if (atomic_load_explicit(&use_zlib, memory_order_relaxed))
		return inflate_zlib(in, len, t->out, need);
	if (!t->ld) {
		t->ld = libdeflate_alloc_decompressor();
		if (!t->ld)
			return -ENOMEM;
	}
	r = libdeflate_gzip_decompress_ex(t->ld, in, len, t->out, cap, &in_used, &out_len);
	if (r == LIBDEFLATE_SUCCESS)
		return out_len >= need ? 0 : -EFSCORRUPTED;
	if (r == LIBDEFLATE_INSUFFICIENT_SPACE)
		return inflate_zlib(in, len, t->out, need);
	return -EFSCORRUPTED;
}

/* One zstd frame, until `need` bytes are out. */
static int inflate_zstd(struct tl_bufs *t, const uint8_t *in, size_t len, size_t need, uint8_t **data)
{
	ZSTD_inBuffer ib = { in, len, 0 };
	ZSTD_outBuffer ob;
	size_t r;
	int ret;

	ret = lz_scratch_reserve(&t->out, &t->out_cap, need ? need : 1);
	if (ret)
		return ret;
	if (!t->zd) {
		t->zd = ZSTD_createDCtx();
		if (!t->zd)
			return -ENOMEM;
	}
	ZSTD_DCtx_reset(t->zd, ZSTD_reset_session_only);
	ob.dst = t->out;
	ob.size = need;
	ob.pos = 0;
	while (ob.pos < need) {
		r = ZSTD_decompressStream(t->zd, &ob, &ib);
		if (ZSTD_isError(r))
			return -EFSCORRUPTED;
		if (r == 0 && ob.pos < need)
			return -EFSCORRUPTED;   /* the frame ended short */
		if (ib.pos == ib.size && ob.pos < need && r != 0) {
			/* input exhausted: let the decoder flush what it holds */
			size_t before = ob.pos;

			r = ZSTD_decompressStream(t->zd, &ob, &ib);
			if (ZSTD_isError(r) || ob.pos == before)
				return -EFSCORRUPTED;
		}
	}
	*data = t->out;
	return 0;
}

/* Inflate and verify chunk `idx` of layer `li` from its compressed bytes src[0..len) into out. */
static int decode_chunk(struct estargz *es, uint32_t li, uint32_t idx, const uint8_t *src, size_t len,
			void *out)
{
	const struct es_layer *l = &es->layers[li];
	const struct es_chunk *c = &l->chunks[idx];
	struct tl_bufs *t = lz_tls_get(&tl_scratch);
	size_t need = (size_t)c->inner + c->size;
	uint8_t dg[LZ_DIGEST_LEN], *data = NULL;
	int ret;

	if (!t)
		return -ENOMEM;
	if (l->kind == ESTARGZ_ZSTD_CHUNKED)
		ret = inflate_zstd(t, src, len, need, &data);
	else
		ret = inflate_gzip(t, src, len, need, &data);
	if (ret)
		return ret;
	if (es->validate) {
		lz_digest(LZ_DIGEST_SHA256, data + c->inner, c->size, dg);
		if (memcmp(dg, c->digest, LZ_DIGEST_LEN))
			return -EBADMSG;
	}
	memcpy(out, data + c->inner, c->size);
	atomic_fetch_add(&es->st_fills, 1);
	scratch_trim(&t->out, &t->out_cap);
	return 0;
}

/* Fetch, inflate and verify chunk `idx` of layer `li` into out (chunk size bytes); no logging. */
static int fetch_chunk(struct estargz *es, uint32_t li, uint32_t idx, void *out)
{
	const struct es_chunk *c = &es->layers[li].chunks[idx];
	struct tl_bufs *t = lz_tls_get(&tl_scratch);
	size_t len = (size_t)(c->next - c->offset);
	int ret;

	if (!t)
		return -ENOMEM;
	if (es->validate && !c->has_digest)
		return -EBADMSG;   /* nothing to verify against: refuse, never serve unverified */
	ret = lz_scratch_reserve(&t->in, &t->in_cap, len);
	if (ret)
		return ret;
	ret = blob_read(es, li, t->in, len, c->offset);
	if (!ret)
		ret = decode_chunk(es, li, idx, t->in, len, out);
	scratch_trim(&t->in, &t->in_cap);
	return ret;
}

/* Inflate, verify and hand to the cache chunk idx0+i of a fetched span `in`. */
static int run_chunk(struct estargz *es, uint32_t li, uint32_t idx0, uint32_t i, const uint8_t *in, int err,
		     void *dst)
{
	const struct es_chunk *cs = &es->layers[li].chunks[idx0];
	struct img_chunk ic;
	int r = err;

	if (!r && es->validate && !cs[i].has_digest)
		r = -EBADMSG;
	if (!r)
		r = decode_chunk(es, li, idx0 + i, in + (cs[i].offset - cs[0].offset), cs[i].next - cs[i].offset,
				 dst);
	es_fill_img_chunk(es, li, idx0 + i, &ic);
	es->cache->done(es->cache_ctx, li, &ic, dst, r);
	return r;
}

/*
 * The tail of a merged fetch not inflated yet: chunks idx0+next..idx0+n-1.
 * A FUSE read leaves it until its reply went out (lz_defer); it is finished
 * earlier if this thread needs one of them or fetches again. One per thread.
 */
struct pending_run {
	struct estargz *es;
	uint32_t li, idx0, n, next;
	uint8_t *in, *tmp;
	int err;
};

static _Thread_local struct pending_run tl_pend;

static void pending_advance(struct pending_run *p, uint32_t upto)
{
	for (; p->next < upto; p->next++)
		run_chunk(p->es, p->li, p->idx0, p->next, p->in, p->err, p->tmp);
	if (p->next == p->n) {
		free(p->in);
		free(p->tmp);
		*p = (struct pending_run){ 0 };
	}
}

static void pending_flush(void *arg)
{
	(void)arg;
	if (tl_pend.es)
		pending_advance(&tl_pend, tl_pend.n);
}

/* Chunk idx is pending on this thread (its claim is ours: waiting would never
 * end): inflate it now into out. 1 if it was (*ret its result), else 0. */
static int pending_take(struct estargz *es, uint32_t li, uint32_t idx, void *out, int *ret)
{
	struct pending_run *p = &tl_pend;
	uint32_t i;

	if (p->es != es || p->li != li || idx < p->idx0 + p->next || idx - p->idx0 >= p->n)
		return 0;
	i = idx - p->idx0;
	pending_advance(p, i);
	*ret = run_chunk(es, li, p->idx0, i, p->in, p->err, out);
	p->next = i + 1;
	pending_advance(p, i + 1);
	return 1;
}

/*
 * Chunks idx0..idx0+n-1 of layer li are stored back to back and each is
 * claimed through the cache: one backend read for all, then each is
 * inflated, verified and handed to the cache. Chunk idx0 also goes to out0;
 * its result is returned, the others' only reach the cache. Inside a FUSE
 * read (lz_defer window) only idx0 is done before returning: the reader
 * waits for its own chunk, not for those fetched alongside.
 */
static int fetch_run(struct estargz *es, uint32_t li, uint32_t idx0, uint32_t n, void *out0)
{
	const struct es_chunk *cs = &es->layers[li].chunks[idx0];
	uint64_t base = cs[0].offset, span = cs[n - 1].next - base;
	uint32_t maxsz = 0;
	uint8_t *in, *tmp = NULL;
	int ret, ret0;

	pending_flush(NULL);
	for (uint32_t i = 1; i < n; i++)
		maxsz = LZ_MAX(maxsz, cs[i].size);
	in = lz_malloc(span);
	if (n > 1)
		tmp = lz_malloc(maxsz ? maxsz : 1);
	ret = in && (n == 1 || tmp) ? 0 : -ENOMEM;
	if (!ret)
		ret = blob_read(es, li, in, span, base);
	ret0 = run_chunk(es, li, idx0, 0, in, ret, out0);
	if (n > 1 && lz_defer_active()) {
		tl_pend = (struct pending_run){ es, li, idx0, n, 1, in, tmp, ret };
		lz_defer_add(pending_flush, NULL);
		return ret0;
	}
	for (uint32_t i = 1; i < n; i++)
		run_chunk(es, li, idx0, i, in, ret, tmp);
	free(in);
	free(tmp);
	return ret0;
}

/*
 * The caller owns chunk idx. Claim, without waiting, the chunks stored right
 * after it while nobody has them: the rest of its file up to ES_MERGE_MAX
 * compressed bytes in all, other files (the next entries of the TOC) up to
 * half that. A cold read of a file costs one request per ES_MERGE_MAX bytes,
 * and a tree of small files one per ES_MERGE_MAX / 2 instead of one per file.
 */
static int fetch_owned(struct estargz *es, uint32_t li, uint32_t idx, void *out)
{
	const struct es_layer *l = &es->layers[li];
	uint64_t span = l->chunks[idx].next - l->chunks[idx].offset;
	bool same_file = true;
	uint32_t n = 1;

	while (es->cache->try_begin && idx + n < l->nchunks && n < ES_MERGE_MAX_CHUNKS) {
		const struct es_chunk *prev = &l->chunks[idx + n - 1], *c = &l->chunks[idx + n];
		struct img_chunk ic;

		same_file = same_file && c->file_off > prev->file_off;
		if (c->offset != prev->next || c->next <= c->offset ||
		    span + (c->next - c->offset) > (same_file ? ES_MERGE_MAX : ES_MERGE_MAX / 2))
			break;
		es_fill_img_chunk(es, li, idx + n, &ic);
		if (es->cache->try_begin(es->cache_ctx, li, &ic) != 1)
			break;
		span += c->next - c->offset;
		n++;
	}
	if (n == 1) {
		struct img_chunk ic;
		int ret = fetch_chunk(es, li, idx, out);

		es_fill_img_chunk(es, li, idx, &ic);
		es->cache->done(es->cache_ctx, li, &ic, out, ret);
		return ret;
	}
	atomic_fetch_add(&es->st_merged, n - 1);
	return fetch_run(es, li, idx, n, out);
}

void es_fill_img_chunk(const struct estargz *es, uint32_t li, uint32_t idx, struct img_chunk *ic)
{
	const struct es_chunk *c = &es->layers[li].chunks[idx];

	memset(ic, 0, sizeof(*ic));
	ic->file_offset = c->file_off;
	ic->compressed_offset = c->offset;
	ic->compressed_size = (uint32_t)(c->next - c->offset);
	ic->uncompressed_offset = c->space_off;
	ic->uncompressed_size = c->size;
	ic->blob_index = li;
	ic->index = idx;
	ic->flags = IMG_CHUNK_COMPRESSED;
	ic->digest = c->has_digest ? c->digest : NULL;
}

/* Through the cache ops (single flight) when there are any. */
static int read_verified(struct estargz *es, uint32_t li, uint32_t idx, void *out)
{
	struct img_chunk ic;
	int ret;

	if (!es->cache)
		return fetch_chunk(es, li, idx, out);
	if (pending_take(es, li, idx, out, &ret))
		return ret;
	es_fill_img_chunk(es, li, idx, &ic);
	ret = es->cache->begin(es->cache_ctx, li, &ic, out);
	if (ret == 1) {
		atomic_fetch_add(&es->st_hits, 1);
		return 0;
	}
	if (ret < 0)
		return ret;
	return fetch_owned(es, li, idx, out);
}

static const char *why(int err)
{
	switch (err) {
	case -EBADMSG: return "chunk digest mismatch (or no digest to verify against)";
	case -EFSCORRUPTED: return "the compressed data does not inflate to the chunk";
	default: return lz_strerror(err);
	}
}

int estargz_read_chunk(struct estargz *es, const struct img_chunk *c, void *buf)
{
	const struct es_chunk *ch;
	int ret;

	if (!es || !c || !buf || c->blob_index >= es->nlayers ||
	    c->index >= es->layers[c->blob_index].nchunks)
		return -EFSCORRUPTED;
	ch = &es->layers[c->blob_index].chunks[c->index];
	if (c->uncompressed_size != ch->size || c->compressed_offset != ch->offset)
		return -EFSCORRUPTED;
	ret = read_verified(es, c->blob_index, c->index, buf);
	if (ret) {
		atomic_fetch_add(&es->st_errors, 1);
		if (lz_ratelimit(&es->layers[c->blob_index].bad_log, 10))
			lz_err("layer %s: chunk %u (blob bytes %llu..%llu): %s", es->layers[c->blob_index].id,
			       c->index, (unsigned long long)ch->offset, (unsigned long long)ch->next - 1, why(ret));
	}
	return ret;
}

static size_t slot_of(const struct estargz *es, uint32_t li, uint32_t idx)
{
	uint64_t h;

	if (es->layers[li].chunks[idx].size > ES_SLOT_MAX)
		return es->nslots;   /* the big-chunk slot */
	h = ((uint64_t)idx ^ ((uint64_t)li << 40)) * 0x9E3779B97F4A7C15ull;

	return (size_t)(h >> 32) % es->nslots;
}

int es_chunk_copy(struct estargz *es, uint32_t li, uint32_t idx, uint64_t skip, void *dst, size_t n)
{
	const struct es_chunk *c = &es->layers[li].chunks[idx];
	struct es_slot *s = &es->slots[slot_of(es, li, idx)];
	uint8_t *tmp;
	int ret;

	if (!lz_range_ok(skip, n, c->size))
		return -EFSCORRUPTED;
	pthread_mutex_lock(&s->lock);
	if (s->len && s->layer == li && s->index == idx) {
		memcpy(dst, s->buf + skip, n);
		pthread_mutex_unlock(&s->lock);
		atomic_fetch_add(&es->st_hits, 1);
		return 0;
	}
	pthread_mutex_unlock(&s->lock);
	/* a second buffer of our own: t->out is the inflate scratch */
	tmp = lz_malloc(c->size ? c->size : 1);
	if (!tmp)
		return -ENOMEM;
	ret = read_verified(es, li, idx, tmp);
	if (ret) {
		atomic_fetch_add(&es->st_errors, 1);
		free(tmp);
		return ret;
	}
	memcpy(dst, tmp + skip, n);
	pthread_mutex_lock(&s->lock);
	free(s->buf);
	s->buf = tmp;
	s->cap = c->size;
	s->layer = li;
	s->index = idx;
	s->len = c->size;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

int es_chunks_init(struct estargz *es, const struct estargz_opts *o)
{
	es->nslots = o && o->chunk_cache_slots ? o->chunk_cache_slots : ES_DEFAULT_CACHE_SLOTS;
	es->slots = lz_calloc(es->nslots + 1, sizeof(*es->slots));
	if (!es->slots)
		return -ENOMEM;
	for (size_t i = 0; i <= es->nslots; i++)
		pthread_mutex_init(&es->slots[i].lock, NULL);
	return 0;
}

void es_chunks_exit(struct estargz *es)
{
	for (size_t i = 0; es->slots && i <= es->nslots; i++) {
		free(es->slots[i].buf);
		pthread_mutex_destroy(&es->slots[i].lock);
	}
	free(es->slots);
	es->slots = NULL;
}

void estargz_get_stats(const struct estargz *es, struct estargz_stats *st)
{
	struct estargz *m = (struct estargz *)es;

	st->chunk_fills = atomic_load(&m->st_fills);
	st->chunk_cache_hits = atomic_load(&m->st_hits);
	st->backend_bytes = atomic_load(&m->st_bytes);
	st->backend_reads = atomic_load(&m->st_reads);
	st->errors = atomic_load(&m->st_errors);
	st->merged = atomic_load(&m->st_merged);
}
