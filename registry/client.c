/* SPDX-License-Identifier: Apache-2.0 */
#define LZ_MOD "reg"
#include "lazyimg/reg.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#define REG_MAX_REDIRECTS 5
#define REG_MAX_TOKEN_BODY (1u << 20)

struct reg_client {
	struct reg_ref ref;
	struct reg_opts o;
	char base[REG_MAX_HOST + 16];         /* scheme://host of the registry */
	char *mirrors[REG_MAX_MIRRORS];
	/* CLOCK_MONOTONIC ms until which a mirror that failed is skipped */
	_Atomic int64_t mirror_down_until[REG_MAX_MIRRORS];
	char *ca_file;
	CURLSH *share;
	pthread_mutex_t share_lock[CURL_LOCK_DATA_LAST];
	sem_t conns;                          /* bounds concurrent requests */

	/* lock order: tok_lock only; never held across anything but a token fetch */
	pthread_mutex_t tok_lock;
	char *authz;                          /* protected by tok_lock: "Authorization: ..." */
	time_t authz_expiry;                  /* protected by tok_lock; 0 = never */
	long authz_ttl;                       /* protected by tok_lock */
	struct reg_challenge chal;            /* protected by tok_lock */
	bool have_chal;                       /* protected by tok_lock */
	char *basic;                          /* base64(user:pass) or NULL; constant after new */
	char *registry_token;                 /* ready bearer token from the auth file */

	_Atomic uint64_t st_requests, st_bytes, st_retries, st_errors, st_tokens;
};

