/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fdhold.c - the fd holder that keeps FUSE connections alive across a
 * restart or crash of `lazyimg serve`, and its client.
 *
 * Why a process: the kernel aborts a FUSE connection when the last open
 * file of its /dev/fuse fd is closed, and every fd of a process is closed
 * when it dies, kill -9 included. A copy of the fd in another process keeps
 * the connection (and the mount) alive; readers' requests simply queue in
 * the kernel until a successor adopts a copy and serves them. (Under
 * systemd the fd store, FDSTORE=1, does the same job; systemd is not
 * always there, this holder is.)
 *
 * Protocol: SOCK_SEQPACKET on a 0600 unix socket, one request per message:
 *   "PUT <id>"  + one fd (SCM_RIGHTS)  -> "OK" (replaces an fd held for <id>)
 *   "DEL <id>"                          -> "OK" (closes it; unknown id: OK)
 *   "LIST"                              -> "FD <id>" + fd, ..., then "END"
 *   "PING"                              -> "OK"
 * Anything else -> "ERR <reason>". Peers must have this process's uid.
 */
#define LZ_MOD "fdhold"
#include "lazyimg/ctl.h"
#include "snapfs_int.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define HOLD_MAX_FDS 4096
#define HOLD_MAX_CLIENTS 16
#define HOLD_MSG_MAX 256
#define HOLD_IDLE_GRACE_S 5     /* holding nothing, with no client, for this long: exit */

struct snap_holder {
	int fd;
	pthread_mutex_t lock;       /* one request/response exchange at a time */
};

static int send_msg(int sock, const char *text, int fd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { (void *)text, strlen(text) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n;

	if (fd >= 0) {
		struct cmsghdr *c;

		memset(&u, 0, sizeof(u));
		mh.msg_control = u.buf;
		mh.msg_controllen = sizeof(u.buf);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	do
		n = sendmsg(sock, &mh, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	return n == (ssize_t)iov.iov_len ? 0 : n < 0 ? -errno : -EIO;
}

/* One message; *fd gets an attached fd (or -1). Returns length, 0 on EOF, -errno. */
static int recv_msg(int sock, char *text, size_t cap, int *fd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * 4)];
		struct cmsghdr align;
	} u;
	struct iovec iov = { text, cap - 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
			     .msg_controllen = sizeof(u.buf) };
	ssize_t n;

	*fd = -1;
	do
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
			int f;

			memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (*fd < 0)
				*fd = f;
			else
				close(f); /* one fd per message: extra ones are dropped */
		}
	}
	if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
		if (*fd >= 0)
			close(*fd);
		*fd = -1;
		return -EMSGSIZE;
	}
	text[n] = 0;
	return (int)n;
}

/* ---- the holder process --------------------------------------------------------- */

struct held {
	char id[SNAP_FS_ID_MAX + 1];
	int fd;
};

static struct held g_held[HOLD_MAX_FDS];
static size_t g_nheld;

/* a mount's id, or "..<id>" for the other fds a server parks (its listening socket) */
static bool held_id_valid(const char *id)
{
	return snap_fs_id_valid(id) ||
	       (!strncmp(id, "..", 2) && snap_fs_id_valid(id + 2) && strlen(id) <= SNAP_FS_ID_MAX);
}

static void hold_put(int csock, const char *id, int fd)
{
	if (fd < 0 || !held_id_valid(id)) {
		if (fd >= 0)
			close(fd);
		send_msg(csock, fd < 0 ? "ERR no fd attached" : "ERR bad id", -1);
		return;
	}
	for (size_t i = 0; i < g_nheld; i++)
		if (!strcmp(g_held[i].id, id)) {
			close(g_held[i].fd);
			g_held[i].fd = fd;
			send_msg(csock, "OK", -1);
			return;
		}
	if (g_nheld == HOLD_MAX_FDS) {
		close(fd);
		send_msg(csock, "ERR holder full", -1);
		return;
	}
	memcpy(g_held[g_nheld].id, id, strlen(id) + 1); /* length checked by held_id_valid */
	g_held[g_nheld++].fd = fd;
	send_msg(csock, "OK", -1);
}

