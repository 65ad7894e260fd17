/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_estargz.c - the stargz/ module: footers and TOCs of every fixture in
 * $LAZYIMG_FIXTURES/estargz against its MANIFEST.md and the independent
 * known answers (synthetic.expected.json, read here with json-c, a different
 * JSON parser from the module's yajl); every file of the synthetic blob read
 * through the image ops; tampering; blobs generated here (chunked,
 * innerOffset-shared, zstd:chunked) read through a memory backend and a
 * cache honouring the begin/done contract; multi-layer merges; the catalogue
 * of malformed inputs in tests/bad/stargz; and, printed (never asserted), the
 * parse time and memory of a 100k-entry TOC and libdeflate vs zlib.
 *
 * `test_estargz bench [N]` prints only the big-TOC figures (tests/bench);
 * `test_estargz serve BLOB MNT [layer]` mounts a blob, `serve-merged MNT
 * BLOB...` a stack of them (integration tests).
 */
#include "lazyimg/estargz.h"
#include "lazyimg/codec.h"
#include "lazyimg/imgfs.h"
#include "../t.h"

#include <fcntl.h>
#include <json-c/json.h>
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/xattr.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#define SYN_TOC_OFFSET 41201
#define SYN_SIZE 42337

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint8_t *slurp(const char *path, size_t *len)
{
	struct stat st;
	uint8_t *buf;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || fstat(fd, &st) < 0) {
		T_FAIL("cannot open %s", path);
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf || read(fd, buf, (size_t)st.st_size) != st.st_size) {
		T_FAIL("cannot read %s", path);
		free(buf);
		close(fd);
		return NULL;
	}
	buf[st.st_size] = 0;
	close(fd);
	*len = (size_t)st.st_size;
	return buf;
}

static void sha256_str(const void *p, size_t len, char out[72])
{
	estargz_toc_digest(p, len, out);
}

/* ---- log capture: the catalogue and a few tests check the exact message ---- */

static int log_fd = -1;

static void log_capture(void)
{
	if (log_fd < 0)
		log_fd = memfd_create("estargz-log", MFD_CLOEXEC);
	if (ftruncate(log_fd, 0) || lseek(log_fd, 0, SEEK_SET))
		T_FAIL("log memfd");
	lz_log_set_fd(log_fd);
}

/* the captured text (static buffer), and logging back to stderr */
static const char *log_text(void)
{
	static char buf[16384];
	ssize_t n = pread(log_fd, buf, sizeof(buf) - 1, 0);

	buf[n > 0 ? n : 0] = 0;
	lz_log_set_fd(2);
	return buf;
}

/* ---- memory backend and a cache that keeps the begin/done contract ---- */

struct mem_blob {
	const uint8_t *p;
	size_t len;
	unsigned reads;
	uint64_t bytes;
};

static int mem_read(void *ctx, unsigned bi, const char *id, void *buf, size_t len, uint64_t off)
{
	struct mem_blob *m = &((struct mem_blob *)ctx)[bi];

	if (!lz_range_ok(off, len, m->len))
		return -EIO;
	memcpy(buf, m->p + off, len);
	m->reads++;
	m->bytes += len;
	return 0;
}

static const struct img_backend_ops mem_backend = { .read = mem_read };

#define FC_MAX 4096
struct fake_cache {
	struct estargz *es;      /* for the geometry checks */
	uint8_t *data[4][FC_MAX];
	int state[4][FC_MAX];    /* 0 absent, 1 claimed, 2 ready */
	unsigned begins, hits, dones, errors, geometry_bad;
};

static int fc_begin(void *ctx, unsigned bi, const struct img_chunk *c, void *buf)
{
	struct fake_cache *fc = ctx;
	struct estargz_blob_info b;

	fc->begins++;
	if (bi >= 4 || c->index >= FC_MAX || estargz_get_blob(fc->es, bi, &b) || c->index >= b.chunk_count ||
	    !lz_range_ok(c->uncompressed_offset, c->uncompressed_size, b.space_size)) {
		fc->geometry_bad++;
		return 0;
	}
	if (fc->state[bi][c->index] == 2) {
		memcpy(buf, fc->data[bi][c->index], c->uncompressed_size);
		fc->hits++;
		return 1;
	}
	if (fc->state[bi][c->index] == 1)
		T_FAIL("chunk %u claimed twice without done()", c->index);
	fc->state[bi][c->index] = 1;
	return 0;
}

static void fc_done(void *ctx, unsigned bi, const struct img_chunk *c, const void *buf, int err)
{
	struct fake_cache *fc = ctx;

	fc->dones++;
	if (bi >= 4 || c->index >= FC_MAX)
		return;
	if (fc->state[bi][c->index] != 1)
		T_FAIL("done() without a claim for chunk %u", c->index);
	if (err) {
		fc->errors++;
		fc->state[bi][c->index] = 0;
		return;
	}
	free(fc->data[bi][c->index]);
	fc->data[bi][c->index] = malloc(c->uncompressed_size);
	memcpy(fc->data[bi][c->index], buf, c->uncompressed_size);
	fc->state[bi][c->index] = 2;
}

static const struct img_cache_ops fake_cache_ops = { .begin = fc_begin, .done = fc_done };

static void fc_free(struct fake_cache *fc)
{
	for (int b = 0; b < 4; b++)
		for (int i = 0; i < FC_MAX; i++)
			free(fc->data[b][i]);
	free(fc);
}

/* ---- path helpers over the image ops ---- */

static int resolve(struct image *img, const char *path, struct img_attr *a)
{
	uint64_t cur = IMG_ROOT_INO;
	int ret = img->ops->getattr(img, cur, a);

	while (!ret && *path) {
		const char *e;

		while (*path == '/')
			path++;
		if (!*path)
			break;
		e = strchr(path, '/');
		if (!e)
			e = path + strlen(path);
		ret = img->ops->lookup(img, cur, path, (size_t)(e - path), a);
		cur = a->ino;
		path = e;
	}
	return ret;
}

static uint8_t *read_all(struct image *img, const struct img_attr *a, ssize_t *err)
{
	uint8_t *buf = malloc(a->size + 1);
	uint64_t off = 0;

	*err = 0;
	while (off < a->size) {
		/* odd-sized reads cross chunk edges */
		ssize_t n = img->ops->read(img, a->ino, buf + off, LZ_MIN((uint64_t)7001, a->size - off), off);

		if (n <= 0) {
			*err = n ? n : -EIO;
			free(buf);
			return NULL;
		}
		off += (uint64_t)n;
	}
	return buf;
}

/* ---- A: footers ---- */

static void test_footers(void)
{
	struct estargz_footer f;
	size_t len;
	uint8_t *blob = slurp(t_fixture("estargz/synthetic.esgz"), &len), *leg, junk[64];

	if (!blob)
		return;
	T_EQ_INT(len, SYN_SIZE);
	T_EQ_INT(estargz_footer_parse(blob + len - 64, 64, len, &f), 0);
	T_EQ_INT(f.kind, ESTARGZ_GZIP);
	T_EQ_U64(f.toc_offset, SYN_TOC_OFFSET);
	T_EQ_U64(f.toc_size, 42285 - 41201 + 1);   /* MANIFEST: TOC member = bytes 41201..42285 inclusive */
	T_EQ_INT(f.footer_size, 51);
	/* exactly the 51 footer bytes are enough; 50 are not an eStargz footer */
	T_EQ_INT(estargz_footer_parse(blob + len - 51, 51, len, &f), 0);
	T_EQ_INT(f.kind, ESTARGZ_GZIP);
	T_ASSERT(estargz_footer_parse(blob + len - 50, 50, len, &f) != 0 || f.kind != ESTARGZ_GZIP);
	free(blob);

	blob = slurp(t_fixture("estargz/synthetic-legacy-footer.stargz"), &len);
	if (blob) {
		T_EQ_INT(len, 42333);
		T_EQ_INT(estargz_footer_parse(blob + len - 64, 64, len, &f), 0);
		T_EQ_INT(f.kind, ESTARGZ_LEGACY);
		T_EQ_U64(f.toc_offset, SYN_TOC_OFFSET);
		T_EQ_U64(f.toc_size, len - 47 - SYN_TOC_OFFSET);
		T_EQ_INT(f.footer_size, 47);
		free(blob);
	}
	/* the real CRFS footer from nydus-snapshotter: its blob would be 24613186 bytes */
	leg = slurp(t_fixture("estargz/nydus-snapshotter-stargzfooter.bin"), &len);
	if (leg) {
		T_EQ_INT(len, 47);
		T_EQ_INT(estargz_footer_parse(leg, len, 24613186, &f), 0);
		T_EQ_INT(f.kind, ESTARGZ_LEGACY);
		T_EQ_U64(f.toc_offset, 24442675);
		T_EQ_U64(f.toc_size, 170464);
		/* MANIFEST: it does not parse as a 51-byte eStargz footer (padded in front, still legacy) */
		memset(junk, 0, sizeof(junk));
		memcpy(junk + 64 - 47, leg, 47);
		T_EQ_INT(estargz_footer_parse(junk, 64, 24613186, &f), 0);
		T_EQ_INT(f.kind, ESTARGZ_LEGACY);
		/* a blob too small for that offset */
		log_capture();
		T_EQ_INT(estargz_footer_parse(leg, len, 1000, &f), -EFSCORRUPTED);
		T_ASSERT(strstr(log_text(), "legacy stargz footer: TOC offset 24442675 outside the blob"));
		free(leg);
	}
	/* not stargz at all: quietly -EMEDIUMTYPE */
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i * 37 + 11);
	log_capture();
	T_EQ_INT(estargz_footer_parse(junk, sizeof(junk), 1 << 20, &f), -EMEDIUMTYPE);
	T_EQ_INT(estargz_footer_parse(junk, 10, 10, &f), -EMEDIUMTYPE);
	T_EQ_STR(log_text(), "");
}

/* ---- B: TOC members of the fixtures ---- */

