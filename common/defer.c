/* SPDX-License-Identifier: Apache-2.0 */
/* defer.c - per-thread work left until after a reply (see lazyimg/defer.h). */
#include "lazyimg/defer.h"

#include <stddef.h>

struct defer_ent {
	lz_defer_fn fn;
	void *arg;
};

static _Thread_local struct {
	int depth;
	int n;
	struct defer_ent e[LZ_DEFER_MAX];
} tl_defer;

void lz_defer_open(void)
{
	tl_defer.depth++;
}

bool lz_defer_active(void)
{
	return tl_defer.depth > 0;
}

void lz_defer_add(lz_defer_fn fn, void *arg)
{
	if (!tl_defer.depth) {
		fn(arg);
		return;
	}
	for (int i = 0; i < tl_defer.n; i++)
		if (tl_defer.e[i].fn == fn && tl_defer.e[i].arg == arg)
			return;
	if (tl_defer.n == LZ_DEFER_MAX) {
		fn(arg);
		return;
	}
	tl_defer.e[tl_defer.n++] = (struct defer_ent){ fn, arg };
}

void lz_defer_close(void)
{
	if (tl_defer.depth > 1) {
		tl_defer.depth--;
		return;
	}
	/* a callback may add more (it runs with the window still open): loop until empty */
	while (tl_defer.n) {
		struct defer_ent e = tl_defer.e[0];

		for (int i = 1; i < tl_defer.n; i++)
			tl_defer.e[i - 1] = tl_defer.e[i];
		tl_defer.n--;
		e.fn(e.arg);
	}
	tl_defer.depth = 0;
}
