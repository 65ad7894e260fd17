/* SPDX-License-Identifier: Apache-2.0 */
/*
 * containerd list filters over snapshot infos. Syntax (containerd's filters
 * package): a filter string is selectors joined by ',' (all must match);
 * several filter strings match if any one does. A selector is a field path
 * (name, parent, kind, labels.<key>; a path element may be "quoted"),
 * optionally followed by an operator ==, != or ~= (regular expression) and a
 * value, bare (up to the next ',') or "quoted" with backslash escapes.
 * Without an operator the selector asks whether the field is present.
 */
#define LZ_MOD "snapmeta"
#include "lazyimg/lz.h"
#include "meta.h"

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>

#define FILTER_MAX 8192          /* bytes of one filter string */
#define FILTER_MAX_SELECTORS 64
#define FILTER_MAX_REGEX 256     /* bytes of one ~= pattern */

enum { OP_PRESENT, OP_EQ, OP_NE, OP_MATCH };

struct selector {
	char field[16];              /* name, parent, kind, labels */
	char *label;                 /* for labels.<key> */
	int op;
	char *value;
};

/* Parse a quoted string at *p ("..."); returns malloc'd content. */
static int parse_quoted(const char **p, char **out)
{
	const char *s = *p + 1;
	size_t cap = strlen(s) + 1, n = 0;
	char *buf = malloc(cap);

	if (!buf)
		return -ENOMEM;
	while (*s && *s != '"') {
		if (*s == '\\') {
			s++;
			switch (*s) {
			case 'n': buf[n++] = '\n'; break;
			case 't': buf[n++] = '\t'; break;
			case '\\': case '"': case '/': buf[n++] = *s; break;
			default:
				free(buf);
				return -EINVAL;
			}
			s++;
			continue;
		}
		buf[n++] = *s++;
	}
	if (*s != '"') {
		free(buf);
		return -EINVAL;
	}
	buf[n] = 0;
	*p = s + 1;
	*out = buf;
	return 0;
}

static bool is_ident(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* One path element: identifier or quoted. */
static int parse_element(const char **p, char **out)
{
	const char *s = *p;

	while (*s == ' ')
		s++;
	if (*s == '"') {
		*p = s;
		return parse_quoted(p, out);
	}
	const char *b = s;

	while (is_ident(*s) || *s == '-' || *s == '/')
		s++;
	if (s == b)
		return -EINVAL;
	*out = strndup(b, (size_t)(s - b));
	*p = s;
	return *out ? 0 : -ENOMEM;
}

static void sel_free(struct selector *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(v[i].label);
		free(v[i].value);
	}
}

static int parse_selector(const char **p, struct selector *sel)
{
	const char *s = *p;
	char *el = NULL;
	int ret;

	memset(sel, 0, sizeof(*sel));
	ret = parse_element(&s, &el);
	if (ret)
		return ret;
	if (strlen(el) >= sizeof(sel->field) ||
	    (strcmp(el, "name") && strcmp(el, "parent") && strcmp(el, "kind") && strcmp(el, "labels"))) {
		/* an unknown field never matches; keep its name to say so */
		snprintf(sel->field, sizeof(sel->field), "?");
	} else {
		snprintf(sel->field, sizeof(sel->field), "%s", el);
	}
	free(el);
	if (!strcmp(sel->field, "labels")) {
		if (*s != '.')
			return -EINVAL;
		s++;
		ret = parse_element(&s, &sel->label);
		if (ret)
			return ret;
	} else {
		/* deeper paths of other fields are accepted and ignored */
		while (*s == '.') {
			s++;
			if ((ret = parse_element(&s, &el)))
				return ret;
			free(el);
		}
	}
	while (*s == ' ')
		s++;
	if (!*s || *s == ',') {
		sel->op = OP_PRESENT;
		*p = s;
		return 0;
	}
	if (!strncmp(s, "==", 2))
		sel->op = OP_EQ;
	else if (!strncmp(s, "!=", 2))
		sel->op = OP_NE;
	else if (!strncmp(s, "~=", 2))
		sel->op = OP_MATCH;
	else
		return -EINVAL;
	s += 2;
	while (*s == ' ')
		s++;
	if (*s == '"') {
		ret = parse_quoted(&s, &sel->value);
		if (ret)
			return ret;
	} else {
		const char *b = s;

		while (*s && *s != ',')
			s++;
		sel->value = strndup(b, (size_t)(s - b));
		if (!sel->value)
			return -ENOMEM;
		/* trailing blanks of a bare value are separators, not content */
		for (size_t l = strlen(sel->value); l && sel->value[l - 1] == ' '; l--)
			sel->value[l - 1] = 0;
	}
	while (*s == ' ')
		s++;
	if (*s && *s != ',')
		return -EINVAL;
	*p = s;
	return 0;
}

