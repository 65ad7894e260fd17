/* SPDX-License-Identifier: Apache-2.0 */
#define LZ_MOD "convert"
#include "build_int.h"
#include "lazyimg/tar.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>
#include <openssl/evp.h>

/* ---------- tree ---------- */

struct bnode *bnode_new(struct builder *b, struct bnode *parent, const char *name, size_t len)
{
	struct bnode *n;

	if (b->nentries >= RAFS_BUILD_MAX_ENTRIES) {
		lz_err("more than %u entries", RAFS_BUILD_MAX_ENTRIES);
		return NULL;
	}
	n = lz_calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	n->name = strndup(name, len);
	if (!n->name) {
		free(n);
		return NULL;
	}
	n->name_len = (uint16_t)len;
	n->parent = parent;
	b->nentries++;
	return n;
}

static int name_cmp(const char *a, size_t al, const char *b2, size_t bl)
{
	int c = memcmp(a, b2, LZ_MIN(al, bl));

	return c ? c : (al < bl ? -1 : al > bl);
}

static int kid_cmp(const void *x, const void *y)
{
	const struct bnode *a = *(struct bnode *const *)x, *c = *(struct bnode *const *)y;

	return name_cmp(a->name, a->name_len, c->name, c->name_len);
}

void bnode_sort(struct bnode *n)
{
	if (!n->kids_sorted && n->nkids > 1)
		qsort(n->kids, n->nkids, sizeof(*n->kids), kid_cmp);
	n->kids_sorted = true;
}

struct bnode *bnode_find(struct bnode *dir, const char *name, size_t len)
{
	if (dir->kids_sorted) {
		uint32_t lo = 0, hi = dir->nkids;

		while (lo < hi) {
			uint32_t mid = lo + (hi - lo) / 2;
			int c = name_cmp(name, len, dir->kids[mid]->name, dir->kids[mid]->name_len);

			if (!c)
				return dir->kids[mid];
			if (c < 0)
				hi = mid;
			else
				lo = mid + 1;
		}
		return NULL;
	}
	for (uint32_t i = 0; i < dir->nkids; i++)
		if (!name_cmp(name, len, dir->kids[i]->name, dir->kids[i]->name_len))
			return dir->kids[i];
	return NULL;
}

int bnode_add_kid(struct bnode *dir, struct bnode *kid)
{
	if (dir->nkids == dir->kcap) {
		uint32_t nc = dir->kcap ? dir->kcap * 2 : 4;
		struct bnode **nk = lz_realloc(dir->kids, nc * sizeof(*nk));

		if (!nk)
			return -ENOMEM;
		dir->kids = nk;
		dir->kcap = nc;
	}
	/* keep sorted directories sorted: inserting costs a memmove, lookups stay O(log n) */
	if (dir->kids_sorted && dir->nkids) {
		uint32_t lo = 0, hi = dir->nkids;

		while (lo < hi) {
			uint32_t mid = lo + (hi - lo) / 2;

			if (name_cmp(kid->name, kid->name_len, dir->kids[mid]->name, dir->kids[mid]->name_len) < 0)
				hi = mid;
			else
				lo = mid + 1;
		}
		memmove(dir->kids + lo + 1, dir->kids + lo, (dir->nkids - lo) * sizeof(*dir->kids));
		dir->kids[lo] = kid;
	} else {
		dir->kids[dir->nkids] = kid;
	}
	dir->nkids++;
	kid->parent = dir;
	return 0;
}

void bnode_remove_kid(struct bnode *dir, struct bnode *kid)
{
	for (uint32_t i = 0; i < dir->nkids; i++) {
		if (dir->kids[i] == kid) {
			memmove(dir->kids + i, dir->kids + i + 1, (dir->nkids - i - 1) * sizeof(*dir->kids));
			dir->nkids--;
			return;
		}
	}
}

int bx_add(struct bnode *n, const char *name, const void *val, size_t len)
{
	struct bx *nx;

	if (strlen(name) > 255 || len > 65535) {
		lz_err("xattr %s: name or value too long", name);
		return -E2BIG;
	}
	for (uint32_t i = 0; i < n->nx; i++) {
		if (!strcmp(n->xattrs[i].name, name)) {
			uint8_t *v = lz_malloc(len ? len : 1);

			if (!v)
				return -ENOMEM;
			memcpy(v, val, len);
			free(n->xattrs[i].value);
			n->xattrs[i].value = v;
			n->xattrs[i].len = (uint32_t)len;
			return 0;
		}
	}
	nx = lz_realloc(n->xattrs, (n->nx + 1) * sizeof(*nx));
	if (!nx)
		return -ENOMEM;
	n->xattrs = nx;
	nx[n->nx].name = strdup(name);
	nx[n->nx].value = lz_malloc(len ? len : 1);
	if (!nx[n->nx].name || !nx[n->nx].value) {
		free(nx[n->nx].name);
		free(nx[n->nx].value);
		return -ENOMEM;
	}
	memcpy(nx[n->nx].value, val, len);
	nx[n->nx].len = (uint32_t)len;
	n->nx++;
	return 0;
}

