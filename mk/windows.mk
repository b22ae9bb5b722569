# mapi32.dll: the library cross-built for 64-bit Windows and tested under
# Wine, side by side with Wine's own mapi32.dll. Included by the main
# Makefile, whose variables (BUILD, STRICT, ...) it uses.
#
#   make windows          build/windows/mapi32.dll (and its import library libmapi32.dll.a)
#   make windows-exports  its exports: exports.txt's names, the stdcall-decorated aliases
#   make test-windows     its exports, the crate's unit tests and the conformance cases,
#                         under wine64 with mapi32.dll substituted for Wine's builtin
#   make windows-compare  the same cases against libmapi32's and Wine's builtin mapi32.dll,
#                         each case in its own wine process, and the table of both;
#                         then the 32-bit table where wine32 is installed (mk/windows32.mk)
#
# Needs Debian 12's rustc 1.63 with the Windows standard library, the libc
# source, mingw-w64 (linker and C compiler) and, to test, wine64:
#   apt-get install rustc librust-libc-dev libstd-rust-dev-windows gcc-mingw-w64-x86-64 wine64
# Cargo is not used: rustup's toolchain has no Windows target here, and
# Debian's rustc builds the crate directly, with libc built from Debian's
# source the same way as for `make rust-1.63` (scripts/build-libc-1.63.sh).
# No other crate is needed: the build script only sets the ELF SONAME.

WIN_RUSTC ?= /usr/bin/rustc
WIN_TARGET := x86_64-pc-windows-gnu
WIN_CC ?= x86_64-w64-mingw32-gcc
OBJDUMP ?= objdump
WIN_BUILD := $(BUILD)/windows
# The release profile of Cargo.toml: panic=abort (src/lib.rs insists),
# optimised, one codegen unit, LTO. No debug info: mingw's DWARF in a PE is
# of no use to Windows debuggers, and it would make the DLL 10x larger.
WIN_RUSTFLAGS := --edition 2021 -C panic=abort -C opt-level=3 -C codegen-units=1 -C lto -C strip=debuginfo -D warnings
WIN_CFLAGS := -std=c11 $(STRICT) -O2
# What the test programs are told of the library (its -D flags, if any);
# not the include path: they use the MAPI SDK's headers.
WIN_MAPI_CFLAGS := $(filter -D%,$(MAPI_CFLAGS))
WIN_SOURCES := $(RUST_SOURCES) mapi32.def

.PHONY: windows windows-exports windows-programs test-windows windows-compare windows-test-if-available

# Part of `make test`; without its tools it skips or fails by the Makefile's
# one rule (see "Skips" there).
TEST_STEPS += windows-test-if-available

windows: $(WIN_BUILD)/mapi32.dll

$(WIN_BUILD)/liblibc.rlib: scripts/build-libc-1.63.sh
	@mkdir -p $(WIN_BUILD)
	sh scripts/build-libc-1.63.sh $(WIN_RUSTC) $@ $(WIN_TARGET)

# rustc hands the linker a .def naming every #[no_mangle] export; ours adds
# the stdcall-decorated aliases and native's ordinals (see mapi32.def).
$(WIN_BUILD)/mapi32.dll: $(WIN_SOURCES) $(WIN_BUILD)/liblibc.rlib
	$(WIN_RUSTC) --target $(WIN_TARGET) $(WIN_RUSTFLAGS) $(RUSTC_FEATURES) --crate-type cdylib --crate-name mapi32 \
	    --extern libc=$(WIN_BUILD)/liblibc.rlib -L $(WIN_BUILD) \
	    -C link-arg=$(abspath mapi32.def) src/lib.rs --out-dir $(WIN_BUILD)

# The crate's own unit tests, built for Windows, to run under wine.
$(WIN_BUILD)/unit_tests.exe: $(WIN_SOURCES) $(WIN_BUILD)/liblibc.rlib
	$(WIN_RUSTC) --target $(WIN_TARGET) --edition 2021 --test --crate-name mapi32 -D warnings $(RUSTC_FEATURES) \
	    --extern libc=$(WIN_BUILD)/liblibc.rlib -L $(WIN_BUILD) src/lib.rs -o $@

$(WIN_BUILD)/conformance_win.exe: c_tests/windows/conformance_win.c c_tests/patterns.h
	@mkdir -p $(WIN_BUILD)
	$(WIN_CC) $(WIN_CFLAGS) $(WIN_MAPI_CFLAGS) $< -o $@

# Linked as a Windows MAPI client is: the SDK's import library (mingw-w64's).
$(WIN_BUILD)/sdk_client.exe: c_tests/windows/sdk_client.c
	@mkdir -p $(WIN_BUILD)
	$(WIN_CC) $(WIN_CFLAGS) $< -o $@ -lmapi32

windows-programs: $(WIN_BUILD)/mapi32.dll $(WIN_BUILD)/unit_tests.exe $(WIN_BUILD)/conformance_win.exe $(WIN_BUILD)/sdk_client.exe

windows-exports: $(WIN_BUILD)/mapi32.dll
	sh c_tests/windows/exports_check.sh $< mapi32.def exports.txt $(OBJDUMP)

test-windows: windows-exports windows-programs
	sh c_tests/windows/run_wine.sh test $(WIN_BUILD)

windows-compare: windows-programs
	sh c_tests/windows/run_wine.sh compare $(WIN_BUILD)
	@$(MAKE) --no-print-directory windows32-compare-if-available

# What test-windows needs is the "windows" group of scripts/prerequisites.txt.
windows-test-if-available:
	@sh scripts/prereqs.sh run-or-skip test-windows windows -- $(MAKE) --no-print-directory test-windows
