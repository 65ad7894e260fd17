/* SPDX-License-Identifier: Apache-2.0 */
/* Snapshot metadata store of `lazyimg snapshotter`: one JSON file, rewritten atomically. */
#define LZ_MOD "snapmeta"
#include "lazyimg/lz.h"
#include "meta.h"

#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SNAPMETA_VERSION 1

struct snapmeta {
	pthread_mutex_t lock;
	char *path;                  /* NULL: in-memory only (snapmeta_load_buf) */
	struct snapmeta_info *v;     /* protected by lock; creation order */
	size_t n, cap;               /* protected by lock */
	uint64_t next_id;            /* protected by lock */
};

static const char *const kind_names[] = { "unknown", "view", "active", "committed" };
static const char *const remote_names[] = { "", "nydus-blob", "nydus-meta", "stargz" };

const char *snapmeta_kind_name(int kind)
{
	return kind >= 0 && kind < (int)LZ_ARRAY_SIZE(kind_names) ? kind_names[kind] : "unknown";
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void labels_free(struct snapmeta_label *l, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(l[i].key);
		free(l[i].value);
	}
	free(l);
}

void snapmeta_info_free(struct snapmeta_info *i)
{
	if (!i)
		return;
	free(i->key);
	free(i->parent);
	labels_free(i->labels, i->nlabels);
	memset(i, 0, sizeof(*i));
}

void snapmeta_infos_free(struct snapmeta_info *v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		snapmeta_info_free(&v[i]);
	free(v);
}

static int labels_check(const struct snapmeta_label *l, size_t n)
{
	if (n > SNAPMETA_MAX_LABELS) {
		lz_err("%zu labels on one snapshot, at most %d allowed", n, SNAPMETA_MAX_LABELS);
		return -EINVAL;
	}
	for (size_t i = 0; i < n; i++) {
		if (!l[i].key || !l[i].value || !l[i].key[0]) {
			lz_err("label %zu: empty key", i);
			return -EINVAL;
		}
		if (strlen(l[i].key) + strlen(l[i].value) >= SNAPMETA_MAX_LABEL) {
			lz_err("label %.64s: key and value are %zu bytes, limit %d", l[i].key,
			       strlen(l[i].key) + strlen(l[i].value), SNAPMETA_MAX_LABEL);
			return -EINVAL;
		}
		for (size_t j = 0; j < i; j++)
			if (!strcmp(l[i].key, l[j].key)) {
				lz_err("label %.64s given twice", l[i].key);
				return -EINVAL;
			}
	}
	return 0;
}

static int labels_copy(const struct snapmeta_label *src, size_t n, struct snapmeta_label **out)
{
	struct snapmeta_label *l;

	*out = NULL;
	if (!n)
		return 0;
	l = calloc(n, sizeof(*l));
	if (!l)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		l[i].key = strdup(src[i].key);
		l[i].value = strdup(src[i].value);
		if (!l[i].key || !l[i].value) {
			labels_free(l, n);
			return -ENOMEM;
		}
	}
	*out = l;
	return 0;
}

int snapmeta_info_copy(const struct snapmeta_info *src, struct snapmeta_info *dst)
{
	struct snapmeta_info c = *src;
	int ret;

	c.key = strdup(src->key);
	c.parent = strdup(src->parent ? src->parent : "");
	c.labels = NULL;
	if (!c.key || !c.parent) {
		ret = -ENOMEM;
		goto fail;
	}
	ret = labels_copy(src->labels, src->nlabels, &c.labels);
	if (ret)
		goto fail;
	*dst = c;
	return 0;
fail:
	free(c.key);
	free(c.parent);
	return ret;
}

const char *snapmeta_label_get(const struct snapmeta_info *i, const char *key)
{
	for (size_t k = 0; k < i->nlabels; k++)
		if (!strcmp(i->labels[k].key, key))
			return i->labels[k].value;
	return NULL;
}

static struct snapmeta_info *find(struct snapmeta *m, const char *key)
{
	for (size_t i = 0; i < m->n; i++)
		if (!strcmp(m->v[i].key, key))
			return &m->v[i];
	return NULL;
}

