/* SPDX-License-Identifier: Apache-2.0 */
#define LZ_MOD "rafs"
#include "rafs_int.h"

#include <stdlib.h>
#include <sys/stat.h>

/* A v6 (EROFS) inode, decoded and bounds-checked. */
struct v6_ino {
	uint64_t nid;
	uint64_t off;        /* byte offset of the inode */
	uint32_t isz;        /* 32 or 64 */
	uint32_t layout;
	uint32_t xsize;      /* inline xattr area bytes */
	uint32_t mode, nlink, uid, gid, u;
	uint64_t size;
	int64_t mtime;
	uint32_t mtime_nsec;
};

static uint64_t nid_to_ino(const struct rafs *fs, uint64_t nid)
{
	return nid == fs->root_nid ? IMG_ROOT_INO : nid + 2;
}

static int ino_to_nid(const struct rafs *fs, uint64_t ino, uint64_t *nid)
{
	if (ino == IMG_ROOT_INO) {
		*nid = fs->root_nid;
		return 0;
	}
	if (ino < 2 || ino - 2 >= fs->max_nid || ino - 2 == fs->root_nid)
		return -ENOENT;
	*nid = ino - 2;
	return 0;
}

static int v6_load(const struct rafs *fs, uint64_t nid, struct v6_ino *in)
{
	uint16_t fmt, xic;
	uint64_t off;

	if (nid >= fs->max_nid) {
		lz_err("v6: nid %llu outside the metadata area (%llu slots)", (unsigned long long)nid,
		       (unsigned long long)fs->max_nid);
		return -EFSCORRUPTED;
	}
	off = fs->meta_off + nid * 32;
	memset(in, 0, sizeof(*in));
	in->nid = nid;
	in->off = off;
	fmt = lz_get_le16(fs->base + off);
	if (fmt & ~0xfu) {
		lz_err("v6: nid %llu: unknown i_format bits 0x%x", (unsigned long long)nid, fmt);
		return -EFSCORRUPTED;
	}
	in->layout = (fmt >> 1) & 7;
	if (in->layout != EROFS_LAYOUT_FLAT_PLAIN && in->layout != EROFS_LAYOUT_FLAT_INLINE &&
	    in->layout != EROFS_LAYOUT_CHUNK_BASED) {
		lz_err("v6: nid %llu: unsupported data layout %u", (unsigned long long)nid, in->layout);
		return -EOPNOTSUPP;
	}
	if (fmt & 1) {
		struct erofs_inode_extended e;

		in->isz = sizeof(e);
		if (!lz_range_ok(off, sizeof(e), fs->len))
			goto trunc;
		memcpy(&e, fs->base + off, sizeof(e));
		xic = LE16(e, xattr_icount);
		in->mode = LE16(e, mode);
		in->size = LE64(e, size);
		in->u = LE32(e, u);
		in->uid = LE32(e, uid);
		in->gid = LE32(e, gid);
		in->mtime = (int64_t)LE64(e, mtime);
		in->mtime_nsec = LE32(e, mtime_nsec);
		in->nlink = LE32(e, nlink);
	} else {
		struct erofs_inode_compact c;

		in->isz = sizeof(c);
		memcpy(&c, fs->base + off, sizeof(c));
		xic = LE16(c, xattr_icount);
		in->mode = LE16(c, mode);
		in->size = LE32(c, size);
		in->u = LE32(c, u);
		in->uid = LE16(c, uid);
		in->gid = LE16(c, gid);
		in->nlink = LE16(c, nlink);
		/* the kernel's reading: compact mtime is relative to the build time */
		in->mtime = fs->build_time + (int64_t)LE32(c, reserved);
		in->mtime_nsec = fs->build_time_nsec;
	}
	in->xsize = xic ? 12 + 4u * (xic - 1u) : 0;
	if (!lz_range_ok(off, (uint64_t)in->isz + in->xsize, fs->len))
		goto trunc;
	switch (in->mode & S_IFMT) {
	case S_IFREG:
		if (in->layout != EROFS_LAYOUT_CHUNK_BASED && in->size) {
			lz_err("v6: nid %llu: regular file with flat layout is not RAFS",
			       (unsigned long long)nid);
			return -EOPNOTSUPP;
		}
		break;
	case S_IFDIR:
	case S_IFLNK:
		if (in->layout == EROFS_LAYOUT_CHUNK_BASED) {
			lz_err("v6: nid %llu: chunk-based directory or symlink", (unsigned long long)nid);
			return -EFSCORRUPTED;
		}
		if (S_ISLNK(in->mode) && (in->size == 0 || in->size > RAFS_MAX_SYMLINK)) {
			lz_err("v6: nid %llu: symlink length %llu outside [1, %d]",
			       (unsigned long long)nid, (unsigned long long)in->size, RAFS_MAX_SYMLINK);
			return -EFSCORRUPTED;
		}
		if (S_ISDIR(in->mode) && in->size > fs->len) {
			lz_err("v6: nid %llu: directory size %llu exceeds the bootstrap",
			       (unsigned long long)nid, (unsigned long long)in->size);
			return -EFSCORRUPTED;
		}
		break;
	case S_IFCHR: case S_IFBLK: case S_IFIFO: case S_IFSOCK:
		break;
	default:
		lz_err("v6: nid %llu: invalid mode 0%o", (unsigned long long)nid, in->mode);
		return -EFSCORRUPTED;
	}
	if (in->nlink == 0) {
		lz_err("v6: nid %llu: nlink 0", (unsigned long long)nid);
		return -EFSCORRUPTED;
	}
	return 0;
trunc:
	lz_err("v6: nid %llu: inode at %llu runs past the end of the bootstrap",
	       (unsigned long long)nid, (unsigned long long)off);
	return -EFSCORRUPTED;
}

