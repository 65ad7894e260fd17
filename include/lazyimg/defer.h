/* SPDX-License-Identifier: Apache-2.0 */
/*
 * defer.h - work a thread may leave until after it has answered.
 *
 * A FUSE read that fetched more chunks than it needs (a merged request, an
 * amplified read) must not make its reader wait while the extra chunks are
 * decoded, verified and written durably into the cache. The server opens a
 * deferral window around the request (lz_defer_open), a format reader that
 * sees one open leaves its extra work as a pending callback (lz_defer_add),
 * and the server runs it after the reply went out (lz_defer_close). Outside
 * a window lz_defer_add runs the work at once, so callers that never reply to
 * anybody (prefetch threads, `lazyimg check`) need not know about this.
 *
 * Per thread; windows do not nest (an inner open is ignored).
 */
#ifndef LAZYIMG_DEFER_H
#define LAZYIMG_DEFER_H

#include <stdbool.h>

#define LZ_DEFER_MAX 4 /* pending callbacks per thread; a fifth runs at once */

typedef void (*lz_defer_fn)(void *arg);

void lz_defer_open(void);
/* Run every pending callback, oldest first, and close the window. */
void lz_defer_close(void);
/* True inside a window: work added now runs after the reply. */
bool lz_defer_active(void);
/* Leave fn(arg) for lz_defer_close; outside a window (or when full) run it now.
 * A callback already pending with the same fn and arg is not added twice. */
void lz_defer_add(lz_defer_fn fn, void *arg);

#endif