/* ---- serialisation ---- */

static json_object *info_json(const struct snapmeta_info *i)
{
	json_object *o = json_object_new_object(), *l = json_object_new_object();

	if (!o || !l)
		goto fail;
	if (json_object_object_add(o, "key", json_object_new_string(i->key)) ||
	    json_object_object_add(o, "parent", json_object_new_string(i->parent)) ||
	    json_object_object_add(o, "kind", json_object_new_string(snapmeta_kind_name(i->kind))) ||
	    json_object_object_add(o, "id", json_object_new_int64((int64_t)i->id)) ||
	    json_object_object_add(o, "created", json_object_new_int64(i->created_ns)) ||
	    json_object_object_add(o, "updated", json_object_new_int64(i->updated_ns)) ||
	    json_object_object_add(o, "size", json_object_new_int64((int64_t)i->size)) ||
	    json_object_object_add(o, "inodes", json_object_new_int64((int64_t)i->inodes)))
		goto fail;
	if (i->remote && json_object_object_add(o, "remote", json_object_new_string(remote_names[i->remote])))
		goto fail;
	for (size_t k = 0; k < i->nlabels; k++)
		if (json_object_object_add(l, i->labels[k].key, json_object_new_string(i->labels[k].value)))
			goto fail;
	if (json_object_object_add(o, "labels", l))
		goto fail_o;
	return o;
fail:
	json_object_put(l);
fail_o:
	json_object_put(o);
	return NULL;
}

static int write_all(int fd, const char *p, size_t len)
{
	while (len) {
		ssize_t w = write(fd, p, len);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

/* Caller holds m->lock. Write tmp, fsync, rename over, fsync the directory. */
static int persist(struct snapmeta *m)
{
	json_object *root = NULL, *arr = NULL;
	char tmp[PATH_MAX], dir[PATH_MAX];
	const char *s, *slash;
	int fd = -1, dfd = -1, ret;

	if (!m->path)
		return 0;
	root = json_object_new_object();
	arr = json_object_new_array();
	if (!root || !arr) {
		json_object_put(arr);
		ret = -ENOMEM;
		goto out;
	}
	json_object_object_add(root, "version", json_object_new_int(SNAPMETA_VERSION));
	json_object_object_add(root, "next_id", json_object_new_int64((int64_t)m->next_id));
	if (json_object_object_add(root, "snapshots", arr)) {
		json_object_put(arr);
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < m->n; i++) {
		json_object *o = info_json(&m->v[i]);

		if (!o || json_object_array_add(arr, o)) {
			json_object_put(o);
			ret = -ENOMEM;
			goto out;
		}
	}
	s = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN);
	if (!s) {
		ret = -ENOMEM;
		goto out;
	}
	if (strlen(s) > SNAPMETA_MAX_FILE) {
		lz_err("%s: metadata would be %zu bytes, over the %u cap", m->path, strlen(s), SNAPMETA_MAX_FILE);
		ret = -EFBIG;
		goto out;
	}
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", m->path) >= (int)sizeof(tmp)) {
		ret = -ENAMETOOLONG;
		goto out;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		ret = -errno;
		lz_err("%s: %s", tmp, strerror(-ret));
		goto out;
	}
	ret = write_all(fd, s, strlen(s));
	if (!ret && write_all(fd, "\n", 1))
		ret = -EIO;
	if (!ret && fsync(fd) < 0)
		ret = -errno;
	if (ret) {
		lz_err("%s: write: %s", tmp, strerror(-ret));
		unlink(tmp);
		goto out;
	}
	if (rename(tmp, m->path) < 0) {
		ret = -errno;
		lz_err("%s: rename: %s", m->path, strerror(-ret));
		unlink(tmp);
		goto out;
	}
	slash = strrchr(m->path, '/');
	snprintf(dir, sizeof(dir), "%.*s", slash ? (int)(slash - m->path) + (slash == m->path) : 1,
		 slash ? m->path : ".");
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	/* the rename is what makes the state durable: sync the directory entry */
	if (dfd >= 0 && fsync(dfd) < 0)
		lz_warn("%s: fsync: %s", dir, strerror(errno));
	ret = 0;
out:
	if (fd >= 0)
		close(fd);
	if (dfd >= 0)
		close(dfd);
	json_object_put(root);
	return ret;
}

