/* SPDX-License-Identifier: Apache-2.0 */
/*
 * state.c - persisted mounts: <root>/state/<id>.json, one small JSON object
 * per mount with what a restarted server needs to serve it again:
 *   {"version":1, "id":..., "ref":..., "pinned":"host/repo@sha256:...",
 *    "layer":"sha256:..." or "", "labels":{...}, "init":"<hex of FUSE INIT>"}
 * Written to a temporary file, fsync'd, renamed over the old one and the
 * directory fsync'd: a crash leaves the old file or the new one, never half.
 * Files are read as hostile input: size capped, every field checked.
 */
#define LZ_MOD "snapfs"
#include "lazyimg/reg.h"
#include "snapfs_int.h"

#include <dirent.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define STATE_VERSION 1
#define STATE_FILE_MAX (SNAP_LABELS_MAX + 8192)

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? -errno : -EIO;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static void hex_of(const uint8_t *b, size_t n, char *out)
{
	static const char h[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = h[b[i] >> 4];
		out[2 * i + 1] = h[b[i] & 15];
	}
	out[2 * n] = 0;
}

static int unhex(const char *s, uint8_t *out, size_t cap, size_t *n)
{
	size_t l = strlen(s);

	if (l % 2 || l / 2 > cap)
		return -EINVAL;
	for (size_t i = 0; i < l / 2; i++) {
		unsigned v;

		if (sscanf(s + 2 * i, "%2x", &v) != 1 || !strchr("0123456789abcdef", s[2 * i]) ||
		    !strchr("0123456789abcdef", s[2 * i + 1]))
			return -EINVAL;
		out[i] = (uint8_t)v;
	}
	*n = l / 2;
	return 0;
}

char *snapfs_labels_to_json(const struct snap_label *l, size_t n)
{
	json_object *o = json_object_new_object();
	char *s = NULL;

	if (!o)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (l[i].key && l[i].value)
			json_object_object_add(o, l[i].key, json_object_new_string(l[i].value));
	s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return s;
}

/* *mem holds the strings the labels point into; free(*labels) and free(*mem). */
int snapfs_labels_from_json(const char *json, struct snap_label **out, size_t *n, void **mem)
{
	json_object *o = json_tokener_parse(json);
	struct snap_label *v = NULL;
	size_t cnt = 0, bytes = 0, i = 0;
	char *p;

	if (!o || !json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		return -EINVAL;
	}
	json_object_object_foreach(o, k, val) {
		if (!json_object_is_type(val, json_type_string)) {
			json_object_put(o);
			return -EINVAL;
		}
		cnt++;
		bytes += strlen(k) + strlen(json_object_get_string(val)) + 2;
	}
	if (cnt > SNAP_NLABELS_MAX || bytes > SNAP_LABELS_MAX) {
		json_object_put(o);
		return -E2BIG;
	}
	v = lz_calloc(cnt ? cnt : 1, sizeof(*v));
	p = lz_malloc(bytes ? bytes : 1);
	if (!v || !p) {
		free(v);
		free(p);
		json_object_put(o);
		return -ENOMEM;
	}
	*mem = p;
	json_object_object_foreach(o, k2, val2) {
		const char *s = json_object_get_string(val2);

		v[i].key = p;
		p = stpcpy(p, k2) + 1;
		v[i].value = p;
		p = stpcpy(p, s) + 1;
		i++;
	}
	json_object_put(o);
	*out = v;
	*n = cnt;
	return 0;
}