static void test_toc_decode(void)
{
	struct estargz_footer f;
	size_t len, jlen, want_len;
	uint8_t *blob, *member, *want;
	char *json = NULL, dg[72];

	blob = slurp(t_fixture("estargz/synthetic.esgz"), &len);
	want = slurp(t_fixture("estargz/synthetic.toc.json"), &want_len);
	if (blob && want) {
		T_EQ_INT(estargz_footer_parse(blob + len - 51, 51, len, &f), 0);
		T_EQ_INT(estargz_toc_decode(&f, blob + f.toc_offset, f.toc_size, &json, &jlen), 0);
		T_EQ_U64(jlen, 4569);
		T_ASSERT(json && jlen == want_len && !memcmp(json, want, jlen) && json[jlen] == 0);
		estargz_toc_digest(json, jlen, dg);
		T_EQ_STR(dg, "sha256:c7677eda0664a37028ed69ab28176cfa181d416d3ad39e95b95acfc30e126a7f");
		free(json);
		json = NULL;
		/* a truncated member fails cleanly */
		log_capture();
		T_EQ_INT(estargz_toc_decode(&f, blob + f.toc_offset, f.toc_size / 2, &json, &jlen), -EFSCORRUPTED);
		T_ASSERT(strstr(log_text(), "TOC: the gzip member is truncated"));
	}
	free(blob);
	free(want);

	member = slurp(t_fixture("estargz/nydus-snapshotter-stargztoc.bin"), &len);
	want = slurp(t_fixture("estargz/nydus-snapshotter-stargz.index.json"), &want_len);
	if (member && want) {
		f = (struct estargz_footer){ .kind = ESTARGZ_LEGACY, .toc_offset = 24442675, .toc_size = len };
		T_EQ_U64(len, 170464);
		/* the CRFS member: FEXTRA "stargz.toc", XFL 2 */
		T_EQ_INT(estargz_toc_decode(&f, member, len, &json, &jlen), 0);
		T_EQ_U64(jlen, 1104687);
		T_ASSERT(json && jlen == want_len && !memcmp(json, want, jlen));
		estargz_toc_digest(json, jlen, dg);
		T_EQ_STR(dg, "sha256:46c03b793f385f3c2304582ac028104f94c6245b87cc37a06aa2bc662293d439");
		free(json);
	}
	free(member);
	free(want);
}

/* ---- C: the real legacy TOC (4,559 entries) ---- */

struct count_walk {
	struct image *img;
	uint64_t dirs, regs, links, other, bad;
	uint64_t hard_ino;
};

static int count_fn(void *arg, const char *path, const struct img_attr *a)
{
	struct count_walk *w = arg;
	struct img_attr b;

	if (w->img->ops->getattr(w->img, a->ino, &b) || b.mode != a->mode)
		w->bad++;
	if (S_ISDIR(a->mode))
		w->dirs++;
	else if (S_ISREG(a->mode))
		w->regs++;
	else if (S_ISLNK(a->mode))
		w->links++;
	else
		w->other++;
	/* legacy modes carry S_IFMT bits: only permission bits may remain */
	if ((a->mode & ~(uint32_t)(S_IFMT | 07777)) != 0)
		w->bad++;
	return 0;
}

static void test_legacy_index(void)
{
	size_t len;
	char *json = (char *)slurp(t_fixture("estargz/nydus-snapshotter-stargz.index.json"), &len);
	struct estargz_layer L = { .blob_id = "legacy", .blob_size = 24613186, .kind = ESTARGZ_LEGACY,
				   .toc_offset = 24442675 };
	struct estargz_opts o = { .merge = true, .validate = true };
	struct json_object *root, *ents;
	uint64_t n_reg = 0, n_sym = 0, n_dir = 0, n_hard = 0, n_total;
	struct estargz_info info;
	struct count_walk w = { 0 };
	struct estargz *es;
	struct img_attr a;
	double t0;

	if (!json)
		return;
	/* independent count with json-c */
	root = json_tokener_parse(json);
	T_ASSERT(root && json_object_object_get_ex(root, "entries", &ents));
	if (!root)
		return;
	n_total = json_object_array_length(ents);
	for (size_t i = 0; i < n_total; i++) {
		struct json_object *e = json_object_array_get_idx(ents, i), *t;
		const char *ty;

		json_object_object_get_ex(e, "type", &t);
		ty = json_object_get_string(t);
		n_reg += !strcmp(ty, "reg");
		n_sym += !strcmp(ty, "symlink");
		n_dir += !strcmp(ty, "dir");
		n_hard += !strcmp(ty, "hardlink");
	}
	/* MANIFEST.md: 4,559 entries (2,936 reg, 1,179 symlink, 442 dir, 2 hardlink) */
	T_EQ_U64(n_total, 4559);
	T_EQ_U64(n_reg, 2936);
	T_EQ_U64(n_sym, 1179);
	T_EQ_U64(n_dir, 442);
	T_EQ_U64(n_hard, 2);
	json_object_put(root);

	L.toc_json = json;
	L.toc_len = len;
	t0 = now_s();
	T_EQ_INT(estargz_open(&L, 1, &o, &es), 0);
	printf("legacy TOC: %zu bytes, 4559 entries parsed and built in %.1f ms\n", len, (now_s() - t0) * 1e3);
	if (!es) {
		free(json);
		return;
	}
	estargz_get_info(es, &info);
	T_EQ_U64(info.toc_entries, 4559);
	T_EQ_U64(info.regs, 2936);
	T_EQ_U64(info.symlinks, 1179);
	T_EQ_U64(info.hardlink_names, 2);
	/* every listed dir plus the root (the TOC names every parent: no implicit ones) */
	T_EQ_U64(info.dirs, 443);
	w.img = estargz_image(es);
	T_EQ_INT(imgfs_walk(w.img, count_fn, &w), 0);
	T_EQ_U64(w.dirs, 443);
	T_EQ_U64(w.regs, 2936 + 2);   /* hardlink names are walked too */
	T_EQ_U64(w.links, 1179);
	T_EQ_U64(w.bad, 0);
	/* first entries: bin/ 16877 = dir 0755, bin/bash 33261 = reg 0755, 1099016 bytes */
	T_EQ_INT(resolve(w.img, "/bin", &a), 0);
	T_EQ_INT(a.mode, S_IFDIR | 0755);
	T_EQ_INT(resolve(w.img, "/bin/bash", &a), 0);
	T_EQ_INT(a.mode, S_IFREG | 0755);
	T_EQ_U64(a.size, 1099016);
	T_EQ_U64(a.mtime, 1494877532);   /* 2017-05-15T19:45:32Z */
	/* no chunkDigest in a legacy TOC: the whole-file digest verifies an unchunked file */
	{
		struct chunk_list0 {
			struct img_chunk c;
			int n;
		};
		struct img_attr b2;

		T_EQ_INT(resolve(w.img, "/bin/cat", &b2), 0);
		T_EQ_U64(b2.size, 35688);
	}
	estargz_close(es);
	free(json);
}

/* ---- D: nydus's 5-entry sample (hardlink, implicit dir, landmark) ---- */

static void test_sample(void)
{
	size_t len;
	char *json = (char *)slurp(t_fixture("estargz/nydus-estargz_sample.json"), &len);
	struct estargz_layer L = { .blob_id = "sample", .blob_size = 2000000, .kind = ESTARGZ_GZIP };
	struct estargz_opts o = { .merge = true, .validate = true };
	struct img_attr a, b;
	struct estargz *es;
	uint64_t pf[8];
	size_t npf;

	if (!json)
		return;
	L.toc_json = json;
	L.toc_len = len;
	T_EQ_INT(estargz_open(&L, 1, &o, &es), 0);
	if (!es) {
		free(json);
		return;
	}
	struct image *img = estargz_image(es);
	T_EQ_STR(img->format, "estargz");
	T_EQ_INT(resolve(img, "/bin/busybox", &a), 0);
	T_EQ_INT(resolve(img, "/bin/busybox2", &b), 0);
	T_EQ_U64(a.ino, b.ino);
	T_EQ_INT(a.nlink, 2);
	T_EQ_U64(a.size, 833104);
	T_EQ_U64(b.size, 833104);   /* the hardlink entry carries no size; it shares the inode */
	/* lib/ is implicit: 0755 root-owned */
	T_EQ_INT(resolve(img, "/lib", &a), 0);
	T_EQ_INT(a.mode, S_IFDIR | 0755);
	T_EQ_INT(a.uid, 0);
	T_EQ_INT(resolve(img, "/lib/ld-musl-x86_64.so.1", &b), 0);
	T_EQ_U64(b.size, 580144);
	/* the landmark is hidden; the files before it are the prefetch list, in blob order */
	T_EQ_INT(resolve(img, "/.prefetch.landmark", &a), -ENOENT);
	npf = estargz_prefetch_list(es, pf, 8);
	T_EQ_INT(npf, 2);
	T_EQ_INT(resolve(img, "/bin/busybox", &a), 0);
	T_EQ_U64(pf[0], a.ino);
	T_EQ_U64(pf[1], b.ino);
	/* no backend: metadata works, data reads fail cleanly */
	{
		char buf[16];

		T_ASSERT(img->ops->read(img, a.ino, buf, sizeof(buf), 0) < 0);
	}
	estargz_close(es);
	free(json);
}

/* ---- E: the synthetic blob against synthetic.expected.json and the TOC ---- */

static struct json_object *jget(struct json_object *o, const char *k)
{
	struct json_object *v = NULL;

	json_object_object_get_ex(o, k, &v);
	return v;
}

static int64_t rfc3339_utc(const char *s)
{
	struct tm tm = { 0 };

	if (!s || !strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm))
		return 0;
	return (int64_t)timegm(&tm);
}

struct chunk_list {
	struct img_chunk c[16];
	int n;
};

static int collect_chunk(void *arg, const struct img_chunk *c)
{
	struct chunk_list *l = arg;

	if (l->n < 16)
		l->c[l->n] = *c;
	l->n++;
	return 0;
}

