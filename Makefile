# lazyimg - plain GNU make. `make help` lists the targets.
BUILD ?= build
CC ?= cc
V ?= 0
WERROR ?= 1

PKGS := fuse3 libcurl liburing libzstd liblz4 openssl zlib libxxhash json-c yajl libdeflate libprotobuf-c grpc
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 \
	-Wwrite-strings -Wpointer-arith -Wvla -Wundef -Wimplicit-fallthrough \
	-Wno-unused-parameter -Wsign-compare
ifeq ($(WERROR),1)
WARN += -Werror
endif
BASE_CFLAGS := -std=c11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -pthread -Iinclude $(WARN) $(PKG_CFLAGS)
OPT_CFLAGS ?= -O2 -g -fstack-protector-strong -D_FORTIFY_SOURCE=2
SAN_CFLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
ALL_CFLAGS = $(BASE_CFLAGS) $(OPT_CFLAGS) $(EXTRA_CFLAGS) $(CFLAGS) -MMD -MP
LDLIBS_ALL = $(PKG_LIBS) -lpthread $(LDLIBS)

ifeq ($(V),1)
Q :=
msg = @true
else
Q := @
msg = @printf '  %-6s %s\n' $(1) $(2)
endif

LIB_DIRS := common rafs stargz registry cache fs snapshotter
LIB_SRCS := $(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c))
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)

# --- containerd snapshots API for `lazyimg snapshotter` (protoc-c) ----------
# snapshotter/proto/**/*.proto are compiled to C at build time into
# $(BUILD)/gen (generated code is never committed) and linked into the
# library; every file sees the generated headers through -I$(BUILD)/gen.
PROTO_SRCS := $(shell find snapshotter/proto -name '*.proto' 2>/dev/null | sort)
PROTO_GEN_C := $(PROTO_SRCS:snapshotter/proto/%.proto=$(BUILD)/gen/%.pb-c.c)
PROTO_GEN_H := $(PROTO_GEN_C:.c=.h)
PROTO_OBJS := $(PROTO_GEN_C:$(BUILD)/gen/%.c=$(BUILD)/obj/gen/%.o)
LIB_OBJS += $(PROTO_OBJS)
BASE_CFLAGS += -I$(BUILD)/gen
$(BUILD)/gen/%.pb-c.c $(BUILD)/gen/%.pb-c.h: snapshotter/proto/%.proto
	$(call msg,PROTOC,$<)
	@mkdir -p $(BUILD)/gen
	$(Q)protoc-c --proto_path=snapshotter/proto --c_out=$(BUILD)/gen $<
$(BUILD)/obj/gen/%.o: $(BUILD)/gen/%.c | $(PROTO_GEN_H)
	$(call msg,CC,$<)
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(ALL_CFLAGS) -c $< -o $@
# the gRPC service includes the generated headers: generate them first
# (an explicit target this early would otherwise become the default goal)
.DEFAULT_GOAL := all
$(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard snapshotter/grpc*.c)): | $(PROTO_GEN_H)
# --- end of the protoc-c block ----------------------------------------------
LIB := $(BUILD)/liblazyimg.a

