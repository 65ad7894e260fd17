/* SPDX-License-Identifier: Apache-2.0 */
#define LZ_MOD "convert"
#include "lazyimg/codec.h"
#include "lazyimg/rafs_build.h"
#include "lazyimg/reg.h"

#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <openssl/sha.h>

#define REG_MAX_LAYER (8ull << 30)
#define REG_MAX_CONFIG (16u << 20)

static void tar_header(uint8_t h[512], const char *name, char type, uint32_t mode, uint64_t size)
{
	unsigned sum = 0;

	memset(h, 0, 512);
	snprintf((char *)h, 100, "%s", name);
	snprintf((char *)h + 100, 8, "%07o", mode);
	snprintf((char *)h + 108, 8, "%07o", 0);
	snprintf((char *)h + 116, 8, "%07o", 0);
	snprintf((char *)h + 124, 12, "%011llo", (unsigned long long)size);
	snprintf((char *)h + 136, 12, "%011o", 0);
	memset(h + 148, ' ', 8);
	h[156] = (uint8_t)type;
	memcpy(h + 257, "ustar", 6);
	memcpy(h + 263, "00", 2);
	for (int i = 0; i < 512; i++)
		sum += h[i];
	snprintf((char *)h + 148, 8, "%06o", sum);
	h[155] = ' ';
}

static void digest_of(const void *buf, size_t len, char out[REG_DIGEST_LEN + 1])
{
	uint8_t md[32];

	SHA256(buf, len, md);
	memcpy(out, "sha256:", 7);
	lz_hex(md, 32, out + 7);
}

