/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bcache.h - on-disk blob cache: one sparse file per blob holding verified,
 * uncompressed chunk bytes at their uncompressed offsets, plus a persisted
 * chunk-state map, single-flight fetch coordination, usage accounting and LRU
 * eviction under a size cap.
 *
 * Files in the cache directory, per blob id:
 *   <id>        sparse data file, exactly space_size bytes long
 *   <id>.state  header (magic, version, blob size, chunk count, XXH64 of the
 *               header) followed by the ready bitmap, one bit per chunk
 * A bit is set in the state file only after the chunk's bytes were written
 * and fdatasync'd, so a crash can lose ready bits (a refetch) but never make
 * half-written data look ready. A state file that does not validate, or does
 * not match the blob's geometry or data file size, is discarded and the data
 * file emptied.
 *
 * Several processes may use one directory at once. Each holds a shared
 * flock on the data file of every blob it has open: emptying a blob (bad
 * state) or deleting it (eviction, bcache_remove) takes it exclusively, so it
 * never happens to a blob another process uses (eviction passes over it,
 * bcache_remove says -EBUSY). Ready bits meet in the state file: a process
 * ORs its bits into the word on disk under a byte-range lock, and before it
 * fetches a chunk it does not know as ready it looks there (one pread per
 * miss). Two processes may still fetch the same chunk at once; both write the
 * same verified bytes. Usage and the size cap are per process (what each one
 * has seen of the directory).
 *
 * I/O: data reads and writes go through io_uring, owned by one I/O thread per
 * struct bcache; callers queue requests on a bounded queue (blocking while it
 * is full) and sleep until their request completes. If io_uring is not
 * available (disabled by sysctl or seccomp, a kernel without the opcodes, no
 * locked memory) each bcache_open() logs a warning and the cache does
 * pread/pwrite/fdatasync in the calling thread instead. Lock order and the
 * reason for an I/O thread rather than a ring per thread: cache/bcache_int.h.
 *
 * Thread safety: every function may be called from many threads at once,
 * except bcache_close(), which must not race with anything on the same cache.
 * A struct bcache_blob pointer is valid from bcache_blob_open() until the
 * matching bcache_blob_put(); every call taking `b` needs such a reference.
 *
 * Errors are negative errno values: -EINVAL (bad argument or id), -ENOMEM,
 * -ETIMEDOUT, -EBUSY, -ENOENT, -EIO and whatever the file system returned.
 */
#ifndef LAZYIMG_BCACHE_H
#define LAZYIMG_BCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BCACHE_ID_MAX		128			/* blob id length, [0-9A-Za-z._-] */
#define BCACHE_MAX_CHUNKS	(1u << 24)		/* per blob; 2 MiB of bitmap */
#define BCACHE_MAX_BLOB_SIZE	(1ull << 42)		/* 4 TiB uncompressed per blob */
#define BCACHE_MAX_BLOBS	65536u			/* blobs tracked per cache dir */

struct bcache;
struct bcache_blob;

struct bcache_stats {
	uint64_t hits;       /* claims that found the chunk ready (at once or after waiting) */
	uint64_t misses;     /* claims that returned 1: the caller fetches */
	uint64_t fills;      /* chunks made ready by bcache_chunk_fill */
	uint64_t fill_bytes; /* bytes written by those fills */
	uint64_t evictions;  /* blobs deleted to stay under the size cap */
};

/*
 * Open the cache in `dir` (created with mode 0700 if missing; its parent must
 * exist). Scans the directory to seed usage and LRU order (file mtimes),
 * starts the I/O thread, then evicts unused blobs while usage > max_bytes.
 * max_bytes 0 means no cap. The cap is soft: blobs in use are never evicted,
 * so usage may exceed it while they are open. Eviction deletes whole blobs,
 * least recently used first, where a blob's last use is its last open or
 * final put (after a restart: the newer mtime of its two files). It runs in
 * whichever thread pushed usage over the cap or released a blob (open, fill,
 * put). -EBUSY only if something holds the directory exclusively.
 */
int bcache_open(const char *dir, uint64_t max_bytes, struct bcache **out);
/* Stop the I/O thread and free the cache. Every blob must have been put
 * (blobs still open are logged and closed). NULL is allowed. */
void bcache_close(struct bcache *c);

