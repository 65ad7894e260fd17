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
	int threads;                   /* FUSE worker threads shared by all mounts; 0 = default */
};

/* Open (creating dirs) and restore every persisted mount. */
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
/* Unmount everything and forget the persisted mounts. */
int snap_fs_teardown(struct snap_fs *fs);
/* <root>/snapshots/<id>/fs/image/image.boot, else .../fs/image.boot; -ENOENT. */
int snap_fs_bootstrap_file(struct snap_fs *fs, const char *id, char *buf, size_t len);
/* <root>/snapshots/<id>/fs */
int snap_fs_upper_path(struct snap_fs *fs, const char *id, char *buf, size_t len);

/* Label predicates (pure functions of the labels). */
bool snap_labels_nydus_meta(const struct snap_label *l, size_t n);   /* nydus-bootstrap=true */
bool snap_labels_nydus_blob(const struct snap_label *l, size_t n);   /* nydus-blob=true */
bool snap_labels_stargz(const struct snap_label *l, size_t n);       /* toc.digest or stargz labels */
const char *snap_label_get(const struct snap_label *l, size_t n, const char *key);

#endif