static void check_synthetic(const char *file, bool merge)
{
	struct estargz_opts o = { .merge = merge, .validate = true };
	size_t elen, tlen;
	char *exp = (char *)slurp(t_fixture("estargz/synthetic.expected.json"), &elen);
	char *toc = (char *)slurp(t_fixture("estargz/synthetic.toc.json"), &tlen);
	struct json_object *e = exp ? json_tokener_parse(exp) : NULL, *t = toc ? json_tokener_parse(toc) : NULL;
	struct estargz *es = NULL;
	struct image *img;
	struct img_attr a, b;
	struct estargz_stats st;
	uint64_t pf[4];
	char buf[64];

	T_ASSERT(e && t);
	T_EQ_INT(estargz_open_file(t_fixture(file), &o, &es), 0);
	if (!es || !e || !t)
		goto out;
	img = estargz_image(es);
	{
		struct estargz_blob_info bi;

		T_EQ_INT(estargz_blob_count(es), 1);
		T_EQ_INT(estargz_get_blob(es, 0, &bi), 0);
		/* the file's sha256 is the blob id; for synthetic.esgz that is the MANIFEST's layer digest */
		if (!strcmp(file, "estargz/synthetic.esgz"))
			T_EQ_STR(bi.id, "4c3ee799f76fbed09acc654ae97818d379315d77c1024a52dfdaed7d48802eb7");
		/* 8 data entries: hello, landmark, hostname, xattr-file, 3 chunks of big.bin, opq/kept */
		T_EQ_INT(bi.chunk_count, 8);
		T_EQ_U64(bi.space_size, 2940 + 1 + 13 + 13 + 40000 + 19);
	}
	/* every regular file of the known answers: size, content digest, chunk geometry */
	struct json_object *files = jget(e, "files");
	for (size_t i = 0; i < json_object_array_length(files); i++) {
		struct json_object *fo = json_object_array_get_idx(files, i), *chunks = jget(fo, "chunks");
		const char *name = json_object_get_string(jget(fo, "name"));
		char path[256], dg[72];
		struct chunk_list cl = { .n = 0 };
		uint8_t *data;
		ssize_t err;

		snprintf(path, sizeof(path), "/%s", name);
		if (!strcmp(name, ".prefetch.landmark")) {
			T_EQ_INT(resolve(img, path, &a), -ENOENT);   /* hidden */
			continue;
		}
		if (strstr(name, ".wh.")) {
			T_EQ_INT(resolve(img, path, &a), -ENOENT);   /* never shown under that name */
			continue;
		}
		if (resolve(img, path, &a)) {
			T_FAIL("%s: %s not found", file, path);
			continue;
		}
		T_EQ_U64(a.size, json_object_get_int64(jget(fo, "size")));
		data = read_all(img, &a, &err);
		T_EQ_INT(err, 0);
		if (data) {
			sha256_str(data, a.size, dg);
			if (strcmp(dg, json_object_get_string(jget(fo, "digest"))))
				T_FAIL("%s: content digest %s, want %s", path, dg,
				       json_object_get_string(jget(fo, "digest")));
			free(data);
		}
		T_EQ_INT(img->ops->chunks(img, a.ino, collect_chunk, &cl), 0);
		T_EQ_INT(cl.n, json_object_array_length(chunks));
		for (int k = 0; k < cl.n && k < 16 && (size_t)k < json_object_array_length(chunks); k++) {
			struct json_object *co = json_object_array_get_idx(chunks, (size_t)k);
			char hex[65];

			T_EQ_U64(cl.c[k].file_offset, json_object_get_int64(jget(co, "chunkOffset")));
			T_EQ_U64(cl.c[k].uncompressed_size, json_object_get_int64(jget(co, "effectiveChunkSize")));
			T_EQ_U64(cl.c[k].compressed_offset, json_object_get_int64(jget(co, "offset")));
			/* the known answers follow Go, whose last data entry runs to blob_size; this
			 * reader stops it at the TOC offset instead (format doc section 7) */
			{
				uint64_t next = (uint64_t)json_object_get_int64(jget(co, "nextOffset"));

				if (next == (uint64_t)json_object_get_int64(jget(e, "blob_size")))
					next = SYN_TOC_OFFSET;
				T_EQ_U64(cl.c[k].compressed_offset + cl.c[k].compressed_size, next);
			}
			T_ASSERT(cl.c[k].digest != NULL);
			if (cl.c[k].digest) {
				lz_hex(cl.c[k].digest, 32, hex);
				T_ASSERT(!strcmp(hex, json_object_get_string(jget(co, "chunkDigest")) + 7));
			}
		}
	}
	/* mode, owner and mtime of every TOC entry but chunks and hidden names */
	struct json_object *ents = jget(t, "entries");
	for (size_t i = 0; i < json_object_array_length(ents); i++) {
		struct json_object *en = json_object_array_get_idx(ents, i);
		const char *name = json_object_get_string(jget(en, "name"));
		const char *type = json_object_get_string(jget(en, "type"));
		char path[256];

		if (!strcmp(type, "chunk") || strstr(name, ".wh.") || strstr(name, "landmark"))
			continue;
		snprintf(path, sizeof(path), "/%s", name);
		if (resolve(img, path, &a)) {
			T_FAIL("%s: %s not found", file, path);
			continue;
		}
		if ((a.mode & 07777) != (uint32_t)json_object_get_int(jget(en, "mode")))
			T_FAIL("%s: mode %o, want %o", path, a.mode & 07777, json_object_get_int(jget(en, "mode")));
		T_EQ_INT(a.uid, json_object_get_int(jget(en, "uid")));
		T_EQ_INT(a.gid, json_object_get_int(jget(en, "gid")));
		T_EQ_INT(a.mtime, rfc3339_utc(json_object_get_string(jget(en, "modtime"))));
	}
	/* types and the special entries */
	T_EQ_INT(resolve(img, "/dev/null", &a), 0);
	T_EQ_INT(a.mode & S_IFMT, S_IFCHR);
	T_EQ_U64(a.rdev, makedev(1, 3));
	T_EQ_INT(resolve(img, "/run/fifo", &a), 0);
	T_EQ_INT(a.mode & S_IFMT, S_IFIFO);
	T_EQ_INT(resolve(img, "/usr/bin/hello-link", &a), 0);
	T_EQ_INT(a.mode & S_IFMT, S_IFLNK);
	T_EQ_INT(img->ops->readlink(img, a.ino, buf, sizeof(buf)), 15);
	T_ASSERT(!memcmp(buf, "../../bin/hello", 15));
	T_EQ_INT(resolve(img, "/usr/bin/hello-hard", &a), 0);
	T_EQ_INT(resolve(img, "/bin/hello", &b), 0);
	T_EQ_U64(a.ino, b.ino);
	T_EQ_INT(a.nlink, 2);
	T_EQ_INT(resolve(img, "/etc/xattr-file", &a), 0);
	T_EQ_INT(img->ops->listxattr(img, a.ino, NULL, 0), 13);
	T_EQ_INT(img->ops->getxattr(img, a.ino, "user.fixture", buf, sizeof(buf)), 5);
	T_ASSERT(!memcmp(buf, "hello", 5));
	T_EQ_INT(img->ops->getxattr(img, a.ino, "user.fixture", buf, 2), -ERANGE);
	T_EQ_INT(img->ops->getxattr(img, a.ino, "user.other", buf, sizeof(buf)), -ENODATA);
	/* a read across both chunk edges of big.bin equals the same bytes read chunk by chunk */
	T_EQ_INT(resolve(img, "/usr/share/big.bin", &a), 0);
	{
		ssize_t err;
		uint8_t *whole = read_all(img, &a, &err), *part = malloc(20000);

		T_ASSERT(whole && part);
		if (whole && part) {
			T_EQ_INT(img->ops->read(img, a.ino, part, 20000, 16000), 20000);
			T_ASSERT(!memcmp(part, whole + 16000, 20000));
			T_EQ_INT(img->ops->read(img, a.ino, part, 20000, 39990), 10);
			T_ASSERT(!memcmp(part, whole + 39990, 10));
			T_EQ_INT(img->ops->read(img, a.ino, part, 100, 40000), 0);
		}
		free(whole);
		free(part);
	}
	if (merge) {
		/* whiteouts applied to nothing below; the markers are not shown */
		T_EQ_INT(resolve(img, "/var/removed", &a), -ENOENT);
		T_EQ_INT(resolve(img, "/opq", &a), 0);
		T_EQ_INT(img->ops->getxattr(img, a.ino, "trusted.overlay.opaque", buf, sizeof(buf)), -ENODATA);
	} else {
		/* overlayfs form */
		T_EQ_INT(resolve(img, "/var/removed", &a), 0);
		T_EQ_INT(a.mode & S_IFMT, S_IFCHR);
		T_EQ_U64(a.rdev, makedev(0, 0));
		T_EQ_INT(resolve(img, "/opq", &a), 0);
		T_EQ_INT(img->ops->getxattr(img, a.ino, "trusted.overlay.opaque", buf, sizeof(buf)), 1);
		T_ASSERT(buf[0] == 'y');
		T_EQ_INT(img->ops->listxattr(img, a.ino, buf, sizeof(buf)), 23);
	}
	T_EQ_INT(resolve(img, "/opq/kept", &a), 0);
	/* prefetch: bin/hello only (before the landmark at 246) */
	T_EQ_INT(estargz_prefetch_list(es, pf, 4), 1);
	T_EQ_INT(resolve(img, "/bin/hello", &a), 0);
	T_EQ_U64(pf[0], a.ino);
	/* the landmark holds 0x0f and a prefetch read of bin/hello's chunk works directly */
	{
		struct chunk_list cl = { .n = 0 };
		uint8_t out[4096];

		img->ops->chunks(img, a.ino, collect_chunk, &cl);
		T_EQ_INT(cl.n, 1);
		T_EQ_INT(estargz_read_chunk(es, &cl.c[0], out), 0);
		cl.c[0].index = 999;
		T_EQ_INT(estargz_read_chunk(es, &cl.c[0], out), -EFSCORRUPTED);
	}
	estargz_get_stats(es, &st);
	T_ASSERT(st.chunk_fills >= 7 && st.backend_reads >= 7 && st.errors == 0);
out:
	estargz_close(es);
	if (e)
		json_object_put(e);
	if (t)
		json_object_put(t);
	free(exp);
	free(toc);
}

