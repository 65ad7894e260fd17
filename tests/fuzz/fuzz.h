/* SPDX-License-Identifier: Apache-2.0 */
/* fuzz.h - shared by the fuzz targets and the replay main(). */
#ifndef LAZYIMG_FUZZ_H
#define LAZYIMG_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* libFuzzer's entry point; replay.c calls it once per corpus file. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A property a successful parse must satisfy; a violation is a bug, so crash loudly. */
#define FZ_CHECK(c) do { if (!(c)) { \
	fprintf(stderr, "%s:%d: property violated: %s\n", __FILE__, __LINE__, #c); \
	abort(); } } while (0)

/* An op returned 0/length or a negative errno, never anything else. */
#define FZ_ERRNO_OK(r) FZ_CHECK((r) >= 0 || (r) > -4096)

#endif
