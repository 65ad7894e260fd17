/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit test for the blob cache (cache/): fill/read, persistence, state-file
 * validation, crash simulation, single flight under threads, timeouts,
 * aborts, LRU eviction under a cap, usage accounting, removal, and every
 * allocation failing in turn. Exit 0 pass, 1 fail.
 */
#include "lazyimg/bcache.h"
#include "../../cache/bcache_int.h"
#include "../t.h"

#include <fcntl.h>
#include <ftw.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#define CH (64u * 1024)

static _Atomic int stress_bad;   /* chunk size used throughout */

static char root[64];     /* mkdtemp dir */
static char dir[128];     /* the cache dir inside it */
static int ndirs;

static void new_dir(void)
{
	snprintf(dir, sizeof(dir), "%s/c%d", root, ndirs++);
}

static void pattern(uint8_t *p, size_t len, uint64_t off, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(((off + i) * 2654435761u) >> 13) ^ (uint8_t)(seed * 29 + 1);
}

static bool check_pattern(const uint8_t *p, size_t len, uint64_t off, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != (uint8_t)((((off + i) * 2654435761u) >> 13) ^ (uint8_t)(seed * 29 + 1)))
			return false;
	return true;
}

static void path_of(char *out, size_t n, const char *name)
{
	snprintf(out, n, "%s/%s", dir, name);
}

static uint64_t file_blocks(const char *name, bool *exists)
{
	char p[512];
	struct stat st;

	path_of(p, sizeof(p), name);
	if (stat(p, &st)) {
		if (exists)
			*exists = false;
		return 0;
	}
	if (exists)
		*exists = true;
	return (uint64_t)st.st_blocks * 512;
}

static uint64_t file_size(const char *name)
{
	char p[512];
	struct stat st;

	path_of(p, sizeof(p), name);
	return stat(p, &st) ? (uint64_t)-1 : (uint64_t)st.st_size;
}

/* du -B1 of the cache dir: st_blocks of every regular file in it */
static uint64_t du_dir(void)
{
	char cmd[256];
	unsigned long long n = 0;
	FILE *f;

	snprintf(cmd, sizeof(cmd), "find '%s' -maxdepth 1 -type f -printf '%%b\\n'", dir);
	f = popen(cmd, "r");
	if (!f)
		return 0;
	for (unsigned long long b; fscanf(f, "%llu", &b) == 1;)
		n += b * 512;
	pclose(f);
	return n;
}

static bool exists(const char *name)
{
	bool ex;

	file_blocks(name, &ex);
	return ex;
}

/* open + claim + fill chunk idx of an already-open blob with pattern(seed) */
static int fill_chunk(struct bcache_blob *b, uint32_t idx, unsigned seed)
{
	static uint8_t buf[CH];
	int ret;

	ret = bcache_chunk_claim(b, idx, 1000);
	if (ret != 1)
		return ret == 0 ? -EEXIST : ret;
	pattern(buf, CH, (uint64_t)idx * CH, seed);
	return bcache_chunk_fill(b, idx, buf, CH, (uint64_t)idx * CH);
}

/* fill_chunk with a heap buffer: callable from several threads at once */
static int fill_chunk_r(struct bcache_blob *b, uint32_t idx, unsigned seed)
{
	uint8_t *buf;
	int ret;

	ret = bcache_chunk_claim(b, idx, 10000);
	if (ret != 1)
		return ret == 0 ? -EEXIST : ret;
	buf = malloc(CH);
	if (!buf) {
		bcache_chunk_abort(b, idx, -ENOMEM);
		return -ENOMEM;
	}
	pattern(buf, CH, (uint64_t)idx * CH, seed);
	ret = bcache_chunk_fill(b, idx, buf, CH, (uint64_t)idx * CH);
	free(buf);
	return ret;
}

static bool chunk_matches(struct bcache_blob *b, uint32_t idx, unsigned seed)
{
	static uint8_t buf[CH];

	memset(buf, 0, sizeof(buf));
	return !bcache_read(b, buf, CH, (uint64_t)idx * CH) && check_pattern(buf, CH, (uint64_t)idx * CH, seed);
}

static void test_ids(void)
{
	char longid[BCACHE_ID_MAX + 2];

	T_ASSERT(bcache_id_valid("sha256-0123abcdef"));
	T_ASSERT(bcache_id_valid("a.b_c-D9"));
	T_ASSERT(bcache_id_valid("x.statex"));
	T_ASSERT(!bcache_id_valid(""));
	T_ASSERT(!bcache_id_valid(NULL));
	T_ASSERT(!bcache_id_valid("."));
	T_ASSERT(!bcache_id_valid(".."));
	T_ASSERT(!bcache_id_valid(".hidden"));
	T_ASSERT(!bcache_id_valid("a/b"));
	T_ASSERT(!bcache_id_valid("../x"));
	T_ASSERT(!bcache_id_valid("sha256:abc"));
	T_ASSERT(!bcache_id_valid("x.state"));
	T_ASSERT(!bcache_id_valid("a b"));
	memset(longid, 'a', sizeof(longid));
	longid[BCACHE_ID_MAX] = 0;
	T_ASSERT(bcache_id_valid(longid));
	longid[BCACHE_ID_MAX] = 'a';
	longid[BCACHE_ID_MAX + 1] = 0;
	T_ASSERT(!bcache_id_valid(longid));
}

