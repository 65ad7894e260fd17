/* SPDX-License-Identifier: Apache-2.0 */
/*
 * rafs_ondisk.h - RAFS v5 and v6 on-disk structures. All fields are
 * little-endian; copy a struct out of the image with memcpy and read its
 * fields with lz_get_le*(&s.field). Sizes are checked at compile time.
 */
#ifndef LAZYIMG_RAFS_ONDISK_H
#define LAZYIMG_RAFS_ONDISK_H

#include <stdint.h>

#define RAFS_V5_MAGIC		0x52414653u
#define RAFS_V5_VERSION		0x500u
#define RAFS_V5_SB_SIZE		8192u
#define RAFS_V6_SB_OFFSET	1024u
#define RAFS_V6_EXT_SB_OFFSET	1152u
#define RAFS_V6_DEVT_OFFSET	1408u
#define EROFS_MAGIC		0xE0F5E1E2u
#define EROFS_COMPAT_RAFS_V6	0x40000000u
#define EROFS_INCOMPAT_CHUNKED	0x4u
#define EROFS_INCOMPAT_DEVTABLE	0x8u
#define BLOBMETA_MAGIC		0xB10BB10Bu
#define BLOBMETA_HDR_SIZE	4096u

/* RafsSuperFlags */
#define RAFS_SF_COMP_NONE	0x1ull
#define RAFS_SF_COMP_LZ4	0x2ull
#define RAFS_SF_HASH_BLAKE3	0x4ull
#define RAFS_SF_HASH_SHA256	0x8ull
#define RAFS_SF_EXPLICIT_UID	0x10ull
#define RAFS_SF_HAS_XATTR	0x20ull
#define RAFS_SF_COMP_GZIP	0x40ull
#define RAFS_SF_COMP_ZSTD	0x80ull
#define RAFS_SF_INLINED_DIGEST	0x100ull
#define RAFS_SF_TARFS		0x200ull
#define RAFS_SF_ENC_NONE	0x1000000ull
#define RAFS_SF_ENC_AES128XTS	0x2000000ull
#define RAFS_SF_PRESERVED	0xFC000000ull
#define RAFS_SF_KNOWN		(0x3FFull | RAFS_SF_ENC_NONE | RAFS_SF_ENC_AES128XTS | RAFS_SF_PRESERVED)

/* RafsInodeFlags (v5) */
#define RAFS_V5_IF_SYMLINK	0x1ull
#define RAFS_V5_IF_HARDLINK	0x2ull
#define RAFS_V5_IF_XATTR	0x4ull
#define RAFS_V5_IF_HAS_HOLE	0x8ull

/* BlobChunkFlags (80-byte chunk info) */
#define RAFS_CF_COMPRESSED	0x01u
#define RAFS_CF_HOLE		0x02u
#define RAFS_CF_ENCRYPTED	0x04u
#define RAFS_CF_BATCH		0x08u
#define RAFS_CF_HAS_CRC32	0x10u

/* BlobFeatures */
#define RAFS_BF_ALIGNED		0x1u
#define RAFS_BF_INLINED_FS_META	0x2u
#define RAFS_BF_CHUNK_INFO_V2	0x4u
#define RAFS_BF_ZRAN		0x8u
#define RAFS_BF_SEPARATE	0x10u
#define RAFS_BF_INLINED_DIGEST	0x20u
#define RAFS_BF_TARFS		0x40u
#define RAFS_BF_BATCH		0x80u
#define RAFS_BF_ENCRYPTED	0x100u
#define RAFS_BF_INCOMPAT_MASK	0x0000F000u
#define RAFS_BF_V5_NO_EXT	0x80000000u
#define RAFS_BF_HAS_TAR_HEADER	0x10000000u
#define RAFS_BF_HAS_TOC		0x20000000u
#define RAFS_BF_CAP_TAR_TOC	0x40000000u

/* CI v2 per-chunk flags (top byte of uncomp_info) */
#define RAFS_CI2_COMPRESSED	0x01u
#define RAFS_CI2_ZRAN		0x02u
#define RAFS_CI2_BATCH		0x04u
#define RAFS_CI2_ENCRYPTED	0x08u
#define RAFS_CI2_HAS_CRC32	0x10u

