/* SPDX-License-Identifier: Apache-2.0 */
/*
 * containerd.services.snapshots.v1.Snapshots over gRPC core. Each worker
 * thread owns a completion queue and serves one call at a time from
 * request to status (unary calls, and List as a server stream in batches),
 * so a slow lazy mount blocks only its own worker.
 *
 * Namespaces: the keys and parents containerd gives a proxy snapshotter are
 * already namespaced by its metadata layer ("<ns>/<seq>/<key>"), and the
 * names of remote snapshots (chain IDs) are meant to be shared by every
 * namespace (containerd re-checks label and parent when it adopts one), so
 * the "containerd-namespace" metadata entry is only logged. containerd
 * 1.6.20 does not even send it on proxy calls (seen here: every call comes
 * without it); newer releases do.
 */
#define LZ_MOD "snapgrpc"
#include "lazyimg/ctl.h"
#include "lazyimg/lz.h"
#include "lazyimg/snapfs.h"
#include "lazyimg/snapgrpc.h"
#include "overlay.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_posix.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "containerd/services/snapshots/v1/snapshots.pb-c.h"

#define GRPC_MAX_REQUEST (16u << 20)   /* bytes of one request message */
#define GRPC_MAX_WORKERS 64
#define LIST_BATCH 100                 /* infos per List stream message, as containerd's server */
#define PB(x) Containerd__Services__Snapshots__V1__##x

struct snap_grpc {
	grpc_server *server;
	grpc_completion_queue *shutdown_cq;
	grpc_completion_queue *cqs[GRPC_MAX_WORKERS];
	pthread_t threads[GRPC_MAX_WORKERS];
	int nworkers, started;
	atomic_bool stopping;
	struct snapsvc *svc;
	struct snap_fs *fs;
	char *address;
	bool grpc_inited;
	/* the listening socket is ours, not gRPC's: kept by systemd or the fd
	 * holder across restarts, containerd's connects queue up in its backlog
	 * while no snapshotter runs instead of failing */
	int listen_fd;
	bool listen_kept;             /* systemd or the holder has it: leave the path */
	const char *listen_from;      /* "systemd", "the fd holder" or "a new socket" */
	int stop_pipe[2];
	pthread_t accept_th;
	bool accept_started;
	grpc_server_credentials *creds;
};

struct call_ctx {
	struct snap_grpc *g;
	grpc_call *call;
	grpc_completion_queue *cq;
	char ns[64];
};

/* ---- errno -> gRPC status ---- */

static grpc_status_code status_of(int err)
{
	switch (err) {
	case 0: return GRPC_STATUS_OK;
	case -ENOENT: return GRPC_STATUS_NOT_FOUND;
	case -EEXIST: return GRPC_STATUS_ALREADY_EXISTS;
	case -EINVAL: case -ENAMETOOLONG: return GRPC_STATUS_INVALID_ARGUMENT;
	case -EBUSY: case -ENOTEMPTY: return GRPC_STATUS_FAILED_PRECONDITION;
	case -EOPNOTSUPP: case -ENOSYS: return GRPC_STATUS_UNIMPLEMENTED;
	case -EAGAIN: return GRPC_STATUS_UNAVAILABLE;
	default: return GRPC_STATUS_UNKNOWN;
	}
}

static const char *message_of(int err, const char *key)
{
	static __thread char buf[512];

	switch (err) {
	case -ENOENT: snprintf(buf, sizeof(buf), "snapshot %.400s: not found", key); break;
	case -EEXIST: snprintf(buf, sizeof(buf), "snapshot %.400s: already exists", key); break;
	case -EBUSY: snprintf(buf, sizeof(buf), "snapshot %.400s: has children", key); break;
	case -EOPNOTSUPP: snprintf(buf, sizeof(buf), "%.400s: not implemented", key); break;
	default: snprintf(buf, sizeof(buf), "snapshot %.400s: %s", key, strerror(-err)); break;
	}
	return buf;
}

/* ---- call plumbing ---- */

