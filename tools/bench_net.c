/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench_net.c - network shaping for `lazyimg bench`. Lazy pull pays a round
 * trip per request, and loopback hides round trips, so a bench can put tc
 * netem on lo. Some kernels ship without sch_netem: then the delay comes
 * from a TCP relay in this process (every byte is held for the delay in each
 * direction, as netem on lo holds each packet) and the rate from tc tbf,
 * and the table header says exactly that.
 */
#define LZ_MOD "bench"
#include "lazyimg/lz.h"
#include "bench.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* our qdisc is recognised by this handle, so a stale one is never someone else's */
#define NET_HANDLE "1a7:"
/* who installed it: a live bench is waited for, a dead one's qdisc is stale */
#define OWNER_FILE "/run/lazyimg/bench-qdisc.pid"
#define RELAY_BUF (64u << 10)
/* a delay beyond this is a typo, not a network */
#define NET_MAX_DELAY_S 10.0

static volatile sig_atomic_t g_qdisc_on;
static char g_tc[64] = "/usr/sbin/tc";

static void find_tc(void)
{
	static const char *const cands[] = { "/usr/sbin/tc", "/sbin/tc", "/usr/bin/tc", "/bin/tc" };

	for (size_t i = 0; i < LZ_ARRAY_SIZE(cands); i++)
		if (access(cands[i], X_OK) == 0) {
			snprintf(g_tc, sizeof(g_tc), "%s", cands[i]);
			return;
		}
}

/* Run tc with args; its stderr (first line) into err. */
static int tc(const char *const args[], char *err, size_t errsize)
{
	char *argv[24];
	int p[2], st = 0;
	size_t n = 0;
	pid_t pid;

	argv[n++] = g_tc;
	for (size_t i = 0; args[i] && n < LZ_ARRAY_SIZE(argv) - 1; i++)
		argv[n++] = (char *)args[i];
	argv[n] = NULL;
	if (err && errsize)
		err[0] = 0;
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return -errno;
	}
	if (pid == 0) {
		dup2(p[1], 2);
		dup2(p[1], 1);
		execv(g_tc, argv);
		_exit(127);
	}
	close(p[1]);
	if (err && errsize) {
		ssize_t r = read(p[0], err, errsize - 1);

		err[r > 0 ? r : 0] = 0;
		err[strcspn(err, "\n")] = 0;
	}
	close(p[0]);
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static bool our_qdisc_on_lo(void)
{
	char line[512];
	FILE *f;
	bool on = false;

	snprintf(line, sizeof(line), "%s qdisc show dev lo 2>/dev/null", g_tc);
	f = popen(line, "re");
	if (!f)
		return false;
	while (fgets(line, sizeof(line), f))
		if (strstr(line, " " NET_HANDLE " root"))
			on = true;
	pclose(f);
	return on;
}

/* The bench that installed the qdisc, if it still runs (its pid is in OWNER_FILE). */
static pid_t live_owner(void)
{
	char path[64], cmd[256] = "";
	FILE *f = fopen(OWNER_FILE, "re");
	int pid = 0;
	ssize_t n;
	int fd;

	if (!f)
		return 0;
	if (fscanf(f, "%d", &pid) != 1)
		pid = 0;
	fclose(f);
	if (pid <= 0 || pid == getpid() || kill(pid, 0) < 0)
		return 0;
	snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, cmd, sizeof(cmd) - 1);
	close(fd);
	cmd[n > 0 ? n : 0] = 0;
	/* argv[0] ... "bench": only another lazyimg bench counts as an owner */
	return n > 0 && strstr(cmd, "lazyimg") && memmem(cmd, (size_t)n, "\0bench\0", 7) ? pid : 0;
}

void bench_net_clean_stale(void)
{
	static const char *const del[] = { "qdisc", "del", "dev", "lo", "root", "handle", NET_HANDLE, NULL };
	pid_t owner;

	find_tc();
	if (!our_qdisc_on_lo())
		return;
	/* another bench shaping lo right now: wait for it rather than pull the rug */
	for (int i = 0; i < 600 && (owner = live_owner()) && our_qdisc_on_lo(); i++) {
		struct timespec ts = { 0, 500 * 1000 * 1000 };

		if (i == 0)
			fprintf(stderr, "lazyimg bench: waiting for bench pid %d to finish shaping lo\n", (int)owner);
		nanosleep(&ts, NULL);
	}
	if (our_qdisc_on_lo()) {
		fprintf(stderr, "lazyimg bench: removing a qdisc (handle %s) an earlier bench left on lo\n",
			NET_HANDLE);
		tc(del, NULL, 0);
	}
}

