/* SPDX-License-Identifier: Apache-2.0 */
#define LZ_MOD "fs"
#define FUSE_USE_VERSION 312
#include "lazyimg/defer.h"
#include "lazyimg/imgfs.h"
#include "imgfs_int.h"

#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sys/statvfs.h>
#include <time.h>

/* The image never changes under a mount, so the kernel may cache everything. */
#define IMGFS_TIMEOUT 86400.0
#define IMGFS_MAX_READ (1u << 20)

struct imgfs {
	struct image *img;
	struct fuse_session *se;
	bool mounted;
	_Atomic uint64_t st_reads, st_read_bytes, st_read_errors, st_lookups, st_readdirs;
	_Atomic long err_log;
	_Atomic uint64_t lat[IMGFS_LAT_BUCKETS];
	_Atomic uint64_t lat_max;
	_Atomic uint64_t lat_sum;
	unsigned max_threads;
	bool handover;
	_Atomic uint64_t inflight;
	struct imgfs_parents parents;
	_Atomic uint64_t slot_t0[IMGFS_TRACK_SLOTS];  /* start (us) of a timed read, 0 = free */
	_Alignas(8) uint8_t init_req[IMGFS_INIT_MAX]; /* libfuse reads it as a request */
	size_t init_len;
};

static struct imgfs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/*
 * The one place negative errnos become FUSE replies. Internal codes
 * (corruption, digest mismatch, unsupported chunk kinds) become EIO, so a
 * reader sees an error, never wrong bytes.
 */
static int to_errno(struct imgfs *fs, int neg)
{
	int e = -neg;

	switch (e) {
	case ENOENT: case ENOTDIR: case EISDIR: case ENODATA: case ERANGE: case EINVAL:
	case ENAMETOOLONG: case ENOMEM: case EROFS: case EACCES: case EPERM: case ENOSYS:
		return e;
	default:
		if (lz_ratelimit(&fs->err_log, 5))
			lz_warn("returning EIO for internal error: %s", lz_strerror(neg));
		return EIO;
	}
}

static void reply_err(fuse_req_t req, int neg)
{
	fuse_reply_err(req, to_errno(fs_of(req), neg));
}

static void fill_stat(const struct img_attr *a, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = a->ino;
	st->st_mode = a->mode;
	st->st_nlink = a->nlink;
	st->st_uid = a->uid;
	st->st_gid = a->gid;
	st->st_rdev = a->rdev;
	st->st_size = (off_t)a->size;
	st->st_blocks = (blkcnt_t)a->blocks;
	st->st_blksize = 4096;
	st->st_mtim.tv_sec = a->mtime;
	st->st_mtim.tv_nsec = a->mtime_nsec;
	st->st_atim = st->st_mtim;
	st->st_ctim = st->st_mtim;
}