static void test_roundtrip_and_persist(void)
{
	struct bcache_stats st;
	struct bcache *c = NULL;
	struct bcache_blob *b = NULL, *b2 = NULL;
	uint8_t buf[100];

	new_dir();
	T_EQ_INT(bcache_open(dir, 0, &c), 0);
	if (!c)
		return;
	T_EQ_INT(bcache_blob_open(c, "bad/id", 4 * CH, 4, &b), -EINVAL);
	T_EQ_INT(bcache_blob_open(c, "blob1", 4 * CH, BCACHE_MAX_CHUNKS + 1, &b), -EINVAL);
	T_EQ_INT(bcache_blob_open(c, "blob1", 4 * CH, 4, &b), 0);
	T_EQ_U64(file_size("blob1"), 4 * CH);
	T_EQ_U64(file_blocks("blob1", NULL), 0); /* sparse */
	T_EQ_U64(file_size("blob1.state"), 64 + 8);
	/* same id, other geometry while open */
	T_EQ_INT(bcache_blob_open(c, "blob1", 4 * CH, 5, &b2), -EINVAL);
	T_EQ_INT(bcache_blob_open(c, "blob1", 4 * CH, 4, &b2), 0);
	T_ASSERT(b2 == b);
	bcache_blob_put(b2);

	T_ASSERT(!bcache_chunk_ready(b, 0));
	T_ASSERT(!bcache_chunk_ready(b, 4));
	T_EQ_INT(bcache_chunk_claim(b, 4, 0), -EINVAL);
	T_EQ_INT(fill_chunk(b, 0, 1), 0);
	T_EQ_INT(fill_chunk(b, 2, 1), 0);
	T_ASSERT(bcache_chunk_ready(b, 0) && bcache_chunk_ready(b, 2));
	T_ASSERT(!bcache_chunk_ready(b, 1) && !bcache_chunk_ready(b, 3));
	T_EQ_INT(bcache_ready_count(b), 2);
	T_EQ_INT(bcache_chunk_claim(b, 0, 0), 0);
	T_ASSERT(chunk_matches(b, 0, 1));
	T_ASSERT(chunk_matches(b, 2, 1));
	/* a sub-range */
	T_EQ_INT(bcache_read(b, buf, sizeof(buf), 2 * CH + 1000), 0);
	{
		uint8_t want[100];

		pattern(want, sizeof(want), 2 * CH + 1000, 1);
		T_ASSERT(!memcmp(buf, want, sizeof(want)));
	}
	T_EQ_INT(bcache_read(b, buf, sizeof(buf), 4 * CH - 50), -EINVAL);
	T_EQ_INT(bcache_read(b, buf, 1, UINT64_MAX), -EINVAL);

	/* fill without a claim; fill out of range releases the claim */
	T_EQ_INT(bcache_chunk_fill(b, 1, buf, sizeof(buf), CH), -EINVAL);
	T_EQ_INT(bcache_chunk_claim(b, 1, 0), 1);
	T_EQ_INT(bcache_chunk_fill(b, 1, buf, sizeof(buf), 4 * CH - 10), -EINVAL);
	T_ASSERT(!bcache_chunk_ready(b, 1));
	T_EQ_INT(bcache_chunk_claim(b, 1, 0), 1);
	bcache_chunk_abort(b, 1, -EIO);
	/* zero-length fill marks ready without I/O */
	T_EQ_INT(bcache_chunk_claim(b, 3, 0), 1);
	T_EQ_INT(bcache_chunk_fill(b, 3, buf, 0, 4 * CH), 0);
	T_ASSERT(bcache_chunk_ready(b, 3));

	bcache_get_stats(c, &st);
	T_EQ_U64(st.fills, 3);
	T_EQ_U64(st.fill_bytes, 2 * CH);
	T_EQ_U64(st.misses, 5);
	T_EQ_U64(st.hits, 1);
	T_EQ_U64(st.evictions, 0);
	bcache_blob_put(b);
	bcache_close(c);
	c = NULL;

	/* persistence across close/reopen */
	T_EQ_INT(bcache_open(dir, 0, &c), 0);
	if (!c)
		return;
	T_EQ_U64(bcache_total_usage(c), du_dir());
	T_EQ_INT(bcache_blob_open(c, "blob1", 4 * CH, 4, &b), 0);
	if (b) {
		T_EQ_INT(bcache_ready_count(b), 3);
		T_ASSERT(bcache_chunk_ready(b, 0) && bcache_chunk_ready(b, 2) && bcache_chunk_ready(b, 3));
		T_ASSERT(!bcache_chunk_ready(b, 1));
		T_ASSERT(chunk_matches(b, 0, 1));
		T_ASSERT(chunk_matches(b, 2, 1));
		T_EQ_INT(bcache_chunk_claim(b, 2, 0), 0);
		T_EQ_INT(bcache_chunk_claim(b, 1, 0), 1);
		bcache_chunk_abort(b, 1, -EIO);
		bcache_blob_put(b);
	}
	bcache_close(c);
}

/*
 * Two caches on one directory (two processes sharing a --cache-dir; flock
 * and OFD locks treat two opens in one process alike): chunks one makes
 * ready are hits for the other, bits of both survive in the state file, and
 * a blob the other has open is neither removed nor evicted.
 */
static void test_shared_dir(void)
{
	struct bcache *c = NULL, *c2 = NULL;
	struct bcache_blob *b = NULL, *b2 = NULL;
	static uint8_t buf[CH];
	uint64_t bytes = 0;

	new_dir();
	T_EQ_INT(bcache_open(dir, 0, &c), 0);
	T_EQ_INT(bcache_open(dir, 0, &c2), 0);
	T_EQ_INT(bcache_blob_open(c, "s1", 8 * CH, 8, &b), 0);
	T_EQ_INT(bcache_blob_open(c2, "s1", 8 * CH, 8, &b2), 0);
	if (!b || !b2)
		goto out;
	/* made ready by the first, a hit for the second: no claim to fetch */
	T_EQ_INT(fill_chunk(b, 0, 7), 0);
	T_ASSERT(!bcache_chunk_ready(b2, 0));
	T_EQ_INT(bcache_chunk_claim(b2, 0, 1000), 0);
	T_ASSERT(bcache_chunk_ready(b2, 0));
	T_EQ_INT(bcache_read(b2, buf, CH, 0), 0);
	T_ASSERT(check_pattern(buf, CH, 0, 7));
	/* both set bits in the same state word: neither write loses the other's */
	T_EQ_INT(fill_chunk(b2, 1, 7), 0);
	T_EQ_INT(fill_chunk(b, 2, 7), 0);
	/* open in the other cache: not removed, not evicted */
	bcache_blob_put(b);
	b = NULL;
	T_EQ_INT(bcache_remove(c, "s1"), -EBUSY);
	T_EQ_INT(bcache_blob_usage(c, "s1", &bytes), 0);
	bcache_blob_put(b2);
	b2 = NULL;
	bcache_close(c2);
	c2 = NULL;
	/* a third opener sees the chunks of both */
	T_EQ_INT(bcache_open(dir, 0, &c2), 0);
	T_EQ_INT(bcache_blob_open(c2, "s1", 8 * CH, 8, &b2), 0);
	if (b2) {
		T_ASSERT(bcache_chunk_ready(b2, 0) && bcache_chunk_ready(b2, 1) && bcache_chunk_ready(b2, 2));
		T_ASSERT(!bcache_chunk_ready(b2, 3));
		T_EQ_INT(bcache_read(b2, buf, CH, CH), 0);
		T_ASSERT(check_pattern(buf, CH, CH, 7));
		bcache_blob_put(b2);
		b2 = NULL;
	}
	bcache_close(c2);
	c2 = NULL;
	/* nobody has it open any more: removable */
	T_EQ_INT(bcache_remove(c, "s1"), 0);
out:
	bcache_blob_put(b);
	bcache_blob_put(b2);
	bcache_close(c2);
	bcache_close(c);
}

