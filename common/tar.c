/* SPDX-License-Identifier: Apache-2.0 */
#define LZ_MOD "tar"
#include "lazyimg/tar.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

enum { SRC_PLAIN, SRC_GZIP, SRC_ZSTD };

#define INBUF 65536

struct lz_tar {
	int fd;
	const uint8_t *mem;
	size_t mem_len, mem_pos;
	int kind;
	uint8_t *in;          /* compressed input buffer */
	size_t in_len, in_pos;
	bool in_eof;
	uint64_t consumed;
	z_stream zs;
	bool zs_init, gz_end;
	ZSTD_DStream *zds;
	bool zs_end;

	uint64_t left;        /* data bytes left in the current entry */
	uint64_t pad;         /* padding after them */
	struct lz_tar_entry cur;
	char *long_path, *long_link;
	/* PAX state for the next entry */
	char *pax_path, *pax_link;
	bool pax_has_size, pax_has_uid, pax_has_gid, pax_has_mtime;
	uint64_t pax_size;
	uint32_t pax_uid, pax_gid;
	int64_t pax_mtime;
	uint32_t pax_mtime_nsec;
	struct lz_tar_xattr *pax_x;
	size_t pax_nx;
	bool eof;
};

/* raw (compressed) input */
static ssize_t raw_read(struct lz_tar *t, uint8_t *buf, size_t len)
{
	if (t->mem) {
		size_t n = LZ_MIN(len, t->mem_len - t->mem_pos);

		memcpy(buf, t->mem + t->mem_pos, n);
		t->mem_pos += n;
		return (ssize_t)n;
	}
	for (;;) {
		ssize_t n = read(t->fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		return n < 0 ? -errno : n;
	}
}

static int fill_in(struct lz_tar *t)
{
	ssize_t n;

	if (t->in_pos < t->in_len || t->in_eof)
		return 0;
	n = raw_read(t, t->in, INBUF);
	if (n < 0)
		return (int)n;
	t->in_len = (size_t)n;
	t->in_pos = 0;
	t->consumed += (uint64_t)n;
	if (n == 0)
		t->in_eof = true;
	return 0;
}

/* decompressed stream: reads up to len, returns 0 only at the end */
static ssize_t stream_read(struct lz_tar *t, uint8_t *buf, size_t len)
{
	int ret;

	if (t->kind == SRC_PLAIN) {
		if (t->in_pos < t->in_len) {
			size_t n = LZ_MIN(len, t->in_len - t->in_pos);

			memcpy(buf, t->in + t->in_pos, n);
			t->in_pos += n;
			return (ssize_t)n;
		}
		if (t->mem)
			return raw_read(t, buf, len);
		{
			ssize_t n = raw_read(t, buf, len);

			if (n > 0)
				t->consumed += (uint64_t)n;
			return n;
		}
	}
	for (;;) {
		ret = fill_in(t);
		if (ret)
			return ret;
		if (t->kind == SRC_GZIP) {
			int zr;
			size_t before;

			if (t->gz_end) {
				/* another gzip member may follow (concatenated streams) */
				if (t->in_pos == t->in_len && t->in_eof)
					return 0;
				if (t->in_pos == t->in_len)
					continue;
				inflateReset(&t->zs);
				t->gz_end = false;
			}
			t->zs.next_in = t->in + t->in_pos;
			t->zs.avail_in = (uInt)(t->in_len - t->in_pos);
			t->zs.next_out = buf;
			t->zs.avail_out = (uInt)LZ_MIN(len, (size_t)UINT32_MAX);
			before = t->zs.avail_out;
			zr = inflate(&t->zs, Z_NO_FLUSH);
			t->in_pos = t->in_len - t->zs.avail_in;
			if (zr == Z_STREAM_END)
				t->gz_end = true;
			else if (zr != Z_OK && zr != Z_BUF_ERROR) {
				lz_err("gzip stream is corrupt (%s)", t->zs.msg ? t->zs.msg : "inflate error");
				return -EFSCORRUPTED;
			}
			if (before - t->zs.avail_out)
				return (ssize_t)(before - t->zs.avail_out);
			if (t->in_eof && t->in_pos == t->in_len) {
				if (t->gz_end)
					return 0;
				lz_err("gzip stream is truncated");
				return -EFSCORRUPTED;
			}
		} else {
			ZSTD_inBuffer ib = { t->in, t->in_len, t->in_pos };
			ZSTD_outBuffer ob = { buf, len, 0 };
			size_t r;

			if (t->in_pos == t->in_len && t->in_eof) {
				if (t->zs_end)
					return 0;
				lz_err("zstd stream is truncated");
				return -EFSCORRUPTED;
			}
			r = ZSTD_decompressStream(t->zds, &ob, &ib);
			t->in_pos = ib.pos;
			if (ZSTD_isError(r)) {
				lz_err("zstd stream is corrupt (%s)", ZSTD_getErrorName(r));
				return -EFSCORRUPTED;
			}
			t->zs_end = r == 0;
			if (ob.pos)
				return (ssize_t)ob.pos;
		}
	}
}

/* read exactly len bytes or fail: a short archive is corrupt */
static int read_full(struct lz_tar *t, void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = stream_read(t, (uint8_t *)buf + done, len - done);

		if (n < 0)
			return (int)n;
		if (n == 0) {
			if (!done)
				return -ENODATA;
			/* the stream ended inside a block: the archive is cut short */
			lz_err("tar archive is truncated (%zu of %zu bytes of a block)", done, len);
			return -EFSCORRUPTED;
		}
		done += (size_t)n;
	}
	return 0;
}

