/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_ctl.c - the request head parser of the control sockets (common/ctl.c,
 * lz_ctl_parse_head), the one place both `lazyimg serve` and a standalone
 * mount's stats socket read untrusted bytes. The input is the bytes read so
 * far. A complete parse must: end its head at CRLF CRLF, keep the body inside
 * the input and the cap, give an upper-case method and a path of visible ASCII
 * starting with '/', and be stable: the same answer for just the request
 * (trailing bytes ignored) and "read more" for any shorter prefix of its body.
 */
#include "lazyimg/ctl.h"
#include "fuzz.h"

#include <string.h>

static int parse(const char *buf, size_t len, char *method, char *path, size_t *off, size_t *clen)
{
	int ret = lz_ctl_parse_head(buf, len, method, path, off, clen);

	FZ_CHECK(ret == 1 || ret == 0 || ret == -EINVAL || ret == -E2BIG);
	return ret;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char method[LZ_CTL_METHOD_MAX], path[LZ_CTL_PATH_MAX], m2[LZ_CTL_METHOD_MAX], p2[LZ_CTL_PATH_MAX];
	size_t off = 0, clen = 0, off2 = 0, clen2 = 0, end;
	char *buf;
	int ret;

	/* the server never holds more than the cap */
	if (size > LZ_CTL_MAX_REQUEST)
		return 0;
	buf = malloc(size + 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	buf[size] = 0;
	ret = parse(buf, size, method, path, &off, &clen);
	if (ret != 1)
		goto out;
	end = off + clen;
	FZ_CHECK(off >= 4 && end <= size && end <= LZ_CTL_MAX_REQUEST);
	FZ_CHECK(!memcmp(buf + off - 4, "\r\n\r\n", 4));
	FZ_CHECK(method[0] && strlen(method) < sizeof(method) && strspn(method, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") == strlen(method));
	FZ_CHECK(path[0] == '/' && strlen(path) < sizeof(path));
	for (const char *p = path; *p; p++)
		FZ_CHECK((unsigned char)*p > ' ' && (unsigned char)*p < 0x7f);
	FZ_CHECK(!memcmp(buf, method, strlen(method)) && buf[strlen(method)] == ' ');
	FZ_CHECK(!memcmp(buf + strlen(method) + 1, path, strlen(path)));
	/* what follows the request does not change it */
	FZ_CHECK(parse(buf, end, m2, p2, &off2, &clen2) == 1);
	FZ_CHECK(off2 == off && clen2 == clen && !strcmp(m2, method) && !strcmp(p2, path));
	/* a body not yet all there means "read more" */
	if (clen)
		FZ_CHECK(parse(buf, end - 1, m2, p2, &off2, &clen2) == 0);
out:
	free(buf);
	return 0;
}