/* ---- F: tampering ---- */

static void test_tamper(void)
{
	size_t len, jlen;
	uint8_t *blob = slurp(t_fixture("estargz/synthetic.esgz"), &len);
	char *json = NULL, *p;
	struct estargz_footer f;
	struct mem_blob mb;
	struct estargz_opts o = { .merge = true, .validate = true, .backend = &mem_backend, .backend_ctx = &mb };
	struct estargz_layer L = { .blob_id = "tamper", .kind = ESTARGZ_GZIP };
	struct estargz *es;
	struct image *img;
	struct img_attr a;
	uint8_t buf[65536];

	if (!blob)
		return;
	T_EQ_INT(estargz_footer_parse(blob + len - 51, 51, len, &f), 0);
	T_EQ_INT(estargz_toc_decode(&f, blob + f.toc_offset, f.toc_size, &json, &jlen), 0);
	if (!json)
		goto out;
	L.blob_size = len;
	L.toc_offset = f.toc_offset;
	L.toc_json = json;
	L.toc_len = jlen;
	mb = (struct mem_blob){ .p = blob, .len = len };

	/* 1: one compressed byte of big.bin's second chunk flipped: that chunk fails, nothing else */
	blob[17121 + 200] ^= 0x55;
	T_EQ_INT(estargz_open(&L, 1, &o, &es), 0);
	if (es) {
		img = estargz_image(es);
		T_EQ_INT(resolve(img, "/usr/share/big.bin", &a), 0);
		log_capture();
		T_EQ_INT(img->ops->read(img, a.ino, buf, 100, 16384 + 10), -EFSCORRUPTED);
		T_ASSERT(strstr(log_text(), "/usr/share/big.bin: chunk 1 at file offset 16384"));
		T_EQ_INT(img->ops->read(img, a.ino, buf, 100, 0), 100);        /* chunk 0 is fine */
		T_EQ_INT(img->ops->read(img, a.ino, buf, 100, 33000), 100);    /* chunk 2 is fine */
		T_EQ_INT(resolve(img, "/bin/hello", &a), 0);
		T_EQ_INT(img->ops->read(img, a.ino, buf, sizeof(buf), 0), 2940);
		estargz_close(es);
	}
	blob[17121 + 200] ^= 0x55;

	/* 2: the data decodes, but the TOC's chunkDigest of bin/hello is different: -EBADMSG */
	p = strstr(json, "96987ca5447a72e380c62b044fea4dd856bbb838edf3948334f90cd670960a59\",\n");
	p = p ? strstr(p + 10, "96987ca5") : NULL;   /* the chunkDigest, not the digest */
	T_ASSERT(p != NULL);
	if (p) {
		p[0] = '0';
		T_EQ_INT(estargz_open(&L, 1, &o, &es), 0);
		if (es) {
			img = estargz_image(es);
			T_EQ_INT(resolve(img, "/bin/hello", &a), 0);
			log_capture();
			T_EQ_INT(img->ops->read(img, a.ino, buf, 10, 0), -EBADMSG);
			T_ASSERT(strstr(log_text(), "/bin/hello: chunk 0 at file offset 0 (blob bytes 99..245): chunk digest mismatch"));
			/* its hardlink is the same file: also refused; others read */
			T_EQ_INT(resolve(img, "/usr/bin/hello-hard", &a), 0);
			T_EQ_INT(img->ops->read(img, a.ino, buf, 10, 0), -EBADMSG);
			T_EQ_INT(resolve(img, "/etc/hostname", &a), 0);
			T_EQ_INT(img->ops->read(img, a.ino, buf, sizeof(buf), 0), 13);
			estargz_close(es);
		}
		/* without validation the bytes are served (the caller's explicit choice) */
		o.validate = false;
		T_EQ_INT(estargz_open(&L, 1, &o, &es), 0);
		if (es) {
			img = estargz_image(es);
			T_EQ_INT(resolve(img, "/bin/hello", &a), 0);
			T_EQ_INT(img->ops->read(img, a.ino, buf, 10, 0), 10);
			estargz_close(es);
		}
		o.validate = true;
		/* and the TOC digest no longer matches the fixture's: the caller refuses the layer */
		{
			char dg[72];

			estargz_toc_digest(json, jlen, dg);
			T_ASSERT(strcmp(dg, "sha256:c7677eda0664a37028ed69ab28176cfa181d416d3ad39e95b95acfc30e126a7f"));
		}
	}
out:
	free(json);
	free(blob);
}

/* ---- G: blobs generated here ---- */

struct gen {
	uint8_t *blob;
	size_t len, cap;
	char *toc;
	size_t tlen, tcap;
	bool zstd;
	int nent;
};

static void gput(struct gen *g, const void *p, size_t n)
{
	if (g->len + n > g->cap) {
		g->cap = (g->len + n) * 2 + 4096;
		g->blob = realloc(g->blob, g->cap);
	}
	memcpy(g->blob + g->len, p, n);
	g->len += n;
}

__attribute__((format(printf, 2, 3)))
static void tocf(struct gen *g, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (g->tcap - g->tlen < 8192) {
		g->tcap = g->tcap * 2 + 65536;
		g->toc = realloc(g->toc, g->tcap);
	}
	va_start(ap, fmt);
	n = vsnprintf(g->toc + g->tlen, g->tcap - g->tlen, fmt, ap);
	va_end(ap);
	g->tlen += (size_t)n;
}

/* one gzip member (or zstd frame) of data */
static void gmember(struct gen *g, const void *data, size_t n)
{
	size_t cap = n + n / 10 + 1024;
	uint8_t *out = malloc(cap);

	if (g->zstd) {
		size_t r = ZSTD_compress(out, cap, data, n, 3);

		T_ASSERT(!ZSTD_isError(r));
		gput(g, out, r);
	} else {
		z_stream zs = { 0 };

		deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
		zs.next_in = (Bytef *)(uintptr_t)data;
		zs.avail_in = (uInt)n;
		zs.next_out = out;
		zs.avail_out = (uInt)cap;
		T_EQ_INT(deflate(&zs, Z_FINISH), Z_STREAM_END);
		gput(g, out, zs.total_out);
		deflateEnd(&zs);
	}
	free(out);
}

static void gmember(struct gen *g, const void *data, size_t n);

static void gentry_sep(struct gen *g)
{
	if (!g->nent) {
		uint8_t hdr[512] = { 0 };

		/* a real blob starts with a member holding the first tar headers: no data at offset 0 */
		gmember(g, hdr, sizeof(hdr));
	}
	tocf(g, g->nent++ ? ",\n" : "{\"version\":1,\"entries\":[\n");
}

static void gmeta(struct gen *g, const char *json)
{
	gentry_sep(g);
	tocf(g, "%s", json);
}

static void hex_digest(const void *p, size_t n, char out[72])
{
	sha256_str(p, n, out);
}

/* A regular file: chunks of `csize` each in their own member (csize 0: one). */
static void gfile(struct gen *g, const char *name, const uint8_t *data, size_t n, size_t csize)
{
	char dg[72], cd[72];

	hex_digest(data, n, dg);
	if (!csize)
		csize = n ? n : 1;
	gentry_sep(g);
	if (!n) {
		tocf(g, "{\"name\":\"%s\",\"type\":\"reg\",\"mode\":420,\"digest\":\"%s\"}", name, dg);
		return;
	}
	for (size_t off = 0; off < n; off += csize) {
		size_t len = LZ_MIN(csize, n - off);

		hex_digest(data + off, len, cd);
		if (off)
			tocf(g, ",\n{\"name\":\"%s\",\"type\":\"chunk\",\"offset\":%zu,\"chunkOffset\":%zu", name, g->len,
			     off);
		else
			tocf(g, "{\"name\":\"%s\",\"type\":\"reg\",\"size\":%zu,\"mode\":420,\"offset\":%zu,\"digest\":\"%s\"",
			     name, n, g->len, dg);
		/* chunkSize omitted for a final short chunk, as the Go writer does */
		if (len == csize && !(off == 0 && len == n))
			tocf(g, ",\"chunkSize\":%zu", len);
		tocf(g, ",\"chunkDigest\":\"%s\"}", cd);
		gmember(g, data + off, len);
		g->nent++;
	}
}

/* Several small files in one member, told apart by innerOffset. */
static void gshared(struct gen *g, const char **names, const uint8_t **datas, const size_t *lens, int n)
{
	size_t total = 0, inner = 0, off = g->len;
	uint8_t *m;

	for (int i = 0; i < n; i++)
		total += lens[i];
	m = malloc(total + 512);
	for (int i = 0; i < n; i++) {
		char dg[72];

		memcpy(m + inner, datas[i], lens[i]);
		hex_digest(datas[i], lens[i], dg);
		gentry_sep(g);
		tocf(g, "{\"name\":\"%s\",\"type\":\"reg\",\"size\":%zu,\"mode\":420,\"offset\":%zu,\"innerOffset\":%zu,\"digest\":\"%s\",\"chunkDigest\":\"%s\"}",
		     names[i], lens[i], off, inner, dg, dg);
		inner += lens[i];
	}
	memset(m + inner, 0, 512);   /* trailing tar-ish bytes the reader must ignore */
	gmember(g, m, total + 512);
	free(m);
}

static void octal(char *dst, size_t width, uint64_t v)
{
	snprintf(dst, width, "%0*llo", (int)width - 1, (unsigned long long)v);
}

