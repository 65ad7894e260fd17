/* SPDX-License-Identifier: Apache-2.0 */
/* bcache_int.h - internals shared by the cache/ files. */
#ifndef LAZYIMG_BCACHE_INT_H
#define LAZYIMG_BCACHE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <liburing.h>

#include "lazyimg/bcache.h"
#include "lazyimg/lz.h"

/*
 * State file: struct bcache_state_disk, then ceil(nchunks / 64) little-endian
 * 64-bit bitmap words (bit i % 64 of word i / 64 is chunk i). The file is
 * exactly that long; bits at or past nchunks are zero. All fields little-endian.
 */
#define BCACHE_STATE_MAGIC	"LZBCSTAT"
#define BCACHE_STATE_VERSION	1u

struct bcache_state_disk {
	uint8_t magic[8];        /* BCACHE_STATE_MAGIC, no NUL */
	uint32_t version;        /* BCACHE_STATE_VERSION */
	uint32_t hdr_size;       /* bytes, sizeof(struct bcache_state_disk) */
	uint64_t blob_size;      /* bytes of uncompressed space (data file size) */
	uint32_t nchunks;        /* chunk count, <= BCACHE_MAX_CHUNKS */
	uint32_t flags;          /* none defined; must be 0 */
	uint8_t reserved[24];    /* must be 0 */
	uint64_t checksum;       /* XXH64 (seed 0) of the bytes before this field */
};
_Static_assert(sizeof(struct bcache_state_disk) == 64, "state header is 64 bytes");

#define BCACHE_STATE_HDR_SIZE	((uint32_t)sizeof(struct bcache_state_disk))
#define BCACHE_STATE_NAME_MAX	(BCACHE_ID_MAX + 7)	/* "<id>.state" + NUL */
#define BCACHE_STATE_MAX_SIZE	(BCACHE_STATE_HDR_SIZE + 8ull * (BCACHE_MAX_CHUNKS / 64))

struct bcache_state_info {
	uint64_t blob_size;
	uint32_t nchunks;
};

static inline uint32_t bcache_bitmap_words(uint32_t nchunks)
{
	return (uint32_t)(((uint64_t)nchunks + 63) / 64);
}
/* Exact file size of a state file for nchunks (nchunks <= BCACHE_MAX_CHUNKS). */
static inline uint64_t bcache_state_size(uint32_t nchunks)
{
	return BCACHE_STATE_HDR_SIZE + 8ull * bcache_bitmap_words(nchunks);
}

/* Encode a header for (blob_size, nchunks) into out. */
void bcache_state_encode_hdr(void *out, uint64_t blob_size, uint32_t nchunks);
/*
 * Validate a whole state file held in buf (hostile input). On success fills
 * *info and returns 0; the bitmap is the bcache_state_size(info->nchunks) -
 * BCACHE_STATE_HDR_SIZE bytes after the header. -EFSCORRUPTED otherwise, with
 * the reason in why (static string). Does not log.
 */
int bcache_state_parse(const void *buf, size_t len, struct bcache_state_info *info,
		       const char **why);

/*
 * I/O: one thread per cache owns an io_uring (created in that thread with
 * IORING_SETUP_SINGLE_ISSUER when the kernel takes it). Callers push requests
 * on a bounded queue and wait on the request's own condvar; the thread batches
 * everything queued into one io_uring_submit. The thread sleeps only in
 * io_uring_submit_and_wait(); a read on an eventfd stays armed in the ring so
 * that a caller's eventfd write (on the queue's empty -> non-empty edge)
 * wakes it.
 *
 * Why a thread and not a ring per calling thread: FUSE workers and prefetch
 * threads come and go, a thread-local ring would need per-thread setup and
 * teardown hooks and would cost a ring (and locked memory) per worker, and a
 * single ring batches the fsyncs of concurrent fills into one submission.
 */
#define BCACHE_IO_QDEPTH	128u		/* queued requests before callers block */
#define BCACHE_IO_RING		256u		/* SQ entries; a write+fsync uses two */
#define BCACHE_IO_MAX		(1u << 30)	/* bytes per request (sqe->len is 32-bit) */

enum bcache_io_op {
	BCACHE_IO_READ = 1,
	BCACHE_IO_WRITE_SYNC,	/* write, then fdatasync of the written range (linked) */
};

struct bcache_ioreq {
	int op;                  /* enum bcache_io_op */
	int fd;
	void *buf;
	uint32_t len;            /* bytes, <= BCACHE_IO_MAX */
	uint64_t off;
	int res;                 /* bytes transferred or -errno */
	int sync_res;            /* WRITE_SYNC: fdatasync result; -ECANCELED after a short write */
	unsigned pending;        /* CQEs outstanding; I/O thread only */
	bool done;               /* protected by mu */
	pthread_mutex_t mu;
	pthread_cond_t cv;
};

struct bcache_io {
	/* lock order: io->lock is a leaf; req->mu is a leaf */
	pthread_mutex_t lock;
	pthread_cond_t space;    /* queue has room, or stop */
	pthread_cond_t started;  /* thread finished ring setup */
	struct bcache_ioreq *q[BCACHE_IO_QDEPTH]; /* protected by lock */
	unsigned head, count;    /* protected by lock */
	bool stop;               /* protected by lock */
	unsigned qdepth;         /* protected by lock; <= BCACHE_IO_QDEPTH */
	unsigned max_inflight;   /* protected by lock; CQEs outstanding, <= BCACHE_IO_RING */
	int init_state;          /* protected by lock: 1 pending, 0 ok, <0 ring setup failed */

