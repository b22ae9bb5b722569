# The registry shipped before this one (src/registry/, src/blockmap.rs;
# `--features previous-registry`, C programs built with
# -DMAPI32_PREVIOUS_REGISTRY), kept for one release so that its numbers can
# be set beside today's; it goes after that (ARCHITECTURE.md, "How we got
# here"). Not shipped; make test builds it only in clippy --all-features.
#
#   make bench-previous   bench/bench.c against the previous registry and
#                         today's, in turn, BENCH_PREVIOUS_RUNS times each
#                         (3; BENCH_QUICK=1 short)

PREVIOUS_BUILD := $(BUILD)/previous
PREVIOUS_MAKE := $(MAKE) --no-print-directory BUILD=$(PREVIOUS_BUILD) CARGO_TARGET_DIR=$(TARGET_DIR)/previous \
	CARGO_FEATURES='--features previous-registry' MAPI_CFLAGS='$(MAPI_CFLAGS) -DMAPI32_PREVIOUS_REGISTRY'
BENCH_PREVIOUS_RUNS ?= 3

.PHONY: bench-previous

bench-previous: bench-prereqs
	@$(MAKE) --no-print-directory $(BUILD)/bench
	@$(PREVIOUS_MAKE) $(PREVIOUS_BUILD)/bench
	@run=1; while [ $$run -le $(BENCH_PREVIOUS_RUNS) ]; do \
		echo "## run $$run: the previous registry"; ./$(PREVIOUS_BUILD)/bench; \
		echo "## run $$run: today's"; ./$(BUILD)/bench; \
		run=$$((run + 1)); done
