/* SPDX-License-Identifier: Apache-2.0 */
#define LZ_MOD "rafs"
#include "rafs_int.h"
#include "lazyimg/defer.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/sysmacros.h>

int rafs_blob_id_ok(const char *id, size_t len)
{
	if (len == 0 || len > RAFS_MAX_BLOB_ID || id[0] == '.')
		return -EFSCORRUPTED;
	for (size_t i = 0; i < len; i++) {
		char c = id[i];

		/* the id names a file in the blob directory: no separators, no oddities */
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      c == '-' || c == '_' || c == '.'))
			return -EFSCORRUPTED;
	}
	return 0;
}

uint64_t rafs_decode_rdev(uint32_t dev)
{
	/* on disk: Linux new_encode_dev, minor low 8 bits, major 12 bits, minor high 12 bits */
	return makedev((dev & 0xfff00u) >> 8, (dev & 0xffu) | ((dev >> 12) & 0xfff00u));
}

/* Per-thread scratch: decoded chunk and compressed input. Freed at thread exit. */
struct tl_bufs {
	uint8_t *out, *in;
	size_t out_cap, in_cap;
};

static void tl_free(void *p)
{
	struct tl_bufs *t = p;

	if (t) {
		free(t->out);
		free(t->in);
		free(t);
	}
}

static struct lz_tls tl_scratch = LZ_TLS_INIT(struct tl_bufs, tl_free);

static int blob_fd(struct rafs *fs, struct rafs_blob *b)
{
	char path[4096];
	int fd = atomic_load(&b->fd);

	if (fd >= 0)
		return fd;
	if (!fs->blob_dir) {
		if (lz_ratelimit(&b->missing_log, 60))
			lz_err("blob %s: no blob directory given; file data is unavailable", b->id);
		return -EIO;
	}
	pthread_mutex_lock(&b->lock);
	fd = atomic_load(&b->fd);
	if (fd < 0) {
		snprintf(path, sizeof(path), "%s/%s", fs->blob_dir, b->id);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			/* the file being read exists: a missing blob is an I/O error, not ENOENT */
			int err = errno;

			fd = -EIO;
			if (lz_ratelimit(&b->missing_log, 60))
				lz_err("blob %s: cannot open %s: %s", b->id, path, strerror(err));
		} else {
			atomic_store(&b->fd, fd);
		}
	}
	pthread_mutex_unlock(&b->lock);
	return fd;
}

static int blob_read(struct rafs *fs, uint32_t bi, void *buf, size_t len, uint64_t off)
{
	struct rafs_blob *b = &fs->blobs[bi];
	size_t done = 0;
	int fd, ret = 0;

	atomic_fetch_add(&fs->st_reads, 1);
	if (fs->backend) {
		ret = fs->backend->read(fs->backend_ctx, bi, b->id, buf, len, off);
		if (!ret)
			atomic_fetch_add(&fs->st_bytes, len);
		return ret;
	}
	fd = blob_fd(fs, b);
	if (fd < 0)
		return fd;
	ret = lz_pread_full(fd, buf, len, off, &done);
	if (ret == -ENODATA) {
		if (lz_ratelimit(&b->bad_log, 10))
			lz_err("blob %s: short read at offset %llu (+%zu): the blob is truncated",
			       b->id, (unsigned long long)(off + done), len - done);
		ret = -EFSCORRUPTED;
	}
	atomic_fetch_add(&fs->st_bytes, done);
	return ret;
}

