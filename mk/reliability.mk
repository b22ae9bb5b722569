# Reliability: sanitizers, valgrind, model-based property tests and
# fuzzing, fault injection and stress. Included by the main Makefile; the
# steps below join `make test` through TEST_STEPS. See docs/RELIABILITY.md
# for what each proves and the figures it printed.
#
#   make fault-hook-absent  the shipped .so has no test hook; the test build has it
#   make fault-model-test   the model-based property tests with injected failures
#   make fault-sweep        fail the Nth allocation, for every N of two workloads
#   make stress             8+ threads for STRESS_SECONDS per test: queues, one
#                           root, MAPIAllocateMore racing MAPIFreeBuffer, fork storms
#   make sanitize-c         the C suites built with -fsanitize=address,undefined
#   make valgrind-test      the C suites under valgrind memcheck
#   make test-asan          the Rust tests with -Zsanitizer=address (nightly)
#   make fuzz               cargo fuzz for FUZZ_SECONDS (nightly; not in make test)

STRESS_SECONDS ?= 2
FUZZ_SECONDS ?= 300
NIGHTLY ?= nightly
RUST_HOST := $(shell rustc -vV 2>/dev/null | sed -n 's/^host: //p')

# A separate target directory for builds with the test hook, so they never
# overwrite the shipped library (a cdylib's file name carries no feature hash).
FAULT_TARGET_DIR := $(TARGET_DIR)/fault-injection
FAULT_LIBDIR := $(FAULT_TARGET_DIR)/release
FAULT_LIBS := -L$(FAULT_LIBDIR) -lmapi32 -Wl,--disable-new-dtags,-rpath,$(abspath $(FAULT_LIBDIR))
ASAN_TARGET_DIR := $(TARGET_DIR)/asan

SANITIZE := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
# The C harness replaces malloc to count blocks; memcheck must let it
# (nouserintercepts) and still sees every block through glibc's __libc_*.
# The suppression covers only blocks in flight on other threads at a fork().
RELIABILITY_MEMCHECK := $(MEMCHECK) --show-leak-kinds=definite,indirect \
	--soname-synonyms=somalloc=nouserintercepts --suppressions=c_tests/fork-in-flight.supp

TEST_STEPS += fault-hook-absent fault-model-test fault-sweep stress sanitize-c valgrind-test test-asan

.PHONY: fault-lib fault-hook-absent fault-model-test fault-sweep stress sanitize-c valgrind-test test-asan rust-asan fuzz

# count_malloc.h is the conformance suite's too.
$(BUILD)/conformance: c_tests/count_malloc.h

# The library with the cargo feature fault-injection (src/fault_hook.rs).
fault-lib:
	CARGO_TARGET_DIR=$(FAULT_TARGET_DIR) $(CARGO) build --release --features fault-injection
	ln -sf libmapi32.so $(FAULT_LIBDIR)/$(SONAME)

# nm runs on its own first, so that a missing library fails the step instead
# of leaving grep nothing to find.
fault-hook-absent: lib fault-lib | $(BUILD)
	@nm -D --defined-only $(BUILD_LIBDIR)/libmapi32.so > $(BUILD)/shipped-symbols.txt
	@if grep -q mapi32_test_ $(BUILD)/shipped-symbols.txt; then \
		echo "fault-hook-absent: the shipped libmapi32.so exports a test hook" >&2; exit 1; fi
	@nm -D $(FAULT_LIBDIR)/libmapi32.so | grep -q ' T mapi32_test_fail_allocation_after$$' || { \
		echo "fault-hook-absent: the fault-injection build lacks its hook, so the check above proves nothing" >&2; exit 1; }
	@echo "fault-hook-absent: mapi32_test_fail_allocation_after only in the fault-injection build"

fault-model-test:
	CARGO_TARGET_DIR=$(FAULT_TARGET_DIR) $(CARGO) test --features fault-injection --test model -- --nocapture

$(BUILD)/fault_sweep: c_tests/fault_sweep.c c_tests/harness.h c_tests/crew.h c_tests/count_malloc.h include/mapix.h fault-lib | $(BUILD)
	$(CC) -std=c11 $(STRICT) $(CFLAGS) -pthread $(MAPI_CFLAGS) $< -o $@ $(FAULT_LIBS)

$(BUILD)/fault_sweep-asan: c_tests/fault_sweep.c c_tests/harness.h c_tests/crew.h include/mapix.h fault-lib | $(BUILD)
	$(CC) -std=c11 $(STRICT) $(SANITIZE) -pthread $(MAPI_CFLAGS) $< -o $@ $(FAULT_LIBS)

