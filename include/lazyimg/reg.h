/* SPDX-License-Identifier: Apache-2.0 */
/*
 * reg.h - OCI/Docker registry client over libcurl: references, auth (basic,
 * bearer tokens per repository scope, docker config.json), manifests and
 * indexes, ranged blob reads with retries, redirects and mirrors.
 *
 * Thread-safety: one reg_client may be used from many threads at once; each
 * call uses its own easy handle and shares connections through a curl share.
 * curl_global_init() must have run before any thread starts (reg_global_init).
 * Credentials and tokens are never logged.
 */
#ifndef LAZYIMG_REG_H
#define LAZYIMG_REG_H

#include "lazyimg/lz.h"

#define REG_MAX_MANIFEST (4u << 20)
#define REG_MAX_HOST 256
#define REG_MAX_REPO 256
#define REG_MAX_TAG 128
#define REG_DIGEST_LEN 71     /* "sha256:" + 64 hex */
#define REG_MAX_MIRRORS 8

struct reg_ref {
	char host[REG_MAX_HOST];     /* as written, e.g. "127.0.0.1:5000"; "docker.io" for Hub */
	char repo[REG_MAX_REPO];     /* path without host, e.g. "library/alpine" */
	char tag[REG_MAX_TAG];       /* "" when only a digest was given */
	char digest[REG_DIGEST_LEN + 1]; /* "" when absent */
};

/* Parse host[:port]/repo[:tag][@sha256:hex] (Docker Hub defaults applied). */
int reg_ref_parse(const char *s, struct reg_ref *out);
/* "sha256:<64 lowercase hex>" only. */
bool reg_digest_valid(const char *d);

struct reg_opts {
	bool insecure;           /* plain http (and no TLS verification) */
	const char *ca_file;     /* extra CA bundle for TLS verification */
	const char *auth_file;   /* docker config.json; NULL: $DOCKER_CONFIG or ~/.docker */
	const char *username;    /* explicit credentials win over the auth file */
	const char *password;
	const char *mirrors[REG_MAX_MIRRORS]; /* base URLs tried in order before the registry */
	int nmirrors;
	int connect_timeout_s;   /* default 5 */
	int timeout_s;           /* per request (low-speed based); default 30 */
	int retries;             /* default 4 */
	int max_conns;           /* concurrent requests per client; default 8 */
};

struct reg_client;

/* Requests in flight to one host (registry, mirror or redirect target),
 * summed over every client in the process; each client's max_conns also
 * applies. */
#define REG_DEFAULT_HOST_CONNS 16
void reg_set_host_conns(int n);
/* Highest number of concurrent requests seen to host ("h:port"), for tests
 * and stats; -ENOENT if the host was never contacted. */
int reg_host_peak_conns(const char *host);

void reg_global_init(void);
int reg_client_new(const struct reg_ref *ref, const struct reg_opts *opts, struct reg_client **out);
void reg_client_free(struct reg_client *c);
/* Close every pooled connection, e.g. before fork() so that no TLS session
 * is shared by two processes. Not thread-safe against concurrent requests. */
int reg_client_drop_connections(struct reg_client *c);

/*
 * Fetch a manifest or index by tag or digest ("" = the reference's own).
 * *body is malloc'd (NUL-terminated), *media the Content-Type, digest_out
 * the sha256 of the exact bytes. When fetched by digest the body must hash
 * to it (-EBADMSG otherwise).
 */
int reg_get_manifest(struct reg_client *c, const char *tag_or_digest, char **body, size_t *len,
		     char **media, char digest_out[REG_DIGEST_LEN + 1]);
/* Read exactly len bytes at off of a blob. Handles 200-for-206, redirects, 401. */
int reg_get_blob_range(struct reg_client *c, const char *digest, void *buf, size_t len, uint64_t off);
/* Whole blob into memory (capped by max), verified against its digest. */
int reg_get_blob(struct reg_client *c, const char *digest, uint64_t max, void **buf, size_t *len);

/* Push (for convert to a registry). */
int reg_blob_exists(struct reg_client *c, const char *digest);
int reg_push_blob(struct reg_client *c, const char *digest, const void *buf, size_t len);
int reg_push_blob_file(struct reg_client *c, const char *digest, const char *path, uint64_t size);
int reg_push_manifest(struct reg_client *c, const char *tag, const char *media, const void *buf, size_t len);