/*
 * After the end-of-archive blocks, read the compressed stream to its end so
 * that its own integrity check (gzip CRC32 and length, zstd checksum) runs:
 * corruption there must not pass silently.
 */
static int drain(struct lz_tar *t)
{
	uint8_t tmp[16384];
	uint64_t total = 0;

	if (t->kind == SRC_PLAIN)
		return 0;
	for (;;) {
		ssize_t n = stream_read(t, tmp, sizeof(tmp));

		if (n < 0)
			return (int)n;
		if (n == 0)
			return 0;
		total += (uint64_t)n;
		if (total > (1ull << 30)) {
			lz_err("more than 1 GiB of data after the end of the tar archive");
			return -EFSCORRUPTED;
		}
	}
}

static int skip(struct lz_tar *t, uint64_t n)
{
	uint8_t tmp[8192];

	while (n) {
		size_t k = (size_t)LZ_MIN(n, (uint64_t)sizeof(tmp));
		int ret = read_full(t, tmp, k);

		if (ret)
			return ret == -ENODATA ? -EFSCORRUPTED : ret;
		n -= k;
	}
	return 0;
}

static int open_common(struct lz_tar *t)
{
	int ret;

	t->in = lz_malloc(INBUF);
	if (!t->in)
		return -ENOMEM;
	ret = fill_in(t);
	if (ret)
		return ret;
	/* need a few bytes of magic; a tiny plain tar is impossible (>= 1024 bytes) */
	if (t->in_len >= 2 && t->in[0] == 0x1f && t->in[1] == 0x8b) {
		t->kind = SRC_GZIP;
		if (inflateInit2(&t->zs, 16 + MAX_WBITS) != Z_OK)
			return -ENOMEM;
		t->zs_init = true;
	} else if (t->in_len >= 4 && lz_get_le32(t->in) == 0xFD2FB528u) {
		t->kind = SRC_ZSTD;
		t->zds = ZSTD_createDStream();
		if (!t->zds)
			return -ENOMEM;
		ZSTD_initDStream(t->zds);
	} else {
		t->kind = SRC_PLAIN;
	}
	return 0;
}

int lz_tar_open_fd(int fd, struct lz_tar **out)
{
	struct lz_tar *t = lz_calloc(1, sizeof(*t));
	int ret;

	if (!t)
		return -ENOMEM;
	t->fd = fd;
	ret = open_common(t);
	if (ret) {
		lz_tar_close(t);
		return ret;
	}
	*out = t;
	return 0;
}

