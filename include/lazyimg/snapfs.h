/* SPDX-License-Identifier: Apache-2.0 */
/*
 * snapfs.h - the snapshotter-facing filesystem layer: what nydus-snapshotter's
 * pkg/filesystem does with nydusd processes, done in-process. One struct
 * snap_fs hosts every lazily mounted image of a snapshotter root: FUSE
 * sessions, one shared blob cache, registry connections, persisted state.
 *
 * Layout under root (same names as nydus-snapshotter where one exists):
 *   snapshots/<id>/fs   upper path (UpperPath); a nydus meta layer's bootstrap
 *                       sits at fs/image/image.boot or fs/image.boot
 *   mnt/<id>            FUSE mountpoint of the snapshot's lazily mounted image
 *   cache/              blob cache (blobs/) and bootstraps/TOCs
 *   state/              persisted mounts, restored by snap_fs_open()
 *
 * Labels are containerd snapshot labels (key/value strings), see
 * ../shared/docs/snapshotter-integration.md section 1.
 *
 * Thread safety: every function may be called from many threads at once;
 * calls for one snapshot id are serialised internally.
 */
#ifndef LAZYIMG_SNAPFS_H
#define LAZYIMG_SNAPFS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lazyimg/snap.h"

#define SNAP_FS_ID_MAX 128

struct snap_fs;

struct snap_label {
	const char *key;
	const char *value;
};

struct snap_fs_opts {
	const char *root;              /* required */
	struct reg_opts reg;           /* registry options for every mount */
	uint64_t cache_max;            /* bytes, 0 = no cap */
	int prefetch;                  /* SNAP_PREFETCH_* */
	int threads;                   /* FUSE worker threads shared by all mounts: at most this many
	                                * (they start at 4 and grow while all are busy); 0 = 64 */
	/*
	 * Unix socket of an fd holder (snap_fdholder_main), or NULL. With one,
	 * every mount's /dev/fuse fd is parked there, snap_fs_close() leaves the
	 * kernel mounts in place (requests queue in the kernel) and the next
	 * snap_fs_open() adopts them: open files survive a restart or a crash
	 * of the serving process. Without one, snap_fs_close() unmounts and the
	 * next open mounts again from the persisted state.
	 */
	const char *fd_holder;
	bool no_restore;               /* do not restore persisted mounts at open */
	int hung_ms;                   /* a read running longer counts as hung; 0 = 10 s */
};

/* Open (creating dirs) and restore every persisted mount: each is listed
 * ("mounting") when this returns and becomes ready in the background, many
 * at once; WaitUntilReady waits for one. One that fails (registry down) stays
 * listed as "failed" and is mounted again in the background, after 1 s and
 * then doubling up to a minute, until it serves or is unmounted. */
int snap_fs_open(const struct snap_fs_opts *o, struct snap_fs **out);
/* Stop serving (mounts are left as persisted state for the next open
 * unless snap_fs_teardown() ran first). NULL is allowed. */
void snap_fs_close(struct snap_fs *fs);

/* Idempotent: a second Mount of the same id is 0. The image reference comes
 * from containerd.io/snapshot/cri.image-ref, else
 * containerd.io/snapshot/remote/stargz.reference (-EINVAL if neither). The
 * format (RAFS or eStargz) follows from the labels and the manifest. */
int snap_fs_mount(struct snap_fs *fs, const char *id, const struct snap_label *labels, size_t n);
/* Unknown id: 0. */
int snap_fs_umount(struct snap_fs *fs, const char *id);
/* -ENOENT for an unknown id. */
int snap_fs_mountpoint(struct snap_fs *fs, const char *id, char *buf, size_t len);
/* 0 once the mount serves, -ETIMEDOUT after timeout_ms, -ENOENT if unknown. */
int snap_fs_wait_until_ready(struct snap_fs *fs, const char *id, int timeout_ms);
/* digest must be "sha256:<64 lowercase hex>" (-EINVAL otherwise); bytes the
 * cache really uses for that blob (allocated blocks); 0 bytes if absent. */
int snap_fs_cache_usage(struct snap_fs *fs, const char *digest, uint64_t *bytes);
/* -EBUSY while a mount uses the blob; 0 if removed or absent. */
int snap_fs_remove_cache(struct snap_fs *fs, const char *digest);
/*
 * Other fds kept alive by the fd holder across restarts (the snapshotter's
 * listening socket): held under "..<name>", an id no mount can have. take:
 * the fd the holder had when this snap_fs opened (-ENOENT if none, or no
 * holder); park: the holder keeps a copy of fd (the caller keeps its own).
 */
