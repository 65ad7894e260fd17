/*
 * BLAKE3-256, unkeyed hash mode, written from the BLAKE3 specification.
 *
 * Portable scalar implementation: one compression at a time, no SIMD and
 * no allocation.  The input tree is built incrementally with a stack of
 * subtree chaining values (see push_chunk_cv), so memory use is constant
 * regardless of input length.
 */
#include "lazyimg/blake3.h"

#include <string.h>

enum {
	FLAG_CHUNK_START = 1u << 0,
	FLAG_CHUNK_END = 1u << 1,
	FLAG_PARENT = 1u << 2,
	FLAG_ROOT = 1u << 3,
};

#define BLOCK_LEN LZ_BLAKE3_BLOCK_LEN
#define CHUNK_LEN LZ_BLAKE3_CHUNK_LEN
#define BLOCKS_PER_CHUNK (CHUNK_LEN / BLOCK_LEN)

/* BLAKE3 reuses the SHA-256 initial hash value as its IV / unkeyed key. */
static const uint32_t IV[8] = {
	0x6A09E667u, 0xBB67AE85u, 0x3C6EF372u, 0xA54FF53Au,
	0x510E527Fu, 0x9B05688Cu, 0x1F83D9ABu, 0x5BE0CD19u,
};

/*
 * Message word order for each of the 7 rounds: row r is the spec's fixed
 * permutation applied r times.  Precomputing it lets every round read the
 * original message words directly instead of shuffling 16 words between
 * rounds; with the rounds unrolled the indices are compile-time constants.
 */
