/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_snapfs.c - the parsers of `lazyimg serve` (snapshotter/): the first
 * input byte picks one, the rest is its input.
 *   0  a persisted mount's state file (snapfs_state_parse, id "fz"): an
 *      accepted file has the id, a non-empty ref, fields within their caps,
 *      an INIT record that fits, and labels that parse back as labels;
 *   1  the head of a control API request (lz_ctl_parse_head): a complete
 *      request's body lies inside the input, method and path are
 *      NUL-terminated, the path starts with '/';
 *   2  a labels object (snapfs_labels_from_json): at most the cap, every
 *      key and value set, and JSON -> labels -> JSON -> labels keeps them.
 */
#include "lazyimg/ctl.h"
#include "lazyimg/snapfs.h"
#include "../../snapshotter/snapfs_int.h"
#include "fuzz.h"

#include <string.h>

static void labels_roundtrip(const char *text)
{
	struct snap_label *l = NULL, *l2 = NULL;
	size_t n = 0, n2 = 0;
	void *mem = NULL, *mem2 = NULL;
	char *again;

	if (snapfs_labels_from_json(text, &l, &n, &mem))
		return;
	FZ_CHECK(n <= SNAP_NLABELS_MAX);
	for (size_t i = 0; i < n; i++)
		FZ_CHECK(l[i].key && l[i].value);
	again = snapfs_labels_to_json(l, n);
	FZ_CHECK(again);
	FZ_CHECK(snapfs_labels_from_json(again, &l2, &n2, &mem2) == 0);
	/* duplicate keys collapse to one, nothing else is lost or made up */
	FZ_CHECK(n2 <= n);
	for (size_t i = 0; i < n2; i++)
		FZ_CHECK(snap_label_get(l, n, l2[i].key) != NULL);
	free(again);
	free(l);
	free(mem);
	free(l2);
	free(mem2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text;

	if (size < 1 || size > (1u << 20))
		return 0;
	text = malloc(size);
	if (!text)
		return 0;
	memcpy(text, data + 1, size - 1);
	text[size - 1] = 0;
	switch (data[0] % 3) {
	case 0: {
		struct snap_mnt *m = NULL;
		int ret = snapfs_state_parse(text, size - 1, "fz", &m);

		FZ_ERRNO_OK(ret);
		if (ret == 0) {
			FZ_CHECK(!strcmp(m->id, "fz"));
			FZ_CHECK(m->ref[0] && strlen(m->ref) < sizeof(m->ref));
			FZ_CHECK(strlen(m->pinned) < sizeof(m->pinned));
			FZ_CHECK(m->init_len <= sizeof(m->init_req));
			FZ_CHECK(m->labels_json && strlen(m->labels_json) <= SNAP_LABELS_MAX);
			labels_roundtrip(m->labels_json);
			free(m->labels_json);
			free(m);
		}
		break;
	}
	case 1: {
		char method[16], path[1024];
		size_t off = 0, clen = 0;
		int ret = lz_ctl_parse_head(text, size - 1, method, path, &off, &clen);

		FZ_CHECK(ret == 1 || ret == 0 || ret == -EINVAL || ret == -E2BIG);
		if (ret == 1) {
			FZ_CHECK(off + clen <= size - 1);
			FZ_CHECK(strlen(method) < sizeof(method) && method[0]);
			FZ_CHECK(strlen(path) < sizeof(path) && path[0] == '/');
			FZ_CHECK(off + clen <= LZ_CTL_MAX_REQUEST);
		}
		break;
	}
	default:
		labels_roundtrip(text);
		break;
	}
	free(text);
	return 0;
}