static void bnode_free(struct bnode *n)
{
	for (uint32_t i = 0; i < n->nkids; i++)
		bnode_free(n->kids[i]);
	for (uint32_t i = 0; i < n->nx; i++) {
		free(n->xattrs[i].name);
		free(n->xattrs[i].value);
	}
	if (n->data && n->data->owner == n) {
		/* freed by whoever owns it last; owner marks the allocation */
	}
	free(n->xattrs);
	free(n->kids);
	free(n->name);
	free(n->target);
	free(n);
}

/* bdata objects are tracked separately because links share them */
struct bdata_list {
	struct bdata **v;
	size_t n, cap;
};
static _Thread_local struct bdata_list tl_datas;

struct bdata *rafs_bdata_new(void)
{
	struct bdata *d = lz_calloc(1, sizeof(*d));

	if (!d)
		return NULL;
	if (tl_datas.n == tl_datas.cap) {
		size_t nc = tl_datas.cap ? 2 * tl_datas.cap : 256;
		struct bdata **nv = lz_realloc(tl_datas.v, nc * sizeof(*nv));

		if (!nv) {
			free(d);
			return NULL;
		}
		tl_datas.v = nv;
		tl_datas.cap = nc;
	}
	tl_datas.v[tl_datas.n++] = d;
	return d;
}

void builder_free(struct builder *b)
{
	if (b->root)
		bnode_free(b->root);
	for (size_t i = 0; i < b->ndead; i++)
		bnode_free(b->dead[i]);
	free(b->dead);
	for (size_t i = 0; i < tl_datas.n; i++) {
		free(tl_datas.v[i]->chunks);
		free(tl_datas.v[i]);
	}
	free(tl_datas.v);
	memset(&tl_datas, 0, sizeof(tl_datas));
	free(b->chunks);
	free(b->dedup);
	free(b->blobs);
	free(b->cbuf);
	free(b->rbuf);
	free(b->prefetch);
	if (b->sha)
		EVP_MD_CTX_free(b->sha);
	if (b->blob_fd >= 0)
		close(b->blob_fd);
}

int builder_bury(struct builder *b, struct bnode *n)
{
	struct bnode **nd = lz_realloc(b->dead, (b->ndead + 1) * sizeof(*nd));

	if (!nd) {
		bnode_free(n);
		return -ENOMEM;
	}
	b->dead = nd;
	nd[b->ndead++] = n;
	return 0;
}

struct bnode *bnode_lookup_path(struct bnode *root, const char *path)
{
	struct bnode *n = root;
	const char *p = path;

	while (*p) {
		const char *e;

		while (*p == '/')
			p++;
		if (!*p)
			break;
		e = strchr(p, '/');
		if (!e)
			e = p + strlen(p);
		if (!S_ISDIR(n->mode))
			return NULL;
		n = bnode_find(n, p, (size_t)(e - p));
		if (!n)
			return NULL;
		p = e;
	}
	return n;
}

/* ---------- progress ---------- */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void progress(struct builder *b, bool final)
{
	uint64_t t = now_ns();
	double secs;

	if (!b->o.progress || (!final && t - b->last_progress_ns < 200000000ull))
		return;
	b->last_progress_ns = t;
	secs = (double)(t - b->start_ns) / 1e9;
	fprintf(stderr, "\r  %llu entries, %llu files, %.1f MiB in, %.1f MiB/s, %llu chunks (%llu deduplicated)%s",
		(unsigned long long)b->nentries, (unsigned long long)b->res.files,
		(double)b->res.bytes_in / 1048576.0,
		secs > 0 ? (double)b->res.bytes_in / 1048576.0 / secs : 0.0,
		(unsigned long long)b->nchunks, (unsigned long long)b->res.dedup_chunks,
		final ? "\n" : "");
}

/* ---------- chunks and the blob ---------- */

static int write_blob(struct builder *b, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	size_t done = 0;

	while (done < len) {
		ssize_t n = write(b->blob_fd, p + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			lz_err("cannot write the data blob: %s", strerror(errno));
			return -errno;
		}
		done += (size_t)n;
	}
	EVP_DigestUpdate(b->sha, buf, len);
	b->blob_off += len;
	return 0;
}

static int pad_blob(struct builder *b, uint64_t to)
{
	static const uint8_t zeros[4096];

	while (b->blob_off < to) {
		int ret = write_blob(b, zeros, (size_t)LZ_MIN(to - b->blob_off, (uint64_t)sizeof(zeros)));

		if (ret)
			return ret;
	}
	return 0;
}

static uint32_t dg_hash(const uint8_t *d)
{
	return lz_get_le32(d);
}

static uint32_t chunk_dg_hash(const struct bchunk *c)
{
	return dg_hash(c->digest);
}

