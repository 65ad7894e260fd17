/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmd_serve.c - `lazyimg serve` (one process hosting every mount of a root,
 * control API on a unix socket), `lazyimg fdholder` (the process that keeps
 * FUSE fds alive across serve restarts), and the client side: `list`,
 * `usage`, and `mount/umount/stats --server SOCK`.
 */
#define LZ_MOD "cli"
#include "lazyimg/ctl.h"
#include "lazyimg/reg.h"
#include "lazyimg/snapfs.h"
#include "cli.h"

#include <fcntl.h>
#include <getopt.h>
#include <json-c/json.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define HOLDER_START_WAIT_MS 5000

#define SERVE_OPTS (CLI_OPT_TLS | CLI_OPT_REGISTRY | CLI_OPT_CACHE | CLI_OPT_PREFETCH | CLI_OPT_LOG)
/* a read hung for an hour is long past any use of the number */
#define SERVE_MAX_HUNG_MS 3600000

static void serve_usage(FILE *out)
{
	fputs("usage: lazyimg serve --root DIR [options]\n"
	      "\n"
	      "Host every lazily mounted image of a snapshotter root in this one process:\n"
	      "mounts appear at DIR/mnt/<id>, share one blob cache (DIR/cache) and are\n"
	      "restored from DIR/state when the server starts again. Control API: HTTP/1.1\n"
	      "+ JSON on a unix socket (see `lazyimg mount --server`, `list`, `usage`).\n"
	      "Each mount's /dev/fuse fd is parked in a small holder process\n"
	      "(`lazyimg fdholder`, started on demand) so that open files survive a\n"
	      "restart or a crash of the server: readers wait until the next server\n"
	      "adopts the mount. Runs in the foreground; SIGTERM/SIGINT stop it, leaving\n"
	      "the mounts to the next server (or unmounting them with --cleanup-on-exit).\n"
	      "\n"
	      "  --root DIR             snapshotter root (created if missing)\n"
	      "  --socket SOCK          control socket (default DIR/lazyimg.sock)\n"
	      "  --no-fd-holder         no holder: stopping the server unmounts; mounts are\n"
	      "                         re-made from the state when it starts again\n"
	      "  --cleanup-on-exit      unmount everything and forget it when stopped\n"
	      "  --threads N            at most N FUSE worker threads, shared by all mounts\n"
	      "                         (default 64; they start at 4 and grow when all are busy)\n"
	      "  --hung-ms MS           a read running longer is reported as hung (default 10000)\n"
	      "  -h, --help             this text\n"
	      "registry, cache and logging:\n", out);
	cli_opts_help(out, SERVE_OPTS, 25);
}

/*
 * Start `lazyimg fdholder SOCK` detached from this process (own session, not
 * our child: it must outlive us, and kill -9 of the server must not reach it)
 * and wait until it answers.
 */
static int start_holder(const char *sock, const char *logpath)
{
	pid_t pid;
	int status;

	if (snap_fdholder_ping(sock) == 0)
		return 0;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int lfd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		int nfd = open("/dev/null", O_RDWR | O_CLOEXEC);

		setsid();
		if (fork() != 0)
			_exit(0);
		if (nfd >= 0) {
			dup2(nfd, 0);
			dup2(nfd, 1);
		}
		if (lfd >= 0)
			dup2(lfd, 2);
		if (chdir("/") < 0)
			_exit(1);
		execl("/proc/self/exe", "lazyimg", "fdholder", sock, (char *)NULL);
		_exit(127);
	}
	waitpid(pid, &status, 0);
	for (int i = 0; i < HOLDER_START_WAIT_MS / 20; i++) {
		struct timespec ts = { 0, 20 * 1000 * 1000 };

		if (snap_fdholder_ping(sock) == 0)
			return 0;
		nanosleep(&ts, NULL);
	}
	return -ETIMEDOUT;
}

/* systemd Type=notify: READY=1 once the socket answers (no-op elsewhere) */
static void sd_ready(void)
{
	const char *ns = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd;

	if (!ns || (ns[0] != '/' && ns[0] != '@') || strlen(ns) >= sizeof(sun.sun_path))
		return;
	strcpy(sun.sun_path, ns);
	if (ns[0] == '@')
		sun.sun_path[0] = 0;
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	if (sendto(fd, "READY=1", 7, 0, (struct sockaddr *)&sun,
		   (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(ns))) < 0)
		lz_warn("sd_notify: %s", strerror(errno));
	close(fd);
}

