/* SPDX-License-Identifier: Apache-2.0 */
/* cache.c - the cache directory: blob table, usage accounting, LRU eviction. */
#define LZ_MOD "bcache"
#include "bcache_int.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define STATE_SUFFIX ".state"
#define STATE_SUFFIX_LEN (sizeof(STATE_SUFFIX) - 1)

bool bcache_id_valid(const char *id)
{
	size_t n;

	if (!id)
		return false;
	n = strnlen(id, BCACHE_ID_MAX + 1);
	if (!n || n > BCACHE_ID_MAX || id[0] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		char ch = id[i];

		if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      ch == '.' || ch == '_' || ch == '-'))
			return false;
	}
	/* "<x>.state" is blob x's state file */
	return !(n >= STATE_SUFFIX_LEN && !strcmp(id + n - STATE_SUFFIX_LEN, STATE_SUFFIX));
}

int bcache_state_name(const char *id, char *out, size_t size)
{
	int n = snprintf(out, size, "%s" STATE_SUFFIX, id);

	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/* st_blocks * 512 of dir/name; 0 with *exists false if it is missing. */
uint64_t bcache_file_bytes(int dirfd, const char *name, bool *exists, uint64_t *mtime_ns)
{
	struct stat st;

	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) || !S_ISREG(st.st_mode)) {
		if (exists)
			*exists = false;
		return 0;
	}
	if (exists)
		*exists = true;
	if (mtime_ns)
		*mtime_ns = (uint64_t)st.st_mtim.tv_sec * 1000000000ull + (uint64_t)st.st_mtim.tv_nsec;
	return (uint64_t)st.st_blocks * 512;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* A strictly increasing access time, comparable with file mtimes. */
uint64_t bcache_tick(struct bcache *c)
{
	uint64_t t = now_ns();

	if (t <= c->last_tick)
		t = c->last_tick + 1;
	c->last_tick = t;
	return t;
}

struct bcache_ent *bcache_ent_find(struct bcache *c, const char *id)
{
	for (struct bcache_ent *e = c->ents.next; e != &c->ents; e = e->next)
		if (!strcmp(e->id, id))
			return e;
	return NULL;
}

static struct bcache_ent *ent_add(struct bcache *c, const char *id)
{
	struct bcache_ent *e;

	if (c->nents >= BCACHE_MAX_BLOBS) {
		lz_err("%s: blob %s: %u blobs tracked, cap reached", c->dir, id, c->nents);
		return NULL;
	}
	e = lz_calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	snprintf(e->id, sizeof(e->id), "%s", id);
	e->prev = c->ents.prev;
	e->next = &c->ents;
	c->ents.prev->next = e;
	c->ents.prev = e;
	c->nents++;
	return e;
}

static void ent_del(struct bcache *c, struct bcache_ent *e)
{
	c->total -= e->usage;
	e->prev->next = e->next;
	e->next->prev = e->prev;
	c->nents--;
	free(e);
}

void bcache_set_usage(struct bcache *c, struct bcache_ent *e, uint64_t bytes)
{
	c->total = c->total - e->usage + bytes;
	e->usage = bytes;
}

static int unlink_locked(struct bcache *c, const char *id, const char *sname);

/* Delete a blob's files, state first: a state file never outlives its data
 * in a way that could vouch for a later, different data file. -EBUSY if
 * another process has the blob open. */
static int unlink_blob(struct bcache *c, const char *id)
{
	char sname[BCACHE_STATE_NAME_MAX];
	int ret = -ENOENT, fd;

	if (bcache_state_name(id, sname, sizeof(sname)))
		return -EINVAL;
	/* another process sharing the directory may have it open (shared lock) */
	fd = openat(c->dirfd, id, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB)) {
		close(fd);
		return -EBUSY;
	}
	ret = unlink_locked(c, id, sname);
	if (fd >= 0)
		close(fd);
	return ret;
}

