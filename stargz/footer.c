/* SPDX-License-Identifier: Apache-2.0 */
/* footer.c - eStargz / legacy stargz / zstd:chunked footers and TOC decoding. */
#define LZ_MOD "estargz"
#include "estargz_int.h"
#include "lazyimg/tar.h"

#include <stdlib.h>
#include <zlib.h>
#include <zstd.h>

#define ES_TOC_NAME "stargz.index.json"
/* tar framing around the TOC JSON: headers (PAX allowed), padding, end blocks */
#define ES_TOC_TAR_SLACK (1u << 20)

static const uint8_t zstd_skippable[4] = { 0x50, 0x2a, 0x4d, 0x18 };
static const uint8_t zstd_chunked_magic[8] = { 'G', 'n', 'U', 'l', 'I', 'n', 'U', 'x' };

static bool gzip_fextra_header(const uint8_t *b)
{
	return b[0] == 0x1f && b[1] == 0x8b && b[2] == 0x08 && (b[3] & 0x04);
}

/* 16 hex digits (either case), as Go's ParseInt(s, 16, 64) reads the offset */
static int parse_hex16(const uint8_t *p, uint64_t *out)
{
	uint64_t v = 0;

	for (int i = 0; i < 16; i++) {
		uint8_t c = p[i];
		int d;

		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			d = c - 'A' + 10;
		else
			return -EFSCORRUPTED;
		v = v << 4 | (uint64_t)d;
	}
	if (v > INT64_MAX)
		return -EFSCORRUPTED;
	*out = v;
	return 0;
}

static int gzip_footer(const uint8_t *hex, uint32_t fsize, enum estargz_kind kind, uint64_t blob_size,
		       struct estargz_footer *f)
{
	const char *what = kind == ESTARGZ_GZIP ? "eStargz" : "legacy stargz";
	uint64_t off;

	if (parse_hex16(hex, &off)) {
		lz_err("%s footer: TOC offset \"%.16s\" is not a 16-digit hex number below 2^63", what, (const char *)hex);
		return -EFSCORRUPTED;
	}
	if (blob_size < fsize || off == 0 || off >= blob_size - fsize) {
		lz_err("%s footer: TOC offset %llu outside the blob (%llu bytes, %u-byte footer)", what,
		       (unsigned long long)off, (unsigned long long)blob_size, fsize);
		return -EFSCORRUPTED;
	}
	if (blob_size - fsize - off > ESTARGZ_MAX_TOC) {
		lz_err("%s footer: TOC member of %llu bytes exceeds the %u MiB cap", what,
		       (unsigned long long)(blob_size - fsize - off), ESTARGZ_MAX_TOC >> 20);
		return -EFSCORRUPTED;
	}
	memset(f, 0, sizeof(*f));
	f->kind = kind;
	f->toc_offset = off;
	f->toc_size = blob_size - fsize - off;
	f->footer_size = fsize;
	return 0;
}

static int zstd_footer(const uint8_t *b, uint64_t blob_size, struct estargz_footer *f)
{
	const uint8_t *p = b + 8;
	uint64_t off = lz_get_le64(p), csize = lz_get_le64(p + 8), usize = lz_get_le64(p + 16);
	uint64_t type = lz_get_le64(p + 24), end;

	if (memcmp(b, zstd_skippable, 4) || lz_get_le32(b + 4) != 40) {
		lz_err("zstd:chunked footer: not inside a 40-byte zstd skippable frame");
		return -EFSCORRUPTED;
	}
	if (type != 1) {
		lz_err("zstd:chunked footer: manifest type %llu, expected 1 (CRFS TOC)", (unsigned long long)type);
		return -EFSCORRUPTED;
	}
	if (csize == 0 || csize > ESTARGZ_MAX_TOC || usize == 0 || usize > ESTARGZ_MAX_TOC) {
		lz_err("zstd:chunked footer: TOC of %llu compressed / %llu uncompressed bytes (must be 1..%u MiB)",
		       (unsigned long long)csize, (unsigned long long)usize, ESTARGZ_MAX_TOC >> 20);
		return -EFSCORRUPTED;
	}
	/* the TOC sits in its own skippable frame (8-byte header) before the footer frame */
	if (off < 8 || __builtin_add_overflow(off, csize, &end) || blob_size < ESTARGZ_ZSTD_FOOTER_SIZE ||
	    end > blob_size - ESTARGZ_ZSTD_FOOTER_SIZE) {
		lz_err("zstd:chunked footer: TOC at %llu (+%llu) outside the blob (%llu bytes)",
		       (unsigned long long)off, (unsigned long long)csize, (unsigned long long)blob_size);
		return -EFSCORRUPTED;
	}
	memset(f, 0, sizeof(*f));
	f->kind = ESTARGZ_ZSTD_CHUNKED;
	f->toc_offset = off;
	f->toc_size = csize;
	f->toc_usize = usize;
	f->footer_size = ESTARGZ_ZSTD_FOOTER_SIZE;
	return 0;
}

