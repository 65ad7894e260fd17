/* SPDX-License-Identifier: Apache-2.0 */
/* blob.c - one cached blob: state load/reset, single-flight claims, durable fills, reads. */
#define LZ_MOD "bcache"
#include "bcache_int.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define IO_RETRIES 3 /* -EINTR/-EAGAIN from a request; not expected for regular files */

/* Load b->ready from an open state file; 0 if it is valid for this blob,
 * -EFSCORRUPTED (logged) if it must be discarded, other errors are I/O. */
static int state_load(struct bcache_blob *b, const char *dir, const char *id, uint64_t data_size, bool quiet)
{
	struct bcache_state_info info;
	const char *why = NULL;
	uint8_t *buf = NULL;
	struct stat st;
	uint32_t n = 0;
	int ret;

	if (fstat(b->state_fd, &st))
		return -errno;
	if (!S_ISREG(st.st_mode) || st.st_size < 0 || (uint64_t)st.st_size > BCACHE_STATE_MAX_SIZE) {
		if (!quiet)
			lz_warn("%s: blob %s: discarding state file: %lld bytes is not a state file", dir, id,
				(long long)st.st_size);
		return -EFSCORRUPTED;
	}
	buf = lz_malloc((size_t)st.st_size);
	if (!buf)
		return -ENOMEM;
	ret = lz_pread_full(b->state_fd, buf, (size_t)st.st_size, 0, NULL);
	if (ret == -ENODATA)
		ret = -EFSCORRUPTED; /* shrank under us */
	if (ret)
		goto out;
	ret = bcache_state_parse(buf, (size_t)st.st_size, &info, &why);
	if (ret) {
		if (!quiet)
			lz_warn("%s: blob %s: discarding state file: %s", dir, id, why);
		goto out;
	}
	if (info.blob_size != b->space_size || info.nchunks != b->nchunks) {
		if (!quiet)
			lz_warn("%s: blob %s: discarding state file: it is for %llu bytes / %u chunks, the blob has %llu / %u",
			dir, id, (unsigned long long)info.blob_size, info.nchunks,
			(unsigned long long)b->space_size, b->nchunks);
		ret = -EFSCORRUPTED;
		goto out;
	}
	if (data_size != b->space_size) {
		if (!quiet)
			lz_warn("%s: blob %s: discarding state file: data file is %llu bytes, expected %llu", dir,
			id, (unsigned long long)data_size, (unsigned long long)b->space_size);
		ret = -EFSCORRUPTED;
		goto out;
	}
	for (uint32_t w = 0; w < b->nwords; w++) {
		uint64_t v = lz_get_le64(buf + BCACHE_STATE_HDR_SIZE + 8ull * w);

		atomic_store_explicit(&b->ready[w], v, memory_order_relaxed);
		n += (uint32_t)__builtin_popcountll(v);
	}
	atomic_store(&b->nready, n);
out:
	free(buf);
	return ret;
}

/* Start the blob empty: drop the old state durably, empty the data file,
 * then write a fresh state file with no bits set. */
