/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit test for the snapshot metadata store of `lazyimg snapshotter`
 * (snapshotter/meta.c, meta_filter.c) and the service core's disk usage:
 * create/commit/remove/update semantics with containerd's error rules,
 * persistence across reopen, atomic rewrite (no temp file left, a failed
 * write keeps the old state), malformed files rejected with -EFSCORRUPTED,
 * list filters as containerd sends them, hard links counted once in usage.
 * Exit 0 pass, 1 fail.
 */
#include "lazyimg/lz.h"
#include "../../snapshotter/meta.h"
#include "../../snapshotter/overlay.h"
#include "../t.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64], path[128];

static int rm_cb(const char *p, const struct stat *st, int f, struct FTW *w)
{
	return remove(p);
}

static void write_file(const char *p, const char *s)
{
	FILE *f = fopen(p, "w");

	if (!f) {
		T_FAIL("%s: %s", p, strerror(errno));
		return;
	}
	fputs(s, f);
	fclose(f);
}

static int load_str(const char *s)
{
	struct snapmeta *m = NULL;
	int ret = snapmeta_load_buf(s, strlen(s), &m);

	snapmeta_close(m);
	return ret;
}

static void test_basic(void)
{
	const struct snapmeta_label l1[] = {
		{ (char *)"containerd.io/snapshot.ref", (char *)"sha256:aa" },
		{ (char *)"k", (char *)"v" },
	};
	const struct snapmeta_label l2[] = { { (char *)"containerd.io/gc.root", (char *)"x" } };
	struct snapmeta_info i = { 0 }, *v = NULL;
	struct snapmeta *m = NULL;
	size_t n = 0;
	uint64_t id1;

	T_EQ_INT(snapmeta_open(path, &m), 0);
	if (!m)
		return;
	T_EQ_INT(snapmeta_count(m), 0);
	/* create: active with labels, no parent */
	T_EQ_INT(snapmeta_create(m, "ns/1/a", "", SNAPMETA_ACTIVE, l1, 2, SNAPMETA_LOCAL, &i), 0);
	T_EQ_STR(i.key, "ns/1/a");
	T_EQ_INT(i.kind, SNAPMETA_ACTIVE);
	T_ASSERT(i.id >= 1);
	T_EQ_STR(snapmeta_label_get(&i, "k"), "v");
	T_ASSERT(i.created_ns > 0 && i.created_ns == i.updated_ns);
	id1 = i.id;
	snapmeta_info_free(&i);
	/* duplicates, missing and uncommitted parents */
	T_EQ_INT(snapmeta_create(m, "ns/1/a", "", SNAPMETA_ACTIVE, NULL, 0, 0, NULL), -EEXIST);
	T_EQ_INT(snapmeta_create(m, "ns/2/b", "nope", SNAPMETA_ACTIVE, NULL, 0, 0, NULL), -ENOENT);
	T_EQ_INT(snapmeta_create(m, "ns/2/b", "ns/1/a", SNAPMETA_ACTIVE, NULL, 0, 0, NULL), -EINVAL);
	T_EQ_INT(snapmeta_create(m, "", "", SNAPMETA_ACTIVE, NULL, 0, 0, NULL), -EINVAL);
	/* commit: key disappears, name appears, same id, labels replaced */
	T_EQ_INT(snapmeta_commit(m, "layer1", "ns/1/a", l2, 1, 4096, 3, &i), 0);
	T_EQ_STR(i.key, "layer1");
	T_EQ_INT(i.kind, SNAPMETA_COMMITTED);
	T_EQ_U64(i.id, id1);
	T_EQ_U64(i.size, 4096);
	T_EQ_U64(i.inodes, 3);
	T_ASSERT(!snapmeta_label_get(&i, "k"));
	T_EQ_STR(snapmeta_label_get(&i, "containerd.io/gc.root"), "x");
	snapmeta_info_free(&i);
	T_EQ_INT(snapmeta_get(m, "ns/1/a", NULL), -ENOENT);
	T_EQ_INT(snapmeta_commit(m, "layer1b", "ns/1/a", NULL, 0, 0, 0, NULL), -ENOENT);
	/* children on a committed parent; commit of a view is refused; name taken */
	T_EQ_INT(snapmeta_create(m, "ns/3/c", "layer1", SNAPMETA_ACTIVE, NULL, 0, 0, NULL), 0);
	T_EQ_INT(snapmeta_create(m, "ns/4/v", "layer1", SNAPMETA_VIEW, NULL, 0, 0, NULL), 0);
	T_EQ_INT(snapmeta_commit(m, "x", "ns/4/v", NULL, 0, 0, 0, NULL), -EINVAL);
	T_EQ_INT(snapmeta_commit(m, "layer1", "ns/3/c", NULL, 0, 0, 0, NULL), -EEXIST);
	T_EQ_INT(snapmeta_commit(m, "layer2", "ns/3/c", NULL, 0, 0, 0, NULL), 0);
	T_EQ_INT(snapmeta_create(m, "remote", "layer2", SNAPMETA_COMMITTED, NULL, 0, SNAPMETA_NYDUS_META, NULL), 0);
	/* remove: a parent with children is busy */
	T_EQ_INT(snapmeta_remove(m, "layer1", NULL), -EBUSY);
	T_EQ_INT(snapmeta_remove(m, "ns/4/v", &i), 0);
	T_EQ_INT(i.kind, SNAPMETA_VIEW);
	snapmeta_info_free(&i);
	T_EQ_INT(snapmeta_remove(m, "ns/4/v", NULL), -ENOENT);
	/* ids are never reused */
	T_EQ_INT(snapmeta_create(m, "ns/5/d", "", SNAPMETA_ACTIVE, NULL, 0, 0, &i), 0);
	T_ASSERT(i.id > id1 + 3);
	snapmeta_info_free(&i);
	T_EQ_INT(snapmeta_list(m, &v, &n), 0);
	T_EQ_INT(n, 4);
	if (n == 4) {
		T_EQ_STR(v[0].key, "layer1");
		T_EQ_STR(v[1].key, "layer2");
		T_EQ_STR(v[1].parent, "layer1");
		T_EQ_STR(v[2].key, "remote");
		T_EQ_INT(v[2].remote, SNAPMETA_NYDUS_META);
		T_EQ_STR(v[3].key, "ns/5/d");
	}
	snapmeta_infos_free(v, n);
	T_ASSERT(snapmeta_id_used(m, id1));
	snapmeta_close(m);
}

