/* SPDX-License-Identifier: Apache-2.0 */
#define LZ_MOD "rafs"
#include "rafs_int.h"

#include <stdlib.h>
#include <sys/stat.h>

/* A v5 inode record, decoded and bounds-checked as a whole. */
struct v5_ino {
	uint32_t idx;          /* table index (1-based) the record was reached by */
	uint64_t ino, parent;
	uint32_t mode, uid, gid, nlink, rdev, mtime_nsec;
	uint64_t size, blocks, flags, mtime;
	uint32_t child_index, child_count;
	const char *name;
	uint16_t name_len;
	const char *symlink;
	uint16_t symlink_len;
	const uint8_t *xattr;  /* pairs, or NULL */
	uint64_t xattr_len;
	const uint8_t *chunks; /* child_count * 80 bytes for regular files */
};

static bool valid_type(uint32_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG: case S_IFDIR: case S_IFLNK: case S_IFCHR:
	case S_IFBLK: case S_IFIFO: case S_IFSOCK:
		return true;
	}
	return false;
}

static int v5_load(const struct rafs *fs, uint64_t idx, struct v5_ino *in)
{
	struct rafs_v5_inode r;
	uint64_t off, p;

	if (idx < 1 || idx > fs->v5_itable_entries) {
		lz_err("v5: inode index %llu outside [1, %u]", (unsigned long long)idx,
		       fs->v5_itable_entries);
		return -EFSCORRUPTED;
	}
	off = (uint64_t)lz_get_le32(fs->base + fs->v5_itable_off + 4 * (idx - 1)) << 3;
	if (off < RAFS_V5_SB_SIZE || !lz_range_ok(off, sizeof(r), fs->len)) {
		lz_err("v5: inode %llu: record offset %llu outside the bootstrap (%llu bytes)",
		       (unsigned long long)idx, (unsigned long long)off, (unsigned long long)fs->len);
		return -EFSCORRUPTED;
	}
	memcpy(&r, fs->base + off, sizeof(r));
	memset(in, 0, sizeof(*in));
	in->idx = (uint32_t)idx;
	in->ino = LE64(r, ino);
	in->parent = LE64(r, parent);
	in->mode = LE32(r, mode);
	in->uid = LE32(r, uid);
	in->gid = LE32(r, gid);
	in->nlink = LE32(r, nlink);
	in->rdev = LE32(r, rdev);
	in->size = LE64(r, size);
	in->blocks = LE64(r, blocks);
	in->flags = LE64(r, flags);
	in->mtime = LE64(r, mtime);
	in->mtime_nsec = LE32(r, mtime_nsec);
	in->child_index = LE32(r, child_index);
	in->child_count = LE32(r, child_count);
	in->name_len = LE16(r, name_size);
	in->symlink_len = LE16(r, symlink_size);

	if (!valid_type(in->mode)) {
		lz_err("v5: inode %llu: invalid mode 0%o", (unsigned long long)idx, in->mode);
		return -EFSCORRUPTED;
	}
	if (in->ino < 1 || in->ino > fs->v5_itable_entries || in->nlink == 0) {
		lz_err("v5: inode %llu: i_ino %llu outside [1, %u] or nlink 0",
		       (unsigned long long)idx, (unsigned long long)in->ino, fs->v5_itable_entries);
		return -EFSCORRUPTED;
	}
	/* directories are never hard links, and a link names its first record */
	if (in->ino != idx && (S_ISDIR(in->mode) || in->ino > idx)) {
		lz_err("v5: inode %llu: i_ino %llu differs but is not an earlier hard link",
		       (unsigned long long)idx, (unsigned long long)in->ino);
		return -EFSCORRUPTED;
	}
	if (in->name_len < 1 || in->name_len > IMG_NAME_MAX) {
		lz_err("v5: inode %llu: name length %u outside [1, %d]", (unsigned long long)idx,
		       in->name_len, IMG_NAME_MAX);
		return -EFSCORRUPTED;
	}
	p = off + sizeof(r);
	if (!lz_range_ok(p, LZ_ALIGN_UP((uint64_t)in->name_len, 8), fs->len))
		goto trunc;
	in->name = (const char *)fs->base + p;
	p += LZ_ALIGN_UP((uint64_t)in->name_len, 8);
	if (S_ISLNK(in->mode)) {
		if (in->symlink_len < 1 || in->symlink_len > RAFS_MAX_SYMLINK) {
			lz_err("v5: inode %llu: symlink length %u outside [1, %d]",
			       (unsigned long long)idx, in->symlink_len, RAFS_MAX_SYMLINK);
			return -EFSCORRUPTED;
		}
		if (!lz_range_ok(p, LZ_ALIGN_UP((uint64_t)in->symlink_len, 8), fs->len))
			goto trunc;
		in->symlink = (const char *)fs->base + p;
		p += LZ_ALIGN_UP((uint64_t)in->symlink_len, 8);
	}
	if (in->flags & RAFS_V5_IF_XATTR) {
		uint64_t total;

		if (!lz_range_ok(p, 8, fs->len))
			goto trunc;
		total = lz_get_le64(fs->base + p);
		if (total > RAFS_MAX_XATTR_BLOCK || !lz_range_ok(p + 8, LZ_ALIGN_UP(total, 8), fs->len)) {
			lz_err("v5: inode %llu: xattr block of %llu bytes is too large or truncated",
			       (unsigned long long)idx, (unsigned long long)total);
			return -EFSCORRUPTED;
		}
		in->xattr = fs->base + p + 8;
		in->xattr_len = total;
		p += 8 + LZ_ALIGN_UP(total, 8);
	}
	if (S_ISREG(in->mode)) {
		uint64_t max = LZ_DIV_ROUND_UP(in->size, fs->chunk_size);

		if (in->child_count > max) {
			lz_err("v5: inode %llu: %u chunks for %llu bytes (at most %llu)",
			       (unsigned long long)idx, in->child_count,
			       (unsigned long long)in->size, (unsigned long long)max);
			return -EFSCORRUPTED;
		}
		if (!lz_range_ok(p, (uint64_t)in->child_count * sizeof(struct rafs_chunk_info), fs->len))
			goto trunc;
		in->chunks = fs->base + p;
	} else if (S_ISDIR(in->mode) && in->child_count) {
		/* children come strictly after their parent: this rules out cycles */
		if (in->child_index <= idx || in->child_index > fs->v5_itable_entries ||
		    in->child_count > fs->v5_itable_entries - in->child_index + 1) {
			lz_err("v5: inode %llu: children [%u, +%u) outside (%llu, %u]",
			       (unsigned long long)idx, in->child_index, in->child_count,
			       (unsigned long long)idx, fs->v5_itable_entries);
			return -EFSCORRUPTED;
		}
	} else if (S_ISLNK(in->mode)) {
		in->size = in->symlink_len;
	}
	return 0;
trunc:
	lz_err("v5: inode %llu: record at %llu runs past the end of the bootstrap",
	       (unsigned long long)idx, (unsigned long long)off);
	return -EFSCORRUPTED;
}