static void hold_del(int csock, const char *id)
{
	for (size_t i = 0; i < g_nheld; i++)
		if (!strcmp(g_held[i].id, id)) {
			close(g_held[i].fd);
			g_held[i] = g_held[--g_nheld];
			break;
		}
	send_msg(csock, "OK", -1);
}

static void hold_list(int csock)
{
	char msg[HOLD_MSG_MAX];

	for (size_t i = 0; i < g_nheld; i++) {
		snprintf(msg, sizeof(msg), "FD %.128s", g_held[i].id);
		if (send_msg(csock, msg, g_held[i].fd))
			return;
	}
	send_msg(csock, "END", -1);
}

/* false: drop this client */
static bool hold_serve(int csock)
{
	char msg[HOLD_MSG_MAX];
	int fd, n = recv_msg(csock, msg, sizeof(msg), &fd);

	if (n <= 0)
		return false;
	if (!strncmp(msg, "PUT ", 4)) {
		hold_put(csock, msg + 4, fd);
		return true;
	}
	if (fd >= 0)
		close(fd);
	if (!strncmp(msg, "DEL ", 4))
		hold_del(csock, msg + 4);
	else if (!strcmp(msg, "LIST"))
		hold_list(csock);
	else if (!strcmp(msg, "PING"))
		send_msg(csock, "OK", -1);
	else
		send_msg(csock, "ERR unknown request", -1);
	return true;
}

int snap_fdholder_ping(const char *sock_path)
{
	struct snap_holder *h;
	char msg[HOLD_MSG_MAX];
	int ret, fd;

	ret = snapfs_holder_connect(sock_path, &h);
	if (ret)
		return ret;
	ret = send_msg(h->fd, "PING", -1);
	if (!ret)
		ret = recv_msg(h->fd, msg, sizeof(msg), &fd) > 0 && !strcmp(msg, "OK") ? 0 : -EPROTO;
	snapfs_holder_close(h);
	return ret;
}

int snap_fdholder_main(const char *sock_path)
{
	struct pollfd p[1 + HOLD_MAX_CLIENTS];
	struct sockaddr_un sun;
	char pidpath[sizeof(sun.sun_path) + 8];
	int lfd, nclients = 0;
	time_t idle_since = time(NULL);

	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	if (lz_ctl_sockaddr(sock_path, &sun)) {
		lz_err("fd holder socket path too long: %s", sock_path);
		return 1;
	}
	if (snap_fdholder_ping(sock_path) == 0) {
		lz_info("an fd holder already answers on %s", sock_path);
		return 0;
	}
	lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		return 1;
	unlink(sock_path);
	{
		mode_t old = umask(0077);
		int r = bind(lfd, (struct sockaddr *)&sun, sizeof(sun));

		umask(old);
		if (r < 0 || listen(lfd, 16) < 0) {
			lz_err("fd holder: %s: %s", sock_path, strerror(errno));
			close(lfd);
			return 1;
		}
	}
	/* <socket>.pid: who to stop when a test or an operator cleans up */
	snprintf(pidpath, sizeof(pidpath), "%s.pid", sock_path);
	{
		FILE *f = fopen(pidpath, "we");

		if (f) {
			fprintf(f, "%d\n", (int)getpid());
			fclose(f);
		}
	}
	lz_info("fd holder %d listening on %s", (int)getpid(), sock_path);
	p[0] = (struct pollfd){ lfd, POLLIN, 0 };
	for (;;) {
		int r;

		/* nothing held and nobody to give it to for a while: the job is done
		 * (the grace covers a server that pinged us and is about to connect) */
		if (g_nheld || nclients)
			idle_since = time(NULL);
		else if (time(NULL) - idle_since >= HOLD_IDLE_GRACE_S)
			break;
		r = poll(p, (nfds_t)(1 + nclients), 1000);
		if (r < 0 && errno != EINTR)
			break;
		if (r <= 0)
			continue;
		if ((p[0].revents & POLLIN) && nclients < HOLD_MAX_CLIENTS) {
			int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
			struct ucred cr;
			socklen_t cl = sizeof(cr);

			if (c >= 0 && (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cr, &cl) < 0 || cr.uid != getuid())) {
				close(c);
			} else if (c >= 0) {
				p[1 + nclients++] = (struct pollfd){ c, POLLIN, 0 };
			}
		}
		for (int i = 1; i <= nclients; i++) {
			if (!p[i].revents)
				continue;
			if ((p[i].revents & POLLIN) && hold_serve(p[i].fd))
				continue;
			if (p[i].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)) {
				close(p[i].fd);
				p[i] = p[nclients--];
				i--;
			}
		}
	}
	close(lfd);
	unlink(sock_path);
	unlink(pidpath);
	lz_info("fd holder %d: nothing left to hold, exiting", (int)getpid());
	return 0;
}

