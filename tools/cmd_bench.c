/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lazyimg bench - the lazy-pull benchmark: cold and warm lazyimg mounts of
 * registry images, beside a full pull and stargz-store, under optional
 * network shaping. Every mount is a real `lazyimg mount` (this binary,
 * exec'd), so what is timed is what a user gets.
 */
#define LZ_MOD "bench"
#include "lazyimg/ctl.h"
#include "lazyimg/reg.h"
#include "cli.h"
#include "bench.h"

#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BENCH_MAX_REFS 16
#define BENCH_MAX_MODES 48
#define BENCH_MAX_RUNS 1000

enum {
	M_READY, M_TTFB, M_WORK, M_TOTAL, M_BYTES, M_READY_BYTES, M_WORK_BYTES, M_REQS, M_PREFETCH,
	M_CPU, M_RSS, M_HIT, M_IOPS, M_READ_BYTES, M_ERRORS, M_LOG_BYTES, M_LOG_REQS, M_NMETRICS
};

static const struct {
	const char *key;   /* JSON/CSV name */
	const char *unit;
} metric_info[M_NMETRICS] = {
	[M_READY] = { "ready_ms", "ms" },
	[M_TTFB] = { "ttfb_ms", "ms" },
	[M_WORK] = { "workload_ms", "ms" },
	[M_TOTAL] = { "total_ms", "ms" },
	[M_BYTES] = { "fetched_bytes", "B" },
	[M_READY_BYTES] = { "fetched_bytes_at_ready", "B" },
	[M_WORK_BYTES] = { "fetched_bytes_by_workload", "B" },
	[M_REQS] = { "requests", "" },
	[M_PREFETCH] = { "prefetch_bytes", "B" },
	[M_CPU] = { "server_cpu_s", "s" },
	[M_RSS] = { "server_peak_rss_kib", "KiB" },
	[M_HIT] = { "cache_hit_rate", "" },
	[M_IOPS] = { "iops", "" },
	[M_READ_BYTES] = { "workload_read_bytes", "B" },
	[M_ERRORS] = { "workload_errors", "" },
	[M_LOG_BYTES] = { "registry_log_bytes", "B" },
	[M_LOG_REQS] = { "registry_log_requests", "" },
};

enum { K_LAZY, K_WARM, K_FULL, K_STARGZ };

struct mode {
	char name[64];
	char image[600];      /* the reference as the user gave it */
	int kind;
	bool recorded;        /* lazyimg with a list recorded by --record */
	double *v[M_NMETRICS];
	int n;
	char prefetch_source[24];
	char format[16];      /* nydus, estargz, oci (from the manifest) */
	uint64_t image_bytes; /* sum of the manifest's layer sizes */
	unsigned nlayers;
	char note[200];
};

struct bench {
	struct bench_workload w;
	int runs;
	bool warm;
	const char *refs[BENCH_MAX_REFS];
	int nrefs;
	const char *full_ref, *stargz_ref, *stargz_bin;
	bool base_full, base_stargz;
	const char *netem;
	const char *prefetch;  /* none|table|list|all */
	const char *prefetch_files;
	const char *record;
	const char *json, *csv, *plot;
	const char *workdir;
	const char *reglog;    /* the registry's access log, for bytes a peer does not report */
	long reglog_mark;
	bool keep;
	struct reg_opts reg;   /* --insecure and --ca-file, also given to each mount */
	char self[PATH_MAX];
	char dir[1024];        /* private work directory */
	char host[REG_MAX_HOST];
	struct bench_net net;
	struct mode modes[BENCH_MAX_MODES];
	int nmodes;
	bool tty;
	int step, nsteps;
};

/* ---------- state a signal handler must undo (async-signal-safe use only) ---------- */

static char g_mnts[4][PATH_MAX];
static volatile sig_atomic_t g_nmnts;
static volatile pid_t g_server_pid, g_child_pid, g_store_pid;
static char g_workdir[1024]; /* removed on a signal unless --keep */

static void track_mount(const char *m)
{
	if (g_nmnts < 4)
		snprintf(g_mnts[g_nmnts], PATH_MAX, "%.4000s", m), g_nmnts++;
}

static void untrack_mount(const char *m)
{
	for (int i = 0; i < g_nmnts; i++)
		if (!strcmp(g_mnts[i], m)) {
			memmove(g_mnts[i], g_mnts[g_nmnts - 1], PATH_MAX);
			g_nmnts--;
			return;
		}
}

static void emergency_cleanup(void)
{
	if (g_child_pid > 0)
		kill(g_child_pid, SIGTERM);
	for (int i = g_nmnts - 1; i >= 0; i--)
		umount2(g_mnts[i], MNT_DETACH);
	if (g_server_pid > 0)
		kill(g_server_pid, SIGTERM);
	if (g_store_pid > 0)
		kill(g_store_pid, SIGTERM);
	bench_net_signal_cleanup();
}

/* rm -rf of the work directory from a signal handler: fork + execve only */
static void signal_rm_workdir(void)
{
	char *const argv[] = { (char *)"/bin/rm", (char *)"-rf", (char *)"--one-file-system", g_workdir, NULL };
	pid_t pid;

	if (!g_workdir[0])
		return;
	pid = fork();
	if (pid == 0) {
		execve(argv[0], argv, (char *const[]){ NULL });
		_exit(127);
	}
	if (pid > 0)
		waitpid(pid, NULL, 0);
}

static void on_signal(int sig)
{
	static const char msg[] = "\nlazyimg bench: interrupted: mounts and qdisc removed\n";

	emergency_cleanup();
	signal_rm_workdir();
	if (write(2, msg, sizeof(msg) - 1) < 0) {
		/* nothing to do: we are leaving */
	}
	signal(sig, SIG_DFL);
	raise(sig);
	_exit(128 + sig);
}

/* ---------- small helpers ---------- */

static void progress(struct bench *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void progress(struct bench *b, const char *fmt, ...)
{
	char msg[400];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (b->tty)
		fprintf(stderr, "\r\033[K[%d/%d] %s", b->step, b->nsteps, msg);
	else
		fprintf(stderr, "[%d/%d] %s\n", b->step, b->nsteps, msg);
}

static struct mode *add_mode(struct bench *b, const char *name, const char *image, int kind)
{
	struct mode *m;

	if (b->nmodes >= BENCH_MAX_MODES)
		return NULL;
	m = &b->modes[b->nmodes++];
	memset(m, 0, sizeof(*m));
	snprintf(m->name, sizeof(m->name), "%s", name);
	snprintf(m->image, sizeof(m->image), "%s", image);
	m->kind = kind;
	for (int i = 0; i < M_NMETRICS; i++) {
		m->v[i] = calloc((size_t)b->runs + 1, sizeof(double));
		if (!m->v[i])
			return NULL;
	}
	return m;
}

static void set_run(struct mode *m, int metric, double v)
{
	m->v[metric][m->n] = v;
}

static int dcmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* median, p90 (nearest rank), min, max over the finite values; NAN when none */
static void summarize(const double *v, int n, double out[4])
{
	double s[BENCH_MAX_RUNS + 1];
	int k = 0;

	for (int i = 0; i < n; i++)
		if (isfinite(v[i]))
			s[k++] = v[i];
	if (!k) {
		out[0] = out[1] = out[2] = out[3] = NAN;
		return;
	}
	qsort(s, (size_t)k, sizeof(double), dcmp);
	out[0] = k % 2 ? s[k / 2] : (s[k / 2 - 1] + s[k / 2]) / 2;
	out[1] = s[(int)ceil(0.9 * k) - 1];
	out[2] = s[0];
	out[3] = s[k - 1];
}

/* a numeric key of `lazyimg stats` JSON */
static double json_num(const char *body, const char *key)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = body ? strstr(body, pat) : NULL;
	return p ? strtod(p + strlen(pat), NULL) : NAN;
}

static void json_str(const char *body, const char *key, char *out, size_t size)
{
	char pat[64];
	const char *p;
	size_t n;

	snprintf(pat, sizeof(pat), "\"%s\":\"", key);
	p = body ? strstr(body, pat) : NULL;
	if (!p) {
		snprintf(out, size, "-");
		return;
	}
	p += strlen(pat);
	n = strcspn(p, "\"");
	snprintf(out, size, "%.*s", (int)(n < size ? n : size - 1), p);
}

static char *get_stats(const char *mnt)
{
	char sock[PATH_MAX], *body = NULL;

	if (cli_runtime_path(mnt, "sock", sock, sizeof(sock)))
		return NULL;
	if (lz_ctl_request(sock, "GET", "/stats", NULL, &body, NULL) != 200) {
		free(body);
		return NULL;
	}
	return body;
}

static pid_t read_server_pid(const char *mnt)
{
	char path[PATH_MAX];
	FILE *f;
	int v = 0;

	if (cli_runtime_path(mnt, "pid", path, sizeof(path)))
		return 0;
	f = fopen(path, "re");
	if (!f)
		return 0;
	if (fscanf(f, "%d", &v) != 1)
		v = 0;
	fclose(f);
	return v;
}

static bool is_mounted(const char *path)
{
	char line[PATH_MAX + 256], a[PATH_MAX], bpath[PATH_MAX];
	FILE *f = fopen("/proc/self/mounts", "re");
	bool found = false;

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f))
		if (sscanf(line, "%4095s %4095s", a, bpath) == 2 && !strcmp(bpath, path))
			found = true;
	fclose(f);
	return found;
}

