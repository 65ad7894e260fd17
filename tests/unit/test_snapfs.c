/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit test of the snapshotter-facing layer (snapfs.h), function by
 * function, against real FUSE mounts of a nydus image in a real registry on
 * 127.0.0.1 (started here through tests/integration/reglib.sh, stopped by
 * pid at the end): Mount idempotency and errors, MountPoint /
 * WaitUntilReady not-found and deadline, Umount of unknown ids, per-id
 * serialisation, CacheUsage digest rule and bytes equal to `du -B1` of the
 * blob's cache files, RemoveCache refused while mounted, Teardown of several
 * mounts, BootstrapFile / UpperPath, state restore without a holder, and a
 * restart with an fd holder during which an open file keeps working.
 * Exit 0 pass, 1 fail.
 */
#include "lazyimg/reg.h"
#include "lazyimg/snapfs.h"
#include "../../snapshotter/snapfs_int.h"
#include "../t.h"

#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char work[64];           /* mkdtemp */
static char host[128];          /* registry host:port */
static char ref[256];           /* the nydus image */
static const char *top, *lazyimg;

#define IMAGE_REF "containerd.io/snapshot/cri.image-ref"

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int sh(const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* the registry, the small image converted to nydus, and its layers unpacked (the oracle) */
static int setup_registry(void)
{
	char path[256];
	FILE *f;

	if (sh("cd '%s' && TOP='%s' LAZYIMG='%s' bash -c 'set -e; . tests/integration/reglib.sh; REG_DIRS=();"
	       " start_registry %s/reg; push_small_image %s/img;"
	       " \"$LAZYIMG\" convert -q --insecure \"$REGISTRY_HOST/small:v1\" \"$REGISTRY_HOST/small:v1-nydus\";"
	       " python3 tests/tools/oci_unpack.py %s/rootfs %s/img/small/l1.tar %s/img/small/l2.tar %s/img/small/l3.tar;"
	       " echo \"$REGISTRY_HOST\" > %s/host' > %s/setup.log 2>&1",
	       top, top, lazyimg, work, work, work, work, work, work, work, work)) {
		sh("tail -20 %s/setup.log >&2", work);
		return -1;
	}
	snprintf(path, sizeof(path), "%s/host", work);
	f = fopen(path, "r");
	if (!f || !fgets(host, sizeof(host), f))
		return -1;
	fclose(f);
	host[strcspn(host, "\n")] = 0;
	snprintf(ref, sizeof(ref), "%s/small:v1-nydus", host);
	return 0;
}

static void stop_registry(void)
{
	const char *peers = getenv("LAZYIMG_PEERS");

	if (peers)
		sh("bash '%s/registry-up.sh' --stop --dir %s/reg >/dev/null 2>&1", peers, work);
	else
		sh("bash '%s/../shared/peers/registry-up.sh' --stop --dir %s/reg >/dev/null 2>&1", top, work);
}

/* number of /proc/mounts entries at mnt */
static int mounted(const char *mnt)
{
	char line[8192], dev[4096], at[4096];
	FILE *f = fopen("/proc/mounts", "r");
	int n = 0;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%4095s %4095s", dev, at) == 2 && !strcmp(at, mnt))
			n++;
	fclose(f);
	return n;
}

static int files_equal(const char *a, const char *b)
{
	char cmd[2048];

	snprintf(cmd, sizeof(cmd), "cmp -s '%s' '%s'", a, b);
	return system(cmd) == 0;
}

static int count_dir(const char *dir, const char *suffix)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	if (!d)
		return -1;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.' && (!suffix || strstr(de->d_name, suffix)))
			n++;
	closedir(d);
	return n;
}

/* `du -B1 -c` of the given files (an independent measure of allocated bytes) */
static uint64_t du_bytes(const char *files)
{
	char cmd[4096], out[256] = "";
	FILE *p;
	unsigned long long v = 0;

	snprintf(cmd, sizeof(cmd), "du -B1 -c %s 2>/dev/null | tail -n 1", files);
	p = popen(cmd, "r");
	if (!p)
		return UINT64_MAX;
	if (!fgets(out, sizeof(out), p) || sscanf(out, "%llu", &v) != 1)
		v = UINT64_MAX;
	pclose(p);
	return v;
}

static struct snap_fs *open_fs(const char *name, const char *holder, int timeout_s)
{
	struct snap_fs_opts o = { 0 };
	struct snap_fs *fs = NULL;
	char root[256];
	int ret;