static int state_reset(struct bcache *c, struct bcache_blob *b, const char *id, const char *sname)
{
	uint8_t hdr[BCACHE_STATE_HDR_SIZE];
	ssize_t n;

	if (b->state_fd >= 0) {
		close(b->state_fd);
		b->state_fd = -1;
		/* the old state must be gone before the data changes, or a crash
		 * could pair its bits with the emptied data file */
		if (unlinkat(c->dirfd, sname, 0) && errno != ENOENT)
			goto err;
		if (fsync(c->dirfd))
			goto err;
	}
	if (ftruncate(b->data_fd, 0) || ftruncate(b->data_fd, (off_t)b->space_size))
		goto err;
	/* a new inode: no bits of an older state can survive in it; a crash
	 * before the header is written leaves a file that fails validation */
	b->state_fd = openat(c->dirfd, sname, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (b->state_fd < 0)
		goto err;
	if (ftruncate(b->state_fd, (off_t)bcache_state_size(b->nchunks)))
		goto err;
	bcache_state_encode_hdr(hdr, b->space_size, b->nchunks);
	n = pwrite(b->state_fd, hdr, sizeof(hdr), 0);
	if (n != (ssize_t)sizeof(hdr)) {
		if (n >= 0)
			errno = EIO;
		goto err;
	}
	for (uint32_t w = 0; w < b->nwords; w++)
		atomic_store_explicit(&b->ready[w], 0, memory_order_relaxed);
	atomic_store(&b->nready, 0);
	return 0;
err:
	lz_err("%s: blob %s: cannot reset the cache files: %s", c->dir, id, strerror(errno));
	return -errno;
}

/*
 * Several processes may share a cache directory. Each holds a shared flock
 * on the data file of every blob it has open; emptying a blob (a missing or
 * bad state) and deleting one (eviction, RemoveCache) need it exclusive, so
 * neither happens under another process's feet. Ready bits are shared
 * through the state file: a process sets its bits there with a
 * read-modify-write under a byte-range lock, and looks there before it
 * fetches a chunk it does not know as ready.
 */
#define BLOB_LOCK_TRIES 500 /* x 10 ms: how long to wait for another process to make a state */

/* fd (locked) is still the file named id in the cache directory. */
static bool same_file(struct bcache *c, const char *id, int fd)
{
	struct stat a, b;

	return !fstat(fd, &a) && a.st_nlink > 0 && !fstatat(c->dirfd, id, &b, AT_SYMLINK_NOFOLLOW) &&
	       a.st_ino == b.st_ino && a.st_dev == b.st_dev;
}

/* Open (creating) the data file of id with a shared lock, and stat it. */
static int open_locked(struct bcache *c, const char *id, int *fdp, struct stat *st)
{
	for (;;) {
		int fd = openat(c->dirfd, id, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600), ret;

		if (fd < 0 || fstat(fd, st)) {
			ret = -errno;
			lz_err("%s/%s: cannot open the data file: %s", c->dir, id, strerror(errno));
			if (fd >= 0)
				close(fd);
			return ret;
		}
		if (!S_ISREG(st->st_mode)) {
			lz_err("%s/%s: not a regular file", c->dir, id);
			close(fd);
			return -EINVAL;
		}
		/* blocks only while another process deletes or empties it */
		while (flock(fd, LOCK_SH) && errno == EINTR)
			;
		/* deleted by another process between our open and our lock: again */
		if (same_file(c, id, fd) && !fstat(fd, st)) {
			*fdp = fd;
			return 0;
		}
		close(fd);
	}
}

/* Lock (or unlock) the 8 bytes of bitmap word w in the state file, across processes. */
static void word_lock(int fd, uint32_t w, short type)
{
	struct flock fl = {
		.l_type = type,
		.l_whence = SEEK_SET,
		.l_start = (off_t)(BCACHE_STATE_HDR_SIZE + 8ull * w),
		.l_len = 8,
	};

	while (fcntl(fd, F_OFD_SETLKW, &fl) < 0 && errno == EINTR)
		;
}

int bcache_blob_load(struct bcache *c, struct bcache_ent *e, uint64_t space_size, uint32_t nchunks,
		     struct bcache_blob **out)
{
	char sname[BCACHE_STATE_NAME_MAX];
	struct bcache_blob *b;
	struct stat st;
	int ret;

	ret = bcache_state_name(e->id, sname, sizeof(sname));
	if (ret)
		return ret;
	b = lz_calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->c = c;
	b->ent = e;
	memcpy(b->id, e->id, sizeof(b->id));
	b->space_size = space_size;
	b->nchunks = nchunks;
	b->nwords = bcache_bitmap_words(nchunks);
	b->data_fd = b->state_fd = -1;
	pthread_mutex_init(&b->lock, NULL);
	pthread_mutex_init(&b->state_lock, NULL);
	b->ready = lz_calloc(b->nwords, sizeof(*b->ready));
	if (!b->ready) {
		ret = -ENOMEM;
		goto out_free;
	}
	for (uint32_t w = 0; w < b->nwords; w++)
		atomic_init(&b->ready[w], 0);
	atomic_init(&b->nready, 0);

	for (int tries = 0;; tries++) {
		bool excl = false;

		ret = open_locked(c, e->id, &b->data_fd, &st);
		if (ret)
			goto out_free;
load:
		b->state_fd = openat(c->dirfd, sname, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
		if (b->state_fd >= 0) {
			ret = state_load(b, c->dir, e->id, (uint64_t)st.st_size, !excl);
			if (ret && ret != -EFSCORRUPTED) {
				lz_err("%s/%s: cannot read the state file: %s", c->dir, sname, strerror(-ret));
				goto out_free;
			}
		} else if (errno == ENOENT) {
			ret = -ENOENT;
		} else {
			ret = -errno;
			lz_err("%s/%s: cannot open the state file: %s", c->dir, sname, strerror(errno));
			goto out_free;
		}
		if (!ret)
			break;
		if (b->state_fd >= 0) {
			close(b->state_fd);
			b->state_fd = -1;
		}
		/*
		 * Missing or bad state: only a process alone with the blob may
		 * empty it. Another one that has it open loaded a valid state
		 * (or is creating it): wait for it, then look again.
		 */
		if (!excl) {
			if (flock(b->data_fd, LOCK_EX | LOCK_NB) == 0) {
				excl = true;
				/* the conversion dropped our shared lock for a moment:
				 * someone may have made or deleted the files meanwhile */
				if (!same_file(c, e->id, b->data_fd)) {
					close(b->data_fd);
					b->data_fd = -1;
					continue;
				}
				goto load;
			}
			close(b->data_fd);
			b->data_fd = -1;
			if (tries >= BLOB_LOCK_TRIES) {
				lz_err("%s: blob %s: its state is being made by another process: giving up", c->dir,
				       e->id);
				ret = -EBUSY;
				goto out_free;
			}
			usleep(5000 + (useconds_t)(random() % 10000)); /* jitter: two openers do not retry in step */
			continue;
		}
		if (ret == -ENOENT && st.st_size)
			lz_warn("%s: blob %s: data without a state file, starting empty", c->dir, e->id);
		ret = state_reset(c, b, e->id, sname);
		if (ret)
			goto out_free;
		/* others may use it from now on; a moment unlocked, so check it is still ours */
		flock(b->data_fd, LOCK_SH);
		if (same_file(c, e->id, b->data_fd))
			break;
		close(b->state_fd);
		b->state_fd = -1;
		close(b->data_fd);
		b->data_fd = -1;
	}
	lz_dbg("%s: blob %s open, %u of %u chunks ready", c->dir, e->id, atomic_load(&b->nready),
	       nchunks);
	*out = b;
	return 0;

out_free:
	bcache_blob_free(b);
	return ret;
}

void bcache_blob_free(struct bcache_blob *b)
{
	if (!b)
		return;
	while (b->flights) {
		struct bcache_flight *f = b->flights;

		/* nobody holds a reference, so nobody waits: a claim was leaked */
		lz_err("%s: blob %s: chunk %u still claimed at close", b->c->dir, b->id, f->idx);
		b->flights = f->next;
		pthread_cond_destroy(&f->cv);
		free(f);
	}
	if (b->state_fd >= 0) {
		/* mtime is the LRU time after a restart */
		futimens(b->state_fd, NULL);
		close(b->state_fd);
	}
	if (b->data_fd >= 0)
		close(b->data_fd);
	pthread_mutex_destroy(&b->state_lock);
	pthread_mutex_destroy(&b->lock);
	free(b->ready);
	free(b);
}

bool bcache_chunk_ready(const struct bcache_blob *b, uint32_t idx)
{
	if (idx >= b->nchunks)
		return false;
	return atomic_load_explicit(&b->ready[idx / 64], memory_order_acquire) >> (idx % 64) & 1;
}

uint32_t bcache_ready_count(const struct bcache_blob *b)
{
	return atomic_load(&b->nready);
}

static struct bcache_flight *flight_find(struct bcache_blob *b, uint32_t idx)
{
	for (struct bcache_flight *f = b->flights; f; f = f->next)
		if (f->idx == idx)
			return f;
	return NULL;
}

static void flight_unlink(struct bcache_blob *b, struct bcache_flight *f)
{
	for (struct bcache_flight **pp = &b->flights; *pp; pp = &(*pp)->next) {
		if (*pp == f) {
			*pp = f->next;
			return;
		}
	}
}

/* Finish the flight of idx: unlink it and wake its waiters. blob->lock held. */
static void flight_finish(struct bcache_blob *b, struct bcache_flight *f, int state, int err)
{
	flight_unlink(b, f);
	f->state = state;
	f->err = err;
	if (f->waiters) {
		pthread_cond_broadcast(&f->cv); /* the last waiter frees it */
	} else {
		pthread_cond_destroy(&f->cv);
		free(f);
	}
}

static void deadline_after(struct timespec *ts, int ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/*
 * Another process sharing the cache directory may have made chunk idx ready:
 * its bit is then in the state file, set after its data was durable. Take it
 * over (b->lock held; one pread, on a miss only).
 */
static bool shared_ready(struct bcache_blob *b, uint32_t idx)
{
	uint32_t w = idx / 64;
	uint64_t bit = 1ull << (idx % 64), v;
	uint8_t le[8];

	if (pread(b->state_fd, le, sizeof(le), (off_t)(BCACHE_STATE_HDR_SIZE + 8ull * w)) != (ssize_t)sizeof(le))
		return false;
	v = lz_get_le64(le);
	if (w == b->nwords - 1 && b->nchunks % 64)
		v &= (1ull << (b->nchunks % 64)) - 1; /* bits past the last chunk mean nothing */
	if (!(v & bit))
		return false;
	/* the other bits it brings are as good: take them all */
	v &= ~atomic_fetch_or_explicit(&b->ready[w], v, memory_order_release);
	atomic_fetch_add(&b->nready, (uint32_t)__builtin_popcountll(v));
	return true;
}

int bcache_chunk_claim(struct bcache_blob *b, uint32_t idx, int timeout_ms)
{
	struct bcache *c = b->c;
	struct bcache_flight *f;
	struct timespec deadline;
	bool have_deadline = false;
	int ret, state;

	if (idx >= b->nchunks) {
		lz_err("%s: blob %s: chunk index %u >= count %u", c->dir, b->id, idx, b->nchunks);
		return -EINVAL;
	}
	if (bcache_chunk_ready(b, idx)) {
		atomic_fetch_add(&c->hits, 1);
		return 0;
	}
	pthread_mutex_lock(&b->lock);
again:
	/* fill sets the bit before it finishes the flight, both under the lock */
	if (bcache_chunk_ready(b, idx)) {
		pthread_mutex_unlock(&b->lock);
		atomic_fetch_add(&c->hits, 1);
		return 0;
	}
	f = flight_find(b, idx);
	if (!f && shared_ready(b, idx)) {
		pthread_mutex_unlock(&b->lock);
		atomic_fetch_add(&c->hits, 1);
		return 0;
	}
	if (!f) {
		pthread_condattr_t ca;

		f = lz_calloc(1, sizeof(*f));
		if (!f) {
			pthread_mutex_unlock(&b->lock);
			return -ENOMEM;
		}
		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&f->cv, &ca);
		pthread_condattr_destroy(&ca);
		f->idx = idx;
		f->state = BCACHE_FL_FETCHING;
		f->next = b->flights;
		b->flights = f;
		pthread_mutex_unlock(&b->lock);
		atomic_fetch_add(&c->misses, 1);
		return 1;
	}
	if (timeout_ms == 0) {
		pthread_mutex_unlock(&b->lock);
		return -ETIMEDOUT;
	}
	if (timeout_ms > 0 && !have_deadline) {
		deadline_after(&deadline, timeout_ms);
		have_deadline = true;
	}
	f->waiters++;
	while (f->state == BCACHE_FL_FETCHING) {
		if (timeout_ms < 0) {
			pthread_cond_wait(&f->cv, &b->lock);
		} else if (pthread_cond_timedwait(&f->cv, &b->lock, &deadline) == ETIMEDOUT) {
			break;
		}
	}
	state = f->state;
	ret = state == BCACHE_FL_FAILED ? f->err : state == BCACHE_FL_DONE ? 0 : -ETIMEDOUT;
	if (--f->waiters == 0 && state != BCACHE_FL_FETCHING) {
		pthread_cond_destroy(&f->cv);
		free(f);
	}
	/* the owner fetched but could not store: the data is gone, fetch again */
	if (state == BCACHE_FL_RETRY)
		goto again;
	pthread_mutex_unlock(&b->lock);
	if (!ret)
		atomic_fetch_add(&c->hits, 1);
	return ret;
}

void bcache_chunk_abort(struct bcache_blob *b, uint32_t idx, int err)
{
	struct bcache_flight *f;

	if (err >= 0)
		err = -EIO;
	pthread_mutex_lock(&b->lock);
	f = flight_find(b, idx);
	if (f)
		flight_finish(b, f, BCACHE_FL_FAILED, err);
	pthread_mutex_unlock(&b->lock);
	if (!f)
		lz_warn("%s: blob %s: abort of chunk %u, which is not claimed", b->c->dir, b->id,
			idx);
}

/* Write and fdatasync [off, off+len); 0 only once all of it is durable. */
static int write_durable(struct bcache_blob *b, const void *buf, size_t len, uint64_t off)
{
	size_t done = 0;
	int tries = 0;

	while (done < len) {
		struct bcache_ioreq r = {
			.op = BCACHE_IO_WRITE_SYNC,
			.fd = b->data_fd,
			.buf = (uint8_t *)buf + done, /* only read from: ioreq.buf serves both directions */
			.len = (uint32_t)LZ_MIN(len - done, (size_t)BCACHE_IO_MAX),
			.off = off + done,
		};
		int ret = bcache_io_submit(&b->c->io, &r);

		if (ret)
			return ret;
		if ((r.res == -EINTR || r.res == -EAGAIN) && ++tries <= IO_RETRIES)
			continue;
		if (r.res < 0)
			return r.res;
		if (r.res == 0)
			return -EIO;
		done += (size_t)r.res;
		/* after a short write the fsync was cancelled; the loop syncs the rest */
		if ((uint32_t)r.res == r.len && r.sync_res < 0)
			return r.sync_res;
	}
	return 0;
}

static void persist_bit(struct bcache_blob *b, uint32_t idx)
{
	struct bcache *c = b->c;
	uint32_t w = idx / 64;
	uint8_t le[8];
	struct stat s1, s2;
	ssize_t n;

	pthread_mutex_lock(&b->state_lock);
	/* other processes set bits in the same word: add ours to what is on
	 * disk, never write back a word that lacks theirs */
	word_lock(b->state_fd, w, F_WRLCK);
	n = pread(b->state_fd, le, sizeof(le), (off_t)(BCACHE_STATE_HDR_SIZE + 8ull * w));
	lz_put_le64(le, (n == (ssize_t)sizeof(le) ? lz_get_le64(le) : 0) | atomic_load(&b->ready[w]));
	n = pwrite(b->state_fd, le, sizeof(le), (off_t)(BCACHE_STATE_HDR_SIZE + 8ull * w));
	word_lock(b->state_fd, w, F_UNLCK);
	if (n != (ssize_t)sizeof(le) && lz_ratelimit(&c->io_err_log, 10))
		lz_warn("%s: blob %s: cannot record chunk %u in the state file (%s): it will be refetched after a restart",
			c->dir, b->id, idx, n < 0 ? strerror(errno) : "short write");
	if (!fstat(b->data_fd, &s1) && !fstat(b->state_fd, &s2)) {
		pthread_mutex_lock(&c->lock);
		bcache_set_usage(c, b->ent, ((uint64_t)s1.st_blocks + (uint64_t)s2.st_blocks) * 512);
		pthread_mutex_unlock(&c->lock);
	}
	pthread_mutex_unlock(&b->state_lock);
}

int bcache_chunk_fill(struct bcache_blob *b, uint32_t idx, const void *buf, size_t len,
		      uint64_t off)
{
	struct bcache *c = b->c;
	struct bcache_flight *f;
	uint64_t bit;
	int ret;

	if (idx >= b->nchunks) {
		lz_err("%s: blob %s: fill of chunk index %u >= count %u", c->dir, b->id, idx,
		       b->nchunks);
		return -EINVAL;
	}
	pthread_mutex_lock(&b->lock);
	f = flight_find(b, idx);
	pthread_mutex_unlock(&b->lock);
	if (!f) {
		lz_err("%s: blob %s: fill of chunk %u, which is not claimed", c->dir, b->id, idx);
		return -EINVAL;
	}
	if (!lz_range_ok(off, len, b->space_size)) {
		lz_err("%s: blob %s: chunk %u: range %llu+%zu past the blob size %llu", c->dir,
		       b->id, idx, (unsigned long long)off, len,
		       (unsigned long long)b->space_size);
		ret = -EINVAL;
		goto fail;
	}
	ret = write_durable(b, buf, len, off);
	if (ret) {
		if (lz_ratelimit(&c->io_err_log, 10))
			lz_err("%s: blob %s: chunk %u: cannot write %zu bytes at %llu: %s", c->dir,
			       b->id, idx, len, (unsigned long long)off, strerror(-ret));
		goto fail;
	}

	bit = 1ull << (idx % 64);
	pthread_mutex_lock(&b->lock);
	/* the owner's flight is still linked: only the owner finishes it */
	if (!(atomic_fetch_or_explicit(&b->ready[idx / 64], bit, memory_order_release) & bit))
		atomic_fetch_add(&b->nready, 1);
	f = flight_find(b, idx);
	if (f)
		flight_finish(b, f, BCACHE_FL_DONE, 0);
	pthread_mutex_unlock(&b->lock);

	persist_bit(b, idx);
	atomic_fetch_add(&c->fills, 1);
	atomic_fetch_add(&c->fill_bytes, len);
	bcache_evict(c);
	return 0;

fail:
	/* the fetch itself worked: waiters claim again rather than fail */
	pthread_mutex_lock(&b->lock);
	f = flight_find(b, idx);
	if (f)
		flight_finish(b, f, BCACHE_FL_RETRY, ret);
	pthread_mutex_unlock(&b->lock);
	return ret;
}

int bcache_read(struct bcache_blob *b, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;
	int tries = 0;

	if (!lz_range_ok(off, len, b->space_size)) {
		lz_err("%s: blob %s: read %llu+%zu past the blob size %llu", b->c->dir, b->id,
		       (unsigned long long)off, len, (unsigned long long)b->space_size);
		return -EINVAL;
	}
	while (done < len) {
		struct bcache_ioreq r = {
			.op = BCACHE_IO_READ,
			.fd = b->data_fd,
			.buf = (uint8_t *)buf + done,
			.len = (uint32_t)LZ_MIN(len - done, (size_t)BCACHE_IO_MAX),
			.off = off + done,
		};
		int ret = bcache_io_submit(&b->c->io, &r);

		if (ret)
			return ret;
		if ((r.res == -EINTR || r.res == -EAGAIN) && ++tries <= IO_RETRIES)
			continue;
		if (r.res < 0)
			return r.res;
		if (r.res == 0)
			return -EIO; /* the data file shrank behind our back */
		done += (size_t)r.res;
	}
	return 0;
}

unsigned bcache_chunk_waiters(struct bcache_blob *b, uint32_t idx)
{
	struct bcache_flight *f;
	unsigned n;

	pthread_mutex_lock(&b->lock);
	f = flight_find(b, idx);
	n = f ? f->waiters : 0;
	pthread_mutex_unlock(&b->lock);
	return n;
}