int builder_dedup_grow(struct builder *b, uint32_t (*key)(const struct bchunk *c))
{
	uint32_t nc = b->dcap ? b->dcap * 2 : 4096;
	uint32_t *nd = lz_calloc(nc, sizeof(*nd));

	if (!nd)
		return -ENOMEM;
	for (uint32_t i = 0; i < b->dcap; i++) {
		uint32_t v = b->dedup[i], h;

		if (!v)
			continue;
		for (h = key(&b->chunks[v - 1]) & (nc - 1); nd[h]; h = (h + 1) & (nc - 1))
			;
		nd[h] = v;
	}
	free(b->dedup);
	b->dedup = nd;
	b->dcap = nc;
	return 0;
}

struct bchunk *builder_chunk_slot(struct builder *b)
{
	struct bchunk *c;

	if (b->nchunks == b->ccap) {
		uint32_t nc = b->ccap ? b->ccap * 2 : 1024;
		struct bchunk *n = lz_realloc(b->chunks, nc * sizeof(*n));

		if (!n)
			return NULL;
		b->chunks = n;
		b->ccap = nc;
	}
	c = &b->chunks[b->nchunks];
	memset(c, 0, sizeof(*c));
	return c;
}

/* Store one chunk of file data (or find its twin); returns the chunk id or an error. */
static int64_t add_chunk(struct builder *b, const uint8_t *data, uint32_t len)
{
	uint8_t dg[LZ_DIGEST_LEN];
	struct bchunk *c;
	uint32_t h;
	ssize_t clen = -ENOSPC;
	int ret;

	lz_digest(b->o.digester, data, len, dg);
	if (b->nchunks * 2 >= b->dcap) {
		ret = builder_dedup_grow(b, chunk_dg_hash);
		if (ret)
			return ret;
	}
	for (h = dg_hash(dg) & (b->dcap - 1); b->dedup[h]; h = (h + 1) & (b->dcap - 1)) {
		c = &b->chunks[b->dedup[h] - 1];
		if (!memcmp(c->digest, dg, sizeof(dg)) && c->usize == len) {
			b->res.dedup_chunks++;
			return b->dedup[h] - 1;
		}
	}
	if (b->nchunks >= RAFS_MAX_CHUNKS_PER_BLOB) {
		lz_err("more than %u chunks in one blob", RAFS_MAX_CHUNKS_PER_BLOB);
		return -EFBIG;
	}
	c = builder_chunk_slot(b);
	if (!c)
		return -ENOMEM;
	memcpy(c->digest, dg, sizeof(dg));
	c->usize = len;
	c->blob = 0;
	c->index = b->nchunks;
	if (b->o.compressor != LZ_COMP_NONE && !b->o.aligned)
		clen = lz_compress(b->o.compressor, data, len, b->cbuf, LZ_MIN(b->cbuf_cap, (size_t)len - 1 > 0 ? (size_t)len - 1 : 1),
				   b->o.level);
	if (b->o.aligned) {
		ret = pad_blob(b, LZ_ALIGN_UP(b->blob_off, 4096ull));
		if (ret)
			return ret;
	}
	c->coff = b->blob_off;
	if (clen > 0 && (size_t)clen < len) {
		c->compressed = true;
		c->csize = (uint32_t)clen;
		ret = write_blob(b, b->cbuf, (size_t)clen);
	} else {
		c->csize = len;
		ret = write_blob(b, data, len);
	}
	if (ret)
		return ret;
	if (b->o.fs_version == 6) {
		c->uoff = b->o.aligned ? c->coff : b->blob_uoff;
		b->blob_uoff = LZ_ALIGN_UP(c->uoff + len, 4096ull);
	} else {
		c->uoff = b->blob_uoff;
		b->blob_uoff += len;
	}
	b->dedup[h] = b->nchunks + 1;
	b->nchunks++;
	return c->index;
}

/* Read a file's content from `fd` (or the current tar entry) and chunk it. */
static int add_file_data(struct builder *b, struct bnode *n, int fd, struct lz_tar *tar)
{
	uint64_t left = n->size, nch = LZ_DIV_ROUND_UP(n->size, b->o.chunk_size);
	struct bdata *d;

	d = rafs_bdata_new();
	if (!d)
		return -ENOMEM;
	n->data = d;
	b->res.files++;
	if (!nch)
		return 0;
	if (nch > UINT32_MAX)
		return -EFBIG;
	d->chunks = lz_malloc(nch * sizeof(*d->chunks));
	if (!d->chunks)
		return -ENOMEM;
	while (left) {
		uint32_t want = (uint32_t)LZ_MIN(left, (uint64_t)b->o.chunk_size), got = 0;
		int64_t id;

		while (got < want) {
			ssize_t r = tar ? lz_tar_read(tar, b->rbuf + got, want - got) :
					  read(fd, b->rbuf + got, want - got);

			if (r < 0 && !tar && errno == EINTR)
				continue;
			if (r < 0)
				return tar ? (int)r : -errno;
			if (r == 0) {
				lz_err("%s: file shrank while being read (%llu bytes missing)", n->name,
				       (unsigned long long)(left - got));
				return -EIO;
			}
			got += (uint32_t)r;
		}
		id = add_chunk(b, b->rbuf, want);
		if (id < 0)
			return (int)id;
		d->chunks[d->nchunks++] = (uint32_t)id;
		left -= want;
		b->res.bytes_in += want;
		progress(b, false);
	}
	return 0;
}

