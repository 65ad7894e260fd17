/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cred.c - docker credential helpers: `docker-credential-NAME get` reads the
 * registry's address on stdin and prints {"ServerURL", "Username", "Secret"}
 * on stdout (exit 0), or a message (exit non-zero). What a config.json names
 * in "credHelpers" (per registry) or "credsStore" (all registries).
 */
#define LZ_MOD "registry"
#include "lazyimg/reg.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* a helper's output is a small JSON object; anything larger is not one */
#define CRED_OUT_MAX 65536
#define CRED_TIMEOUT_MS 10000

int reg_parse_cred_helper(const char *buf, size_t len, char *user, size_t ucap, char *secret, size_t scap)
{
	struct json_tokener *tok;
	json_object *root, *u, *s;
	int ret = -EINVAL;

	if (len > CRED_OUT_MAX || ucap == 0 || scap == 0)
		return -EINVAL;
	tok = json_tokener_new();
	if (!tok)
		return -ENOMEM;
	root = json_tokener_parse_ex(tok, buf, (int)len);
	if (root && json_object_is_type(root, json_type_object) &&
	    json_object_object_get_ex(root, "Username", &u) && json_object_is_type(u, json_type_string) &&
	    json_object_object_get_ex(root, "Secret", &s) && json_object_is_type(s, json_type_string)) {
		const char *us = json_object_get_string(u), *ss = json_object_get_string(s);
		size_t ul = (size_t)json_object_get_string_len(u), sl = (size_t)json_object_get_string_len(s);

		/* NUL or ':' inside a user name cannot go into user:secret */
		if (ul < ucap && sl < scap && strlen(us) == ul && strlen(ss) == sl && !strchr(us, ':') && sl) {
			memcpy(user, us, ul + 1);
			memcpy(secret, ss, sl + 1);
			ret = 0;
		}
	}
	json_object_put(root);
	json_tokener_free(tok);
	return ret;
}

bool reg_cred_helper_name_ok(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
		      c == '_' || c == '.'))
			return false;
	}
	return true;
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Run the helper: its stdout (NUL-terminated) in out; 0, or -ENOENT (no such
 * program), -ETIMEDOUT, -EIO (exit status non-zero: out holds its message). */
static int run_helper(const char *prog, const char *server, char *out, size_t cap, size_t *len)
{
	int in_p[2] = { -1, -1 }, out_p[2] = { -1, -1 }, st = 0, ret = 0;
	char *argv[] = { (char *)prog, (char *)"get", NULL };
	posix_spawn_file_actions_t fa;
	long long deadline = now_ms() + CRED_TIMEOUT_MS;
	size_t n = 0;
	pid_t pid;

	*len = 0;
	out[0] = 0;
	if (pipe2(in_p, O_CLOEXEC) < 0 || pipe2(out_p, O_CLOEXEC) < 0) {
		ret = -errno;
		goto out;
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, in_p[0], 0);
	posix_spawn_file_actions_adddup2(&fa, out_p[1], 1);
	posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	ret = -posix_spawnp(&pid, prog, &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(in_p[0]);
	close(out_p[1]);
	in_p[0] = out_p[1] = -1;
	if (ret)
		goto out;
	/*
	 * A helper that never reads its stdin must cost us EPIPE, not a SIGPIPE.
	 * Other threads run: block the signal in this thread only, and take a
	 * SIGPIPE this write raised before unblocking it.
	 */
	{
		sigset_t pipe_set, old;
		ssize_t w;

		sigemptyset(&pipe_set);
		sigaddset(&pipe_set, SIGPIPE);
		pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
		w = write(in_p[1], server, strlen(server));
		if (w < 0 && errno == EPIPE) {
			struct timespec zero = { 0, 0 };

			while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
				;
		}
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		/* a failed write: its answer (or exit status) still says what went wrong */
	}
	close(in_p[1]);
	in_p[1] = -1;
	for (;;) {
		struct pollfd p = { out_p[0], POLLIN, 0 };
		long long left = deadline - now_ms();
		ssize_t r;

		if (left <= 0) {
			ret = -ETIMEDOUT;
			kill(pid, SIGKILL);
			break;
		}
		if (poll(&p, 1, (int)left) < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			kill(pid, SIGKILL);
			break;
		}
		if (!p.revents)
			continue;
		r = read(out_p[0], out + n, cap - 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
		if (n == cap - 1) {
			ret = -E2BIG;
			kill(pid, SIGKILL);
			break;
		}
	}
	out[n] = 0;
	*len = n;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (!ret && !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
		ret = WIFEXITED(st) && WEXITSTATUS(st) == 127 ? -ENOENT : -EIO;
out:
	for (int i = 0; i < 2; i++) {
		if (in_p[i] >= 0)
			close(in_p[i]);
		if (out_p[i] >= 0)
			close(out_p[i]);
	}
	return ret;
}

int reg_cred_helper_get(const char *name, const char *server, char *user, size_t ucap, char *secret,
			size_t scap)
{
	char prog[96], *out;
	size_t len;
	int ret;

	if (!reg_cred_helper_name_ok(name)) {
		lz_err("credential helper name '%s' is not valid", name);
		return -EINVAL;
	}
	snprintf(prog, sizeof(prog), "docker-credential-%s", name);
	out = malloc(CRED_OUT_MAX + 1);
	if (!out)
		return -ENOMEM;
	ret = run_helper(prog, server, out, CRED_OUT_MAX + 1, &len);
	if (ret == -ENOENT) {
		lz_err("credential helper %s for %s: not found on PATH", prog, server);
	} else if (ret == -EIO) {
		/* helpers print their error on stdout ("credentials not found in native keychain") */
		out[strcspn(out, "\r\n")] = 0;
		lz_err("credential helper %s for %s failed: %.200s", prog, server, out[0] ? out : "(no message)");
	} else if (ret) {
		lz_err("credential helper %s for %s: %s", prog, server,
		       ret == -ETIMEDOUT ? "no answer within 10 s" : ret == -E2BIG ? "answer too large" : strerror(-ret));
	} else if ((ret = reg_parse_cred_helper(out, len, user, ucap, secret, scap)) != 0) {
		lz_err("credential helper %s for %s: its answer is not {\"Username\", \"Secret\"} JSON", prog, server);
	} else if (!strcmp(user, "<token>")) {
		lz_err("credential helper %s for %s returned an identity token, which lazyimg does not use: "
		       "give a user name and password instead", prog, server);
		explicit_bzero(secret, scap);
		ret = -EOPNOTSUPP;
	}
	explicit_bzero(out, CRED_OUT_MAX + 1);
	free(out);
	return ret;
}