int rafs_blobs_init(struct rafs *fs, const struct rafs_opts *opts)
{
	fs->nslots = opts && opts->chunk_cache_slots ? opts->chunk_cache_slots : RAFS_DEFAULT_CACHE_SLOTS;
	fs->slots = lz_calloc(fs->nslots, sizeof(*fs->slots));
	if (!fs->slots)
		return -ENOMEM;
	for (size_t i = 0; i < fs->nslots; i++)
		pthread_mutex_init(&fs->slots[i].lock, NULL);
	for (uint32_t i = 0; i < fs->nblobs; i++) {
		struct rafs_blob *b = &fs->blobs[i];

		pthread_mutex_init(&b->lock, NULL);
		atomic_store(&b->fd, -1);
		atomic_store(&b->ci, NULL);
		if (b->chunk_count) {
			b->verified = lz_calloc(LZ_DIV_ROUND_UP(b->chunk_count, 64u), sizeof(*b->verified));
			if (!b->verified)
				return -ENOMEM;
		}
		/* nydus names a blob by the file its inlined bootstrap came from */
		if (opts && opts->inlined_blob_id && fs->version == 6 &&
		    (((b->features & RAFS_BF_INLINED_FS_META) && !(b->features & RAFS_BF_SEPARATE)) ||
		     !(b->features & RAFS_BF_CAP_TAR_TOC))) {
			snprintf(b->id, sizeof(b->id), "%s", opts->inlined_blob_id);
		}
	}
	if (opts && opts->blob_dir) {
		fs->blob_dir = strdup(opts->blob_dir);
		if (!fs->blob_dir)
			return -ENOMEM;
	}
	fs->merge_max = opts && opts->merge_max ? opts->merge_max : RAFS_DEFAULT_MERGE_MAX;
	if (opts) {
		fs->backend = opts->backend;
		fs->backend_ctx = opts->backend_ctx;
		fs->cache = opts->cache;
		fs->cache_ctx = opts->cache_ctx;
	}
	return 0;
}

void rafs_blobs_exit(struct rafs *fs)
{
	for (uint32_t i = 0; fs->blobs && i < fs->nblobs; i++) {
		struct rafs_blob *b = &fs->blobs[i];
		int fd = atomic_load(&b->fd);

		if (fd >= 0)
			close(fd);
		free(atomic_load(&b->ci));
		free((void *)b->verified);
		if (fs->slots)
			pthread_mutex_destroy(&b->lock);
	}
	for (size_t i = 0; fs->slots && i < fs->nslots; i++) {
		free(fs->slots[i].buf);
		pthread_mutex_destroy(&fs->slots[i].lock);
	}
	free(fs->slots);
	free(fs->blobs);
	free(fs->blob_dir);
}

static int read_chunk(struct rafs *fs, const struct img_chunk *c, void *out, const struct rafs_next *next);

static size_t slot_of(const struct rafs *fs, uint32_t blob, uint64_t coff)
{
	uint64_t h = (coff ^ ((uint64_t)blob << 56)) * 0x9E3779B97F4A7C15ull;

	return (size_t)(h >> 32) % fs->nslots;
}

static int unsupported(struct rafs *fs, const struct img_chunk *c)
{
	const char *what = c->flags & IMG_CHUNK_ZRAN ? "zran (gzip-referenced) chunks" :
			   c->flags & IMG_CHUNK_BATCH ? "batch chunks" : "encrypted chunks";

	if (lz_ratelimit(&fs->unsupported_log, 60))
		lz_err("blob %s: unsupported feature: %s", fs->blobs[c->blob_index].id, what);
	return -EOPNOTSUPP;
}

/* Decode (if compressed) and verify one chunk whose stored bytes are `src`. */
static int decode_chunk(struct rafs *fs, const struct img_chunk *c, const uint8_t *src, void *out)
{
	struct rafs_blob *b = &fs->blobs[c->blob_index];
	uint8_t dg[LZ_DIGEST_LEN];
	int comp = fs->version == 5 ? fs->comp : b->comp;
	int ret;

	if (!(c->flags & IMG_CHUNK_COMPRESSED)) {
		if (src != out)
			memcpy(out, src, c->uncompressed_size);
	} else {
		ret = lz_decompress(comp, src, c->compressed_size, out, c->uncompressed_size);
		if (ret) {
			if (lz_ratelimit(&b->bad_log, 10))
				lz_err("blob %s: chunk at offset %llu (+%u): cannot decompress %s data",
				       b->id, (unsigned long long)c->compressed_offset,
				       c->compressed_size, lz_compressor_name(comp));
			return ret;
		}
	}
	if (fs->validate && c->digest) {
		lz_digest(fs->digester, out, c->uncompressed_size, dg);
		if (memcmp(dg, c->digest, LZ_DIGEST_LEN) != 0) {
			if (lz_ratelimit(&b->bad_log, 10))
				lz_err("blob %s: chunk at offset %llu (+%u): %s digest mismatch",
				       b->id, (unsigned long long)c->compressed_offset,
				       c->compressed_size, lz_digester_name(fs->digester));
			return -EBADMSG;
		}
	}
	atomic_fetch_add(&fs->st_fills, 1);
	return 0;
}