int lz_tar_open_mem(const void *buf, size_t len, struct lz_tar **out)
{
	struct lz_tar *t = lz_calloc(1, sizeof(*t));
	int ret;

	if (!t)
		return -ENOMEM;
	t->fd = -1;
	t->mem = buf;
	t->mem_len = len;
	ret = open_common(t);
	if (ret) {
		lz_tar_close(t);
		return ret;
	}
	*out = t;
	return 0;
}

static void free_xattrs(struct lz_tar_xattr *x, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(x[i].name);
		free(x[i].value);
	}
	free(x);
}

static void clear_entry(struct lz_tar *t)
{
	free(t->cur.path);
	free(t->cur.linkname);
	free_xattrs(t->cur.xattrs, t->cur.nxattrs);
	memset(&t->cur, 0, sizeof(t->cur));
}

static void clear_pax(struct lz_tar *t)
{
	free(t->pax_path);
	free(t->pax_link);
	free(t->long_path);
	free(t->long_link);
	free_xattrs(t->pax_x, t->pax_nx);
	t->pax_path = t->pax_link = t->long_path = t->long_link = NULL;
	t->pax_x = NULL;
	t->pax_nx = 0;
	t->pax_has_size = t->pax_has_uid = t->pax_has_gid = t->pax_has_mtime = false;
}

void lz_tar_close(struct lz_tar *t)
{
	if (!t)
		return;
	clear_entry(t);
	clear_pax(t);
	if (t->zs_init)
		inflateEnd(&t->zs);
	ZSTD_freeDStream(t->zds);
	free(t->in);
	free(t);
}

uint64_t lz_tar_consumed(const struct lz_tar *t)
{
	return t->mem ? t->mem_pos : t->consumed;
}

/* numeric field: octal, or GNU base-256 when the top bit is set */
static int num_field(const uint8_t *p, size_t n, uint64_t *out)
{
	uint64_t v = 0;
	size_t i = 0;

	if (p[0] & 0x80) {
		if (p[0] != 0x80)
			return -EFSCORRUPTED; /* negative values are never valid here */
		for (i = 1; i < n; i++) {
			if (v >> 56)
				return -EFSCORRUPTED;
			v = v << 8 | p[i];
		}
		*out = v;
		return 0;
	}
	while (i < n && p[i] == ' ')
		i++;
	for (; i < n && p[i] >= '0' && p[i] <= '7'; i++) {
		if (v >> 60)
			return -EFSCORRUPTED;
		v = v * 8 + (uint64_t)(p[i] - '0');
	}
	if (i < n && p[i] != 0 && p[i] != ' ')
		return -EFSCORRUPTED;
	*out = v;
	return 0;
}

/* mtime may be negative: GNU base-256 two's complement (0xff lead byte) */
static int num_field_signed(const uint8_t *p, size_t n, int64_t *out)
{
	if (p[0] == 0xff) {
		int64_t v = -1;

		for (size_t i = 1; i < n; i++) {
			if (v < INT64_MIN / 256)
				return -EFSCORRUPTED;
			v = (int64_t)((uint64_t)v << 8 | p[i]);
		}
		*out = v;
		return 0;
	} else {
		uint64_t u;
		int ret = num_field(p, n, &u);

		if (ret || u > INT64_MAX)
			return -EFSCORRUPTED;
		*out = (int64_t)u;
		return 0;
	}
}

static bool block_zero(const uint8_t *b)
{
	for (int i = 0; i < 512; i++)
		if (b[i])
			return false;
	return true;
}

static int checksum_ok(const uint8_t *h)
{
	uint64_t want;
	uint32_t sum = 0;

	if (num_field(h + 148, 8, &want))
		return 0;
	for (int i = 0; i < 512; i++)
		sum += (i >= 148 && i < 156) ? ' ' : h[i];
	return sum == want;
}

