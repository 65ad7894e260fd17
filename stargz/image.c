/* SPDX-License-Identifier: Apache-2.0 */
/* image.c - the image interface over the built tree; open and close. */
#define LZ_MOD "estargz"
#include "estargz_int.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <openssl/evp.h>
#include <sys/stat.h>

#define ES_OPAQUE_XATTR "trusted.overlay.opaque"

static struct estargz *es_of(struct image *img)
{
	return (struct estargz *)img;
}

const struct es_inode *es_inode_get(const struct estargz *es, uint64_t ino)
{
	if (ino < 1 || ino > es->ninodes)
		return NULL;
	return &es->inodes[ino - 1];
}

void es_inode_path(const struct estargz *es, uint64_t ino, char *buf, size_t size)
{
	size_t pos = size - 1;
	int depth = 0;

	if (size < 2)
		return;
	buf[pos] = 0;
	while (ino != IMG_ROOT_INO && depth++ < ESTARGZ_MAX_PATH) {
		const struct es_inode *in = es_inode_get(es, ino);
		const struct es_dirent *de;

		if (!in || in->name_de == ES_NONE || in->name_de >= es->ndirents)
			break;
		de = &es->dirents[in->name_de];
		if (pos < (size_t)de->len + 1) {
			pos = 0;
			break;
		}
		pos -= de->len;
		memcpy(buf + pos, es->pool + de->name, de->len);
		buf[--pos] = '/';
		ino = in->parent;
	}
	if (pos == size - 1)
		buf[--pos] = '/';
	memmove(buf, buf + pos, size - pos);
}

static void fill_attr(const struct es_inode *in, uint64_t ino, struct img_attr *a)
{
	memset(a, 0, sizeof(*a));
	a->ino = ino;
	a->mode = in->mode;
	a->nlink = in->nlink;
	a->uid = in->uid;
	a->gid = in->gid;
	a->rdev = in->rdev;
	a->mtime = in->mtime;
	a->mtime_nsec = in->mtime_nsec;
	a->size = S_ISDIR(in->mode) ? 4096 : in->size;
	a->blocks = LZ_DIV_ROUND_UP(a->size, 512u);
}

static int es_getattr(struct image *img, uint64_t ino, struct img_attr *attr)
{
	const struct es_inode *in = es_inode_get(es_of(img), ino);

	if (!in)
		return -ENOENT;
	fill_attr(in, ino, attr);
	return 0;
}

static int name_cmp(const struct estargz *es, const struct es_dirent *de, const char *name, size_t len)
{
	int c = memcmp(es->pool + de->name, name, LZ_MIN((size_t)de->len, len));

	return c ? c : (de->len < len ? -1 : de->len > len);
}

