/* SPDX-License-Identifier: Apache-2.0 */
#define LZ_MOD "rafs"
#include "rafs_int.h"
#include "lazyimg/imgfs.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

static char type_char(uint32_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFDIR: return 'd';
	case S_IFREG: return 'f';
	case S_IFLNK: return 'l';
	case S_IFCHR: return 'c';
	case S_IFBLK: return 'b';
	case S_IFIFO: return 'p';
	case S_IFSOCK: return 's';
	}
	return '?';
}

/* JSON string: bytes outside printable ASCII are escaped as \u00XX. */
static void json_str(FILE *out, const char *s, size_t n)
{
	fputc('"', out);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '"' || c == '\\')
			fprintf(out, "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			fprintf(out, "\\u%04x", c);
		else
			fputc(c, out);
	}
	fputc('"', out);
}

struct insp {
	struct rafs *fs;
	FILE *out;
	bool json, chunks, first;
	int nchunk;
};

static int print_chunk(void *arg, const struct img_chunk *c)
{
	struct insp *x = arg;
	char dg[2 * LZ_DIGEST_LEN + 1] = "-";

	if (c->digest)
		lz_hex(c->digest, LZ_DIGEST_LEN, dg);
	if (x->json)
		fprintf(x->out,
			"%s{\"file_offset\":%llu,\"blob_index\":%u,\"index\":%u,\"compressed_offset\":%llu,\"compressed_size\":%u,\"uncompressed_offset\":%llu,\"uncompressed_size\":%u,\"compressed\":%s,\"hole\":%s,\"digest\":\"%s\"}",
			x->nchunk ? "," : "", (unsigned long long)c->file_offset, c->blob_index, c->index,
			(unsigned long long)c->compressed_offset, c->compressed_size,
			(unsigned long long)c->uncompressed_offset, c->uncompressed_size,
			c->flags & IMG_CHUNK_COMPRESSED ? "true" : "false",
			c->flags & IMG_CHUNK_HOLE ? "true" : "false", dg);
	else
		fprintf(x->out, "    chunk %d: file %llu+%u blob %u index %u compressed %llu+%u uncompressed %llu%s digest %s\n",
			x->nchunk, (unsigned long long)c->file_offset, c->uncompressed_size, c->blob_index,
			c->index, (unsigned long long)c->compressed_offset, c->compressed_size,
			(unsigned long long)c->uncompressed_offset,
			c->flags & IMG_CHUNK_HOLE ? " hole" : c->flags & IMG_CHUNK_COMPRESSED ? " (compressed)" : "",
			dg);
	x->nchunk++;
	return 0;
}

static int print_entry(void *arg, const char *path, const struct img_attr *a)
{
	struct insp *x = arg;
	struct image *img = &x->fs->img;
	char target[RAFS_MAX_SYMLINK + 1];
	char xl[65536];
	ssize_t xn = img->ops->listxattr(img, a->ino, xl, sizeof(xl));
	ssize_t tn = 0;
	int ret = 0;

	if (xn < 0)
		return (int)xn;
	if (S_ISLNK(a->mode)) {
		tn = img->ops->readlink(img, a->ino, target, sizeof(target) - 1);
		if (tn < 0)
			return (int)tn;
		if ((size_t)tn >= sizeof(target))
			return -EFSCORRUPTED;
	}
	if (x->json) {
		fprintf(x->out, "%s\n    {\"path\":", x->first ? "" : ",");
		json_str(x->out, path, strlen(path));
		fprintf(x->out, ",\"type\":\"%c\",\"ino\":%llu,\"mode\":%u,\"uid\":%u,\"gid\":%u,\"size\":%llu,\"nlink\":%u,\"mtime\":%lld,\"mtime_nsec\":%u,\"rdev_major\":%u,\"rdev_minor\":%u",
			type_char(a->mode), (unsigned long long)a->ino, a->mode & 07777, a->uid, a->gid,
			(unsigned long long)a->size, a->nlink, (long long)a->mtime, a->mtime_nsec,
			major(a->rdev), minor(a->rdev));
		if (S_ISLNK(a->mode)) {
			fputs(",\"target\":", x->out);
			json_str(x->out, target, (size_t)tn);
		}
		fputs(",\"xattrs\":{", x->out);
		for (ssize_t p = 0; p < xn; p += (ssize_t)strlen(xl + p) + 1) {
			char val[65536];
			ssize_t vn = img->ops->getxattr(img, a->ino, xl + p, val, sizeof(val));

			if (vn < 0)
				return (int)vn;
			fputs(p ? "," : "", x->out);
			json_str(x->out, xl + p, strlen(xl + p));
			fputc(':', x->out);
			json_str(x->out, val, (size_t)vn);
		}
		fputc('}', x->out);
		if (x->chunks && S_ISREG(a->mode)) {
			fputs(",\"chunks\":[", x->out);
			x->nchunk = 0;
			ret = img->ops->chunks(img, a->ino, print_chunk, x);
			fputc(']', x->out);
		}
		fputc('}', x->out);
	} else {
		fprintf(x->out, "%c %04o %5u %5u %10llu %3u ino %-8llu %s", type_char(a->mode),
			a->mode & 07777, a->uid, a->gid, (unsigned long long)a->size, a->nlink,
			(unsigned long long)a->ino, path);
		if (S_ISLNK(a->mode))
			fprintf(x->out, " -> %.*s", (int)tn, target);
		if (S_ISCHR(a->mode) || S_ISBLK(a->mode))
			fprintf(x->out, " [%u:%u]", major(a->rdev), minor(a->rdev));
		fputc('\n', x->out);
		for (ssize_t p = 0; p < xn; p += (ssize_t)strlen(xl + p) + 1)
			fprintf(x->out, "    xattr %s\n", xl + p);
		if (x->chunks && S_ISREG(a->mode)) {
			x->nchunk = 0;
			ret = img->ops->chunks(img, a->ino, print_chunk, x);
		}
	}
	x->first = false;
	return ret;
}