static void fill_entry(const struct img_attr *a, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	e->ino = a->ino;
	e->generation = 1;
	e->attr_timeout = IMGFS_TIMEOUT;
	e->entry_timeout = IMGFS_TIMEOUT;
	fill_stat(a, &e->attr);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	conn->want |= conn->capable & (FUSE_CAP_ASYNC_READ | FUSE_CAP_READDIRPLUS |
				       FUSE_CAP_PARALLEL_DIROPS | FUSE_CAP_CACHE_SYMLINKS |
				       FUSE_CAP_SPLICE_WRITE | FUSE_CAP_AUTO_INVAL_DATA);
	/* the image is immutable: no need to re-check on every open */
	conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
	/* attributes cost nothing extra here, so always send them with the names:
	 * "auto" mode sends them for the first getdents only and then pays one
	 * lookup round trip per remaining entry */
	conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
	conn->max_readahead = conn->max_readahead ? conn->max_readahead : IMGFS_MAX_READ;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct imgfs *fs = fs_of(req);
	struct fuse_entry_param e;
	struct img_attr a;
	int ret;

	atomic_fetch_add_explicit(&fs->st_lookups, 1, memory_order_relaxed);
	ret = fs->img->ops->lookup(fs->img, parent, name, strlen(name), &a);
	if (ret == -ENOENT) {
		/* a negative entry the kernel can cache as long as a positive one */
		memset(&e, 0, sizeof(e));
		e.entry_timeout = IMGFS_TIMEOUT;
		fuse_reply_entry(req, &e);
		return;
	}
	if (!ret && S_ISDIR(a.mode))
		ret = imgfs_parents_check(&fs->parents, a.ino, parent, name, strlen(name));
	if (ret) {
		reply_err(req, ret);
		return;
	}
	fill_entry(&a, &e);
	fuse_reply_entry(req, &e);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	/* inode numbers map straight onto immutable metadata: nothing to release */
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct imgfs *fs = fs_of(req);
	struct img_attr a;
	struct stat st;
	int ret = fs->img->ops->getattr(fs->img, ino, &a);

	if (ret) {
		reply_err(req, ret);
		return;
	}
	fill_stat(&a, &st);
	fuse_reply_attr(req, &st, IMGFS_TIMEOUT);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct imgfs *fs = fs_of(req);
	char buf[4097];
	ssize_t n = fs->img->ops->readlink(fs->img, ino, buf, sizeof(buf) - 1);

	if (n < 0) {
		reply_err(req, (int)n);
		return;
	}
	if ((size_t)n >= sizeof(buf)) {
		reply_err(req, -EFSCORRUPTED);
		return;
	}
	buf[n] = 0;
	fuse_reply_readlink(req, buf);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct imgfs *fs = fs_of(req);
	struct img_attr a;
	int ret;

	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	ret = fs->img->ops->getattr(fs->img, ino, &a);
	if (ret) {
		reply_err(req, ret);
		return;
	}
	if (S_ISDIR(a.mode)) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	fi->keep_cache = 1;
	fi->noflush = 1;
	fuse_reply_open(req, fi);
}

/* Per-thread reply buffer: reads allocate nothing on the hot path. */
static _Thread_local uint8_t *tl_rbuf;
static _Thread_local size_t tl_rcap;
static pthread_key_t rbuf_key;
static pthread_once_t rbuf_once = PTHREAD_ONCE_INIT;

static void rbuf_free(void *p)
{
	free(p);
}

static void rbuf_init(void)
{
	pthread_key_create(&rbuf_key, rbuf_free);
}

static uint8_t *rbuf_get(size_t size)
{
	if (tl_rcap < size) {
		uint8_t *n = malloc(size);

		if (!n)
			return NULL;
		free(tl_rbuf);
		tl_rbuf = n;
		tl_rcap = size;
		pthread_once(&rbuf_once, rbuf_init);
		pthread_setspecific(rbuf_key, n); /* freed when the worker exits */
	}
	return tl_rbuf;
}

static uint64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void record_latency(struct imgfs *fs, uint64_t us)
{
	unsigned b = us ? 63u - (unsigned)__builtin_clzll(us) : 0;
	uint64_t m = atomic_load_explicit(&fs->lat_max, memory_order_relaxed);

	atomic_fetch_add_explicit(&fs->lat[LZ_MIN(b, IMGFS_LAT_BUCKETS - 1u)], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&fs->lat_sum, us, memory_order_relaxed);
	while (us > m && !atomic_compare_exchange_weak(&fs->lat_max, &m, us))
		;
}

/* Hung-request accounting: a read holds a slot (its start time) while it runs. */
static int track_begin(struct imgfs *fs, uint64_t t0)
{
	atomic_fetch_add_explicit(&fs->inflight, 1, memory_order_relaxed);
	for (int i = 0; i < IMGFS_TRACK_SLOTS; i++) {
		uint64_t zero = 0;

		if (atomic_compare_exchange_strong(&fs->slot_t0[i], &zero, t0 ? t0 : 1))
			return i;
	}
	return -1;
}

