/* SPDX-License-Identifier: Apache-2.0 */
/*
 * record.c - note which files a workload reads, in first-read order, and
 * write them as a prefetch list (one path per line, what --prefetch-files
 * takes). The recorder is an image wrapper: every op forwards to the inner
 * image; read() also notes the inode the first time it returns data. Paths
 * are resolved only at flush time with one tree walk, so the read path pays
 * one mutex and one hash probe, never a path lookup.
 */
#define LZ_MOD "record"
#include "lazyimg/imgfs.h"
#include "lazyimg/snap.h"
#include "snap_int.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* more distinct files than any image we would prefetch from; beyond it we stop noting */
#define REC_MAX_FILES (1u << 20)

struct rec_slot {
	uint64_t key;               /* ino + 1; 0 = empty */
	size_t idx;                 /* position in the order array */
};

struct snap_record {
	struct image base;          /* must be first: fs/ sees this */
	struct image *inner;        /* borrowed */
	char *out_file;             /* the --record FILE, or NULL */
	char *keep_file;            /* <cache>/records/<digest>.list, or NULL */
	pthread_mutex_t lock;
	uint64_t *order;            /* inodes in first-read order */
	size_t n, cap;
	struct rec_slot *set;       /* open addressing on ino + 1 (0 = empty) */
	size_t set_cap;
	bool full;
};

static struct snap_record *rec_of(struct image *img)
{
	return (struct snap_record *)img;
}

static size_t slot(uint64_t key, size_t cap)
{
	return (size_t)(key * 0x9E3779B97F4A7C15ull) & (cap - 1);
}

/* Called with r->lock held. 1: newly noted, 0: already known, negative errno. */
static int note_ino(struct snap_record *r, uint64_t ino)
{
	uint64_t key = ino + 1;
	size_t i;

	if (2 * (r->n + 1) > r->set_cap) {
		size_t cap = r->set_cap ? 2 * r->set_cap : 1024;
		struct rec_slot *ns = lz_calloc(cap, sizeof(*ns));

		if (!ns)
			return -ENOMEM;
		for (size_t k = 0; k < r->set_cap; k++) {
			if (!r->set[k].key)
				continue;
			for (i = slot(r->set[k].key, cap); ns[i].key; i = (i + 1) & (cap - 1))
				;
			ns[i] = r->set[k];
		}
		free(r->set);
		r->set = ns;
		r->set_cap = cap;
	}
	for (i = slot(key, r->set_cap); r->set[i].key; i = (i + 1) & (r->set_cap - 1))
		if (r->set[i].key == key)
			return 0;
	if (r->n >= REC_MAX_FILES) {
		if (!r->full)
			lz_warn("more than %u files read: the recorded list stops there", REC_MAX_FILES);
		r->full = true;
		return 0;
	}
	if (r->n == r->cap) {
		size_t nc = r->cap ? 2 * r->cap : 256;
		uint64_t *no = lz_realloc(r->order, nc * sizeof(*no));

		if (!no)
			return -ENOMEM;
		r->order = no;
		r->cap = nc;
	}
	r->set[i].key = key;
	r->set[i].idx = r->n;
	r->order[r->n++] = ino;
	return 1;
}

static int rec_getattr(struct image *img, uint64_t ino, struct img_attr *attr)
{
	struct image *in = rec_of(img)->inner;

	return in->ops->getattr(in, ino, attr);
}

static int rec_lookup(struct image *img, uint64_t dir, const char *name, size_t len, struct img_attr *attr)
{
	struct image *in = rec_of(img)->inner;

	return in->ops->lookup(in, dir, name, len, attr);
}

static int rec_readdir(struct image *img, uint64_t dir, uint64_t off, img_filldir_fn fill, void *arg)
{
	struct image *in = rec_of(img)->inner;

	return in->ops->readdir(in, dir, off, fill, arg);
}

static ssize_t rec_readlink(struct image *img, uint64_t ino, char *buf, size_t size)
{
	struct image *in = rec_of(img)->inner;

	return in->ops->readlink(in, ino, buf, size);
}

static ssize_t rec_listxattr(struct image *img, uint64_t ino, char *buf, size_t size)
{
	struct image *in = rec_of(img)->inner;

	return in->ops->listxattr(in, ino, buf, size);
}