int snapfs_state_save(struct snap_fs *fs, const struct snap_mnt *m)
{
	char path[PATH_MAX * 2], tmp[PATH_MAX * 2 + 8], init[IMGFS_INIT_MAX * 2 + 1];
	json_object *o = json_object_new_object(), *labels;
	const char *text;
	int fd = -1, dfd, ret;

	if (!o)
		return -ENOMEM;
	labels = json_tokener_parse(m->labels_json ? m->labels_json : "{}");
	hex_of(m->init_req, m->init_len, init);
	json_object_object_add(o, "version", json_object_new_int(STATE_VERSION));
	json_object_object_add(o, "id", json_object_new_string(m->id));
	json_object_object_add(o, "ref", json_object_new_string(m->ref));
	json_object_object_add(o, "pinned", json_object_new_string(m->pinned));
	json_object_object_add(o, "layer", json_object_new_string(m->layer));
	json_object_object_add(o, "labels", labels ? labels : json_object_new_object());
	json_object_object_add(o, "init", json_object_new_string(init));
	text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	snprintf(path, sizeof(path), "%s/%s.json", fs->state_dir, m->id);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	ret = write_all(fd, text, strlen(text));
	if (!ret)
		ret = write_all(fd, "\n", 1);
	if (!ret && fsync(fd) < 0)
		ret = -errno;
	if (close(fd) < 0 && !ret)
		ret = -errno;
	fd = -1;
	if (!ret && rename(tmp, path) < 0)
		ret = -errno;
	if (ret) {
		unlink(tmp);
		goto out;
	}
	dfd = open(fs->state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
out:
	json_object_put(o);
	return ret;
}

int snapfs_state_remove(struct snap_fs *fs, const char *id)
{
	char path[PATH_MAX * 2];
	int dfd;

	snprintf(path, sizeof(path), "%s/%s.json", fs->state_dir, id);
	if (unlink(path) < 0)
		return errno == ENOENT ? 0 : -errno;
	dfd = open(fs->state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	return 0;
}

static const char *str_field(json_object *o, const char *k, size_t max)
{
	json_object *v;
	const char *s;

	if (!json_object_object_get_ex(o, k, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	s = json_object_get_string(v);
	return strlen(s) < max ? s : NULL;
}

/* Parse one state file's text into a new entry; id is the one its file name gives. */
int snapfs_state_parse(const char *text, size_t len, const char *id, struct snap_mnt **out)
{
	json_object *o = NULL, *labels, *v;
	const char *ref, *pinned, *layer, *init, *fid;
	struct snap_mnt *m = NULL;
	json_tokener *tok;
	int ret = -EINVAL;

	if (len == 0 || len > STATE_FILE_MAX || !snap_fs_id_valid(id))
		return -EINVAL;
	tok = json_tokener_new();
	if (!tok)
		return -ENOMEM;
	o = json_tokener_parse_ex(tok, text, (int)len);
	/* one JSON object, then at most whitespace */
	if (!o || json_tokener_get_error(tok) != json_tokener_success ||
	    strspn(text + tok->char_offset, " \t\r\n") != len - (size_t)tok->char_offset ||
	    !json_object_is_type(o, json_type_object))
		goto out;
	if (!json_object_object_get_ex(o, "version", &v) || !json_object_is_type(v, json_type_int) ||
	    json_object_get_int(v) != STATE_VERSION)
		goto out;
	fid = str_field(o, "id", SNAP_FS_ID_MAX + 1);
	ref = str_field(o, "ref", SNAP_REF_MAX);
	pinned = str_field(o, "pinned", SNAP_REF_MAX);
	layer = str_field(o, "layer", 80);
	init = str_field(o, "init", IMGFS_INIT_MAX * 2 + 1);
	if (!fid || strcmp(fid, id) || !ref || !*ref || !pinned || !layer || !init ||
	    (*layer && !reg_digest_valid(layer)) ||
	    !json_object_object_get_ex(o, "labels", &labels) || !json_object_is_type(labels, json_type_object))
		goto out;
	json_object_object_foreach(labels, lk, lv) {
		(void)lk;
		if (!json_object_is_type(lv, json_type_string))
			goto out;
	}
	m = lz_calloc(1, sizeof(*m));
	if (!m) {
		ret = -ENOMEM;
		goto out;
	}
	snprintf(m->id, sizeof(m->id), "%s", id);
	snprintf(m->ref, sizeof(m->ref), "%s", ref);
	snprintf(m->pinned, sizeof(m->pinned), "%s", pinned);
	snprintf(m->layer, sizeof(m->layer), "%s", layer);
	m->labels_json = strdup(json_object_to_json_string_ext(labels, JSON_C_TO_STRING_PLAIN));
	if (!m->labels_json || strlen(m->labels_json) > SNAP_LABELS_MAX ||
	    unhex(init, m->init_req, sizeof(m->init_req), &m->init_len)) {
		free(m->labels_json);
		free(m);
		m = NULL;
		goto out;
	}
	*out = m;
	ret = 0;
out:
	json_object_put(o);
	json_tokener_free(tok);
	return ret;
}

static int load_one(const char *path, const char *id, struct snap_mnt **out)
{
	char *text = NULL;
	struct stat st;
	int fd, ret;
	ssize_t n;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 || st.st_size > STATE_FILE_MAX) {
		close(fd);
		return -EFBIG;
	}
	text = lz_malloc((size_t)st.st_size + 1);
	if (!text) {
		close(fd);
		return -ENOMEM;
	}
	n = read(fd, text, (size_t)st.st_size);
	close(fd);
	if (n != st.st_size) {
		free(text);
		return -EIO;
	}
	text[n] = 0;
	ret = snapfs_state_parse(text, (size_t)n, id, out);
	free(text);
	return ret;
}

int snapfs_state_load_all(struct snap_fs *fs, snapfs_state_fn fn, void *arg)
{
	DIR *d = opendir(fs->state_dir);
	struct dirent *de;
	int ret = 0;

	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		char id[SNAP_FS_ID_MAX + 1], path[PATH_MAX * 2];
		size_t l = strlen(de->d_name);
		struct snap_mnt *m = NULL;
		int r;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", fs->state_dir, de->d_name);
		if (l > 4 && !strcmp(de->d_name + l - 4, ".tmp")) {
			unlink(path); /* a write that never reached its rename */
			continue;
		}
		if (l <= 5 || strcmp(de->d_name + l - 5, ".json") || l - 5 > SNAP_FS_ID_MAX)
			continue;
		snprintf(id, sizeof(id), "%.*s", (int)(l - 5), de->d_name);
		if (!snap_fs_id_valid(id))
			continue;
		r = load_one(path, id, &m);
		if (r) {
			lz_err("state file %s is not usable (%s): skipped", path, lz_strerror(r));
			continue;
		}
		r = fn(arg, m);
		if (r) {
			ret = r;
			break;
		}
	}
	closedir(d);
	return ret;
}
