/* SPDX-License-Identifier: Apache-2.0 */
/*
 * serve.c - the control API of `lazyimg serve` (routes in snapfs.h): a small
 * HTTP/1.1 server on a unix socket, one thread per connection so that a
 * slow mount (registry round trips) never blocks listing, metrics or other
 * ids. Requests are capped (LZ_CTL_MAX_REQUEST) and time out; every error
 * is a JSON body {"error": "..."} with a fitting status.
 */
#define LZ_MOD "serve"
#include "lazyimg/ctl.h"
#include "lazyimg/reg.h"
#include "snapfs_int.h"

#include <fcntl.h>
#include <json-c/json.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define SERVE_MAX_CONN 32
#define SERVE_IO_TIMEOUT_MS 5000
#define SERVE_PATH_MAX 1024

struct snap_serve {
	struct snap_fs *fs;
	int lfd;
	int stop_pipe[2];
	pthread_t th;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int nconn;
	char path[108];
};

struct resp {
	int status;
	const char *ctype;
	char *body;
};

static const char *reason(int st)
{
	switch (st) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 409: return "Conflict";
	case 413: return "Payload Too Large";
	case 422: return "Unprocessable Entity";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 507: return "Insufficient Storage";
	default: return st < 500 ? "Error" : "Internal Server Error";
	}
}

static void send_all(int fd, const char *p, size_t n)
{
	while (n) {
		struct pollfd pf = { fd, POLLOUT, 0 };
		ssize_t w;

		if (poll(&pf, 1, SERVE_IO_TIMEOUT_MS) <= 0)
			return;
		w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		p += w;
		n -= (size_t)w;
	}
}

static void send_resp(int fd, const struct resp *r)
{
	char hdr[256];
	size_t bl = r->body ? strlen(r->body) : 0;
	int hl = snprintf(hdr, sizeof(hdr),
			  "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
			  r->status, reason(r->status), r->ctype ? r->ctype : "application/json", bl);

	send_all(fd, hdr, (size_t)hl);
	if (bl)
		send_all(fd, r->body, bl);
}

/* {"error": msg} with JSON escaping */
__attribute__((format(printf, 3, 4))) static void set_err(struct resp *r, int status, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	json_object *o;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	o = json_object_new_object();
	json_object_object_add(o, "error", json_object_new_string(msg));
	free(r->body);
	r->body = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	r->status = status;
}

static void set_json(struct resp *r, json_object *o)
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