static int v6_load_ino(const struct rafs *fs, uint64_t ino, struct v6_ino *in)
{
	uint64_t nid;
	int ret = ino_to_nid(fs, ino, &nid);

	return ret ? ret : v6_load(fs, nid, in);
}

static void v6_attr(const struct rafs *fs, const struct v6_ino *in, struct img_attr *a)
{
	a->ino = nid_to_ino(fs, in->nid);
	a->mode = in->mode;
	a->nlink = in->nlink;
	a->size = in->size;
	a->blocks = LZ_DIV_ROUND_UP(in->size, 512);
	rafs_attr_fill(fs, a, in->uid, in->gid, in->u, in->mtime, in->mtime_nsec);
}

static int v6_getattr(struct image *img, uint64_t ino, struct img_attr *a)
{
	struct rafs *fs = rafs_from_img(img);
	struct v6_ino in;
	int ret = v6_load_ino(fs, ino, &in);

	if (ret)
		return ret;
	v6_attr(fs, &in, a);
	return 0;
}

/* Block i of a flat (plain or inline) inode's data. */
static int v6_block(const struct rafs *fs, const struct v6_ino *in, uint64_t i, const uint8_t **p,
		    uint32_t *blen)
{
	uint32_t bs = 1u << fs->blkbits;
	uint64_t nblocks = LZ_DIV_ROUND_UP(in->size, bs), off;

	if (i >= nblocks)
		return -EFSCORRUPTED;
	*blen = i == nblocks - 1 ? (uint32_t)(in->size - i * bs) : bs;
	if (in->layout == EROFS_LAYOUT_FLAT_INLINE && i == nblocks - 1)
		off = in->off + in->isz + in->xsize;
	else
		off = ((uint64_t)in->u + i) << fs->blkbits;
	if (!lz_range_ok(off, *blen, fs->len)) {
		lz_err("v6: nid %llu: data block %llu at %llu outside the bootstrap",
		       (unsigned long long)in->nid, (unsigned long long)i, (unsigned long long)off);
		return -EFSCORRUPTED;
	}
	*p = fs->base + off;
	return 0;
}

struct v6_dblk {
	const uint8_t *p;
	uint32_t len;
	uint32_t n;          /* entries */
};

