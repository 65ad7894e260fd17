/* SPDX-License-Identifier: Apache-2.0 */
#define LZ_MOD "cli"
#include "lazyimg/imgfs.h"
#include "lazyimg/rafs.h"
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

int cli_log_level(const char *s)
{
	static const char *const names[] = { "error", "warn", "info", "debug" };

	for (int i = 0; i < 4; i++)
		if (!strcmp(s, names[i]))
			return i;
	return -1;
}

static void mount_usage(FILE *out)
{
	fputs("usage: lazyimg mount --bootstrap FILE [--blob-dir DIR] [options] MOUNTPOINT\n"
	      "\n"
	      "Mount a Nydus RAFS v5/v6 image read-only over FUSE. Returns once the mount is\n"
	      "ready; the server keeps running in the background until 'lazyimg umount'.\n"
	      "FILE may also be a data blob with its bootstrap inlined (RAFS ToC).\n"
	      "\n"
	      "  -b, --bootstrap FILE   the RAFS bootstrap (image.boot)\n"
	      "  -B, --blob-dir DIR     directory of data blobs named by blob id\n"
	      "                         (default: the bootstrap's directory)\n"
	      "      --no-validate      do not verify chunk digests (default: verify)\n"
	      "  -f, --foreground       stay in the foreground, log to stderr\n"
	      "      --log-file FILE    where the background server logs\n"
	      "                         (default: /run/lazyimg/<id>.log)\n"
	      "      --log-level LEVEL  error, warn (default), info or debug\n"
	      "      --allow-other      let other users access the mount\n"
	      "      --threads N        at most N FUSE worker threads\n"
	      "      --debug            trace every FUSE request (implies -f)\n"
	      "  -h, --help             this text\n", out);
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

int cmd_mount(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "bootstrap", required_argument, NULL, 'b' },
		{ "blob-dir", required_argument, NULL, 'B' },
		{ "no-validate", no_argument, NULL, 'N' },
		{ "foreground", no_argument, NULL, 'f' },
		{ "log-file", required_argument, NULL, 'L' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "allow-other", no_argument, NULL, 'A' },
		{ "threads", required_argument, NULL, 'T' },
		{ "debug", no_argument, NULL, 'D' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct rafs_opts ro = { .validate = true };
	struct imgfs_opts fo = { 0 };
	const char *boot = NULL, *blob_dir = NULL, *log_file = NULL;
	char pidpath[PATH_MAX], logpath[PATH_MAX], dirbuf[PATH_MAX], mnt_real[PATH_MAX],
		blob_real[PATH_MAX], log_real[PATH_MAX];
	bool fg = false;
	struct rafs *fs = NULL;
	struct stat st;
	int c, ret, pfd[2] = { -1, -1 };
	pid_t pid;

	optind = 1;
	while ((c = getopt_long(argc, argv, "b:B:fh", lopts, NULL)) != -1) {
		switch (c) {
		case 'b': boot = optarg; break;
		case 'B': blob_dir = optarg; break;
		case 'N': ro.validate = false; break;
		case 'f': fg = true; break;
		case 'L': log_file = optarg; break;
		case 'l':
			if (cli_log_level(optarg) < 0) {
				fprintf(stderr, "lazyimg mount: --log-level: unknown level '%s'\n", optarg);
				return 2;
			}
			lz_log_level = cli_log_level(optarg);
			break;
		case 'A': fo.allow_other = true; break;
		case 'T': fo.max_threads = (unsigned)atoi(optarg); break;
		case 'D': fo.debug = true; fg = true; break;
		case 'h': mount_usage(stdout); return 0;
		default: mount_usage(stderr); return 2;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "lazyimg mount: expected exactly one MOUNTPOINT\n");
		mount_usage(stderr);
		return 2;
	}
	if (!boot) {
		fprintf(stderr, "lazyimg mount: --bootstrap FILE is required (mounting by registry reference is not built yet)\n");
		return 2;
	}
	/* the background server runs in /: every path it keeps must be absolute */
	if (!realpath(argv[optind], mnt_real) || stat(mnt_real, &st) < 0 || !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "lazyimg mount: mountpoint %s: %s\n", argv[optind],
			errno ? strerror(errno) : "not a directory");
		return 1;
	}
	fo.mountpoint = mnt_real;
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
	ret = cli_runtime_path(fo.mountpoint, "pid", pidpath, sizeof(pidpath));
	if (!ret)
		ret = cli_runtime_path(fo.mountpoint, "log", logpath, sizeof(logpath));
	if (ret) {
		fprintf(stderr, "lazyimg mount: runtime directory %s: %s\n", RUNTIME_DIR, strerror(-ret));
		rafs_close(fs);
		return 1;
	}
	if (!log_file)
		log_file = logpath;

	if (!fg) {
		if (pipe2(pfd, O_CLOEXEC) < 0) {
			perror("lazyimg mount: pipe");
			rafs_close(fs);
			return 1;
		}
		pid = fork();
		if (pid < 0) {
			perror("lazyimg mount: fork");
			rafs_close(fs);
			return 1;
		}
		if (pid > 0) {
			char msg[512];
			ssize_t n;
			int status;

			close(pfd[1]);
			n = read(pfd[0], msg, sizeof(msg) - 1);
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
	ret = imgfs_mount(rafs_image(fs), &fo, &g_fs);
	if (ret) {
		if (pfd[1] >= 0) {
			char msg[256];

			snprintf(msg, sizeof(msg), "-cannot mount on %s", fo.mountpoint);
			write_all(pfd[1], msg, strlen(msg));
		} else {
			fprintf(stderr, "lazyimg mount: cannot mount on %s\n", fo.mountpoint);
		}
		rafs_close(fs);
		return 1;
	}
	{
		FILE *pf = fopen(pidpath, "we");

		if (pf) {
			fprintf(pf, "%d\n", (int)getpid());
			fclose(pf);
		}
	}
	lz_info("mounted %s (%s) on %s", boot, rafs_image(fs)->format, fo.mountpoint);
	if (pfd[1] >= 0) {
		write_all(pfd[1], "+", 1);
		close(pfd[1]);
	}
	ret = imgfs_run(g_fs);
	imgfs_destroy(g_fs);
	g_fs = NULL;
	rafs_close(fs);
	unlink(pidpath);
	lz_info("server for %s stopped", fo.mountpoint);
	return ret ? 1 : 0;
}

static void umount_usage(FILE *out)
{
	fputs("usage: lazyimg umount [-l|--lazy] MOUNTPOINT\n"
	      "\n"
	      "Unmount a lazyimg mount and wait for its server to exit.\n"
	      "  -l, --lazy   detach now even if busy (the server exits when the last user leaves)\n"
	      "  -h, --help   this text\n", out);
}

int cmd_umount(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "lazy", no_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	char pidpath[PATH_MAX];
	bool lazy = false;
	pid_t pid = 0;
	FILE *pf;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "lh", lopts, NULL)) != -1) {
		switch (c) {
		case 'l': lazy = true; break;
		case 'h': umount_usage(stdout); return 0;
		default: umount_usage(stderr); return 2;
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

		if (kill(pid, 0) < 0 && errno == ESRCH)
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