static int es_lookup(struct image *img, uint64_t dir, const char *name, size_t len, struct img_attr *attr)
{
	struct estargz *es = es_of(img);
	const struct es_inode *d = es_inode_get(es, dir);
	uint32_t lo, hi;
	uint64_t ino = 0;

	if (!d)
		return -ENOENT;
	if (!S_ISDIR(d->mode))
		return -ENOTDIR;
	if (len == 0)
		return -ENOENT;
	if (len > IMG_NAME_MAX)
		return -ENAMETOOLONG;
	if (len == 1 && name[0] == '.')
		ino = dir;
	else if (len == 2 && name[0] == '.' && name[1] == '.')
		ino = d->parent;
	lo = d->data;
	hi = d->data + d->ndata;
	while (!ino && lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		int c = name_cmp(es, &es->dirents[mid], name, len);

		if (c == 0)
			ino = es->dirents[mid].ino;
		else if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (!ino)
		return -ENOENT;
	return es_getattr(img, ino, attr);
}

static int es_readdir(struct image *img, uint64_t dir, uint64_t off, img_filldir_fn fill, void *arg)
{
	struct estargz *es = es_of(img);
	const struct es_inode *d = es_inode_get(es, dir);

	if (!d)
		return -ENOENT;
	if (!S_ISDIR(d->mode))
		return -ENOTDIR;
	/* offsets: 0 ".", 1 "..", 2 + i the i-th sorted entry; the tree never changes */
	for (; off < (uint64_t)d->ndata + 2; off++) {
		struct img_dirent de = { .next_off = off + 1 };

		if (off < 2) {
			de.name = "..";
			de.name_len = off + 1;
			de.ino = off ? d->parent : dir;
			de.type = S_IFDIR;
		} else {
			const struct es_dirent *e = &es->dirents[d->data + off - 2];

			de.name = es->pool + e->name;
			de.name_len = e->len;
			de.ino = e->ino;
			de.type = es->inodes[e->ino - 1].mode & S_IFMT;
		}
		if (fill(arg, &de))
			break;
	}
	return 0;
}

static ssize_t es_readlink(struct image *img, uint64_t ino, char *buf, size_t size)
{
	struct estargz *es = es_of(img);
	const struct es_inode *in = es_inode_get(es, ino);

	if (!in)
		return -ENOENT;
	if (!S_ISLNK(in->mode))
		return -EINVAL;
	memcpy(buf, es->pool + in->data, LZ_MIN(size, (size_t)in->ndata));
	return in->ndata;
}

/* Packed record i: le16 name len, name, le32 value len, value. */
struct xa_it {
	const uint8_t *p;
	unsigned left;
};

static bool xa_next(struct xa_it *it, const char **name, size_t *nlen, const uint8_t **val, size_t *vlen)
{
	if (!it->left)
		return false;
	*nlen = lz_get_le16(it->p);
	*name = (const char *)it->p + 2;
	*vlen = lz_get_le32(it->p + 2 + *nlen);
	*val = it->p + 2 + *nlen + 4;
	it->p += 2 + *nlen + 4 + *vlen;
	it->left--;
	return true;
}

static ssize_t es_listxattr(struct image *img, uint64_t ino, char *buf, size_t size)
{
	struct estargz *es = es_of(img);
	const struct es_inode *in = es_inode_get(es, ino);
	struct xa_it it;
	const char *name;
	const uint8_t *val;
	size_t nlen, vlen, need = 0;

	if (!in)
		return -ENOENT;
	it.p = in->nxattr ? (const uint8_t *)es->pool + in->xattr : NULL;
	it.left = in->nxattr;
	while (xa_next(&it, &name, &nlen, &val, &vlen)) {
		if (size && need + nlen + 1 > size)
			return -ERANGE;
		if (size)
			memcpy(buf + need, name, nlen), buf[need + nlen] = 0;
		need += nlen + 1;
	}
	if (in->flags & ES_I_OPAQUE) {
		nlen = strlen(ES_OPAQUE_XATTR);
		if (size && need + nlen + 1 > size)
			return -ERANGE;
		if (size)
			memcpy(buf + need, ES_OPAQUE_XATTR, nlen + 1);
		need += nlen + 1;
	}
	return (ssize_t)need;
}

static ssize_t es_getxattr(struct image *img, uint64_t ino, const char *want, void *buf, size_t size)
{
	struct estargz *es = es_of(img);
	const struct es_inode *in = es_inode_get(es, ino);
	size_t wlen = strlen(want), nlen, vlen;
	struct xa_it it;
	const char *name;
	const uint8_t *val;

	if (!in)
		return -ENOENT;
	if ((in->flags & ES_I_OPAQUE) && !strcmp(want, ES_OPAQUE_XATTR)) {
		val = (const uint8_t *)"y";
		vlen = 1;
		goto found;
	}
	it.p = in->nxattr ? (const uint8_t *)es->pool + in->xattr : NULL;
	it.left = in->nxattr;
	while (xa_next(&it, &name, &nlen, &val, &vlen))
		if (nlen == wlen && !memcmp(name, want, wlen))
			goto found;
	return -ENODATA;
found:
	if (size == 0)
		return (ssize_t)vlen;
	if (size < vlen)
		return -ERANGE;
	memcpy(buf, val, vlen);
	return (ssize_t)vlen;
}

static ssize_t es_read(struct image *img, uint64_t ino, void *buf, size_t size, uint64_t off)
{
	struct estargz *es = es_of(img);
	const struct es_inode *in = es_inode_get(es, ino);
	const struct es_layer *l;
	size_t done = 0;
	uint32_t lo, hi;

	if (!in)
		return -ENOENT;
	if (S_ISDIR(in->mode))
		return -EISDIR;
	if (!S_ISREG(in->mode))
		return -EINVAL;
	if (off >= in->size || size == 0)
		return 0;
	if (size > in->size - off)
		size = (size_t)(in->size - off);
	if (!in->ndata)
		return -EFSCORRUPTED;   /* a non-empty file always has chunks after open */
	l = &es->layers[in->layer];
	/* the last chunk starting at or before off */
	lo = in->data;
	hi = in->data + in->ndata;
	while (hi - lo > 1) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (l->chunks[mid].file_off <= off)
			lo = mid;
		else
			hi = mid;
	}
	for (uint32_t i = lo; done < size && i < in->data + in->ndata; i++) {
		const struct es_chunk *c = &l->chunks[i];
		uint64_t pos = off + done, skip = pos - c->file_off;
		size_t n = (size_t)LZ_MIN((uint64_t)c->size - skip, (uint64_t)(size - done));
		int ret;

		if (pos < c->file_off || skip >= c->size)
			return -EFSCORRUPTED;
		ret = es_chunk_copy(es, in->layer, i, skip, (uint8_t *)buf + done, n);
		if (ret) {
			if (lz_ratelimit(&es->read_log, 10)) {
				char path[1024];

				es_inode_path(es, ino, path, sizeof(path));
				lz_err("layer %s: %s: chunk %u at file offset %llu (blob bytes %llu..%llu): %s", l->id,
				       path, i - in->data, (unsigned long long)c->file_off,
				       (unsigned long long)c->offset, (unsigned long long)c->next - 1,
				       ret == -EBADMSG ? "chunk digest mismatch (or no digest to verify against)" :
				       ret == -EFSCORRUPTED ? "the compressed data does not inflate to the chunk" :
				       lz_strerror(ret));
			}
			return ret;
		}
		done += n;
	}
	return (ssize_t)done;
}

