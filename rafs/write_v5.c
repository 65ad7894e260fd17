/* SPDX-License-Identifier: Apache-2.0 */
#define LZ_MOD "convert"
#include "write_int.h"

#include <stdlib.h>
#include <sys/stat.h>

/*
 * v5 numbering: the children of a directory get consecutive indexes, then
 * each child directory is numbered in turn. Every link of a hard-linked
 * file gets its own index and record; i_ino names the first one.
 */
static int number(struct bnode *d, uint64_t *next, struct bnode **byidx, int depth)
{
	if (depth > 8192)
		return -ELOOP;
	for (uint32_t i = 0; i < d->nkids; i++) {
		d->kids[i]->index = (*next)++;
		byidx[d->kids[i]->index] = d->kids[i];
	}
	for (uint32_t i = 0; i < d->nkids; i++) {
		if (S_ISDIR(d->kids[i]->mode)) {
			int ret = number(d->kids[i], next, byidx, depth + 1);

			if (ret)
				return ret;
		}
	}
	return 0;
}

static uint64_t rec_size(const struct bnode *n, uint64_t xtotal)
{
	uint64_t s = 128 + LZ_ALIGN_UP((uint64_t)n->name_len, 8ull);

	if (S_ISLNK(n->mode))
		s += LZ_ALIGN_UP((uint64_t)strlen(n->target), 8ull);
	if (n->nx)
		s += 8 + LZ_ALIGN_UP(xtotal, 8ull);
	if (S_ISREG(n->mode) && n->data)
		s += 80ull * n->data->nchunks;
	return s;
}

static uint64_t xattr_total(const struct bnode *n)
{
	uint64_t t = 0;

	for (uint32_t i = 0; i < n->nx; i++)
		t += 4 + strlen(n->xattrs[i].name) + 1 + n->xattrs[i].len;
	return t;
}

static void digest_of(struct builder *b, struct bnode *n, int dig)
{
	if (S_ISDIR(n->mode)) {
		uint8_t *cat = n->nkids ? lz_malloc(32ull * n->nkids) : NULL;

		for (uint32_t i = 0; i < n->nkids; i++) {
			digest_of(b, n->kids[i], dig);
			if (cat)
				memcpy(cat + 32ull * i, n->kids[i]->digest, 32);
		}
		lz_digest(dig, cat ? cat : (const uint8_t *)"", cat ? 32ull * n->nkids : 0, n->digest);
		free(cat);
	} else if (S_ISLNK(n->mode)) {
		lz_digest(dig, n->target, strlen(n->target), n->digest);
	} else if (S_ISREG(n->mode) && n->data && n->data->nchunks) {
		uint8_t *cat = lz_malloc(32ull * n->data->nchunks);

		if (cat) {
			for (uint32_t k = 0; k < n->data->nchunks; k++)
				memcpy(cat + 32ull * k, b->chunks[n->data->chunks[k]].digest, 32);
			lz_digest(dig, cat, 32ull * n->data->nchunks, n->digest);
			free(cat);
		}
	} else {
		lz_digest(dig, "", 0, n->digest);
	}
}

