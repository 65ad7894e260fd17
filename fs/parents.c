/* SPDX-License-Identifier: Apache-2.0 */
#define LZ_MOD "fs"
#include "lazyimg/lz.h"
#include "imgfs_int.h"

#include <stdlib.h>
#include <xxhash.h>

void imgfs_parents_init(struct imgfs_parents *p)
{
	memset(p, 0, sizeof(*p));
	pthread_mutex_init(&p->lock, NULL);
}

void imgfs_parents_exit(struct imgfs_parents *p)
{
	free(p->keys);
	free(p->vals);
	free(p->names);
	pthread_mutex_destroy(&p->lock);
}

static size_t slot(uint64_t key, size_t cap)
{
	return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 20) & (cap - 1);
}

/* Called with the lock held. */
static int grow(struct imgfs_parents *p)
{
	size_t ncap = p->cap ? 2 * p->cap : 1024;
	uint64_t *nk = lz_calloc(ncap, sizeof(*nk)), *nv = lz_calloc(ncap, sizeof(*nv));
	uint64_t *nn = lz_calloc(ncap, sizeof(*nn));

	if (!nk || !nv || !nn) {
		free(nk);
		free(nv);
		free(nn);
		return -ENOMEM;
	}
	for (size_t i = 0; i < p->cap; i++) {
		size_t j;

		if (!p->keys[i])
			continue;
		for (j = slot(p->keys[i], ncap); nk[j]; j = (j + 1) & (ncap - 1))
			;
		nk[j] = p->keys[i];
		nv[j] = p->vals[i];
		nn[j] = p->names[i];
	}
	free(p->keys);
	free(p->vals);
	free(p->names);
	p->keys = nk;
	p->vals = nv;
	p->names = nn;
	p->cap = ncap;
	return 0;
}

int imgfs_parents_check(struct imgfs_parents *p, uint64_t dir, uint64_t parent, const char *name,
			size_t len)
{
	uint64_t key = dir + 1, other, nh = XXH64(name, len, 0);
	size_t i;
	int ret = 0;

	pthread_mutex_lock(&p->lock);
	/* keep the table at most half full */
	if (2 * (p->n + 1) > p->cap) {
		ret = grow(p);
		if (ret)
			goto out;
	}
	for (i = slot(key, p->cap); p->keys[i]; i = (i + 1) & (p->cap - 1)) {
		if (p->keys[i] != key)
			continue;
		if (p->vals[i] == parent && p->names[i] == nh)
			goto out;
		other = p->vals[i];
		ret = -EFSCORRUPTED;
		if (lz_ratelimit(&p->log, 5))
			lz_err("directory inode %llu is reached as '%.*s' in inode %llu after another name in inode %llu: the image's directories do not form a tree",
			       (unsigned long long)dir, (int)len, name, (unsigned long long)parent,
			       (unsigned long long)other);
		goto out;
	}
	p->keys[i] = key;
	p->vals[i] = parent;
	p->names[i] = nh;
	p->n++;
out:
	pthread_mutex_unlock(&p->lock);
	return ret;
}
