/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit test for rafs/ against the real fixtures in $LAZYIMG_FIXTURES/rafs (see its
 * MANIFEST.md). For every positive fixture: the superblock and blob-table facts that
 * upstream tests assert or that MANIFEST.md verified; lookup/getattr of known paths;
 * hard links; chunk lists; every file read whole and at many offsets and sizes (1, 4095,
 * 4096, 131072 bytes, across chunk boundaries, past EOF) against the whole-file bytes and
 * the fixture's md5 list; readdir resumed at every entry's next_off; rafs_check. Also the
 * ToC extraction, the inlined-bootstrap blob, the zran blob.meta header, the zstd fixture,
 * the negative fixtures, and every allocation failing in turn (LAZYIMG: lz_fail_alloc_at).
 */
#include "lazyimg/codec.h"
#include "lazyimg/rafs.h"
#include "../t.h"

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define MIB (1u << 20)
#define BLOB_7334 "7334a2594e133cf8ae364189c2276b090fc490c627bcc3fb1077f0419a538e00"
#define BLOB_D7B8 "d7b86b1e74e316fe945741d1a9fa1b271459fe41481e304977659e0c6ecf56ac"
#define BLOB_BE7D "be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef"
#define TOC_BLOB "2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca"

/* ---- small helpers ---- */

static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	long n;

	if (!f) {
		T_FAIL("cannot open fixture %s", path);
		return NULL;
	}
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
		buf = malloc((size_t)n + 1);
		if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
			free(buf);
			buf = NULL;
		}
		*len = (size_t)n;
	}
	fclose(f);
	if (!buf)
		T_FAIL("cannot read fixture %s", path);
	return buf;
}

static void md5_hex(const void *buf, size_t len, char out[33])
{
	unsigned char d[EVP_MAX_MD_SIZE];
	unsigned int dl = 0;

	EVP_Digest(buf, len, d, &dl, EVP_md5(), NULL);
	lz_hex(d, dl, out);
}

static void sha256_hex(const void *buf, size_t len, char out[65])
{
	uint8_t d[SHA256_DIGEST_LENGTH];

	SHA256(buf, len, d);
	lz_hex(d, sizeof(d), out);
}

/* "<md5>  /path" lines of a .result / expected file */
struct md5ref {
	char md5[33];
	char path[1024];
	int seen;
};

static size_t load_md5(const char *rel, struct md5ref *refs, size_t max)
{
	FILE *f = fopen(t_fixture(rel), "r");
	char line[1024];
	size_t n = 0;

	if (!f) {
		T_FAIL("cannot open %s", t_fixture(rel));
		return 0;
	}
	while (fgets(line, sizeof(line), f) && n < max) {
		size_t i;

		for (i = 0; i < 32 && ((line[i] >= '0' && line[i] <= '9') || (line[i] >= 'a' && line[i] <= 'f')); i++)
			;
		if (i != 32 || strncmp(line + 32, "  /", 3))
			continue;
		line[strcspn(line, "\n")] = 0;
		memcpy(refs[n].md5, line, 32);
		refs[n].md5[32] = 0;
		snprintf(refs[n].path, sizeof(refs[n].path), "%s", line + 34);
		refs[n].seen = 0;
		n++;
	}
	fclose(f);
	return n;
}

/* ---- tree access through the image ops only ---- */

struct ent {
	char name[256];
	uint64_t ino, next_off;
	uint32_t type;
};

struct ents {
	struct ent *e;
	size_t n, cap;
	size_t limit;   /* stop (return 1) once this many are taken; 0: no limit */
};

static int collect(void *arg, const struct img_dirent *de)
{
	struct ents *l = arg;

	if (l->limit && l->n >= l->limit)
		return 1;
	if (l->n == l->cap) {
		size_t nc = l->cap ? 2 * l->cap : 32;
		struct ent *ne = realloc(l->e, nc * sizeof(*ne));

		if (!ne)
			abort();
		l->e = ne;
		l->cap = nc;
	}
	if (de->name_len == 0 || de->name_len > 255) {
		T_FAIL("readdir: name length %zu", de->name_len);
		return 1;
	}
	memcpy(l->e[l->n].name, de->name, de->name_len);
	l->e[l->n].name[de->name_len] = 0;
	l->e[l->n].ino = de->ino;
	l->e[l->n].next_off = de->next_off;
	l->e[l->n].type = de->type;
	l->n++;
	return 0;
}

static int list_dir(struct image *img, uint64_t ino, uint64_t off, struct ents *l)
{
	l->n = 0;
	return img->ops->readdir(img, ino, off, collect, l);
}

static int same_ent(const struct ent *a, const struct ent *b)
{
	return !strcmp(a->name, b->name) && a->ino == b->ino && a->next_off == b->next_off &&
	       a->type == b->type;
}

static int lookup_path(struct image *img, const char *path, struct img_attr *a)
{
	uint64_t ino = IMG_ROOT_INO;
	const char *p = path;
	int ret = img->ops->getattr(img, ino, a);

	while (!ret && *p) {
		size_t n;

		while (*p == '/')
			p++;
		n = strcspn(p, "/");
		if (!n)
			break;
		ret = img->ops->lookup(img, ino, p, n, a);
		ino = a->ino;
		p += n;
	}
	return ret;
}

/* ---- per-fixture expectations ---- */

struct fixture {
	const char *name;       /* relative to $LAZYIMG_FIXTURES/rafs */
	const char *blob_dir;   /* relative */
	const char *md5_file;   /* relative: md5 list */
	int version;
	uint64_t flags;
	int compressor, digester;
	bool explicit_uid;
	const char *blob_id;
	uint32_t blob_chunks;
	uint32_t blob_features;
	uint64_t blob_size;     /* 0: unknown */
	int nfiles;             /* regular files, hard links counted per path */
	uint64_t check_chunks, check_bytes; /* rafs_check totals */
};