/* ---- parsing (hostile input) ---- */

static int get_string(json_object *o, const char *field, bool required, size_t max, const char **out)
{
	json_object *v;
	const char *s;

	*out = "";
	if (!json_object_object_get_ex(o, field, &v)) {
		if (required) {
			lz_err("metadata: snapshot entry without \"%s\"", field);
			return -EFSCORRUPTED;
		}
		return 0;
	}
	if (!json_object_is_type(v, json_type_string)) {
		lz_err("metadata: \"%s\" is not a string", field);
		return -EFSCORRUPTED;
	}
	s = json_object_get_string(v);
	if ((size_t)json_object_get_string_len(v) != strlen(s)) {
		lz_err("metadata: \"%s\" contains a NUL byte", field);
		return -EFSCORRUPTED;
	}
	if (strlen(s) > max) {
		lz_err("metadata: \"%s\" is %zu bytes, limit %zu", field, strlen(s), max);
		return -EFSCORRUPTED;
	}
	*out = s;
	return 0;
}

static int get_int(json_object *o, const char *field, int64_t min, int64_t *out)
{
	json_object *v;

	*out = 0;
	if (!json_object_object_get_ex(o, field, &v)) {
		lz_err("metadata: missing \"%s\"", field);
		return -EFSCORRUPTED;
	}
	if (!json_object_is_type(v, json_type_int)) {
		lz_err("metadata: \"%s\" is not an integer", field);
		return -EFSCORRUPTED;
	}
	errno = 0;
	*out = json_object_get_int64(v);
	/* json-c clamps out-of-range numbers to INT64_MIN/MAX and sets errno */
	if (errno || *out < min || *out == INT64_MAX) {
		lz_err("metadata: \"%s\" = %lld is out of range", field, (long long)*out);
		return -EFSCORRUPTED;
	}
	return 0;
}

