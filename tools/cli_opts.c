/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cli_opts.c - the options several front ends share (registry access, blob
 * cache, prefetch, log level): one table gives each its name, its help text
 * and its group, one parser reads it, one help block prints it. A command
 * names the groups it takes and where the values go, so `mount`, `serve`,
 * `snapshotter`, `convert` and `bench` cannot drift apart in spelling,
 * meaning, default or error message.
 */
#define LZ_MOD "cli"
#include "lazyimg/lz.h"
#include "lazyimg/snap.h"
#include "cli.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>

/* 0 keeps the client's default of 30 s; a day is more than any stall worth waiting for */
#define CLI_MAX_TIMEOUT_S 86400
/* each retry waits longer than the one before: beyond this a request is never given up */
#define CLI_MAX_RETRIES 100
/* one merged request is read into memory whole */
#define CLI_MAX_MERGE (256ull << 20)

/* getopt values of the shared options: above every char a command uses for its own */
enum {
	O_INSECURE = 0x1000,
	O_CA_FILE,
	O_AUTH_FILE,
	O_MIRROR,
	O_TIMEOUT,
	O_RETRIES,
	O_CACHE_MAX,
	O_MERGE_MAX,
	O_PREFETCH_ALL,
	O_NO_PREFETCH,
	O_LOG_LEVEL,
};

struct shared_opt {
	unsigned group;
	struct option lo;
	const char *arg;  /* metavariable in the help, NULL for a flag */
	const char *help; /* lines joined by \n */
};

/* the order is the order of the help block */
static const struct shared_opt shared[] = {
	{ CLI_OPT_TLS, { "insecure", no_argument, NULL, O_INSECURE }, NULL,
	  "plain HTTP registry, no TLS verification" },
	{ CLI_OPT_TLS, { "ca-file", required_argument, NULL, O_CA_FILE }, "FILE",
	  "CA bundle to verify the registry with" },
	{ CLI_OPT_REGISTRY, { "auth-file", required_argument, NULL, O_AUTH_FILE }, "FILE",
	  "docker config.json with credentials\n"
	  "(default ~/.docker/config.json; also\n"
	  "LAZYIMG_REGISTRY_USER/LAZYIMG_REGISTRY_PASSWORD)" },
	{ CLI_OPT_REGISTRY, { "mirror", required_argument, NULL, O_MIRROR }, "URL",
	  "try this mirror/proxy first (repeatable, in order)" },
	{ CLI_OPT_REGISTRY, { "timeout", required_argument, NULL, O_TIMEOUT }, "SECONDS",
	  "stall timeout of one registry request (default 30)" },
	{ CLI_OPT_REGISTRY, { "retries", required_argument, NULL, O_RETRIES }, "N",
	  "retries of a failed request (default 4)" },
	{ CLI_OPT_CACHE, { "cache-max-size", required_argument, NULL, O_CACHE_MAX }, "BYTES",
	  "evict least recently used blobs above this (K/M/G)" },
	{ CLI_OPT_MERGE, { "merge-max", required_argument, NULL, O_MERGE_MAX }, "BYTES",
	  "largest request when fetching neighbouring missing chunks\n"
	  "together (default 2M; 0: one request per chunk)" },
	{ CLI_OPT_PREFETCH, { "prefetch-all", no_argument, NULL, O_PREFETCH_ALL }, NULL,
	  "fetch whole images in the background" },
	{ CLI_OPT_PREFETCH, { "no-prefetch", no_argument, NULL, O_NO_PREFETCH }, NULL,
	  "ignore images' prefetch tables" },
	{ CLI_OPT_LOG, { "log-level", required_argument, NULL, O_LOG_LEVEL }, "LEVEL",
	  "error, warn (default), info or debug" },
};

int cli_parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	/* strtoull skips blanks and takes "-1" as a huge number: digits only from the start */
	if (!isdigit((unsigned char)s[0]))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -EINVAL;
	if (*end == 'K' || *end == 'k')
		shift = 10, end++;
	else if (*end == 'M' || *end == 'm')
		shift = 20, end++;
	else if (*end == 'G' || *end == 'g')
		shift = 30, end++;
	/* "20000000000G" must not wrap around to a small size */
	if (*end || v > (UINT64_MAX >> shift))
		return -EINVAL;
	*out = (uint64_t)v << shift;
	return 0;
}

int cli_log_level(const char *s)
{
	static const char *const names[] = { "error", "warn", "info", "debug" };

	for (int i = 0; i < 4; i++)
		if (!strcmp(s, names[i]))
			return i;
	return -1;
}

int cli_parse_uint(const char *prog, const char *flag, const char *s, unsigned max, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	/* strtoul skips blanks and takes "-1" as ULONG_MAX: digits only from the start */
	if (!isdigit((unsigned char)s[0]) || *end || errno || v > max) {
		fprintf(stderr, "%s: --%s '%s' is not a whole number from 0 to %u\n", prog, flag, s, max);
		return 2;
	}
	*out = (unsigned)v;
	return 0;
}

