/* SPDX-License-Identifier: Apache-2.0 */
#define LZ_MOD "merge"
#include "build_int.h"
#include "lazyimg/imgfs.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#define WH_PREFIX ".wh."
#define WH_OPAQUE ".wh..wh..opq"

struct layer {
	struct builder *b;
	struct rafs *fs;
	int index;
	uint32_t *blob_map;      /* layer blob index -> merged blob index */
	/* hard links inside the layer: ino -> data */
	uint64_t *hl_ino;
	struct bdata **hl_data;
	size_t nhl;
	/* chunk ids already imported: (merged blob, index) -> chunk id */
	int err;
	bool whiteouts;          /* pass 1: apply deletions; pass 2: add entries */
};

static const char *base_name(const char *path)
{
	const char *s = strrchr(path, '/');

	return s ? s + 1 : path;
}

static struct bnode *parent_of(struct builder *b, const char *path)
{
	char tmp[65536];
	const char *s = strrchr(path, '/');
	size_t l = s ? (size_t)(s - path) : 0;

	if (l >= sizeof(tmp))
		return NULL;
	memcpy(tmp, path, l);
	tmp[l] = 0;
	return l ? bnode_lookup_path(b->root, tmp) : b->root;
}

static int detach(struct builder *b, struct bnode *dir, struct bnode *n)
{
	bnode_remove_kid(dir, n);
	n->deleted = true;
	n->parent = NULL;
	if (b->nentries)
		b->nentries--;
	return builder_bury(b, n);
}

static int apply_whiteout(struct layer *L, const char *path)
{
	struct builder *b = L->b;
	const char *name = base_name(path);
	struct bnode *dir = parent_of(b, path);

	if (!dir || !S_ISDIR(dir->mode))
		return 0; /* nothing below to hide */
	if (!strcmp(name, WH_OPAQUE)) {
		/* everything lower layers put in this directory disappears */
		for (uint32_t i = dir->nkids; i-- > 0;)
			if (dir->kids[i]->layer < L->index) {
				int ret = detach(b, dir, dir->kids[i]);

				if (ret)
					return ret;
			}
		return 0;
	}
	{
		struct bnode *victim = bnode_find(dir, name + strlen(WH_PREFIX), strlen(name) - strlen(WH_PREFIX));

		if (victim && victim->layer < L->index)
			return detach(b, dir, victim);
	}
	return 0;
}

static uint32_t blob_index_hash(uint32_t blob, uint32_t index)
{
	return blob * 2654435761u ^ index;
}

static uint32_t chunk_key(const struct bchunk *c)
{
	return blob_index_hash(c->blob, c->index);
}

static int64_t import_chunk(struct layer *L, const struct img_chunk *c)
{
	struct builder *b = L->b;
	uint32_t blob = L->blob_map[c->blob_index];
	struct bchunk *n;

	/* chunks are few per blob relative to entries; a linear probe table keyed on (blob, index) */
	if (b->nchunks * 2 >= b->dcap) {
		int ret = builder_dedup_grow(b, chunk_key);

		if (ret)
			return ret;
	}
	{
		uint32_t h = blob_index_hash(blob, c->index) & (b->dcap - 1);

		for (; b->dedup[h]; h = (h + 1) & (b->dcap - 1)) {
			n = &b->chunks[b->dedup[h] - 1];
			if (n->blob == blob && n->index == c->index)
				return b->dedup[h] - 1;
		}
		n = builder_chunk_slot(b);
		if (!n)
			return -ENOMEM;
		if (!c->digest) {
			lz_err("layer %d: chunk %u of blob %u has no digest; cannot merge", L->index, c->index,
			       c->blob_index);
			return -EOPNOTSUPP;
		}
		memcpy(n->digest, c->digest, 32);
		n->coff = c->compressed_offset;
		n->uoff = c->uncompressed_offset;
		n->csize = c->compressed_size;
		n->usize = c->uncompressed_size;
		n->blob = blob;
		n->index = c->index;
		n->compressed = c->flags & IMG_CHUNK_COMPRESSED;
		b->dedup[h] = b->nchunks + 1;
		return b->nchunks++;
	}
}

struct chunk_acc {
	struct layer *L;
	struct bdata *d;
	uint32_t cap;
	int err;
};