	snprintf(root, sizeof(root), "%s/%s", work, name);
	o.root = root;
	o.reg.insecure = true;
	o.reg.timeout_s = timeout_s;
	if (timeout_s)
		o.reg.retries = -1;
	o.prefetch = SNAP_PREFETCH_NONE;
	o.fd_holder = holder;
	ret = snap_fs_open(&o, &fs);
	if (ret)
		T_FAIL("snap_fs_open(%s): %s", root, strerror(-ret));
	return fs;
}

static int mount_ref(struct snap_fs *fs, const char *id, const char *r)
{
	struct snap_label l[2] = { { IMAGE_REF, r }, { "containerd.io/snapshot/nydus-bootstrap", "true" } };

	return snap_fs_mount(fs, id, l, 2);
}

/* ---- pure functions ---------------------------------------------------------- */

static void test_labels_and_paths(void)
{
	struct snap_label l[] = {
		{ "containerd.io/snapshot/nydus-bootstrap", "true" },
		{ "containerd.io/snapshot/nydus-blob", "false" },
		{ IMAGE_REF, "example.com/a:b" },
	};
	struct snap_label sg[] = { { "containerd.io/snapshot/stargz/toc.digest", "sha256:00" } };
	struct snap_fs *fs = open_fs("pure", NULL, 0);
	char buf[512], want[512], p[600];
	uint64_t b;

	T_ASSERT(snap_labels_nydus_meta(l, 3));
	T_ASSERT(!snap_labels_nydus_blob(l, 3));
	T_ASSERT(!snap_labels_stargz(l, 3));
	T_ASSERT(snap_labels_stargz(sg, 1));
	T_EQ_STR(snap_label_get(l, 3, IMAGE_REF), "example.com/a:b");
	T_ASSERT(!snap_label_get(l, 3, "nope"));
	T_ASSERT(snap_fs_id_valid("42"));
	T_ASSERT(snap_fs_id_valid("k8s.io_3-x"));
	T_ASSERT(!snap_fs_id_valid(""));
	T_ASSERT(!snap_fs_id_valid(".."));
	T_ASSERT(!snap_fs_id_valid("a/b"));
	T_ASSERT(!snap_fs_id_valid(NULL));
	if (!fs)
		return;

	/* UpperPath */
	T_EQ_INT(snap_fs_upper_path(fs, "7", buf, sizeof(buf)), 0);
	snprintf(want, sizeof(want), "%s/pure/snapshots/7/fs", work);
	T_EQ_STR(buf, want);
	T_EQ_INT(snap_fs_upper_path(fs, "../x", buf, sizeof(buf)), -EINVAL);

	/* BootstrapFile: none, legacy, then image/image.boot wins */
	T_EQ_INT(snap_fs_bootstrap_file(fs, "7", buf, sizeof(buf)), -ENOENT);
	sh("mkdir -p %s/image && echo x > %s/image.boot", want, want);
	T_EQ_INT(snap_fs_bootstrap_file(fs, "7", buf, sizeof(buf)), 0);
	snprintf(p, sizeof(p), "%s/image.boot", want);
	T_EQ_STR(buf, p);
	sh("echo y > %s/image/image.boot", want);
	T_EQ_INT(snap_fs_bootstrap_file(fs, "7", buf, sizeof(buf)), 0);
	snprintf(p, sizeof(p), "%s/image/image.boot", want);
	T_EQ_STR(buf, p);

	/* CacheUsage / RemoveCache: only sha256:<64 lowercase hex> */
	{
		static const char *const bad[] = {
			"", "sha256:", "sha256:abc", "md5:d41d8cd98f00b204e9800998ecf8427e",
			"sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
			"sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
			"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
			"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8550",
			"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85g",
			"sha256:../../../../etc/passwd",
		};

		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			if (snap_fs_cache_usage(fs, bad[i], &b) != -EINVAL)
				T_FAIL("CacheUsage accepted '%s'", bad[i]);
			if (snap_fs_remove_cache(fs, bad[i]) != -EINVAL)
				T_FAIL("RemoveCache accepted '%s'", bad[i]);
		}
		T_EQ_INT(snap_fs_cache_usage(fs, NULL, &b), -EINVAL);
		b = 1;
		T_EQ_INT(snap_fs_cache_usage(fs, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
					     &b), 0);
		T_EQ_U64(b, 0);
		T_EQ_INT(snap_fs_remove_cache(fs, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"), 0);
	}
	/* not found */
	T_EQ_INT(snap_fs_mountpoint(fs, "nope", buf, sizeof(buf)), -ENOENT);
	T_EQ_INT(snap_fs_wait_until_ready(fs, "nope", 10), -ENOENT);
	T_EQ_INT(snap_fs_umount(fs, "nope"), 0);
	T_EQ_INT(snap_fs_umount(fs, "../bad"), 0);
	{
		struct snap_fs_stats st;

		T_EQ_INT(snap_fs_stats(fs, "nope", &st), -ENOENT);
	}
	/* Mount needs an image reference and a valid id */
	{
		struct snap_label nl[] = { { "containerd.io/snapshot/nydus-bootstrap", "true" } };
		struct snap_label okl[] = { { IMAGE_REF, "example.com/a:b" } };

		T_EQ_INT(snap_fs_mount(fs, "m", nl, 1), -EINVAL);
		T_EQ_INT(snap_fs_mount(fs, "a/b", okl, 1), -EINVAL);
		T_EQ_INT(snap_fs_mount(fs, "", okl, 1), -EINVAL);
	}
	/* a second snap_fs on the same root is refused */
	{
		struct snap_fs_opts o = { .root = fs->root };
		struct snap_fs *fs2 = NULL;

		T_EQ_INT(snap_fs_open(&o, &fs2), -EBUSY);
	}
	snap_fs_close(fs);
}

/* ---- against the registry ------------------------------------------------------ */

/* the data blob in <root>/cache/blobs that uses the most space */
static int blob_hex(const char *root, char *hex, size_t n)
{
	char dir[4200], path[4400];
	DIR *d;
	struct dirent *de;
	long long best = -1;

	snprintf(dir, sizeof(dir), "%s/cache/blobs", root);
	d = opendir(dir);
	if (!d)
		return -1;
	while ((de = readdir(d))) {
		struct stat st;

		snprintf(path, sizeof(path), "%.4000s/%.255s", dir, de->d_name);
		if (strlen(de->d_name) == 64 && stat(path, &st) == 0 && (long long)st.st_blocks > best) {
			best = (long long)st.st_blocks;
			snprintf(hex, n, "%.64s", de->d_name);
		}
	}
	closedir(d);
	return best >= 0 ? 0 : -1;
}

static void test_mount_cycle(void)
{
	struct snap_fs *fs = open_fs("r1", NULL, 0);
	char mp[4096], want[512], a[8192], b[8192], hex[80], digest[100], files[8192];
	uint64_t bytes = 0, du;
	struct snap_fs_info *v;
	size_t n;
	int ret;

	if (!fs)
		return;
	snprintf(want, sizeof(want), "%s/r1/mnt/s1", work);
	ret = mount_ref(fs, "s1", ref);
	T_EQ_INT(ret, 0);
	if (ret)
		goto out;
	/* idempotent: same mount, one kernel mount */
	T_EQ_INT(mount_ref(fs, "s1", ref), 0);
	T_EQ_INT(mounted(want), 1);
	T_EQ_INT(snap_fs_list(fs, &v, &n), 0);
	T_EQ_INT(n, 1);
	free(v);
	T_EQ_INT(snap_fs_mountpoint(fs, "s1", mp, sizeof(mp)), 0);
	T_EQ_STR(mp, want);
	T_EQ_INT(snap_fs_wait_until_ready(fs, "s1", 1000), 0);
	/* real bytes through the mount */
	snprintf(a, sizeof(a), "%s/etc/hello.txt", mp);
	snprintf(b, sizeof(b), "%s/rootfs/etc/hello.txt", work);
	T_ASSERT(files_equal(a, b));
	snprintf(a, sizeof(a), "%s/blobs/random-1m.bin", mp);
	snprintf(b, sizeof(b), "%s/rootfs/blobs/random-1m.bin", work);
	T_ASSERT(files_equal(a, b));
	{
		struct snap_fs_stats st;

		T_EQ_INT(snap_fs_stats(fs, "s1", &st), 0);
		T_ASSERT(st.reads > 0 && st.read_bytes >= 1048576);
		T_ASSERT(st.src.backend_bytes > 0);
	}
	/* CacheUsage == du -B1 of the blob's cache files */
	T_EQ_INT(blob_hex(fs->root, hex, sizeof(hex)), 0);
	snprintf(digest, sizeof(digest), "sha256:%s", hex);
	T_EQ_INT(snap_fs_cache_usage(fs, digest, &bytes), 0);
	snprintf(files, sizeof(files), "%.2000s/cache/blobs/%s %.2000s/cache/blobs/%s.state", fs->root, hex, fs->root, hex);
	du = du_bytes(files);
	T_EQ_U64(bytes, du);
	T_ASSERT(bytes >= 1048576); /* the 1 MiB file is in it */
	printf("CacheUsage(%.19s...) = %llu bytes, du -B1 = %llu\n", digest, (unsigned long long)bytes,
	       (unsigned long long)du);
	/* the bootstrap layer's cache file counts for its own digest */
	{
		char bd[4200], bhex[80] = "";
		DIR *d;
		struct dirent *de;

		snprintf(bd, sizeof(bd), "%s/cache/bootstraps", fs->root);
		d = opendir(bd);
		while (d && (de = readdir(d)))
			if (strlen(de->d_name) == 69 && strstr(de->d_name, ".boot"))
				snprintf(bhex, sizeof(bhex), "%.64s", de->d_name);
		if (d)
			closedir(d);
		T_ASSERT(bhex[0]);
		snprintf(digest, sizeof(digest), "sha256:%s", bhex);
		snprintf(files, sizeof(files), "%s/%s.boot", bd, bhex);
		T_EQ_INT(snap_fs_cache_usage(fs, digest, &bytes), 0);
		T_EQ_U64(bytes, du_bytes(files));
		T_ASSERT(bytes > 0);
		snprintf(digest, sizeof(digest), "sha256:%s", hex);
	}
	/* RemoveCache: refused while mounted, done after Umount */
	T_EQ_INT(snap_fs_remove_cache(fs, digest), -EBUSY);
	T_EQ_INT(snap_fs_cache_usage(fs, digest, &bytes), 0);
	T_ASSERT(bytes > 0);
	T_EQ_INT(snap_fs_umount(fs, "s1"), 0);
	T_EQ_INT(mounted(want), 0);
	T_EQ_INT(snap_fs_mountpoint(fs, "s1", mp, sizeof(mp)), -ENOENT);
	T_EQ_INT(snap_fs_umount(fs, "s1"), 0); /* again: unknown now, still 0 */
	T_EQ_INT(snap_fs_remove_cache(fs, digest), 0);
	T_EQ_INT(snap_fs_cache_usage(fs, digest, &bytes), 0);
	T_EQ_U64(bytes, 0);
	snprintf(a, sizeof(a), "%s/cache/blobs/%s", fs->root, hex);
	T_ASSERT(access(a, F_OK) != 0);
	/* a mount after removal fetches again and reads the same bytes */
	T_EQ_INT(mount_ref(fs, "s2", ref), 0);
	snprintf(a, sizeof(a), "%s/r1/mnt/s2/blobs/random-1m.bin", work);
	snprintf(b, sizeof(b), "%s/rootfs/blobs/random-1m.bin", work);
	T_ASSERT(files_equal(a, b));

	/* Teardown with several mounts (sharing the one blob cache) */
	T_EQ_INT(mount_ref(fs, "t1", ref), 0);
	T_EQ_INT(mount_ref(fs, "t2", ref), 0);
	snprintf(a, sizeof(a), "%s/r1/mnt/t2/etc/hello.txt", work);
	snprintf(b, sizeof(b), "%s/rootfs/etc/hello.txt", work);
	T_ASSERT(files_equal(a, b));
	snprintf(a, sizeof(a), "%s/state", fs->root);
	T_EQ_INT(count_dir(a, ".json"), 3);
	T_EQ_INT(snap_fs_teardown(fs), 0);
	T_EQ_INT(snap_fs_list(fs, &v, &n), 0);
	T_EQ_INT(n, 0);
	free(v);
	T_EQ_INT(count_dir(a, NULL), 0);
	for (int i = 0; i < 3; i++) {
		static const char *const ids[] = { "s2", "t1", "t2" };

		snprintf(b, sizeof(b), "%.200s/r1/mnt/%s", work, ids[i]);
		T_EQ_INT(mounted(b), 0);
	}
	/* nothing comes back: Teardown forgot the mounts */
	snap_fs_close(fs);
	fs = open_fs("r1", NULL, 0);
	if (!fs)
		return;
	T_EQ_INT(snap_fs_list(fs, &v, &n), 0);
	T_EQ_INT(n, 0);
	free(v);
out:
	snap_fs_close(fs);
}

/* Umount while a file is open: the mount goes at once, the open file reads on, and the
 * blob's cache can be removed only once that file is closed. */
static void test_umount_busy(void)
{
	struct snap_fs *fs = open_fs("r6", NULL, 0);
	char mnt[512], a[600], b[600], hex[80], digest[100], buf[65536], rb[65536];
	int fd, ref_fd, ret = -1;
	ssize_t n, m;
	bool same = true;

	if (!fs)
		return;
	snprintf(mnt, sizeof(mnt), "%.200s/r6/mnt/busy", work);
	T_EQ_INT(mount_ref(fs, "busy", ref), 0);
	snprintf(a, sizeof(a), "%s/blobs/random-4m.bin", mnt);
	snprintf(b, sizeof(b), "%.200s/rootfs/blobs/random-4m.bin", work);
	fd = open(a, O_RDONLY);
	ref_fd = open(b, O_RDONLY);
	T_ASSERT(fd >= 0 && ref_fd >= 0);
	T_EQ_INT(read(fd, buf, 4096), 4096);
	T_EQ_INT(read(ref_fd, rb, 4096), 4096);
	T_EQ_INT(blob_hex(fs->root, hex, sizeof(hex)), 0);
	snprintf(digest, sizeof(digest), "sha256:%s", hex);
	T_EQ_INT(snap_fs_umount(fs, "busy"), 0);
	T_EQ_INT(mounted(mnt), 0);
	T_EQ_INT(snap_fs_mountpoint(fs, "busy", a, sizeof(a)), -ENOENT);
	/* the open file is still served (the detached session drains) */
	for (;;) {
		n = read(fd, buf, sizeof(buf));
		m = read(ref_fd, rb, sizeof(rb));
		if (n != m || (n > 0 && memcmp(buf, rb, (size_t)n))) {
			same = false;
			break;
		}
		if (n <= 0)
			break;
	}
	T_ASSERT(same);
	T_EQ_INT(snap_fs_remove_cache(fs, digest), -EBUSY);
	close(fd);
	close(ref_fd);
	/* the last close ends the session; RemoveCache then succeeds */
	for (int i = 0; i < 100 && (ret = snap_fs_remove_cache(fs, digest)) == -EBUSY; i++)
		usleep(20000);
	T_EQ_INT(ret, 0);
	snap_fs_close(fs);
}

/* Without a holder, Close unmounts and the next Open mounts again from the state. */
static void test_restore_without_holder(void)
{
	struct snap_fs *fs = open_fs("r2", NULL, 0);
	char mnt[512], a[600], b[600];
	struct snap_fs_info in;

	if (!fs)
		return;
	snprintf(mnt, sizeof(mnt), "%.200s/r2/mnt/keep", work);
	T_EQ_INT(mount_ref(fs, "keep", ref), 0);
	snap_fs_close(fs);
	T_EQ_INT(mounted(mnt), 0);
	fs = open_fs("r2", NULL, 0);
	if (!fs)
		return;
	T_EQ_INT(snap_fs_wait_until_ready(fs, "keep", 10000), 0);
	T_EQ_INT(snap_fs_get(fs, "keep", &in), 0);
	T_EQ_STR(in.state, "ready");
	T_ASSERT(!in.adopted);
	T_EQ_INT(mounted(mnt), 1);
	snprintf(a, sizeof(a), "%s/blobs/random-1m.bin", mnt);
	snprintf(b, sizeof(b), "%s/rootfs/blobs/random-1m.bin", work);
	T_ASSERT(files_equal(a, b));
	T_EQ_INT(snap_fs_teardown(fs), 0);
	T_EQ_INT(mounted(mnt), 0);
	snap_fs_close(fs);
}

/* With a holder, Close leaves the kernel mount; an open file keeps working after the next Open. */
static void test_restart_with_holder(void)
{
	char sock[256], mnt[512], a[600], b[600], buf[65536];
	struct snap_fs *fs;
	struct snap_fs_info in;
	pid_t hp;
	int fd, ref_fd, st;
	ssize_t n, m;
	bool same = true;

	snprintf(sock, sizeof(sock), "%s/holder.sock", work);
	hp = fork();
	if (hp == 0) {
		/* if this test dies (a failed sanitizer check aborts it), so does its holder */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execl(lazyimg, "lazyimg", "fdholder", sock, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 200 && snap_fdholder_ping(sock); i++)
		usleep(10000);
	T_EQ_INT(snap_fdholder_ping(sock), 0);
	fs = open_fs("r3", sock, 0);
	if (!fs)
		goto out;
	snprintf(mnt, sizeof(mnt), "%s/r3/mnt/h1", work);
	T_EQ_INT(mount_ref(fs, "h1", ref), 0);
	snprintf(a, sizeof(a), "%s/blobs/random-4m.bin", mnt);
	snprintf(b, sizeof(b), "%s/rootfs/blobs/random-4m.bin", work);
	fd = open(a, O_RDONLY);
	ref_fd = open(b, O_RDONLY);
	T_ASSERT(fd >= 0 && ref_fd >= 0);
	n = read(fd, buf, 4096);
	T_EQ_INT(n, 4096);
	snap_fs_close(fs);
	/* the server is gone, the mount is not */
	T_EQ_INT(mounted(mnt), 1);
	fs = open_fs("r3", sock, 0);
	if (!fs)
		goto out;
	T_EQ_INT(snap_fs_wait_until_ready(fs, "h1", 10000), 0);
	T_EQ_INT(snap_fs_get(fs, "h1", &in), 0);
	T_EQ_STR(in.state, "ready");
	T_ASSERT(in.adopted);
	T_EQ_INT(mounted(mnt), 1);
	/* the file opened before the restart reads on, byte for byte */
	lseek(ref_fd, 4096, SEEK_SET);
	for (;;) {
		char rb[65536];

		n = read(fd, buf, sizeof(buf));
		m = read(ref_fd, rb, sizeof(rb));
		if (n != m || (n > 0 && memcmp(buf, rb, (size_t)n))) {
			same = false;
			break;
		}
		if (n <= 0)
			break;
	}
	T_ASSERT(same);
	T_EQ_INT(n, 0);
	close(fd);
	close(ref_fd);
	/* and new lookups work through the adopted session */
	snprintf(a, sizeof(a), "%s/etc/hello.txt", mnt);
	snprintf(b, sizeof(b), "%s/rootfs/etc/hello.txt", work);
	T_ASSERT(files_equal(a, b));
	T_EQ_INT(snap_fs_teardown(fs), 0);
	T_EQ_INT(mounted(mnt), 0);
	snap_fs_close(fs);
out:
	/* the holder exits by itself once it holds nothing and nobody is connected */
	for (int i = 0; i < 100 && waitpid(hp, &st, WNOHANG) == 0; i++)
		usleep(100000);
	if (waitpid(hp, &st, WNOHANG) == 0) {
		T_FAIL("fd holder %d did not exit after teardown", (int)hp);
		kill(hp, SIGKILL);
		waitpid(hp, &st, 0);
	}
}

struct conc_arg {
	struct snap_fs *fs;
	int op;          /* 0 mount, 1 umount */
	int ret;
};

static void *conc_main(void *p)
{
	struct conc_arg *a = p;

	a->ret = a->op ? snap_fs_umount(a->fs, "same") : mount_ref(a->fs, "same", ref);
	return NULL;
}

/* Many threads mount (and unmount) one id at once: serialised, never two kernel mounts,
 * the persisted state always agrees with the outcome. */
static void test_concurrent_same_id(void)
{
	struct snap_fs *fs = open_fs("r5", NULL, 0);
	struct conc_arg a[8];
	pthread_t th[8];
	char mnt[512], st[512];
	struct snap_fs_info in;

	if (!fs)
		return;
	snprintf(mnt, sizeof(mnt), "%.200s/r5/mnt/same", work);
	snprintf(st, sizeof(st), "%.200s/r5/state/same.json", work);
	for (int i = 0; i < 8; i++) {
		a[i] = (struct conc_arg){ fs, 0, -1 };
		pthread_create(&th[i], NULL, conc_main, &a[i]);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(th[i], NULL);
		T_EQ_INT(a[i].ret, 0);
	}
	T_EQ_INT(mounted(mnt), 1);
	T_EQ_INT(access(st, F_OK), 0);
	/* mounts and umounts interleaved: whatever the order, state and kernel agree */
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < 8; i++) {
			a[i] = (struct conc_arg){ fs, i % 2, -1 };
			pthread_create(&th[i], NULL, conc_main, &a[i]);
		}
		for (int i = 0; i < 8; i++) {
			pthread_join(th[i], NULL);
			T_EQ_INT(a[i].ret, 0);
		}
		if (snap_fs_get(fs, "same", &in) == 0) {
			T_EQ_STR(in.state, "ready");
			T_EQ_INT(mounted(mnt), 1);
			T_EQ_INT(access(st, F_OK), 0);
		} else {
			T_EQ_INT(mounted(mnt), 0);
			T_ASSERT(access(st, F_OK) != 0);
		}
	}
	T_EQ_INT(snap_fs_teardown(fs), 0);
	T_EQ_INT(mounted(mnt), 0);
	snap_fs_close(fs);
}