static void test_update(void)
{
	const struct snapmeta_label set[] = {
		{ (char *)"a", (char *)"1" }, { (char *)"b", (char *)"2" }, { (char *)"c", (char *)"3" },
	};
	const struct snapmeta_label one[] = { { (char *)"b", (char *)"20" }, { (char *)"d", (char *)"4" } };
	const char *const p_all[] = { "labels" };
	const char *const p_some[] = { "labels.b", "labels.c", "labels.d" };
	const char *const p_bad[] = { "parent" };
	struct snapmeta_info i = { 0 };
	struct snapmeta *m = NULL;

	T_EQ_INT(snapmeta_open(path, &m), 0);
	if (!m)
		return;
	/* no mask: replace all */
	T_EQ_INT(snapmeta_update(m, "layer2", set, 3, NULL, 0, &i), 0);
	T_EQ_INT(i.nlabels, 3);
	snapmeta_info_free(&i);
	/* labels.b set, labels.c deleted (absent from the given labels), labels.d added */
	T_EQ_INT(snapmeta_update(m, "layer2", one, 2, p_some, 3, &i), 0);
	T_EQ_INT(i.nlabels, 3);
	T_EQ_STR(snapmeta_label_get(&i, "a"), "1");
	T_EQ_STR(snapmeta_label_get(&i, "b"), "20");
	T_ASSERT(!snapmeta_label_get(&i, "c"));
	T_EQ_STR(snapmeta_label_get(&i, "d"), "4");
	T_ASSERT(i.updated_ns >= i.created_ns);
	snapmeta_info_free(&i);
	/* "labels": replace all */
	T_EQ_INT(snapmeta_update(m, "layer2", one, 1, p_all, 1, &i), 0);
	T_EQ_INT(i.nlabels, 1);
	snapmeta_info_free(&i);
	T_EQ_INT(snapmeta_update(m, "layer2", one, 1, p_bad, 1, NULL), -EINVAL);
	T_EQ_INT(snapmeta_update(m, "nope", one, 1, NULL, 0, NULL), -ENOENT);
	snapmeta_close(m);
}

