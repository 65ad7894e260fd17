/* SPDX-License-Identifier: Apache-2.0 */
/*
 * toc.c - stargz.index.json -> inodes. The JSON is read with yajl's callback
 * parser: each entry is collected into one scratch record and committed to
 * the tree as soon as its object closes, so memory is the tree itself (nodes,
 * inodes, a string pool), never a DOM of the TOC. Layers are committed in
 * order, lowest first, into one tree; whiteouts are applied as they come.
 */
#define LZ_MOD "estargz"
#include "estargz_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <yajl/yajl_parse.h>

#define ES_MAX_JSON_DEPTH 64    /* nesting inside values we skip */
#define ES_WH_PREFIX ".wh."
#define ES_WH_OPAQUE ".wh..wh..opq"
#define ES_WH_META ".wh..wh."

enum { T_NONE = 0, T_DIR, T_REG, T_SYMLINK, T_HARDLINK, T_CHAR, T_BLOCK, T_FIFO, T_CHUNK };
static const char *const type_names[] = { "", "dir", "reg", "symlink", "hardlink", "char", "block",
					  "fifo", "chunk" };

enum fld {
	F_SKIP = 0, F_NAME, F_TYPE, F_SIZE, F_MODTIME, F_LINK, F_MODE, F_UID, F_GID, F_DEVMAJ, F_DEVMIN,
	F_XATTRS, F_DIGEST, F_OFFSET, F_INNER, F_CHUNKOFF, F_CHUNKSIZE, F_CHUNKDIGEST,
};
static const struct { const char *key; enum fld f; } fields[] = {
	{ "name", F_NAME }, { "type", F_TYPE }, { "size", F_SIZE }, { "modtime", F_MODTIME },
	{ "linkName", F_LINK }, { "mode", F_MODE }, { "uid", F_UID }, { "gid", F_GID },
	{ "devMajor", F_DEVMAJ }, { "devMinor", F_DEVMIN }, { "xattrs", F_XATTRS }, { "digest", F_DIGEST },
	{ "offset", F_OFFSET }, { "innerOffset", F_INNER }, { "chunkOffset", F_CHUNKOFF },
	{ "chunkSize", F_CHUNKSIZE }, { "chunkDigest", F_CHUNKDIGEST },
};

enum st {
	S_TOP = 0, S_TOPKEY, S_VERSION, S_ENTRIES, S_ARRAY, S_ENTRYKEY, S_VALUE, S_XA_OPEN, S_XA_KEY,
	S_XA_VAL, S_SKIP, S_END,
};

struct raw {
	int type;
	bool has_name;
	char name[ESTARGZ_MAX_PATH + 1];
	size_t name_len;
	char link[ESTARGZ_MAX_PATH + 1];
	size_t link_len;
	uint64_t size, offset, inner, chunk_off, chunk_size, mode, uid, gid, major, minor;
	int64_t mtime;
	uint32_t nsec;
	uint8_t digest[32], cdigest[32];
	bool has_digest, has_cdigest;
	uint8_t *xa;        /* packed: le16 name len, name, le32 value len, value */
	size_t xa_len, xa_cap;
	unsigned nxa;
	char xa_key[256];
	size_t xa_key_len;
};

struct es_node {
	uint32_t name;      /* pool offset */
	uint16_t len;
	uint8_t wh;         /* non-merged layer: a whiteout shown as a char device */
	uint8_t dead;
	uint32_t parent, child, next, prev, hnext, inode;
	uint32_t layer;
};

struct bld {
	struct estargz *es;
	unsigned layer;
	const char *lid;
	struct es_node *nodes;
	uint32_t nnodes, ncap, nlive;
	uint32_t *hash;     /* node index + 1 per bucket head */
	uint32_t hmask;
	struct es_inode *ino;
	uint32_t nino, icap;

	/* the most recent non-chunk entry, which chunk entries extend */
	int cur_type;
	uint32_t cur_inode; /* ES_NONE when it has no inode (hidden) */
	uint64_t cur_size, cur_next;
	uint32_t cur_first;
	char cur_name[ESTARGZ_MAX_PATH + 1];
	struct comp {
		const char *p;
		size_t len;
	} c[ESTARGZ_MAX_PATH / 2 + 1], lc[ESTARGZ_MAX_PATH / 2 + 1];

	uint32_t *pf;       /* build inode indices of prefetch files */
	size_t npf, pfcap, pf_start;
	int pf_state;       /* 0 nothing yet, 1 .prefetch.landmark seen, 2 .no.prefetch.landmark */

	uint64_t entry;     /* index in the current layer's entries */
	char err[600];
	int err_code;
};

struct ps {
	struct bld *b;
	enum st state, ret_state;
	unsigned skip_depth;
	enum fld field;
	const char *key;    /* the current field's JSON key, for messages */
	bool version_seen;
	uint64_t version;
	struct raw r;
};

int64_t es_pool_add(struct estargz *es, const void *p, size_t len)
{
	size_t off = es->pool_len;

	if (len > ES_MAX_POOL - off)
		return -EFBIG;
	if (off + len > es->pool_cap) {
		size_t ncap = es->pool_cap ? es->pool_cap : 65536;
		char *n;

		while (ncap < off + len)
			ncap = ncap > ES_MAX_POOL / 2 ? ES_MAX_POOL : ncap * 2;
		n = lz_realloc(es->pool, ncap);
		if (!n)
			return -ENOMEM;
		es->pool = n;
		es->pool_cap = ncap;
	}
	if (len)
		memcpy(es->pool + off, p, len);
	es->pool_len += len;
	return (int64_t)off;
}

/* Record the first error with the layer and entry it belongs to. */
__attribute__((format(printf, 3, 4)))
static int bfail(struct bld *b, int code, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->err_code)
		return code;
	n = snprintf(b->err, sizeof(b->err), "layer %.12s: entry %llu: ", b->lid,
		     (unsigned long long)b->entry);
	va_start(ap, fmt);
	if (n > 0 && (size_t)n < sizeof(b->err))
		vsnprintf(b->err + n, sizeof(b->err) - (size_t)n, fmt, ap);
	va_end(ap);
	b->err_code = code;
	return code;
}

/* ---- tree ---- */

static uint32_t hash_of(uint32_t parent, const char *name, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ull ^ ((uint64_t)parent * 0x9E3779B97F4A7C15ull);

	for (size_t i = 0; i < len; i++)
		h = (h ^ (uint8_t)name[i]) * 0x100000001b3ull;
	return (uint32_t)(h ^ (h >> 32));
}

static int hash_grow(struct bld *b)
{
	uint32_t n = b->hmask ? (b->hmask + 1) * 2 : 1024;
	uint32_t *h;

	if (n > (1u << 30))
		return 0;   /* chains just get longer */
	h = lz_calloc(n, sizeof(*h));
	if (!h)
		return -ENOMEM;
	free(b->hash);
	b->hash = h;
	b->hmask = n - 1;
	for (uint32_t i = 0; i < b->nnodes; i++) {
		struct es_node *nd = &b->nodes[i];
		uint32_t k;

		if (nd->dead || i == 0)
			continue;
		k = hash_of(nd->parent, b->es->pool + nd->name, nd->len) & b->hmask;
		nd->hnext = h[k] ? h[k] - 1 : ES_NONE;
		h[k] = i + 1;
	}
	return 0;
}