static int parse_entry(json_object *o, struct snapmeta_info *out)
{
	struct snapmeta_info i = { 0 };
	const char *key, *parent, *kind, *remote;
	json_object *l;
	int64_t v;
	int ret;
	size_t k;

	if (!json_object_is_type(o, json_type_object)) {
		lz_err("metadata: a snapshot entry is not an object");
		return -EFSCORRUPTED;
	}
	if ((ret = get_string(o, "key", true, SNAPMETA_MAX_KEY, &key)) ||
	    (ret = get_string(o, "parent", false, SNAPMETA_MAX_KEY, &parent)) ||
	    (ret = get_string(o, "kind", true, 16, &kind)) ||
	    (ret = get_string(o, "remote", false, 16, &remote)))
		return ret;
	if (!key[0]) {
		lz_err("metadata: snapshot with an empty key");
		return -EFSCORRUPTED;
	}
	for (k = 1; k < LZ_ARRAY_SIZE(kind_names); k++)
		if (!strcmp(kind, kind_names[k]))
			break;
	if (k == LZ_ARRAY_SIZE(kind_names)) {
		lz_err("metadata: snapshot %.256s: unknown kind \"%s\"", key, kind);
		return -EFSCORRUPTED;
	}
	i.kind = (int)k;
	for (k = 0; k < LZ_ARRAY_SIZE(remote_names); k++)
		if (!strcmp(remote, remote_names[k]))
			break;
	if (k == LZ_ARRAY_SIZE(remote_names)) {
		lz_err("metadata: snapshot %.256s: unknown remote kind \"%s\"", key, remote);
		return -EFSCORRUPTED;
	}
	i.remote = (int)k;
	if ((ret = get_int(o, "id", 1, &v)))
		return ret;
	i.id = (uint64_t)v;
	if ((ret = get_int(o, "created", INT64_MIN + 1, &i.created_ns)) ||
	    (ret = get_int(o, "updated", INT64_MIN + 1, &i.updated_ns)))
		return ret;
	if ((ret = get_int(o, "size", 0, &v)))
		return ret;
	i.size = (uint64_t)v;
	if ((ret = get_int(o, "inodes", 0, &v)))
		return ret;
	i.inodes = (uint64_t)v;
	if (json_object_object_get_ex(o, "labels", &l)) {
		size_t n;

		if (!json_object_is_type(l, json_type_object)) {
			lz_err("metadata: snapshot %.256s: labels is not an object", key);
			return -EFSCORRUPTED;
		}
		n = (size_t)json_object_object_length(l);
		if (n > SNAPMETA_MAX_LABELS) {
			lz_err("metadata: snapshot %.256s: %zu labels, limit %d", key, n, SNAPMETA_MAX_LABELS);
			return -EFSCORRUPTED;
		}
		if (n && !(i.labels = calloc(n, sizeof(*i.labels))))
			return -ENOMEM;
		json_object_object_foreach(l, lk, lv) {
			const char *s;

			if (i.nlabels >= n)
				break;
			if (!json_object_is_type(lv, json_type_string) ||
			    (size_t)json_object_get_string_len(lv) != strlen(json_object_get_string(lv))) {
				lz_err("metadata: snapshot %.256s: label %.64s is not a plain string", key, lk);
				ret = -EFSCORRUPTED;
				goto fail;
			}
			s = json_object_get_string(lv);
			if (!lk[0] || strlen(lk) + strlen(s) >= SNAPMETA_MAX_LABEL) {
				lz_err("metadata: snapshot %.256s: label %.64s: bad size", key, lk);
				ret = -EFSCORRUPTED;
				goto fail;
			}
			i.labels[i.nlabels].key = strdup(lk);
			i.labels[i.nlabels].value = strdup(s);
			i.nlabels++;
			if (!i.labels[i.nlabels - 1].key || !i.labels[i.nlabels - 1].value) {
				ret = -ENOMEM;
				goto fail;
			}
		}
	}
	i.key = strdup(key);
	i.parent = strdup(parent);
	if (!i.key || !i.parent) {
		ret = -ENOMEM;
		goto fail;
	}
	*out = i;
	return 0;
fail:
	snapmeta_info_free(&i);
	return ret;
}

static struct snapmeta *store_new(void)
{
	struct snapmeta *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	pthread_mutex_init(&m->lock, NULL);
	m->next_id = 1;
	return m;
}

/* Cross-entry rules: unique keys and ids below next_id, parents committed, no cycles. */
static int validate(struct snapmeta *m)
{
	for (size_t i = 0; i < m->n; i++) {
		struct snapmeta_info *s = &m->v[i];

		if (s->id >= m->next_id) {
			lz_err("metadata: snapshot %.256s: id %llu >= next_id %llu", s->key,
			       (unsigned long long)s->id, (unsigned long long)m->next_id);
			return -EFSCORRUPTED;
		}
		for (size_t j = 0; j < i; j++) {
			if (!strcmp(m->v[j].key, s->key)) {
				lz_err("metadata: snapshot %.256s listed twice", s->key);
				return -EFSCORRUPTED;
			}
			if (m->v[j].id == s->id) {
				lz_err("metadata: snapshots %.256s and %.256s share id %llu", m->v[j].key, s->key,
				       (unsigned long long)s->id);
				return -EFSCORRUPTED;
			}
		}
	}
	for (size_t i = 0; i < m->n; i++) {
		struct snapmeta_info *s = &m->v[i];
		size_t depth = 0;

		while (s->parent[0]) {
			struct snapmeta_info *p = find(m, s->parent);

			if (!p) {
				lz_err("metadata: snapshot %.256s: parent %.256s does not exist", s->key, s->parent);
				return -EFSCORRUPTED;
			}
			if (p->kind != SNAPMETA_COMMITTED) {
				lz_err("metadata: snapshot %.256s: parent %.256s is not committed", s->key, s->parent);
				return -EFSCORRUPTED;
			}
			if (++depth > m->n) {
				lz_err("metadata: snapshot %.256s: its parents form a cycle", m->v[i].key);
				return -EFSCORRUPTED;
			}
			s = p;
		}
	}
	return 0;
}

