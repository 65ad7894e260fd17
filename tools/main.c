/* SPDX-License-Identifier: Apache-2.0 */
/* lazyimg - command-line front end: argument parsing, then library calls. */
#define LZ_MOD "cli"
#include "lazyimg/imgfs.h"
#include "lazyimg/rafs.h"
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>

static const struct cli_cmd cmds[] = {
	{ "mount", "mount an image read-only over FUSE", cmd_mount },
	{ "umount", "unmount a lazyimg mount and stop its server", cmd_umount },
	{ "stats", "print a running mount's counters as JSON", cmd_stats },
	{ "inspect", "print a bootstrap's superblock, blobs, tree and chunks", cmd_inspect },
	{ "check", "read and verify every chunk of an image", cmd_check },
	{ "convert", "build a RAFS image from a directory or a layer tarball", cmd_convert },
	{ "merge", "merge layer bootstraps into one image bootstrap", cmd_merge },
	{ "serve", "host many mounts in one process with a control socket", cmd_serve },
	{ "list", "list the mounts of a running 'lazyimg serve'", cmd_list },
	{ "usage", "cache bytes a blob uses on a running 'lazyimg serve'", cmd_usage },
	{ "fdholder", "(internal) keep serve's FUSE fds alive across restarts", cmd_fdholder },
	{ "snapshotter", "serve containerd as a proxy snapshotter (gRPC)", cmd_snapshotter },
	{ "bench", "measure lazy pull of registry images (cold, warm, baselines)", cmd_bench },
};

static void usage(FILE *out)
{
	fprintf(out, "usage: lazyimg <command> [options] [args]\n\ncommands:\n");
	for (size_t i = 0; i < LZ_ARRAY_SIZE(cmds); i++)
		fprintf(out, "  %-10s %s\n", cmds[i].name, cmds[i].summary);
	fprintf(out, "\nRun 'lazyimg <command> --help' for a command's options.\n");
}

int main(int argc, char **argv)
{
	const char *lvl = getenv("LAZYIMG_LOG");

	if (lvl)
		lz_log_level = atoi(lvl);
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
		printf("lazyimg %s\n", LAZYIMG_VERSION);
		return 0;
	}
	for (size_t i = 0; i < LZ_ARRAY_SIZE(cmds); i++) {
		int ret;

		if (strcmp(argv[1], cmds[i].name))
			continue;
		ret = cli_server_dispatch(argv[1], argc - 1, argv + 1);
		return ret >= 0 ? ret : cmds[i].fn(argc - 1, argv + 1);
	}
	fprintf(stderr, "lazyimg: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