static int es_chunks(struct image *img, uint64_t ino, img_chunk_fn fn, void *arg)
{
	struct estargz *es = es_of(img);
	const struct es_inode *in = es_inode_get(es, ino);

	if (!in)
		return -ENOENT;
	if (!S_ISREG(in->mode))
		return 0;
	for (uint32_t i = 0; i < in->ndata; i++) {
		struct img_chunk c;
		int ret;

		es_fill_img_chunk(es, in->layer, in->data + i, &c);
		ret = fn(arg, &c);
		if (ret)
			return ret;
	}
	return 0;
}

static void es_statfs(struct image *img, struct img_statfs *st)
{
	struct estargz *es = es_of(img);
	uint64_t bytes = 0;

	for (unsigned i = 0; i < es->nlayers; i++)
		bytes += es->layers[i].space;
	st->bsize = 4096;
	st->blocks = LZ_DIV_ROUND_UP(bytes, 4096u);
	st->files = es->ninodes;
}

static void es_close_op(struct image *img)
{
	estargz_close(es_of(img));
}

const struct image_ops es_image_ops = {
	.getattr = es_getattr,
	.lookup = es_lookup,
	.readdir = es_readdir,
	.readlink = es_readlink,
	.listxattr = es_listxattr,
	.getxattr = es_getxattr,
	.read = es_read,
	.chunks = es_chunks,
	.statfs = es_statfs,
	.close = es_close_op,
};

static bool blob_id_ok(const char *id)
{
	size_t len = id ? strlen(id) : 0;

	if (len == 0 || len > 64 || id[0] == '.')
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = id[i];

		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' ||
		      c == '_' || c == '.'))
			return false;
	}
	return true;
}

int estargz_open(const struct estargz_layer *layers, size_t n, const struct estargz_opts *o,
		 struct estargz **out)
{
	struct estargz *es;
	int ret;

	if (!layers || !out || n == 0 || n > ESTARGZ_MAX_LAYERS || (o && !o->merge && n != 1)) {
		lz_err("open: %zu layers (1..%d; more than one only when merging)", n, ESTARGZ_MAX_LAYERS);
		return -EINVAL;
	}
	for (size_t i = 0; i < n; i++) {
		const struct estargz_layer *L = &layers[i];

		if (L->toc_len > ESTARGZ_MAX_TOC) {
			lz_err("open: layer %zu: TOC of %zu bytes exceeds the %u MiB cap", i, L->toc_len,
			       ESTARGZ_MAX_TOC >> 20);
			return -EFBIG;
		}
		if (!blob_id_ok(L->blob_id) || !L->toc_json ||
		    (L->kind != ESTARGZ_GZIP && L->kind != ESTARGZ_LEGACY && L->kind != ESTARGZ_ZSTD_CHUNKED) ||
		    (L->toc_offset && L->toc_offset >= L->blob_size) ||
		    (L->toc_offset && L->toc_offset < 8 && L->kind == ESTARGZ_ZSTD_CHUNKED)) {
			lz_err("open: layer %zu: bad blob id, kind, TOC or TOC offset", i);
			return -EINVAL;
		}
	}
	es = lz_calloc(1, sizeof(*es));
	if (!es)
		return -ENOMEM;
	es->fd = -1;
	es->img.ops = &es_image_ops;
	es->img.format = "estargz";
	es->merge = o ? o->merge : true;
	es->validate = o ? o->validate : true;
	if (o) {
		es->backend = o->backend;
		es->backend_ctx = o->backend_ctx;
		es->cache = o->cache;
		es->cache_ctx = o->cache_ctx;
	}
	es->layers = lz_calloc(n, sizeof(*es->layers));
	if (!es->layers) {
		ret = -ENOMEM;
		goto fail;
	}
	es->nlayers = (unsigned)n;
	for (size_t i = 0; i < n; i++) {
		struct es_layer *l = &es->layers[i];

		snprintf(l->id, sizeof(l->id), "%s", layers[i].blob_id);
		l->blob_size = layers[i].blob_size;
		/* zstd:chunked: data ends where the TOC's skippable frame header begins */
		l->limit = layers[i].toc_offset ? layers[i].toc_offset : layers[i].blob_size;
		if (layers[i].toc_offset && layers[i].kind == ESTARGZ_ZSTD_CHUNKED)
			l->limit -= 8;
		l->kind = layers[i].kind;
	}
	ret = es_build(es, layers, n);
	if (!ret)
		ret = es_chunks_init(es, o);
	if (ret)
		goto fail;
	*out = es;
	return 0;
fail:
	estargz_close(es);
	return ret;
}