int snapmeta_load_buf(const char *buf, size_t len, struct snapmeta **out)
{
	struct json_tokener *tok = NULL;
	json_object *root = NULL, *arr, *v;
	struct snapmeta *m = NULL;
	int64_t version, next;
	size_t n;
	int ret;

	if (len > SNAPMETA_MAX_FILE) {
		lz_err("metadata: %zu bytes, over the %u cap", len, SNAPMETA_MAX_FILE);
		return -EFSCORRUPTED;
	}
	if (memchr(buf, 0, len)) {
		lz_err("metadata: NUL byte in the file");
		return -EFSCORRUPTED;
	}
	m = store_new();
	tok = json_tokener_new_ex(8);
	if (!m || !tok) {
		ret = -ENOMEM;
		goto fail;
	}
	root = json_tokener_parse_ex(tok, buf, (int)len);
	if (!root || json_tokener_get_error(tok) != json_tokener_success ||
	    json_tokener_get_parse_end(tok) < len) {
		/* trailing whitespace is fine, anything else is not */
		size_t end = root ? json_tokener_get_parse_end(tok) : 0;

		while (root && end < len && (buf[end] == '\n' || buf[end] == ' ' || buf[end] == '\t' || buf[end] == '\r'))
			end++;
		if (!root || end < len) {
			lz_err("metadata: not valid JSON (%s)",
			       root ? "data after the document" :
				      json_tokener_error_desc(json_tokener_get_error(tok) == json_tokener_continue ?
							      json_tokener_error_parse_eof :
							      json_tokener_get_error(tok)));
			ret = -EFSCORRUPTED;
			goto fail;
		}
	}
	if (!json_object_is_type(root, json_type_object)) {
		lz_err("metadata: top level is not an object");
		ret = -EFSCORRUPTED;
		goto fail;
	}
	if ((ret = get_int(root, "version", 0, &version)))
		goto fail;
	if (version != SNAPMETA_VERSION) {
		lz_err("metadata: version %lld, this lazyimg reads version %d", (long long)version, SNAPMETA_VERSION);
		ret = -EFSCORRUPTED;
		goto fail;
	}
	if ((ret = get_int(root, "next_id", 1, &next)))
		goto fail;
	m->next_id = (uint64_t)next;
	if (!json_object_object_get_ex(root, "snapshots", &arr) || !json_object_is_type(arr, json_type_array)) {
		lz_err("metadata: \"snapshots\" is missing or not an array");
		ret = -EFSCORRUPTED;
		goto fail;
	}
	n = json_object_array_length(arr);
	if (n > SNAPMETA_MAX_SNAPSHOTS) {
		lz_err("metadata: %zu snapshots, limit %d", n, SNAPMETA_MAX_SNAPSHOTS);
		ret = -EFSCORRUPTED;
		goto fail;
	}
	if (n && !(m->v = calloc(n, sizeof(*m->v)))) {
		ret = -ENOMEM;
		goto fail;
	}
	m->cap = n;
	for (size_t i = 0; i < n; i++) {
		v = json_object_array_get_idx(arr, i);
		ret = parse_entry(v, &m->v[i]);
		if (ret)
			goto fail;
		m->n++;
	}
	ret = validate(m);
	if (ret)
		goto fail;
	json_object_put(root);
	json_tokener_free(tok);
	*out = m;
	return 0;
fail:
	json_object_put(root);
	if (tok)
		json_tokener_free(tok);
	snapmeta_close(m);
	return ret;
}