static void write_owner(void)
{
	FILE *f;

	mkdir("/run/lazyimg", 0700);
	f = fopen(OWNER_FILE, "we");
	if (f) {
		fprintf(f, "%d\n", (int)getpid());
		fclose(f);
	}
}

void bench_net_signal_cleanup(void)
{
	/* by handle: the kernel refuses to delete a root qdisc that is not ours */
	static char *const argv[] = { g_tc, (char *)"qdisc", (char *)"del", (char *)"dev", (char *)"lo", (char *)"root",
				      (char *)"handle", (char *)NET_HANDLE, NULL };
	pid_t pid;

	if (!g_qdisc_on)
		return;
	pid = fork();
	if (pid == 0) {
		int nfd = open("/dev/null", O_WRONLY);

		if (nfd >= 0) {
			dup2(nfd, 1);
			dup2(nfd, 2);
		}
		execv(g_tc, argv);
		_exit(127);
	}
	if (pid > 0)
		waitpid(pid, NULL, 0);
	g_qdisc_on = 0;
}

/* "20ms", "500us", "1s", "20" (ms) -> seconds; -1 when not a time */
static double parse_time(const char *s)
{
	char *end;
	double v = strtod(s, &end);

	if (end == s || v < 0)
		return -1;
	if (!strcmp(end, "ms") || !*end)
		return v / 1e3;
	if (!strcmp(end, "us") || !strcmp(end, "usec"))
		return v / 1e6;
	if (!strcmp(end, "s") || !strcmp(end, "sec"))
		return v;
	return -1;
}

/* "100mbit", "1gbit", "800kbit", "10mbps" (bytes) -> bits/s; -1 when not a rate */
static double parse_rate(const char *s)
{
	static const struct { const char *u; double m; } units[] = {
		{ "bit", 1 }, { "kbit", 1e3 }, { "mbit", 1e6 }, { "gbit", 1e9 },
		{ "bps", 8 }, { "kbps", 8e3 }, { "mbps", 8e6 }, { "gbps", 8e9 },
	};
	char *end;
	double v = strtod(s, &end);

	if (end == s || v <= 0)
		return -1;
	for (size_t i = 0; i < LZ_ARRAY_SIZE(units); i++)
		if (!strcasecmp(end, units[i].u))
			return v * units[i].m;
	return -1;
}

/* ---------- the delay relay ---------- */

struct rnode {
	struct rnode *next;
	double due;
	size_t len;   /* 0: end of stream */
	char data[];
};

struct rdir {
	struct relay_conn *c;
	int from, to;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct rnode *head, *tail;
	bool dead;    /* the writer gave up: the reader stops queueing */
};

struct relay_conn {
	struct rdir d[2];
	_Atomic int refs;
	double delay;
};

static struct {
	int lfd;
	struct sockaddr_in up;
	double delay;
	pthread_t th;
	_Atomic bool stop;
	bool running;
} g_relay = { .lfd = -1 };

static void conn_put(struct relay_conn *c)
{
	if (atomic_fetch_sub(&c->refs, 1) != 1)
		return;
	for (int i = 0; i < 2; i++) {
		struct rnode *n = c->d[i].head;

		while (n) {
			struct rnode *nx = n->next;

			free(n);
			n = nx;
		}
		pthread_mutex_destroy(&c->d[i].lock);
		pthread_cond_destroy(&c->d[i].cond);
	}
	close(c->d[0].from);
	close(c->d[1].from);
	free(c);
}

static void push(struct rdir *d, struct rnode *n)
{
	pthread_mutex_lock(&d->lock);
	if (d->tail)
		d->tail->next = n;
	else
		d->head = n;
	d->tail = n;
	pthread_cond_signal(&d->cond);
	pthread_mutex_unlock(&d->lock);
}

static void *reader_main(void *arg)
{
	struct rdir *d = arg;

	for (;;) {
		struct rnode *n = malloc(sizeof(*n) + RELAY_BUF);
		ssize_t r;

		if (!n)
			break;
		r = read(d->from, n->data, RELAY_BUF);
		if (r < 0 && errno == EINTR) {
			free(n);
			continue;
		}
		n->next = NULL;
		n->len = r > 0 ? (size_t)r : 0;
		n->due = bench_now() + d->c->delay;
		if (d->dead) {
			free(n);
			break;
		}
		push(d, n);
		if (r <= 0)
			break;
	}
	conn_put(d->c);
	return NULL;
}

