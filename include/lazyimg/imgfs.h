/* SPDX-License-Identifier: Apache-2.0 */
/*
 * imgfs.h - serve an image (image.h) read-only over FUSE with the libfuse3
 * low-level API and a multithreaded loop.
 */
#ifndef LAZYIMG_IMGFS_H
#define LAZYIMG_IMGFS_H

#include "lazyimg/image.h"

struct imgfs;

struct imgfs_opts {
	const char *mountpoint;
	const char *fsname;     /* shown in /proc/mounts; default "lazyimg" */
	const char *subtype;    /* fuse.<subtype>; default the image format */
	bool allow_other;
	bool debug;             /* libfuse request tracing */
	unsigned max_threads;   /* 0: libfuse default */
	/*
	 * Handing a live mount to a successor process (lazyimg serve, snapfs.h).
	 * handover: every worker reads the one /dev/fuse fd (a cloned fd dies
	 * with this process and the kernel aborts the requests it carried), the
	 * kernel's FUSE_INIT request is kept for imgfs_init_request(), and
	 * imgfs_destroy() never unmounts (the caller decides).
	 * adopt_fd > 0 (implies handover): serve this fd of a mount made by an
	 * earlier server instead of mounting; the imgfs owns it from then on,
	 * also on failure. init_req/init_len: the INIT request that server
	 * recorded, replayed so that libfuse knows the negotiated protocol
	 * (the kernel sends INIT once per mount). Requests the old server read
	 * but never answered are then asked back with FUSE_NOTIFY_RESEND
	 * (Linux >= 6.9; older kernels leave those readers waiting).
	 */
	bool handover;
	int adopt_fd;
	const void *init_req;
	size_t init_len;
};

#define IMGFS_INIT_MAX 512      /* bytes of a recorded FUSE_INIT request */

#define IMGFS_LAT_BUCKETS 32  /* read latency histogram: bucket i holds [2^i, 2^(i+1)) us */

struct imgfs_stats {
	uint64_t reads, read_bytes, read_errors, lookups, readdirs;
	uint64_t lat[IMGFS_LAT_BUCKETS];
	uint64_t lat_p50_us, lat_p90_us, lat_p99_us, lat_max_us;
	uint64_t lat_sum_us;    /* sum of all read latencies (a Prometheus histogram's _sum) */
};

/* Create the session and mount it. The image stays owned by the caller and
 * must outlive the imgfs. */
int imgfs_mount(struct image *img, const struct imgfs_opts *opts, struct imgfs **out);
/* Serve requests until the filesystem is unmounted or imgfs_exit() is called. */
int imgfs_run(struct imgfs *fs);
/*
 * Driving sessions from an outside loop (many sessions sharing a thread pool,
 * snapshotter/pool.c) instead of imgfs_run(): when imgfs_fd() is readable,
 * call imgfs_serve_one(). It reads one request (the fd should be
 * O_NONBLOCK), calls rearm(arg) as soon as the request is off the fd (so that
 * another thread may read the next one while this one is served), then
 * serves it. Returns 1 (served), 0 (nothing to read: rearm was called), or
 * a negative errno once the session is over (unmounted: -ENODEV). A thread
 * that served requests calls imgfs_thread_done() before it exits.
 */
int imgfs_serve_one(struct imgfs *fs, void (*rearm)(void *arg), void *arg);
void imgfs_thread_done(void);
/* Ask a running loop to stop (async-signal-safe). */
void imgfs_exit(struct imgfs *fs);
/* Unmount (if still mounted) and free. */
void imgfs_destroy(struct imgfs *fs);
void imgfs_get_stats(const struct imgfs *fs, struct imgfs_stats *st);
/* The session's /dev/fuse fd (still owned by the imgfs). */
int imgfs_fd(const struct imgfs *fs);
/* Handover sessions: the recorded FUSE_INIT request; NULL (len 0) otherwise. */
const void *imgfs_init_request(const struct imgfs *fs, size_t *len);
/* Reads being served right now, and how many of them started more than
 * hung_us ago (the first IMGFS_TRACK_SLOTS concurrent reads are timed). */
#define IMGFS_TRACK_SLOTS 64
void imgfs_inflight(const struct imgfs *fs, uint64_t hung_us, uint64_t *inflight, uint64_t *hung);


/*
 * Walk an image's tree in pre-order (readdir order, "." and ".." skipped).
 * fn gets the full path ("/" for the root) and the entry's attributes; a
 * non-zero return stops the walk and is returned. Directory cycles and
 * absurd depth are reported as -EFSCORRUPTED, never followed.
 */
typedef int (*imgfs_walk_fn)(void *arg, const char *path, const struct img_attr *attr);
int imgfs_walk(struct image *img, imgfs_walk_fn fn, void *arg);

#endif