struct reg_stats {
	uint64_t requests, bytes, retries, errors, token_fetches;
};
void reg_get_stats(const struct reg_client *c, struct reg_stats *st);

/* Parsers exposed for tests and fuzzing. */
struct reg_challenge {
	char scheme[16];        /* "Bearer" or "Basic" */
	char realm[1024];
	char service[256];
	char scope[1024];
};
/* Parse one WWW-Authenticate header value; picks Bearer over Basic. */
int reg_parse_challenge(const char *hdr, size_t len, struct reg_challenge *out);

/*
 * Docker credential helpers (config.json "credHelpers"/"credsStore"): run
 * `docker-credential-NAME get` with server on stdin (10 s at most, 64 KiB of
 * answer), user name and secret out. -ENOENT: no such program on PATH;
 * -EIO: it failed (its message is logged); -EOPNOTSUPP: an identity token.
 * The parser of its answer stands alone for fuzzing.
 */
int reg_cred_helper_get(const char *name, const char *server, char *user, size_t ucap, char *secret,
			size_t scap);
int reg_parse_cred_helper(const char *buf, size_t len, char *user, size_t ucap, char *secret, size_t scap);
bool reg_cred_helper_name_ok(const char *name);
/* "bytes first-last/total" (total may be "*": then *total = 0). */
int reg_parse_content_range(const char *hdr, size_t len, uint64_t *first, uint64_t *last, uint64_t *total);


/* ---------- manifests ---------- */

#define REG_MAX_LAYERS 1024
#define REG_MAX_MEDIA 128

struct reg_desc {
	char media[REG_MAX_MEDIA];
	char digest[REG_DIGEST_LEN + 1];
	uint64_t size;
	bool nydus_bootstrap;    /* containerd.io/snapshot/nydus-bootstrap: "true" */
	bool nydus_blob;         /* containerd.io/snapshot/nydus-blob: "true" */
	int nydus_fs_version;    /* nydus-fs-version annotation, 0 if absent */
	char toc_digest[REG_DIGEST_LEN + 1]; /* containerd.io/snapshot/stargz/toc.digest */
	uint64_t uncompressed_size;          /* io.containers.estargz.uncompressed-size */
};

struct reg_manifest {
	char media[REG_MAX_MEDIA];
	char digest[REG_DIGEST_LEN + 1];
	struct reg_desc config;
	struct reg_desc *layers;
	size_t nlayers;
	char *raw;               /* the exact bytes */
	size_t raw_len;
};

/*
 * Parse an image manifest (OCI or Docker schema 2). Hostile input: types,
 * digests and counts are checked. -EMEDIUMTYPE for an index (use
 * reg_index_pick) and -EOPNOTSUPP for schema 1.
 */
int reg_manifest_parse(const char *body, size_t len, struct reg_manifest *m);
/* From an index/manifest list, the digest of the entry for os/arch[/variant]. */
int reg_index_pick(const char *body, size_t len, const char *os, const char *arch, const char *variant,
		   char digest[REG_DIGEST_LEN + 1]);
void reg_manifest_free(struct reg_manifest *m);
/* Fetch the reference (following an index to this machine's platform) and parse it. */
int reg_resolve(struct reg_client *c, struct reg_manifest *m);


/* ---------- nydus images in a registry ---------- */

/*
 * Find the nydus bootstrap layer of a resolved manifest (by annotation, else
 * the last layer when the others are nydus blobs). -EMEDIUMTYPE with a log
 * line saying what the image is when it is not a nydus image.
 */
int reg_nydus_bootstrap_layer(const struct reg_manifest *m, const struct reg_desc **out);
/*
 * Download the bootstrap layer, unpack image/image.boot (or legacy
 * image.boot) and write it to `path`. Verifies the layer digest.
 */
int reg_nydus_fetch_bootstrap(struct reg_client *c, const struct reg_desc *layer, const char *path);

struct rafs_build_opts;
/*
 * Pull an OCI image, convert each layer to RAFS, merge, and push blobs,
 * the bootstrap layer, config and manifest (with nydus annotations) to dst.
 * workdir holds the intermediate files.
 */
int reg_convert_image(struct reg_client *src, struct reg_client *dst, const char *dst_tag,
		      const struct rafs_build_opts *opts, const char *workdir);

#endif