static void track_end(struct imgfs *fs, int slot)
{
	if (slot >= 0)
		atomic_store(&fs->slot_t0[slot], 0);
	atomic_fetch_sub_explicit(&fs->inflight, 1, memory_order_relaxed);
}

static void op_read_inner(struct imgfs *fs, fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			  uint64_t t0);

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct imgfs *fs = fs_of(req);
	uint64_t t0 = mono_us();
	int slot;

	atomic_fetch_add_explicit(&fs->st_reads, 1, memory_order_relaxed);
	slot = track_begin(fs, t0);
	/* chunks fetched beyond what this read needs are finished after the reply */
	lz_defer_open();
	op_read_inner(fs, req, ino, size, off, t0);
	track_end(fs, slot);
	lz_defer_close();
}

static void op_read_inner(struct imgfs *fs, fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			  uint64_t t0)
{
	uint8_t *buf;
	ssize_t n;

	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	size = LZ_MIN(size, (size_t)IMGFS_MAX_READ * 4);
	buf = rbuf_get(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	n = fs->img->ops->read(fs->img, ino, buf, size, (uint64_t)off);
	record_latency(fs, mono_us() - t0);
	if (n < 0) {
		atomic_fetch_add_explicit(&fs->st_read_errors, 1, memory_order_relaxed);
		/* reads never pass internal codes through: anything unexpected is EIO */
		/* an open file exists: only "is a directory" passes through, anything else is EIO */
		fuse_reply_err(req, n == -EISDIR ? EISDIR : EIO);
		return;
	}
	atomic_fetch_add_explicit(&fs->st_read_bytes, (uint64_t)n, memory_order_relaxed);
	fuse_reply_buf(req, (const char *)buf, (size_t)n);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct imgfs *fs = fs_of(req);
	struct img_attr a;
	int ret = fs->img->ops->getattr(fs->img, ino, &a);

	if (ret) {
		reply_err(req, ret);
		return;
	}
	if (!S_ISDIR(a.mode)) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	fi->cache_readdir = 1;
	fi->keep_cache = 1;
	fuse_reply_open(req, fi);
}

struct dirbuf {
	fuse_req_t req;
	struct imgfs *fs;
	char *buf;
	size_t size, used;
	bool plus;
	int err;
	uint64_t dir;
};

static int dir_fill(void *arg, const struct img_dirent *de)
{
	struct dirbuf *d = arg;
	char name[IMG_NAME_MAX + 1];
	size_t need;

	if (de->name_len > IMG_NAME_MAX) {
		d->err = -EFSCORRUPTED;
		return 1;
	}
	memcpy(name, de->name, de->name_len);
	name[de->name_len] = 0;
	if (de->type == S_IFDIR && strcmp(name, ".") && strcmp(name, "..")) {
		int ret = imgfs_parents_check(&d->fs->parents, de->ino, d->dir, de->name, de->name_len);

		if (ret) {
			d->err = ret;
			return 1;
		}
	}
	if (d->plus) {
		struct fuse_entry_param e;
		struct img_attr a;
		bool dot = !strcmp(name, ".") || !strcmp(name, "..");
		int ret = d->fs->img->ops->getattr(d->fs->img, de->ino, &a);

		if (ret) {
			d->err = ret;
			return 1;
		}
		fill_entry(&a, &e);
		if (dot) {
			/* libfuse: no lookup count is taken for these two */
			e.ino = 0;
			e.attr.st_ino = de->ino;
		}
		need = fuse_add_direntry_plus(d->req, d->buf + d->used, d->size - d->used, name, &e,
					      (off_t)de->next_off);
	} else {
		struct stat st = { .st_ino = de->ino, .st_mode = de->type };

		need = fuse_add_direntry(d->req, d->buf + d->used, d->size - d->used, name, &st,
					 (off_t)de->next_off);
	}
	if (need > d->size - d->used)
		return 1;
	d->used += need;
	return 0;
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus)
{
	struct imgfs *fs = fs_of(req);
	struct dirbuf d = { .req = req, .fs = fs, .size = LZ_MIN(size, (size_t)IMGFS_MAX_READ), .plus = plus,
			    .dir = ino };
	int ret;

	atomic_fetch_add_explicit(&fs->st_readdirs, 1, memory_order_relaxed);
	d.buf = (char *)rbuf_get(d.size ? d.size : 1);
	if (!d.buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	ret = fs->img->ops->readdir(fs->img, ino, (uint64_t)off, dir_fill, &d);
	if (!ret)
		ret = d.err;
	if (ret && d.used == 0) {
		reply_err(req, ret);
		return;
	}
	fuse_reply_buf(req, d.buf, d.used);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, true);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fuse_reply_err(req, 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct imgfs *fs = fs_of(req);
	struct img_statfs s = { 0 };
	struct statvfs st;

	fs->img->ops->statfs(fs->img, &s);
	memset(&st, 0, sizeof(st));
	st.f_bsize = s.bsize;
	st.f_frsize = s.bsize;
	st.f_blocks = s.blocks;
	st.f_files = s.files;
	st.f_namemax = IMG_NAME_MAX;
	st.f_flag = ST_RDONLY;
	fuse_reply_statfs(req, &st);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct imgfs *fs = fs_of(req);
	char *buf = NULL;
	ssize_t n;

	if (size) {
		buf = malloc(size);
		if (!buf) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
	}
	n = fs->img->ops->getxattr(fs->img, ino, name, buf, size);
	if (n < 0)
		reply_err(req, (int)n);
	else if (size)
		fuse_reply_buf(req, buf, (size_t)n);
	else
		fuse_reply_xattr(req, (size_t)n);
	free(buf);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct imgfs *fs = fs_of(req);
	char *buf = NULL;
	ssize_t n;

	if (size) {
		buf = malloc(size);
		if (!buf) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
	}
	n = fs->img->ops->listxattr(fs->img, ino, buf, size);
	if (n < 0)
		reply_err(req, (int)n);
	else if (size)
		fuse_reply_buf(req, buf, (size_t)n);
	else
		fuse_reply_xattr(req, (size_t)n);
	free(buf);
}

static void op_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	fuse_reply_err(req, (mask & W_OK) ? EROFS : 0);
}

/* every write-type operation: the image is read-only */
static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	fuse_reply_err(req, EROFS);
}
static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	fuse_reply_err(req, EROFS);
}
static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	fuse_reply_err(req, EROFS);
}
static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, EROFS);
}
static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, EROFS);
}
static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	fuse_reply_err(req, EROFS);
}
static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	fuse_reply_err(req, EROFS);
}
static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	fuse_reply_err(req, EROFS);
}
static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	fuse_reply_err(req, EROFS);
}
static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			size_t size, int flags)
{
	fuse_reply_err(req, EROFS);
}
static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	fuse_reply_err(req, EROFS);
}
static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
			 struct fuse_file_info *fi)
{
	fuse_reply_err(req, EROFS);
}