/* Checks every fetch path shares; 0 when the chunk can be fetched from its blob. */
static int chunk_fetchable(struct rafs *fs, const struct img_chunk *c)
{
	if (c->flags & (IMG_CHUNK_ZRAN | IMG_CHUNK_BATCH | IMG_CHUNK_ENCRYPTED))
		return unsupported(fs, c);
	if (c->blob_index >= fs->nblobs)
		return -EFSCORRUPTED;
	if (!(c->flags & IMG_CHUNK_COMPRESSED) && c->compressed_size != c->uncompressed_size)
		return -EFSCORRUPTED;
	/* a compressed chunk larger than twice the chunk size is not a real encoding */
	if ((c->flags & IMG_CHUNK_COMPRESSED) && c->compressed_size > 2 * (uint64_t)fs->chunk_size + 4096)
		return -EFSCORRUPTED;
	return 0;
}

static int fetch_chunk(struct rafs *fs, const struct img_chunk *c, void *out)
{
	struct tl_bufs *t;
	int ret;

	if (c->flags & IMG_CHUNK_HOLE) {
		memset(out, 0, c->uncompressed_size);
		return 0;
	}
	ret = chunk_fetchable(fs, c);
	if (ret)
		return ret;
	if (!(c->flags & IMG_CHUNK_COMPRESSED)) {
		ret = blob_read(fs, c->blob_index, out, c->uncompressed_size, c->compressed_offset);
		return ret ? ret : decode_chunk(fs, c, out, out);
	}
	t = lz_tls_get(&tl_scratch);
	if (!t)
		return -ENOMEM;
	ret = lz_scratch_reserve(&t->in, &t->in_cap, c->compressed_size);
	if (!ret)
		ret = blob_read(fs, c->blob_index, t->in, c->compressed_size, c->compressed_offset);
	return ret ? ret : decode_chunk(fs, c, t->in, out);
}

/*
 * The tail of a merged fetch not decoded yet: run[next..n) of the bytes in
 * `in`. A FUSE read leaves it until its reply went out (lz_defer); it is
 * finished earlier if this thread needs one of its chunks or fetches again.
 * One per thread at most.
 */
struct pending_run {
	struct rafs *fs;
	struct img_chunk run[RAFS_MERGE_MAX_CHUNKS];
	size_t n, next;
	uint8_t *in, *out;
	int err; /* the fetch's own result: every chunk left fails with it */
};

static _Thread_local struct pending_run tl_pend;

/* Decode run[i] of a fetched span into dst, verify it, hand it to the cache. */
static int run_chunk(struct rafs *fs, const struct img_chunk *run, size_t i, const uint8_t *in, int err,
		     uint8_t *dst)
{
	const struct img_chunk *c = &run[i];
	int r = err;

	if (!r && c->uncompressed_size > (fs->chunk_size ? fs->chunk_size : RAFS_MAX_CHUNK_SIZE))
		r = -EFSCORRUPTED;
	if (!r)
		r = decode_chunk(fs, c, in + (c->compressed_offset - run[0].compressed_offset), dst);
	fs->cache->done(fs->cache_ctx, c->blob_index, c, dst, r);
	return r;
}

/* Finish the pending chunks before run[upto] (all of them: upto = n). */
static void pending_advance(struct pending_run *p, size_t upto)
{
	for (; p->next < upto; p->next++)
		run_chunk(p->fs, p->run, p->next, p->in, p->err, p->out);
	if (p->next == p->n) {
		free(p->in);
		free(p->out);
		*p = (struct pending_run){ 0 };
	}
}

static void pending_flush(void *arg)
{
	(void)arg;
	if (tl_pend.fs)
		pending_advance(&tl_pend, tl_pend.n);
}

/*
 * c is pending on this thread: its cache claim is ours, so waiting for it
 * would wait forever. Decode it (and what comes before it) now into out.
 * 1 if c was pending (*ret its result), 0 if not.
 */