/* TOC member (gzip: tar of stargz.index.json) and footer; returns the TOC JSON length. */
static size_t gfinish(struct gen *g, uint64_t *toc_off)
{
	size_t jlen;

	tocf(g, "\n]}\n");
	jlen = g->tlen;
	*toc_off = g->len;
	if (g->zstd) {
		size_t cap = ZSTD_compressBound(jlen), r;
		uint8_t *c = malloc(cap), hdr[8], foot[48];

		r = ZSTD_compress(c, cap, g->toc, jlen, 3);
		memcpy(hdr, "\x50\x2a\x4d\x18", 4);
		lz_put_le32(hdr + 4, (uint32_t)r);
		gput(g, hdr, 8);
		*toc_off = g->len;
		gput(g, c, r);
		memcpy(foot, "\x50\x2a\x4d\x18", 4);
		lz_put_le32(foot + 4, 40);
		lz_put_le64(foot + 8, *toc_off);
		lz_put_le64(foot + 16, r);
		lz_put_le64(foot + 24, jlen);
		lz_put_le64(foot + 32, 1);
		memcpy(foot + 40, "GnUlInUx", 8);
		gput(g, foot, 48);
		free(c);
	} else {
		size_t tl = 512 + LZ_ALIGN_UP(jlen, 512u) + 1024;
		uint8_t *tar = calloc(1, tl), foot[51];
		unsigned sum = 0;
		char hex[17];

		strcpy((char *)tar, "stargz.index.json");
		octal((char *)tar + 100, 8, 0644);
		octal((char *)tar + 108, 8, 0);
		octal((char *)tar + 116, 8, 0);
		octal((char *)tar + 124, 12, jlen);
		octal((char *)tar + 136, 12, 0);
		tar[156] = '0';
		memcpy(tar + 257, "ustar\0" "00", 8);
		memset(tar + 148, ' ', 8);
		for (int i = 0; i < 512; i++)
			sum += tar[i];
		snprintf((char *)tar + 148, 8, "%06o", sum);
		memcpy(tar + 512, g->toc, jlen);
		gmember(g, tar, tl);
		free(tar);
		memcpy(foot, "\x1f\x8b\x08\x04\0\0\0\0\0\xff\x1a\0SG\x16\0", 16);
		snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)*toc_off);
		memcpy(foot + 16, hex, 16);
		memcpy(foot + 32, "STARGZ\x01\0\0\xff\xff\0\0\0\0\0\0\0\0", 19);
		gput(g, foot, 51);
	}
	return jlen;
}

static void fill_pattern(uint8_t *p, size_t n, uint32_t seed)
{
	/* compressible but not trivial: words of a small LCG alphabet */
	for (size_t i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		p[i] = (uint8_t)("abcdefgh \n"[(seed >> 16) % 10]);
	}
}

/* open a generated blob through its footer, TOC decode and the memory backend */
static struct estargz *gopen(struct gen *g, struct mem_blob *mb, struct fake_cache *fc, bool validate)
{
	struct estargz_opts o = { .merge = true, .validate = validate, .backend = &mem_backend, .backend_ctx = mb,
				  .cache = fc ? &fake_cache_ops : NULL, .cache_ctx = fc };
	struct estargz_layer L = { .blob_id = "gen", .blob_size = g->len };
	struct estargz_footer f;
	struct estargz *es = NULL;
	char *json = NULL;
	size_t jlen;
	size_t tl = LZ_MIN(g->len, (size_t)ESTARGZ_TAIL_MAX);

	T_EQ_INT(estargz_footer_parse(g->blob + g->len - tl, tl, g->len, &f), 0);
	T_EQ_INT(f.kind, g->zstd ? ESTARGZ_ZSTD_CHUNKED : ESTARGZ_GZIP);
	T_EQ_INT(estargz_toc_decode(&f, g->blob + f.toc_offset, f.toc_size, &json, &jlen), 0);
	if (!json)
		return NULL;
	*mb = (struct mem_blob){ .p = g->blob, .len = g->len };
	L.kind = f.kind;
	L.toc_json = json;
	L.toc_len = jlen;
	L.toc_offset = f.toc_offset;
	T_EQ_INT(estargz_open(&L, 1, &o, &es), 0);
	if (fc)
		fc->es = es;
	free(json);
	return es;
}

static void test_generated(bool zstd)
{
	enum { C = 4096 };
	struct gen g = { .zstd = zstd };
	struct mem_blob mb;
	struct fake_cache *fc = calloc(1, sizeof(*fc));
	uint8_t *exact = malloc(3 * C), *odd = malloc(3 * C + 100), *big = malloc(C);
	const char *names[3] = { "small/a", "small/b", "small/c" };
	const uint8_t *datas[3] = { (const uint8_t *)"alpha\n", (const uint8_t *)"bravo bravo\n",
				    (const uint8_t *)"charlie!\n" };
	size_t lens[3] = { 6, 12, 9 };
	uint64_t toc_off;
	struct estargz *es;
	struct image *img;
	struct img_attr a;
	struct chunk_list cl = { .n = 0 };

	fill_pattern(exact, 3 * C, 1);
	fill_pattern(odd, 3 * C + 100, 2);
	fill_pattern(big, C, 3);
	gmeta(&g, "{\"name\":\"./\",\"type\":\"dir\",\"mode\":16877,\"uid\":7}");
	gfile(&g, "data/exact", exact, 3 * C, C);    /* multiple of C: every chunk carries chunkSize */
	gfile(&g, "data/odd", odd, 3 * C + 100, C);  /* last chunk short: chunkSize omitted */
	gfile(&g, "data/one", big, C, C);            /* S == C: a reg with chunkSize, no chunk entries */
	gfile(&g, "data/empty", NULL, 0, 0);
	gshared(&g, names, datas, lens, 3);
	gfile(&g, "last", (const uint8_t *)"the end\n", 8, 0);
	gfinish(&g, &toc_off);

	es = gopen(&g, &mb, fc, true);
	if (!es)
		goto out;
	img = estargz_image(es);
	/* the "./" entry is the root's own metadata */
	T_EQ_INT(img->ops->getattr(img, IMG_ROOT_INO, &a), 0);
	T_EQ_INT(a.uid, 7);
	T_EQ_INT(resolve(img, "/data/exact", &a), 0);
	T_EQ_INT(img->ops->chunks(img, a.ino, collect_chunk, &cl), 0);
	T_EQ_INT(cl.n, 3);
	T_EQ_INT(cl.c[2].uncompressed_size, C);
	{
		struct {
			const char *path;
			const uint8_t *want;
			size_t len;
		} files[] = {
			{ "/data/exact", exact, 3 * C }, { "/data/odd", odd, 3 * C + 100 }, { "/data/one", big, C },
			{ "/data/empty", NULL, 0 }, { "/small/a", datas[0], 6 }, { "/small/b", datas[1], 12 },
			{ "/small/c", datas[2], 9 }, { "/last", (const uint8_t *)"the end\n", 8 },
		};

		for (int pass = 0; pass < 2; pass++) {
			for (size_t i = 0; i < LZ_ARRAY_SIZE(files); i++) {
				ssize_t err;
				uint8_t *got;

				if (resolve(img, files[i].path, &a)) {
					T_FAIL("%s missing", files[i].path);
					continue;
				}
				T_EQ_U64(a.size, files[i].len);
				got = read_all(img, &a, &err);
				T_EQ_INT(err, 0);
				if (got && files[i].len && memcmp(got, files[i].want, files[i].len))
					T_FAIL("%s%s: content differs", zstd ? "zstd " : "", files[i].path);
				free(got);
			}
			if (pass == 0) {
				/* every chunk went through begin/done exactly once */
				struct estargz_blob_info bi;

				estargz_get_blob(es, 0, &bi);
				T_EQ_INT(bi.chunk_count, 3 + 4 + 1 + 3 + 1);
				T_EQ_INT(fc->dones, bi.chunk_count);
				T_EQ_INT(fc->errors, 0);
				/* drop the decoded-chunk slots: pass 2 must come from the cache */
				estargz_close(es);
				es = gopen(&g, &mb, fc, true);
				if (!es)
					goto out;
				img = estargz_image(es);
				mb.reads = 0;
			}
		}
		T_EQ_INT(mb.reads, 0);
		T_ASSERT(fc->hits >= 12);
		T_EQ_INT(fc->geometry_bad, 0);
	}
	/* innerOffset siblings share one member: each is fetched as [offset, next distinct offset) */
	T_EQ_INT(resolve(img, "/small/b", &a), 0);
	cl.n = 0;
	img->ops->chunks(img, a.ino, collect_chunk, &cl);
	T_EQ_INT(cl.n, 1);
	{
		struct img_chunk ca = cl.c[0];

		cl.n = 0;
		T_EQ_INT(resolve(img, "/small/a", &a), 0);
		img->ops->chunks(img, a.ino, collect_chunk, &cl);
		T_EQ_U64(cl.c[0].compressed_offset, ca.compressed_offset);
		T_EQ_U64(cl.c[0].compressed_size, ca.compressed_size);
	}
	estargz_close(es);
out:
	fc_free(fc);
	free(exact);
	free(odd);
	free(big);
	free(g.blob);
	free(g.toc);
}

/* ---- H: merging layers ---- */

static struct estargz *open_json_layers(const char **tocs, size_t n, bool merge, int *ret)
{
	struct estargz_layer L[4];
	struct estargz_opts o = { .merge = merge, .validate = true };
	struct estargz *es = NULL;

	for (size_t i = 0; i < n; i++) {
		static const char *ids[] = { "l0", "l1", "l2", "l3" };

		L[i] = (struct estargz_layer){ .blob_id = ids[i], .blob_size = 1 << 30, .kind = ESTARGZ_GZIP,
					       .toc_json = tocs[i], .toc_len = strlen(tocs[i]), .toc_offset = 1 << 14 };
	}
	*ret = estargz_open(L, n, &o, &es);
	return es;
}

#define E_REG(name, off) "{\"name\":\"" name "\",\"type\":\"reg\",\"size\":5,\"offset\":" #off ",\"mode\":420}"
#define E_DIR(name, mode) "{\"name\":\"" name "\",\"type\":\"dir\",\"mode\":" #mode "}"
#define E_EMPTY(name) "{\"name\":\"" name "\",\"type\":\"reg\",\"mode\":420}"
#define TOC(...) "{\"version\":1,\"entries\":[" __VA_ARGS__ "]}"

