# The benchmark: libmapi32 against malloc/free and talloc, in one process,
# alternating rounds; then the rows the registry redesign was measured by
# (cross-thread frees among busy threads, idle threads, an unvalidated
# header+list allocator, memory after a burst), each cross-thread cell in a
# fresh process. See docs/PERFORMANCE.md.
#
#   make bench           the tables under glibc malloc, then under LD_PRELOADed
#                        jemalloc and mimalloc (~3 min on 2 cores plus the
#                        build, ~4 min when the machine is loaded;
#                        BENCH_QUICK=1: ~1 min)
#   make bench-preload   only the jemalloc and mimalloc tables
#   make bench-smoke     (part of make test) it builds and prints every row (~3 s)
#   ./build/bench --only crossthread,idle   one family or more (main,
#                        crossthread, idle, kopano, burst), with --quick or not
#
# Needs Debian's libtalloc-dev, and libjemalloc2 and libmimalloc2.0 for the
# LD_PRELOAD tables: the "bench" group of scripts/prerequisites.txt, which
# make bench checks first, installing what is missing when run as root and
# otherwise printing the apt-get line and stopping, as make test does.

BENCH_CFLAGS ?= -O2 -g

.PHONY: bench bench-preload bench-smoke bench-prereqs

bench-prereqs:
	@sh scripts/prereqs.sh setup "make bench" bench

# talloc's flags are asked for in the recipe: the prereqs steps of make test
# and make bench see that it is installed before this is built.
# One program: main and the single-thread rows in bench.c, each further family
# of rows in a file of its own (bench/bench.h lists them).
BENCH_SOURCES := bench/bench.c bench/stats.c bench/table.c bench/trace.c bench/crossthread.c \
	bench/idle_heaps.c bench/kopano_baseline.c bench/burst_rss.c
$(BUILD)/bench: $(BENCH_SOURCES) bench/bench.h include/mapix.h lib | $(BUILD)
	$(CC) -std=c11 $(STRICT) $(BENCH_CFLAGS) -pthread $(MAPI_CFLAGS) $$(pkg-config --cflags talloc) \
		$(BENCH_SOURCES) -o $@ $(MAPI_LIBS) $$(pkg-config --libs talloc)

# The prerequisites, then the build: nothing is built before they are there.
bench: bench-prereqs
	@$(MAKE) --no-print-directory $(BUILD)/bench
	@sh bench/run.sh ./$(BUILD)/bench glibc jemalloc mimalloc

bench-preload: bench-prereqs
	@$(MAKE) --no-print-directory $(BUILD)/bench
	@sh bench/run.sh ./$(BUILD)/bench jemalloc mimalloc

bench-smoke: $(BUILD)/bench
	sh bench/smoke.sh ./$(BUILD)/bench

TEST_STEPS += bench-smoke