int cmd_serve(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "root", required_argument, NULL, 'R' },
		{ "socket", required_argument, NULL, 'S' },
		{ "no-fd-holder", no_argument, NULL, 'H' },
		{ "cleanup-on-exit", no_argument, NULL, 'c' },
		{ "threads", required_argument, NULL, 'T' },
		{ "hung-ms", required_argument, NULL, 'G' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct snap_fs_opts o = { 0 };
	struct cli_common co = { .groups = SERVE_OPTS, .reg = &o.reg, .cache_max = &o.cache_max,
				 .prefetch = &o.prefetch };
	const char *sock = NULL;
	char sockbuf[128], holder[128], hlog[128], root[PATH_MAX];
	bool use_holder = true, cleanup = false;
	struct snap_fs *fs = NULL;
	struct snap_serve *srv = NULL;
	sigset_t set;
	unsigned num;
	int c, ret, sig = 0;

	cli_opts_begin(&co, "serve", lopts, argv);
	while ((c = getopt_long(argc, argv, "h", co.lopts, NULL)) != -1) {
		switch (c) {
		case 'R': o.root = optarg; break;
		case 'S': sock = optarg; break;
		case 'H': use_holder = false; break;
		case 'c': cleanup = true; break;
		case 'T':
			if (cli_parse_uint(co.prog, "threads", optarg, CLI_MAX_THREADS, &num))
				return 2;
			o.threads = (int)num;
			break;
		case 'G':
			if (cli_parse_uint(co.prog, "hung-ms", optarg, SERVE_MAX_HUNG_MS, &num))
				return 2;
			o.hung_ms = (int)num;
			break;
		case 'h': serve_usage(stdout); return 0;
		default:
			if (cli_opts_parse(&co, c, optarg))
				return 2;
			break;
		}
	}
	if (!o.root || optind != argc) {
		fprintf(stderr, "lazyimg serve: --root DIR is required and takes no other arguments\n");
		serve_usage(stderr);
		return 2;
	}
	if (mkdir(o.root, 0700) < 0 && errno != EEXIST) {
		fprintf(stderr, "lazyimg serve: --root %s: %s\n", o.root, strerror(errno));
		return 1;
	}
	if (!realpath(o.root, root)) {
		fprintf(stderr, "lazyimg serve: --root %s: %s\n", o.root, strerror(errno));
		return 1;
	}
	o.root = root;
	if (strlen(root) > 80) {
		/* unix socket paths hold 107 bytes */
		fprintf(stderr, "lazyimg serve: --root %s: path too long for its sockets (at most 80 bytes)\n", root);
		return 1;
	}
	if (!sock) {
		snprintf(sockbuf, sizeof(sockbuf), "%.80s/lazyimg.sock", root);
		sock = sockbuf;
	}
	signal(SIGPIPE, SIG_IGN);
	reg_global_init();
	if (use_holder) {
		snprintf(holder, sizeof(holder), "%.80s/fdholder.sock", root);
		snprintf(hlog, sizeof(hlog), "%.80s/fdholder.log", root);
		ret = start_holder(holder, hlog);
		if (ret) {
			fprintf(stderr, "lazyimg serve: cannot start the fd holder on %s: %s (log %s)\n", holder,
				strerror(-ret), hlog);
			return 1;
		}
		o.fd_holder = holder;
	}
	/* signals are taken by sigwait below; every thread started from here inherits the mask */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	ret = snap_fs_open(&o, &fs);
	if (ret) {
		fprintf(stderr, "lazyimg serve: cannot open root %s: %s\n", root, lz_strerror(ret));
		return 1;
	}
	ret = snap_serve_start(fs, sock, &srv);
	if (ret) {
		fprintf(stderr, "lazyimg serve: control socket %s: %s\n", sock, lz_strerror(ret));
		snap_fs_close(fs);
		return 1;
	}
	{
		struct snap_fs_info *v;
		size_t n = 0, nready = 0;

		if (snap_fs_list(fs, &v, &n) == 0) {
			for (size_t i = 0; i < n; i++)
				nready += !strcmp(v[i].state, "ready");
			free(v);
		}
		fprintf(stderr, "lazyimg serve: root %s, socket %s, restoring %zu mount(s) (%zu ready so far), pid %d\n",
			root, sock, n, nready, (int)getpid());
	}
	sd_ready();
	while (sigwait(&set, &sig) != 0 || (sig != SIGTERM && sig != SIGINT))
		; /* SIGHUP: nothing to reload */
	lz_info("signal %d: stopping", sig);
	snap_serve_stop(srv);
	if (cleanup)
		snap_fs_teardown(fs);
	snap_fs_close(fs);
	fprintf(stderr, "lazyimg serve: stopped%s\n", cleanup ? " (mounts removed)" : "");
	return 0;
}