static void test_merge(void)
{
	const char *l0 = TOC(E_DIR("etc/", 493) "," E_REG("etc/passwd", 100) "," E_REG("etc/group", 200) ","
			     E_DIR("opt/", 493) "," E_REG("opt/a", 300) "," E_DIR("opt/sub/", 493) ","
			     E_REG("opt/sub/b", 400) "," E_REG("file-then-dir", 500) "," E_DIR("dir-then-file/", 493)
			     "," E_REG("dir-then-file/x", 600) "," E_REG("keep", 700));
	const char *l1 = TOC(E_EMPTY("etc/.wh.group") "," E_DIR("etc/", 448) "," E_DIR("opt/", 493) ","
			     E_EMPTY("opt/.wh..wh..opq") "," E_REG("opt/new", 100) "," E_REG("opt/sub/c", 200) ","
			     E_REG("file-then-dir/y", 300) "," E_REG("dir-then-file", 400) ","
			     E_EMPTY(".wh.missing") "," E_REG("keep", 500) ","
			     "{\"name\":\"keep-link\",\"type\":\"hardlink\",\"linkName\":\"keep\"}");
	const char *l2 = TOC("{\"name\":\"bad-link\",\"type\":\"hardlink\",\"linkName\":\"etc/passwd\"}");
	const char *tocs[3] = { l0, l1, l2 };
	struct img_attr a, b;
	struct estargz *es;
	struct image *img;
	int ret;

	es = open_json_layers(tocs, 2, true, &ret);
	T_EQ_INT(ret, 0);
	if (es) {
		img = estargz_image(es);
		T_EQ_INT(resolve(img, "/etc/passwd", &a), 0);
		T_EQ_INT(resolve(img, "/etc/group", &a), -ENOENT);        /* whited out */
		T_EQ_INT(resolve(img, "/etc/.wh.group", &a), -ENOENT);
		T_EQ_INT(resolve(img, "/etc", &a), 0);
		T_EQ_INT(a.mode, S_IFDIR | 0700);                          /* upper dir metadata wins */
		T_EQ_INT(resolve(img, "/opt/a", &a), -ENOENT);             /* opaque: lower children gone */
		T_EQ_INT(resolve(img, "/opt/sub/b", &a), -ENOENT);
		T_EQ_INT(resolve(img, "/opt/sub/c", &a), 0);               /* upper ones stay */
		T_EQ_INT(resolve(img, "/opt/new", &a), 0);
		T_EQ_INT(resolve(img, "/opt/.wh..wh..opq", &a), -ENOENT);
		T_EQ_INT(img->ops->getxattr(img, a.ino, "trusted.overlay.opaque", NULL, 0), -ENODATA);
		T_EQ_INT(resolve(img, "/file-then-dir", &a), 0);
		T_EQ_INT(a.mode & S_IFMT, S_IFDIR);
		T_EQ_INT(resolve(img, "/file-then-dir/y", &a), 0);
		T_EQ_INT(resolve(img, "/dir-then-file", &a), 0);
		T_EQ_INT(a.mode & S_IFMT, S_IFREG);
		T_EQ_INT(resolve(img, "/dir-then-file/x", &a), -ENOTDIR);
		T_EQ_INT(resolve(img, "/keep", &a), 0);
		T_EQ_INT(resolve(img, "/keep-link", &b), 0);
		T_EQ_U64(a.ino, b.ino);                                    /* the upper keep */
		T_EQ_INT(a.nlink, 2);
		{
			struct chunk_list cl = { .n = 0 };

			img->ops->chunks(img, a.ino, collect_chunk, &cl);
			T_EQ_INT(cl.n, 1);
			T_EQ_INT(cl.c[0].blob_index, 1);
			T_EQ_U64(cl.c[0].compressed_offset, 500);
		}
		estargz_close(es);
	}
	/* a hardlink to a lower layer's file: hardlinks resolve within their own layer */
	log_capture();
	es = open_json_layers(tocs, 3, true, &ret);
	T_EQ_INT(ret, -EFSCORRUPTED);
	T_ASSERT(strstr(log_text(), "layer l2: entry 0: hardlink \"bad-link\" -> \"etc/passwd\": the target is not an earlier entry of this layer"));
	estargz_close(es);
	/* several layers need merge */
	es = open_json_layers(tocs, 2, false, &ret);
	T_EQ_INT(ret, -EINVAL);
	/* duplicate names in one layer: the later wins */
	{
		const char *d = TOC(E_REG("dup", 100) "," E_DIR("dup/", 448) "," E_REG("dup/in", 300) ","
				    "{\"name\":\"dup2\",\"type\":\"symlink\",\"linkName\":\"x\"},"
				    "{\"name\":\"dup2\",\"type\":\"symlink\",\"linkName\":\"yy\"}");
		char buf[8];

		es = open_json_layers(&d, 1, false, &ret);
		T_EQ_INT(ret, 0);
		if (es) {
			img = estargz_image(es);
			T_EQ_INT(resolve(img, "/dup", &a), 0);
			T_EQ_INT(a.mode, S_IFDIR | 0700);
			T_EQ_INT(resolve(img, "/dup/in", &a), 0);
			T_EQ_INT(resolve(img, "/dup2", &a), 0);
			T_EQ_INT(img->ops->readlink(img, a.ino, buf, sizeof(buf)), 2);
			estargz_close(es);
		}
	}
}

/* ---- I: the catalogue of malformed inputs ---- */

static int errno_named(const char *s)
{
	static const struct { const char *n; int e; } t[] = {
		{ "EFSCORRUPTED", EFSCORRUPTED }, { "EMEDIUMTYPE", EMEDIUMTYPE }, { "EOPNOTSUPP", EOPNOTSUPP },
		{ "EFBIG", EFBIG }, { "EBADMSG", EBADMSG }, { "EINVAL", EINVAL }, { "OK", 0 },
	};

	for (size_t i = 0; i < LZ_ARRAY_SIZE(t); i++)
		if (!strcmp(s, t[i].n))
			return -t[i].e;
	return 1;
}

static char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n'))
		*--e = 0;
	return s;
}

struct read_walk {
	struct image *img;
	int first_err;
	char path[256];
};

static int read_walk_fn(void *arg, const char *path, const struct img_attr *a)
{
	struct read_walk *w = arg;
	ssize_t err;
	uint8_t *d;

	if (!S_ISREG(a->mode) || !a->size)
		return 0;
	d = read_all(w->img, a, &err);
	free(d);
	if (err && !w->first_err) {
		w->first_err = (int)err;
		snprintf(w->path, sizeof(w->path), "%s", path);
	}
	return 0;
}

/* one case: run the stage on the file; return the errno (0 ok) */
static int run_stage(const char *stage, const char *path)
{
	size_t len;
	uint8_t *buf = slurp(path, &len);
	struct estargz_footer f;
	struct estargz *es = NULL;
	char *json = NULL;
	size_t jlen;
	int ret;

	if (!buf)
		return 1;
	if (!strcmp(stage, "footer")) {
		size_t tl = LZ_MIN(len, (size_t)ESTARGZ_TAIL_MAX);

		ret = estargz_footer_parse(buf + len - tl, tl, len, &f);
	} else if (!strcmp(stage, "member") || !strcmp(stage, "zmember")) {
		f = (struct estargz_footer){ .kind = stage[0] == 'z' ? ESTARGZ_ZSTD_CHUNKED : ESTARGZ_GZIP,
					     .toc_size = len, .toc_usize = 1 << 20 };
		if (stage[0] == 'z' && len >= 4) {
			/* zmember files start with the claimed uncompressed size (le32) */
			f.toc_usize = lz_get_le32(buf);
			memmove(buf, buf + 4, len - 4);
			len -= 4;
		}
		ret = estargz_toc_decode(&f, buf, len, &json, &jlen);
	} else if (!strcmp(stage, "json") || !strcmp(stage, "layer")) {
		struct estargz_layer L = { .blob_id = "bad", .blob_size = 1 << 20, .kind = ESTARGZ_GZIP,
					   .toc_json = (char *)buf, .toc_len = len, .toc_offset = 1 << 19 };
		struct estargz_opts o = { .merge = stage[0] == 'j', .validate = true };

		ret = estargz_open(&L, 1, &o, &es);
	} else if (!strcmp(stage, "blob")) {
		struct estargz_opts o = { .merge = true, .validate = true };

		ret = estargz_open_file(path, &o, &es);
		if (!ret) {
			struct read_walk w = { .img = estargz_image(es) };

			ret = imgfs_walk(w.img, read_walk_fn, &w);
			if (!ret)
				ret = w.first_err;
		}
	} else {
		T_FAIL("unknown stage %s", stage);
		ret = 1;
	}
	estargz_close(es);
	free(json);
	free(buf);
	return ret;
}

static void test_catalogue(void)
{
	const char *top = getenv("TOP");
	char dir[4096], path[4200], line[1024];
	FILE *cat;
	int ncase = 0, nbad = 0;

	snprintf(dir, sizeof(dir), "%s/tests/bad/stargz", top ? top : ".");
	snprintf(path, sizeof(path), "%s/CATALOGUE", dir);
	cat = fopen(path, "r");
	if (!cat) {
		T_FAIL("no catalogue at %s", path);
		return;
	}
	while (fgets(line, sizeof(line), cat)) {
		char *f[4], *s = line, *name, *want_msg;
		int want, got, k = 0;
		const char *log;

		if (line[0] == '#' || line[0] == '\n')
			continue;
		/* name | stage | expected errno | expected message */
		for (; k < 4 && s; k++) {
			f[k] = s;
			s = k < 3 ? strstr(s, " | ") : NULL;
			if (s) {
				*s = 0;
				s += 3;
			}
		}
		if (k != 4) {
			T_FAIL("malformed catalogue line: %s", line);
			continue;
		}
		name = trim(f[0]);
		want = errno_named(trim(f[2]));
		want_msg = trim(f[3]);
		snprintf(path, sizeof(path), "%s/%s", dir, name);
		log_capture();
		got = run_stage(trim(f[1]), path);
		log = log_text();
		ncase++;
		if (got != want) {
			nbad++;
			T_FAIL("bad/stargz/%s: %s gave %d (%s), want %s; log: %.300s", name, f[1], got,
			       lz_strerror(got), f[2], log);
		} else if (strcmp(want_msg, "-") && !strstr(log, want_msg)) {
			nbad++;
			T_FAIL("bad/stargz/%s: log lacks \"%s\"; it has: %.400s", name, want_msg, log);
		}
	}
	fclose(cat);
	printf("catalogue: %d cases, %d failed\n", ncase, nbad);
	T_ASSERT(ncase >= 40);
}