static int v6_dblk_load(const struct rafs *fs, const struct v6_ino *in, uint64_t i, struct v6_dblk *b)
{
	uint32_t off0;
	int ret = v6_block(fs, in, i, &b->p, &b->len);

	if (ret)
		return ret;
	if (b->len < sizeof(struct erofs_dirent))
		goto bad;
	off0 = lz_get_le16(b->p + 8);
	if (off0 < sizeof(struct erofs_dirent) || off0 % sizeof(struct erofs_dirent) || off0 >= b->len)
		goto bad;
	b->n = off0 / sizeof(struct erofs_dirent);
	return 0;
bad:
	lz_err("v6: nid %llu: directory block %llu has a bad first entry", (unsigned long long)in->nid,
	       (unsigned long long)i);
	return -EFSCORRUPTED;
}

static int v6_dent(const struct v6_ino *dir, const struct v6_dblk *b, uint32_t i, const char **name,
		   size_t *nlen, uint64_t *nid, uint8_t *ftype)
{
	const uint8_t *d = b->p + (size_t)i * sizeof(struct erofs_dirent);
	uint32_t start = lz_get_le16(d + 8), end;

	end = i + 1 < b->n ? lz_get_le16(d + sizeof(struct erofs_dirent) + 8) : b->len;
	if (start < b->n * sizeof(struct erofs_dirent) || start >= end || end > b->len)
		goto bad;
	*name = (const char *)b->p + start;
	*nlen = i + 1 < b->n ? end - start : strnlen(*name, end - start);
	if (*nlen == 0 || *nlen > IMG_NAME_MAX)
		goto bad;
	*nid = lz_get_le64(d);
	*ftype = d[10];
	return 0;
bad:
	lz_err("v6: nid %llu: directory entry %u has a bad name offset or length",
	       (unsigned long long)dir->nid, i);
	return -EFSCORRUPTED;
}

static const uint32_t v6_ftype[8] = { 0, S_IFREG, S_IFDIR, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK, S_IFLNK };

/* The type a directory entry claims must be its inode's: readdir and lookup
 * would disagree otherwise (FT_UNKNOWN, 0, claims nothing). */
static int v6_check_ftype(const struct rafs *fs, const struct v6_ino *dir, const char *name, size_t len,
			  uint64_t nid, uint8_t ft)
{
	struct v6_ino c;
	int ret;

	if (!ft)
		return 0;
	if (ft < 8) {
		ret = v6_load(fs, nid, &c);
		if (ret)
			return ret;
		if (v6_ftype[ft] == (c.mode & S_IFMT))
			return 0;
	}
	lz_err("v6: nid %llu: entry '%.*s' says file type %u but nid %llu has mode 0%o",
	       (unsigned long long)dir->nid, (int)len, name, ft, (unsigned long long)nid,
	       ft < 8 ? c.mode : 0);
	return -EFSCORRUPTED;
}

static int v6_dir(const struct rafs *fs, uint64_t ino, struct v6_ino *d)
{
	int ret = v6_load_ino(fs, ino, d);

	if (ret)
		return ret;
	return S_ISDIR(d->mode) ? 0 : -ENOTDIR;
}

static int v6_lookup(struct image *img, uint64_t dir, const char *name, size_t len,
		     struct img_attr *a)
{
	struct rafs *fs = rafs_from_img(img);
	uint64_t lo = 0, hi, nid;
	struct v6_ino d, c;
	struct v6_dblk b;
	const char *n;
	size_t nl;
	uint8_t ft;
	int ret;

	ret = v6_dir(fs, dir, &d);
	if (ret)
		return ret;
	if (len == 0 || len > IMG_NAME_MAX)
		return len ? -ENAMETOOLONG : -ENOENT;
	hi = LZ_DIV_ROUND_UP(d.size, 1u << fs->blkbits);
	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;
		uint32_t elo, ehi;