/* Eviction skips a blob another cache on the directory has open. */
static void test_shared_evict(void)
{
	struct bcache *c = NULL, *c2 = NULL;
	struct bcache_blob *b = NULL, *b2 = NULL;

	new_dir();
	T_EQ_INT(bcache_open(dir, 0, &c), 0);
	T_EQ_INT(bcache_blob_open(c, "e1", 8 * CH, 8, &b), 0);
	if (b) {
		T_EQ_INT(fill_chunk(b, 0, 1), 0);
		bcache_blob_put(b);
	}
	bcache_close(c);
	c = NULL;
	/* c2 holds e1 open; c starts with a 1-byte cap: e1 is over it but in use elsewhere */
	T_EQ_INT(bcache_open(dir, 0, &c2), 0);
	T_EQ_INT(bcache_blob_open(c2, "e1", 8 * CH, 8, &b2), 0);
	T_EQ_INT(bcache_open(dir, 1, &c), 0);
	T_ASSERT(file_blocks("e1", NULL) >= CH);
	if (b2) {
		T_ASSERT(bcache_chunk_ready(b2, 0));
		bcache_blob_put(b2);
	}
	bcache_close(c2);
	bcache_close(c);
	/* alone now: the capped cache evicts it at open */
	T_EQ_INT(bcache_open(dir, 1, &c), 0);
	T_EQ_INT(bcache_blob_usage(c, "e1", &(uint64_t){ 0 }), -ENOENT);
	bcache_close(c);
}

/* Create blob id (8 chunks) with chunk 0 ready, in a fresh cache dir. */
static void make_one(const char *id)
{
	struct bcache *c = NULL;
	struct bcache_blob *b = NULL;

	new_dir();
	T_EQ_INT(bcache_open(dir, 0, &c), 0);
	T_EQ_INT(bcache_blob_open(c, id, 8 * CH, 8, &b), 0);
	T_EQ_INT(fill_chunk(b, 0, 3), 0);
	bcache_blob_put(b);
	bcache_close(c);
	T_ASSERT(file_blocks(id, NULL) >= CH);
}

/* Reopen with the given geometry; expect the state discarded: nothing ready and an empty data file. */
static void expect_discarded(const char *id, uint64_t size, uint32_t n, int line)
{
	struct bcache *c = NULL;
	struct bcache_blob *b = NULL;
	char sname[300];

	snprintf(sname, sizeof(sname), "%s.state", id);
	T_EQ_INT(bcache_open(dir, 0, &c), 0);
	T_EQ_INT(bcache_blob_open(c, id, size, n, &b), 0);
	if (b) {
		if (bcache_ready_count(b) != 0 || bcache_chunk_ready(b, 0))
			T_FAIL("line %d: state not discarded", line);
		if (file_blocks(id, NULL) != 0 || file_size(id) != size)
			T_FAIL("line %d: data file not emptied (%llu blocks, size %llu)", line,
			       (unsigned long long)file_blocks(id, NULL),
			       (unsigned long long)file_size(id));
		if (file_size(sname) != bcache_state_size(n))
			T_FAIL("line %d: fresh state file has the wrong size", line);
		/* usable again */
		T_EQ_INT(fill_chunk(b, 0, 4), 0);
		T_ASSERT(chunk_matches(b, 0, 4));
	}
	bcache_blob_put(b);
	bcache_close(c);
}

static void patch_state(const char *id, uint64_t off, const void *bytes, size_t n, bool rehash)
{
	char p[512], sname[300];
	uint8_t hdr[64];
	int fd;

	snprintf(sname, sizeof(sname), "%s.state", id);
	path_of(p, sizeof(p), sname);
	fd = open(p, O_RDWR);
	T_ASSERT(fd >= 0);
	if (fd < 0)
		return;
	T_EQ_INT(pwrite(fd, bytes, n, (off_t)off), (long long)n);
	if (rehash) {
		T_EQ_INT(pread(fd, hdr, 64, 0), 64);
		lz_put_le64(hdr + 56, XXH64(hdr, 56, 0));
		T_EQ_INT(pwrite(fd, hdr, 64, 0), 64);
	}
	close(fd);
}

static void truncate_file(const char *name, off_t len)
{
	char p[512];

	path_of(p, sizeof(p), name);
	T_EQ_INT(truncate(p, len), 0);
}

