/* SPDX-License-Identifier: Apache-2.0 */
#ifndef LAZYIMG_IMGFS_INT_H
#define LAZYIMG_IMGFS_INT_H

#include <pthread.h>
#include <stdint.h>

/*
 * The parent of every directory the kernel has been shown. A directory
 * reached under a second parent means the image's "tree" is a graph (a
 * crafted RAFS v6 can do that: each dirent is valid on its own; so can two
 * names of one directory in one parent), and a
 * `find` over it would walk the shared subtree once per path, without end
 * for nested sharing. The second path gets EIO instead.
 */
struct imgfs_parents {
	pthread_mutex_t lock;
	uint64_t *keys;   /* dir ino + 1; 0 = empty slot */
	uint64_t *vals;   /* parent ino */
	uint64_t *names;  /* XXH64 of the directory's name in its parent */
	size_t cap, n;    /* cap is a power of two */
	_Atomic long log;
};

void imgfs_parents_init(struct imgfs_parents *p);
void imgfs_parents_exit(struct imgfs_parents *p);
/* 0 when dir has no parent yet (now parent/name) or this one under this
 * name; -EFSCORRUPTED (logged) when it has another parent or another name
 * (a directory hard link); -ENOMEM. */
int imgfs_parents_check(struct imgfs_parents *p, uint64_t dir, uint64_t parent, const char *name,
			size_t len);

#endif
