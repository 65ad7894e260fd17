/* SPDX-License-Identifier: Apache-2.0 */
/* io.c - the cache's I/O thread: one io_uring, one submitter (see bcache_int.h). */
#define LZ_MOD "bcache"
#include "bcache_int.h"

#include <sys/eventfd.h>
#include <unistd.h>

#ifndef IORING_SETUP_SINGLE_ISSUER
#define IORING_SETUP_SINGLE_ISSUER (1U << 12)
#endif

#define TAG_SYNC 1ull   /* low bit of user_data: the fsync half of a WRITE_SYNC */

static void req_complete(struct bcache_ioreq *r)
{
	pthread_mutex_lock(&r->mu);
	r->done = true;
	pthread_cond_signal(&r->cv);
	/* r lives on the caller's stack: do not touch it after this unlock */
	pthread_mutex_unlock(&r->mu);
}

static int ring_setup(struct bcache_io *io)
{
	struct io_uring_probe *probe;
	struct io_uring_params p;
	int ret;

	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_SINGLE_ISSUER;
	ret = io_uring_queue_init_params(BCACHE_IO_RING, &io->ring, &p);
	if (ret == -EINVAL) {
		/* kernels before 6.0 reject unknown setup flags */
		lz_dbg("io_uring: IORING_SETUP_SINGLE_ISSUER refused, using a plain ring");
		memset(&p, 0, sizeof(p));
		ret = io_uring_queue_init_params(BCACHE_IO_RING, &io->ring, &p);
	}
	if (ret)
		return ret;
	probe = io_uring_get_probe_ring(&io->ring);
	if (!probe || !io_uring_opcode_supported(probe, IORING_OP_READ) ||
	    !io_uring_opcode_supported(probe, IORING_OP_WRITE) ||
	    !io_uring_opcode_supported(probe, IORING_OP_FSYNC)) {
		/* before 5.6 there is no probe and no IORING_OP_READ/WRITE */
		ret = -EOPNOTSUPP;
		io_uring_queue_exit(&io->ring);
	}
	if (probe)
		io_uring_free_probe(probe);
	return ret;
}

static void arm_efd(struct bcache_io *io)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&io->ring);

	if (!sqe)
		return; /* retried after the next reap frees SQ space */
	io_uring_prep_read(sqe, io->efd, &io->efd_val, sizeof(io->efd_val), 0);
	io_uring_sqe_set_data64(sqe, 0);
	io->efd_armed = true;
}

/* Move queued requests into SQEs while the SQ and CQ have room. Returns true
 * if stop was requested and the queue is empty. */
static bool drain_queue(struct bcache_io *io)
{
	bool took = false, stopping;

	pthread_mutex_lock(&io->lock);
	while (io->count && io_uring_sq_space_left(&io->ring) >= 2 &&
	       io->inflight + 2 <= io->max_inflight) {
		struct bcache_ioreq *r = io->q[io->head];
		struct io_uring_sqe *sqe;

		io->head = (io->head + 1) % BCACHE_IO_QDEPTH;
		io->count--;
		took = true;
		sqe = io_uring_get_sqe(&io->ring);
		if (r->op == BCACHE_IO_READ) {
			io_uring_prep_read(sqe, r->fd, r->buf, r->len, r->off);
			io_uring_sqe_set_data(sqe, r);
			r->pending = 1;
		} else {
			io_uring_prep_write(sqe, r->fd, r->buf, r->len, r->off);
			io_uring_sqe_set_data(sqe, r);
			sqe->flags |= IOSQE_IO_LINK;
			sqe = io_uring_get_sqe(&io->ring);
			io_uring_prep_fsync(sqe, r->fd, IORING_FSYNC_DATASYNC);
			/* sync only the range just written (vfs_fsync_range) */
			sqe->off = r->off;
			sqe->len = r->len;
			io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)r | TAG_SYNC);
			r->pending = 2;
		}
		io->inflight += r->pending;
	}
	stopping = io->stop && !io->count;
	pthread_mutex_unlock(&io->lock);
	if (took)
		pthread_cond_broadcast(&io->space);
	return stopping;
}

static void reap(struct bcache_io *io)
{
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;

	io_uring_for_each_cqe(&io->ring, head, cqe) {
		uint64_t ud = io_uring_cqe_get_data64(cqe);
		struct bcache_ioreq *r = (struct bcache_ioreq *)(uintptr_t)(ud & ~TAG_SYNC);

		n++;
		if (!ud) {
			io->efd_armed = false;
			continue;
		}
		if (ud & TAG_SYNC)
			r->sync_res = cqe->res;
		else
			r->res = cqe->res;
		io->inflight--;
		if (--r->pending == 0)
			req_complete(r);
	}
	io_uring_cq_advance(&io->ring, n);
}

static void *io_thread(void *arg)
{
	struct bcache_io *io = arg;
	bool stopping = false;
	int ret;

	ret = ring_setup(io);
	pthread_mutex_lock(&io->lock);
	io->init_state = ret;
	pthread_cond_broadcast(&io->started);
	pthread_mutex_unlock(&io->lock);
	if (ret)
		return NULL;

	for (;;) {
		if (!stopping)
			stopping = drain_queue(io);
		/* Re-arm only before stop is seen: the stopper sets stop, then
		 * writes the eventfd, so a read armed earlier always completes and
		 * no kernel write into efd_val can follow the loop's exit. */
		if (!stopping && !io->efd_armed)
			arm_efd(io);
		if (stopping && !io->inflight && !io->efd_armed && !io_uring_sq_ready(&io->ring))
			break;
		ret = io_uring_submit_and_wait(&io->ring, 1);
		if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
			/* cannot happen with a valid ring; avoid spinning if it does */
			lz_err("io_uring_submit_and_wait: %s", strerror(-ret));
			usleep(1000);
		}
		reap(io);
	}
	io_uring_queue_exit(&io->ring);
	return NULL;
}

