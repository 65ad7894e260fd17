/* SPDX-License-Identifier: Apache-2.0 */
#define LZ_MOD "rafs"
#include "rafs_int.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/sha.h>
#include <zstd.h>

static int detect_version(const uint8_t *p, uint64_t len)
{
	if (len >= 8 && lz_get_le32(p) == RAFS_V5_MAGIC && lz_get_le32(p + 4) == RAFS_V5_VERSION)
		return 5;
	if (len >= RAFS_V6_SB_OFFSET + 4 && lz_get_le32(p + RAFS_V6_SB_OFFSET) == EROFS_MAGIC)
		return 6;
	return 0;
}

/* Compressor from RafsSuperFlags, in nydus's order; lz4_block when none is set. */
int rafs_flags_compressor(uint64_t flags)
{
	if (flags & RAFS_SF_COMP_NONE)
		return LZ_COMP_NONE;
	if (flags & RAFS_SF_COMP_LZ4)
		return LZ_COMP_LZ4;
	if (flags & RAFS_SF_COMP_GZIP)
		return LZ_COMP_GZIP;
	if (flags & RAFS_SF_COMP_ZSTD)
		return LZ_COMP_ZSTD;
	return LZ_COMP_LZ4;
}

static int open_common(struct rafs *fs, const struct rafs_opts *opts)
{
	int ret;

	fs->version = detect_version(fs->base, fs->len);
	if (!fs->version) {
		lz_err("not a RAFS bootstrap: no v5 magic at offset 0 and no EROFS magic at offset 1024 (size %llu)",
		       (unsigned long long)fs->len);
		return -EFSCORRUPTED;
	}
	fs->validate = opts ? opts->validate : true;
	fs->uid = geteuid();
	fs->gid = getegid();
	ret = fs->version == 5 ? rafs_v5_validate(fs) : rafs_v6_validate(fs);
	if (ret)
		return ret;
	fs->img.ops = fs->version == 5 ? &rafs_v5_ops : &rafs_v6_ops;
	fs->img.format = fs->version == 5 ? "rafs-v5" : "rafs-v6";
	return rafs_blobs_init(fs, opts);
}

static int rafs_alloc(struct rafs **out)
{
	struct rafs *fs = lz_calloc(1, sizeof(*fs));

	if (!fs)
		return -ENOMEM;
	*out = fs;
	return 0;
}

int rafs_open_mem(const void *buf, size_t len, const struct rafs_opts *opts, struct rafs **out)
{
	struct rafs *fs;
	int ret;

	ret = rafs_alloc(&fs);
	if (ret)
		return ret;
	fs->base = buf;
	fs->len = len;
	ret = open_common(fs, opts);
	if (ret) {
		rafs_close(fs);
		return ret;
	}
	*out = fs;
	return 0;
}

static bool is_hex64(const char *s)
{
	size_t n = strlen(s);

	if (n != 64)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

int rafs_open_file(const char *path, const struct rafs_opts *opts, struct rafs **out)
{
	struct rafs_opts o = opts ? *opts : (struct rafs_opts){ .validate = true };
	struct rafs *fs = NULL;
	struct stat st;
	void *map = MAP_FAILED, *boot = NULL;
	size_t bootlen = 0;
	char idbuf[RAFS_MAX_BLOB_ID + 1];
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		lz_err("cannot open bootstrap %s: %s", path, strerror(errno));
		return ret;
	}
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		lz_err("bootstrap %s is not a regular file", path);
		ret = -EINVAL;
		goto out;
	}
	if ((uint64_t)st.st_size > RAFS_MAX_BOOTSTRAP || st.st_size < 8) {
		lz_err("bootstrap %s: size %lld outside [8, %llu]", path, (long long)st.st_size,
		       (unsigned long long)RAFS_MAX_BOOTSTRAP);
		ret = -EFSCORRUPTED;
		goto out;
	}
	map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (map == MAP_FAILED) {
		ret = -errno;
		lz_err("cannot map bootstrap %s: %s", path, strerror(errno));
		goto out;
	}
	ret = rafs_alloc(&fs);
	if (ret)
		goto out;
	if (!detect_version(map, (uint64_t)st.st_size)) {
		/* maybe a data blob with the bootstrap inlined behind a ToC */
		ret = rafs_toc_extract(map, (size_t)st.st_size, "image.boot", &boot, &bootlen);
		if (ret == 0) {
			const char *slash = strrchr(path, '/');

			munmap(map, (size_t)st.st_size);
			map = MAP_FAILED;
			fs->owned = boot;
			fs->base = boot;
			fs->len = bootlen;
			boot = NULL;
			/* nydus names such a blob by the file it came from, not by the id inside */
			snprintf(idbuf, sizeof(idbuf), "%s", slash ? slash + 1 : path);
			if (is_hex64(idbuf) && !o.inlined_blob_id)
				o.inlined_blob_id = idbuf;
			lz_info("%s: using the bootstrap inlined in the blob's ToC (%zu bytes)", path,
				bootlen);
		} else if (ret != -ENOENT) {
			goto out;
		}
	}
	if (!fs->base) {
		fs->map = map;
		fs->base = map;
		fs->len = (uint64_t)st.st_size;
		map = MAP_FAILED;
	}
	ret = open_common(fs, &o);
	if (ret)
		goto out;
	*out = fs;
	fs = NULL;