/*
 * A regular expression from a client: short, at most 16 repetitions and 8
 * nested groups, and no repetition of a repetition ("a++", "a*{2}"), which containerd's RE2 refuses as well and
 * which makes glibc's regcomp use memory exponential in the pattern.
 */
static bool regex_ok(const char *re)
{
	bool prev_quant = false;
	int nquant = 0, depth = 0;

	if (strlen(re) > FILTER_MAX_REGEX)
		return false;
	for (const char *p = re; *p; p++) {
		bool quant = *p == '*' || *p == '+' || *p == '?' || *p == '{';

		/* few repetitions and shallow groups keep the automaton small */
		if ((quant && ++nquant > 16) || (*p == '(' && ++depth > 8))
			return false;

		if (*p == '\\' && p[1]) {
			p++;
			prev_quant = false;
			continue;
		}
		/* "a*?" (lazy) is valid RE2 but not POSIX either: refuse it too */
		if (quant && prev_quant)
			return false;
		if (*p == '{') {
			while (*p && *p != '}')
				p++;
			if (!*p)
				return false;
		}
		prev_quant = quant;
	}
	return true;
}

static bool field(const struct selector *sel, const struct snapmeta_info *i, const char **val)
{
	if (!strcmp(sel->field, "name")) {
		*val = i->key;
		return true;
	}
	if (!strcmp(sel->field, "parent")) {
		*val = i->parent;
		return true;    /* an empty parent is "" and present, as in containerd */
	}
	if (!strcmp(sel->field, "kind")) {
		*val = snapmeta_kind_name(i->kind);
		return true;
	}
	if (!strcmp(sel->field, "labels")) {
		*val = snapmeta_label_get(i, sel->label);
		if (!*val) {
			*val = "";
			return false;
		}
		return true;
	}
	*val = "";
	return false;
}

static int sel_match(const struct selector *sel, const struct snapmeta_info *i)
{
	const char *val;
	bool present = field(sel, i, &val);

	switch (sel->op) {
	case OP_PRESENT: return present;
	case OP_EQ: return present && !strcmp(val, sel->value);
	case OP_NE: return strcmp(val, sel->value) != 0;
	default: {
		regex_t re;
		int r;

		if (!regex_ok(sel->value) || regcomp(&re, sel->value, REG_EXTENDED | REG_NOSUB))
			return -EINVAL;
		r = regexec(&re, val, 0, NULL, 0) == 0;
		regfree(&re);
		return r;
	}
	}
}

/* 1 match, 0 no match, -EINVAL malformed filter. */
static int filter_match(const char *f, const struct snapmeta_info *i)
{
	struct selector sel[FILTER_MAX_SELECTORS];
	size_t n = 0;
	const char *p = f;
	int ret = 1;

	if (strlen(f) > FILTER_MAX)
		return -EINVAL;
	while (*p == ' ')
		p++;
	if (!*p)
		return 1;        /* an empty filter matches everything */
	for (;;) {
		if (n == FILTER_MAX_SELECTORS) {
			ret = -EINVAL;
			goto out;
		}
		if (parse_selector(&p, &sel[n])) {
			n++;
			ret = -EINVAL;
			goto out;
		}
		n++;
		if (!*p)
			break;
		p++;     /* ',' */
	}
	for (size_t k = 0; k < n && ret == 1; k++) {
		int r = sel_match(&sel[k], i);

		if (r < 0 || !r)
			ret = r;
	}
out:
	sel_free(sel, n);
	return ret;
}

int snapmeta_filter_match(const char *const *filters, size_t n, const struct snapmeta_info *i)
{
	if (!n)
		return 1;
	for (size_t k = 0; k < n; k++) {
		int r = filter_match(filters[k], i);

		if (r)
			return r;
	}
	return 0;
}

int snapmeta_filter_check(const char *const *filters, size_t n)
{
	static const struct snapmeta_info probe = { .key = (char *)"x", .parent = (char *)"", .kind = 2 };

	for (size_t k = 0; k < n; k++) {
		int r = filter_match(filters[k], &probe);

		if (r < 0) {
			lz_err("list filter \"%.256s\" is not valid", filters[k]);
			return r;
		}
	}
	return 0;
}