int snapmeta_open(const char *path, struct snapmeta **out)
{
	struct snapmeta *m = NULL;
	char *buf = NULL;
	struct stat st;
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && errno != ENOENT) {
		ret = -errno;
		lz_err("%s: %s", path, strerror(errno));
		return ret;
	}
	if (fd < 0) {
		m = store_new();
		if (!m)
			return -ENOMEM;
	} else {
		size_t got = 0;

		if (fstat(fd, &st) < 0) {
			ret = -errno;
			goto out;
		}
		if ((uint64_t)st.st_size > SNAPMETA_MAX_FILE) {
			lz_err("%s: %lld bytes, over the %u cap", path, (long long)st.st_size, SNAPMETA_MAX_FILE);
			ret = -EFSCORRUPTED;
			goto out;
		}
		buf = malloc((size_t)st.st_size + 1);
		if (!buf) {
			ret = -ENOMEM;
			goto out;
		}
		while (got < (size_t)st.st_size) {
			ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);

			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0) {
				ret = r < 0 ? -errno : -EIO;
				lz_err("%s: read: %s", path, strerror(-ret));
				goto out;
			}
			got += (size_t)r;
		}
		ret = snapmeta_load_buf(buf, got, &m);
		if (ret) {
			lz_err("%s: cannot load the snapshot metadata", path);
			goto out;
		}
	}
	m->path = strdup(path);
	if (!m->path) {
		ret = -ENOMEM;
		goto out;
	}
	*out = m;
	m = NULL;
	ret = 0;
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	snapmeta_close(m);
	return ret;
}

void snapmeta_close(struct snapmeta *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->n; i++)
		snapmeta_info_free(&m->v[i]);
	free(m->v);
	free(m->path);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

/* ---- operations ---- */

static int key_check(const char *key)
{
	if (!key || !key[0])
		return -EINVAL;
	if (strlen(key) > SNAPMETA_MAX_KEY) {
		lz_err("key of %zu bytes, limit %d", strlen(key), SNAPMETA_MAX_KEY);
		return -EINVAL;
	}
	return 0;
}

static int copy_out(const struct snapmeta_info *i, struct snapmeta_info *out)
{
	return out ? snapmeta_info_copy(i, out) : 0;
}

int snapmeta_create(struct snapmeta *m, const char *key, const char *parent, int kind,
		    const struct snapmeta_label *labels, size_t n, int remote, struct snapmeta_info *out)
{
	struct snapmeta_info i = { 0 }, *p;
	int ret;

	if (!parent)
		parent = "";
	if ((ret = key_check(key)) || (ret = labels_check(labels, n)))
		return ret;
	if (strlen(parent) > SNAPMETA_MAX_KEY || (kind != SNAPMETA_ACTIVE && kind != SNAPMETA_VIEW &&
						  kind != SNAPMETA_COMMITTED) ||
	    remote < 0 || remote >= (int)LZ_ARRAY_SIZE(remote_names))
		return -EINVAL;
	pthread_mutex_lock(&m->lock);
	if (find(m, key)) {
		ret = -EEXIST;
		goto out;
	}
	if (parent[0]) {
		p = find(m, parent);
		if (!p) {
			ret = -ENOENT;
			goto out;
		}
		if (p->kind != SNAPMETA_COMMITTED) {
			lz_err("parent %.256s of %.256s is not a committed snapshot", parent, key);
			ret = -EINVAL;
			goto out;
		}
	}
	if (m->n >= SNAPMETA_MAX_SNAPSHOTS) {
		lz_err("already %zu snapshots, limit %d", m->n, SNAPMETA_MAX_SNAPSHOTS);
		ret = -ENOSPC;
		goto out;
	}
	if (m->n == m->cap) {
		size_t nc = m->cap ? m->cap * 2 : 16;
		struct snapmeta_info *nv = realloc(m->v, nc * sizeof(*nv));

		if (!nv) {
			ret = -ENOMEM;
			goto out;
		}
		m->v = nv;
		m->cap = nc;
	}
	i.key = strdup(key);
	i.parent = strdup(parent);
	if (!i.key || !i.parent || labels_copy(labels, n, &i.labels)) {
		ret = -ENOMEM;
		goto out;
	}
	i.nlabels = n;
	i.kind = kind;
	i.remote = remote;
	i.id = m->next_id++;
	i.created_ns = i.updated_ns = now_ns();
	m->v[m->n++] = i;
	ret = persist(m);
	if (ret) {
		m->n--;
		m->next_id--;
		goto out;
	}
	ret = copy_out(&m->v[m->n - 1], out);
	memset(&i, 0, sizeof(i));
out:
	snapmeta_info_free(&i);
	pthread_mutex_unlock(&m->lock);
	return ret;
}