out:
	if (map != MAP_FAILED)
		munmap(map, (size_t)st.st_size);
	free(boot);
	rafs_close(fs);
	close(fd);
	return ret;
}

void rafs_close(struct rafs *fs)
{
	if (!fs)
		return;
	rafs_blobs_exit(fs);
	if (fs->map)
		munmap(fs->map, fs->len);
	free(fs->owned);
	free(fs);
}

struct image *rafs_image(struct rafs *fs)
{
	return &fs->img;
}

void rafs_get_info(const struct rafs *fs, struct rafs_info *info)
{
	memset(info, 0, sizeof(*info));
	info->version = fs->version;
	info->flags = fs->flags;
	info->chunk_size = fs->chunk_size;
	info->compressor = fs->comp;
	info->digester = fs->digester;
	info->nblobs = fs->nblobs;
	info->bootstrap_size = fs->len;
	info->explicit_uid_gid = fs->flags & RAFS_SF_EXPLICIT_UID;
	if (fs->version == 5) {
		info->inodes = fs->v5_inodes_count;
		info->prefetch_entries = fs->v5_prefetch_entries;
	} else {
		info->inodes = fs->v6_inos;
		info->prefetch_entries = fs->v6_prefetch_size / 4;
		info->meta_blkaddr = (uint32_t)(fs->meta_off >> fs->blkbits);
		info->root_nid = fs->root_nid;
		info->chunk_table_entries = fs->chunk_table_size / sizeof(struct rafs_chunk_info);
	}
}

int rafs_get_blob(const struct rafs *fs, unsigned idx, struct rafs_blob_info *bi)
{
	const struct rafs_blob *b;

	if (idx >= fs->nblobs)
		return -ENOENT;
	b = &fs->blobs[idx];
	memset(bi, 0, sizeof(*bi));
	memcpy(bi->id, b->id, sizeof(bi->id));
	bi->chunk_count = b->chunk_count;
	bi->features = b->features;
	bi->compressor = b->comp;
	bi->digester = b->digester;
	bi->compressed_size = b->csize;
	bi->uncompressed_size = b->usize;
	bi->ci_compressor = b->ci_comp;
	bi->ci_offset = b->ci_off;
	bi->ci_compressed_size = b->ci_csize;
	bi->ci_uncompressed_size = b->ci_usize;
	return 0;
}

size_t rafs_prefetch_list(const struct rafs *fs, uint64_t *inos, size_t max)
{
	size_t n = 0;

	if (fs->version == 5) {
		for (uint32_t i = 0; i < fs->v5_prefetch_entries && n < max; i++) {
			uint32_t v = lz_get_le32(fs->base + fs->v5_prefetch_off + 4ull * i);

			if (v >= 1 && v <= fs->v5_itable_entries)
				inos[n++] = v;
		}
	} else {
		for (uint32_t i = 0; i < fs->v6_prefetch_size / 4 && n < max; i++) {
			uint64_t nid = lz_get_le32(fs->base + fs->v6_prefetch_off + 4ull * i);

			if (nid < fs->max_nid)
				inos[n++] = nid == fs->root_nid ? IMG_ROOT_INO : nid + 2;
		}
	}
	return n;
}