static const struct fixture fixtures[] = {
	{ "rafs/sha256-nocompress-repeatable", "rafs/blobs", "rafs/sha256-nocompress-repeatable.result",
	  5, 0x9, LZ_COMP_NONE, LZ_DIGEST_SHA256, false, BLOB_7334, 23, 0, 3508766, 23, 23, 3508766 },
	{ "rafs/blake3-lz4_block-non_repeatable", "rafs/blobs", "rafs/blake3-lz4_block-non_repeatable.result",
	  5, 0x5, LZ_COMP_NONE, LZ_DIGEST_BLAKE3, false, BLOB_7334, 23, 0, 3508766, 23, 23, 3508766 },
	{ "rafs/repeatable-2020/blake3-lz4_block-non_repeatable", "rafs/blobs",
	  "rafs/blake3-lz4_block-non_repeatable.result",
	  5, 0x16, LZ_COMP_LZ4, LZ_DIGEST_BLAKE3, true, BLOB_D7B8, 0, 0, 0, 23, 23, 3508766 },
	{ "rafs/repeatable-2020/sha256-nocompress-repeatable", "rafs/blobs",
	  "rafs/sha256-nocompress-repeatable.result",
	  5, 0x9, LZ_COMP_NONE, LZ_DIGEST_SHA256, false, BLOB_7334, 0, 0, 0, 23, 23, 3508766 },
	{ "rafs/rafs-v6-2.2.boot", "rafs/blobs", "rafs/rafs-v6-2.2.expected.txt",
	  6, 0x194, LZ_COMP_ZSTD, LZ_DIGEST_BLAKE3, true, BLOB_BE7D, 2, 0x70000021, 14554, 2, 2, 30331 },
	{ "rafs/toc/" TOC_BLOB, "rafs/toc", "rafs/toc/" TOC_BLOB ".expected.txt",
	  6, 0x94, LZ_COMP_ZSTD, LZ_DIGEST_BLAKE3, true, TOC_BLOB, 3, 0x1, 0, 3, 3, 6609 },
};

struct chunkv {
	struct img_chunk c[64];
	size_t n;
};

static int collect_chunk(void *arg, const struct img_chunk *c)
{
	struct chunkv *v = arg;

	if (v->n < LZ_ARRAY_SIZE(v->c))
		v->c[v->n] = *c;
	v->n++;
	return 0;
}

/* read [off, off+size) and compare with the whole file; the reply buffer past the
 * returned length must be untouched */
static void read_at(struct image *img, const char *path, uint64_t ino, const uint8_t *whole,
		    uint64_t fsize, uint64_t off, size_t size, uint8_t *buf)
{
	size_t want = off >= fsize ? 0 : (size_t)LZ_MIN((uint64_t)size, fsize - off);
	ssize_t n;

	memset(buf, 0xC3, size + 64);
	n = img->ops->read(img, ino, buf, size, off);
	if (n != (ssize_t)want) {
		T_FAIL("%s: read(off %llu, size %zu) = %zd, want %zu", path, (unsigned long long)off,
		       size, n, want);
		return;
	}
	if (want && memcmp(buf, whole + off, want))
		T_FAIL("%s: read(off %llu, size %zu): bytes differ from the whole-file read", path,
		       (unsigned long long)off, size);
	for (size_t k = want; k < size + 64; k++)
		if (buf[k] != 0xC3) {
			T_FAIL("%s: read(off %llu, size %zu) returned %zd but wrote byte %zu", path,
			       (unsigned long long)off, size, n, k);
			break;
		}
}

static void test_file_reads(struct image *img, const char *path, const struct img_attr *a,
			    struct md5ref *refs, size_t nrefs)
{
	static const size_t sizes[] = { 1, 2, 4095, 4096, 4097, 131072, MIB + 1 };
	uint64_t S = a->size;
	uint8_t *whole = malloc(S + 4096), *buf = malloc(2 * MIB + 4096 + 64);
	uint64_t offs[64 * 6 + 16];
	size_t noffs = 0;
	struct chunkv cv = { .n = 0 };
	char md5[33];
	ssize_t n;
	int ret;

	if (!whole || !buf)
		abort();
	memset(whole, 0x5A, S + 4096);
	n = img->ops->read(img, a->ino, whole, S + 4096, 0);
	if (n != (ssize_t)S) {
		T_FAIL("%s: whole read returned %zd, want %llu", path, n, (unsigned long long)S);
		goto out;
	}
	for (uint64_t k = S; k < S + 4096; k++)
		if (whole[k] != 0x5A) {
			T_FAIL("%s: whole read wrote past EOF", path);
			break;
		}
	md5_hex(whole, S, md5);
	{
		size_t i;

		for (i = 0; i < nrefs && strcmp(refs[i].path, path); i++)
			;
		if (i == nrefs)
			T_FAIL("%s: not in the fixture's md5 list", path);
		else if (strcmp(refs[i].md5, md5))
			T_FAIL("%s: md5 %s, want %s", path, md5, refs[i].md5);
		else
			refs[i].seen++;
	}

