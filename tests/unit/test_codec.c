/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit test for common/codec.c (codec.h): lz_compress/lz_decompress round trips for
 * none, lz4, zstd and gzip on random and compressible data; wrong sizes, truncated,
 * corrupted, garbage and trailing-garbage inputs are rejected with -EFSCORRUPTED (never a
 * crash, never a short success); unknown compressors; lz_digest known vectors; and
 * concurrent decoders in several threads (per-thread contexts).
 */
#include "lazyimg/codec.h"
#include "../t.h"

#include <pthread.h>

#define MAXLEN (1u << 20)

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint32_t rnd(void)
{
	/* xorshift64*: deterministic, so a failure reproduces */
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return (uint32_t)((rng * 0x2545F4914F6CDD1Dull) >> 32);
}

static void fill_random(uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)rnd();
}

/* text-like data: compresses well, exercises long matches */
static void fill_text(uint8_t *p, size_t n)
{
	static const char *const words[] = { "lazyimg ", "rafs ", "chunk ", "blob ", "\n", "zstd ",
					     "0000", "the image is read-only " };

	for (size_t i = 0; i < n;) {
		const char *w = words[rnd() % LZ_ARRAY_SIZE(words)];

		for (size_t k = 0; w[k] && i < n; k++)
			p[i++] = (uint8_t)w[k];
	}
}

static const int comps[] = { LZ_COMP_NONE, LZ_COMP_LZ4, LZ_COMP_ZSTD, LZ_COMP_GZIP };

/* Compress src[0..n) with comp into a fresh buffer; NONE is stored as is. Returns length or <0. */
static ssize_t encode(int comp, const uint8_t *src, size_t n, uint8_t *dst, size_t cap)
{
	if (comp == LZ_COMP_NONE) {
		memcpy(dst, src, n);
		return (ssize_t)n;
	}
	return lz_compress(comp, src, n, dst, cap, 0);
}

static int expect_corrupt(int comp, const void *src, size_t slen, void *dst, size_t dlen)
{
	return lz_decompress(comp, src, slen, dst, dlen) == -EFSCORRUPTED;
}

