/* SPDX-License-Identifier: Apache-2.0 */
#define LZ_MOD "cli"
#include "lazyimg/imgfs.h"
#include "lazyimg/ctl.h"
#include "lazyimg/rafs.h"
#include "lazyimg/snap.h"
#include "cli.h"

#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#define RUNTIME_DIR "/run/lazyimg"

int cli_runtime_path(const char *mountpoint, const char *suffix, char *buf, size_t size)
{
	char real[PATH_MAX];

	if (!realpath(mountpoint, real))
		return -errno;
	if (mkdir(RUNTIME_DIR, 0700) < 0 && errno != EEXIST)
		return -errno;
	snprintf(buf, size, "%s/%016llx.%s", RUNTIME_DIR,
		 (unsigned long long)XXH64(real, strlen(real), 0), suffix);
	return 0;
}

#define MOUNT_OPTS (CLI_OPT_TLS | CLI_OPT_REGISTRY | CLI_OPT_CACHE | CLI_OPT_MERGE | CLI_OPT_PREFETCH | CLI_OPT_LOG)

static void mount_usage(FILE *out)
{
	fputs("usage: lazyimg mount [options] REF MOUNTPOINT\n"
	      "       lazyimg mount --bootstrap FILE [--blob-dir DIR] [options] MOUNTPOINT\n"
	      "\n"
	      "Mount a Nydus RAFS v5/v6 or an eStargz image read-only over FUSE, either\n"
	      "straight from a registry (REF = host[:port]/repo[:tag|@sha256:...], chunks\n"
	      "fetched as they are read; eStargz layers merged as overlayfs would) or a\n"
	      "RAFS image from local files. Returns once the mount is ready; the server\n"
	      "keeps running in the background until 'lazyimg umount'. FILE may also be a\n"
	      "data blob with its bootstrap inlined (RAFS ToC).\n"
	      "\n"
	      "  --cache-dir DIR        bootstraps and blob cache (default /var/lib/lazyimg/cache)\n"
	      "  --prefetch-files FILE  fetch these paths (one per line) in the background\n"
	      "                         (without it, --prefetch-all or --no-prefetch, a list\n"
	      "                         recorded for the image by an earlier --record mount\n"
	      "                         is prefetched)\n"
	      "  --record FILE          at umount, write the files read (first-read order, one\n"
	      "                         path per line, the --prefetch-files format) to FILE and\n"
	      "                         keep a copy per image digest in <cache-dir>/records/\n"
	      "  --layer DIGEST         eStargz: mount only this layer (sha256:...), whiteouts shown\n"
	      "                         as overlayfs does (what a snapshotter's lowerdir needs)\n"
	      "  --server SOCK          ask a running 'lazyimg serve' to mount REF instead\n"
	      "                         (MOUNTPOINT's last component becomes the mount's id)\n"
	      "  -b, --bootstrap FILE   the RAFS bootstrap (image.boot)\n"
	      "  -B, --blob-dir DIR     directory of data blobs named by blob id\n"
	      "                         (default: the bootstrap's directory)\n"
	      "      --no-validate      do not verify chunk digests (default: verify)\n"
	      "  -f, --foreground       stay in the foreground, log to stderr\n"
	      "      --log-file FILE    where the background server logs\n"
	      "                         (default: /run/lazyimg/<id>.log)\n"
	      "      --allow-other      let other users access the mount\n"
	      "      --threads N        at most N FUSE worker threads\n"
	      "      --debug            trace every FUSE request (implies -f)\n"
	      "  -h, --help             this text\n"
	      "registry, cache and logging:\n", out);
	cli_opts_help(out, MOUNT_OPTS, 25);
}

static int write_all(int fd, const void *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		buf = (const char *)buf + n;
		len -= (size_t)n;
	}
	return 0;
}

static struct imgfs *g_fs;

static void on_signal(int sig)
{
	if (g_fs)
		imgfs_exit(g_fs);
}