static ssize_t rec_getxattr(struct image *img, uint64_t ino, const char *name, void *buf, size_t size)
{
	struct image *in = rec_of(img)->inner;

	return in->ops->getxattr(in, ino, name, buf, size);
}

static ssize_t rec_read(struct image *img, uint64_t ino, void *buf, size_t size, uint64_t off)
{
	struct snap_record *r = rec_of(img);
	ssize_t n = r->inner->ops->read(r->inner, ino, buf, size, off);

	/* only a read that returned data says the workload needed this file */
	if (n > 0) {
		pthread_mutex_lock(&r->lock);
		if (note_ino(r, ino) < 0 && !r->full) {
			lz_warn("out of memory: the recorded list stops here");
			r->full = true;
		}
		pthread_mutex_unlock(&r->lock);
	}
	return n;
}

static int rec_chunks(struct image *img, uint64_t ino, img_chunk_fn fn, void *arg)
{
	struct image *in = rec_of(img)->inner;

	return in->ops->chunks(in, ino, fn, arg);
}

static void rec_statfs(struct image *img, struct img_statfs *st)
{
	struct image *in = rec_of(img)->inner;

	in->ops->statfs(in, st);
}

/* The inner image belongs to whoever opened it: closing the wrapper leaves it alone. */
static void rec_close(struct image *img)
{
	(void)img;
}

static const struct image_ops rec_ops = {
	.getattr = rec_getattr,
	.lookup = rec_lookup,
	.readdir = rec_readdir,
	.readlink = rec_readlink,
	.listxattr = rec_listxattr,
	.getxattr = rec_getxattr,
	.read = rec_read,
	.chunks = rec_chunks,
	.statfs = rec_statfs,
	.close = rec_close,
};

int snap_record_path(const char *cache_dir, const char *digest, char *buf, size_t size)
{
	const char *hex = digest;

	if (!cache_dir || !digest)
		return -EINVAL;
	if (!strncmp(hex, "sha256:", 7))
		hex += 7;
	/* the digest names a file: accept only what a digest can be */
	if (!*hex || strspn(hex, "0123456789abcdef") != strlen(hex) || strlen(hex) > 128)
		return -EINVAL;
	if (snprintf(buf, size, "%s/records/%s.list", cache_dir, hex) >= (int)size)
		return -ENAMETOOLONG;
	return 0;
}

int snap_record_new(struct image *inner, const char *out_file, const char *keep_file,
		    struct snap_record **out)
{
	struct snap_record *r = lz_calloc(1, sizeof(*r));

	if (!r)
		return -ENOMEM;
	r->base.ops = &rec_ops;
	r->base.format = inner->format;
	r->inner = inner;
	pthread_mutex_init(&r->lock, NULL);
	if ((out_file && !(r->out_file = strdup(out_file))) || (keep_file && !(r->keep_file = strdup(keep_file)))) {
		snap_record_free(r);
		return -ENOMEM;
	}
	*out = r;
	return 0;
}

struct image *snap_record_image(struct snap_record *r)
{
	return &r->base;
}

size_t snap_record_count(struct snap_record *r)
{
	size_t n;

	pthread_mutex_lock(&r->lock);
	n = r->n;
	pthread_mutex_unlock(&r->lock);
	return n;
}

struct resolve {
	const struct snap_record *r;
	char **paths;               /* per index of r->order; NULL until found */
	size_t found;
};

static ssize_t find_index(const struct snap_record *r, uint64_t ino)
{
	uint64_t key = ino + 1;

	if (!r->set_cap)
		return -1;
	for (size_t i = slot(key, r->set_cap); r->set[i].key; i = (i + 1) & (r->set_cap - 1))
		if (r->set[i].key == key)
			return (ssize_t)r->set[i].idx;
	return -1;
}

static int resolve_one(void *arg, const char *path, const struct img_attr *a)
{
	struct resolve *rs = arg;
	ssize_t k;

	if (!S_ISREG(a->mode) || strchr(path, '\n'))
		return 0; /* a name with a newline cannot be written one per line */
	k = find_index(rs->r, a->ino);
	if (k < 0 || rs->paths[k])
		return 0; /* a hard link: the first path found is as good as any */
	rs->paths[k] = strdup(path);
	if (!rs->paths[k])
		return -ENOMEM;
	rs->found++;
	return 0;
}

