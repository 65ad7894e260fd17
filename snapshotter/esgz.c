/* SPDX-License-Identifier: Apache-2.0 */
/*
 * eStargz images by reference: find each layer's footer and TOC in the
 * registry (two ranged reads per layer, then kept in the cache directory),
 * check the TOC against the layer's toc.digest annotation, and open the
 * layers merged (or one layer as it is, for a snapshotter).
 */
#define LZ_MOD "source"
#include "lazyimg/estargz.h"
#include "snap_int.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

bool snap_manifest_is_nydus(const struct reg_manifest *m)
{
	for (size_t i = 0; i < m->nlayers; i++)
		if (m->layers[i].nydus_bootstrap || m->layers[i].nydus_blob ||
		    strstr(m->layers[i].media, "nydus"))
			return true;
	return false;
}

static int read_file(const char *path, size_t max, char **out, size_t *len)
{
	struct stat st;
	char *buf = NULL;
	int fd, ret = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || st.st_size < 0 || (uint64_t)st.st_size > max) {
		ret = -EFBIG;
		goto out;
	}
	buf = lz_malloc((size_t)st.st_size + 1);
	if (!buf) {
		ret = -ENOMEM;
		goto out;
	}
	if (pread(fd, buf, (size_t)st.st_size, 0) != st.st_size) {
		ret = -EIO;
		goto out;
	}
	buf[st.st_size] = 0;
	*out = buf;
	*len = (size_t)st.st_size;
	buf = NULL;
out:
	free(buf);
	close(fd);
	return ret;
}

/* write-then-rename: a crash leaves either no file or the whole TOC */
static int write_file(const char *path, const void *buf, size_t len)
{
	char tmp[4300];
	int fd, ret = 0;

	snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (write(fd, buf, len) != (ssize_t)len || fdatasync(fd) < 0)
		ret = errno ? -errno : -EIO;
	close(fd);
	if (!ret && rename(tmp, path) < 0)
		ret = -errno;
	if (ret)
		unlink(tmp);
	return ret;
}

/*
 * A TOC kept in the cache directory: one header line saying where it came
 * from and what it hashes to, then the JSON. The header is checked on load,
 * so a cached TOC that was altered or torn is refetched, not trusted, even
 * for a layer without a toc.digest annotation; and a cached layer costs no
 * registry request at all (the footer's facts are in the header).
 */
#define TOC_MAGIC "lazyimg-toc 1"

int snap_toc_header_parse(const char *buf, size_t len, uint64_t blob_size, struct estargz_footer *f,
			  char want[72], size_t *hdr_len)
{
	char line[SNAP_TOC_HEADER_MAX + 1];
	const char *nl = memchr(buf, '\n', LZ_MIN(len, (size_t)SNAP_TOC_HEADER_MAX));
	unsigned long long off, size, usize;
	unsigned kind;

	if (!nl)
		return -EFSCORRUPTED;
	memcpy(line, buf, (size_t)(nl - buf));
	line[nl - buf] = 0;
	if (sscanf(line, TOC_MAGIC " %u %llu %llu %llu %71s", &kind, &off, &size, &usize, want) != 5 ||
	    kind < ESTARGZ_GZIP || kind > ESTARGZ_ZSTD_CHUNKED || !lz_range_ok(off, size, blob_size) ||
	    usize > ESTARGZ_MAX_TOC)
		return -EFSCORRUPTED;
	memset(f, 0, sizeof(*f));
	f->kind = (enum estargz_kind)kind;
	f->toc_offset = off;
	f->toc_size = size;
	f->toc_usize = usize;
	*hdr_len = (size_t)(nl + 1 - buf);
	return 0;
}