static int pending_take(struct rafs *fs, const struct img_chunk *c, void *out, int *ret)
{
	struct pending_run *p = &tl_pend;

	if (p->fs != fs)
		return 0;
	for (size_t i = p->next; i < p->n; i++) {
		if (p->run[i].blob_index != c->blob_index || p->run[i].compressed_offset != c->compressed_offset)
			continue;
		pending_advance(p, i);
		*ret = run_chunk(fs, p->run, i, p->in, p->err, out);
		p->next = i + 1;
		pending_advance(p, i + 1);
		return 1;
	}
	return 0;
}

/*
 * Fetch run[0..n) - chunks of one blob stored back to back, each already
 * claimed through the cache - with one backend read, then decode, verify and
 * hand each to the cache. run[0]'s bytes also go to out0 (may be NULL) and
 * its result is returned; the others' errors only reach the cache. Inside a
 * FUSE read (lz_defer window) only run[0] is done before returning: the
 * reader waits for its own chunk, not for the ones fetched alongside.
 */
static int fetch_run(struct rafs *fs, const struct img_chunk *run, size_t n, void *out0)
{
	uint64_t span = run[n - 1].compressed_offset + run[n - 1].compressed_size - run[0].compressed_offset;
	uint8_t *in = NULL, *out = NULL;
	int ret, ret0;

	pending_flush(NULL);
	in = lz_malloc(span);
	out = lz_malloc(fs->chunk_size ? fs->chunk_size : RAFS_MAX_CHUNK_SIZE);
	ret = in && out ? 0 : -ENOMEM;
	if (!ret)
		ret = blob_read(fs, run[0].blob_index, in, span, run[0].compressed_offset);
	ret0 = run_chunk(fs, run, 0, in, ret, out0 ? out0 : out);
	if (n > 1 && out0 && lz_defer_active()) {
		struct pending_run *p = &tl_pend;

		p->fs = fs;
		memcpy(p->run, run, n * sizeof(*run));
		p->n = n;
		p->next = 1;
		p->in = in;
		p->out = out;
		p->err = ret;
		lz_defer_add(pending_flush, NULL);
		return ret0;
	}
	for (size_t i = 1; i < n; i++)
		run_chunk(fs, run, i, in, ret, out);
	free(in);
	free(out);
	return ret0;
}

/* c2 is stored right after c1 in the same blob and can join a merged read. */
static bool mergeable(struct rafs *fs, const struct img_chunk *c1, const struct img_chunk *c2,
		      uint64_t span, uint64_t max)
{
	return c2->blob_index == c1->blob_index && !(c2->flags & IMG_CHUNK_HOLE) &&
	       !chunk_fetchable(fs, c2) && c2->compressed_offset == c1->compressed_offset + c1->compressed_size &&
	       span + c2->compressed_size <= max;
}

/* The chunk with the next index in c's blob (v6: the blob's chunk-info
 * array); -ENOENT at the end or where the format has no such order (v5). */
static int blob_next_chunk(struct rafs *fs, const struct img_chunk *c, struct img_chunk *nc)
{
	const struct rafs_blob *b;
	const struct rafs_ci *ci;

	if (fs->version != 6 || c->blob_index >= fs->nblobs)
		return -ENOENT;
	b = &fs->blobs[c->blob_index];
	/* ci and nci are published before any chunk of the blob is handed out */
	ci = atomic_load_explicit(&b->ci, memory_order_acquire);
	if (!ci || c->index + 1 >= b->nci || !(ci[c->index + 1].flags & RAFS_CI_PRESENT))
		return -ENOENT;
	return rafs_v6_ci_get(fs, c->blob_index, c->index + 1, nc);
}

/*
 * The caller owns chunk c (cache begin() returned 0). Extend it with the
 * chunks `next` yields while they are stored right behind it and nobody has
 * them (ready or being fetched), up to fs->merge_max bytes, and fetch them
 * all with one request: a cold sequential read costs one round trip per
 * merge_max bytes instead of one per chunk.
 */
