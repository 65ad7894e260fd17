/* SPDX-License-Identifier: Apache-2.0 */
/*
 * meta.h - the snapshot metadata store of `lazyimg snapshotter`: what
 * containerd's snapshots/storage MetaStore keeps, in one JSON file under the
 * snapshotter root (<root>/metadata.json), rewritten atomically (temp file,
 * fsync, rename, fsync of the directory) on every change so that a crash
 * leaves either the old or the new state and a restart finds every snapshot.
 *
 * Each snapshot has a key (for committed snapshots: their name), an optional
 * committed parent, a kind, labels, timestamps and an internal numeric id that
 * names its directory <root>/snapshots/<id>. The file is treated as hostile
 * on load: sizes and counts are capped, every reference is checked.
 *
 * Thread safety: every function takes the store's mutex; the returned infos
 * are private copies owned by the caller (snapmeta_info_free).
 */
#ifndef LAZYIMG_SNAPSHOTTER_META_H
#define LAZYIMG_SNAPSHOTTER_META_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SNAPMETA_MAX_FILE (64u << 20)      /* metadata.json size cap */
#define SNAPMETA_MAX_SNAPSHOTS 100000
#define SNAPMETA_MAX_KEY 4096              /* bytes of a key, name or parent */
#define SNAPMETA_MAX_LABELS 512            /* labels per snapshot */
#define SNAPMETA_MAX_LABEL 4096            /* key + value of one label (containerd's limit) */

/* Same numbers as containerd.services.snapshots.v1.Kind. */
enum snapmeta_kind {
	SNAPMETA_UNKNOWN = 0,
	SNAPMETA_VIEW = 1,
	SNAPMETA_ACTIVE = 2,
	SNAPMETA_COMMITTED = 3,
};

/* How a snapshot's content is provided. */
enum snapmeta_remote {
	SNAPMETA_LOCAL = 0,        /* an ordinary directory (unpacked by containerd) */
	SNAPMETA_NYDUS_BLOB,       /* nydus data layer: empty, its data is served by the meta layer */
	SNAPMETA_NYDUS_META,       /* nydus meta layer: the whole image, lazily mounted */
	SNAPMETA_STARGZ,           /* eStargz layer: this layer lazily mounted */
};

struct snapmeta_label {
	char *key;
	char *value;
};

struct snapmeta_info {
	char *key;                 /* committed: the name */
	char *parent;              /* "" for none */
	int kind;                  /* enum snapmeta_kind */
	int remote;                /* enum snapmeta_remote */
	uint64_t id;               /* internal id, directory name */
	int64_t created_ns, updated_ns; /* wall clock, ns since the epoch */
	uint64_t size, inodes;     /* committed: usage measured at commit */
	struct snapmeta_label *labels;
	size_t nlabels;
};

struct snapmeta;

/* Load (or start empty when the file is missing) <path>. -EFSCORRUPTED with a
 * log line naming the problem if the file is malformed. */
int snapmeta_open(const char *path, struct snapmeta **out);
void snapmeta_close(struct snapmeta *m);

/* Parse a metadata file image without touching the disk (the fuzz target and
 * snapmeta_open use it); *out is a store that cannot persist (path NULL). */
int snapmeta_load_buf(const char *buf, size_t len, struct snapmeta **out);

void snapmeta_info_free(struct snapmeta_info *i);
void snapmeta_infos_free(struct snapmeta_info *v, size_t n);
int snapmeta_info_copy(const struct snapmeta_info *src, struct snapmeta_info *dst);
const char *snapmeta_label_get(const struct snapmeta_info *i, const char *key);
const char *snapmeta_kind_name(int kind);

/*
 * New active or view snapshot on top of committed `parent` ("" or NULL: none).
 * -EEXIST if key exists, -ENOENT if parent is missing, -EINVAL if the parent
 * is not committed or an argument breaks a cap. out (may be NULL) receives a
 * copy including the new id. The caller creates the directory; persist
 * happens before return.
 */
int snapmeta_create(struct snapmeta *m, const char *key, const char *parent, int kind,
		    const struct snapmeta_label *labels, size_t n, int remote, struct snapmeta_info *out);
/*
 * Active `key` becomes committed `name`, keeping its id, parent and remote
 * kind; labels are replaced by the given ones. -ENOENT (no key), -EINVAL (key
 * is not active), -EEXIST (name taken).
 */
int snapmeta_commit(struct snapmeta *m, const char *name, const char *key,
		    const struct snapmeta_label *labels, size_t n, uint64_t size, uint64_t inodes,
		    struct snapmeta_info *out);
/* -ENOENT, -EBUSY when another snapshot has it as parent. out: the removed one. */
int snapmeta_remove(struct snapmeta *m, const char *key, struct snapmeta_info *out);
int snapmeta_get(struct snapmeta *m, const char *key, struct snapmeta_info *out);
/*
 * Labels update following containerd's field mask rules: no paths = replace
 * all labels; path "labels" = replace all; "labels.<k>" = set <k> from the
 * given labels or delete it if absent there. Any other path: -EINVAL.
 */
int snapmeta_update(struct snapmeta *m, const char *key, const struct snapmeta_label *labels, size_t n,
		    const char *const *paths, size_t npaths, struct snapmeta_info *out);
/* Every snapshot, in creation order (copies). */
int snapmeta_list(struct snapmeta *m, struct snapmeta_info **out, size_t *n);
/* True if some snapshot uses id (directories of others are garbage). */
bool snapmeta_id_used(struct snapmeta *m, uint64_t id);
size_t snapmeta_count(struct snapmeta *m);

/*
 * containerd list filters (meta_filter.c): strings OR-ed, selectors inside one
 * string AND-ed by ','; fields name, parent, kind, labels.<key> (quoted path
 * elements allowed); operators ==, !=, ~= or none (field present).
 * 1 match, 0 no match, -EINVAL malformed. No filters: match.
 */
int snapmeta_filter_match(const char *const *filters, size_t n, const struct snapmeta_info *i);
/* -EINVAL (and a log line) if any filter is malformed. */
int snapmeta_filter_check(const char *const *filters, size_t n);

#endif
