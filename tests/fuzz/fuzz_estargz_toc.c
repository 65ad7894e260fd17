/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_estargz_toc.c - the eStargz TOC parser and tree builder. The input is
 * a TOC JSON (or, when it starts like one, a gzip TOC member, which is
 * decoded first). It is opened as one merged layer, as one layer shown as it
 * is, and as two merged layers of itself, with a memory backend over the
 * input bytes (so data offsets point somewhere real and reads run the whole
 * inflate/verify path). If it opens, every op of the image interface is
 * called on every entry and properties a correct build must have are
 * checked: readdir resumed at any next_off continues the listing, lookup
 * finds the inode readdir gave, getattr agrees with the walk, nlink and
 * types are sane, xattr and symlink lengths agree between the size query and
 * the copy, a file's chunks tile [0, size) and lie inside the layer's cache
 * geometry, reads return the length asked or an errno.
 *
 * fuzz_estargz_footer.c includes this file for the same checks (ES_FUZZ_NO_MAIN).
 */
#include "lazyimg/estargz.h"
#include "lazyimg/imgfs.h"
#include "fuzz.h"

#include <sys/stat.h>

#define FZ_MAX_ENTRIES  4096    /* a directory listing is checked up to this many entries */
#define FZ_MAX_RESUMES  32
#define FZ_MAX_LOOKUPS  256
#define FZ_MAX_CHECKED  1500    /* entries given the full treatment per image */
#define FZ_MAX_READS    8       /* files read per image */
#define FZ_READ_LEN     (64u << 10)

struct fz {
	struct estargz *es;
	struct image *img;
	const uint8_t *blob;
	size_t blob_len;
	unsigned checked, reads;
	uint8_t *buf;
};

struct fz_ent {
	char name[IMG_NAME_MAX + 1];
	size_t len;
	uint64_t ino, next_off;
	uint32_t type;
};

struct fz_list {
	struct fz_ent *e;
	size_t n, max;
};

static int fz_mem_read(void *ctx, unsigned bi, const char *id, void *buf, size_t len, uint64_t off)
{
	const struct fz *z = ctx;

	FZ_CHECK(id && id[0]);
	if (!lz_range_ok(off, len, z->blob_len))
		return -EIO;
	memcpy(buf, z->blob + off, len);
	return 0;
}

static const struct img_backend_ops fz_backend = { .read = fz_mem_read };

static int list_fill(void *arg, const struct img_dirent *de)
{
	struct fz_list *l = arg;
	struct fz_ent *e;

	if (l->n >= l->max)
		return 1;
	FZ_CHECK(de->name && de->name_len >= 1 && de->name_len <= IMG_NAME_MAX);
	FZ_CHECK(!memchr(de->name, '/', de->name_len) && !memchr(de->name, 0, de->name_len));
	e = &l->e[l->n++];
	memcpy(e->name, de->name, de->name_len);
	e->name[de->name_len] = 0;
	e->len = de->name_len;
	e->ino = de->ino;
	e->next_off = de->next_off;
	e->type = de->type;
	return 0;
}

static bool is_dot(const struct fz_ent *e)
{
	return (e->len == 1 && e->name[0] == '.') || (e->len == 2 && !memcmp(e->name, "..", 2));
}

