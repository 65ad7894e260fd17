/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_snapmeta.c - the `lazyimg snapshotter` metadata file parser and the
 * containerd list-filter parser. Input byte 0 picks the parser:
 *   'M' + metadata.json bytes: a successful load must satisfy the store's
 *       invariants (unique keys and ids, parents present and committed,
 *       caps respected), and every operation on the loaded store keeps them;
 *   anything else: the rest is NUL-separated filter strings, matched against
 *       fixed snapshot infos: the result is 1, 0 or -EINVAL and the same for
 *       a repeated call.
 */
#include "lazyimg/lz.h"
#include "../../snapshotter/meta.h"
#include "fuzz.h"

#include <string.h>

static void check_store(struct snapmeta *m)
{
	struct snapmeta_info *v = NULL;
	size_t n = 0;

	FZ_CHECK(snapmeta_list(m, &v, &n) == 0);
	FZ_CHECK(n <= SNAPMETA_MAX_SNAPSHOTS);
	for (size_t i = 0; i < n; i++) {
		FZ_CHECK(v[i].key[0]);
		FZ_CHECK(v[i].kind >= SNAPMETA_VIEW && v[i].kind <= SNAPMETA_COMMITTED);
		FZ_CHECK(v[i].nlabels <= SNAPMETA_MAX_LABELS);
		for (size_t j = 0; j < i; j++) {
			FZ_CHECK(strcmp(v[i].key, v[j].key));
			FZ_CHECK(v[i].id != v[j].id);
		}
		if (v[i].parent[0]) {
			size_t p;

			for (p = 0; p < n; p++)
				if (!strcmp(v[p].key, v[i].parent))
					break;
			FZ_CHECK(p < n && v[p].kind == SNAPMETA_COMMITTED);
		}
	}
	snapmeta_infos_free(v, n);
}

static void fuzz_meta(const char *buf, size_t len)
{
	struct snapmeta *m = NULL;
	struct snapmeta_info *v = NULL;
	size_t n = 0;
	int ret = snapmeta_load_buf(buf, len, &m);

	FZ_ERRNO_OK(ret);
	if (ret) {
		FZ_CHECK(!m);
		return;
	}
	check_store(m);
	/* operations on a loaded store keep the invariants (nothing persists: no path) */
	if (snapmeta_list(m, &v, &n) == 0 && n) {
		ret = snapmeta_create(m, "fuzz/new", v[0].kind == SNAPMETA_COMMITTED ? v[0].key : "",
				      SNAPMETA_ACTIVE, NULL, 0, 0, NULL);
		FZ_ERRNO_OK(ret);
		ret = snapmeta_remove(m, v[n - 1].key, NULL);
		FZ_CHECK(ret == 0 || ret == -EBUSY);
		ret = snapmeta_commit(m, "fuzz/committed", "fuzz/new", NULL, 0, 0, 0, NULL);
		FZ_ERRNO_OK(ret);
		check_store(m);
	}
	snapmeta_infos_free(v, n);
	snapmeta_close(m);
}

static void fuzz_filters(const char *buf, size_t len)
{
	struct snapmeta_label l[] = {
		{ (char *)"containerd.io/snapshot.ref", (char *)"sha256:abc" },
		{ (char *)"k", (char *)"" },
	};
	const struct snapmeta_info infos[] = {
		{ .key = (char *)"sha256:abc", .parent = (char *)"default/1/p", .kind = SNAPMETA_COMMITTED,
		  .labels = l, .nlabels = 2 },
		{ .key = (char *)"x", .parent = (char *)"", .kind = SNAPMETA_ACTIVE },
	};
	const char *f[16];
	size_t nf = 0, off = 0;
	char *copy = malloc(len + 1);

	if (!copy)
		return;
	memcpy(copy, buf, len);
	copy[len] = 0;
	while (off <= len && nf < LZ_ARRAY_SIZE(f)) {
		f[nf++] = copy + off;
		off += strlen(copy + off) + 1;
	}
	for (size_t i = 0; i < LZ_ARRAY_SIZE(infos); i++) {
		int r = snapmeta_filter_match(f, nf, &infos[i]);

		FZ_CHECK(r == 1 || r == 0 || r == -EINVAL);
		FZ_CHECK(snapmeta_filter_match(f, nf, &infos[i]) == r);
	}
	FZ_ERRNO_OK(snapmeta_filter_check(f, nf));
	free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	lz_log_level = -1;
	if (size > (1u << 20))
		return 0;
	if (size && data[0] == 'M')
		fuzz_meta((const char *)data + 1, size - 1);
	else if (size)
		fuzz_filters((const char *)data + 1, size - 1);
	return 0;
}