/* What an image is, from its manifest's annotations. */
static const char *image_format(const struct reg_manifest *m)
{
	for (size_t i = 0; i < m->nlayers; i++)
		if (m->layers[i].nydus_bootstrap || m->layers[i].nydus_blob)
			return "nydus";
	for (size_t i = 0; i < m->nlayers; i++)
		if (m->layers[i].toc_digest[0])
			return "estargz";
	return "oci";
}

/* Sum of the layer sizes and the layer digests of REF's manifest (through the relay if any). */
static int image_layers(struct bench *b, const char *ref, uint64_t *bytes, unsigned *nlayers,
			char ***digests, char *format, size_t fsize)
{
	struct reg_opts ro = b->reg;
	struct reg_ref r;
	struct reg_client *c = NULL;
	struct reg_manifest m = { 0 };
	int ret;

	*bytes = 0;
	*nlayers = 0;
	ret = reg_ref_parse(ref, &r);
	if (!ret)
		ret = reg_client_new(&r, &ro, &c);
	if (!ret)
		ret = reg_resolve(c, &m);
	if (!ret) {
		for (size_t i = 0; i < m.nlayers; i++)
			*bytes += m.layers[i].size;
		*nlayers = (unsigned)m.nlayers;
		if (format)
			snprintf(format, fsize, "%s", image_format(&m));
		if (digests) {
			*digests = calloc(m.nlayers + 1, sizeof(char *));
			for (size_t i = 0; *digests && i < m.nlayers; i++)
				(*digests)[i] = strdup(m.layers[i].digest);
		}
	}
	reg_manifest_free(&m);
	reg_client_free(c);
	return ret;
}

/* ---------- the registry's access log (docker-registry's combined format) ---------- */

static void reglog_mark(struct bench *b)
{
	struct stat st;

	b->reglog_mark = b->reglog && stat(b->reglog, &st) == 0 ? (long)st.st_size : -1;
}

/* Requests and response bytes logged since the mark: "GET /v2/... HTTP/1.1" 206 50000 */
static void reglog_count(struct bench *b, struct mode *m)
{
	char line[8192];
	double bytes = 0, reqs = 0;
	FILE *f;

	set_run(m, M_LOG_BYTES, NAN);
	set_run(m, M_LOG_REQS, NAN);
	if (!b->reglog || b->reglog_mark < 0)
		return;
	{
		struct timespec ts = { 0, 200 * 1000 * 1000 }; /* the registry logs a request as it ends */

		nanosleep(&ts, NULL);
	}
	f = fopen(b->reglog, "re");
	if (!f || fseek(f, b->reglog_mark, SEEK_SET)) {
		if (f)
			fclose(f);
		return;
	}
	while (fgets(line, sizeof(line), f)) {
		const char *q = strstr(line, "\"GET /v2/"), *e;
		int status;
		double n;

		if (!q)
			q = strstr(line, "\"HEAD /v2/");
		if (!q || !(e = strstr(q + 1, "\" ")) || sscanf(e + 2, "%d %lf", &status, &n) != 2)
			continue;
		if (!strncmp(q, "\"GET /v2/ ", 10))
			continue; /* the API version check */
		reqs++;
		if (status >= 200 && status < 300 && q[1] == 'G')
			bytes += n;
	}
	fclose(f);
	set_run(m, M_LOG_BYTES, bytes);
	set_run(m, M_LOG_REQS, reqs);
}

/* The last lines of a log this run wrote (the work dir goes away with the bench). */
static void print_tail(const char *path, int nlines)
{
	char lines[32][512];
	int n = 0;
	FILE *f = fopen(path, "re");

	if (!f)
		return;
	if (nlines > 32)
		nlines = 32;
	while (fgets(lines[n % nlines], sizeof(lines[0]), f))
		n++;
	fclose(f);
	for (int i = n > nlines ? n - nlines : 0; i < n; i++)
		fprintf(stderr, "  | %s", lines[i % nlines]);
}

/* ---------- one lazyimg run ---------- */

static int lazy_umount(struct bench *b, const char *mnt)
{
	char *argv[] = { b->self, (char *)"umount", (char *)mnt, NULL };
	int ret = bench_run(argv, NULL, (pid_t *)&g_child_pid);

	if (ret && is_mounted(mnt)) {
		umount2(mnt, MNT_DETACH);
		if (g_server_pid > 0)
			kill(g_server_pid, SIGTERM);
	}
	untrack_mount(mnt);
	g_server_pid = 0;
	return ret;
}

/*
 * Mount REF on mnt (cache, prefetch and record as the mode says), time
 * ready, first byte and the workload, collect stats and the server's usage.
 */