struct rafs_v5_super {
	uint32_t magic;
	uint32_t fs_version;
	uint32_t sb_size;
	uint32_t block_size;		/* chunk size, bytes */
	uint64_t flags;			/* RafsSuperFlags */
	uint64_t inodes_count;
	uint64_t inode_table_offset;	/* bytes */
	uint64_t prefetch_table_offset;	/* bytes */
	uint64_t blob_table_offset;	/* bytes */
	uint32_t inode_table_entries;	/* u32 slots */
	uint32_t prefetch_table_entries;/* u32 inode numbers */
	uint32_t blob_table_size;	/* bytes, incl. padding */
	uint32_t ext_blob_table_entries;/* 64-byte entries */
	uint64_t ext_blob_table_offset;	/* bytes */
	uint8_t reserved[8112];
} __attribute__((packed));
_Static_assert(sizeof(struct rafs_v5_super) == 8192, "v5 superblock");

struct rafs_v5_inode {
	uint8_t digest[32];
	uint64_t parent;		/* inode number */
	uint64_t ino;
	uint32_t uid;
	uint32_t gid;
	uint32_t projid;
	uint32_t mode;
	uint64_t size;			/* bytes */
	uint64_t blocks;		/* 512-byte units */
	uint64_t flags;			/* RafsInodeFlags */
	uint32_t nlink;
	uint32_t child_index;
	uint32_t child_count;		/* dirs: children; files: chunk infos */
	uint16_t name_size;		/* bytes, no NUL */
	uint16_t symlink_size;		/* bytes, no NUL */
	uint32_t rdev;
	uint32_t mtime_nsec;
	uint64_t mtime;			/* seconds */
	uint8_t reserved[8];
} __attribute__((packed));
_Static_assert(sizeof(struct rafs_v5_inode) == 128, "v5 inode");

struct rafs_chunk_info {
	uint8_t block_id[32];		/* digest of uncompressed data */
	uint32_t blob_index;
	uint32_t flags;			/* BlobChunkFlags */
	uint32_t compressed_size;	/* bytes */
	uint32_t uncompressed_size;	/* bytes */
	uint64_t compressed_offset;	/* bytes in the data blob */
	uint64_t uncompressed_offset;	/* bytes in the blob's uncompressed space */
	uint64_t file_offset;		/* bytes in the file */
	uint32_t index;			/* chunk index in its blob */
	uint32_t crc32;
} __attribute__((packed));
_Static_assert(sizeof(struct rafs_chunk_info) == 80, "chunk info");

struct rafs_v5_ext_blob {
	uint32_t chunk_count;
	uint32_t features;		/* BlobFeatures */
	uint64_t uncompressed_size;	/* bytes */
	uint64_t compressed_size;	/* bytes */
	uint8_t reserved[40];
} __attribute__((packed));
_Static_assert(sizeof(struct rafs_v5_ext_blob) == 64, "v5 ext blob");

struct erofs_super {
	uint32_t magic;
	uint32_t checksum;
	uint32_t feature_compat;
	uint8_t blkszbits;
	uint8_t extslots;
	uint16_t root_nid;
	uint64_t inos;
	uint64_t build_time;
	uint32_t build_time_nsec;
	uint32_t blocks;
	uint32_t meta_blkaddr;		/* blocks */
	uint32_t xattr_blkaddr;
	uint8_t uuid[16];
	uint8_t volume_name[16];
	uint32_t feature_incompat;
	uint16_t u1;
	uint16_t extra_devices;
	uint16_t devt_slotoff;		/* units of 128 bytes */
	uint8_t reserved[38];
} __attribute__((packed));
_Static_assert(sizeof(struct erofs_super) == 128, "erofs super");

struct rafs_v6_ext_super {
	uint64_t flags;			/* RafsSuperFlags */
	uint64_t blob_table_offset;	/* bytes */
	uint32_t blob_table_size;	/* bytes */
	uint32_t chunk_size;		/* bytes */
	uint64_t chunk_table_offset;	/* bytes */
	uint64_t chunk_table_size;	/* bytes */
	uint64_t prefetch_table_offset;	/* bytes */
	uint32_t prefetch_table_size;	/* bytes */
	uint32_t padding;
	uint8_t reserved[200];
} __attribute__((packed));
_Static_assert(sizeof(struct rafs_v6_ext_super) == 256, "v6 ext super");