TOOL_SRCS := $(wildcard tools/*.c)
TOOL_OBJS := $(TOOL_SRCS:%.c=$(BUILD)/obj/%.o)
BIN := $(BUILD)/bin/lazyimg

UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_REPLAY := $(FUZZ_SRCS:tests/fuzz/%.c=$(BUILD)/tests/%)
HELPER_SRCS := $(wildcard tests/tools/*.c)
HELPER_BINS := $(HELPER_SRCS:tests/tools/%.c=$(BUILD)/tests/%)
BENCH_SRCS := $(wildcard tests/bench/*.c)
BENCH_BINS := $(BENCH_SRCS:tests/bench/%.c=$(BUILD)/bench/%)

.PHONY: all test test-fast test-bins check unit integration fuzz bench demo deps clean help tsan

all: $(BIN)

$(BUILD)/obj/%.o: %.c
	$(call msg,CC,$<)
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(ALL_CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJS)
	$(call msg,AR,$@)
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(BIN): $(TOOL_OBJS) $(LIB)
	$(call msg,LD,$@)
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(ALL_CFLAGS) -o $@ $(TOOL_OBJS) $(LIB) $(LDLIBS_ALL)

$(BUILD)/tests/test_%: tests/unit/test_%.c $(LIB) tests/t.h
	$(call msg,LD,$@)
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(ALL_CFLAGS) -o $@ $< $(LIB) $(LDLIBS_ALL)

# fuzz targets linked with a replay main() for `make test`
$(BUILD)/tests/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/replay.c $(LIB)
	$(call msg,LD,$@)
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(ALL_CFLAGS) -o $@ $< tests/fuzz/replay.c $(LIB) $(LDLIBS_ALL)

$(BUILD)/tests/%: tests/tools/%.c $(LIB)
	$(call msg,LD,$@)
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(ALL_CFLAGS) -o $@ $< $(LIB) $(LDLIBS_ALL)

$(BUILD)/bench/%: tests/bench/%.c
	$(call msg,LD,$@)
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(ALL_CFLAGS) -o $@ $< -lpthread

test-bins: $(BIN) $(UNIT_BINS) $(FUZZ_REPLAY) $(HELPER_BINS)

## test: every test twice: a release build, then ASan+UBSan (build-san/)
test: test-bins
	$(MAKE) --no-print-directory BUILD=build-san OPT_CFLAGS="$(SAN_CFLAGS)" test-bins
	@tests/suite.sh $(BUILD) build-san

## test-fast: every test once, release build only
test-fast: test-bins
	@tests/suite.sh $(BUILD)

## check: the suite built with ASan+UBSan in build-san/
check:
	$(MAKE) --no-print-directory BUILD=build-san OPT_CFLAGS="$(SAN_CFLAGS)" test-bins
	@tests/suite.sh build-san

## tsan: threaded tests under ThreadSanitizer
tsan:
	$(MAKE) BUILD=build-tsan OPT_CFLAGS="-O1 -g -fsanitize=thread" test-bins
	@BUILD=build-tsan tests/run.sh integration

## fuzz: libFuzzer runs of every target (clang), FUZZ_SECONDS each
FUZZ_SECONDS ?= 60
fuzz:
	$(MAKE) BUILD=build-fuzz CC=clang OPT_CFLAGS="-O1 -g -fsanitize=fuzzer-no-link,address,undefined" $(BUILD:build=build-fuzz)/liblazyimg.a
	@set -e; for f in $(FUZZ_SRCS); do \
		n=$$(basename $$f .c); \
		clang $(BASE_CFLAGS) -O1 -g -fsanitize=fuzzer,address,undefined $$f build-fuzz/liblazyimg.a $(LDLIBS_ALL) -o build-fuzz/$$n; \
		mkdir -p build-fuzz/corpus-$$n; \
		build-fuzz/$$n -max_total_time=$(FUZZ_SECONDS) build-fuzz/corpus-$$n tests/fuzz/corpus/$${n#fuzz_}; \
	done

## bench: print mount/read figures (see tests/bench.sh)
bench: $(BIN) $(HELPER_BINS) $(BENCH_BINS) $(BUILD)/tests/test_estargz
	@BUILD=$(BUILD) tests/bench.sh

## demo: mount a built-in example image and look around
demo: $(BIN)
	@BUILD=$(BUILD) tools/demo.sh

## deps: install the Debian 12 packages needed to build and test (root)
deps:
	tools/deps.sh

clean:
	rm -rf build build-san build-tsan build-fuzz

help:
	@grep -E '^## ' Makefile | sed 's/^## /  make /'

-include $(LIB_OBJS:.o=.d) $(TOOL_OBJS:.o=.d)
