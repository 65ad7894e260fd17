/* SPDX-License-Identifier: Apache-2.0 */
/* The snapshots service core: overlay snapshots on disk, remote snapshots through snap_fs. */
#define LZ_MOD "snapsvc"
#include "lazyimg/lz.h"
#include "lazyimg/snapfs.h"
#include "overlay.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define LABEL_REF "containerd.io/snapshot.ref"
#define LABEL_IMAGE_REF "containerd.io/snapshot/cri.image-ref"
#define LABEL_STARGZ_REF "containerd.io/snapshot/remote/stargz.reference"
#define LABEL_LAYER_DIGEST "containerd.io/snapshot/cri.layer-digest"
#define LABEL_STARGZ_DIGEST "containerd.io/snapshot/remote/stargz.digest"
/* nydus-snapshotter's mark of a layer it serves as eStargz; set here too when
 * a layer is tried as eStargz on ctr-remote's labels alone */
#define LABEL_STARGZ "containerd.io/snapshot/stargz"
#define SNAPSVC_MAX_DEPTH 4096      /* parents walked for one mount */

struct snapsvc {
	char *root;
	struct snapmeta *meta;
	struct snap_fs *fs;          /* borrowed */
	int mount_timeout_ms;
	/* serialises changes of snapshots and their directories (Prepare,
	 * Commit, Remove, Cleanup), except while a remote Prepare waits for its
	 * lazy mount (registry round trips): it drops the lock then, its key and
	 * id already reserved; lock order: op_lock, then the store's lock */
	pthread_mutex_t op_lock;
};

/* ---- helpers ---- */

static int snap_dir(const struct snapsvc *s, uint64_t id, const char *sub, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/snapshots/%llu%s%s", s->root, (unsigned long long)id, sub ? "/" : "",
			 sub ? sub : "");

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	if (remove(path) < 0 && errno != ENOENT)
		lz_warn("remove %s: %s", path, strerror(errno));
	return 0;
}

static void rm_tree(const char *dir)
{
	/* FTW_MOUNT: a stale mount inside is left alone rather than emptied */
	if (nftw(dir, rm_entry, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) < 0 && errno != ENOENT)
		lz_warn("remove %s: %s", dir, strerror(errno));
}

/* du: per-thread accumulators because nftw has no user pointer */
static __thread uint64_t du_bytes, du_inodes;
static __thread uint64_t *du_seen;
static __thread size_t du_seen_n, du_seen_cap;
static __thread int du_err;

static bool du_seen_add(uint64_t key)
{
	size_t mask, h;

	if (du_seen_n * 2 >= du_seen_cap) {
		size_t nc = du_seen_cap ? du_seen_cap * 2 : 256;
		uint64_t *nv = calloc(nc, sizeof(*nv));

		if (!nv) {
			du_err = -ENOMEM;
			return false;
		}
		for (size_t i = 0; i < du_seen_cap; i++) {
			if (!du_seen[i])
				continue;
			for (h = (size_t)(du_seen[i] * 0x9E3779B97F4A7C15ull) & (nc - 1); nv[h]; h = (h + 1) & (nc - 1))
				;
			nv[h] = du_seen[i];
		}
		free(du_seen);
		du_seen = nv;
		du_seen_cap = nc;
	}
	key |= 1;   /* 0 marks an empty slot; losing the low bit only merges two inodes */
	mask = du_seen_cap - 1;
	for (h = (size_t)(key * 0x9E3779B97F4A7C15ull) & mask; du_seen[h]; h = (h + 1) & mask)
		if (du_seen[h] == key)
			return false;
	du_seen[h] = key;
	du_seen_n++;
	return true;
}

static int du_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	if (flag == FTW_NS || flag == FTW_DNR)
		return 0;
	if (st->st_nlink > 1 && !S_ISDIR(st->st_mode) &&
	    !du_seen_add(((uint64_t)st->st_dev << 40) ^ (uint64_t)st->st_ino))
		return du_err ? 1 : 0;
	du_bytes += (uint64_t)st->st_blocks * 512;
	du_inodes++;
	return 0;
}