int bcache_io_init(struct bcache_io *io)
{
	int ret;

	memset(io, 0, sizeof(*io));
	io->efd = -1;
	io->init_state = 1;
	io->qdepth = BCACHE_IO_QDEPTH;
	io->max_inflight = BCACHE_IO_RING;
	pthread_mutex_init(&io->lock, NULL);
	pthread_cond_init(&io->space, NULL);
	pthread_cond_init(&io->started, NULL);
	io->efd = eventfd(0, EFD_CLOEXEC);
	if (io->efd < 0) {
		ret = -errno;
		lz_err("eventfd: %s", strerror(errno));
		goto out;
	}
	ret = -pthread_create(&io->thr, NULL, io_thread, io);
	if (ret) {
		lz_err("cannot start the I/O thread: %s", strerror(-ret));
		goto out;
	}
	pthread_mutex_lock(&io->lock);
	while (io->init_state == 1)
		pthread_cond_wait(&io->started, &io->lock);
	ret = io->init_state;
	pthread_mutex_unlock(&io->lock);
	if (!ret) {
		io->thread_started = true;
		io->have_ring = true;
		return 0;
	}
	pthread_join(io->thr, NULL);
	/* io_uring disabled (kernel.io_uring_disabled, a seccomp policy), too
	 * old, or out of locked memory: still a working cache, without batching */
	lz_warn("io_uring unavailable (%s): using pread/pwrite", strerror(-ret));
	close(io->efd);
	io->efd = -1;
	return 0;
out:
	if (io->efd >= 0)
		close(io->efd);
	io->efd = -1;
	pthread_cond_destroy(&io->started);
	pthread_cond_destroy(&io->space);
	pthread_mutex_destroy(&io->lock);
	return ret;
}

void bcache_io_exit(struct bcache_io *io)
{
	if (io->thread_started) {
		uint64_t one = 1;

		pthread_mutex_lock(&io->lock);
		io->stop = true;
		pthread_cond_broadcast(&io->space);
		pthread_mutex_unlock(&io->lock);
		if (write(io->efd, &one, sizeof(one)) != sizeof(one))
			lz_err("eventfd write: %s", strerror(errno));
		pthread_join(io->thr, NULL);
		io->thread_started = false;
	}
	if (io->efd >= 0)
		close(io->efd);
	io->efd = -1;
	pthread_cond_destroy(&io->started);
	pthread_cond_destroy(&io->space);
	pthread_mutex_destroy(&io->lock);
}

static void exec_sync(struct bcache_ioreq *r)
{
	ssize_t n;

	if (r->op == BCACHE_IO_READ) {
		n = pread(r->fd, r->buf, r->len, (off_t)r->off);
		r->res = n < 0 ? -errno : (int)n;
		return;
	}
	n = pwrite(r->fd, r->buf, r->len, (off_t)r->off);
	r->res = n < 0 ? -errno : (int)n;
	if (n != (ssize_t)r->len)
		r->sync_res = -ECANCELED;
	else
		r->sync_res = fdatasync(r->fd) ? -errno : 0;
}

void bcache_io_set_limits(struct bcache_io *io, unsigned qdepth, unsigned max_inflight)
{
	pthread_mutex_lock(&io->lock);
	io->qdepth = LZ_MAX(1u, LZ_MIN(qdepth, BCACHE_IO_QDEPTH));
	io->max_inflight = LZ_MAX(2u, LZ_MIN(max_inflight, BCACHE_IO_RING));
	pthread_mutex_unlock(&io->lock);
}

int bcache_io_submit(struct bcache_io *io, struct bcache_ioreq *r)
{
	bool wake;

	r->res = 0;
	r->sync_res = 0;
	if (!io->have_ring) {
		exec_sync(r);
		return 0;
	}
	r->done = false;
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);

	pthread_mutex_lock(&io->lock);
	while (io->count >= io->qdepth && !io->stop)
		pthread_cond_wait(&io->space, &io->lock); /* push back: queue full */
	if (io->stop) {
		pthread_mutex_unlock(&io->lock);
		pthread_cond_destroy(&r->cv);
		pthread_mutex_destroy(&r->mu);
		return -ESHUTDOWN;
	}
	io->q[(io->head + io->count) % BCACHE_IO_QDEPTH] = r;
	wake = ++io->count == 1;
	pthread_mutex_unlock(&io->lock);
	if (wake) {
		uint64_t one = 1;

		/* the counter cannot overflow: the thread reads it back to 0 */
		if (write(io->efd, &one, sizeof(one)) != sizeof(one))
			lz_err("eventfd write: %s", strerror(errno));
	}

	pthread_mutex_lock(&r->mu);
	while (!r->done)
		pthread_cond_wait(&r->cv, &r->mu);
	pthread_mutex_unlock(&r->mu);
	pthread_cond_destroy(&r->cv);
	pthread_mutex_destroy(&r->mu);
	return 0;
}
