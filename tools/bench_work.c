/* SPDX-License-Identifier: Apache-2.0 */
/* bench_work.c - the workloads `lazyimg bench` times, and its process/file helpers. */
#define LZ_MOD "bench"
#include "lazyimg/lz.h"
#include "bench.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* caps on what a workload list or a tree can make us hold */
#define WL_MAX_PATHS (1u << 20)
#define WL_MAX_TREE_FILES (4u << 20)
#define WL_LINE_MAX 8192

double bench_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void bench_drop_caches(void)
{
	static bool warned;
	int fd;

	sync();
	fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, "3", 1) != 1) {
		if (!warned)
			fprintf(stderr, "lazyimg bench: cannot drop the page cache (%s): cold runs are not cold\n",
				strerror(errno));
		warned = true;
	}
	if (fd >= 0)
		close(fd);
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (flag == FTW_DP || flag == FTW_D)
		return rmdir(path) < 0 && errno != ENOENT ? -errno : 0;
	return unlink(path) < 0 && errno != ENOENT ? -errno : 0;
}

int bench_rm_tree(const char *path)
{
	struct stat st;
	int ret;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISDIR(st.st_mode))
		return unlink(path) < 0 ? -errno : 0;
	ret = nftw(path, rm_cb, 64, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
	return ret < 0 ? -errno : ret;
}

int bench_empty_dir(const char *dir, const char *keep)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char p[PATH_MAX];
	int ret = 0;

	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") || (keep && !strcmp(de->d_name, keep)))
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
		if (!ret)
			ret = bench_rm_tree(p);
	}
	closedir(d);
	return ret;
}

int bench_run(char *const argv[], const char *log, pid_t *track)
{
	pid_t pid = fork();
	int st;

	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int fd = log ? open(log, O_WRONLY | O_CREAT | O_APPEND, 0600) : open("/dev/null", O_WRONLY);
		int nfd = open("/dev/null", O_RDONLY);

		if (nfd >= 0)
			dup2(nfd, 0);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		execvp(argv[0], argv);
		fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	if (track)
		*track = pid;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR) {
			st = -1;
			break;
		}
	if (track)
		*track = 0;
	if (st == -1)
		return -ECHILD;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

int bench_proc_usage(pid_t pid, double *cpu_s, double *hwm_kib)
{
	char path[64], buf[2048], *rp, *save = NULL, *tok;
	unsigned long long ut = 0, stt = 0;
	FILE *f;
	size_t n;
	int i = 0;

	*cpu_s = *hwm_kib = NAN;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	rp = strrchr(buf, ')');
	if (!rp)
		return -EINVAL;
	/* after "pid (comm)": field 3 is the state; utime and stime are fields 14 and 15 */
	for (tok = strtok_r(rp + 1, " ", &save); tok; tok = strtok_r(NULL, " ", &save), i++) {
		if (i == 11)
			ut = strtoull(tok, NULL, 10);
		else if (i == 12) {
			stt = strtoull(tok, NULL, 10);
			break;
		}
	}
	*cpu_s = (double)(ut + stt) / (double)sysconf(_SC_CLK_TCK);
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	while (fgets(buf, sizeof(buf), f))
		if (!strncmp(buf, "VmHWM:", 6))
			*hwm_kib = strtod(buf + 6, NULL);
	fclose(f);
	return 0;
}

void bench_b64(const char *in, char *out, size_t size)
{
	static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t len = strlen(in), o = 0;

	for (size_t i = 0; i < len && o + 5 < size; i += 3) {
		uint32_t v = (uint32_t)(unsigned char)in[i] << 16;

		if (i + 1 < len)
			v |= (uint32_t)(unsigned char)in[i + 1] << 8;
		if (i + 2 < len)
			v |= (unsigned char)in[i + 2];
		out[o++] = tab[(v >> 18) & 63];
		out[o++] = tab[(v >> 12) & 63];
		out[o++] = i + 1 < len ? tab[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < len ? tab[v & 63] : '=';
	}
	out[o] = 0;
}

/* ---------- workloads ---------- */

int bench_workload_load(struct bench_workload *w)
{
	char line[WL_LINE_MAX];
	FILE *f;

	if (w->kind != WL_READ_LIST)
		return 0;
	f = fopen(w->list_file, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		char *p = line, **np;

		line[strcspn(line, "\r\n")] = 0;
		while (*p == '/')
			p++;
		if (!*p || *p == '#')
			continue;
		if (strstr(p, "..")) {
			fprintf(stderr, "lazyimg bench: --read: skipping '%s' (contains '..')\n", p);
			continue;
		}
		if (w->npaths >= WL_MAX_PATHS) {
			fclose(f);
			return -E2BIG;
		}
		np = realloc(w->paths, (w->npaths + 1) * sizeof(*np));
		if (!np || !(np[w->npaths] = strdup(p))) {
			if (np)
				w->paths = np;
			fclose(f);
			return -ENOMEM;
		}
		w->paths = np;
		w->npaths++;
	}
	fclose(f);
	return w->npaths ? 0 : -ENODATA;
}

void bench_workload_free(struct bench_workload *w)
{
	for (size_t i = 0; i < w->npaths; i++)
		free(w->paths[i]);
	free(w->paths);
	w->paths = NULL;
	w->npaths = 0;
}

static int read_file(const char *path, struct bench_wresult *r)
{
	static char buf[256u << 10];
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	ssize_t n;

	if (fd < 0) {
		r->errors++;
		return -errno;
	}
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		r->bytes += (uint64_t)n;
	if (n < 0)
		r->errors++;
	close(fd);
	r->files++;
	return 0;
}

double bench_ttfb(const char *root, const char *rel)
{
	char p[PATH_MAX], c;
	double t0 = bench_now();
	int fd;
	ssize_t n;

	while (*rel == '/')
		rel++;
	snprintf(p, sizeof(p), "%s/%s", root, rel);
	fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NAN;
	n = read(fd, &c, 1);
	close(fd);
	return n == 1 ? bench_now() - t0 : NAN;
}

/* nftw has no argument pointer: the walk's state lives here (one walk at a time) */
static struct bench_wresult *g_wr;
static char **g_files;
static size_t g_nfiles;
static uint64_t *g_sizes;

static int read_all_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)ftw;
	if (flag == FTW_F && S_ISREG(st->st_mode))
		read_file(path, g_wr);
	else if (flag == FTW_DNR || flag == FTW_NS)
		g_wr->errors++;
	return 0;
}

