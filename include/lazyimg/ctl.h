/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ctl.h - a tiny HTTP/1.1 server on a unix socket (mode 0600) for a running
 * server's control API. One thread accepts; requests are handled one at a
 * time (they are small and rare). Headers and bodies are capped.
 */
#ifndef LAZYIMG_CTL_H
#define LAZYIMG_CTL_H

#include "lazyimg/lz.h"

#define LZ_CTL_MAX_REQUEST (64u << 10)

struct lz_ctl;

/* Fill *body (malloc'd) and *status for METHOD PATH; return 0 or -errno (500). */
typedef int (*lz_ctl_fn)(void *arg, const char *method, const char *path, const char *req_body,
			 size_t req_len, int *status, char **body);

int lz_ctl_start(const char *sock_path, lz_ctl_fn fn, void *arg, struct lz_ctl **out);
void lz_ctl_stop(struct lz_ctl *c);
/* Client side: one request, the response body malloc'd in *body. Returns the HTTP status or -errno. */
int lz_ctl_request(const char *sock_path, const char *method, const char *path, const char *body,
		   char **resp, size_t *resp_len);

#endif