static int write_list(const char *path, char *const *paths, size_t n)
{
	char tmp[PATH_MAX];
	FILE *f;
	int ret = 0;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	f = fopen(tmp, "we");
	if (!f)
		return -errno;
	for (size_t i = 0; i < n; i++)
		if (paths[i] && fprintf(f, "%s\n", paths[i]) < 0)
			ret = -EIO;
	if (fflush(f) || fsync(fileno(f)))
		ret = -errno;
	if (fclose(f) && !ret)
		ret = -EIO;
	if (!ret && rename(tmp, path) < 0)
		ret = -errno;
	if (ret)
		unlink(tmp);
	return ret;
}

int snap_record_flush(struct snap_record *r)
{
	struct resolve rs = { .r = r };
	int ret = 0, wret;

	pthread_mutex_lock(&r->lock);
	if (r->n) {
		rs.paths = lz_calloc(r->n, sizeof(*rs.paths));
		if (!rs.paths)
			ret = -ENOMEM;
	}
	if (!ret && r->n)
		ret = imgfs_walk(r->inner, resolve_one, &rs);
	if (ret) {
		lz_err("recording: cannot resolve the paths of %zu files read: %s", r->n, lz_strerror(ret));
		goto out;
	}
	if (r->out_file) {
		wret = write_list(r->out_file, rs.paths, r->n);
		if (wret) {
			lz_err("--record %s: %s", r->out_file, lz_strerror(wret));
			ret = wret;
		}
	}
	if (r->keep_file) {
		char dir[PATH_MAX];
		const char *slash = strrchr(r->keep_file, '/');

		snprintf(dir, sizeof(dir), "%.*s", slash ? (int)(slash - r->keep_file) : 1,
			 slash ? r->keep_file : ".");
		if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
			wret = -errno;
		} else {
			/* an empty list would turn off the image's own prefetch table next time */
			wret = rs.found ? write_list(r->keep_file, rs.paths, r->n) : 0;
		}
		if (wret) {
			lz_err("recorded list %s: %s", r->keep_file, lz_strerror(wret));
			ret = wret;
		}
	}
	lz_info("recorded %zu files read (%zu resolved to paths)", r->n, rs.found);
out:
	if (rs.paths)
		for (size_t i = 0; i < r->n; i++)
			free(rs.paths[i]);
	free(rs.paths);
	pthread_mutex_unlock(&r->lock);
	return ret;
}

void snap_record_free(struct snap_record *r)
{
	if (!r)
		return;
	pthread_mutex_destroy(&r->lock);
	free(r->order);
	free(r->set);
	free(r->out_file);
	free(r->keep_file);
	free(r);
}

int snap_source_set_prefetch(struct snap_source *s, int mode, const char *path)
{
	/* the path is kept, not copied: the caller's buffer lives as long as the mount */
	if (!s || mode < SNAP_PREFETCH_TABLE || mode > SNAP_PREFETCH_ALL || (mode == SNAP_PREFETCH_LIST && !path))
		return -EINVAL;
	s->o.prefetch = mode;
	s->o.prefetch_files = mode == SNAP_PREFETCH_LIST ? path : NULL;
	return 0;
}

/* ---------- replay: read a recorded list back, several files at a time ---------- */

/* a recorded list longer than this is not a start-up working set */
#define REPLAY_MAX_FILES (1u << 20)
#define REPLAY_MAX_THREADS 32
#define REPLAY_BUF (1u << 20)