static int unlink_locked(struct bcache *c, const char *id, const char *sname)
{
	int ret = -ENOENT;

	if (!unlinkat(c->dirfd, sname, 0))
		ret = 0;
	else if (errno != ENOENT)
		lz_warn("%s/%s: unlink: %s", c->dir, sname, strerror(errno));
	if (!unlinkat(c->dirfd, id, 0))
		ret = 0;
	else if (errno != ENOENT) {
		lz_warn("%s/%s: unlink: %s", c->dir, id, strerror(errno));
		ret = -errno;
	}
	return ret;
}

/* Wait until no entry for id is busy; returns the entry or NULL. cache->lock held. */
static struct bcache_ent *ent_wait_idle(struct bcache *c, const char *id)
{
	struct bcache_ent *e;

	while ((e = bcache_ent_find(c, id)) && e->busy)
		pthread_cond_wait(&c->cond, &c->lock);
	return e;
}

void bcache_evict(struct bcache *c)
{
	if (!c->max_bytes)
		return;
	pthread_mutex_lock(&c->lock);
	if (c->evicting || c->total <= c->max_bytes) {
		pthread_mutex_unlock(&c->lock);
		return;
	}
	c->evicting = true;
	for (unsigned skipped = 0; c->total > c->max_bytes;) {
		struct bcache_ent *victim = NULL;
		char id[BCACHE_ID_MAX + 1];
		uint64_t freed;

		for (struct bcache_ent *e = c->ents.next; e != &c->ents; e = e->next)
			if (!e->refs && !e->busy && (!victim || e->atime < victim->atime))
				victim = e;
		if (!victim) {
			if (lz_ratelimit(&c->over_cap_log, 60))
				lz_warn("%s: usage %llu over the cap %llu, every blob is in use", c->dir,
					(unsigned long long)c->total, (unsigned long long)c->max_bytes);
			break;
		}
		victim->busy = true;
		freed = victim->usage;
		memcpy(id, victim->id, sizeof(id));
		pthread_mutex_unlock(&c->lock);

		/* outside the lock: freeing a big file takes time */
		if (unlink_blob(c, id) == -EBUSY) {
			/* open in another process sharing the directory: treat it as just used */
			pthread_mutex_lock(&c->lock);
			victim->busy = false;
			victim->atime = bcache_tick(c);
			pthread_cond_broadcast(&c->cond);
			if (++skipped >= c->nents)
				break;
			continue;
		}
		lz_info("%s: evicted blob %s (%llu bytes)", c->dir, id, (unsigned long long)freed);
		atomic_fetch_add(&c->evictions, 1);

		pthread_mutex_lock(&c->lock);
		ent_del(c, victim);
		pthread_cond_broadcast(&c->cond);
	}
	c->evicting = false;
	pthread_mutex_unlock(&c->lock);
}

/* Seed the blob table from the directory (single-threaded, at open). */
static int scan_dir(struct bcache *c)
{
	struct dirent *de;
	DIR *d;
	int fd;

	fd = openat(c->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		int ret = -errno;

		close(fd);
		return ret;
	}
	while ((de = readdir(d))) {
		char id[BCACHE_ID_MAX + 1], sname[BCACHE_STATE_NAME_MAX];
		uint64_t m1 = 0, m2 = 0, bytes;
		size_t n = strlen(de->d_name);
		struct bcache_ent *e;
		bool ex1, ex2;

		if (bcache_id_valid(de->d_name)) {
			memcpy(id, de->d_name, n + 1);
		} else if (n > STATE_SUFFIX_LEN && n - STATE_SUFFIX_LEN <= BCACHE_ID_MAX &&
			   !strcmp(de->d_name + n - STATE_SUFFIX_LEN, STATE_SUFFIX)) {
			memcpy(id, de->d_name, n - STATE_SUFFIX_LEN);
			id[n - STATE_SUFFIX_LEN] = 0;
			if (!bcache_id_valid(id))
				continue;
		} else {
			continue; /* not ours */
		}
		if (bcache_ent_find(c, id))
			continue;
		bcache_state_name(id, sname, sizeof(sname));
		bytes = bcache_file_bytes(c->dirfd, id, &ex1, &m1) +
			bcache_file_bytes(c->dirfd, sname, &ex2, &m2);
		if (!ex1 && !ex2)
			continue;
		e = ent_add(c, id);
		if (!e) {
			if (c->nents >= BCACHE_MAX_BLOBS)
				break; /* logged; the rest stay untracked */
			closedir(d);
			return -ENOMEM;
		}
		e->atime = LZ_MAX(m1, m2);
		bcache_set_usage(c, e, bytes);
	}
	closedir(d);
	return 0;
}