int cmd_fdholder(int argc, char **argv)
{
	int ret = cli_plain_args("fdholder", argc, argv, 1,
				 "usage: lazyimg fdholder SOCKET\n\n"
				 "Internal: keep the /dev/fuse fds of `lazyimg serve` alive across its restarts.\n"
				 "Started by `lazyimg serve`; exits once it holds nothing and nobody is connected.\n");

	if (ret >= 0)
		return ret;
	return snap_fdholder_main(argv[1]);
}

/* ---- client -------------------------------------------------------------- */

/* one request; on success *out is the parsed body (NULL if not JSON). Prints errors. */
static int request(const char *cmd, const char *sock, const char *method, const char *path, const char *body,
		   json_object **out, char **raw)
{
	char *resp = NULL;
	int st = lz_ctl_request(sock, method, path, body, &resp, NULL);
	json_object *o;

	if (st < 0) {
		fprintf(stderr, "lazyimg %s: no lazyimg server answers on %s (%s)\n", cmd, sock, strerror(-st));
		return -1;
	}
	o = resp ? json_tokener_parse(resp) : NULL;
	if (st != 200) {
		json_object *e;

		if (o && json_object_object_get_ex(o, "error", &e))
			fprintf(stderr, "lazyimg %s: %s (HTTP %d)\n", cmd, json_object_get_string(e), st);
		else
			fprintf(stderr, "lazyimg %s: server answered HTTP %d\n", cmd, st);
		json_object_put(o);
		free(resp);
		return -1;
	}
	if (out)
		*out = o;
	else
		json_object_put(o);
	if (raw)
		*raw = resp;
	else
		free(resp);
	return 0;
}

static const char *jstr(json_object *o, const char *k)
{
	json_object *v;

	return json_object_object_get_ex(o, k, &v) ? json_object_get_string(v) : "";
}

/* --server SOCK or --server=SOCK anywhere in argv; removes it, returns SOCK or NULL */
static const char *take_server(int *argc, char **argv)
{
	const char *sock = NULL;
	int j = 1;

	for (int i = 1; i < *argc; i++) {
		if (!strcmp(argv[i], "--server") && i + 1 < *argc) {
			sock = argv[++i];
			continue;
		}
		if (!strncmp(argv[i], "--server=", 9)) {
			sock = argv[i] + 9;
			continue;
		}
		argv[j++] = argv[i];
	}
	argv[j] = NULL;
	*argc = j;
	return sock;
}

static int client_mount(const char *sock, int argc, char **argv)
{
	char *body = NULL;
	const char *id;
	json_object *o = NULL, *req;
	int ret = cli_plain_args("mount", argc, argv, 2,
				 "usage: lazyimg mount --server SOCK REF ID|MOUNTPOINT\n"
				 "  mounts REF on the server as snapshot ID (a MOUNTPOINT's last component\n"
				 "  is taken as the id); prints where the server mounted it\n");

	if (ret >= 0)
		return ret;
	id = strrchr(argv[2], '/') ? strrchr(argv[2], '/') + 1 : argv[2];
	req = json_object_new_object();
	json_object_object_add(req, "id", json_object_new_string(id));
	json_object_object_add(req, "ref", json_object_new_string(argv[1]));
	body = strdup(json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN));
	json_object_put(req);
	ret = request("mount", sock, "POST", "/api/v1/mounts", body, &o, NULL);
	free(body);
	if (ret)
		return 1;
	printf("%s\n", jstr(o, "mountpoint"));
	json_object_put(o);
	return 0;
}

