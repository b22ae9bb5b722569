# The benchmark: libmapi32 against malloc/free and talloc, in one process,
# alternating rounds. See docs/PERFORMANCE.md.
#
#   make bench           the table under glibc malloc, then under LD_PRELOADed
#                        jemalloc and mimalloc (~50 s on 2 cores plus the
#                        build; BENCH_QUICK=1: ~10 s)
#   make bench-preload   only the jemalloc and mimalloc tables
#   make bench-smoke     (part of make test) it builds and prints every row
#
# Needs Debian's libtalloc-dev (and libjemalloc2, libmimalloc2.0 for the
# LD_PRELOAD tables): bench/deps.sh installs them when run as root, or says
# which apt-get line to run.

BENCH_CFLAGS ?= -O2 -g

.PHONY: bench bench-preload bench-smoke bench-deps bench-deps-preload

bench-deps:
	@sh bench/deps.sh talloc

bench-deps-preload:
	@sh bench/deps.sh preload

# talloc's flags are asked for in the recipe, once bench-deps has installed it.
$(BUILD)/bench: bench/bench.c include/mapix.h lib bench-deps | $(BUILD)
	$(CC) -std=c11 $(STRICT) $(BENCH_CFLAGS) -pthread $(MAPI_CFLAGS) $$(pkg-config --cflags talloc) $< -o $@ \
		$(MAPI_LIBS) $$(pkg-config --libs talloc)

bench: $(BUILD)/bench bench-deps-preload
	@sh bench/run.sh ./$(BUILD)/bench glibc jemalloc mimalloc

bench-preload: $(BUILD)/bench bench-deps-preload
	@sh bench/run.sh ./$(BUILD)/bench jemalloc mimalloc

bench-smoke: $(BUILD)/bench
	sh bench/smoke.sh ./$(BUILD)/bench

TEST_STEPS += bench-smoke
