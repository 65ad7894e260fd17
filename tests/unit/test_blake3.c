/*
 * Unit test for lz_blake3: official test vectors, incremental-vs-one-shot
 * equivalence, cross-check against the b3sum tool, and a throughput report.
 * Exit status 0 on success, 1 on any failure.
 */
#include "lazyimg/blake3.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int failures;

/* First 32 bytes of the "hash" field of test_vectors/test_vectors.json in
 * github.com/BLAKE3-team/BLAKE3; input byte i is (i % 251). */
static const struct {
	size_t len;
	const char *hex;
} vectors[] = {
	{0, "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"},
	{1, "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213"},
	{2, "7b7015bb92cf0b318037702a6cdd81dee41224f734684c2c122cd6359cb1ee63"},
	{3, "e1be4d7a8ab5560aa4199eea339849ba8e293d55ca0a81006726d184519e647f"},
	{4, "f30f5ab28fe047904037f77b6da4fea1e27241c5d132638d8bedce9d40494f32"},
	{5, "b40b44dfd97e7a84a996a91af8b85188c66c126940ba7aad2e7ae6b385402aa2"},
	{6, "06c4e8ffb6872fad96f9aaca5eee1553eb62aed0ad7198cef42e87f6a616c844"},
	{7, "3f8770f387faad08faa9d8414e9f449ac68e6ff0417f673f602a646a891419fe"},
	{8, "2351207d04fc16ade43ccab08600939c7c1fa70a5c0aaca76063d04c3228eaeb"},
	{63, "e9bc37a594daad83be9470df7f7b3798297c3d834ce80ba85d6e207627b7db7b"},
	{64, "4eed7141ea4a5cd4b788606bd23f46e212af9cacebacdc7d1f4c6dc7f2511b98"},
	{65, "de1e5fa0be70df6d2be8fffd0e99ceaa8eb6e8c93a63f2d8d1c30ecb6b263dee"},
	{127, "d81293fda863f008c09e92fc382a81f5a0b4a1251cba1634016a0f86a6bd640d"},
	{128, "f17e570564b26578c33bb7f44643f539624b05df1a76c81f30acd548c44b45ef"},
	{129, "683aaae9f3c5ba37eaaf072aed0f9e30bac0865137bae68b1fde4ca2aebdcb12"},
	{1023, "10108970eeda3eb932baac1428c7a2163b0e924c9a9e25b35bba72b28f70bd11"},
	{1024, "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7"},
	{1025, "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444"},
	{2048, "e776b6028c7cd22a4d0ba182a8bf62205d2ef576467e838ed6f2529b85fba24a"},
	{2049, "5f4d72f40d7a5f82b15ca2b2e44b1de3c2ef86c426c95c1af0b6879522563030"},
	{3072, "b98cb0ff3623be03326b373de6b9095218513e64f1ee2edd2525c7ad1e5cffd2"},
	{3073, "7124b49501012f81cc7f11ca069ec9226cecb8a2c850cfe644e327d22d3e1cd3"},
	{4096, "015094013f57a5277b59d8475c0501042c0b642e531b0a1c8f58d2163229e969"},
	{4097, "9b4052b38f1c5fc8b1f9ff7ac7b27cd242487b3d890d15c96a1c25b8aa0fb995"},
	{5120, "9cadc15fed8b5d854562b26a9536d9707cadeda9b143978f319ab34230535833"},
	{5121, "628bd2cb2004694adaab7bbd778a25df25c47b9d4155a55f8fbd79f2fe154cff"},
	{6144, "3e2e5b74e048f3add6d21faab3f83aa44d3b2278afb83b80b3c35164ebeca205"},
	{6145, "f1323a8631446cc50536a9f705ee5cb619424d46887f3c376c695b70e0f0507f"},
	{7168, "61da957ec2499a95d6b8023e2b0e604ec7f6b50e80a9678b89d2628e99ada77a"},
	{7169, "a003fc7a51754a9b3c7fae0367ab3d782dccf28855a03d435f8cfe74605e7817"},
	{8192, "aae792484c8efe4f19e2ca7d371d8c467ffb10748d8a5a1ae579948f718a2a63"},
	{8193, "bab6c09cb8ce8cf459261398d2e7aef35700bf488116ceb94a36d0f5f1b7bc3b"},
	{16384, "f875d6646de28985646f34ee13be9a576fd515f76b5b0a26bb324735041ddde4"},
	{31744, "62b6960e1a44bcc1eb1a611a8d6235b6b4b78f32e7abc4fb4c6cdcce94895c47"},
	{102400, "bc3e3d41a1146b069abffad3c0d44860cf664390afce4d9661f7902e7943e085"},
};