struct slow_arg {
	struct snap_fs *fs;
	char ref[128];
	int ret;
};

static void *slow_mount(void *p)
{
	struct slow_arg *a = p;
	struct snap_label l[] = { { IMAGE_REF, a->ref } };

	a->ret = snap_fs_mount(a->fs, "slow", l, 1);
	return NULL;
}

/* WaitUntilReady deadline and per-id serialisation, with a registry that never answers */
static void test_deadline_and_busy(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sin);
	struct slow_arg a = { 0 };
	struct snap_label l[] = { { IMAGE_REF, NULL } };
	char mp[512];
	pthread_t th;
	double t0;
	int lfd, ret;

	a.fs = open_fs("r4", NULL, 3);
	if (!a.fs)
		return;
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	T_ASSERT(lfd >= 0 && bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) == 0 && listen(lfd, 8) == 0 &&
		 getsockname(lfd, (struct sockaddr *)&sin, &sl) == 0);
	snprintf(a.ref, sizeof(a.ref), "127.0.0.1:%d/silent:v1", ntohs(sin.sin_port));
	l[0].value = a.ref;
	pthread_create(&th, NULL, slow_mount, &a);
	usleep(200000);
	t0 = now_s();
	ret = snap_fs_wait_until_ready(a.fs, "slow", 300);
	T_EQ_INT(ret, -ETIMEDOUT);
	T_ASSERT(now_s() - t0 >= 0.29 && now_s() - t0 < 2.0);
	T_EQ_INT(snap_fs_mountpoint(a.fs, "slow", mp, sizeof(mp)), -ENOENT);
	/* the control API's view: the id is busy */
	T_EQ_INT(snapfs_mount(a.fs, "slow", l, 1, true), -EBUSY);
	T_EQ_INT(snapfs_umount(a.fs, "slow", true), -EBUSY);
	close(lfd); /* the registry goes away: the mount fails */
	pthread_join(th, NULL);
	T_ASSERT(a.ret < 0);
	T_EQ_INT(snap_fs_wait_until_ready(a.fs, "slow", 100), -ENOENT);
	snap_fs_close(a.fs);
}