void reg_global_init(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void share_lock(CURL *h, curl_lock_data d, curl_lock_access a, void *u)
{
	struct reg_client *c = u;

	pthread_mutex_lock(&c->share_lock[d]);
}

static void share_unlock(CURL *h, curl_lock_data d, void *u)
{
	struct reg_client *c = u;

	pthread_mutex_unlock(&c->share_lock[d]);
}

static char *b64(const void *in, size_t len)
{
	char *out = lz_malloc(4 * ((len + 2) / 3) + 1);

	if (out)
		EVP_EncodeBlock((unsigned char *)out, in, (int)len);
	return out;
}

static int unb64(const char *in, char *out, size_t cap)
{
	size_t l = strlen(in);
	int n;

	if (l % 4 || (l / 4) * 3 + 1 > cap)
		return -EINVAL;
	n = EVP_DecodeBlock((unsigned char *)out, (const unsigned char *)in, (int)l);
	if (n < 0)
		return -EINVAL;
	while (l && in[l - 1] == '=') {
		n--;
		l--;
	}
	out[n] = 0;
	return n;
}

/* A config.json key (may carry a scheme and a path) names host: compare hosts only. */
static bool host_key_matches(const char *key, const char *host)
{
	char h[REG_MAX_HOST];
	size_t hl;

	if (!strncmp(key, "https://", 8))
		key += 8;
	else if (!strncmp(key, "http://", 7))
		key += 7;
	hl = strcspn(key, "/");
	if (hl >= sizeof(h))
		return false;
	memcpy(h, key, hl);
	h[hl] = 0;
	return !strcmp(h, host) || (!strcmp(host, "docker.io") && !strcmp(h, "index.docker.io"));
}

/* Credentials: explicit, then environment, then docker config.json. */
static int load_credentials(struct reg_client *c)
{
	const char *user = c->o.username, *pass = c->o.password;
	char path[4096], up[2048];
	json_object *root = NULL, *auths, *ent, *v;
	const char *dc;
	int ret = 0;

	if (!user) {
		user = getenv("LAZYIMG_REGISTRY_USER");
		pass = getenv("LAZYIMG_REGISTRY_PASSWORD");
	}
	if (user && pass) {
		snprintf(up, sizeof(up), "%s:%s", user, pass);
		c->basic = b64(up, strlen(up));
		explicit_bzero(up, sizeof(up));
		return c->basic ? 0 : -ENOMEM;
	}
	if (c->o.auth_file) {
		snprintf(path, sizeof(path), "%s", c->o.auth_file);
	} else if ((dc = getenv("DOCKER_CONFIG"))) {
		snprintf(path, sizeof(path), "%s/config.json", dc);
	} else if ((dc = getenv("HOME"))) {
		snprintf(path, sizeof(path), "%s/.docker/config.json", dc);
	} else {
		return 0;
	}
	if (access(path, R_OK) < 0) {
		if (c->o.auth_file) {
			lz_err("auth file %s: %s", path, strerror(errno));
			return -errno;
		}
		return 0;
	}
	root = json_object_from_file(path);
	if (!root) {
		lz_err("auth file %s is not valid JSON", path);
		return -EINVAL;
	}
	/* as docker does: a helper for this registry, else the store for all, else auths */
	{
		const char *helper = NULL;
		json_object *h;

		if (json_object_object_get_ex(root, "credHelpers", &h) && json_object_is_type(h, json_type_object)) {
			json_object_object_foreach(h, hk, hv) {
				if (json_object_is_type(hv, json_type_string) && host_key_matches(hk, c->ref.host))
					helper = json_object_get_string(hv);
			}
		}
		if (!helper && json_object_object_get_ex(root, "credsStore", &h) && json_object_is_type(h, json_type_string) &&
		    json_object_get_string_len(h) > 0)
			helper = json_object_get_string(h);
		if (helper) {
			char hu[512], secret[1400];
			const char *server = strcmp(c->ref.host, "docker.io") ? c->ref.host : "https://index.docker.io/v1/";

			ret = reg_cred_helper_get(helper, server, hu, sizeof(hu), secret, sizeof(secret));
			if (!ret) {
				snprintf(up, sizeof(up), "%s:%s", hu, secret);
				c->basic = b64(up, strlen(up));
				explicit_bzero(up, sizeof(up));
				explicit_bzero(secret, sizeof(secret));
				ret = c->basic ? 0 : -ENOMEM;
				goto out;
			}
			if (ret != -ENOENT)
				goto out;
			/* a config.json copied from a machine with a helper this one lacks */
			lz_warn("auth file %s: trying its \"auths\" entries instead", path);
			ret = 0;
		}
	}
	if (!json_object_object_get_ex(root, "auths", &auths) || !json_object_is_type(auths, json_type_object))
		goto out;
	ent = NULL;
	json_object_object_foreach(auths, key, val) {
		if (host_key_matches(key, c->ref.host)) {
			ent = val;
			break;
		}
	}
	if (!ent || !json_object_is_type(ent, json_type_object))
		goto out;
	if (json_object_object_get_ex(ent, "registrytoken", &v) && json_object_is_type(v, json_type_string)) {
		c->registry_token = strdup(json_object_get_string(v));
		ret = c->registry_token ? 0 : -ENOMEM;
	} else if (json_object_object_get_ex(ent, "auth", &v) && json_object_is_type(v, json_type_string)) {
		if (unb64(json_object_get_string(v), up, sizeof(up)) < 0 || !strchr(up, ':')) {
			lz_err("auth file %s: entry for %s has a malformed 'auth' value", path, c->ref.host);
			ret = -EINVAL;
		} else {
			c->basic = strdup(json_object_get_string(v));
			ret = c->basic ? 0 : -ENOMEM;
		}
		explicit_bzero(up, sizeof(up));
	} else {
		json_object *u, *p;

		if (json_object_object_get_ex(ent, "username", &u) && json_object_object_get_ex(ent, "password", &p) &&
		    json_object_is_type(u, json_type_string) && json_object_is_type(p, json_type_string)) {
			snprintf(up, sizeof(up), "%s:%s", json_object_get_string(u), json_object_get_string(p));
			c->basic = b64(up, strlen(up));
			explicit_bzero(up, sizeof(up));
			ret = c->basic ? 0 : -ENOMEM;
		}
	}
out:
	json_object_put(root);
	return ret;
}

int reg_client_new(const struct reg_ref *ref, const struct reg_opts *opts, struct reg_client **out)
{
	struct reg_client *c = lz_calloc(1, sizeof(*c));
	int ret;

	if (!c)
		return -ENOMEM;
	c->ref = *ref;
	if (opts)
		c->o = *opts;
	if (!c->o.connect_timeout_s)
		c->o.connect_timeout_s = 5;
	if (!c->o.timeout_s)
		c->o.timeout_s = 30;
	if (!c->o.retries)
		c->o.retries = 4;
	if (c->o.retries < 0)
		c->o.retries = 0;
	if (!c->o.max_conns)
		c->o.max_conns = 8;
	c->o.username = c->o.password = NULL;
	snprintf(c->base, sizeof(c->base), "%s://%s", c->o.insecure ? "http" : "https",
		 strcmp(ref->host, "docker.io") ? ref->host : "registry-1.docker.io");
	for (int i = 0; i < c->o.nmirrors && i < REG_MAX_MIRRORS; i++) {
		c->mirrors[i] = strdup(opts->mirrors[i]);
		if (!c->mirrors[i]) {
			reg_client_free(c);
			return -ENOMEM;
		}
		c->o.mirrors[i] = c->mirrors[i];
	}
	if (opts && opts->ca_file && !(c->ca_file = strdup(opts->ca_file))) {
		reg_client_free(c);
		return -ENOMEM;
	}
	c->o.ca_file = c->ca_file;
	c->o.auth_file = NULL;
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&c->share_lock[i], NULL);
	pthread_mutex_init(&c->tok_lock, NULL);
	sem_init(&c->conns, 0, (unsigned)c->o.max_conns);
	c->share = curl_share_init();
	if (!c->share) {
		reg_client_free(c);
		return -ENOMEM;
	}
	curl_share_setopt(c->share, CURLSHOPT_LOCKFUNC, share_lock);
	curl_share_setopt(c->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
	curl_share_setopt(c->share, CURLSHOPT_USERDATA, c);
	curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
	{
		struct reg_opts tmp = *opts;

		c->o.username = opts ? opts->username : NULL;
		c->o.password = opts ? opts->password : NULL;
		c->o.auth_file = opts ? opts->auth_file : NULL;
		ret = load_credentials(c);
		c->o.username = c->o.password = c->o.auth_file = NULL;
		(void)tmp;
	}
	if (ret) {
		reg_client_free(c);
		return ret;
	}
	*out = c;
	return 0;
}

int reg_client_drop_connections(struct reg_client *c)
{
	CURLSH *n = curl_share_init();

	if (!n)
		return -ENOMEM;
	curl_share_setopt(n, CURLSHOPT_LOCKFUNC, share_lock);
	curl_share_setopt(n, CURLSHOPT_UNLOCKFUNC, share_unlock);
	curl_share_setopt(n, CURLSHOPT_USERDATA, c);
	curl_share_setopt(n, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_share_setopt(n, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	curl_share_setopt(n, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
	curl_share_cleanup(c->share);
	c->share = n;
	return 0;
}

void reg_client_free(struct reg_client *c)
{
	if (!c)
		return;
	if (c->share)
		curl_share_cleanup(c->share);
	for (int i = 0; i < REG_MAX_MIRRORS; i++)
		free(c->mirrors[i]);
	free(c->ca_file);
	if (c->authz)
		explicit_bzero(c->authz, strlen(c->authz));
	free(c->authz);
	if (c->basic)
		explicit_bzero(c->basic, strlen(c->basic));
	free(c->basic);
	free(c->registry_token);
	free(c);
}

void reg_get_stats(const struct reg_client *c, struct reg_stats *st)
{
	st->requests = atomic_load(&c->st_requests);
	st->bytes = atomic_load(&c->st_bytes);
	st->retries = atomic_load(&c->st_retries);
	st->errors = atomic_load(&c->st_errors);
	st->token_fetches = atomic_load(&c->st_tokens);
}

/* ---------- per-host connection cap, shared by every client in the process ---------- */

/*
 * Each client bounds its own requests (o.max_conns); this bounds the sum
 * over all clients (all mounts of a server) per host, so that fifty mounts
 * of one registry do not open fifty times the connections. Hosts are few:
 * a small table with a linear scan, under one mutex taken twice per request.
 */
#define REG_HOST_SLOTS 64

struct host_slot {
	char host[REG_MAX_HOST + 8];
	int inflight, peak;
	pthread_cond_t cv;
};

static pthread_mutex_t hosts_lock = PTHREAD_MUTEX_INITIALIZER;
static struct host_slot hosts[REG_HOST_SLOTS];
static int nhosts;
static int host_cap = REG_DEFAULT_HOST_CONNS;

void reg_set_host_conns(int n)
{
	pthread_mutex_lock(&hosts_lock);
	host_cap = n > 0 ? n : REG_DEFAULT_HOST_CONNS;
	for (int i = 0; i < nhosts; i++)
		pthread_cond_broadcast(&hosts[i].cv);
	pthread_mutex_unlock(&hosts_lock);
}

/* "scheme://host[:port]/..." -> host[:port]; false when there is none */
static bool url_host(const char *url, char *out, size_t size)
{
	const char *p = strstr(url, "://"), *e;

	if (!p)
		return false;
	p += 3;
	e = p + strcspn(p, "/?#");
	if (e == p || (size_t)(e - p) >= size)
		return false;
	memcpy(out, p, (size_t)(e - p));
	out[e - p] = 0;
	return true;
}

/* Returns the slot to release, or NULL when the host is not tracked (table
 * full or odd URL): the client's own cap still applies then. */
static struct host_slot *host_acquire(const char *url)
{
	char host[REG_MAX_HOST + 8];
	struct host_slot *s = NULL;

	if (!url_host(url, host, sizeof(host)))
		return NULL;
	pthread_mutex_lock(&hosts_lock);
	for (int i = 0; i < nhosts; i++)
		if (!strcmp(hosts[i].host, host)) {
			s = &hosts[i];
			break;
		}
	if (!s && nhosts < REG_HOST_SLOTS) {
		s = &hosts[nhosts++];
		snprintf(s->host, sizeof(s->host), "%s", host);
		pthread_cond_init(&s->cv, NULL);
	}
	if (s) {
		while (s->inflight >= host_cap)
			pthread_cond_wait(&s->cv, &hosts_lock);
		if (++s->inflight > s->peak)
			s->peak = s->inflight;
	}
	pthread_mutex_unlock(&hosts_lock);
	return s;
}

static void host_release(struct host_slot *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&hosts_lock);
	s->inflight--;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&hosts_lock);
}

int reg_host_peak_conns(const char *host)
{
	int peak = -ENOENT;

	pthread_mutex_lock(&hosts_lock);
	for (int i = 0; i < nhosts; i++)
		if (!strcmp(hosts[i].host, host))
			peak = hosts[i].peak;
	pthread_mutex_unlock(&hosts_lock);
	return peak;
}

/* ---------- one HTTP exchange ---------- */

struct xfer {
	/* body sink: fixed buffer, growable buffer, or discard */
	uint8_t *buf;
	size_t cap, len;
	bool grow;
	uint64_t max;          /* growable cap */
	uint64_t skip;         /* bytes to drop first (a 200 answering a range) */
	bool overflow;
	/* upload */
	const uint8_t *up;
	size_t up_len, up_pos;
	int up_fd;
	/* headers of the final hop */
	char www_auth[2048];
	char content_range[128];
	char content_type[256];
	char location[4096];
	char retry_after[32];
	char sent_authz[16400];   /* the Authorization this request carried, to spot a stale token */
	char docker_digest[REG_DIGEST_LEN + 8];
	uint64_t content_length;
	bool have_length;
};

static size_t on_body(char *p, size_t sz, size_t n, void *u)
{
	struct xfer *x = u;
	size_t len = sz * n, take;

	if (x->skip) {
		size_t s = (size_t)LZ_MIN((uint64_t)len, x->skip);

		x->skip -= s;
		p += s;
		len -= s;
		if (!len)
			return sz * n;
	}
	if (x->grow) {
		if (x->len + len > x->max) {
			x->overflow = true;
			return 0;
		}
		if (x->len + len + 1 > x->cap) {
			size_t nc = LZ_MAX(x->cap * 2, x->len + len + 1);
			uint8_t *nb;

			nc = (size_t)LZ_MIN((uint64_t)nc, x->max + 1);
			nb = lz_realloc(x->buf, nc);
			if (!nb)
				return 0;
			x->buf = nb;
			x->cap = nc;
		}
		memcpy(x->buf + x->len, p, len);
		x->len += len;
		return sz * n;
	}
	if (!x->buf)
		return sz * n; /* discard */
	take = LZ_MIN(len, x->cap - x->len);
	memcpy(x->buf + x->len, p, take);
	x->len += take;
	if (take < len) {
		/* a server streaming more than asked (a whole blob for a range): stop it */
		x->overflow = true;
		return 0;
	}
	return sz * n;
}

static size_t on_upload(char *p, size_t sz, size_t n, void *u)
{
	struct xfer *x = u;
	size_t want = sz * n;

	if (x->up_fd >= 0) {
		ssize_t r = read(x->up_fd, p, want);

		return r < 0 ? CURL_READFUNC_ABORT : (size_t)r;
	}
	want = LZ_MIN(want, x->up_len - x->up_pos);
	memcpy(p, x->up + x->up_pos, want);
	x->up_pos += want;
	return want;
}

static void copy_hdr(char *dst, size_t cap, const char *v, size_t l)
{
	while (l && (v[l - 1] == '\r' || v[l - 1] == '\n' || v[l - 1] == ' '))
		l--;
	while (l && (*v == ' ' || *v == '\t')) {
		v++;
		l--;
	}
	if (l >= cap)
		l = cap - 1;
	memcpy(dst, v, l);
	dst[l] = 0;
}

static size_t on_header(char *p, size_t sz, size_t n, void *u)
{
	struct xfer *x = u;
	size_t len = sz * n;
	const char *colon = memchr(p, ':', len);
	size_t kl;

	if (len >= 5 && !strncmp(p, "HTTP/", 5)) {
		/* a new response (redirect hop or 100-continue): forget earlier headers */
		x->www_auth[0] = x->content_range[0] = x->content_type[0] = x->location[0] = 0;
		x->docker_digest[0] = 0;
		x->retry_after[0] = 0;
		x->have_length = false;
		return len;
	}
	if (!colon)
		return len;
	kl = (size_t)(colon - p);
	colon++;
#define HDR(name, field) \
	if (kl == sizeof(name) - 1 && !strncasecmp(p, name, kl)) \
		copy_hdr(x->field, sizeof(x->field), colon, len - kl - 1)
	HDR("www-authenticate", www_auth);
	else HDR("content-range", content_range);
	else HDR("content-type", content_type);
	else HDR("location", location);
	else HDR("retry-after", retry_after);
	else HDR("docker-content-digest", docker_digest);
	else if (kl == 14 && !strncasecmp(p, "content-length", 14)) {
		char v[32];

		copy_hdr(v, sizeof(v), colon, len - kl - 1);
		x->content_length = strtoull(v, NULL, 10);
		x->have_length = true;
	}
#undef HDR
	return len;
}

struct req {
	const char *method;    /* GET, HEAD, PUT, POST */
	const char *url;
	const char *range;     /* "bytes=a-b" or NULL */
	const char *accept;
	const char *content_type;
	bool auth;             /* send the registry Authorization */
	const char *authz_override;
};

static int perform(struct reg_client *c, const struct req *r, struct xfer *x, long *status, char *errbuf)
{
	struct host_slot *hs;
	struct curl_slist *h = NULL;
	char line[8192];
	CURLcode cc;
	CURL *e;
	int ret = 0;

	e = curl_easy_init();
	if (!e)
		return -ENOMEM;
	curl_easy_setopt(e, CURLOPT_URL, r->url);
	curl_easy_setopt(e, CURLOPT_SHARE, c->share);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, (long)c->o.connect_timeout_s);
	/* a slow but moving transfer is fine; a stalled one is not */
	curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1024L);
	curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, (long)c->o.timeout_s);
	curl_easy_setopt(e, CURLOPT_TIMEOUT, (long)c->o.timeout_s * 10);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	if (c->o.insecure) {
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
	} else if (c->o.ca_file) {
		curl_easy_setopt(e, CURLOPT_CAINFO, c->o.ca_file);
	}
	if (!strcmp(r->method, "HEAD")) {
		curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	} else if (!strcmp(r->method, "PUT") || !strcmp(r->method, "POST")) {
		if (!strcmp(r->method, "PUT"))
			curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
		else
			curl_easy_setopt(e, CURLOPT_POST, 1L);
		curl_easy_setopt(e, CURLOPT_READFUNCTION, on_upload);
		curl_easy_setopt(e, CURLOPT_READDATA, x);
		if (!strcmp(r->method, "PUT"))
			curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)x->up_len);
		else
			curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->up_len);
		h = curl_slist_append(h, "Expect:");
	}
	if (r->range) {
		snprintf(line, sizeof(line), "Range: %s", r->range);
		h = curl_slist_append(h, line);
		h = curl_slist_append(h, "Accept-Encoding: identity");
	}
	if (r->accept) {
		snprintf(line, sizeof(line), "Accept: %s", r->accept);
		h = curl_slist_append(h, line);
	}
	if (r->content_type) {
		snprintf(line, sizeof(line), "Content-Type: %s", r->content_type);
		h = curl_slist_append(h, line);
	}
	if (r->authz_override) {
		h = curl_slist_append(h, r->authz_override);
	} else if (r->auth) {
		pthread_mutex_lock(&c->tok_lock);
		if (c->authz) {
			h = curl_slist_append(h, c->authz);
			snprintf(x->sent_authz, sizeof(x->sent_authz), "%s", c->authz);
		}
		pthread_mutex_unlock(&c->tok_lock);
	}
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
	sem_wait(&c->conns);
	hs = host_acquire(r->url);
	cc = curl_easy_perform(e);
	host_release(hs);
	sem_post(&c->conns);
	atomic_fetch_add(&c->st_requests, 1);
	curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, status);
	if (cc != CURLE_OK && !(cc == CURLE_WRITE_ERROR && x->overflow && !x->grow)) {
		if (!errbuf[0])
			snprintf(errbuf, CURL_ERROR_SIZE, "%s", curl_easy_strerror(cc));
		ret = cc == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT : cc == CURLE_WRITE_ERROR && x->overflow ? -EFBIG :
		      cc == CURLE_PEER_FAILED_VERIFICATION || cc == CURLE_SSL_CACERT_BADFILE ||
		      cc == CURLE_SSL_CERTPROBLEM ? -EKEYREJECTED : -EIO;
	}
	curl_slist_free_all(h);
	curl_easy_cleanup(e);
	return ret;
}