static int fetch_owned(struct rafs *fs, const struct img_chunk *c, void *out, const struct rafs_next *next)
{
	struct img_chunk run[RAFS_MERGE_MAX_CHUNKS];
	uint64_t span = c->compressed_size;
	size_t n = 1;
	int ret;

	ret = chunk_fetchable(fs, c);
	if (ret || !next || !fs->cache->try_begin) {
		ret = ret ? ret : fetch_chunk(fs, c, out);
		fs->cache->done(fs->cache_ctx, c->blob_index, c, out, ret);
		return ret;
	}
	run[0] = *c;
	for (uint64_t k = next->k + 1; k < next->nchunks && n < RAFS_MERGE_MAX_CHUNKS; k++) {
		struct img_chunk nc;

		if (next->fn(fs, next->arg, k, &nc) || !mergeable(fs, &run[n - 1], &nc, span, fs->merge_max))
			goto fetch;
		if (fs->cache->try_begin(fs->cache_ctx, nc.blob_index, &nc) != 1)
			goto fetch;
		run[n++] = nc;
		span += nc.compressed_size;
	}
	/*
	 * The file ends inside the run: go on with the chunks stored after it in
	 * the blob (other files, usually the next ones of the same directory),
	 * up to half the bound. Reading a tree of small files then costs one
	 * request per merge_max / 2 bytes instead of one per file; nydusd calls
	 * this amplified I/O.
	 */
	while (n < RAFS_MERGE_MAX_CHUNKS) {
		struct img_chunk nc;

		if (blob_next_chunk(fs, &run[n - 1], &nc) ||
		    !mergeable(fs, &run[n - 1], &nc, span, fs->merge_max / 2) ||
		    fs->cache->try_begin(fs->cache_ctx, nc.blob_index, &nc) != 1)
			break;
		run[n++] = nc;
		span += nc.compressed_size;
	}
fetch:
	if (n > 1)
		atomic_fetch_add(&fs->st_merged, n - 1);
	return fetch_run(fs, run, n, out);
}

int rafs_fetch_chunks(struct rafs *fs, const struct img_chunk *cs, size_t n, uint64_t max)
{
	struct img_chunk run[RAFS_MERGE_MAX_CHUNKS];
	size_t nrun = 0;
	uint64_t span = 0;
	int ret = 0, r;

	if (!fs->cache || !fs->cache->try_begin)
		return -EOPNOTSUPP;
	for (size_t i = 0; i <= n; i++) {
		const struct img_chunk *c = i < n ? &cs[i] : NULL;

		if (c && nrun && nrun < RAFS_MERGE_MAX_CHUNKS && mergeable(fs, &run[nrun - 1], c, span, max)) {
			if (fs->cache->try_begin(fs->cache_ctx, c->blob_index, c) == 1) {
				run[nrun++] = *c;
				span += c->compressed_size;
				continue;
			}
			c = NULL; /* not ours: ends the run, and nothing to start */
		}
		if (nrun) {
			if (nrun > 1)
				atomic_fetch_add(&fs->st_merged, nrun - 1);
			r = fetch_run(fs, run, nrun, NULL);
			if (r && !ret)
				ret = r;
			nrun = 0;
			span = 0;
		}
		if (!c || (c->flags & IMG_CHUNK_HOLE) || chunk_fetchable(fs, c))
			continue;
		if (fs->cache->try_begin(fs->cache_ctx, c->blob_index, c) == 1) {
			run[nrun++] = *c;
			span = c->compressed_size;
		}
	}
	return ret;
}

/*
 * Keyed by the chunk's index in its blob. The bootstrap is the root of trust
 * (its digest is what a registry or the user vouches for); blobs are not.
 */
static bool chunk_verified(const struct rafs *fs, const struct img_chunk *c)
{
	const struct rafs_blob *b;

	if (c->blob_index >= fs->nblobs)
		return false;
	b = &fs->blobs[c->blob_index];
	if (!b->verified || c->index >= b->chunk_count)
		return false;
	return atomic_load_explicit(&b->verified[c->index / 64], memory_order_relaxed) >> (c->index % 64) & 1;
}

static void chunk_set_verified(struct rafs *fs, const struct img_chunk *c)
{
	struct rafs_blob *b = &fs->blobs[c->blob_index];

	if (b->verified && c->index < b->chunk_count)
		atomic_fetch_or_explicit(&b->verified[c->index / 64], 1ull << (c->index % 64),
					 memory_order_relaxed);
}

