/* SPDX-License-Identifier: Apache-2.0 */
#define LZ_MOD "cli"
#include "lazyimg/rafs.h"
#include "cli.h"

#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

static void inspect_usage(FILE *out)
{
	fputs("usage: lazyimg inspect [--json] [--no-chunks] FILE\n"
	      "\n"
	      "Print a RAFS bootstrap's superblock summary, blob table, tree and per-file\n"
	      "chunks. FILE may be a bootstrap or a data blob with an inlined bootstrap.\n"
	      "  --json        machine-readable output\n"
	      "  --no-chunks   leave out the per-file chunk lists\n"
	      "  -h, --help    this text\n", out);
}

int cmd_inspect(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "no-chunks", no_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct cli_common co = { 0 };
	struct rafs_opts ro = { .validate = true };
	bool json = false, chunks = true;
	struct rafs *fs;
	int c, ret;

	cli_opts_begin(&co, "inspect", lopts, argv);
	while ((c = getopt_long(argc, argv, "h", co.lopts, NULL)) != -1) {
		switch (c) {
		case 'j': json = true; break;
		case 'n': chunks = false; break;
		case 'h': inspect_usage(stdout); return 0;
		default:
			if (cli_opts_parse(&co, c, optarg))
				return 2;
			break;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "lazyimg inspect: expected exactly one FILE\n");
		return 2;
	}
	ret = rafs_open_file(argv[optind], &ro, &fs);
	if (ret) {
		fprintf(stderr, "lazyimg inspect: %s: %s\n", argv[optind], lz_strerror(ret));
		return 1;
	}
	ret = rafs_inspect(fs, stdout, json, chunks);
	rafs_close(fs);
	if (ret) {
		fprintf(stderr, "lazyimg inspect: %s: %s\n", argv[optind], lz_strerror(ret));
		return 1;
	}
	return 0;
}

static void check_usage(FILE *out)
{
	fputs("usage: lazyimg check [--blob-dir DIR] FILE\n"
	      "\n"
	      "Read, decompress and verify every chunk the image references. Exits 0 when\n"
	      "all verify, 1 naming the first bad chunk otherwise.\n"
	      "  -B, --blob-dir DIR   data blobs named by blob id (default: FILE's directory)\n"
	      "  -h, --help           this text\n", out);
}

int cmd_check(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "blob-dir", required_argument, NULL, 'B' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct cli_common co = { 0 };
	struct rafs_opts ro = { .validate = true };
	char dirbuf[PATH_MAX];
	uint64_t n, bytes;
	struct rafs *fs;
	int c, ret;

	cli_opts_begin(&co, "check", lopts, argv);
	while ((c = getopt_long(argc, argv, "B:h", co.lopts, NULL)) != -1) {
		switch (c) {
		case 'B': ro.blob_dir = optarg; break;
		case 'h': check_usage(stdout); return 0;
		default:
			if (cli_opts_parse(&co, c, optarg))
				return 2;
			break;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "lazyimg check: expected exactly one FILE\n");
		return 2;
	}
	if (!ro.blob_dir) {
		const char *f = argv[optind], *slash = strrchr(f, '/');

		snprintf(dirbuf, sizeof(dirbuf), "%.*s", slash ? (int)(slash - f) : 1, slash ? f : ".");
		ro.blob_dir = dirbuf;
	}
	ret = rafs_open_file(argv[optind], &ro, &fs);
	if (ret) {
		fprintf(stderr, "lazyimg check: %s: %s\n", argv[optind], lz_strerror(ret));
		return 1;
	}
	ret = rafs_check(fs, stdout, &n, &bytes);
	rafs_close(fs);
	if (ret)
		return 1;
	printf("check: ok: %llu chunks, %llu bytes verified\n", (unsigned long long)n,
	       (unsigned long long)bytes);
	return 0;
}