/* ---------- auth ---------- */

static int fetch_token(struct reg_client *c, const struct reg_challenge *ch, const char *scope)
{
	struct xfer x = { .grow = true, .max = REG_MAX_TOKEN_BODY, .up_fd = -1 };
	char url[4096], errbuf[CURL_ERROR_SIZE] = "", *authz = NULL, basic[2100];
	struct req r = { .method = "GET", .url = url };
	json_object *root = NULL, *v;
	const char *tok = NULL;
	long status = 0, ttl = 60;
	CURL *esc = curl_easy_init();
	char *s1 = NULL, *s2 = NULL;
	int ret;

	if (!esc)
		return -ENOMEM;
	s1 = curl_easy_escape(esc, ch->service, 0);
	s2 = curl_easy_escape(esc, ch->scope[0] ? ch->scope : scope, 0);
	snprintf(url, sizeof(url), "%s%sservice=%s&scope=%s", ch->realm, strchr(ch->realm, '?') ? "&" : "?",
		 s1 ? s1 : "", s2 ? s2 : "");
	curl_free(s1);
	curl_free(s2);
	curl_easy_cleanup(esc);
	if (c->basic) {
		snprintf(basic, sizeof(basic), "Authorization: Basic %s", c->basic);
		r.authz_override = basic;
	}
	atomic_fetch_add(&c->st_tokens, 1);
	ret = perform(c, &r, &x, &status, errbuf);
	if (c->basic)
		explicit_bzero(basic, sizeof(basic));
	if (ret) {
		lz_err("token server %s: %s", ch->realm, errbuf);
		goto out;
	}
	if (status == 401 || status == 403) {
		lz_err("token server %s refused the credentials (HTTP %ld)", ch->realm, status);
		ret = -EACCES;
		goto out;
	}
	if (status != 200) {
		lz_err("token server %s answered HTTP %ld", ch->realm, status);
		ret = -EIO;
		goto out;
	}
	x.buf[x.len] = 0;
	root = json_tokener_parse((const char *)x.buf);
	if (root && json_object_object_get_ex(root, "token", &v) && json_object_is_type(v, json_type_string) &&
	    json_object_get_string_len(v))
		tok = json_object_get_string(v);
	else if (root && json_object_object_get_ex(root, "access_token", &v) && json_object_is_type(v, json_type_string))
		tok = json_object_get_string(v);
	if (!tok || !*tok || strlen(tok) > 16384 || strpbrk(tok, "\r\n")) {
		lz_err("token server %s: no usable token in its answer", ch->realm);
		ret = -EIO;
		goto out;
	}
	if (root && json_object_object_get_ex(root, "expires_in", &v) && json_object_is_type(v, json_type_int))
		ttl = (long)json_object_get_int64(v);
	if (ttl <= 0)
		ttl = 60;
	if (asprintf(&authz, "Authorization: Bearer %s", tok) < 0) {
		ret = -ENOMEM;
		goto out;
	}
	/* caller holds tok_lock */
	if (c->authz)
		explicit_bzero(c->authz, strlen(c->authz));
	free(c->authz);
	c->authz = authz;
	c->authz_expiry = time(NULL) + ttl;
	c->authz_ttl = ttl;
	lz_info("got a registry token for %s (valid %ld s)", scope, ttl);
out:
	json_object_put(root);
	free(x.buf);
	return ret;
}

