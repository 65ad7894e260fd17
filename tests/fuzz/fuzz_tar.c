/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_tar.c - the streaming tar reader (plain, gzip, zstd; GNU and PAX
 * headers) on hostile input: every entry is read to its end, and the bytes
 * read must equal the size its header claims.
 */
#include "fuzz.h"
#include "lazyimg/tar.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct lz_tar *t;
	struct lz_tar_entry e;
	uint8_t buf[8192];
	int ret, entries = 0;

	lz_log_level = -1;
	if (lz_tar_open_mem(data, size, &t))
		return 0;
	while ((ret = lz_tar_next(t, &e)) == 1 && entries++ < 100000) {
		uint64_t got = 0;
		ssize_t n;

		FZ_CHECK(e.path && strlen(e.path) <= LZ_TAR_MAX_PATH);
		FZ_CHECK(e.size <= LZ_TAR_MAX_SIZE && e.nxattrs <= LZ_TAR_MAX_XATTRS);
		FZ_CHECK(e.type != '0' || e.type == '0');
		while ((n = lz_tar_read(t, buf, sizeof(buf))) > 0)
			got += (uint64_t)n;
		FZ_ERRNO_OK(n);
		if (n == 0)
			FZ_CHECK(got == e.size);
		else
			break;
	}
	FZ_ERRNO_OK(ret);
	lz_tar_close(t);
	return 0;
}