int snapsvc_disk_usage(const char *dir, uint64_t *bytes, uint64_t *inodes)
{
	int ret = 0;

	du_bytes = du_inodes = 0;
	du_err = 0;
	if (nftw(dir, du_entry, 32, FTW_PHYS | FTW_MOUNT) < 0)
		ret = errno == ENOENT ? 0 : -errno;
	if (du_err)
		ret = du_err;
	free(du_seen);
	du_seen = NULL;
	du_seen_n = du_seen_cap = 0;
	*bytes = du_bytes;
	*inodes = du_inodes;
	return ret;
}

static struct snap_label *to_snap_labels(const struct snapmeta_label *l, size_t n)
{
	struct snap_label *v = calloc(n ? n : 1, sizeof(*v));

	for (size_t i = 0; v && i < n; i++) {
		v[i].key = l[i].key;
		v[i].value = l[i].value;
	}
	return v;
}

static const char *label(const struct snapmeta_label *l, size_t n, const char *key)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(l[i].key, key))
			return l[i].value;
	return NULL;
}

/*
 * Which kind of remote layer a Prepare is for. Only an extraction Prepare
 * (snapshot.ref set) that names its image (cri.image-ref or the stargz
 * reference) can be lazy: without the reference nothing could be fetched.
 */
static int remote_kind(const struct snapsvc *s, const struct snapmeta_label *l, size_t n)
{
	struct snap_label *sl;
	int kind = SNAPMETA_LOCAL;

	if (!s->fs || !label(l, n, LABEL_REF) || (!label(l, n, LABEL_IMAGE_REF) && !label(l, n, LABEL_STARGZ_REF)))
		return SNAPMETA_LOCAL;
	sl = to_snap_labels(l, n);
	if (!sl)
		return SNAPMETA_LOCAL;
	if (snap_labels_nydus_blob(sl, n))
		kind = SNAPMETA_NYDUS_BLOB;
	else if (snap_labels_nydus_meta(sl, n))
		kind = SNAPMETA_NYDUS_META;
	else if (snap_labels_stargz(sl, n))
		kind = SNAPMETA_STARGZ;
	/*
	 * ctr-remote labels every layer of every image it pulls (stargz.reference,
	 * stargz.digest) whether or not the layer is eStargz, and eStargz images
	 * from other builders lack the toc.digest annotation: try such a layer as
	 * eStargz (the footer decides; a plain gzip layer fails fast and is
	 * pulled in full), as nydus-snapshotter probes its layers.
	 */
	else if (label(l, n, LABEL_STARGZ_REF) && (label(l, n, LABEL_STARGZ_DIGEST) || label(l, n, LABEL_LAYER_DIGEST)))
		kind = SNAPMETA_STARGZ;
	free(sl);
	return kind;
}

/* Mount (idempotent) the lazy filesystem of snapshot i and give its mountpoint. */
static int lazy_mountpoint(struct snapsvc *s, const struct snapmeta_info *i, char *buf, size_t len)
{
	struct snap_label *sl;
	char id[32];
	int ret;

	if (!s->fs)
		return -EOPNOTSUPP;
	snprintf(id, sizeof(id), "%llu", (unsigned long long)i->id);
	sl = to_snap_labels(i->labels, i->nlabels);
	if (!sl)
		return -ENOMEM;
	ret = snap_fs_mount(s->fs, id, sl, i->nlabels);
	free(sl);
	if (!ret)
		ret = snap_fs_wait_until_ready(s->fs, id, s->mount_timeout_ms);
	if (!ret)
		ret = snap_fs_mountpoint(s->fs, id, buf, len);
	if (ret)
		lz_err("snapshot %.256s (id %s): lazy mount: %s", i->key, id, strerror(-ret));
	return ret;
}

static void lazy_umount(struct snapsvc *s, uint64_t id)
{
	char ids[32];
	int ret;

	if (!s->fs)
		return;
	snprintf(ids, sizeof(ids), "%llu", (unsigned long long)id);
	ret = snap_fs_umount(s->fs, ids);
	if (ret)
		lz_warn("id %s: lazy umount: %s", ids, strerror(-ret));
}