/* Read a whole special entry (long name or PAX) of `size` bytes into memory. */
static int read_blob(struct lz_tar *t, uint64_t size, char **out)
{
	char *b;
	int ret;

	if (size > LZ_TAR_MAX_PAX) {
		lz_err("extended header of %llu bytes exceeds the %u-byte cap", (unsigned long long)size,
		       LZ_TAR_MAX_PAX);
		return -EFSCORRUPTED;
	}
	b = lz_malloc((size_t)size + 1);
	if (!b)
		return -ENOMEM;
	ret = read_full(t, b, (size_t)size);
	if (!ret)
		ret = skip(t, LZ_ALIGN_UP(size, 512ull) - size);
	if (ret) {
		free(b);
		return ret == -ENODATA ? -EFSCORRUPTED : ret;
	}
	b[size] = 0;
	*out = b;
	return 0;
}

static int parse_u64(const char *s, size_t n, uint64_t *out)
{
	uint64_t v = 0;

	if (n == 0)
		return -EFSCORRUPTED;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9' || v > (UINT64_MAX - 9) / 10)
			return -EFSCORRUPTED;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*out = v;
	return 0;
}

static int parse_pax(struct lz_tar *t, char *b, size_t len)
{
	size_t p = 0;

	while (p < len) {
		uint64_t rec;
		char *sp, *eq, *key, *val;
		size_t klen, vlen;

		sp = memchr(b + p, ' ', len - p);
		if (!sp || parse_u64(b + p, (size_t)(sp - (b + p)), &rec) || rec > len - p ||
		    rec < (uint64_t)(sp - (b + p)) + 3 || b[p + rec - 1] != '\n')
			goto bad;
		key = sp + 1;
		eq = memchr(key, '=', (size_t)(b + p + rec - 1 - key));
		if (!eq)
			goto bad;
		klen = (size_t)(eq - key);
		val = eq + 1;
		vlen = (size_t)(b + p + rec - 1 - val);
		if (klen == 4 && !memcmp(key, "path", 4)) {
			free(t->pax_path);
			t->pax_path = strndup(val, vlen);
			if (!t->pax_path)
				return -ENOMEM;
		} else if (klen == 8 && !memcmp(key, "linkpath", 8)) {
			free(t->pax_link);
			t->pax_link = strndup(val, vlen);
			if (!t->pax_link)
				return -ENOMEM;
		} else if (klen == 4 && !memcmp(key, "size", 4)) {
			if (parse_u64(val, vlen, &t->pax_size))
				goto bad;
			t->pax_has_size = true;
		} else if ((klen == 3 && !memcmp(key, "uid", 3)) || (klen == 3 && !memcmp(key, "gid", 3))) {
			uint64_t v;

			if (parse_u64(val, vlen, &v) || v > UINT32_MAX)
				goto bad;
			if (key[0] == 'u') {
				t->pax_uid = (uint32_t)v;
				t->pax_has_uid = true;
			} else {
				t->pax_gid = (uint32_t)v;
				t->pax_has_gid = true;
			}
		} else if (klen == 5 && !memcmp(key, "mtime", 5)) {
			bool neg = vlen && val[0] == '-';
			char *dot, *v = val + neg;
			size_t vl = vlen - neg;
			uint64_t sec, ns = 0;
			size_t sl;

			dot = memchr(v, '.', vl);
			sl = dot ? (size_t)(dot - v) : vl;
			if (parse_u64(v, sl, &sec) || sec > INT64_MAX / 2)
				goto bad;
			if (dot) {
				size_t fl = vl - sl - 1, i;

				for (i = 0; i < 9; i++) {
					char c = i < fl ? dot[1 + i] : '0';

					if (c < '0' || c > '9')
						goto bad;
					ns = ns * 10 + (uint64_t)(c - '0');
				}
			}
			/* -1.25 is 1.25 s before the epoch: second -2, nanosecond 750000000 */
			if (neg && ns) {
				t->pax_mtime = -(int64_t)sec - 1;
				t->pax_mtime_nsec = (uint32_t)(1000000000ull - ns);
			} else {
				t->pax_mtime = neg ? -(int64_t)sec : (int64_t)sec;
				t->pax_mtime_nsec = (uint32_t)ns;
			}
			t->pax_has_mtime = true;
		} else if (klen > 13 && !memcmp(key, "SCHILY.xattr.", 13)) {
			struct lz_tar_xattr *nx;

			if (t->pax_nx >= LZ_TAR_MAX_XATTRS || vlen > LZ_TAR_MAX_XATTR_VALUE || klen - 13 > 255) {
				lz_err("PAX xattr %.*s: too many or too large", (int)LZ_MIN(klen, 64u), key);
				return -EFSCORRUPTED;
			}
			nx = lz_realloc(t->pax_x, (t->pax_nx + 1) * sizeof(*nx));
			if (!nx)
				return -ENOMEM;
			t->pax_x = nx;
			nx[t->pax_nx].name = strndup(key + 13, klen - 13);
			nx[t->pax_nx].value = lz_malloc(vlen ? vlen : 1);
			nx[t->pax_nx].len = vlen;
			if (!nx[t->pax_nx].name || !nx[t->pax_nx].value) {
				free(nx[t->pax_nx].name);
				free(nx[t->pax_nx].value);
				return -ENOMEM;
			}
			memcpy(nx[t->pax_nx].value, val, vlen);
			t->pax_nx++;
		}
		p += rec;
	}
	return 0;
bad:
	lz_err("malformed PAX extended header record at byte %zu", p);
	return -EFSCORRUPTED;
}