	ret = img->ops->chunks(img, a->ino, collect_chunk, &cv);
	T_EQ_INT(ret, 0);
	T_ASSERT(cv.n <= LZ_ARRAY_SIZE(cv.c));
	if (cv.n > LZ_ARRAY_SIZE(cv.c))
		cv.n = LZ_ARRAY_SIZE(cv.c);
	{
		uint64_t base[] = { 0, 1, 4095, 4096, 4097, S / 3, S / 2 + 7 };

		for (size_t i = 0; i < LZ_ARRAY_SIZE(base); i++)
			offs[noffs++] = base[i];
		offs[noffs++] = S ? S - 1 : 0;
		offs[noffs++] = S > 4096 ? S - 4096 : 0;
		offs[noffs++] = S > 131072 ? S - 131072 + 3 : 0;
	}
	for (size_t i = 0; i < cv.n; i++) {
		/* chunk starts and ends: the boundaries between chunks and holes */
		uint64_t edges[2] = { cv.c[i].file_offset, cv.c[i].file_offset + cv.c[i].uncompressed_size };

		if (cv.c[i].uncompressed_size == 0 || edges[1] > S)
			T_FAIL("%s: chunk %zu: file range %llu+%u outside the file of %llu bytes", path, i,
			       (unsigned long long)cv.c[i].file_offset, cv.c[i].uncompressed_size,
			       (unsigned long long)S);
		if (i && cv.c[i].file_offset < cv.c[i - 1].file_offset + cv.c[i - 1].uncompressed_size)
			T_FAIL("%s: chunks %zu and %zu overlap", path, i - 1, i);
		for (int e = 0; e < 2; e++) {
			if (edges[e] == 0 || edges[e] >= S)
				continue;
			offs[noffs++] = edges[e] - 1;
			offs[noffs++] = edges[e];
			offs[noffs++] = edges[e] > 4096 ? edges[e] - 4096 : 0;
			offs[noffs++] = edges[e] > 65536 ? edges[e] - 65536 : 0;
			offs[noffs++] = edges[e] > 2000 ? edges[e] - 2000 : 0;
			offs[noffs++] = edges[e] + 1;
		}
	}
	for (size_t i = 0; i < noffs; i++)
		for (size_t k = 0; k < LZ_ARRAY_SIZE(sizes); k++)
			read_at(img, path, a->ino, whole, S, offs[i], sizes[k], buf);
	/* past EOF */
	read_at(img, path, a->ino, whole, S, S, 4096, buf);
	read_at(img, path, a->ino, whole, S, S + 1, 1, buf);
	read_at(img, path, a->ino, whole, S, S + MIB, 4096, buf);
	read_at(img, path, a->ino, whole, S, 1ull << 62, 4096, buf);
	read_at(img, path, a->ino, whole, S, UINT64_MAX - 100, 4096, buf);
	/* sequential scans with page-sized and odd-sized requests rebuild the file */
	{
		static const size_t steps[] = { 4096, 131072 + 7, 3000 };

		for (size_t k = 0; k < LZ_ARRAY_SIZE(steps); k++) {
			uint8_t *copy = malloc(S + 1);
			uint64_t pos = 0;

			if (!copy)
				abort();
			while (pos < S) {
				n = img->ops->read(img, a->ino, copy + pos, LZ_MIN((uint64_t)steps[k], S - pos), pos);
				if (n <= 0) {
					T_FAIL("%s: sequential read at %llu returned %zd", path,
					       (unsigned long long)pos, n);
					break;
				}
				pos += (uint64_t)n;
			}
			if (pos == S && memcmp(copy, whole, S))
				T_FAIL("%s: sequential %zu-byte reads differ from the whole read", path, steps[k]);
			free(copy);
		}
	}
out:
	free(whole);
	free(buf);
}

/* readdir of one directory: dots first, sorted unique names, lookup agrees, and every
 * next_off resumes exactly after its entry (also when the filler stops early) */
static void test_dir(struct image *img, const char *path, uint64_t ino, uint64_t parent)
{
	struct ents all = { 0 }, rest = { 0 }, step = { 0 };
	int ret = list_dir(img, ino, 0, &all);

	if (ret) {
		T_FAIL("%s: readdir: %d", path, ret);
		goto out;
	}
	if (all.n < 2 || strcmp(all.e[0].name, ".") || strcmp(all.e[1].name, "..")) {
		T_FAIL("%s: readdir does not start with . and ..", path);
		goto out;
	}
	T_EQ_U64(all.e[0].ino, ino);
	T_EQ_U64(all.e[1].ino, parent);
	for (size_t i = 2; i < all.n; i++) {
		struct img_attr a;

		if (i > 2 && strcmp(all.e[i - 1].name, all.e[i].name) >= 0)
			T_FAIL("%s: entries %s and %s are not in strictly increasing byte order", path,
			       all.e[i - 1].name, all.e[i].name);
		ret = img->ops->lookup(img, ino, all.e[i].name, strlen(all.e[i].name), &a);
		if (ret) {
			T_FAIL("%s: lookup of listed entry %s: %d", path, all.e[i].name, ret);
			continue;
		}
		if (a.ino != all.e[i].ino || (a.mode & S_IFMT) != all.e[i].type)
			T_FAIL("%s/%s: readdir says ino %llu type 0%o, lookup ino %llu mode 0%o", path,
			       all.e[i].name, (unsigned long long)all.e[i].ino, all.e[i].type,
			       (unsigned long long)a.ino, a.mode);
	}
	/* resume after every entry */
	for (size_t i = 0; i < all.n; i++) {
		ret = list_dir(img, ino, all.e[i].next_off, &rest);
		if (ret || rest.n != all.n - i - 1) {
			T_FAIL("%s: readdir from next_off %llu of %s: ret %d, %zu entries, want %zu", path,
			       (unsigned long long)all.e[i].next_off, all.e[i].name, ret, rest.n,
			       all.n - i - 1);
			continue;
		}
		for (size_t j = 0; j < rest.n; j++)
			if (!same_ent(&rest.e[j], &all.e[i + 1 + j])) {
				T_FAIL("%s: resuming after %s: entry %zu is %s, want %s", path, all.e[i].name,
				       j, rest.e[j].name, all.e[i + 1 + j].name);
				break;
			}
	}
	/* a filler that stops after k entries (a full FUSE reply buffer), then resumes */
	for (size_t k = 1; k <= 3; k++) {
		uint64_t off = 0;
		size_t got = 0, rounds = 0;

		for (;;) {
			step.limit = k;
			ret = list_dir(img, ino, off, &step);
			if (ret || step.n == 0 || ++rounds > all.n + 2)
				break;
			for (size_t j = 0; j < step.n; j++, got++)
				if (got >= all.n || !same_ent(&step.e[j], &all.e[got])) {
					T_FAIL("%s: %zu-entry readdir batches: entry %zu is %s", path, k, got,
					       step.e[j].name);
					goto out;
				}
			off = step.e[step.n - 1].next_off;
		}
		if (ret || got != all.n)
			T_FAIL("%s: %zu-entry readdir batches: ret %d, %zu entries, want %zu", path, k, ret,
			       got, all.n);
	}
	/* past the end */
	ret = list_dir(img, ino, all.e[all.n - 1].next_off, &rest);
	if (ret || rest.n)
		T_FAIL("%s: readdir past the last entry: ret %d, %zu entries", path, ret, rest.n);
out:
	free(all.e);
	free(rest.e);
	free(step.e);
}