/* ---- J: a 100k-entry TOC: time and memory (printed) ---- */

static char *big_toc(unsigned n, size_t *len, uint64_t *end)
{
	size_t cap = (size_t)n * 512 + 4096, l = 0;
	char *s = malloc(cap);
	uint64_t off = 1000;

	l += (size_t)snprintf(s + l, cap - l, "{\n\t\"version\": 1,\n\t\"entries\": [\n");
	for (unsigned i = 0; i < n; i++) {
		if (i % 50 == 0) {
			l += (size_t)snprintf(s + l, cap - l,
					      "%s\t\t{\n\t\t\t\"name\": \"usr/share/d%05u/\",\n\t\t\t\"type\": \"dir\",\n\t\t\t\"modtime\": \"2024-01-02T03:04:05Z\",\n\t\t\t\"mode\": 16877\n\t\t}",
					      i ? ",\n" : "", i / 50);
			continue;
		}
		l += (size_t)snprintf(s + l, cap - l,
				      ",\n\t\t{\n\t\t\t\"name\": \"usr/share/d%05u/file-%07u.txt\",\n\t\t\t\"type\": \"reg\",\n\t\t\t\"size\": %u,\n\t\t\t\"modtime\": \"2024-01-02T03:04:05Z\",\n\t\t\t\"mode\": 420,\n\t\t\t\"uid\": 1000,\n\t\t\t\"gid\": 1000,\n\t\t\t\"offset\": %llu,\n\t\t\t\"digest\": \"sha256:96987ca5447a72e380c62b044fea4dd856bbb838edf3948334f90cd670960a59\",\n\t\t\t\"chunkDigest\": \"sha256:96987ca5447a72e380c62b044fea4dd856bbb838edf3948334f90cd670960a59\"\n\t\t}",
				      i / 50, i, 100 + i % 1000, (unsigned long long)off);
		off += 200 + i % 700;
	}
	l += (size_t)snprintf(s + l, cap - l, "\n\t]\n}\n");
	*len = l;
	*end = off;
	return s;
}

static long maxrss_kb(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_maxrss;
}