/* ---------- directory source ---------- */

struct hl {
	dev_t dev;
	ino_t ino;
	struct bdata *data;
};

struct hlset {
	struct hl *v;
	size_t n, cap;
};

static struct hl *hl_find(struct hlset *hs, const struct stat *st)
{
	for (size_t j = 0; j < hs->n; j++)
		if (hs->v[j].dev == st->st_dev && hs->v[j].ino == st->st_ino)
			return &hs->v[j];
	return NULL;
}

static int hl_add(struct hlset *hs, const struct stat *st, struct bdata *d)
{
	if (hs->n == hs->cap) {
		size_t nc = hs->cap ? hs->cap * 2 : 64;
		struct hl *nv = lz_realloc(hs->v, nc * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		hs->v = nv;
		hs->cap = nc;
	}
	hs->v[hs->n++] = (struct hl){ st->st_dev, st->st_ino, d };
	return 0;
}

static int read_xattrs(struct bnode *n, const char *path)
{
	char names[65536];
	ssize_t nl = llistxattr(path, names, sizeof(names));

	if (nl < 0)
		return errno == ENOTSUP ? 0 : -errno;
	for (ssize_t p = 0; p < nl; p += (ssize_t)strlen(names + p) + 1) {
		uint8_t val[65536];
		ssize_t vl = lgetxattr(path, names + p, val, sizeof(val));
		int ret;

		if (vl < 0) {
			if (errno == ENODATA)
				continue;
			lz_err("%s: cannot read xattr %s: %s", path, names + p, strerror(errno));
			return -errno;
		}
		ret = bx_add(n, names + p, val, (size_t)vl);
		if (ret)
			return ret;
	}
	return 0;
}

static int fill_from_stat(struct bnode *n, const struct stat *st)
{
	n->mode = st->st_mode;
	n->uid = st->st_uid;
	n->gid = st->st_gid;
	n->mtime = st->st_mtim.tv_sec;
	n->mtime_nsec = (uint32_t)st->st_mtim.tv_nsec;
	n->size = S_ISREG(st->st_mode) ? (uint64_t)st->st_size : 0;
	if (S_ISCHR(st->st_mode) || S_ISBLK(st->st_mode)) {
		n->rmajor = major(st->st_rdev);
		n->rminor = minor(st->st_rdev);
		if (n->rmajor > 0xfff || n->rminor > 0xfffff) {
			lz_err("%s: device %u:%u does not fit the on-disk encoding", n->name, n->rmajor,
			       n->rminor);
			return -EOVERFLOW;
		}
	}
	return 0;
}

static int scan_dir(struct builder *b, struct bnode *dirn, char *path, size_t plen, struct hlset *hs,
		    int depth)
{
	struct dirent **list = NULL;
	int n, ret = 0;

	if (depth > 4096) {
		lz_err("%s: directory tree too deep", path);
		return -ELOOP;
	}
	n = scandir(path, &list, NULL, NULL);
	if (n < 0) {
		lz_err("cannot read directory %s: %s", path, strerror(errno));
		return -errno;
	}
	for (int i = 0; i < n && !ret; i++) {
		const char *nm = list[i]->d_name;
		size_t nl = strlen(nm);
		struct bnode *k;
		struct stat st;

		if (!strcmp(nm, ".") || !strcmp(nm, ".."))
			continue;
		if (nl > IMG_NAME_MAX || plen + 1 + nl >= 65536) {
			lz_err("%s/%s: name or path too long", path, nm);
			ret = -ENAMETOOLONG;
			break;
		}
		path[plen] = '/';
		memcpy(path + plen + 1, nm, nl + 1);
		if (lstat(path, &st) < 0) {
			lz_err("cannot stat %s: %s", path, strerror(errno));
			ret = -errno;
			break;
		}
		k = bnode_new(b, dirn, nm, nl);
		if (!k || bnode_add_kid(dirn, k)) {
			if (k)
				bnode_free(k);
			ret = -ENOMEM;
			break;
		}
		ret = fill_from_stat(k, &st);
		if (!ret)
			ret = read_xattrs(k, path);
		if (ret)
			break;
		if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode) && st.st_nlink > 1) {
			/* hard-linked symlinks, devices, fifos, sockets share one inode too */
			struct hl *h = hl_find(hs, &st);

			if (h) {
				k->data = h->data;
			} else {
				k->data = rafs_bdata_new();
				ret = k->data ? hl_add(hs, &st, k->data) : -ENOMEM;
				if (ret)
					break;
			}
		}
		if (S_ISLNK(st.st_mode)) {
			char t[RAFS_MAX_SYMLINK + 1];
			ssize_t tl = readlink(path, t, sizeof(t));

			if (tl <= 0 || tl > RAFS_MAX_SYMLINK) {
				lz_err("%s: cannot read symlink target (or longer than %d)", path, RAFS_MAX_SYMLINK);
				ret = -EINVAL;
				break;
			}
			k->target = strndup(t, (size_t)tl);
			if (!k->target)
				ret = -ENOMEM;
		} else if (S_ISREG(st.st_mode)) {
			struct hl *h = st.st_nlink > 1 ? hl_find(hs, &st) : NULL;

			if (h) {
				k->data = h->data;
			} else {
				int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

				if (fd < 0) {
					lz_err("cannot open %s: %s", path, strerror(errno));
					ret = -errno;
					break;
				}
				ret = add_file_data(b, k, fd, NULL);
				close(fd);
				if (!ret && st.st_nlink > 1)
					ret = hl_add(hs, &st, k->data);
			}
		} else if (S_ISDIR(st.st_mode)) {
			ret = scan_dir(b, k, path, plen + 1 + nl, hs, depth + 1);
		}
		path[plen] = 0;
	}
	for (int i = 0; i < n; i++)
		free(list[i]);
	free(list);
	return ret;
}

