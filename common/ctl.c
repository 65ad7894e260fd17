/* SPDX-License-Identifier: Apache-2.0 */
#define LZ_MOD "ctl"
#include "lazyimg/ctl.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

struct lz_ctl {
	int fd;
	int stop_pipe[2];
	pthread_t th;
	lz_ctl_fn fn;
	void *arg;
	char path[108];
};

static int sun_of(const char *path, struct sockaddr_un *sun)
{
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun->sun_path))
		return -ENAMETOOLONG;
	strcpy(sun->sun_path, path);
	return 0;
}

static const char *reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 409: return "Conflict";
	case 413: return "Payload Too Large";
	default: return status < 500 ? "Error" : "Internal Server Error";
	}
}

static void reply(int fd, int status, const char *body)
{
	char hdr[256];
	size_t bl = body ? strlen(body) : 0;
	int hl = snprintf(hdr, sizeof(hdr),
			  "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
			  status, reason(status), bl);

	if (write(fd, hdr, (size_t)hl) < 0 || (bl && write(fd, body, bl) < 0))
		return;
}

/* Read a request: line, headers, and a Content-Length body, all within the cap. */
static void serve_one(struct lz_ctl *c, int fd)
{
	char *buf = lz_malloc(LZ_CTL_MAX_REQUEST + 1), *hend, *body_out = NULL, method[16], path[1024];
	size_t len = 0, clen = 0;
	int status = 200, ret;

	if (!buf)
		return;
	for (;;) {
		struct pollfd p = { fd, POLLIN, 0 };
		ssize_t n;

		if (poll(&p, 1, 5000) <= 0)
			goto out; /* a client that sends nothing gets nothing */
		n = read(fd, buf + len, LZ_CTL_MAX_REQUEST - len);
		if (n <= 0)
			goto out;
		len += (size_t)n;
		buf[len] = 0;
		hend = strstr(buf, "\r\n\r\n");
		if (hend) {
			char *cl = strcasestr(buf, "\r\ncontent-length:");

			if (cl && cl < hend)
				clen = strtoull(cl + 17, NULL, 10);
			if (clen > LZ_CTL_MAX_REQUEST || (size_t)(hend + 4 - buf) + clen > LZ_CTL_MAX_REQUEST) {
				reply(fd, 413, "{\"error\":\"request too large\"}");
				goto out;
			}
			if (len >= (size_t)(hend + 4 - buf) + clen)
				break;
		}
		if (len >= LZ_CTL_MAX_REQUEST) {
			reply(fd, 413, "{\"error\":\"request too large\"}");
			goto out;
		}
	}
	if (sscanf(buf, "%15s %1023s", method, path) != 2) {
		reply(fd, 400, "{\"error\":\"malformed request line\"}");
		goto out;
	}
	hend[0] = 0;
	ret = c->fn(c->arg, method, path, hend + 4, clen, &status, &body_out);
	if (ret) {
		char e[256];

		snprintf(e, sizeof(e), "{\"error\":\"%s\"}", lz_strerror(ret));
		reply(fd, 500, e);
	} else {
		reply(fd, status, body_out ? body_out : "{}");
	}
out:
	free(body_out);
	free(buf);
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
		serve_one(c, fd);
		close(fd);
	}
	return NULL;
}

int lz_ctl_start(const char *sock_path, lz_ctl_fn fn, void *arg, struct lz_ctl **out)
{
	struct sockaddr_un sun;
	struct lz_ctl *c;
	int ret;

	ret = sun_of(sock_path, &sun);
	if (ret)
		return ret;
	c = lz_calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->fn = fn;
	c->arg = arg;
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
	if (ret < 0 || chmod(sock_path, 0600) < 0 || listen(c->fd, 16) < 0) {
		ret = -errno;
		lz_err("control socket %s: %s", sock_path, strerror(errno));
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
	free(c);
	return ret;
}

void lz_ctl_stop(struct lz_ctl *c)
{
	if (!c)
		return;
	if (write(c->stop_pipe[1], "x", 1) < 0)
		lz_warn("cannot stop the control thread");
	pthread_join(c->th, NULL);
	close(c->fd);
	close(c->stop_pipe[0]);
	close(c->stop_pipe[1]);
	unlink(c->path);
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

	ret = sun_of(sock_path, &sun);
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