static void do_list(struct snap_fs *fs, struct resp *r)
{
	struct snap_fs_info *v;
	size_t n;
	json_object *o, *a;
	int ret = snap_fs_list(fs, &v, &n);

	if (ret) {
		set_err(r, 500, "cannot list mounts: %s", lz_strerror(ret));
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

static void do_get(struct snap_fs *fs, const char *id, struct resp *r)
{
	struct snap_fs_info in;

	if (snap_fs_get(fs, id, &in)) {
		set_err(r, 404, "no mount with id '%s'", id);
		return;
	}
	set_json(r, info_json(&in));
}

static void do_post(struct snap_fs *fs, const char *body, size_t len, struct resp *r)
{
	json_tokener *tok = json_tokener_new();
	json_object *o = NULL, *v, *labels = NULL;
	struct snap_label *lv = NULL, one;
	const char *id;
	size_t n = 0;
	void *mem = NULL;
	int ret;

	if (!tok) {
		set_err(r, 500, "out of memory");
		return;
	}
	if (len)
		o = json_tokener_parse_ex(tok, body, (int)len);
	if (!o || json_tokener_get_error(tok) != json_tokener_success ||
	    tok->char_offset != (int)len) {
		set_err(r, 400, "request body is not one JSON object: %s",
			len ? json_tokener_error_desc(json_tokener_get_error(tok)) : "empty body");
		goto out;
	}
	if (!json_object_is_type(o, json_type_object)) {
		set_err(r, 400, "request body must be a JSON object");
		goto out;
	}
	if (!json_object_object_get_ex(o, "id", &v) || !json_object_is_type(v, json_type_string)) {
		set_err(r, 400, "\"id\" (string) is required");
		goto out;
	}
	id = json_object_get_string(v);
	if (!snap_fs_id_valid(id)) {
		set_err(r, 400, "id must be 1..%d characters of [A-Za-z0-9._-]", SNAP_FS_ID_MAX);
		goto out;
	}
	if (json_object_object_get_ex(o, "labels", &labels)) {
		const char *s = json_object_to_json_string_ext(labels, JSON_C_TO_STRING_PLAIN);

		if (!json_object_is_type(labels, json_type_object) ||
		    (ret = snapfs_labels_from_json(s, &lv, &n, &mem))) {
			set_err(r, 400, "\"labels\" must be an object of strings (at most %u, %u bytes)",
				SNAP_NLABELS_MAX, SNAP_LABELS_MAX);
			goto out;
		}
	} else if (json_object_object_get_ex(o, "ref", &v) && json_object_is_type(v, json_type_string)) {
		struct reg_ref rr;

		if (reg_ref_parse(json_object_get_string(v), &rr)) {
			set_err(r, 400, "\"ref\" is not an image reference: %s", json_object_get_string(v));
			goto out;
		}
		one.key = "containerd.io/snapshot/cri.image-ref";
		one.value = json_object_get_string(v);
		lv = lz_malloc(sizeof(*lv));
		if (!lv) {
			set_err(r, 500, "out of memory");
			goto out;
		}
		lv[0] = one;
		n = 1;
	} else {
		set_err(r, 400, "\"labels\" (object) or \"ref\" (string) is required");
		goto out;
	}
	ret = snapfs_mount(fs, id, lv, n, true);
	if (ret == -EBUSY) {
		set_err(r, 409, "another request for snapshot '%s' is in progress; retry when it is done", id);
	} else if (ret == -EINVAL && !snap_label_get(lv, n, "containerd.io/snapshot/cri.image-ref") &&
		   !snap_label_get(lv, n, "containerd.io/snapshot/remote/stargz.reference")) {
		set_err(r, 400, "no image reference in the labels (containerd.io/snapshot/cri.image-ref)");
	} else if (ret) {
		set_err(r, status_of(ret), "mount of '%s' failed: %s%s", id, lz_strerror(ret),
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

static void do_delete(struct snap_fs *fs, const char *id, struct resp *r)
{
	struct snap_fs_info in;
	int ret;

	if (snap_fs_get(fs, id, &in)) {
		set_err(r, 404, "no mount with id '%s'", id);
		return;
	}
	ret = snapfs_umount(fs, id, true);
	if (ret == -EBUSY) {
		set_err(r, 409, "another request for snapshot '%s' is in progress; retry when it is done", id);
		return;
	}
	if (ret) {
		set_err(r, status_of(ret), "umount of '%s' failed: %s", id, lz_strerror(ret));
		return;
	}
	{
		json_object *o = json_object_new_object();

		json_object_object_add(o, "id", json_object_new_string(id));
		json_object_object_add(o, "unmounted", json_object_new_boolean(1));
		set_json(r, o);
	}
}

static void do_stats(struct snap_fs *fs, const char *id, struct resp *r)
{
	struct snap_fs_stats st;

	if (snap_fs_stats(fs, id, &st)) {
		set_err(r, 404, "no ready mount with id '%s'", id);
		return;
	}
	free(r->body);
	r->body = snapfs_stats_json(&st);
	r->status = r->body ? 200 : 500;
}

static void do_usage(struct snap_fs *fs, const char *query, struct resp *r)
{
	char digest[128] = "";
	uint64_t bytes = 0;
	int ret;

	if (!query || strncmp(query, "digest=", 7) || strlen(query + 7) >= sizeof(digest)) {
		set_err(r, 400, "usage needs ?digest=sha256:<64 hex>");
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
		set_err(r, 400, "'%s' is not a digest of the form sha256:<64 lowercase hex>", digest);
		return;
	}
	if (ret) {
		set_err(r, 500, "usage of %s: %s", digest, lz_strerror(ret));
		return;
	}
	{
		json_object *o = json_object_new_object();

		json_object_object_add(o, "digest", json_object_new_string(digest));
		json_object_object_add(o, "bytes", json_object_new_int64((int64_t)bytes));
		set_json(r, o);
	}
}

static void do_remove_cache(struct snap_fs *fs, const char *digest, struct resp *r)
{
	int ret = snap_fs_remove_cache(fs, digest);

	if (ret == -EINVAL)
		set_err(r, 400, "'%s' is not a digest of the form sha256:<64 lowercase hex>", digest);
	else if (ret == -EBUSY)
		set_err(r, 409, "blob %s is in use by a mount", digest);
	else if (ret)
		set_err(r, 500, "removing %s: %s", digest, lz_strerror(ret));
	else {
		json_object *o = json_object_new_object();

		json_object_object_add(o, "digest", json_object_new_string(digest));
		json_object_object_add(o, "removed", json_object_new_boolean(1));
		set_json(r, o);
	}
}

static void route(struct snap_fs *fs, const char *method, char *path, const char *body, size_t blen,
		  struct resp *r)
{
	char *query = strchr(path, '?');
	bool get = !strcmp(method, "GET"), del = !strcmp(method, "DELETE"), post = !strcmp(method, "POST");
	const char *mp = "/api/v1/mounts";
	size_t ml = strlen(mp);

	if (query)
		*query++ = 0;
	if (!strcmp(path, "/metrics")) {
		if (!get) {
			set_err(r, 405, "%s /metrics: only GET", method);
			return;
		}
		if (snapfs_metrics(fs, &r->body)) {
			set_err(r, 500, "out of memory");
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
			set_err(r, 405, "%s %s: use GET or POST", method, path);
		return;
	}
	if (!strncmp(path, mp, ml) && path[ml] == '/') {
		char *id = path + ml + 1, *sub = strchr(id, '/');

		if (sub)
			*sub++ = 0;
		if (!snap_fs_id_valid(id)) {
			set_err(r, 400, "'%s' is not a valid snapshot id", id);
			return;
		}
		if (sub && !strcmp(sub, "stats")) {
			if (get)
				do_stats(fs, id, r);
			else
				set_err(r, 405, "%s %s/stats: only GET", method, id);
		} else if (sub) {
			set_err(r, 404, "no such endpoint: %s/%s", id, sub);
		} else if (get) {
			do_get(fs, id, r);
		} else if (del) {
			do_delete(fs, id, r);
		} else {
			set_err(r, 405, "%s on a mount: use GET or DELETE", method);
		}
		return;
	}
	if (!strcmp(path, "/api/v1/usage")) {
		if (get)
			do_usage(fs, query, r);
		else
			set_err(r, 405, "%s /api/v1/usage: only GET", method);
		return;
	}
	if (!strncmp(path, "/api/v1/cache/", 14)) {
		if (del)
			do_remove_cache(fs, path + 14, r);
		else
			set_err(r, 405, "%s on a cache blob: only DELETE", method);
		return;
	}
	set_err(r, 404, "no such endpoint: %s", path);
}

struct conn {
	struct snap_serve *s;
	int fd;
};

int snapfs_http_head(const char *buf, size_t len, char method[16], char path[1024], size_t *body_off,
		     size_t *clen)
{
	const char *hend = memmem(buf, len, "\r\n\r\n", 4), *line_end, *sp1, *sp2;
	size_t hl, cl = 0, ml, pl;

	if (!hend)
		return len >= LZ_CTL_MAX_REQUEST ? -E2BIG : 0;
	hl = (size_t)(hend - buf) + 4;
	/* request line: METHOD SP PATH SP HTTP/1.x */
	line_end = memmem(buf, hl, "\r\n", 2);
	sp1 = memchr(buf, ' ', (size_t)(line_end - buf));
	if (!sp1)
		return -EINVAL;
	sp2 = memchr(sp1 + 1, ' ', (size_t)(line_end - sp1 - 1));
	ml = (size_t)(sp1 - buf);
	pl = sp2 ? (size_t)(sp2 - sp1 - 1) : 0;
	if (!sp2 || ml == 0 || ml >= 16 || pl == 0 || pl >= 1024 || sp1[1] != '/' ||
	    (size_t)(line_end - sp2 - 1) < 8 || memcmp(sp2 + 1, "HTTP/1.", 7))
		return -EINVAL;
	for (const char *p = buf; p < sp1; p++)
		if (*p < 'A' || *p > 'Z')
			return -EINVAL;
	for (const char *p = sp1 + 1; p < sp2; p++)
		if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
			return -EINVAL;
	memcpy(method, buf, ml);
	method[ml] = 0;
	memcpy(path, sp1 + 1, pl);
	path[pl] = 0;
	/* headers: only Content-Length matters; a second, different one is an error */
	for (const char *h = line_end + 2; h < hend;) {
		const char *e = memmem(h, (size_t)(hend + 2 - h), "\r\n", 2);

		if (!e)
			return -EINVAL;
		if ((size_t)(e - h) > 15 && !strncasecmp(h, "content-length:", 15)) {
			const char *v = h + 15;
			size_t n = 0;
			bool digits = false;

			while (v < e && (*v == ' ' || *v == '\t'))
				v++;
			for (; v < e && *v >= '0' && *v <= '9'; v++) {
				digits = true;
				if (n > LZ_CTL_MAX_REQUEST)
					return -E2BIG;
				n = n * 10 + (size_t)(*v - '0');
			}
			while (v < e && (*v == ' ' || *v == '\t'))
				v++;
			if (!digits || v != e || (cl && cl != n))
				return -EINVAL;
			cl = n;
		}
		h = e + 2;
	}
	if (cl > LZ_CTL_MAX_REQUEST || hl + cl > LZ_CTL_MAX_REQUEST)
		return -E2BIG;
	if (len < hl + cl)
		return 0;
	*body_off = hl;
	*clen = cl;
	return 1;
}

static void handle(struct snap_serve *s, int fd)
{
	char *buf = lz_malloc(LZ_CTL_MAX_REQUEST + 1), method[16], path[SERVE_PATH_MAX];
	size_t len = 0, clen = 0, off = 0;
	struct resp r = { 0 };
	bool early = false;
	int ret;

	if (!buf)
		return;
	for (;;) {
		struct pollfd p = { fd, POLLIN, 0 };
		ssize_t n;

		if (poll(&p, 1, SERVE_IO_TIMEOUT_MS) <= 0)
			goto out; /* a client that sends nothing gets nothing */
		n = read(fd, buf + len, LZ_CTL_MAX_REQUEST - len);
		if (n <= 0)
			goto out;
		len += (size_t)n;
		buf[len] = 0;
		ret = snapfs_http_head(buf, len, method, path, &off, &clen);
		if (ret == 1)
			break;
		if (ret == -E2BIG || (ret == 0 && len >= LZ_CTL_MAX_REQUEST)) {
			set_err(&r, 413, "request larger than %u bytes", LZ_CTL_MAX_REQUEST);
			early = true;
			goto reply;
		}
		if (ret < 0) {
			set_err(&r, 400, "malformed HTTP request");
			early = true;
			goto reply;
		}
	}
	buf[off + clen] = 0;
	route(s->fs, method, path, buf + off, clen, &r);
	if (!r.status)
		set_err(&r, 500, "no response");
reply:
	send_resp(fd, &r);
	if (early) {
		/* answered before the whole request was read: the client may still be sending: take (and drop) what it sends for a
		 * moment so that it reads our answer instead of failing on a reset */
		shutdown(fd, SHUT_WR);
		for (size_t drained = 0; drained < (4u << 20);) {
			struct pollfd p = { fd, POLLIN, 0 };
			ssize_t n;

			if (poll(&p, 1, 1000) <= 0)
				break;
			n = read(fd, buf, LZ_CTL_MAX_REQUEST);
			if (n <= 0)
				break;
			drained += (size_t)n;
		}
	}
out:
	free(r.body);
	free(buf);
}

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	struct snap_serve *s = c->s;

	handle(s, c->fd);
	close(c->fd);
	free(c);
	pthread_mutex_lock(&s->lock);
	s->nconn--;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

static void *accept_main(void *arg)
{
	struct snap_serve *s = arg;

	for (;;) {
		struct pollfd p[2] = { { s->lfd, POLLIN, 0 }, { s->stop_pipe[0], POLLIN, 0 } };
		struct conn *c;
		pthread_attr_t at;
		pthread_t th;
		int fd;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents)
			break;
		fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		pthread_mutex_lock(&s->lock);
		if (s->nconn >= SERVE_MAX_CONN) {
			struct resp r = { 0 };

			pthread_mutex_unlock(&s->lock);
			set_err(&r, 503, "too many concurrent requests (%d)", SERVE_MAX_CONN);
			send_resp(fd, &r);
			free(r.body);
			close(fd);
			continue;
		}
		s->nconn++;
		pthread_mutex_unlock(&s->lock);
		c = lz_malloc(sizeof(*c));
		pthread_attr_init(&at);
		pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
		if (!c || (c->s = s, c->fd = fd, pthread_create(&th, &at, conn_main, c))) {
			free(c);
			close(fd);
			pthread_mutex_lock(&s->lock);
			s->nconn--;
			pthread_mutex_unlock(&s->lock);
		}
		pthread_attr_destroy(&at);
	}
	return NULL;
}

int snap_serve_start(struct snap_fs *fs, const char *sock_path, struct snap_serve **out)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct snap_serve *s;
	int ret;

	if (strlen(sock_path) >= sizeof(sun.sun_path))
		return -ENAMETOOLONG;
	strcpy(sun.sun_path, sock_path);
	s = lz_calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->fs = fs;
	s->stop_pipe[0] = s->stop_pipe[1] = -1;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	snprintf(s->path, sizeof(s->path), "%s", sock_path);
	s->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s->lfd < 0 || pipe2(s->stop_pipe, O_CLOEXEC) < 0) {
		ret = -errno;
		goto err;
	}
	unlink(sock_path);
	{
		/* bound under a 0077 umask: the socket never exists with wider rights */
		mode_t old = umask(0077);

		ret = bind(s->lfd, (struct sockaddr *)&sun, sizeof(sun));
		umask(old);
	}
	if (ret < 0 || chmod(sock_path, 0600) < 0 || listen(s->lfd, 64) < 0) {
		ret = -errno;
		lz_err("control socket %s: %s", sock_path, strerror(-ret));
		goto err;
	}
	ret = -pthread_create(&s->th, NULL, accept_main, s);
	if (ret)
		goto err;
	*out = s;
	return 0;
err:
	if (s->lfd >= 0)
		close(s->lfd);
	if (s->stop_pipe[0] >= 0) {
		close(s->stop_pipe[0]);
		close(s->stop_pipe[1]);
	}
	free(s);
	return ret;
}

void snap_serve_stop(struct snap_serve *s)
{
	if (!s)
		return;
	if (write(s->stop_pipe[1], "x", 1) < 0)
		lz_warn("cannot stop the control thread");
	pthread_join(s->th, NULL);
	close(s->lfd);
	unlink(s->path);
	/* requests in flight finish before the snap_fs under them goes away */
	pthread_mutex_lock(&s->lock);
	while (s->nconn)
		pthread_cond_wait(&s->cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
	close(s->stop_pipe[0]);
	close(s->stop_pipe[1]);
	free(s);
}