static void *writer_main(void *arg)
{
	struct rdir *d = arg;

	for (;;) {
		struct rnode *n;
		double wait;
		bool ok = true;

		pthread_mutex_lock(&d->lock);
		while (!d->head)
			pthread_cond_wait(&d->cond, &d->lock);
		n = d->head;
		d->head = n->next;
		if (!d->head)
			d->tail = NULL;
		pthread_mutex_unlock(&d->lock);
		wait = n->due - bench_now();
		if (wait > 0) {
			struct timespec ts = { (time_t)wait, (long)((wait - floor(wait)) * 1e9) };

			while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
				;
		}
		if (!n->len) {
			free(n);
			shutdown(d->to, SHUT_WR);
			break;
		}
		for (size_t off = 0; off < n->len;) {
			ssize_t w = send(d->to, n->data + off, n->len - off, MSG_NOSIGNAL);

			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0) {
				ok = false;
				break;
			}
			off += (size_t)w;
		}
		free(n);
		if (!ok) {
			d->dead = true;
			shutdown(d->from, SHUT_RDWR);
			shutdown(d->to, SHUT_RDWR);
			break;
		}
	}
	conn_put(d->c);
	return NULL;
}

static void *accept_main(void *arg)
{
	(void)arg;
	while (!atomic_load(&g_relay.stop)) {
		int cfd = accept4(g_relay.lfd, NULL, NULL, SOCK_CLOEXEC), ufd, one = 1;
		struct relay_conn *c;
		pthread_attr_t at;
		pthread_t th;

		if (cfd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			break;
		}
		ufd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (ufd < 0 || connect(ufd, (struct sockaddr *)&g_relay.up, sizeof(g_relay.up)) < 0) {
			if (ufd >= 0)
				close(ufd);
			close(cfd);
			continue;
		}
		setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		setsockopt(ufd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(cfd);
			close(ufd);
			continue;
		}
		c->delay = g_relay.delay;
		c->refs = 4;
		c->d[0] = (struct rdir){ .c = c, .from = cfd, .to = ufd };
		c->d[1] = (struct rdir){ .c = c, .from = ufd, .to = cfd };
		pthread_attr_init(&at);
		pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
		pthread_attr_setstacksize(&at, 256u << 10);
		for (int i = 0; i < 2; i++) {
			pthread_mutex_init(&c->d[i].lock, NULL);
			pthread_cond_init(&c->d[i].cond, NULL);
		}
		for (int i = 0; i < 2; i++) {
			if (pthread_create(&th, &at, reader_main, &c->d[i]))
				conn_put(c);
			if (pthread_create(&th, &at, writer_main, &c->d[i]))
				conn_put(c);
		}
		pthread_attr_destroy(&at);
	}
	return NULL;
}

static int relay_start(const char *upstream, double delay, int *port)
{
	char host[256];
	const char *colon = strrchr(upstream, ':');
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t al = sizeof(a);

	if (!colon || colon - upstream >= (int)sizeof(host))
		return -EINVAL;
	snprintf(host, sizeof(host), "%.*s", (int)(colon - upstream), upstream);
	if (!strcmp(host, "localhost"))
		snprintf(host, sizeof(host), "127.0.0.1");
	g_relay.up = (struct sockaddr_in){ .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1)) };
	if (inet_pton(AF_INET, host, &g_relay.up.sin_addr) != 1)
		return -EINVAL; /* only a loopback/IPv4 registry is relayed */
	g_relay.delay = delay;
	g_relay.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (g_relay.lfd < 0)
		return -errno;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(g_relay.lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(g_relay.lfd, 64) < 0 ||
	    getsockname(g_relay.lfd, (struct sockaddr *)&a, &al) < 0) {
		int e = -errno;

		close(g_relay.lfd);
		g_relay.lfd = -1;
		return e;
	}
	*port = ntohs(a.sin_port);
	if (pthread_create(&g_relay.th, NULL, accept_main, NULL)) {
		close(g_relay.lfd);
		g_relay.lfd = -1;
		return -EAGAIN;
	}
	g_relay.running = true;
	return 0;
}

static void relay_stop(void)
{
	if (!g_relay.running)
		return;
	atomic_store(&g_relay.stop, true);
	shutdown(g_relay.lfd, SHUT_RDWR);
	pthread_join(g_relay.th, NULL);
	close(g_relay.lfd);
	g_relay.lfd = -1;
	g_relay.running = false;
	/* connections still open drain on their own detached threads; the process exits soon */
}