static void test_state_validation(void)
{
	uint8_t v8[8];
	char p[512];

	/* sanity: an untouched state is trusted */
	make_one("s");
	{
		struct bcache *c = NULL;
		struct bcache_blob *b = NULL;

		T_EQ_INT(bcache_open(dir, 0, &c), 0);
		T_EQ_INT(bcache_blob_open(c, "s", 8 * CH, 8, &b), 0);
		if (b) {
			T_EQ_INT(bcache_ready_count(b), 1);
			T_ASSERT(chunk_matches(b, 0, 3));
		}
		bcache_blob_put(b);
		bcache_close(c);
	}

	/* bad checksum */
	make_one("s");
	v8[0] = 0x5a;
	patch_state("s", 56, v8, 1, false);
	expect_discarded("s", 8 * CH, 8, __LINE__);

	/* a header field changed without fixing the checksum */
	make_one("s");
	lz_put_le32(v8, 9);
	patch_state("s", 24, v8, 4, false);
	expect_discarded("s", 8 * CH, 8, __LINE__);

	/* wrong chunk count with a valid checksum (and then a wrong size) */
	make_one("s");
	lz_put_le32(v8, 9);
	patch_state("s", 24, v8, 4, true);
	expect_discarded("s", 8 * CH, 8, __LINE__);

	/* reopened with a different chunk count / blob size than recorded */
	make_one("s");
	expect_discarded("s", 8 * CH, 16, __LINE__);
	make_one("s");
	expect_discarded("s", 16 * CH, 8, __LINE__);

	/* truncated: mid-header, and header without the bitmap */
	make_one("s");
	truncate_file("s.state", 40);
	expect_discarded("s", 8 * CH, 8, __LINE__);
	make_one("s");
	truncate_file("s.state", 64);
	expect_discarded("s", 8 * CH, 8, __LINE__);
	/* trailing garbage */
	make_one("s");
	truncate_file("s.state", 64 + 8 + 1);
	expect_discarded("s", 8 * CH, 8, __LINE__);
	/* a bit past the chunk count */
	make_one("s");
	lz_put_le64(v8, 1ull | 1ull << 8);
	patch_state("s", 64, v8, 8, false);
	expect_discarded("s", 8 * CH, 8, __LINE__);
	/* bad magic */
	make_one("s");
	patch_state("s", 0, "XX", 2, true);
	expect_discarded("s", 8 * CH, 8, __LINE__);
	/* version 2 */
	make_one("s");
	lz_put_le32(v8, 2);
	patch_state("s", 8, v8, 4, true);
	expect_discarded("s", 8 * CH, 8, __LINE__);
	/* state file missing, data present */
	make_one("s");
	path_of(p, sizeof(p), "s.state");
	T_EQ_INT(unlink(p), 0);
	expect_discarded("s", 8 * CH, 8, __LINE__);
	/* data file shrunk (or replaced) behind a valid state */
	make_one("s");
	truncate_file("s", CH);
	expect_discarded("s", 8 * CH, 8, __LINE__);
	make_one("s");
	path_of(p, sizeof(p), "s");
	T_EQ_INT(unlink(p), 0);
	expect_discarded("s", 8 * CH, 8, __LINE__);
	/* the state file is a huge sparse file */
	make_one("s");
	truncate_file("s.state", 1ll << 40);
	expect_discarded("s", 8 * CH, 8, __LINE__);
}

/* The parser directly: the properties the fuzz target checks, on known inputs. */
static void test_state_parse(void)
{
	struct bcache_state_info info;
	const char *why = NULL;
	uint8_t buf[64 + 16];

	memset(buf, 0, sizeof(buf));
	bcache_state_encode_hdr(buf, 1000, 65);
	T_EQ_INT(bcache_state_parse(buf, sizeof(buf), &info, &why), 0);
	T_EQ_U64(info.blob_size, 1000);
	T_EQ_INT(info.nchunks, 65);
	T_EQ_INT(bcache_state_parse(buf, sizeof(buf) - 1, &info, &why), -EFSCORRUPTED);
	T_EQ_STR(why, "bitmap truncated");
	buf[64 + 8] = 2; /* chunk 65: past the count */
	T_EQ_INT(bcache_state_parse(buf, sizeof(buf), &info, &why), -EFSCORRUPTED);
	T_EQ_STR(why, "bits set past the chunk count");
	buf[64 + 8] = 1; /* chunk 64: fine */
	T_EQ_INT(bcache_state_parse(buf, sizeof(buf), &info, &why), 0);
	bcache_state_encode_hdr(buf, 1000, BCACHE_MAX_CHUNKS + 1);
	T_EQ_INT(bcache_state_parse(buf, sizeof(buf), &info, &why), -EFSCORRUPTED);
	T_EQ_STR(why, "chunk count over the cap");
	bcache_state_encode_hdr(buf, BCACHE_MAX_BLOB_SIZE + 1, 1);
	T_EQ_INT(bcache_state_parse(buf, sizeof(buf), &info, &why), -EFSCORRUPTED);
	T_EQ_STR(why, "blob size over the cap");
	bcache_state_encode_hdr(buf, 0, 0);
	T_EQ_INT(bcache_state_parse(buf, 64, &info, &why), 0);
	T_EQ_INT(bcache_state_parse(buf, 63, &info, &why), -EFSCORRUPTED);
}

/* A fill that "crashed" after writing the data but before recording the bit. */
static void test_crash_unmarked(void)
{
	struct bcache *c = NULL;
	struct bcache_blob *b = NULL;
	uint8_t buf[CH];
	char p[512];
	int fd;

	make_one("k");
	/* chunk 1's bytes land in the data file, its bit never does */
	pattern(buf, CH, CH, 3);
	path_of(p, sizeof(p), "k");
	fd = open(p, O_WRONLY);
	T_ASSERT(fd >= 0);
	T_EQ_INT(pwrite(fd, buf, CH, CH), CH);
	fsync(fd);
	close(fd);

	T_EQ_INT(bcache_open(dir, 0, &c), 0);
	T_EQ_INT(bcache_blob_open(c, "k", 8 * CH, 8, &b), 0);
	if (b) {
		T_ASSERT(bcache_chunk_ready(b, 0));
		T_ASSERT(!bcache_chunk_ready(b, 1));
		T_EQ_INT(bcache_ready_count(b), 1);
		/* not trusted: the next reader must fetch it */
		T_EQ_INT(bcache_chunk_claim(b, 1, 0), 1);
		bcache_chunk_abort(b, 1, -EIO);
		T_EQ_INT(fill_chunk(b, 1, 5), 0);
		T_ASSERT(chunk_matches(b, 1, 5));
	}
	bcache_blob_put(b);
	bcache_close(c);
}

