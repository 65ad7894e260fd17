/* SPDX-License-Identifier: Apache-2.0 */
/*
 * estargz_toc_parse.c - prints the parse time and peak RSS of an N-entry
 * eStargz TOC (default 100000). Bench programs link nothing but libc, so
 * this runs the module's own measurement: `test_estargz bench N`, which
 * builds the JSON in a child process, opens it with estargz_open and reports
 * the time and the RSS growth over the JSON buffer.
 *
 * usage: estargz_toc_parse [ENTRIES...]   ($BUILD, default "build", locates test_estargz)
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	const char *build = getenv("BUILD");
	const char *top = getenv("TOP");
	char prog[4096];
	int rc = 0;

	snprintf(prog, sizeof(prog), "%s/%s/tests/test_estargz", top ? top : ".", build ? build : "build");
	if (access(prog, X_OK)) {
		fprintf(stderr, "estargz_toc_parse: %s not built (make test-bins)\n", prog);
		return 1;
	}
	for (int i = 1; i < argc || (i == 1 && argc == 1); i++) {
		const char *n = argc > 1 ? argv[i] : "100000";
		pid_t pid = fork();
		int st;

		if (pid == 0) {
			execl(prog, prog, "bench", n, (char *)NULL);
			_exit(127);
		}
		if (pid < 0 || waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st))
			rc = 1;
	}
	return rc;
}