	bool have_ring;          /* set before any request; false: synchronous fallback */
	bool thread_started;
	pthread_t thr;
	int efd;                 /* eventfd waking the thread, -1 none */
	/* owned by the I/O thread */
	struct io_uring ring;
	uint64_t efd_val;
	bool efd_armed;
	unsigned inflight;       /* CQEs still expected for requests */
};

int bcache_io_init(struct bcache_io *io);
void bcache_io_exit(struct bcache_io *io);
/* Test hook: shrink the queue and the in-flight window to force push back. */
void bcache_io_set_limits(struct bcache_io *io, unsigned qdepth, unsigned max_inflight);
/* Run one request and wait for it: 0 (see r->res, r->sync_res) or -ESHUTDOWN. */
int bcache_io_submit(struct bcache_io *io, struct bcache_ioreq *r);

/* A single fetch in progress, or just finished and still referenced by waiters. */
struct bcache_flight {
	struct bcache_flight *next; /* blob->flights list; protected by blob->lock */
	uint32_t idx;
	int state;               /* BCACHE_FL_*; protected by blob->lock */
	int err;                 /* BCACHE_FL_FAILED: the owner's error */
	unsigned waiters;        /* protected by blob->lock; the last waiter out frees a finished flight */
	pthread_cond_t cv;       /* waits on blob->lock */
};
/* FAILED: the owner aborted, waiters return its error; RETRY: the owner's
 * fill could not store the data, waiters claim again (one becomes the owner) */
enum { BCACHE_FL_FETCHING = 0, BCACHE_FL_DONE, BCACHE_FL_FAILED, BCACHE_FL_RETRY };

struct bcache_ent;

struct bcache_blob {
	/* lock order: see struct bcache; blob->lock is a leaf */
	struct bcache *c;
	struct bcache_ent *ent;   /* valid only while the blob is open (refs > 0) */
	char id[BCACHE_ID_MAX + 1];
	uint64_t space_size;      /* immutable */
	uint32_t nchunks;         /* immutable */
	uint32_t nwords;          /* immutable */
	int data_fd;
	int state_fd;
	_Atomic uint64_t *ready;  /* nwords words; bits only ever get set while open */
	_Atomic uint32_t nready;
	pthread_mutex_t lock;
	struct bcache_flight *flights; /* protected by lock */
	pthread_mutex_t state_lock;    /* serialises state-file word writes and usage refresh */
};

/* One blob known to the cache: open, or just files on disk. */
struct bcache_ent {
	struct bcache_ent *prev, *next; /* protected by cache->lock */
	char id[BCACHE_ID_MAX + 1];
	uint32_t refs;            /* protected by cache->lock */
	bool busy;                /* opening or deleting: others wait on cache->cond; protected by cache->lock */
	struct bcache_blob *blob; /* protected by cache->lock; non-NULL iff refs > 0 */
	uint64_t usage;           /* bytes on disk; protected by cache->lock */
	uint64_t atime;           /* last access, ns since the epoch; protected by cache->lock */
};

struct bcache {
	/*
	 * lock order: blob->state_lock -> cache->lock (the only nesting: a fill
	 * refreshes the blob's usage while it still holds state_lock).
	 * blob->lock, io->lock and req->mu are leaves. No lock is held while
	 * waiting for an I/O completion. cache->lock is never held across file
	 * I/O: opening and deleting mark the entry busy and drop the lock.
	 * blob->state_lock is held across one 8-byte pwrite and two fstats.
	 */
	int dirfd;
	char *dir;
	uint64_t max_bytes;       /* 0: no cap; immutable */
	struct bcache_io io;
	pthread_mutex_t lock;
	pthread_cond_t cond;      /* an entry stopped being busy; waits on lock */
	struct bcache_ent ents;   /* list head; protected by lock */
	uint32_t nents;           /* protected by lock */
	uint64_t total;           /* sum of ent->usage; protected by lock */
	uint64_t last_tick;       /* protected by lock */
	bool evicting;            /* one evictor at a time; protected by lock */
	_Atomic long over_cap_log, io_err_log; /* lz_ratelimit */
	_Atomic uint64_t hits, misses, fills, fill_bytes, evictions;
};

/* cache.c */
struct bcache_ent *bcache_ent_find(struct bcache *c, const char *id); /* cache->lock held */
uint64_t bcache_tick(struct bcache *c);                              /* cache->lock held */
void bcache_set_usage(struct bcache *c, struct bcache_ent *e, uint64_t bytes); /* cache->lock held */
void bcache_evict(struct bcache *c);                                 /* no locks held */
uint64_t bcache_file_bytes(int dirfd, const char *name, bool *exists, uint64_t *mtime_ns);
int bcache_state_name(const char *id, char *out, size_t size);

/* blob.c */
int bcache_blob_load(struct bcache *c, struct bcache_ent *e, uint64_t space_size, uint32_t nchunks,
		     struct bcache_blob **out);
void bcache_blob_free(struct bcache_blob *b);
/* Test hook: threads currently waiting on chunk idx. */
unsigned bcache_chunk_waiters(struct bcache_blob *b, uint32_t idx);

#endif
