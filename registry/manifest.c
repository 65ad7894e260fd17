/* SPDX-License-Identifier: Apache-2.0 */
#define LZ_MOD "reg"
#include "lazyimg/reg.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/utsname.h>

static json_object *parse_json(const char *body, size_t len)
{
	struct json_tokener *tok;
	json_object *o;

	if (len > REG_MAX_MANIFEST || len > INT32_MAX)
		return NULL;
	tok = json_tokener_new_ex(64);
	if (!tok)
		return NULL;
	o = json_tokener_parse_ex(tok, body, (int)len);
	/* trailing garbage after the object is not a manifest either */
	if (o && (json_tokener_get_error(tok) != json_tokener_success ||
		  (size_t)json_tokener_get_parse_end(tok) < len)) {
		size_t end = json_tokener_get_parse_end(tok);

		while (end < len && (body[end] == ' ' || body[end] == '\n' || body[end] == '\r' || body[end] == '\t'))
			end++;
		if (end != len) {
			json_object_put(o);
			o = NULL;
		}
	}
	json_tokener_free(tok);
	return o;
}

static const char *get_str(json_object *o, const char *key)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static int parse_desc(json_object *o, struct reg_desc *d)
{
	const char *media = get_str(o, "mediaType"), *digest = get_str(o, "digest");
	json_object *v, *ann;

	memset(d, 0, sizeof(*d));
	if (!json_object_is_type(o, json_type_object) || !digest || !reg_digest_valid(digest) ||
	    !json_object_object_get_ex(o, "size", &v) || !json_object_is_type(v, json_type_int) ||
	    json_object_get_int64(v) < 0) {
		lz_err("manifest: a descriptor lacks a valid digest or size");
		return -EFSCORRUPTED;
	}
	if (media && strlen(media) < sizeof(d->media))
		strcpy(d->media, media);
	strcpy(d->digest, digest);
	d->size = (uint64_t)json_object_get_int64(v);
	if (json_object_object_get_ex(o, "annotations", &ann) && json_object_is_type(ann, json_type_object)) {
		const char *s;

		if ((s = get_str(ann, "containerd.io/snapshot/nydus-bootstrap")) && !strcmp(s, "true"))
			d->nydus_bootstrap = true;
		if ((s = get_str(ann, "containerd.io/snapshot/nydus-blob")) && !strcmp(s, "true"))
			d->nydus_blob = true;
		if ((s = get_str(ann, "containerd.io/snapshot/nydus-fs-version")))
			d->nydus_fs_version = atoi(s);
		if ((s = get_str(ann, "containerd.io/snapshot/stargz/toc.digest")) && reg_digest_valid(s))
			strcpy(d->toc_digest, s);
		if ((s = get_str(ann, "io.containers.estargz.uncompressed-size")))
			d->uncompressed_size = strtoull(s, NULL, 10);
	}
	return 0;
}

void reg_manifest_free(struct reg_manifest *m)
{
	if (!m)
		return;
	free(m->layers);
	free(m->raw);
	memset(m, 0, sizeof(*m));
}

int reg_manifest_parse(const char *body, size_t len, struct reg_manifest *m)
{
	json_object *root = parse_json(body, len), *v, *layers;
	const char *media;
	int ret = 0;

	memset(m, 0, sizeof(*m));
	if (!root || !json_object_is_type(root, json_type_object)) {
		lz_err("manifest is not a JSON object");
		ret = -EFSCORRUPTED;
		goto out;
	}
	media = get_str(root, "mediaType");
	if (json_object_object_get_ex(root, "manifests", &v)) {
		ret = -EMEDIUMTYPE;
		goto out;
	}
	if (!json_object_object_get_ex(root, "schemaVersion", &v) || json_object_get_int(v) != 2) {
		lz_err("manifest: schemaVersion is not 2 (schema 1 is not supported)");
		ret = -EOPNOTSUPP;
		goto out;
	}
	if (media && strlen(media) < sizeof(m->media))
		strcpy(m->media, media);
	if (!json_object_object_get_ex(root, "config", &v) || (ret = parse_desc(v, &m->config)))
		goto bad;
	if (!json_object_object_get_ex(root, "layers", &layers) || !json_object_is_type(layers, json_type_array))
		goto bad;
	m->nlayers = json_object_array_length(layers);
	if (m->nlayers > REG_MAX_LAYERS) {
		lz_err("manifest: %zu layers exceed the cap %d", m->nlayers, REG_MAX_LAYERS);
		ret = -EFSCORRUPTED;
		goto out;
	}
	m->layers = lz_calloc(m->nlayers ? m->nlayers : 1, sizeof(*m->layers));
	if (!m->layers) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < m->nlayers; i++) {
		ret = parse_desc(json_object_array_get_idx(layers, i), &m->layers[i]);
		if (ret)
			goto out;
	}
	goto out;
