/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_reg.c - the registry client's parsers on hostile input: the first
 * byte picks the parser (WWW-Authenticate, Content-Range, manifest, index,
 * image reference; 0xff: a credential helper's answer), the rest is its
 * input. Successful parses are checked against their own invariants.
 */
#include "fuzz.h"
#include "lazyimg/reg.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data + 1;
	size_t len = size ? size - 1 : 0;
	char buf[4096];

	lz_log_level = -1;
	if (!size)
		return 0;
	if (data[0] == 0xff) {
		/* a credential helper's answer */
		char user[64], secret[64];

		if (reg_parse_cred_helper(in, len, user, sizeof(user), secret, sizeof(secret)) == 0) {
			FZ_CHECK(strlen(user) < sizeof(user) && !strchr(user, ':'));
			FZ_CHECK(secret[0] && strlen(secret) < sizeof(secret));
		}
		return 0;
	}
	switch (data[0] % 5) {
	case 0: {
		struct reg_challenge ch;

		if (reg_parse_challenge(in, len, &ch) == 0) {
			FZ_CHECK(!strcmp(ch.scheme, "Bearer") || !strcmp(ch.scheme, "Basic"));
			FZ_CHECK(strlen(ch.realm) < sizeof(ch.realm));
			if (!strcmp(ch.scheme, "Bearer"))
				FZ_CHECK(ch.realm[0]);
		}
		break;
	}
	case 1: {
		uint64_t f, l, t;

		if (reg_parse_content_range(in, len, &f, &l, &t) == 0)
			FZ_CHECK(f <= l && (t == 0 || l < t));
		break;
	}
	case 2: {
		struct reg_manifest m;
		int ret = reg_manifest_parse(in, len, &m);

		FZ_ERRNO_OK(ret);
		if (ret == 0) {
			FZ_CHECK(m.nlayers <= REG_MAX_LAYERS);
			FZ_CHECK(reg_digest_valid(m.config.digest));
			for (size_t i = 0; i < m.nlayers; i++)
				FZ_CHECK(reg_digest_valid(m.layers[i].digest));
			if (m.nlayers) {
				const struct reg_desc *boot;

				if (reg_nydus_bootstrap_layer(&m, &boot) == 0)
					FZ_CHECK(boot >= m.layers && boot < m.layers + m.nlayers);
			}
			reg_manifest_free(&m);
		}
		break;
	}
	case 3: {
		char d[REG_DIGEST_LEN + 1];

		if (reg_index_pick(in, len, "linux", "amd64", NULL, d) == 0)
			FZ_CHECK(reg_digest_valid(d));
		break;
	}
	case 4: {
		struct reg_ref r;

		if (len >= sizeof(buf))
			break;
		memcpy(buf, in, len);
		buf[len] = 0;
		if (reg_ref_parse(buf, &r) == 0) {
			FZ_CHECK(r.host[0] && r.repo[0] && (r.tag[0] || r.digest[0]));
			FZ_CHECK(!r.digest[0] || reg_digest_valid(r.digest));
		}
		break;
	}
	}
	return 0;
}