static const struct fuse_lowlevel_ops imgfs_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.readlink = op_readlink,
	.open = op_open,
	.read = op_read,
	.release = op_release,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.releasedir = op_release,
	.statfs = op_statfs,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
	.access = op_access,
	.setattr = op_setattr,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.unlink = op_unlink,
	.rmdir = op_unlink,
	.symlink = op_symlink,
	.rename = op_rename,
	.link = op_link,
	.write = op_write,
	.create = op_create,
	.setxattr = op_setxattr,
	.removexattr = op_removexattr,
	.fallocate = op_fallocate,
};

/* The kernel's opcode for INIT and the RESEND notification (Linux 6.9,
 * include/uapi/linux/fuse.h; not in older userspace headers). */
#define IMGFS_OP_INIT 26
#define IMGFS_NOTIFY_RESEND 7

/*
 * A fresh handover mount: read the kernel's first request (always INIT: the
 * kernel queues it at mount time and holds everything else until it is
 * answered), keep a copy for a successor, then process it as usual.
 */
static int record_init(struct imgfs *fs)
{
	struct fuse_buf fbuf = { 0 };
	const struct fuse_in_header *in;
	int n = fuse_session_receive_buf(fs->se, &fbuf);

	if (n <= 0 || (fbuf.flags & FUSE_BUF_IS_FD) || fbuf.size < sizeof(*in)) {
		lz_err("no INIT request from the kernel after mounting (%d)", n);
		free(fbuf.mem);
		return n < 0 ? n : -EIO;
	}
	in = fbuf.mem;
	if (in->opcode != IMGFS_OP_INIT || fbuf.size > sizeof(fs->init_req)) {
		lz_err("first request after mounting is opcode %u (%zu bytes), not INIT", in->opcode,
		       fbuf.size);
		free(fbuf.mem);
		return -EPROTO;
	}
	memcpy(fs->init_req, fbuf.mem, fbuf.size);
	fs->init_len = fbuf.size;
	fuse_session_process_buf(fs->se, &fbuf);
	free(fbuf.mem);
	return 0;
}

