/* SPDX-License-Identifier: Apache-2.0 */
/* codec.h - chunk decompressors and digesters shared by every image format. */
#ifndef LAZYIMG_CODEC_H
#define LAZYIMG_CODEC_H

#include "lazyimg/lz.h"

enum lz_compressor { LZ_COMP_NONE = 0, LZ_COMP_LZ4 = 1, LZ_COMP_GZIP = 2, LZ_COMP_ZSTD = 3 };
enum lz_digester { LZ_DIGEST_BLAKE3 = 0, LZ_DIGEST_SHA256 = 1 };

#define LZ_DIGEST_LEN 32

const char *lz_compressor_name(int comp);
const char *lz_digester_name(int dig);

/*
 * Decompress exactly `dlen` bytes from `src` (exactly `slen` bytes) into dst.
 * Returns 0, -EFSCORRUPTED when the stream is malformed or does not produce
 * exactly dlen bytes, -EOPNOTSUPP for an unknown compressor. Thread-safe:
 * decoder contexts are per thread.
 */
int lz_decompress(int comp, const void *src, size_t slen, void *dst, size_t dlen);

/*
 * Compress src into dst (capacity dcap). Returns the compressed length, or
 * -ENOSPC when the output would not be smaller than dcap (callers store the
 * data raw then).
 */
ssize_t lz_compress(int comp, const void *src, size_t slen, void *dst, size_t dcap, int level);

void lz_digest(int dig, const void *data, size_t len, uint8_t out[LZ_DIGEST_LEN]);

#endif