/* ---- client ------------------------------------------------------------------- */

int snapfs_holder_connect(const char *sock, struct snap_holder **out)
{
	struct sockaddr_un sun;
	struct snap_holder *h;
	int ret = lz_ctl_sockaddr(sock, &sun);

	if (ret)
		return ret;
	h = lz_calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (h->fd < 0 || connect(h->fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		ret = -errno;
		if (h->fd >= 0)
			close(h->fd);
		free(h);
		return ret;
	}
	{
		/* a holder that stops answering must not hang a mount forever */
		struct timeval tv = { 10, 0 };

		setsockopt(h->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	}
	pthread_mutex_init(&h->lock, NULL);
	*out = h;
	return 0;
}

void snapfs_holder_close(struct snap_holder *h)
{
	if (!h)
		return;
	close(h->fd);
	pthread_mutex_destroy(&h->lock);
	free(h);
}

static int simple(struct snap_holder *h, const char *verb, const char *id, int fd)
{
	char msg[HOLD_MSG_MAX];
	int ret, rfd;

	snprintf(msg, sizeof(msg), "%s %s", verb, id);
	pthread_mutex_lock(&h->lock);
	ret = send_msg(h->fd, msg, fd);
	if (!ret) {
		ret = recv_msg(h->fd, msg, sizeof(msg), &rfd);
		if (rfd >= 0)
			close(rfd);
		ret = ret < 0 ? ret : ret == 0 ? -ECONNRESET : strcmp(msg, "OK") ? -EPROTO : 0;
	}
	pthread_mutex_unlock(&h->lock);
	if (ret == -EPROTO)
		lz_err("fd holder refused %s %s: %s", verb, id, msg);
	return ret;
}

int snapfs_holder_put(struct snap_holder *h, const char *id, int fd)
{
	return simple(h, "PUT", id, fd);
}

int snapfs_holder_del(struct snap_holder *h, const char *id)
{
	return simple(h, "DEL", id, -1);
}

int snapfs_holder_list(struct snap_holder *h, snapfs_holder_fn fn, void *arg)
{
	char msg[HOLD_MSG_MAX];
	int ret, fd;

	pthread_mutex_lock(&h->lock);
	ret = send_msg(h->fd, "LIST", -1);
	while (!ret) {
		ret = recv_msg(h->fd, msg, sizeof(msg), &fd);
		if (ret <= 0) {
			ret = ret ? ret : -ECONNRESET;
			break;
		}
		ret = 0;
		if (!strcmp(msg, "END")) {
			if (fd >= 0)
				close(fd);
			break;
		}
		if (strncmp(msg, "FD ", 3) || fd < 0 || !held_id_valid(msg + 3)) {
			if (fd >= 0)
				close(fd);
			ret = -EPROTO;
			break;
		}
		fn(arg, msg + 3, fd);
	}
	pthread_mutex_unlock(&h->lock);
	return ret;
}
