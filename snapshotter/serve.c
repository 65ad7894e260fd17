/* SPDX-License-Identifier: Apache-2.0 */
/*
 * serve.c - the control API of `lazyimg serve` (routes in snapfs.h) on the
 * HTTP/1.1 server of common/ctl.c, one thread per connection so that a
 * slow mount (registry round trips) never blocks listing, metrics or other
 * ids. Requests are capped (LZ_CTL_MAX_REQUEST) and time out; every error
 * is a JSON body {"error": "..."} with a fitting status.
 */
#define LZ_MOD "serve"
#include "lazyimg/ctl.h"
#include "lazyimg/reg.h"
#include "snapfs_int.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>

#define SERVE_MAX_CONN 32
#define SERVE_BACKLOG 64

struct snap_serve {
	struct lz_ctl *ctl;
};

static void set_json(struct lz_ctl_resp *r, json_object *o)
{
	free(r->body);
	r->body = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	r->status = r->body ? 200 : 500;
}

/* errno of a mount -> HTTP status */
static int status_of(int err)
{
	switch (-err) {
	case EINVAL: case E2BIG: case ENAMETOOLONG: return 400;
	case ENOENT: return 404;
	case EBUSY: return 409;
	case EMEDIUMTYPE: case EPROTO: case EBADMSG: return 422;
	case ENOSPC: case EDQUOT: return 507;
	case ETIMEDOUT: return 504;
	case ECONNREFUSED: case EHOSTUNREACH: case ECONNRESET: case EACCES: case EPERM:
	case ENETUNREACH: case EREMOTEIO: return 502;
	default: return 500;
	}
}

static json_object *info_json(const struct snap_fs_info *in)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "id", json_object_new_string(in->id));
	json_object_object_add(o, "ref", json_object_new_string(in->ref));
	json_object_object_add(o, "mountpoint", json_object_new_string(in->mountpoint));
	json_object_object_add(o, "state", json_object_new_string(in->state));
	json_object_object_add(o, "ready", json_object_new_boolean(!strcmp(in->state, "ready")));
	json_object_object_add(o, "adopted", json_object_new_boolean(in->adopted));
	if (in->error)
		json_object_object_add(o, "error", json_object_new_string(lz_strerror(in->error)));
	return o;
}

static void do_list(struct snap_fs *fs, struct lz_ctl_resp *r)
{
	struct snap_fs_info *v;
	size_t n;
	json_object *o, *a;
	int ret = snap_fs_list(fs, &v, &n);

	if (ret) {
		lz_ctl_error(r, 500, "cannot list mounts: %s", lz_strerror(ret));
		return;
	}
	o = json_object_new_object();
	a = json_object_new_array();
	for (size_t i = 0; i < n; i++)
		json_object_array_add(a, info_json(&v[i]));
	json_object_object_add(o, "mounts", a);
	free(v);
	set_json(r, o);
}

static void do_get(struct snap_fs *fs, const char *id, struct lz_ctl_resp *r)
{
	struct snap_fs_info in;

	if (snap_fs_get(fs, id, &in)) {
		lz_ctl_error(r, 404, "no mount with id '%s'", id);
		return;
	}
	set_json(r, info_json(&in));
}

