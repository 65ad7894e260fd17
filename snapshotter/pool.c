/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pool.c - one set of worker threads for every FUSE session of a snap_fs,
 * instead of a libfuse loop (and its idle threads) per mount.
 *
 * Each session's /dev/fuse fd is O_NONBLOCK and registered in one epoll set
 * with EPOLLONESHOT: exactly one worker wakes for a readable fd, reads one
 * request, re-arms the fd (so another worker can take the next request of
 * the same session) and serves the request. Workers start at POOL_MIN and
 * grow up to the cap while every one of them is busy (a reader waiting on a
 * slow registry holds its worker; the others keep serving).
 *
 * Sessions live in a slot table; an epoll event carries slot and generation,
 * so a stale event for a removed session is recognised under the pool lock
 * and never touches freed memory. snap_pool_remove() waits until no worker
 * is inside the session: a request read from the fd is always answered.
 */
#define LZ_MOD "pool"
#include "snapfs_int.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define POOL_MAX_SESSIONS 4096
#define POOL_MIN 4
#define POOL_DEFAULT_MAX 64
#define POOL_MAX_CAP 1024
#define POOL_STOP_TOKEN UINT64_MAX

struct pool_slot {
	struct imgfs *ifs;
	uint32_t gen;
	int refs;                   /* workers inside the session */
	bool used, ended;
	void (*on_end)(void *arg);  /* the session ended by itself (unmounted) */
	void *arg;
};

struct snap_pool {
	int epfd, stopfd;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct pool_slot slots[POOL_MAX_SESSIONS];
	pthread_t th[POOL_MAX_CAP];
	int nth, idle, max;
};

struct rearm_ctx {
	struct snap_pool *p;
	int fd;
	uint64_t token;
};

static void rearm(void *arg)
{
	struct rearm_ctx *r = arg;
	struct epoll_event ev = { .events = EPOLLIN | EPOLLONESHOT, .data.u64 = r->token };

	/* fails only if the session was removed meanwhile: then nothing is owed */
	epoll_ctl(r->p->epfd, EPOLL_CTL_MOD, r->fd, &ev);
}

static void *worker(void *arg);

/* caller holds p->lock */
static void grow(struct snap_pool *p)
{
	if (p->nth >= p->max)
		return;
	if (pthread_create(&p->th[p->nth], NULL, worker, p) == 0) {
		p->nth++;
		p->idle++;
	}
}

static void *worker(void *arg)
{
	struct snap_pool *p = arg;

	for (;;) {
		struct epoll_event ev;
		struct pool_slot *s;
		struct rearm_ctx r;
		uint32_t idx, gen;
		bool end = false;
		void (*cb)(void *) = NULL;
		void *cb_arg = NULL;
		int n, ret;

		n = epoll_wait(p->epfd, &ev, 1, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 || ev.data.u64 == POOL_STOP_TOKEN)
			break;
		idx = (uint32_t)ev.data.u64;
		gen = (uint32_t)(ev.data.u64 >> 32);
		if (idx >= POOL_MAX_SESSIONS)
			continue;
		pthread_mutex_lock(&p->lock);
		s = &p->slots[idx];
		if (!s->used || s->gen != gen || s->ended) {
			pthread_mutex_unlock(&p->lock);
			continue; /* an event of a session removed since */
		}
		s->refs++;
		if (--p->idle == 0)
			grow(p);
		pthread_mutex_unlock(&p->lock);

		r = (struct rearm_ctx){ p, imgfs_fd(s->ifs), ev.data.u64 };
		ret = imgfs_serve_one(s->ifs, rearm, &r);

		pthread_mutex_lock(&p->lock);
		p->idle++;
		if (ret < 0 && !s->ended) {
			s->ended = true;
			end = true;
			epoll_ctl(p->epfd, EPOLL_CTL_DEL, r.fd, NULL);
			cb = s->on_end;
			cb_arg = s->arg;
		}
		if (!end) {
			s->refs--;
			pthread_cond_broadcast(&p->cond);
		}
		pthread_mutex_unlock(&p->lock);
		if (end) {
			/* still counted in refs: snap_pool_remove waits for the callback too */
			if (cb)
				cb(cb_arg);
			pthread_mutex_lock(&p->lock);
			s->refs--;
			pthread_cond_broadcast(&p->cond);
			pthread_mutex_unlock(&p->lock);
		}
	}
	imgfs_thread_done();
	return NULL;
}