struct snap_replay {
	struct image *img;              /* borrowed */
	char **paths;
	size_t n;
	_Atomic size_t next;            /* the next list entry a thread takes */
	_Atomic bool stop;
	_Atomic uint64_t files, bytes;
	pthread_t th[REPLAY_MAX_THREADS];
	unsigned nth;
	double t0;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Resolve a list path from the root; 0 and the inode of a regular file, else negative. */
static int resolve(struct image *img, char *path, uint64_t *ino, uint64_t *size)
{
	struct img_attr a = { .ino = IMG_ROOT_INO };
	char *save = NULL, *tok;
	uint64_t cur = IMG_ROOT_INO;

	for (tok = strtok_r(path, "/", &save); tok; tok = strtok_r(NULL, "/", &save)) {
		int ret = img->ops->lookup(img, cur, tok, strlen(tok), &a);

		if (ret)
			return ret;
		cur = a.ino;
	}
	if (cur == IMG_ROOT_INO || !S_ISREG(a.mode))
		return -ENOENT;
	*ino = cur;
	*size = a.size;
	return 0;
}

static void *replay_main(void *arg)
{
	struct snap_replay *rp = arg;
	uint8_t *buf = lz_malloc(REPLAY_BUF);

	if (!buf)
		return NULL;
	/* these fetches are prefetch: counted as such, and readers never wait behind them by policy */
	snap_cache_set_prefetch_thread(true);
	while (!atomic_load(&rp->stop)) {
		size_t i = atomic_fetch_add(&rp->next, 1);
		uint64_t ino, size;

		if (i >= rp->n)
			break;
		if (resolve(rp->img, rp->paths[i], &ino, &size))
			continue; /* a hint only: the image may have changed under the tag */
		for (uint64_t off = 0; off < size && !atomic_load(&rp->stop);) {
			ssize_t r = rp->img->ops->read(rp->img, ino, buf, REPLAY_BUF, off);

			if (r <= 0)
				break;
			off += (uint64_t)r;
			atomic_fetch_add(&rp->bytes, (uint64_t)r);
		}
		atomic_fetch_add(&rp->files, 1);
	}
	free(buf);
	return NULL;
}

int snap_replay_start(struct image *img, const char *list, unsigned nthreads, struct snap_replay **out)
{
	struct snap_replay *rp;
	char line[8192];
	FILE *f;
	int ret = 0;

	if (!nthreads || nthreads > REPLAY_MAX_THREADS)
		return -EINVAL;
	f = fopen(list, "re");
	if (!f)
		return -errno;
	rp = lz_calloc(1, sizeof(*rp));
	if (!rp) {
		fclose(f);
		return -ENOMEM;
	}
	rp->img = img;
	while (fgets(line, sizeof(line), f)) {
		char **np;

		line[strcspn(line, "\r\n")] = 0;
		if (!line[0])
			continue;
		if (rp->n >= REPLAY_MAX_FILES) {
			lz_warn("%s: more than %u paths; the rest are not prefetched", list, REPLAY_MAX_FILES);
			break;
		}
		np = lz_realloc(rp->paths, (rp->n + 1) * sizeof(*np));
		if (!np) {
			ret = -ENOMEM;
			break;
		}
		rp->paths = np;
		if (!(rp->paths[rp->n] = strdup(line))) {
			ret = -ENOMEM;
			break;
		}
		rp->n++;
	}
	fclose(f);
	rp->t0 = now_s();
	for (unsigned i = 0; !ret && i < nthreads && i < rp->n; i++) {
		ret = -pthread_create(&rp->th[i], NULL, replay_main, rp);
		if (!ret)
			rp->nth++;
	}
	if (ret && !rp->nth) {
		snap_replay_stop(rp);
		return ret;
	}
	lz_info("prefetching %zu recorded files with %u threads", rp->n, rp->nth);
	*out = rp;
	return 0;
}

uint64_t snap_replay_bytes(struct snap_replay *rp)
{
	return rp ? atomic_load(&rp->bytes) : 0;
}

void snap_replay_stop(struct snap_replay *rp)
{
	if (!rp)
		return;
	atomic_store(&rp->stop, true);
	for (unsigned i = 0; i < rp->nth; i++)
		pthread_join(rp->th[i], NULL);
	lz_info("recorded prefetch: %llu files, %llu bytes read in %.2f s",
		(unsigned long long)atomic_load(&rp->files), (unsigned long long)atomic_load(&rp->bytes),
		now_s() - rp->t0);
	for (size_t i = 0; i < rp->n; i++)
		free(rp->paths[i]);
	free(rp->paths);
	free(rp);
}
