/* SPDX-License-Identifier: Apache-2.0 */
/*
 * snapgrpc.h - `lazyimg snapshotter`: a containerd proxy snapshotter serving
 * containerd.services.snapshots.v1.Snapshots over gRPC (gRPC core +
 * protobuf-c) on a unix socket. Plain OCI layers get containerd's overlay
 * snapshotter behaviour; nydus and eStargz layers are mounted lazily through
 * snap_fs (snapfs.h) and reported to containerd as already present.
 *
 * containerd configuration:
 *   [proxy_plugins.lazyimg]
 *     type = "snapshot"
 *     address = "<address>"
 */
#ifndef LAZYIMG_SNAPGRPC_H
#define LAZYIMG_SNAPGRPC_H

#include "lazyimg/snapfs.h"

struct snap_grpc_opts {
	const char *root;            /* snapshotter root (absolute); required */
	const char *address;         /* unix socket path; required */
	struct snap_fs_opts fs;      /* lazy mounts (fs.root is set to root) */
	bool no_remote;              /* never mount lazily: every layer is pulled in full */
	int workers;                 /* threads serving calls; default 4 */
	int mount_timeout_ms;        /* wait for a lazy mount; default 30 s */
};

struct snap_grpc;

/* Open the root (metadata, lazy mounts), listen on the socket and serve from
 * background threads. Call after blocking the signals the caller waits for. */
int snap_grpc_start(const struct snap_grpc_opts *o, struct snap_grpc **out);
/* Stop serving (in-flight calls are cancelled), close everything, remove the
 * socket. Lazy mounts stay persisted for the next start. NULL is allowed. */
void snap_grpc_stop(struct snap_grpc *g);

#endif
