/* SPDX-License-Identifier: Apache-2.0 */
#define LZ_MOD "walk"
#include "lazyimg/imgfs.h"

#include <stdlib.h>
#include <sys/stat.h>

#define WALK_MAX_DEPTH 1024
#define WALK_MAX_PATH (64u << 10)

struct walk {
	struct image *img;
	imgfs_walk_fn fn;
	void *arg;
	char *path;
	size_t len;
	uint64_t stack[WALK_MAX_DEPTH];
	int depth;
	uint64_t *seen;      /* open-addressing set of walked directories (ino + 1; 0 = empty) */
	size_t nseen, seen_cap;
};

/*
 * Whether directory ino was walked before; records it if not. No format has
 * directory hard links, and one reachable by many paths makes the walk
 * exponential in depth (a 20 KiB image could keep it busy for years).
 */
static int seen_before(struct walk *w, uint64_t ino, bool *seen)
{
	uint64_t key = ino + 1;
	size_t i;

	if (2 * (w->nseen + 1) > w->seen_cap) {
		size_t cap = w->seen_cap ? 2 * w->seen_cap : 256;
		uint64_t *n = lz_calloc(cap, sizeof(*n));

		if (!n)
			return -ENOMEM;
		for (size_t k = 0; k < w->seen_cap; k++) {
			if (!w->seen[k])
				continue;
			for (i = (size_t)(w->seen[k] * 0x9E3779B97F4A7C15ull) & (cap - 1); n[i]; i = (i + 1) & (cap - 1))
				;
			n[i] = w->seen[k];
		}
		free(w->seen);
		w->seen = n;
		w->seen_cap = cap;
	}
	for (i = (size_t)(key * 0x9E3779B97F4A7C15ull) & (w->seen_cap - 1); w->seen[i];
	     i = (i + 1) & (w->seen_cap - 1)) {
		if (w->seen[i] == key) {
			*seen = true;
			return 0;
		}
	}
	w->seen[i] = key;
	w->nseen++;
	*seen = false;
	return 0;
}

struct pending {
	uint64_t *inos;
	char **names;
	size_t n, cap;
	int err;
};

static int collect(void *arg, const struct img_dirent *de)
{
	struct pending *p = arg;

	if ((de->name_len == 1 && de->name[0] == '.') ||
	    (de->name_len == 2 && de->name[0] == '.' && de->name[1] == '.'))
		return 0;
	if (memchr(de->name, '/', de->name_len) || memchr(de->name, 0, de->name_len)) {
		lz_err("directory entry with '/' or NUL in its name");
		p->err = -EFSCORRUPTED;
		return 1;
	}
	if (p->n == p->cap) {
		size_t nc = p->cap ? 2 * p->cap : 16;
		uint64_t *ni = lz_realloc(p->inos, nc * sizeof(*ni));
		char **nn;

		if (!ni) {
			p->err = -ENOMEM;
			return 1;
		}
		p->inos = ni;
		nn = lz_realloc(p->names, nc * sizeof(*nn));
		if (!nn) {
			p->err = -ENOMEM;
			return 1;
		}
		p->names = nn;
		p->cap = nc;
	}
	p->names[p->n] = strndup(de->name, de->name_len);
	if (!p->names[p->n]) {
		p->err = -ENOMEM;
		return 1;
	}
	p->inos[p->n++] = de->ino;
	return 0;
}

static int walk_dir(struct walk *w, uint64_t ino)
{
	struct pending p = { 0 };
	size_t base = w->len;
	int ret;

	if (w->depth >= WALK_MAX_DEPTH) {
		lz_err("directory tree deeper than %d levels at %s", WALK_MAX_DEPTH, w->path);
		return -EFSCORRUPTED;
	}
	for (int i = 0; i < w->depth; i++) {
		if (w->stack[i] == ino) {
			lz_err("directory cycle: %s is its own ancestor (inode %llu)", w->path,
			       (unsigned long long)ino);
			return -EFSCORRUPTED;
		}
	}
	{
		bool seen;

		ret = seen_before(w, ino, &seen);
		if (ret)
			return ret;
		if (seen) {
			lz_err("directory %s (inode %llu) was already reached by another path",
			       w->path[0] ? w->path : "/", (unsigned long long)ino);
			return -EFSCORRUPTED;
		}
	}
	w->stack[w->depth++] = ino;
	ret = w->img->ops->readdir(w->img, ino, 0, collect, &p);
	if (!ret)
		ret = p.err;
	for (size_t i = 0; !ret && i < p.n; i++) {
		struct img_attr a;
		size_t nl = strlen(p.names[i]);

		if (base + 1 + nl + 1 > WALK_MAX_PATH) {
			lz_err("path longer than %u bytes under %s", WALK_MAX_PATH, w->path);
			ret = -EFSCORRUPTED;
			break;
		}
		w->path[base] = '/';
		memcpy(w->path + base + 1, p.names[i], nl + 1);
		w->len = base + 1 + nl;
		ret = w->img->ops->getattr(w->img, p.inos[i], &a);
		if (ret) {
			lz_err("%s: cannot read inode %llu: %s", w->path, (unsigned long long)p.inos[i],
			       lz_strerror(ret));
			break;
		}
		ret = w->fn(w->arg, w->path, &a);
		if (!ret && S_ISDIR(a.mode))
			ret = walk_dir(w, p.inos[i]);
		w->len = base;
		w->path[base] = 0;
	}
	for (size_t i = 0; i < p.n; i++)
		free(p.names[i]);
	free(p.names);
	free(p.inos);
	w->depth--;
	return ret;
}

int imgfs_walk(struct image *img, imgfs_walk_fn fn, void *arg)
{
	struct walk *w;
	struct img_attr a;
	int ret;

	ret = img->ops->getattr(img, IMG_ROOT_INO, &a);
	if (ret)
		return ret;
	w = lz_calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->path = lz_malloc(WALK_MAX_PATH);
	if (!w->path) {
		free(w);
		return -ENOMEM;
	}
	w->img = img;
	w->fn = fn;
	w->arg = arg;
	strcpy(w->path, "/");
	ret = fn(arg, "/", &a);
	w->path[0] = 0;
	if (!ret)
		ret = walk_dir(w, IMG_ROOT_INO);
	free(w->seen);
	free(w->path);
	free(w);
	return ret;
}