int rafs_inspect(struct rafs *fs, FILE *out, bool json, bool chunks)
{
	struct insp x = { .fs = fs, .out = out, .json = json, .chunks = chunks, .first = true };
	struct rafs_info in;
	int ret;

	rafs_get_info(fs, &in);
	if (json) {
		fprintf(out, "{\"version\":%d,\"bootstrap_size\":%llu,\"flags\":%llu,\"chunk_size\":%u,\"compressor\":\"%s\",\"digester\":\"%s\",\"explicit_uid_gid\":%s,\"inodes\":%llu,\"prefetch_entries\":%u,",
			in.version, (unsigned long long)in.bootstrap_size, (unsigned long long)in.flags,
			in.chunk_size, lz_compressor_name(in.compressor), lz_digester_name(in.digester),
			in.explicit_uid_gid ? "true" : "false", (unsigned long long)in.inodes,
			in.prefetch_entries);
		if (in.version == 6)
			fprintf(out, "\"meta_blkaddr\":%u,\"root_nid\":%llu,\"chunk_table_entries\":%llu,",
				in.meta_blkaddr, (unsigned long long)in.root_nid,
				(unsigned long long)in.chunk_table_entries);
		fputs("\"blobs\":[", out);
	} else {
		fprintf(out, "RAFS v%d bootstrap, %llu bytes\n", in.version,
			(unsigned long long)in.bootstrap_size);
		fprintf(out, "  flags 0x%llx, chunk size %u, compressor %s, digester %s, %s uid/gid\n",
			(unsigned long long)in.flags, in.chunk_size, lz_compressor_name(in.compressor),
			lz_digester_name(in.digester), in.explicit_uid_gid ? "explicit" : "mounter's");
		fprintf(out, "  inodes %llu, prefetch entries %u\n", (unsigned long long)in.inodes,
			in.prefetch_entries);
		if (in.version == 6)
			fprintf(out, "  meta_blkaddr %u, root nid %llu, chunk table entries %llu\n",
				in.meta_blkaddr, (unsigned long long)in.root_nid,
				(unsigned long long)in.chunk_table_entries);
		fprintf(out, "blobs: %u\n", in.nblobs);
	}
	for (uint32_t i = 0; i < in.nblobs; i++) {
		struct rafs_blob_info b;

		rafs_get_blob(fs, i, &b);
		if (json)
			fprintf(out, "%s{\"index\":%u,\"id\":\"%s\",\"chunk_count\":%u,\"features\":%u,\"compressor\":\"%s\",\"compressed_size\":%llu,\"uncompressed_size\":%llu}",
				i ? "," : "", i, b.id, b.chunk_count, b.features,
				lz_compressor_name(b.compressor), (unsigned long long)b.compressed_size,
				(unsigned long long)b.uncompressed_size);
		else
			fprintf(out, "  [%u] %s: %u chunks, features 0x%x, compressor %s, compressed %llu, uncompressed %llu\n",
				i, b.id, b.chunk_count, b.features, lz_compressor_name(b.compressor),
				(unsigned long long)b.compressed_size, (unsigned long long)b.uncompressed_size);
	}
	fputs(json ? "],\"files\":[" : "tree:\n", out);
	ret = imgfs_walk(&fs->img, print_entry, &x);
	fputs(json ? "\n]}\n" : "", out);
	return ret;
}

