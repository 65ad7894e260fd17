/* SPDX-License-Identifier: Apache-2.0 */
#define LZ_MOD "convert"
#include "write_int.h"

#include <stdlib.h>
#include <sys/stat.h>

#define BS 4096u

static const struct { const char *prefix; uint8_t index; } xprefixes[] = {
	{ "system.posix_acl_access", 2 }, { "system.posix_acl_default", 3 },
	{ "user.", 1 }, { "trusted.", 4 }, { "security.", 6 },
};

static int xattr_split(const char *name, uint8_t *index, const char **suffix)
{
	for (size_t i = 0; i < LZ_ARRAY_SIZE(xprefixes); i++) {
		size_t l = strlen(xprefixes[i].prefix);

		if (!strncmp(name, xprefixes[i].prefix, l)) {
			/* the two ACL names are whole names: nothing may follow */
			if (xprefixes[i].index <= 3 && xprefixes[i].index >= 2 && name[l])
				continue;
			*index = xprefixes[i].index;
			*suffix = name + l;
			return 0;
		}
	}
	lz_err("xattr %s: RAFS keeps only user., trusted., security. and POSIX ACL names", name);
	return -EOPNOTSUPP;
}

static int bx_cmp(const void *a, const void *b)
{
	return strcmp(((const struct bx *)a)->name, ((const struct bx *)b)->name);
}

static int xattr_size(struct bnode *n, uint32_t *out)
{
	uint32_t sz = 12;

	if (!n->nx) {
		*out = 0;
		return 0;
	}
	qsort(n->xattrs, n->nx, sizeof(*n->xattrs), bx_cmp);
	for (uint32_t i = 0; i < n->nx; i++) {
		const char *suf;
		uint8_t idx;
		int ret = xattr_split(n->xattrs[i].name, &idx, &suf);

		if (ret)
			return ret;
		if (strlen(suf) > 255 || n->xattrs[i].len > 65535)
			return -E2BIG;
		sz += LZ_ALIGN_UP(4u + (uint32_t)strlen(suf) + n->xattrs[i].len, 4u);
	}
	/* the inline area is sized by a 16-bit count of 4-byte words */
	if ((sz - 12) / 4 + 1 > 0xffff) {
		lz_err("%s: xattrs too large for an inline area", n->name);
		return -E2BIG;
	}
	*out = sz;
	return 0;
}

/* Directory entries, "." and ".." included, sorted bytewise. */
struct dent {
	const char *name;
	uint16_t len;
	struct bnode *target;
};

static int dent_cmp(const void *a, const void *b)
{
	const struct dent *x = a, *y = b;
	int c = memcmp(x->name, y->name, LZ_MIN(x->len, y->len));

	return c ? c : (x->len < y->len ? -1 : x->len > y->len);
}

static int dir_entries(struct bnode *d, struct dent **out)
{
	struct dent *e = lz_malloc(((size_t)d->nkids + 2) * sizeof(*e));

	if (!e)
		return -ENOMEM;
	e[0] = (struct dent){ ".", 1, d };
	e[1] = (struct dent){ "..", 2, d->parent ? d->parent : d };
	for (uint32_t i = 0; i < d->nkids; i++)
		e[i + 2] = (struct dent){ d->kids[i]->name, d->kids[i]->name_len, d->kids[i] };
	qsort(e, (size_t)d->nkids + 2, sizeof(*e), dent_cmp);
	*out = e;
	return 0;
}

static uint64_t dir_size(struct bnode *d, const struct dent *e, size_t n)
{
	uint64_t full = 0;
	uint32_t used = 0;

	for (size_t i = 0; i < n; i++) {
		if (used + 12 + e[i].len > BS) {
			full++;
			used = 0;
		}
		used += 12 + e[i].len;
	}
	return full * BS + used;
}

static uint8_t ftype(uint32_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG: return 1;
	case S_IFDIR: return 2;
	case S_IFCHR: return 3;
	case S_IFBLK: return 4;
	case S_IFIFO: return 5;
	case S_IFSOCK: return 6;
	case S_IFLNK: return 7;
	}
	return 0;
}