/* splitmix64: deterministic so a failure reproduces from the printed seed. */
static uint64_t rng_state;

static uint64_t rng_next(void)
{
	uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static size_t rng_below(size_t n)
{
	return n ? (size_t)(rng_next() % n) : 0;
}

static void rng_fill(uint8_t *p, size_t n)
{
	while (n > 0) {
		uint64_t r = rng_next();
		for (int i = 0; i < 8 && n > 0; i++, n--)
			*p++ = (uint8_t)(r >> (8 * i));
	}
}

static void to_hex(const uint8_t d[LZ_BLAKE3_OUT_LEN],
		   char hex[2 * LZ_BLAKE3_OUT_LEN + 1])
{
	static const char digits[] = "0123456789abcdef";
	for (int i = 0; i < LZ_BLAKE3_OUT_LEN; i++) {
		hex[2 * i] = digits[d[i] >> 4];
		hex[2 * i + 1] = digits[d[i] & 15];
	}
	hex[2 * LZ_BLAKE3_OUT_LEN] = '\0';
}

static void check_hex(const char *file, int line, const char *what,
		      size_t len, const char *want, const uint8_t got[32])
{
	char hex[2 * LZ_BLAKE3_OUT_LEN + 1];

	to_hex(got, hex);
	if (strcmp(want, hex) != 0) {
		fprintf(stderr,
			"%s:%d: %s (len %zu) mismatch\n  want %s\n  got  %s\n",
			file, line, what, len, want, hex);
		failures++;
	}
}
#define CHECK_HEX(what, len, want, got) \
	check_hex(__FILE__, __LINE__, (what), (len), (want), (got))

static void fail_msg(const char *file, int line, const char *msg)
{
	fprintf(stderr, "%s:%d: %s\n", file, line, msg);
	failures++;
}
#define FAIL(msg) fail_msg(__FILE__, __LINE__, (msg))

/* Hash buf in random-sized pieces (including empty ones), exercising every
 * buffering path in update(); also calls final() mid-stream, which must not
 * disturb the state. */
static void hash_split(const uint8_t *buf, size_t len,
		       uint8_t out[LZ_BLAKE3_OUT_LEN])
{
	struct lz_blake3 h;
	uint8_t scratch[LZ_BLAKE3_OUT_LEN];
	size_t off = 0;

	lz_blake3_init(&h);
	while (off < len) {
		size_t max;
		switch (rng_next() % 4) {
		case 0: max = 3; break;
		case 1: max = 70; break;
		case 2: max = 2100; break;
		default: max = 70000; break;
		}
		size_t n = rng_below(max + 1);
		if (n > len - off)
			n = len - off;
		lz_blake3_update(&h, buf + off, n);
		off += n;
		if (rng_next() % 16 == 0)
			lz_blake3_final(&h, scratch);
	}
	lz_blake3_final(&h, out);
}

static void test_vectors(void)
{
	uint8_t in[102400];
	uint8_t d[LZ_BLAKE3_OUT_LEN];

	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)(i % 251);
	for (size_t v = 0; v < sizeof(vectors) / sizeof(vectors[0]); v++) {
		size_t len = vectors[v].len;
		lz_blake3(in, len, d);
		CHECK_HEX("test vector one-shot", len, vectors[v].hex, d);

		/* Byte-at-a-time is the most adversarial split. */
		struct lz_blake3 h;
		lz_blake3_init(&h);
		for (size_t i = 0; i < len; i++)
			lz_blake3_update(&h, in + i, 1);
		lz_blake3_final(&h, d);
		CHECK_HEX("test vector bytewise", len, vectors[v].hex, d);

		hash_split(in, len, d);
		CHECK_HEX("test vector random split", len, vectors[v].hex, d);
	}
}