/*
 * Make the client's Authorization fresh. `chal` is the challenge of a 401
 * (or NULL to refresh proactively). Returns 0 when a retry makes sense.
 */
static int authenticate(struct reg_client *c, const char *www_auth, const char *stale)
{
	char scope[REG_MAX_REPO + 32];
	struct reg_challenge ch;
	int ret = 0;

	snprintf(scope, sizeof(scope), "repository:%s:pull", c->ref.repo);
	pthread_mutex_lock(&c->tok_lock);
	/* another thread may have renewed it while we waited */
	if (stale && c->authz && strcmp(stale, c->authz)) {
		pthread_mutex_unlock(&c->tok_lock);
		return 0;
	}
	if (!www_auth && stale && c->authz && c->authz_expiry &&
	    time(NULL) < c->authz_expiry - LZ_MIN(10L, LZ_MAX(c->authz_ttl / 5, 1L))) {
		pthread_mutex_unlock(&c->tok_lock);
		return 0;
	}
	if (www_auth && www_auth[0]) {
		if (reg_parse_challenge(www_auth, strlen(www_auth), &ch)) {
			lz_err("registry %s: cannot parse its WWW-Authenticate challenge", c->ref.host);
			ret = -EACCES;
			goto out;
		}
		/* Harbor answers an expired bearer token with a Basic challenge: keep bearer */
		if (!strcmp(ch.scheme, "Basic") && c->have_chal && !strcmp(c->chal.scheme, "Bearer"))
			ch = c->chal;
		c->chal = ch;
		c->have_chal = true;
	} else if (!c->have_chal) {
		ret = -EACCES;
		goto out;
	}
	if (!strcmp(c->chal.scheme, "Basic")) {
		if (!c->basic) {
			lz_err("registry %s wants credentials (basic auth) and none were given", c->ref.host);
			ret = -EACCES;
			goto out;
		}
		free(c->authz);
		if (asprintf(&c->authz, "Authorization: Basic %s", c->basic) < 0)
			c->authz = NULL, ret = -ENOMEM;
		c->authz_expiry = 0;
	} else if (c->registry_token && !stale) {
		free(c->authz);
		if (asprintf(&c->authz, "Authorization: Bearer %s", c->registry_token) < 0)
			c->authz = NULL, ret = -ENOMEM;
		c->authz_expiry = 0;
	} else {
		ret = fetch_token(c, &c->chal, scope);
	}
out:
	pthread_mutex_unlock(&c->tok_lock);
	return ret;
}

