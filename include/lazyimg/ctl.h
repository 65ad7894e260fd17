/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ctl.h - a tiny HTTP/1.1 server on a unix socket (mode 0600) for a running
 * server's control API: the `stats` socket of a standalone mount and the API
 * of `lazyimg serve`. One thread accepts; requests are handled either one at a
 * time on it or each on a thread of its own (lz_ctl_opts). Request line,
 * headers and body are capped (LZ_CTL_MAX_REQUEST) and reads and writes time
 * out; one request per connection (Connection: close).
 */
#ifndef LAZYIMG_CTL_H
#define LAZYIMG_CTL_H

#include "lazyimg/lz.h"

#define LZ_CTL_MAX_REQUEST (64u << 10) /* request line + headers + body, bytes */
#define LZ_CTL_METHOD_MAX 16 /* method buffer, with its NUL */
#define LZ_CTL_PATH_MAX 1024 /* request-target buffer, with its NUL */

struct lz_ctl;

/* What a handler answers; the server sends it, then frees body. */
struct lz_ctl_resp {
	int status; /* left 0: the client gets 500 "no response" */
	const char *ctype; /* NULL: application/json; must outlive the request (a literal) */
	char *body; /* malloc'd, NUL-terminated; NULL: empty */
};

/* One request: path is the server's copy and may be cut up (at '?', say); body is
 * NUL-terminated at body[len]. Called on the accept thread (max_conn 0) or on
 * the connection's own thread, so concurrently with itself when max_conn > 1. */
typedef void (*lz_ctl_handler)(void *arg, const char *method, char *path, const char *body, size_t len,
			       struct lz_ctl_resp *r);

struct lz_ctl_opts {
	int max_conn; /* 0: one request at a time on the accept thread; else a detached thread
		       * per connection, at most this many (503 beyond) */
	int backlog; /* listen() backlog */
};

/* Bind sock_path (0600, never wider: bound under a 0077 umask) and serve it until
 * lz_ctl_stop. Returns 0 or -errno (the bind failure is logged). */
int lz_ctl_serve(const char *sock_path, const struct lz_ctl_opts *o, lz_ctl_handler fn, void *arg,
		 struct lz_ctl **out);

/* The simple form (one request at a time): fill *body (malloc'd) and *status for
 * METHOD PATH; return 0, or -errno, answered as 500 {"error": "<strerror>"}. */
typedef int (*lz_ctl_fn)(void *arg, const char *method, const char *path, const char *req_body,
			 size_t req_len, int *status, char **body);

int lz_ctl_start(const char *sock_path, lz_ctl_fn fn, void *arg, struct lz_ctl **out);
/* Stops accepting, removes the socket, and returns once every request in flight is
 * answered (their handlers may use what arg points to until then). NULL is a no-op. */
void lz_ctl_stop(struct lz_ctl *c);

/* r gets status and the body {"error": "<fmt...>"} (JSON-escaped, at most 511 bytes of message). */
__attribute__((format(printf, 3, 4))) void lz_ctl_error(struct lz_ctl_resp *r, int status, const char *fmt, ...);

/* The head of a request in buf[0..len) (NUL-terminated at len): the request line
 * "METHOD SP /target SP HTTP/1.x" (method A-Z, target of visible ASCII) and, of the
 * headers, Content-Length (digits; a second, different one is malformed).
 * 1: complete, the body is buf[*body_off .. *body_off + *clen); 0: read more;
 * -EINVAL: malformed; -E2BIG: over LZ_CTL_MAX_REQUEST. Fuzzed by fuzz_ctl. */
int lz_ctl_parse_head(const char *buf, size_t len, char method[LZ_CTL_METHOD_MAX], char path[LZ_CTL_PATH_MAX],
		      size_t *body_off, size_t *clen);

/* A unix socket address for path; -ENAMETOOLONG if it does not fit sun_path. */
struct sockaddr_un;
int lz_ctl_sockaddr(const char *path, struct sockaddr_un *sun);

/* Client side: one request, the response body malloc'd in *body. Returns the HTTP status or -errno. */
int lz_ctl_request(const char *sock_path, const char *method, const char *path, const char *body,
		   char **resp, size_t *resp_len);

#endif