struct walkstat {
	int files, dirs, links;
	bool uid_checked;
	uint32_t uid;
	bool mtime_zero;
};

static void walk(struct image *img, const char *path, uint64_t ino, uint64_t parent,
		 struct md5ref *refs, size_t nrefs, struct walkstat *ws)
{
	struct ents l = { 0 };
	int ret;

	test_dir(img, path, ino, parent);
	ws->dirs++;
	ret = list_dir(img, ino, 0, &l);
	if (ret) {
		T_FAIL("%s: readdir %d", path, ret);
		free(l.e);
		return;
	}
	for (size_t i = 2; i < l.n; i++) {
		char child[4096];
		struct img_attr a;

		snprintf(child, sizeof(child), "%s/%s", strcmp(path, "/") ? path : "", l.e[i].name);
		ret = img->ops->getattr(img, l.e[i].ino, &a);
		if (ret) {
			T_FAIL("%s: getattr(%llu): %d", child, (unsigned long long)l.e[i].ino, ret);
			continue;
		}
		if (ws->uid_checked && (a.uid != ws->uid || a.gid != ws->uid))
			T_FAIL("%s: uid/gid %u/%u, want %u", child, a.uid, a.gid, ws->uid);
		if (a.mtime != 0)
			ws->mtime_zero = false;
		if (S_ISDIR(a.mode)) {
			walk(img, child, l.e[i].ino, ino, refs, nrefs, ws);
		} else if (S_ISREG(a.mode)) {
			ws->files++;
			test_file_reads(img, child, &a, refs, nrefs);
		} else if (S_ISLNK(a.mode)) {
			char t[4097];
			ssize_t n = img->ops->readlink(img, a.ino, t, sizeof(t) - 1);

			ws->links++;
			if (n <= 0 || (uint64_t)n != a.size)
				T_FAIL("%s: readlink %zd, size %llu", child, n, (unsigned long long)a.size);
			/* a short buffer still reports the full length */
			if (n > 1 && img->ops->readlink(img, a.ino, t, 1) != n)
				T_FAIL("%s: readlink into 1 byte does not return the full length", child);
			if (img->ops->read(img, a.ino, t, 16, 0) >= 0)
				T_FAIL("%s: read of a symlink succeeded", child);
		}
		/* no fixture has xattrs */
		if (img->ops->listxattr(img, a.ino, NULL, 0) != 0)
			T_FAIL("%s: listxattr size %zd, the fixture has none", child,
			       img->ops->listxattr(img, a.ino, NULL, 0));
		if (img->ops->getxattr(img, a.ino, "user.none", NULL, 0) != -ENODATA)
			T_FAIL("%s: getxattr of a missing name is not -ENODATA", child);
	}
	free(l.e);
}

static struct rafs *open_fixture(const struct fixture *fx)
{
	struct rafs_opts o = { .blob_dir = t_fixture(fx->blob_dir), .validate = true };
	struct rafs *fs = NULL;
	int ret = rafs_open_file(t_fixture(fx->name), &o, &fs);

	if (ret)
		T_FAIL("%s: rafs_open_file: %d (%s)", fx->name, ret, lz_strerror(ret));
	return ret ? NULL : fs;
}