void cli_opts_begin(struct cli_common *co, const char *cmd, const struct option *own, char **argv)
{
	size_t n = 0;

	snprintf(co->prog, sizeof(co->prog), "lazyimg %s", cmd);
	if ((co->groups & (CLI_OPT_TLS | CLI_OPT_REGISTRY) && !co->reg) ||
	    (co->groups & CLI_OPT_CACHE && !co->cache_max) || (co->groups & CLI_OPT_MERGE && !co->merge_max) ||
	    (co->groups & CLI_OPT_PREFETCH && !co->prefetch)) {
		fprintf(stderr, "%s: a group of shared options has nowhere to store its values\n", co->prog);
		abort();
	}
	for (; own[n].name; n++) {
		if (n >= LZ_ARRAY_SIZE(co->lopts) - 1)
			goto too_many;
		co->lopts[n] = own[n];
	}
	for (size_t i = 0; i < LZ_ARRAY_SIZE(shared); i++) {
		if (!(shared[i].group & co->groups))
			continue;
		if (n >= LZ_ARRAY_SIZE(co->lopts) - 1)
			goto too_many;
		co->lopts[n++] = shared[i].lo;
	}
	co->lopts[n] = (struct option){ 0 };
	co->prefetch_given = false;
	/* getopt names argv[0] in its messages: "lazyimg mount: unrecognized option '--x'" */
	argv[0] = co->prog;
	optind = 1;
	opterr = 1;
	return;
too_many:
	/* a programming error, caught by the first run of the command */
	fprintf(stderr, "%s: more than %zu options: raise CLI_MAX_LONGOPTS\n", co->prog,
		LZ_ARRAY_SIZE(co->lopts) - 1);
	abort();
}

int cli_opts_parse(struct cli_common *co, int c, const char *arg)
{
	struct reg_opts *r = co->reg;
	unsigned v;

	switch (c) {
	case O_INSECURE: r->insecure = true; return 0;
	case O_CA_FILE: r->ca_file = arg; return 0;
	case O_AUTH_FILE: r->auth_file = arg; return 0;
	case O_MIRROR:
		if (r->nmirrors >= REG_MAX_MIRRORS) {
			fprintf(stderr, "%s: at most %d --mirror (one too many: '%s')\n", co->prog, REG_MAX_MIRRORS,
				arg);
			return 2;
		}
		r->mirrors[r->nmirrors++] = arg;
		return 0;
	case O_TIMEOUT:
		if (cli_parse_uint(co->prog, "timeout", arg, CLI_MAX_TIMEOUT_S, &v))
			return 2;
		r->timeout_s = (int)v;
		return 0;
	case O_RETRIES:
		if (cli_parse_uint(co->prog, "retries", arg, CLI_MAX_RETRIES, &v))
			return 2;
		/* in reg_opts 0 is "the default": none at all is -1 */
		r->retries = v ? (int)v : -1;
		return 0;
	case O_CACHE_MAX:
		if (cli_parse_size(arg, co->cache_max)) {
			fprintf(stderr, "%s: --cache-max-size '%s' is not a size\n", co->prog, arg);
			return 2;
		}
		return 0;
	case O_MERGE_MAX:
		if (cli_parse_size(arg, co->merge_max) || *co->merge_max > CLI_MAX_MERGE) {
			fprintf(stderr, "%s: --merge-max '%s' is not a size up to 256M\n", co->prog, arg);
			return 2;
		}
		/* 0 asks for one chunk per request: any bound below a chunk does that */
		if (!*co->merge_max)
			*co->merge_max = 1;
		return 0;
	case O_PREFETCH_ALL:
	case O_NO_PREFETCH:
		*co->prefetch = c == O_PREFETCH_ALL ? SNAP_PREFETCH_ALL : SNAP_PREFETCH_NONE;
		co->prefetch_given = true;
		return 0;
	case O_LOG_LEVEL:
		if (cli_log_level(arg) < 0) {
			fprintf(stderr, "%s: --log-level: unknown level '%s'\n", co->prog, arg);
			return 2;
		}
		lz_log_level = cli_log_level(arg);
		return 0;
	default:
		/* '?' or ':': getopt has named the option; what follows says where to look */
		fprintf(stderr, "Run '%s --help' for its options.\n", co->prog);
		return 2;
	}
}

void cli_opts_help(FILE *out, unsigned groups, int width)
{
	for (size_t i = 0; i < LZ_ARRAY_SIZE(shared); i++) {
		const struct shared_opt *o = &shared[i];
		const char *line = o->help, *nl;
		char head[64];

		if (!(o->group & groups))
			continue;
		snprintf(head, sizeof(head), "  --%s%s%s", o->lo.name, o->arg ? " " : "", o->arg ? o->arg : "");
		fprintf(out, "%-*s ", width - 1, head);
		for (bool first = true; line; first = false) {
			nl = strchr(line, '\n');
			if (!first)
				fprintf(out, "%*s", width, "");
			fprintf(out, "%.*s\n", nl ? (int)(nl - line) : (int)strlen(line), line);
			line = nl ? nl + 1 : NULL;
		}
	}
}

int cli_reject_options(const char *cmd, int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (argv[i][0] == '-' && argv[i][1]) {
			fprintf(stderr, "lazyimg %s: unrecognized option '%s'\nRun 'lazyimg %s --help' for its options.\n",
				cmd, argv[i], cmd);
			return 2;
		}
	}
	return 0;
}

int cli_plain_args(const char *cmd, int argc, char **argv, int nargs, const char *usage)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			fputs(usage, stdout);
			return 0;
		}
	}
	if (cli_reject_options(cmd, argc, argv))
		return 2;
	if (argc - 1 != nargs) {
		fputs(usage, stderr);
		return 2;
	}
	return -1;
}
