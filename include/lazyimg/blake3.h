/*
 * BLAKE3-256 (unkeyed hash mode, 32-byte digest), portable C11.
 *
 * Thread safety: the functions keep no global or static mutable state, so
 * any number of threads may hash concurrently as long as each
 * struct lz_blake3 is owned by a single thread at a time (or externally
 * locked).  lz_blake3_final() only reads the context, so a context may be
 * finalised, then updated further and finalised again (digest of a prefix).
 * The one-shot lz_blake3() is fully reentrant.
 *
 * No function allocates memory; the context is a plain value type and may
 * live on the stack or be copied with memcpy/assignment to fork a hash.
 */
#ifndef LAZYIMG_BLAKE3_H
#define LAZYIMG_BLAKE3_H

#include <stddef.h>
#include <stdint.h>

#define LZ_BLAKE3_OUT_LEN 32
#define LZ_BLAKE3_BLOCK_LEN 64
#define LZ_BLAKE3_CHUNK_LEN 1024
/* 2^54 chunks of 1 KiB is 2^64 bytes, so 54 pending subtree roots always
 * suffice for any input length representable in a uint64_t. */
#define LZ_BLAKE3_MAX_DEPTH 54

struct lz_blake3 {
	/* Chaining values of completed subtrees, waiting for a sibling. */
	uint32_t cv_stack[LZ_BLAKE3_MAX_DEPTH][8];
	uint8_t cv_stack_len;
	/* State of the chunk currently being absorbed. */
	uint8_t blocks_compressed; /* full blocks already folded into cv */
	uint8_t buf_len;           /* bytes pending in buf */
	uint32_t cv[8];
	uint64_t chunk_counter;
	uint8_t buf[LZ_BLAKE3_BLOCK_LEN];
};

/* Start a new hash; a context may be re-initialised at any time. */
void lz_blake3_init(struct lz_blake3 *h);
/* Absorb len bytes; data may be NULL only when len == 0. */
void lz_blake3_update(struct lz_blake3 *h, const void *data, size_t len);
/* Write the digest of everything absorbed so far; h is left unchanged. */
void lz_blake3_final(const struct lz_blake3 *h, uint8_t out[LZ_BLAKE3_OUT_LEN]);
/* One-shot convenience: init + update + final. */
void lz_blake3(const void *data, size_t len, uint8_t out[LZ_BLAKE3_OUT_LEN]);

#endif /* LAZYIMG_BLAKE3_H */