static void test_fixture(const struct fixture *fx)
{
	struct md5ref refs[64];
	size_t nrefs = load_md5(fx->md5_file, refs, LZ_ARRAY_SIZE(refs));
	struct rafs *fs = open_fixture(fx);
	struct rafs_info info;
	struct rafs_blob_info bi;
	struct walkstat ws = { .mtime_zero = true };
	struct image *img;
	struct img_attr root;
	FILE *devnull;
	uint64_t nchk = 0, nbytes = 0;
	int ret;

	fprintf(stderr, "fixture %s\n", fx->name);
	if (!fs)
		return;
	img = rafs_image(fs);
	rafs_get_info(fs, &info);
	T_EQ_INT(info.version, fx->version);
	T_EQ_STR(img->format, fx->version == 5 ? "rafs-v5" : "rafs-v6");
	T_EQ_U64(info.flags, fx->flags);
	T_EQ_INT(info.chunk_size, MIB);
	T_EQ_INT(info.compressor, fx->compressor);
	T_EQ_INT(info.digester, fx->digester);
	T_EQ_INT(info.explicit_uid_gid, fx->explicit_uid);
	T_EQ_INT(info.nblobs, 1);
	ret = rafs_get_blob(fs, 0, &bi);
	T_EQ_INT(ret, 0);
	T_EQ_STR(bi.id, fx->blob_id);
	T_EQ_INT(bi.compressor, fx->compressor);
	T_EQ_INT(bi.digester, fx->digester);
	T_EQ_INT(bi.chunk_count, fx->blob_chunks);
	T_EQ_U64(bi.features, fx->blob_features);
	if (fx->blob_size)
		T_EQ_U64(bi.compressed_size, fx->blob_size);
	if (fx->version == 5 && fx->blob_chunks)
		T_EQ_U64(bi.uncompressed_size, fx->blob_size);
	T_EQ_INT(rafs_get_blob(fs, 1, &bi), -ENOENT);
	if (fx->version == 6) {
		T_EQ_INT(info.meta_blkaddr, 2);
		T_EQ_U64(info.root_nid, 128);
	}

	T_EQ_INT(img->ops->getattr(img, IMG_ROOT_INO, &root), 0);
	T_ASSERT(S_ISDIR(root.mode));
	T_EQ_U64(root.ino, IMG_ROOT_INO);
	if (fx->explicit_uid && fx->version == 5) {
		/* the 2020 lz4 image: owners 1000 and mtimes 0 (MANIFEST.md) */
		ws.uid_checked = true;
		ws.uid = 1000;
	} else if (!fx->explicit_uid) {
		/* without EXPLICIT_UID_GID the reader's own ids are reported */
		ws.uid_checked = true;
		ws.uid = (uint32_t)geteuid();
	}
	walk(img, "/", IMG_ROOT_INO, IMG_ROOT_INO, refs, nrefs, &ws);
	T_EQ_INT(ws.files, fx->nfiles);
	for (size_t i = 0; i < nrefs; i++)
		if (refs[i].seen != 1)
			T_FAIL("%s: %s from the md5 list was read %d times", fx->name, refs[i].path,
			       refs[i].seen);
	if (fx->version == 5) {
		/* 23 regular files incl. 3 hard links, 24 directories incl. root, 7 symlinks */
		T_EQ_INT(ws.dirs, 24);
		T_EQ_INT(ws.links, 7);
		T_EQ_INT(ws.mtime_zero, fx->blob_chunks == 0); /* only the 2020 images have mtime 0 */
	}

	devnull = fopen("/dev/null", "w");
	ret = rafs_check(fs, devnull, &nchk, &nbytes);
	fclose(devnull);
	T_EQ_INT(ret, 0);
	T_EQ_U64(nchk, fx->check_chunks);
	T_EQ_U64(nbytes, fx->check_bytes);
	{
		struct rafs_stats st;

		rafs_get_stats(fs, &st);
		T_EQ_U64(st.errors, 0);
		T_ASSERT(st.chunk_fills > 0);
	}
	rafs_close(fs);
}

static void test_v5_facts(void)
{
	for (size_t f = 0; f < 4; f++) {
		struct rafs *fs = open_fixture(&fixtures[f]);
		static const char *const links[] = { "/hardlink-test/foo", "/hardlink-test/test.sh",
						     "/normal-file-test/test.sh" };
		struct img_attr a[3], b;
		struct image *img;

		if (!fs)
			continue;
		img = rafs_image(fs);
		for (int i = 0; i < 3; i++) {
			T_EQ_INT(lookup_path(img, links[i], &a[i]), 0);
			T_EQ_INT(a[i].nlink, 3);
			T_EQ_U64(a[i].size, 944);
			T_EQ_U64(a[i].ino, a[0].ino);
		}
		T_EQ_INT(lookup_path(img, "/normal-file-test/busybox/1f777dbdd68d1c4d554bc0d20e027bfef9ed2dfe2d8d5f029e958552a0e12475/layer.tar", &b), 0);
		T_EQ_U64(b.size, 1415680);
		T_EQ_INT(lookup_path(img, "/symlink-test/root-1", &b), 0);
		T_ASSERT(S_ISLNK(b.mode));
		T_EQ_U64(b.size, 17);
		T_EQ_INT(lookup_path(img, "/no-such-entry", &b), -ENOENT);
		T_EQ_INT(lookup_path(img, "/hardlink-test/foo/x", &b), -ENOTDIR);
		T_EQ_INT(img->ops->lookup(img, IMG_ROOT_INO, "hardlink-tes", 12, &b), -ENOENT);
		T_EQ_INT(img->ops->lookup(img, IMG_ROOT_INO, "hardlink-test0", 14, &b), -ENOENT);
		T_EQ_INT(img->ops->getattr(img, 0, &b), -ENOENT);
		T_EQ_INT(img->ops->getattr(img, 1000000, &b), -ENOENT);
		T_ASSERT(img->ops->read(img, IMG_ROOT_INO, a, 1, 0) < 0);
		rafs_close(fs);
	}
}

static uint8_t *toc_entry(const uint8_t *blob, size_t len, const char *name, size_t *outlen, int *ret)
{
	void *out = NULL;

	*outlen = 0;
	*ret = rafs_toc_extract(blob, len, name, &out, outlen);
	return out;
}

