/* SPDX-License-Identifier: Apache-2.0 */
#define LZ_MOD "codec"
#include "lazyimg/codec.h"
#include "lazyimg/blake3.h"

#include <lz4.h>
#include <pthread.h>
#include <openssl/sha.h>
#include <zlib.h>
#include <zstd.h>

const char *lz_compressor_name(int comp)
{
	switch (comp) {
	case LZ_COMP_NONE:
		return "none";
	case LZ_COMP_LZ4:
		return "lz4_block";
	case LZ_COMP_GZIP:
		return "gzip";
	case LZ_COMP_ZSTD:
		return "zstd";
	}
	return "unknown";
}

const char *lz_digester_name(int dig)
{
	return dig == LZ_DIGEST_BLAKE3 ? "blake3" : dig == LZ_DIGEST_SHA256 ? "sha256" : "unknown";
}

/* One zstd context per thread: creating one per chunk costs more than decoding a small chunk. */
static _Thread_local ZSTD_DCtx *tl_zdctx;
static pthread_key_t zdctx_key;
static pthread_once_t zdctx_once = PTHREAD_ONCE_INIT;

static void zdctx_free(void *p)
{
	ZSTD_freeDCtx(p);
}

static void zdctx_init(void)
{
	pthread_key_create(&zdctx_key, zdctx_free);
}

static int gunzip_exact(const void *src, size_t slen, void *dst, size_t dlen)
{
	z_stream zs = { 0 };
	int ret, err = 0;

	if (slen > UINT32_MAX || dlen > UINT32_MAX)
		return -EFSCORRUPTED;
	if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK)
		return -ENOMEM;
	zs.next_in = (Bytef *)(uintptr_t)src;
	zs.avail_in = (uInt)slen;
	zs.next_out = dst;
	zs.avail_out = (uInt)dlen;
	ret = inflate(&zs, Z_FINISH);
	/* exactly one complete member that fills the output and nothing more */
	if (ret != Z_STREAM_END || zs.total_out != dlen || zs.avail_in != 0)
		err = -EFSCORRUPTED;
	inflateEnd(&zs);
	return err;
}

int lz_decompress(int comp, const void *src, size_t slen, void *dst, size_t dlen)
{
	switch (comp) {
	case LZ_COMP_NONE:
		if (slen != dlen)
			return -EFSCORRUPTED;
		memcpy(dst, src, dlen);
		return 0;
	case LZ_COMP_LZ4: {
		int n;

		if (slen > INT32_MAX || dlen > INT32_MAX)
			return -EFSCORRUPTED;
		n = LZ4_decompress_safe(src, dst, (int)slen, (int)dlen);
		return n == (int)dlen ? 0 : -EFSCORRUPTED;
	}
	case LZ_COMP_ZSTD: {
		size_t n;

		if (!tl_zdctx) {
			tl_zdctx = ZSTD_createDCtx();
			if (!tl_zdctx)
				return -ENOMEM;
			/* freed when the (FUSE worker) thread exits */
			pthread_once(&zdctx_once, zdctx_init);
			pthread_setspecific(zdctx_key, tl_zdctx);
		}
		n = ZSTD_decompressDCtx(tl_zdctx, dst, dlen, src, slen);
		if (ZSTD_isError(n) || n != dlen)
			return -EFSCORRUPTED;
		return 0;
	}
	case LZ_COMP_GZIP:
		return gunzip_exact(src, slen, dst, dlen);
	}
	return -EOPNOTSUPP;
}

ssize_t lz_compress(int comp, const void *src, size_t slen, void *dst, size_t dcap, int level)
{
	switch (comp) {
	case LZ_COMP_LZ4: {
		int n;

		if (slen > INT32_MAX || dcap > INT32_MAX)
			return -EINVAL;
		n = LZ4_compress_default(src, dst, (int)slen, (int)dcap);
		return n > 0 ? n : -ENOSPC;
	}
	case LZ_COMP_ZSTD: {
		size_t n = ZSTD_compress(dst, dcap, src, slen, level ? level : ZSTD_CLEVEL_DEFAULT);

		return ZSTD_isError(n) ? -ENOSPC : (ssize_t)n;
	}
	case LZ_COMP_GZIP: {
		z_stream zs = { 0 };
		ssize_t ret;

		if (slen > UINT32_MAX || dcap > UINT32_MAX)
			return -EINVAL;
		if (deflateInit2(&zs, level ? level : Z_DEFAULT_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS,
				 8, Z_DEFAULT_STRATEGY) != Z_OK)
			return -ENOMEM;
		zs.next_in = (Bytef *)(uintptr_t)src;
		zs.avail_in = (uInt)slen;
		zs.next_out = dst;
		zs.avail_out = (uInt)dcap;
		ret = deflate(&zs, Z_FINISH) == Z_STREAM_END ? (ssize_t)zs.total_out : -ENOSPC;
		deflateEnd(&zs);
		return ret;
	}
	}
	return -EOPNOTSUPP;
}

void lz_digest(int dig, const void *data, size_t len, uint8_t out[LZ_DIGEST_LEN])
{
	if (dig == LZ_DIGEST_SHA256)
		SHA256(data, len, out);
	else
		lz_blake3(data, len, out);
}