static void test_incremental(void)
{
	enum { MAXLEN = 600 * 1024 };
	uint8_t *buf = malloc(MAXLEN);
	uint8_t a[LZ_BLAKE3_OUT_LEN], b[LZ_BLAKE3_OUT_LEN];
	char ahex[2 * LZ_BLAKE3_OUT_LEN + 1];

	if (!buf) {
		FAIL("malloc failed");
		return;
	}
	rng_fill(buf, MAXLEN);
	for (int iter = 0; iter < 300; iter++) {
		size_t len;
		/* Bias towards chunk/block boundaries where bugs hide. */
		if (iter % 3 == 0)
			len = rng_below(MAXLEN / 1024) * 1024 + rng_below(3) - 1;
		else if (iter % 3 == 1)
			len = rng_below(64) * 64 + rng_below(3) - 1;
		else
			len = rng_below(MAXLEN);
		if (len > MAXLEN)
			len = 0; /* wrapped from 0 - 1 */
		size_t start = rng_below(MAXLEN - len + 1); /* vary alignment */
		lz_blake3(buf + start, len, a);
		to_hex(a, ahex);
		for (int rep = 0; rep < 3; rep++) {
			hash_split(buf + start, len, b);
			CHECK_HEX("random split vs one-shot", len, ahex, b);
		}
	}

	/* A copied context forks the hash: both halves continue independently. */
	{
		struct lz_blake3 h1, h2;
		lz_blake3_init(&h1);
		lz_blake3_update(&h1, buf, 5000);
		h2 = h1;
		lz_blake3_update(&h1, buf + 5000, 7000);
		lz_blake3_update(&h2, buf + 5000, 3000);
		lz_blake3_final(&h1, b);
		lz_blake3(buf, 12000, a);
		to_hex(a, ahex);
		CHECK_HEX("forked context A", (size_t)12000, ahex, b);
		lz_blake3_final(&h2, b);
		lz_blake3(buf, 8000, a);
		to_hex(a, ahex);
		CHECK_HEX("forked context B", (size_t)8000, ahex, b);
	}
	free(buf);
}

/* Run b3sum on path; returns 0 and fills hex on success. */
static int run_b3sum(const char *path, char hex[2 * LZ_BLAKE3_OUT_LEN + 1])
{
	char cmd[256];
	char line[256];

	snprintf(cmd, sizeof(cmd), "b3sum --no-names '%s' 2>&1", path);
	FILE *p = popen(cmd, "r");
	if (!p)
		return -1;
	if (!fgets(line, sizeof(line), p))
		line[0] = '\0';
	int st = pclose(p);
	if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr, "b3sum failed (status %d): %s", st, line);
		return -1;
	}
	line[strcspn(line, "\r\n")] = '\0';
	if (strlen(line) != 2 * LZ_BLAKE3_OUT_LEN) {
		fprintf(stderr, "unexpected b3sum output: '%s'\n", line);
		return -1;
	}
	memcpy(hex, line, 2 * LZ_BLAKE3_OUT_LEN + 1);
	return 0;
}

