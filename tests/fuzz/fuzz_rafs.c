/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_rafs.c - the RAFS bootstrap parser, its ToC extractor and blob meta
 * header parser. The input is opened as a bootstrap with no blob directory
 * (no data I/O); if it opens, the whole tree is walked and every op of the
 * image interface is called on every entry, checking properties a correct
 * parse must have: readdir resumed at any next_off continues the full
 * listing, lookup finds the inode readdir gave, getattr agrees with itself,
 * xattr and symlink lengths agree between the size query and the copy,
 * chunks lie inside their file, reads return the length asked or an errno.
 */
#include "lazyimg/imgfs.h"
#include "lazyimg/rafs.h"
#include "fuzz.h"

#include <inttypes.h>
#include <sys/stat.h>

#define FZ_MAX_ENTRIES  4096    /* a directory listing is checked up to this many entries */
#define FZ_MAX_RESUMES  48      /* readdir resumes per directory */
#define FZ_MAX_LOOKUPS  256     /* lookups per directory */
#define FZ_MAX_CHECKED  2000    /* entries given the full treatment per image */
#define FZ_MAX_READS    6       /* files read per image */
#define FZ_READ_LEN     (64u << 10)

struct fz {
	struct rafs *fs;
	struct image *img;
	struct rafs_info info;
	unsigned checked, reads;
	uint8_t *buf;            /* FZ_READ_LEN bytes */
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

static int list_fill(void *arg, const struct img_dirent *de)
{
	struct fz_list *l = arg;
	struct fz_ent *e;

	if (l->n >= l->max)
		return 1;
	FZ_CHECK(de->name && de->name_len >= 1 && de->name_len <= IMG_NAME_MAX);
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

static bool same_attr(const struct img_attr *a, const struct img_attr *b)
{
	return a->ino == b->ino && a->size == b->size && a->blocks == b->blocks &&
	       a->mode == b->mode && a->nlink == b->nlink && a->uid == b->uid && a->gid == b->gid &&
	       a->rdev == b->rdev && a->mtime == b->mtime && a->mtime_nsec == b->mtime_nsec;
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
	FZ_ERRNO_OK(ret);
	if (ret)
		goto out;

	/* resuming at any entry's next_off continues the same listing */
	step = full.n <= FZ_MAX_RESUMES ? 1 : full.n / FZ_MAX_RESUMES;
	for (size_t i = 0; i < full.n; i += step) {
		part.n = 0;
		ret = ops->readdir(z->img, dir, full.e[i].next_off, list_fill, &part);
		FZ_ERRNO_OK(ret);
		if (ret)
			continue;   /* a later entry may be the corrupt one */
		for (size_t k = 0; k < part.n && i + 1 + k < full.n; k++) {
			const struct fz_ent *a = &part.e[k], *b = &full.e[i + 1 + k];

			FZ_CHECK(a->len == b->len && !memcmp(a->name, b->name, a->len));
			FZ_CHECK(a->ino == b->ino && a->type == b->type && a->next_off == b->next_off);
		}
		if (full.n < full.max)
			FZ_CHECK(part.n == LZ_MIN(full.n - i - 1, part.max));
	}
	/* odd offsets must not crash, whatever they return */
	{
		static const uint64_t offs[] = { 1, 2, 3, 511, 512, 513, 4095, 1u << 20, UINT64_MAX / 2,
						 UINT64_MAX };

		for (size_t i = 0; i < LZ_ARRAY_SIZE(offs); i++) {
			part.n = 0;
			ret = ops->readdir(z->img, dir, offs[i], list_fill, &part);
			FZ_ERRNO_OK(ret);
		}
	}

	/* lookup of every listed name finds the inode readdir gave */
	for (size_t i = 0, nl = 0; i < full.n && nl < FZ_MAX_LOOKUPS; i++) {
		const struct fz_ent *e = &full.e[i];
		struct img_attr a;
		bool dup = false;

		if (is_dot(e))
			continue;
		for (size_t k = 0; k < full.n && !dup; k++)
			dup = k != i && full.e[k].len == e->len && !memcmp(full.e[k].name, e->name, e->len);
		nl++;
		ret = ops->lookup(z->img, dir, e->name, e->len, &a);
		FZ_ERRNO_OK(ret);
		if (ret == 0 && !dup)
			FZ_CHECK(a.ino == e->ino);
		ret = ops->getattr(z->img, e->ino, &a);
		FZ_ERRNO_OK(ret);
		if (ret == 0)
			FZ_CHECK(a.ino == e->ino);
		/* v5 takes both from the same record: a mismatch means readdir handed
		 * out another record's inode (a hard link naming a directory). v6
		 * dirents carry their own file type, which nothing cross-checks. */
		if (ret == 0 && z->info.version == 5)
			FZ_CHECK((a.mode & S_IFMT) == e->type);
	}
	{
		struct img_attr a;
		char longname[IMG_NAME_MAX + 2];

		memset(longname, 'a', sizeof(longname));
		FZ_CHECK(ops->lookup(z->img, dir, "", 0, &a) < 0);
		FZ_CHECK(ops->lookup(z->img, dir, longname, sizeof(longname), &a) < 0);
		ret = ops->lookup(z->img, dir, "\xff\xff\xff", 3, &a);
		FZ_ERRNO_OK(ret);
	}
out:
	free(full.e);
}

static void check_xattrs(struct fz *z, uint64_t ino)
{
	const struct image_ops *ops = z->img->ops;
	ssize_t n, n2;
	char *list;

	n = ops->listxattr(z->img, ino, NULL, 0);
	FZ_ERRNO_OK(n);
	if (n <= 0)
		return;
	list = malloc((size_t)n);
	if (!list)
		abort();
	n2 = ops->listxattr(z->img, ino, list, (size_t)n);
	FZ_CHECK(n2 == n);
	FZ_CHECK(list[n - 1] == 0);
	if (n > 1)
		FZ_CHECK(ops->listxattr(z->img, ino, list, (size_t)n - 1) == -ERANGE);
	n2 = ops->listxattr(z->img, ino, list, (size_t)n);
	FZ_CHECK(n2 == n);
	for (ssize_t p = 0; p < n; p += (ssize_t)strlen(list + p) + 1) {
		const char *name = list + p;
		ssize_t v, v2;
		uint8_t *val;

		FZ_CHECK(name[0] != 0);
		/* every listed name can be read back */
		v = ops->getxattr(z->img, ino, name, NULL, 0);
		FZ_CHECK(v >= 0);
		val = malloc((size_t)v + 1);
		if (!val)
			abort();
		if (v > 0) {
			v2 = ops->getxattr(z->img, ino, name, val, (size_t)v);
			FZ_CHECK(v2 == v);
			if (v > 1)   /* size 0 would be the length query */
				FZ_CHECK(ops->getxattr(z->img, ino, name, val, (size_t)v - 1) == -ERANGE);
		}
		free(val);
	}
	free(list);
	FZ_CHECK(ops->getxattr(z->img, ino, "user.lazyimg.fuzz.absent", NULL, 0) < 0);
}

static void check_symlink(struct fz *z, const struct img_attr *a)
{
	char buf[4097], one[1];
	ssize_t n, n2;

	n = z->img->ops->readlink(z->img, a->ino, buf, sizeof(buf));
	FZ_ERRNO_OK(n);
	if (n < 0)
		return;
	FZ_CHECK((uint64_t)n == a->size && n >= 1 && n <= 4096);
	n2 = z->img->ops->readlink(z->img, a->ino, one, sizeof(one));
	FZ_CHECK(n2 == n && one[0] == buf[0]);
}

struct fz_chunks {
	const struct fz *z;
	const struct img_attr *a;
	uint64_t n;
};

static int chunk_fn(void *arg, const struct img_chunk *c)
{
	struct fz_chunks *x = arg;

	x->n++;
	FZ_CHECK(lz_range_ok(c->file_offset, c->uncompressed_size, x->a->size));
	FZ_CHECK(c->uncompressed_size <= x->z->info.chunk_size);
	if (!(c->flags & IMG_CHUNK_HOLE))
		FZ_CHECK(c->blob_index < x->z->info.nblobs);
	return 0;
}

static void check_file(struct fz *z, const struct img_attr *a)
{
	const struct image_ops *ops = z->img->ops;
	struct fz_chunks x = { .z = z, .a = a };
	uint64_t size = a->size, off, want;
	ssize_t n;
	int ret;

	ret = ops->chunks(z->img, a->ino, chunk_fn, &x);
	FZ_ERRNO_OK(ret);
	if (!ret)
		FZ_CHECK(x.n <= LZ_DIV_ROUND_UP(size, z->info.chunk_size));
	if (z->reads >= FZ_MAX_READS)
		return;
	z->reads++;
	/* no blob directory: data reads fail cleanly, holes and empty files succeed */
	want = LZ_MIN(size, (uint64_t)FZ_READ_LEN);
	n = ops->read(z->img, a->ino, z->buf, (size_t)want, 0);
	FZ_ERRNO_OK(n);
	if (n >= 0)
		FZ_CHECK((uint64_t)n == want);
	if (size == 0 || size > INT64_MAX - FZ_READ_LEN)   /* the kernel caps offsets at 2^63-1 */
		return;
	off = size - 1;
	n = ops->read(z->img, a->ino, z->buf, 4096, off);
	FZ_ERRNO_OK(n);
	if (n >= 0)
		FZ_CHECK(n == 1);
	n = ops->read(z->img, a->ino, z->buf, 4096, size);
	FZ_ERRNO_OK(n);
	FZ_CHECK(n <= 0);   /* EOF, or the file's chunk map is corrupt */
}

static int walk_fn(void *arg, const char *path, const struct img_attr *a)
{
	struct fz *z = arg;
	const struct image_ops *ops = z->img->ops;
	struct img_attr b;
	int ret;

	FZ_CHECK(path[0] == '/');
	if (z->checked >= FZ_MAX_CHECKED)
		return 0;
	z->checked++;
	ret = ops->getattr(z->img, a->ino, &b);
	FZ_CHECK(ret == 0 && same_attr(a, &b));
	check_xattrs(z, a->ino);
	if (S_ISLNK(a->mode)) {
		check_symlink(z, a);
	} else {
		char c;

		FZ_CHECK(ops->readlink(z->img, a->ino, &c, 1) < 0);
	}
	if (S_ISDIR(a->mode)) {
		check_dir(z, a->ino);
		FZ_CHECK(ops->read(z->img, a->ino, z->buf, 16, 0) < 0);
	} else {
		struct fz_list l = { .max = 0 };

		FZ_CHECK(ops->readdir(z->img, a->ino, 0, list_fill, &l) < 0);
	}
	if (S_ISREG(a->mode))
		check_file(z, a);
	return 0;
}

static void fuzz_bootstrap(const uint8_t *data, size_t size)
{
	struct rafs_opts o = { .validate = true };
	struct fz z = { 0 };
	struct img_attr a;
	struct img_statfs st;
	uint64_t pf[64];
	size_t npf;
	int ret;

	if (rafs_open_mem(data, size, &o, &z.fs))
		return;
	z.img = rafs_image(z.fs);
	rafs_get_info(z.fs, &z.info);
	FZ_CHECK(z.info.version == 5 || z.info.version == 6);
	FZ_CHECK(z.info.bootstrap_size == size);
	FZ_CHECK(z.info.chunk_size >= RAFS_MIN_CHUNK_SIZE && z.info.chunk_size <= RAFS_MAX_CHUNK_SIZE &&
		 !(z.info.chunk_size & (z.info.chunk_size - 1)));
	FZ_CHECK(z.info.nblobs <= RAFS_MAX_BLOBS);
	for (unsigned i = 0; i < z.info.nblobs; i++) {
		struct rafs_blob_info bi;

		FZ_CHECK(rafs_get_blob(z.fs, i, &bi) == 0);
		FZ_CHECK(bi.id[0] && strlen(bi.id) <= RAFS_MAX_BLOB_ID && !strchr(bi.id, '/'));
	}
	/* a successful open means the root is a directory */
	ret = z.img->ops->getattr(z.img, IMG_ROOT_INO, &a);
	FZ_CHECK(ret == 0 && S_ISDIR(a.mode) && a.ino == IMG_ROOT_INO);
	z.img->ops->statfs(z.img, &st);
	npf = rafs_prefetch_list(z.fs, pf, LZ_ARRAY_SIZE(pf));
	FZ_CHECK(npf <= LZ_ARRAY_SIZE(pf));
	for (size_t i = 0; i < npf; i++)
		FZ_ERRNO_OK(z.img->ops->getattr(z.img, pf[i], &a));
	/* inode numbers nobody handed out */
	{
		static const uint64_t inos[] = { 0, 2, 3, 4, 5, 130, 1u << 16, UINT32_MAX, UINT64_MAX };

		for (size_t i = 0; i < LZ_ARRAY_SIZE(inos); i++) {
			ret = z.img->ops->getattr(z.img, inos[i], &a);
			FZ_ERRNO_OK(ret);
			if (ret == 0)
				FZ_CHECK(a.ino == inos[i]);
		}
	}
	z.buf = malloc(FZ_READ_LEN);
	if (!z.buf)
		abort();
	ret = imgfs_walk(z.img, walk_fn, &z);
	FZ_ERRNO_OK(ret);
	FZ_CHECK(ret <= 0);
	/* inspect drives the same ops through a second consumer */
	{
		FILE *null = fopen("/dev/null", "w");

		if (null) {
			FZ_ERRNO_OK(rafs_inspect(z.fs, null, z.checked & 1, true));
			fclose(null);
		}
	}
	free(z.buf);
	rafs_close(z.fs);
}

static void fuzz_blobmeta(const uint8_t *data, size_t size)
{
	struct rafs_blobmeta bm;

	if (rafs_blobmeta_parse(data, size, &bm))
		return;
	/* the header agrees with the data in front of it */
	FZ_CHECK(size >= 4096 && size % 4096 == 0);
	FZ_CHECK(bm.ci_uncompressed_size <= size - 4096);
	FZ_CHECK(LZ_ALIGN_UP(bm.ci_uncompressed_size, 4096ull) == size - 4096);
	FZ_CHECK((uint64_t)bm.ci_entries * ((bm.features & 0x4) ? 24 : 16) <= bm.ci_uncompressed_size);
	if (bm.zran_count)
		FZ_CHECK(lz_range_ok(bm.zran_offset, bm.zran_size, bm.ci_uncompressed_size));
}

static void fuzz_toc(const uint8_t *data, size_t size)
{
	static const char *const names[] = { "image.boot", "blob.meta", "blob.meta.header",
					     "blob.digest", "image.blob" };

	for (size_t i = 0; i < LZ_ARRAY_SIZE(names); i++) {
		void *out = NULL;
		size_t len = 0;
		int ret = rafs_toc_extract(data, size, names[i], &out, &len);

		FZ_ERRNO_OK(ret);
		if (ret)
			continue;
		FZ_CHECK(out && len > 0);
		if (i == 0)
			fuzz_bootstrap(out, len);    /* an inlined bootstrap gets the full treatment */
		else if (i == 2)
			fuzz_blobmeta(out, len);
		free(out);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	lz_log_level = -1;      /* parsers log every rejection; keep the fuzzer's output readable */
	fuzz_bootstrap(data, size);
	fuzz_blobmeta(data, size);
	fuzz_toc(data, size);
	return 0;
}