/* ---------- tar source ---------- */

/* Normalise a tar path: strip "./" and trailing "/", refuse absolute names and "..". */
static int tar_clean_path(const char *in, char *out, size_t cap)
{
	size_t o = 0;
	const char *p = in;

	if (*p == '/') {
		lz_err("tar entry %s: absolute path", in);
		return -EPERM;
	}
	while (*p) {
		const char *e = strchr(p, '/');
		size_t l = e ? (size_t)(e - p) : strlen(p);

		if (l == 2 && p[0] == '.' && p[1] == '.') {
			lz_err("tar entry %s: '..' component escapes the layer", in);
			return -EPERM;
		}
		if (l && !(l == 1 && p[0] == '.')) {
			if (l > IMG_NAME_MAX || o + l + 2 > cap) {
				lz_err("tar entry %s: name too long", in);
				return -ENAMETOOLONG;
			}
			if (o)
				out[o++] = '/';
			memcpy(out + o, p, l);
			o += l;
		}
		if (!e)
			break;
		p = e + 1;
	}
	out[o] = 0;
	return 0;
}

/* Find or create the parent chain of `path`; returns the parent and the leaf name. */
static int tar_parent(struct builder *b, char *path, struct bnode **parent, const char **leaf)
{
	struct bnode *d = b->root;
	char *p = path, *slash;

	while ((slash = strchr(p, '/'))) {
		struct bnode *k = bnode_find(d, p, (size_t)(slash - p));

		if (!k) {
			k = bnode_new(b, d, p, (size_t)(slash - p));
			if (!k)
				return -ENOMEM;
			k->mode = S_IFDIR | 0755;
			if (bnode_add_kid(d, k)) {
				bnode_free(k);
				return -ENOMEM;
			}
		} else if (!S_ISDIR(k->mode)) {
			lz_err("tar entry %s: %.*s is not a directory", path, (int)(slash - path), path);
			return -ENOTDIR;
		}
		d = k;
		p = slash + 1;
	}
	*parent = d;
	*leaf = p;
	return 0;
}

