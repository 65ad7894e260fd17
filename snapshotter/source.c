/* SPDX-License-Identifier: Apache-2.0 */
#define LZ_MOD "source"
#include "lazyimg/estargz.h"
#include "lazyimg/rafs.h"
#include "lazyimg/snap.h"
#include "snap_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static int backend_read(void *ctx, unsigned blob_index, const char *blob_id, void *buf, size_t len,
			uint64_t off)
{
	struct snap_source *s = ctx;
	char digest[REG_DIGEST_LEN + 1];

	if (snprintf(digest, sizeof(digest), "sha256:%s", blob_id) != REG_DIGEST_LEN)
		return -EINVAL;
	return reg_get_blob_range(s->reg, digest, buf, len, off);
}

static const struct img_backend_ops registry_backend = {
	.read = backend_read,
};

static int mkdir_p(const char *dir)
{
	char tmp[4096];

	if (snprintf(tmp, sizeof(tmp), "%s", dir) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int snap_source_open(const char *refstr, const struct snap_source_opts *opts, struct snap_source **out)
{
	struct snap_source *s;
	const struct reg_desc *boot;
	struct rafs_opts ro = { 0 };
	char path[4200];
	struct stat st;
	int ret;

	if (!opts->cache_dir) {
		lz_err("a cache directory is required to mount by reference");
		return -EINVAL;
	}
	s = lz_calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->o = *opts;
	ret = reg_ref_parse(refstr, &s->ref);
	if (ret)
		goto err;
	ret = reg_client_new(&s->ref, &opts->reg, &s->reg);
	if (ret)
		goto err;
	ret = reg_resolve(s->reg, &s->man);
	if (ret)
		goto err;
	if (!snap_manifest_is_nydus(&s->man)) {
		ret = snap_esgz_open(s, &registry_backend, snap_cache_ops());
		if (ret)
			goto err;
		goto opened;
	}
	if (opts->layer) {
		lz_err("--layer selects a layer of an eStargz image; %s is a nydus image", refstr);
		ret = -EINVAL;
		goto err;
	}
	ret = reg_nydus_bootstrap_layer(&s->man, &boot);
	if (ret)
		goto err;
	snprintf(path, sizeof(path), "%s/bootstraps", opts->cache_dir);
	ret = mkdir_p(path);
	if (ret) {
		lz_err("cache directory %s: %s", path, strerror(-ret));
		goto err;
	}
	/* one bootstrap per layer digest: immutable, so a cached copy is as good as a fresh one */
	snprintf(path, sizeof(path), "%s/bootstraps/%s.boot", opts->cache_dir, boot->digest + 7);
	if (stat(path, &st) < 0) {
		ret = reg_nydus_fetch_bootstrap(s->reg, boot, path);
		if (ret)
			goto err;
	}
	ro.validate = opts->validate;
	ro.merge_max = opts->merge_max;
	ro.backend = &registry_backend;
	ro.backend_ctx = s;
	snap_cache_rafs_opts(s, &ro);
	ret = rafs_open_file(path, &ro, &s->fs);
	if (ret) {
		lz_err("bootstrap of %s (layer %s) is not usable", refstr, boot->digest);
		goto err;
	}
opened:
	/* the caller may fork to serve: inherit no live connection */
	ret = reg_client_drop_connections(s->reg);
	if (ret)
		goto err;
	*out = s;
	return 0;
err:
	snap_source_close(s);
	return ret;
}

int snap_source_start(struct snap_source *s)
{
	int ret = snap_cache_init(s);

	if (!ret)
		ret = snap_cache_attach(s);
	if (!ret)
		ret = snap_prefetch_start(s);
	return ret;
}

struct image *snap_source_image(struct snap_source *s)
{
	return s->es ? estargz_image(s->es) : rafs_image(s->fs);
}

const char *snap_source_digest(const struct snap_source *s)
{
	return s->man.digest;
}

void snap_source_stats(const struct snap_source *s, struct snap_stats *st)
{
	struct reg_stats rs;

	memset(st, 0, sizeof(*st));
	reg_get_stats(s->reg, &rs);
	st->backend_bytes = rs.bytes;
	st->backend_requests = rs.requests;
	snap_cache_stats(s, st);
}

void snap_source_close(struct snap_source *s)
{
	if (!s)
		return;
	snap_prefetch_stop(s);
	rafs_close(s->fs);
	estargz_close(s->es);
	snap_cache_exit(s);
	reg_client_free(s->reg);
	reg_manifest_free(&s->man);
	free(s);
}
