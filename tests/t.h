/* SPDX-License-Identifier: Apache-2.0 */
/* t.h - tiny assertion helpers for the unit test programs (exit 0 pass, 1 fail). */
#ifndef LAZYIMG_T_H
#define LAZYIMG_T_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int t_failures;

#define T_FAIL(...) do { fprintf(stderr, "%s:%d: ", __FILE__, __LINE__); \
	fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); t_failures++; } while (0)
#define T_ASSERT(c) do { if (!(c)) T_FAIL("assertion failed: %s", #c); } while (0)
#define T_EQ_INT(a, b) do { long long _a = (long long)(a), _b = (long long)(b); \
	if (_a != _b) T_FAIL("%s == %s: got %lld, want %lld", #a, #b, _a, _b); } while (0)
#define T_EQ_U64(a, b) do { uint64_t _a = (uint64_t)(a), _b = (uint64_t)(b); \
	if (_a != _b) T_FAIL("%s == %s: got %" PRIu64 ", want %" PRIu64, #a, #b, _a, _b); } while (0)
#define T_EQ_STR(a, b) do { const char *_a = (a), *_b = (b); \
	if (!_a || !_b || strcmp(_a, _b)) T_FAIL("%s == %s: got \"%s\", want \"%s\"", #a, #b, \
		_a ? _a : "(null)", _b ? _b : "(null)"); } while (0)
#define T_DONE() do { if (t_failures) { fprintf(stderr, "%d check(s) failed\n", t_failures); \
	return 1; } printf("ok\n"); return 0; } while (0)

/* Fixture path: $LAZYIMG_FIXTURES/<rel>, default ../shared/fixtures. */
static inline const char *t_fixture(const char *rel)
{
	static char buf[8][4096];
	static int i;
	const char *root = getenv("LAZYIMG_FIXTURES");
	char *b = buf[i++ % 8];

	snprintf(b, sizeof(buf[0]), "%s/%s", root ? root : "../shared/fixtures", rel);
	return b;
}

#endif