void estargz_close(struct estargz *es)
{
	if (!es)
		return;
	es_chunks_exit(es);
	for (unsigned i = 0; es->layers && i < es->nlayers; i++)
		free(es->layers[i].chunks);
	free(es->layers);
	free(es->pool);
	free(es->inodes);
	free(es->dirents);
	free(es->prefetch);
	if (es->fd >= 0)
		close(es->fd);
	free(es);
}

struct image *estargz_image(struct estargz *es)
{
	return &es->img;
}

unsigned estargz_blob_count(const struct estargz *es)
{
	return es->nlayers;
}

int estargz_get_blob(const struct estargz *es, unsigned idx, struct estargz_blob_info *bi)
{
	if (idx >= es->nlayers)
		return -ENOENT;
	memcpy(bi->id, es->layers[idx].id, sizeof(bi->id));
	bi->space_size = es->layers[idx].space;
	bi->chunk_count = es->layers[idx].nchunks;
	return 0;
}

size_t estargz_prefetch_list(const struct estargz *es, uint64_t *inos, size_t max)
{
	size_t n = LZ_MIN(max, es->nprefetch);

	if (n)
		memcpy(inos, es->prefetch, n * sizeof(*inos));
	return n;
}

void estargz_get_info(const struct estargz *es, struct estargz_info *info)
{
	*info = es->info;
}

static int pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	int ret = lz_pread_full(fd, buf, len, off, NULL);

	return ret == -ENODATA ? -EIO : ret;   /* the file ended early */
}

static int file_sha256(int fd, uint64_t size, char hex[65])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	uint8_t *buf = lz_malloc(1 << 20), md[32];
	uint64_t off = 0;
	int ret = 0;

	if (!ctx || !buf || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
		ret = -ENOMEM;
		goto out;
	}
	while (off < size) {
		size_t n = (size_t)LZ_MIN(size - off, (uint64_t)(1 << 20));

		ret = pread_all(fd, buf, n, off);
		if (ret)
			goto out;
		EVP_DigestUpdate(ctx, buf, n);
		off += n;
	}
	EVP_DigestFinal_ex(ctx, md, NULL);
	lz_hex(md, 32, hex);
out:
	EVP_MD_CTX_free(ctx);
	free(buf);
	return ret;
}

int estargz_open_file(const char *path, const struct estargz_opts *o, struct estargz **out)
{
	struct estargz_opts lo = { .merge = true, .validate = true };
	struct estargz_footer f;
	struct estargz_layer L = { 0 };
	uint8_t tail[ESTARGZ_TAIL_MAX], *member = NULL;
	char *json = NULL, id[65];
	size_t json_len = 0, tl;
	struct stat st;
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		lz_err("%s: %s", path, strerror(errno));
		return ret;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		ret = -EINVAL;
		lz_err("%s: not a regular file", path);
		goto out;
	}
	tl = (size_t)LZ_MIN((uint64_t)st.st_size, (uint64_t)ESTARGZ_TAIL_MAX);
	ret = pread_all(fd, tail, tl, (uint64_t)st.st_size - tl);
	if (!ret)
		ret = estargz_footer_parse(tail, tl, (uint64_t)st.st_size, &f);
	if (ret) {
		if (ret == -EMEDIUMTYPE)
			lz_err("%s: not an eStargz, stargz or zstd:chunked blob (no footer)", path);
		goto out;
	}
	member = lz_malloc(f.toc_size ? f.toc_size : 1);
	if (!member) {
		ret = -ENOMEM;
		goto out;
	}
	ret = pread_all(fd, member, f.toc_size, f.toc_offset);
	if (!ret)
		ret = estargz_toc_decode(&f, member, f.toc_size, &json, &json_len);
	if (!ret)
		ret = file_sha256(fd, (uint64_t)st.st_size, id);
	if (ret)
		goto out;
	L.blob_id = id;
	L.blob_size = (uint64_t)st.st_size;
	L.kind = f.kind;
	L.toc_json = json;
	L.toc_len = json_len;
	L.toc_offset = f.toc_offset;
	if (o)
		lo = *o;
	lo.backend = NULL;
	ret = estargz_open(&L, 1, &lo, out);
	if (!ret) {
		(*out)->fd = fd;
		fd = -1;
	}
out:
	free(member);
	free(json);
	if (fd >= 0)
		close(fd);
	return ret;
}