static void do_post(struct snap_fs *fs, const char *body, size_t len, struct lz_ctl_resp *r)
{
	json_tokener *tok = json_tokener_new();
	json_object *o = NULL, *v, *labels = NULL;
	struct snap_label *lv = NULL, one;
	const char *id;
	size_t n = 0;
	void *mem = NULL;
	int ret;

	if (!tok) {
		lz_ctl_error(r, 500, "out of memory");
		return;
	}
	if (len)
		o = json_tokener_parse_ex(tok, body, (int)len);
	if (!o || json_tokener_get_error(tok) != json_tokener_success ||
	    tok->char_offset != (int)len) {
		lz_ctl_error(r, 400, "request body is not one JSON object: %s",
			len ? json_tokener_error_desc(json_tokener_get_error(tok)) : "empty body");
		goto out;
	}
	if (!json_object_is_type(o, json_type_object)) {
		lz_ctl_error(r, 400, "request body must be a JSON object");
		goto out;
	}
	if (!json_object_object_get_ex(o, "id", &v) || !json_object_is_type(v, json_type_string)) {
		lz_ctl_error(r, 400, "\"id\" (string) is required");
		goto out;
	}
	id = json_object_get_string(v);
	if (!snap_fs_id_valid(id)) {
		lz_ctl_error(r, 400, "id must be 1..%d characters of [A-Za-z0-9._-]", SNAP_FS_ID_MAX);
		goto out;
	}
	if (json_object_object_get_ex(o, "labels", &labels)) {
		const char *s = json_object_to_json_string_ext(labels, JSON_C_TO_STRING_PLAIN);

		if (!json_object_is_type(labels, json_type_object) ||
		    (ret = snapfs_labels_from_json(s, &lv, &n, &mem))) {
			lz_ctl_error(r, 400, "\"labels\" must be an object of strings (at most %u, %u bytes)",
				SNAP_NLABELS_MAX, SNAP_LABELS_MAX);
			goto out;
		}
	} else if (json_object_object_get_ex(o, "ref", &v) && json_object_is_type(v, json_type_string)) {
		struct reg_ref rr;

		if (reg_ref_parse(json_object_get_string(v), &rr)) {
			lz_ctl_error(r, 400, "\"ref\" is not an image reference: %s", json_object_get_string(v));
			goto out;
		}
		one.key = "containerd.io/snapshot/cri.image-ref";
		one.value = json_object_get_string(v);
		lv = lz_malloc(sizeof(*lv));
		if (!lv) {
			lz_ctl_error(r, 500, "out of memory");
			goto out;
		}
		lv[0] = one;
		n = 1;
	} else {
		lz_ctl_error(r, 400, "\"labels\" (object) or \"ref\" (string) is required");
		goto out;
	}
	ret = snapfs_mount(fs, id, lv, n, true);
	if (ret == -EBUSY) {
		lz_ctl_error(r, 409, "another request for snapshot '%s' is in progress; retry when it is done", id);
	} else if (ret == -EINVAL && !snap_label_get(lv, n, "containerd.io/snapshot/cri.image-ref") &&
		   !snap_label_get(lv, n, "containerd.io/snapshot/remote/stargz.reference")) {
		lz_ctl_error(r, 400, "no image reference in the labels (containerd.io/snapshot/cri.image-ref)");
	} else if (ret) {
		lz_ctl_error(r, status_of(ret), "mount of '%s' failed: %s%s", id, lz_strerror(ret),
			ret == -EMEDIUMTYPE ? " (not a nydus/eStargz image)" : " (see the server log)");
	} else {
		do_get(fs, id, r);
	}
out:
	free(lv);
	free(mem);
	json_object_put(o);
	json_tokener_free(tok);
}

static void do_delete(struct snap_fs *fs, const char *id, struct lz_ctl_resp *r)
{
	struct snap_fs_info in;
	int ret;

	if (snap_fs_get(fs, id, &in)) {
		lz_ctl_error(r, 404, "no mount with id '%s'", id);
		return;
	}
	ret = snapfs_umount(fs, id, true);
	if (ret == -EBUSY) {
		lz_ctl_error(r, 409, "another request for snapshot '%s' is in progress; retry when it is done", id);
		return;
	}
	if (ret) {
		lz_ctl_error(r, status_of(ret), "umount of '%s' failed: %s", id, lz_strerror(ret));
		return;
	}
	{
		json_object *o = json_object_new_object();

		json_object_object_add(o, "id", json_object_new_string(id));
		json_object_object_add(o, "unmounted", json_object_new_boolean(1));
		set_json(r, o);
	}
}

static void do_stats(struct snap_fs *fs, const char *id, struct lz_ctl_resp *r)
{
	struct snap_fs_stats st;

	if (snap_fs_stats(fs, id, &st)) {
		lz_ctl_error(r, 404, "no ready mount with id '%s'", id);
		return;
	}
	free(r->body);
	r->body = snapfs_stats_json(&st);
	r->status = r->body ? 200 : 500;
}

static void do_usage(struct snap_fs *fs, const char *query, struct lz_ctl_resp *r)
{
	char digest[128] = "";
	uint64_t bytes = 0;
	int ret;

	if (!query || strncmp(query, "digest=", 7) || strlen(query + 7) >= sizeof(digest)) {
		lz_ctl_error(r, 400, "usage needs ?digest=sha256:<64 hex>");
		return;
	}
	snprintf(digest, sizeof(digest), "%s", query + 7);
	/* ':' may come percent-encoded */
	{
		char *p = strstr(digest, "%3A");

		if (!p)
			p = strstr(digest, "%3a");
		if (p) {
			*p = ':';
			memmove(p + 1, p + 3, strlen(p + 3) + 1);
		}
	}
	ret = snap_fs_cache_usage(fs, digest, &bytes);
	if (ret == -EINVAL) {
		lz_ctl_error(r, 400, "'%s' is not a digest of the form sha256:<64 lowercase hex>", digest);
		return;
	}
	if (ret) {
		lz_ctl_error(r, 500, "usage of %s: %s", digest, lz_strerror(ret));
		return;
	}
	{
		json_object *o = json_object_new_object();

		json_object_object_add(o, "digest", json_object_new_string(digest));
		json_object_object_add(o, "bytes", json_object_new_int64((int64_t)bytes));
		set_json(r, o);
	}
}

