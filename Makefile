# libmapi32: the entry point for building, trying and testing.
#
#   make          release library: build/lib/libmapi32.so and libmapi32.a (see mk/link.mk)
#   make demo     build the library and run an example MAPI client against it
#   make test     the whole suite (see "Testing" in README.md), after
#                 checking what it needs (scripts/prerequisites.txt): as
#                 root it installs what is missing, otherwise it prints the
#                 apt-get line and stops
#   make header   regenerate include/mapix.h after changing src/scode.rs or src/ffi.rs
#                 (with tools/gen-header, which builds cbindgen once)
#   make install  install the library, mapix.h and mapi32.pc: PREFIX (/usr/local),
#                 LIBDIR, INCLUDEDIR and DESTDIR as usual (see mk/packaging.mk)
#   make uninstall  remove them again (same variables)
#   make clean    remove everything built

CARGO ?= cargo
CC ?= cc
CXX ?= c++
VALGRIND ?= valgrind
CFLAGS ?= -O2 -g
STRICT := -Wall -Wextra -Wpedantic -Werror

# Where cargo puts its output; honours CARGO_TARGET_DIR like cargo does.
TARGET_DIR := $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),target)
CARGO_LIBDIR := $(TARGET_DIR)/release
# libmapi32.so has this SONAME (mk/link.mk, and build.rs for cargo's own
# cdylib), from the same line of Cargo.toml; programs linked against it look
# for a file of that name at run time.
ABI_MAJOR := $(shell sed -n 's/^abi-major *= *\([0-9][0-9]*\).*/\1/p' Cargo.toml)
SONAME := libmapi32.so.$(ABI_MAJOR)
BUILD := build
# Extra cargo flags for the library's build (e.g. `--features
# fault-injection` in a tree of its own). Empty for the shipped library.
CARGO_FEATURES ?=
# The same features as rustc's --cfg flags, for the builds cargo does not run
# (mk/windows.mk, mk/windows32.mk, mk/linux32.mk): they get the registry the
# rest of the build gets.
comma := ,
RUSTC_FEATURES := $(foreach feature,$(subst $(comma), ,$(filter-out --features,$(CARGO_FEATURES))), \
	--cfg 'feature="$(feature)"')
# Every Rust source of the library, for the builds that do not go through cargo.
RUST_SOURCES := $(wildcard src/*.rs src/*/*.rs)
# The shipped libmapi32.so and libmapi32.a, made from cargo's staticlib
# (mk/link.mk): what the tests use and `make install` installs. (LIBDIR is
# the install directory: see mk/packaging.mk.)
BUILD_LIBDIR := $(BUILD)/lib
# Link the C programs against the freshly built .so, found at run time by an
# old-style DT_RPATH, which (unlike DT_RUNPATH) outranks LD_LIBRARY_PATH: the
# tests must load this build, not another libmapi32.so on the user's path.
MAPI_CFLAGS := -Iinclude
MAPI_LIBS := -L$(BUILD_LIBDIR) -lmapi32 -Wl,--disable-new-dtags,-rpath,$(abspath $(BUILD_LIBDIR))
# valgrind fails the run on any memory error or definitely/indirectly lost block.
MEMCHECK := $(VALGRIND) -q --leak-check=full --errors-for-leak-kinds=definite,indirect --error-exitcode=99

.PHONY: all lib demo test prereqs prereqs-test fmt-check clippy no-panic-check cargo-test c-test header-check \
	header-compile more-cost demo-memcheck rust-1.63 extras-test debug-test header clean

all: lib

# cargo decides what to rebuild, so always ask it; then link what changed.
lib:
	$(CARGO) build --release $(CARGO_FEATURES)
	@$(MAKE) --no-print-directory shipped-lib

$(BUILD):
	mkdir -p $(BUILD)

$(BUILD)/demo: examples/demo.c include/mapix.h lib | $(BUILD)
	$(CC) -std=c99 $(STRICT) $(CFLAGS) $(MAPI_CFLAGS) $< -o $@ $(MAPI_LIBS)

$(BUILD)/conformance: c_tests/conformance.c c_tests/harness.h c_tests/patterns.h c_tests/count_malloc.h c_tests/crew.h include/mapix.h lib | $(BUILD)
	$(CC) -std=c11 $(STRICT) $(CFLAGS) -pthread $(MAPI_CFLAGS) $< -o $@ $(MAPI_LIBS)

$(BUILD)/extras: c_tests/extras.c c_tests/harness.h include/mapix.h lib | $(BUILD)
	$(CC) -std=c11 $(STRICT) $(CFLAGS) -pthread $(MAPI_CFLAGS) $< -o $@ $(MAPI_LIBS)

$(BUILD)/debug_client: c_tests/debug_client.c include/mapix.h lib | $(BUILD)
	$(CC) -std=c11 $(STRICT) $(CFLAGS) $(MAPI_CFLAGS) $< -o $@ $(MAPI_LIBS)

$(BUILD)/more_cost: c_tests/more_cost.c include/mapix.h lib | $(BUILD)
	$(CC) -std=c11 $(STRICT) $(CFLAGS) $(MAPI_CFLAGS) $< -o $@ $(MAPI_LIBS)