		ret = v6_dblk_load(fs, &d, mid, &b);
		if (ret)
			return ret;
		ret = v6_dent(&d, &b, 0, &n, &nl, &nid, &ft);
		if (ret)
			return ret;
		if (rafs_name_cmp(name, len, n, nl) < 0) {
			hi = mid;
			continue;
		}
		ret = v6_dent(&d, &b, b.n - 1, &n, &nl, &nid, &ft);
		if (ret)
			return ret;
		if (rafs_name_cmp(name, len, n, nl) > 0) {
			lo = mid + 1;
			continue;
		}
		elo = 0;
		ehi = b.n;
		while (elo < ehi) {
			uint32_t emid = elo + (ehi - elo) / 2;
			int cmp;

			ret = v6_dent(&d, &b, emid, &n, &nl, &nid, &ft);
			if (ret)
				return ret;
			cmp = rafs_name_cmp(name, len, n, nl);
			if (cmp == 0) {
				ret = v6_load(fs, nid, &c);
				if (ret)
					return ret;
				ret = v6_check_ftype(fs, &d, n, nl, nid, ft);
				if (ret)
					return ret;
				v6_attr(fs, &c, a);
				return 0;
			}
			if (cmp < 0)
				ehi = emid;
			else
				elo = emid + 1;
		}
		return -ENOENT;
	}
	return -ENOENT;
}


/* readdir offsets: block * 512 + entry; a 4 KiB block holds at most 341 entries */
#define V6_DIR_SHIFT 9

static int v6_readdir(struct image *img, uint64_t dir, uint64_t off, img_filldir_fn fill, void *arg)
{
	struct rafs *fs = rafs_from_img(img);
	struct img_dirent de;
	struct v6_ino d;
	struct v6_dblk b;
	uint64_t nblocks, blk, nid;
	uint32_t i;
	uint8_t ft;
	int ret;

	ret = v6_dir(fs, dir, &d);
	if (ret)
		return ret;
	nblocks = LZ_DIV_ROUND_UP(d.size, 1u << fs->blkbits);
	for (blk = off >> V6_DIR_SHIFT, i = off & ((1u << V6_DIR_SHIFT) - 1); blk < nblocks; blk++, i = 0) {
		ret = v6_dblk_load(fs, &d, blk, &b);
		if (ret)
			return ret;
		for (; i < b.n; i++) {
			ret = v6_dent(&d, &b, i, &de.name, &de.name_len, &nid, &ft);
			if (ret)
				return ret;
			if (nid >= fs->max_nid) {
				lz_err("v6: nid %llu: entry %u points at nid %llu outside the image",
				       (unsigned long long)d.nid, i, (unsigned long long)nid);
				return -EFSCORRUPTED;
			}
			de.ino = nid_to_ino(fs, nid);
			de.type = v6_ftype[ft & 7];
			ret = v6_check_ftype(fs, &d, de.name, de.name_len, nid, ft);
			if (ret)
				return ret;
			de.next_off = i + 1 < b.n ? (blk << V6_DIR_SHIFT) + i + 1 : (blk + 1) << V6_DIR_SHIFT;
			if (fill(arg, &de))
				return 0;
		}
	}
	return 0;
}

static ssize_t v6_readlink(struct image *img, uint64_t ino, char *buf, size_t size)
{
	struct rafs *fs = rafs_from_img(img);
	uint32_t bs = 1u << fs->blkbits, blen;
	const uint8_t *p;
	struct v6_ino in;
	size_t done = 0;
	int ret;

	ret = v6_load_ino(fs, ino, &in);
	if (ret)
		return ret;
	if (!S_ISLNK(in.mode))
		return -EINVAL;
	for (uint64_t i = 0; done < in.size; i++) {
		ret = v6_block(fs, &in, i, &p, &blen);
		if (ret)
			return ret;
		if (done < size)
			memcpy(buf + done, p, LZ_MIN((size_t)blen, size - done));
		done += blen;
		(void)bs;
	}
	return (ssize_t)in.size;
}

static const char *const v6_xprefix[] = {
	[1] = "user.", [2] = "system.posix_acl_access", [3] = "system.posix_acl_default",
	[4] = "trusted.", [6] = "security.",
};