static void check_dir(struct fz *z, uint64_t dir)
{
	const struct image_ops *ops = z->img->ops;
	struct fz_list full = { .max = FZ_MAX_ENTRIES }, part = { .max = 4 };
	struct fz_ent pe[4];
	size_t step;
	int ret;

	full.e = malloc(FZ_MAX_ENTRIES * sizeof(*full.e));
	if (!full.e)
		abort();
	part.e = pe;
	ret = ops->readdir(z->img, dir, 0, list_fill, &full);
	FZ_CHECK(ret == 0);
	FZ_CHECK(full.n >= 2);
	step = full.n <= FZ_MAX_RESUMES ? 1 : full.n / FZ_MAX_RESUMES;
	for (size_t i = 0; i < full.n; i += step) {
		part.n = 0;
		FZ_CHECK(ops->readdir(z->img, dir, full.e[i].next_off, list_fill, &part) == 0);
		for (size_t k = 0; k < part.n && i + 1 + k < full.n; k++) {
			const struct fz_ent *a = &part.e[k], *b = &full.e[i + 1 + k];

			FZ_CHECK(a->len == b->len && !memcmp(a->name, b->name, a->len));
			FZ_CHECK(a->ino == b->ino && a->type == b->type && a->next_off == b->next_off);
		}
		if (full.n < full.max)
			FZ_CHECK(part.n == LZ_MIN(full.n - i - 1, part.max));
	}
	{
		static const uint64_t offs[] = { 1, 2, 3, 511, 1u << 20, UINT32_MAX, UINT64_MAX / 2, UINT64_MAX };

		for (size_t i = 0; i < LZ_ARRAY_SIZE(offs); i++) {
			part.n = 0;
			FZ_ERRNO_OK(ops->readdir(z->img, dir, offs[i], list_fill, &part));
		}
	}
	for (size_t i = 0, nl = 0; i < full.n && nl < FZ_MAX_LOOKUPS; i++) {
		const struct fz_ent *e = &full.e[i];
		struct img_attr a;

		if (is_dot(e))
			continue;
		/* names in one directory are unique */
		if (i + 1 < full.n)
			FZ_CHECK(!(full.e[i + 1].len == e->len && !memcmp(full.e[i + 1].name, e->name, e->len)));
		nl++;
		FZ_CHECK(ops->lookup(z->img, dir, e->name, e->len, &a) == 0);
		FZ_CHECK(a.ino == e->ino);
		FZ_CHECK((a.mode & S_IFMT) == e->type);
	}
	{
		struct img_attr a;
		char longname[IMG_NAME_MAX + 2];

		memset(longname, 'a', sizeof(longname));
		FZ_CHECK(ops->lookup(z->img, dir, "", 0, &a) < 0);
		FZ_CHECK(ops->lookup(z->img, dir, longname, sizeof(longname), &a) < 0);
		FZ_ERRNO_OK(ops->lookup(z->img, dir, "\xff\xfe", 2, &a));
	}
	free(full.e);
}

static void check_xattrs(struct fz *z, uint64_t ino)
{
	const struct image_ops *ops = z->img->ops;
	ssize_t n, n2;
	char *list;

	n = ops->listxattr(z->img, ino, NULL, 0);
	FZ_CHECK(n >= 0);
	if (n == 0)
		return;
	list = malloc((size_t)n);
	if (!list)
		abort();
	n2 = ops->listxattr(z->img, ino, list, (size_t)n);
	FZ_CHECK(n2 == n);
	FZ_CHECK(list[n - 1] == 0);
	if (n > 1)
		FZ_CHECK(ops->listxattr(z->img, ino, list, (size_t)n - 1) == -ERANGE);
	for (ssize_t p = 0; p < n; p += (ssize_t)strlen(list + p) + 1) {
		const char *name = list + p;
		ssize_t v, v2;
		uint8_t *val;

		FZ_CHECK(name[0] != 0);
		v = ops->getxattr(z->img, ino, name, NULL, 0);
		FZ_CHECK(v >= 0 && v <= ESTARGZ_MAX_XATTR_VALUE);
		val = malloc((size_t)v + 1);
		if (!val)
			abort();
		if (v > 0) {
			v2 = ops->getxattr(z->img, ino, name, val, (size_t)v);
			FZ_CHECK(v2 == v);
			if (v > 1)
				FZ_CHECK(ops->getxattr(z->img, ino, name, val, (size_t)v - 1) == -ERANGE);
		}
		free(val);
	}
	free(list);
	FZ_CHECK(ops->getxattr(z->img, ino, "user.lazyimg.fuzz.absent", NULL, 0) == -ENODATA);
}

