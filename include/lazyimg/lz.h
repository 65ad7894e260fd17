/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lz.h - shared basics: logging, error codes, byte-order readers, checked
 * arithmetic. Every module includes this first.
 */
#ifndef LAZYIMG_LZ_H
#define LAZYIMG_LZ_H

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

/* Corrupt or hostile on-disk/wire data; the kernel's EROFS uses the same value. */
#ifndef EFSCORRUPTED
#define EFSCORRUPTED EUCLEAN
#endif

#define LZ_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define LZ_MIN(a, b) ((a) < (b) ? (a) : (b))
#define LZ_MAX(a, b) ((a) > (b) ? (a) : (b))
#define LZ_ALIGN_UP(x, a) (((x) + ((a) - 1)) & ~((__typeof__(x))(a) - 1))
#define LZ_DIV_ROUND_UP(x, d) (((x) + (d) - 1) / (d))

enum lz_level { LZ_LOG_ERR = 0, LZ_LOG_WARN, LZ_LOG_INFO, LZ_LOG_DBG };

extern int lz_log_level; /* messages above this level are dropped before formatting */

void lz_log(int level, const char *mod, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Send log lines to fd (default 2). Thread-safe: one write(2) per line. */
void lz_log_set_fd(int fd);
/* Rate limiter: returns true at most once per `interval_s` for one flag word. */
bool lz_ratelimit(_Atomic long *last, long interval_s);

#define lz_err(...) do { if (lz_log_level >= LZ_LOG_ERR) lz_log(LZ_LOG_ERR, LZ_MOD, __VA_ARGS__); } while (0)
#define lz_warn(...) do { if (lz_log_level >= LZ_LOG_WARN) lz_log(LZ_LOG_WARN, LZ_MOD, __VA_ARGS__); } while (0)
#define lz_info(...) do { if (lz_log_level >= LZ_LOG_INFO) lz_log(LZ_LOG_INFO, LZ_MOD, __VA_ARGS__); } while (0)
#define lz_dbg(...) do { if (lz_log_level >= LZ_LOG_DBG) lz_log(LZ_LOG_DBG, LZ_MOD, __VA_ARGS__); } while (0)

/* Little-endian readers over byte buffers: never cast into a mapped file. */
static inline uint16_t lz_get_le16(const void *p)
{
	const uint8_t *b = p;
	return (uint16_t)(b[0] | b[1] << 8);
}
static inline uint32_t lz_get_le32(const void *p)
{
	const uint8_t *b = p;
	return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}
static inline uint64_t lz_get_le64(const void *p)
{
	return (uint64_t)lz_get_le32(p) | (uint64_t)lz_get_le32((const uint8_t *)p + 4) << 32;
}
static inline void lz_put_le16(void *p, uint16_t v)
{
	uint8_t *b = p;
	b[0] = (uint8_t)v;
	b[1] = (uint8_t)(v >> 8);
}
static inline void lz_put_le32(void *p, uint32_t v)
{
	uint8_t *b = p;
	for (int i = 0; i < 4; i++)
		b[i] = (uint8_t)(v >> (8 * i));
}
static inline void lz_put_le64(void *p, uint64_t v)
{
	lz_put_le32(p, (uint32_t)v);
	lz_put_le32((uint8_t *)p + 4, (uint32_t)(v >> 32));
}

/* True if [off, off+len) lies inside [0, size); overflow-safe. */
static inline bool lz_range_ok(uint64_t off, uint64_t len, uint64_t size)
{
	uint64_t end;
	return !__builtin_add_overflow(off, len, &end) && end <= size;
}

/* Lowercase hex of `len` bytes into out (2*len+1 bytes). */
void lz_hex(const uint8_t *in, size_t len, char *out);
/* Parse exactly 2*len hex chars; returns 0 or -EINVAL. */
int lz_unhex(const char *in, size_t inlen, uint8_t *out, size_t len);
const char *lz_strerror(int neg_errno);

/* Allocation wrappers: in test builds the Nth allocation can be made to fail
 * (LAZYIMG_FAIL_ALLOC=N) so that every cleanup path can be exercised. */
void *lz_malloc(size_t n);
void *lz_calloc(size_t nmemb, size_t size);
void *lz_realloc(void *p, size_t n);
void lz_fail_alloc_at(long n); /* 0 disables */
/* Make *buf (capacity *cap) hold at least need bytes; the old contents are
 * not kept (scratch buffers). 0 or -ENOMEM (then *buf is unchanged). */
int lz_scratch_reserve(uint8_t **buf, size_t *cap, size_t need);

/* Read exactly len bytes at off. 0, -errno, or -ENODATA when the file ends
 * first; *done (may be NULL) gets the bytes read either way. */
int lz_pread_full(int fd, void *buf, size_t len, uint64_t off, size_t *done);

/* A per-thread object of `size` zeroed bytes, made on a thread's first
 * lz_tls_get() and handed to dtor (which frees it) when the thread exits.
 * Define one per kind, static: static struct lz_tls x = LZ_TLS_INIT(...). */
#include <pthread.h>
#include <stdatomic.h>
struct lz_tls {
	size_t size;
	void (*dtor)(void *);
	atomic_bool ready;          /* key created */
	pthread_key_t key;
};
#define LZ_TLS_INIT(type, dtor_fn) { .size = sizeof(type), .dtor = (dtor_fn) }
/* NULL when out of memory */
void *lz_tls_get(struct lz_tls *t);

#endif
