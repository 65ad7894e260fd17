/* SPDX-License-Identifier: Apache-2.0 */
#ifndef LAZYIMG_CLI_H
#define LAZYIMG_CLI_H

#include "lazyimg/reg.h"

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define LAZYIMG_VERSION "0.1.0"

struct cli_cmd {
	const char *name;
	const char *summary;
	int (*fn)(int argc, char **argv);
};

int cmd_mount(int argc, char **argv);
int cmd_umount(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_stats(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_fdholder(int argc, char **argv);
int cmd_list(int argc, char **argv);
int cmd_usage(int argc, char **argv);
/* mount/umount/stats --server SOCK: done by a running `lazyimg serve`; -1 if no --server */
int cli_server_dispatch(const char *cmd, int argc, char **argv);
int cmd_snapshotter(int argc, char **argv);
int cmd_bench(int argc, char **argv);

/* Runtime files of a mount (pid, log), named after the mountpoint. */
int cli_runtime_path(const char *mountpoint, const char *suffix, char *buf, size_t size);
/* "error".."debug" -> LZ_LOG_*; -1 otherwise */
int cli_log_level(const char *s);
/* "123", "64K", "2M", "1G" -> bytes; -EINVAL otherwise (also when it does not fit 64 bits) */
int cli_parse_size(const char *s, uint64_t *out);
/* A whole number 0..max for --flag; else prints "<prog>: --flag 'S' is not ..." and returns 2. */
int cli_parse_uint(const char *prog, const char *flag, const char *s, unsigned max, unsigned *out);

/*
 * Options shared by several commands (tools/cli_opts.c): a command picks
 * groups, points each at its own option struct, and passes every getopt
 * value it does not know itself to cli_opts_parse.
 */
enum {
	CLI_OPT_TLS = 1u << 0,      /* --insecure, --ca-file */
	CLI_OPT_REGISTRY = 1u << 1, /* --auth-file, --mirror, --timeout, --retries */
	CLI_OPT_CACHE = 1u << 2,    /* --cache-max-size */
	CLI_OPT_MERGE = 1u << 3,    /* --merge-max */
	CLI_OPT_PREFETCH = 1u << 4, /* --prefetch-all, --no-prefetch */
	CLI_OPT_LOG = 1u << 5,      /* --log-level (sets lz_log_level) */
};
#define CLI_MAX_LONGOPTS 48
/* --threads of mount, serve, snapshotter: serve's worker pool holds at most this many */
#define CLI_MAX_THREADS 1024

struct cli_common {
	unsigned groups;          /* CLI_OPT_* */
	struct reg_opts *reg;     /* TLS, REGISTRY */
	uint64_t *cache_max;      /* CACHE */
	uint64_t *merge_max;      /* MERGE: 0 given becomes 1 (one chunk per request) */
	int *prefetch;            /* PREFETCH: SNAP_PREFETCH_ALL or _NONE */
	/* set by cli_opts_begin / cli_opts_parse */
	bool prefetch_given;
	char prog[48];            /* "lazyimg <cmd>", the prefix of every message */
	struct option lopts[CLI_MAX_LONGOPTS]; /* the command's own, then the shared ones */
};

/* Fill co->lopts (own is {0}-terminated), reset getopt, point argv[0] at co->prog. */
void cli_opts_begin(struct cli_common *co, const char *cmd, const struct option *own, char **argv);
/* A getopt value the command does not handle itself: 0 when taken, else 2 (exit status)
 * after a message naming the flag and the bad value. */
int cli_opts_parse(struct cli_common *co, int c, const char *arg);
/* The help lines of these groups, text starting at column `width`. */
void cli_opts_help(FILE *out, unsigned groups, int width);
/* For commands without getopt: 2 and a message if some argument looks like an option. */
int cli_reject_options(const char *cmd, int argc, char **argv);
/* Same, and: -h/--help prints usage on stdout (0), other than nargs arguments print it on
 * stderr (2); -1 when argv is fine and the command goes on. */
int cli_plain_args(const char *cmd, int argc, char **argv, int nargs, const char *usage);

#endif
