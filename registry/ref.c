/* SPDX-License-Identifier: Apache-2.0 */
#define LZ_MOD "reg"
#include "lazyimg/reg.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>

bool reg_digest_valid(const char *d)
{
	if (strncmp(d, "sha256:", 7) || strlen(d) != REG_DIGEST_LEN)
		return false;
	for (int i = 7; i < REG_DIGEST_LEN; i++)
		if (!((d[i] >= '0' && d[i] <= '9') || (d[i] >= 'a' && d[i] <= 'f')))
			return false;
	return true;
}

static bool repo_valid(const char *r)
{
	/* components [a-z0-9]+([._-][a-z0-9]+)* joined by '/' */
	bool need_alnum = true;

	if (!*r || strlen(r) >= REG_MAX_REPO)
		return false;
	for (const char *p = r; *p; p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')) {
			need_alnum = false;
		} else if (*p == '.' || *p == '_' || *p == '-' || *p == '/') {
			if (need_alnum)
				return false;
			need_alnum = true;
			if (*p == '_' && p[1] == '_')
				p++; /* "__" is one separator */
		} else {
			return false;
		}
	}
	return !need_alnum;
}

int reg_ref_parse(const char *s, struct reg_ref *out)
{
	char buf[1024], *at, *slash, *name, *colon;

	memset(out, 0, sizeof(*out));
	if (!s || !*s || strlen(s) >= sizeof(buf)) {
		lz_err("image reference is empty or too long");
		return -EINVAL;
	}
	strcpy(buf, s);
	at = strchr(buf, '@');
	if (at) {
		*at = 0;
		if (!reg_digest_valid(at + 1)) {
			lz_err("image reference %s: digest must be sha256:<64 hex>", s);
			return -EINVAL;
		}
		strcpy(out->digest, at + 1);
	}
	slash = strchr(buf, '/');
	name = buf;
	if (slash && (memchr(buf, '.', (size_t)(slash - buf)) || memchr(buf, ':', (size_t)(slash - buf)) ||
		      !strncmp(buf, "localhost/", 10))) {
		if ((size_t)(slash - buf) >= REG_MAX_HOST)
			return -EINVAL;
		memcpy(out->host, buf, (size_t)(slash - buf));
		name = slash + 1;
	} else {
		strcpy(out->host, "docker.io");
	}
	colon = strrchr(name, ':');
	if (colon && !strchr(colon, '/')) {
		*colon = 0;
		if (!colon[1] || strlen(colon + 1) >= REG_MAX_TAG) {
			lz_err("image reference %s: bad tag", s);
			return -EINVAL;
		}
		for (const char *p = colon + 1; *p; p++)
			if (!isalnum((unsigned char)*p) && *p != '_' && *p != '.' && *p != '-')
				return -EINVAL;
		strcpy(out->tag, colon + 1);
	}
	if (!strcmp(out->host, "docker.io") && !strchr(name, '/')) {
		if (snprintf(out->repo, sizeof(out->repo), "library/%s", name) >= (int)sizeof(out->repo))
			return -EINVAL;
	} else {
		if (strlen(name) >= sizeof(out->repo))
			return -EINVAL;
		strcpy(out->repo, name);
	}
	if (!repo_valid(out->repo)) {
		lz_err("image reference %s: repository '%s' is not a valid name", s, out->repo);
		return -EINVAL;
	}
	if (!out->tag[0] && !out->digest[0])
		strcpy(out->tag, "latest");
	return 0;
}

/* auth-param value: token or quoted-string with backslash escapes */
static int parse_value(const char **pp, const char *end, char *out, size_t cap)
{
	const char *p = *pp;
	size_t o = 0;

	if (p < end && *p == '"') {
		for (p++; p < end && *p != '"'; p++) {
			if (*p == '\\' && p + 1 < end)
				p++;
			if (o + 1 >= cap)
				return -E2BIG;
			out[o++] = *p;
		}
		if (p >= end)
			return -EINVAL;
		p++;
	} else {
		for (; p < end && *p != ',' && *p != ' ' && *p != '\t'; p++) {
			if (o + 1 >= cap)
				return -E2BIG;
			out[o++] = *p;
		}
	}
	out[o] = 0;
	*pp = p;
	return 0;
}