static int scan_tar(struct builder *b, int fd)
{
	struct lz_tar *t = NULL;
	struct lz_tar_entry e;
	char path[LZ_TAR_MAX_PATH + 2];
	int ret;

	ret = lz_tar_open_fd(fd, &t);
	if (ret)
		return ret;
	b->tar = t;
	while ((ret = lz_tar_next(t, &e)) == 1) {
		struct bnode *dir, *n;
		const char *leaf;

		ret = tar_clean_path(e.path, path, sizeof(path));
		if (ret)
			break;
		if (!path[0]) {
			/* "./": the root's own attributes */
			if (e.type == '5') {
				b->root->mode = S_IFDIR | e.mode;
				b->root->uid = e.uid;
				b->root->gid = e.gid;
				b->root->mtime = e.mtime;
				b->root->mtime_nsec = e.mtime_nsec;
			}
			continue;
		}
		ret = tar_parent(b, path, &dir, &leaf);
		if (ret)
			break;
		n = bnode_find(dir, leaf, strlen(leaf));
		if (n && !(S_ISDIR(n->mode) && e.type == '5')) {
			/* a later entry replaces an earlier one of the same name */
			bnode_remove_kid(dir, n);
			bnode_free(n);
			b->nentries--;
			n = NULL;
		}
		if (!n) {
			n = bnode_new(b, dir, leaf, strlen(leaf));
			if (!n || bnode_add_kid(dir, n)) {
				if (n)
					bnode_free(n);
				ret = -ENOMEM;
				break;
			}
		}
		n->uid = e.uid;
		n->gid = e.gid;
		n->mtime = e.mtime;
		n->mtime_nsec = e.mtime_nsec;
		for (size_t i = 0; i < e.nxattrs && !ret; i++)
			ret = bx_add(n, e.xattrs[i].name, e.xattrs[i].value, e.xattrs[i].len);
		if (ret)
			break;
		switch (e.type) {
		case '0':
			n->mode = S_IFREG | e.mode;
			n->size = e.size;
			ret = add_file_data(b, n, -1, t);
			break;
		case '1': {
			char tp[LZ_TAR_MAX_PATH + 2];
			struct bnode *target;

			ret = tar_clean_path(e.linkname, tp, sizeof(tp));
			if (ret)
				break;
			target = bnode_lookup_path(b->root, tp);
			if (!target || target == n) {
				lz_err("tar entry %s: hard link to %s, which is not earlier in the archive",
				       e.path, e.linkname);
				ret = -ENOENT;
				break;
			}
			if (S_ISDIR(target->mode)) {
				lz_err("tar entry %s: hard link to directory %s", e.path, e.linkname);
				ret = -EPERM;
				break;
			}
			if (!S_ISREG(target->mode)) {
				/* symlinks, devices and fifos share an inode like files do */
				if (!target->data && !(target->data = rafs_bdata_new())) {
					ret = -ENOMEM;
					break;
				}
				n->data = target->data;
				n->mode = target->mode;
				n->uid = target->uid;
				n->gid = target->gid;
				n->mtime = target->mtime;
				n->mtime_nsec = target->mtime_nsec;
				n->rmajor = target->rmajor;
				n->rminor = target->rminor;
				if (target->target && !(n->target = strdup(target->target)))
					ret = -ENOMEM;
				for (uint32_t i = 0; !ret && i < target->nx; i++)
					ret = bx_add(n, target->xattrs[i].name, target->xattrs[i].value,
						     target->xattrs[i].len);
				break;
			}
			n->mode = target->mode;
			n->size = target->size;
			n->uid = target->uid;
			n->gid = target->gid;
			n->mtime = target->mtime;
			n->mtime_nsec = target->mtime_nsec;
			n->data = target->data;
			for (uint32_t i = 0; i < target->nx && !ret; i++)
				ret = bx_add(n, target->xattrs[i].name, target->xattrs[i].value,
					     target->xattrs[i].len);
			break;
		}
		case '2':
			n->mode = S_IFLNK | 0777;
			if (!e.linkname[0] || strlen(e.linkname) > RAFS_MAX_SYMLINK) {
				lz_err("tar entry %s: symlink target empty or longer than %d", e.path,
				       RAFS_MAX_SYMLINK);
				ret = -EINVAL;
				break;
			}
			n->target = strdup(e.linkname);
			if (!n->target)
				ret = -ENOMEM;
			break;
		case '3':
		case '4':
			n->mode = (e.type == '3' ? S_IFCHR : S_IFBLK) | e.mode;
			n->rmajor = e.devmajor;
			n->rminor = e.devminor;
			break;
		case '5':
			n->mode = S_IFDIR | e.mode;
			break;
		case '6':
			n->mode = S_IFIFO | e.mode;
			break;
		}
		if (ret)
			break;
		progress(b, false);
	}
	b->tar = NULL;
	lz_tar_close(t);
	return ret < 0 ? ret : 0;
}

/* ---------- build ---------- */

int rafs_write_file(const char *path, const void *buf, size_t len)
{
	char tmp[4096];
	int fd, ret = 0;
	size_t done = 0;

	snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		lz_err("cannot create %s: %s", tmp, strerror(errno));
		return -errno;
	}
	while (done < len) {
		ssize_t n = write(fd, (const uint8_t *)buf + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = -errno;
			lz_err("cannot write %s: %s", tmp, strerror(errno));
			break;
		}
		done += (size_t)n;
	}
	if (!ret && fsync(fd) < 0)
		ret = -errno;
	close(fd);
	if (!ret && rename(tmp, path) < 0) {
		ret = -errno;
		lz_err("cannot rename %s to %s: %s", tmp, path, strerror(errno));
	}
	if (ret)
		unlink(tmp);
	return ret;
}

