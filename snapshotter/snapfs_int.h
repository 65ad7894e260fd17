/* SPDX-License-Identifier: Apache-2.0 */
/*
 * snapfs_int.h - internals of struct snap_fs (fs.c), its persisted state
 * (state.c), the fd holder (fdhold.c), the control API (serve.c) and the
 * Prometheus text (metrics.c).
 *
 * Locking: fs->lock guards the mount list and every entry's state/busy
 * fields. An entry with busy set belongs to the one thread doing a mount or
 * umount for that id; other calls for the id wait on fs->cond (or, from the
 * control API, get -EBUSY at once). Slow work (registry, FUSE) runs without
 * fs->lock.
 */
#ifndef LAZYIMG_SNAPFS_INT_H
#define LAZYIMG_SNAPFS_INT_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>

#include "lazyimg/imgfs.h"
#include "lazyimg/snapfs.h"

#define SNAP_REF_MAX 512
#define SNAP_LABELS_MAX (64u << 10)    /* bytes of labels kept per mount */
#define SNAP_NLABELS_MAX 256

enum snap_mnt_state { SNAP_MNT_MOUNTING, SNAP_MNT_READY, SNAP_MNT_FAILED };

struct snap_mnt {
	struct snap_mnt *next;
	char id[SNAP_FS_ID_MAX + 1];
	char ref[SNAP_REF_MAX];        /* as given by the labels */
	char pinned[SNAP_REF_MAX];     /* host/repo@manifest-digest: what a restart mounts */
	char layer[80];                /* eStargz layer digest, "" for RAFS */
	char *labels_json;             /* the labels as a JSON object (persisted) */
	char mnt[PATH_MAX];
	enum snap_mnt_state state;
	int error;
	bool busy;
	bool adopted;
	struct snap_source *src;
	struct imgfs *ifs;
	int slot;                      /* in the worker pool, while loop_started */
	bool loop_started;
	_Atomic bool loop_done;        /* the session ended by itself (unmounted) */
	uint8_t init_req[IMGFS_INIT_MAX];
	size_t init_len;
	uint64_t retry_at_ms;          /* FAILED: when the retry thread mounts it again (monotonic) */
	unsigned retry_ms;             /* the backoff that led there; 0 once it mounted */
};

struct snap_holder;
struct restore_ctx;

struct snap_fs {
	struct snap_fs_opts o;
	char root[PATH_MAX];
	char cache_dir[PATH_MAX + 16];
	char state_dir[PATH_MAX + 16];
	char mnt_dir[PATH_MAX - SNAP_FS_ID_MAX - 2];
	char holder_path[PATH_MAX];
	struct bcache *cache;
	struct snap_pool *pool;
	struct snap_holder *holder;
	struct restore_ctx *restore;   /* restore threads still running, joined at close */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct snap_mnt *mounts;
	struct snap_mnt *draining;     /* unmounted but still busy (open files): freed later */
	int lock_fd;                   /* flock on <root>/.lock: one snap_fs per root */
	pthread_t retry_th;            /* mounts listed as FAILED again, with backoff */
	pthread_cond_t retry_cond;     /* with lock, CLOCK_MONOTONIC */
	bool retry_started;
	bool retry_stop;
};

/* pool.c: the worker threads shared by every session */
struct snap_pool;
int snap_pool_start(int max_threads, struct snap_pool **out);
void snap_pool_stop(struct snap_pool *p);
int snap_pool_add(struct snap_pool *p, struct imgfs *ifs, void (*on_end)(void *arg), void *arg, int *slot);
void snap_pool_remove(struct snap_pool *p, int slot);
int snap_pool_threads(struct snap_pool *p);

/* fs.c: mount with the per-id lock taken by trylock (control API) or waiting */
int snapfs_mount(struct snap_fs *fs, const char *id, const struct snap_label *labels, size_t n,
		 bool nowait);
int snapfs_umount(struct snap_fs *fs, const char *id, bool nowait);

/* state.c: one JSON file per mount in <root>/state/<id>.json, written atomically */
int snapfs_state_save(struct snap_fs *fs, const struct snap_mnt *m);
int snapfs_state_remove(struct snap_fs *fs, const char *id);
/* Call fn for each persisted mount (entries that do not parse are logged and skipped). */
typedef int (*snapfs_state_fn)(void *arg, struct snap_mnt *m);
int snapfs_state_load_all(struct snap_fs *fs, snapfs_state_fn fn, void *arg);
/* One state file's text (hostile: capped, every field checked); fuzzed by fuzz_snapfs. */
int snapfs_state_parse(const char *text, size_t len, const char *id, struct snap_mnt **out);
/* labels <-> JSON */
char *snapfs_labels_to_json(const struct snap_label *l, size_t n);
int snapfs_labels_from_json(const char *json, struct snap_label **out, size_t *n, void **mem);

/* fdhold.c: client side of the holder */
int snapfs_holder_connect(const char *sock, struct snap_holder **out);
void snapfs_holder_close(struct snap_holder *h);
int snapfs_holder_put(struct snap_holder *h, const char *id, int fd);
int snapfs_holder_del(struct snap_holder *h, const char *id);
/* Receive a copy of every held fd: fn(arg, id, fd) owns fd. */
typedef void (*snapfs_holder_fn)(void *arg, const char *id, int fd);
int snapfs_holder_list(struct snap_holder *h, snapfs_holder_fn fn, void *arg);


/* metrics.c: Prometheus text of every mount and the cache (malloc'd) */
int snapfs_metrics(struct snap_fs *fs, char **out);
/* the JSON of `lazyimg stats` for one mount (malloc'd) */
char *snapfs_stats_json(const struct snap_fs_stats *st);

#endif