int rafs_chunk_copy(struct rafs *fs, const struct img_chunk *c, uint64_t skip, void *dst, size_t n,
		    const struct rafs_next *next)
{
	struct rafs_cslot *s;
	struct tl_bufs *t;
	uint8_t *tmp;
	size_t tcap;
	int ret;

	if (!lz_range_ok(skip, n, c->uncompressed_size))
		return -EFSCORRUPTED;
	if (c->flags & IMG_CHUNK_HOLE) {
		memset(dst, 0, n);
		return 0;
	}
	s = &fs->slots[slot_of(fs, c->blob_index, c->compressed_offset)];
	pthread_mutex_lock(&s->lock);
	if (s->len && s->blob == c->blob_index && s->coff == c->compressed_offset &&
	    s->len == c->uncompressed_size) {
		memcpy(dst, s->buf + skip, n);
		pthread_mutex_unlock(&s->lock);
		atomic_fetch_add(&fs->st_hits, 1);
		return 0;
	}
	pthread_mutex_unlock(&s->lock);

	if (!fs->cache &&
	    !(c->flags & (IMG_CHUNK_COMPRESSED | IMG_CHUNK_ZRAN | IMG_CHUNK_BATCH | IMG_CHUNK_ENCRYPTED)) &&
	    (!fs->validate || chunk_verified(fs, c))) {
		/* raw, and unverified by choice or verified once: read the wanted bytes into the reply */
		if (c->blob_index >= fs->nblobs || c->compressed_size != c->uncompressed_size)
			return -EFSCORRUPTED;
		return blob_read(fs, c->blob_index, dst, n, c->compressed_offset + skip);
	}
	t = lz_tls_get(&tl_scratch);
	if (!t)
		return -ENOMEM;
	ret = lz_scratch_reserve(&t->out, &t->out_cap, c->uncompressed_size);
	if (ret)
		return ret;
	ret = read_chunk(fs, c, t->out, next);
	if (ret) {
		atomic_fetch_add(&fs->st_errors, 1);
		return ret;
	}
	memcpy(dst, t->out + skip, n);
	if (!(c->flags & IMG_CHUNK_COMPRESSED))
		chunk_set_verified(fs, c);
	/* hand the decoded buffer to the cache slot and take its old one as scratch */
	pthread_mutex_lock(&s->lock);
	tmp = s->buf;
	tcap = s->cap;
	s->buf = t->out;
	s->cap = t->out_cap;
	s->blob = c->blob_index;
	s->coff = c->compressed_offset;
	s->len = c->uncompressed_size;
	pthread_mutex_unlock(&s->lock);
	t->out = tmp;
	t->out_cap = tmp ? tcap : 0;
	return 0;
}

static int read_chunk(struct rafs *fs, const struct img_chunk *c, void *out, const struct rafs_next *next)
{
	int ret;

	if (!fs->cache || (c->flags & IMG_CHUNK_HOLE))
		return fetch_chunk(fs, c, out);
	if (pending_take(fs, c, out, &ret))
		return ret;
	ret = fs->cache->begin(fs->cache_ctx, c->blob_index, c, out);
	if (ret == 1) {
		atomic_fetch_add(&fs->st_hits, 1);
		return 0;
	}
	if (ret < 0)
		return ret;
	return fetch_owned(fs, c, out, next);
}

int rafs_read_chunk(struct rafs *fs, const struct img_chunk *c, void *out)
{
	return read_chunk(fs, c, out, NULL);
}