static int lazy_run(struct bench *b, struct mode *m, const char *cache, const char *record, bool cold)
{
	char mnt[PATH_MAX], log[PATH_MAX], ref[700], *argv[32], *st_ready = NULL, *st_end = NULL;
	struct bench_wresult wr;
	double t0, t1, t2, ttfb = NAN, cpu, hwm;
	int na = 0, ret;
	pid_t spid;

	snprintf(mnt, sizeof(mnt), "%s/mnt", b->dir);
	snprintf(log, sizeof(log), "%s/mount.log", b->dir);
	bench_net_ref(&b->net, m->image, ref, sizeof(ref));
	if (cold)
		bench_empty_dir(cache, "records");
	bench_drop_caches();
	argv[na++] = b->self;
	argv[na++] = (char *)"mount";
	argv[na++] = (char *)"--cache-dir";
	argv[na++] = (char *)cache;
	argv[na++] = (char *)"--log-file";
	argv[na++] = log;
	if (b->reg.insecure)
		argv[na++] = (char *)"--insecure";
	if (b->reg.ca_file) {
		argv[na++] = (char *)"--ca-file";
		argv[na++] = (char *)b->reg.ca_file;
	}
	if (!m->recorded && b->prefetch) {
		if (!strcmp(b->prefetch, "none"))
			argv[na++] = (char *)"--no-prefetch";
		else if (!strcmp(b->prefetch, "all"))
			argv[na++] = (char *)"--prefetch-all";
		else if (!strcmp(b->prefetch, "list")) {
			argv[na++] = (char *)"--prefetch-files";
			argv[na++] = (char *)b->prefetch_files;
		}
	}
	if (record) {
		argv[na++] = (char *)"--record";
		argv[na++] = (char *)record;
	}
	argv[na++] = ref;
	argv[na++] = mnt;
	argv[na] = NULL;
	track_mount(mnt);
	reglog_mark(b);
	t0 = bench_now();
	ret = bench_run(argv, log, (pid_t *)&g_child_pid);
	t1 = bench_now();
	if (ret) {
		untrack_mount(mnt);
		fprintf(stderr, "\nlazyimg bench: mount of %s failed (exit %d); its log:\n", ref, ret);
		print_tail(log, 15);
		return -EIO;
	}
	spid = read_server_pid(mnt);
	g_server_pid = spid;
	st_ready = get_stats(mnt);
	if (b->w.ttfb_file)
		ttfb = bench_ttfb(mnt, b->w.ttfb_file);
	t2 = bench_now();
	ret = bench_workload_run(&b->w, mnt, &wr);
	if (ret)
		fprintf(stderr, "\nlazyimg bench: workload on %s: %s\n", mnt, strerror(-ret));
	st_end = get_stats(mnt);
	bench_proc_usage(spid, &cpu, &hwm);
	json_str(st_end, "prefetch_source", m->prefetch_source, sizeof(m->prefetch_source));
	set_run(m, M_READY, (t1 - t0) * 1e3);
	set_run(m, M_TTFB, ttfb * 1e3);
	set_run(m, M_WORK, ret ? NAN : wr.secs * 1e3);
	set_run(m, M_TOTAL, ret ? NAN : (t2 - t0 + wr.secs) * 1e3);
	set_run(m, M_BYTES, json_num(st_end, "backend_bytes"));
	set_run(m, M_READY_BYTES, json_num(st_ready, "backend_bytes"));
	set_run(m, M_WORK_BYTES, json_num(st_end, "backend_bytes") - json_num(st_ready, "backend_bytes"));
	set_run(m, M_REQS, json_num(st_end, "backend_requests"));
	set_run(m, M_PREFETCH, json_num(st_end, "prefetch_bytes"));
	{
		double h = json_num(st_end, "cache_hits"), mi = json_num(st_end, "cache_misses");

		set_run(m, M_HIT, h + mi > 0 ? h / (h + mi) : NAN);
	}
	set_run(m, M_CPU, cpu);
	set_run(m, M_RSS, hwm);
	set_run(m, M_IOPS, wr.iops);
	set_run(m, M_READ_BYTES, (double)wr.bytes);
	set_run(m, M_ERRORS, (double)wr.errors);
	free(st_ready);
	free(st_end);
	lazy_umount(b, mnt);
	reglog_count(b, m);
	m->n++;
	if (wr.timed_out)
		snprintf(m->note, sizeof(m->note), "--run timed out before '%s'", b->w.wait_line);
	return 0;
}

/* ---------- full pull: skopeo copy + untar with whiteouts ---------- */

