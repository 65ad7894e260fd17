/* SPDX-License-Identifier: Apache-2.0 */
/*
 * replay.c - main() for running a fuzz target without libFuzzer: feeds every
 * file named on the command line, and every file under every directory named
 * (recursively, in sorted order), to LLVMFuzzerTestOneInput once. A property
 * violation aborts; otherwise prints the count and exits 0. An argument that
 * does not exist is an error (exit 1), so a mistyped corpus path cannot pass.
 */
#include "fuzz.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define REPLAY_MAX_INPUT (64ull << 20)  /* bigger files are skipped, not truncated */

static unsigned long n_run, n_skipped;

static int read_all(const char *path, uint8_t **out, size_t *len)
{
	struct stat st;
	uint8_t *buf;
	size_t done = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || st.st_size < 0) {
		close(fd);
		return -EIO;
	}
	if ((uint64_t)st.st_size > REPLAY_MAX_INPUT) {
		close(fd);
		return -EFBIG;
	}
	/* an exact-size heap buffer, so ASan sees any read past the input */
	buf = malloc(st.st_size ? (size_t)st.st_size : 1);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	while (done < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + done, (size_t)st.st_size - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		done += (size_t)n;
	}
	close(fd);
	*out = buf;
	*len = done;
	return 0;
}

static int run_file(const char *path)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	int ret = read_all(path, &buf, &len);

	if (ret == -EFBIG) {
		fprintf(stderr, "replay: skipping %s: larger than %llu bytes\n", path,
			(unsigned long long)REPLAY_MAX_INPUT);
		n_skipped++;
		return 0;
	}
	if (ret) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(-ret));
		return ret;
	}
	LLVMFuzzerTestOneInput(buf, len);
	free(buf);
	n_run++;
	return 0;
}

static int name_cmp(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

static int run_path(const char *path, int depth)
{
	struct dirent **ents;
	struct stat st;
	int n, ret = 0;

	if (stat(path, &st) < 0) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -errno;
	}
	if (!S_ISDIR(st.st_mode))
		return S_ISREG(st.st_mode) ? run_file(path) : 0;
	if (depth > 32) {
		fprintf(stderr, "replay: %s: directories nested too deep\n", path);
		return -ELOOP;
	}
	n = scandir(path, &ents, NULL, name_cmp);
	if (n < 0) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -errno;
	}
	for (int i = 0; i < n; i++) {
		const char *d = ents[i]->d_name;
		size_t len = strlen(path) + 1 + strlen(d) + 1;
		char *child;

		if (!ret && strcmp(d, ".") && strcmp(d, "..")) {
			child = malloc(len);
			if (!child) {
				ret = -ENOMEM;
			} else {
				snprintf(child, len, "%s/%s", path, d);
				ret = run_path(child, depth + 1);
				free(child);
			}
		}
		free(ents[i]);
	}
	free(ents);
	return ret;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
		return 2;
	}
	for (int i = 1; i < argc; i++)
		if (run_path(argv[i], 0))
			return 1;
	printf("replayed %lu inputs", n_run);
	if (n_skipped)
		printf(", skipped %lu too large", n_skipped);
	printf("\n");
	return 0;
}