/* Fill a v6 blob's CI array from the bootstrap chunk table. */
static int ci_from_chunk_table(struct rafs *fs, uint32_t bi, struct rafs_ci **out, uint32_t *nout)
{
	struct rafs_blob *b = &fs->blobs[bi];
	uint64_t n = fs->chunk_table_size / sizeof(struct rafs_chunk_info);
	uint32_t max = 0;
	struct rafs_ci *ci;

	for (uint64_t i = 0; i < n; i++) {
		const uint8_t *e = fs->base + fs->chunk_table_off + i * sizeof(struct rafs_chunk_info);
		uint32_t idx = lz_get_le32(e + offsetof(struct rafs_chunk_info, index));

		if (lz_get_le32(e + offsetof(struct rafs_chunk_info, blob_index)) != bi)
			continue;
		if ((b->chunk_count && idx >= b->chunk_count) || idx >= RAFS_MAX_CHUNKS_PER_BLOB) {
			lz_err("v6: chunk table entry %llu: index %u >= chunk count %u of blob %s",
			       (unsigned long long)i, idx, b->chunk_count, b->id);
			return -EFSCORRUPTED;
		}
		if (idx + 1 > max)
			max = idx + 1;
	}
	ci = lz_calloc(max ? max : 1, sizeof(*ci));
	if (!ci)
		return -ENOMEM;
	for (uint64_t i = 0; i < n; i++) {
		struct rafs_chunk_info r;
		struct rafs_ci *c;

		memcpy(&r, fs->base + fs->chunk_table_off + i * sizeof(r), sizeof(r));
		if (LE32(r, blob_index) != bi)
			continue;
		c = &ci[LE32(r, index)];
		c->coff = LE64(r, compressed_offset);
		c->uoff = LE64(r, uncompressed_offset);
		c->csize = LE32(r, compressed_size);
		c->usize = LE32(r, uncompressed_size);
		c->flags = RAFS_CI_PRESENT | ((LE32(r, flags) & RAFS_CF_COMPRESSED) ? IMG_CHUNK_COMPRESSED : 0) |
			   ((LE32(r, flags) & RAFS_CF_BATCH) ? IMG_CHUNK_BATCH : 0) |
			   ((LE32(r, flags) & RAFS_CF_ENCRYPTED) ? IMG_CHUNK_ENCRYPTED : 0);
		c->digest = fs->base + fs->chunk_table_off + i * sizeof(r);
	}
	*out = ci;
	*nout = max;
	return 0;
}

/* Decode a CI array (v1 16-byte or v2 24-byte entries) from uncompressed CI data. */
static int ci_decode(struct rafs *fs, uint32_t bi, const uint8_t *data, uint64_t len, uint32_t n,
		     bool v2, struct rafs_ci **out)
{
	struct rafs_ci *ci;

	if ((uint64_t)n * (v2 ? 24 : 16) > len)
		return -EFSCORRUPTED;
	ci = lz_calloc(n ? n : 1, sizeof(*ci));
	if (!ci)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++) {
		struct rafs_ci *c = &ci[i];

		if (v2) {
			uint64_t w0 = lz_get_le64(data + 24ull * i), w1 = lz_get_le64(data + 24ull * i + 8);
			uint32_t f = (uint32_t)(w0 >> 56);

			c->uoff = (w0 & 0xffffffffull) << 12;
			c->usize = (uint32_t)((w0 >> 32) & 0xffffff) + 1;
			c->coff = w1 & 0xffffffffffull;
			c->csize = (uint32_t)(w1 >> 40);
			if (f & ~0x1fu) {
				lz_err("blob %s: chunk info %u has unknown flags 0x%x", fs->blobs[bi].id, i, f);
				free(ci);
				return -EFSCORRUPTED;
			}
			c->flags = RAFS_CI_PRESENT | (f & RAFS_CI2_COMPRESSED ? IMG_CHUNK_COMPRESSED : 0) |
				   (f & RAFS_CI2_ZRAN ? IMG_CHUNK_ZRAN : 0) |
				   (f & RAFS_CI2_BATCH ? IMG_CHUNK_BATCH : 0) |
				   (f & RAFS_CI2_ENCRYPTED ? IMG_CHUNK_ENCRYPTED : 0);
		} else {
			uint64_t w0 = lz_get_le64(data + 16ull * i), w1 = lz_get_le64(data + 16ull * i + 8);

			c->usize = (uint32_t)((((w0 >> 8) & 0xf) << 20 | (w0 >> 44)) + 1);
			c->uoff = w0 & 0x00000ffffffff000ull;
			c->csize = (uint32_t)((((w1 >> 40) & 0xf) << 20 | (w1 >> 44)) + 1);
			c->coff = w1 & 0xffffffffffull;
			c->flags = RAFS_CI_PRESENT | (c->csize != c->usize ? IMG_CHUNK_COMPRESSED : 0);
		}
	}
	*out = ci;
	return 0;
}