static char *field_str(const uint8_t *p, size_t n)
{
	return strndup((const char *)p, strnlen((const char *)p, n));
}

int lz_tar_next(struct lz_tar *t, struct lz_tar_entry *e)
{
	uint8_t h[512];
	int ret;

	clear_entry(t);
	if (t->eof)
		return 0;
	ret = skip(t, t->left + t->pad);
	if (ret)
		return ret;
	t->left = t->pad = 0;
	for (;;) {
		uint64_t size, v;
		char type;

		ret = read_full(t, h, sizeof(h));
		if (ret == -ENODATA) {
			/* archives without the two zero blocks exist; end at a header boundary */
			t->eof = true;
			clear_pax(t);
			return drain(t);
		}
		if (ret)
			return ret;
		if (block_zero(h)) {
			t->eof = true;
			clear_pax(t);
			return drain(t);
		}
		if (!checksum_ok(h)) {
			lz_err("tar header checksum mismatch (not a tar archive, or corrupt)");
			return -EFSCORRUPTED;
		}
		if (num_field(h + 124, 12, &size) || size > LZ_TAR_MAX_SIZE) {
			lz_err("tar header size field is invalid or above %llu bytes",
			       (unsigned long long)LZ_TAR_MAX_SIZE);
			return -EFSCORRUPTED;
		}
		type = (char)h[156];
		if (type == 'x' || type == 'L' || type == 'K') {
			char *b;

			ret = read_blob(t, size, &b);
			if (ret)
				return ret;
			if (type == 'x') {
				ret = parse_pax(t, b, (size_t)size);
				free(b);
				if (ret)
					return ret;
			} else if (type == 'L') {
				free(t->long_path);
				t->long_path = b;
			} else {
				free(t->long_link);
				t->long_link = b;
			}
			continue;
		}
		if (type == 'g' || type == 'V' || type == 'N' || type == 'M' || type == 'S') {
			if (type == 'M' || type == 'S' || type == 'N') {
				lz_err("unsupported tar entry type '%c' (multi-volume/sparse/old GNU)", type);
				return -EOPNOTSUPP;
			}
			ret = skip(t, LZ_ALIGN_UP(size, 512ull));
			if (ret)
				return ret;
			continue;
		}
		if (type == 0)
			type = '0';
		if (type == '7')
			type = '0';
		if (!strchr("0123456", type)) {
			lz_err("unknown tar entry type 0x%02x", (unsigned char)type);
			return -EFSCORRUPTED;
		}
		memset(&t->cur, 0, sizeof(t->cur));
		t->cur.type = type;
		if (t->pax_path) {
			t->cur.path = t->pax_path;
			t->pax_path = NULL;
		} else if (t->long_path) {
			t->cur.path = t->long_path;
			t->long_path = NULL;
		} else if (!memcmp(h + 257, "ustar", 5) && h[345]) {
			char pre[156], nm[101];

			snprintf(pre, sizeof(pre), "%.*s", (int)strnlen((const char *)h + 345, 155), h + 345);
			snprintf(nm, sizeof(nm), "%.*s", (int)strnlen((const char *)h, 100), h);
			if (asprintf(&t->cur.path, "%s/%s", pre, nm) < 0)
				t->cur.path = NULL;
		} else {
			t->cur.path = field_str(h, 100);
		}
		if (t->pax_link) {
			t->cur.linkname = t->pax_link;
			t->pax_link = NULL;
		} else if (t->long_link) {
			t->cur.linkname = t->long_link;
			t->long_link = NULL;
		} else if (type == '1' || type == '2') {
			t->cur.linkname = field_str(h + 157, 100);
		}
		if (!t->cur.path || ((type == '1' || type == '2') && !t->cur.linkname)) {
			clear_pax(t);
			return -ENOMEM;
		}
		if (strlen(t->cur.path) > LZ_TAR_MAX_PATH ||
		    (t->cur.linkname && strlen(t->cur.linkname) > LZ_TAR_MAX_PATH)) {
			lz_err("tar entry name longer than %d bytes", LZ_TAR_MAX_PATH);
			clear_pax(t);
			return -EFSCORRUPTED;
		}
		if (num_field(h + 100, 8, &v))
			goto bad_field;
		t->cur.mode = (uint32_t)(v & 07777);
		if (num_field(h + 108, 8, &v) || v > UINT32_MAX)
			goto bad_field;
		t->cur.uid = t->pax_has_uid ? t->pax_uid : (uint32_t)v;
		if (num_field(h + 116, 8, &v) || v > UINT32_MAX)
			goto bad_field;
		t->cur.gid = t->pax_has_gid ? t->pax_gid : (uint32_t)v;
		{
			int64_t mt;

			if (num_field_signed(h + 136, 12, &mt))
				goto bad_field;
			t->cur.mtime = t->pax_has_mtime ? t->pax_mtime : mt;
		}
		t->cur.mtime_nsec = t->pax_has_mtime ? t->pax_mtime_nsec : 0;
		if (type == '3' || type == '4') {
			if (num_field(h + 329, 8, &v) || v > 0xfff)
				goto bad_field;
			t->cur.devmajor = (uint32_t)v;
			if (num_field(h + 337, 8, &v) || v > 0xfffff)
				goto bad_field;
			t->cur.devminor = (uint32_t)v;
		}
		if (t->pax_has_size)
			size = t->pax_size;
		if (size > LZ_TAR_MAX_SIZE) {
			lz_err("tar entry %s: size %llu is above the %llu-byte cap", t->cur.path,
			       (unsigned long long)size, (unsigned long long)LZ_TAR_MAX_SIZE);
			clear_pax(t);
			return -EFSCORRUPTED;
		}
		/* only regular files carry data; others' size is ignored (GNU tar hard links) */
		t->cur.size = type == '0' ? size : 0;
		t->left = type == '0' ? size : 0;
		t->pad = type == '0' ? LZ_ALIGN_UP(size, 512ull) - size : LZ_ALIGN_UP(size, 512ull);
		t->cur.xattrs = t->pax_x;
		t->cur.nxattrs = t->pax_nx;
		t->pax_x = NULL;
		t->pax_nx = 0;
		clear_pax(t);
		*e = t->cur;
		return 1;
bad_field:
		lz_err("tar entry %s: invalid numeric header field", t->cur.path);
		clear_pax(t);
		return -EFSCORRUPTED;
	}
}

ssize_t lz_tar_read(struct lz_tar *t, void *buf, size_t len)
{
	ssize_t n;
	int ret;

	if (!t->left)
		return 0;
	len = (size_t)LZ_MIN((uint64_t)len, t->left);
	ret = read_full(t, buf, len);
	if (ret) {
		if (ret == -ENODATA)
			lz_err("tar entry %s is truncated (%llu bytes missing)", t->cur.path,
			       (unsigned long long)t->left);
		return ret == -ENODATA ? -EFSCORRUPTED : ret;
	}
	n = (ssize_t)len;
	t->left -= len;
	return n;
}
