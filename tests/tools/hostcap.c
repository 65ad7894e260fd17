/* SPDX-License-Identifier: Apache-2.0 */
/*
 * hostcap REF DIGEST CAP CLIENTS THREADS: CLIENTS registry clients (each
 * allowing 8 requests) with THREADS threads each read 4 KiB ranges of blob
 * DIGEST at once, under a process-wide per-host cap of CAP. Prints the peak
 * concurrency seen per host and checks every range against the whole blob.
 * Exit 0 only if all bytes match and the peak equals CAP (the cap was both
 * reached and respected).
 */
#include "lazyimg/reg.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define READS_PER_THREAD 4

struct worker {
	struct reg_client *c;
	const char *digest;
	const uint8_t *whole;
	size_t len;
	unsigned seed;
	int bad;
};

static void *run(void *arg)
{
	struct worker *w = arg;
	uint8_t buf[4096];

	for (int i = 0; i < READS_PER_THREAD; i++) {
		uint64_t off = (uint64_t)rand_r(&w->seed) % (w->len - sizeof(buf));

		if (reg_get_blob_range(w->c, w->digest, buf, sizeof(buf), off) ||
		    memcmp(buf, w->whole + off, sizeof(buf)))
			w->bad++;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	struct reg_opts o = { .insecure = true, .max_conns = 8 };
	struct reg_client *cl[16] = { 0 };
	struct worker ws[256];
	pthread_t th[256];
	struct reg_ref ref;
	void *whole = NULL;
	size_t len = 0;
	int cap, nc, nt, bad = 0, peak;

	if (argc != 6)
		return fprintf(stderr, "usage: hostcap REF DIGEST CAP CLIENTS THREADS\n"), 2;
	cap = atoi(argv[3]);
	nc = atoi(argv[4]);
	nt = atoi(argv[5]);
	if (nc < 1 || nc > 16 || nt < 1 || nc * nt > 256 || cap < 1)
		return fprintf(stderr, "hostcap: bad counts\n"), 2;
	reg_global_init();
	if (reg_ref_parse(argv[1], &ref))
		return fprintf(stderr, "hostcap: bad reference %s\n", argv[1]), 2;
	for (int i = 0; i < nc; i++)
		if (reg_client_new(&ref, &o, &cl[i]))
			return fprintf(stderr, "hostcap: client %d failed\n", i), 1;
	if (reg_get_blob(cl[0], argv[2], 64u << 20, &whole, &len) || len < 8192)
		return fprintf(stderr, "hostcap: cannot fetch the whole blob\n"), 1;
	reg_set_host_conns(cap);
	for (int i = 0; i < nc * nt; i++) {
		ws[i] = (struct worker){ .c = cl[i / nt], .digest = argv[2], .whole = whole, .len = len,
					 .seed = (unsigned)i * 7919u + 1 };
		pthread_create(&th[i], NULL, run, &ws[i]);
	}
	for (int i = 0; i < nc * nt; i++) {
		pthread_join(th[i], NULL);
		bad += ws[i].bad;
	}
	peak = reg_host_peak_conns(ref.host);
	printf("host %s: peak %d concurrent requests (cap %d, %d clients x %d threads), %d bad reads\n",
	       ref.host, peak, cap, nc, nt, bad);
	for (int i = 0; i < nc; i++)
		reg_client_free(cl[i]);
	free(whole);
	return bad == 0 && peak == cap ? 0 : 1;
}