/* An inode number as readdir and lookup hand it out: a hard link's own slot is not one. */
static int v5_load_ino(const struct rafs *fs, uint64_t ino, struct v5_ino *in)
{
	int ret;

	if (ino < 1 || ino > fs->v5_itable_entries)
		return -ENOENT;
	ret = v5_load(fs, ino, in);
	if (!ret && in->ino != ino)
		ret = -ENOENT;
	return ret;
}

static void v5_attr(const struct rafs *fs, const struct v5_ino *in, struct img_attr *a)
{
	a->ino = in->ino;
	a->mode = in->mode;
	a->nlink = in->nlink;
	a->size = in->size;
	a->blocks = S_ISREG(in->mode) ? LZ_DIV_ROUND_UP(in->size, 512) : in->blocks;
	rafs_attr_fill(fs, a, in->uid, in->gid, in->rdev, (int64_t)in->mtime, in->mtime_nsec);
}

static int v5_getattr(struct image *img, uint64_t ino, struct img_attr *a)
{
	struct rafs *fs = rafs_from_img(img);
	struct v5_ino in;
	int ret = v5_load_ino(fs, ino, &in);

	if (ret)
		return ret;
	v5_attr(fs, &in, a);
	return 0;
}

/* Load a child and resolve hard links to the record that owns the inode. */
static int v5_load_child(const struct rafs *fs, const struct v5_ino *dir, uint64_t idx,
			 struct v5_ino *in)
{
	int ret = v5_load(fs, idx, in);