int estargz_footer_parse(const void *tail, size_t len, uint64_t blob_size, struct estargz_footer *f)
{
	const uint8_t *t = tail;

	if (!tail || len > blob_size)
		return -EINVAL;
	/* eStargz: all 51 bytes, with the RFC 1952 'SG' subfield */
	if (len >= ESTARGZ_FOOTER_SIZE) {
		const uint8_t *b = t + len - ESTARGZ_FOOTER_SIZE;

		if (gzip_fextra_header(b) && lz_get_le16(b + 10) == 26 && b[12] == 'S' && b[13] == 'G' &&
		    lz_get_le16(b + 14) == 22 && !memcmp(b + 32, "STARGZ", 6))
			return gzip_footer(b + 16, ESTARGZ_FOOTER_SIZE, ESTARGZ_GZIP, blob_size, f);
	}
	/* external TOC: the TOC lives in another image */
	if (len >= 46) {
		const uint8_t *b = t + len - 46;

		if (gzip_fextra_header(b) && lz_get_le16(b + 10) == 21 && b[12] == 'S' && b[13] == 'G' &&
		    !memcmp(b + 16, "STARGZEXTERNALTOC", 17)) {
			lz_err("eStargz footer: the TOC is external (in a separate TOC image); not supported");
			return -EOPNOTSUPP;
		}
	}
	/* legacy CRFS: the last 47 bytes, raw Extra field */
	if (len >= ESTARGZ_LEGACY_FOOTER_SIZE) {
		const uint8_t *b = t + len - ESTARGZ_LEGACY_FOOTER_SIZE;

		if (gzip_fextra_header(b) && lz_get_le16(b + 10) == 22 && !memcmp(b + 28, "STARGZ", 6))
			return gzip_footer(b + 12, ESTARGZ_LEGACY_FOOTER_SIZE, ESTARGZ_LEGACY, blob_size, f);
	}
	/* stargz-snapshotter's zstd:chunked: a 40-byte payload in a skippable frame */
	if (len >= ESTARGZ_ZSTD_FOOTER_SIZE && !memcmp(t + len - 8, zstd_chunked_magic, 8))
		return zstd_footer(t + len - ESTARGZ_ZSTD_FOOTER_SIZE, blob_size, f);
	return -EMEDIUMTYPE;
}

/* Inflate exactly one gzip member of src into a malloc'd buffer of at most max bytes. */
static int gunzip_member(const uint8_t *src, size_t len, size_t max, uint8_t **out, size_t *outlen)
{
	z_stream zs = { 0 };
	uint8_t *buf = NULL;
	size_t cap = 0;
	int ret = 0, zr;

	if (len > UINT32_MAX)
		return -EFBIG;
	if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK)
		return -ENOMEM;
	zs.next_in = (Bytef *)(uintptr_t)src;
	zs.avail_in = (uInt)len;
	do {
		if (zs.total_out == cap) {
			size_t ncap = cap ? cap * 2 : LZ_MAX(len * 4, (size_t)65536);
			uint8_t *n;

			if (cap >= max) {
				lz_err("TOC: the gzip member inflates to more than %zu bytes", max);
				ret = -EFBIG;
				break;
			}
			if (ncap > max)
				ncap = max;
			n = lz_realloc(buf, ncap);
			if (!n) {
				ret = -ENOMEM;
				break;
			}
			buf = n;
			cap = ncap;
		}
		zs.next_out = buf + zs.total_out;
		zs.avail_out = (uInt)(cap - zs.total_out);
		zr = inflate(&zs, Z_NO_FLUSH);
		if (zr == Z_BUF_ERROR && zs.avail_in == 0) {
			lz_err("TOC: the gzip member is truncated (%zu bytes in, %lu out)", len, zs.total_out);
			ret = -EFSCORRUPTED;
			break;
		}
		if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR) {
			lz_err("TOC: not a valid gzip member: %s", zs.msg ? zs.msg : "inflate failed");
			ret = -EFSCORRUPTED;
			break;
		}
		if (zr == Z_STREAM_END)
			break;
	} while (1);
	if (!ret) {
		*out = buf;
		*outlen = zs.total_out;
		buf = NULL;
	}
	inflateEnd(&zs);
	free(buf);
	return ret;
}