int bcache_open(const char *dir, uint64_t max_bytes, struct bcache **out)
{
	struct bcache *c;
	int ret;

	c = lz_calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->dirfd = -1;
	c->max_bytes = max_bytes;
	c->ents.next = c->ents.prev = &c->ents;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	c->dir = lz_malloc(strlen(dir) + 1);
	if (!c->dir) {
		ret = -ENOMEM;
		goto out_free;
	}
	memcpy(c->dir, dir, strlen(dir) + 1);
	if (mkdir(dir, 0700) && errno != EEXIST) {
		ret = -errno;
		lz_err("%s: cannot create the cache directory: %s", dir, strerror(errno));
		goto out_free;
	}
	c->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (c->dirfd < 0) {
		ret = -errno;
		lz_err("%s: cannot open the cache directory: %s", dir, strerror(errno));
		goto out_free;
	}
	/* shared: processes may use one directory together (blob locks in blob.c);
	 * something that needs it alone can take it exclusively */
	if (flock(c->dirfd, LOCK_SH | LOCK_NB)) {
		ret = errno == EWOULDBLOCK ? -EBUSY : -errno;
		lz_err("%s: cache directory locked by another process: %s", dir, strerror(errno));
		goto out_free;
	}
	ret = scan_dir(c);
	if (ret) {
		lz_err("%s: cannot scan the cache directory: %s", dir, strerror(-ret));
		goto out_free;
	}
	ret = bcache_io_init(&c->io);
	if (ret)
		goto out_free;
	lz_info("%s: cache opened, %u blobs, %llu bytes, cap %llu", dir, c->nents,
		(unsigned long long)c->total, (unsigned long long)max_bytes);
	bcache_evict(c);
	*out = c;
	return 0;

out_free:
	while (c->ents.next != &c->ents)
		ent_del(c, c->ents.next);
	if (c->dirfd >= 0)
		close(c->dirfd);
	free(c->dir);
	pthread_cond_destroy(&c->cond);
	pthread_mutex_destroy(&c->lock);
	free(c);
	return ret;
}