	if (ret)
		return ret;
	if (in->parent != dir->ino && in->ino == idx) {
		lz_err("v5: inode %llu: parent %llu, but listed under directory %llu",
		       (unsigned long long)idx, (unsigned long long)in->parent,
		       (unsigned long long)dir->ino);
		return -EFSCORRUPTED;
	}
	if (in->ino != idx) {
		struct v5_ino t;

		/* readdir hands out i_ino: it must name a regular file's own record,
		 * not a directory (a directory hard link) or another link (a chain) */
		ret = v5_load(fs, in->ino, &t);
		if (ret)
			return ret;
		if (S_ISDIR(t.mode) || (t.mode & S_IFMT) != (in->mode & S_IFMT) || t.ino != in->ino) {
			lz_err("v5: inode %llu: hard link to inode %llu, which is a directory, another type, or does not own that number",
			       (unsigned long long)idx, (unsigned long long)in->ino);
			return -EFSCORRUPTED;
		}
	}
	return 0;
}

/* A directory by table index; a directory is never a hard link, so its own record. */
static int v5_dir(const struct rafs *fs, uint64_t dir, struct v5_ino *d)
{
	int ret;

	if (dir < 1 || dir > fs->v5_itable_entries)
		return -ENOENT;
	ret = v5_load(fs, dir, d);
	if (ret)
		return ret;
	return S_ISDIR(d->mode) ? 0 : -ENOTDIR;
}

static int v5_lookup(struct image *img, uint64_t dir, const char *name, size_t len,
		     struct img_attr *a)
{
	struct rafs *fs = rafs_from_img(img);
	struct v5_ino d, c;
	uint64_t lo, hi;
	int ret;

