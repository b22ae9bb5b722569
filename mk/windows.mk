# mapi32.dll: the library cross-built for 64-bit Windows. Included by the
# main Makefile, whose variables (BUILD, ...) it uses.
#
#   make windows          build/windows/mapi32.dll (and its import library libmapi32.dll.a)
#   make windows-exports  its exports: exports.txt's names, the stdcall-decorated aliases
#
# Needs Debian 12's rustc 1.63 with the Windows standard library, the libc
# source and mingw-w64 (its linker):
#   apt-get install rustc librust-libc-dev libstd-rust-dev-windows gcc-mingw-w64-x86-64
# Cargo is not used: rustup's toolchain has no Windows target here, and
# Debian's rustc builds the crate directly, with libc built from Debian's
# source the same way as for `make rust-1.63` (scripts/build-libc-1.63.sh).
# No other crate is needed: the build script (cbindgen) only makes mapix.h.

WIN_RUSTC ?= /usr/bin/rustc
WIN_TARGET := x86_64-pc-windows-gnu
OBJDUMP ?= objdump
WIN_BUILD := $(BUILD)/windows
# The release profile of Cargo.toml: panic=abort (src/lib.rs insists),
# optimised, one codegen unit, LTO. No debug info: mingw's DWARF in a PE is
# of no use to Windows debuggers, and it would make the DLL 10x larger.
WIN_RUSTFLAGS := --edition 2021 -C panic=abort -C opt-level=3 -C codegen-units=1 -C lto -C strip=debuginfo -D warnings
WIN_SOURCES := $(wildcard src/*.rs) mapi32.def

.PHONY: windows windows-exports

windows: $(WIN_BUILD)/mapi32.dll

$(WIN_BUILD)/liblibc.rlib: scripts/build-libc-1.63.sh
	@mkdir -p $(WIN_BUILD)
	sh scripts/build-libc-1.63.sh $(WIN_RUSTC) $@ $(WIN_TARGET)

# rustc hands the linker a .def naming every #[no_mangle] export; ours adds
# the stdcall-decorated aliases and native's ordinals (see mapi32.def).
$(WIN_BUILD)/mapi32.dll: $(WIN_SOURCES) $(WIN_BUILD)/liblibc.rlib
	$(WIN_RUSTC) --target $(WIN_TARGET) $(WIN_RUSTFLAGS) --crate-type cdylib --crate-name mapi32 \
	    --extern libc=$(WIN_BUILD)/liblibc.rlib -L $(WIN_BUILD) \
	    -C link-arg=$(abspath mapi32.def) src/lib.rs --out-dir $(WIN_BUILD)

windows-exports: $(WIN_BUILD)/mapi32.dll
	sh c_tests/windows/exports_check.sh $< mapi32.def exports.txt $(OBJDUMP)