/* The blob meta: CI array (v1, 16 bytes a chunk) and its 4096-byte header. */
static int write_blob_meta(struct builder *b, struct bblob *bl)
{
	size_t rawlen = (size_t)b->nchunks * 16;
	uint8_t *raw = lz_malloc(rawlen ? rawlen : 1), *comp = NULL;
	struct rafs_blobmeta_hdr h;
	ssize_t clen = -ENOSPC;
	int ret;

	if (!raw)
		return -ENOMEM;
	for (uint32_t i = 0; i < b->nchunks; i++) {
		const struct bchunk *c = &b->chunks[i];
		uint64_t u = c->usize - 1ull, s = c->csize - 1ull;
		uint64_t w0 = (c->uoff & 0x00000ffffffff000ull) | ((u >> 20) & 0xf) << 8 | (u & 0xfffff) << 44;
		uint64_t w1 = (c->coff & 0xffffffffffull) | ((s >> 20) & 0xf) << 40 | (s & 0xfffff) << 44;

		lz_put_le64(raw + 16ull * i, w0);
		lz_put_le64(raw + 16ull * i + 8, w1);
	}
	bl->ci_comp = LZ_COMP_NONE;
	if (b->o.compressor != LZ_COMP_NONE && !b->o.aligned && rawlen > 64) {
		comp = lz_malloc(rawlen);
		if (!comp) {
			free(raw);
			return -ENOMEM;
		}
		clen = lz_compress(b->o.compressor, raw, rawlen, comp, rawlen - 1, b->o.level);
	}
	if (b->o.aligned) {
		ret = pad_blob(b, LZ_ALIGN_UP(b->blob_off, 4096ull));
		if (ret)
			goto out;
	}
	bl->ci_off = b->blob_off;
	bl->ci_usize = rawlen;
	if (clen > 0) {
		bl->ci_comp = b->o.compressor;
		bl->ci_csize = (uint64_t)clen;
		ret = write_blob(b, comp, (size_t)clen);
	} else {
		bl->ci_csize = rawlen;
		ret = write_blob(b, raw, rawlen);
	}
	if (ret)
		goto out;
	memset(&h, 0, sizeof(h));
	lz_put_le32(&h.magic, BLOBMETA_MAGIC);
	lz_put_le32(&h.features, bl->features);
	lz_put_le32(&h.ci_compressor, (uint32_t)bl->ci_comp);
	lz_put_le32(&h.ci_entries, b->nchunks);
	lz_put_le64(&h.ci_offset, bl->ci_off);
	lz_put_le64(&h.ci_compressed_size, bl->ci_csize);
	lz_put_le64(&h.ci_uncompressed_size, bl->ci_usize);
	lz_put_le32(&h.magic2, BLOBMETA_MAGIC);
	ret = write_blob(b, &h, sizeof(h));
out:
	free(raw);
	free(comp);
	return ret;
}

static int check_opts(const struct rafs_build_opts *o)
{
	if (o->fs_version != 5 && o->fs_version != 6) {
		lz_err("--fs-version must be 5 or 6, not %d", o->fs_version);
		return -EINVAL;
	}
	if (o->compressor != LZ_COMP_NONE && o->compressor != LZ_COMP_LZ4 && o->compressor != LZ_COMP_ZSTD) {
		lz_err("--compressor must be zstd, lz4 or none");
		return -EINVAL;
	}
	if (o->digester != LZ_DIGEST_BLAKE3 && o->digester != LZ_DIGEST_SHA256) {
		lz_err("--digester must be blake3 or sha256");
		return -EINVAL;
	}
	if (o->chunk_size < RAFS_MIN_CHUNK_SIZE || o->chunk_size > RAFS_MAX_CHUNK_SIZE ||
	    (o->chunk_size & (o->chunk_size - 1))) {
		lz_err("--chunk-size %u is not a power of two from 4 KiB to 16 MiB", o->chunk_size);
		return -EINVAL;
	}
	if (o->aligned && (o->fs_version != 6 || o->compressor != LZ_COMP_NONE)) {
		lz_err("--aligned needs --fs-version 6 and --compressor none");
		return -EINVAL;
	}
	return 0;
}

int rafs_build(const char *src, const char *outdir, const struct rafs_build_opts *opts,
	       struct rafs_build_result *res)
{
	struct builder b = { .blob_fd = -1 };
	char blobdir[4096], tmpblob[4200], path[4300], *spath = NULL;
	uint8_t *boot = NULL, md[32];
	size_t bootlen = 0;
	struct hlset hs = { 0 };
	struct stat st;
	bool tmp_made = false;
	int ret, fd = -1;