	ret = v5_dir(fs, dir, &d);
	if (ret)
		return ret;
	if (len == 0 || len > IMG_NAME_MAX)
		return len ? -ENAMETOOLONG : -ENOENT;
	lo = d.child_index;
	hi = (uint64_t)d.child_index + d.child_count;
	while (d.child_count && lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;
		int c2;

		ret = v5_load_child(fs, &d, mid, &c);
		if (ret)
			return ret;
		c2 = rafs_name_cmp(name, len, c.name, c.name_len);
		if (c2 == 0) {
			if (c.ino != mid) {
				struct v5_ino t;

				ret = v5_load(fs, c.ino, &t);
				if (ret)
					return ret;
				if (S_ISDIR(t.mode))
					return -EFSCORRUPTED;
				c = t;
			}
			v5_attr(fs, &c, a);
			return 0;
		}
		if (c2 < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return -ENOENT;
}

static int v5_readdir(struct image *img, uint64_t dir, uint64_t off, img_filldir_fn fill, void *arg)
{
	struct rafs *fs = rafs_from_img(img);
	struct img_dirent de;
	struct v5_ino d, c;
	int ret;

	ret = v5_dir(fs, dir, &d);
	if (ret)
		return ret;
	for (; off < 2 + (uint64_t)d.child_count; off++) {
		if (off < 2) {
			de.name = off ? ".." : ".";
			de.name_len = off + 1;
			de.ino = off ? (d.parent ? d.parent : d.ino) : d.ino;
			de.type = S_IFDIR;
		} else {
			ret = v5_load_child(fs, &d, d.child_index + off - 2, &c);
			if (ret)
				return ret;
			de.name = c.name;
			de.name_len = c.name_len;
			de.ino = c.ino;
			de.type = c.mode & S_IFMT;
		}
		de.next_off = off + 1;
		if (fill(arg, &de))
			break;
	}
	return 0;
}

static ssize_t v5_readlink(struct image *img, uint64_t ino, char *buf, size_t size)
{
	struct rafs *fs = rafs_from_img(img);
	struct v5_ino in;
	int ret = v5_load_ino(fs, ino, &in);

	if (ret)
		return ret;
	if (!S_ISLNK(in.mode))
		return -EINVAL;
	memcpy(buf, in.symlink, LZ_MIN(size, (size_t)in.symlink_len));
	return in.symlink_len;
}

/*
 * Walk the v5 xattr pairs: u32 pair_size, name, NUL, value. Calls fn for each;
 * a non-zero return from fn stops the walk and is returned.
 */
static int v5_xattr_walk(const struct v5_ino *in, rafs_xattr_fn fn, void *arg)
{
	uint64_t p = 0;

	while (p < in->xattr_len) {
		uint32_t sz;
		const uint8_t *pair, *nul;
		int ret;

		if (in->xattr_len - p < 4)
			goto bad;
		sz = lz_get_le32(in->xattr + p);
		p += 4;
		if (sz == 0 || sz > in->xattr_len - p)
			goto bad;
		pair = in->xattr + p;
		nul = memchr(pair, 0, sz);
		if (!nul || nul == pair || nul - pair > 255)
			goto bad;
		ret = fn(arg, "", (const char *)pair, (size_t)(nul - pair), nul + 1,
			 sz - (size_t)(nul - pair) - 1);
		if (ret)
			return ret;
		p += sz;
	}
	return 0;
bad:
	lz_err("v5: inode %u: malformed xattr pair at byte %llu", in->idx, (unsigned long long)p);
	return -EFSCORRUPTED;
}

static ssize_t v5_listxattr(struct image *img, uint64_t ino, char *buf, size_t size)
{
	struct rafs *fs = rafs_from_img(img);
	struct rafs_xctx x = { .buf = buf, .size = size };
	struct v5_ino in;
	int ret = v5_load_ino(fs, ino, &in);

	if (ret)
		return ret;
	ret = v5_xattr_walk(&in, rafs_xlist_fn, &x);
	return ret ? ret : (ssize_t)x.used;
}

static ssize_t v5_getxattr(struct image *img, uint64_t ino, const char *name, void *buf, size_t size)
{
	struct rafs *fs = rafs_from_img(img);
	struct rafs_xctx x = { .want = name, .vbuf = buf, .size = size, .found = -ENODATA };
	struct v5_ino in;
	int ret = v5_load_ino(fs, ino, &in);

	if (ret)
		return ret;
	ret = v5_xattr_walk(&in, rafs_xget_fn, &x);
	return ret < 0 ? ret : x.found;
}

static int v5_chunk_at(const struct rafs *fs, const struct v5_ino *in, uint32_t k, struct img_chunk *c)
{
	struct rafs_chunk_info ci;

	memcpy(&ci, in->chunks + (size_t)k * sizeof(ci), sizeof(ci));
	memset(c, 0, sizeof(*c));
	c->file_offset = LE64(ci, file_offset);
	c->compressed_offset = LE64(ci, compressed_offset);
	c->uncompressed_offset = LE64(ci, uncompressed_offset);
	c->compressed_size = LE32(ci, compressed_size);
	c->uncompressed_size = LE32(ci, uncompressed_size);
	c->blob_index = LE32(ci, blob_index);
	c->index = LE32(ci, index);
	c->digest = in->chunks + (size_t)k * sizeof(ci);
	{
		uint32_t f = LE32(ci, flags);

		c->flags = (f & RAFS_CF_COMPRESSED ? IMG_CHUNK_COMPRESSED : 0) |
			   (f & RAFS_CF_BATCH ? IMG_CHUNK_BATCH : 0) |
			   (f & RAFS_CF_ENCRYPTED ? IMG_CHUNK_ENCRYPTED : 0);
	}
	if (c->blob_index >= fs->nblobs || c->uncompressed_size > fs->chunk_size ||
	    !lz_range_ok(c->file_offset, c->uncompressed_size, in->size) ||
	    (!(c->flags & IMG_CHUNK_COMPRESSED) && c->compressed_size != c->uncompressed_size)) {
		lz_err("v5: inode %u chunk %u: blob %u, file range %llu+%u, sizes %u/%u invalid (file %llu bytes, %u blobs)",
		       in->idx, k, c->blob_index, (unsigned long long)c->file_offset,
		       c->uncompressed_size, c->compressed_size, c->uncompressed_size,
		       (unsigned long long)in->size, fs->nblobs);
		return -EFSCORRUPTED;
	}
	return 0;
}

static int v5_next_chunk(struct rafs *fs, void *arg, uint64_t k, struct img_chunk *c)
{
	return k > UINT32_MAX ? -EINVAL : v5_chunk_at(fs, arg, (uint32_t)k, c);
}

static ssize_t v5_read(struct image *img, uint64_t ino, void *buf, size_t size, uint64_t off)
{
	struct rafs *fs = rafs_from_img(img);
	struct img_chunk c;
	struct v5_ino in;
	struct rafs_next next = { .fn = v5_next_chunk, .arg = &in };
	uint8_t *dst = buf;
	uint64_t end, pos;
	uint32_t lo, hi;
	int ret;

	ret = v5_load_ino(fs, ino, &in);
	if (ret)
		return ret;
	if (!S_ISREG(in.mode))
		return -EISDIR;
	if (off >= in.size)
		return 0;
	end = LZ_MIN(in.size, off + size);
	/* binary search the last chunk starting at or before off: handles holes too */
	lo = 0;
	hi = in.child_count;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		ret = v5_chunk_at(fs, &in, mid, &c);
		if (ret)
			return ret;
		if (c.file_offset <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	pos = off;
	for (uint32_t k = lo ? lo - 1 : 0; pos < end; k++) {
		uint64_t cend, n;

		if (k >= in.child_count) {
			memset(dst + (pos - off), 0, end - pos);
			break;
		}
		ret = v5_chunk_at(fs, &in, k, &c);
		if (ret)
			return ret;
		cend = c.file_offset + c.uncompressed_size;
		if (cend <= pos)
			continue;
		if (c.file_offset > pos) {
			/* a hole before this chunk reads as zeros */
			n = LZ_MIN(c.file_offset, end) - pos;
			memset(dst + (pos - off), 0, n);
			pos += n;
			if (pos >= end)
				break;
		}
		n = LZ_MIN(cend, end) - pos;
		next.k = k;
		next.nchunks = in.child_count;
		ret = rafs_chunk_copy(fs, &c, pos - c.file_offset, dst + (pos - off), n, &next);
		if (ret)
			return ret;
		pos += n;
	}
	return (ssize_t)(end - off);
}

static int v5_chunks(struct image *img, uint64_t ino, img_chunk_fn fn, void *arg)
{
	struct rafs *fs = rafs_from_img(img);
	struct v5_ino in;
	struct rafs_next file = { .fn = v5_next_chunk, .arg = &in };
	int ret;

	ret = v5_load_ino(fs, ino, &in);
	if (ret)
		return ret;
	if (!S_ISREG(in.mode))
		return 0;
	file.nchunks = in.child_count;
	return rafs_each_chunk(fs, &file, fn, arg);
}

static void v5_statfs(struct image *img, struct img_statfs *st)
{
	struct rafs *fs = rafs_from_img(img);

	rafs_statfs_fill(fs, st, 0, fs->v5_inodes_count);
}

const struct image_ops rafs_v5_ops = {
	.getattr = v5_getattr,
	.lookup = v5_lookup,
	.readdir = v5_readdir,
	.readlink = v5_readlink,
	.listxattr = v5_listxattr,
	.getxattr = v5_getxattr,
	.read = v5_read,
	.chunks = v5_chunks,
	.statfs = v5_statfs,
	.close = rafs_img_close,
};

static int check_table(const struct rafs *fs, const char *what, uint64_t off, uint64_t size)
{
	if (size == 0)
		return 0;
	if (off < RAFS_V5_SB_SIZE || off % 8 || !lz_range_ok(off, size, fs->len)) {
		lz_err("v5: %s at %llu (+%llu bytes) is misaligned or outside [8192, %llu)", what,
		       (unsigned long long)off, (unsigned long long)size, (unsigned long long)fs->len);
		return -EFSCORRUPTED;
	}
	return 0;
}

int rafs_v5_validate(struct rafs *fs)
{
	struct rafs_v5_super sb;
	struct v5_ino root;
	uint64_t blob_off, ext_off, flags;
	uint32_t blob_size, ext_n, bs;
	int ret;

	if (fs->len < sizeof(sb)) {
		lz_err("v5: bootstrap of %llu bytes is shorter than the 8192-byte superblock",
		       (unsigned long long)fs->len);
		return -EFSCORRUPTED;
	}
	memcpy(&sb, fs->base, sizeof(sb));
	if (LE32(sb, sb_size) != RAFS_V5_SB_SIZE) {
		lz_err("v5: superblock size %u, expected 8192", LE32(sb, sb_size));
		return -EFSCORRUPTED;
	}
	bs = LE32(sb, block_size);
	if (bs < RAFS_MIN_CHUNK_SIZE || bs > RAFS_MAX_CHUNK_SIZE || (bs & (bs - 1))) {
		lz_err("v5: chunk size %u is not a power of two in [4096, 16 MiB]", bs);
		return -EFSCORRUPTED;
	}
	flags = LE64(sb, flags);
	if (flags & ~RAFS_SF_KNOWN) {
		lz_err("v5: unknown superblock flags 0x%llx", (unsigned long long)(flags & ~RAFS_SF_KNOWN));
		return -EOPNOTSUPP;
	}
	if (flags & (RAFS_SF_ENC_AES128XTS | RAFS_SF_TARFS)) {
		lz_err("v5: unsupported feature: %s", flags & RAFS_SF_TARFS ? "tarfs" : "encryption");
		return -EOPNOTSUPP;
	}
	fs->flags = flags;
	fs->chunk_size = bs;
	fs->comp = rafs_flags_compressor(flags);
	fs->digester = (flags & RAFS_SF_HASH_BLAKE3) ? LZ_DIGEST_BLAKE3 :
		       (flags & RAFS_SF_HASH_SHA256) ? LZ_DIGEST_SHA256 : LZ_DIGEST_BLAKE3;
	fs->v5_inodes_count = LE64(sb, inodes_count);
	fs->v5_itable_off = LE64(sb, inode_table_offset);
	fs->v5_itable_entries = LE32(sb, inode_table_entries);
	fs->v5_prefetch_off = LE64(sb, prefetch_table_offset);
	fs->v5_prefetch_entries = LE32(sb, prefetch_table_entries);
	blob_off = LE64(sb, blob_table_offset);
	blob_size = LE32(sb, blob_table_size);
	ext_off = LE64(sb, ext_blob_table_offset);
	ext_n = LE32(sb, ext_blob_table_entries);

	if (fs->v5_itable_entries == 0 || fs->v5_inodes_count > fs->v5_itable_entries) {
		lz_err("v5: %llu inodes for %u inode table slots", (unsigned long long)fs->v5_inodes_count,
		       fs->v5_itable_entries);
		return -EFSCORRUPTED;
	}
	ret = check_table(fs, "inode table", fs->v5_itable_off, 4ull * fs->v5_itable_entries);
	if (!ret)
		ret = check_table(fs, "prefetch table", fs->v5_prefetch_off, 4ull * fs->v5_prefetch_entries);
	if (!ret)
		ret = check_table(fs, "blob table", blob_off, blob_size);
	if (!ret && ext_off && ext_n)
		ret = check_table(fs, "extended blob table", ext_off, 64ull * ext_n);
	if (ret)
		return ret;
	if (blob_size == 0) {
		/* an image with no data at all is fine: every file is empty */
		fs->nblobs = 0;
		blob_off = 0;   /* unchecked when empty: keep base + blob_off in bounds */
	}
	/* parse the blob table: (u32, u32, id) entries separated by one NUL */
	{
		const uint8_t *t = fs->base + blob_off;
		uint64_t p = 0, n = 0;
		struct rafs_blob *blobs = NULL;

		while (blob_size - p > 8) {
			const uint8_t *id = t + p + 8, *nul;
			size_t idlen;
			struct rafs_blob *nb;

			nul = memchr(id, 0, blob_size - p - 8);
			idlen = nul ? (size_t)(nul - id) : blob_size - p - 8;
			if (n >= RAFS_MAX_BLOBS || rafs_blob_id_ok((const char *)id, idlen)) {
				lz_err("v5: blob table entry %llu: bad or too many blob ids",
				       (unsigned long long)n);
				free(blobs);
				return -EFSCORRUPTED;
			}
			nb = lz_realloc(blobs, (n + 1) * sizeof(*blobs));
			if (!nb) {
				free(blobs);
				return -ENOMEM;
			}
			blobs = nb;
			memset(&blobs[n], 0, sizeof(blobs[n]));
			memcpy(blobs[n].id, id, idlen);
			blobs[n].comp = fs->comp;
			blobs[n].digester = fs->digester;
			n++;
			p += 8 + idlen + 1;
			if (p >= blob_size)
				break;
		}
		fs->blobs = blobs;
		fs->nblobs = (uint32_t)n;
	}
	if (ext_off && ext_n) {
		if (ext_n != fs->nblobs) {
			lz_err("v5: %u extended blob entries for %u blobs", ext_n, fs->nblobs);
			return -EFSCORRUPTED;
		}
		for (uint32_t i = 0; i < ext_n; i++) {
			struct rafs_v5_ext_blob e;

			memcpy(&e, fs->base + ext_off + 64ull * i, sizeof(e));
			fs->blobs[i].chunk_count = LE32(e, chunk_count);
			fs->blobs[i].features = LE32(e, features);
			fs->blobs[i].usize = LE64(e, uncompressed_size);
			fs->blobs[i].csize = LE64(e, compressed_size);
			if (fs->blobs[i].features & (RAFS_BF_INCOMPAT_MASK | RAFS_BF_V5_NO_EXT)) {
				lz_err("v5: blob %u: incompatible features 0x%x", i, fs->blobs[i].features);
				return -EOPNOTSUPP;
			}
		}
	}
	ret = v5_load(fs, IMG_ROOT_INO, &root);
	if (ret)
		return ret;
	if (!S_ISDIR(root.mode) || root.ino != IMG_ROOT_INO) {
		lz_err("v5: root inode is not a directory numbered 1 (mode 0%o, i_ino %llu)", root.mode,
		       (unsigned long long)root.ino);
		return -EFSCORRUPTED;
	}
	return 0;
}