static int acc_chunk(void *arg, const struct img_chunk *c)
{
	struct chunk_acc *a = arg;
	int64_t id;

	if (c->flags & (IMG_CHUNK_HOLE | IMG_CHUNK_BATCH | IMG_CHUNK_ZRAN | IMG_CHUNK_ENCRYPTED) ||
	    c->file_offset != (uint64_t)a->d->nchunks * a->L->b->o.chunk_size) {
		lz_err("layer %d: a file has holes or chunk kinds merge does not support", a->L->index);
		return -EOPNOTSUPP;
	}
	id = import_chunk(a->L, c);
	if (id < 0)
		return (int)id;
	if (a->d->nchunks == a->cap) {
		uint32_t nc = a->cap ? a->cap * 2 : 4;
		uint32_t *nv = lz_realloc(a->d->chunks, nc * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		a->d->chunks = nv;
		a->cap = nc;
	}
	a->d->chunks[a->d->nchunks++] = (uint32_t)id;
	return 0;
}

/* Hard links: the data an earlier link of inode ino got, or NULL. */
static struct bdata *hl_find(const struct layer *L, uint64_t ino)
{
	for (size_t i = 0; i < L->nhl; i++)
		if (L->hl_ino[i] == ino)
			return L->hl_data[i];
	return NULL;
}

static int hl_add(struct layer *L, uint64_t ino, struct bdata *d)
{
	uint64_t *ni = lz_realloc(L->hl_ino, (L->nhl + 1) * sizeof(*ni));
	struct bdata **nd;

	if (!ni)
		return -ENOMEM;
	L->hl_ino = ni;
	nd = lz_realloc(L->hl_data, (L->nhl + 1) * sizeof(*nd));
	if (!nd)
		return -ENOMEM;
	L->hl_data = nd;
	ni[L->nhl] = ino;
	nd[L->nhl++] = d;
	return 0;
}

/* bdata is allocated through the builder's tracker in build.c */
static int fill_node(struct layer *L, struct bnode *n, const struct img_attr *a)
{
	struct image *img = rafs_image(L->fs);
	char xl[65536];
	ssize_t xn;
	int ret = 0;

	n->mode = a->mode;
	n->uid = a->uid;
	n->gid = a->gid;
	n->mtime = a->mtime;
	n->mtime_nsec = a->mtime_nsec;
	n->rmajor = major(a->rdev);
	n->rminor = minor(a->rdev);
	n->layer = L->index;
	for (uint32_t i = 0; i < n->nx; i++) {
		free(n->xattrs[i].name);
		free(n->xattrs[i].value);
	}
	n->nx = 0;
	xn = img->ops->listxattr(img, a->ino, xl, sizeof(xl));
	if (xn < 0)
		return (int)xn;
	for (ssize_t p = 0; p < xn && !ret; p += (ssize_t)strlen(xl + p) + 1) {
		uint8_t val[65536];
		ssize_t vn = img->ops->getxattr(img, a->ino, xl + p, val, sizeof(val));

		if (vn < 0)
			return (int)vn;
		ret = bx_add(n, xl + p, val, (size_t)vn);
	}
	if (ret)
		return ret;
	if (!S_ISDIR(a->mode) && !S_ISREG(a->mode) && a->nlink > 1) {
		n->data = hl_find(L, a->ino);
		if (!n->data) {
			n->data = rafs_bdata_new();
			if (!n->data)
				return -ENOMEM;
			ret = hl_add(L, a->ino, n->data);
			if (ret)
				return ret;
		}
	}
	if (S_ISLNK(a->mode)) {
		char t[RAFS_MAX_SYMLINK + 1];
		ssize_t tn = img->ops->readlink(img, a->ino, t, sizeof(t) - 1);

		if (tn < 0)
			return (int)tn;
		free(n->target);
		n->target = strndup(t, (size_t)LZ_MIN(tn, (ssize_t)RAFS_MAX_SYMLINK));
		if (!n->target)
			return -ENOMEM;
	} else if (S_ISREG(a->mode)) {
		struct chunk_acc acc = { .L = L };
		struct bdata *twin = hl_find(L, a->ino);

		n->size = a->size;
		if (twin) {
			n->data = twin;
			return 0;
		}
		acc.d = rafs_bdata_new();
		if (!acc.d)
			return -ENOMEM;
		ret = img->ops->chunks(img, a->ino, acc_chunk, &acc);
		if (ret)
			return ret;
		n->data = acc.d;
		if (a->nlink > 1)
			return hl_add(L, a->ino, acc.d);
	}
	return 0;
}

static int merge_entry(void *arg, const char *path, const struct img_attr *a)
{
	struct layer *L = arg;
	struct builder *b = L->b;
	const char *name = base_name(path);
	struct bnode *dir, *n;

	if (!strcmp(path, "/")) {
		if (L->whiteouts)
			return 0;
		return fill_node(L, b->root, a);
	}
	if (!strncmp(name, WH_PREFIX, strlen(WH_PREFIX)))
		return L->whiteouts ? apply_whiteout(L, path + 1) : 0;
	if (L->whiteouts)
		return 0;
	dir = parent_of(b, path + 1);
	if (!dir || !S_ISDIR(dir->mode)) {
		lz_err("layer %d: %s has no directory to live in", L->index, path);
		return -EFSCORRUPTED;
	}
	n = bnode_find(dir, name, strlen(name));
	if (n && !(S_ISDIR(n->mode) && S_ISDIR(a->mode))) {
		int ret = detach(b, dir, n);

		if (ret)
			return ret;
		n = NULL;
	}
	if (!n) {
		n = bnode_new(b, dir, name, strlen(name));
		if (!n)
			return -ENOMEM;
		n->kids_sorted = true;
		if (bnode_add_kid(dir, n))
			return -ENOMEM;
	}
	return fill_node(L, n, a);
}

int rafs_merge(const char *out, const char *const *boots, size_t nboots, int fs_version)
{
	struct builder b = { .blob_fd = -1 };
	uint8_t *buf = NULL;
	size_t len = 0;
	int ret = 0;

	if (!nboots)
		return -EINVAL;
	b.root = bnode_new(&b, NULL, "/", 1);
	if (!b.root)
		return -ENOMEM;
	b.root->mode = S_IFDIR | 0755;
	b.root->kids_sorted = true;
	for (size_t li = 0; li < nboots && !ret; li++) {
		struct rafs_opts ro = { .validate = true };
		struct layer L = { .b = &b, .index = (int)li + 1 };
		struct rafs_info info;

		ret = rafs_open_file(boots[li], &ro, &L.fs);
		if (ret) {
			lz_err("layer %zu: cannot open bootstrap %s: %s", li + 1, boots[li], lz_strerror(ret));
			break;
		}
		rafs_get_info(L.fs, &info);
		if (li == 0) {
			b.o.fs_version = fs_version ? fs_version : info.version;
			b.o.chunk_size = info.chunk_size;
			b.o.compressor = info.compressor;
			b.o.digester = info.digester;
		} else if (info.chunk_size != b.o.chunk_size || info.digester != b.o.digester ||
			   (b.o.fs_version == 5 && info.compressor != b.o.compressor)) {
			lz_err("layer %zu (%s): chunk size, digester or compressor differs from layer 1",
			       li + 1, boots[li]);
			ret = -EINVAL;
		}
		if (!ret) {
			L.blob_map = lz_calloc(info.nblobs ? info.nblobs : 1, sizeof(*L.blob_map));
			if (!L.blob_map)
				ret = -ENOMEM;
		}
		for (uint32_t i = 0; !ret && i < info.nblobs; i++) {
			struct rafs_blob_info bi;
			uint32_t j;

			rafs_get_blob(L.fs, i, &bi);
			for (j = 0; j < b.nblobs; j++)
				if (!strcmp(b.blobs[j].id, bi.id))
					break;
			if (j == b.nblobs) {
				struct bblob *nb = lz_realloc(b.blobs, (b.nblobs + 1) * sizeof(*nb));

				if (!nb) {
					ret = -ENOMEM;
					break;
				}
				b.blobs = nb;
				memset(&nb[j], 0, sizeof(nb[j]));
				memcpy(nb[j].id, bi.id, sizeof(nb[j].id));
				nb[j].chunk_count = bi.chunk_count;
				nb[j].features = bi.features;
				nb[j].comp = bi.compressor;
				nb[j].csize = bi.compressed_size;
				nb[j].usize = bi.uncompressed_size;
				nb[j].ci_comp = bi.ci_compressor;
				nb[j].ci_off = bi.ci_offset;
				nb[j].ci_csize = bi.ci_compressed_size;
				nb[j].ci_usize = bi.ci_uncompressed_size;
				b.nblobs++;
			}
			L.blob_map[i] = j;
		}
		if (!ret) {
			L.whiteouts = true;
			ret = imgfs_walk(rafs_image(L.fs), merge_entry, &L);
		}
		if (!ret) {
			L.whiteouts = false;
			ret = imgfs_walk(rafs_image(L.fs), merge_entry, &L);
		}
		if (ret && ret != -ENOMEM)
			lz_err("layer %zu (%s): %s", li + 1, boots[li], lz_strerror(ret));
		rafs_close(L.fs);
		free(L.blob_map);
		free(L.hl_ino);
		free(L.hl_data);
	}
	if (!ret && b.o.fs_version == 5) {
		/* v5 blobs carry no chunk info meta; their sizes come from the ext table */
		for (uint32_t i = 0; i < b.nblobs; i++)
			b.blobs[i].features = 0;
	}
	if (!ret)
		ret = b.o.fs_version == 5 ? rafs_write_v5(&b, &buf, &len) : rafs_write_v6(&b, &buf, &len);
	if (!ret)
		ret = rafs_write_file(out, buf, len);
	free(buf);
	builder_free(&b);
	return ret;
}
