/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_estargz_footer.c - the footer parser and TOC decoder on whole blobs.
 * The input is a blob: its tail is parsed as a footer (eStargz, legacy,
 * zstd:chunked, external TOC) with the blob's size, and with other tail
 * lengths and blob sizes; a footer that parses must describe a TOC range
 * inside the blob that ends where the footer begins (gzip kinds). The TOC
 * member is then decoded and, if that works, opened over the blob itself
 * and checked with fuzz_estargz_toc.c's whole-image properties, reads
 * included (the data path: fetch, inflate one member or frame, verify).
 */
#define ES_FUZZ_NO_MAIN
#include "fuzz_estargz_toc.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct estargz_footer f;
	size_t tl = LZ_MIN(size, (size_t)ESTARGZ_TAIL_MAX);
	char *json = NULL;
	size_t jlen = 0;
	int ret;

	lz_log_level = -1;
	/* the same tail with shorter views and other blob sizes: never a crash */
	{
		static const size_t views[] = { 0, 1, 40, 46, 47, 48, 50, 51, 52, 63 };

		for (size_t i = 0; i < LZ_ARRAY_SIZE(views); i++) {
			if (views[i] > size)
				continue;
			FZ_ERRNO_OK(estargz_footer_parse(data + size - views[i], views[i], size, &f));
			FZ_ERRNO_OK(estargz_footer_parse(data + size - views[i], views[i], (uint64_t)size << 20, &f));
		}
	}
	ret = estargz_footer_parse(data + size - tl, tl, size, &f);
	FZ_ERRNO_OK(ret);
	if (ret)
		return 0;
	FZ_CHECK(f.kind == ESTARGZ_GZIP || f.kind == ESTARGZ_LEGACY || f.kind == ESTARGZ_ZSTD_CHUNKED);
	FZ_CHECK(f.toc_offset > 0 && f.toc_size > 0 && f.toc_size <= ESTARGZ_MAX_TOC);
	FZ_CHECK(lz_range_ok(f.toc_offset, f.toc_size, size - f.footer_size));
	if (f.kind != ESTARGZ_ZSTD_CHUNKED)
		FZ_CHECK(f.toc_offset + f.toc_size + f.footer_size == size);
	else
		FZ_CHECK(f.toc_usize > 0 && f.toc_usize <= ESTARGZ_MAX_TOC && f.toc_offset >= 8);
	ret = estargz_toc_decode(&f, data + f.toc_offset, (size_t)f.toc_size, &json, &jlen);
	FZ_ERRNO_OK(ret);
	if (!ret) {
		FZ_CHECK(json && json[jlen] == 0 && jlen <= ESTARGZ_MAX_TOC);
		if (f.kind == ESTARGZ_ZSTD_CHUNKED)
			FZ_CHECK(jlen == f.toc_usize);
		fz_json_all(json, jlen, data, size, f.toc_offset, f.kind);
	}
	free(json);
	return 0;
}