static int b3sum_available(void)
{
	FILE *p = popen("b3sum --version 2>/dev/null", "r");
	char line[128];

	if (!p)
		return 0;
	int got = fgets(line, sizeof(line), p) != NULL;
	int st = pclose(p);
	return got && st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static void test_b3sum(void)
{
	enum { MAXLEN = 3 * 1024 * 1024 + 4096 };
	static const size_t fixed[] = {
		0, 1, 63, 64, 65, 1023, 1024, 1025, 2047, 2048, 2049,
		4095, 4096, 4097, 64 * 17, 1024 * 31 + 64, 1024 * 33 - 64,
		65536, 65537, 1024 * 1024, 3 * 1024 * 1024, 3 * 1024 * 1024 + 1,
	};
	const size_t nfixed = sizeof(fixed) / sizeof(fixed[0]);
	const size_t total = 32;
	size_t compared = 0, maxlen = 0;
	uint8_t *buf;
	uint8_t d[LZ_BLAKE3_OUT_LEN];
	char want[2 * LZ_BLAKE3_OUT_LEN + 1];

	if (!b3sum_available()) {
		FAIL("b3sum not found or not runnable: install the Debian "
		     "package 'b3sum' (/usr/bin/b3sum); this check is mandatory");
		return;
	}
	buf = malloc(MAXLEN);
	if (!buf) {
		FAIL("malloc failed");
		return;
	}
	for (size_t t = 0; t < total; t++) {
		size_t len;
		if (t < nfixed)
			len = fixed[t];
		else if (t % 2)
			len = rng_below(3 * 1024) * 1024 + rng_below(3) + 1023;
		else
			len = rng_below(3 * 1024 * 1024);
		if (len > MAXLEN)
			len = MAXLEN;
		rng_fill(buf, len);

		char path[] = "/tmp/lz_blake3_test_XXXXXX";
		int fd = mkstemp(path);
		if (fd < 0) {
			FAIL("mkstemp failed");
			break;
		}
		size_t off = 0;
		while (off < len) {
			ssize_t w = write(fd, buf + off, len - off);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				break;
			off += (size_t)w;
		}
		close(fd);
		if (off != len) {
			FAIL("short write to temp file");
			unlink(path);
			break;
		}
		int rc = run_b3sum(path, want);
		unlink(path);
		if (rc != 0) {
			FAIL("running b3sum failed");
			break;
		}
		lz_blake3(buf, len, d);
		CHECK_HEX("one-shot vs b3sum", len, want, d);
		hash_split(buf, len, d);
		CHECK_HEX("random split vs b3sum", len, want, d);
		compared++;
		if (len > maxlen)
			maxlen = len;
	}
	printf("b3sum: compared %zu inputs (largest %zu bytes)\n", compared,
	       maxlen);
	free(buf);
}

static double now_sec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Informational only: sanitizer and -O0 builds are expected to be slow. */
static void report_throughput(void)
{
	const size_t len = 64u * 1024 * 1024;
	uint8_t *buf = malloc(len);
	uint8_t d[LZ_BLAKE3_OUT_LEN];
	double best = 1e30;

	if (!buf) {
		FAIL("malloc failed");
		return;
	}
	rng_fill(buf, len);
	for (int rep = 0; rep < 3; rep++) {
		double t0 = now_sec();
		lz_blake3(buf, len, d);
		double dt = now_sec() - t0;
		if (dt < best)
			best = dt;
	}
	printf("throughput: %.0f MB/s (64 MiB buffer, best of 3; d[0]=%02x)\n",
	       (double)len / best / 1e6, d[0]);
	free(buf);
}

int main(void)
{
	const char *s = getenv("LZ_BLAKE3_TEST_SEED");
	uint64_t seed = s ? strtoull(s, NULL, 0) : UINT64_C(0x1a2b3c4d5e6f7788);

	/* Keep stdout and stderr lines in order when both go to a log. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	rng_state = seed;
	printf("test_blake3: seed 0x%" PRIx64 "\n", seed);

	test_vectors();
	printf("vectors: %zu official cases checked\n",
	       sizeof(vectors) / sizeof(vectors[0]));
	test_incremental();
	test_b3sum();
	report_throughput();

	if (failures) {
		printf("test_blake3: FAIL (%d failures)\n", failures);
		return 1;
	}
	printf("test_blake3: PASS\n");
	return 0;
}