static char *authz_snapshot(struct reg_client *c);

/* Renew a bearer token that is about to expire, before using it. */
static void refresh_if_due(struct reg_client *c)
{
	bool due;

	pthread_mutex_lock(&c->tok_lock);
	/* renew 10 s ahead, or a fifth of the lifetime for short-lived tokens */
	due = c->authz && c->authz_expiry &&
	      time(NULL) >= c->authz_expiry - LZ_MIN(10L, LZ_MAX(c->authz_ttl / 5, 1L));
	pthread_mutex_unlock(&c->tok_lock);
	if (due) {
		char *cur = authz_snapshot(c);

		/* whoever renews first wins; the others see a fresh token and return */
		authenticate(c, NULL, cur ? cur : "");
		free(cur);
	}
}

static char *authz_snapshot(struct reg_client *c)
{
	char *s;

	pthread_mutex_lock(&c->tok_lock);
	s = c->authz ? strdup(c->authz) : NULL;
	pthread_mutex_unlock(&c->tok_lock);
	return s;
}

static bool retryable(long status)
{
	return status == 408 || status == 429 || (status >= 500 && status != 501);
}

static void backoff(struct reg_client *c, int attempt)
{
	/* 50 ms doubling, capped at 2 s, with jitter in [d, 2d) */
	long d = 50L << LZ_MIN(attempt, 5);
	struct timespec ts;

	d = LZ_MIN(d, 2000L);
	d += (long)((unsigned)rand() % (unsigned)d);
	ts.tv_sec = d / 1000;
	ts.tv_nsec = (d % 1000) * 1000000L;
	nanosleep(&ts, NULL);
	atomic_fetch_add(&c->st_retries, 1);
}

