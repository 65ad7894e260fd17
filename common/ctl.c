/* SPDX-License-Identifier: Apache-2.0 */
#define LZ_MOD "ctl"
#include "lazyimg/ctl.h"

#include <fcntl.h>
#include <json-c/json.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define CTL_IO_TIMEOUT_MS 5000
#define CTL_DRAIN_MAX (4u << 20) /* bytes taken from a client answered early */

struct lz_ctl {
	int fd;
	int stop_pipe[2];
	pthread_t th;
	lz_ctl_handler fn;
	void *arg;
	lz_ctl_fn simple; /* lz_ctl_start's callback, called by simple_handler */
	void *simple_arg;
	int max_conn;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int nconn; /* protected by lock: connection threads alive */
	char path[108];
};

struct ctl_conn {
	struct lz_ctl *c;
	int fd;
};

int lz_ctl_sockaddr(const char *path, struct sockaddr_un *sun)
{
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun->sun_path))
		return -ENAMETOOLONG;
	strcpy(sun->sun_path, path);
	return 0;
}

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

void lz_ctl_error(struct lz_ctl_resp *r, int status, const char *fmt, ...)
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

/* a client that stops reading costs at most the timeout, never a signal */
static void send_all(int fd, const char *p, size_t n)
{
	while (n) {
		struct pollfd pf = { fd, POLLOUT, 0 };
		ssize_t w;

		if (poll(&pf, 1, CTL_IO_TIMEOUT_MS) <= 0)
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

static void send_resp(int fd, const struct lz_ctl_resp *r)
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

int lz_ctl_parse_head(const char *buf, size_t len, char method[LZ_CTL_METHOD_MAX], char path[LZ_CTL_PATH_MAX],
		      size_t *body_off, size_t *clen)
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
	if (!sp2 || ml == 0 || ml >= LZ_CTL_METHOD_MAX || pl == 0 || pl >= LZ_CTL_PATH_MAX || sp1[1] != '/' ||
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

/* Read one request within the cap, hand it to the handler, answer, drain. */
static void serve_conn(struct lz_ctl *c, int fd)
{
	char *buf = lz_malloc(LZ_CTL_MAX_REQUEST + 1), method[LZ_CTL_METHOD_MAX], path[LZ_CTL_PATH_MAX];
	size_t len = 0, clen = 0, off = 0;
	struct lz_ctl_resp r = { 0 };
	bool early = false;
	int ret;

	if (!buf)
		return;
	for (;;) {
		struct pollfd p = { fd, POLLIN, 0 };
		ssize_t n;

		if (poll(&p, 1, CTL_IO_TIMEOUT_MS) <= 0)
			goto out; /* a client that sends nothing gets nothing */
		n = read(fd, buf + len, LZ_CTL_MAX_REQUEST - len);
		if (n <= 0)
			goto out;
		len += (size_t)n;
		buf[len] = 0;
		ret = lz_ctl_parse_head(buf, len, method, path, &off, &clen);
		if (ret == 1)
			break;
		if (ret == -E2BIG || (ret == 0 && len >= LZ_CTL_MAX_REQUEST)) {
			lz_ctl_error(&r, 413, "request larger than %u bytes", LZ_CTL_MAX_REQUEST);
			early = true;
			goto reply;
		}
		if (ret < 0) {
			lz_ctl_error(&r, 400, "malformed HTTP request");
			early = true;
			goto reply;
		}
	}
	buf[off + clen] = 0;
	c->fn(c->arg, method, path, buf + off, clen, &r);
	if (!r.status)
		lz_ctl_error(&r, 500, "no response");
reply:
	send_resp(fd, &r);
	if (early) {
		/* answered before the whole request was read: the client may still be sending: take (and drop)
		 * what it sends for a moment so that it reads our answer instead of failing on a reset */
		shutdown(fd, SHUT_WR);
		for (size_t drained = 0; drained < CTL_DRAIN_MAX;) {
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
	struct ctl_conn *cc = arg;
	struct lz_ctl *c = cc->c;

	serve_conn(c, cc->fd);
	close(cc->fd);
	free(cc);
	pthread_mutex_lock(&c->lock);
	c->nconn--;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

/* a thread for fd, or a 503 when max_conn are busy; consumes fd */
static void spawn_conn(struct lz_ctl *c, int fd)
{
	struct ctl_conn *cc;
	pthread_attr_t at;
	pthread_t th;

	pthread_mutex_lock(&c->lock);
	if (c->nconn >= c->max_conn) {
		struct lz_ctl_resp r = { 0 };

		pthread_mutex_unlock(&c->lock);
		lz_ctl_error(&r, 503, "too many concurrent requests (%d)", c->max_conn);
		send_resp(fd, &r);
		free(r.body);
		close(fd);
		return;
	}
	c->nconn++;
	pthread_mutex_unlock(&c->lock);
	cc = lz_malloc(sizeof(*cc));
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	if (!cc || (cc->c = c, cc->fd = fd, pthread_create(&th, &at, conn_main, cc))) {
		free(cc);
		close(fd);
		pthread_mutex_lock(&c->lock);
		c->nconn--;
		pthread_mutex_unlock(&c->lock);
	}
	pthread_attr_destroy(&at);
}

static void *accept_loop(void *arg)
{
	struct lz_ctl *c = arg;

	for (;;) {
		struct pollfd p[2] = { { c->fd, POLLIN, 0 }, { c->stop_pipe[0], POLLIN, 0 } };
		int fd;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents)
			break;
		fd = accept4(c->fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		if (c->max_conn > 0) {
			spawn_conn(c, fd);
		} else {
			serve_conn(c, fd);
			close(fd);
		}
	}
	return NULL;
}

/* simple: lz_ctl_start's callback, then fn is simple_handler and its arg the lz_ctl */
static int ctl_new(const char *sock_path, const struct lz_ctl_opts *o, lz_ctl_handler fn, void *arg,
		   lz_ctl_fn simple, void *simple_arg, struct lz_ctl **out)
{
	struct sockaddr_un sun;
	struct lz_ctl *c;
	int ret;

	ret = lz_ctl_sockaddr(sock_path, &sun);
	if (ret)
		return ret;
	c = lz_calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->fn = fn;
	c->arg = simple ? c : arg;
	c->simple = simple;
	c->simple_arg = simple_arg;
	c->max_conn = o->max_conn;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	strcpy(c->path, sock_path);
	c->stop_pipe[0] = c->stop_pipe[1] = -1;
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0 || pipe2(c->stop_pipe, O_CLOEXEC) < 0) {
		ret = -errno;
		goto err;
	}
	unlink(sock_path);
	{
		/* bind under a 0077 umask so the socket never exists with wider rights */
		mode_t old = umask(0077);

		ret = bind(c->fd, (struct sockaddr *)&sun, sizeof(sun));
		umask(old);
	}
	if (ret < 0 || chmod(sock_path, 0600) < 0 || listen(c->fd, o->backlog) < 0) {
		ret = -errno;
		lz_err("control socket %s: %s", sock_path, strerror(-ret));
		goto err;
	}
	ret = -pthread_create(&c->th, NULL, accept_loop, c);
	if (ret)
		goto err;
	*out = c;
	return 0;
err:
	if (c->fd >= 0)
		close(c->fd);
	if (c->stop_pipe[0] >= 0) {
		close(c->stop_pipe[0]);
		close(c->stop_pipe[1]);
	}
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->cond);
	free(c);
	return ret;
}

int lz_ctl_serve(const char *sock_path, const struct lz_ctl_opts *o, lz_ctl_handler fn, void *arg,
		 struct lz_ctl **out)
{
	return ctl_new(sock_path, o, fn, arg, NULL, NULL, out);
}

static void simple_handler(void *arg, const char *method, char *path, const char *body, size_t len,
			   struct lz_ctl_resp *r)
{
	struct lz_ctl *c = arg;
	int status = 200, ret = c->simple(c->simple_arg, method, path, body, len, &status, &r->body);

	if (ret) {
		char e[256];

		free(r->body);
		snprintf(e, sizeof(e), "{\"error\":\"%s\"}", lz_strerror(ret));
		r->body = strdup(e);
		r->status = 500;
		return;
	}
	r->status = status;
	if (!r->body)
		r->body = strdup("{}");
}

int lz_ctl_start(const char *sock_path, lz_ctl_fn fn, void *arg, struct lz_ctl **out)
{
	const struct lz_ctl_opts o = { .max_conn = 0, .backlog = 16 };

	return ctl_new(sock_path, &o, simple_handler, NULL, fn, arg, out);
}

void lz_ctl_stop(struct lz_ctl *c)
{
	if (!c)
		return;
	if (write(c->stop_pipe[1], "x", 1) < 0)
		lz_warn("cannot stop the control thread");
	pthread_join(c->th, NULL);
	close(c->fd);
	unlink(c->path);
	/* requests in flight finish before what their handler uses goes away */
	pthread_mutex_lock(&c->lock);
	while (c->nconn)
		pthread_cond_wait(&c->cond, &c->lock);
	pthread_mutex_unlock(&c->lock);
	close(c->stop_pipe[0]);
	close(c->stop_pipe[1]);
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->cond);
	free(c);
}

int lz_ctl_request(const char *sock_path, const char *method, const char *path, const char *body,
		   char **resp, size_t *resp_len)
{
	struct sockaddr_un sun;
	char *buf = NULL, *hend;
	size_t len = 0, cap = 65536;
	int fd, ret, status = -EIO;
	size_t bl = body ? strlen(body) : 0;
	char hdr[1400];
	int hl;

	ret = lz_ctl_sockaddr(sock_path, &sun);
	if (ret)
		return ret;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		ret = -errno;
		close(fd);
		return ret;
	}
	hl = snprintf(hdr, sizeof(hdr), "%s %s HTTP/1.1\r\nHost: lazyimg\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
		      method, path, bl);
	if (hl < 0 || hl >= (int)sizeof(hdr) || write(fd, hdr, (size_t)hl) != hl || (bl && write(fd, body, bl) != (ssize_t)bl)) {
		close(fd);
		return -EIO;
	}
	buf = lz_malloc(cap + 1);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	for (;;) {
		ssize_t n;

		if (len == cap) {
			char *nb;

			if (cap >= (16u << 20))
				break;
			nb = lz_realloc(buf, cap * 2 + 1);
			if (!nb)
				break;
			buf = nb;
			cap *= 2;
		}
		n = read(fd, buf + len, cap - len);
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	buf[len] = 0;
	hend = strstr(buf, "\r\n\r\n");
	if (!hend || sscanf(buf, "HTTP/1.%*d %d", &status) != 1) {
		free(buf);
		return -EIO;
	}
	if (resp) {
		size_t bl2 = len - (size_t)(hend + 4 - buf);

		memmove(buf, hend + 4, bl2 + 1);
		*resp = buf;
		if (resp_len)
			*resp_len = bl2;
	} else {
		free(buf);
	}
	return status;
}