/*
 * An adopted mount: feed libfuse the INIT the first server saw so that it
 * negotiates the same protocol. Its reply carries a unique the kernel has
 * already retired: the kernel answers ENOENT, which libfuse treats as an
 * interrupted request and ignores. Then ask the kernel to queue again the
 * requests the dead server had read but not answered.
 */
static int replay_init(struct imgfs *fs, const void *req, size_t len)
{
	struct fuse_buf fbuf = { 0 };
	struct fuse_out_header oh = { .len = sizeof(oh), .error = IMGFS_NOTIFY_RESEND, .unique = 0 };
	struct fuse_in_header in;

	if (req && len >= sizeof(in))
		memcpy(&in, req, sizeof(in)); /* the caller's copy need not be aligned */
	if (!req || len < sizeof(in) || len > sizeof(fs->init_req) || in.opcode != IMGFS_OP_INIT ||
	    in.len != len) {
		lz_err("cannot adopt a FUSE session without its recorded INIT request");
		return -EINVAL;
	}
	memcpy(fs->init_req, req, len);
	fs->init_len = len;
	fbuf.mem = fs->init_req;
	fbuf.size = len;
	fuse_session_process_buf(fs->se, &fbuf);
	if (write(fuse_session_fd(fs->se), &oh, sizeof(oh)) != (ssize_t)sizeof(oh))
		lz_warn("kernel cannot resend interrupted FUSE requests (%s): their readers may hang",
			strerror(errno));
	return 0;
}

/*
 * The kernel mount of a handover session, done here rather than by libfuse
 * (same options as libfuse passes as root): the fd is then ours to hand
 * around and libfuse serves it as "/dev/fd/N". Needs CAP_SYS_ADMIN.
 */
static int handover_mount(const struct imgfs_opts *o, const char *subtype, int *out)
{
	char data[256], type[96];
	int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC), ret;

	if (fd < 0) {
		ret = -errno;
		lz_err("cannot open /dev/fuse: %s", strerror(errno));
		return ret;
	}
	snprintf(data, sizeof(data), "fd=%d,rootmode=40000,user_id=%u,group_id=%u,default_permissions%s", fd,
		 (unsigned)getuid(), (unsigned)getgid(), o->allow_other ? ",allow_other" : "");
	snprintf(type, sizeof(type), "fuse.%s", subtype);
	if (mount(o->fsname ? o->fsname : "lazyimg", o->mountpoint, type, MS_RDONLY | MS_NOSUID | MS_NODEV,
		  data) < 0) {
		ret = -errno;
		lz_err("cannot mount on %s: %s", o->mountpoint, strerror(errno));
		close(fd);
		return ret;
	}
	*out = fd;
	return 0;
}