static void test_round_trips(void)
{
	static const size_t sizes[] = { 1, 2, 100, 4095, 4096, 4097, 65536, 131072 + 17, MAXLEN };
	size_t cap = 2 * MAXLEN + 4096;
	uint8_t *src = malloc(MAXLEN), *enc = malloc(cap), *dec = malloc(MAXLEN + 64);
	uint8_t *bad = malloc(cap + 64);

	T_ASSERT(src && enc && dec && bad);
	for (size_t ci = 0; ci < LZ_ARRAY_SIZE(comps); ci++) {
		int comp = comps[ci];
		const char *name = lz_compressor_name(comp);
		int trailing_ok = 0, trailing_n = 0;

		for (int kind = 0; kind < 2; kind++) {
			for (size_t si = 0; si < LZ_ARRAY_SIZE(sizes); si++) {
				size_t n = sizes[si];
				ssize_t clen;
				int ret;

				if (kind)
					fill_text(src, n);
				else
					fill_random(src, n);
				clen = encode(comp, src, n, enc, cap);
				if (clen <= 0) {
					T_FAIL("%s: compressing %zu %s bytes with room %zu: %zd", name, n,
					       kind ? "text" : "random", cap, clen);
					continue;
				}
				if (kind && n >= 4096 && comp != LZ_COMP_NONE && (size_t)clen >= n / 2)
					T_FAIL("%s: %zu text bytes compressed only to %zd", name, n, clen);
				memset(dec, 0xA5, n + 64);
				ret = lz_decompress(comp, enc, (size_t)clen, dec, n);
				if (ret || memcmp(src, dec, n))
					T_FAIL("%s: round trip of %zu %s bytes: ret %d, %s", name, n,
					       kind ? "text" : "random", ret, ret ? "-" : "bytes differ");
				/* the decoder never writes past dlen */
				for (size_t k = n; k < n + 64; k++)
					if (dec[k] != 0xA5) {
						T_FAIL("%s: wrote past dlen %zu", name, n);
						break;
					}

				/* wrong expected sizes */
				if (!expect_corrupt(comp, enc, (size_t)clen, dec, n - 1))
					T_FAIL("%s: %zu bytes accepted with dlen %zu", name, n, n - 1);
				if (!expect_corrupt(comp, enc, (size_t)clen, dec, n + 1))
					T_FAIL("%s: %zu bytes accepted with dlen %zu", name, n, n + 1);
				if (n > 64 && !expect_corrupt(comp, enc, (size_t)clen, dec, n / 2))
					T_FAIL("%s: %zu bytes accepted with dlen %zu", name, n, n / 2);

				/* truncated input */
				{
					const size_t cuts[] = { (size_t)clen - 1, (size_t)clen / 2, 1, 0 };

					for (size_t k = 0; k < LZ_ARRAY_SIZE(cuts); k++) {
						if (cuts[k] >= (size_t)clen)
							continue;
						if (!expect_corrupt(comp, enc, cuts[k], dec, n))
							T_FAIL("%s: %zd-byte stream truncated to %zu accepted (data %zu)",
							       name, clen, cuts[k], n);
					}
				}

				/* trailing garbage after a complete stream: src must be exactly slen bytes */
				memcpy(bad, enc, (size_t)clen);
				fill_random(bad + clen, 16);
				trailing_n++;
				if (!expect_corrupt(comp, bad, (size_t)clen + 16, dec, n))
					trailing_ok++;

				/* flipped bytes: an error, or success with exactly dlen bytes; no crash */
				if (comp != LZ_COMP_NONE) {
					for (int k = 0; k < 8; k++) {
						memcpy(bad, enc, (size_t)clen);
						bad[rnd() % (size_t)clen] ^= (uint8_t)(1u << (rnd() % 8));
						ret = lz_decompress(comp, bad, (size_t)clen, dec, n);
						if (ret != 0 && ret != -EFSCORRUPTED)
							T_FAIL("%s: corrupted stream gave %d", name, ret);
					}
				}
			}
		}
		if (trailing_ok)
			T_FAIL("%s: %d of %d complete streams followed by 16 bytes of garbage were accepted "
			       "(lz_decompress: src is exactly slen bytes)", name, trailing_ok, trailing_n);
	}

	/* pure garbage: zstd and gzip check their magic; lz4 blocks have none */
	for (int k = 0; k < 50; k++) {
		size_t slen = 1 + rnd() % 4096, dlen = 1 + rnd() % 65536;
		int ret;

		fill_random(bad, slen);
		if (!expect_corrupt(LZ_COMP_ZSTD, bad, slen, dec, dlen))
			T_FAIL("zstd: %zu random bytes accepted", slen);
		if (!expect_corrupt(LZ_COMP_GZIP, bad, slen, dec, dlen))
			T_FAIL("gzip: %zu random bytes accepted", slen);
		ret = lz_decompress(LZ_COMP_LZ4, bad, slen, dec, dlen);
		if (ret != 0 && ret != -EFSCORRUPTED)
			T_FAIL("lz4: random input gave %d", ret);
		if (!expect_corrupt(LZ_COMP_NONE, bad, slen, dec, slen + 1))
			T_FAIL("none: %zu bytes accepted as %zu", slen, slen + 1);
	}
	free(src);
	free(enc);
	free(dec);
	free(bad);
}

static void test_edges(void)
{
	uint8_t in[64] = "hello", out[64];
	ssize_t n;

	/* none is a plain copy of exactly dlen bytes */
	T_EQ_INT(lz_decompress(LZ_COMP_NONE, in, 5, out, 5), 0);
	T_ASSERT(!memcmp(out, "hello", 5));
	T_EQ_INT(lz_decompress(LZ_COMP_NONE, in, 5, out, 4), -EFSCORRUPTED);
	/* lz_compress(NONE) is not something the builder calls; it must not pretend to compress */
	n = lz_compress(LZ_COMP_NONE, in, 5, out, sizeof(out), 0);
	T_ASSERT(n < 0 || (n == 5 && !memcmp(out, "hello", 5)));

	/* unknown compressors */
	T_EQ_INT(lz_decompress(7, in, 5, out, 5), -EOPNOTSUPP);
	T_EQ_INT(lz_decompress(-1, in, 5, out, 5), -EOPNOTSUPP);
	T_ASSERT(lz_compress(7, in, 5, out, sizeof(out), 0) < 0);

	/* no room: -ENOSPC (the builder then stores the chunk raw) */
	fill_random(in, sizeof(in));
	T_EQ_INT(lz_compress(LZ_COMP_LZ4, in, sizeof(in), out, 8, 0), -ENOSPC);
	T_EQ_INT(lz_compress(LZ_COMP_ZSTD, in, sizeof(in), out, 8, 0), -ENOSPC);
	T_EQ_INT(lz_compress(LZ_COMP_GZIP, in, sizeof(in), out, 8, 0), -ENOSPC);

	/* empty input: compress and decompress to nothing */
	for (size_t ci = 1; ci < LZ_ARRAY_SIZE(comps); ci++) {
		uint8_t enc[128];

		n = lz_compress(comps[ci], in, 0, enc, sizeof(enc), 0);
		if (n > 0) {
			T_EQ_INT(lz_decompress(comps[ci], enc, (size_t)n, out, 0), 0);
			T_EQ_INT(lz_decompress(comps[ci], enc, (size_t)n, out, 1), -EFSCORRUPTED);
		}
	}

	T_EQ_STR(lz_compressor_name(LZ_COMP_NONE), "none");
	T_EQ_STR(lz_compressor_name(LZ_COMP_LZ4), "lz4_block");
	T_EQ_STR(lz_compressor_name(LZ_COMP_GZIP), "gzip");
	T_EQ_STR(lz_compressor_name(LZ_COMP_ZSTD), "zstd");
	T_EQ_STR(lz_compressor_name(42), "unknown");
	T_EQ_STR(lz_digester_name(LZ_DIGEST_BLAKE3), "blake3");
	T_EQ_STR(lz_digester_name(LZ_DIGEST_SHA256), "sha256");
}

