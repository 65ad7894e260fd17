/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_bcache_state.c - the blob cache's chunk-state file parser. Checks that
 * a successful parse agrees with its own header (exact file size, caps, no
 * bits past the chunk count), that the header is canonical (re-encoding the
 * parsed fields gives the same bytes) and that changing any header byte makes
 * it fail. Small valid inputs are then installed as a real state file next to
 * a data file of the recorded size, and opening the blob must trust exactly
 * the bits the file has.
 */
#include "lazyimg/bcache.h"
#include "../../cache/bcache_int.h"
#include "fuzz.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#define FZ_OPEN_MAX_CHUNKS 4096u
#define FZ_OPEN_MAX_SIZE   (16u << 20)

static char fz_root[64];

static void fz_cleanup(void)
{
	char p[128];

	snprintf(p, sizeof(p), "%s/c", fz_root);
	rmdir(p);
	rmdir(fz_root);
}

static int write_file(const char *dir, const char *name, const uint8_t *data, size_t len,
		      uint64_t size)
{
	char p[512];
	int fd, ret = 0;

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	if (len && write(fd, data, len) != (ssize_t)len)
		ret = -1;
	if (!len && ftruncate(fd, (off_t)size))
		ret = -1;
	close(fd);
	return ret;
}

/* Open the blob over this state file and check what it trusts. */
static void check_open(const uint8_t *data, size_t size, const struct bcache_state_info *info,
		       uint32_t nbits)
{
	struct bcache *c = NULL;
	struct bcache_blob *b = NULL;
	char dir[128];
	uint32_t n = 0;

	if (!fz_root[0]) {
		snprintf(fz_root, sizeof(fz_root), "/tmp/lz-fuzz-bcache.XXXXXX");
		if (!mkdtemp(fz_root)) {
			fz_root[0] = 0;
			return;
		}
		atexit(fz_cleanup);
	}
	snprintf(dir, sizeof(dir), "%s/c", fz_root);
	if (mkdir(dir, 0700) && errno != EEXIST)
		return;
	if (write_file(dir, "b", NULL, 0, info->blob_size) ||
	    write_file(dir, "b.state", data, size, 0))
		return;
	FZ_CHECK(bcache_open(dir, 0, &c) == 0);
	FZ_CHECK(bcache_blob_open(c, "b", info->blob_size, info->nchunks, &b) == 0);
	FZ_CHECK(bcache_ready_count(b) == nbits);
	for (uint32_t i = 0; i < info->nchunks; i++) {
		bool want = data[BCACHE_STATE_HDR_SIZE + i / 8] >> (i % 8) & 1;

		FZ_CHECK(bcache_chunk_ready(b, i) == want);
		n += want;
	}
	FZ_CHECK(n == nbits);
	FZ_CHECK(!bcache_chunk_ready(b, info->nchunks));
	bcache_blob_put(b);
	FZ_CHECK(bcache_remove(c, "b") == 0);
	bcache_close(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct bcache_state_info info;
	const char *why = NULL;
	uint8_t hdr[BCACHE_STATE_HDR_SIZE], *copy;
	uint32_t nbits = 0;
	int ret;

	lz_log_level = -1;
	ret = bcache_state_parse(data, size, &info, &why);
	if (ret) {
		FZ_CHECK(ret == -EFSCORRUPTED);
		FZ_CHECK(why && *why);
		return 0;
	}
	FZ_CHECK(info.nchunks <= BCACHE_MAX_CHUNKS);
	FZ_CHECK(info.blob_size <= BCACHE_MAX_BLOB_SIZE);
	FZ_CHECK(size == bcache_state_size(info.nchunks));
	FZ_CHECK(size <= BCACHE_STATE_MAX_SIZE);
	for (uint32_t w = 0; w < bcache_bitmap_words(info.nchunks); w++)
		nbits += (uint32_t)__builtin_popcountll(lz_get_le64(data + BCACHE_STATE_HDR_SIZE + 8ull * w));
	FZ_CHECK(nbits <= info.nchunks);

	/* canonical header */
	bcache_state_encode_hdr(hdr, info.blob_size, info.nchunks);
	FZ_CHECK(!memcmp(hdr, data, sizeof(hdr)));

	/* any header byte changed must be rejected (XXH64 covers the rest) */
	copy = malloc(size);
	FZ_CHECK(copy);
	memcpy(copy, data, size);
	for (size_t i = 0; i < BCACHE_STATE_HDR_SIZE; i++) {
		struct bcache_state_info tmp;

		copy[i] ^= 0x01;
		FZ_CHECK(bcache_state_parse(copy, size, &tmp, &why) == -EFSCORRUPTED);
		copy[i] ^= 0x01;
	}
	free(copy);

	if (info.nchunks <= FZ_OPEN_MAX_CHUNKS && info.blob_size <= FZ_OPEN_MAX_SIZE)
		check_open(data, size, &info, nbits);
	return 0;
}