int snap_pool_start(int max_threads, struct snap_pool **out)
{
	struct snap_pool *p = lz_calloc(1, sizeof(*p));
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = POOL_STOP_TOKEN };
	int ret = 0;

	if (!p)
		return -ENOMEM;
	p->max = max_threads > 0 ? LZ_MIN(max_threads, POOL_MAX_CAP) : POOL_DEFAULT_MAX;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	p->epfd = epoll_create1(EPOLL_CLOEXEC);
	p->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (p->epfd < 0 || p->stopfd < 0 || epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->stopfd, &ev) < 0) {
		ret = -errno;
		goto err;
	}
	pthread_mutex_lock(&p->lock);
	for (int i = 0; i < LZ_MIN(POOL_MIN, p->max); i++)
		grow(p);
	pthread_mutex_unlock(&p->lock);
	if (!p->nth) {
		ret = -EAGAIN;
		goto err;
	}
	*out = p;
	return 0;
err:
	if (p->epfd >= 0)
		close(p->epfd);
	if (p->stopfd >= 0)
		close(p->stopfd);
	free(p);
	return ret;
}

int snap_pool_add(struct snap_pool *p, struct imgfs *ifs, void (*on_end)(void *), void *arg, int *slot)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLONESHOT };
	int fd = imgfs_fd(ifs), fl, idx = -1, ret = 0;

	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	pthread_mutex_lock(&p->lock);
	for (int i = 0; i < POOL_MAX_SESSIONS; i++)
		if (!p->slots[i].used) {
			idx = i;
			break;
		}
	if (idx < 0) {
		ret = -EMFILE;
		goto out;
	}
	p->slots[idx] = (struct pool_slot){ .ifs = ifs, .gen = p->slots[idx].gen + 1, .used = true,
					    .on_end = on_end, .arg = arg };
	ev.data.u64 = (uint64_t)p->slots[idx].gen << 32 | (uint32_t)idx;
	if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		ret = -errno;
		p->slots[idx].used = false;
		goto out;
	}
	*slot = idx;
out:
	pthread_mutex_unlock(&p->lock);
	return ret;
}

/* Stop serving the session (its mount stays as it is); waits for workers inside it. */
void snap_pool_remove(struct snap_pool *p, int slot)
{
	struct pool_slot *s;

	if (slot < 0 || slot >= POOL_MAX_SESSIONS)
		return;
	pthread_mutex_lock(&p->lock);
	s = &p->slots[slot];
	if (!s->used) {
		pthread_mutex_unlock(&p->lock);
		return;
	}
	if (!s->ended)
		epoll_ctl(p->epfd, EPOLL_CTL_DEL, imgfs_fd(s->ifs), NULL);
	s->ended = true;
	s->gen++; /* events already queued for it are now stale */
	while (s->refs)
		pthread_cond_wait(&p->cond, &p->lock);
	s->used = false;
	s->ifs = NULL;
	pthread_mutex_unlock(&p->lock);
}

void snap_pool_stop(struct snap_pool *p)
{
	uint64_t one = 1;
	int n;

	if (!p)
		return;
	/* level-triggered and never read: every worker sees it */
	if (write(p->stopfd, &one, sizeof(one)) != sizeof(one))
		lz_warn("cannot stop the FUSE worker pool");
	for (int i = 0;; i++) {
		pthread_mutex_lock(&p->lock);
		n = p->nth;
		pthread_mutex_unlock(&p->lock);
		if (i >= n)
			break;
		pthread_join(p->th[i], NULL);
	}
	close(p->epfd);
	close(p->stopfd);
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

int snap_pool_threads(struct snap_pool *p)
{
	int n;

	pthread_mutex_lock(&p->lock);
	n = p->nth;
	pthread_mutex_unlock(&p->lock);
	return n;
}
