/* SPDX-License-Identifier: Apache-2.0 */
#define LZ_MOD "cli"
#include "lazyimg/codec.h"
#include "lazyimg/rafs_build.h"
#include "lazyimg/reg.h"
#include "cli.h"

#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define CONVERT_OPTS CLI_OPT_TLS
#define CONVERT_MIN_LEVEL (-131072)
#define CONVERT_MAX_LEVEL 22

static void convert_usage(FILE *out)
{
	fputs("usage: lazyimg convert [options] SRC OUTDIR\n"
	      "       lazyimg convert [options] [--insecure] SRC_REF DST_REF\n"
	      "\n"
	      "Build a Nydus RAFS image from SRC: a directory, a layer tarball (.tar, .tar.gz,\n"
	      "or .tar.zst, read as a stream), or '-' for a tar stream on stdin. OUTDIR gets\n"
	      "image.boot and blobs/<blob-id>. The same input always gives the same bytes.\n"
	      "SRC_REF DST_REF: pull an OCI image, convert every layer, merge, and push a\n"
	      "nydus image with the annotations nydus uses.\n"
	      "\n"
	      "  --fs-version 5|6          RAFS version (default 6)\n"
	      "  --compressor zstd|lz4|none  chunk compression (default zstd)\n"
	      "  --digester blake3|sha256  chunk digest (default blake3)\n"
	      "  --chunk-size N            power of two, 4096 .. 16777216 (default 1048576;\n"
	      "                            K/M suffixes accepted)\n"
	      "  --prefetch-files FILE     paths (one per line) to put in the prefetch table\n"
	      "  --aligned                 v6, uncompressed, chunks at 4 KiB-aligned blob\n"
	      "                            offsets: the kernel's EROFS can mount the image\n"
	      "                            with the blob as its device\n"
	      "  --level N                 compression level\n"
	      "  -q, --quiet               no progress output\n"
	      "  -h, --help                this text\n"
	      "registry (SRC_REF DST_REF form):\n"
	      "  --work-dir DIR            scratch space for registry conversion\n", out);
	cli_opts_help(out, CONVERT_OPTS, 28);
}

static int parse_size(const char *s, uint32_t *out)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 0);

	if (end == s)
		return -1;
	if (*end == 'K' || *end == 'k')
		v <<= 10, end++;
	else if (*end == 'M' || *end == 'm')
		v <<= 20, end++;
	if (*end || v > UINT32_MAX)
		return -1;
	*out = (uint32_t)v;
	return 0;
}

/* OUTDIR (which may not exist yet) is SRC or below it, symlinks resolved */
static bool out_inside_src(const char *src, const char *out)
{
	char rs[PATH_MAX], ro[PATH_MAX], parent[PATH_MAX];
	const char *base;
	size_t n;

	if (!realpath(src, rs))
		return false;
	if (!realpath(out, ro)) {
		snprintf(parent, sizeof(parent), "%s", out);
		base = strrchr(parent, '/');
		if (base) {
			parent[base == parent ? 1 : base - parent] = 0;
			base = strrchr(out, '/') + 1;
		} else {
			snprintf(parent, sizeof(parent), ".");
			base = out;
		}
		if (!realpath(parent, ro) || strlen(ro) + 1 + strlen(base) >= sizeof(ro))
			return false;
		strcat(strcmp(ro, "/") ? strcat(ro, "/") : ro, base);
	}
	n = strlen(rs);
	return !strcmp(rs, "/") || (!strncmp(ro, rs, n) && (ro[n] == 0 || ro[n] == '/'));
}