void rafs_get_stats(const struct rafs *fs, struct rafs_stats *st)
{
	st->chunk_fills = atomic_load(&fs->st_fills);
	st->chunk_cache_hits = atomic_load(&fs->st_hits);
	st->backend_bytes = atomic_load(&fs->st_bytes);
	st->backend_reads = atomic_load(&fs->st_reads);
	st->errors = atomic_load(&fs->st_errors);
	st->merged = atomic_load(&fs->st_merged);
}

int rafs_blobmeta_parse(const void *buf, size_t len, struct rafs_blobmeta *bm)
{
	struct rafs_blobmeta_hdr h;
	uint64_t data_len;

	if (len < BLOBMETA_HDR_SIZE || len % 4096) {
		lz_err("blob meta: size %zu is not a multiple of 4096 holding a header", len);
		return -EFSCORRUPTED;
	}
	memcpy(&h, (const uint8_t *)buf + len - BLOBMETA_HDR_SIZE, sizeof(h));
	if (LE32(h, magic) != BLOBMETA_MAGIC || LE32(h, magic2) != BLOBMETA_MAGIC) {
		lz_err("blob meta: bad header magic 0x%08x/0x%08x, expected 0x%08x", LE32(h, magic),
		       LE32(h, magic2), BLOBMETA_MAGIC);
		return -EFSCORRUPTED;
	}
	memset(bm, 0, sizeof(*bm));
	bm->features = LE32(h, features);
	bm->ci_compressor = LE32(h, ci_compressor);
	bm->ci_entries = LE32(h, ci_entries);
	bm->ci_offset = LE64(h, ci_offset);
	bm->ci_compressed_size = LE64(h, ci_compressed_size);
	bm->ci_uncompressed_size = LE64(h, ci_uncompressed_size);
	bm->zran_offset = LE64(h, ci_zran_offset);
	bm->zran_size = LE64(h, ci_zran_size);
	bm->zran_count = LE32(h, ci_zran_count);
	data_len = len - BLOBMETA_HDR_SIZE;
	if (bm->features & RAFS_BF_INCOMPAT_MASK) {
		lz_err("blob meta: incompatible features 0x%x", bm->features);
		return -EOPNOTSUPP;
	}
	if (bm->ci_compressor > LZ_COMP_ZSTD) {
		lz_err("blob meta: unknown CI compressor %u", bm->ci_compressor);
		return -EFSCORRUPTED;
	}
	if (bm->ci_entries > RAFS_MAX_CHUNKS_PER_BLOB) {
		lz_err("blob meta: %u chunk infos exceed the cap %u", bm->ci_entries,
		       RAFS_MAX_CHUNKS_PER_BLOB);
		return -EFSCORRUPTED;
	}
	if (bm->ci_uncompressed_size > data_len ||
	    LZ_ALIGN_UP(bm->ci_uncompressed_size, 4096ull) != data_len) {
		lz_err("blob meta: CI size %llu does not fill the %llu data bytes",
		       (unsigned long long)bm->ci_uncompressed_size, (unsigned long long)data_len);
		return -EFSCORRUPTED;
	}
	if ((uint64_t)bm->ci_entries * ((bm->features & RAFS_BF_CHUNK_INFO_V2) ? 24 : 16) >
	    bm->ci_uncompressed_size) {
		lz_err("blob meta: %u chunk infos do not fit in %llu bytes", bm->ci_entries,
		       (unsigned long long)bm->ci_uncompressed_size);
		return -EFSCORRUPTED;
	}
	if (bm->zran_count && (!lz_range_ok(bm->zran_offset, bm->zran_size, bm->ci_uncompressed_size) ||
			       (uint64_t)bm->zran_count * 40 > bm->zran_size)) {
		lz_err("blob meta: %u zran contexts at %llu+%llu outside CI data of %llu bytes",
		       bm->zran_count, (unsigned long long)bm->zran_offset,
		       (unsigned long long)bm->zran_size, (unsigned long long)bm->ci_uncompressed_size);
		return -EFSCORRUPTED;
	}
	return 0;
}