static uint32_t find_child(const struct bld *b, uint32_t parent, const char *name, size_t len)
{
	uint32_t k = hash_of(parent, name, len) & b->hmask;

	for (uint32_t i = b->hash[k] ? b->hash[k] - 1 : ES_NONE; i != ES_NONE; i = b->nodes[i].hnext) {
		const struct es_node *nd = &b->nodes[i];

		if (nd->parent == parent && nd->len == len && !memcmp(b->es->pool + nd->name, name, len))
			return i;
	}
	return ES_NONE;
}

static bool is_dir(const struct bld *b, uint32_t node)
{
	return S_ISDIR(b->ino[b->nodes[node].inode].mode);
}

static int new_inode(struct bld *b, uint32_t mode, uint32_t *out)
{
	struct es_inode *in;

	if (b->nino == b->icap) {
		uint32_t ncap = b->icap ? b->icap * 2 : 1024;
		struct es_inode *n;

		if (b->icap >= UINT32_MAX / 4)
			return -EFBIG;
		n = lz_realloc(b->ino, (size_t)ncap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		b->ino = n;
		b->icap = ncap;
	}
	in = &b->ino[b->nino];
	memset(in, 0, sizeof(*in));
	in->mode = mode;
	in->layer = b->layer;
	in->data = ES_NONE;
	in->xattr = ES_NONE;
	in->name_de = ES_NONE;
	*out = b->nino++;
	return 0;
}

static int add_child(struct bld *b, uint32_t parent, const char *name, size_t len, uint32_t inode,
		     uint32_t *out)
{
	struct es_node *nd;
	int64_t off;
	uint32_t k, idx;
	int ret;

	if (b->nlive + 1 > b->hmask) {
		ret = hash_grow(b);
		if (ret)
			return ret;
	}
	if (b->nnodes == b->ncap) {
		uint32_t ncap = b->ncap * 2;
		struct es_node *n;

		if (b->ncap >= UINT32_MAX / 4)
			return -EFBIG;
		n = lz_realloc(b->nodes, (size_t)ncap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		b->nodes = n;
		b->ncap = ncap;
	}
	off = es_pool_add(b->es, name, len);
	if (off < 0)
		return (int)off;
	idx = b->nnodes++;
	nd = &b->nodes[idx];
	memset(nd, 0, sizeof(*nd));
	nd->name = (uint32_t)off;
	nd->len = (uint16_t)len;
	nd->parent = parent;
	nd->inode = inode;
	nd->layer = b->layer;
	nd->child = ES_NONE;
	nd->prev = ES_NONE;
	nd->next = b->nodes[parent].child;
	if (nd->next != ES_NONE)
		b->nodes[nd->next].prev = idx;
	b->nodes[parent].child = idx;
	k = hash_of(parent, name, len) & b->hmask;
	nd->hnext = b->hash[k] ? b->hash[k] - 1 : ES_NONE;
	b->hash[k] = idx + 1;
	b->nlive++;
	*out = idx;
	return 0;
}

/* Unlink a node and its whole subtree from the tree and the name hash. */
static void remove_node(struct bld *b, uint32_t idx)
{
	struct es_node *nd = &b->nodes[idx];
	uint32_t k, cur;

	while (nd->child != ES_NONE) {
		remove_node(b, nd->child);
		nd = &b->nodes[idx];
	}
	if (nd->prev != ES_NONE)
		b->nodes[nd->prev].next = nd->next;
	else
		b->nodes[nd->parent].child = nd->next;
	if (nd->next != ES_NONE)
		b->nodes[nd->next].prev = nd->prev;
	k = hash_of(nd->parent, b->es->pool + nd->name, nd->len) & b->hmask;
	cur = b->hash[k] ? b->hash[k] - 1 : ES_NONE;
	if (cur == idx) {
		b->hash[k] = nd->hnext == ES_NONE ? 0 : nd->hnext + 1;
	} else {
		while (cur != ES_NONE && b->nodes[cur].hnext != idx)
			cur = b->nodes[cur].hnext;
		if (cur != ES_NONE)
			b->nodes[cur].hnext = nd->hnext;
	}
	nd->dead = 1;
	nd->child = nd->next = nd->prev = ES_NONE;
	b->nlive--;
}

/* Merge: hide every node below dir that an earlier layer put there. */
static void make_opaque(struct bld *b, uint32_t dir)
{
	uint32_t c = b->nodes[dir].child;

	while (c != ES_NONE) {
		uint32_t next = b->nodes[c].next;

		if (b->nodes[c].layer < b->layer)
			remove_node(b, c);
		else if (is_dir(b, c))
			make_opaque(b, c);
		c = next;
	}
}

/*
 * Clean a TOC name into components. A ".." anywhere, a NUL byte, a component
 * over IMG_NAME_MAX, or a leading '/' on anything but the root is refused.
 */
static int split_name(struct bld *b, const char *what, const char *name, size_t len, struct comp *c,
		      size_t *n)
{
	size_t i = 0, k = 0;

	if (memchr(name, 0, len))
		return bfail(b, -EFSCORRUPTED, "%s contains a NUL byte", what);
	while (i < len) {
		size_t s = i;

		while (i < len && name[i] != '/')
			i++;
		if (i - s == 0 || (i - s == 1 && name[s] == '.')) {
			i++;
			continue;
		}
		if (i - s == 2 && name[s] == '.' && name[s + 1] == '.')
			return bfail(b, -EFSCORRUPTED, "%s \"%.*s\" has a \"..\" component", what, (int)len, name);
		if (i - s > IMG_NAME_MAX)
			return bfail(b, -EFSCORRUPTED, "%s has a component of %zu bytes (max %d)", what, i - s,
				     IMG_NAME_MAX);
		c[k].p = name + s;
		c[k].len = i - s;
		k++;
		i++;
	}
	if (len && name[0] == '/' && k)
		return bfail(b, -EFSCORRUPTED, "%s \"%.*s\" is absolute", what, (int)len, name);
	*n = k;
	return 0;
}

static int implicit_dir(struct bld *b, uint32_t parent, const struct comp *c, uint32_t *out)
{
	uint32_t ino;
	int ret = new_inode(b, S_IFDIR | 0755, &ino);

	if (ret)
		return bfail(b, ret, "out of memory");
	ret = add_child(b, parent, c->p, c->len, ino, out);
	return ret ? bfail(b, ret, "out of memory") : 0;
}

/* The directory node for components c[0..n), created (mode 0755) where missing. */
static int ensure_dir(struct bld *b, const struct comp *c, size_t n, uint32_t *out)
{
	uint32_t cur = 0;
	int ret;

	for (size_t i = 0; i < n; i++) {
		uint32_t ch = find_child(b, cur, c[i].p, c[i].len);

		if (ch != ES_NONE && (!is_dir(b, ch) || b->nodes[ch].wh)) {
			if (b->nodes[ch].layer >= b->layer && !b->nodes[ch].wh)
				return bfail(b, -EFSCORRUPTED, "parent \"%.*s\" is not a directory",
					     (int)(c[i].p + c[i].len - c[0].p), c[0].p);
			/* a lower layer's file where this layer has a directory: replaced */
			remove_node(b, ch);
			ch = ES_NONE;
		}
		if (ch == ES_NONE) {
			ret = implicit_dir(b, cur, &c[i], &ch);
			if (ret)
				return ret;
		}
		b->nodes[ch].layer = b->layer;
		cur = ch;
	}
	*out = cur;
	return 0;
}

static uint32_t lookup_path(const struct bld *b, const struct comp *c, size_t n)
{
	uint32_t cur = 0;

	for (size_t i = 0; i < n && cur != ES_NONE; i++)
		cur = find_child(b, cur, c[i].p, c[i].len);
	return cur;
}

/* ---- entries ---- */

static int set_attrs(struct bld *b, uint32_t ino, const struct raw *r, uint32_t type_bits)
{
	struct es_inode *in = &b->ino[ino];

	in->mode = type_bits | (uint32_t)(r->mode & 07777);
	in->uid = (uint32_t)r->uid;
	in->gid = (uint32_t)r->gid;
	in->mtime = r->mtime;
	in->mtime_nsec = r->nsec;
	in->layer = b->layer;
	in->xattr = ES_NONE;
	in->nxattr = 0;
	if (r->nxa) {
		int64_t off = es_pool_add(b->es, r->xa, r->xa_len);

		if (off < 0)
			return bfail(b, (int)off, "no room for xattrs");
		in->xattr = (uint32_t)off;
		in->nxattr = (uint16_t)r->nxa;
	}
	return 0;
}

static int finish_file(struct bld *b)
{
	struct es_layer *l = &b->es->layers[b->layer];

	if (b->cur_type != T_REG || b->cur_size == 0)
		return 0;
	if (b->cur_next != b->cur_size)
		return bfail(b, -EFSCORRUPTED, "file \"%s\": chunks cover %llu of its %llu bytes", b->cur_name,
			     (unsigned long long)b->cur_next, (unsigned long long)b->cur_size);
	/* the file's digest verifies only an unchunked file */
	if (l->nchunks - b->cur_first > 1 && l->chunks[b->cur_first].has_digest == 2)
		l->chunks[b->cur_first].has_digest = 0;
	if (b->cur_inode != ES_NONE) {
		b->ino[b->cur_inode].data = b->cur_first;
		b->ino[b->cur_inode].ndata = l->nchunks - b->cur_first;
	}
	return 0;
}

static int push_chunk(struct bld *b, const struct raw *r)
{
	struct es_layer *l = &b->es->layers[b->layer];
	struct es_chunk *c;
	uint64_t eff, end;

	if (r->type == T_REG) {
		if (r->chunk_off)
			return bfail(b, -EFSCORRUPTED, "file \"%s\": reg entry with chunkOffset %llu (must be 0)",
				     b->cur_name, (unsigned long long)r->chunk_off);
		eff = r->chunk_size ? r->chunk_size : r->size;
	} else {
		if (b->cur_type != T_REG || b->cur_size == 0)
			return bfail(b, -EFSCORRUPTED, "chunk entry does not follow a non-empty regular file");
		if (r->chunk_off != b->cur_next)
			return bfail(b, -EFSCORRUPTED, "file \"%s\": chunkOffset %llu, expected %llu", b->cur_name,
				     (unsigned long long)r->chunk_off, (unsigned long long)b->cur_next);
		if (r->chunk_off >= b->cur_size)
			return bfail(b, -EFSCORRUPTED, "file \"%s\": chunkOffset %llu is past its size %llu",
				     b->cur_name, (unsigned long long)r->chunk_off,
				     (unsigned long long)b->cur_size);
		eff = r->chunk_size ? r->chunk_size : b->cur_size - r->chunk_off;
	}
	if (__builtin_add_overflow(r->chunk_off, eff, &end) || end > b->cur_size)
		return bfail(b, -EFSCORRUPTED, "file \"%s\": chunk at %llu (+%llu) ends past its size %llu",
			     b->cur_name, (unsigned long long)r->chunk_off, (unsigned long long)eff,
			     (unsigned long long)b->cur_size);
	if (eff > ESTARGZ_MAX_CHUNK)
		return bfail(b, -EOPNOTSUPP, "file \"%s\": chunk of %llu bytes exceeds the %u MiB limit",
			     b->cur_name, (unsigned long long)eff, ESTARGZ_MAX_CHUNK >> 20);
	if (r->offset == 0)
		return bfail(b, -EFSCORRUPTED, "file \"%s\": data at file offset %llu has no blob offset",
			     b->cur_name, (unsigned long long)r->chunk_off);
	if (r->offset >= l->limit)
		return bfail(b, -EFSCORRUPTED, "file \"%s\": offset %llu is past the layer's data (%llu bytes)",
			     b->cur_name, (unsigned long long)r->offset, (unsigned long long)l->limit);
	if (l->nchunks == l->chunks_cap) {
		uint32_t ncap = l->chunks_cap ? l->chunks_cap * 2 : 256;
		struct es_chunk *n;

		if (l->chunks_cap >= ESTARGZ_MAX_ENTRIES)
			return bfail(b, -EFSCORRUPTED, "more than %u data entries", ESTARGZ_MAX_ENTRIES);
		n = lz_realloc(l->chunks, (size_t)ncap * sizeof(*n));
		if (!n)
			return bfail(b, -ENOMEM, "out of memory");
		l->chunks = n;
		l->chunks_cap = ncap;
	}
	c = &l->chunks[l->nchunks++];
	memset(c, 0, sizeof(*c));
	c->offset = r->offset;
	c->file_off = r->chunk_off;
	c->size = (uint32_t)eff;
	c->inner = (uint32_t)r->inner;
	if (r->has_cdigest) {
		memcpy(c->digest, r->cdigest, 32);
		c->has_digest = 1;
	} else if (r->type == T_REG && r->has_digest) {
		memcpy(c->digest, r->digest, 32);
		c->has_digest = 2;
	}
	b->cur_next = end;
	return 0;
}

static int pf_add(struct bld *b, uint32_t ino)
{
	if (b->npf == b->pfcap) {
		size_t ncap = b->pfcap ? b->pfcap * 2 : 64;
		uint32_t *n = lz_realloc(b->pf, ncap * sizeof(*n));

		if (!n)
			return bfail(b, -ENOMEM, "out of memory");
		b->pf = n;
		b->pfcap = ncap;
	}
	b->pf[b->npf++] = ino;
	return 0;
}

static bool name_is(const struct comp *c, const char *s)
{
	return c->len == strlen(s) && !memcmp(c->p, s, c->len);
}

static int commit_whiteout(struct bld *b, const struct raw *r, const struct comp *c, size_t n)
{
	const struct comp *base = &c[n - 1];
	uint32_t dir, ch, ino;
	int ret;

	if (name_is(base, ES_WH_OPAQUE)) {
		ret = ensure_dir(b, c, n - 1, &dir);
		if (ret)
			return ret;
		if (b->es->merge)
			make_opaque(b, dir);
		else
			b->ino[b->nodes[dir].inode].flags |= ES_I_OPAQUE;
		return 0;
	}
	if (base->len >= strlen(ES_WH_META) && !memcmp(base->p, ES_WH_META, strlen(ES_WH_META)))
		return 0;   /* other aufs metadata (.wh..wh.plnk, ...): never shown */
	if (base->len == strlen(ES_WH_PREFIX))
		return bfail(b, -EFSCORRUPTED, "whiteout \"%s\" names nothing", b->cur_name);
	{
		struct comp target = { base->p + 4, base->len - 4 };

		if (b->es->merge) {
			dir = lookup_path(b, c, n - 1);
			if (dir == ES_NONE || !is_dir(b, dir))
				return 0;   /* nothing below to delete */
			ch = find_child(b, dir, target.p, target.len);
			if (ch != ES_NONE && b->nodes[ch].layer < b->layer)
				remove_node(b, ch);
			return 0;
		}
		/* one layer as it is: overlayfs's whiteout, a 0:0 char device, unless a real entry exists */
		ret = ensure_dir(b, c, n - 1, &dir);
		if (ret)
			return ret;
		ch = find_child(b, dir, target.p, target.len);
		if (ch != ES_NONE) {
			if (!b->nodes[ch].wh)
				return 0;
			remove_node(b, ch);
		}
		ret = new_inode(b, S_IFCHR, &ino);
		if (!ret)
			ret = set_attrs(b, ino, r, S_IFCHR);
		if (!ret)
			ret = add_child(b, dir, target.p, target.len, ino, &ch);
		if (ret)
			return bfail(b, ret, "out of memory");
		b->nodes[ch].wh = 1;
		return 0;
	}
}

static uint32_t type_bits(int t)
{
	switch (t) {
	case T_DIR: return S_IFDIR;
	case T_REG: return S_IFREG;
	case T_SYMLINK: return S_IFLNK;
	case T_CHAR: return S_IFCHR;
	case T_BLOCK: return S_IFBLK;
	case T_FIFO: return S_IFIFO;
	}
	return 0;
}

static int commit(struct bld *b, struct raw *r)
{
	struct comp *c = b->c, *lc = b->lc;
	size_t n = 0, ln = 0;
	uint32_t dir, ch, ino;
	int ret;

	if (r->type == T_NONE)
		return bfail(b, -EFSCORRUPTED, "has no type");
	if (r->type == T_CHUNK) {
		ret = push_chunk(b, r);
		return ret;
	}
	ret = finish_file(b);
	if (ret)
		return ret;
	if (!r->has_name)
		return bfail(b, -EFSCORRUPTED, "has no name");
	memcpy(b->cur_name, r->name, r->name_len + 1);
	b->cur_type = r->type;
	b->cur_inode = ES_NONE;
	b->cur_size = r->type == T_REG ? r->size : 0;
	b->cur_next = 0;
	b->cur_first = b->es->layers[b->layer].nchunks;
	ret = split_name(b, "name", r->name, r->name_len, c, &n);
	if (ret)
		return ret;
	/* data first: a hidden or shadowed file still owns its place in the blob */
	if (r->type == T_REG && r->size) {
		ret = push_chunk(b, r);
		if (ret)
			return ret;
	}
	if (n == 0) {
		/* "./" or "/": the root itself */
		if (r->type != T_DIR)
			return bfail(b, -EFSCORRUPTED, "\"%s\" names the root but is a %s", r->name,
				     type_names[r->type]);
		return set_attrs(b, b->nodes[0].inode, r, S_IFDIR);
	}
	if (n == 1 && (name_is(&c[0], ".prefetch.landmark") || name_is(&c[0], ".no.prefetch.landmark"))) {
		if (name_is(&c[0], ".no.prefetch.landmark"))
			b->pf_state = 2;
		else if (b->pf_state == 0)
			b->pf_state = 1;
		return 0;
	}
	if (n == 1 && name_is(&c[0], "stargz.index.json"))
		return 0;   /* the TOC's own tar entry: never part of the tree, even if listed */
	if (c[n - 1].len >= 4 && !memcmp(c[n - 1].p, ES_WH_PREFIX, 4))
		return commit_whiteout(b, r, c, n);
	ret = ensure_dir(b, c, n - 1, &dir);
	if (ret)
		return ret;
	ch = find_child(b, dir, c[n - 1].p, c[n - 1].len);
	if (r->type == T_DIR && ch != ES_NONE && is_dir(b, ch) && !b->nodes[ch].wh) {
		/* the same directory again, or a lower layer's: new metadata, same children */
		b->nodes[ch].layer = b->layer;
		return set_attrs(b, b->nodes[ch].inode, r, S_IFDIR);
	}
	if (r->type == T_HARDLINK) {
		uint32_t t;

		if (!r->link_len)
			return bfail(b, -EFSCORRUPTED, "hardlink \"%s\" has no linkName", r->name);
		ret = split_name(b, "linkName", r->link, r->link_len, lc, &ln);
		if (ret)
			return ret;
		t = ln ? lookup_path(b, lc, ln) : ES_NONE;
		if (t == ES_NONE || b->nodes[t].wh || b->ino[b->nodes[t].inode].layer != b->layer)
			return bfail(b, -EFSCORRUPTED,
				     "hardlink \"%s\" -> \"%s\": the target is not an earlier entry of this layer",
				     r->name, r->link);
		if (is_dir(b, t))
			return bfail(b, -EFSCORRUPTED, "hardlink \"%s\" -> \"%s\": the target is a directory",
				     r->name, r->link);
		if (t == ch)
			return 0;   /* a link to itself: already that inode */
		ino = b->nodes[t].inode;
	} else {
		ret = new_inode(b, type_bits(r->type), &ino);
		if (ret)
			return bfail(b, ret, "out of memory");
		ret = set_attrs(b, ino, r, type_bits(r->type));
		if (ret)
			return ret;
		if (r->type == T_SYMLINK) {
			int64_t off;

			if (!r->link_len)
				return bfail(b, -EFSCORRUPTED, "symlink \"%s\" has an empty target", r->name);
			off = es_pool_add(b->es, r->link, r->link_len);
			if (off < 0)
				return bfail(b, (int)off, "no room for the symlink target");
			b->ino[ino].data = (uint32_t)off;
			b->ino[ino].ndata = (uint32_t)r->link_len;
			b->ino[ino].size = r->link_len;
		} else if (r->type == T_CHAR || r->type == T_BLOCK) {
			b->ino[ino].rdev = makedev((unsigned)r->major, (unsigned)r->minor);
		} else if (r->type == T_REG) {
			b->ino[ino].size = r->size;
			b->cur_inode = ino;
			if (r->size && b->pf_state == 0) {
				ret = pf_add(b, ino);
				if (ret)
					return ret;
			}
		}
	}
	if (ch != ES_NONE)
		remove_node(b, ch);
	ret = add_child(b, dir, c[n - 1].p, c[n - 1].len, ino, &ch);
	return ret ? bfail(b, ret, "out of memory") : 0;
}

/* ---- JSON ---- */

#define PS(ctx) ((struct ps *)(ctx))

__attribute__((format(printf, 2, 3)))
static int pfail(struct ps *p, const char *fmt, ...)
{
	char msg[400];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (p->state >= S_ENTRYKEY && p->state <= S_XA_VAL && p->r.has_name)
		bfail(p->b, -EFSCORRUPTED, "(\"%.300s\") %s", p->r.name, msg);
	else if (p->state >= S_ENTRYKEY && p->state <= S_XA_VAL)
		bfail(p->b, -EFSCORRUPTED, "%s", msg);
	else {
		snprintf(p->b->err, sizeof(p->b->err), "layer %.12s: TOC: %s", p->b->lid, msg);
		p->b->err_code = -EFSCORRUPTED;
	}
	return 0;
}

static void skip_value(struct ps *p, enum st back)
{
	p->state = S_SKIP;
	p->ret_state = back;
	p->skip_depth = 0;
}

/* An object or array opens or closes inside a value being skipped. */
static int skip_open(struct ps *p)
{
	if (++p->skip_depth > ES_MAX_JSON_DEPTH)
		return pfail(p, "JSON nested deeper than %d levels", ES_MAX_JSON_DEPTH);
	return 1;
}

static int skip_close(struct ps *p)
{
	p->skip_depth--;
	if (p->skip_depth == 0)
		p->state = p->ret_state;
	return 1;
}

/* A scalar ended a value: where to go next. */
static void value_done(struct ps *p)
{
	if (p->state == S_SKIP) {
		if (p->skip_depth == 0)
			p->state = p->ret_state;
	} else if (p->state == S_VALUE) {
		p->state = S_ENTRYKEY;
	} else if (p->state == S_VERSION) {
		p->state = S_TOPKEY;
	} else if (p->state == S_XA_VAL) {
		p->state = S_XA_KEY;
	}
}

static const char *state_wants(enum st s)
{
	switch (s) {
	case S_TOP: return "an object at the top level";
	case S_VERSION: return "an integer for \"version\"";
	case S_ENTRIES: return "an array for \"entries\"";
	case S_ARRAY: return "an object in \"entries\"";
	case S_XA_OPEN: return "an object for \"xattrs\"";
	case S_XA_VAL: return "a base64 string as an xattr value";
	default: return "something else";
	}
}

/* A value of the wrong kind: what appears where the TOC needs something else. */
static int wrong_kind(struct ps *p, const char *what)
{
	if (p->state == S_VALUE)
		return pfail(p, "field \"%s\" is %s", p->key, what);
	return pfail(p, "%s where the TOC needs %s", what, state_wants(p->state));
}

static int cb_null(void *ctx)
{
	struct ps *p = PS(ctx);

	/* null is Go's "leave the zero value": absent */
	if (p->state == S_VALUE || p->state == S_SKIP || p->state == S_XA_OPEN || p->state == S_ENTRIES ||
	    p->state == S_VERSION) {
		if (p->state == S_XA_OPEN || p->state == S_ENTRIES)
			p->state = p->state == S_XA_OPEN ? S_ENTRYKEY : S_TOPKEY;
		else
			value_done(p);
		return 1;
	}
	return pfail(p, "null where the TOC needs %s", state_wants(p->state));
}

static int cb_bool(void *ctx, int v)
{
	struct ps *p = PS(ctx);

	if (p->state == S_SKIP) {
		value_done(p);
		return 1;
	}
	return wrong_kind(p, "a boolean");
}

/* A JSON number as a non-negative integer <= max. */
static int parse_uint(struct ps *p, const char *s, size_t len, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	if (len && s[0] == '-') {
		if (len == 2 && s[1] == '0') {
			*out = 0;
			return 1;
		}
		return pfail(p, "field \"%s\" is negative (%.40s)", p->key, s);
	}
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return pfail(p, "field \"%s\" is not an integer (%.40s)", p->key, s);
		if (v > (UINT64_MAX - 9) / 10)
			return pfail(p, "field \"%s\" is out of range (%.40s)", p->key, s);
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	if (v > max)
		return pfail(p, "field \"%s\" is out of range (%.40s > %llu)", p->key, s,
			     (unsigned long long)max);
	*out = v;
	return 1;
}

static int cb_number(void *ctx, const char *s, size_t len)
{
	struct ps *p = PS(ctx);
	struct raw *r = &p->r;
	char buf[48];
	uint64_t *dst = NULL, max = INT64_MAX;
	int ok;

	if (p->state == S_SKIP) {
		value_done(p);
		return 1;
	}
	/* yajl hands the number's text, not NUL-terminated */
	snprintf(buf, sizeof(buf), "%.*s", (int)LZ_MIN(len, sizeof(buf) - 1), s);
	if (len >= sizeof(buf))
		return pfail(p, "number %.40s... is too long", buf);
	if (p->state == S_VERSION) {
		p->key = "version";
		ok = parse_uint(p, buf, len, UINT32_MAX, &p->version);
		p->version_seen = ok;
		value_done(p);
		return ok;
	}
	if (p->state != S_VALUE)
		return wrong_kind(p, "a number");
	switch (p->field) {
	case F_SIZE: dst = &r->size; break;
	case F_OFFSET: dst = &r->offset; break;
	case F_INNER: dst = &r->inner; max = ESTARGZ_MAX_CHUNK; break;
	case F_CHUNKOFF: dst = &r->chunk_off; break;
	case F_CHUNKSIZE: dst = &r->chunk_size; break;
	/* legacy TOCs keep S_IFMT bits in mode; they are masked off later */
	case F_MODE: dst = &r->mode; max = UINT32_MAX; break;
	case F_UID: dst = &r->uid; max = UINT32_MAX; break;
	case F_GID: dst = &r->gid; max = UINT32_MAX; break;
	case F_DEVMAJ: dst = &r->major; max = UINT32_MAX; break;
	case F_DEVMIN: dst = &r->minor; max = UINT32_MAX; break;
	default:
		return pfail(p, "field \"%s\" is a number, expected a string", p->key);
	}
	ok = parse_uint(p, buf, len, max, dst);
	value_done(p);
	return ok;
}

static int days_from_civil(int64_t y, unsigned m, unsigned d, int64_t *out)
{
	int64_t era;
	unsigned yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (unsigned)(y - era * 400);
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	*out = era * 146097 + (int64_t)doe - 719468;
	return 0;
}

static int num2(const char *s, unsigned *v)
{
	if (s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9')
		return -1;
	*v = (unsigned)(s[0] - '0') * 10 + (unsigned)(s[1] - '0');
	return 0;
}

/* RFC 3339: YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM) */
static int parse_time(const char *s, size_t len, int64_t *sec, uint32_t *nsec)
{
	static const unsigned mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	unsigned y1, y2, mo, d, h, mi, se, oh = 0, om = 0;
	int64_t days, zone = 0;
	uint32_t ns = 0;
	size_t i = 19;

	if (len < 20 || num2(s, &y1) || num2(s + 2, &y2) || s[4] != '-' || num2(s + 5, &mo) || s[7] != '-' ||
	    num2(s + 8, &d) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || num2(s + 11, &h) ||
	    s[13] != ':' || num2(s + 14, &mi) || s[16] != ':' || num2(s + 17, &se))
		return -1;
	if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || se > 60)
		return -1;
	if (s[i] == '.') {
		unsigned digits = 0;

		for (i++; i < len && s[i] >= '0' && s[i] <= '9'; i++, digits++)
			if (digits < 9)
				ns = ns * 10 + (uint32_t)(s[i] - '0');
		if (!digits)
			return -1;
		for (; digits < 9; digits++)
			ns *= 10;
	}
	if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
		i++;
	} else if (i + 6 <= len && (s[i] == '+' || s[i] == '-') && !num2(s + i + 1, &oh) && s[i + 3] == ':' &&
		   !num2(s + i + 4, &om) && oh < 24 && om < 60) {
		/* local time = UTC + offset */
		zone = (s[i] == '+' ? 1 : -1) * (int64_t)(oh * 60 + om) * 60;
		i += 6;
	} else {
		return -1;
	}
	if (i != len)
		return -1;
	days_from_civil((int64_t)(y1 * 100 + y2), mo, d, &days);
	*sec = days * 86400 + h * 3600 + mi * 60 + se - zone;
	*nsec = ns;
	return 0;
}

static int parse_digest(struct ps *p, const char *s, size_t len, uint8_t out[32], bool *has)
{
	if (len == 0) {
		*has = false;
		return 1;
	}
	if (len != 7 + 64 || memcmp(s, "sha256:", 7) || lz_unhex(s + 7, 64, out, 32))
		return pfail(p, "field \"%s\" is not a sha256 digest (\"%.*s\")", p->key, (int)LZ_MIN(len, (size_t)80), s);
	*has = true;
	return 1;
}

static int b64val(uint8_t c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Standard padded base64, as Go's encoding/json writes []byte. */
static ssize_t b64_decode(const char *s, size_t len, uint8_t *out, size_t cap)
{
	size_t o = 0;

	if (len % 4)
		return -1;
	for (size_t i = 0; i < len; i += 4) {
		int v[4], pad = 0;

		for (int k = 0; k < 4; k++) {
			uint8_t ch = (uint8_t)s[i + k];

			if (ch == '=' && i + 4 == len && k >= 2) {
				v[k] = 0;
				pad++;
				continue;
			}
			if (pad)
				return -1;
			v[k] = b64val(ch);
			if (v[k] < 0)
				return -1;
		}
		if (o + 3 - (size_t)pad > cap)
			return -2;
		out[o++] = (uint8_t)(v[0] << 2 | v[1] >> 4);
		if (pad < 2)
			out[o++] = (uint8_t)(v[1] << 4 | v[2] >> 2);
		if (pad < 1)
			out[o++] = (uint8_t)(v[2] << 6 | v[3]);
	}
	return (ssize_t)o;
}

static int xa_reserve(struct raw *r, size_t more)
{
	if (r->xa_len + more > r->xa_cap) {
		size_t ncap = LZ_MAX(r->xa_cap * 2, r->xa_len + more);
		uint8_t *n = lz_realloc(r->xa, ncap);

		if (!n)
			return -ENOMEM;
		r->xa = n;
		r->xa_cap = ncap;
	}
	return 0;
}

static int xa_add(struct ps *p, const char *val, size_t len)
{
	struct raw *r = &p->r;
	size_t pos = 0;
	ssize_t n;

	if (xa_reserve(r, 2 + r->xa_key_len + 4 + len / 4 * 3 + 3))
		return pfail(p, "out of memory");
	/* a repeated name: the later value wins, like Go's map */
	for (unsigned i = 0; i < r->nxa; i++) {
		size_t nl = lz_get_le16(r->xa + pos), vl = lz_get_le32(r->xa + pos + 2 + nl);
		size_t rec = 2 + nl + 4 + vl;

		if (nl == r->xa_key_len && !memcmp(r->xa + pos + 2, r->xa_key, nl)) {
			memmove(r->xa + pos, r->xa + pos + rec, r->xa_len - pos - rec);
			r->xa_len -= rec;
			r->nxa--;
			break;
		}
		pos += rec;
	}
	if (r->nxa >= ESTARGZ_MAX_XATTRS)
		return pfail(p, "more than %d xattrs", ESTARGZ_MAX_XATTRS);
	lz_put_le16(r->xa + r->xa_len, (uint16_t)r->xa_key_len);
	memcpy(r->xa + r->xa_len + 2, r->xa_key, r->xa_key_len);
	n = b64_decode(val, len, r->xa + r->xa_len + 2 + r->xa_key_len + 4, ESTARGZ_MAX_XATTR_VALUE);
	if (n == -2)
		return pfail(p, "xattr \"%s\": value over %d bytes", r->xa_key, ESTARGZ_MAX_XATTR_VALUE);
	if (n < 0)
		return pfail(p, "xattr \"%s\": value is not base64", r->xa_key);
	lz_put_le32(r->xa + r->xa_len + 2 + r->xa_key_len, (uint32_t)n);
	r->xa_len += 2 + r->xa_key_len + 4 + (size_t)n;
	r->nxa++;
	return 1;
}

/* name or linkName (p->key, for the message) into the record */
static int copy_path(struct ps *p, const char *s, size_t len, char dst[ESTARGZ_MAX_PATH + 1], size_t *dlen)
{
	if (len > ESTARGZ_MAX_PATH)
		return pfail(p, "%s of %zu bytes (max %d)", p->key, len, ESTARGZ_MAX_PATH);
	memcpy(dst, s, len);
	dst[len] = 0;
	*dlen = len;
	return 1;
}

static int cb_string(void *ctx, const unsigned char *us, size_t len)
{
	struct ps *p = PS(ctx);
	struct raw *r = &p->r;
	const char *s = (const char *)us;

	if (p->state == S_SKIP) {
		value_done(p);
		return 1;
	}
	if (p->state == S_XA_VAL) {
		int ok = xa_add(p, s, len);

		value_done(p);
		return ok;
	}
	if (p->state != S_VALUE)
		return wrong_kind(p, "a string");
	switch (p->field) {
	case F_NAME:
		if (!copy_path(p, s, len, r->name, &r->name_len))
			return 0;
		r->has_name = true;
		break;
	case F_LINK:
		if (!copy_path(p, s, len, r->link, &r->link_len))
			return 0;
		break;
	case F_TYPE:
		r->type = T_NONE;
		for (int i = T_DIR; i <= T_CHUNK; i++)
			if (len == strlen(type_names[i]) && !memcmp(s, type_names[i], len))
				r->type = i;
		if (r->type == T_NONE)
			return pfail(p, "unknown type \"%.*s\"", (int)LZ_MIN(len, (size_t)40), s);
		break;
	case F_MODTIME:
		if (len == 0) {
			r->mtime = 0;
			r->nsec = 0;
		} else if (parse_time(s, len, &r->mtime, &r->nsec)) {
			return pfail(p, "modtime \"%.*s\" is not an RFC 3339 time", (int)LZ_MIN(len, (size_t)60), s);
		}
		break;
	case F_DIGEST:
		if (!parse_digest(p, s, len, r->digest, &r->has_digest))
			return 0;
		break;
	case F_CHUNKDIGEST:
		if (!parse_digest(p, s, len, r->cdigest, &r->has_cdigest))
			return 0;
		break;
	default:
		return pfail(p, "field \"%s\" is a string, expected %s", p->key,
			     p->field == F_XATTRS ? "an object" : "an integer");
	}
	value_done(p);
	return 1;
}

static int cb_start_map(void *ctx)
{
	struct ps *p = PS(ctx);

	switch (p->state) {
	case S_TOP:
		p->state = S_TOPKEY;
		return 1;
	case S_ARRAY: {
		struct raw *r = &p->r;
		uint8_t *xa = r->xa;
		size_t xa_cap = r->xa_cap;

		/* reset only the scalar part; the buffers are reused */
		r->type = T_NONE;
		r->has_name = false;
		r->name_len = r->link_len = 0;
		r->name[0] = r->link[0] = 0;
		r->size = r->offset = r->inner = r->chunk_off = r->chunk_size = 0;
		r->mode = r->uid = r->gid = r->major = r->minor = 0;
		r->mtime = 0;
		r->nsec = 0;
		r->has_digest = r->has_cdigest = false;
		r->xa = xa;
		r->xa_cap = xa_cap;
		r->xa_len = 0;
		r->nxa = 0;
		if (p->b->entry >= ESTARGZ_MAX_ENTRIES)
			return pfail(p, "more than %u entries", ESTARGZ_MAX_ENTRIES);
		p->state = S_ENTRYKEY;
		return 1;
	}
	case S_XA_OPEN:
		p->state = S_XA_KEY;
		return 1;
	case S_SKIP:
		return skip_open(p);
	default:
		return wrong_kind(p, "an object");
	}
}

static int cb_key(void *ctx, const unsigned char *k, size_t len)
{
	struct ps *p = PS(ctx);

	switch (p->state) {
	case S_TOPKEY:
		if (len == 7 && !memcmp(k, "version", 7)) {
			p->state = S_VERSION;
		} else if (len == 7 && !memcmp(k, "entries", 7)) {
			p->state = S_ENTRIES;
		} else {
			skip_value(p, S_TOPKEY);
		}
		return 1;
	case S_ENTRYKEY:
		for (size_t i = 0; i < LZ_ARRAY_SIZE(fields); i++) {
			if (len == strlen(fields[i].key) && !memcmp(k, fields[i].key, len)) {
				p->field = fields[i].f;
				p->key = fields[i].key;
				p->state = p->field == F_XATTRS ? S_XA_OPEN : S_VALUE;
				return 1;
			}
		}
		/* userName, groupName, NumLink and anything unknown */
		skip_value(p, S_ENTRYKEY);
		return 1;
	case S_XA_KEY:
		if (len == 0 || len > 255 || memchr(k, 0, len))
			return pfail(p, "xattr name of %zu bytes (must be 1..255, no NUL)", len);
		memcpy(p->r.xa_key, k, len);
		p->r.xa_key[len] = 0;
		p->r.xa_key_len = len;
		p->state = S_XA_VAL;
		return 1;
	case S_SKIP:
		return 1;
	default:
		return pfail(p, "unexpected key");
	}
}

static int cb_end_map(void *ctx)
{
	struct ps *p = PS(ctx);

	switch (p->state) {
	case S_TOPKEY:
		p->state = S_END;
		return 1;
	case S_ENTRYKEY:
		if (commit(p->b, &p->r))
			return 0;
		p->b->entry++;
		p->b->es->layers[p->b->layer].entries++;
		p->state = S_ARRAY;
		return 1;
	case S_XA_KEY:
		p->state = S_ENTRYKEY;
		return 1;
	case S_SKIP:
		return skip_close(p);
	default:
		return pfail(p, "unexpected end of object");
	}
}

static int cb_start_array(void *ctx)
{
	struct ps *p = PS(ctx);

	switch (p->state) {
	case S_ENTRIES:
		p->state = S_ARRAY;
		return 1;
	case S_SKIP:
		return skip_open(p);
	default:
		return wrong_kind(p, "an array");
	}
}

static int cb_end_array(void *ctx)
{
	struct ps *p = PS(ctx);

	switch (p->state) {
	case S_ARRAY:
		p->state = S_TOPKEY;
		return 1;
	case S_SKIP:
		return skip_close(p);
	default:
		return pfail(p, "unexpected end of array");
	}
}

static const yajl_callbacks es_callbacks = {
	.yajl_null = cb_null,
	.yajl_boolean = cb_bool,
	.yajl_number = cb_number,
	.yajl_string = cb_string,
	.yajl_start_map = cb_start_map,
	.yajl_map_key = cb_key,
	.yajl_end_map = cb_end_map,
	.yajl_start_array = cb_start_array,
	.yajl_end_array = cb_end_array,
};

static int layer_data_pass(struct bld *b)
{
	struct es_layer *l = &b->es->layers[b->layer];
	uint64_t last = l->limit, space = 0;

	/* nextOffset: the start of the next member that begins a data entry */
	for (uint32_t i = l->nchunks; i-- > 0;) {
		struct es_chunk *c = &l->chunks[i];

		c->next = last;
		if (c->inner == 0)
			last = c->offset;
	}
	for (uint32_t i = 0; i < l->nchunks; i++) {
		struct es_chunk *c = &l->chunks[i];

		if (c->offset >= c->next) {
			snprintf(b->err, sizeof(b->err),
				 "layer %.12s: data entry %u (file offset %llu) at blob offset %llu is not before the next member (%llu): offsets out of order",
				 b->lid, i, (unsigned long long)c->file_off, (unsigned long long)c->offset,
				 (unsigned long long)c->next);
			return b->err_code = -EFSCORRUPTED;
		}
		if (c->next - c->offset > ESTARGZ_MAX_FETCH) {
			snprintf(b->err, sizeof(b->err),
				 "layer %.12s: data entry %u spans %llu compressed bytes (max %u MiB)", b->lid, i,
				 (unsigned long long)(c->next - c->offset), ESTARGZ_MAX_FETCH >> 20);
			return b->err_code = -EFSCORRUPTED;
		}
		c->space_off = space;
		space += c->size;
	}
	l->space = space;
	return 0;
}

static int parse_layer(struct bld *b, const struct estargz_layer *L)
{
	struct ps *p;
	yajl_handle h = NULL;
	yajl_status st;
	int ret = 0;

	p = lz_calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->b = b;
	b->entry = 0;
	b->cur_type = T_NONE;
	b->cur_inode = ES_NONE;
	b->cur_size = 0;
	b->pf_state = 0;
	b->pf_start = b->npf;
	h = yajl_alloc(&es_callbacks, NULL, p);
	if (!h) {
		ret = -ENOMEM;
		goto out;
	}
	st = yajl_parse(h, (const unsigned char *)L->toc_json, L->toc_len);
	if (st == yajl_status_ok)
		st = yajl_complete_parse(h);
	if (st != yajl_status_ok || b->err_code) {
		if (!b->err_code) {
			unsigned char *e = yajl_get_error(h, 0, (const unsigned char *)L->toc_json, L->toc_len);
			size_t el = e ? strlen((char *)e) : 0;

			while (el && (e[el - 1] == '\n' || e[el - 1] == ' '))
				e[--el] = 0;
			snprintf(b->err, sizeof(b->err), "layer %.12s: TOC is not valid JSON: %s (near byte %zu)",
				 b->lid, e ? (const char *)e : "parse error", yajl_get_bytes_consumed(h));
			if (e)
				yajl_free_error(h, e);
			b->err_code = -EFSCORRUPTED;
		}
		ret = b->err_code;
		goto out;
	}
	if (!p->version_seen || p->version != 1) {
		if (p->version_seen)
			snprintf(b->err, sizeof(b->err), "layer %.12s: TOC version %llu, expected 1", b->lid,
				 (unsigned long long)p->version);
		else
			snprintf(b->err, sizeof(b->err), "layer %.12s: TOC has no \"version\"", b->lid);
		ret = b->err_code = -EFSCORRUPTED;
		goto out;
	}
	ret = finish_file(b);
	if (!ret)
		ret = layer_data_pass(b);
	if (!ret && b->pf_state != 1)
		b->npf = b->pf_start;
out:
	if (h)
		yajl_free(h);
	free(p->r.xa);
	free(p);
	return ret;
}

/* ---- final tree ---- */

static int dirent_cmp(const void *a, const void *b, void *pool)
{
	const struct es_dirent *x = a, *y = b;
	const char *sp = pool;
	int c = memcmp(sp + x->name, sp + y->name, LZ_MIN(x->len, y->len));

	return c ? c : (int)x->len - (int)y->len;
}

static int finalize(struct bld *b)
{
	struct estargz *es = b->es;
	uint32_t *queue = NULL, *map = NULL, qh = 0, qt = 0, nino = 0;
	struct es_inode *fin = NULL;
	int ret = 0;

	/* every live node but the root becomes one dirent; dirs are queued once each */
	es->dirents = lz_calloc(b->nlive ? b->nlive : 1, sizeof(*es->dirents));
	queue = lz_calloc((size_t)b->nlive + 1, sizeof(*queue));
	map = lz_calloc((size_t)b->nino + 1, sizeof(*map));   /* final number -> build index */
	if (!es->dirents || !queue || !map) {
		ret = -ENOMEM;
		goto out;
	}
	for (uint32_t i = 0; i < b->nino; i++) {
		b->ino[i].fino = 0;
		b->ino[i].name_de = ES_NONE;
	}
	b->ino[b->nodes[0].inode].fino = ++nino;
	b->ino[b->nodes[0].inode].parent = 1;
	map[1] = b->nodes[0].inode;
	queue[qt++] = 0;
	while (qh < qt) {
		uint32_t dn = queue[qh++], first = es->ndirents, subdirs = 0;
		struct es_inode *din = &b->ino[b->nodes[dn].inode];

		for (uint32_t c = b->nodes[dn].child; c != ES_NONE; c = b->nodes[c].next) {
			struct es_node *cn = &b->nodes[c];
			struct es_inode *cin = &b->ino[cn->inode];
			struct es_dirent *de = &es->dirents[es->ndirents++];

			if (!cin->fino) {
				cin->fino = ++nino;
				cin->nlink = 0;
				map[nino] = cn->inode;
			}
			cin->nlink++;
			de->name = cn->name;
			de->len = cn->len;
			de->ino = cin->fino;
			if (S_ISDIR(cin->mode)) {
				subdirs++;
				queue[qt++] = c;
			}
		}
		din->data = first;
		din->ndata = es->ndirents - first;
		din->nlink = 2 + subdirs;
		qsort_r(es->dirents + first, din->ndata, sizeof(*es->dirents), dirent_cmp, es->pool);
		/* the first name of each inode, in sorted order, is the one messages use */
		for (uint32_t i = first; i < es->ndirents; i++) {
			struct es_inode *cin = &b->ino[map[es->dirents[i].ino]];

			if (cin->name_de == ES_NONE) {
				cin->name_de = i;
				cin->parent = din->fino;
			}
		}
	}
	/* prefetch first: it reads build indices, which the permutation below changes */
	if (b->npf) {
		es->prefetch = lz_calloc(b->npf, sizeof(*es->prefetch));
		if (!es->prefetch) {
			ret = -ENOMEM;
			goto out;
		}
		for (size_t i = 0; i < b->npf; i++)
			if (b->ino[b->pf[i]].fino && S_ISREG(b->ino[b->pf[i]].mode))
				es->prefetch[es->nprefetch++] = b->ino[b->pf[i]].fino;
	}
	/*
	 * The final table is the build table put in final order in place (cycle by
	 * cycle), unreachable inodes last, then trimmed: no second copy at the
	 * peak of memory use.
	 */
	{
		uint32_t next = nino;

		for (uint32_t i = 0; i < b->nino; i++)
			if (!b->ino[i].fino)
				b->ino[i].fino = ++next;
		for (uint32_t i = 0; i < b->nino; i++) {
			while (b->ino[i].fino - 1 != i) {
				uint32_t j = b->ino[i].fino - 1;
				struct es_inode tmp = b->ino[j];

				b->ino[j] = b->ino[i];
				b->ino[i] = tmp;
			}
		}
	}
	for (uint32_t f = 1; f <= nino; f++) {
		struct es_inode *in = &b->ino[f - 1];

		if (!S_ISDIR(in->mode) && in->nlink > 1)
			es->info.hardlink_names += in->nlink - 1;
		if (S_ISREG(in->mode) && in->data == ES_NONE)
			in->ndata = 0;
		switch (in->mode & S_IFMT) {
		case S_IFDIR: es->info.dirs++; break;
		case S_IFREG: es->info.regs++; break;
		case S_IFLNK: es->info.symlinks++; break;
		case S_IFCHR: es->info.chrs++; break;
		case S_IFBLK: es->info.blks++; break;
		case S_IFIFO: es->info.fifos++; break;
		}
	}
	fin = lz_realloc(b->ino, (size_t)nino * sizeof(*fin));
	es->inodes = fin ? fin : b->ino;
	b->ino = NULL;
	b->nino = b->icap = 0;
	es->ninodes = nino;
	es->info.inodes = nino;
	fin = NULL;
out:
	free(fin);
	free(queue);
	free(map);
	return ret;
}

int es_build(struct estargz *es, const struct estargz_layer *layers, size_t n)
{
	struct bld *b;
	uint32_t root;
	int ret;

	b = lz_calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->es = es;
	b->lid = es->layers[0].id;
	b->ncap = 1024;
	b->nodes = lz_calloc(b->ncap, sizeof(*b->nodes));
	ret = b->nodes ? hash_grow(b) : -ENOMEM;
	if (!ret)
		ret = new_inode(b, S_IFDIR | 0755, &root);
	if (ret)
		goto out;
	b->nnodes = 1;
	memset(&b->nodes[0], 0, sizeof(b->nodes[0]));
	b->nodes[0].child = b->nodes[0].next = b->nodes[0].prev = b->nodes[0].hnext = ES_NONE;
	b->nodes[0].inode = root;
	for (size_t i = 0; i < n && !ret; i++) {
		b->layer = (unsigned)i;
		b->lid = es->layers[i].id;
		ret = parse_layer(b, &layers[i]);
		es->info.toc_entries += es->layers[i].entries;
	}
	if (ret) {
		lz_err("%s", b->err[0] ? b->err : lz_strerror(ret));
		goto out;
	}
	ret = finalize(b);
out:
	free(b->nodes);
	free(b->hash);
	free(b->ino);
	free(b->pf);
	free(b);
	return ret;
}