$(BUILD)/stress: c_tests/stress.c c_tests/harness.h c_tests/crew.h c_tests/count_malloc.h include/mapix.h lib | $(BUILD)
	$(CC) -std=c11 $(STRICT) $(CFLAGS) -pthread $(MAPI_CFLAGS) $< -o $@ $(MAPI_LIBS)

$(BUILD)/stress-asan: c_tests/stress.c c_tests/harness.h c_tests/crew.h include/mapix.h lib | $(BUILD)
	$(CC) -std=c11 $(STRICT) $(SANITIZE) -pthread $(MAPI_CFLAGS) $< -o $@ $(MAPI_LIBS)

$(BUILD)/conformance-asan: c_tests/conformance.c c_tests/harness.h c_tests/crew.h include/mapix.h lib | $(BUILD)
	$(CC) -std=c11 $(STRICT) $(SANITIZE) -pthread $(MAPI_CFLAGS) $< -o $@ $(MAPI_LIBS)

fault-sweep: $(BUILD)/fault_sweep
	./$(BUILD)/fault_sweep

stress: $(BUILD)/stress
	./$(BUILD)/stress --seconds $(STRESS_SECONDS)

# The sanitizers must really be there: a build that silently dropped them
# would pass everything.
sanitize-c: $(BUILD)/conformance-asan $(BUILD)/fault_sweep-asan $(BUILD)/stress-asan
	@for program in conformance-asan fault_sweep-asan stress-asan; do \
		nm $(BUILD)/$$program | grep -q ' __asan_init$$' && nm $(BUILD)/$$program | grep -q ' __ubsan_handle_' || { \
			echo "sanitize-c: $$program is not built with ASan and UBSan" >&2; exit 1; }; done
	@echo "sanitize-c: ASan and UBSan linked into conformance-asan, fault_sweep-asan and stress-asan"
	./$(BUILD)/conformance-asan
	./$(BUILD)/fault_sweep-asan --small
	./$(BUILD)/stress-asan --seconds $(STRESS_SECONDS)

valgrind-test: $(BUILD)/conformance $(BUILD)/fault_sweep $(BUILD)/stress
	$(RELIABILITY_MEMCHECK) ./$(BUILD)/conformance
	$(RELIABILITY_MEMCHECK) ./$(BUILD)/fault_sweep --small
	$(RELIABILITY_MEMCHECK) ./$(BUILD)/stress --seconds $(STRESS_SECONDS)
	@echo "valgrind-test: no invalid access, nothing definitely or indirectly lost"

# The unit tests and the model-based property tests (with injected failures)
# with the library itself instrumented. Needs rustup's nightly toolchain (the
# "asan" group of scripts/prerequisites.txt); without it, it skips or fails
# by the Makefile's one rule (see "Skips" there). The C suites are not run
# here: an instrumented cdylib would need the Rust ASan runtime in every C
# program.
test-asan:
	@NIGHTLY=$(NIGHTLY) sh scripts/prereqs.sh run-or-skip test-asan asan -- $(MAKE) --no-print-directory rust-asan

rust-asan:
	@set -e; \
	export RUSTFLAGS="-Zsanitizer=address" CARGO_TARGET_DIR=$(ASAN_TARGET_DIR); \
	$(CARGO) +$(NIGHTLY) test --target $(RUST_HOST) --features fault-injection --lib --test model -- --nocapture; \
	for binary in $$($(CARGO) +$(NIGHTLY) test --target $(RUST_HOST) --features fault-injection --lib --test model \
			--no-run --message-format=json | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p'); do \
		nm $$binary | grep -q ' __asan_init$$' || { echo "test-asan: $$binary has no ASan runtime" >&2; exit 1; }; done; \
	echo "test-asan: unit and model tests passed with the library built with -Zsanitizer=address"

# Coverage-guided fuzzing of the model (fuzz/fuzz_targets/ops.rs) for
# FUZZ_SECONDS. Every crash is copied to fuzz/regressions, which `cargo test`
# replays: commit it with the fix.
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	mkdir -p fuzz/corpus/ops
	cd fuzz && $(CARGO) +$(NIGHTLY) fuzz run ops corpus/ops seeds -- \
		-max_total_time=$(FUZZ_SECONDS) -malloc_limit_mb=8192 -rss_limit_mb=4096 -print_final_stats=1; \
	status=$$?; \
	for crash in artifacts/ops/crash-* artifacts/ops/oom-* artifacts/ops/timeout-*; do \
		[ -e "$$crash" ] && cp "$$crash" regressions/ && echo "fuzz: kept $$crash in fuzz/regressions"; done; \
	exit $$status

# make clean also drops the fuzz build (its corpus stays: it is what the
# fuzzer has learnt).
clean: clean-fuzz
.PHONY: clean-fuzz
clean-fuzz:
	rm -rf fuzz/target fuzz/artifacts