int main(void)
{
	if (!mkdtemp(strcpy(work, "/tmp/lazyimg-snapfs.XXXXXX"))) {
		perror("mkdtemp");
		return 1;
	}
	top = getenv("TOP") ? getenv("TOP") : ".";
	lazyimg = getenv("LAZYIMG") ? getenv("LAZYIMG") : "build/bin/lazyimg";
	if (access(lazyimg, X_OK) != 0 && getenv("BUILD")) {
		/* tests/run.sh with an absolute BUILD makes LAZYIMG "$TOP//abs/..." */
		static char alt[4096];

		snprintf(alt, sizeof(alt), "%s/bin/lazyimg", getenv("BUILD"));
		if (access(alt, X_OK) == 0)
			lazyimg = alt;
	}
	lz_log_level = getenv("LAZYIMG_LOG") ? atoi(getenv("LAZYIMG_LOG")) : 0;
	reg_global_init();
	test_labels_and_paths();
	if (setup_registry()) {
		T_FAIL("cannot start the registry and push the test image (log %s/setup.log)", work);
		stop_registry();
		T_DONE();
	}
	printf("registry %s, image %s\n", host, ref);
	test_mount_cycle();
	test_restore_without_holder();
	test_concurrent_same_id();
	test_umount_busy();
	test_restart_with_holder();
	test_deadline_and_busy();
	stop_registry();
	if (!t_failures)
		sh("rm -rf %s", work);
	T_DONE();
}