void bcache_close(struct bcache *c)
{
	if (!c)
		return;
	for (struct bcache_ent *e = c->ents.next; e != &c->ents; e = e->next) {
		if (e->blob) {
			lz_err("%s: blob %s still open (%u refs) at close", c->dir, e->id, e->refs);
			/* the callers' pointers dangle now; freeing beats leaking fds */
			bcache_blob_free(e->blob);
			e->blob = NULL;
		}
	}
	bcache_io_exit(&c->io);
	while (c->ents.next != &c->ents)
		ent_del(c, c->ents.next);
	close(c->dirfd); /* drops the flock */
	free(c->dir);
	pthread_cond_destroy(&c->cond);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

int bcache_blob_open(struct bcache *c, const char *blob_id, uint64_t space_size, uint32_t nchunks,
		     struct bcache_blob **out)
{
	struct bcache_blob *b = NULL;
	struct bcache_ent *e;
	char sname[BCACHE_STATE_NAME_MAX];
	bool ex1, ex2;
	uint64_t bytes;
	int ret;

	if (!bcache_id_valid(blob_id)) {
		lz_err("%s: invalid blob id \"%.*s\"", c->dir, BCACHE_ID_MAX, blob_id ? blob_id : "");
		return -EINVAL;
	}
	if (nchunks > BCACHE_MAX_CHUNKS || space_size > BCACHE_MAX_BLOB_SIZE) {
		lz_err("%s: blob %s: %u chunks / %llu bytes over the cap (%u / %llu)", c->dir, blob_id,
		       nchunks, (unsigned long long)space_size, BCACHE_MAX_CHUNKS,
		       (unsigned long long)BCACHE_MAX_BLOB_SIZE);
		return -EINVAL;
	}

	pthread_mutex_lock(&c->lock);
	e = ent_wait_idle(c, blob_id);
	if (e && e->blob) {
		if (e->blob->space_size != space_size || e->blob->nchunks != nchunks) {
			pthread_mutex_unlock(&c->lock);
			lz_err("%s: blob %s is open as %llu bytes / %u chunks, not %llu / %u", c->dir,
			       blob_id, (unsigned long long)e->blob->space_size, e->blob->nchunks,
			       (unsigned long long)space_size, nchunks);
			return -EINVAL;
		}
		e->refs++;
		e->atime = bcache_tick(c);
		*out = e->blob;
		pthread_mutex_unlock(&c->lock);
		return 0;
	}
	if (!e && !(e = ent_add(c, blob_id))) {
		pthread_mutex_unlock(&c->lock);
		return c->nents >= BCACHE_MAX_BLOBS ? -ENOSPC : -ENOMEM;
	}
	e->busy = true;
	pthread_mutex_unlock(&c->lock);

	ret = bcache_blob_load(c, e, space_size, nchunks, &b);
	bcache_state_name(blob_id, sname, sizeof(sname));
	bytes = bcache_file_bytes(c->dirfd, blob_id, &ex1, NULL) +
		bcache_file_bytes(c->dirfd, sname, &ex2, NULL);

	pthread_mutex_lock(&c->lock);
	e->busy = false;
	if (ret) {
		if (!ex1 && !ex2)
			ent_del(c, e);
		else
			bcache_set_usage(c, e, bytes);
	} else {
		e->blob = b;
		e->refs = 1;
		e->atime = bcache_tick(c);
		bcache_set_usage(c, e, bytes);
		*out = b;
	}
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	if (!ret)
		bcache_evict(c);
	return ret;
}

void bcache_blob_put(struct bcache_blob *b)
{
	struct bcache *c;
	struct bcache_ent *e;
	bool last;

	if (!b)
		return;
	c = b->c;
	e = b->ent;
	pthread_mutex_lock(&c->lock);
	last = --e->refs == 0;
	if (last) {
		e->blob = NULL;
		e->atime = bcache_tick(c);
	}
	pthread_mutex_unlock(&c->lock);
	if (!last)
		return;
	/* detached: a new open of this id reads the state file, whose writes
	 * all completed before this put */
	bcache_blob_free(b);
	bcache_evict(c);
}

int bcache_blob_usage(struct bcache *c, const char *blob_id, uint64_t *bytes)
{
	char sname[BCACHE_STATE_NAME_MAX];
	bool ex1, ex2;
	uint64_t n;

	if (!bcache_id_valid(blob_id))
		return -EINVAL;
	bcache_state_name(blob_id, sname, sizeof(sname));
	n = bcache_file_bytes(c->dirfd, blob_id, &ex1, NULL) +
	    bcache_file_bytes(c->dirfd, sname, &ex2, NULL);
	if (!ex1 && !ex2)
		return -ENOENT;
	*bytes = n;
	return 0;
}

int bcache_remove(struct bcache *c, const char *blob_id)
{
	struct bcache_ent *e;
	int ret;

	if (!bcache_id_valid(blob_id))
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	e = ent_wait_idle(c, blob_id);
	if (e && e->refs) {
		pthread_mutex_unlock(&c->lock);
		return -EBUSY;
	}
	if (e)
		e->busy = true;
	pthread_mutex_unlock(&c->lock);

	ret = unlink_blob(c, blob_id);

	if (e) {
		pthread_mutex_lock(&c->lock);
		ent_del(c, e);
		pthread_cond_broadcast(&c->cond);
		pthread_mutex_unlock(&c->lock);
	}
	return ret;
}

uint64_t bcache_total_usage(struct bcache *c)
{
	uint64_t n;

	pthread_mutex_lock(&c->lock);
	n = c->total;
	pthread_mutex_unlock(&c->lock);
	return n;
}

void bcache_get_stats(const struct bcache *c, struct bcache_stats *st)
{
	st->hits = atomic_load(&c->hits);
	st->misses = atomic_load(&c->misses);
	st->fills = atomic_load(&c->fills);
	st->fill_bytes = atomic_load(&c->fill_bytes);
	st->evictions = atomic_load(&c->evictions);
}