static int full_run(struct bench *b, struct mode *m)
{
	char d[1200], img[PATH_MAX + 8], root[PATH_MAX], log[PATH_MAX], ref[700], src[720], mpath[PATH_MAX + 16];
	char *argv[12], *body = NULL, **layers = NULL;
	struct reg_manifest man = { 0 };
	struct rusage r0, r1;
	struct bench_wresult wr;
	double t0, t1, t2, ttfb = NAN, bytes = 0;
	int na = 0, ret;
	FILE *f;
	long len;

	snprintf(d, sizeof(d), "%s/full", b->dir);
	snprintf(img, sizeof(img), "dir:%s/img", d);
	snprintf(root, sizeof(root), "%s/root", d);
	snprintf(log, sizeof(log), "%s/full.log", b->dir);
	bench_rm_tree(d);
	mkdir(d, 0700);
	bench_net_ref(&b->net, m->image, ref, sizeof(ref));
	snprintf(src, sizeof(src), "docker://%s", ref);
	argv[na++] = (char *)"skopeo";
	argv[na++] = (char *)"copy";
	argv[na++] = (char *)"-q";
	if (b->reg.insecure)
		argv[na++] = (char *)"--src-tls-verify=false";
	argv[na++] = src;
	argv[na++] = img;
	argv[na] = NULL;
	bench_drop_caches();
	getrusage(RUSAGE_CHILDREN, &r0);
	reglog_mark(b);
	t0 = bench_now();
	ret = bench_run(argv, log, (pid_t *)&g_child_pid);
	if (ret) {
		fprintf(stderr, "\nlazyimg bench: skopeo copy %s failed (exit %d):\n", src, ret);
		print_tail(log, 15);
		return -EIO;
	}
	snprintf(mpath, sizeof(mpath), "%s/img/manifest.json", d);
	f = fopen(mpath, "re");
	if (!f || fseek(f, 0, SEEK_END) || (len = ftell(f)) <= 0 || len > (long)REG_MAX_MANIFEST ||
	    fseek(f, 0, SEEK_SET) || !(body = malloc((size_t)len)) || fread(body, 1, (size_t)len, f) != (size_t)len) {
		if (f)
			fclose(f);
		free(body);
		fprintf(stderr, "\nlazyimg bench: %s unreadable\n", mpath);
		return -EIO;
	}
	fclose(f);
	bytes = (double)len;
	ret = reg_manifest_parse(body, (size_t)len, &man);
	free(body);
	if (ret) {
		fprintf(stderr, "\nlazyimg bench: %s: not an image manifest\n", mpath);
		return ret;
	}
	layers = calloc(man.nlayers + 1, sizeof(*layers));
	for (size_t i = 0; layers && i < man.nlayers; i++) {
		if (asprintf(&layers[i], "%s/img/%s", d, man.layers[i].digest + 7) < 0)
			layers[i] = NULL;
		bytes += (double)man.layers[i].size;
	}
	bytes += (double)man.config.size;
	ret = layers ? bench_unpack_layers(layers, man.nlayers, root, log) : -ENOMEM;
	t1 = bench_now();
	for (size_t i = 0; layers && i < man.nlayers; i++)
		free(layers[i]);
	free(layers);
	if (ret) {
		fprintf(stderr, "\nlazyimg bench: untar of %s failed: %s\n", src, strerror(-ret));
		print_tail(log, 15);
		reg_manifest_free(&man);
		return ret;
	}
	getrusage(RUSAGE_CHILDREN, &r1);
	bench_drop_caches(); /* the workload reads the local tree from disk, as a cold container would */
	if (b->w.ttfb_file)
		ttfb = bench_ttfb(root, b->w.ttfb_file);
	t2 = bench_now();
	ret = bench_workload_run(&b->w, root, &wr);
	set_run(m, M_READY, (t1 - t0) * 1e3);
	set_run(m, M_TTFB, ttfb * 1e3);
	set_run(m, M_WORK, ret ? NAN : wr.secs * 1e3);
	set_run(m, M_TOTAL, ret ? NAN : (t1 - t0 + bench_now() - t2) * 1e3);
	set_run(m, M_BYTES, bytes);
	set_run(m, M_READY_BYTES, bytes);
	set_run(m, M_WORK_BYTES, 0);
	set_run(m, M_REQS, (double)(man.nlayers + 2)); /* manifest, config, layers */
	set_run(m, M_PREFETCH, NAN);
	set_run(m, M_HIT, NAN);
	set_run(m, M_CPU, (double)(r1.ru_utime.tv_sec - r0.ru_utime.tv_sec + r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) +
			      (double)(r1.ru_utime.tv_usec - r0.ru_utime.tv_usec + r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1e6);
	set_run(m, M_RSS, (double)r1.ru_maxrss);
	set_run(m, M_IOPS, wr.iops);
	set_run(m, M_READ_BYTES, (double)wr.bytes);
	set_run(m, M_ERRORS, (double)wr.errors);
	reglog_count(b, m);
	m->n++;
	snprintf(m->prefetch_source, sizeof(m->prefetch_source), "-");
	snprintf(m->note, sizeof(m->note), "skopeo copy + untar; cpu/rss: skopeo and tar (rss: peak child so far)");
	reg_manifest_free(&man);
	bench_rm_tree(d);
	return 0;
}

/* ---------- stargz-store: the peer's lazy FUSE store, layers merged by overlayfs ---------- */

static int stargz_run(struct bench *b, struct mode *m, char **digests, unsigned nlayers)
{
	char d[1200], root[PATH_MAX + 8], mntd[PATH_MAX + 8], cfg[PATH_MAX + 16], log[PATH_MAX + 16],
		ref[700], b64[1100], merged[PATH_MAX * 2], host[REG_MAX_HOST], opts[8192] = "lowerdir=";
	char *argv[16];
	struct bench_wresult wr;
	double t0, t1, t2, ttfb = NAN, cpu = NAN, hwm = NAN;
	const char *top = NULL;
	int na = 0, ret = 0;
	pid_t pid;
	FILE *f;

	snprintf(d, sizeof(d), "%s/stargz", b->dir);
	snprintf(root, sizeof(root), "%s/root", d);
	snprintf(mntd, sizeof(mntd), "%s/mnt", d);
	snprintf(cfg, sizeof(cfg), "%s/config.toml", d);
	snprintf(log, sizeof(log), "%s/store.log", b->dir);
	snprintf(merged, sizeof(merged), "%s/merged", d);
	bench_rm_tree(d);
	mkdir(d, 0700);
	mkdir(root, 0700);
	mkdir(mntd, 0755);
	mkdir(merged, 0755);
	f = fopen(cfg, "we");
	if (!f)
		return -errno;
	fputs("noprefetch = false\nno_background_fetch = false\n", f);
	fclose(f);
	bench_net_ref(&b->net, m->image, ref, sizeof(ref));
	snprintf(host, sizeof(host), "%.*s", (int)strcspn(ref, "/"), ref);
	bench_b64(ref, b64, sizeof(b64));
	argv[na++] = (char *)b->stargz_bin;
	argv[na++] = (char *)"-root";
	argv[na++] = root;
	argv[na++] = (char *)"-config";
	argv[na++] = cfg;
	if (b->reg.insecure) {
		argv[na++] = (char *)"-plain-http";
		argv[na++] = host;
	}
	argv[na++] = mntd;
	argv[na] = NULL;
	bench_drop_caches();
	reglog_mark(b);
	t0 = bench_now();
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);

		setsid();
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		execv(argv[0], argv);
		_exit(127);
	}
	g_store_pid = pid;
	track_mount(mntd);
	for (int i = 0; i < 300 && !is_mounted(mntd); i++) {
		struct timespec ts = { 0, 20 * 1000 * 1000 };

		if (waitpid(pid, NULL, WNOHANG) == pid) {
			pid = 0;
			break;
		}
		nanosleep(&ts, NULL);
	}
	if (!is_mounted(mntd)) {
		fprintf(stderr, "\nlazyimg bench: stargz-store did not mount:\n");
		print_tail(log, 15);
		ret = -EIO;
		goto stop;
	}
	/* resolving each layer (manifest, config, TOC) is what makes it ready */
	for (unsigned i = nlayers; i-- > 0;) {
		char p[PATH_MAX * 2];
		struct stat st;
		size_t ol = strlen(opts);

		snprintf(p, sizeof(p), "%s/%s/%s/diff", mntd, b64, digests[i]);
		if (stat(p, &st) < 0) {
			fprintf(stderr, "\nlazyimg bench: stargz-store: layer %s: %s (not eStargz?)\n", digests[i],
				strerror(errno));
			print_tail(log, 15);
			ret = -EIO;
			goto stop;
		}
		if (!top)
			top = digests[i];
		/* overlayfs takes ':' as a separator: escape the one in "sha256:" */
		for (const char *s = p; *s && ol + 3 < sizeof(opts); s++) {
			if (*s == ':' || *s == '\\' || *s == ',')
				opts[ol++] = '\\';
			opts[ol++] = *s;
		}
		opts[ol++] = i ? ':' : 0;
		opts[ol] = 0;
	}
	if (nlayers > 1) {
		if (mount("overlay", merged, "overlay", MS_RDONLY, opts) < 0) {
			fprintf(stderr, "\nlazyimg bench: overlay of the stargz-store layers: %s\n", strerror(errno));
			ret = -errno;
			goto stop;
		}
		track_mount(merged);
	} else {
		snprintf(merged, sizeof(merged), "%s/%s/%s/diff", mntd, b64, top);
	}
	t1 = bench_now();
	if (b->w.ttfb_file)
		ttfb = bench_ttfb(merged, b->w.ttfb_file);
	t2 = bench_now();
	ret = bench_workload_run(&b->w, merged, &wr);
	bench_proc_usage(pid, &cpu, &hwm);
	set_run(m, M_READY, (t1 - t0) * 1e3);
	set_run(m, M_TTFB, ttfb * 1e3);
	set_run(m, M_WORK, ret ? NAN : wr.secs * 1e3);
	set_run(m, M_TOTAL, ret ? NAN : (t2 - t0 + wr.secs) * 1e3);
	for (int k = M_BYTES; k <= M_PREFETCH; k++)
		set_run(m, k, NAN); /* the store reports no counters */
	set_run(m, M_HIT, NAN);
	set_run(m, M_CPU, cpu);
	set_run(m, M_RSS, hwm);
	set_run(m, M_IOPS, wr.iops);
	set_run(m, M_READ_BYTES, (double)wr.bytes);
	set_run(m, M_ERRORS, (double)wr.errors);
	snprintf(m->prefetch_source, sizeof(m->prefetch_source), "stargz");
	snprintf(m->note, sizeof(m->note), "stargz-store (background fetch on), %u layer%s; %s", nlayers,
		 nlayers > 1 ? "s merged by overlayfs" : "",
		 b->reglog ? "bytes/requests: the registry's access log, until the store stopped" :
			     "fetched bytes: not reported by the store (give --registry-log)");
stop:
	if (nlayers > 1 && is_mounted(merged))
		umount2(merged, MNT_DETACH);
	untrack_mount(merged);
	if (pid > 0) {
		kill(pid, SIGTERM);
		for (int i = 0; i < 100 && waitpid(pid, NULL, WNOHANG) != pid; i++) {
			struct timespec ts = { 0, 50 * 1000 * 1000 };

			nanosleep(&ts, NULL);
			if (i == 99) {
				kill(pid, SIGKILL);
				waitpid(pid, NULL, 0);
			}
		}
	}
	g_store_pid = 0;
	if (is_mounted(mntd))
		umount2(mntd, MNT_DETACH);
	untrack_mount(mntd);
	if (!ret) {
		reglog_count(b, m);
		set_run(m, M_BYTES, m->v[M_LOG_BYTES][m->n]);
		set_run(m, M_REQS, m->v[M_LOG_REQS][m->n]);
		m->n++;
	}
	bench_rm_tree(d);
	return ret;
}