static void check_symlink(struct fz *z, const struct img_attr *a)
{
	char buf[ESTARGZ_MAX_PATH + 1], one[1];
	ssize_t n;

	n = z->img->ops->readlink(z->img, a->ino, buf, sizeof(buf));
	FZ_CHECK((uint64_t)n == a->size && n >= 1 && n <= ESTARGZ_MAX_PATH);
	FZ_CHECK(z->img->ops->readlink(z->img, a->ino, one, sizeof(one)) == n && one[0] == buf[0]);
}

struct fz_chunks {
	const struct fz *z;
	const struct img_attr *a;
	uint64_t next;
	unsigned n;
};

static int chunk_fn(void *arg, const struct img_chunk *c)
{
	struct fz_chunks *x = arg;
	struct estargz_blob_info bi;

	/* a file's chunks tile it in order */
	FZ_CHECK(c->file_offset == x->next);
	FZ_CHECK(c->uncompressed_size >= 1 && c->uncompressed_size <= ESTARGZ_MAX_CHUNK);
	FZ_CHECK(c->compressed_size >= 1 && c->compressed_size <= ESTARGZ_MAX_FETCH);
	x->next += c->uncompressed_size;
	FZ_CHECK(x->next <= x->a->size);
	FZ_CHECK(c->blob_index < estargz_blob_count(x->z->es));
	FZ_CHECK(estargz_get_blob(x->z->es, c->blob_index, &bi) == 0);
	FZ_CHECK(c->index < bi.chunk_count);
	FZ_CHECK(lz_range_ok(c->uncompressed_offset, c->uncompressed_size, bi.space_size));
	x->n++;
	return 0;
}

static int first_chunk(void *arg, const struct img_chunk *c)
{
	*(struct img_chunk *)arg = *c;
	return 1;
}

static void check_file(struct fz *z, const struct img_attr *a)
{
	const struct image_ops *ops = z->img->ops;
	struct fz_chunks x = { .z = z, .a = a };
	uint64_t size = a->size, want;
	ssize_t n;

	FZ_CHECK(ops->chunks(z->img, a->ino, chunk_fn, &x) == 0);
	FZ_CHECK(x.next == size);
	if (z->reads >= FZ_MAX_READS)
		return;
	z->reads++;
	want = LZ_MIN(size, (uint64_t)FZ_READ_LEN);
	n = ops->read(z->img, a->ino, z->buf, (size_t)want, 0);
	FZ_ERRNO_OK(n);
	if (n >= 0)
		FZ_CHECK((uint64_t)n == want);
	if (size == 0)
		return;
	n = ops->read(z->img, a->ino, z->buf, 4096, size - 1);
	FZ_ERRNO_OK(n);
	if (n >= 0)
		FZ_CHECK(n == 1);
	FZ_CHECK(ops->read(z->img, a->ino, z->buf, 4096, size) == 0);
	/* the prefetcher's path for the first chunk: the same bytes as a read at 0 */
	if (x.n) {
		struct img_chunk c0;
		uint8_t *tmp;
		ssize_t r;

		FZ_CHECK(ops->chunks(z->img, a->ino, first_chunk, &c0) == 1);
		tmp = malloc(c0.uncompressed_size);
		if (!tmp)
			abort();
		n = estargz_read_chunk(z->es, &c0, tmp);
		FZ_ERRNO_OK(n);
		want = LZ_MIN((uint64_t)c0.uncompressed_size, (uint64_t)FZ_READ_LEN);
		r = ops->read(z->img, a->ino, z->buf, (size_t)want, 0);
		if (n == 0 && r >= 0)
			FZ_CHECK((uint64_t)r == want && !memcmp(tmp, z->buf, (size_t)want));
		free(tmp);
	}
}