static int v6_xattr_walk(const struct rafs *fs, const struct v6_ino *in, rafs_xattr_fn fn, void *arg)
{
	const uint8_t *x = fs->base + in->off + in->isz;
	uint32_t p;

	if (!in->xsize)
		return 0;
	if (x[4] != 0) {
		lz_err("v6: nid %llu: shared xattrs are not used by RAFS", (unsigned long long)in->nid);
		return -EFSCORRUPTED;
	}
	for (p = 12; p + 4 <= in->xsize;) {
		uint8_t nl = x[p], idx = x[p + 1];
		uint16_t vl = lz_get_le16(x + p + 2);
		uint32_t elen = LZ_ALIGN_UP(4u + nl + vl, 4u);
		int ret;

		if (elen > in->xsize - p || idx >= LZ_ARRAY_SIZE(v6_xprefix) || !v6_xprefix[idx] ||
		    (nl == 0 && idx != 2 && idx != 3) || memchr(x + p + 4, 0, nl)) {
			lz_err("v6: nid %llu: bad inline xattr entry at byte %u (index %u, name %u, value %u)",
			       (unsigned long long)in->nid, p, idx, nl, vl);
			return -EFSCORRUPTED;
		}
		ret = fn(arg, v6_xprefix[idx], (const char *)x + p + 4, nl, x + p + 4 + nl, vl);
		if (ret)
			return ret;
		p += elen;
	}
	return 0;
}

static ssize_t v6_listxattr(struct image *img, uint64_t ino, char *buf, size_t size)
{
	struct rafs *fs = rafs_from_img(img);
	struct rafs_xctx x = { .buf = buf, .size = size };
	struct v6_ino in;
	int ret = v6_load_ino(fs, ino, &in);

	if (ret)
		return ret;
	ret = v6_xattr_walk(fs, &in, rafs_xlist_fn, &x);
	return ret ? ret : (ssize_t)x.used;
}

static ssize_t v6_getxattr(struct image *img, uint64_t ino, const char *name, void *buf, size_t size)
{
	struct rafs *fs = rafs_from_img(img);
	struct rafs_xctx x = { .want = name, .vbuf = buf, .size = size, .found = -ENODATA };
	struct v6_ino in;
	int ret = v6_load_ino(fs, ino, &in);

	if (ret)
		return ret;
	ret = v6_xattr_walk(fs, &in, rafs_xget_fn, &x);
	return ret < 0 ? ret : x.found;
}

/* Chunk k of a chunk-based file. */
static int v6_chunk_at(struct rafs *fs, const struct v6_ino *in, uint64_t k, struct img_chunk *c)
{
	uint64_t base = LZ_ALIGN_UP(in->off + in->isz + in->xsize, 8ull), need;
	const uint8_t *e = fs->base + base + 8 * k;
	uint16_t lo = lz_get_le16(e), hi = lz_get_le16(e + 2);
	uint32_t blk = lz_get_le32(e + 4);
	int ret;

	need = LZ_MIN(in->size - k * fs->chunk_size, (uint64_t)fs->chunk_size);
	if (blk == EROFS_NULL_ADDR) {
		memset(c, 0, sizeof(*c));
		c->flags = IMG_CHUNK_HOLE;
		c->uncompressed_size = (uint32_t)need;
		c->file_offset = k * fs->chunk_size;
		return 0;
	}
	if ((hi & 0xff) == 0) {
		lz_err("v6: nid %llu chunk %llu: device id 0 (the bootstrap) holds no chunk data",
		       (unsigned long long)in->nid, (unsigned long long)k);
		return -EFSCORRUPTED;
	}
	ret = rafs_v6_ci_get(fs, (hi & 0xffu) - 1, (uint32_t)(hi >> 8) << 16 | lo, c);
	if (ret)
		return ret;
	c->file_offset = k * fs->chunk_size;
	if (c->uncompressed_size != need || (c->uncompressed_offset >> fs->blkbits) != blk) {
		lz_err("v6: nid %llu chunk %llu: chunk info (%u bytes at block %llu) does not match the file (%llu bytes at block %u)",
		       (unsigned long long)in->nid, (unsigned long long)k, c->uncompressed_size,
		       (unsigned long long)(c->uncompressed_offset >> fs->blkbits),
		       (unsigned long long)need, blk);
		return -EFSCORRUPTED;
	}
	return 0;
}