struct ckey {
	uint64_t coff;
	uint32_t blob, csize;
	struct img_chunk c;
	size_t path; /* offset into the path pool */
	uint64_t k;
};

struct check {
	struct rafs *fs;
	struct ckey *keys;
	size_t n, cap;
	char *pool;
	size_t pool_len, pool_cap;
	size_t cur_path;
	uint64_t k;
};

static int check_chunk(void *arg, const struct img_chunk *c)
{
	struct check *x = arg;

	if (c->flags & IMG_CHUNK_HOLE) {
		x->k++;
		return 0;
	}
	if (x->n == x->cap) {
		size_t nc = x->cap ? 2 * x->cap : 1024;
		struct ckey *nk = lz_realloc(x->keys, nc * sizeof(*nk));

		if (!nk)
			return -ENOMEM;
		x->keys = nk;
		x->cap = nc;
	}
	x->keys[x->n] = (struct ckey){ .coff = c->compressed_offset, .blob = c->blob_index,
				       .csize = c->compressed_size, .c = *c, .path = x->cur_path,
				       .k = x->k++ };
	x->n++;
	return 0;
}

static int check_entry(void *arg, const char *path, const struct img_attr *a)
{
	struct check *x = arg;
	size_t len = strlen(path) + 1;

	if (!S_ISREG(a->mode))
		return 0;
	if (x->pool_len + len > x->pool_cap) {
		size_t nc = LZ_MAX(2 * x->pool_cap, x->pool_len + len + 4096);
		char *np = lz_realloc(x->pool, nc);

		if (!np)
			return -ENOMEM;
		x->pool = np;
		x->pool_cap = nc;
	}
	memcpy(x->pool + x->pool_len, path, len);
	x->cur_path = x->pool_len;
	x->pool_len += len;
	x->k = 0;
	return x->fs->img.ops->chunks(&x->fs->img, a->ino, check_chunk, x);
}

static int ckey_cmp(const void *a, const void *b)
{
	const struct ckey *x = a, *y = b;

	if (x->blob != y->blob)
		return x->blob < y->blob ? -1 : 1;
	if (x->coff != y->coff)
		return x->coff < y->coff ? -1 : 1;
	if (x->csize != y->csize)
		return x->csize < y->csize ? -1 : 1;
	return x->path < y->path ? -1 : x->path > y->path;
}

int rafs_check(struct rafs *fs, FILE *out, uint64_t *verified, uint64_t *bytes)
{
	struct check x = { .fs = fs };
	uint8_t *buf = NULL;
	bool saved = fs->validate;
	int ret;

	*verified = *bytes = 0;
	ret = imgfs_walk(&fs->img, check_entry, &x);
	if (ret) {
		fprintf(out, "check: metadata error: %s\n", lz_strerror(ret));
		goto out;
	}
	qsort(x.keys, x.n, sizeof(*x.keys), ckey_cmp);
	buf = lz_malloc(fs->chunk_size);
	if (!buf) {
		ret = -ENOMEM;
		goto out;
	}
	fs->validate = true;
	for (size_t i = 0; i < x.n; i++) {
		struct ckey *k = &x.keys[i];

		if (i && k->blob == x.keys[i - 1].blob && k->coff == x.keys[i - 1].coff &&
		    k->csize == x.keys[i - 1].csize)
			continue;
		ret = rafs_read_chunk(fs, &k->c, buf);
		if (ret) {
			fprintf(out, "check: bad chunk: %s chunk %llu (blob %s, compressed offset %llu, size %u): %s\n",
				x.pool + k->path, (unsigned long long)k->k, fs->blobs[k->blob].id,
				(unsigned long long)k->coff, k->csize, lz_strerror(ret));
			goto out;
		}
		if (!k->c.digest)
			fprintf(out, "check: warning: %s chunk %llu has no digest to verify against\n",
				x.pool + k->path, (unsigned long long)k->k);
		(*verified)++;
		*bytes += k->c.uncompressed_size;
	}
out:
	fs->validate = saved;
	free(buf);
	free(x.keys);
	free(x.pool);
	return ret;
}
