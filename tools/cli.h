/* SPDX-License-Identifier: Apache-2.0 */
#ifndef LAZYIMG_CLI_H
#define LAZYIMG_CLI_H

#define LAZYIMG_VERSION "0.1.0"

struct cli_cmd {
	const char *name;
	const char *summary;
	int (*fn)(int argc, char **argv);
};

int cmd_mount(int argc, char **argv);
int cmd_umount(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_stats(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_fdholder(int argc, char **argv);
int cmd_list(int argc, char **argv);
int cmd_usage(int argc, char **argv);
/* mount/umount/stats --server SOCK: done by a running `lazyimg serve`; -1 if no --server */
int cli_server_dispatch(const char *cmd, int argc, char **argv);
int cmd_snapshotter(int argc, char **argv);
int cmd_bench(int argc, char **argv);

/* Runtime files of a mount (pid, log), named after the mountpoint. */
int cli_runtime_path(const char *mountpoint, const char *suffix, char *buf, size_t size);
int cli_log_level(const char *s);
/* "123", "64K", "2M", "1G" -> bytes; -EINVAL otherwise */
int cli_parse_size(const char *s, uint64_t *out);

#endif
