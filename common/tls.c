/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tls.c - per-thread scratch objects (decode buffers, decoder contexts) for
 * the chunk paths of rafs/ and stargz/: made on a thread's first use, freed
 * by the owner's destructor when the thread exits.
 */
#define LZ_MOD "lz"
#include "lazyimg/lz.h"

#include <stdlib.h>

/* only taken once per lz_tls, to create its key */
static pthread_mutex_t key_lock = PTHREAD_MUTEX_INITIALIZER;

void *lz_tls_get(struct lz_tls *t)
{
	void *p;

	if (!atomic_load_explicit(&t->ready, memory_order_acquire)) {
		bool ok = true;

		pthread_mutex_lock(&key_lock);
		if (!atomic_load_explicit(&t->ready, memory_order_relaxed)) {
			ok = pthread_key_create(&t->key, t->dtor) == 0;
			if (ok)
				atomic_store_explicit(&t->ready, true, memory_order_release);
		}
		pthread_mutex_unlock(&key_lock);
		if (!ok)
			return NULL;
	}
	p = pthread_getspecific(t->key);
	if (!p) {
		p = lz_calloc(1, t->size);
		if (p && pthread_setspecific(t->key, p)) {
			free(p);
			p = NULL;
		}
	}
	return p;
}