static int walk_fn(void *arg, const char *path, const struct img_attr *a)
{
	struct fz *z = arg;
	const struct image_ops *ops = z->img->ops;
	struct img_attr b;

	FZ_CHECK(path[0] == '/');
	if (z->checked >= FZ_MAX_CHECKED)
		return 0;
	z->checked++;
	FZ_CHECK(ops->getattr(z->img, a->ino, &b) == 0);
	FZ_CHECK(!memcmp(a, &b, sizeof(b)));
	FZ_CHECK(a->nlink >= 1 && (a->mode & ~(uint32_t)(S_IFMT | 07777)) == 0);
	check_xattrs(z, a->ino);
	if (S_ISLNK(a->mode)) {
		check_symlink(z, a);
	} else {
		char c;

		FZ_CHECK(ops->readlink(z->img, a->ino, &c, 1) == -EINVAL);
	}
	if (S_ISDIR(a->mode)) {
		FZ_CHECK(a->nlink >= 2);
		check_dir(z, a->ino);
		FZ_CHECK(ops->read(z->img, a->ino, z->buf, 16, 0) < 0);
	} else {
		struct fz_list l = { .max = 0 };

		FZ_CHECK(ops->readdir(z->img, a->ino, 0, list_fill, &l) == -ENOTDIR);
	}
	if (S_ISREG(a->mode))
		check_file(z, a);
	return 0;
}

/* Full treatment of an opened image. */
static void fz_check_image(struct estargz *es, const uint8_t *blob, size_t blob_len)
{
	struct fz z = { .es = es, .blob = blob, .blob_len = blob_len };
	struct img_attr a;
	struct img_statfs st;
	struct estargz_info info;
	struct estargz_stats sts;
	uint64_t pf[64];
	size_t npf;
	int ret;

	z.img = estargz_image(es);
	FZ_CHECK(!strcmp(z.img->format, "estargz"));
	FZ_CHECK(z.img->ops->getattr(z.img, IMG_ROOT_INO, &a) == 0 && S_ISDIR(a.mode));
	estargz_get_info(es, &info);
	FZ_CHECK(info.inodes >= 1 && info.dirs >= 1);
	FZ_CHECK(info.dirs + info.regs + info.symlinks + info.chrs + info.blks + info.fifos == info.inodes);
	z.img->ops->statfs(z.img, &st);
	FZ_CHECK(st.files == info.inodes);
	npf = estargz_prefetch_list(es, pf, LZ_ARRAY_SIZE(pf));
	FZ_CHECK(npf <= LZ_ARRAY_SIZE(pf));
	for (size_t i = 0; i < npf; i++) {
		FZ_CHECK(z.img->ops->getattr(z.img, pf[i], &a) == 0);
		FZ_CHECK(S_ISREG(a.mode));
	}
	{
		static const uint64_t inos[] = { 0, UINT32_MAX, (uint64_t)UINT32_MAX + 2, UINT64_MAX };

		for (size_t i = 0; i < LZ_ARRAY_SIZE(inos); i++)
			FZ_CHECK(z.img->ops->getattr(z.img, inos[i], &a) == -ENOENT);
		FZ_CHECK(z.img->ops->getattr(z.img, info.inodes, &a) == 0);
		FZ_CHECK(z.img->ops->getattr(z.img, info.inodes + 1, &a) == -ENOENT);
	}
	z.buf = malloc(FZ_READ_LEN);
	if (!z.buf)
		abort();
	ret = imgfs_walk(z.img, walk_fn, &z);
	FZ_CHECK(ret == 0);
	estargz_get_stats(es, &sts);
	FZ_CHECK(sts.backend_reads >= sts.chunk_fills);
	free(z.buf);
}