/*
 * GET/HEAD/PUT with auth, redirects (Authorization dropped off the registry),
 * retries with backoff. `path` is relative to the registry ("/v2/..."), or an
 * absolute URL. Mirrors are tried first for idempotent reads.
 */
#define REG_MIRROR_HOLDOFF_MS 30000

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int request(struct reg_client *c, struct req *r, const char *path, struct xfer *x, long *status)
{
	char url[8192], errbuf[CURL_ERROR_SIZE];
	int ret = -EIO, nbase = 1 + (strcmp(r->method, "GET") && strcmp(r->method, "HEAD") ? 0 : c->o.nmirrors);
	bool absolute = !strncmp(path, "http://", 7) || !strncmp(path, "https://", 8);
	struct xfer x0 = *x;

	for (int bi = 0; bi < nbase; bi++) {
		bool mirror = !absolute && bi < nbase - 1;
		/* a mirror gets one retry: the registry behind it is the real fallback */
		int retries = mirror ? LZ_MIN(c->o.retries, 1) : c->o.retries;

		if (mirror && mono_ms() < atomic_load(&c->mirror_down_until[bi]))
			continue;
		for (int attempt = 0; attempt <= retries; attempt++) {
			bool reauthed = false;
			int hops = 0;

			if (absolute)
				snprintf(url, sizeof(url), "%s", path);
			else if (mirror)
				snprintf(url, sizeof(url), "%s%s%sns=%s", c->o.mirrors[bi], path,
					 strchr(path, '?') ? "&" : "?", c->ref.host);
			else
				snprintf(url, sizeof(url), "%s%s", c->base, path);
			r->auth = !mirror;
			refresh_if_due(c);
again:
			/* a body collected from a 401 or a redirect is not the answer: drop it */
			if (x0.grow && x->buf != x0.buf)
				free(x->buf);
			*x = x0;
			errbuf[0] = 0;
			r->url = url;
			*status = 0;
			ret = perform(c, r, x, status, errbuf);
			if (!ret && (*status == 301 || *status == 302 || *status == 303 || *status == 307 ||
				     *status == 308) && x->location[0] && hops < REG_MAX_REDIRECTS) {
				char next[8192];

				/* object storage: follow, without the registry's Authorization */
				if (x->location[0] == '/') {
					const char *p = strstr(url, "://");
					const char *slash = p ? strchr(p + 3, '/') : NULL;
					int hl = slash ? (int)(slash - url) : (int)strlen(url);

					snprintf(next, sizeof(next), "%.*s%s", hl, url, x->location);
				} else {
					snprintf(next, sizeof(next), "%s", x->location);
				}
				memcpy(url, next, sizeof(url));
				r->auth = false;
				hops++;
				goto again;
			}
			if (!ret && *status == 401 && !reauthed && r->auth) {
				/* stale is what this request sent: a token renewed meanwhile is not stale */
				char *stale = strdup(x->sent_authz);
				int a = authenticate(c, x->www_auth, stale ? stale : "");

				free(stale);
				if (a) {
					x->len = 0;
					return a == -EACCES ? -EACCES : a;
				}
				reauthed = true;
				goto again;
			}
			if (!ret && *status == 401 && reauthed) {
				lz_err("registry %s: still unauthorized after authenticating", c->ref.host);
				return -EACCES;
			}
			if (ret == -EFBIG)
				return ret;
			if (ret == -EKEYREJECTED) {
				/* a certificate problem does not go away by asking again */
				atomic_fetch_add(&c->st_errors, 1);
				lz_err("%s %s: %s", r->method, url, errbuf);
				break;
			}
			if (ret || retryable(*status)) {
				if (attempt < retries) {
					long ra = atol(x->retry_after);

					lz_warn("%s %s: %s; retrying", r->method, path,
						ret ? errbuf : (snprintf(errbuf, sizeof(errbuf), "HTTP %ld", *status), errbuf));
					if (x0.grow && x->buf != x0.buf) {
						free(x->buf);
						*x = x0;
					}
					if (ra > 0 && !ret) {
						/* the server said when: honour it, within reason */
						struct timespec ts = { LZ_MIN(ra, 10L), 0 };

						nanosleep(&ts, NULL);
						atomic_fetch_add(&c->st_retries, 1);
					} else {
						backoff(c, attempt);
					}
					continue;
				}
				atomic_fetch_add(&c->st_errors, 1);
				if (!ret)
					snprintf(errbuf, sizeof(errbuf), "HTTP %ld", *status);
				if (mirror) {
					/* without this every read would pay the dead mirror's timeouts again */
					atomic_store(&c->mirror_down_until[bi], mono_ms() + REG_MIRROR_HOLDOFF_MS);
					lz_warn("mirror %s: %s after %d attempts; skipping it for %d s",
						c->o.mirrors[bi], errbuf, attempt + 1, REG_MIRROR_HOLDOFF_MS / 1000);
				} else {
					lz_err("%s %s: %s after %d attempts", r->method, path, errbuf, attempt + 1);
				}
				if (!ret)
					ret = -EIO;
				break;
			}
			if (mirror && *status >= 400)
				break; /* fall back to the next source */
			return 0;
		}
		if (x0.grow && x->buf != x0.buf) {
			free(x->buf);
			*x = x0;
		}
	}
	return ret;
}

