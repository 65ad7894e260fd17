/* SPDX-License-Identifier: Apache-2.0 */
#define LZ_MOD "util"
#include "lazyimg/lz.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

void lz_hex(const uint8_t *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * len] = '\0';
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int lz_unhex(const char *in, size_t inlen, uint8_t *out, size_t len)
{
	if (inlen != 2 * len)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		int hi = hexval(in[2 * i]), lo = hexval(in[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -EINVAL;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

const char *lz_strerror(int neg_errno)
{
	switch (-neg_errno) {
	case EFSCORRUPTED:
		return "corrupt image data";
	case EBADMSG:
		return "digest mismatch";
	case EOPNOTSUPP:
		return "unsupported feature";
	default:
		return strerror(-neg_errno);
	}
}

static _Atomic long alloc_count;
static long alloc_fail_at = -1;

void lz_fail_alloc_at(long n)
{
	atomic_store(&alloc_count, 0);
	alloc_fail_at = n > 0 ? n : -1;
}

static bool alloc_should_fail(void)
{
	if (alloc_fail_at < 0)
		return false;
	return atomic_fetch_add(&alloc_count, 1) + 1 == alloc_fail_at;
}

void *lz_malloc(size_t n)
{
	return alloc_should_fail() ? NULL : malloc(n ? n : 1);
}

void *lz_calloc(size_t nmemb, size_t size)
{
	return alloc_should_fail() ? NULL : calloc(nmemb ? nmemb : 1, size ? size : 1);
}

void *lz_realloc(void *p, size_t n)
{
	return alloc_should_fail() ? NULL : realloc(p, n ? n : 1);
}

int lz_scratch_reserve(uint8_t **buf, size_t *cap, size_t need)
{
	uint8_t *n;

	if (*cap >= need)
		return 0;
	n = lz_malloc(need);
	if (!n)
		return -ENOMEM;
	free(*buf);
	*buf = n;
	*cap = need;
	return 0;
}