int cmd_convert(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "fs-version", required_argument, NULL, 'V' },
		{ "compressor", required_argument, NULL, 'c' },
		{ "digester", required_argument, NULL, 'd' },
		{ "chunk-size", required_argument, NULL, 's' },
		{ "prefetch-files", required_argument, NULL, 'p' },
		{ "aligned", no_argument, NULL, 'a' },
		{ "level", required_argument, NULL, 'l' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "work-dir", required_argument, NULL, 'W' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct rafs_build_opts o = { .fs_version = 6, .compressor = LZ_COMP_ZSTD,
				     .digester = LZ_DIGEST_BLAKE3, .chunk_size = 1u << 20 };
	struct rafs_build_result r;
	struct reg_opts rgo = { 0 };
	struct cli_common co = { .groups = CONVERT_OPTS, .reg = &rgo };
	const char *work = NULL;
	struct stat st;
	bool quiet = false;
	int c, ret;

	cli_opts_begin(&co, "convert", lopts, argv);
	while ((c = getopt_long(argc, argv, "qh", co.lopts, NULL)) != -1) {
		switch (c) {
		case 'V':
			if (strcmp(optarg, "5") && strcmp(optarg, "6")) {
				fprintf(stderr, "lazyimg convert: --fs-version must be 5 or 6, not '%s'\n", optarg);
				return 2;
			}
			o.fs_version = atoi(optarg);
			break;
		case 'c':
			if (!strcmp(optarg, "zstd"))
				o.compressor = LZ_COMP_ZSTD;
			else if (!strcmp(optarg, "lz4") || !strcmp(optarg, "lz4_block"))
				o.compressor = LZ_COMP_LZ4;
			else if (!strcmp(optarg, "none"))
				o.compressor = LZ_COMP_NONE;
			else {
				fprintf(stderr, "lazyimg convert: --compressor must be zstd, lz4 or none, not '%s'\n", optarg);
				return 2;
			}
			break;
		case 'd':
			if (!strcmp(optarg, "blake3"))
				o.digester = LZ_DIGEST_BLAKE3;
			else if (!strcmp(optarg, "sha256"))
				o.digester = LZ_DIGEST_SHA256;
			else {
				fprintf(stderr, "lazyimg convert: --digester must be blake3 or sha256, not '%s'\n", optarg);
				return 2;
			}
			break;
		case 's':
			if (parse_size(optarg, &o.chunk_size) || o.chunk_size < 4096 ||
			    o.chunk_size > (16u << 20) || (o.chunk_size & (o.chunk_size - 1))) {
				fprintf(stderr, "lazyimg convert: --chunk-size '%s' is not a power of two from 4096 to 16M\n", optarg);
				return 2;
			}
			break;
		case 'p': o.prefetch_files = optarg; break;
		case 'a': o.aligned = true; break;
		case 'l': {
			char *end;
			long v = strtol(optarg, &end, 10);

			/* zstd's own bounds (ZSTD_minCLevel..ZSTD_maxCLevel); 0 is the library default */
			if (*end || end == optarg || v < CONVERT_MIN_LEVEL || v > CONVERT_MAX_LEVEL) {
				fprintf(stderr, "lazyimg convert: --level '%s' is not a whole number from %d to %d\n",
					optarg, CONVERT_MIN_LEVEL, CONVERT_MAX_LEVEL);
				return 2;
			}
			o.level = (int)v;
			break;
		}
		case 'q': quiet = true; break;
		case 'W': work = optarg; break;
		case 'h': convert_usage(stdout); return 0;
		default:
			if (cli_opts_parse(&co, c, optarg))
				return 2;
			break;
		}
	}
	if (optind != argc - 2) {
		fprintf(stderr, "lazyimg convert: expected SRC and OUTDIR\n");
		convert_usage(stderr);
		return 2;
	}
	if (o.aligned) {
		if (o.fs_version != 6) {
			fprintf(stderr, "lazyimg convert: --aligned needs --fs-version 6\n");
			return 2;
		}
		o.compressor = LZ_COMP_NONE;
	}
	o.progress = !quiet && isatty(2);
	if (strcmp(argv[optind], "-") && stat(argv[optind], &st) < 0 && strchr(argv[optind], '/')) {
		/* SRC is no local path: registry to registry */
		struct reg_ref sref, dref;
		struct reg_client *sc = NULL, *dc = NULL;
		char wbuf[64];

		if (reg_ref_parse(argv[optind], &sref) || reg_ref_parse(argv[optind + 1], &dref)) {
			fprintf(stderr, "lazyimg convert: %s is neither a local path nor an image reference\n",
				argv[optind]);
			return 2;
		}
		reg_global_init();
		if (!work) {
			snprintf(wbuf, sizeof(wbuf), "/tmp/lazyimg-convert.XXXXXX");
			work = mkdtemp(wbuf);
		}
		ret = work ? reg_client_new(&sref, &rgo, &sc) : -errno;
		if (!ret)
			ret = reg_client_new(&dref, &rgo, &dc);
		if (!ret)
			ret = reg_convert_image(sc, dc, dref.tag[0] ? dref.tag : "latest", &o, work);
		reg_client_free(sc);
		reg_client_free(dc);
		if (ret) {
			fprintf(stderr, "lazyimg convert: %s -> %s: %s\n", argv[optind], argv[optind + 1],
				lz_strerror(ret));
			return 1;
		}
		if (!quiet)
			printf("converted %s -> %s\n", argv[optind], argv[optind + 1]);
		return 0;
	}
	if (S_ISDIR(st.st_mode) && out_inside_src(argv[optind], argv[optind + 1])) {
		fprintf(stderr, "lazyimg convert: OUTDIR %s is inside SRC %s: the image would contain itself\n",
			argv[optind + 1], argv[optind]);
		return 2;
	}
	ret = rafs_build(argv[optind], argv[optind + 1], &o, &r);
	if (ret) {
		fprintf(stderr, "lazyimg convert: %s: %s\n", argv[optind], lz_strerror(ret));
		return 1;
	}
	if (!quiet)
		printf("converted %s: %llu entries, %llu files, %llu bytes; %llu chunks (+%llu deduplicated); blob %s (%llu bytes); image.boot %llu bytes\n",
		       argv[optind], (unsigned long long)r.entries, (unsigned long long)r.files,
		       (unsigned long long)r.bytes_in, (unsigned long long)r.chunks,
		       (unsigned long long)r.dedup_chunks, r.blob_id[0] ? r.blob_id : "(none)",
		       (unsigned long long)r.blob_size, (unsigned long long)r.boot_size);
	return 0;
}