/* In a child (so the figures are this parse's alone): build the JSON, then open it. */
static int big_toc_bench(unsigned n, bool print_only)
{
	int pfd[2];
	pid_t pid;
	char out[512] = "";
	int status = 0;

	if (pipe(pfd))
		return 1;
	pid = fork();
	if (pid == 0) {
		size_t len;
		uint64_t end;
		char *json = big_toc(n, &len, &end);
		struct estargz_layer L = { .blob_id = "big", .blob_size = end + 100000, .kind = ESTARGZ_GZIP,
					   .toc_json = json, .toc_len = len, .toc_offset = end };
		struct estargz_opts o = { .merge = true, .validate = true };
		struct estargz_info info;
		struct estargz *es = NULL;
		long rss0 = maxrss_kb(), rss1;
		double t0 = now_s(), t1;
		int ret = estargz_open(&L, 1, &o, &es);
		char line[512];

		t1 = now_s();
		rss1 = maxrss_kb();
		if (ret || !es)
			_exit(2);
		estargz_get_info(es, &info);
		snprintf(line, sizeof(line),
			 "big TOC: %u entries, %.1f MiB of JSON: parse+build %.1f ms (%.0f entries/s), peak RSS +%.1f MiB over the JSON buffer (%.1f MiB total); %llu inodes %llu dirs\n",
			 n, len / 1048576.0, (t1 - t0) * 1e3, n / (t1 - t0), (rss1 - rss0) / 1024.0, rss1 / 1024.0,
			 (unsigned long long)info.inodes, (unsigned long long)info.dirs);
		if (write(pfd[1], line, strlen(line)) < 0)
			_exit(3);
		/* the facts, checked: every entry became an inode (+ root, usr, usr/share implicit) */
		_exit(info.inodes == n + 3 && info.dirs == n / 50 + 3 ? 0 : 4);
	}
	close(pfd[1]);
	if (read(pfd[0], out, sizeof(out) - 1) < 0)
		out[0] = 0;
	close(pfd[0]);
	waitpid(pid, &status, 0);
	printf("%s", out);
	if (!print_only)
		T_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

/* ---- K: libdeflate vs zlib on the same chunk members (printed) ---- */

static void inflate_bench(void)
{
	enum { C = 4 << 20, N = 4 };
	struct gen g = { 0 };
	struct mem_blob mb;
	uint8_t *data = malloc((size_t)C * N), *out = malloc(C);
	uint64_t toc_off;
	struct estargz *es;
	double t[2] = { 0, 0 };

	fill_pattern(data, (size_t)C * N, 9);
	gfile(&g, "big", data, (size_t)C * N, C);
	gfinish(&g, &toc_off);
	/* no digest checks: the figure is the inflater's (the bytes are compared below anyway) */
	es = gopen(&g, &mb, NULL, false);
	if (!es)
		goto out;
	for (int round = 0; round < 3; round++) {
		for (int z = 0; z < 2; z++) {
			struct estargz_stats st;
			struct img_chunk c;
			struct chunk_list cl = { .n = 0 };
			struct img_attr a;
			double t0;

			estargz_set_inflater(z);
			resolve(estargz_image(es), "/big", &a);
			estargz_image(es)->ops->chunks(estargz_image(es), a.ino, collect_chunk, &cl);
			t0 = now_s();
			for (int i = 0; i < cl.n; i++) {
				c = cl.c[i];
				T_EQ_INT(estargz_read_chunk(es, &c, out), 0);
				T_ASSERT(!memcmp(out, data + (size_t)i * C, C));
			}
			t[z] += now_s() - t0;
			estargz_get_stats(es, &st);
		}
	}
	estargz_set_inflater(false);
	printf("inflate of %d x 4 MiB chunks, 3 rounds: libdeflate %.0f MB/s, zlib %.0f MB/s\n", N,
	       3.0 * N * C / t[0] / 1e6, 3.0 * N * C / t[1] / 1e6);
	estargz_close(es);
out:
	free(data);
	free(out);
	free(g.blob);
	free(g.toc);
}

/* ---- L: concurrent readers of one image (slots, per-thread scratch) ---- */

struct conc {
	struct image *img;
	uint64_t ino;
	const uint8_t *want;
	size_t len;
	int bad;
};

static void *conc_reader(void *arg)
{
	struct conc *c = arg;
	uint8_t buf[3000];

	for (int round = 0; round < 200; round++) {
		uint64_t off = ((uint64_t)round * 7919) % c->len;
		ssize_t n = c->img->ops->read(c->img, c->ino, buf, sizeof(buf), off);

		if (n < 0 || (size_t)n != LZ_MIN(sizeof(buf), c->len - off) || memcmp(buf, c->want + off, (size_t)n))
			__atomic_add_fetch(&c->bad, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

static void test_concurrent(void)
{
	enum { C = 4096, N = 40000, T = 8 };
	struct gen g = { 0 };
	struct mem_blob mb;
	uint8_t *data = malloc(N);
	uint64_t toc_off;
	struct estargz *es;
	struct img_attr a;
	struct conc c = { 0 };
	pthread_t th[T];

	fill_pattern(data, N, 5);
	gfile(&g, "f", data, N, C);
	gfinish(&g, &toc_off);
	es = gopen(&g, &mb, NULL, true);
	if (es) {
		c.img = estargz_image(es);
		T_EQ_INT(resolve(c.img, "/f", &a), 0);
		c.ino = a.ino;
		c.want = data;
		c.len = N;
		for (int i = 0; i < T; i++)
			pthread_create(&th[i], NULL, conc_reader, &c);
		for (int i = 0; i < T; i++)
			pthread_join(th[i], NULL);
		T_EQ_INT(c.bad, 0);
		estargz_close(es);
	}
	free(data);
	free(g.blob);
	free(g.toc);
}

/* ---- M: a real FUSE mount of the synthetic blob (and a tampered copy) ---- */

static pid_t serve(const char *blob, bool merge, const char *mnt)
{
	int pfd[2];
	char ok = 0;
	pid_t pid;

	if (pipe(pfd))
		return -1;
	pid = fork();
	if (pid == 0) {
		struct estargz_opts o = { .merge = merge, .validate = true };
		struct imgfs_opts io = { .mountpoint = mnt, .fsname = "test-estargz" };
		struct estargz *es = NULL;
		struct imgfs *fs = NULL;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(pfd[0]);
		if (estargz_open_file(blob, &o, &es) || imgfs_mount(estargz_image(es), &io, &fs)) {
			ok = 0;
			(void)!write(pfd[1], &ok, 1);
			_exit(1);
		}
		ok = 1;
		(void)!write(pfd[1], &ok, 1);
		close(pfd[1]);
		imgfs_run(fs);
		imgfs_destroy(fs);
		estargz_close(es);
		_exit(0);
	}
	close(pfd[1]);
	if (read(pfd[0], &ok, 1) != 1 || !ok) {
		T_FAIL("cannot mount %s on %s", blob, mnt);
		close(pfd[0]);
		if (pid > 0)
			waitpid(pid, NULL, 0);
		return -1;
	}
	close(pfd[0]);
	return pid;
}

static void unserve(pid_t pid, const char *mnt)
{
	int st;

	if (umount2(mnt, MNT_DETACH))
		T_FAIL("umount %s: %s", mnt, strerror(errno));
	for (int i = 0; i < 100; i++) {
		if (waitpid(pid, &st, WNOHANG) == pid)
			return;
		usleep(50000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	T_FAIL("server of %s did not exit after the unmount", mnt);
}

static int file_digest(const char *path, char out[72], size_t *len)
{
	size_t n = 0, cap = 1 << 16;
	uint8_t *buf = malloc(cap);
	int fd = open(path, O_RDONLY), err = 0;
	ssize_t r;

	while (fd >= 0 && (r = read(fd, buf + n, cap - n)) > 0) {
		n += (size_t)r;
		if (n == cap)
			buf = realloc(buf, cap *= 2);
	}
	if (fd < 0 || r < 0)
		err = errno;
	if (fd >= 0)
		close(fd);
	sha256_str(buf, n, out);
	free(buf);
	*len = n;
	return err;
}

static void test_fuse(void)
{
	char mnt[] = "/tmp/lazyimg-esgz.XXXXXX", p[4200], dg[72], buf[64];
	struct stat st, st2;
	size_t len;
	pid_t pid;

	if (access("/dev/fuse", R_OK | W_OK)) {
		printf("note: no /dev/fuse: the FUSE part is skipped\n");
		return;
	}
	if (!mkdtemp(mnt)) {
		T_FAIL("mkdtemp");
		return;
	}
	pid = serve(t_fixture("estargz/synthetic.esgz"), false, mnt);
	if (pid > 0) {
		snprintf(p, sizeof(p), "%s/bin/hello", mnt);
		T_EQ_INT(file_digest(p, dg, &len), 0);
		T_EQ_U64(len, 2940);
		T_EQ_STR(dg, "sha256:96987ca5447a72e380c62b044fea4dd856bbb838edf3948334f90cd670960a59");
		snprintf(p, sizeof(p), "%s/usr/share/big.bin", mnt);
		T_EQ_INT(file_digest(p, dg, &len), 0);
		T_EQ_STR(dg, "sha256:425de2c988d34ad117a316549e729d2dbaeda6d41b346135b74d0b1b8c6433c2");
		T_EQ_INT(stat(p, &st), 0);
		T_EQ_INT(st.st_mode, S_IFREG | 0644);
		T_EQ_INT(st.st_mtime, 1704164645);
		snprintf(p, sizeof(p), "%s/usr/bin/hello-hard", mnt);
		T_EQ_INT(stat(p, &st), 0);
		snprintf(p, sizeof(p), "%s/bin/hello", mnt);
		T_EQ_INT(stat(p, &st2), 0);
		T_EQ_U64(st.st_ino, st2.st_ino);
		T_EQ_INT(st.st_nlink, 2);
		snprintf(p, sizeof(p), "%s/usr/bin/hello-link", mnt);
		T_EQ_INT(readlink(p, buf, sizeof(buf)), 15);
		snprintf(p, sizeof(p), "%s/etc/xattr-file", mnt);
		T_EQ_INT(lgetxattr(p, "user.fixture", buf, sizeof(buf)), 5);
		T_ASSERT(!memcmp(buf, "hello", 5));
		snprintf(p, sizeof(p), "%s/etc/hostname", mnt);
		T_EQ_INT(stat(p, &st), 0);
		T_EQ_INT(st.st_uid, 1000);
		snprintf(p, sizeof(p), "%s/var/removed", mnt);
		T_EQ_INT(lstat(p, &st), 0);
		T_ASSERT(S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0));
		snprintf(p, sizeof(p), "%s/dev/null", mnt);
		T_EQ_INT(lstat(p, &st), 0);
		T_ASSERT(S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3));
		snprintf(p, sizeof(p), "%s/opq", mnt);
		T_EQ_INT(lgetxattr(p, "trusted.overlay.opaque", buf, sizeof(buf)), 1);
		snprintf(p, sizeof(p), "%s/.prefetch.landmark", mnt);
		T_ASSERT(lstat(p, &st) < 0 && errno == ENOENT);
		{
			DIR *d = opendir(mnt);
			struct dirent *de;
			int n = 0;

			while (d && (de = readdir(d)))
				n += de->d_name[0] != '.';
			if (d)
				closedir(d);
			T_EQ_INT(n, 7);   /* bin dev etc opq run usr var */
		}
		unserve(pid, mnt);
	}
	/* a flipped byte in big.bin's second chunk: EIO for that file, the rest reads */
	{
		char copy[] = "/tmp/lazyimg-esgz-blob.XXXXXX";
		size_t blen;
		uint8_t *blob = slurp(t_fixture("estargz/synthetic.esgz"), &blen);
		int fd = mkstemp(copy);

		if (blob && fd >= 0) {
			blob[17121 + 300] ^= 0x01;
			T_EQ_INT(write(fd, blob, blen), (ssize_t)blen);
			close(fd);
			pid = serve(copy, true, mnt);
			if (pid > 0) {
				snprintf(p, sizeof(p), "%s/usr/share/big.bin", mnt);
				T_EQ_INT(file_digest(p, dg, &len), EIO);
				snprintf(p, sizeof(p), "%s/bin/hello", mnt);
				T_EQ_INT(file_digest(p, dg, &len), 0);
				snprintf(p, sizeof(p), "%s/opq/kept", mnt);
				T_EQ_INT(file_digest(p, dg, &len), 0);
				T_EQ_STR(dg, "sha256:a5d0ddd10b13f2e873a52c7d5a3fed1e8f06ea21405826f94a27d6c0c2b84372");
				unserve(pid, mnt);
			}
		}
		if (fd >= 0)
			unlink(copy);
		free(blob);
	}
	rmdir(mnt);
}

/*
 * `test_estargz serve BLOB MNT [layer]`: print the TOC digest, mount BLOB
 * (merged view, or the layer as it is) on MNT through imgfs, print "ready",
 * serve until unmounted. For tests/integration/21-estargz-go.sh.
 */
static int serve_main(const char *blob, const char *mnt, bool merge)
{
	struct estargz_opts o = { .merge = merge, .validate = true };
	struct imgfs_opts io = { .mountpoint = mnt, .fsname = "test-estargz" };
	struct estargz_footer f;
	struct estargz *es = NULL;
	struct imgfs *fs = NULL;
	size_t len, jlen;
	uint8_t *b = slurp(blob, &len);
	char *json = NULL, dg[72];
	int ret;

	if (!b)
		return 1;
	ret = estargz_footer_parse(b + len - LZ_MIN(len, (size_t)ESTARGZ_TAIL_MAX), LZ_MIN(len, (size_t)ESTARGZ_TAIL_MAX),
				   len, &f);
	if (!ret)
		ret = estargz_toc_decode(&f, b + f.toc_offset, f.toc_size, &json, &jlen);
	free(b);
	if (ret)
		return 1;
	estargz_toc_digest(json, jlen, dg);
	free(json);
	printf("toc %s kind %d\n", dg, f.kind);
	if (estargz_open_file(blob, &o, &es) || imgfs_mount(estargz_image(es), &io, &fs)) {
		estargz_close(es);
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	ret = imgfs_run(fs);
	imgfs_destroy(fs);
	estargz_close(es);
	return ret ? 1 : 0;
}

/* `test_estargz serve-merged MNT BLOB...`: the blobs as layers (first = lowest), merged. */
struct fd_blobs {
	int fd[ESTARGZ_MAX_LAYERS];
};

static int fd_read(void *ctx, unsigned bi, const char *id, void *buf, size_t len, uint64_t off)
{
	struct fd_blobs *fb = ctx;
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fb->fd[bi], (uint8_t *)buf + done, len - done, (off_t)(off + done));

		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		done += (size_t)n;
	}
	return 0;
}

static const struct img_backend_ops fd_backend = { .read = fd_read };

static int serve_merged_main(const char *mnt, char **blobs, int n)
{
	static struct fd_blobs fb;
	struct estargz_opts o = { .merge = true, .validate = true, .backend = &fd_backend, .backend_ctx = &fb };
	struct imgfs_opts io = { .mountpoint = mnt, .fsname = "test-estargz" };
	struct estargz_layer L[8];
	char *json[8] = { 0 }, ids[8][65];
	struct estargz *es = NULL;
	struct imgfs *fs = NULL;
	int ret = 1;

	if (n < 1 || n > 8)
		return 2;
	for (int i = 0; i < n; i++) {
		struct estargz_footer f;
		size_t len, jlen, tl;
		uint8_t *b = slurp(blobs[i], &len);

		if (!b)
			return 1;
		tl = LZ_MIN(len, (size_t)ESTARGZ_TAIL_MAX);
		if (estargz_footer_parse(b + len - tl, tl, len, &f) ||
		    estargz_toc_decode(&f, b + f.toc_offset, f.toc_size, &json[i], &jlen)) {
			free(b);
			return 1;
		}
		{
			char dg[72];

			sha256_str(b, len, dg);
			memcpy(ids[i], dg + 7, 65);
		}
		free(b);
		fb.fd[i] = open(blobs[i], O_RDONLY | O_CLOEXEC);
		L[i] = (struct estargz_layer){ .blob_id = ids[i], .blob_size = len, .kind = f.kind,
					       .toc_json = json[i], .toc_len = jlen, .toc_offset = f.toc_offset };
	}
	if (!estargz_open(L, (size_t)n, &o, &es) && !imgfs_mount(estargz_image(es), &io, &fs)) {
		printf("ready\n");
		fflush(stdout);
		ret = imgfs_run(fs) ? 1 : 0;
		imgfs_destroy(fs);
	}
	estargz_close(es);
	for (int i = 0; i < n; i++)
		free(json[i]);
	return ret;
}

int main(int argc, char **argv)
{
	if (argc >= 4 && !strcmp(argv[1], "serve-merged"))
		return serve_merged_main(argv[2], argv + 3, argc - 3);
	if (argc >= 4 && !strcmp(argv[1], "serve"))
		return serve_main(argv[2], argv[3], !(argc > 4 && !strcmp(argv[4], "layer")));
	if (argc > 1 && !strcmp(argv[1], "bench"))
		return big_toc_bench(argc > 2 ? (unsigned)atoi(argv[2]) : 100000, true);
	test_footers();
	test_toc_decode();
	test_legacy_index();
	test_sample();
	check_synthetic("estargz/synthetic.esgz", true);
	check_synthetic("estargz/synthetic.esgz", false);
	check_synthetic("estargz/synthetic-legacy-footer.stargz", true);
	test_tamper();
	test_generated(false);
	test_generated(true);
	test_merge();
	test_catalogue();
	test_concurrent();
	test_fuse();
	big_toc_bench(100000, false);
	inflate_bench();
	T_DONE();
}