bad:
	lz_err("manifest: missing or malformed config or layers");
	ret = -EFSCORRUPTED;
out:
	json_object_put(root);
	if (ret) {
		free(m->layers);
		m->layers = NULL;
		m->nlayers = 0;
	}
	return ret;
}

int reg_index_pick(const char *body, size_t len, const char *os, const char *arch, const char *variant,
		   char digest[REG_DIGEST_LEN + 1])
{
	json_object *root = parse_json(body, len), *list;
	int ret = -ENOENT;

	if (!root || !json_object_object_get_ex(root, "manifests", &list) ||
	    !json_object_is_type(list, json_type_array)) {
		lz_err("index is not a JSON object with a manifests array");
		json_object_put(root);
		return -EFSCORRUPTED;
	}
	for (size_t i = 0; i < json_object_array_length(list) && i < REG_MAX_LAYERS; i++) {
		json_object *e = json_object_array_get_idx(list, i), *p;
		const char *d = get_str(e, "digest"), *po, *pa, *pv;

		if (!d || !reg_digest_valid(d) || !json_object_object_get_ex(e, "platform", &p))
			continue;
		po = get_str(p, "os");
		pa = get_str(p, "architecture");
		pv = get_str(p, "variant");
		if (!po || !pa || strcmp(po, os) || strcmp(pa, arch))
			continue;
		if (variant && pv && strcmp(variant, pv))
			continue;
		strcpy(digest, d);
		ret = 0;
		break;
	}
	json_object_put(root);
	if (ret)
		lz_err("index has no manifest for %s/%s", os, arch);
	return ret;
}

static void machine_platform(const char **arch, const char **variant)
{
	struct utsname u;

	*variant = NULL;
	*arch = "amd64";
	if (uname(&u) < 0)
		return;
	if (!strcmp(u.machine, "aarch64")) {
		*arch = "arm64";
	} else if (!strncmp(u.machine, "armv7", 5)) {
		*arch = "arm";
		*variant = "v7";
	} else if (!strcmp(u.machine, "ppc64le") || !strcmp(u.machine, "s390x") || !strcmp(u.machine, "riscv64")) {
		static char m[65];

		snprintf(m, sizeof(m), "%s", u.machine);
		*arch = m;
	}
}

int reg_resolve(struct reg_client *c, struct reg_manifest *m)
{
	char *body = NULL, *media = NULL, digest[REG_DIGEST_LEN + 1], pick[REG_DIGEST_LEN + 1];
	size_t len = 0;
	int ret;

	ret = reg_get_manifest(c, "", &body, &len, &media, digest);
	if (ret)
		return ret;
	ret = reg_manifest_parse(body, len, m);
	if (ret == -EMEDIUMTYPE) {
		const char *arch, *variant;

		machine_platform(&arch, &variant);
		ret = reg_index_pick(body, len, "linux", arch, variant, pick);
		free(body);
		free(media);
		body = media = NULL;
		if (ret)
			return ret;
		ret = reg_get_manifest(c, pick, &body, &len, &media, digest);
		if (ret)
			return ret;
		ret = reg_manifest_parse(body, len, m);
	}
	free(media);
	if (ret) {
		free(body);
		return ret;
	}
	m->raw = body;
	m->raw_len = len;
	strcpy(m->digest, digest);
	return 0;
}