#define NTHREADS 8
#define NROUNDS 16

struct sf_ctx {
	struct bcache_blob *b;
	pthread_barrier_t bar;
	_Atomic int owners[NROUNDS];
	_Atomic int bad_reads, errors;
};

static void *sf_thread(void *arg)
{
	struct sf_ctx *x = arg;
	uint8_t *buf = malloc(CH);

	for (uint32_t r = 0; r < NROUNDS && buf; r++) {
		int ret;

		pthread_barrier_wait(&x->bar);
		ret = bcache_chunk_claim(x->b, r, 10000);
		if (ret == 1) {
			atomic_fetch_add(&x->owners[r], 1);
			/* let every other thread get stuck behind us first */
			for (int i = 0; i < 5000 && bcache_chunk_waiters(x->b, r) < NTHREADS - 1; i++)
				usleep(1000);
			pattern(buf, CH, (uint64_t)r * CH, 7);
			ret = bcache_chunk_fill(x->b, r, buf, CH, (uint64_t)r * CH);
		}
		if (ret) {
			atomic_fetch_add(&x->errors, 1);
			continue;
		}
		memset(buf, 0, CH);
		if (bcache_read(x->b, buf, CH, (uint64_t)r * CH) ||
		    !check_pattern(buf, CH, (uint64_t)r * CH, 7))
			atomic_fetch_add(&x->bad_reads, 1);
	}
	free(buf);
	return NULL;
}

static void test_single_flight(void)
{
	struct bcache *c = NULL;
	struct bcache_stats st;
	pthread_t th[NTHREADS];
	struct sf_ctx x;

	memset(&x, 0, sizeof(x));
	new_dir();
	T_EQ_INT(bcache_open(dir, 0, &c), 0);
	if (!c)
		return;
	T_EQ_INT(bcache_blob_open(c, "sf", NROUNDS * CH, NROUNDS, &x.b), 0);
	pthread_barrier_init(&x.bar, NULL, NTHREADS);
	for (int i = 0; i < NTHREADS; i++)
		pthread_create(&th[i], NULL, sf_thread, &x);
	for (int i = 0; i < NTHREADS; i++)
		pthread_join(th[i], NULL);
	pthread_barrier_destroy(&x.bar);
	for (int r = 0; r < NROUNDS; r++)
		if (atomic_load(&x.owners[r]) != 1)
			T_FAIL("chunk %d: %d owners, want exactly 1", r, atomic_load(&x.owners[r]));
	T_EQ_INT(atomic_load(&x.errors), 0);
	T_EQ_INT(atomic_load(&x.bad_reads), 0);
	bcache_get_stats(c, &st);
	T_EQ_U64(st.fills, NROUNDS);
	T_EQ_U64(st.misses, NROUNDS);
	T_EQ_U64(st.hits, NROUNDS * (NTHREADS - 1));
	T_EQ_INT(bcache_ready_count(x.b), NROUNDS);
	bcache_blob_put(x.b);
	bcache_close(c);
}

struct waiter {
	struct bcache_blob *b;
	uint32_t idx;
	int timeout_ms;
	int ret;
};

static void *waiter_thread(void *arg)
{
	struct waiter *w = arg;

	w->ret = bcache_chunk_claim(w->b, w->idx, w->timeout_ms);
	return NULL;
}

static bool wait_for_waiters(struct bcache_blob *b, uint32_t idx, unsigned n)
{
	for (int i = 0; i < 10000; i++) {
		if (bcache_chunk_waiters(b, idx) >= n)
			return true;
		usleep(1000);
	}
	return false;
}

static void test_timeout_and_abort(void)
{
	struct bcache *c = NULL;
	struct bcache_blob *b = NULL;
	struct waiter w[3];
	pthread_t th[3];

	new_dir();
	T_EQ_INT(bcache_open(dir, 0, &c), 0);
	T_EQ_INT(bcache_blob_open(c, "t", 4 * CH, 4, &b), 0);
	if (!b) {
		bcache_close(c);
		return;
	}

	/* the owner never fills: a waiter times out, the owner keeps the claim */
	T_EQ_INT(bcache_chunk_claim(b, 0, 0), 1);
	T_EQ_INT(bcache_chunk_claim(b, 0, 0), -ETIMEDOUT);
	w[0] = (struct waiter){ .b = b, .idx = 0, .timeout_ms = 100 };
	pthread_create(&th[0], NULL, waiter_thread, &w[0]);
	pthread_join(th[0], NULL);
	T_EQ_INT(w[0].ret, -ETIMEDOUT);
	T_EQ_INT(bcache_chunk_waiters(b, 0), 0);
	T_EQ_INT(bcache_chunk_claim(b, 0, 1), -ETIMEDOUT);

	/* abort propagates the owner's error to every waiter */
	for (int i = 0; i < 3; i++) {
		w[i] = (struct waiter){ .b = b, .idx = 0, .timeout_ms = i == 2 ? -1 : 20000 };
		pthread_create(&th[i], NULL, waiter_thread, &w[i]);
	}
	T_ASSERT(wait_for_waiters(b, 0, 3));
	bcache_chunk_abort(b, 0, -EPROTO);
	for (int i = 0; i < 3; i++) {
		pthread_join(th[i], NULL);
		T_EQ_INT(w[i].ret, -EPROTO);
	}
	/* the failure is not sticky: the next claim owns the fetch */
	T_EQ_INT(bcache_chunk_claim(b, 0, 0), 1);
	/* a non-negative error becomes -EIO */
	w[0] = (struct waiter){ .b = b, .idx = 0, .timeout_ms = 20000 };
	pthread_create(&th[0], NULL, waiter_thread, &w[0]);
	T_ASSERT(wait_for_waiters(b, 0, 1));
	bcache_chunk_abort(b, 0, 0);
	pthread_join(th[0], NULL);
	T_EQ_INT(w[0].ret, -EIO);
	/* abort of an unclaimed chunk is harmless */
	bcache_chunk_abort(b, 3, -EIO);

	/* a waiter with a deadline sees a fill that comes in time */
	T_EQ_INT(bcache_chunk_claim(b, 0, 0), 1);
	w[0] = (struct waiter){ .b = b, .idx = 0, .timeout_ms = 20000 };
	pthread_create(&th[0], NULL, waiter_thread, &w[0]);
	T_ASSERT(wait_for_waiters(b, 0, 1));
	{
		static uint8_t buf[CH];

		pattern(buf, CH, 0, 9);
		T_EQ_INT(bcache_chunk_fill(b, 0, buf, CH, 0), 0);
	}
	pthread_join(th[0], NULL);
	T_EQ_INT(w[0].ret, 0);
	T_ASSERT(chunk_matches(b, 0, 9));
	bcache_blob_put(b);
	bcache_close(c);
}