void snapsvc_mounts_free(struct snapsvc_mount *m, size_t n)
{
	for (size_t i = 0; m && i < n; i++) {
		free(m[i].type);
		free(m[i].source);
		for (size_t k = 0; k < m[i].noptions; k++)
			free(m[i].options[k]);
		free(m[i].options);
	}
	free(m);
}

/* One mount with up to three options (NULL ends the list). */
static int mount_new(const char *type, const char *source, const char *o1, const char *o2, const char *o3,
		     struct snapsvc_mount **out, size_t *n)
{
	const char *opts[3] = { o1, o2, o3 };
	struct snapsvc_mount *m = calloc(1, sizeof(*m));

	if (!m)
		return -ENOMEM;
	m->type = strdup(type);
	m->source = strdup(source);
	m->options = calloc(3, sizeof(char *));
	if (!m->type || !m->source || !m->options)
		goto fail;
	for (int i = 0; i < 3 && opts[i]; i++) {
		m->options[i] = strdup(opts[i]);
		if (!m->options[i])
			goto fail;
		m->noptions++;
	}
	*out = m;
	*n = 1;
	return 0;
fail:
	snapsvc_mounts_free(m, 1);
	return -ENOMEM;
}

/*
 * The mounts of active/view snapshot i, as containerd's overlay snapshotter
 * gives them: lowerdirs nearest parent first. A nydus meta layer's lazy mount
 * holds the whole image, so the nydus data layers below it add nothing; an
 * eStargz layer's lazy mount is that one layer.
 */
static int build_mounts(struct snapsvc *s, const struct snapmeta_info *i, struct snapsvc_mount **out, size_t *n)
{
	char fs[PATH_MAX], work[PATH_MAX], dir[PATH_MAX];
	char *lower = NULL, *opt_l = NULL, *opt_u = NULL, *opt_w = NULL;
	size_t llen = 0, nlower = 0, depth = 0;
	char *parent = NULL;
	int ret;

	if ((ret = snap_dir(s, i->id, "fs", fs, sizeof(fs))) || (ret = snap_dir(s, i->id, "work", work, sizeof(work))))
		return ret;
	/* a crash between metadata and mkdir leaves a snapshot without its dirs */
	if (mkdir(fs, 0755) < 0 && errno == ENOENT) {
		snap_dir(s, i->id, NULL, dir, sizeof(dir));
		mkdir(dir, 0700);
		mkdir(fs, 0755);
	}
	if (i->kind == SNAPMETA_ACTIVE && mkdir(work, 0711) < 0 && errno != EEXIST)
		lz_warn("%s: %s", work, strerror(errno));
	parent = strdup(i->parent);
	if (!parent)
		return -ENOMEM;
	while (parent[0]) {
		struct snapmeta_info p;
		const char *path = dir;

		if (++depth > SNAPSVC_MAX_DEPTH) {
			ret = -ELOOP;
			goto out;
		}
		ret = snapmeta_get(s->meta, parent, &p);
		if (ret) {
			lz_err("snapshot %.256s: parent %.256s: %s", i->key, parent, strerror(-ret));
			goto out;
		}
		if (p.remote == SNAPMETA_NYDUS_BLOB) {
			path = NULL;
		} else if (p.remote == SNAPMETA_NYDUS_META || p.remote == SNAPMETA_STARGZ) {
			ret = lazy_mountpoint(s, &p, dir, sizeof(dir));
			if (ret)
				ret = -EIO;
		} else {
			ret = snap_dir(s, p.id, "fs", dir, sizeof(dir));
		}
		free(parent);
		parent = p.parent;
		p.parent = NULL;
		snapmeta_info_free(&p);
		if (ret)
			goto out;
		if (path) {
			size_t pl = strlen(path);
			char *nl = realloc(lower, llen + pl + 2);

			if (!nl) {
				ret = -ENOMEM;
				goto out;
			}
			lower = nl;
			if (llen)
				lower[llen++] = ':';
			memcpy(lower + llen, path, pl + 1);
			llen += pl;
			nlower++;
		}
	}
	if (!nlower) {
		ret = mount_new("bind", fs, i->kind == SNAPMETA_ACTIVE ? "rw" : "ro", "rbind", NULL, out, n);
	} else if (i->kind != SNAPMETA_ACTIVE && nlower == 1) {
		ret = mount_new("bind", lower, "ro", "rbind", NULL, out, n);
	} else {
		if (asprintf(&opt_l, "lowerdir=%s", lower) < 0) {
			opt_l = NULL;
			ret = -ENOMEM;
			goto out;
		}
		if (i->kind != SNAPMETA_ACTIVE) {
			ret = mount_new("overlay", "overlay", opt_l, NULL, NULL, out, n);
			goto out;
		}
		if (asprintf(&opt_w, "workdir=%s", work) < 0 || asprintf(&opt_u, "upperdir=%s", fs) < 0) {
			ret = -ENOMEM;
			goto out;
		}
		ret = mount_new("overlay", "overlay", opt_w, opt_u, opt_l, out, n);
	}
out:
	free(parent);
	free(lower);
	free(opt_l);
	free(opt_u);
	free(opt_w);
	return ret;
}