/* ---------- output ---------- */

static void fmt_num(char *buf, size_t size, double v, int prec)
{
	if (isfinite(v))
		snprintf(buf, size, "%.*f", prec, v);
	else
		snprintf(buf, size, "-");
}

static void machine_line(char *buf, size_t size)
{
	struct utsname u;

	uname(&u);
	snprintf(buf, size, "%ld cores, kernel %s", sysconf(_SC_NPROCESSORS_ONLN), u.release);
}

static const char *workload_desc(const struct bench *b, char *buf, size_t size)
{
	switch (b->w.kind) {
	case WL_READ_LIST: snprintf(buf, size, "read %zu files from %s", b->w.npaths, b->w.list_file); break;
	case WL_READ_ALL: snprintf(buf, size, "read the whole tree"); break;
	case WL_RUN: snprintf(buf, size, "run '%s' until '%s'", b->w.run_cmd, b->w.wait_line); break;
	case WL_RAND4K: snprintf(buf, size, "%lu random 4 KiB reads", b->w.rand_n); break;
	default: snprintf(buf, size, "mount only"); break;
	}
	return buf;
}

static void print_table(const struct bench *b, FILE *out)
{
	char mach[300], wl[600];

	machine_line(mach, sizeof(mach));
	fprintf(out, "# lazyimg bench: %d cold run%s per mode (median, p90 in brackets); workload: %s\n", b->runs,
		b->runs > 1 ? "s" : "", workload_desc(b, wl, sizeof(wl)));
	fprintf(out, "# network: %s\n", b->netem ? b->net.desc : "loopback, no shaping");
	fprintf(out, "# machine: %s\n", mach);
	fprintf(out, "%-26s %-9s %15s %13s %17s %17s %9s %7s %6s %7s %6s %8s\n", "mode", "prefetch", "ready_ms",
		"ttfb_ms", "workload_ms", "total_ms", "MB", "reqs", "cpu_s", "rss_MiB", "hit%", "iops");
	for (int i = 0; i < b->nmodes; i++) {
		const struct mode *m = &b->modes[i];
		double s[M_NMETRICS][4];
		char c[12][64], t[3][24];

		for (int k = 0; k < M_NMETRICS; k++)
			summarize(m->v[k], m->n, s[k]);
		fmt_num(t[0], sizeof(t[0]), s[M_READY][0], 1);
		fmt_num(t[1], sizeof(t[1]), s[M_READY][1], 1);
		snprintf(c[0], sizeof(c[0]), "%s [%s]", t[0], t[1]);
		fmt_num(c[1], sizeof(c[1]), s[M_TTFB][0], 2);
		fmt_num(t[0], sizeof(t[0]), s[M_WORK][0], 1);
		fmt_num(t[1], sizeof(t[1]), s[M_WORK][1], 1);
		snprintf(c[2], sizeof(c[2]), "%s [%s]", t[0], t[1]);
		fmt_num(t[0], sizeof(t[0]), s[M_TOTAL][0], 1);
		fmt_num(t[1], sizeof(t[1]), s[M_TOTAL][1], 1);
		snprintf(c[3], sizeof(c[3]), "%s [%s]", t[0], t[1]);
		fmt_num(c[4], sizeof(c[4]), s[M_BYTES][0] / 1e6, 2);
		fmt_num(c[5], sizeof(c[5]), s[M_REQS][0], 0);
		fmt_num(c[6], sizeof(c[6]), s[M_CPU][0], 2);
		fmt_num(c[7], sizeof(c[7]), s[M_RSS][0] / 1024, 1);
		fmt_num(c[8], sizeof(c[8]), s[M_HIT][0] * 100, 1);
		fmt_num(c[9], sizeof(c[9]), s[M_IOPS][0], 0);
		fprintf(out, "%-26s %-9s %15s %13s %17s %17s %9s %7s %6s %7s %6s %8s\n", m->name, m->prefetch_source,
			c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9]);
	}
	for (int i = 0; i < b->nmodes; i++)
		fprintf(out, "#   %-24s %s%s%s\n", b->modes[i].name, b->modes[i].image, b->modes[i].note[0] ? ": " : "",
			b->modes[i].note);
}

static void json_val(FILE *f, double v)
{
	if (isfinite(v))
		fprintf(f, "%.15g", v);
	else
		fputs("null", f);
}

static void json_escape(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fprintf(f, "\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			fprintf(f, "\\u%04x", *s);
		else
			fputc(*s, f);
	}
	fputc('"', f);
}

static int write_json(const struct bench *b, const char *path)
{
	FILE *f = fopen(path, "we");
	char mach[300], wl[600];

	if (!f)
		return -errno;
	machine_line(mach, sizeof(mach));
	fputs("{\"machine\":", f);
	json_escape(f, mach);
	fprintf(f, ",\"nproc\":%ld,\"runs\":%d,\"workload\":", sysconf(_SC_NPROCESSORS_ONLN), b->runs);
	json_escape(f, workload_desc(b, wl, sizeof(wl)));
	fputs(",\"network\":", f);
	json_escape(f, b->netem ? b->net.desc : "loopback, no shaping");
	fprintf(f, ",\"netem_requested\":");
	if (b->netem)
		json_escape(f, b->netem);
	else
		fputs("null", f);
	fputs(",\"modes\":[", f);
	for (int i = 0; i < b->nmodes; i++) {
		const struct mode *m = &b->modes[i];

		fprintf(f, "%s\n {\"mode\":", i ? "," : "");
		json_escape(f, m->name);
		fputs(",\"image\":", f);
		json_escape(f, m->image);
		fputs(",\"prefetch_source\":", f);
		json_escape(f, m->prefetch_source);
		fputs(",\"format\":", f);
		json_escape(f, m->format[0] ? m->format : "-");
		fprintf(f, ",\"image_bytes\":%llu,\"layers\":%u,\"runs\":%d,\"note\":", (unsigned long long)m->image_bytes,
			m->nlayers, m->n);
		json_escape(f, m->note);
		for (int k = 0; k < M_NMETRICS; k++) {
			double s[4];

			summarize(m->v[k], m->n, s);
			fprintf(f, ",\"%s\":{\"median\":", metric_info[k].key);
			json_val(f, s[0]);
			fputs(",\"p90\":", f);
			json_val(f, s[1]);
			fputs(",\"min\":", f);
			json_val(f, s[2]);
			fputs(",\"max\":", f);
			json_val(f, s[3]);
			fputs(",\"values\":[", f);
			for (int r = 0; r < m->n; r++) {
				if (r)
					fputc(',', f);
				json_val(f, m->v[k][r]);
			}
			fputs("]}", f);
		}
		fputc('}', f);
	}
	fputs("\n]}\n", f);
	return fclose(f) ? -errno : 0;
}

static int write_csv(const struct bench *b, const char *path)
{
	FILE *f = fopen(path, "we");

	if (!f)
		return -errno;
	fputs("mode,image,prefetch_source,metric,unit,median,p90,min,max,runs\n", f);
	for (int i = 0; i < b->nmodes; i++) {
		const struct mode *m = &b->modes[i];

		for (int k = 0; k < M_NMETRICS; k++) {
			double s[4];

			summarize(m->v[k], m->n, s);
			fprintf(f, "\"%s\",\"%s\",%s,%s,%s", m->name, m->image, m->prefetch_source, metric_info[k].key,
				metric_info[k].unit);
			for (int j = 0; j < 4; j++) {
				if (isfinite(s[j]))
					fprintf(f, ",%.15g", s[j]);
				else
					fputs(",", f);
			}
			fprintf(f, ",%d\n", m->n);
		}
	}
	return fclose(f) ? -errno : 0;
}