static int toc_from_tar(const uint8_t *tar, size_t len, char **json, size_t *json_len)
{
	struct lz_tar *t = NULL;
	struct lz_tar_entry e;
	char *buf = NULL;
	size_t done = 0;
	int ret;

	ret = lz_tar_open_mem(tar, len, &t);
	if (ret)
		return ret;
	ret = lz_tar_next(t, &e);
	if (ret <= 0) {
		if (ret == 0)
			lz_err("TOC: the tar stream in the TOC member is empty");
		ret = ret ? ret : -EFSCORRUPTED;
		goto out;
	}
	if (strcmp(e.path, ES_TOC_NAME) || e.type != '0') {
		lz_err("TOC: first tar entry is \"%.200s\" (type '%c'), expected the regular file " ES_TOC_NAME,
		       e.path, e.type >= 32 && e.type < 127 ? e.type : '?');
		ret = -EFSCORRUPTED;
		goto out;
	}
	if (e.size > ESTARGZ_MAX_TOC) {
		lz_err("TOC: " ES_TOC_NAME " of %llu bytes exceeds the %u MiB cap", (unsigned long long)e.size,
		       ESTARGZ_MAX_TOC >> 20);
		ret = -EFBIG;
		goto out;
	}
	buf = lz_malloc(e.size + 1);
	if (!buf) {
		ret = -ENOMEM;
		goto out;
	}
	while (done < e.size) {
		ssize_t n = lz_tar_read(t, buf + done, e.size - done);

		if (n <= 0) {
			if (n == 0)
				lz_err("TOC: " ES_TOC_NAME " ends after %zu of %llu bytes", done,
				       (unsigned long long)e.size);
			ret = n ? (int)n : -EFSCORRUPTED;
			goto out;
		}
		done += (size_t)n;
	}
	buf[done] = 0;
	*json = buf;
	*json_len = done;
	buf = NULL;
	ret = 0;
out:
	free(buf);
	lz_tar_close(t);
	return ret;
}

static int toc_zstd(const struct estargz_footer *f, const uint8_t *src, size_t len, char **json,
		    size_t *json_len)
{
	ZSTD_DCtx *d = NULL;
	ZSTD_inBuffer in = { src, len, 0 };
	ZSTD_outBuffer ob;
	char *buf;
	size_t r;
	int ret = 0;

	if (f->toc_usize == 0 || f->toc_usize > ESTARGZ_MAX_TOC)
		return -EFSCORRUPTED;
	buf = lz_malloc(f->toc_usize + 1);
	d = ZSTD_createDCtx();
	if (!buf || !d) {
		ret = -ENOMEM;
		goto out;
	}
	ob.dst = buf;
	ob.size = f->toc_usize;
	ob.pos = 0;
	/* one frame: the TOC; its size must be what the footer promised */
	do {
		r = ZSTD_decompressStream(d, &ob, &in);
		if (ZSTD_isError(r)) {
			lz_err("TOC: zstd frame does not decode: %s", ZSTD_getErrorName(r));
			ret = -EFSCORRUPTED;
			goto out;
		}
		if (r == 0)
			break;
		if (ob.pos == ob.size) {
			uint8_t extra;
			ZSTD_outBuffer ob2 = { &extra, 1, 0 };

			r = ZSTD_decompressStream(d, &ob2, &in);
			if (!ZSTD_isError(r) && ob2.pos == 0 && r == 0)
				break;
			lz_err("TOC: zstd TOC is longer than the %llu bytes the footer gives",
			       (unsigned long long)f->toc_usize);
			ret = -EFSCORRUPTED;
			goto out;
		}
		if (in.pos == in.size) {
			lz_err("TOC: zstd TOC frame is truncated");
			ret = -EFSCORRUPTED;
			goto out;
		}
	} while (1);
	if (ob.pos != f->toc_usize) {
		lz_err("TOC: zstd TOC is %zu bytes, the footer says %llu", ob.pos,
		       (unsigned long long)f->toc_usize);
		ret = -EFSCORRUPTED;
		goto out;
	}
	buf[ob.pos] = 0;
	*json = buf;
	*json_len = ob.pos;
	buf = NULL;
out:
	ZSTD_freeDCtx(d);
	free(buf);
	return ret;
}

int estargz_toc_decode(const struct estargz_footer *f, const void *member, size_t len, char **json,
		       size_t *json_len)
{
	uint8_t *tar = NULL;
	size_t tarlen = 0;
	int ret;

	if (!f || !member || !json || !json_len)
		return -EINVAL;
	if (len > ESTARGZ_MAX_TOC) {
		lz_err("TOC: member of %zu bytes exceeds the %u MiB cap", len, ESTARGZ_MAX_TOC >> 20);
		return -EFBIG;
	}
	if (f->kind == ESTARGZ_ZSTD_CHUNKED)
		return toc_zstd(f, member, len, json, json_len);
	if (f->kind != ESTARGZ_GZIP && f->kind != ESTARGZ_LEGACY)
		return -EINVAL;
	ret = gunzip_member(member, len, ESTARGZ_MAX_TOC + ES_TOC_TAR_SLACK, &tar, &tarlen);
	if (ret)
		return ret;
	ret = toc_from_tar(tar, tarlen, json, json_len);
	free(tar);
	return ret;
}

int estargz_toc_digest(const char *json, size_t len, char out[72])
{
	uint8_t d[LZ_DIGEST_LEN];

	lz_digest(LZ_DIGEST_SHA256, json, len, d);
	memcpy(out, "sha256:", 7);
	lz_hex(d, sizeof(d), out + 7);
	return 0;
}