static void merge_usage(FILE *out)
{
	fputs("usage: lazyimg merge [--fs-version 5|6] OUT BOOT...\n"
	      "\n"
	      "Merge layer bootstraps, lowest first, into one image bootstrap OUT: OCI\n"
	      "whiteouts (.wh.NAME) delete, opaque directories (.wh..wh..opq) hide what\n"
	      "lower layers had, upper entries win. OUT references every layer's blobs.\n"
	      "  --fs-version 5|6   output version (default: that of the layers)\n"
	      "  -h, --help         this text\n", out);
}

int cmd_merge(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "fs-version", required_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct cli_common co = { 0 };
	int c, ret, ver = 0;

	cli_opts_begin(&co, "merge", lopts, argv);
	while ((c = getopt_long(argc, argv, "h", co.lopts, NULL)) != -1) {
		switch (c) {
		case 'V':
			if (strcmp(optarg, "5") && strcmp(optarg, "6")) {
				fprintf(stderr, "lazyimg merge: --fs-version must be 5 or 6, not '%s'\n", optarg);
				return 2;
			}
			ver = atoi(optarg);
			break;
		case 'h': merge_usage(stdout); return 0;
		default:
			if (cli_opts_parse(&co, c, optarg))
				return 2;
			break;
		}
	}
	if (argc - optind < 2) {
		fprintf(stderr, "lazyimg merge: expected OUT and at least one BOOT\n");
		merge_usage(stderr);
		return 2;
	}
	ret = rafs_merge(argv[optind], (const char *const *)argv + optind + 1, (size_t)(argc - optind - 1), ver);
	if (ret) {
		fprintf(stderr, "lazyimg merge: %s\n", lz_strerror(ret));
		return 1;
	}
	return 0;
}
