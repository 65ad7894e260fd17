/* SPDX-License-Identifier: Apache-2.0 */
/* state.c - the chunk-state file format: header encode and hostile-input parse. */
#define LZ_MOD "bcache"
#include "bcache_int.h"

#include <stddef.h>
#include <xxhash.h>

#define CSUM_OFF offsetof(struct bcache_state_disk, checksum)

void bcache_state_encode_hdr(void *out, uint64_t blob_size, uint32_t nchunks)
{
	uint8_t *p = out;

	memset(p, 0, BCACHE_STATE_HDR_SIZE);
	memcpy(p + offsetof(struct bcache_state_disk, magic), BCACHE_STATE_MAGIC, 8);
	lz_put_le32(p + offsetof(struct bcache_state_disk, version), BCACHE_STATE_VERSION);
	lz_put_le32(p + offsetof(struct bcache_state_disk, hdr_size), BCACHE_STATE_HDR_SIZE);
	lz_put_le64(p + offsetof(struct bcache_state_disk, blob_size), blob_size);
	lz_put_le32(p + offsetof(struct bcache_state_disk, nchunks), nchunks);
	lz_put_le64(p + CSUM_OFF, XXH64(p, CSUM_OFF, 0));
}

int bcache_state_parse(const void *buf, size_t len, struct bcache_state_info *info,
		       const char **why)
{
	const uint8_t *p = buf;
	uint64_t blob_size;
	uint32_t nchunks, nwords, tail;

	if (len < BCACHE_STATE_HDR_SIZE) {
		*why = "shorter than the header";
		return -EFSCORRUPTED;
	}
	if (memcmp(p + offsetof(struct bcache_state_disk, magic), BCACHE_STATE_MAGIC, 8) != 0) {
		*why = "bad magic";
		return -EFSCORRUPTED;
	}
	/* checksum before any other field: a torn header is not "unsupported" */
	if (lz_get_le64(p + CSUM_OFF) != XXH64(p, CSUM_OFF, 0)) {
		*why = "header checksum mismatch";
		return -EFSCORRUPTED;
	}
	if (lz_get_le32(p + offsetof(struct bcache_state_disk, version)) != BCACHE_STATE_VERSION) {
		*why = "unknown version";
		return -EFSCORRUPTED;
	}
	if (lz_get_le32(p + offsetof(struct bcache_state_disk, hdr_size)) != BCACHE_STATE_HDR_SIZE) {
		*why = "bad header size";
		return -EFSCORRUPTED;
	}
	if (lz_get_le32(p + offsetof(struct bcache_state_disk, flags))) {
		*why = "unknown flags";
		return -EFSCORRUPTED;
	}
	for (size_t i = 0; i < sizeof(((struct bcache_state_disk *)0)->reserved); i++) {
		if (p[offsetof(struct bcache_state_disk, reserved) + i]) {
			*why = "reserved bytes not zero";
			return -EFSCORRUPTED;
		}
	}
	blob_size = lz_get_le64(p + offsetof(struct bcache_state_disk, blob_size));
	nchunks = lz_get_le32(p + offsetof(struct bcache_state_disk, nchunks));
	if (blob_size > BCACHE_MAX_BLOB_SIZE) {
		*why = "blob size over the cap";
		return -EFSCORRUPTED;
	}
	if (nchunks > BCACHE_MAX_CHUNKS) {
		*why = "chunk count over the cap";
		return -EFSCORRUPTED;
	}
	if (len != bcache_state_size(nchunks)) {
		*why = len < bcache_state_size(nchunks) ? "bitmap truncated" : "trailing bytes after the bitmap";
		return -EFSCORRUPTED;
	}
	nwords = bcache_bitmap_words(nchunks);
	tail = nchunks % 64;
	if (nwords && tail) {
		uint64_t last = lz_get_le64(p + BCACHE_STATE_HDR_SIZE + 8ull * (nwords - 1));

		if (last >> tail) {
			*why = "bits set past the chunk count";
			return -EFSCORRUPTED;
		}
	}
	info->blob_size = blob_size;
	info->nchunks = nchunks;
	return 0;
}