demo: $(BUILD)/demo
	./$(BUILD)/demo

# The steps of `make test`. Fragments in mk/ add theirs to TEST_STEPS; the C
# conformance suite runs last so that its summary closes the log.
TEST_STEPS := prereqs-test fmt-check clippy cargo-test rust-1.63 header-check header-compile no-panic-check \
	more-cost demo-memcheck extras-test debug-test
-include mk/*.mk

# Skips, one rule for every step: in CI (CI set) nothing may skip, and a
# missing tool is a failure. Elsewhere the prereqs step below installs what is
# missing when run as root, and otherwise stops with the install line, except
# for the tools only test-windows (mingw-w64, wine64) and test-asan (rustup's
# nightly) need: without those, these two steps say SKIP with the line that
# installs them, and the rest runs. scripts/prereqs.sh run-or-skip is the
# one implementation; a step that may skip goes through it.

# The prerequisites first, then every step: nothing is built before the
# machine has all it needs (or has said what is missing).
test: prereqs
	@$(MAKE) --no-print-directory $(TEST_STEPS) c-test

prereqs:
	@NIGHTLY=$(NIGHTLY) sh scripts/prereqs.sh setup "make test" test --or-skip windows asan win32

# The prereqs step's own behaviour: the install line and a stop as a user,
# apt-get as root, no skip in CI (on a list of packages that cannot exist).
prereqs-test:
	sh scripts/test-prereqs.sh

# House style (STYLE.md): rustfmt.toml's formatting, and no clippy warning in
# the library, its tests or its fault-injection build.
fmt-check:
	$(CARGO) fmt --check

clippy:
	$(CARGO) clippy --all-targets --all-features -- -D warnings

# Rust unit tests, the committed-header check and the C harness built by cc.
cargo-test:
	$(CARGO) test

# The library still builds, warning-free, and passes its unit tests with
# Debian 12's rustc 1.63 (needed for mapi32.dll), and Cargo.lock pins no
# dependency that needs a newer Rust; see the scripts.
rust-1.63:
	sh scripts/check-rust-1.63.sh
	sh tools/check-locked-rust-version.sh $(CARGO)

# The committed header must equal a fresh run of the generator.
header-check: | $(BUILD)
	$(GEN_HEADER) $(BUILD)/mapix.h
	@diff -u include/mapix.h $(BUILD)/mapix.h || { \
		echo "header-check: include/mapix.h is stale (- committed, + generated): run make header" >&2; exit 1; }
	@echo "header-check: include/mapix.h is what tools/gen-header generates"

# SPEC §1: mapix.h compiles cleanly as C99, C11 and C++.
header-compile: | $(BUILD)
	$(CC) -std=c99 $(STRICT) $(MAPI_CFLAGS) -c c_tests/header_compiles.c -o $(BUILD)/header_c99.o
	$(CC) -std=c11 $(STRICT) $(MAPI_CFLAGS) -c c_tests/header_compiles.c -o $(BUILD)/header_c11.o
	$(CXX) -x c++ -std=c++11 $(STRICT) $(MAPI_CFLAGS) -c c_tests/header_compiles.c -o $(BUILD)/header_cxx11.o
	$(CXX) -x c++ -std=c++17 $(STRICT) $(MAPI_CFLAGS) -c c_tests/header_compiles.c -o $(BUILD)/header_cxx17.o
	@echo "header-compile: mapix.h is clean as C99, C11, C++11 and C++17"

# SPEC §2: MAPIAllocateMore costs the same at 1k and 100k children.
more-cost: $(BUILD)/more_cost
	sh c_tests/more_cost_check.sh ./$(BUILD)/more_cost

# The demo client, under valgrind: no invalid access, nothing lost.
demo-memcheck: $(BUILD)/demo
	$(MEMCHECK) ./$(BUILD)/demo >/dev/null
	@echo "demo-memcheck: no memory errors, no leaks"

# SPEC §4-5: mapi32_stats and MAPIReallocateBuffer.
extras-test: $(BUILD)/extras
	./$(BUILD)/extras

# SPEC §4: MAPI32_DEBUG=warn, abort and leaks.
debug-test: $(BUILD)/debug_client
	sh c_tests/debug_check.sh ./$(BUILD)/debug_client

# The C conformance suite against the release library.
c-test: $(BUILD)/conformance
	./$(BUILD)/conformance

# No input can make the library panic: nothing reachable from its exports or
# its own functions leads to a Rust panic routine (see the script).
no-panic-check: lib
	sh scripts/check-no-panic.sh $(BUILD_LIBDIR)/libmapi32.so exports.txt

# tools/gen-header is a crate of its own (cbindgen, pinned), so that the
# library's build compiles no header generator.
GEN_HEADER = CARGO_TARGET_DIR=$(abspath $(TARGET_DIR))/gen-header $(CARGO) run --quiet --locked \
	--manifest-path tools/gen-header/Cargo.toml --

header:
	$(GEN_HEADER) include/mapix.h

clean:
	$(CARGO) clean
	rm -rf $(BUILD)