/* GNU/ustar numeric field: octal, NUL or space terminated. */
static int tar_octal(const uint8_t *p, size_t n, uint64_t *out)
{
	uint64_t v = 0;
	size_t i = 0;

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

#define RAFS_MAX_TOC (1u << 20)

/*
 * Whether csize compressed bytes can expand to usize bytes at all, so that a
 * forged uncompressed_size cannot make a small blob allocate gigabytes. lz4
 * blocks expand at most 255:1; a zstd block of up to 128 KiB needs at least
 * 4 bytes, and a frame that records its content size must agree with it.
 */
static bool toc_size_plausible(int comp, const uint8_t *src, uint64_t csize, uint64_t usize)
{
	unsigned long long fcs;

	switch (comp) {
	case LZ_COMP_LZ4:
		return usize / 255 <= csize;
	case LZ_COMP_ZSTD:
		fcs = ZSTD_getFrameContentSize(src, (size_t)csize);
		if (fcs != ZSTD_CONTENTSIZE_UNKNOWN && fcs != ZSTD_CONTENTSIZE_ERROR)
			return fcs == usize;
		return usize / 32768 <= csize;
	}
	return csize == usize;
}

int rafs_toc_extract(const void *blob, size_t len, const char *name, void **out, size_t *outlen)
{
	const uint8_t *b = blob, *hdr;
	uint64_t tsize;
	size_t nlen = strlen(name);
	uint8_t dg[SHA256_DIGEST_LENGTH];

	if (len < 512 + sizeof(struct rafs_toc_entry))
		return -ENOENT;
	hdr = b + len - 512;
	if (memcmp(hdr, "rafs.blob.toc", 14) != 0)
		return -ENOENT;
	if (tar_octal(hdr + 124, 12, &tsize) || tsize == 0 || tsize % 128 || tsize > RAFS_MAX_TOC ||
	    tsize > len - 512) {
		lz_err("blob ToC: bad size field in its tar header");
		return -EFSCORRUPTED;
	}
	for (uint64_t o = len - 512 - tsize; o < len - 512; o += sizeof(struct rafs_toc_entry)) {
		struct rafs_toc_entry e;
		uint64_t coff, csize, usize;
		uint32_t fl;
		void *buf;
		int ret, comp;

		memcpy(&e, b + o, sizeof(e));
		if (memcmp(e.name, name, nlen) != 0 || (nlen < 16 && e.name[nlen] != 0))
			continue;
		fl = LE32(e, flags) & 0xf;
		coff = LE64(e, compressed_offset);
		csize = LE64(e, compressed_size);
		usize = LE64(e, uncompressed_size);
		comp = fl == 0x1 ? LZ_COMP_NONE : fl == 0x2 ? LZ_COMP_ZSTD : fl == 0x4 ? LZ_COMP_LZ4 : -1;
		if (comp < 0) {
			lz_err("blob ToC entry %s: unknown compression flags 0x%x", name, fl);
			return -EFSCORRUPTED;
		}
		if (!lz_range_ok(coff, csize, len - 512 - tsize) || usize > RAFS_MAX_BOOTSTRAP ||
		    usize == 0 || (comp == LZ_COMP_NONE && csize != usize)) {
			lz_err("blob ToC entry %s: range %llu+%llu (-> %llu) outside the blob of %zu bytes",
			       name, (unsigned long long)coff, (unsigned long long)csize,
			       (unsigned long long)usize, len);
			return -EFSCORRUPTED;
		}
		if (!toc_size_plausible(comp, b + coff, csize, usize)) {
			lz_err("blob ToC entry %s: %llu compressed bytes cannot hold %llu bytes",
			       name, (unsigned long long)csize, (unsigned long long)usize);
			return -EFSCORRUPTED;
		}
		buf = lz_malloc((size_t)usize);
		if (!buf)
			return -ENOMEM;
		ret = lz_decompress(comp, b + coff, (size_t)csize, buf, (size_t)usize);
		if (ret) {
			lz_err("blob ToC entry %s: cannot decompress %llu bytes", name,
			       (unsigned long long)csize);
			free(buf);
			return ret;
		}
		SHA256(buf, (size_t)usize, dg);
		if (memcmp(dg, e.uncompressed_digest, sizeof(dg)) != 0) {
			lz_err("blob ToC entry %s: sha256 mismatch", name);
			free(buf);
			return -EBADMSG;
		}
		*out = buf;
		*outlen = (size_t)usize;
		return 0;
	}
	return -ENOENT;
}
