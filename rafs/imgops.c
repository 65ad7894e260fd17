/* SPDX-License-Identifier: Apache-2.0 */
/*
 * imgops.c - what the v5 and v6 image_ops report the same way: owner, device
 * and time attributes, xattr listing and lookup, chunk walks, statfs, close.
 */
#define LZ_MOD "rafs"
#include "rafs_int.h"

#include <sys/stat.h>

void rafs_attr_fill(const struct rafs *fs, struct img_attr *a, uint32_t uid, uint32_t gid, uint32_t rdev,
		    int64_t mtime, uint32_t mtime_nsec)
{
	if (fs->flags & RAFS_SF_EXPLICIT_UID) {
		a->uid = uid;
		a->gid = gid;
	} else {
		a->uid = fs->uid;
		a->gid = fs->gid;
	}
	a->rdev = (S_ISCHR(a->mode) || S_ISBLK(a->mode)) ? rafs_decode_rdev(rdev) : 0;
	a->mtime = mtime;
	a->mtime_nsec = mtime_nsec < 1000000000u ? mtime_nsec : 0;
}

int rafs_xlist_fn(void *arg, const char *prefix, const char *suffix, size_t slen, const uint8_t *val,
		  size_t vlen)
{
	struct rafs_xctx *x = arg;
	size_t pl = strlen(prefix);

	(void)val;
	(void)vlen;
	if (x->size) {
		if (x->used + pl + slen + 1 > x->size)
			return -ERANGE;
		memcpy(x->buf + x->used, prefix, pl);
		memcpy(x->buf + x->used + pl, suffix, slen);
		x->buf[x->used + pl + slen] = 0;
	}
	x->used += pl + slen + 1;
	return 0;
}

int rafs_xget_fn(void *arg, const char *prefix, const char *suffix, size_t slen, const uint8_t *val,
		 size_t vlen)
{
	struct rafs_xctx *x = arg;
	size_t pl = strlen(prefix), wl = strlen(x->want);

	if (wl != pl + slen || memcmp(x->want, prefix, pl) || memcmp(x->want + pl, suffix, slen))
		return 0;
	if (x->size && vlen > x->size)
		return -ERANGE;
	if (x->size)
		memcpy(x->vbuf, val, vlen);
	x->found = (ssize_t)vlen;
	return 1;
}

int rafs_each_chunk(struct rafs *fs, const struct rafs_next *file, img_chunk_fn fn, void *arg)
{
	struct img_chunk c;
	int ret;

	for (uint64_t k = 0; k < file->nchunks; k++) {
		ret = file->fn(fs, file->arg, k, &c);
		if (!ret)
			ret = fn(arg, &c);
		if (ret)
			return ret;
	}
	return 0;
}

void rafs_statfs_fill(const struct rafs *fs, struct img_statfs *st, uint64_t blocks, uint64_t files)
{
	for (uint32_t i = 0; i < fs->nblobs; i++)
		blocks += LZ_DIV_ROUND_UP(fs->blobs[i].usize, 4096);
	st->bsize = 4096;
	st->blocks = blocks;
	st->files = files;
}

void rafs_img_close(struct image *img)
{
	rafs_close(rafs_from_img(img));
}