static int collect_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)ftw;
	if (flag != FTW_F || !S_ISREG(st->st_mode) || st->st_size < 1)
		return 0;
	if (g_nfiles >= WL_MAX_TREE_FILES)
		return 1;
	if (!(g_nfiles & (g_nfiles + 1))) { /* grow at powers of two */
		size_t cap = 2 * (g_nfiles + 1);
		char **nf = realloc(g_files, cap * sizeof(*nf));
		uint64_t *ns;

		if (!nf)
			return -1;
		g_files = nf;
		ns = realloc(g_sizes, cap * sizeof(*ns));
		if (!ns)
			return -1;
		g_sizes = ns;
	}
	g_files[g_nfiles] = strdup(path);
	if (!g_files[g_nfiles])
		return -1;
	g_sizes[g_nfiles++] = (uint64_t)st->st_size;
	return 0;
}

static void free_collected(void)
{
	for (size_t i = 0; i < g_nfiles; i++)
		free(g_files[i]);
	free(g_files);
	free(g_sizes);
	g_files = NULL;
	g_sizes = NULL;
	g_nfiles = 0;
}

/* Random 4 KiB reads over every regular file, chosen by a fixed-seed generator
 * so every mode reads the same blocks; the file walk is not timed. */
static int rand4k(const struct bench_workload *w, const char *root, struct bench_wresult *r)
{
	uint64_t x = 0x9E3779B97F4A7C15ull, total = 0;
	char buf[4096];
	double t0;
	int ret;

	ret = nftw(root, collect_cb, 64, FTW_PHYS | FTW_MOUNT);
	if (ret < 0 || !g_nfiles) {
		free_collected();
		return ret < 0 ? -ENOMEM : -ENOENT;
	}
	for (size_t i = 0; i < g_nfiles; i++)
		total += (g_sizes[i] + 4095) / 4096;
	t0 = bench_now();
	for (unsigned long k = 0; k < w->rand_n; k++) {
		uint64_t blk, acc = 0;
		size_t i;
		int fd;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		/* a block uniformly over all blocks of all files (big files get more reads) */
		blk = x % total;
		for (i = 0; i < g_nfiles; acc += (g_sizes[i] + 4095) / 4096, i++)
			if (blk < acc + (g_sizes[i] + 4095) / 4096)
				break;
		fd = open(g_files[i], O_RDONLY | O_CLOEXEC);
		if (fd < 0 || pread(fd, buf, sizeof(buf), (off_t)((blk - acc) * 4096)) < 0)
			r->errors++;
		else
			r->bytes += 4096;
		if (fd >= 0)
			close(fd);
	}
	r->secs = bench_now() - t0;
	r->files = g_nfiles;
	r->iops = r->secs > 0 ? (double)w->rand_n / r->secs : NAN;
	free_collected();
	return 0;
}

