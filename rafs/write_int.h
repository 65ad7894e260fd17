/* SPDX-License-Identifier: Apache-2.0 */
#ifndef LAZYIMG_WRITE_INT_H
#define LAZYIMG_WRITE_INT_H

#include "build_int.h"

/* Pre-order list of every node, with directories sorted and link counts set. */
struct wctx {
	struct bnode **order;
	size_t n, cap;
};

int rafs_wctx_init(struct builder *b, struct wctx *w);
void rafs_wctx_exit(struct wctx *w);
uint32_t rafs_encode_rdev(uint32_t major, uint32_t minor);
/* A zeroed bootstrap of total bytes: -EFBIG over RAFS_MAX_BOOTSTRAP, or -ENOMEM. */
int rafs_bootstrap_alloc(uint64_t total, uint8_t **buf);

#endif
