/* SPDX-License-Identifier: Apache-2.0 */
/* pread.c - a whole positioned read, for blobs and state files read in place. */
#define LZ_MOD "lz"
#include "lazyimg/lz.h"

#include <unistd.h>

int lz_pread_full(int fd, void *buf, size_t len, uint64_t off, size_t *done)
{
	size_t got = 0;
	int ret = 0;

	while (got < len) {
		ssize_t n = pread(fd, (uint8_t *)buf + got, len - got, (off_t)(off + got));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = -errno;
			break;
		}
		if (n == 0) {
			/* each caller words a short file its own way (truncated blob, shrunk state) */
			ret = -ENODATA;
			break;
		}
		got += (size_t)n;
	}
	if (done)
		*done = got;
	return ret;
}