static void test_v6_facts(void)
{
	const struct fixture *fx = &fixtures[4];
	struct rafs *fs = open_fixture(fx);
	struct rafs_info info;
	struct img_attr a;
	struct chunkv cv = { .n = 0 };
	struct image *img;
	uint8_t *blob, *dg;
	size_t blen, dlen;
	int ret;

	if (!fs)
		return;
	img = rafs_image(fs);
	rafs_get_info(fs, &info);
	T_EQ_U64(info.inodes, 3);
	T_EQ_U64(info.chunk_table_entries, 2);
	T_EQ_U64(info.meta_blkaddr, 2);
	T_EQ_U64(info.root_nid, 128);

	blob = slurp(t_fixture("rafs/blobs/" BLOB_BE7D), &blen);
	dg = blob ? toc_entry(blob, blen, "blob.digest", &dlen, &ret) : NULL;
	if (blob) {
		T_EQ_INT(ret, 0);
		T_EQ_U64(dlen, 64); /* 2 chunks x 32 bytes, in chunk-info order */
	}
	{
		static const struct {
			const char *path;
			uint64_t size, coff, uoff;
			uint32_t csize, index;
		} want[] = {
			{ "/lib.rs", 16931, 0, 0, 4828, 0 },
			{ "/sync_io.rs", 13400, 4828, 20480, 2974, 1 },
		};

		for (size_t i = 0; i < 2; i++) {
			ret = lookup_path(img, want[i].path, &a);
			T_EQ_INT(ret, 0);
			if (ret)
				continue;
			T_EQ_U64(a.size, want[i].size);
			T_ASSERT(S_ISREG(a.mode));
			cv.n = 0;
			T_EQ_INT(img->ops->chunks(img, a.ino, collect_chunk, &cv), 0);
			T_EQ_INT(cv.n, 1);
			if (cv.n != 1)
				continue;
			T_EQ_U64(cv.c[0].file_offset, 0);
			T_EQ_U64(cv.c[0].compressed_offset, want[i].coff);
			T_EQ_U64(cv.c[0].compressed_size, want[i].csize);
			T_EQ_U64(cv.c[0].uncompressed_offset, want[i].uoff);
			T_EQ_U64(cv.c[0].uncompressed_size, want[i].size);
			T_EQ_INT(cv.c[0].index, want[i].index);
			T_EQ_INT(cv.c[0].blob_index, 0);
			T_ASSERT(cv.c[0].flags & IMG_CHUNK_COMPRESSED);
			/* the bootstrap's chunk digest equals the blob's blob.digest entry */
			T_ASSERT(cv.c[0].digest != NULL);
			if (dg && dlen == 64 && cv.c[0].digest && cv.c[0].index < 2 &&
			    memcmp(cv.c[0].digest, dg + 32 * cv.c[0].index, 32))
				T_FAIL("%s: chunk digest differs from the blob's blob.digest entry", want[i].path);
		}
	}
	/* this blob has a ToC but no inlined bootstrap */
	if (blob) {
		void *out = NULL;
		size_t ol = 0;

		T_EQ_INT(rafs_toc_extract(blob, blen, "image.boot", &out, &ol), -ENOENT);
		free(out);
	}
	free(dg);
	free(blob);
	rafs_close(fs);
}

static void test_toc(void)
{
	const char *path = t_fixture("rafs/toc/" TOC_BLOB);
	uint8_t *blob, *boot, *e;
	size_t blen, len;
	char hex[65];
	int ret;

	blob = slurp(path, &blen);
	if (!blob)
		return;
	T_EQ_U64(blen, 10034);
	/* upstream toc.rs: the ToC (entries + tar header) is the last 1024 bytes, at 9010 */
	sha256_hex(blob + 9010, 1024, hex);
	T_EQ_STR(hex, "4fdfbb36ef74a3c63a28e2abafa54044c7594155beb6ddad9f36825cfe58286c");

	boot = toc_entry(blob, blen, "image.boot", &len, &ret);
	T_EQ_INT(ret, 0);
	T_EQ_U64(len, 20480);
	if (boot) {
		sha256_hex(boot, len, hex);
		T_EQ_STR(hex, "d85f1b77aab4849b34ffc447fee67a46ae9eb2af8533bf5faa62224df1796871");
	}
	e = toc_entry(blob, blen, "blob.meta", &len, &ret);
	T_EQ_INT(ret, 0);
	T_EQ_U64(len, 0x30);
	free(e);
	e = toc_entry(blob, blen, "blob.meta.header", &len, &ret);
	T_EQ_INT(ret, 0);
	T_EQ_U64(len, 0x1000);
	if (e && len == 0x1000) {
		T_EQ_U64(lz_get_le32(e), 0xB10BB10B);
		T_EQ_U64(lz_get_le32(e + 4092), 0xB10BB10B);
	}
	free(e);
	e = toc_entry(blob, blen, "no.such.entry", &len, &ret);
	T_EQ_INT(ret, -ENOENT);
	free(e);
	e = toc_entry(blob, 9000, "image.boot", &len, &ret); /* cut before the ToC */
	T_EQ_INT(ret, -ENOENT);
	free(e);
	/* a bootstrap is not a ToC blob */
	{
		size_t vlen;
		uint8_t *v5 = slurp(t_fixture("rafs/sha256-nocompress-repeatable"), &vlen);

		if (v5) {
			e = toc_entry(v5, vlen, "image.boot", &len, &ret);
			T_EQ_INT(ret, -ENOENT);
			free(e);
		}
		free(v5);
	}
	/* a flipped byte in the compressed bootstrap: never a success */
	{
		uint8_t *bad = malloc(blen);

		memcpy(bad, blob, blen);
		bad[7997 + 100] ^= 0x10;
		e = toc_entry(bad, blen, "image.boot", &len, &ret);
		T_ASSERT(ret == -EFSCORRUPTED || ret == -EBADMSG);
		T_ASSERT(e == NULL);
		free(e);
		free(bad);
	}

	/* the extracted bootstrap names the blob by the digest of its data, d788a0ea…7de3 */
	if (boot) {
		struct rafs_opts o = { .blob_dir = t_fixture("rafs/toc"), .validate = true };
		struct rafs_blob_info bi;
		struct rafs *fs = NULL;
		char want[65];

		sha256_hex(blob, 7997, want);
		T_ASSERT(!strncmp(want, "d788a0ea", 8) && !strcmp(want + 60, "7de3"));
		ret = rafs_open_mem(boot, 20480, &o, &fs);
		T_EQ_INT(ret, 0);
		if (!ret) {
			struct img_attr a;
			uint8_t buf[4096];

			T_EQ_INT(rafs_get_blob(fs, 0, &bi), 0);
			T_EQ_STR(bi.id, want);
			/* that blob is not in toc/: reading fails, it never returns wrong bytes */
			T_EQ_INT(lookup_path(rafs_image(fs), "/lib.rs", &a), 0);
			T_ASSERT(rafs_image(fs)->ops->read(rafs_image(fs), a.ino, buf, sizeof(buf), 0) < 0);
			rafs_close(fs);
		}
		/* with the blob named as nydus does for inlined meta, the data is there */
		o.inlined_blob_id = TOC_BLOB;
		fs = NULL;
		ret = rafs_open_mem(boot, 20480, &o, &fs);
		T_EQ_INT(ret, 0);
		if (!ret) {
			struct md5ref refs[8];
			size_t nrefs = load_md5("rafs/toc/" TOC_BLOB ".expected.txt", refs, 8);
			struct walkstat ws = { .mtime_zero = true };

			T_EQ_INT(rafs_get_blob(fs, 0, &bi), 0);
			T_EQ_STR(bi.id, TOC_BLOB);
			walk(rafs_image(fs), "/", IMG_ROOT_INO, IMG_ROOT_INO, refs, nrefs, &ws);
			T_EQ_INT(ws.files, 3);
			rafs_close(fs);
		}
	}
	/* mount-by-blob: rafs_open_file on the blob itself */
	{
		static const struct { const char *p; uint64_t size; } files[] = {
			{ "/error.rs", 2816 }, { "/lib.rs", 678 }, { "/logger.rs", 3115 },
		};
		struct rafs_opts o = { .blob_dir = t_fixture("rafs/toc"), .validate = true };
		struct rafs *fs = NULL;

		ret = rafs_open_file(path, &o, &fs);
		T_EQ_INT(ret, 0);
		if (!ret) {
			struct rafs_info info;
			struct img_attr a;

			rafs_get_info(fs, &info);
			T_EQ_INT(info.version, 6);
			T_EQ_U64(info.bootstrap_size, 20480);
			for (size_t i = 0; i < 3; i++) {
				T_EQ_INT(lookup_path(rafs_image(fs), files[i].p, &a), 0);
				T_EQ_U64(a.size, files[i].size);
			}
			rafs_close(fs);
		}
	}
	free(boot);
	free(blob);
}