/* Load a v6 blob's CI array from the blob meta stored at ci_offset in the blob. */
static int ci_from_blob_meta(struct rafs *fs, uint32_t bi, struct rafs_ci **out, uint32_t *nout)
{
	struct rafs_blob *b = &fs->blobs[bi];
	struct rafs_blobmeta_hdr h;
	uint8_t *raw = NULL, *data = NULL;
	uint64_t rawlen;
	int ret;

	if (!b->ci_csize || b->ci_usize > (uint64_t)RAFS_MAX_CHUNKS_PER_BLOB * 24 + (64u << 20)) {
		lz_err("blob %s: no usable blob meta (CI %llu/%llu bytes) and no chunk table in the bootstrap",
		       b->id, (unsigned long long)b->ci_csize, (unsigned long long)b->ci_usize);
		return -EFSCORRUPTED;
	}
	rawlen = b->ci_csize + BLOBMETA_HDR_SIZE;
	raw = lz_malloc(rawlen);
	data = lz_malloc(b->ci_usize ? b->ci_usize : 1);
	ret = raw && data ? 0 : -ENOMEM;
	if (!ret)
		ret = blob_read(fs, bi, raw, rawlen, b->ci_off);
	if (ret)
		goto out;
	memcpy(&h, raw + b->ci_csize, sizeof(h));
	if (LE32(h, magic) != BLOBMETA_MAGIC || LE32(h, magic2) != BLOBMETA_MAGIC ||
	    LE32(h, ci_entries) != b->chunk_count || LE64(h, ci_offset) != b->ci_off ||
	    LE64(h, ci_compressed_size) != b->ci_csize || LE64(h, ci_uncompressed_size) != b->ci_usize ||
	    (int)LE32(h, ci_compressor) != b->ci_comp) {
		lz_err("blob %s: blob meta header at %llu does not match the bootstrap's blob table",
		       b->id, (unsigned long long)(b->ci_off + b->ci_csize));
		ret = -EFSCORRUPTED;
		goto out;
	}
	ret = lz_decompress(b->ci_comp, raw, b->ci_csize, data, b->ci_usize);
	if (ret) {
		lz_err("blob %s: cannot decompress the chunk info array", b->id);
		goto out;
	}
	ret = ci_decode(fs, bi, data, b->ci_usize, b->chunk_count,
			LE32(h, features) & RAFS_BF_CHUNK_INFO_V2, out);
	if (!ret)
		*nout = b->chunk_count;
out:
	free(raw);
	free(data);
	return ret;
}

int rafs_v6_ci_get(struct rafs *fs, uint32_t bi, uint32_t ci_index, struct img_chunk *c)
{
	struct rafs_blob *b;
	struct rafs_ci *ci, *e;
	int ret = 0;

	if (bi >= fs->nblobs) {
		lz_err("v6: chunk names blob %u, but the image has %u", bi, fs->nblobs);
		return -EFSCORRUPTED;
	}
	b = &fs->blobs[bi];
	ci = atomic_load_explicit(&b->ci, memory_order_acquire);
	if (!ci) {
		pthread_mutex_lock(&b->lock);
		ci = atomic_load(&b->ci);
		if (!ci) {
			uint32_t n = 0;

			if (fs->chunk_table_size)
				ret = ci_from_chunk_table(fs, bi, &ci, &n);
			else
				ret = ci_from_blob_meta(fs, bi, &ci, &n);
			if (!ret) {
				b->nci = n;
				atomic_store_explicit(&b->ci, ci, memory_order_release);
			}
		}
		pthread_mutex_unlock(&b->lock);
		if (ret)
			return ret;
	}
	if (ci_index >= b->nci || !(ci[ci_index].flags & RAFS_CI_PRESENT)) {
		lz_err("v6: blob %s: chunk index %u has no chunk info (%u known)", b->id, ci_index, b->nci);
		return -EFSCORRUPTED;
	}
	e = &ci[ci_index];
	memset(c, 0, sizeof(*c));
	c->compressed_offset = e->coff;
	c->uncompressed_offset = e->uoff;
	c->compressed_size = e->csize;
	c->uncompressed_size = e->usize;
	c->blob_index = bi;
	c->index = ci_index;
	c->flags = e->flags & ~RAFS_CI_PRESENT;
	c->digest = e->digest;
	if (!(c->flags & IMG_CHUNK_COMPRESSED) && !(c->flags & (IMG_CHUNK_ZRAN | IMG_CHUNK_BATCH)) &&
	    c->compressed_size != c->uncompressed_size) {
		lz_err("v6: blob %s: chunk %u is stored raw but sizes differ (%u/%u)", b->id, ci_index,
		       c->compressed_size, c->uncompressed_size);
		return -EFSCORRUPTED;
	}
	return 0;
}
