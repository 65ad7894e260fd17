/* SPDX-License-Identifier: Apache-2.0 */
/* bench.h - internals of `lazyimg bench` shared by tools/cmd_bench.c and tools/bench_*.c. */
#ifndef LAZYIMG_BENCH_H
#define LAZYIMG_BENCH_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* ---------- bench_net.c: network shaping on loopback ---------- */

struct bench_net {
	bool active;          /* any shaping in place */
	bool qdisc;           /* our qdisc is installed on lo */
	bool relay;           /* the delay relay is running; refs must be rewritten */
	char desc[512];       /* what is shaped and how, for the table header */
	double delay_s;       /* one-way, per direction */
	double rate_bps;      /* bits/s, 0 = none */
	int relay_port;
	char relay_upstream[300];
};

/* Remove a qdisc a killed bench left on lo (ours by handle only). */
void bench_net_clean_stale(void);
/*
 * Shape traffic to `upstream` (host:port of the registry) as `spec` (tc netem
 * syntax: "delay 20ms rate 100mbit"). tc netem on lo when the kernel has it;
 * otherwise the delay by an in-process TCP relay and the rate by tc tbf, and
 * the description says so. Never fails hard: without any means it describes
 * that no shaping is done.
 */
void bench_net_start(struct bench_net *n, const char *spec, const char *upstream);
/* Rewrite REF's registry host to the relay when one runs (else copy). */
void bench_net_ref(const struct bench_net *n, const char *ref, char *out, size_t size);
void bench_net_stop(struct bench_net *n);
/* Async-signal-safe: remove our qdisc (fork + execve of tc). */
void bench_net_signal_cleanup(void);

/* ---------- bench_work.c: workloads and helpers ---------- */

enum { WL_NONE = 0, WL_READ_LIST, WL_READ_ALL, WL_RUN, WL_RAND4K };

struct bench_workload {
	int kind;
	const char *list_file;  /* WL_READ_LIST */
	char **paths;           /* its lines */
	size_t npaths;
	const char *run_cmd;    /* WL_RUN */
	const char *wait_line;
	double run_timeout_s;
	unsigned long rand_n;   /* WL_RAND4K */
	const char *ttfb_file;  /* relative to the root; NULL: none */
};

struct bench_wresult {
	double secs;
	uint64_t bytes, files, errors;
	double iops;            /* WL_RAND4K only, else NAN */
	bool timed_out;
};

int bench_workload_load(struct bench_workload *w);
void bench_workload_free(struct bench_workload *w);
/* Run the workload on the tree at root; 0, or negative errno when it could not run at all. */
int bench_workload_run(const struct bench_workload *w, const char *root, struct bench_wresult *r);
/* Seconds until the first byte of root/rel; NAN when it cannot be read. */
double bench_ttfb(const char *root, const char *rel);

double bench_now(void);
void bench_drop_caches(void);
/* rm -rf path (not following symlinks); 0 or negative errno. */
int bench_rm_tree(const char *path);
/* Remove everything in dir except the entry named `keep` (may be NULL). */
int bench_empty_dir(const char *dir, const char *keep);
/* Run argv; stdout/stderr to log (appended) or /dev/null; returns the exit status or -errno. */
int bench_run(char *const argv[], const char *log, pid_t *track);
/* utime+stime seconds and VmHWM KiB of a live process. */
int bench_proc_usage(pid_t pid, double *cpu_s, double *hwm_kib);
/*
 * Untar OCI layers (gzip/zstd/plain tar files, lowest first) into root,
 * applying whiteouts and opaque directories as the layers go.
 */
int bench_unpack_layers(char *const layers[], size_t n, const char *root, const char *log);
void bench_b64(const char *in, char *out, size_t size);

#endif
