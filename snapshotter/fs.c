/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fs.c - struct snap_fs: nydus-snapshotter's Filesystem API over in-process
 * FUSE sessions. Every mount is a snap_source (registry + shared blob
 * cache) served by its own imgfs session on <root>/mnt/<id>, whose loop
 * runs in a thread of this process.
 */
#define LZ_MOD "snapfs"
#include "lazyimg/bcache.h"
#include "lazyimg/reg.h"
#include "snapfs_int.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define L_IMAGE_REF "containerd.io/snapshot/cri.image-ref"
#define L_LAYER_DIGEST "containerd.io/snapshot/cri.layer-digest"
#define L_STARGZ_REF "containerd.io/snapshot/remote/stargz.reference"
#define L_STARGZ_DIGEST "containerd.io/snapshot/remote/stargz.digest"
#define L_TOC_DIGEST "containerd.io/snapshot/stargz/toc.digest"
#define L_STARGZ "containerd.io/snapshot/stargz"
#define L_NYDUS_META "containerd.io/snapshot/nydus-bootstrap"
#define L_NYDUS_BLOB "containerd.io/snapshot/nydus-blob"

/* how long Umount waits for a detached session to drain before leaving it to finish alone */
#define SNAP_UMOUNT_WAIT_MS 2000
/*
 * A listed mount that failed (a restore while the registry was unreachable,
 * say) is mounted again in the background: after 1 s, then doubling up to a
 * minute. Its readers, held across a restart, wait for it; nobody has to
 * call Mount for them.
 */
#define SNAP_RETRY_MIN_MS 1000u
#define SNAP_RETRY_MAX_MS 60000u

/* ---- labels ---------------------------------------------------------------- */

const char *snap_label_get(const struct snap_label *l, size_t n, const char *key)
{
	for (size_t i = 0; i < n; i++)
		if (l[i].key && l[i].value && !strcmp(l[i].key, key))
			return l[i].value;
	return NULL;
}

static bool label_true(const struct snap_label *l, size_t n, const char *key)
{
	const char *v = snap_label_get(l, n, key);

	return v && !strcmp(v, "true");
}

bool snap_labels_nydus_meta(const struct snap_label *l, size_t n)
{
	return label_true(l, n, L_NYDUS_META);
}

bool snap_labels_nydus_blob(const struct snap_label *l, size_t n)
{
	return label_true(l, n, L_NYDUS_BLOB);
}

bool snap_labels_stargz(const struct snap_label *l, size_t n)
{
	const char *v = snap_label_get(l, n, L_STARGZ);

	return snap_label_get(l, n, L_TOC_DIGEST) || (v && *v);
}