int snapmeta_commit(struct snapmeta *m, const char *name, const char *key,
		    const struct snapmeta_label *labels, size_t n, uint64_t size, uint64_t inodes,
		    struct snapmeta_info *out)
{
	struct snapmeta_info *s, old;
	struct snapmeta_label *nl = NULL;
	char *nk = NULL;
	int ret;

	if ((ret = key_check(name)) || (ret = key_check(key)) || (ret = labels_check(labels, n)))
		return ret;
	if (size > INT64_MAX || inodes > INT64_MAX)
		return -EINVAL;
	pthread_mutex_lock(&m->lock);
	s = find(m, key);
	if (!s) {
		ret = -ENOENT;
		goto out;
	}
	if (s->kind != SNAPMETA_ACTIVE) {
		lz_err("commit %.256s: %.256s is a %s snapshot, not an active one", name, key,
		       snapmeta_kind_name(s->kind));
		ret = -EINVAL;
		goto out;
	}
	if (find(m, name)) {
		ret = -EEXIST;
		goto out;
	}
	nk = strdup(name);
	if (!nk || labels_copy(labels, n, &nl)) {
		ret = -ENOMEM;
		goto out;
	}
	old = *s;
	s->key = nk;
	s->labels = nl;
	s->nlabels = n;
	s->kind = SNAPMETA_COMMITTED;
	s->size = size;
	s->inodes = inodes;
	s->updated_ns = now_ns();
	ret = persist(m);
	if (ret) {
		*s = old;
		goto out;
	}
	nk = old.key;
	nl = old.labels;
	n = old.nlabels;
	ret = copy_out(s, out);
out:
	free(nk);
	labels_free(nl, nl ? n : 0);
	pthread_mutex_unlock(&m->lock);
	return ret;
}

int snapmeta_remove(struct snapmeta *m, const char *key, struct snapmeta_info *out)
{
	struct snapmeta_info *s, old;
	size_t idx;
	int ret;

	if ((ret = key_check(key)))
		return ret;
	pthread_mutex_lock(&m->lock);
	s = find(m, key);
	if (!s) {
		ret = -ENOENT;
		goto out;
	}
	for (size_t i = 0; i < m->n; i++)
		if (!strcmp(m->v[i].parent, key)) {
			ret = -EBUSY;
			goto out;
		}
	idx = (size_t)(s - m->v);
	old = *s;
	memmove(&m->v[idx], &m->v[idx + 1], (m->n - idx - 1) * sizeof(*m->v));
	m->n--;
	ret = persist(m);
	if (ret) {
		memmove(&m->v[idx + 1], &m->v[idx], (m->n - idx) * sizeof(*m->v));
		m->v[idx] = old;
		m->n++;
		goto out;
	}
	if (out)
		*out = old;
	else
		snapmeta_info_free(&old);
out:
	pthread_mutex_unlock(&m->lock);
	return ret;
}

int snapmeta_get(struct snapmeta *m, const char *key, struct snapmeta_info *out)
{
	struct snapmeta_info *s;
	int ret;

	if ((ret = key_check(key)))
		return ret == -EINVAL ? -ENOENT : ret;
	pthread_mutex_lock(&m->lock);
	s = find(m, key);
	ret = s ? copy_out(s, out) : -ENOENT;
	pthread_mutex_unlock(&m->lock);
	return ret;
}

