/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_snaptoc.c - the header line of an eStargz TOC kept in the cache dir
 * (snapshotter/esgz.c). A successful parse must describe a TOC inside the
 * blob, a known kind, and a header that ends with its newline within
 * SNAP_TOC_HEADER_MAX bytes; re-encoding it as toc_save() does must give the
 * same facts back.
 */
#include "lazyimg/estargz.h"
#include "../../snapshotter/snap_int.h"
#include "fuzz.h"

#include <string.h>

#define FZ_BLOB_SIZE (1ull << 32)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct estargz_footer f, g;
	char want[72], want2[72], line[SNAP_TOC_HEADER_MAX + 64];
	size_t hl, hl2;
	int n;

	if (snap_toc_header_parse((const char *)data, size, FZ_BLOB_SIZE, &f, want, &hl))
		return 0;
	FZ_CHECK(hl >= 1 && hl <= size && hl <= SNAP_TOC_HEADER_MAX && data[hl - 1] == '\n');
	FZ_CHECK(f.kind >= ESTARGZ_GZIP && f.kind <= ESTARGZ_ZSTD_CHUNKED);
	FZ_CHECK(lz_range_ok(f.toc_offset, f.toc_size, FZ_BLOB_SIZE) && f.toc_usize <= ESTARGZ_MAX_TOC);
	FZ_CHECK(strlen(want) < sizeof(want));
	n = snprintf(line, sizeof(line), "lazyimg-toc 1 %u %llu %llu %llu %s\n", (unsigned)f.kind,
		     (unsigned long long)f.toc_offset, (unsigned long long)f.toc_size,
		     (unsigned long long)f.toc_usize, want);
	if (n > 0 && n <= SNAP_TOC_HEADER_MAX) {
		FZ_CHECK(!snap_toc_header_parse(line, (size_t)n, FZ_BLOB_SIZE, &g, want2, &hl2));
		FZ_CHECK(hl2 == (size_t)n && g.kind == f.kind && g.toc_offset == f.toc_offset &&
			 g.toc_size == f.toc_size && g.toc_usize == f.toc_usize && !strcmp(want, want2));
	}
	return 0;
}
