/* SPDX-License-Identifier: Apache-2.0 */
#define LZ_MOD "log"
#include "lazyimg/lz.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int lz_log_level = LZ_LOG_WARN;
static int log_fd = 2;

void lz_log_set_fd(int fd)
{
	log_fd = fd;
}

void lz_log(int level, const char *mod, const char *fmt, ...)
{
	static const char *const names[] = { "error", "warn", "info", "debug" };
	char line[1024];
	struct timespec ts;
	struct tm tm;
	va_list ap;
	int n, m;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(line, sizeof(line), "%02d:%02d:%02d.%03ld lazyimg %s: %s: ", tm.tm_hour,
		     tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
		     names[level < 0 ? 0 : level > 3 ? 3 : level], mod);
	if (n < 0)
		return;
	va_start(ap, fmt);
	m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		return;
	n += m;
	if ((size_t)n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	/* one write per line so concurrent workers never interleave mid-line */
	if (write(log_fd, line, (size_t)n) < 0)
		return;
}

bool lz_ratelimit(_Atomic long *last, long interval_s)
{
	struct timespec ts;
	long prev;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	prev = atomic_load(last);
	if (prev && ts.tv_sec - prev < interval_s)
		return false;
	return atomic_compare_exchange_strong(last, &prev, ts.tv_sec ? ts.tv_sec : 1);
}
