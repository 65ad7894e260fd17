/* SPDX-License-Identifier: Apache-2.0 */
/* lazyimg snapshotter: containerd proxy snapshotter over gRPC (front end only). */
#define LZ_MOD "cli"
#include "lazyimg/snapgrpc.h"
#include "cli.h"

#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define SNAPSHOTTER_OPTS (CLI_OPT_TLS | CLI_OPT_REGISTRY | CLI_OPT_CACHE | CLI_OPT_PREFETCH | CLI_OPT_LOG)

static void snapshotter_usage(FILE *out)
{
	fputs("usage: lazyimg snapshotter --root DIR --address SOCK [options]\n"
	      "\n"
	      "Serve containerd's snapshots API (containerd.services.snapshots.v1) on a\n"
	      "unix socket, as a proxy snapshotter plugin:\n"
	      "  [proxy_plugins.lazyimg]\n"
	      "    type = \"snapshot\"\n"
	      "    address = \"SOCK\"\n"
	      "Plain layers are unpacked by containerd into overlay snapshots under DIR;\n"
	      "nydus and eStargz layers of an image pulled with its reference label\n"
	      "(ctr-remote i rpull, or CRI with snapshot annotations) are mounted lazily\n"
	      "from the registry instead of being downloaded. Runs in the foreground\n"
	      "until SIGTERM or SIGINT.\n"
	      "\n"
	      "  --root DIR             snapshots, metadata, lazy mounts and blob cache\n"
	      "  --address SOCK         unix socket to serve gRPC on\n"
	      "  --no-remote            never mount lazily: every layer is pulled in full\n"
	      "  --fd-holder SOCK       park the lazy mounts' /dev/fuse fds in a running\n"
	      "                         `lazyimg fdholder SOCK`: after a restart or a crash\n"
	      "                         of the snapshotter the mounts (and containers on\n"
	      "                         them) keep working; without it they are remounted\n"
	      "  --threads N            FUSE worker threads shared by the lazy mounts\n"
	      "  -h, --help             this text\n"
	      "registry, cache and logging:\n", out);
	cli_opts_help(out, SNAPSHOTTER_OPTS, 25);
}

int cmd_snapshotter(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "root", required_argument, NULL, 'R' },
		{ "address", required_argument, NULL, 'a' },
		{ "no-remote", no_argument, NULL, 'N' },
		{ "fd-holder", required_argument, NULL, 'H' },
		{ "threads", required_argument, NULL, 'T' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct snap_grpc_opts o = { 0 };
	struct cli_common co = { .groups = SNAPSHOTTER_OPTS, .reg = &o.fs.reg, .cache_max = &o.fs.cache_max,
				 .prefetch = &o.fs.prefetch };
	struct snap_grpc *g = NULL;
	char root[PATH_MAX], addr[PATH_MAX];
	const char *root_arg = NULL, *addr_arg = NULL;
	sigset_t set;
	unsigned num;
	int c, sig, ret;

	cli_opts_begin(&co, "snapshotter", lopts, argv);
	while ((c = getopt_long(argc, argv, "h", co.lopts, NULL)) != -1) {
		switch (c) {
		case 'R': root_arg = optarg; break;
		case 'a': addr_arg = optarg; break;
		case 'N': o.no_remote = true; break;
		case 'H': o.fs.fd_holder = optarg; break;
		case 'T':
			if (cli_parse_uint(co.prog, "threads", optarg, CLI_MAX_THREADS, &num))
				return 2;
			o.fs.threads = (int)num;
			break;
		case 'h': snapshotter_usage(stdout); return 0;
		default:
			if (cli_opts_parse(&co, c, optarg))
				return 2;
			break;
		}
	}
	if (optind != argc || !root_arg || !addr_arg) {
		fprintf(stderr, "lazyimg snapshotter: --root and --address are required, nothing else\n");
		snapshotter_usage(stderr);
		return 2;
	}
	/* keep absolute paths: the overlay options and containerd need them */
	if (mkdir(root_arg, 0700) < 0 && errno != EEXIST) {
		fprintf(stderr, "lazyimg snapshotter: --root %s: %s\n", root_arg, strerror(errno));
		return 1;
	}
	if (!realpath(root_arg, root)) {
		fprintf(stderr, "lazyimg snapshotter: --root %s: %s\n", root_arg, strerror(errno));
		return 1;
	}
	if (addr_arg[0] == '/') {
		snprintf(addr, sizeof(addr), "%s", addr_arg);
	} else {
		char cwd[PATH_MAX];

		if (!getcwd(cwd, sizeof(cwd)) || snprintf(addr, sizeof(addr), "%s/%s", cwd, addr_arg) >= (int)sizeof(addr)) {
			fprintf(stderr, "lazyimg snapshotter: --address %s: path too long\n", addr_arg);
			return 1;
		}
	}
	o.root = root;
	o.address = addr;
	/* every thread inherits the mask; this one waits for the signals */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	reg_global_init();
	{
		/* the socket's directory, e.g. /run/lazyimg, may not exist yet */
		char dir[PATH_MAX];
		char *slash;

		snprintf(dir, sizeof(dir), "%s", addr);
		slash = strrchr(dir, '/');
		if (slash && slash != dir) {
			*slash = 0;
			if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
				fprintf(stderr, "lazyimg snapshotter: --address directory %s: %s\n", dir, strerror(errno));
				return 1;
			}
		}
	}
	ret = snap_grpc_start(&o, &g);
	if (ret) {
		fprintf(stderr, "lazyimg snapshotter: %s\n", ret == -EFSCORRUPTED ?
			"the snapshot metadata under --root is corrupt (see the message above); nothing was changed" :
			lz_strerror(ret));
		return 1;
	}
	fprintf(stderr, "lazyimg snapshotter: serving on %s (root %s)\n", addr, root);
	do
		ret = sigwait(&set, &sig);
	while (ret == EINTR);
	fprintf(stderr, "lazyimg snapshotter: signal %d, stopping\n", sig);
	snap_grpc_stop(g);
	return 0;
}