static int v6_file(const struct rafs *fs, uint64_t ino, struct v6_ino *in, uint64_t *nchunks)
{
	int ret = v6_load_ino(fs, ino, in);
	uint64_t base;

	if (ret)
		return ret;
	if (!S_ISREG(in->mode))
		return -EISDIR;
	*nchunks = LZ_DIV_ROUND_UP(in->size, fs->chunk_size);
	if (!*nchunks)
		return 0;
	if (!(in->u & EROFS_CHUNK_FORMAT_INDEXES)) {
		lz_err("v6: nid %llu: chunk format 0x%x without chunk indexes is not RAFS",
		       (unsigned long long)in->nid, in->u);
		return -EOPNOTSUPP;
	}
	base = LZ_ALIGN_UP(in->off + in->isz + in->xsize, 8ull);
	if (*nchunks > fs->len / 8 || !lz_range_ok(base, *nchunks * 8, fs->len)) {
		lz_err("v6: nid %llu: %llu chunk indexes run past the end of the bootstrap",
		       (unsigned long long)in->nid, (unsigned long long)*nchunks);
		return -EFSCORRUPTED;
	}
	return 0;
}

static int v6_next_chunk(struct rafs *fs, void *arg, uint64_t k, struct img_chunk *c)
{
	return v6_chunk_at(fs, arg, k, c);
}

static ssize_t v6_read(struct image *img, uint64_t ino, void *buf, size_t size, uint64_t off)
{
	struct rafs *fs = rafs_from_img(img);
	struct img_chunk c;
	struct v6_ino in;
	struct rafs_next next = { .fn = v6_next_chunk, .arg = &in };
	uint64_t nchunks, end, pos;
	uint8_t *dst = buf;
	int ret;

	ret = v6_file(fs, ino, &in, &nchunks);
	if (ret)
		return ret;
	if (off >= in.size)
		return 0;
	end = LZ_MIN(in.size, off + size);
	for (pos = off; pos < end;) {
		uint64_t k = pos / fs->chunk_size, skip, n;

		ret = v6_chunk_at(fs, &in, k, &c);
		if (ret)
			return ret;
		skip = pos - c.file_offset;
		n = LZ_MIN(end - pos, c.uncompressed_size - skip);
		next.k = k;
		next.nchunks = nchunks;
		ret = rafs_chunk_copy(fs, &c, skip, dst + (pos - off), n, &next);
		if (ret)
			return ret;
		pos += n;
	}
	return (ssize_t)(end - off);
}

static int v6_chunks(struct image *img, uint64_t ino, img_chunk_fn fn, void *arg)
{
	struct rafs *fs = rafs_from_img(img);
	struct v6_ino in;
	struct rafs_next file = { .fn = v6_next_chunk, .arg = &in };
	int ret;

	ret = v6_file(fs, ino, &in, &file.nchunks);
	if (ret)
		return ret == -EISDIR ? 0 : ret;
	return rafs_each_chunk(fs, &file, fn, arg);
}

static void v6_statfs(struct image *img, struct img_statfs *st)
{
	struct rafs *fs = rafs_from_img(img);

	rafs_statfs_fill(fs, st, LZ_DIV_ROUND_UP(fs->len, 4096), fs->v6_inos);
}

const struct image_ops rafs_v6_ops = {
	.getattr = v6_getattr,
	.lookup = v6_lookup,
	.readdir = v6_readdir,
	.readlink = v6_readlink,
	.listxattr = v6_listxattr,
	.getxattr = v6_getxattr,
	.read = v6_read,
	.chunks = v6_chunks,
	.statfs = v6_statfs,
	.close = rafs_img_close,
};

static int bits_set(uint64_t v)
{
	return __builtin_popcountll(v);
}