int reg_parse_challenge(const char *hdr, size_t len, struct reg_challenge *out)
{
	const char *p = hdr, *end = hdr + len;
	struct reg_challenge cur;
	bool have = false, have_basic = false;

	memset(out, 0, sizeof(*out));
	memset(&cur, 0, sizeof(cur));
	while (p < end) {
		const char *ks;
		size_t kl;

		while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
			p++;
		if (p >= end)
			break;
		ks = p;
		while (p < end && *p != '=' && *p != ' ' && *p != '\t' && *p != ',')
			p++;
		kl = (size_t)(p - ks);
		if (p < end && *p == '=') {
			char val[1024], *dst = NULL;
			size_t cap = 0;

			p++;
			if (parse_value(&p, end, val, sizeof(val)))
				return -EINVAL;
			if (kl == 5 && !strncasecmp(ks, "realm", 5)) {
				dst = cur.realm;
				cap = sizeof(cur.realm);
			} else if (kl == 7 && !strncasecmp(ks, "service", 7)) {
				dst = cur.service;
				cap = sizeof(cur.service);
			} else if (kl == 5 && !strncasecmp(ks, "scope", 5)) {
				dst = cur.scope;
				cap = sizeof(cur.scope);
			}
			if (dst) {
				if (strlen(val) >= cap)
					return -E2BIG;
				strcpy(dst, val);
			}
		} else {
			/* a new challenge scheme begins */
			if (cur.scheme[0] && !strcmp(cur.scheme, "Bearer")) {
				*out = cur;
				have = true;
			} else if (!strcmp(cur.scheme, "Basic") && !have) {
				*out = cur;
				have_basic = true;
			}
			memset(&cur, 0, sizeof(cur));
			if (kl == 6 && !strncasecmp(ks, "bearer", 6))
				strcpy(cur.scheme, "Bearer");
			else if (kl == 5 && !strncasecmp(ks, "basic", 5))
				strcpy(cur.scheme, "Basic");
			else
				strcpy(cur.scheme, "Other");
		}
	}
	if (cur.scheme[0] && !strcmp(cur.scheme, "Bearer")) {
		*out = cur;
		have = true;
	} else if (!strcmp(cur.scheme, "Basic") && !have) {
		*out = cur;
		have_basic = true;
	}
	if (!have && !have_basic)
		return -EINVAL;
	if (!strcmp(out->scheme, "Bearer") && !out->realm[0])
		return -EINVAL;
	return 0;
}

static int parse_u64_dec(const char **pp, const char *end, uint64_t *v)
{
	const char *p = *pp;
	uint64_t x = 0;

	if (p >= end || *p < '0' || *p > '9')
		return -EINVAL;
	for (; p < end && *p >= '0' && *p <= '9'; p++) {
		if (x > (UINT64_MAX - 9) / 10)
			return -EINVAL;
		x = x * 10 + (uint64_t)(*p - '0');
	}
	*v = x;
	*pp = p;
	return 0;
}

int reg_parse_content_range(const char *hdr, size_t len, uint64_t *first, uint64_t *last, uint64_t *total)
{
	const char *p = hdr, *end = hdr + len;

	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	if (end - p < 6 || strncasecmp(p, "bytes", 5))
		return -EINVAL;
	p += 5;
	while (p < end && (*p == ' ' || *p == '='))
		p++;
	if (parse_u64_dec(&p, end, first) || p >= end || *p != '-')
		return -EINVAL;
	p++;
	if (parse_u64_dec(&p, end, last) || p >= end || *p != '/' || *last < *first)
		return -EINVAL;
	p++;
	if (p < end && *p == '*') {
		*total = 0;
		p++;
	} else if (parse_u64_dec(&p, end, total) || *total <= *last) {
		return -EINVAL;
	}
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
		p++;
	return p == end ? 0 : -EINVAL;
}