/*
 * Get a reference to blob `blob_id` with space_size bytes of uncompressed
 * space divided into nchunks chunks (index < nchunks), creating or reopening
 * its files. Chunks recorded ready in a valid state file stay ready. If the
 * blob is already open, space_size and nchunks must match (-EINVAL). Blocks
 * on file I/O; concurrent opens of one id wait for the first to finish.
 * Release with bcache_blob_put().
 */
int bcache_blob_open(struct bcache *c, const char *blob_id, uint64_t space_size, uint32_t nchunks,
		     struct bcache_blob **out);
/* Drop a reference. The last put closes the files and makes the blob
 * evictable; its state file's mtime records the access for the next start.
 * NULL is allowed. */
void bcache_blob_put(struct bcache_blob *b);

/* Lock-free: true if chunk idx is durable in the cache. false for idx >= nchunks. */
bool bcache_chunk_ready(const struct bcache_blob *b, uint32_t idx);
/* Lock-free: number of ready chunks. */
uint32_t bcache_ready_count(const struct bcache_blob *b);

/*
 * Single flight. Returns
 *   0   the chunk is ready: read it with bcache_read();
 *   1   the caller now owns the fetch and must call exactly one of
 *       bcache_chunk_fill() or bcache_chunk_abort() for idx;
 *   -ETIMEDOUT  another thread owns the fetch and did not finish within
 *       timeout_ms (it still owns it);
 *   err  the owner aborted with err (negative) while this caller waited.
 *       The failure is not remembered: the next claim may return 1.
 *       (If instead the owner's bcache_chunk_fill() fails, waiters do not
 *       see that error: they claim again within their deadline, so one of
 *       them becomes the new owner and the rest keep waiting.)
 *   -EINVAL (idx out of range), -ENOMEM.
 * Blocks only while another thread owns the fetch; timeout_ms 0 never
 * blocks, < 0 waits without a deadline (avoid in FUSE workers). A thread
 * must not claim a chunk it already owns (it would wait for itself).
 */
int bcache_chunk_claim(struct bcache_blob *b, uint32_t idx, int timeout_ms);
/*
 * Owner only: write len verified bytes at uncompressed offset off, make them
 * durable (fdatasync), mark chunk idx ready, persist its bit and wake the
 * waiters. len 0 marks the chunk ready without I/O. On failure (a write or
 * fdatasync error, -EINVAL for a bad range) the claim is released, waiters
 * claim again (see bcache_chunk_claim) and the error is returned; do not
 * call bcache_chunk_abort() after it.
 * -EINVAL if [off, off+len) is outside the blob or idx is not claimed.
 * Blocks on I/O; may then evict unused blobs when over the cap.
 */
int bcache_chunk_fill(struct bcache_blob *b, uint32_t idx, const void *buf, size_t len,
		      uint64_t off);
/* Owner only: give up the fetch of idx; waiters return err (negative;
 * anything else becomes -EIO). Does not block on I/O. */
void bcache_chunk_abort(struct bcache_blob *b, uint32_t idx, int err);

/*
 * Read exactly len cached bytes at off. Only meaningful for ranges covered
 * by ready chunks: the cache does not know chunk extents, and holes read as
 * zeros. 0, -EINVAL (outside the blob) or an I/O error. Blocks on I/O.
 */
int bcache_read(struct bcache_blob *b, void *buf, size_t len, uint64_t off);

/* Bytes the blob's files use on disk (st_blocks * 512 of <id> and
 * <id>.state), open or not. -ENOENT if neither file exists. */
int bcache_blob_usage(struct bcache *c, const char *blob_id, uint64_t *bytes);
/* Delete a blob's files (state first). -EBUSY while it is open (here or in
 * another process sharing the directory), -ENOENT if there was nothing to delete. */
int bcache_remove(struct bcache *c, const char *blob_id);
/* Sum of the usage of all blobs as tracked by the cache (refreshed on open,
 * fill, eviction and removal; files changed behind its back are not seen). */
uint64_t bcache_total_usage(struct bcache *c);
/* Snapshot of the counters; each is read atomically, the set is not. */
void bcache_get_stats(const struct bcache *c, struct bcache_stats *st);

/* True if id is a valid blob id: 1..BCACHE_ID_MAX chars of [0-9A-Za-z._-],
 * not starting with '.' and not ending in ".state". */
bool bcache_id_valid(const char *id);

#endif