/* Reopen: everything persisted; the temp file never stays behind. */
static void test_persist(void)
{
	struct snapmeta_info i = { 0 };
	struct snapmeta *m = NULL;
	char tmp[160];

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	T_ASSERT(access(tmp, F_OK) < 0);
	T_EQ_INT(snapmeta_open(path, &m), 0);
	if (!m)
		return;
	T_EQ_INT(snapmeta_count(m), 4);
	T_EQ_INT(snapmeta_get(m, "layer2", &i), 0);
	T_EQ_INT(i.kind, SNAPMETA_COMMITTED);
	T_EQ_STR(i.parent, "layer1");
	T_EQ_STR(snapmeta_label_get(&i, "b"), "20");
	snapmeta_info_free(&i);
	T_EQ_INT(snapmeta_get(m, "remote", &i), 0);
	T_EQ_INT(i.remote, SNAPMETA_NYDUS_META);
	snapmeta_info_free(&i);
	T_EQ_INT(snapmeta_get(m, "ns/5/d", &i), 0);
	T_EQ_INT(i.kind, SNAPMETA_ACTIVE);
	snapmeta_info_free(&i);
	/* a write that cannot happen (the temp name is a directory) keeps memory and disk as they were */
	T_EQ_INT(mkdir(tmp, 0700), 0);
	T_ASSERT(snapmeta_create(m, "ns/9/z", "", SNAPMETA_ACTIVE, NULL, 0, 0, NULL) < 0);
	T_EQ_INT(snapmeta_get(m, "ns/9/z", NULL), -ENOENT);
	T_ASSERT(snapmeta_remove(m, "ns/5/d", NULL) < 0);
	T_EQ_INT(snapmeta_get(m, "ns/5/d", NULL), 0);
	T_ASSERT(snapmeta_commit(m, "layer3", "ns/5/d", NULL, 0, 0, 0, NULL) < 0);
	T_EQ_INT(snapmeta_get(m, "ns/5/d", &i), 0);
	T_EQ_INT(i.kind, SNAPMETA_ACTIVE);
	snapmeta_info_free(&i);
	rmdir(tmp);
	snapmeta_close(m);
	m = NULL;
	T_EQ_INT(snapmeta_open(path, &m), 0);
	if (m)
		T_EQ_INT(snapmeta_count(m), 4);
	snapmeta_close(m);
}