static void set_mtime(const char *name, time_t t)
{
	struct timespec ts[2] = { { .tv_sec = t }, { .tv_sec = t } };
	char p[512];

	path_of(p, sizeof(p), name);
	T_EQ_INT(utimensat(AT_FDCWD, p, ts, 0), 0);
}

static void test_eviction(void)
{
	struct bcache *c = NULL;
	struct bcache_blob *a = NULL, *b = NULL, *cc = NULL, *d = NULL, *e = NULL;
	struct bcache_stats st;
	uint64_t u = 0, cap, x;

	/* measure one blob with one chunk: data blocks + state file blocks */
	new_dir();
	T_EQ_INT(bcache_open(dir, 0, &c), 0);
	T_EQ_INT(bcache_blob_open(c, "m", 4 * CH, 4, &a), 0);
	T_EQ_INT(fill_chunk(a, 0, 1), 0);
	T_EQ_INT(bcache_blob_usage(c, "m", &u), 0);
	bcache_blob_put(a);
	bcache_close(c);
	T_ASSERT(u >= CH);
	cap = u * 5 / 2; /* room for two such blobs, not three */

	new_dir();
	T_EQ_INT(bcache_open(dir, cap, &c), 0);
	if (!c)
		return;
	/* A: opened first (oldest) and held open the whole time */
	T_EQ_INT(bcache_blob_open(c, "A", 4 * CH, 4, &a), 0);
	T_EQ_INT(fill_chunk(a, 0, 1), 0);
	T_EQ_INT(bcache_blob_open(c, "B", 4 * CH, 4, &b), 0);
	T_EQ_INT(fill_chunk(b, 0, 1), 0);
	bcache_blob_put(b);
	T_ASSERT(exists("B") && exists("A"));
	/* C pushes usage over the cap: B is the only unused blob */
	T_EQ_INT(bcache_blob_open(c, "C", 4 * CH, 4, &cc), 0);
	T_EQ_INT(fill_chunk(cc, 0, 1), 0);
	T_ASSERT(!exists("B") && !exists("B.state"));
	T_ASSERT(exists("A") && exists("C"));
	T_EQ_INT(bcache_blob_usage(c, "B", &x), -ENOENT);
	bcache_get_stats(c, &st);
	T_EQ_U64(st.evictions, 1);
	T_ASSERT(bcache_total_usage(c) <= cap);
	T_EQ_U64(bcache_total_usage(c), du_dir());

	/* everything in use: over the cap, nothing evicted */
	T_EQ_INT(bcache_blob_open(c, "D", 4 * CH, 4, &d), 0);
	T_EQ_INT(fill_chunk(d, 0, 1), 0);
	T_ASSERT(exists("A") && exists("C") && exists("D"));
	T_ASSERT(bcache_total_usage(c) > cap);
	T_EQ_U64(bcache_total_usage(c), du_dir());
	T_ASSERT(chunk_matches(a, 0, 1));
	/* C becomes unused: it goes at once; the LRU is A, but A is open */
	bcache_blob_put(cc);
	T_ASSERT(!exists("C") && exists("A") && exists("D"));
	bcache_get_stats(c, &st);
	T_EQ_U64(st.evictions, 2);

	/* LRU order among unused blobs: D (put first) goes before E */
	bcache_blob_put(d);
	T_EQ_INT(bcache_blob_open(c, "E", 4 * CH, 4, &e), 0);
	T_EQ_INT(fill_chunk(e, 0, 1), 0);
	bcache_blob_put(e);
	T_ASSERT(exists("A") && exists("E") && !exists("D"));
	bcache_blob_put(a);
	T_ASSERT(exists("A") && exists("E"));
	bcache_close(c);
	c = NULL;

	/* restart: file mtimes seed the LRU. Make E older than A, then shrink the cap. */
	set_mtime("E", 1000000);
	set_mtime("E.state", 1000000);
	T_EQ_INT(bcache_open(dir, u * 3 / 2, &c), 0);
	T_ASSERT(!exists("E") && exists("A"));
	bcache_get_stats(c, &st);
	T_EQ_U64(st.evictions, 1);
	bcache_close(c);
}