int snapmeta_update(struct snapmeta *m, const char *key, const struct snapmeta_label *labels, size_t n,
		    const char *const *paths, size_t npaths, struct snapmeta_info *out)
{
	struct snapmeta_label *nl = NULL, *ol;
	struct snapmeta_info *s;
	size_t nn = 0, on;
	int64_t oupd;
	int ret;

	if ((ret = key_check(key)) || (ret = labels_check(labels, n)))
		return ret;
	for (size_t p = 0; p < npaths; p++)
		if (strcmp(paths[p], "labels") && strncmp(paths[p], "labels.", 7)) {
			lz_err("update %.256s: cannot update field \"%.64s\"", key, paths[p]);
			return -EINVAL;
		}
	pthread_mutex_lock(&m->lock);
	s = find(m, key);
	if (!s) {
		ret = -ENOENT;
		goto out;
	}
	/* the result set: start from all given labels (replace) or the old ones */
	bool replace = !npaths;

	for (size_t p = 0; p < npaths; p++)
		if (!strcmp(paths[p], "labels"))
			replace = true;
	if (replace) {
		if ((ret = labels_copy(labels, n, &nl)))
			goto out;
		nn = n;
	} else {
		if ((ret = labels_copy(s->labels, s->nlabels, &nl)))
			goto out;
		nn = s->nlabels;
		for (size_t p = 0; p < npaths; p++) {
			const char *lk = paths[p] + 7, *val = NULL;
			size_t j;

			for (size_t q = 0; q < n; q++)
				if (!strcmp(labels[q].key, lk))
					val = labels[q].value;
			for (j = 0; j < nn; j++)
				if (!strcmp(nl[j].key, lk))
					break;
			if (j < nn && !val) {           /* delete */
				free(nl[j].key);
				free(nl[j].value);
				nl[j] = nl[--nn];
			} else if (j < nn) {            /* set */
				char *dup = strdup(val);

				if (!dup) {
					ret = -ENOMEM;
					goto out;
				}
				free(nl[j].value);
				nl[j].value = dup;
			} else if (val) {               /* add */
				struct snapmeta_label *g = realloc(nl, (nn + 1) * sizeof(*nl));

				if (!g) {
					ret = -ENOMEM;
					goto out;
				}
				nl = g;
				nl[nn].key = strdup(lk);
				nl[nn].value = strdup(val);
				nn++;
				if (!nl[nn - 1].key || !nl[nn - 1].value) {
					ret = -ENOMEM;
					goto out;
				}
			}
		}
		if ((ret = labels_check(nl, nn)))
			goto out;
	}
	ol = s->labels;
	on = s->nlabels;
	oupd = s->updated_ns;
	s->labels = nl;
	s->nlabels = nn;
	s->updated_ns = now_ns();
	ret = persist(m);
	if (ret) {
		s->labels = ol;
		s->nlabels = on;
		s->updated_ns = oupd;
		goto out;
	}
	nl = ol;
	nn = on;
	ret = copy_out(s, out);
out:
	labels_free(nl, nn);
	pthread_mutex_unlock(&m->lock);
	return ret;
}

int snapmeta_list(struct snapmeta *m, struct snapmeta_info **out, size_t *n)
{
	struct snapmeta_info *v = NULL;
	size_t i = 0;
	int ret = 0;

	pthread_mutex_lock(&m->lock);
	if (m->n && !(v = calloc(m->n, sizeof(*v)))) {
		ret = -ENOMEM;
		goto out;
	}
	for (i = 0; i < m->n; i++) {
		ret = snapmeta_info_copy(&m->v[i], &v[i]);
		if (ret)
			goto out;
	}
out:
	pthread_mutex_unlock(&m->lock);
	if (ret) {
		snapmeta_infos_free(v, i);
		return ret;
	}
	*out = v;
	*n = i;
	return 0;
}

bool snapmeta_id_used(struct snapmeta *m, uint64_t id)
{
	bool used = false;

	pthread_mutex_lock(&m->lock);
	for (size_t i = 0; i < m->n && !used; i++)
		used = m->v[i].id == id;
	pthread_mutex_unlock(&m->lock);
	return used;
}

size_t snapmeta_count(struct snapmeta *m)
{
	size_t n;

	pthread_mutex_lock(&m->lock);
	n = m->n;
	pthread_mutex_unlock(&m->lock);
	return n;
}