void bench_net_start(struct bench_net *n, const char *spec, const char *upstream)
{
	char buf[512], err[256], *save = NULL, *tok, ratestr[64] = "";
	const char *args[24];
	size_t na = 0;
	int rc;

	memset(n, 0, sizeof(*n));
	find_tc();
	snprintf(buf, sizeof(buf), "%s", spec);
	for (tok = strtok_r(buf, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
		if (!strcmp(tok, "delay") && (tok = strtok_r(NULL, " \t", &save)))
			n->delay_s = parse_time(tok);
		else if (!strcmp(tok, "rate") && (tok = strtok_r(NULL, " \t", &save)))
			n->rate_bps = parse_rate(tok), snprintf(ratestr, sizeof(ratestr), "%s", tok);
	}
	if (n->delay_s < 0 || n->delay_s > NET_MAX_DELAY_S || n->rate_bps < 0) {
		snprintf(n->desc, sizeof(n->desc), "netem '%s' not understood (want e.g. \"delay 20ms rate 100mbit\"): no shaping", spec);
		n->delay_s = n->rate_bps = 0;
		return;
	}
	/* first choice: the real thing */
	args[na++] = "qdisc"; args[na++] = "add"; args[na++] = "dev"; args[na++] = "lo";
	args[na++] = "root"; args[na++] = "handle"; args[na++] = NET_HANDLE; args[na++] = "netem";
	snprintf(buf, sizeof(buf), "%s", spec);
	save = NULL;
	for (tok = strtok_r(buf, " \t", &save); tok && na < LZ_ARRAY_SIZE(args) - 1; tok = strtok_r(NULL, " \t", &save))
		args[na++] = tok;
	args[na] = NULL;
	g_qdisc_on = 1; /* set before: a signal during tc must still try to remove it */
	rc = tc(args, err, sizeof(err));
	if (rc == 0) {
		n->qdisc = n->active = true;
		write_owner();
		snprintf(n->desc, sizeof(n->desc), "tc netem on lo: %s", spec);
		return;
	}
	g_qdisc_on = 0;
	snprintf(n->desc, sizeof(n->desc), "tc netem unavailable (%s)", err[0] ? err : "tc failed");
	/* the fallback: delay in a relay, rate by tbf */
	if (n->delay_s > 0) {
		if (relay_start(upstream, n->delay_s, &n->relay_port) == 0) {
			n->relay = n->active = true;
			snprintf(n->relay_upstream, sizeof(n->relay_upstream), "%s", upstream);
			snprintf(n->desc + strlen(n->desc), sizeof(n->desc) - strlen(n->desc),
				 "; delay %.0f ms each way by the bench's TCP relay 127.0.0.1:%d in front of %s",
				 n->delay_s * 1e3, n->relay_port, upstream);
		} else {
			snprintf(n->desc + strlen(n->desc), sizeof(n->desc) - strlen(n->desc),
				 "; NO delay (registry %s cannot be relayed)", upstream);
		}
	}
	if (n->rate_bps > 0) {
		/* through the relay every byte crosses lo twice: give tbf twice the rate */
		char rate[64];

		snprintf(rate, sizeof(rate), "%.0fbit", n->relay ? 2 * n->rate_bps : n->rate_bps);
		const char *targs[] = { "qdisc", "add", "dev", "lo", "root", "handle", NET_HANDLE, "tbf", "rate", rate,
					"burst", "1mb", "latency", "1s", NULL };
		g_qdisc_on = 1;
		if (tc(targs, err, sizeof(err)) == 0) {
			n->qdisc = n->active = true;
			write_owner();
			snprintf(n->desc + strlen(n->desc), sizeof(n->desc) - strlen(n->desc),
				 "; rate %s by tc tbf on lo (%s%s)", ratestr, rate,
				 n->relay ? ": both relay legs cross lo" : "");
		} else {
			g_qdisc_on = 0;
			snprintf(n->desc + strlen(n->desc), sizeof(n->desc) - strlen(n->desc),
				 "; NO rate limit (tbf: %s)", err);
		}
	}
	if (!n->active)
		snprintf(n->desc + strlen(n->desc), sizeof(n->desc) - strlen(n->desc), ": running without shaping");
}

void bench_net_ref(const struct bench_net *n, const char *ref, char *out, size_t size)
{
	size_t hl = strlen(n->relay_upstream);

	if (n->relay && !strncmp(ref, n->relay_upstream, hl) && ref[hl] == '/')
		snprintf(out, size, "127.0.0.1:%d%s", n->relay_port, ref + hl);
	else
		snprintf(out, size, "%s", ref);
}

void bench_net_stop(struct bench_net *n)
{
	if (n->qdisc) {
		static const char *const del[] = { "qdisc", "del", "dev", "lo", "root", "handle", NET_HANDLE, NULL };
		char err[256];

		if (tc(del, err, sizeof(err)))
			fprintf(stderr, "lazyimg bench: removing the qdisc on lo failed: %s\n", err);
		g_qdisc_on = 0;
		n->qdisc = false;
	}
	if (n->relay) {
		relay_stop();
		n->relay = false;
	}
	n->active = false;
}