int imgfs_mount(struct image *img, const struct imgfs_opts *o, struct imgfs **out)
{
	char opts[512], sub[64];
	const char *argv[8];
	struct fuse_args args;
	struct imgfs *fs;
	int argc = 0, ret, adopt = o->adopt_fd;

	fs = lz_calloc(1, sizeof(*fs));
	if (!fs) {
		if (adopt > 0)
			close(adopt);
		return -ENOMEM;
	}
	fs->img = img;
	imgfs_parents_init(&fs->parents);
	fs->max_threads = o->max_threads;
	fs->handover = o->handover || adopt > 0;
	snprintf(sub, sizeof(sub), "%s", o->subtype ? o->subtype : img->format);
	for (char *p = sub; *p; p++)
		if (*p == ',' || *p == '=')
			*p = '_';
	snprintf(opts, sizeof(opts), "ro,default_permissions,fsname=%s,subtype=%s%s",
		 o->fsname ? o->fsname : "lazyimg", sub, o->allow_other ? ",allow_other" : "");
	argv[argc++] = "lazyimg";
	argv[argc++] = "-o";
	argv[argc++] = opts;
	if (o->debug)
		argv[argc++] = "-d";
	argv[argc] = NULL;
	args = (struct fuse_args)FUSE_ARGS_INIT(argc, (char **)argv);
	fs->se = fuse_session_new(&args, &imgfs_ops, sizeof(imgfs_ops), fs);
	fuse_opt_free_args(&args);
	if (!fs->se) {
		lz_err("cannot create a FUSE session (is /dev/fuse available?)");
		ret = -EIO;
		goto err;
	}
	if (adopt > 0) {
		char devfd[32];

		/* libfuse >= 3.14 serves an already mounted fd passed as /dev/fd/N */
		snprintf(devfd, sizeof(devfd), "/dev/fd/%d", adopt);
		if (fuse_session_mount(fs->se, devfd) != 0) {
			lz_err("cannot adopt /dev/fuse fd %d for %s", adopt, o->mountpoint);
			ret = -EIO;
			goto err;
		}
		adopt = -1; /* the session owns it now */
		ret = replay_init(fs, o->init_req, o->init_len);
		if (ret)
			goto err;
		*out = fs;
		return 0;
	}
	if (fs->handover) {
		/* mounted here, served through /dev/fd/N: the session keeps no
		 * mountpoint of its own to unmount (or leak) when it is destroyed */
		char devfd[32];
		int fd = -1;

		ret = handover_mount(o, sub, &fd);
		if (ret)
			goto err;
		snprintf(devfd, sizeof(devfd), "/dev/fd/%d", fd);
		if (fuse_session_mount(fs->se, devfd) != 0) {
			close(fd);
			umount2(o->mountpoint, MNT_DETACH);
			ret = -EIO;
			goto err;
		}
	} else if (fuse_session_mount(fs->se, o->mountpoint) != 0) {
		lz_err("cannot mount on %s", o->mountpoint);
		ret = -EIO;
		goto err;
	}
	fs->mounted = true;
	if (fs->handover) {
		ret = record_init(fs);
		if (ret)
			goto err;
	}
	*out = fs;
	return 0;
err:
	if (adopt > 0)
		close(adopt);
	if (fs->handover && fs->mounted) {
		/* imgfs_destroy leaves handover mounts alone: this one never served */
		umount2(o->mountpoint, MNT_DETACH);
	}
	imgfs_destroy(fs);
	return ret;
}

int imgfs_run(struct imgfs *fs)
{
	struct fuse_loop_config *cfg = fuse_loop_cfg_create();
	int ret;

	if (!cfg)
		return -ENOMEM;
	/* a handover session keeps every request on the fd a successor adopts */
	fuse_loop_cfg_set_clone_fd(cfg, fs->handover ? 0 : 1);
	fuse_loop_cfg_set_idle_threads(cfg, 4);
	if (fs->max_threads)
		fuse_loop_cfg_set_max_threads(cfg, fs->max_threads);
	ret = fuse_session_loop_mt(fs->se, cfg);
	fuse_loop_cfg_destroy(cfg);
	return ret < 0 ? ret : 0;
}