int rafs_write_v5(struct builder *b, uint8_t **out, size_t *len)
{
	struct wctx w;
	struct bnode **byidx = NULL;
	uint64_t next = 2, entries, it_off, pf_off, bt_off, bt_size, ext_off, rec_off, total, inodes = 0;
	uint8_t *buf = NULL;
	bool any_xattr = false;
	int comp = b->o.compressor, ret;

	ret = rafs_wctx_init(b, &w);
	if (ret)
		goto out;
	byidx = lz_calloc(w.n + 2, sizeof(*byidx));
	if (!byidx) {
		ret = -ENOMEM;
		goto out;
	}
	b->root->index = 1;
	byidx[1] = b->root;
	ret = number(b->root, &next, byidx, 0);
	if (ret)
		goto out;
	entries = next - 1;
	if (entries > (1u << 29) / 8) {
		ret = -EFBIG;
		goto out;
	}
	/* a hard link's i_ino is the lowest index among its links */
	for (uint64_t i = 1; i <= entries; i++)
		if (byidx[i]->data)
			byidx[i]->data->owner = NULL;
	for (uint64_t i = 1; i <= entries; i++) {
		struct bnode *n = byidx[i];

		if (n->data && !n->data->owner)
			n->data->owner = n;
	}
	for (uint64_t i = 1; i <= entries; i++) {
		struct bnode *n = byidx[i];

		n->ino = (!S_ISDIR(n->mode) && n->data && n->data->links > 1) ? n->data->owner->index : i;
		if (n->ino == i)
			inodes++;
		if (n->nx)
			any_xattr = true;
	}
	digest_of(b, b->root, b->o.digester);

	it_off = RAFS_V5_SB_SIZE;
	pf_off = LZ_ALIGN_UP(it_off + 4 * entries, 8ull);
	bt_off = LZ_ALIGN_UP(pf_off + 4ull * b->nprefetch, 8ull);
	bt_size = 0;
	for (uint32_t i = 0; i < b->nblobs; i++)
		bt_size += 8 + strlen(b->blobs[i].id) + (i + 1 < b->nblobs ? 1 : 0);
	bt_size = LZ_ALIGN_UP(bt_size, 8ull);
	ext_off = bt_off + bt_size;
	rec_off = ext_off + 64ull * b->nblobs;
	total = rec_off;
	for (uint64_t i = 1; i <= entries; i++)
		total += rec_size(byidx[i], xattr_total(byidx[i]));
	ret = rafs_bootstrap_alloc(total, &buf);
	if (ret)
		goto out;
	{
		struct rafs_v5_super sb;

		memset(&sb, 0, sizeof(sb));
		lz_put_le32(&sb.magic, RAFS_V5_MAGIC);
		lz_put_le32(&sb.fs_version, RAFS_V5_VERSION);
		lz_put_le32(&sb.sb_size, RAFS_V5_SB_SIZE);
		lz_put_le32(&sb.block_size, b->o.chunk_size);
		lz_put_le64(&sb.flags,
			    (comp == LZ_COMP_NONE ? RAFS_SF_COMP_NONE : comp == LZ_COMP_LZ4 ? RAFS_SF_COMP_LZ4 :
			     comp == LZ_COMP_GZIP ? RAFS_SF_COMP_GZIP : RAFS_SF_COMP_ZSTD) |
			    (b->o.digester == LZ_DIGEST_SHA256 ? RAFS_SF_HASH_SHA256 : RAFS_SF_HASH_BLAKE3) |
			    RAFS_SF_EXPLICIT_UID | (any_xattr ? RAFS_SF_HAS_XATTR : 0));
		lz_put_le64(&sb.inodes_count, inodes);
		lz_put_le64(&sb.inode_table_offset, it_off);
		lz_put_le64(&sb.prefetch_table_offset, pf_off);
		lz_put_le64(&sb.blob_table_offset, bt_off);
		lz_put_le32(&sb.inode_table_entries, (uint32_t)entries);
		lz_put_le32(&sb.prefetch_table_entries, b->nprefetch);
		lz_put_le32(&sb.blob_table_size, (uint32_t)bt_size);
		lz_put_le32(&sb.ext_blob_table_entries, b->nblobs);
		lz_put_le64(&sb.ext_blob_table_offset, b->nblobs ? ext_off : 0);
		memcpy(buf, &sb, sizeof(sb));
	}
	for (uint32_t i = 0; i < b->nprefetch; i++) {
		struct bnode *p = b->prefetch[i];

		lz_put_le32(buf + pf_off + 4ull * i, (uint32_t)p->ino);
	}
	{
		uint8_t *t = buf + bt_off;

		for (uint32_t i = 0; i < b->nblobs; i++) {
			size_t l = strlen(b->blobs[i].id);

			t += 8; /* readahead offset and size: none */
			memcpy(t, b->blobs[i].id, l);
			t += l + 1;
		}
		for (uint32_t i = 0; i < b->nblobs; i++) {
			struct rafs_v5_ext_blob e;

			memset(&e, 0, sizeof(e));
			lz_put_le32(&e.chunk_count, b->blobs[i].chunk_count);
			lz_put_le64(&e.uncompressed_size, b->blobs[i].usize);
			lz_put_le64(&e.compressed_size, b->blobs[i].csize);
			memcpy(buf + ext_off + 64ull * i, &e, sizeof(e));
		}
	}
	{
		uint64_t off = rec_off;

		for (uint64_t i = 1; i <= entries; i++) {
			struct bnode *n = byidx[i];
			struct rafs_v5_inode r;
			uint64_t xt = xattr_total(n), size = 0, flags = 0;
			uint32_t nlink = 1, ccount = 0, cindex = 0;
			uint8_t *p = buf + off;

			lz_put_le32(buf + it_off + 4 * (i - 1), (uint32_t)(off >> 3));
			if (S_ISDIR(n->mode)) {
				uint64_t sum = 0;

				for (uint32_t k = 0; k < n->nkids; k++)
					sum += n->kids[k]->name_len + 8;
				size = sum ? LZ_ALIGN_UP(sum, 4096ull) : 4096;
				nlink = 2 + n->nsubdirs;
				ccount = n->nkids;
				cindex = n->nkids ? (uint32_t)n->kids[0]->index : 0;
			} else if (S_ISLNK(n->mode)) {
				size = strlen(n->target);
				flags |= RAFS_V5_IF_SYMLINK;
				nlink = n->data ? n->data->links : 1;
			} else if (!S_ISREG(n->mode)) {
				nlink = n->data ? n->data->links : 1;
			} else if (S_ISREG(n->mode)) {
				size = n->size;
				ccount = n->data ? n->data->nchunks : 0;
				nlink = n->data ? n->data->links : 1;
				if (nlink > 1)
					flags |= RAFS_V5_IF_HARDLINK;
			}
			if (n->nx)
				flags |= RAFS_V5_IF_XATTR;
			if (nlink > 1 && !S_ISDIR(n->mode))
				flags |= RAFS_V5_IF_HARDLINK;
			memset(&r, 0, sizeof(r));
			memcpy(r.digest, n->digest, 32);
			lz_put_le64(&r.parent, n->parent ? n->parent->index : 0);
			lz_put_le64(&r.ino, n->ino);
			lz_put_le32(&r.uid, n->uid);
			lz_put_le32(&r.gid, n->gid);
			lz_put_le32(&r.mode, n->mode);
			lz_put_le64(&r.size, size);
			lz_put_le64(&r.blocks, LZ_DIV_ROUND_UP(size, 512ull));
			lz_put_le64(&r.flags, flags);
			lz_put_le32(&r.nlink, nlink);
			lz_put_le32(&r.child_index, cindex);
			lz_put_le32(&r.child_count, ccount);
			lz_put_le16(&r.name_size, n->name_len);
			lz_put_le16(&r.symlink_size, S_ISLNK(n->mode) ? (uint16_t)size : 0);
			lz_put_le32(&r.rdev, rafs_encode_rdev(n->rmajor, n->rminor));
			lz_put_le32(&r.mtime_nsec, n->mtime_nsec);
			lz_put_le64(&r.mtime, (uint64_t)n->mtime);
			memcpy(p, &r, sizeof(r));
			p += sizeof(r);
			memcpy(p, n->name, n->name_len);
			p += LZ_ALIGN_UP((uint64_t)n->name_len, 8ull);
			if (S_ISLNK(n->mode)) {
				memcpy(p, n->target, (size_t)size);
				p += LZ_ALIGN_UP(size, 8ull);
			}
			if (n->nx) {
				uint8_t *x = p + 8;

				lz_put_le64(p, xt);
				for (uint32_t k = 0; k < n->nx; k++) {
					size_t nl = strlen(n->xattrs[k].name);

					lz_put_le32(x, (uint32_t)(nl + 1 + n->xattrs[k].len));
					memcpy(x + 4, n->xattrs[k].name, nl + 1);
					memcpy(x + 4 + nl + 1, n->xattrs[k].value, n->xattrs[k].len);
					x += 4 + nl + 1 + n->xattrs[k].len;
				}
				p += 8 + LZ_ALIGN_UP(xt, 8ull);
			}
			for (uint32_t k = 0; k < ccount && S_ISREG(n->mode); k++) {
				const struct bchunk *c = &b->chunks[n->data->chunks[k]];
				struct rafs_chunk_info ci;

				memset(&ci, 0, sizeof(ci));
				memcpy(ci.block_id, c->digest, 32);
				lz_put_le32(&ci.blob_index, c->blob);
				lz_put_le32(&ci.flags, c->compressed ? RAFS_CF_COMPRESSED : 0);
				lz_put_le32(&ci.compressed_size, c->csize);
				lz_put_le32(&ci.uncompressed_size, c->usize);
				lz_put_le64(&ci.compressed_offset, c->coff);
				lz_put_le64(&ci.uncompressed_offset, c->uoff);
				lz_put_le64(&ci.file_offset, (uint64_t)k * b->o.chunk_size);
				lz_put_le32(&ci.index, c->index);
				memcpy(p, &ci, sizeof(ci));
				p += sizeof(ci);
			}
			off += rec_size(n, xt);
		}
	}
	*out = buf;
	*len = (size_t)total;
	buf = NULL;
out:
	free(buf);
	free(byidx);
	rafs_wctx_exit(&w);
	return ret;
}