static int client_by_id(const char *cmd, const char *sock, int argc, char **argv)
{
	char path[512], *raw = NULL;
	bool stats = !strcmp(cmd, "stats");
	char usage[64];
	int ret;

	snprintf(usage, sizeof(usage), "usage: lazyimg %s --server SOCK ID\n", cmd);
	ret = cli_plain_args(cmd, argc, argv, 1, usage);
	if (ret >= 0)
		return ret;
	if (!snap_fs_id_valid(argv[1])) {
		fprintf(stderr, "lazyimg %s: '%s' is not a mount id\n%s", cmd, argv[1], usage);
		return 2;
	}
	snprintf(path, sizeof(path), "/api/v1/mounts/%s%s", argv[1], stats ? "/stats" : "");
	if (request(cmd, sock, stats ? "GET" : "DELETE", path, NULL, NULL, &raw))
		return 1;
	if (stats)
		fputs(raw, stdout);
	free(raw);
	return 0;
}

/* mount/umount/stats with --server: the server does the work; -1 if argv has no --server */
int cli_server_dispatch(const char *cmd, int argc, char **argv)
{
	const char *sock;

	if (strcmp(cmd, "mount") && strcmp(cmd, "umount") && strcmp(cmd, "stats"))
		return -1;
	sock = take_server(&argc, argv);
	if (!sock)
		return -1;
	if (!strcmp(cmd, "mount"))
		return client_mount(sock, argc, argv);
	return client_by_id(cmd, sock, argc, argv);
}

int cmd_list(int argc, char **argv)
{
	const char *sock = take_server(&argc, argv);
	json_object *o = NULL, *a;
	bool json = argc == 2 && !strcmp(argv[1], "--json");
	char *raw = NULL;

	if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		printf("usage: lazyimg list --server SOCK [--json]\n\nList the mounts of a running `lazyimg serve`.\n");
		return 0;
	}
	for (int i = 1; i < argc; i++) {
		if (argv[i][0] == '-' && strcmp(argv[i], "--json")) {
			fprintf(stderr, "lazyimg list: unrecognized option '%s'\n"
					"Run 'lazyimg list --help' for its options.\n", argv[i]);
			return 2;
		}
	}
	if (!sock || (argc != 1 && !json)) {
		fprintf(stderr, "usage: lazyimg list --server SOCK [--json]\n");
		return 2;
	}
	if (request("list", sock, "GET", "/api/v1/mounts", NULL, &o, &raw))
		return 1;
	if (json) {
		fputs(raw, stdout);
		fputc('\n', stdout);
	} else if (json_object_object_get_ex(o, "mounts", &a)) {
		printf("%-24s %-9s %-40s %s\n", "ID", "STATE", "REF", "MOUNTPOINT");
		for (size_t i = 0; i < json_object_array_length(a); i++) {
			json_object *m = json_object_array_get_idx(a, i);

			printf("%-24s %-9s %-40s %s\n", jstr(m, "id"), jstr(m, "state"), jstr(m, "ref"),
			       jstr(m, "mountpoint"));
		}
	}
	json_object_put(o);
	free(raw);
	return 0;
}

int cmd_usage(int argc, char **argv)
{
	static const char usage[] = "usage: lazyimg usage --server SOCK sha256:<64 hex>\n\n"
				    "Bytes the server's blob cache uses on disk for that blob (allocated blocks).\n";
	const char *sock = take_server(&argc, argv);
	json_object *o = NULL, *b;
	char path[256];
	int ret = cli_plain_args("usage", argc, argv, 1, usage);

	if (ret >= 0)
		return ret;
	if (!sock || strlen(argv[1]) > 128) {
		fputs(usage, stderr);
		return 2;
	}
	snprintf(path, sizeof(path), "/api/v1/usage?digest=%s", argv[1]);
	if (request("usage", sock, "GET", path, NULL, &o, NULL))
		return 1;
	if (json_object_object_get_ex(o, "bytes", &b))
		printf("%lld\n", (long long)json_object_get_int64(b));
	json_object_put(o);
	return 0;
}