/* Bars per mode for the time metrics and the bytes fetched, drawn by gnuplot. */
static int write_plot(const struct bench *b, const char *path)
{
	char dat[PATH_MAX], gp[PATH_MAX], mach[300];
	char *argv[] = { (char *)"gnuplot", gp, NULL };
	FILE *f;
	int ret;

	if (strchr(path, '\''))
		return -EINVAL; /* it goes into the gnuplot script between single quotes */
	snprintf(dat, sizeof(dat), "%s/plot.dat", b->dir);
	snprintf(gp, sizeof(gp), "%s/plot.gp", b->dir);
	f = fopen(dat, "we");
	if (!f)
		return -errno;
	fputs("# mode ready_s ttfb_s workload_s total_s MB\n", f);
	for (int i = 0; i < b->nmodes; i++) {
		const struct mode *m = &b->modes[i];
		int ks[] = { M_READY, M_TTFB, M_WORK, M_TOTAL, M_BYTES };

		fprintf(f, "\"%s\"", m->name);
		for (size_t k = 0; k < LZ_ARRAY_SIZE(ks); k++) {
			double s[4];

			summarize(m->v[ks[k]], m->n, s);
			if (!isfinite(s[0]))
				fputs(" ?", f);
			else
				fprintf(f, " %.6g", ks[k] == M_BYTES ? s[0] / 1e6 : s[0] / 1e3);
		}
		fputc('\n', f);
	}
	fclose(f);
	machine_line(mach, sizeof(mach));
	f = fopen(gp, "we");
	if (!f)
		return -errno;
	/* FILE.png: the same chart as a PNG (for viewers without SVG) */
	if (strlen(path) > 4 && !strcmp(path + strlen(path) - 4, ".png"))
		fputs("set terminal pngcairo size 1100,520 font 'sans,10' background rgb 'white'\n", f);
	else
		fputs("set terminal svg size 1100,520 dynamic font 'sans,11' background rgb 'white'\n", f);
	fprintf(f, "set output '%s'\n"
		   "set datafile missing '?'\n"
		   "set multiplot layout 1,2 title 'lazyimg bench: median of %d cold runs (%s); %s'\n"
		   "set style data histograms\nset style histogram clustered gap 1\n"
		   "set style fill solid 0.85 border -1\nset boxwidth 0.9\n"
		   "set xtics rotate by 20 right nomirror\nset grid ytics\nset key above\nset bmargin 7\n"
		   "set yrange [0:*]\nset ylabel 'seconds'\n"
		   "plot '%s' using 2:xtic(1) title 'ready', '' using 3 title 'first byte', "
		   "'' using 4 title 'workload', '' using 5 title 'total'\n"
		   "set ylabel 'MB fetched from the registry'\n"
		   "plot '%s' using 6:xtic(1) title 'MB fetched' lc rgb '#8060a0'\n"
		   "unset multiplot\n",
		path, b->runs, b->netem ? b->netem : "loopback", mach, dat, dat);
	fclose(f);
	ret = bench_run(argv, NULL, NULL);
	return ret ? -EIO : 0;
}

/* ---------- driver ---------- */

#define BENCH_OPTS CLI_OPT_TLS
/* --run-timeout: a start-up that takes an hour is not one to measure */
#define BENCH_MAX_RUN_TIMEOUT_S 3600

static void bench_usage(FILE *out)
{
	fputs("usage: lazyimg bench [options] REF...\n"
	      "\n"
	      "Measure lazy pull: for each image REF (nydus, or eStargz once lazyimg mounts it),\n"
	      "N cold runs (cache dir emptied, page cache dropped) and one warm run of a real\n"
	      "`lazyimg mount`: time to ready, to the first byte of a file, to the end of a\n"
	      "workload; bytes and requests fetched, server CPU and peak RSS, cache hit rate.\n"
	      "\n"
	      "workload (one):\n"
	      "  --read FILE_LIST        read these files (one path per line) in order\n"
	      "  --read-all              read every regular file of the tree\n"
	      "  --run CMD --wait-line TEXT [--run-timeout S]\n"
	      "                          run CMD with /bin/sh chrooted on the mount until a\n"
	      "                          line of its output contains TEXT (default timeout 60 s)\n"
	      "  --rand4k N              N random 4 KiB reads over the tree's files (IOPS)\n"
	      "  --ttfb-file PATH        file whose first byte is timed after ready\n"
	      "                          (default: the first --read path)\n"
	      "runs:\n"
	      "  --runs N                cold runs per mode (default 3)\n"
	      "  --no-warm               skip the warm re-run (same cache, remount)\n"
	      "  --prefetch none|table|list|all   what the lazyimg mounts prefetch (default table)\n"
	      "  --prefetch-files LIST   the list for --prefetch list\n"
	      "  --record FILE           record the files the workload reads (one recording\n"
	      "                          mount), write them to FILE, then add a mode whose cold\n"
	      "                          mounts prefetch that recorded list automatically\n"
	      "baselines:\n"
	      "  --baseline full-pull    skopeo copy + untar (whiteouts applied) of --full-pull-ref\n"
	      "  --full-pull-ref REF     the original OCI image\n"
	      "  --baseline stargz-store the stargz-store FUSE store on --stargz-ref\n"
	      "  --stargz-ref REF        the same image as eStargz\n"
	      "  --stargz-store BIN      the stargz-store binary (default: on PATH, or\n"
	      "                          ~/.cache/peers-bin/stargz-store)\n"
	      "network:\n"
	      "  --netem SPEC            e.g. \"delay 20ms rate 100mbit\": tc netem on lo for the\n"
	      "                          run, always removed (also on SIGINT/SIGTERM). Without\n"
	      "                          sch_netem: delay by an in-process relay, rate by tbf\n"
	      "registry:\n", out);
	cli_opts_help(out, BENCH_OPTS, 26);
	fputs("output:\n"
	      "  --json FILE  --csv FILE  --plot FILE.svg|FILE.png (gnuplot)\n"
	      "  --workdir DIR           where mounts, caches and pulls go (default: /var/tmp)\n"
	      "  --registry-log FILE     the registry's access log: bytes and requests per run\n"
	      "                          as the registry saw them (stargz-store reports none)\n"
	      "  -h, --help\n", out);
}