static struct bnode *owner_of(struct bnode *n)
{
	return n->data && n->data->owner ? n->data->owner : n;
}

/* Serialise a directory's blocks into dst (dsize bytes). */
static void dir_fill(uint8_t *dst, const struct dent *e, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint32_t used = 0, cnt = 0, nameoff;
		size_t j;

		for (j = i; j < n && used + 12 + e[j].len <= BS; j++, cnt++)
			used += 12 + e[j].len;
		nameoff = 12 * cnt;
		for (uint32_t k = 0; k < cnt; k++) {
			const struct dent *d = &e[i + k];
			uint8_t *de = dst + 12 * k;

			lz_put_le64(de, owner_of(d->target)->ino);
			lz_put_le16(de + 8, (uint16_t)nameoff);
			de[10] = ftype(d->target->mode);
			memcpy(dst + nameoff, d->name, d->len);
			nameoff += d->len;
		}
		dst += BS;
		i = j;
	}
}

int rafs_write_v6(struct builder *b, uint8_t **out, size_t *len)
{
	struct wctx w;
	uint64_t hdr_end, bt_off, pf_off, ibase, meta_off, cur, data_cur, ct_off, total, inos = 0;
	uint32_t chunk_bits = (uint32_t)__builtin_ctz(b->o.chunk_size);
	uint8_t *buf = NULL;
	struct dent **dents = NULL;
	bool any_xattr = false;
	uint64_t flags;
	int ret;

	ret = rafs_wctx_init(b, &w);
	if (ret)
		goto out;
	dents = lz_calloc(w.n ? w.n : 1, sizeof(*dents));
	if (!dents) {
		ret = -ENOMEM;
		goto out;
	}
	if (b->nblobs > RAFS_MAX_BLOBS) {
		lz_err("%u blobs: RAFS v6 addresses at most %d", b->nblobs, RAFS_MAX_BLOBS);
		ret = -E2BIG;
		goto out;
	}
	hdr_end = RAFS_V6_DEVT_OFFSET + 128ull * b->nblobs;
	bt_off = LZ_ALIGN_UP(LZ_MAX(hdr_end, (uint64_t)BS), (uint64_t)BS);
	pf_off = bt_off + 256ull * b->nblobs;
	ibase = LZ_ALIGN_UP(pf_off + 4ull * b->nprefetch, (uint64_t)BS);
	/* one block before the first inode, so the root never gets nid 0 */
	meta_off = ibase - BS;

	/* pass 1: sizes and inode placement, in pre-order (root first) */
	cur = ibase;
	for (size_t i = 0; i < w.n; i++) {
		struct bnode *n = w.order[i];
		uint64_t body = 0;

		if (owner_of(n) != n)
			continue; /* a further hard link: shares its owner's inode */
		ret = xattr_size(n, &n->xsize);
		if (ret)
			goto out;
		if (n->nx)
			any_xattr = true;
		n->layout = EROFS_LAYOUT_FLAT_PLAIN;
		if (S_ISDIR(n->mode)) {
			ret = dir_entries(n, &dents[i]);
			if (ret)
				goto out;
			n->dsize = dir_size(n, dents[i], (size_t)n->nkids + 2);
		} else if (S_ISLNK(n->mode)) {
			n->dsize = strlen(n->target);
		} else if (S_ISREG(n->mode)) {
			n->layout = EROFS_LAYOUT_CHUNK_BASED;
		}
		if (S_ISDIR(n->mode) || S_ISLNK(n->mode)) {
			uint32_t tail = (uint32_t)(n->dsize % BS);

			if (tail && 64 + n->xsize + tail <= BS) {
				n->layout = EROFS_LAYOUT_FLAT_INLINE;
				/* the kernel refuses an inline tail that crosses a block */
				if (cur % BS + 64 + n->xsize + tail > BS)
					cur = LZ_ALIGN_UP(cur, (uint64_t)BS);
				body = tail;
			}
		} else if (S_ISREG(n->mode)) {
			uint64_t nch = n->data ? n->data->nchunks : 0;

			body = LZ_ALIGN_UP(cur + 64 + n->xsize, 8ull) - (cur + 64 + n->xsize) + 8 * nch;
		}
		n->off = cur;
		n->ino = (cur - meta_off) / 32;
		cur = LZ_ALIGN_UP(cur + 64 + n->xsize + body, 32ull);
		inos++;
	}
	if (b->root->ino > 0xffff) {
		lz_err("root nid %llu does not fit 16 bits", (unsigned long long)b->root->ino);
		ret = -EOVERFLOW;
		goto out;
	}
	/* pass 2: plain data blocks after the inodes */
	data_cur = LZ_ALIGN_UP(cur, (uint64_t)BS);
	for (size_t i = 0; i < w.n; i++) {
		struct bnode *n = w.order[i];
		uint64_t nblocks;

		if (owner_of(n) != n || !(S_ISDIR(n->mode) || S_ISLNK(n->mode)))
			continue;
		nblocks = n->layout == EROFS_LAYOUT_FLAT_INLINE ? n->dsize / BS : LZ_DIV_ROUND_UP(n->dsize, BS);
		n->blk = nblocks ? data_cur / BS : 0;
		data_cur += nblocks * BS;
	}
	if (data_cur / BS > UINT32_MAX) {
		ret = -EFBIG;
		goto out;
	}
	ct_off = LZ_ALIGN_UP(data_cur, (uint64_t)BS);
	total = LZ_ALIGN_UP(ct_off + 80ull * b->nchunks, (uint64_t)BS);
	ret = rafs_bootstrap_alloc(total, &buf);
	if (ret)
		goto out;

	/* superblocks */
	{
		struct erofs_super sb;
		struct rafs_v6_ext_super ext;
		uint64_t blocks = 0;
		int comp = b->o.aligned ? LZ_COMP_NONE : b->o.compressor;

		for (uint32_t i = 0; i < b->nblobs; i++)
			blocks += b->blobs[i].usize / BS;
		memset(&sb, 0, sizeof(sb));
		lz_put_le32(&sb.magic, EROFS_MAGIC);
		lz_put_le32(&sb.feature_compat, EROFS_COMPAT_RAFS_V6);
		sb.blkszbits = 12;
		lz_put_le16(&sb.root_nid, (uint16_t)b->root->ino);
		lz_put_le64(&sb.inos, inos);
		lz_put_le32(&sb.blocks, (uint32_t)LZ_MIN(blocks, (uint64_t)UINT32_MAX));
		lz_put_le32(&sb.meta_blkaddr, (uint32_t)(meta_off / BS));
		lz_put_le32(&sb.feature_incompat, EROFS_INCOMPAT_CHUNKED | EROFS_INCOMPAT_DEVTABLE);
		lz_put_le16(&sb.extra_devices, (uint16_t)b->nblobs);
		lz_put_le16(&sb.devt_slotoff, RAFS_V6_DEVT_OFFSET / 128);
		memcpy(buf + RAFS_V6_SB_OFFSET, &sb, sizeof(sb));

		flags = (comp == LZ_COMP_NONE ? RAFS_SF_COMP_NONE : comp == LZ_COMP_LZ4 ? RAFS_SF_COMP_LZ4 :
			 comp == LZ_COMP_GZIP ? RAFS_SF_COMP_GZIP : RAFS_SF_COMP_ZSTD) |
			(b->o.digester == LZ_DIGEST_SHA256 ? RAFS_SF_HASH_SHA256 : RAFS_SF_HASH_BLAKE3) |
			RAFS_SF_EXPLICIT_UID | (any_xattr ? RAFS_SF_HAS_XATTR : 0);
		memset(&ext, 0, sizeof(ext));
		lz_put_le64(&ext.flags, flags);
		lz_put_le64(&ext.blob_table_offset, bt_off);
		lz_put_le32(&ext.blob_table_size, 256u * b->nblobs);
		lz_put_le32(&ext.chunk_size, b->o.chunk_size);
		lz_put_le64(&ext.chunk_table_offset, b->nchunks ? ct_off : 0);
		lz_put_le64(&ext.chunk_table_size, 80ull * b->nchunks);
		lz_put_le64(&ext.prefetch_table_offset, b->nprefetch ? pf_off : 0);
		lz_put_le32(&ext.prefetch_table_size, 4u * b->nprefetch);
		memcpy(buf + RAFS_V6_EXT_SB_OFFSET, &ext, sizeof(ext));
	}
	for (uint32_t i = 0; i < b->nblobs; i++) {
		const struct bblob *bl = &b->blobs[i];
		struct erofs_device_slot ds;
		struct rafs_v6_blob e;

		memset(&ds, 0, sizeof(ds));
		memcpy(ds.tag, bl->id, strnlen(bl->id, sizeof(ds.tag)));
		lz_put_le32(&ds.blocks, (uint32_t)LZ_MAX(bl->usize / BS, 1ull));
		memcpy(buf + RAFS_V6_DEVT_OFFSET + 128ull * i, &ds, sizeof(ds));

		memset(&e, 0, sizeof(e));
		memcpy(e.blob_id, bl->id, strnlen(bl->id, sizeof(e.blob_id)));
		lz_put_le32(&e.blob_index, i);
		lz_put_le32(&e.chunk_size, b->o.chunk_size);
		lz_put_le32(&e.chunk_count, bl->chunk_count);
		lz_put_le32(&e.compression_algo, (uint32_t)bl->comp);
		lz_put_le32(&e.digest_algo, b->o.digester == LZ_DIGEST_SHA256 ? 1 : 0);
		lz_put_le32(&e.features, bl->features | RAFS_BF_ALIGNED);
		lz_put_le64(&e.compressed_size, bl->csize);
		lz_put_le64(&e.uncompressed_size, bl->usize);
		lz_put_le32(&e.ci_compressor, (uint32_t)bl->ci_comp);
		lz_put_le64(&e.ci_offset, bl->ci_off);
		lz_put_le64(&e.ci_compressed_size, bl->ci_csize);
		lz_put_le64(&e.ci_uncompressed_size, bl->ci_usize);
		memcpy(buf + bt_off + 256ull * i, &e, sizeof(e));
	}
	for (uint32_t i = 0; i < b->nprefetch; i++)
		lz_put_le32(buf + pf_off + 4ull * i, (uint32_t)owner_of(b->prefetch[i])->ino);

	/* inodes and their inline parts */
	for (size_t i = 0, seq = 1; i < w.n; i++) {
		struct bnode *n = w.order[i];
		struct erofs_inode_extended ie;
		uint8_t *p = buf + n->off;
		uint32_t u = 0, nlink = 1;

		if (owner_of(n) != n)
			continue;
		if (S_ISDIR(n->mode)) {
			nlink = 2 + n->nsubdirs;
			u = (uint32_t)n->blk;
		} else if (S_ISLNK(n->mode)) {
			u = (uint32_t)n->blk;
		} else if (S_ISREG(n->mode)) {
			u = EROFS_CHUNK_FORMAT_INDEXES | (chunk_bits - 12);
			nlink = n->data ? n->data->links : 1;
		} else if (S_ISCHR(n->mode) || S_ISBLK(n->mode)) {
			u = rafs_encode_rdev(n->rmajor, n->rminor);
		}
		if (!S_ISDIR(n->mode) && n->data)
			nlink = n->data->links;
		memset(&ie, 0, sizeof(ie));
		lz_put_le16(&ie.format, (uint16_t)(1 | n->layout << 1));
		lz_put_le16(&ie.xattr_icount, n->xsize ? (uint16_t)((n->xsize - 12) / 4 + 1) : 0);
		lz_put_le16(&ie.mode, (uint16_t)n->mode);
		lz_put_le64(&ie.size, S_ISREG(n->mode) ? n->size : (S_ISDIR(n->mode) || S_ISLNK(n->mode)) ? n->dsize : 0);
		lz_put_le32(&ie.u, u);
		lz_put_le32(&ie.ino, (uint32_t)seq++);
		lz_put_le32(&ie.uid, n->uid);
		lz_put_le32(&ie.gid, n->gid);
		lz_put_le64(&ie.mtime, (uint64_t)n->mtime);
		lz_put_le32(&ie.mtime_nsec, n->mtime_nsec);
		lz_put_le32(&ie.nlink, nlink);
		memcpy(p, &ie, sizeof(ie));
		p += sizeof(ie);
		if (n->xsize) {
			uint8_t *x = p + 12;

			for (uint32_t k = 0; k < n->nx; k++) {
				const char *suf;
				uint8_t idx;
				size_t sl;

				xattr_split(n->xattrs[k].name, &idx, &suf);
				sl = strlen(suf);
				x[0] = (uint8_t)sl;
				x[1] = idx;
				lz_put_le16(x + 2, (uint16_t)n->xattrs[k].len);
				memcpy(x + 4, suf, sl);
				memcpy(x + 4 + sl, n->xattrs[k].value, n->xattrs[k].len);
				x += LZ_ALIGN_UP(4 + sl + n->xattrs[k].len, 4u);
			}
			p += n->xsize;
		}
		if (S_ISREG(n->mode) && n->data) {
			uint8_t *ci = buf + LZ_ALIGN_UP(n->off + 64 + n->xsize, 8ull);

			for (uint32_t k = 0; k < n->data->nchunks; k++) {
				const struct bchunk *c = &b->chunks[n->data->chunks[k]];

				lz_put_le16(ci, (uint16_t)(c->index & 0xffff));
				lz_put_le16(ci + 2, (uint16_t)(((c->index >> 16) & 0xff) << 8 | (c->blob + 1)));
				lz_put_le32(ci + 4, (uint32_t)(c->uoff / BS));
				ci += 8;
			}
		} else if (S_ISDIR(n->mode) || S_ISLNK(n->mode)) {
			uint8_t *tmp = lz_calloc(1, (size_t)LZ_ALIGN_UP(n->dsize, (uint64_t)BS) + 1);
			uint64_t full;

			if (!tmp) {
				ret = -ENOMEM;
				goto out;
			}
			if (S_ISDIR(n->mode))
				dir_fill(tmp, dents[i], (size_t)n->nkids + 2);
			else
				memcpy(tmp, n->target, (size_t)n->dsize);
			full = n->layout == EROFS_LAYOUT_FLAT_INLINE ? n->dsize / BS * BS : n->dsize;
			memcpy(buf + n->blk * BS, tmp, (size_t)full);
			if (n->layout == EROFS_LAYOUT_FLAT_INLINE)
				memcpy(p, tmp + full, (size_t)(n->dsize - full));
			free(tmp);
		}
	}
	/* chunk table: the digests live here; readers match on (blob, index) */
	for (uint32_t i = 0; i < b->nchunks; i++) {
		const struct bchunk *c = &b->chunks[i];
		struct rafs_chunk_info r;

		memset(&r, 0, sizeof(r));
		memcpy(r.block_id, c->digest, 32);
		lz_put_le32(&r.blob_index, c->blob);
		lz_put_le32(&r.flags, c->compressed ? RAFS_CF_COMPRESSED : 0);
		lz_put_le32(&r.compressed_size, c->csize);
		lz_put_le32(&r.uncompressed_size, c->usize);
		lz_put_le64(&r.compressed_offset, c->coff);
		lz_put_le64(&r.uncompressed_offset, c->uoff);
		lz_put_le32(&r.index, c->index);
		memcpy(buf + ct_off + 80ull * i, &r, sizeof(r));
	}
	*out = buf;
	*len = (size_t)total;
	buf = NULL;
out:
	if (dents)
		for (size_t i = 0; i < w.n; i++)
			free(dents[i]);
	free(dents);
	free(buf);
	rafs_wctx_exit(&w);
	return ret;
}