static void test_corrupt(void)
{
	static const char *const bad[] = {
		"",
		"[]",
		"{\"version\":2,\"next_id\":1,\"snapshots\":[]}",
		"{\"version\":1,\"snapshots\":[]}",
		"{\"version\":1,\"next_id\":0,\"snapshots\":[]}",
		"{\"version\":1,\"next_id\":1,\"snapshots\":{}}",
		"{\"version\":1,\"next_id\":1,\"snapshots\":[]} x",
		"{\"version\":1,\"next_id\":1,\"snapshots\":[",
		/* id >= next_id */
		"{\"version\":1,\"next_id\":2,\"snapshots\":[{\"key\":\"a\",\"kind\":\"active\",\"id\":2,"
		"\"created\":0,\"updated\":0,\"size\":0,\"inodes\":0}]}",
		/* unknown kind */
		"{\"version\":1,\"next_id\":9,\"snapshots\":[{\"key\":\"a\",\"kind\":\"frozen\",\"id\":1,"
		"\"created\":0,\"updated\":0,\"size\":0,\"inodes\":0}]}",
		/* missing parent */
		"{\"version\":1,\"next_id\":9,\"snapshots\":[{\"key\":\"a\",\"parent\":\"p\",\"kind\":\"active\",\"id\":1,"
		"\"created\":0,\"updated\":0,\"size\":0,\"inodes\":0}]}",
		/* parent not committed */
		"{\"version\":1,\"next_id\":9,\"snapshots\":[{\"key\":\"p\",\"kind\":\"active\",\"id\":1,"
		"\"created\":0,\"updated\":0,\"size\":0,\"inodes\":0},{\"key\":\"a\",\"parent\":\"p\",\"kind\":\"active\","
		"\"id\":2,\"created\":0,\"updated\":0,\"size\":0,\"inodes\":0}]}",
		/* a cycle of committed parents */
		"{\"version\":1,\"next_id\":9,\"snapshots\":[{\"key\":\"p\",\"parent\":\"q\",\"kind\":\"committed\",\"id\":1,"
		"\"created\":0,\"updated\":0,\"size\":0,\"inodes\":0},{\"key\":\"q\",\"parent\":\"p\",\"kind\":\"committed\","
		"\"id\":2,\"created\":0,\"updated\":0,\"size\":0,\"inodes\":0}]}",
		/* duplicate key, duplicate id */
		"{\"version\":1,\"next_id\":9,\"snapshots\":[{\"key\":\"a\",\"kind\":\"active\",\"id\":1,"
		"\"created\":0,\"updated\":0,\"size\":0,\"inodes\":0},{\"key\":\"a\",\"kind\":\"active\","
		"\"id\":2,\"created\":0,\"updated\":0,\"size\":0,\"inodes\":0}]}",
		"{\"version\":1,\"next_id\":9,\"snapshots\":[{\"key\":\"a\",\"kind\":\"active\",\"id\":1,"
		"\"created\":0,\"updated\":0,\"size\":0,\"inodes\":0},{\"key\":\"b\",\"kind\":\"active\","
		"\"id\":1,\"created\":0,\"updated\":0,\"size\":0,\"inodes\":0}]}",
		/* negative size, label not a string, NUL in a key, unknown remote kind */
		"{\"version\":1,\"next_id\":9,\"snapshots\":[{\"key\":\"a\",\"kind\":\"active\",\"id\":1,"
		"\"created\":0,\"updated\":0,\"size\":-1,\"inodes\":0}]}",
		"{\"version\":1,\"next_id\":9,\"snapshots\":[{\"key\":\"a\",\"kind\":\"active\",\"id\":1,"
		"\"created\":0,\"updated\":0,\"size\":0,\"inodes\":0,\"labels\":{\"x\":1}}]}",
		"{\"version\":1,\"next_id\":9,\"snapshots\":[{\"key\":\"a\\u0000b\",\"kind\":\"active\",\"id\":1,"
		"\"created\":0,\"updated\":0,\"size\":0,\"inodes\":0}]}",
		"{\"version\":1,\"next_id\":9,\"snapshots\":[{\"key\":\"a\",\"kind\":\"active\",\"id\":1,"
		"\"created\":0,\"updated\":0,\"size\":0,\"inodes\":0,\"remote\":\"ftp\"}]}",
		/* a number past int64 */
		"{\"version\":1,\"next_id\":99999999999999999999,\"snapshots\":[]}",
		/* deep nesting */
		"{\"version\":1,\"next_id\":1,\"snapshots\":[],\"x\":[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]}",
	};
	struct snapmeta *m = NULL;

	for (size_t k = 0; k < LZ_ARRAY_SIZE(bad); k++) {
		int ret = load_str(bad[k]);

		if (ret != -EFSCORRUPTED)
			T_FAIL("bad metadata %zu loaded with %d: %.80s", k, ret, bad[k]);
	}
	T_EQ_INT(load_str("{\"version\":1,\"next_id\":1,\"snapshots\":[]}\n"), 0);
	/* a corrupt file on disk: open fails, the file is left for inspection */
	write_file(path, "{\"version\":1,");
	T_EQ_INT(snapmeta_open(path, &m), -EFSCORRUPTED);
	T_ASSERT(!m);
	T_EQ_INT(access(path, F_OK), 0);
}

static int match(const char *f, const struct snapmeta_info *i)
{
	return snapmeta_filter_match(&f, 1, i);
}