/* New snapshot directory: built under a temporary name, renamed to <id>. */
static int make_dirs(struct snapsvc *s, uint64_t id, int kind)
{
	char tmp[PATH_MAX], sub[PATH_MAX + 8], final[PATH_MAX];
	int ret;

	if (snprintf(tmp, sizeof(tmp), "%s/snapshots/new-%llu", s->root, (unsigned long long)id) >= (int)sizeof(tmp) ||
	    (ret = snap_dir(s, id, NULL, final, sizeof(final))))
		return -ENAMETOOLONG;
	rm_tree(tmp);
	if (mkdir(tmp, 0700) < 0)
		return -errno;
	snprintf(sub, sizeof(sub), "%s/fs", tmp);
	if (mkdir(sub, 0755) < 0)
		goto fail;
	if (kind == SNAPMETA_ACTIVE) {
		snprintf(sub, sizeof(sub), "%s/work", tmp);
		if (mkdir(sub, 0711) < 0)
			goto fail;
	}
	if (rename(tmp, final) < 0)
		goto fail;
	return 0;
fail:
	ret = -errno;
	lz_err("%s: %s", tmp, strerror(errno));
	rm_tree(tmp);
	return ret;
}

static void remove_dirs(struct snapsvc *s, uint64_t id)
{
	char dir[PATH_MAX], tmp[PATH_MAX];

	if (snap_dir(s, id, NULL, dir, sizeof(dir)))
		return;
	/* rename first: a half-removed tree is never mistaken for a snapshot */
	snprintf(tmp, sizeof(tmp), "%s/snapshots/rm-%llu", s->root, (unsigned long long)id);
	if (rename(dir, tmp) < 0) {
		if (errno != ENOENT)
			lz_warn("%s: %s", dir, strerror(errno));
		return;
	}
	rm_tree(tmp);
}

/* ---- service ---- */