struct erofs_device_slot {
	uint8_t tag[64];		/* blob id, ASCII */
	uint32_t blocks;		/* 4 KiB blocks */
	uint32_t mapped_blkaddr;
	uint8_t reserved[56];
} __attribute__((packed));
_Static_assert(sizeof(struct erofs_device_slot) == 128, "device slot");

struct rafs_v6_blob {
	uint8_t blob_id[64];
	uint32_t blob_index;
	uint32_t chunk_size;		/* bytes */
	uint32_t chunk_count;
	uint32_t compression_algo;
	uint32_t digest_algo;
	uint32_t features;		/* BlobFeatures */
	uint64_t compressed_size;	/* bytes */
	uint64_t uncompressed_size;	/* bytes */
	uint32_t blob_toc_size;		/* bytes */
	uint32_t ci_compressor;
	uint64_t ci_offset;		/* bytes in the blob */
	uint64_t ci_compressed_size;	/* bytes */
	uint64_t ci_uncompressed_size;	/* bytes */
	uint8_t blob_toc_digest[32];
	uint8_t blob_meta_digest[32];
	uint64_t blob_meta_size;
	uint8_t cipher_iv[8];
	uint32_t cipher_algo;
	uint8_t reserved[36];
} __attribute__((packed));
_Static_assert(sizeof(struct rafs_v6_blob) == 256, "v6 blob entry");

struct erofs_inode_compact {
	uint16_t format;
	uint16_t xattr_icount;
	uint16_t mode;
	uint16_t nlink;
	uint32_t size;			/* bytes */
	uint32_t reserved;
	uint32_t u;			/* blkaddr / chunk format / rdev */
	uint32_t ino;
	uint16_t uid;
	uint16_t gid;
	uint32_t reserved2;
} __attribute__((packed));
_Static_assert(sizeof(struct erofs_inode_compact) == 32, "compact inode");

struct erofs_inode_extended {
	uint16_t format;
	uint16_t xattr_icount;
	uint16_t mode;
	uint16_t reserved;
	uint64_t size;			/* bytes */
	uint32_t u;
	uint32_t ino;
	uint32_t uid;
	uint32_t gid;
	uint64_t mtime;			/* seconds */
	uint32_t mtime_nsec;
	uint32_t nlink;
	uint8_t reserved2[16];
} __attribute__((packed));
_Static_assert(sizeof(struct erofs_inode_extended) == 64, "extended inode");

struct erofs_dirent {
	uint64_t nid;
	uint16_t nameoff;		/* bytes within the block */
	uint8_t file_type;
	uint8_t reserved;
} __attribute__((packed));
_Static_assert(sizeof(struct erofs_dirent) == 12, "dirent");

struct rafs_blobmeta_hdr {
	uint32_t magic;
	uint32_t features;
	uint32_t ci_compressor;
	uint32_t ci_entries;
	uint64_t ci_offset;
	uint64_t ci_compressed_size;
	uint64_t ci_uncompressed_size;
	uint64_t ci_zran_offset;
	uint64_t ci_zran_size;
	uint32_t ci_zran_count;
	uint8_t reserved[4032];
	uint32_t magic2;
} __attribute__((packed));
_Static_assert(sizeof(struct rafs_blobmeta_hdr) == 4096, "blob meta header");

struct rafs_toc_entry {
	uint32_t flags;			/* 0x1 none, 0x2 zstd, 0x4 lz4_block */
	uint32_t reserved1;
	uint8_t name[16];
	uint8_t uncompressed_digest[32];/* sha256 */
	uint64_t compressed_offset;	/* bytes in the blob */
	uint64_t compressed_size;	/* bytes */
	uint64_t uncompressed_size;	/* bytes */
	uint8_t reserved2[48];
} __attribute__((packed));
_Static_assert(sizeof(struct rafs_toc_entry) == 128, "toc entry");

#define EROFS_LAYOUT_FLAT_PLAIN		0
#define EROFS_LAYOUT_FLAT_INLINE	2
#define EROFS_LAYOUT_CHUNK_BASED	4
#define EROFS_CHUNK_FORMAT_INDEXES	0x20
#define EROFS_NULL_ADDR			0xFFFFFFFFu

#define LE16(s, f) lz_get_le16(&(s).f)
#define LE32(s, f) lz_get_le32(&(s).f)
#define LE64(s, f) lz_get_le64(&(s).f)

#endif