static const char MANIFEST_ACCEPT[] =
	"application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, "
	"application/vnd.docker.distribution.manifest.v2+json, "
	"application/vnd.docker.distribution.manifest.list.v2+json";

static void sha256_digest(const void *buf, size_t len, char out[REG_DIGEST_LEN + 1])
{
	uint8_t md[32];

	SHA256(buf, len, md);
	memcpy(out, "sha256:", 7);
	lz_hex(md, 32, out + 7);
}

int reg_get_manifest(struct reg_client *c, const char *tod, char **body, size_t *len, char **media,
		     char digest_out[REG_DIGEST_LEN + 1])
{
	struct xfer x = { .grow = true, .max = REG_MAX_MANIFEST, .up_fd = -1 };
	struct req r = { .method = "GET", .accept = MANIFEST_ACCEPT };
	char path[REG_MAX_REPO + 256];
	const char *want = tod && *tod ? tod : (c->ref.digest[0] ? c->ref.digest : c->ref.tag);
	long status;
	int ret;

	snprintf(path, sizeof(path), "/v2/%s/manifests/%s", c->ref.repo, want);
	ret = request(c, &r, path, &x, &status);
	if (ret)
		goto fail;
	if (status == 404) {
		lz_err("manifest %s:%s not found on %s", c->ref.repo, want, c->ref.host);
		ret = -ENOENT;
		goto fail;
	}
	if (status != 200) {
		lz_err("manifest %s:%s: HTTP %ld from %s", c->ref.repo, want, status, c->ref.host);
		ret = status == 403 ? -EACCES : -EIO;
		goto fail;
	}
	if (x.overflow) {
		ret = -EFBIG;
		goto fail;
	}
	if (!x.buf) {
		x.buf = lz_malloc(1);
		if (!x.buf)
			return -ENOMEM;
	}
	x.buf[x.len] = 0;
	sha256_digest(x.buf, x.len, digest_out);
	if (!strncmp(want, "sha256:", 7) && strcmp(want, digest_out)) {
		lz_err("manifest %s: content hashes to %s", want, digest_out);
		ret = -EBADMSG;
		goto fail;
	}
	*body = (char *)x.buf;
	*len = x.len;
	if (media) {
		*media = strdup(x.content_type);
		if (!*media) {
			free(x.buf);
			return -ENOMEM;
		}
	}
	return 0;
fail:
	free(x.buf);
	return ret;
}

int reg_get_blob_range(struct reg_client *c, const char *digest, void *buf, size_t len, uint64_t off)
{
	struct xfer x = { .buf = buf, .cap = len, .up_fd = -1 };
	struct req r = { .method = "GET" };
	char path[REG_MAX_REPO + 128], range[64];
	long status;
	int ret;

	if (!len)
		return 0;
	snprintf(path, sizeof(path), "/v2/%s/blobs/%s", c->ref.repo, digest);
	snprintf(range, sizeof(range), "bytes=%llu-%llu", (unsigned long long)off,
		 (unsigned long long)(off + len - 1));
	r.range = range;
	for (int attempt = 0;; attempt++) {
		x = (struct xfer){ .buf = buf, .cap = len, .up_fd = -1 };
		ret = request(c, &r, path, &x, &status);
		if (ret)
			return ret;
		if (status == 206) {
			uint64_t f, l, t;

			if (reg_parse_content_range(x.content_range, strlen(x.content_range), &f, &l, &t) ||
			    f != off || l != off + len - 1) {
				lz_err("blob %s: answer to range %s has Content-Range '%s'", digest, range,
				       x.content_range);
				ret = -EIO;
			}
		} else if (status == 200) {
			/* the range was ignored: the body is the whole blob; take our slice */
			if (x.have_length && x.content_length < off + len) {
				lz_err("blob %s: %llu bytes, shorter than the range %s", digest,
				       (unsigned long long)x.content_length, range);
				return -EIO;
			}
			x = (struct xfer){ .buf = buf, .cap = len, .skip = off, .up_fd = -1 };
			ret = request(c, &(struct req){ .method = "GET" }, path, &x, &status);
			if (!ret && status != 200)
				ret = -EIO;
		} else if (status == 404) {
			lz_err("blob %s not found in %s/%s", digest, c->ref.host, c->ref.repo);
			return -ENOENT;
		} else if (status == 416) {
			lz_err("blob %s: range %s not satisfiable", digest, range);
			return -EIO;
		} else {
			lz_err("blob %s: HTTP %ld for range %s", digest, status, range);
			ret = status == 403 ? -EACCES : -EIO;
		}
		if (!ret && x.len != len) {
			lz_err("blob %s: got %zu of %zu bytes for range %s", digest, x.len, len, range);
			ret = -EIO;
		}
		if (!ret) {
			atomic_fetch_add(&c->st_bytes, len);
			return 0;
		}
		/* a wrong or short body is a transient fault as far as we can tell */
		if (attempt >= c->o.retries || ret == -EACCES)
			return ret;
		backoff(c, attempt);
	}
}