int snapsvc_open(const struct snapsvc_opts *o, struct snapsvc **out)
{
	struct snapsvc *s;
	char path[PATH_MAX];
	int ret;

	if (!o->root || o->root[0] != '/' || strpbrk(o->root, ":,")) {
		/* ':' and ',' would break overlay's lowerdir/option syntax */
		lz_err("snapshotter root %s must be an absolute path without ':' or ','", o->root ? o->root : "(none)");
		return -EINVAL;
	}
	if (strlen(o->root) > 256) {
		lz_err("snapshotter root %s: keep it under 256 bytes (overlay options fit in a page)", o->root);
		return -ENAMETOOLONG;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	pthread_mutex_init(&s->op_lock, NULL);
	s->fs = o->fs;
	s->mount_timeout_ms = o->mount_timeout_ms > 0 ? o->mount_timeout_ms : 30000;
	s->root = strdup(o->root);
	if (!s->root) {
		ret = -ENOMEM;
		goto fail;
	}
	snprintf(path, sizeof(path), "%s/snapshots", s->root);
	if ((mkdir(s->root, 0700) < 0 && errno != EEXIST) || (mkdir(path, 0700) < 0 && errno != EEXIST)) {
		ret = -errno;
		lz_err("%s: %s", path, strerror(errno));
		goto fail;
	}
	snprintf(path, sizeof(path), "%s/metadata.json", s->root);
	ret = snapmeta_open(path, &s->meta);
	if (ret)
		goto fail;
	*out = s;
	return 0;
fail:
	snapsvc_close(s);
	return ret;
}

void snapsvc_close(struct snapsvc *s)
{
	if (!s)
		return;
	snapmeta_close(s->meta);
	pthread_mutex_destroy(&s->op_lock);
	free(s->root);
	free(s);
}

/*
 * Remote layer: create the snapshot, mount its lazy filesystem (nydus data
 * layers need none), commit it under the target name and answer -EEXIST so
 * that containerd finds it and skips the download. 1 = not lazily
 * available after all (the caller prepares an ordinary snapshot).
 */
static int prepare_remote(struct snapsvc *s, int rkind, const char *key, const char *parent,
			  const struct snapmeta_label *labels, size_t n)
{
	const char *target = label(labels, n, LABEL_REF);
	struct snapmeta_info i = { 0 }, c = { 0 };
	char mp[PATH_MAX];
	int ret;

	struct snapmeta_label *with = NULL;

	if (!snapmeta_get(s->meta, target, NULL))
		return -EEXIST;
	if (rkind == SNAPMETA_STARGZ && !label(labels, n, LABEL_STARGZ)) {
		/* snap_fs mounts one eStargz layer only for a layer marked as such */
		with = calloc(n + 1, sizeof(*with));
		if (!with)
			return -ENOMEM;
		memcpy(with, labels, n * sizeof(*with));
		with[n].key = (char *)LABEL_STARGZ;
		with[n].value = (char *)"true";
		labels = with;
		n++;
	}
	ret = snapmeta_create(s->meta, key, parent, SNAPMETA_ACTIVE, labels, n, rkind, &i);
	if (ret)
		goto undo;
	ret = make_dirs(s, i.id, SNAPMETA_ACTIVE);
	if (ret)
		goto undo;
	if (rkind != SNAPMETA_NYDUS_BLOB) {
		/*
		 * The lazy mount fetches a manifest and a bootstrap or TOCs from the
		 * registry: other snapshot operations (other pulls, container
		 * starts) go on meanwhile. The key and id are already reserved in
		 * the metadata; a concurrent Prepare of the same target does its own
		 * mount, and whichever commits second gets -EEXIST and undoes its own.
		 */
		pthread_mutex_unlock(&s->op_lock);
		ret = lazy_mountpoint(s, &i, mp, sizeof(mp));
		pthread_mutex_lock(&s->op_lock);
		if (!ret && snapmeta_get(s->meta, key, NULL)) {
			/* removed while unlocked (by a Remove or Cleanup): nothing to commit */
			lazy_umount(s, i.id);
			snapmeta_info_free(&i);
			free(with);
			return -ENOENT;
		}
		if (ret) {
			lz_warn("layer %.128s of %.256s: no lazy mount (%s), pulling it in full", target,
				label(labels, n, LABEL_IMAGE_REF) ? label(labels, n, LABEL_IMAGE_REF) :
								    label(labels, n, LABEL_STARGZ_REF),
				strerror(-ret));
			lazy_umount(s, i.id);
			ret = 1;
			goto undo;
		}
	}
	ret = snapmeta_commit(s->meta, target, key, labels, n, 0, 0, &c);
	if (ret) {
		lazy_umount(s, i.id);
		goto undo;
	}
	lz_info("layer %s committed as a remote snapshot (%s, id %llu)", target,
		rkind == SNAPMETA_NYDUS_BLOB ? "nydus data layer" : rkind == SNAPMETA_NYDUS_META ? "nydus meta layer" :
		"eStargz layer", (unsigned long long)i.id);
	snapmeta_info_free(&i);
	snapmeta_info_free(&c);
	free(with);
	return -EEXIST;
undo:
	if (i.key) {
		snapmeta_remove(s->meta, key, NULL);
		remove_dirs(s, i.id);
	}
	snapmeta_info_free(&i);
	free(with);
	return ret;
}

int snapsvc_prepare(struct snapsvc *s, int kind, const char *key, const char *parent,
		    const struct snapmeta_label *labels, size_t n,
		    struct snapsvc_mount **mounts, size_t *nmounts)
{
	struct snapmeta_info i = { 0 };
	int rkind, ret;

	*mounts = NULL;
	*nmounts = 0;
	if (!key || !key[0])
		return -EINVAL;
	pthread_mutex_lock(&s->op_lock);
	rkind = kind == SNAPMETA_ACTIVE ? remote_kind(s, labels, n) : SNAPMETA_LOCAL;
	if (rkind != SNAPMETA_LOCAL) {
		ret = prepare_remote(s, rkind, key, parent, labels, n);
		if (ret <= 0)
			goto out;
	}
	ret = snapmeta_create(s->meta, key, parent, kind, labels, n, SNAPMETA_LOCAL, &i);
	if (ret)
		goto out;
	ret = make_dirs(s, i.id, kind);
	if (!ret)
		ret = build_mounts(s, &i, mounts, nmounts);
	if (ret) {
		snapmeta_remove(s->meta, key, NULL);
		remove_dirs(s, i.id);
	}
out:
	pthread_mutex_unlock(&s->op_lock);
	snapmeta_info_free(&i);
	return ret;
}

int snapsvc_mounts(struct snapsvc *s, const char *key, struct snapsvc_mount **mounts, size_t *nmounts)
{
	struct snapmeta_info i;
	int ret;

	*mounts = NULL;
	*nmounts = 0;
	ret = snapmeta_get(s->meta, key, &i);
	if (ret)
		return ret;
	if (i.kind == SNAPMETA_COMMITTED) {
		/* containerd's overlay snapshotter answers with a read-only view */
		i.kind = SNAPMETA_VIEW;
		if (i.remote == SNAPMETA_NYDUS_META || i.remote == SNAPMETA_STARGZ) {
			char mp[PATH_MAX];

			ret = lazy_mountpoint(s, &i, mp, sizeof(mp));
			if (!ret)
				ret = mount_new("bind", mp, "ro", "rbind", NULL, mounts, nmounts);
			goto out;
		}
		char fs[PATH_MAX];

		ret = snap_dir(s, i.id, "fs", fs, sizeof(fs));
		if (!ret)
			ret = mount_new("bind", fs, "ro", "rbind", NULL, mounts, nmounts);
		goto out;
	}
	ret = build_mounts(s, &i, mounts, nmounts);
out:
	snapmeta_info_free(&i);
	return ret;
}

int snapsvc_commit(struct snapsvc *s, const char *name, const char *key,
		   const struct snapmeta_label *labels, size_t n)
{
	struct snapmeta_info i;
	uint64_t bytes = 0, inodes = 0;
	char fs[PATH_MAX];
	int ret;

	pthread_mutex_lock(&s->op_lock);
	ret = snapmeta_get(s->meta, key, &i);
	if (ret)
		goto out;
	if (!snap_dir(s, i.id, "fs", fs, sizeof(fs)) && snapsvc_disk_usage(fs, &bytes, &inodes))
		lz_warn("%s: usage not measured", fs);
	snapmeta_info_free(&i);
	ret = snapmeta_commit(s->meta, name, key, labels, n, bytes, inodes, NULL);
out:
	pthread_mutex_unlock(&s->op_lock);
	return ret;
}

int snapsvc_remove(struct snapsvc *s, const char *key)
{
	struct snapmeta_info i;
	int ret;

	pthread_mutex_lock(&s->op_lock);
	ret = snapmeta_remove(s->meta, key, &i);
	if (!ret) {
		if (i.remote == SNAPMETA_NYDUS_META || i.remote == SNAPMETA_STARGZ)
			lazy_umount(s, i.id);
		remove_dirs(s, i.id);
		snapmeta_info_free(&i);
	}
	pthread_mutex_unlock(&s->op_lock);
	return ret;
}

int snapsvc_stat(struct snapsvc *s, const char *key, struct snapmeta_info *out)
{
	return snapmeta_get(s->meta, key, out);
}

int snapsvc_update(struct snapsvc *s, const char *key, const struct snapmeta_label *labels, size_t n,
		   const char *const *paths, size_t npaths, struct snapmeta_info *out)
{
	return snapmeta_update(s->meta, key, labels, n, paths, npaths, out);
}

int snapsvc_usage(struct snapsvc *s, const char *key, int64_t *size, int64_t *inodes)
{
	struct snapmeta_info i;
	uint64_t b = 0, n = 0;
	char fs[PATH_MAX];
	int ret;

	ret = snapmeta_get(s->meta, key, &i);
	if (ret)
		return ret;
	if (i.kind == SNAPMETA_COMMITTED) {
		b = i.size;
		n = i.inodes;
		if (i.remote != SNAPMETA_LOCAL && s->fs) {
			/* what the blob cache really holds for this layer */
			const char *d = snapmeta_label_get(&i, LABEL_LAYER_DIGEST);
			uint64_t cached = 0;

			if (!d)
				d = snapmeta_label_get(&i, LABEL_STARGZ_DIGEST);
			if (d && !snap_fs_cache_usage(s->fs, d, &cached))
				b += cached;
		}
	} else {
		ret = snap_dir(s, i.id, "fs", fs, sizeof(fs));
		if (!ret)
			ret = snapsvc_disk_usage(fs, &b, &n);
	}
	snapmeta_info_free(&i);
	*size = (int64_t)LZ_MIN(b, (uint64_t)INT64_MAX);
	*inodes = (int64_t)LZ_MIN(n, (uint64_t)INT64_MAX);
	return ret;
}

int snapsvc_list(struct snapsvc *s, const char *const *filters, size_t nfilters,
		 struct snapmeta_info **out, size_t *n)
{
	struct snapmeta_info *v;
	size_t nv, k = 0;
	int ret;

	ret = snapmeta_filter_check(filters, nfilters);
	if (ret)
		return ret;
	ret = snapmeta_list(s->meta, &v, &nv);
	if (ret)
		return ret;
	for (size_t i = 0; i < nv; i++) {
		if (snapmeta_filter_match(filters, nfilters, &v[i]) == 1)
			v[k++] = v[i];
		else
			snapmeta_info_free(&v[i]);
	}
	*out = v;
	*n = k;
	return 0;
}

int snapsvc_cleanup(struct snapsvc *s)
{
	char path[PATH_MAX];
	struct dirent *de;
	DIR *d;
	int removed = 0;

	pthread_mutex_lock(&s->op_lock);
	snprintf(path, sizeof(path), "%s/snapshots", s->root);
	d = opendir(path);
	if (!d) {
		int ret = -errno;

		pthread_mutex_unlock(&s->op_lock);
		return ret;
	}
	while ((de = readdir(d))) {
		char *end;
		unsigned long long id;

		if (de->d_name[0] == '.')
			continue;
		errno = 0;
		id = strtoull(de->d_name, &end, 10);
		if (!*end && !errno && de->d_name[0] != '0' && snapmeta_id_used(s->meta, id))
			continue;
		if (!*end && !errno)
			lazy_umount(s, id);
		if (snprintf(path, sizeof(path), "%s/snapshots/%s", s->root, de->d_name) >= (int)sizeof(path))
			continue;
		lz_info("cleanup: removing %s", path);
		rm_tree(path);
		removed++;
	}
	closedir(d);
	/* lazy mounts of snapshots that are gone (a crash between mount and metadata) */
	if (s->fs) {
		struct snap_fs_info *v = NULL;
		size_t n = 0;

		if (!snap_fs_list(s->fs, &v, &n)) {
			for (size_t i = 0; i < n; i++) {
				char *end;
				unsigned long long id;

				errno = 0;
				id = strtoull(v[i].id, &end, 10);
				if (!*end && !errno && snapmeta_id_used(s->meta, id))
					continue;
				lz_info("cleanup: lazy mount %s belongs to no snapshot: unmounting it", v[i].id);
				if (snap_fs_umount(s->fs, v[i].id) == 0)
					removed++;
			}
			free(v);
		}
	}
	pthread_mutex_unlock(&s->op_lock);
	return removed;
}