int snap_fs_held_take(struct snap_fs *fs, const char *name, int *fd);
int snap_fs_held_park(struct snap_fs *fs, const char *name, int fd);
/* Unmount everything and forget the persisted mounts. */
int snap_fs_teardown(struct snap_fs *fs);
/* <root>/snapshots/<id>/fs/image/image.boot, else .../fs/image.boot; -ENOENT. */
int snap_fs_bootstrap_file(struct snap_fs *fs, const char *id, char *buf, size_t len);
/* <root>/snapshots/<id>/fs */
int snap_fs_upper_path(struct snap_fs *fs, const char *id, char *buf, size_t len);

/* One mount as listed. state: "mounting", "ready" or "failed" (error says why;
 * a failed restore keeps its persisted state; the retry thread or a new Mount
 * mounts it again). */
struct snap_fs_info {
	char id[SNAP_FS_ID_MAX + 1];
	char ref[512];
	char mountpoint[4096];
	const char *state;
	int error;                     /* negative errno of a failed mount, else 0 */
	bool adopted;                  /* serving a FUSE fd inherited from an earlier server */
};
/* Every known mount, sorted by id (malloc'd array in *out, free() it). */
int snap_fs_list(struct snap_fs *fs, struct snap_fs_info **out, size_t *n);
int snap_fs_get(struct snap_fs *fs, const char *id, struct snap_fs_info *info);

/* Counters of one mount (the keys of `lazyimg stats`); -ENOENT if unknown or not ready. */
struct snap_fs_stats {
	struct snap_stats src;
	uint64_t reads, read_bytes, read_errors, lookups;
	uint64_t lat[32];              /* read latency histogram, bucket i = [2^i, 2^(i+1)) us */
	uint64_t lat_p50_us, lat_p90_us, lat_p99_us, lat_max_us, lat_sum_us;
	uint64_t inflight, hung;       /* reads running now / running longer than hung_ms */
	const char *prefetch_source;   /* table, none, list or all (as `lazyimg stats`) */
};
#define SNAP_FS_HUNG_MS_DEFAULT 10000
int snap_fs_stats(struct snap_fs *fs, const char *id, struct snap_fs_stats *st);
/* Bytes the shared blob cache uses in total. */
uint64_t snap_fs_cache_total(struct snap_fs *fs);

/* id rule: 1..SNAP_FS_ID_MAX of [A-Za-z0-9._-], not "." or "..". */
bool snap_fs_id_valid(const char *id);

/*
 * The fd holder: a tiny process that keeps the /dev/fuse fds it is given
 * (SCM_RIGHTS over a SOCK_SEQPACKET unix socket, mode 0600) and hands
 * copies to whoever asks, so that the kernel connection of a mount outlives
 * the server that made it. It exits once it holds no fd and no client is
 * connected (after a grace period at start). Returns the exit status.
 */
int snap_fdholder_main(const char *sock_path);
/* 0 if a holder answers on sock_path. */
int snap_fdholder_ping(const char *sock_path);

/*
 * The control API of `lazyimg serve`: HTTP/1.1 + JSON on a unix socket
 * (mode 0600), one thread per connection (at most 32 at once). Routes:
 *   GET    /api/v1/mounts                 list
 *   POST   /api/v1/mounts                 {"id":..., "labels":{...}} or {"id":..., "ref":...}
 *   GET    /api/v1/mounts/<id>            mountpoint, state, ready
 *   DELETE /api/v1/mounts/<id>
 *   GET    /api/v1/mounts/<id>/stats      the JSON of `lazyimg stats`
 *   GET    /api/v1/usage?digest=sha256:.. {"digest":..., "bytes":N}
 *   DELETE /api/v1/cache/<digest>
 *   GET    /metrics                       Prometheus text format
 * Errors: {"error":"message"} with 400 (bad request/JSON/id/digest), 404,
 * 405, 409 (another request for the same id is running; the blob is in use),
 * 413, 422 (not a lazily mountable image), 500, 502 (registry), 503, 507 (no space).
 */
struct snap_serve;
int snap_serve_start(struct snap_fs *fs, const char *sock_path, struct snap_serve **out);
void snap_serve_stop(struct snap_serve *s);

/* Label predicates (pure functions of the labels). */
bool snap_labels_nydus_meta(const struct snap_label *l, size_t n);   /* nydus-bootstrap=true */
bool snap_labels_nydus_blob(const struct snap_label *l, size_t n);   /* nydus-blob=true */
bool snap_labels_stargz(const struct snap_label *l, size_t n);       /* toc.digest or stargz labels */
const char *snap_label_get(const struct snap_label *l, size_t n, const char *key);

#endif
