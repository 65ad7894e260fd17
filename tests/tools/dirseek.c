/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dirseek DIR BUFSIZE - list a directory with raw getdents64 calls using a
 * small buffer (so one listing takes many calls and many FUSE readdir
 * requests resume at a server-chosen offset), then check that the offsets
 * are stable:
 *   1. lseek(fd, 0) and list again: same entries, same d_off values;
 *   2. for every entry, lseek(fd, its d_off) and list: exactly the entries
 *      after it, in the same order;
 *   3. the names are unique and include "." and "..".
 * Prints "d_off<TAB>d_ino<TAB>d_type<TAB>name" per entry of the first pass.
 * Exit 0 when consistent, 1 otherwise (with what differed on stderr).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

struct ent {
	uint64_t ino;
	int64_t off;
	unsigned char type;
	char name[256];
};

struct list {
	struct ent *e;
	size_t n, cap;
};

/* the kernel's struct linux_dirent64 */
struct raw_dirent {
	uint64_t d_ino;
	int64_t d_off;
	unsigned short d_reclen;
	unsigned char d_type;
	char d_name[];
};

static int list_read(int fd, size_t bufsize, struct list *l, unsigned *calls)
{
	char *buf = malloc(bufsize);

	if (!buf)
		return -ENOMEM;
	l->n = 0;
	for (;;) {
		long n = syscall(SYS_getdents64, fd, buf, bufsize);

		if (n < 0) {
			int e = errno;

			free(buf);
			return -e;
		}
		if (n == 0)
			break;
		if (calls)
			(*calls)++;
		for (long p = 0; p < n;) {
			struct raw_dirent *d = (struct raw_dirent *)(buf + p);
			struct ent *e;

			if (l->n == l->cap) {
				size_t nc = l->cap ? 2 * l->cap : 64;
				struct ent *ne = realloc(l->e, nc * sizeof(*ne));

				if (!ne) {
					free(buf);
					return -ENOMEM;
				}
				l->e = ne;
				l->cap = nc;
			}
			e = &l->e[l->n++];
			e->ino = d->d_ino;
			e->off = d->d_off;
			e->type = d->d_type;
			snprintf(e->name, sizeof(e->name), "%s", d->d_name);
			p += d->d_reclen;
		}
	}
	free(buf);
	return 0;
}

static int same(const struct ent *a, const struct ent *b)
{
	return a->ino == b->ino && a->off == b->off && a->type == b->type && !strcmp(a->name, b->name);
}

int main(int argc, char **argv)
{
	struct list first = { 0 }, again = { 0 }, tail = { 0 };
	unsigned calls = 0;
	size_t bufsize;
	int fd, ret, bad = 0;

	if (argc != 3) {
		fprintf(stderr, "usage: dirseek DIR BUFSIZE\n");
		return 2;
	}
	bufsize = (size_t)strtoul(argv[2], NULL, 0);
	fd = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "dirseek: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	ret = list_read(fd, bufsize, &first, &calls);
	if (ret) {
		fprintf(stderr, "dirseek: %s: getdents64: %s\n", argv[1], strerror(-ret));
		return 1;
	}
	for (size_t i = 0; i < first.n; i++)
		printf("%" PRId64 "\t%" PRIu64 "\t%u\t%s\n", first.e[i].off, first.e[i].ino,
		       first.e[i].type, first.e[i].name);

	/* 1. from the start again */
	if (lseek(fd, 0, SEEK_SET) != 0 || (ret = list_read(fd, bufsize, &again, NULL))) {
		fprintf(stderr, "dirseek: %s: rewind and reread failed\n", argv[1]);
		return 1;
	}
	if (again.n != first.n) {
		fprintf(stderr, "dirseek: %s: %zu entries, then %zu after rewinding\n", argv[1], first.n,
			again.n);
		bad++;
	}
	for (size_t i = 0; i < first.n && i < again.n; i++)
		if (!same(&first.e[i], &again.e[i])) {
			fprintf(stderr, "dirseek: %s: entry %zu: %s@%" PRId64 ", then %s@%" PRId64 "\n",
				argv[1], i, first.e[i].name, first.e[i].off, again.e[i].name, again.e[i].off);
			bad++;
		}

	/* 2. resume after every entry */
	for (size_t i = 0; i < first.n; i++) {
		if (lseek(fd, first.e[i].off, SEEK_SET) != first.e[i].off) {
			fprintf(stderr, "dirseek: %s: lseek to %" PRId64 ": %s\n", argv[1], first.e[i].off,
				strerror(errno));
			bad++;
			continue;
		}
		ret = list_read(fd, bufsize, &tail, NULL);
		if (ret) {
			fprintf(stderr, "dirseek: %s: reading from %" PRId64 ": %s\n", argv[1],
				first.e[i].off, strerror(-ret));
			bad++;
			continue;
		}
		if (tail.n != first.n - i - 1) {
			fprintf(stderr, "dirseek: %s: resuming after %s (offset %" PRId64 ") gave %zu entries, want %zu\n",
				argv[1], first.e[i].name, first.e[i].off, tail.n, first.n - i - 1);
			bad++;
			continue;
		}
		for (size_t j = 0; j < tail.n; j++)
			if (!same(&tail.e[j], &first.e[i + 1 + j])) {
				fprintf(stderr, "dirseek: %s: resuming after %s: entry %zu is %s, want %s\n",
					argv[1], first.e[i].name, j, tail.e[j].name, first.e[i + 1 + j].name);
				bad++;
				break;
			}
	}

	/* 3. names */
	{
		int dot = 0, dotdot = 0;

		for (size_t i = 0; i < first.n; i++) {
			dot += !strcmp(first.e[i].name, ".");
			dotdot += !strcmp(first.e[i].name, "..");
			for (size_t j = i + 1; j < first.n; j++)
				if (!strcmp(first.e[i].name, first.e[j].name)) {
					fprintf(stderr, "dirseek: %s: name %s listed twice\n", argv[1],
						first.e[i].name);
					bad++;
				}
		}
		if (dot != 1 || dotdot != 1) {
			fprintf(stderr, "dirseek: %s: %d \".\" and %d \"..\" entries\n", argv[1], dot, dotdot);
			bad++;
		}
	}
	fprintf(stderr, "dirseek: %s: %zu entries in %u getdents64 calls of %zu bytes, %zu resume points checked\n",
		argv[1], first.n, calls, bufsize, first.n);
	free(first.e);
	free(again.e);
	free(tail.e);
	close(fd);
	return bad ? 1 : 0;
}