/* Open json as layers and check; nlayers > 1 repeats it (a merge of itself). */
static void fz_open_json(const char *json, size_t len, const uint8_t *blob, size_t blob_len, uint64_t toc_off,
			 enum estargz_kind kind, bool merge, unsigned nlayers)
{
	struct estargz_layer L[3];
	struct fz ctx = { .blob = blob, .blob_len = blob_len };
	struct estargz_opts o = { .merge = merge, .validate = true, .backend = &fz_backend, .backend_ctx = &ctx,
				  .chunk_cache_slots = 3 };
	struct estargz *es = NULL;
	int ret;

	for (unsigned i = 0; i < nlayers; i++)
		L[i] = (struct estargz_layer){ .blob_id = i ? "fuzz-upper" : "fuzz", .blob_size = toc_off >= blob_len ? toc_off + 51 : blob_len,
					       .kind = kind, .toc_json = json, .toc_len = len,
					       .toc_offset = toc_off };
	ret = estargz_open(L, nlayers, &o, &es);
	FZ_ERRNO_OK(ret);
	if (ret) {
		FZ_CHECK(es == NULL);
		return;
	}
	fz_check_image(es, blob, blob_len);
	estargz_close(es);
}

static void fz_json_all(const char *json, size_t len, const uint8_t *blob, size_t blob_len, uint64_t toc_off,
			enum estargz_kind kind)
{
	fz_open_json(json, len, blob, blob_len, toc_off, kind, true, 1);
	fz_open_json(json, len, blob, blob_len, toc_off, kind, false, 1);
	fz_open_json(json, len, blob, blob_len, toc_off, kind, true, 2);
}

#ifndef ES_FUZZ_NO_MAIN
/* The largest value of an "offset" key in the text (a cheap scan, not a parse). */
static uint64_t max_offset(const uint8_t *d, size_t n)
{
	static const char key[] = "\"offset\"";
	uint64_t max = 0;

	for (size_t i = 0; i + sizeof(key) < n; i++) {
		uint64_t v = 0;
		size_t k = i + sizeof(key) - 1;

		if (memcmp(d + i, key, sizeof(key) - 1))
			continue;
		while (k < n && (d[k] == ' ' || d[k] == ':' || d[k] == '\t'))
			k++;
		while (k < n && d[k] >= '0' && d[k] <= '9' && v < (1ull << 50))
			v = v * 10 + (uint64_t)(d[k++] - '0');
		if (v > max)
			max = v;
	}
	return max;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	lz_log_level = -1;      /* every rejection is logged; keep the fuzzer's output readable */
	if (size >= 2 && data[0] == 0x1f && data[1] == 0x8b) {
		struct estargz_footer f = { .kind = ESTARGZ_GZIP, .toc_offset = 1, .toc_size = size };
		char *json = NULL;
		size_t jlen = 0;
		int ret = estargz_toc_decode(&f, data, size, &json, &jlen);

		FZ_ERRNO_OK(ret);
		if (!ret) {
			FZ_CHECK(json && json[jlen] == 0 && jlen <= ESTARGZ_MAX_TOC);
			fz_json_all(json, jlen, data, size, 0, ESTARGZ_GZIP);
		}
		free(json);
		return 0;
	}
	if (size >= 4 && !memcmp(data, "\x28\xb5\x2f\xfd", 4)) {
		struct estargz_footer f = { .kind = ESTARGZ_ZSTD_CHUNKED, .toc_offset = 8, .toc_size = size,
					    .toc_usize = 1 << 16 };
		char *json = NULL;
		size_t jlen = 0;

		FZ_ERRNO_OK(estargz_toc_decode(&f, data, size, &json, &jlen));
		free(json);
	}
	fz_json_all((const char *)data, size, data, size, 0, ESTARGZ_GZIP);
	/* a TOC taken from a big blob points past its own bytes: open it as such a blob too */
	{
		uint64_t end = max_offset(data, size);

		if (end >= size && end < (1ull << 40))
			fz_open_json((const char *)data, size, data, size, end + 4096, ESTARGZ_GZIP, true, 1);
	}
	return 0;
}
#endif