static void test_zran_blobmeta(void)
{
	size_t len;
	uint8_t *buf = slurp(t_fixture("rafs/233c72f2b6b698c07021c4da367cfe2dff4f049efbaa885ca0ff760ea297865a.blob.meta"), &len);
	struct rafs_blobmeta bm;

	if (!buf)
		return;
	T_EQ_U64(len, 667648);
	T_EQ_INT(rafs_blobmeta_parse(buf, len, &bm), 0);
	T_EQ_U64(bm.ci_entries, 0xa3);
	T_EQ_U64(bm.zran_count, 0x15);
	T_EQ_U64(bm.features, 0xf);
	T_EQ_U64(bm.ci_compressor, 0);
	T_EQ_U64(bm.ci_offset, 0);
	T_EQ_U64(bm.ci_compressed_size, 0xa1290);
	T_EQ_U64(bm.ci_uncompressed_size, 0xa1290);
	T_EQ_U64(bm.zran_offset, 3912);
	T_EQ_U64(bm.zran_size, 0xa0348);
	/* upstream: dictionary table length = zran size - 0x15 * 40 */
	T_EQ_U64(bm.zran_size - bm.zran_count * 40ull, 0xa0348 - 0x15 * 40);

	/* rejected: no header at the end, odd sizes, bad magic, counts that do not fit */
	T_EQ_INT(rafs_blobmeta_parse(buf, len - 4096, &bm), -EFSCORRUPTED);
	T_EQ_INT(rafs_blobmeta_parse(buf, len - 1, &bm), -EFSCORRUPTED);
	T_EQ_INT(rafs_blobmeta_parse(buf, 100, &bm), -EFSCORRUPTED);
	T_EQ_INT(rafs_blobmeta_parse(buf + 4096, len - 4096, &bm), -EFSCORRUPTED);
	{
		uint8_t *c = malloc(len);
		uint8_t *h = c + len - 4096;

		memcpy(c, buf, len);
		h[0] ^= 1; /* first magic */
		T_EQ_INT(rafs_blobmeta_parse(c, len, &bm), -EFSCORRUPTED);
		memcpy(c, buf, len);
		h[4095] ^= 1; /* second magic */
		T_EQ_INT(rafs_blobmeta_parse(c, len, &bm), -EFSCORRUPTED);
		free(c);
	}
	free(buf);
}

static void test_zstd_fixture(void)
{
	size_t zlen, tlen;
	uint8_t *z = slurp(t_fixture("rafs/zstd/" TOC_BLOB ".zst"), &zlen);
	uint8_t *toc = slurp(t_fixture("rafs/toc/" TOC_BLOB), &tlen);
	uint8_t *out = malloc(10034 + 16);

	if (z && toc && out) {
		T_EQ_U64(zlen, 3746);
		T_EQ_INT(lz_decompress(LZ_COMP_ZSTD, z, zlen, out, 10034), 0);
		T_ASSERT(tlen == 10034 && !memcmp(out, toc, 10034));
		T_EQ_INT(lz_decompress(LZ_COMP_ZSTD, z, zlen, out, 10033), -EFSCORRUPTED);
		T_EQ_INT(lz_decompress(LZ_COMP_ZSTD, z, zlen, out, 10035), -EFSCORRUPTED);
		T_EQ_INT(lz_decompress(LZ_COMP_ZSTD, z, zlen - 1, out, 10034), -EFSCORRUPTED);
	}
	free(z);
	free(toc);
	free(out);
}