static void check_digest(int dig, const char *data, size_t len, const char *want)
{
	uint8_t d[LZ_DIGEST_LEN];
	char hex[2 * LZ_DIGEST_LEN + 1];

	lz_digest(dig, data, len, d);
	lz_hex(d, sizeof(d), hex);
	if (strcmp(hex, want))
		T_FAIL("%s(\"%.*s\") = %s, want %s", lz_digester_name(dig), (int)len, data, hex, want);
}

static void test_digests(void)
{
	/* FIPS 180-2 example and the empty string */
	check_digest(LZ_DIGEST_SHA256, "abc", 3,
		     "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	check_digest(LZ_DIGEST_SHA256, "", 0,
		     "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	check_digest(LZ_DIGEST_SHA256, "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56,
		     "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
	/* BLAKE3 reference: test_vectors.json (len 0) and `printf abc | b3sum` */
	check_digest(LZ_DIGEST_BLAKE3, "", 0,
		     "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262");
	check_digest(LZ_DIGEST_BLAKE3, "abc", 3,
		     "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85");
}

/* several threads decode different streams at once: per-thread decoder contexts */
struct job {
	int comp;
	uint8_t *src, *enc;
	size_t n;
	ssize_t clen;
	int errors;
};

static void *worker(void *arg)
{
	struct job *j = arg;
	uint8_t *dec = malloc(j->n);

	if (!dec) {
		j->errors++;
		return NULL;
	}
	for (int i = 0; i < 200; i++) {
		memset(dec, 0, j->n);
		if (lz_decompress(j->comp, j->enc, (size_t)j->clen, dec, j->n) || memcmp(dec, j->src, j->n))
			j->errors++;
		/* and a failing call in between must not poison the context */
		if (lz_decompress(j->comp, j->enc, (size_t)j->clen / 2, dec, j->n) != -EFSCORRUPTED)
			j->errors++;
	}
	free(dec);
	return NULL;
}

static void test_threads(void)
{
	enum { NT = 8 };
	struct job jobs[NT];
	pthread_t th[NT];

	for (int i = 0; i < NT; i++) {
		struct job *j = &jobs[i];

		j->comp = comps[1 + i % 3];
		j->n = 20000 + 1000u * (unsigned)i;
		j->src = malloc(j->n);
		j->enc = malloc(2 * j->n + 1024);
		j->errors = 0;
		T_ASSERT(j->src && j->enc);
		fill_text(j->src, j->n);
		j->clen = lz_compress(j->comp, j->src, j->n, j->enc, 2 * j->n + 1024, 0);
		T_ASSERT(j->clen > 0);
	}
	for (int i = 0; i < NT; i++)
		T_EQ_INT(pthread_create(&th[i], NULL, worker, &jobs[i]), 0);
	for (int i = 0; i < NT; i++) {
		pthread_join(th[i], NULL);
		if (jobs[i].errors)
			T_FAIL("thread %d (%s): %d bad decodes", i, lz_compressor_name(jobs[i].comp),
			       jobs[i].errors);
		free(jobs[i].src);
		free(jobs[i].enc);
	}
}

int main(void)
{
	test_round_trips();
	test_edges();
	test_digests();
	test_threads();
	T_DONE();
}