void imgfs_exit(struct imgfs *fs)
{
	fuse_session_exit(fs->se);
}

void imgfs_destroy(struct imgfs *fs)
{
	if (!fs)
		return;
	if (fs->se) {
		if (fs->mounted && !fs->handover)
			fuse_session_unmount(fs->se);
		fuse_session_destroy(fs->se);
	}
	imgfs_parents_exit(&fs->parents);
	free(fs);
}

void imgfs_get_stats(const struct imgfs *fs, struct imgfs_stats *st)
{
	st->reads = atomic_load(&fs->st_reads);
	st->read_bytes = atomic_load(&fs->st_read_bytes);
	st->read_errors = atomic_load(&fs->st_read_errors);
	st->lookups = atomic_load(&fs->st_lookups);
	st->readdirs = atomic_load(&fs->st_readdirs);
	{
		uint64_t total = 0, acc = 0;

		for (int i = 0; i < IMGFS_LAT_BUCKETS; i++)
			total += st->lat[i] = atomic_load(&fs->lat[i]);
		st->lat_p50_us = st->lat_p90_us = st->lat_p99_us = 0;
		/* report each percentile as the upper edge of its bucket */
		for (int i = 0; i < IMGFS_LAT_BUCKETS && total; i++) {
			acc += st->lat[i];
			if (!st->lat_p50_us && acc * 100 >= total * 50)
				st->lat_p50_us = 2ull << i;
			if (!st->lat_p90_us && acc * 100 >= total * 90)
				st->lat_p90_us = 2ull << i;
			if (!st->lat_p99_us && acc * 100 >= total * 99)
				st->lat_p99_us = 2ull << i;
		}
		st->lat_max_us = atomic_load(&fs->lat_max);
		st->lat_sum_us = atomic_load(&fs->lat_sum);
		st->lat_p50_us = LZ_MIN(st->lat_p50_us, st->lat_max_us);
		st->lat_p90_us = LZ_MIN(st->lat_p90_us, st->lat_max_us);
		st->lat_p99_us = LZ_MIN(st->lat_p99_us, st->lat_max_us);
	}
}

int imgfs_fd(const struct imgfs *fs)
{
	return fuse_session_fd(fs->se);
}

const void *imgfs_init_request(const struct imgfs *fs, size_t *len)
{
	*len = fs->init_len;
	return fs->init_len ? fs->init_req : NULL;
}

void imgfs_inflight(const struct imgfs *fs, uint64_t hung_us, uint64_t *inflight, uint64_t *hung)
{
	uint64_t now = mono_us(), n = 0;

	for (int i = 0; i < IMGFS_TRACK_SLOTS; i++) {
		uint64_t t0 = atomic_load(&fs->slot_t0[i]);

		if (t0 && now > t0 && now - t0 > hung_us)
			n++;
	}
	*inflight = atomic_load(&fs->inflight);
	*hung = n;
}

/* the request buffer of a pool thread (libfuse sizes it once, the same for every session) */
static _Thread_local struct fuse_buf tl_fbuf;

int imgfs_serve_one(struct imgfs *fs, void (*rearm)(void *arg), void *arg)
{
	int n;

	tl_fbuf.flags = 0;
	n = fuse_session_receive_buf(fs->se, &tl_fbuf);
	if (n == -EAGAIN || n == -EINTR) {
		rearm(arg);
		return 0;
	}
	if (n <= 0)
		return n < 0 ? n : -ENODEV; /* 0: libfuse saw ENODEV, the mount is gone */
	rearm(arg);
	fuse_session_process_buf(fs->se, &tl_fbuf);
	return 1;
}

void imgfs_thread_done(void)
{
	free(tl_fbuf.mem);
	tl_fbuf.mem = NULL;
}
