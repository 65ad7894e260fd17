/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_rafs_alloc.c - fail every allocation of opening, walking and reading
 * each positive RAFS fixture in turn (lz_fail_alloc_at(N) for N = 1, 2, ...):
 * each failure must surface as -ENOMEM from the call that hit it, never as a
 * crash, a different error, wrong bytes, or a leak (make check runs this
 * under ASan with detect_leaks=1). A fixture is done once several runs in a
 * row complete with no failure: N has passed its last allocation.
 */
#include "lazyimg/imgfs.h"
#include "lazyimg/rafs.h"
#include "../t.h"

#include <pthread.h>
#include <sys/stat.h>

#define MAX_FILES   64
#define READ_CHUNK  (128u << 10)
#define CLEAN_RUNS  4          /* consecutive clean runs that end the loop */
#define MAX_N       100000

struct fixture {
	const char *boot;     /* under fixtures/ */
	const char *blobs;    /* blob directory under fixtures/ */
};

static const struct fixture fixtures[] = {
	{ "rafs/sha256-nocompress-repeatable", "rafs/blobs" },
	{ "rafs/blake3-lz4_block-non_repeatable", "rafs/blobs" },
	{ "rafs/repeatable-2020/blake3-lz4_block-non_repeatable", "rafs/blobs" },
	{ "rafs/repeatable-2020/sha256-nocompress-repeatable", "rafs/blobs" },
	{ "rafs/rafs-v6-2.2.boot", "rafs/blobs" },
	/* a data blob carrying its bootstrap in the ToC; its blob is the file itself */
	{ "rafs/toc/2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca", "rafs/toc" },
};

/* What one run saw: compared with the fault-free run. */
struct result {
	size_t entries;
	size_t nfiles;
	uint64_t ino[MAX_FILES];
	uint64_t size[MAX_FILES];
	uint64_t hash[MAX_FILES];  /* FNV-1a of the whole file */
};

static int collect(void *arg, const char *path, const struct img_attr *a)
{
	struct result *r = arg;

	r->entries++;
	if (S_ISREG(a->mode) && r->nfiles < MAX_FILES) {
		r->ino[r->nfiles] = a->ino;
		r->size[r->nfiles] = a->size;
		r->nfiles++;
	}
	return 0;
}

static uint64_t fnv(uint64_t h, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return h;
}

/*
 * Open, walk, read every regular file. Returns 0 when all of it succeeded,
 * else the first error (after checking that it is -ENOMEM).
 */
static int run(const struct fixture *fx, struct result *r, uint8_t *buf, long n)
{
	struct rafs_opts o = { .validate = true, .blob_dir = t_fixture(fx->blobs) };
	struct rafs *fs = NULL;
	struct image *img;
	int ret;

	memset(r, 0, sizeof(*r));
	ret = rafs_open_file(t_fixture(fx->boot), &o, &fs);
	if (ret) {
		if (ret != -ENOMEM)
			T_FAIL("%s, allocation %ld failing: open: %d (%s), want -ENOMEM", fx->boot, n, ret,
			       lz_strerror(ret));
		return ret;
	}
	img = rafs_image(fs);
	ret = imgfs_walk(img, collect, r);
	if (ret) {
		if (ret != -ENOMEM)
			T_FAIL("%s, allocation %ld failing: walk: %d (%s), want -ENOMEM", fx->boot, n, ret,
			       lz_strerror(ret));
		goto out;
	}
	for (size_t i = 0; i < r->nfiles && !ret; i++) {
		uint64_t h = 0xcbf29ce484222325ull;

		for (uint64_t off = 0; off < r->size[i];) {
			ssize_t got = img->ops->read(img, r->ino[i], buf, READ_CHUNK, off);

			if (got < 0) {
				ret = (int)got;
				if (ret != -ENOMEM)
					T_FAIL("%s, allocation %ld failing: read of inode %llu at %llu: %d (%s), want -ENOMEM",
					       fx->boot, n, (unsigned long long)r->ino[i], (unsigned long long)off,
					       ret, lz_strerror(ret));
				break;
			}
			if (got == 0) {
				T_FAIL("%s: read of inode %llu stopped at %llu of %llu bytes", fx->boot,
				       (unsigned long long)r->ino[i], (unsigned long long)off,
				       (unsigned long long)r->size[i]);
				ret = -EIO;
				break;
			}
			h = fnv(h, buf, (size_t)got);
			off += (uint64_t)got;
		}
		r->hash[i] = h;
	}
out:
	rafs_close(fs);
	return ret;
}

struct base_job {
	const struct fixture *fx;
	struct result *r;
	uint8_t *buf;
	int ret;
};

static void *base_thread(void *arg)
{
	struct base_job *j = arg;

	j->ret = run(j->fx, j->r, j->buf, 0);
	return NULL;
}

/*
 * The fault-free run. The first fixture's runs in a thread of its own, so
 * that the reader's per-thread buffers (blob.c) are first allocated inside
 * the fault loop, on this thread, and their failures get injected too. (Only
 * the first: the zstd context of common/codec.c is thread-local with no
 * destructor, and the first fixture has no zstd data.)
 */
static int baseline(const struct fixture *fx, struct result *r, uint8_t *buf, bool own_thread)
{
	struct base_job j = { fx, r, buf, 0 };
	pthread_t th;

	if (!own_thread)
		return run(fx, r, buf, 0);
	if (pthread_create(&th, NULL, base_thread, &j))
		return -EAGAIN;
	pthread_join(th, NULL);
	return j.ret;
}

static void check_fixture(const struct fixture *fx, uint8_t *buf, bool first)
{
	struct result base, r;
	int clean = 0, failures = 0;
	long n, last = 0;

	lz_fail_alloc_at(0);
	if (baseline(fx, &base, buf, first)) {
		T_FAIL("%s: the fault-free run failed", fx->boot);
		return;
	}
	T_ASSERT(base.nfiles > 0);
	for (n = 1; n < MAX_N && clean < CLEAN_RUNS; n++) {
		int ret;

		lz_fail_alloc_at(n);
		ret = run(fx, &r, buf, n);
		lz_fail_alloc_at(0);
		if (ret) {
			clean = 0;
			failures++;
			last = n;
			continue;
		}
		/* a failure that was absorbed must not have changed anything */
		if (r.entries != base.entries || r.nfiles != base.nfiles ||
		    memcmp(r.ino, base.ino, sizeof(r.ino)) || memcmp(r.hash, base.hash, sizeof(r.hash)))
			T_FAIL("%s, allocation %ld failing: the run succeeded with different results",
			       fx->boot, n);
		clean++;
	}
	if (n >= MAX_N)
		T_FAIL("%s: still failing allocations after %d", fx->boot, MAX_N);
	printf("%s: allocations 1..%ld failed in turn, %d runs ended in -ENOMEM; %zu entries, %zu files read\n",
	       fx->boot, last, failures, base.entries, base.nfiles);
}

int main(void)
{
	uint8_t *buf = malloc(READ_CHUNK);

	if (!buf)
		return 1;
	lz_log_level = -1;      /* every injected failure would log a line */
	for (size_t i = 0; i < LZ_ARRAY_SIZE(fixtures); i++)
		check_fixture(&fixtures[i], buf, i == 0);
	lz_fail_alloc_at(0);
	free(buf);
	T_DONE();
}