static void install_signals(void)
{
	struct sigaction sa = { .sa_handler = on_signal };

	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

struct stats_ctx {
	struct imgfs *fs;
	struct rafs *rafs;
	struct snap_source *src;
	struct snap_record *rec;
	const char *prefetch_source; /* table, none, list, all, recorded, local */
};

/* GET /stats: the JSON `lazyimg stats` prints; keys are a stable contract */
static int stats_handler(void *arg, const char *method, const char *path, const char *body,
			 size_t len, int *status, char **out)
{
	struct stats_ctx *sc = arg;
	struct imgfs_stats is;
	struct snap_stats ss = { 0 };

	if (strcmp(path, "/stats") && strcmp(path, "/api/v1/stats")) {
		*status = 404;
		return asprintf(out, "{\"error\":\"no such endpoint: %s\"}", path) < 0 ? -ENOMEM : 0;
	}
	imgfs_get_stats(sc->fs, &is);
	if (sc->src) {
		snap_source_stats(sc->src, &ss);
	} else if (sc->rafs) {
		struct rafs_stats rs;

		rafs_get_stats(sc->rafs, &rs);
		ss.backend_bytes = rs.backend_bytes;
		ss.backend_requests = rs.backend_reads;
		ss.cache_hits = rs.chunk_cache_hits;
		ss.cache_misses = rs.chunk_fills;
		ss.chunk_errors = rs.errors;
	}
	*status = 200;
	return asprintf(out,
			"{\"backend_bytes\":%llu,\"backend_requests\":%llu,\"cache_hits\":%llu,"
			"\"cache_misses\":%llu,\"prefetch_bytes\":%llu,\"chunk_errors\":%llu,"
			"\"reads\":%llu,\"read_bytes\":%llu,\"read_errors\":%llu,\"lookups\":%llu,"
			"\"read_latency_us\":{\"p50\":%llu,\"p90\":%llu,\"p99\":%llu,\"max\":%llu},"
			"\"prefetch_source\":\"%s\",\"recording\":%s,\"recorded_files\":%zu}\n",
			(unsigned long long)ss.backend_bytes, (unsigned long long)ss.backend_requests,
			(unsigned long long)ss.cache_hits, (unsigned long long)ss.cache_misses,
			(unsigned long long)ss.prefetch_bytes, (unsigned long long)ss.chunk_errors,
			(unsigned long long)is.reads, (unsigned long long)is.read_bytes,
			(unsigned long long)is.read_errors, (unsigned long long)is.lookups,
			(unsigned long long)is.lat_p50_us, (unsigned long long)is.lat_p90_us,
			(unsigned long long)is.lat_p99_us, (unsigned long long)is.lat_max_us,
			sc->prefetch_source, sc->rec ? "true" : "false",
			sc->rec ? snap_record_count(sc->rec) : (size_t)0) < 0 ? -ENOMEM : 0;
}

int cmd_mount(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "bootstrap", required_argument, NULL, 'b' },
		{ "blob-dir", required_argument, NULL, 'B' },
		{ "no-validate", no_argument, NULL, 'N' },
		{ "foreground", no_argument, NULL, 'f' },
		{ "log-file", required_argument, NULL, 'L' },
		{ "allow-other", no_argument, NULL, 'A' },
		{ "threads", required_argument, NULL, 'T' },
		{ "debug", no_argument, NULL, 'D' },
		{ "cache-dir", required_argument, NULL, 'C' },
		{ "prefetch-files", required_argument, NULL, 'P' },
		{ "record", required_argument, NULL, 'R' },
		{ "layer", required_argument, NULL, 'y' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct snap_source_opts so = { .cache_dir = "/var/lib/lazyimg/cache", .validate = true };
	struct cli_common co = { .groups = MOUNT_OPTS, .reg = &so.reg, .cache_max = &so.cache_max,
				 .merge_max = &so.merge_max, .prefetch = &so.prefetch };
	struct snap_source *src = NULL;
	struct image *img = NULL;
	struct lz_ctl *ctl = NULL;
	char sockpath[PATH_MAX];
	struct rafs_opts ro = { .validate = true };
	struct imgfs_opts fo = { 0 };
	const char *boot = NULL, *blob_dir = NULL, *log_file = NULL;
	char pidpath[PATH_MAX], logpath[PATH_MAX], dirbuf[PATH_MAX], mnt_real[PATH_MAX],
		blob_real[PATH_MAX], log_real[PATH_MAX];
	bool fg = false;
	struct rafs *fs = NULL;
	struct snap_record *rec = NULL;
	struct snap_replay *replay = NULL;
	const char *record_file = NULL, *pf_source = "local";
	static char record_real[PATH_MAX], record_keep[PATH_MAX];
	bool pf_explicit = false;
	struct stat st;
	int c, ret, pfd[2] = { -1, -1 };
	pid_t pid;

	cli_opts_begin(&co, "mount", lopts, argv);
	while ((c = getopt_long(argc, argv, "b:B:fh", co.lopts, NULL)) != -1) {
		switch (c) {
		case 'b': boot = optarg; break;
		case 'B': blob_dir = optarg; break;
		case 'N': ro.validate = false; break;
		case 'f': fg = true; break;
		case 'L': log_file = optarg; break;
		case 'A': fo.allow_other = true; break;
		case 'T':
			if (cli_parse_uint(co.prog, "threads", optarg, CLI_MAX_THREADS, &fo.max_threads))
				return 2;
			break;
		case 'D': fo.debug = true; fg = true; break;
		case 'C': so.cache_dir = optarg; break;
		case 'P': so.prefetch = SNAP_PREFETCH_LIST; so.prefetch_files = optarg; pf_explicit = true; break;
		case 'R': record_file = optarg; break;
		case 'y': so.layer = optarg; break;
		case 'h': mount_usage(stdout); return 0;
		default:
			if (cli_opts_parse(&co, c, optarg))
				return 2;
			break;
		}
	}
	pf_explicit = pf_explicit || co.prefetch_given;
	if (boot ? optind != argc - 1 : optind != argc - 2) {
		fprintf(stderr, boot ? "lazyimg mount: expected exactly one MOUNTPOINT\n" :
				       "lazyimg mount: expected REF and MOUNTPOINT (or --bootstrap FILE MOUNTPOINT)\n");
		mount_usage(stderr);
		return 2;
	}
	if (!boot)
		optind++; /* argv[optind - 1] is the reference */
	/* the background server runs in /: every path it keeps must be absolute */
	if (!realpath(argv[optind], mnt_real) || stat(mnt_real, &st) < 0) {
		fprintf(stderr, "lazyimg mount: mountpoint %s: %s\n", argv[optind], strerror(errno));
		return 1;
	}
	if (!S_ISDIR(st.st_mode)) {
		fprintf(stderr, "lazyimg mount: mountpoint %s: not a directory\n", argv[optind]);
		return 1;
	}
	fo.mountpoint = mnt_real;
	if (record_file) {
		char cwd[PATH_MAX];

		/* the server runs in /: keep an absolute path (the file need not exist yet) */
		if (record_file[0] != '/' &&
		    (!getcwd(cwd, sizeof(cwd)) ||
		     snprintf(record_real, sizeof(record_real), "%s/%s", cwd, record_file) >= (int)sizeof(record_real))) {
			fprintf(stderr, "lazyimg mount: --record %s: path too long\n", record_file);
			return 1;
		}
		if (record_file[0] != '/')
			record_file = record_real;
	}
	if (!boot) {
		static char cache_real[PATH_MAX], pf_real[PATH_MAX];

		/* the server daemonises into /: keep absolute paths */
		if (mkdir(so.cache_dir, 0700) < 0 && errno != EEXIST) {
			fprintf(stderr, "lazyimg mount: --cache-dir %s: %s\n", so.cache_dir, strerror(errno));
			return 1;
		}
		if (!realpath(so.cache_dir, cache_real)) {
			fprintf(stderr, "lazyimg mount: --cache-dir %s: %s\n", so.cache_dir, strerror(errno));
			return 1;
		}
		so.cache_dir = cache_real;
		if (so.prefetch_files) {
			if (!realpath(so.prefetch_files, pf_real)) {
				fprintf(stderr, "lazyimg mount: --prefetch-files %s: %s\n", so.prefetch_files,
					strerror(errno));
				return 1;
			}
			so.prefetch_files = pf_real;
		}
		reg_global_init();
		so.validate = ro.validate;
		ret = snap_source_open(argv[optind - 1], &so, &src);
		if (ret) {
			fprintf(stderr, "lazyimg mount: %s: %s\n", argv[optind - 1],
				ret == -EMEDIUMTYPE ? "not a nydus image (see the message above)" : lz_strerror(ret));
			return 1;
		}
		img = snap_source_image(src);
		pf_source = so.prefetch == SNAP_PREFETCH_NONE ? "none" : so.prefetch == SNAP_PREFETCH_ALL ? "all" :
			    so.prefetch == SNAP_PREFETCH_LIST ? "list" : "table";
		if (snap_record_path(so.cache_dir, snap_source_digest(src), record_keep, sizeof(record_keep))) {
			record_keep[0] = 0;
		} else if (!pf_explicit && access(record_keep, R_OK) == 0) {
			/* a workload recorded on this image before: replay what it read (below),
			 * in place of the image's prefetch table */
			snap_source_set_prefetch(src, SNAP_PREFETCH_NONE, NULL);
			pf_source = "recorded";
			lz_info("prefetching the list recorded for this image: %s", record_keep);
		}
		goto opened;
	}
	if (!blob_dir) {
		const char *slash = strrchr(boot, '/');

		snprintf(dirbuf, sizeof(dirbuf), "%.*s", slash ? (int)(slash - boot) : 1,
			 slash ? boot : ".");
		blob_dir = dirbuf;
	}
	if (!realpath(blob_dir, blob_real) || stat(blob_real, &st) < 0 || !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "lazyimg mount: --blob-dir %s: not a directory\n", blob_dir);
		return 1;
	}
	ro.blob_dir = blob_real;
	if (log_file && log_file[0] != '/') {
		char cwd[PATH_MAX];

		if (!getcwd(cwd, sizeof(cwd)) ||
		    snprintf(log_real, sizeof(log_real), "%s/%s", cwd, log_file) >= (int)sizeof(log_real)) {
			fprintf(stderr, "lazyimg mount: --log-file %s: path too long\n", log_file);
			return 1;
		}
		log_file = log_real;
	}
	ret = rafs_open_file(boot, &ro, &fs);
	if (ret) {
		fprintf(stderr, "lazyimg mount: cannot use bootstrap %s: %s\n", boot, lz_strerror(ret));
		return 1;
	}
	img = rafs_image(fs);
opened:
	if (record_file) {
		ret = snap_record_new(img, record_file, src && record_keep[0] ? record_keep : NULL, &rec);
		if (ret) {
			fprintf(stderr, "lazyimg mount: --record: %s\n", lz_strerror(ret));
			goto fail;
		}
		img = snap_record_image(rec);
	}
	ret = cli_runtime_path(fo.mountpoint, "pid", pidpath, sizeof(pidpath));
	if (!ret)
		ret = cli_runtime_path(fo.mountpoint, "sock", sockpath, sizeof(sockpath));
	if (!ret)
		ret = cli_runtime_path(fo.mountpoint, "log", logpath, sizeof(logpath));
	if (ret) {
		fprintf(stderr, "lazyimg mount: runtime directory %s: %s\n", RUNTIME_DIR, strerror(-ret));
		goto fail;
	}
	if (!log_file)
		log_file = logpath;

	if (!fg) {
		if (pipe2(pfd, O_CLOEXEC) < 0) {
			perror("lazyimg mount: pipe");
			goto fail;
		}
		pid = fork();
		if (pid < 0) {
			perror("lazyimg mount: fork");
			goto fail;
		}
		if (pid > 0) {
			char msg[512];
			ssize_t n;
			int status;

			close(pfd[1]);
			n = read(pfd[0], msg, sizeof(msg) - 1);
			/* the image now lives in the server; this process only reports */
			rafs_close(fs);
			snap_source_close(src);
			snap_record_free(rec);
			if (n > 0 && msg[0] == '+')
				return 0;
			if (n > 0) {
				msg[n] = 0;
				fprintf(stderr, "lazyimg mount: %s (log: %s)\n", msg + 1, log_file);
			} else {
				fprintf(stderr, "lazyimg mount: the server exited before the mount was ready (log: %s)\n",
					log_file);
			}
			waitpid(pid, &status, 0);
			return 1;
		}
		close(pfd[0]);
		setsid();
		{
			int lfd = open(log_file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
			int nfd = open("/dev/null", O_RDWR | O_CLOEXEC);

			if (nfd >= 0) {
				dup2(nfd, 0);
				dup2(nfd, 1);
			}
			if (lfd >= 0)
				dup2(lfd, 2);
			else if (nfd >= 0)
				dup2(nfd, 2);
			if (lfd > 2)
				close(lfd);
			if (nfd > 2)
				close(nfd);
		}
		if (chdir("/") < 0)
			_exit(1);
	}
	install_signals();
	if (src) {
		ret = snap_source_start(src);
		if (ret) {
			if (pfd[1] >= 0) {
				char msg[256];

				snprintf(msg, sizeof(msg), "-cannot open the blob cache in %s: %s", so.cache_dir,
					 lz_strerror(ret));
				write_all(pfd[1], msg, strlen(msg));
			}
			goto fail;
		}
		/* several files in flight at once: one request at a time is what makes lazy pull slow */
		if (!strcmp(pf_source, "recorded") &&
		    (ret = snap_replay_start(snap_source_image(src), record_keep, 8, &replay)))
			lz_warn("recorded list %s not prefetched: %s", record_keep, lz_strerror(ret));
	}
	ret = imgfs_mount(img, &fo, &g_fs);
	if (ret) {
		if (pfd[1] >= 0) {
			char msg[256];

			snprintf(msg, sizeof(msg), "-cannot mount on %s", fo.mountpoint);
			write_all(pfd[1], msg, strlen(msg));
		} else {
			fprintf(stderr, "lazyimg mount: cannot mount on %s\n", fo.mountpoint);
		}
		goto fail;
	}
	{
		static struct stats_ctx sc;

		sc = (struct stats_ctx){ .fs = g_fs, .rafs = fs, .src = src, .rec = rec,
					 .prefetch_source = pf_source };
		if (lz_ctl_start(sockpath, stats_handler, &sc, &ctl))
			lz_warn("no control socket at %s: lazyimg stats will not work", sockpath);
	}
	{
		FILE *pf = fopen(pidpath, "we");

		if (pf) {
			fprintf(pf, "%d\n", (int)getpid());
			fclose(pf);
		}
	}
	lz_info("mounted %s (%s) on %s", boot ? boot : argv[optind - 1], img->format, fo.mountpoint);
	if (pfd[1] >= 0) {
		write_all(pfd[1], "+", 1);
		close(pfd[1]);
	}
	ret = imgfs_run(g_fs);
	lz_ctl_stop(ctl);
	imgfs_destroy(g_fs);
	g_fs = NULL;
	snap_replay_stop(replay);
	/* after the last FUSE request: the list is complete */
	if (rec && snap_record_flush(rec))
		ret = ret ? ret : 1;
	snap_record_free(rec);
	rafs_close(fs);
	snap_source_close(src);
	unlink(pidpath);
	lz_info("server for %s stopped", fo.mountpoint);
	return ret ? 1 : 0;
fail:
	snap_replay_stop(replay);
	snap_record_free(rec);
	rafs_close(fs);
	snap_source_close(src);
	return 1;
}

static void umount_usage(FILE *out)
{
	fputs("usage: lazyimg umount [-l|--lazy] MOUNTPOINT\n"
	      "\n"
	      "Unmount a lazyimg mount and wait for its server to exit.\n"
	      "  -l, --lazy   detach now even if busy (the server exits when the last user leaves)\n"
	      "  -h, --help   this text\n", out);
}

/* A server that exited but was not reaped yet (its parent was init) is done. */
static bool pid_is_zombie(pid_t pid)
{
	char path[64], buf[256], *rp;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return false;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	rp = strrchr(buf, ')');
	return rp && rp[1] == ' ' && rp[2] == 'Z';
}

int cmd_umount(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "lazy", no_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct cli_common co = { 0 };
	char pidpath[PATH_MAX];
	bool lazy = false;
	pid_t pid = 0;
	FILE *pf;
	int c;

	cli_opts_begin(&co, "umount", lopts, argv);
	while ((c = getopt_long(argc, argv, "lh", co.lopts, NULL)) != -1) {
		switch (c) {
		case 'l': lazy = true; break;
		case 'h': umount_usage(stdout); return 0;
		default:
			if (cli_opts_parse(&co, c, optarg))
				return 2;
			break;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "lazyimg umount: expected exactly one MOUNTPOINT\n");
		return 2;
	}
	if (cli_runtime_path(argv[optind], "pid", pidpath, sizeof(pidpath)) == 0) {
		pf = fopen(pidpath, "re");
		if (pf) {
			int v;

			if (fscanf(pf, "%d", &v) == 1)
				pid = v;
			fclose(pf);
		}
	}
	if (umount2(argv[optind], lazy ? MNT_DETACH : 0) < 0) {
		int e = errno;

		fprintf(stderr, "lazyimg umount: %s: %s\n", argv[optind], strerror(e));
		return 1;
	}
	/* wait for the server to drain and exit, so callers can reuse the cache at once */
	for (int i = 0; pid > 0 && !lazy && i < 1000; i++) {
		struct timespec ts = { 0, 10 * 1000 * 1000 };

		if ((kill(pid, 0) < 0 && errno == ESRCH) || pid_is_zombie(pid))
			return 0;
		nanosleep(&ts, NULL);
	}
	if (pid > 0 && !lazy && kill(pid, 0) == 0) {
		fprintf(stderr, "lazyimg umount: %s unmounted, but server pid %d is still running after 10 s\n",
			argv[optind], (int)pid);
		return 1;
	}
	return 0;
}

static const char stats_usage[] =
	"usage: lazyimg stats MOUNTPOINT\n"
	"\n"
	"Print the running server's counters as JSON: backend_bytes, backend_requests,\n"
	"cache_hits, cache_misses, prefetch_bytes, chunk_errors, reads, read_bytes,\n"
	"read_errors, lookups, read_latency_us {p50, p90, p99, max}, prefetch_source\n"
	"(table, none, list, all, recorded, local), recording, recorded_files.\n";

int cmd_stats(int argc, char **argv)
{
	char sock[PATH_MAX], *body = NULL;
	int st = cli_plain_args("stats", argc, argv, 1, stats_usage);

	if (st >= 0)
		return st;
	if (cli_runtime_path(argv[1], "sock", sock, sizeof(sock))) {
		fprintf(stderr, "lazyimg stats: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	st = lz_ctl_request(sock, "GET", "/stats", NULL, &body, NULL);
	if (st != 200) {
		fprintf(stderr, "lazyimg stats: %s: no lazyimg server answers there (%s)\n", argv[1],
			st < 0 ? strerror(-st) : "bad status");
		free(body);
		return 1;
	}
	fputs(body, stdout);
	free(body);
	return 0;
}