/* The bootstrap layer: tar.gz of image/ and image/image.boot, deterministic (mtime 0). */
static int bootstrap_layer(const char *boot, void **gz, size_t *gzlen, char diff_id[REG_DIGEST_LEN + 1])
{
	struct stat st;
	uint8_t *tar = NULL, *out = NULL;
	size_t tlen, olen;
	z_stream zs = { 0 };
	int fd = -1, ret = 0;

	fd = open(boot, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		ret = -errno;
		goto out;
	}
	tlen = 512 + 512 + LZ_ALIGN_UP((size_t)st.st_size, 512u) + 1024;
	tar = lz_calloc(1, tlen);
	if (!tar) {
		ret = -ENOMEM;
		goto out;
	}
	tar_header(tar, "image/", '5', 0755, 0);
	tar_header(tar + 512, "image/image.boot", '0', 0644, (uint64_t)st.st_size);
	if (read(fd, tar + 1024, (size_t)st.st_size) != st.st_size) {
		ret = -EIO;
		goto out;
	}
	digest_of(tar, tlen, diff_id);
	olen = compressBound((uLong)tlen) + 64;
	out = lz_malloc(olen);
	if (!out || deflateInit2(&zs, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
		ret = -ENOMEM;
		goto out;
	}
	zs.next_in = tar;
	zs.avail_in = (uInt)tlen;
	zs.next_out = out;
	zs.avail_out = (uInt)olen;
	if (deflate(&zs, Z_FINISH) != Z_STREAM_END)
		ret = -EIO;
	*gzlen = zs.total_out;
	deflateEnd(&zs);
	if (!ret) {
		*gz = out;
		out = NULL;
	}
out:
	if (fd >= 0)
		close(fd);
	free(tar);
	free(out);
	return ret;
}

static int write_file(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	size_t done = 0;

	if (fd < 0)
		return -errno;
	while (done < len) {
		ssize_t n = write(fd, (const uint8_t *)buf + done, len - done);

		if (n <= 0) {
			close(fd);
			return n < 0 ? -errno : -EIO;
		}
		done += (size_t)n;
	}
	close(fd);
	return 0;
}

static json_object *desc_json(const char *media, const char *digest, uint64_t size)
{
	json_object *d = json_object_new_object();

	json_object_object_add(d, "mediaType", json_object_new_string(media));
	json_object_object_add(d, "digest", json_object_new_string(digest));
	json_object_object_add(d, "size", json_object_new_int64((int64_t)size));
	return d;
}

int reg_convert_image(struct reg_client *src, struct reg_client *dst, const char *dst_tag,
		      const struct rafs_build_opts *opts, const char *workdir)
{
	struct reg_manifest m = { 0 };
	char path[4200], **boots = NULL, (*blob_ids)[65] = NULL, merged[4200];
	char boot_digest[REG_DIGEST_LEN + 1], boot_diff[REG_DIGEST_LEN + 1], cfg_digest[REG_DIGEST_LEN + 1];
	void *cfg = NULL, *gz = NULL;
	size_t cfglen = 0, gzlen = 0, nboots = 0;
	json_object *cfgj = NULL, *man = NULL, *layers, *rootfs, *diffs;
	const char *cfg_out, *man_out;
	int ret;

	ret = reg_resolve(src, &m);
	if (ret)
		return ret;
	if (mkdir(workdir, 0700) < 0 && errno != EEXIST) {
		ret = -errno;
		goto out;
	}
	ret = reg_get_blob(src, m.config.digest, REG_MAX_CONFIG, &cfg, &cfglen);
	if (ret)
		goto out;
	boots = lz_calloc(m.nlayers + 1, sizeof(*boots));
	blob_ids = lz_calloc(m.nlayers + 1, sizeof(*blob_ids));
	if (!boots || !blob_ids) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < m.nlayers; i++) {
		struct rafs_build_result r;
		void *lb = NULL;
		size_t ll = 0;

		if (m.layers[i].nydus_blob || m.layers[i].nydus_bootstrap) {
			lz_err("source image is already a nydus image");
			ret = -EINVAL;
			goto out;
		}
		lz_info("converting layer %zu/%zu %s (%llu bytes)", i + 1, m.nlayers, m.layers[i].digest,
			(unsigned long long)m.layers[i].size);
		ret = reg_get_blob(src, m.layers[i].digest, REG_MAX_LAYER, &lb, &ll);
		if (ret)
			goto out;
		snprintf(path, sizeof(path), "%s/layer%zu.tar", workdir, i);
		ret = write_file(path, lb, ll);
		free(lb);
		if (ret)
			goto out;
		snprintf(merged, sizeof(merged), "%s/layer%zu", workdir, i);
		ret = rafs_build(path, merged, opts, &r);
		unlink(path);
		if (ret)
			goto out;
		if (asprintf(&boots[nboots], "%s/image.boot", merged) < 0) {
			ret = -ENOMEM;
			goto out;
		}
		strcpy(blob_ids[nboots], r.blob_id);
		nboots++;
	}
	snprintf(merged, sizeof(merged), "%s/merged.boot", workdir);
	ret = rafs_merge(merged, (const char *const *)boots, nboots, opts->fs_version);
	if (ret)
		goto out;
	ret = bootstrap_layer(merged, &gz, &gzlen, boot_diff);
	if (ret)
		goto out;
	digest_of(gz, gzlen, boot_digest);

	/* config: the diff_ids now name the nydus layers */
	cfgj = json_tokener_parse(cfg);
	if (!cfgj || !json_object_is_type(cfgj, json_type_object)) {
		lz_err("source image config is not a JSON object");
		ret = -EFSCORRUPTED;
		goto out;
	}
	/* owned by their parents from the start, so every exit path frees them */
	rootfs = json_object_new_object();
	diffs = json_object_new_array();
	json_object_object_add(cfgj, "rootfs", rootfs);
	json_object_object_add(rootfs, "type", json_object_new_string("layers"));
	json_object_object_add(rootfs, "diff_ids", diffs);
	man = json_object_new_object();
	layers = json_object_new_array();
	json_object_object_add(man, "layers", layers);
	for (size_t i = 0; i < nboots; i++) {
		char d[REG_DIGEST_LEN + 1];
		struct stat st;
		json_object *ld, *ann;

		if (!blob_ids[i][0])
			continue; /* a layer without file data has no blob */
		snprintf(d, sizeof(d), "sha256:%s", blob_ids[i]);
		snprintf(path, sizeof(path), "%s/layer%zu/blobs/%s", workdir, i, blob_ids[i]);
		if (stat(path, &st) < 0) {
			ret = -errno;
			goto out;
		}
		ret = reg_push_blob_file(dst, d, path, (uint64_t)st.st_size);
		if (ret)
			goto out;
		json_object_array_add(diffs, json_object_new_string(d));
		ld = desc_json("application/vnd.oci.image.layer.nydus.blob.v1", d, (uint64_t)st.st_size);
		ann = json_object_new_object();
		json_object_object_add(ann, "containerd.io/snapshot/nydus-blob", json_object_new_string("true"));
		json_object_object_add(ld, "annotations", ann);
		json_object_array_add(layers, ld);
	}
	ret = reg_push_blob(dst, boot_digest, gz, gzlen);
	if (ret)
		goto out;
	json_object_array_add(diffs, json_object_new_string(boot_diff));
	{
		json_object *ld = desc_json("application/vnd.oci.image.layer.v1.tar+gzip", boot_digest, gzlen);
		json_object *ann = json_object_new_object();
		char ver[8];

		snprintf(ver, sizeof(ver), "%d", opts->fs_version);
		json_object_object_add(ann, "containerd.io/snapshot/nydus-bootstrap", json_object_new_string("true"));
		json_object_object_add(ann, "containerd.io/snapshot/nydus-fs-version", json_object_new_string(ver));
		json_object_object_add(ld, "annotations", ann);
		json_object_array_add(layers, ld);
	}
	cfg_out = json_object_to_json_string_ext(cfgj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	digest_of(cfg_out, strlen(cfg_out), cfg_digest);
	ret = reg_push_blob(dst, cfg_digest, cfg_out, strlen(cfg_out));
	if (ret)
		goto out;
	json_object_object_add(man, "schemaVersion", json_object_new_int(2));
	json_object_object_add(man, "mediaType", json_object_new_string("application/vnd.oci.image.manifest.v1+json"));
	json_object_object_add(man, "config", desc_json("application/vnd.oci.image.config.v1+json", cfg_digest,
							strlen(cfg_out)));
	man_out = json_object_to_json_string_ext(man, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	ret = reg_push_manifest(dst, dst_tag, "application/vnd.oci.image.manifest.v1+json", man_out, strlen(man_out));
out:
	json_object_put(cfgj);
	json_object_put(man);
	for (size_t i = 0; boots && i < nboots; i++)
		free(boots[i]);
	free(boots);
	free(blob_ids);
	free(cfg);
	free(gz);
	reg_manifest_free(&m);
	return ret;
}
