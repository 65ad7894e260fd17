/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_record - snapshotter/record.c on a real RAFS fixture: the wrapper
 * forwards every op, notes each file once in first-read order (a read that
 * returns no data is not a read), writes the list in the --prefetch-files
 * format (both files), refuses digests that are not hex, and the replay
 * reads every listed file through the image.
 */
#include "lazyimg/imgfs.h"
#include "lazyimg/rafs.h"
#include "lazyimg/snap.h"
#include "../t.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

struct files {
	char paths[64][512];
	uint64_t inos[64], sizes[64];
	int n;
};

static int collect(void *arg, const char *path, const struct img_attr *a)
{
	struct files *f = arg;

	for (int i = 0; i < f->n; i++)
		if (f->inos[i] == a->ino)
			return 0; /* a hard link: the recorder names the first path the walk finds */
	if (S_ISREG(a->mode) && a->size > 0 && f->n < 64 && !strchr(path, '\n')) {
		snprintf(f->paths[f->n], sizeof(f->paths[0]), "%s", path);
		f->inos[f->n] = a->ino;
		f->sizes[f->n++] = a->size;
	}
	return 0;
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	static char buf[65536];
	size_t n;

	if (!f)
		return NULL;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	return buf;
}

int main(void)
{
	struct rafs_opts o = { .blob_dir = t_fixture("rafs/blobs"), .validate = true };
	struct rafs *fs = NULL;
	struct snap_record *r = NULL;
	struct image *in, *img;
	struct files f = { .n = 0 };
	char dir[] = "/tmp/test_record.XXXXXX", out[256], keep[512], want[8192] = "", buf[4096];
	struct img_attr a;
	int ret;

	ret = rafs_open_file(t_fixture("rafs/sha256-nocompress-repeatable"), &o, &fs);
	if (ret) {
		T_FAIL("fixture: %s", lz_strerror(ret));
		T_DONE();
	}
	in = rafs_image(fs);
	T_EQ_INT(imgfs_walk(in, collect, &f), 0);
	T_ASSERT(f.n >= 4);
	T_ASSERT(mkdtemp(dir) != NULL);
	snprintf(out, sizeof(out), "%s/out.list", dir);
	T_EQ_INT(snap_record_path(dir, "sha256:0123abcd", keep, sizeof(keep)), 0);
	T_EQ_STR(strstr(keep, "/records/"), "/records/0123abcd.list");
	T_EQ_INT(snap_record_path(dir, "sha256:../../etc/passwd", buf, sizeof(buf)), -EINVAL);
	T_EQ_INT(snap_record_path(dir, "sha256:ABCD", buf, sizeof(buf)), -EINVAL);
	T_EQ_INT(snap_record_path(dir, "", buf, sizeof(buf)), -EINVAL);

	T_EQ_INT(snap_record_new(in, out, keep, &r), 0);
	img = snap_record_image(r);
	T_EQ_STR(img->format, in->format);
	/* metadata ops forward and note nothing */
	T_EQ_INT(img->ops->getattr(img, f.inos[0], &a), 0);
	T_EQ_U64(a.size, f.sizes[0]);
	T_EQ_INT(snap_record_count(r), 0);
	/* read files 3, 1, 3 again, 0; a read past the end (no data) of file 2 */
	T_ASSERT(img->ops->read(img, f.inos[3], buf, sizeof(buf), 0) > 0);
	T_ASSERT(img->ops->read(img, f.inos[1], buf, 1, 0) == 1);
	T_ASSERT(img->ops->read(img, f.inos[3], buf, sizeof(buf), 0) > 0);
	T_EQ_INT(img->ops->read(img, f.inos[2], buf, sizeof(buf), f.sizes[2]), 0);
	T_ASSERT(img->ops->read(img, f.inos[0], buf, sizeof(buf), 0) > 0);
	T_EQ_INT(snap_record_count(r), 3);
	T_EQ_INT(snap_record_flush(r), 0);
	snprintf(want, sizeof(want), "%s\n%s\n%s\n", f.paths[3], f.paths[1], f.paths[0]);
	T_EQ_STR(slurp(out), want);
	T_EQ_STR(slurp(keep), want);
	img_close(img); /* the wrapper's close must leave the inner image usable */
	snap_record_free(r);
	T_EQ_INT(in->ops->getattr(in, f.inos[0], &a), 0);

	/* nothing read: the kept list is not overwritten with an empty one */
	T_EQ_INT(snap_record_new(in, NULL, keep, &r), 0);
	T_EQ_INT(snap_record_flush(r), 0);
	snap_record_free(r);
	T_EQ_STR(slurp(keep), want);

	/* replay: every listed file read through the image, the missing one skipped */
	{
		struct snap_replay *rp = NULL;
		FILE *l = fopen(out, "a");
		uint64_t total = f.sizes[3] + f.sizes[1] + f.sizes[0];

		fputs("/no/such/file\n\n", l);
		fclose(l);
		T_EQ_INT(snap_replay_start(in, out, 3, &rp), 0);
		for (int i = 0; i < 500 && snap_replay_bytes(rp) < total; i++)
			usleep(10000);
		T_EQ_U64(snap_replay_bytes(rp), total);
		snap_replay_stop(rp);
		T_EQ_INT(snap_replay_start(in, "/nonexistent/list", 2, &rp), -ENOENT);
		T_EQ_INT(snap_replay_start(in, out, 0, &rp), -EINVAL);
	}
	unlink(out);
	unlink(keep);
	snprintf(buf, sizeof(buf), "%s/records", dir);
	rmdir(buf);
	rmdir(dir);
	rafs_close(fs);
	T_DONE();
}
