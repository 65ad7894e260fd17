/* SPDX-License-Identifier: Apache-2.0 */
/*
 * randread FILE COUNT [BS] - COUNT random BS-byte preads (default 4096) over
 * FILE from 4 threads; prints "iops N" and "mbps N". Offsets come from a
 * fixed seed so runs are comparable.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct job {
	int fd;
	uint64_t size, count, bs, seed, bytes;
	int err;
};

static void *run(void *arg)
{
	struct job *j = arg;
	char *buf = malloc(j->bs);
	uint64_t x = j->seed;

	for (uint64_t i = 0; buf && i < j->count; i++) {
		uint64_t off;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		off = (x % (j->size / j->bs)) * j->bs;
		if (pread(j->fd, buf, j->bs, (off_t)off) < 0) {
			j->err = 1;
			break;
		}
		j->bytes += j->bs;
	}
	free(buf);
	return NULL;
}

int main(int argc, char **argv)
{
	struct job jobs[4];
	pthread_t th[4];
	struct timespec a, b;
	struct stat st;
	uint64_t count, bs, bytes = 0;
	double secs;
	int fd;

	if (argc < 3) {
		fprintf(stderr, "usage: randread FILE COUNT [BS]\n");
		return 2;
	}
	fd = open(argv[1], O_RDONLY);
	if (fd < 0 || fstat(fd, &st) < 0) {
		perror(argv[1]);
		return 1;
	}
	count = strtoull(argv[2], NULL, 0);
	bs = argc > 3 ? strtoull(argv[3], NULL, 0) : 4096;
	if (!bs || (uint64_t)st.st_size < bs) {
		fprintf(stderr, "randread: %s is smaller than one block\n", argv[1]);
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (int i = 0; i < 4; i++) {
		jobs[i] = (struct job){ fd, (uint64_t)st.st_size, count / 4, bs, 0x9E3779B97F4A7C15ull * (i + 1), 0, 0 };
		pthread_create(&th[i], NULL, run, &jobs[i]);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		if (jobs[i].err) {
			perror("pread");
			return 1;
		}
		bytes += jobs[i].bytes;
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	secs = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
	printf("iops %.0f\nmbps %.1f\n", (double)(bytes / bs) / secs, (double)bytes / 1048576.0 / secs);
	return 0;
}