static void test_usage_and_remove(void)
{
	struct bcache *c = NULL;
	struct bcache_blob *b = NULL, *b2 = NULL;
	uint64_t x = 0, y = 0;

	new_dir();
	T_EQ_INT(bcache_open(dir, 0, &c), 0);
	if (!c)
		return;
	T_EQ_U64(bcache_total_usage(c), 0);
	T_EQ_INT(bcache_blob_open(c, "u1", 64 * CH, 64, &b), 0);
	T_EQ_INT(bcache_blob_open(c, "u2", 8 * CH, 8, &b2), 0);
	for (uint32_t i = 0; i < 64; i += 3)
		T_EQ_INT(fill_chunk(b, i, 2), 0);
	T_EQ_INT(fill_chunk(b2, 7, 2), 0);
	T_EQ_INT(bcache_blob_usage(c, "u1", &x), 0);
	T_EQ_U64(x, file_blocks("u1", NULL) + file_blocks("u1.state", NULL));
	T_ASSERT(x >= 22ull * CH);
	T_ASSERT(x < 64ull * CH); /* sparse: unfilled chunks cost nothing */
	T_EQ_INT(bcache_blob_usage(c, "u2", &y), 0);
	T_EQ_U64(y, file_blocks("u2", NULL) + file_blocks("u2.state", NULL));
	T_EQ_U64(bcache_total_usage(c), x + y);
	T_EQ_U64(bcache_total_usage(c), du_dir());
	T_EQ_INT(bcache_blob_usage(c, "nope", &x), -ENOENT);
	T_EQ_INT(bcache_blob_usage(c, "../u1", &x), -EINVAL);

	/* remove refuses an open blob */
	T_EQ_INT(bcache_remove(c, "u1"), -EBUSY);
	T_ASSERT(exists("u1"));
	bcache_blob_put(b);
	/* usage of a blob that is not open */
	T_EQ_INT(bcache_blob_usage(c, "u1", &x), 0);
	T_EQ_U64(x, file_blocks("u1", NULL) + file_blocks("u1.state", NULL));
	T_EQ_INT(bcache_remove(c, "u1"), 0);
	T_ASSERT(!exists("u1") && !exists("u1.state"));
	T_EQ_INT(bcache_remove(c, "u1"), -ENOENT);
	T_EQ_INT(bcache_remove(c, "x/y"), -EINVAL);
	T_EQ_U64(bcache_total_usage(c), y);
	T_EQ_U64(bcache_total_usage(c), du_dir());
	bcache_blob_put(b2);
	bcache_close(c);
	c = NULL;

	/* after a restart the scan finds the same numbers; foreign files are ignored */
	{
		char p[512];
		int fd;

		path_of(p, sizeof(p), ".tmp-not-ours");
		fd = open(p, O_CREAT | O_WRONLY, 0600);
		T_ASSERT(fd >= 0 && write(fd, "x", 1) == 1);
		close(fd);
	}
	T_EQ_INT(bcache_open(dir, 0, &c), 0);
	T_EQ_U64(bcache_total_usage(c), y);
	T_EQ_INT(bcache_remove(c, "u2"), 0);
	T_EQ_U64(bcache_total_usage(c), 0);
	bcache_close(c);
}

/* io_uring_setup fails with ENOSYS in this process from now on (seccomp). */
static int deny_io_uring(void)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA)),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = LZ_ARRAY_SIZE(f), .filter = f };

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		return -errno;
	return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) ? -errno : 0;
}

/* The pread/pwrite path used when io_uring is unavailable: in a child that
 * cannot create rings, the cache still opens, fills, persists and reads. */
static void test_no_io_uring(void)
{
	int status = -1;
	pid_t pid;

	new_dir();
	fflush(NULL);
	pid = fork();
	T_ASSERT(pid >= 0);
	if (pid == 0) {
		struct bcache *c = NULL;
		struct bcache_blob *b = NULL;

		if (deny_io_uring())
			_exit(3);
		if (bcache_open(dir, 0, &c) || c->io.have_ring)
			_exit(4);
		if (bcache_blob_open(c, "f", 4 * CH, 4, &b) || fill_chunk(b, 1, 6) ||
		    !chunk_matches(b, 1, 6))
			_exit(5);
		bcache_blob_put(b);
		bcache_close(c);
		if (bcache_open(dir, 0, &c) || bcache_blob_open(c, "f", 4 * CH, 4, &b) ||
		    !bcache_chunk_ready(b, 1) || !chunk_matches(b, 1, 6))
			_exit(6);
		bcache_blob_put(b);
		bcache_close(c);
		_exit(t_failures ? 7 : 0);
	}
	T_EQ_INT(waitpid(pid, &status, 0), pid);
	T_ASSERT(WIFEXITED(status));
	T_EQ_INT(WEXITSTATUS(status), 0);
}

/* A fill that cannot store its data: waiters claim again and one becomes the owner. */
static void test_fill_failure_retry(void)
{
	struct bcache *c = NULL;
	struct bcache_blob *b = NULL;
	static uint8_t buf[CH];
	struct waiter w;
	pthread_t th;
	char p[512];
	int rw, ro;

	new_dir();
	T_EQ_INT(bcache_open(dir, 0, &c), 0);
	T_EQ_INT(bcache_blob_open(c, "r", 4 * CH, 4, &b), 0);
	if (!b) {
		bcache_close(c);
		return;
	}
	T_EQ_INT(bcache_chunk_claim(b, 2, 0), 1);
	w = (struct waiter){ .b = b, .idx = 2, .timeout_ms = 20000 };
	pthread_create(&th, NULL, waiter_thread, &w);
	T_ASSERT(wait_for_waiters(b, 2, 1));
	/* make the data file read-only under the blob: the write fails with EBADF */
	path_of(p, sizeof(p), "r");
	ro = open(p, O_RDONLY | O_CLOEXEC);
	rw = dup(b->data_fd);
	T_ASSERT(ro >= 0 && rw >= 0);
	dup2(ro, b->data_fd);
	pattern(buf, CH, 2 * CH, 8);
	T_EQ_INT(bcache_chunk_fill(b, 2, buf, CH, 2 * CH), -EBADF);
	pthread_join(th, NULL);
	T_EQ_INT(w.ret, 1); /* the waiter now owns the fetch */
	T_ASSERT(!bcache_chunk_ready(b, 2));
	dup2(rw, b->data_fd);
	close(ro);
	close(rw);
	T_EQ_INT(bcache_chunk_fill(b, 2, buf, CH, 2 * CH), 0);
	T_ASSERT(chunk_matches(b, 2, 8));
	bcache_blob_put(b);
	bcache_close(c);
}

/* A burst of readers and writers, more than the I/O queue holds: push back, no deadlock. */
#define BURST_THREADS 48
#define BURST_READS 40

struct burst_arg {
	struct bcache_blob *b;
	uint32_t own;   /* chunk this thread fills */
};

static void *burst_thread(void *arg)
{
	struct burst_arg *a = arg;
	uint8_t small[4096];

	if (fill_chunk_r(a->b, a->own, 12))
		atomic_fetch_add(&stress_bad, 1);
	for (int i = 0; i < BURST_READS; i++) {
		uint32_t idx = i % 5 == 4 ? a->own : (uint32_t)(i % 5);
		uint64_t off = (uint64_t)idx * CH + (uint64_t)(i * 4096) % CH;

		if (bcache_read(a->b, small, sizeof(small), off) ||
		    !check_pattern(small, sizeof(small), off, 12))
			atomic_fetch_add(&stress_bad, 1);
	}
	return NULL;
}

