/* SPDX-License-Identifier: Apache-2.0 */
#define LZ_MOD "nydus"
#include "lazyimg/reg.h"
#include "lazyimg/tar.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define REG_MAX_BOOTSTRAP_LAYER (1ull << 30)

int reg_nydus_bootstrap_layer(const struct reg_manifest *m, const struct reg_desc **out)
{
	size_t nblob = 0;

	for (size_t i = 0; i < m->nlayers; i++) {
		if (m->layers[i].nydus_bootstrap) {
			*out = &m->layers[i];
			return 0;
		}
		if (m->layers[i].nydus_blob || strstr(m->layers[i].media, "nydus.blob"))
			nblob++;
	}
	if (m->nlayers && nblob == m->nlayers - 1) {
		*out = &m->layers[m->nlayers - 1];
		return 0;
	}
	{
		bool esgz = false;

		for (size_t i = 0; i < m->nlayers; i++)
			if (m->layers[i].toc_digest[0])
				esgz = true;
		lz_err("image %s is not a nydus image: none of its %zu layers is annotated containerd.io/snapshot/nydus-bootstrap (it looks like %s)",
		       m->digest, m->nlayers,
		       esgz ? "an eStargz image" : m->nlayers ? "a plain OCI image" : "an empty image");
	}
	return -EMEDIUMTYPE;
}

int reg_nydus_fetch_bootstrap(struct reg_client *c, const struct reg_desc *layer, const char *path)
{
	struct lz_tar *t = NULL;
	struct lz_tar_entry e;
	void *buf = NULL;
	size_t len = 0;
	char tmp[4200];
	int ret, fd = -1;
	bool found = false;

	if (layer->size > REG_MAX_BOOTSTRAP_LAYER) {
		lz_err("bootstrap layer %s: %llu bytes exceeds the cap", layer->digest,
		       (unsigned long long)layer->size);
		return -EFBIG;
	}
	ret = reg_get_blob(c, layer->digest, REG_MAX_BOOTSTRAP_LAYER, &buf, &len);
	if (ret)
		return ret;
	ret = lz_tar_open_mem(buf, len, &t);
	if (ret)
		goto out;
	while ((ret = lz_tar_next(t, &e)) == 1) {
		const char *p = e.path;

		if (!strncmp(p, "./", 2))
			p += 2;
		if (e.type != '0' || (strcmp(p, "image/image.boot") && strcmp(p, "image.boot")))
			continue;
		if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof(tmp)) {
			ret = -ENAMETOOLONG;
			break;
		}
		fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd < 0) {
			ret = -errno;
			lz_err("cannot create %s: %s", tmp, strerror(errno));
			break;
		}
		for (;;) {
			char chunk[65536];
			ssize_t n = lz_tar_read(t, chunk, sizeof(chunk));

			if (n < 0) {
				ret = (int)n;
				break;
			}
			if (n == 0)
				break;
			if (write(fd, chunk, (size_t)n) != n) {
				ret = -errno ? -errno : -EIO;
				break;
			}
		}
		if (ret < 0)
			break;
		if (fsync(fd) < 0 || rename(tmp, path) < 0) {
			ret = -errno;
			break;
		}
		found = true;
		ret = 0;
		break;
	}
	if (ret == 0 && !found) {
		lz_err("bootstrap layer %s has no image/image.boot", layer->digest);
		ret = -ENOENT;
	}
out:
	if (fd >= 0) {
		close(fd);
		if (!found)
			unlink(tmp);
	}
	lz_tar_close(t);
	free(buf);
	return ret < 0 ? ret : 0;
}
