/* SPDX-License-Identifier: Apache-2.0 */
/*
 * overlay.h - the snapshots service of `lazyimg snapshotter` without the
 * wire: containerd's overlay snapshotter behaviour for plain layers plus
 * remote snapshots (nydus, eStargz) served by snap_fs lazy mounts.
 *
 * Layout under root: metadata.json (meta.h), snapshots/<id>/{fs,work}
 * (upper and work dirs; <id> is the internal id), and whatever snap_fs keeps
 * (mnt/<id>, cache/, state/).
 *
 * Errors are negative errno, mapped to gRPC codes by grpc.c: -ENOENT not
 * found, -EEXIST already exists (for Prepare of a remote layer: "committed
 * lazily, skip the download"), -EINVAL invalid argument, -EBUSY failed
 * precondition, -EOPNOTSUPP unimplemented, anything else unknown.
 *
 * Thread safety: every function may be called from several threads;
 * operations that change snapshots are serialised by the service.
 */
#ifndef LAZYIMG_SNAPSHOTTER_OVERLAY_H
#define LAZYIMG_SNAPSHOTTER_OVERLAY_H

#include "meta.h"

struct snap_fs;

struct snapsvc_opts {
	const char *root;            /* required, absolute */
	struct snap_fs *fs;          /* lazy mounts; NULL: every layer is a plain one */
	int mount_timeout_ms;        /* wait for a lazy mount to serve; default 30 s */
};

struct snapsvc_mount {
	char *type;
	char *source;
	char **options;
	size_t noptions;
};

struct snapsvc;

int snapsvc_open(const struct snapsvc_opts *o, struct snapsvc **out);
void snapsvc_close(struct snapsvc *s);
void snapsvc_mounts_free(struct snapsvc_mount *m, size_t n);

/* kind SNAPMETA_ACTIVE (Prepare) or SNAPMETA_VIEW (View). */
int snapsvc_prepare(struct snapsvc *s, int kind, const char *key, const char *parent,
		    const struct snapmeta_label *labels, size_t n,
		    struct snapsvc_mount **mounts, size_t *nmounts);
int snapsvc_mounts(struct snapsvc *s, const char *key, struct snapsvc_mount **mounts, size_t *nmounts);
int snapsvc_commit(struct snapsvc *s, const char *name, const char *key,
		   const struct snapmeta_label *labels, size_t n);
int snapsvc_remove(struct snapsvc *s, const char *key);
int snapsvc_stat(struct snapsvc *s, const char *key, struct snapmeta_info *out);
int snapsvc_update(struct snapsvc *s, const char *key, const struct snapmeta_label *labels, size_t n,
		   const char *const *paths, size_t npaths, struct snapmeta_info *out);
int snapsvc_usage(struct snapsvc *s, const char *key, int64_t *size, int64_t *inodes);
/* Snapshots matching the containerd filters (copies). */
int snapsvc_list(struct snapsvc *s, const char *const *filters, size_t nfilters,
		 struct snapmeta_info **out, size_t *n);
/* Remove directories (and lazy mounts) no snapshot owns any more. */
int snapsvc_cleanup(struct snapsvc *s);

/* Disk usage the way containerd counts it: allocated bytes and inodes of a
 * tree, hard links once, not crossing mounts. */
int snapsvc_disk_usage(const char *dir, uint64_t *bytes, uint64_t *inodes);

#endif