/* Many threads, several blobs, a cap that forces evictions while others fill and read. */
#define STRESS_THREADS 6
#define STRESS_ITERS 120

static void *stress_thread(void *arg)
{
	struct bcache *c = arg;
	unsigned seed = (unsigned)(uintptr_t)pthread_self();
	uint8_t *buf = malloc(CH);

	for (int i = 0; i < STRESS_ITERS && buf; i++) {
		char id[16];
		struct bcache_blob *b = NULL;
		uint32_t idx;
		int ret;

		seed = seed * 1103515245u + 12345u;
		snprintf(id, sizeof(id), "s%u", (seed >> 8) % 5);
		idx = (seed >> 16) % 8;
		if (bcache_blob_open(c, id, 8 * CH, 8, &b)) {
			atomic_fetch_add(&stress_bad, 1);
			continue;
		}
		ret = bcache_chunk_claim(b, idx, 10000);
		if (ret == 1) {
			pattern(buf, CH, (uint64_t)idx * CH, 11);
			ret = bcache_chunk_fill(b, idx, buf, CH, (uint64_t)idx * CH);
		}
		if (ret == 0) {
			if (bcache_read(b, buf, CH, (uint64_t)idx * CH) ||
			    !check_pattern(buf, CH, (uint64_t)idx * CH, 11))
				atomic_fetch_add(&stress_bad, 1);
		} else {
			atomic_fetch_add(&stress_bad, 1);
		}
		if (i % 17 == 0) {
			uint64_t x;

			bcache_blob_usage(c, id, &x);
			bcache_total_usage(c);
			bcache_remove(c, id); /* usually -EBUSY */
		}
		bcache_blob_put(b);
	}
	free(buf);
	return NULL;
}

static void test_burst(void)
{
	struct bcache *c = NULL;
	struct bcache_blob *b = NULL;
	pthread_t th[BURST_THREADS];
	struct burst_arg a[BURST_THREADS];
	const uint32_t n = 4 + BURST_THREADS;

	new_dir();
	T_EQ_INT(bcache_open(dir, 0, &c), 0);
	T_EQ_INT(bcache_blob_open(c, "q", n * CH, n, &b), 0);
	if (!b) {
		bcache_close(c);
		return;
	}
	/* a queue of 2 and one write+fsync (or two reads) in flight at a time */
	bcache_io_set_limits(&c->io, 2, 2);
	for (uint32_t i = 0; i < 4; i++)
		T_EQ_INT(fill_chunk(b, i, 12), 0);
	atomic_store(&stress_bad, 0);
	for (int i = 0; i < BURST_THREADS; i++) {
		a[i] = (struct burst_arg){ .b = b, .own = 4 + (uint32_t)i };
		pthread_create(&th[i], NULL, burst_thread, &a[i]);
	}
	for (int i = 0; i < BURST_THREADS; i++)
		pthread_join(th[i], NULL);
	T_EQ_INT(atomic_load(&stress_bad), 0);
	T_EQ_INT(bcache_ready_count(b), n);
	bcache_blob_put(b);
	bcache_close(c);
}

static void test_stress(void)
{
	struct bcache *c = NULL;
	pthread_t th[STRESS_THREADS];
	struct bcache_stats st;

	new_dir();
	T_EQ_INT(bcache_open(dir, 12ull * CH, &c), 0);
	if (!c)
		return;
	for (int i = 0; i < STRESS_THREADS; i++)
		pthread_create(&th[i], NULL, stress_thread, c);
	for (int i = 0; i < STRESS_THREADS; i++)
		pthread_join(th[i], NULL);
	T_EQ_INT(atomic_load(&stress_bad), 0);
	bcache_get_stats(c, &st);
	T_ASSERT(st.evictions > 0);
	T_EQ_U64(st.fills, st.misses);
	T_EQ_U64(bcache_total_usage(c), du_dir());
	T_ASSERT(bcache_total_usage(c) <= 12ull * CH);
	bcache_close(c);
}

/* Fail every allocation in turn; cleanup paths must not crash or leak (ASan). */
static void test_alloc_failures(void)
{
	int n, complete = 0;

	for (n = 1; n < 200 && !complete; n++) {
		struct bcache *c = NULL;
		struct bcache_blob *b = NULL;
		uint8_t buf[512];
		int ret;

		new_dir();
		lz_fail_alloc_at(n);
		if (bcache_open(dir, 0, &c))
			goto next;
		if (bcache_blob_open(c, "f", 8 * CH, 8, &b))
			goto next;
		ret = bcache_chunk_claim(b, 0, 0);
		if (ret == 1) {
			memset(buf, 7, sizeof(buf));
			if (bcache_chunk_fill(b, 0, buf, sizeof(buf), 0))
				goto next;
			complete = bcache_chunk_ready(b, 0) && !bcache_read(b, buf, sizeof(buf), 0);
		}
next:
		lz_fail_alloc_at(0);
		bcache_blob_put(b);
		bcache_close(c);
	}
	T_ASSERT(complete);
	T_ASSERT(n > 3);
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	return remove(p);
}

int main(void)
{
	snprintf(root, sizeof(root), "/tmp/lz-bcache.XXXXXX");
	if (!mkdtemp(root)) {
		perror("mkdtemp");
		return 1;
	}
	lz_log_level = getenv("LZ_DEBUG") ? LZ_LOG_DBG : LZ_LOG_ERR - 1; /* expected errors stay quiet */

	test_no_io_uring(); /* forks: first, while this process has no other threads */
	test_ids();
	test_state_parse();
	test_roundtrip_and_persist();
	test_shared_dir();
	test_shared_evict();
	test_state_validation();
	test_crash_unmarked();
	test_single_flight();
	test_timeout_and_abort();
	test_eviction();
	test_usage_and_remove();
	test_fill_failure_retry();
	test_burst();
	test_stress();
	test_alloc_failures();

	nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	T_DONE();
}