static int do_modes(struct bench *b)
{
	char cache[PATH_MAX], rec_tmp[PATH_MAX];
	int ret = 0;

	/* count the steps for the progress line */
	b->nsteps = b->nrefs * (b->runs + (b->warm ? 1 : 0) + (b->record ? b->runs + 1 : 0)) +
		    (b->base_full ? b->runs : 0) + (b->base_stargz ? b->runs : 0);
	for (int r = 0; r < b->nrefs; r++) {
		struct mode *m = add_mode(b, "lazyimg cold", b->refs[r], K_LAZY), *mw = NULL, *mr = NULL;
		char ref[700], fmt[16] = "?", tag[40] = "";

		if (!m)
			return -ENOMEM;
		bench_net_ref(&b->net, b->refs[r], ref, sizeof(ref));
		if (image_layers(b, ref, &m->image_bytes, &m->nlayers, NULL, fmt, sizeof(fmt)))
			fprintf(stderr, "lazyimg bench: %s: cannot read its manifest\n", b->refs[r]);
		snprintf(m->format, sizeof(m->format), "%s", fmt);
		/* several images: name the modes by format (and position when formats repeat) */
		if (b->nrefs > 1) {
			int same = 0;

			for (int k = 0; k < b->nmodes - 1; k++)
				if (b->modes[k].kind == K_LAZY && !b->modes[k].recorded && !strcmp(b->modes[k].format, fmt))
					same++;
			if (same)
				snprintf(tag, sizeof(tag), " %s#%d", fmt, same + 1);
			else
				snprintf(tag, sizeof(tag), " %s", fmt);
			snprintf(m->name, sizeof(m->name), "lazyimg%s cold", tag);
		}
		snprintf(cache, sizeof(cache), "%s/cache-%d", b->dir, r);
		mkdir(cache, 0700);
		for (int i = 0; i < b->runs; i++) {
			b->step++;
			progress(b, "%s: cold run %d/%d", m->name, i + 1, b->runs);
			ret = lazy_run(b, m, cache, NULL, true);
			if (ret)
				return ret;
		}
		if (b->warm) {
			mw = add_mode(b, "lazyimg warm", b->refs[r], K_WARM);
			if (!mw)
				return -ENOMEM;
			snprintf(mw->name, sizeof(mw->name), "lazyimg%s warm", tag);
			snprintf(mw->format, sizeof(mw->format), "%s", fmt);
			mw->image_bytes = m->image_bytes;
			mw->nlayers = m->nlayers;
			b->step++;
			progress(b, "%s: warm run (same cache, remounted, page cache dropped)", mw->name);
			ret = lazy_run(b, mw, cache, NULL, false);
			if (ret)
				return ret;
		}
		if (b->record) {
			snprintf(cache, sizeof(cache), "%s/cache-rec-%d", b->dir, r);
			mkdir(cache, 0700);
			mr = add_mode(b, "lazyimg +recorded", b->refs[r], K_LAZY);
			if (!mr)
				return -ENOMEM;
			snprintf(mr->name, sizeof(mr->name), "lazyimg%s +recorded", tag);
			snprintf(mr->format, sizeof(mr->format), "%s", fmt);
			mr->recorded = true;
			mr->image_bytes = m->image_bytes;
			mr->nlayers = m->nlayers;
			/* one recording run: its figures are not part of any mode */
			{
				struct mode scratch;

				memset(&scratch, 0, sizeof(scratch));
				snprintf(scratch.image, sizeof(scratch.image), "%s", b->refs[r]);
				for (int k = 0; k < M_NMETRICS; k++)
					scratch.v[k] = calloc(2, sizeof(double));
				scratch.recorded = true;
				snprintf(rec_tmp, sizeof(rec_tmp), "%s", b->record);
				if (b->nrefs > 1)
					snprintf(rec_tmp, sizeof(rec_tmp), "%s.%d", b->record, r + 1);
				b->step++;
				progress(b, "recording the workload's reads into %s", rec_tmp);
				ret = lazy_run(b, &scratch, cache, rec_tmp, true);
				for (int k = 0; k < M_NMETRICS; k++)
					free(scratch.v[k]);
				if (ret)
					return ret;
			}
			for (int i = 0; i < b->runs; i++) {
				b->step++;
				progress(b, "%s: cold run %d/%d", mr->name, i + 1, b->runs);
				ret = lazy_run(b, mr, cache, NULL, true);
				if (ret)
					return ret;
			}
			snprintf(mr->note, sizeof(mr->note), "cold mounts prefetching the list recorded in %.150s", rec_tmp);
		}
	}
	if (b->base_full) {
		struct mode *m = add_mode(b, "full pull", b->full_ref, K_FULL);

		if (!m)
			return -ENOMEM;
		for (int i = 0; i < b->runs; i++) {
			b->step++;
			progress(b, "full pull: run %d/%d (skopeo copy + untar)", i + 1, b->runs);
			ret = full_run(b, m);
			if (ret)
				return ret;
		}
		m->image_bytes = (uint64_t)(isfinite(m->v[M_BYTES][0]) ? m->v[M_BYTES][0] : 0);
	}
	if (b->base_stargz) {
		struct mode *m = add_mode(b, "stargz-store", b->stargz_ref, K_STARGZ);
		char ref[700], **dg = NULL;

		if (!m)
			return -ENOMEM;
		bench_net_ref(&b->net, b->stargz_ref, ref, sizeof(ref));
		ret = image_layers(b, ref, &m->image_bytes, &m->nlayers, &dg, NULL, 0);
		if (ret || !dg) {
			fprintf(stderr, "lazyimg bench: %s: cannot read its manifest\n", b->stargz_ref);
			return ret ? ret : -ENOMEM;
		}
		for (int i = 0; i < b->runs && !ret; i++) {
			b->step++;
			progress(b, "stargz-store: cold run %d/%d", i + 1, b->runs);
			ret = stargz_run(b, m, dg, m->nlayers);
		}
		for (unsigned i = 0; i < m->nlayers; i++)
			free(dg[i]);
		free(dg);
		if (ret)
			return ret;
	}
	return 0;
}

static const char *find_stargz_store(void)
{
	static char buf[PATH_MAX];
	const char *path = getenv("PATH"), *home = getenv("HOME");

	while (path && *path) {
		size_t n = strcspn(path, ":");

		snprintf(buf, sizeof(buf), "%.*s/stargz-store", (int)n, path);
		if (access(buf, X_OK) == 0)
			return buf;
		path += n + (path[n] == ':');
	}
	snprintf(buf, sizeof(buf), "%s/.cache/peers-bin/stargz-store", home ? home : "/root");
	return access(buf, X_OK) == 0 ? buf : NULL;
}