int rafs_v6_validate(struct rafs *fs)
{
	struct erofs_super sb;
	struct rafs_v6_ext_super ext;
	struct v6_ino root;
	uint64_t flags, bt_off, ct_off, ct_size;
	uint32_t bt_size, cs, ndev;
	int ret;

	if (fs->len < 4096 || fs->len % 4096) {
		lz_err("v6: bootstrap size %llu is not a non-zero multiple of 4096",
		       (unsigned long long)fs->len);
		return -EFSCORRUPTED;
	}
	memcpy(&sb, fs->base + RAFS_V6_SB_OFFSET, sizeof(sb));
	memcpy(&ext, fs->base + RAFS_V6_EXT_SB_OFFSET, sizeof(ext));
	if (LE32(sb, checksum) != 0 || !(LE32(sb, feature_compat) & EROFS_COMPAT_RAFS_V6) ||
	    sb.extslots != 0 || LE32(sb, xattr_blkaddr) != 0 || LE16(sb, devt_slotoff) != 11 ||
	    LE32(sb, feature_incompat) != (EROFS_INCOMPAT_CHUNKED | EROFS_INCOMPAT_DEVTABLE)) {
		lz_err("v6: not a RAFS v6 superblock (checksum 0x%x, compat 0x%x, incompat 0x%x, extslots %u, xattr_blkaddr %u, devt_slotoff %u)",
		       LE32(sb, checksum), LE32(sb, feature_compat), LE32(sb, feature_incompat),
		       sb.extslots, LE32(sb, xattr_blkaddr), LE16(sb, devt_slotoff));
		return -EFSCORRUPTED;
	}
	if (sb.blkszbits != 12) {
		lz_err("v6: block size 2^%u is not supported (only 4096; 512 is tarfs)", sb.blkszbits);
		return -EOPNOTSUPP;
	}
	fs->blkbits = 12;
	flags = LE64(ext, flags);
	if (flags & ~RAFS_SF_KNOWN) {
		lz_err("v6: unknown superblock flags 0x%llx", (unsigned long long)(flags & ~RAFS_SF_KNOWN));
		return -EOPNOTSUPP;
	}
	if (bits_set(flags & (RAFS_SF_COMP_NONE | RAFS_SF_COMP_LZ4 | RAFS_SF_COMP_GZIP | RAFS_SF_COMP_ZSTD)) != 1 ||
	    bits_set(flags & (RAFS_SF_HASH_BLAKE3 | RAFS_SF_HASH_SHA256)) != 1) {
		lz_err("v6: flags 0x%llx need exactly one compressor and one digester",
		       (unsigned long long)flags);
		return -EFSCORRUPTED;
	}
	if (flags & (RAFS_SF_TARFS | RAFS_SF_ENC_AES128XTS)) {
		lz_err("v6: unsupported feature: %s", flags & RAFS_SF_TARFS ? "tarfs" : "encryption");
		return -EOPNOTSUPP;
	}
	fs->flags = flags;
	fs->digester = (flags & RAFS_SF_HASH_BLAKE3) ? LZ_DIGEST_BLAKE3 : LZ_DIGEST_SHA256;
	fs->comp = (flags & RAFS_SF_COMP_NONE) ? LZ_COMP_NONE : (flags & RAFS_SF_COMP_LZ4) ? LZ_COMP_LZ4 :
		   (flags & RAFS_SF_COMP_GZIP) ? LZ_COMP_GZIP : LZ_COMP_ZSTD;
	cs = LE32(ext, chunk_size);
	if (cs < RAFS_MIN_CHUNK_SIZE || cs > RAFS_MAX_CHUNK_SIZE || (cs & (cs - 1))) {
		lz_err("v6: chunk size %u is not a power of two in [4096, 16 MiB]", cs);
		return -EFSCORRUPTED;
	}
	fs->chunk_size = cs;
	fs->meta_off = (uint64_t)LE32(sb, meta_blkaddr) << fs->blkbits;
	if (fs->meta_off >= fs->len) {
		lz_err("v6: meta_blkaddr %u outside the bootstrap", LE32(sb, meta_blkaddr));
		return -EFSCORRUPTED;
	}
	fs->max_nid = (fs->len - fs->meta_off) / 32;
	fs->root_nid = LE16(sb, root_nid);
	fs->v6_inos = LE64(sb, inos);
	fs->build_time = (int64_t)LE64(sb, build_time);
	fs->build_time_nsec = LE32(sb, build_time_nsec);
	if (fs->v6_inos == 0) {
		lz_err("v6: superblock counts 0 inodes");
		return -EFSCORRUPTED;
	}

	bt_off = LE64(ext, blob_table_offset);
	bt_size = LE32(ext, blob_table_size);
	ndev = LE16(sb, extra_devices);
	if (bt_size % sizeof(struct rafs_v6_blob) || bt_size / sizeof(struct rafs_v6_blob) != ndev ||
	    ndev > RAFS_MAX_BLOBS || (bt_size && (bt_off < 4096 || !lz_range_ok(bt_off, bt_size, fs->len))) ||
	    !lz_range_ok(RAFS_V6_DEVT_OFFSET, (uint64_t)ndev * 128, fs->len)) {
		lz_err("v6: blob table (%u bytes at %llu) does not hold the %u devices or lies outside the bootstrap",
		       bt_size, (unsigned long long)bt_off, ndev);
		return -EFSCORRUPTED;
	}
	ct_off = LE64(ext, chunk_table_offset);
	ct_size = LE64(ext, chunk_table_size);
	if (ct_size && (ct_size % sizeof(struct rafs_chunk_info) || !lz_range_ok(ct_off, ct_size, fs->len))) {
		lz_err("v6: chunk table (%llu bytes at %llu) is malformed or outside the bootstrap",
		       (unsigned long long)ct_size, (unsigned long long)ct_off);
		return -EFSCORRUPTED;
	}
	fs->chunk_table_off = ct_off;
	fs->chunk_table_size = ct_size;
	fs->v6_prefetch_off = LE64(ext, prefetch_table_offset);
	fs->v6_prefetch_size = LE32(ext, prefetch_table_size);
	if (!fs->v6_prefetch_off || fs->v6_prefetch_size % 4 ||
	    !lz_range_ok(fs->v6_prefetch_off, fs->v6_prefetch_size, fs->len))
		fs->v6_prefetch_size = 0; /* a hint only: drop a bad table */

	fs->blobs = lz_calloc(ndev ? ndev : 1, sizeof(*fs->blobs));
	if (!fs->blobs)
		return -ENOMEM;
	fs->nblobs = ndev;
	for (uint32_t i = 0; i < ndev; i++) {
		struct rafs_v6_blob e;
		struct rafs_blob *b = &fs->blobs[i];
		size_t idlen;

		memcpy(&e, fs->base + bt_off + (uint64_t)i * sizeof(e), sizeof(e));
		idlen = strnlen((const char *)e.blob_id, sizeof(e.blob_id));
		if (rafs_blob_id_ok((const char *)e.blob_id, idlen) || LE32(e, blob_index) != i) {
			lz_err("v6: blob table entry %u: bad blob id or index %u", i, LE32(e, blob_index));
			return -EFSCORRUPTED;
		}
		memcpy(b->id, e.blob_id, idlen);
		b->chunk_count = LE32(e, chunk_count);
		b->features = LE32(e, features);
		b->comp = (int)LE32(e, compression_algo);
		b->digester = (int)LE32(e, digest_algo);
		b->csize = LE64(e, compressed_size);
		b->usize = LE64(e, uncompressed_size);
		b->ci_comp = (int)LE32(e, ci_compressor);
		b->ci_off = LE64(e, ci_offset);
		b->ci_csize = LE64(e, ci_compressed_size);
		b->ci_usize = LE64(e, ci_uncompressed_size);
		if (LE32(e, chunk_size) != cs || b->chunk_count > RAFS_MAX_CHUNKS_PER_BLOB ||
		    b->comp > LZ_COMP_ZSTD || b->comp < 0 || b->digester > LZ_DIGEST_SHA256 ||
		    b->ci_comp > LZ_COMP_ZSTD || b->ci_comp < 0 || b->ci_csize > b->ci_usize) {
			lz_err("v6: blob %u (%s): chunk size %u, %u chunks, compressor %d, digester %d, CI %llu/%llu bytes: invalid",
			       i, b->id, LE32(e, chunk_size), b->chunk_count, b->comp, b->digester,
			       (unsigned long long)b->ci_csize, (unsigned long long)b->ci_usize);
			return -EFSCORRUPTED;
		}
		if (b->features & (RAFS_BF_INCOMPAT_MASK | RAFS_BF_V5_NO_EXT)) {
			lz_err("v6: blob %u: incompatible features 0x%x", i, b->features);
			return -EOPNOTSUPP;
		}
	}
	ret = v6_load(fs, fs->root_nid, &root);
	if (ret)
		return ret;
	if (!S_ISDIR(root.mode)) {
		lz_err("v6: root nid %llu is not a directory (mode 0%o)", (unsigned long long)fs->root_nid,
		       root.mode);
		return -EFSCORRUPTED;
	}
	return 0;
}