/* Run CMD chrooted on root until a line of its output contains TEXT. */
static int run_until(const struct bench_workload *w, const char *root, struct bench_wresult *r)
{
	int p[2];
	pid_t pid;
	char line[4096], last[320] = "";
	size_t have = 0;
	double t0 = bench_now(), deadline = t0 + (w->run_timeout_s > 0 ? w->run_timeout_s : 60);
	bool found = false;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		setpgid(0, 0);
		dup2(p[1], 1);
		dup2(p[1], 2);
		if (chroot(root) < 0 || chdir("/") < 0) {
			fprintf(stderr, "chroot %s: %s\n", root, strerror(errno));
			_exit(127);
		}
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		execl("/bin/sh", "sh", "-c", w->run_cmd, (char *)NULL);
		fprintf(stderr, "exec /bin/sh in %s: %s\n", root, strerror(errno));
		_exit(127);
	}
	close(p[1]);
	while (!found) {
		struct pollfd pf = { .fd = p[0], .events = POLLIN };
		double left = deadline - bench_now();
		ssize_t n;

		if (left <= 0) {
			r->timed_out = true;
			break;
		}
		if (poll(&pf, 1, (int)(left * 1000) + 1) <= 0)
			continue;
		n = read(p[0], line + have, sizeof(line) - 1 - have);
		if (n <= 0)
			break;
		have += (size_t)n;
		line[have] = 0;
		r->bytes += (uint64_t)n;
		if (strstr(line, w->wait_line)) {
			found = true;
			break;
		}
		/* what the command said last, for the message when it fails */
		{
			size_t k = have > 300 ? 300 : have;

			memcpy(last, line + have - k, k);
			last[k] = 0;
		}
		/* keep only the unfinished last line (and at most half the buffer) */
		{
			char *nl = strrchr(line, '\n');
			size_t keep = nl ? strlen(nl + 1) : have;

			if (keep > sizeof(line) / 2)
				keep = sizeof(line) / 2;
			memmove(line, line + have - keep, keep);
			have = keep;
		}
	}
	r->secs = bench_now() - t0;
	kill(-pid, SIGKILL);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	close(p[0]);
	if (!found) {
		r->errors++;
		for (size_t k = strlen(last); k && last[k - 1] == '\n'; k--)
			last[k - 1] = 0;
		if (!r->timed_out)
			fprintf(stderr, "lazyimg bench: --run: the command ended before printing '%s'; its last output: %s\n",
				w->wait_line, last);
	}
	return 0;
}

int bench_workload_run(const struct bench_workload *w, const char *root, struct bench_wresult *r)
{
	char p[PATH_MAX];
	double t0 = bench_now();
	int ret = 0;

	memset(r, 0, sizeof(*r));
	r->iops = NAN;
	switch (w->kind) {
	case WL_READ_LIST:
		for (size_t i = 0; i < w->npaths; i++) {
			snprintf(p, sizeof(p), "%s/%s", root, w->paths[i]);
			read_file(p, r);
		}
		break;
	case WL_READ_ALL:
		g_wr = r;
		if (nftw(root, read_all_cb, 64, FTW_PHYS | FTW_MOUNT) < 0)
			ret = -errno;
		g_wr = NULL;
		break;
	case WL_RUN:
		return run_until(w, root, r);
	case WL_RAND4K:
		return rand4k(w, root, r);
	default:
		break;
	}
	r->secs = bench_now() - t0;
	return ret;
}

/* ---------- a full pull's untar with whiteouts ---------- */

static bool safe_rel(const char *p)
{
	/* a path from a tar listing: no absolute paths, no ".." components */
	if (p[0] == '/')
		return false;
	for (const char *s = p; (s = strstr(s, "..")); s += 2)
		if ((s == p || s[-1] == '/') && (s[2] == 0 || s[2] == '/'))
			return false;
	return true;
}

int bench_unpack_layers(char *const layers[], size_t n, const char *root, const char *log)
{
	char cmd[PATH_MAX + 64], line[PATH_MAX], p[2 * PATH_MAX];
	int ret;

	if (mkdir(root, 0755) < 0 && errno != EEXIST)
		return -errno;
	for (size_t i = 0; i < n; i++) {
		FILE *f;
		char *argv[] = { (char *)"tar", (char *)"-x", (char *)"--numeric-owner", (char *)"--exclude=.wh.*",
				 (char *)"--exclude=*/.wh.*", (char *)"-f", layers[i], (char *)"-C", (char *)root, NULL };

		/* whiteouts first: they remove what lower layers put there */
		if (snprintf(cmd, sizeof(cmd), "tar -tf '%s'", layers[i]) >= (int)sizeof(cmd) || strchr(layers[i], '\''))
			return -EINVAL;
		f = popen(cmd, "re");
		if (!f)
			return -errno;
		while (fgets(line, sizeof(line), f)) {
			char *dir = line, *slash;
			const char *parent = "", *name;

			line[strcspn(line, "\n")] = 0;
			while (dir[0] == '.' && dir[1] == '/')
				dir += 2;
			if (!safe_rel(dir))
				continue;
			name = dir;
			slash = strrchr(dir, '/');
			if (slash) {
				*slash = 0;
				parent = dir;
				name = slash + 1;
			}
			if (strncmp(name, ".wh.", 4))
				continue;
			if (!strcmp(name, ".wh..wh..opq")) {
				snprintf(p, sizeof(p), "%s/%s", root, parent);
				bench_empty_dir(p, NULL);
			} else {
				snprintf(p, sizeof(p), "%s/%s%s%s", root, parent, *parent ? "/" : "", name + 4);
				bench_rm_tree(p);
			}
		}
		pclose(f);
		ret = bench_run(argv, log, NULL);
		if (ret)
			return ret < 0 ? ret : -EIO;
	}
	return 0;
}