int cmd_bench(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "runs", required_argument, NULL, 'n' },
		{ "ttfb-file", required_argument, NULL, 't' },
		{ "read", required_argument, NULL, 'r' },
		{ "read-all", no_argument, NULL, 'a' },
		{ "run", required_argument, NULL, 'c' },
		{ "wait-line", required_argument, NULL, 'w' },
		{ "run-timeout", required_argument, NULL, 'T' },
		{ "rand4k", required_argument, NULL, 'k' },
		{ "baseline", required_argument, NULL, 'b' },
		{ "full-pull-ref", required_argument, NULL, 'F' },
		{ "stargz-ref", required_argument, NULL, 'S' },
		{ "stargz-store", required_argument, NULL, 'G' },
		{ "netem", required_argument, NULL, 'N' },
		{ "prefetch", required_argument, NULL, 'p' },
		{ "prefetch-files", required_argument, NULL, 'P' },
		{ "record", required_argument, NULL, 'R' },
		{ "json", required_argument, NULL, 'j' },
		{ "csv", required_argument, NULL, 'v' },
		{ "plot", required_argument, NULL, 'g' },
		{ "workdir", required_argument, NULL, 'W' },
		{ "registry-log", required_argument, NULL, 'L' },
		{ "no-warm", no_argument, NULL, 'X' },
		{ "keep", no_argument, NULL, 'K' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	static struct bench b;
	struct cli_common co = { .groups = BENCH_OPTS };
	struct sigaction sa = { .sa_handler = on_signal };
	char tmpl[900], *end;
	int c, ret = 0, nwl = 0;
	long num;
	ssize_t sl;

	memset(&b, 0, sizeof(b));
	b.runs = 3;
	b.warm = true;
	co.reg = &b.reg;
	cli_opts_begin(&co, "bench", lopts, argv);
	while ((c = getopt_long(argc, argv, "h", co.lopts, NULL)) != -1) {
		switch (c) {
		case 'n':
			num = strtol(optarg, &end, 10);
			if (*end || end == optarg || num < 1 || num > BENCH_MAX_RUNS) {
				fprintf(stderr, "lazyimg bench: --runs must be 1..%d, not '%s'\n", BENCH_MAX_RUNS, optarg);
				return 2;
			}
			b.runs = (int)num;
			break;
		case 't': b.w.ttfb_file = optarg; break;
		case 'r': b.w.kind = WL_READ_LIST; b.w.list_file = optarg; nwl++; break;
		case 'a': b.w.kind = WL_READ_ALL; nwl++; break;
		case 'c': b.w.kind = WL_RUN; b.w.run_cmd = optarg; nwl++; break;
		case 'w': b.w.wait_line = optarg; break;
		case 'T':
			b.w.run_timeout_s = strtod(optarg, &end);
			if (*end || end == optarg || !(b.w.run_timeout_s > 0 && b.w.run_timeout_s <= BENCH_MAX_RUN_TIMEOUT_S)) {
				fprintf(stderr, "lazyimg bench: --run-timeout '%s' is not a number of seconds up to %d\n",
					optarg, BENCH_MAX_RUN_TIMEOUT_S);
				return 2;
			}
			break;
		case 'k':
			b.w.kind = WL_RAND4K;
			b.w.rand_n = strtoul(optarg, &end, 10);
			nwl++;
			if (*end || optarg[0] == '-' || !b.w.rand_n || b.w.rand_n > 100000000ul) {
				fprintf(stderr, "lazyimg bench: --rand4k N: 1..100000000, not '%s'\n", optarg);
				return 2;
			}
			break;
		case 'b':
			if (!strcmp(optarg, "full-pull"))
				b.base_full = true;
			else if (!strcmp(optarg, "stargz-store"))
				b.base_stargz = true;
			else {
				fprintf(stderr, "lazyimg bench: --baseline: full-pull or stargz-store, not '%s'\n", optarg);
				return 2;
			}
			break;
		case 'F': b.full_ref = optarg; break;
		case 'S': b.stargz_ref = optarg; break;
		case 'G': b.stargz_bin = optarg; break;
		case 'N': b.netem = optarg; break;
		case 'p':
			if (strcmp(optarg, "none") && strcmp(optarg, "table") && strcmp(optarg, "list") && strcmp(optarg, "all")) {
				fprintf(stderr, "lazyimg bench: --prefetch: none, table, list or all, not '%s'\n", optarg);
				return 2;
			}
			b.prefetch = optarg;
			break;
		case 'P': b.prefetch_files = optarg; break;
		case 'R': b.record = optarg; break;
		case 'j': b.json = optarg; break;
		case 'v': b.csv = optarg; break;
		case 'g': b.plot = optarg; break;
		case 'W': b.workdir = optarg; break;
		case 'L': b.reglog = optarg; break;
		case 'X': b.warm = false; break;
		case 'K': b.keep = true; break;
		case 'h': bench_usage(stdout); return 0;
		default:
			if (cli_opts_parse(&co, c, optarg))
				return 2;
			break;
		}
	}
	for (int i = optind; i < argc; i++) {
		if (b.nrefs >= BENCH_MAX_REFS) {
			fprintf(stderr, "lazyimg bench: at most %d images\n", BENCH_MAX_REFS);
			return 2;
		}
		b.refs[b.nrefs++] = argv[i];
	}
	if (nwl > 1) {
		fprintf(stderr, "lazyimg bench: give one workload (--read, --read-all, --run, --rand4k)\n");
		return 2;
	}
	if (!b.nrefs && !b.base_full && !b.base_stargz) {
		fprintf(stderr, "lazyimg bench: expected at least one image REF\n");
		bench_usage(stderr);
		return 2;
	}
	if (b.w.kind == WL_RUN && !b.w.wait_line) {
		fprintf(stderr, "lazyimg bench: --run needs --wait-line TEXT\n");
		return 2;
	}
	if (b.base_full && !b.full_ref) {
		fprintf(stderr, "lazyimg bench: --baseline full-pull needs --full-pull-ref REF (the OCI image)\n");
		return 2;
	}
	if (b.base_stargz && !b.stargz_ref) {
		fprintf(stderr, "lazyimg bench: --baseline stargz-store needs --stargz-ref REF (the eStargz image)\n");
		return 2;
	}
	if (b.base_stargz && !b.stargz_bin && !(b.stargz_bin = find_stargz_store())) {
		fprintf(stderr, "lazyimg bench: stargz-store is not on PATH (give --stargz-store BIN): baseline skipped\n");
		b.base_stargz = false;
	}
	if (b.prefetch && !strcmp(b.prefetch, "list") && !b.prefetch_files) {
		fprintf(stderr, "lazyimg bench: --prefetch list needs --prefetch-files LIST\n");
		return 2;
	}
	if (b.record && !b.nrefs) {
		fprintf(stderr, "lazyimg bench: --record needs a lazyimg image REF\n");
		return 2;
	}
	if (b.w.kind == WL_READ_LIST) {
		ret = bench_workload_load(&b.w);
		if (ret) {
			fprintf(stderr, "lazyimg bench: --read %s: %s\n", b.w.list_file,
				ret == -ENODATA ? "no paths in it" : strerror(-ret));
			return 2;
		}
		if (!b.w.ttfb_file)
			b.w.ttfb_file = b.w.paths[0];
	}
	sl = readlink("/proc/self/exe", b.self, sizeof(b.self) - 1);
	if (sl <= 0) {
		perror("lazyimg bench: /proc/self/exe");
		return 1;
	}
	b.self[sl] = 0;
	b.tty = isatty(2);
	if (b.nrefs || b.full_ref || b.stargz_ref) {
		const char *r = b.nrefs ? b.refs[0] : b.full_ref ? b.full_ref : b.stargz_ref;

		snprintf(b.host, sizeof(b.host), "%.*s", (int)strcspn(r, "/"), r);
	}

	snprintf(tmpl, sizeof(tmpl), "%.850s/lazyimg-bench.XXXXXX", b.workdir ? b.workdir : "/var/tmp");
	if (!mkdtemp(tmpl)) {
		fprintf(stderr, "lazyimg bench: work directory %s: %s\n", tmpl, strerror(errno));
		return 1;
	}
	snprintf(b.dir, sizeof(b.dir), "%s", tmpl);
	if (!b.keep)
		snprintf(g_workdir, sizeof(g_workdir), "%s", tmpl);
	{
		char mnt[PATH_MAX + 8];

		snprintf(mnt, sizeof(mnt), "%s/mnt", b.dir);
		mkdir(mnt, 0755);
	}
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	reg_global_init();
	bench_net_clean_stale();
	if (b.netem) {
		bench_net_start(&b.net, b.netem, b.host);
		fprintf(stderr, "lazyimg bench: network: %s\n", b.net.desc);
	}
	ret = do_modes(&b);
	bench_net_stop(&b.net);
	if (b.tty)
		fputc('\n', stderr);
	if (ret)
		fprintf(stderr, "lazyimg bench: stopped: %s (partial results below)\n", strerror(-ret));
	print_table(&b, stdout);
	fflush(stdout);
	if (b.json && write_json(&b, b.json))
		fprintf(stderr, "lazyimg bench: --json %s: %s\n", b.json, strerror(errno)), ret = ret ? ret : -EIO;
	if (b.csv && write_csv(&b, b.csv))
		fprintf(stderr, "lazyimg bench: --csv %s: %s\n", b.csv, strerror(errno)), ret = ret ? ret : -EIO;
	if (b.plot) {
		if (write_plot(&b, b.plot)) {
			fprintf(stderr, "lazyimg bench: --plot %s: gnuplot failed\n", b.plot);
			ret = ret ? ret : -EIO;
		} else {
			printf("# plot: %s\n", b.plot);
		}
	}
	emergency_cleanup();
	if (!b.keep)
		bench_rm_tree(b.dir);
	bench_workload_free(&b.w);
	for (int i = 0; i < b.nmodes; i++)
		for (int k = 0; k < M_NMETRICS; k++)
			free(b.modes[i].v[k]);
	return ret ? 1 : 0;
}