	b.o = *opts;
	ret = check_opts(&b.o);
	if (ret)
		return ret;
	b.start_ns = now_ns();
	if (strlen(outdir) > 3000) {
		lz_err("output directory path too long");
		return -ENAMETOOLONG;
	}
	if (strcmp(src, "-") && stat(src, &st) < 0) {
		lz_err("source %s: %s", src, strerror(errno));
		return -errno;
	}
	if (mkdir(outdir, 0755) < 0 && errno != EEXIST) {
		lz_err("cannot create %s: %s", outdir, strerror(errno));
		return -errno;
	}
	snprintf(blobdir, sizeof(blobdir), "%s/blobs", outdir);
	if (mkdir(blobdir, 0755) < 0 && errno != EEXIST) {
		lz_err("cannot create %s: %s", blobdir, strerror(errno));
		return -errno;
	}
	snprintf(tmpblob, sizeof(tmpblob), "%s/.blob.tmp.%d", blobdir, (int)getpid());
	b.blob_fd = open(tmpblob, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (b.blob_fd < 0) {
		lz_err("cannot create %s: %s", tmpblob, strerror(errno));
		return -errno;
	}
	tmp_made = true;
	b.sha = EVP_MD_CTX_new();
	b.cbuf_cap = (size_t)b.o.chunk_size + 65536;
	b.cbuf = lz_malloc(b.cbuf_cap);
	b.rbuf = lz_malloc(b.o.chunk_size);
	b.root = bnode_new(&b, NULL, "/", 1);
	if (!b.sha || !b.cbuf || !b.rbuf || !b.root || !EVP_DigestInit_ex(b.sha, EVP_sha256(), NULL)) {
		ret = -ENOMEM;
		goto out;
	}
	b.root->mode = S_IFDIR | 0755;
	if (!strcmp(src, "-") || S_ISREG(st.st_mode)) {
		fd = strcmp(src, "-") ? open(src, O_RDONLY | O_CLOEXEC) : dup(0);
		if (fd < 0) {
			ret = -errno;
			lz_err("cannot open %s: %s", src, strerror(errno));
			goto out;
		}
		ret = scan_tar(&b, fd);
		if (ret)
			lz_err("cannot convert tar stream %s: %s", src, lz_strerror(ret));
	} else if (S_ISDIR(st.st_mode)) {
		ret = fill_from_stat(b.root, &st);
		if (!ret)
			ret = read_xattrs(b.root, src);
		spath = lz_malloc(65536);
		if (!spath) {
			ret = -ENOMEM;
			goto out;
		}
		snprintf(spath, 65536, "%s", src);
		if (!ret)
			ret = scan_dir(&b, b.root, spath, strlen(spath), &hs, 0);
	} else {
		lz_err("source %s is neither a directory nor a tar file", src);
		ret = -EINVAL;
	}
	if (ret)
		goto out;
	progress(&b, true);

	if (b.nchunks) {
		struct bblob *bl = lz_calloc(1, sizeof(*bl));

		if (!bl) {
			ret = -ENOMEM;
			goto out;
		}
		b.blobs = bl;
		b.nblobs = 1;
		bl->chunk_count = b.nchunks;
		bl->comp = b.o.aligned ? LZ_COMP_NONE : b.o.compressor;
		bl->features = b.o.fs_version == 6 ? RAFS_BF_ALIGNED : 0;
		ret = pad_blob(&b, b.o.aligned ? LZ_ALIGN_UP(b.blob_off, 4096ull) : b.blob_off);
		if (ret)
			goto out;
		bl->csize = b.blob_off;
		bl->usize = b.o.fs_version == 6 ? LZ_ALIGN_UP(b.blob_uoff, 4096ull) : b.blob_uoff;
		if (b.o.fs_version == 6) {
			ret = write_blob_meta(&b, bl);
			if (ret)
				goto out;
		}
		EVP_DigestFinal_ex(b.sha, md, NULL);
		lz_hex(md, sizeof(md), bl->id);
		if (fsync(b.blob_fd) < 0) {
			ret = -errno;
			goto out;
		}
		snprintf(path, sizeof(path), "%s/%s", blobdir, bl->id);
		if (rename(tmpblob, path) < 0) {
			ret = -errno;
			lz_err("cannot rename the blob to %s: %s", path, strerror(errno));
			goto out;
		}
		tmp_made = false;
		memcpy(b.res.blob_id, bl->id, sizeof(b.res.blob_id));
		b.res.blob_size = b.blob_off;
	}
	if (b.o.prefetch_files) {
		ret = rafs_build_prefetch(&b, b.o.prefetch_files);
		if (ret)
			goto out;
	}
	ret = b.o.fs_version == 5 ? rafs_write_v5(&b, &boot, &bootlen) : rafs_write_v6(&b, &boot, &bootlen);
	if (ret)
		goto out;
	snprintf(path, sizeof(path), "%s/image.boot", outdir);
	ret = rafs_write_file(path, boot, bootlen);
	if (ret)
		goto out;
	b.res.entries = b.nentries;
	b.res.chunks = b.nchunks;
	b.res.boot_size = bootlen;
	if (res)
		*res = b.res;
out:
	if (tmp_made)
		unlink(tmpblob);
	if (fd >= 0)
		close(fd);
	free(hs.v);
	free(spath);
	free(boot);
	builder_free(&b);
	return ret;
}

int rafs_build_prefetch(struct builder *b, const char *list)
{
	FILE *f = fopen(list, "re");
	char line[8192];
	int ret = 0;

	if (!f) {
		lz_err("--prefetch-files %s: %s", list, strerror(errno));
		return -errno;
	}
	while (fgets(line, sizeof(line), f)) {
		size_t l = strcspn(line, "\r\n");
		struct bnode *n, **np;

		line[l] = 0;
		if (!l || line[0] == '#')
			continue;
		n = bnode_lookup_path(b->root, line);
		if (!n) {
			lz_warn("prefetch list: %s is not in the image; skipped", line);
			continue;
		}
		np = lz_realloc(b->prefetch, (b->nprefetch + 1) * sizeof(*np));
		if (!np) {
			ret = -ENOMEM;
			break;
		}
		b->prefetch = np;
		np[b->nprefetch++] = n;
	}
	fclose(f);
	return ret;
}