static int toc_load(const char *path, const struct reg_desc *d, struct estargz_footer *f, char **json,
		    size_t *jlen)
{
	char *buf = NULL, dg[72], want[72];
	size_t len = 0, hl;
	int ret;

	ret = read_file(path, ESTARGZ_MAX_TOC + SNAP_TOC_HEADER_MAX, &buf, &len);
	if (ret)
		return ret;
	if (snap_toc_header_parse(buf, len, d->size, f, want, &hl)) {
		lz_warn("cached TOC %s has no valid header: fetching it again", path);
		goto bad;
	}
	len -= hl;
	memmove(buf, buf + hl, len + 1);
	estargz_toc_digest(buf, len, dg);
	if (strcmp(dg, want)) {
		lz_warn("cached TOC %s hashes to %s, not the %s it was saved with: fetching it again", path, dg,
			want);
		goto bad;
	}
	*json = buf;
	*jlen = len;
	return 0;
bad:
	free(buf);
	unlink(path);
	return -ENOENT;
}

static int toc_save(const char *path, const struct estargz_footer *f, const char *json, size_t len,
		    const char *dg)
{
	char hdr[SNAP_TOC_HEADER_MAX];
	int n = snprintf(hdr, sizeof(hdr), TOC_MAGIC " %u %llu %llu %llu %s\n", (unsigned)f->kind,
			 (unsigned long long)f->toc_offset, (unsigned long long)f->toc_size,
			 (unsigned long long)f->toc_usize, dg);
	char *buf = lz_malloc((size_t)n + len);
	int ret;

	if (!buf)
		return -ENOMEM;
	memcpy(buf, hdr, (size_t)n);
	memcpy(buf + n, json, len);
	ret = write_file(path, buf, (size_t)n + len);
	free(buf);
	return ret;
}

static int toc_fetch(struct snap_source *s, const struct reg_desc *d, struct estargz_footer *f, char **json,
		     size_t *jlen)
{
	uint8_t tail[ESTARGZ_TAIL_MAX];
	size_t n = (size_t)LZ_MIN(d->size, (uint64_t)sizeof(tail));
	void *member;
	int ret;

	if (d->size < ESTARGZ_LEGACY_FOOTER_SIZE) {
		lz_err("layer %s (%llu bytes) is a plain layer, not eStargz: too small for a footer", d->digest,
		       (unsigned long long)d->size);
		return -EMEDIUMTYPE;
	}
	ret = reg_get_blob_range(s->reg, d->digest, tail, n, d->size - n);
	if (ret) {
		lz_err("layer %s: cannot read its footer: %s", d->digest, lz_strerror(ret));
		return ret;
	}
	ret = estargz_footer_parse(tail, n, d->size, f);
	if (ret == -EMEDIUMTYPE) {
		lz_err("layer %s (%s) is a plain layer, not eStargz: it has no eStargz footer", d->digest,
		       d->media);
		return ret;
	}
	if (ret)
		return ret;
	if (f->toc_size > ESTARGZ_MAX_TOC || !lz_range_ok(f->toc_offset, f->toc_size, d->size)) {
		lz_err("layer %s: TOC at %llu (+%llu) is outside the blob or over the cap", d->digest,
		       (unsigned long long)f->toc_offset, (unsigned long long)f->toc_size);
		return -EFSCORRUPTED;
	}
	member = lz_malloc(f->toc_size ? f->toc_size : 1);
	if (!member)
		return -ENOMEM;
	ret = reg_get_blob_range(s->reg, d->digest, member, f->toc_size, f->toc_offset);
	if (!ret)
		ret = estargz_toc_decode(f, member, f->toc_size, json, jlen);
	free(member);
	if (ret)
		lz_err("layer %s: cannot read its TOC: %s", d->digest, lz_strerror(ret));
	return ret;
}

/*
 * The TOC of one layer, from the cache directory if an earlier mount kept
 * it, else from the registry (footer, then the TOC range). Either way it
 * must match the layer's toc.digest annotation when there is one.
 */