/* Run one batch and wait for it on this worker's queue (one op in flight). */
static int run_batch(struct call_ctx *c, grpc_op *ops, size_t n)
{
	grpc_call_error e = grpc_call_start_batch(c->call, ops, n, c, NULL);
	grpc_event ev;

	if (e != GRPC_CALL_OK) {
		lz_err("grpc: start batch: error %d", (int)e);
		return -EIO;
	}
	ev = grpc_completion_queue_next(c->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	if (ev.type != GRPC_OP_COMPLETE || ev.tag != c)
		return -EIO;
	return ev.success ? 0 : -EPIPE;
}

static int send_message(struct call_ctx *c, const ProtobufCMessage *msg)
{
	size_t len = protobuf_c_message_get_packed_size(msg);
	uint8_t *buf = malloc(len ? len : 1);
	grpc_byte_buffer *bb;
	grpc_slice sl;
	grpc_op op = { 0 };
	int ret;

	if (!buf)
		return -ENOMEM;
	protobuf_c_message_pack(msg, buf);
	sl = grpc_slice_from_copied_buffer((const char *)buf, len);
	free(buf);
	bb = grpc_raw_byte_buffer_create(&sl, 1);
	grpc_slice_unref(sl);
	op.op = GRPC_OP_SEND_MESSAGE;
	op.data.send_message.send_message = bb;
	ret = run_batch(c, &op, 1);
	grpc_byte_buffer_destroy(bb);
	return ret;
}

/* Final status (with an optional last message) and wait for the client's close. */
static void finish(struct call_ctx *c, const ProtobufCMessage *msg, int err, const char *what)
{
	grpc_op ops[3] = { 0 };
	grpc_byte_buffer *bb = NULL;
	grpc_slice details;
	int cancelled = 0;
	size_t n = 0;

	if (msg && !err) {
		size_t len = protobuf_c_message_get_packed_size(msg);
		uint8_t *buf = malloc(len ? len : 1);

		if (!buf) {
			err = -ENOMEM;
		} else {
			grpc_slice sl;

			protobuf_c_message_pack(msg, buf);
			sl = grpc_slice_from_copied_buffer((const char *)buf, len);
			free(buf);
			bb = grpc_raw_byte_buffer_create(&sl, 1);
			grpc_slice_unref(sl);
			ops[n].op = GRPC_OP_SEND_MESSAGE;
			ops[n].data.send_message.send_message = bb;
			n++;
		}
	}
	details = grpc_slice_from_copied_string(err ? message_of(err, what ? what : "") : "");
	ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
	ops[n].data.send_status_from_server.status = status_of(err);
	ops[n].data.send_status_from_server.status_details = &details;
	n++;
	ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
	ops[n].data.recv_close_on_server.cancelled = &cancelled;
	n++;
	run_batch(c, ops, n);
	grpc_slice_unref(details);
	if (bb)
		grpc_byte_buffer_destroy(bb);
}

/* Flatten the request message; NULL buffer (no message) is an error. */
static int read_request(grpc_byte_buffer *bb, uint8_t **out, size_t *len)
{
	grpc_byte_buffer_reader r;
	grpc_slice all;
	size_t n;

	*out = NULL;
	*len = 0;
	if (!bb)
		return -EINVAL;
	if (grpc_byte_buffer_length(bb) > GRPC_MAX_REQUEST) {
		lz_err("request of %zu bytes, limit %u", grpc_byte_buffer_length(bb), GRPC_MAX_REQUEST);
		return -EINVAL;
	}
	if (!grpc_byte_buffer_reader_init(&r, bb))
		return -EINVAL;
	all = grpc_byte_buffer_reader_readall(&r);
	grpc_byte_buffer_reader_destroy(&r);
	n = GRPC_SLICE_LENGTH(all);
	*out = malloc(n ? n : 1);
	if (!*out) {
		grpc_slice_unref(all);
		return -ENOMEM;
	}
	memcpy(*out, GRPC_SLICE_START_PTR(all), n);
	*len = n;
	grpc_slice_unref(all);
	return 0;
}

/* ---- message conversion ---- */


/* protobuf-c map entries all share the {base, key, value} layout. */
static int labels_from(size_t n, void **entries, struct snapmeta_label **out)
{
	struct snapmeta_label *l;

	*out = NULL;
	if (n > SNAPMETA_MAX_LABELS)
		return -EINVAL;
	l = calloc(n ? n : 1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		PB(Info__LabelsEntry) *e = entries[i];

		l[i].key = e->key ? e->key : (char *)"";
		l[i].value = e->value ? e->value : (char *)"";
	}
	*out = l;
	return 0;
}

static void mounts_to_pb(struct snapsvc_mount *m, size_t n, Containerd__Types__Mount **pbv,
			 Containerd__Types__Mount *pb)
{
	for (size_t i = 0; i < n; i++) {
		containerd__types__mount__init(&pb[i]);
		pb[i].type = m[i].type;
		pb[i].source = m[i].source;
		pb[i].n_options = m[i].noptions;
		pb[i].options = m[i].options;
		pbv[i] = &pb[i];
	}
}

struct info_pb {
	PB(Info) info;
	Google__Protobuf__Timestamp created, updated;
	PB(Info__LabelsEntry) *lv;
	PB(Info__LabelsEntry) **lp;
};

static int info_to_pb(const struct snapmeta_info *i, struct info_pb *p)
{
	containerd__services__snapshots__v1__info__init(&p->info);
	google__protobuf__timestamp__init(&p->created);
	google__protobuf__timestamp__init(&p->updated);
	p->info.name = i->key;
	p->info.parent = i->parent;
	p->info.kind = (PB(Kind))i->kind;
	p->created.seconds = i->created_ns / 1000000000;
	p->created.nanos = (int32_t)(i->created_ns % 1000000000);
	p->updated.seconds = i->updated_ns / 1000000000;
	p->updated.nanos = (int32_t)(i->updated_ns % 1000000000);
	p->info.created_at = &p->created;
	p->info.updated_at = &p->updated;
	p->lv = calloc(i->nlabels ? i->nlabels : 1, sizeof(*p->lv));
	p->lp = calloc(i->nlabels ? i->nlabels : 1, sizeof(*p->lp));
	if (!p->lv || !p->lp) {
		free(p->lv);
		free(p->lp);
		p->lv = NULL;
		p->lp = NULL;
		return -ENOMEM;
	}
	for (size_t k = 0; k < i->nlabels; k++) {
		containerd__services__snapshots__v1__info__labels_entry__init(&p->lv[k]);
		p->lv[k].key = i->labels[k].key;
		p->lv[k].value = i->labels[k].value;
		p->lp[k] = &p->lv[k];
	}
	p->info.n_labels = i->nlabels;
	p->info.labels = p->lp;
	return 0;
}

static void info_pb_free(struct info_pb *p)
{
	free(p->lv);
	free(p->lp);
}

/* ---- handlers: each ends the call with finish() ---- */

#define UNPACK(desc, type, buf, len) ((type *)protobuf_c_message_unpack(&(desc), NULL, (len), (buf)))

static void reply_mounts(struct call_ctx *c, const ProtobufCMessageDescriptor *d, int ret,
			 struct snapsvc_mount *m, size_t nm, const char *key)
{
	Containerd__Types__Mount pb[4], *pbv[4];
	/* Prepare, View and Mounts responses share the layout {base, n_mounts, mounts} */
	PB(MountsResponse) resp;

	if (!ret && nm > LZ_ARRAY_SIZE(pb))
		ret = -EIO;
	protobuf_c_message_init(d, &resp);
	if (!ret) {
		mounts_to_pb(m, nm, pbv, pb);
		resp.n_mounts = nm;
		resp.mounts = pbv;
	}
	finish(c, &resp.base, ret, key);
}

static void do_prepare(struct call_ctx *c, const uint8_t *buf, size_t len, bool view)
{
	PB(PrepareSnapshotRequest) *req;
	struct snapmeta_label *l = NULL;
	struct snapsvc_mount *m = NULL;
	size_t nm = 0;
	int ret;

	/* View's request has the same fields and numbers as Prepare's */
	req = UNPACK(containerd__services__snapshots__v1__prepare_snapshot_request__descriptor,
		     PB(PrepareSnapshotRequest), buf, len);
	if (!req) {
		finish(c, NULL, -EINVAL, "(undecodable request)");
		return;
	}
	ret = labels_from(req->n_labels, (void **)req->labels, &l);
	if (!ret)
		ret = snapsvc_prepare(c->g->svc, view ? SNAPMETA_VIEW : SNAPMETA_ACTIVE, req->key, req->parent, l,
				      req->n_labels, &m, &nm);
	if (ret && ret != -EEXIST)
		lz_warn("%s %s (parent %s): %s", view ? "view" : "prepare", req->key, req->parent,
			strerror(-ret));
	else
		lz_dbg("%s %s (parent %s) ns %s: %s", view ? "view" : "prepare", req->key, req->parent, c->ns,
		       ret ? "already exists" : "ok");
	reply_mounts(c, view ? &containerd__services__snapshots__v1__view_snapshot_response__descriptor :
			       &containerd__services__snapshots__v1__prepare_snapshot_response__descriptor,
		     ret, m, nm, ret == -ENOENT ? req->parent : req->key);
	snapsvc_mounts_free(m, nm);
	free(l);
	protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void do_mounts(struct call_ctx *c, const uint8_t *buf, size_t len)
{
	PB(MountsRequest) *req = UNPACK(containerd__services__snapshots__v1__mounts_request__descriptor,
					PB(MountsRequest), buf, len);
	struct snapsvc_mount *m = NULL;
	size_t nm = 0;
	int ret;

	if (!req) {
		finish(c, NULL, -EINVAL, "(undecodable request)");
		return;
	}
	ret = snapsvc_mounts(c->g->svc, req->key, &m, &nm);
	if (ret && ret != -ENOENT)
		lz_warn("mounts %s: %s", req->key, strerror(-ret));
	reply_mounts(c, &containerd__services__snapshots__v1__mounts_response__descriptor, ret, m, nm, req->key);
	snapsvc_mounts_free(m, nm);
	protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void do_commit(struct call_ctx *c, const uint8_t *buf, size_t len)
{
	PB(CommitSnapshotRequest) *req = UNPACK(containerd__services__snapshots__v1__commit_snapshot_request__descriptor,
						PB(CommitSnapshotRequest), buf, len);
	struct snapmeta_label *l = NULL;
	Google__Protobuf__Empty empty = GOOGLE__PROTOBUF__EMPTY__INIT;
	int ret;

	if (!req) {
		finish(c, NULL, -EINVAL, "(undecodable request)");
		return;
	}
	if (req->parent && req->parent[0]) {
		/* rebasing onto another parent (newer containerd) is not offered */
		ret = -EOPNOTSUPP;
	} else {
		ret = labels_from(req->n_labels, (void **)req->labels, &l);
		if (!ret)
			ret = snapsvc_commit(c->g->svc, req->name, req->key, l, req->n_labels);
	}
	if (ret)
		lz_warn("commit %s as %s: %s", req->key, req->name, strerror(-ret));
	finish(c, &empty.base, ret, ret == -EEXIST ? req->name : req->key);
	free(l);
	protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void do_remove(struct call_ctx *c, const uint8_t *buf, size_t len)
{
	PB(RemoveSnapshotRequest) *req = UNPACK(containerd__services__snapshots__v1__remove_snapshot_request__descriptor,
						PB(RemoveSnapshotRequest), buf, len);
	Google__Protobuf__Empty empty = GOOGLE__PROTOBUF__EMPTY__INIT;
	int ret;

	if (!req) {
		finish(c, NULL, -EINVAL, "(undecodable request)");
		return;
	}
	ret = snapsvc_remove(c->g->svc, req->key);
	lz_dbg("remove %s: %s", req->key, strerror(-ret));
	finish(c, &empty.base, ret, req->key);
	protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void reply_info(struct call_ctx *c, const ProtobufCMessageDescriptor *d, int ret,
		       const struct snapmeta_info *i, const char *key)
{
	/* Stat and Update responses share the layout {base, info} */
	PB(StatSnapshotResponse) resp;
	struct info_pb p = { 0 };

	protobuf_c_message_init(d, &resp);
	if (!ret)
		ret = info_to_pb(i, &p);
	if (!ret)
		resp.info = &p.info;
	finish(c, &resp.base, ret, key);
	info_pb_free(&p);
}

static void do_stat(struct call_ctx *c, const uint8_t *buf, size_t len)
{
	PB(StatSnapshotRequest) *req = UNPACK(containerd__services__snapshots__v1__stat_snapshot_request__descriptor,
					      PB(StatSnapshotRequest), buf, len);
	struct snapmeta_info i = { 0 };
	int ret;

	if (!req) {
		finish(c, NULL, -EINVAL, "(undecodable request)");
		return;
	}
	ret = snapsvc_stat(c->g->svc, req->key, &i);
	lz_dbg("stat %s: %s", req->key, ret ? strerror(-ret) : snapmeta_kind_name(i.kind));
	reply_info(c, &containerd__services__snapshots__v1__stat_snapshot_response__descriptor, ret, &i, req->key);
	snapmeta_info_free(&i);
	protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void do_update(struct call_ctx *c, const uint8_t *buf, size_t len)
{
	PB(UpdateSnapshotRequest) *req = UNPACK(containerd__services__snapshots__v1__update_snapshot_request__descriptor,
						PB(UpdateSnapshotRequest), buf, len);
	struct snapmeta_label *l = NULL;
	struct snapmeta_info i = { 0 };
	const char *key = "";
	int ret;

	if (!req) {
		finish(c, NULL, -EINVAL, "(undecodable request)");
		return;
	}
	if (!req->info || !req->info->name || !req->info->name[0]) {
		ret = -EINVAL;
		goto out;
	}
	key = req->info->name;
	ret = labels_from(req->info->n_labels, (void **)req->info->labels, &l);
	if (!ret)
		ret = snapsvc_update(c->g->svc, key, l, req->info->n_labels,
				     req->update_mask ? (const char *const *)req->update_mask->paths : NULL,
				     req->update_mask ? req->update_mask->n_paths : 0, &i);
out:
	if (ret)
		lz_warn("update %s: %s", key, strerror(-ret));
	reply_info(c, &containerd__services__snapshots__v1__update_snapshot_response__descriptor, ret, &i, key);
	snapmeta_info_free(&i);
	free(l);
	protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void do_usage(struct call_ctx *c, const uint8_t *buf, size_t len)
{
	PB(UsageRequest) *req = UNPACK(containerd__services__snapshots__v1__usage_request__descriptor,
				       PB(UsageRequest), buf, len);
	PB(UsageResponse) resp = CONTAINERD__SERVICES__SNAPSHOTS__V1__USAGE_RESPONSE__INIT;
	int ret;

	if (!req) {
		finish(c, NULL, -EINVAL, "(undecodable request)");
		return;
	}
	ret = snapsvc_usage(c->g->svc, req->key, &resp.size, &resp.inodes);
	finish(c, &resp.base, ret, req->key);
	protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void do_list(struct call_ctx *c, const uint8_t *buf, size_t len)
{
	PB(ListSnapshotsRequest) *req = UNPACK(containerd__services__snapshots__v1__list_snapshots_request__descriptor,
					       PB(ListSnapshotsRequest), buf, len);
	struct snapmeta_info *v = NULL;
	size_t n = 0;
	int ret;

	if (!req) {
		finish(c, NULL, -EINVAL, "(undecodable request)");
		return;
	}
	for (size_t f = 0; f < req->n_filters; f++)
		lz_dbg("list filter %zu: %s", f, req->filters[f]);
	ret = snapsvc_list(c->g->svc, (const char *const *)req->filters, req->n_filters, &v, &n);
	for (size_t off = 0; !ret && off < n; off += LIST_BATCH) {
		size_t k = LZ_MIN((size_t)LIST_BATCH, n - off);
		PB(ListSnapshotsResponse) resp = CONTAINERD__SERVICES__SNAPSHOTS__V1__LIST_SNAPSHOTS_RESPONSE__INIT;
		struct info_pb *p = calloc(k, sizeof(*p));
		PB(Info) **pv = calloc(k, sizeof(*pv));

		if (!p || !pv)
			ret = -ENOMEM;
		for (size_t j = 0; !ret && j < k; j++) {
			ret = info_to_pb(&v[off + j], &p[j]);
			pv[j] = &p[j].info;
		}
		if (!ret) {
			resp.n_info = k;
			resp.info = pv;
			/* a client gone mid-stream ends the call */
			if (send_message(c, &resp.base))
				ret = -EPIPE;
		}
		for (size_t j = 0; p && j < k; j++)
			info_pb_free(&p[j]);
		free(p);
		free(pv);
	}
	if (ret)
		lz_warn("list: %s", strerror(-ret));
	finish(c, NULL, ret, "list");
	snapmeta_infos_free(v, n);
	protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void do_cleanup(struct call_ctx *c, const uint8_t *buf, size_t len)
{
	Google__Protobuf__Empty empty = GOOGLE__PROTOBUF__EMPTY__INIT;
	int ret = snapsvc_cleanup(c->g->svc);

	if (ret > 0)
		lz_info("cleanup removed %d directories", ret);
	finish(c, &empty.base, ret < 0 ? ret : 0, "cleanup");
}

static const struct {
	const char *method;
	void (*fn)(struct call_ctx *c, const uint8_t *buf, size_t len);
} methods[] = {
	{ "Mounts", do_mounts },
	{ "Commit", do_commit },
	{ "Remove", do_remove },
	{ "Stat", do_stat },
	{ "Update", do_update },
	{ "Usage", do_usage },
	{ "List", do_list },
	{ "Cleanup", do_cleanup },
};

#define SVC_PREFIX "/containerd.services.snapshots.v1.Snapshots/"

static void handle(struct call_ctx *c, const grpc_call_details *d, const grpc_metadata_array *md)
{
	grpc_byte_buffer *bb = NULL;
	grpc_op ops[2] = { 0 };
	char method[128];
	uint8_t *buf = NULL;
	size_t len = 0, ml = GRPC_SLICE_LENGTH(d->method);
	int ret;

	for (size_t i = 0; i < md->count; i++)
		if (!grpc_slice_str_cmp(md->metadata[i].key, "containerd-namespace"))
			snprintf(c->ns, sizeof(c->ns), "%.*s", (int)LZ_MIN(GRPC_SLICE_LENGTH(md->metadata[i].value), 63u),
				 (const char *)GRPC_SLICE_START_PTR(md->metadata[i].value));
	snprintf(method, sizeof(method), "%.*s", (int)LZ_MIN(ml, sizeof(method) - 1),
		 (const char *)GRPC_SLICE_START_PTR(d->method));
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[1].op = GRPC_OP_RECV_MESSAGE;
	ops[1].data.recv_message.recv_message = &bb;
	if (run_batch(c, ops, 2)) {
		if (bb)
			grpc_byte_buffer_destroy(bb);
		return;
	}
	ret = read_request(bb, &buf, &len);
	if (bb)
		grpc_byte_buffer_destroy(bb);
	if (ret) {
		finish(c, NULL, ret, "(request)");
		return;
	}
	if (strncmp(method, SVC_PREFIX, strlen(SVC_PREFIX))) {
		lz_warn("unknown gRPC method %s", method);
		finish(c, NULL, -EOPNOTSUPP, method);
		goto out;
	}
	const char *name = method + strlen(SVC_PREFIX);

	lz_dbg("call %s (namespace %s, %zu bytes)", name, c->ns[0] ? c->ns : "-", len);

	if (!strcmp(name, "Prepare") || !strcmp(name, "View")) {
		do_prepare(c, buf, len, name[0] == 'V');
		goto out;
	}
	for (size_t i = 0; i < LZ_ARRAY_SIZE(methods); i++)
		if (!strcmp(name, methods[i].method)) {
			methods[i].fn(c, buf, len);
			goto out;
		}
	lz_warn("unknown gRPC method %s", method);
	finish(c, NULL, -EOPNOTSUPP, method);
out:
	free(buf);
}

static void *worker(void *arg)
{
	struct snap_grpc *g = ((void **)arg)[0];
	grpc_completion_queue *cq = ((void **)arg)[1];

	free(arg);
	while (!atomic_load(&g->stopping)) {
		struct call_ctx c = { .g = g, .cq = cq };
		grpc_call_details details;
		grpc_metadata_array md;
		grpc_event ev;

		grpc_call_details_init(&details);
		grpc_metadata_array_init(&md);
		if (grpc_server_request_call(g->server, &c.call, &details, &md, cq, cq, &c) != GRPC_CALL_OK) {
			grpc_call_details_destroy(&details);
			grpc_metadata_array_destroy(&md);
			break;
		}
		ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
		if (ev.type == GRPC_OP_COMPLETE && ev.success && c.call)
			handle(&c, &details, &md);
		if (c.call)
			grpc_call_unref(c.call);
		grpc_call_details_destroy(&details);
		grpc_metadata_array_destroy(&md);
		if (ev.type == GRPC_QUEUE_SHUTDOWN)
			break;
	}
	return NULL;
}

static void drain_destroy(grpc_completion_queue *cq)
{
	grpc_event ev;

	if (!cq)
		return;
	grpc_completion_queue_shutdown(cq);
	do
		ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	while (ev.type != GRPC_QUEUE_SHUTDOWN);
	grpc_completion_queue_destroy(cq);
}

/* fd is a listening unix stream socket bound to path */
static bool listener_for(int fd, const char *path)
{
	struct sockaddr_un sun;
	socklen_t len = sizeof(sun);
	int v = 0;
	socklen_t vl = sizeof(v);

	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &vl) < 0 || !v)
		return false;
	memset(&sun, 0, sizeof(sun));
	if (getsockname(fd, (struct sockaddr *)&sun, &len) < 0 || sun.sun_family != AF_UNIX)
		return false;
	return !strncmp(sun.sun_path, path, sizeof(sun.sun_path));
}

/* systemd socket activation: LISTEN_PID is us and fd 3 is the socket */
static int listener_systemd(const char *path)
{
	const char *pid = getenv("LISTEN_PID"), *n = getenv("LISTEN_FDS");

	if (!pid || !n || strtol(pid, NULL, 10) != (long)getpid() || strtol(n, NULL, 10) < 1)
		return -1;
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	if (!listener_for(3, path)) {
		lz_warn("snapshotter: fd 3 from systemd is not a socket listening on %s: not used", path);
		return -1;
	}
	fcntl(3, F_SETFD, FD_CLOEXEC);
	return 3;
}

static int listener_new(const char *path, int *out)
{
	struct sockaddr_un sun;
	struct stat st;
	int fd, ret;

	/* a socket left by a previous run would make the bind fail */
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			lz_err("snapshotter: %s exists and is not a socket", path);
			return -EEXIST;
		}
		unlink(path);
	}
	ret = lz_ctl_sockaddr(path, &sun);
	if (ret) {
		lz_err("snapshotter: socket path %s is too long", path);
		return ret;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 || chmod(path, 0660) < 0 || listen(fd, 128) < 0) {
		ret = -errno;
		lz_err("snapshotter: cannot listen on %s: %s", path, strerror(errno));
		close(fd);
		return ret;
	}
	*out = fd;
	return 0;
}

/* The listening socket: systemd's, the one the fd holder kept, or a new one (then parked). */
static int listener_open(struct snap_grpc *g)
{
	int fd = listener_systemd(g->address), ret;

	if (fd >= 0) {
		g->listen_fd = fd;
		g->listen_kept = true;
		g->listen_from = "systemd";
		return 0;
	}
	if (g->fs && snap_fs_held_take(g->fs, "grpc-listen", &fd) == 0) {
		if (listener_for(fd, g->address)) {
			g->listen_fd = fd;
			g->listen_kept = true;
			g->listen_from = "the fd holder";
			return 0;
		}
		lz_warn("snapshotter: the socket the fd holder kept does not listen on %s: a new one", g->address);
		close(fd);
	}
	ret = listener_new(g->address, &g->listen_fd);
	if (ret)
		return ret;
	g->listen_from = "a new socket";
	if (g->fs && snap_fs_held_park(g->fs, "grpc-listen", g->listen_fd) == 0)
		g->listen_kept = true;
	return 0;
}

/* Each accepted connection becomes a gRPC channel of the server. */
static void *accept_main(void *arg)
{
	struct snap_grpc *g = arg;
	struct pollfd p[2] = { { g->listen_fd, POLLIN, 0 }, { g->stop_pipe[0], POLLIN, 0 } };

	for (;;) {
		int fd;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			lz_err("snapshotter: poll on the listening socket: %s", strerror(errno));
			break;
		}
		if (p[1].revents)
			break;
		fd = accept4(g->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				lz_warn("snapshotter: cannot accept a connection: %s", strerror(errno));
				usleep(100000); /* the backlog keeps it; do not spin */
			}
			continue;
		}
		grpc_server_add_channel_from_fd(g->server, fd, g->creds);
	}
	return NULL;
}

int snap_grpc_start(const struct snap_grpc_opts *o, struct snap_grpc **out)
{
	struct snapsvc_opts so = { 0 };
	struct snap_grpc *g;
	int ret;

	if (!o->root || !o->address || o->address[0] != '/') {
		lz_err("snapshotter: --root and an absolute --address are required");
		return -EINVAL;
	}
	g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	g->listen_fd = g->stop_pipe[0] = g->stop_pipe[1] = -1;
	g->nworkers = o->workers > 0 ? LZ_MIN(o->workers, GRPC_MAX_WORKERS) : 4;
	g->address = strdup(o->address);
	if (!g->address) {
		ret = -ENOMEM;
		goto fail;
	}
	if (!o->no_remote) {
		struct snap_fs_opts fo = o->fs;

		fo.root = o->root;
		ret = snap_fs_open(&fo, &g->fs);
		if (ret) {
			lz_err("snapshotter: cannot open the lazy mounts under %s: %s", o->root, strerror(-ret));
			goto fail;
		}
	}
	so.root = o->root;
	so.fs = g->fs;
	so.mount_timeout_ms = o->mount_timeout_ms;
	ret = snapsvc_open(&so, &g->svc);
	if (ret)
		goto fail;
	grpc_init();
	g->grpc_inited = true;
	g->server = grpc_server_create(NULL, NULL);
	g->shutdown_cq = grpc_completion_queue_create_for_next(NULL);
	if (!g->server || !g->shutdown_cq) {
		ret = -ENOMEM;
		goto fail;
	}
	grpc_server_register_completion_queue(g->server, g->shutdown_cq, NULL);
	for (int i = 0; i < g->nworkers; i++) {
		g->cqs[i] = grpc_completion_queue_create_for_next(NULL);
		if (!g->cqs[i]) {
			ret = -ENOMEM;
			goto fail;
		}
		grpc_server_register_completion_queue(g->server, g->cqs[i], NULL);
	}
	ret = listener_open(g);
	if (ret)
		goto fail;
	g->creds = grpc_insecure_server_credentials_create();
	if (!g->creds || pipe2(g->stop_pipe, O_CLOEXEC) < 0) {
		ret = -ENOMEM;
		goto fail;
	}
	grpc_server_start(g->server);
	ret = -pthread_create(&g->accept_th, NULL, accept_main, g);
	if (ret)
		goto fail;
	g->accept_started = true;
	for (int i = 0; i < g->nworkers; i++) {
		void **arg = malloc(2 * sizeof(void *));

		if (!arg) {
			ret = -ENOMEM;
			goto fail;
		}
		arg[0] = g;
		arg[1] = g->cqs[i];
		ret = -pthread_create(&g->threads[i], NULL, worker, arg);
		if (ret) {
			free(arg);
			goto fail;
		}
		g->started++;
	}
	lz_info("snapshotter: serving containerd snapshots on %s (%s), root %s", o->address, g->listen_from,
		o->root);
	*out = g;
	return 0;
fail:
	snap_grpc_stop(g);
	return ret;
}

void snap_grpc_stop(struct snap_grpc *g)
{
	if (!g)
		return;
	atomic_store(&g->stopping, true);
	if (g->accept_started) {
		/* no new channels once the shutdown has begun */
		if (write(g->stop_pipe[1], "x", 1) < 0)
			lz_warn("snapshotter: cannot stop the accept thread: %s", strerror(errno));
		pthread_join(g->accept_th, NULL);
	}
	if (g->server) {
		int tag;
		grpc_event ev;

		grpc_server_shutdown_and_notify(g->server, g->shutdown_cq, &tag);
		grpc_server_cancel_all_calls(g->server);
		do
			ev = grpc_completion_queue_next(g->shutdown_cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
		while (ev.type != GRPC_QUEUE_SHUTDOWN && !(ev.type == GRPC_OP_COMPLETE && ev.tag == &tag));
	}
	/* pending request_call ops fail after the shutdown: every worker returns */
	for (int i = 0; i < g->started; i++)
		pthread_join(g->threads[i], NULL);
	if (g->server)
		grpc_server_destroy(g->server);
	for (int i = 0; i < g->nworkers; i++)
		drain_destroy(g->cqs[i]);
	drain_destroy(g->shutdown_cq);
	if (g->grpc_inited)
		grpc_shutdown();
	if (g->listen_fd >= 0 && !g->listen_kept && g->address)
		unlink(g->address);
	if (g->listen_fd >= 0)
		close(g->listen_fd);
	for (int i = 0; i < 2; i++)
		if (g->stop_pipe[i] >= 0)
			close(g->stop_pipe[i]);
	if (g->creds)
		grpc_server_credentials_release(g->creds);
	snapsvc_close(g->svc);
	snap_fs_close(g->fs);
	free(g->address);
	free(g);
}