bool snap_fs_id_valid(const char *id)
{
	size_t n = id ? strlen(id) : 0;

	/* "..name" is kept for fds other than FUSE sessions in the holder */
	if (n == 0 || n > SNAP_FS_ID_MAX || !strcmp(id, ".") || !strncmp(id, "..", 2))
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = id[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

/* "sha256:<64 lowercase hex>" -> the hex part, the cache's blob id for a registry layer */
static int digest_hex(const char *digest, const char **hex)
{
	if (!digest || !reg_digest_valid(digest))
		return -EINVAL;
	*hex = digest + 7;
	return 0;
}

/* ---- sessions ---------------------------------------------------------------- */

/* pool callback: the session ended by itself (its mount went away) */
static void on_session_end(void *arg)
{
	struct snap_mnt *m = arg;

	atomic_store(&m->loop_done, true);
}

static int sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	return nanosleep(&ts, NULL);
}

/* Wait up to ms for the loop to end by itself (unmounted); true if it did. */
static bool loop_wait(struct snap_mnt *m, int ms)
{
	for (int i = 0; i < ms / 10 && !atomic_load(&m->loop_done); i++)
		sleep_ms(10);
	return atomic_load(&m->loop_done);
}

/* Stop serving the session without touching the mount (it stays for a successor). */
static void loop_stop(struct snap_fs *fs, struct snap_mnt *m)
{
	if (!m->loop_started)
		return;
	snap_pool_remove(fs->pool, m->slot);
	m->loop_started = false;
}

static void mnt_free(struct snap_fs *fs, struct snap_mnt *m)
{
	if (!m)
		return;
	loop_stop(fs, m);
	imgfs_destroy(m->ifs);
	snap_source_close(m->src);
	free(m->labels_json);
	free(m);
}

/* ---- lookup --------------------------------------------------------------- */

/* A ready mount whose session ended although nobody called Umount: someone
 * unmounted it behind our back (umount -l, an abort in /sys/fs/fuse). */
static bool gone(const struct snap_mnt *m)
{
	return m->state == SNAP_MNT_READY && atomic_load(&m->loop_done);
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* After a failed mount of a listed entry (fs->lock held): when to try again. */
static void retry_schedule(struct snap_fs *fs, struct snap_mnt *m)
{
	unsigned d = m->retry_ms ? m->retry_ms * 2 : SNAP_RETRY_MIN_MS;

	if (d > SNAP_RETRY_MAX_MS)
		d = SNAP_RETRY_MAX_MS;
	m->retry_ms = d;
	/* +-25%: entries that failed together do not all come back at once */
	m->retry_at_ms = mono_ms() + d - d / 4 + (uint64_t)random() % (d / 2 + 1);
	pthread_cond_signal(&fs->retry_cond);
}

static void release(struct snap_fs *fs, struct snap_mnt *m);

/* the outcome of a mount of a listed entry (fs->lock held, m busy) */
static void mount_done(struct snap_fs *fs, struct snap_mnt *m, int ret)
{
	m->state = ret ? SNAP_MNT_FAILED : SNAP_MNT_READY;
	m->error = ret;
	if (ret)
		retry_schedule(fs, m);
	else
		m->retry_ms = 0;
	release(fs, m);
}


static struct snap_mnt *find(struct snap_fs *fs, const char *id)
{
	for (struct snap_mnt *m = fs->mounts; m; m = m->next)
		if (!strcmp(m->id, id))
			return m;
	return NULL;
}

static void unlink_mnt(struct snap_fs *fs, struct snap_mnt *m)
{
	for (struct snap_mnt **pp = &fs->mounts; *pp; pp = &(*pp)->next)
		if (*pp == m) {
			*pp = m->next;
			m->next = NULL;
			return;
		}
}

/* Free sessions whose loop has ended since they were detached. Caller holds fs->lock. */
static void reap_draining(struct snap_fs *fs)
{
	for (struct snap_mnt **pp = &fs->draining; *pp;) {
		struct snap_mnt *m = *pp;

		if (atomic_load(&m->loop_done)) {
			*pp = m->next;
			mnt_free(fs, m);
		} else {
			pp = &m->next;
		}
	}
}

/* ---- paths ------------------------------------------------------------------ */

static int mkdir_p(const char *dir, mode_t mode)
{
	char tmp[PATH_MAX];

	if (snprintf(tmp, sizeof(tmp), "%s", dir) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int snap_fs_upper_path(struct snap_fs *fs, const char *id, char *buf, size_t len)
{
	if (!snap_fs_id_valid(id))
		return -EINVAL;
	if (snprintf(buf, len, "%s/snapshots/%s/fs", fs->root, id) >= (int)len)
		return -ENAMETOOLONG;
	return 0;
}

int snap_fs_bootstrap_file(struct snap_fs *fs, const char *id, char *buf, size_t len)
{
	static const char *const names[] = { "image/image.boot", "image.boot" };
	struct stat st;

	if (!snap_fs_id_valid(id))
		return -EINVAL;
	for (size_t i = 0; i < LZ_ARRAY_SIZE(names); i++) {
		if (snprintf(buf, len, "%s/snapshots/%s/fs/%s", fs->root, id, names[i]) >= (int)len)
			return -ENAMETOOLONG;
		if (stat(buf, &st) == 0 && S_ISREG(st.st_mode))
			return 0;
	}
	return -ENOENT;
}

/* A mountpoint left by a dead server answers ENOTCONN; a live one is a mount. Detach either. */
static void detach_stale(const char *mnt)
{
	struct stat st, parent;
	char up[PATH_MAX + 4];

	snprintf(up, sizeof(up), "%s/..", mnt);
	if (stat(mnt, &st) < 0) {
		if (errno == ENOTCONN || errno == ECONNABORTED) {
			lz_info("%s: stale FUSE mount of a dead server: detaching it", mnt);
			umount2(mnt, MNT_DETACH);
		}
		return;
	}
	if (stat(up, &parent) == 0 && parent.st_dev != st.st_dev) {
		lz_info("%s: something is mounted there: detaching it", mnt);
		umount2(mnt, MNT_DETACH);
	}
}

/* ---- mount -------------------------------------------------------------------- */

/* host/repo@digest: the exact manifest a restart must serve (a tag may move) */
static void pin_ref(struct snap_mnt *m)
{
	struct reg_ref r;
	const char *d = snap_source_digest(m->src);

	if (!d || !*d || reg_ref_parse(m->ref, &r) ||
	    snprintf(m->pinned, sizeof(m->pinned), "%s/%s@%s", r.host, r.repo, d) >= (int)sizeof(m->pinned))
		snprintf(m->pinned, sizeof(m->pinned), "%s", m->ref);
}

/*
 * The slow part of a mount, run with the id's busy flag set and fs->lock not
 * held: open the image, start its cache use, mount (or adopt) the FUSE
 * session, start its loop, persist, park the fd in the holder.
 * adopt_fd > 0 is consumed in every case.
 */
static int do_mount(struct snap_fs *fs, struct snap_mnt *m, int adopt_fd)
{
	struct snap_source_opts so = {
		.cache_dir = fs->cache_dir,
		.cache_max = fs->o.cache_max,
		.reg = fs->o.reg,
		.validate = true,
		.prefetch = fs->o.prefetch,
		.shared_cache = fs->cache,
		.layer = m->layer[0] ? m->layer : NULL,
	};
	struct imgfs_opts fo = {
		.mountpoint = m->mnt,
		.fsname = "lazyimg",
		.max_threads = fs->o.threads > 0 ? (unsigned)fs->o.threads : 0,
		/* always: this file, not libfuse, decides when a mountpoint is unmounted
		 * (a drained session must never unmount a newer mount of its id) */
		.handover = true,
		.allow_other = true,
	};
	const char *ref = m->pinned[0] ? m->pinned : m->ref;
	int ret;

	if (adopt_fd <= 0) {
		ret = mkdir_p(m->mnt, 0755);
		if (ret) {
			lz_err("mountpoint %s: %s", m->mnt, strerror(-ret));
			return ret;
		}
		detach_stale(m->mnt);
	}
	ret = snap_source_open(ref, &so, &m->src);
	if (ret) {
		lz_err("snapshot %s: cannot open %s: %s", m->id, ref, lz_strerror(ret));
		goto fail;
	}
	ret = snap_source_start(m->src);
	if (ret) {
		lz_err("snapshot %s: cannot start %s: %s", m->id, ref, lz_strerror(ret));
		goto fail;
	}
	if (!m->pinned[0])
		pin_ref(m);
	if (adopt_fd > 0) {
		fo.adopt_fd = adopt_fd;
		fo.init_req = m->init_req;
		fo.init_len = m->init_len;
		adopt_fd = -1; /* imgfs_mount owns it now, even on failure */
		m->adopted = true;
	}
	ret = imgfs_mount(snap_source_image(m->src), &fo, &m->ifs);
	if (ret) {
		lz_err("snapshot %s: cannot %s %s", m->id, m->adopted ? "adopt the FUSE session of" : "mount on",
		       m->mnt);
		goto fail;
	}
	if (!m->adopted) {
		const void *init = imgfs_init_request(m->ifs, &m->init_len);

		memcpy(m->init_req, init, m->init_len);
	}
	ret = snap_pool_add(fs->pool, m->ifs, on_session_end, m, &m->slot);
	if (ret)
		goto fail_mounted;
	m->loop_started = true;
	ret = snapfs_state_save(fs, m);
	if (ret) {
		lz_err("snapshot %s: cannot persist its state: %s", m->id, strerror(-ret));
		goto fail_mounted;
	}
	if (fs->holder && !m->adopted) {
		ret = snapfs_holder_put(fs->holder, m->id, imgfs_fd(m->ifs));
		if (ret) {
			lz_err("snapshot %s: the fd holder did not take the FUSE fd: %s", m->id, strerror(-ret));
			snapfs_state_remove(fs, m->id);
			goto fail_mounted;
		}
	}
	lz_info("snapshot %s: %s %s on %s", m->id, m->adopted ? "adopted" : "mounted", ref, m->mnt);
	return 0;
fail_mounted:
	umount2(m->mnt, MNT_DETACH);
	loop_wait(m, SNAP_UMOUNT_WAIT_MS);
fail:
	if (adopt_fd > 0)
		close(adopt_fd);
	loop_stop(fs, m);
	imgfs_destroy(m->ifs);
	m->ifs = NULL;
	snap_source_close(m->src);
	m->src = NULL;
	return ret;
}

static int mnt_new(const char *id, const struct snap_label *labels, size_t n, struct snap_fs *fs,
		   struct snap_mnt **out)
{
	const char *ref = snap_label_get(labels, n, L_IMAGE_REF);
	struct snap_mnt *m;

	if (!ref)
		ref = snap_label_get(labels, n, L_STARGZ_REF);
	if (!ref || !*ref) {
		lz_err("snapshot %s: no image reference in the labels (%s or %s)", id, L_IMAGE_REF, L_STARGZ_REF);
		return -EINVAL;
	}
	if (strlen(ref) >= SNAP_REF_MAX || n > SNAP_NLABELS_MAX)
		return -E2BIG;
	m = lz_calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	snprintf(m->id, sizeof(m->id), "%s", id);
	snprintf(m->ref, sizeof(m->ref), "%s", ref);
	if (snap_labels_stargz(labels, n)) {
		const char *d = snap_label_get(labels, n, L_LAYER_DIGEST);

		if (!d)
			d = snap_label_get(labels, n, L_STARGZ_DIGEST);
		if (d && reg_digest_valid(d))
			snprintf(m->layer, sizeof(m->layer), "%s", d);
	}
	if (snprintf(m->mnt, sizeof(m->mnt), "%s/%s", fs->mnt_dir, id) >= (int)sizeof(m->mnt)) {
		free(m);
		return -ENAMETOOLONG;
	}
	{
		/* credentials passed as labels (nydus pullusername/pullsecret) are not used and
		 * never written to disk: the state keeps every other label */
		struct snap_label *keep = lz_calloc(n ? n : 1, sizeof(*keep));
		size_t k = 0;

		if (!keep) {
			free(m);
			return -ENOMEM;
		}
		for (size_t i = 0; i < n; i++)
			if (labels[i].key && !strstr(labels[i].key, "pullsecret") &&
			    !strstr(labels[i].key, "pullusername"))
				keep[k++] = labels[i];
		m->labels_json = snapfs_labels_to_json(keep, k);
		free(keep);
	}
	if (!m->labels_json) {
		free(m);
		return -ENOMEM;
	}
	if (strlen(m->labels_json) > SNAP_LABELS_MAX) {
		free(m->labels_json);
		free(m);
		return -E2BIG;
	}
	*out = m;
	return 0;
}

/* fds listed by the holder (copies owned here until taken) */
struct held_fd {
	char id[SNAP_FS_ID_MAX + 1];
	int fd;
};

struct held_set {
	struct held_fd *v;
	size_t n, cap;
};

static void held_add(void *arg, const char *id, int fd)
{
	struct held_set *hs = arg;

	if (hs->n == hs->cap) {
		size_t nc = hs->cap ? hs->cap * 2 : 16;
		struct held_fd *nv = nc <= 65536 ? lz_realloc(hs->v, nc * sizeof(*nv)) : NULL;

		if (!nv) {
			close(fd);
			return;
		}
		hs->v = nv;
		hs->cap = nc;
	}
	snprintf(hs->v[hs->n].id, sizeof(hs->v[hs->n].id), "%s", id);
	hs->v[hs->n++].fd = fd;
}

static void held_free(struct held_set *hs)
{
	for (size_t i = 0; i < hs->n; i++)
		if (hs->v[i].fd >= 0)
			close(hs->v[i].fd);
	free(hs->v);
}

static int take_held(struct held_set *hs, const char *id)
{
	for (size_t i = 0; i < hs->n; i++)
		if (hs->v[i].fd >= 0 && !strcmp(hs->v[i].id, id)) {
			int fd = hs->v[i].fd;

			hs->v[i].fd = -1;
			return fd;
		}
	return -1;
}

/* Take the id's busy flag; the entry is created (MOUNTING) when absent if create. */
static int claim(struct snap_fs *fs, const char *id, bool nowait, struct snap_mnt **out)
{
	struct snap_mnt *m;

	for (;;) {
		m = find(fs, id);
		if (!m || !m->busy)
			break;
		if (nowait)
			return -EBUSY;
		pthread_cond_wait(&fs->cond, &fs->lock);
	}
	if (m)
		m->busy = true;
	*out = m;
	return 0;
}

static void release(struct snap_fs *fs, struct snap_mnt *m)
{
	m->busy = false;
	pthread_cond_broadcast(&fs->cond);
}

/*
 * Mount again a listed entry: a restore or retry that failed (registry
 * unreachable at start, say), or a session whose kernel mount went away.
 * It is mounted as persisted, pinned manifest and all, adopting the kernel
 * mount the holder still keeps so that its open files live on. m is busy
 * and MOUNTING; fs->lock is not held.
 */
static int remount(struct snap_fs *fs, struct snap_mnt *m, bool was_gone)
{
	int fd = -1, ret;

	if (was_gone) {
		/* its kernel mount is gone: drop the dead session, mount afresh */
		lz_warn("snapshot %s: was unmounted behind the server's back: mounting it again", m->id);
		loop_stop(fs, m);
		imgfs_destroy(m->ifs);
		m->ifs = NULL;
		snap_source_close(m->src);
		m->src = NULL;
		atomic_store(&m->loop_done, false);
		if (fs->holder)
			snapfs_holder_del(fs->holder, m->id);
	} else if (fs->holder && m->init_len) {
		struct held_set hs = { 0 };

		if (snapfs_holder_list(fs->holder, held_add, &hs) == 0)
			fd = take_held(&hs, m->id);
		held_free(&hs);
	}
	ret = do_mount(fs, m, fd);
	pthread_mutex_lock(&fs->lock);
	mount_done(fs, m, ret);
	pthread_mutex_unlock(&fs->lock);
	return ret;
}

int snapfs_mount(struct snap_fs *fs, const char *id, const struct snap_label *labels, size_t n,
		 bool nowait)
{
	struct snap_mnt *m, *fresh = NULL;
	int ret;

	if (!snap_fs_id_valid(id))
		return -EINVAL;
	ret = mnt_new(id, labels, n, fs, &fresh);
	if (ret)
		return ret;
	pthread_mutex_lock(&fs->lock);
	reap_draining(fs);
	ret = claim(fs, id, nowait, &m);
	if (ret) {
		pthread_mutex_unlock(&fs->lock);
		mnt_free(fs, fresh);
		return ret;
	}
	if (m && m->state == SNAP_MNT_READY && !gone(m)) {
		/* idempotent, as nydus-snapshotter's Mount of an existing instance */
		release(fs, m);
		pthread_mutex_unlock(&fs->lock);
		mnt_free(fs, fresh);
		return 0;
	}
	if (m) {
		bool was_gone = gone(m);

		m->state = SNAP_MNT_MOUNTING;
		m->error = 0;
		m->adopted = false;
		pthread_mutex_unlock(&fs->lock);
		mnt_free(fs, fresh);
		return remount(fs, m, was_gone);
	}
	m = fresh;
	m->busy = true;
	m->state = SNAP_MNT_MOUNTING;
	m->next = fs->mounts;
	fs->mounts = m;
	pthread_mutex_unlock(&fs->lock);

	ret = do_mount(fs, m, -1);

	pthread_mutex_lock(&fs->lock);
	if (ret) {
		unlink_mnt(fs, m);
		release(fs, m);
		pthread_mutex_unlock(&fs->lock);
		mnt_free(fs, m);
		return ret;
	}
	m->state = SNAP_MNT_READY;
	release(fs, m);
	pthread_mutex_unlock(&fs->lock);
	return 0;
}

int snap_fs_mount(struct snap_fs *fs, const char *id, const struct snap_label *labels, size_t n)
{
	return snapfs_mount(fs, id, labels, n, false);
}

/* Unmount m (busy, unlinked from the list): kernel mount, state, held fd, session. */
static void do_umount(struct snap_fs *fs, struct snap_mnt *m)
{
	if (m->ifs) {
		/* detach: a busy mount goes away for new users; open files finish their reads */
		if (umount2(m->mnt, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
			lz_warn("snapshot %s: umount %s: %s", m->id, m->mnt, strerror(errno));
	} else if (m->state == SNAP_MNT_FAILED) {
		detach_stale(m->mnt);
	}
	snapfs_state_remove(fs, m->id);
	if (fs->holder)
		snapfs_holder_del(fs->holder, m->id);
	rmdir(m->mnt);
}

int snapfs_umount(struct snap_fs *fs, const char *id, bool nowait)
{
	struct snap_mnt *m;
	int ret;

	if (!snap_fs_id_valid(id))
		return 0; /* nothing by that name can exist */
	pthread_mutex_lock(&fs->lock);
	reap_draining(fs);
	ret = claim(fs, id, nowait, &m);
	if (ret || !m) {
		pthread_mutex_unlock(&fs->lock);
		return ret; /* unknown id: 0, as nydus-snapshotter */
	}
	pthread_mutex_unlock(&fs->lock);

	/* the entry stays listed (busy) until the mountpoint is gone: a new Mount of
	 * the id waits instead of racing with the rmdir */
	do_umount(fs, m);
	if (!m->loop_started || loop_wait(m, SNAP_UMOUNT_WAIT_MS)) {
		pthread_mutex_lock(&fs->lock);
		unlink_mnt(fs, m);
		pthread_cond_broadcast(&fs->cond);
		pthread_mutex_unlock(&fs->lock);
		mnt_free(fs, m);
		return 0;
	}
	/* open files keep the detached superblock alive: let the session finish them */
	lz_info("snapshot %s: unmounted; its session serves open files until they are closed", id);
	pthread_mutex_lock(&fs->lock);
	unlink_mnt(fs, m);
	pthread_cond_broadcast(&fs->cond);
	m->next = fs->draining;
	fs->draining = m;
	pthread_mutex_unlock(&fs->lock);
	return 0;
}

int snap_fs_umount(struct snap_fs *fs, const char *id)
{
	return snapfs_umount(fs, id, false);
}

int snap_fs_mountpoint(struct snap_fs *fs, const char *id, char *buf, size_t len)
{
	struct snap_mnt *m;
	int ret = -ENOENT;

	pthread_mutex_lock(&fs->lock);
	m = find(fs, id ? id : "");
	if (m && m->state == SNAP_MNT_READY && !gone(m))
		ret = snprintf(buf, len, "%s", m->mnt) >= (int)len ? -ENAMETOOLONG : 0;
	pthread_mutex_unlock(&fs->lock);
	return ret;
}

int snap_fs_wait_until_ready(struct snap_fs *fs, const char *id, int timeout_ms)
{
	struct timespec dl;
	struct snap_mnt *m;
	int ret = 0;

	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += timeout_ms / 1000;
	dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (dl.tv_nsec >= 1000000000L) {
		dl.tv_sec++;
		dl.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&fs->lock);
	for (;;) {
		m = find(fs, id ? id : "");
		if (!m) {
			ret = -ENOENT;
			break;
		}
		if (gone(m)) {
			ret = -ENODEV;
			break;
		}
		if (m->state == SNAP_MNT_READY)
			break;
		if (m->state == SNAP_MNT_FAILED && !m->busy) {
			ret = m->error ? m->error : -EIO;
			break;
		}
		if (pthread_cond_timedwait(&fs->cond, &fs->lock, &dl) == ETIMEDOUT) {
			m = find(fs, id);
			ret = m && m->state == SNAP_MNT_READY ? 0 : m ? -ETIMEDOUT : -ENOENT;
			break;
		}
	}
	pthread_mutex_unlock(&fs->lock);
	return ret;
}

/* ---- cache ------------------------------------------------------------------ */

static uint64_t allocated(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISREG(st.st_mode) ? (uint64_t)st.st_blocks * 512u : 0;
}

/* the blob's files outside the blob cache proper: bootstraps/<hex>.boot and the like */
typedef void (*side_fn)(const char *path, void *arg);

static void for_side_files(struct snap_fs *fs, const char *hex, side_fn fn, void *arg)
{
	DIR *d = opendir(fs->cache_dir), *sd;
	struct dirent *de, *se;
	size_t hl = strlen(hex);

	if (!d)
		return;
	while ((de = readdir(d))) {
		char sub[PATH_MAX * 2], path[PATH_MAX * 3];

		if (de->d_name[0] == '.' || !strcmp(de->d_name, "blobs"))
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", fs->cache_dir, de->d_name);
		sd = opendir(sub);
		if (!sd)
			continue;
		while ((se = readdir(sd))) {
			if (strncmp(se->d_name, hex, hl) || (se->d_name[hl] && se->d_name[hl] != '.'))
				continue;
			snprintf(path, sizeof(path), "%s/%s", sub, se->d_name);
			fn(path, arg);
		}
		closedir(sd);
	}
	closedir(d);
}

static void add_usage(const char *path, void *arg)
{
	*(uint64_t *)arg += allocated(path);
}

int snap_fs_cache_usage(struct snap_fs *fs, const char *digest, uint64_t *bytes)
{
	const char *hex;
	uint64_t b = 0, side = 0;
	int ret = digest_hex(digest, &hex);

	if (ret)
		return ret;
	ret = bcache_blob_usage(fs->cache, hex, &b);
	if (ret && ret != -ENOENT)
		return ret;
	for_side_files(fs, hex, add_usage, &side);
	*bytes = (ret ? 0 : b) + side;
	return 0;
}

static void remove_side(const char *path, void *arg)
{
	if (unlink(path) < 0 && errno != ENOENT)
		lz_warn("cannot remove %s: %s", path, strerror(errno));
}

int snap_fs_remove_cache(struct snap_fs *fs, const char *digest)
{
	const char *hex;
	int ret = digest_hex(digest, &hex);

	if (ret)
		return ret;
	/* an unmounted session whose last open file was closed lets go of its blobs now */
	pthread_mutex_lock(&fs->lock);
	reap_draining(fs);
	pthread_mutex_unlock(&fs->lock);
	/* the blob cache refuses while any mount (or an unmounted one still serving
	 * open files) has the blob open: that is "in use" */
	ret = bcache_remove(fs->cache, hex);
	if (ret == -EBUSY)
		return -EBUSY;
	if (ret && ret != -ENOENT)
		return ret;
	/* a bootstrap copy is re-fetched by digest when needed; a live mount has its own */
	for_side_files(fs, hex, remove_side, NULL);
	return 0;
}

uint64_t snap_fs_cache_total(struct snap_fs *fs)
{
	return bcache_total_usage(fs->cache);
}

/* ---- listing and stats -------------------------------------------------------- */

static const char *state_name(enum snap_mnt_state s)
{
	return s == SNAP_MNT_READY ? "ready" : s == SNAP_MNT_FAILED ? "failed" : "mounting";
}

static void info_of(const struct snap_mnt *m, struct snap_fs_info *in)
{
	memset(in, 0, sizeof(*in));
	snprintf(in->id, sizeof(in->id), "%s", m->id);
	snprintf(in->ref, sizeof(in->ref), "%s", m->ref);
	snprintf(in->mountpoint, sizeof(in->mountpoint), "%s", m->mnt);
	in->state = gone(m) ? "failed" : state_name(m->state);
	in->error = gone(m) ? -ENODEV : m->error;
	in->adopted = m->adopted;
}

static int cmp_info(const void *a, const void *b)
{
	return strcmp(((const struct snap_fs_info *)a)->id, ((const struct snap_fs_info *)b)->id);
}

int snap_fs_list(struct snap_fs *fs, struct snap_fs_info **out, size_t *n)
{
	struct snap_fs_info *v;
	size_t cnt = 0, i = 0;

	pthread_mutex_lock(&fs->lock);
	for (struct snap_mnt *m = fs->mounts; m; m = m->next)
		cnt++;
	v = lz_calloc(cnt ? cnt : 1, sizeof(*v));
	if (!v) {
		pthread_mutex_unlock(&fs->lock);
		return -ENOMEM;
	}
	for (struct snap_mnt *m = fs->mounts; m; m = m->next)
		info_of(m, &v[i++]);
	pthread_mutex_unlock(&fs->lock);
	qsort(v, cnt, sizeof(*v), cmp_info);
	*out = v;
	*n = cnt;
	return 0;
}

int snap_fs_get(struct snap_fs *fs, const char *id, struct snap_fs_info *info)
{
	struct snap_mnt *m;

	pthread_mutex_lock(&fs->lock);
	m = find(fs, id ? id : "");
	if (m)
		info_of(m, info);
	pthread_mutex_unlock(&fs->lock);
	return m ? 0 : -ENOENT;
}

int snap_fs_stats(struct snap_fs *fs, const char *id, struct snap_fs_stats *st)
{
	struct imgfs_stats is;
	struct snap_mnt *m;
	int ret = -ENOENT;

	memset(st, 0, sizeof(*st));
	pthread_mutex_lock(&fs->lock);
	m = find(fs, id ? id : "");
	/* a READY entry's session and source live until it is unlinked under this lock */
	if (m && m->state == SNAP_MNT_READY && m->ifs && m->src) {
		snap_source_stats(m->src, &st->src);
		imgfs_get_stats(m->ifs, &is);
		st->reads = is.reads;
		st->read_bytes = is.read_bytes;
		st->read_errors = is.read_errors;
		st->lookups = is.lookups;
		_Static_assert(sizeof(st->lat) == sizeof(is.lat), "latency buckets");
		memcpy(st->lat, is.lat, sizeof(st->lat));
		st->lat_p50_us = is.lat_p50_us;
		st->lat_p90_us = is.lat_p90_us;
		st->lat_p99_us = is.lat_p99_us;
		st->lat_max_us = is.lat_max_us;
		st->lat_sum_us = is.lat_sum_us;
		{
			static const char *const pf[] = { "table", "none", "list", "all" };

			st->prefetch_source = fs->o.prefetch >= 0 && fs->o.prefetch < 4 ? pf[fs->o.prefetch] : "table";
		}
		imgfs_inflight(m->ifs, (uint64_t)(fs->o.hung_ms > 0 ? fs->o.hung_ms : SNAP_FS_HUNG_MS_DEFAULT) * 1000u,
			       &st->inflight, &st->hung);
		ret = 0;
	}
	pthread_mutex_unlock(&fs->lock);
	return ret;
}

/* ---- open / restore / close ------------------------------------------------ */

/* Restores run in parallel (a slow or failing registry for one image must not hold up
 * the readers of the others), at most this many at once. */
#define SNAP_RESTORE_PARALLEL 8

struct restore_ctx {
	struct snap_fs *fs;
	struct held_set hs;
	pthread_t *th;
	size_t nth, cap;
	int running;
	pthread_mutex_t lock;
	pthread_cond_t cond;
};

struct restore_job {
	struct restore_ctx *rc;
	struct snap_mnt *m;
	int fd;
};

static void restore_mount(struct snap_fs *fs, struct snap_mnt *m, int fd)
{
	int ret = do_mount(fs, m, fd);

	pthread_mutex_lock(&fs->lock);
	mount_done(fs, m, ret);
	pthread_mutex_unlock(&fs->lock);
	if (ret)
		lz_err("snapshot %s: not restored (%s); its state is kept and the mount is retried", m->id,
		       lz_strerror(ret));
}

static void *restore_main(void *p)
{
	struct restore_job *j = p;
	struct restore_ctx *rc = j->rc;

	restore_mount(rc->fs, j->m, j->fd);
	free(j);
	pthread_mutex_lock(&rc->lock);
	rc->running--;
	pthread_cond_broadcast(&rc->cond);
	pthread_mutex_unlock(&rc->lock);
	return NULL;
}

/* one persisted mount: listed at once (busy, mounting), mounted by a restore thread */
static int restore_one(void *arg, struct snap_mnt *m)
{
	struct restore_ctx *rc = arg;
	struct snap_fs *fs = rc->fs;
	struct restore_job *j;
	int fd = take_held(&rc->hs, m->id);

	if (snprintf(m->mnt, sizeof(m->mnt), "%s/%s", fs->mnt_dir, m->id) >= (int)sizeof(m->mnt)) {
		mnt_free(fs, m);
		if (fd >= 0)
			close(fd);
		return 0;
	}
	if (fd >= 0 && !m->init_len) {
		lz_warn("snapshot %s: held FUSE fd but no recorded INIT: mounting afresh", m->id);
		close(fd);
		fd = -1;
	}
	m->busy = true;
	m->state = SNAP_MNT_MOUNTING;
	pthread_mutex_lock(&fs->lock);
	m->next = fs->mounts;
	fs->mounts = m;
	pthread_mutex_unlock(&fs->lock);
	if (fd < 0 && fs->holder) {
		/* the holder lost it (or never got it): the old kernel mount is dead */
		snapfs_holder_del(fs->holder, m->id);
		m->init_len = 0;
	}
	j = lz_malloc(sizeof(*j));
	pthread_mutex_lock(&rc->lock);
	while (rc->running >= SNAP_RESTORE_PARALLEL)
		pthread_cond_wait(&rc->cond, &rc->lock);
	if (j && rc->nth == rc->cap) {
		size_t nc = rc->cap ? rc->cap * 2 : 16;
		pthread_t *nt = nc <= 65536 ? lz_realloc(rc->th, nc * sizeof(*nt)) : NULL;

		if (nt) {
			rc->th = nt;
			rc->cap = nc;
		}
	}
	if (j && rc->nth < rc->cap) {
		*j = (struct restore_job){ rc, m, fd };
		if (pthread_create(&rc->th[rc->nth], NULL, restore_main, j) == 0) {
			rc->nth++;
			rc->running++;
			pthread_mutex_unlock(&rc->lock);
			return 0;
		}
	}
	pthread_mutex_unlock(&rc->lock);
	free(j);
	restore_mount(fs, m, fd); /* no thread to be had: do it here */
	return 0;
}

/*
 * Every persisted mount is listed (mounting) before this returns; the mounts
 * themselves finish in restore threads, so the control API is up at once and
 * Mount/WaitUntilReady of a restoring id simply wait for it.
 */
static int restore(struct snap_fs *fs)
{
	struct restore_ctx *rc = lz_calloc(1, sizeof(*rc));
	int ret = 0;

	if (!rc)
		return -ENOMEM;
	rc->fs = fs;
	pthread_mutex_init(&rc->lock, NULL);
	pthread_cond_init(&rc->cond, NULL);
	fs->restore = rc;
	if (fs->holder) {
		ret = snapfs_holder_list(fs->holder, held_add, &rc->hs);
		if (ret)
			lz_warn("cannot list the fd holder's FUSE fds: %s", strerror(-ret));
	}
	ret = snapfs_state_load_all(fs, restore_one, rc);
	/* fds without state: a mount whose state never made it to disk */
	for (size_t i = 0; i < rc->hs.n; i++) {
		char mnt[PATH_MAX * 2];

		if (rc->hs.v[i].fd < 0 || !strncmp(rc->hs.v[i].id, "..", 2))
			continue; /* not a mount: snap_fs_held_take's */
		lz_warn("snapshot %s: held FUSE fd without persisted state: unmounting it", rc->hs.v[i].id);
		snprintf(mnt, sizeof(mnt), "%s/%s", fs->mnt_dir, rc->hs.v[i].id);
		umount2(mnt, MNT_DETACH);
		snapfs_holder_del(fs->holder, rc->hs.v[i].id);
		close(rc->hs.v[i].fd);
		rc->hs.v[i].fd = -1;
	}
	return ret;
}

/* The retry thread: mounts again each FAILED entry when its time comes. */
static void *retry_main(void *arg)
{
	struct snap_fs *fs = arg;

	pthread_mutex_lock(&fs->lock);
	while (!fs->retry_stop) {
		uint64_t now = mono_ms(), next = now + SNAP_RETRY_MAX_MS;
		struct snap_mnt *due = NULL;
		struct timespec ts;

		for (struct snap_mnt *m = fs->mounts; m; m = m->next) {
			if (m->state != SNAP_MNT_FAILED || m->busy || !m->retry_at_ms)
				continue;
			if (m->retry_at_ms <= now) {
				due = m;
				break;
			}
			if (m->retry_at_ms < next)
				next = m->retry_at_ms;
		}
		if (due) {
			int err = due->error;

			due->busy = true;
			due->state = SNAP_MNT_MOUNTING;
			due->error = 0;
			due->adopted = false;
			pthread_mutex_unlock(&fs->lock);
			lz_info("snapshot %s: mounting again (it failed %u ms ago: %s)", due->id, due->retry_ms,
				lz_strerror(err));
			err = remount(fs, due, false);
			pthread_mutex_lock(&fs->lock);
			if (!err)
				lz_info("snapshot %s: mounted again%s", due->id,
					due->adopted ? ", its held kernel mount adopted" : "");
			else if (due->state == SNAP_MNT_FAILED)
				lz_warn("snapshot %s: mounting again failed (%s): next try in about %u s", due->id,
					lz_strerror(err), due->retry_ms / 1000u);
			continue;
		}
		ts.tv_sec = (time_t)(next / 1000u);
		ts.tv_nsec = (long)(next % 1000u) * 1000000L;
		pthread_cond_timedwait(&fs->retry_cond, &fs->lock, &ts);
	}
	pthread_mutex_unlock(&fs->lock);
	return NULL;
}

static void retry_start(struct snap_fs *fs)
{
	int ret = pthread_create(&fs->retry_th, NULL, retry_main, fs);

	if (ret)
		lz_warn("no retry thread (%s): a failed mount comes back only on Mount", strerror(ret));
	fs->retry_started = ret == 0;
}

static void retry_join(struct snap_fs *fs)
{
	if (!fs->retry_started)
		return;
	pthread_mutex_lock(&fs->lock);
	fs->retry_stop = true;
	pthread_cond_signal(&fs->retry_cond);
	pthread_mutex_unlock(&fs->lock);
	pthread_join(fs->retry_th, NULL);
	fs->retry_started = false;
}

int snap_fs_held_take(struct snap_fs *fs, const char *name, int *fd)
{
	char id[SNAP_FS_ID_MAX + 1];

	*fd = -1;
	if (!fs->holder || !fs->restore)
		return -ENOENT;
	if (snprintf(id, sizeof(id), "..%s", name) >= (int)sizeof(id))
		return -ENAMETOOLONG;
	*fd = take_held(&fs->restore->hs, id);
	return *fd >= 0 ? 0 : -ENOENT;
}

int snap_fs_held_park(struct snap_fs *fs, const char *name, int fd)
{
	char id[SNAP_FS_ID_MAX + 1];

	if (!fs->holder)
		return -ENOENT;
	if (snprintf(id, sizeof(id), "..%s", name) >= (int)sizeof(id))
		return -ENAMETOOLONG;
	return snapfs_holder_put(fs->holder, id, fd);
}

/* wait for the restore threads (snap_fs_close) */
static void restore_join(struct snap_fs *fs)
{
	struct restore_ctx *rc = fs->restore;

	if (!rc)
		return;
	for (size_t i = 0; i < rc->nth; i++)
		pthread_join(rc->th[i], NULL);
	free(rc->th);
	free(rc->hs.v);
	pthread_cond_destroy(&rc->cond);
	pthread_mutex_destroy(&rc->lock);
	free(rc);
	fs->restore = NULL;
}

int snap_fs_open(const struct snap_fs_opts *o, struct snap_fs **out)
{
	struct snap_fs *fs;
	char path[PATH_MAX * 2];
	int ret;

	if (!o || !o->root || !*o->root)
		return -EINVAL;
	fs = lz_calloc(1, sizeof(*fs));
	if (!fs)
		return -ENOMEM;
	fs->o = *o;
	fs->lock_fd = -1;
	pthread_mutex_init(&fs->lock, NULL);
	pthread_cond_init(&fs->cond, NULL);
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&fs->retry_cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	ret = mkdir_p(o->root, 0700);
	if (ret || !realpath(o->root, fs->root)) {
		ret = ret ? ret : -errno;
		lz_err("root %s: %s", o->root, strerror(-ret));
		goto err;
	}
	fs->o.root = fs->root;
	snprintf(fs->cache_dir, sizeof(fs->cache_dir), "%s/cache", fs->root);
	snprintf(fs->state_dir, sizeof(fs->state_dir), "%s/state", fs->root);
	if (snprintf(fs->mnt_dir, sizeof(fs->mnt_dir), "%s/mnt", fs->root) >= (int)sizeof(fs->mnt_dir)) {
		ret = -ENAMETOOLONG;
		lz_err("root %s: path too long", fs->root);
		goto err;
	}
	snprintf(path, sizeof(path), "%s/snapshots", fs->root);
	if ((ret = mkdir_p(fs->cache_dir, 0700)) || (ret = mkdir_p(fs->state_dir, 0700)) ||
	    (ret = mkdir_p(fs->mnt_dir, 0755)) || (ret = mkdir_p(path, 0700))) {
		lz_err("cannot create the directories under %s: %s", fs->root, strerror(-ret));
		goto err;
	}
	snprintf(path, sizeof(path), "%s/.lock", fs->root);
	fs->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fs->lock_fd < 0 || flock(fs->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		ret = errno == EWOULDBLOCK ? -EBUSY : -errno;
		lz_err("root %s is in use by another lazyimg process", fs->root);
		goto err;
	}
	snprintf(path, sizeof(path), "%s/blobs", fs->cache_dir);
	ret = bcache_open(path, o->cache_max, &fs->cache);
	if (ret) {
		lz_err("cannot open the blob cache in %s: %s", path, lz_strerror(ret));
		goto err;
	}
	ret = snap_pool_start(o->threads, &fs->pool);
	if (ret) {
		lz_err("cannot start the FUSE worker threads: %s", strerror(-ret));
		goto err;
	}
	if (o->fd_holder) {
		snprintf(fs->holder_path, sizeof(fs->holder_path), "%s", o->fd_holder);
		fs->o.fd_holder = fs->holder_path;
		ret = snapfs_holder_connect(fs->holder_path, &fs->holder);
		if (ret) {
			lz_err("no fd holder answers on %s: %s", fs->holder_path, strerror(-ret));
			goto err;
		}
	}
	if (!o->no_restore)
		restore(fs);
	retry_start(fs);
	*out = fs;
	return 0;
err:
	snap_fs_close(fs);
	return ret;
}

int snap_fs_teardown(struct snap_fs *fs)
{
	for (;;) {
		char id[SNAP_FS_ID_MAX + 1];

		pthread_mutex_lock(&fs->lock);
		if (!fs->mounts) {
			pthread_mutex_unlock(&fs->lock);
			break;
		}
		snprintf(id, sizeof(id), "%s", fs->mounts->id);
		pthread_mutex_unlock(&fs->lock);
		snap_fs_umount(fs, id);
	}
	return 0;
}

void snap_fs_close(struct snap_fs *fs)
{
	if (!fs)
		return;
	retry_join(fs);
	restore_join(fs);
	pthread_mutex_lock(&fs->lock);
	while (fs->mounts) {
		struct snap_mnt *m = fs->mounts;

		while (m->busy)
			pthread_cond_wait(&fs->cond, &fs->lock);
		if (m != fs->mounts)
			continue;
		fs->mounts = m->next;
		pthread_mutex_unlock(&fs->lock);
		/* with a holder the kernel mount and its fd stay for the next server;
		 * without one the mount goes and the state re-mounts it at the next open */
		if (!fs->holder && m->ifs)
			umount2(m->mnt, MNT_DETACH);
		mnt_free(fs, m);
		pthread_mutex_lock(&fs->lock);
	}
	while (fs->draining) {
		struct snap_mnt *m = fs->draining;

		fs->draining = m->next;
		mnt_free(fs, m);
	}
	pthread_mutex_unlock(&fs->lock);
	snapfs_holder_close(fs->holder);
	snap_pool_stop(fs->pool);
	bcache_close(fs->cache);
	if (fs->lock_fd >= 0)
		close(fs->lock_fd);
	pthread_cond_destroy(&fs->cond);
	pthread_cond_destroy(&fs->retry_cond);
	pthread_mutex_destroy(&fs->lock);
	free(fs);
}