static const uint8_t SCHED[7][16] = {
	{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
	{2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8},
	{3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1},
	{10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6},
	{12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4},
	{9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7},
	{11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13},
};

/* Byte-wise so unaligned input and big-endian hosts need no special case;
 * gcc and clang fuse these into single loads/stores on little-endian. */
static inline uint32_t load32_le(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) |
	       ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline void store32_le(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static inline uint32_t rotr32(uint32_t x, unsigned n)
{
	return (x >> n) | (x << (32u - n));
}

static inline void load_block(uint32_t m[16], const uint8_t *block)
{
	for (int i = 0; i < 16; i++)
		m[i] = load32_le(block + 4 * i);
}

/* The spec's G mixing function.  Written as a function over v[] rather
 * than a macro because, measured, clang -march=native then stops
 * SLP-vectorising the rounds into slow gather/shuffle code (2x slower). */
static inline void g(uint32_t v[16], size_t a, size_t b, size_t c, size_t d,
		     uint32_t x, uint32_t y)
{
	v[a] = v[a] + v[b] + x;
	v[d] = rotr32(v[d] ^ v[a], 16);
	v[c] = v[c] + v[d];
	v[b] = rotr32(v[b] ^ v[c], 12);
	v[a] = v[a] + v[b] + y;
	v[d] = rotr32(v[d] ^ v[a], 8);
	v[c] = v[c] + v[d];
	v[b] = rotr32(v[b] ^ v[c], 7);
}

#define ROUND(r)                                                      \
	do {                                                          \
		const uint8_t *s = SCHED[r];                          \
		g(v, 0, 4, 8, 12, m[s[0]], m[s[1]]);                  \
		g(v, 1, 5, 9, 13, m[s[2]], m[s[3]]);                  \
		g(v, 2, 6, 10, 14, m[s[4]], m[s[5]]);                 \
		g(v, 3, 7, 11, 15, m[s[6]], m[s[7]]);                 \
		g(v, 0, 5, 10, 15, m[s[8]], m[s[9]]);                 \
		g(v, 1, 6, 11, 12, m[s[10]], m[s[11]]);               \
		g(v, 2, 7, 8, 13, m[s[12]], m[s[13]]);                \
		g(v, 3, 4, 9, 14, m[s[14]], m[s[15]]);                \
	} while (0)

/*
 * Compress one 64-byte block into cv, in place.  Only the first 8 output
 * words are produced: a 32-byte digest never needs the extended half.
 * Rounds are unrolled by hand so that v[] and the schedule indices are
 * constant-indexed and the compiler can keep v[] in registers.  Taking
 * raw bytes lets the bulk path feed blocks straight from the caller's
 * buffer with no intermediate copy.
 */
static void compress(uint32_t cv[8], const uint8_t block[BLOCK_LEN],
		     uint32_t block_len, uint64_t counter, uint32_t flags)
{
	uint32_t m[16];
	uint32_t v[16] = {
		cv[0], cv[1], cv[2], cv[3], cv[4], cv[5], cv[6], cv[7],
		IV[0], IV[1], IV[2], IV[3],
		(uint32_t)counter, (uint32_t)(counter >> 32), block_len, flags,
	};

	load_block(m, block);
	ROUND(0);
	ROUND(1);
	ROUND(2);
	ROUND(3);
	ROUND(4);
	ROUND(5);
	ROUND(6);

	for (int i = 0; i < 8; i++)
		cv[i] = v[i] ^ v[i + 8];
}

#undef ROUND

/*
 * Hash one complete 1 KiB chunk straight from the caller's buffer.  This is
 * the bulk path: no copy into h->buf and no per-byte bookkeeping.  The
 * caller guarantees the chunk is not the last of the input, so it can never
 * be the root and needs no ROOT flag.
 */
static void hash_full_chunk(uint32_t cv[8], const uint8_t *in,
			    uint64_t counter)
{
	memcpy(cv, IV, sizeof(IV));
	compress(cv, in, BLOCK_LEN, counter, FLAG_CHUNK_START);
	for (size_t b = 1; b < BLOCKS_PER_CHUNK - 1; b++)
		compress(cv, in + b * BLOCK_LEN, BLOCK_LEN, counter, 0);
	compress(cv, in + (BLOCKS_PER_CHUNK - 1) * BLOCK_LEN, BLOCK_LEN,
		 counter, FLAG_CHUNK_END);
}

/* Parent node: the message block is the two child CVs back to back. */
static void parent_cv(uint32_t out[8], const uint32_t left[8],
		      const uint32_t right[8], uint32_t extra_flags)
{
	uint8_t block[BLOCK_LEN];

	for (int i = 0; i < 8; i++) {
		store32_le(block + 4 * i, left[i]);
		store32_le(block + 32 + 4 * i, right[i]);
	}
	memcpy(out, IV, sizeof(IV));
	compress(out, block, BLOCK_LEN, 0, FLAG_PARENT | extra_flags);
}

static size_t chunk_len(const struct lz_blake3 *h)
{
	return (size_t)h->blocks_compressed * BLOCK_LEN + h->buf_len;
}

static uint32_t chunk_start_flag(const struct lz_blake3 *h)
{
	return h->blocks_compressed == 0 ? FLAG_CHUNK_START : 0;
}

static void chunk_reset(struct lz_blake3 *h)
{
	memcpy(h->cv, IV, sizeof(IV));
	h->blocks_compressed = 0;
	h->buf_len = 0;
}

/*
 * Absorb n bytes into the current chunk; n must fit in what is left of it.
 * A full block is compressed only once more bytes are known to follow,
 * because the chunk's final block needs CHUNK_END (and possibly ROOT).
 */
static void chunk_update(struct lz_blake3 *h, const uint8_t *p, size_t n)
{
	while (n > 0) {
		if (h->buf_len == BLOCK_LEN) {
			compress(h->cv, h->buf, BLOCK_LEN, h->chunk_counter,
				 chunk_start_flag(h));
			h->blocks_compressed++;
			h->buf_len = 0;
		}
		while (h->buf_len == 0 && n > BLOCK_LEN) {
			compress(h->cv, p, BLOCK_LEN, h->chunk_counter,
				 chunk_start_flag(h));
			h->blocks_compressed++;
			p += BLOCK_LEN;
			n -= BLOCK_LEN;
		}
		size_t take = BLOCK_LEN - (size_t)h->buf_len;
		if (take > n)
			take = n;
		memcpy(h->buf + h->buf_len, p, take);
		h->buf_len = (uint8_t)(h->buf_len + take);
		p += take;
		n -= take;
	}
}

/* The chunk's pending final block, zero padded as the spec requires for
 * short blocks (buf beyond buf_len may hold stale bytes). */
static void chunk_last_block(const struct lz_blake3 *h,
			     uint8_t block[BLOCK_LEN])
{
	memset(block, 0, BLOCK_LEN);
	memcpy(block, h->buf, h->buf_len);
}

/*
 * Record a finished chunk's CV.  Because only chunks known not to be last
 * are pushed, any pair of equal-sized subtrees can be merged right away:
 * chunk number k (1-based) completes one subtree per trailing zero bit of k,
 * which keeps the stack at popcount(k) entries, at most 54.
 */
static void push_chunk_cv(struct lz_blake3 *h, uint32_t cv[8],
			  uint64_t total_chunks)
{
	while ((total_chunks & 1) == 0) {
		h->cv_stack_len--;
		parent_cv(cv, h->cv_stack[h->cv_stack_len], cv, 0);
		total_chunks >>= 1;
	}
	memcpy(h->cv_stack[h->cv_stack_len], cv, 8 * sizeof(uint32_t));
	h->cv_stack_len++;
}

void lz_blake3_init(struct lz_blake3 *h)
{
	h->cv_stack_len = 0;
	h->chunk_counter = 0;
	chunk_reset(h);
}

void lz_blake3_update(struct lz_blake3 *h, const void *data, size_t len)
{
	const uint8_t *p = data;
	uint8_t last[BLOCK_LEN];
	uint32_t cv[8];

	if (len == 0)
		return;

	/* Top up a partially filled chunk first. */
	if (chunk_len(h) > 0) {
		size_t take = CHUNK_LEN - chunk_len(h);
		if (take > len)
			take = len;
		chunk_update(h, p, take);
		p += take;
		len -= take;
		if (len == 0)
			return;
		/* More input follows, so the full chunk is not the root. */
		chunk_last_block(h, last);
		compress(h->cv, last, h->buf_len, h->chunk_counter,
			 chunk_start_flag(h) | FLAG_CHUNK_END);
		memcpy(cv, h->cv, sizeof(cv));
		h->chunk_counter++;
		push_chunk_cv(h, cv, h->chunk_counter);
		chunk_reset(h);
	}

	/* Strictly greater: the final chunk must stay buffered for final(). */
	while (len > CHUNK_LEN) {
		hash_full_chunk(cv, p, h->chunk_counter);
		h->chunk_counter++;
		push_chunk_cv(h, cv, h->chunk_counter);
		p += CHUNK_LEN;
		len -= CHUNK_LEN;
	}

	chunk_update(h, p, len);
}

void lz_blake3_final(const struct lz_blake3 *h, uint8_t out[LZ_BLAKE3_OUT_LEN])
{
	uint8_t last[BLOCK_LEN];
	uint32_t cv[8];

	memcpy(cv, h->cv, sizeof(cv));
	chunk_last_block(h, last);
	if (h->cv_stack_len == 0) {
		/* Single chunk (possibly empty): it is the root itself. */
		compress(cv, last, h->buf_len, h->chunk_counter,
			 chunk_start_flag(h) | FLAG_CHUNK_END | FLAG_ROOT);
	} else {
		compress(cv, last, h->buf_len, h->chunk_counter,
			 chunk_start_flag(h) | FLAG_CHUNK_END);
		/* Fold the pending subtrees right to left; the leftmost
		 * parent is the root. */
		for (size_t i = h->cv_stack_len; i-- > 0;)
			parent_cv(cv, h->cv_stack[i], cv,
				  i == 0 ? FLAG_ROOT : 0);
	}

	for (int i = 0; i < 8; i++)
		store32_le(out + 4 * i, cv[i]);
}

void lz_blake3(const void *data, size_t len, uint8_t out[LZ_BLAKE3_OUT_LEN])
{
	struct lz_blake3 h;

	lz_blake3_init(&h);
	lz_blake3_update(&h, data, len);
	lz_blake3_final(&h, out);
}