static void do_remove_cache(struct snap_fs *fs, const char *digest, struct lz_ctl_resp *r)
{
	int ret = snap_fs_remove_cache(fs, digest);

	if (ret == -EINVAL)
		lz_ctl_error(r, 400, "'%s' is not a digest of the form sha256:<64 lowercase hex>", digest);
	else if (ret == -EBUSY)
		lz_ctl_error(r, 409, "blob %s is in use by a mount", digest);
	else if (ret)
		lz_ctl_error(r, 500, "removing %s: %s", digest, lz_strerror(ret));
	else {
		json_object *o = json_object_new_object();

		json_object_object_add(o, "digest", json_object_new_string(digest));
		json_object_object_add(o, "removed", json_object_new_boolean(1));
		set_json(r, o);
	}
}

/* the lz_ctl_handler of the API; arg is the snap_fs */
static void route(void *arg, const char *method, char *path, const char *body, size_t blen,
		  struct lz_ctl_resp *r)
{
	struct snap_fs *fs = arg;
	char *query = strchr(path, '?');
	bool get = !strcmp(method, "GET"), del = !strcmp(method, "DELETE"), post = !strcmp(method, "POST");
	const char *mp = "/api/v1/mounts";
	size_t ml = strlen(mp);

	if (query)
		*query++ = 0;
	if (!strcmp(path, "/metrics")) {
		if (!get) {
			lz_ctl_error(r, 405, "%s /metrics: only GET", method);
			return;
		}
		if (snapfs_metrics(fs, &r->body)) {
			lz_ctl_error(r, 500, "out of memory");
			return;
		}
		r->status = 200;
		r->ctype = "text/plain; version=0.0.4";
		return;
	}
	if (!strcmp(path, mp) || !strcmp(path, "/api/v1/mounts/")) {
		if (get)
			do_list(fs, r);
		else if (post)
			do_post(fs, body, blen, r);
		else
			lz_ctl_error(r, 405, "%s %s: use GET or POST", method, path);
		return;
	}
	if (!strncmp(path, mp, ml) && path[ml] == '/') {
		char *id = path + ml + 1, *sub = strchr(id, '/');

		if (sub)
			*sub++ = 0;
		if (!snap_fs_id_valid(id)) {
			lz_ctl_error(r, 400, "'%s' is not a valid snapshot id", id);
			return;
		}
		if (sub && !strcmp(sub, "stats")) {
			if (get)
				do_stats(fs, id, r);
			else
				lz_ctl_error(r, 405, "%s %s/stats: only GET", method, id);
		} else if (sub) {
			lz_ctl_error(r, 404, "no such endpoint: %s/%s", id, sub);
		} else if (get) {
			do_get(fs, id, r);
		} else if (del) {
			do_delete(fs, id, r);
		} else {
			lz_ctl_error(r, 405, "%s on a mount: use GET or DELETE", method);
		}
		return;
	}
	if (!strcmp(path, "/api/v1/usage")) {
		if (get)
			do_usage(fs, query, r);
		else
			lz_ctl_error(r, 405, "%s /api/v1/usage: only GET", method);
		return;
	}
	if (!strncmp(path, "/api/v1/cache/", 14)) {
		if (del)
			do_remove_cache(fs, path + 14, r);
		else
			lz_ctl_error(r, 405, "%s on a cache blob: only DELETE", method);
		return;
	}
	lz_ctl_error(r, 404, "no such endpoint: %s", path);
}

int snap_serve_start(struct snap_fs *fs, const char *sock_path, struct snap_serve **out)
{
	const struct lz_ctl_opts o = { .max_conn = SERVE_MAX_CONN, .backlog = SERVE_BACKLOG };
	struct snap_serve *s = lz_calloc(1, sizeof(*s));
	int ret;

	if (!s)
		return -ENOMEM;
	ret = lz_ctl_serve(sock_path, &o, route, fs, &s->ctl);
	if (ret) {
		free(s);
		return ret;
	}
	*out = s;
	return 0;
}

void snap_serve_stop(struct snap_serve *s)
{
	if (!s)
		return;
	/* returns once requests in flight are answered: the snap_fs under them stays until then */
	lz_ctl_stop(s->ctl);
	free(s);
}