static void test_filters(void)
{
	struct snapmeta_label l[] = {
		{ (char *)"containerd.io/snapshot.ref", (char *)"sha256:abc" },
		{ (char *)"foo", (char *)"bar baz" },
	};
	struct snapmeta_info i = { .key = (char *)"sha256:abc", .parent = (char *)"default/3/sha256:p",
				   .kind = SNAPMETA_COMMITTED, .labels = l, .nlabels = 2 };
	struct snapmeta_info root = { .key = (char *)"sha256:r", .parent = (char *)"", .kind = SNAPMETA_ACTIVE };
	const char *const two[] = { "name==nope", "kind==committed" };

	/* the remote-snapshot lookup containerd sends */
	T_EQ_INT(match("labels.\"containerd.io/snapshot.ref\"==sha256:abc,parent==\"default/3/sha256:p\"", &i), 1);
	T_EQ_INT(match("labels.\"containerd.io/snapshot.ref\"==sha256:abc,parent==\"default/3/sha256:q\"", &i), 0);
	T_EQ_INT(match("labels.\"containerd.io/snapshot.ref\"==sha256:abc,parent==\"\"", &root), 0);
	T_EQ_INT(match("parent==\"\"", &root), 1);
	T_EQ_INT(match("kind==committed", &i), 1);
	T_EQ_INT(match("kind==active", &i), 0);
	T_EQ_INT(match("kind!=active", &i), 1);
	T_EQ_INT(match("name==sha256:abc", &i), 1);
	T_EQ_INT(match("labels.foo", &i), 1);
	T_EQ_INT(match("labels.missing", &i), 0);
	T_EQ_INT(match("labels.missing!=x", &i), 1);
	T_EQ_INT(match("labels.foo==\"bar baz\"", &i), 1);
	T_EQ_INT(match("labels.foo~=^bar", &i), 1);
	T_EQ_INT(match("labels.foo~=^baz", &i), 0);
	T_EQ_INT(match("", &i), 1);
	T_EQ_INT(match("unknownfield==x", &i), 0);
	T_EQ_INT(snapmeta_filter_match(two, 2, &i), 1);    /* OR */
	T_EQ_INT(snapmeta_filter_match(two, 2, &root), 0);
	T_EQ_INT(snapmeta_filter_match(NULL, 0, &root), 1);
	/* malformed */
	T_EQ_INT(match("labels.\"unterminated==x", &i), -EINVAL);
	T_EQ_INT(match("kind=committed", &i), -EINVAL);
	T_EQ_INT(match("labels==x", &i), -EINVAL);
	T_EQ_INT(match(",", &i), -EINVAL);
	T_EQ_INT(match("name==\"a\"b", &i), -EINVAL);
	/* hostile patterns: nested repetition (glibc regcomp would need gigabytes), too long */
	T_EQ_INT(match("labels.foo~=b+++++++++++++++++++++++++", &i), -EINVAL);
	T_EQ_INT(match("labels.foo~=((((((((((b))))))))))", &i), -EINVAL);
	T_EQ_INT(match("labels.foo~=b\\++", &i), 0);     /* an escaped '+' is a literal */
	const char *bad = "kind==";

	T_EQ_INT(snapmeta_filter_check(&bad, 1), 0);     /* an empty value is valid */
	bad = "name~=(";
	T_EQ_INT(snapmeta_filter_check(&bad, 1), -EINVAL);
}

static void test_usage(void)
{
	char d[128], f[160], g[160];
	uint64_t b = 0, n = 0;
	int fd;

	snprintf(d, sizeof(d), "%s/tree", dir);
	T_EQ_INT(mkdir(d, 0755), 0);
	snprintf(f, sizeof(f), "%s/a", d);
	fd = open(f, O_WRONLY | O_CREAT, 0644);
	T_ASSERT(fd >= 0);
	if (fd >= 0) {
		char buf[65536];

		memset(buf, 7, sizeof(buf));
		T_EQ_INT(write(fd, buf, sizeof(buf)), (long long)sizeof(buf));
		fsync(fd);
		close(fd);
	}
	snprintf(g, sizeof(g), "%s/hardlink", d);
	T_EQ_INT(link(f, g), 0);
	T_EQ_INT(snapsvc_disk_usage(d, &b, &n), 0);
	T_EQ_U64(n, 2);                    /* the dir and one file: the hard link counts once */
	T_ASSERT(b >= 65536 && b < 65536 + 64 * 1024);
	T_EQ_INT(snapsvc_disk_usage("/nonexistent-lazyimg", &b, &n), 0);
	T_EQ_U64(b, 0);
}

int main(void)
{
	snprintf(dir, sizeof(dir), "/tmp/lazyimg-snapmeta.XXXXXX");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(path, sizeof(path), "%s/metadata.json", dir);
	lz_log_level = LZ_LOG_ERR - 1;     /* the corrupt inputs log on purpose */
	test_basic();
	test_update();
	test_persist();
	test_corrupt();
	test_filters();
	test_usage();
	nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	T_DONE();
}