static int layer_toc(struct snap_source *s, const struct reg_desc *d, struct estargz_footer *f,
		     char **json, size_t *jlen)
{
	char path[4200], dg[72];
	int ret;

	snprintf(path, sizeof(path), "%s/tocs/%s.toc", s->o.cache_dir, d->digest + 7);
	if (!toc_load(path, d, f, json, jlen)) {
		estargz_toc_digest(*json, *jlen, dg);
		if (!d->toc_digest[0] || !strcmp(dg, d->toc_digest))
			return 0;
		lz_warn("cached TOC of layer %s is %s but the manifest says %s: fetching it again", d->digest,
			dg, d->toc_digest);
		free(*json);
		*json = NULL;
		unlink(path);
	}
	ret = toc_fetch(s, d, f, json, jlen);
	if (ret)
		return ret;
	estargz_toc_digest(*json, *jlen, dg);
	if (d->toc_digest[0] && strcmp(dg, d->toc_digest)) {
		lz_err("layer %s: TOC digest mismatch: the TOC hashes to %s, the manifest's containerd.io/snapshot/stargz/toc.digest says %s",
		       d->digest, dg, d->toc_digest);
		free(*json);
		*json = NULL;
		return -EBADMSG;
	}
	if (!d->toc_digest[0])
		lz_warn("layer %s has no toc.digest annotation: its TOC (%s) cannot be verified", d->digest, dg);
	if (toc_save(path, f, *json, *jlen, dg))
		lz_warn("cannot keep the TOC of layer %s in %s", d->digest, path);
	return 0;
}

int snap_esgz_open(struct snap_source *s, const struct img_backend_ops *backend, const struct img_cache_ops *cache)
{
	struct estargz_layer ls[ESTARGZ_MAX_LAYERS];
	char *jsons[ESTARGZ_MAX_LAYERS] = { 0 };
	struct estargz_opts eo = { 0 };
	char dir[4200];
	size_t n = 0;
	int ret = 0;

	snprintf(dir, sizeof(dir), "%s/tocs", s->o.cache_dir);
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		lz_err("cache directory %s: %s", dir, strerror(errno));
		return -errno;
	}
	if (s->o.layer && !reg_digest_valid(s->o.layer)) {
		lz_err("--layer %s is not a sha256:<64 hex> digest", s->o.layer);
		return -EINVAL;
	}
	for (size_t i = 0; i < s->man.nlayers; i++) {
		const struct reg_desc *d = &s->man.layers[i];
		struct estargz_footer f;

		if (s->o.layer && strcmp(d->digest, s->o.layer))
			continue;
		if (n == ESTARGZ_MAX_LAYERS) {
			lz_err("image %s has more than %d layers", s->man.digest, ESTARGZ_MAX_LAYERS);
			ret = -EFBIG;
			goto out;
		}
		ret = layer_toc(s, d, &f, &jsons[n], &ls[n].toc_len);
		if (ret == -EMEDIUMTYPE)
			lz_err("image %s is neither a nydus image nor an eStargz image (layer %zu of %zu is a plain layer)",
			       s->man.digest, i + 1, s->man.nlayers);
		if (ret)
			goto out;
		ls[n].blob_id = d->digest + 7;
		ls[n].blob_size = d->size;
		ls[n].kind = f.kind;
		ls[n].toc_json = jsons[n];
		ls[n].toc_offset = f.toc_offset;
		n++;
	}
	if (!n) {
		lz_err(s->o.layer ? "image %s has no layer %s" : "image %s has no layers", s->man.digest,
		       s->o.layer);
		ret = -ENOENT;
		goto out;
	}
	eo.backend = backend;
	eo.backend_ctx = s;
	eo.cache = cache;
	eo.cache_ctx = s;
	eo.merge = !s->o.layer;
	eo.validate = s->o.validate;
	ret = estargz_open(ls, n, &eo, &s->es);
	if (ret)
		lz_err("image %s: the eStargz TOCs do not make a file system", s->man.digest);
out:
	for (size_t i = 0; i < ESTARGZ_MAX_LAYERS; i++)
		free(jsons[i]);
	return ret;
}