int reg_get_blob(struct reg_client *c, const char *digest, uint64_t max, void **buf, size_t *len)
{
	struct xfer x = { .grow = true, .max = max, .up_fd = -1 };
	struct req r = { .method = "GET" };
	char path[REG_MAX_REPO + 128], got[REG_DIGEST_LEN + 1];
	long status;
	int ret;

	snprintf(path, sizeof(path), "/v2/%s/blobs/%s", c->ref.repo, digest);
	ret = request(c, &r, path, &x, &status);
	if (!ret && x.overflow)
		ret = -EFBIG;
	if (!ret && status != 200) {
		lz_err("blob %s: HTTP %ld", digest, status);
		ret = status == 404 ? -ENOENT : -EIO;
	}
	if (ret)
		goto fail;
	if (!x.buf && !(x.buf = lz_malloc(1))) {
		ret = -ENOMEM;
		goto fail;
	}
	x.buf[x.len] = 0; /* on_body always leaves room: callers may parse it as text */
	sha256_digest(x.buf, x.len, got);
	if (strcmp(got, digest)) {
		lz_err("blob %s: content hashes to %s", digest, got);
		ret = -EBADMSG;
		goto fail;
	}
	atomic_fetch_add(&c->st_bytes, x.len);
	*buf = x.buf;
	*len = x.len;
	return 0;
fail:
	free(x.buf);
	return ret;
}

/* ---------- push ---------- */

/* Push needs a push-scoped token: ask for pull,push on the first 401. */
static int push_request(struct reg_client *c, struct req *r, const char *path, struct xfer *x, long *status)
{
	int ret = request(c, r, path, x, status);

	return ret;
}

int reg_blob_exists(struct reg_client *c, const char *digest)
{
	struct xfer x = { .up_fd = -1 };
	struct req r = { .method = "HEAD" };
	char path[REG_MAX_REPO + 128];
	long status;
	int ret;

	snprintf(path, sizeof(path), "/v2/%s/blobs/%s", c->ref.repo, digest);
	ret = request(c, &r, path, &x, &status);
	if (ret)
		return ret;
	return status == 200 ? 1 : status == 404 ? 0 : -EIO;
}

static int upload(struct reg_client *c, const char *digest, const void *buf, size_t len, int fd)
{
	struct xfer x = { .up_fd = -1 };
	struct req r = { .method = "POST" };
	char path[REG_MAX_REPO + 128], url[8192];
	long status;
	int ret;

	snprintf(path, sizeof(path), "/v2/%s/blobs/uploads/", c->ref.repo);
	ret = push_request(c, &r, path, &x, &status);
	if (ret)
		return ret;
	if (status != 202 || !x.location[0]) {
		lz_err("push %s: upload start answered HTTP %ld", digest, status);
		return status == 401 || status == 403 ? -EACCES : -EIO;
	}
	if (x.location[0] == '/')
		snprintf(url, sizeof(url), "%s%s%sdigest=%s", c->base, x.location, strchr(x.location, '?') ? "&" : "?", digest);
	else
		snprintf(url, sizeof(url), "%s%sdigest=%s", x.location, strchr(x.location, '?') ? "&" : "?", digest);
	x = (struct xfer){ .up = buf, .up_len = len, .up_fd = fd };
	r = (struct req){ .method = "PUT", .content_type = "application/octet-stream", .auth = true };
	{
		char errbuf[CURL_ERROR_SIZE] = "";

		r.url = url;
		ret = perform(c, &r, &x, &status, errbuf);
		if (ret) {
			lz_err("push %s: %s", digest, errbuf);
			return ret;
		}
	}
	if (status != 201) {
		lz_err("push %s: upload answered HTTP %ld", digest, status);
		return -EIO;
	}
	atomic_fetch_add(&c->st_bytes, len);
	return 0;
}

int reg_push_blob(struct reg_client *c, const char *digest, const void *buf, size_t len)
{
	int e = reg_blob_exists(c, digest);

	if (e == 1)
		return 0;
	return upload(c, digest, buf, len, -1);
}

int reg_push_blob_file(struct reg_client *c, const char *digest, const char *path, uint64_t size)
{
	int e = reg_blob_exists(c, digest), fd, ret;

	if (e == 1)
		return 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ret = upload(c, digest, NULL, (size_t)size, fd);
	close(fd);
	return ret;
}

int reg_push_manifest(struct reg_client *c, const char *tag, const char *media, const void *buf, size_t len)
{
	struct xfer x = { .up = buf, .up_len = len, .up_fd = -1 };
	struct req r = { .method = "PUT", .content_type = media };
	char path[REG_MAX_REPO + 256];
	long status;
	int ret;

	snprintf(path, sizeof(path), "/v2/%s/manifests/%s", c->ref.repo, tag);
	ret = push_request(c, &r, path, &x, &status);
	if (ret)
		return ret;
	if (status != 201) {
		lz_err("push manifest %s: HTTP %ld", tag, status);
		return -EIO;
	}
	return 0;
}