/* the snapshotter fixture: a layer tarball whose image/image.boot is a text Makefile */
static void test_negative_fixtures(void)
{
	gzFile gz = gzopen(t_fixture("rafs/snapshotter/invalid-bootstrap-file-size-133513.tar.gz"), "rb");
	size_t cap = 1u << 20, len = 0;
	uint8_t *tar = malloc(cap);
	int n, found = 0;

	if (!gz || !tar) {
		T_FAIL("cannot open the snapshotter fixture");
		free(tar);
		if (gz)
			gzclose(gz);
		return;
	}
	while ((n = gzread(gz, tar + len, (unsigned)(cap - len))) > 0) {
		len += (size_t)n;
		if (len == cap) {
			cap *= 2;
			tar = realloc(tar, cap);
			if (!tar)
				abort();
		}
	}
	gzclose(gz);
	for (size_t off = 0; off + 512 <= len;) {
		const char *name = (const char *)tar + off;
		uint64_t size = strtoull((const char *)tar + off + 124, NULL, 8);

		if (!name[0])
			break;
		if (!strcmp(name, "image/image.boot")) {
			struct rafs *fs = NULL;
			int ret;

			found = 1;
			T_EQ_U64(size, 133513);
			if (off + 512 + size > len)
				break;
			ret = rafs_open_mem(tar + off + 512, (size_t)size, NULL, &fs);
			T_EQ_INT(ret, -EFSCORRUPTED);
			T_ASSERT(fs == NULL);
			rafs_close(fs);
		}
		off += 512 + LZ_ALIGN_UP(size, 512ull);
	}
	T_ASSERT(found);
	free(tar);

	/* anomalous upstream fixture: must not crash; if it opens, walking it must not either */
	{
		struct rafs *fs = NULL;
		int ret = rafs_open_file(t_fixture("rafs/nydusd_daemon_test_bootstrap"), NULL, &fs);

		fprintf(stderr, "nydusd_daemon_test_bootstrap: rafs_open_file = %d\n", ret);
		T_ASSERT(ret == 0 || ret == -EFSCORRUPTED);
		if (!ret) {
			struct ents l = { 0 };

			list_dir(rafs_image(fs), IMG_ROOT_INO, 0, &l);
			free(l.e);
			rafs_close(fs);
		}
	}
	/* files that are not bootstraps */
	{
		struct rafs *fs = NULL;

		T_EQ_INT(rafs_open_file(t_fixture("rafs/sha256-nocompress-repeatable.result"), NULL, &fs), -EFSCORRUPTED);
		T_EQ_INT(rafs_open_file(t_fixture("rafs/no-such-file"), NULL, &fs), -ENOENT);
		T_ASSERT(rafs_open_file(t_fixture("rafs/blobs"), NULL, &fs) < 0);
		T_ASSERT(fs == NULL);
	}
}

/* Fail the Nth allocation for N = 1, 2, ... over open + reads + close of each fixture:
 * every path must clean up (ASan's leak check in `make check`) and report an error. */
static void test_alloc_failures(void)
{
	for (size_t f = 0; f < LZ_ARRAY_SIZE(fixtures); f++) {
		const struct fixture *fx = &fixtures[f];
		long nfail;

		for (nfail = 1; nfail < 5000; nfail++) {
			struct rafs_opts o = { .blob_dir = t_fixture(fx->blob_dir), .validate = true };
			struct rafs *fs = NULL;
			int ret, errors = 0;

			lz_fail_alloc_at(nfail);
			ret = rafs_open_file(t_fixture(fx->name), &o, &fs);
			if (!ret) {
				struct image *img = rafs_image(fs);
				struct ents l = { 0 };
				uint8_t *buf = malloc(2 * MIB);

				/* read every entry of the root and one level down */
				if (list_dir(img, IMG_ROOT_INO, 0, &l) == 0) {
					for (size_t i = 2; i < l.n; i++) {
						struct img_attr a;

						if (img->ops->getattr(img, l.e[i].ino, &a) || !S_ISREG(a.mode))
							continue;
						ssize_t r = img->ops->read(img, a.ino, buf, 2 * MIB, 0);

						if (r < 0)
							errors++;
						if (r < 0 && r != -ENOMEM)
							T_FAIL("%s: allocation %ld failing made a read return %zd", fx->name,
							       nfail, r);
					}
				}
				{
					struct img_attr a;
					const char *p = fx->version == 5 ?
						"/normal-file-test/holefiles/head-hole-1" : "/lib.rs";

					if (lookup_path(img, p, &a) == 0 &&
					    img->ops->read(img, a.ino, buf, 2 * MIB, 0) < 0)
						errors++;
				}
				free(l.e);
				free(buf);
				rafs_close(fs);
			} else if (ret != -ENOMEM) {
				lz_fail_alloc_at(0);
				T_FAIL("%s: allocation %ld failing made open return %d, not -ENOMEM", fx->name,
				       nfail, ret);
				break;
			}
			lz_fail_alloc_at(0);
			if (!ret && !errors)
				break; /* nfail is past the last allocation */
		}
		fprintf(stderr, "%s: %ld allocation failure points survived\n", fx->name, nfail - 1);
	}
}

int main(void)
{
	for (size_t i = 0; i < LZ_ARRAY_SIZE(fixtures); i++)
		test_fixture(&fixtures[i]);
	test_v5_facts();
	test_v6_facts();
	test_toc();
	test_zran_blobmeta();
	test_zstd_fixture();
	test_negative_fixtures();
	test_alloc_failures();
	T_DONE();
}
