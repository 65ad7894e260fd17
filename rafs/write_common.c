/* SPDX-License-Identifier: Apache-2.0 */
#define LZ_MOD "convert"
#include "build_int.h"
#include "write_int.h"

#include <stdlib.h>
#include <sys/stat.h>

static int prep(struct builder *b, struct bnode *n, struct wctx *w, int depth)
{
	if (depth > 8192)
		return -ELOOP;
	bnode_sort(n);
	if (n->data) {
		if (!n->data->owner)
			n->data->owner = n;
		n->data->links++;
	}
	if (w->n == w->cap) {
		size_t nc = w->cap ? 2 * w->cap : 1024;
		struct bnode **nv = lz_realloc(w->order, nc * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		w->order = nv;
		w->cap = nc;
	}
	w->order[w->n++] = n;
	n->nsubdirs = 0;
	for (uint32_t i = 0; i < n->nkids; i++) {
		int ret;

		if (S_ISDIR(n->kids[i]->mode))
			n->nsubdirs++;
		ret = prep(b, n->kids[i], w, depth + 1);
		if (ret)
			return ret;
	}
	return 0;
}

int rafs_wctx_init(struct builder *b, struct wctx *w)
{
	memset(w, 0, sizeof(*w));
	return prep(b, b->root, w, 0);
}

void rafs_wctx_exit(struct wctx *w)
{
	free(w->order);
}

uint32_t rafs_encode_rdev(uint32_t major, uint32_t minor)
{
	return (minor & 0xffu) | (major << 8) | ((minor & ~0xffu) << 12);
}

int rafs_bootstrap_alloc(uint64_t total, uint8_t **buf)
{
	if (total > RAFS_MAX_BOOTSTRAP)
		return -EFBIG;
	*buf = lz_calloc(1, (size_t)total);
	return *buf ? 0 : -ENOMEM;
}
