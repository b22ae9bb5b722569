# mapi32.dll for 32-bit Windows, where MAPI is __stdcall: built with Debian
# 12's rustc 1.63 and the std that mk/build-std.mk builds for it, checked
# like the 64-bit one (mk/windows.mk, whose variables this file uses), and
# tested under 32-bit Wine.
#
#   make windows32         build/windows32/mapi32.dll (and libmapi32.dll.a)
#   make windows32-exports the plain and stdcall-decorated names at mapi32.def's ordinals
#   make test-win32        its exports, the unit tests and the conformance cases under
#                          32-bit Wine with mapi32.dll substituted for Wine's builtin,
#                          then the provider route for a 32-bit client (mk/wine-route.mk)
#   make header-compile-windows  mapix.h compiled by mingw-w64 for both widths,
#                          and the 32-bit declarations checked to be stdcall
# `make windows-compare` adds the 32-bit table when wine32 is installed.
#
# Needs, beyond mk/build-std.mk's: gcc-mingw-w64-i686 and g++-mingw-w64-i686
# (g++-mingw-w64-x86-64 for the 64-bit header check) and, to test, wine32
# (with wine64, for the provider route's 64-bit prefix):
#   dpkg --add-architecture i386 && apt-get update && apt-get install wine32
# test-win32 is not in `make test`, which has what needs no Wine:
# header-compile-windows, windows32-exports and the 32-bit programs' build.
# wine32 would add a foreign architecture to the machine, 168 MB of
# downloads (60 amd64 packages upgraded with it) and 732 MB of disk, and
# depends on the mirror's i386 index: see docs/WINDOWS.md for the numbers.

WIN32_TARGET := i686-pc-windows-gnu
WIN32_CC ?= i686-w64-mingw32-gcc
WIN32_CXX ?= i686-w64-mingw32-g++
WIN64_CXX ?= x86_64-w64-mingw32-g++
WIN32_BUILD := $(BUILD)/windows32
WIN32_SYSROOT := $(STD_BUILD)/$(WIN32_TARGET)/sysroot
WIN32_RUSTC := $(RUSTC_163) --sysroot $(WIN32_SYSROOT) --target $(WIN32_TARGET) -C linker=$(WIN32_CC)

.PHONY: windows32 windows32-exports windows32-programs test-win32 header-compile-windows \
	windows32-check-if-available

TEST_STEPS += windows32-check-if-available

windows32: $(WIN32_BUILD)/mapi32.dll

$(WIN32_BUILD)/liblibc.rlib: scripts/build-libc-1.63.sh $(WIN32_SYSROOT)/built
	@mkdir -p $(WIN32_BUILD)
	RUSTC_SYSROOT=$(WIN32_SYSROOT) sh scripts/build-libc-1.63.sh $(RUSTC_163) $@ $(WIN32_TARGET)

# The same .def as the 64-bit DLL: on x86 the plain names and the decorated
# ones both name the stdcall functions (see mapi32.def).
$(WIN32_BUILD)/mapi32.dll: $(WIN_SOURCES) $(WIN32_BUILD)/liblibc.rlib
	$(WIN32_RUSTC) $(WIN_RUSTFLAGS) $(RUSTC_FEATURES) --crate-type cdylib --crate-name mapi32 \
	    --extern libc=$(WIN32_BUILD)/liblibc.rlib -L $(WIN32_BUILD) \
	    -C link-arg=$(abspath mapi32.def) src/lib.rs --out-dir $(WIN32_BUILD)

$(WIN32_BUILD)/unit_tests.exe: $(WIN_SOURCES) $(WIN32_BUILD)/liblibc.rlib
	$(WIN32_RUSTC) --edition 2021 --test --crate-name mapi32 -D warnings $(RUSTC_FEATURES) \
	    --extern libc=$(WIN32_BUILD)/liblibc.rlib -L $(WIN32_BUILD) src/lib.rs -o $@

$(WIN32_BUILD)/conformance_win.exe: c_tests/windows/conformance_win.c c_tests/patterns.h
	@mkdir -p $(WIN32_BUILD)
	$(WIN32_CC) $(WIN_CFLAGS) $(WIN_MAPI_CFLAGS) $< -o $@

$(WIN32_BUILD)/sdk_client.exe: c_tests/windows/sdk_client.c
	@mkdir -p $(WIN32_BUILD)
	$(WIN32_CC) $(WIN_CFLAGS) $< -o $@ -lmapi32

windows32-programs: $(WIN32_BUILD)/mapi32.dll $(WIN32_BUILD)/unit_tests.exe $(WIN32_BUILD)/conformance_win.exe \
	$(WIN32_BUILD)/sdk_client.exe

windows32-exports: $(WIN32_BUILD)/mapi32.dll
	sh c_tests/windows/exports_check.sh $< mapi32.def exports.txt $(OBJDUMP)

test-win32: windows32-exports windows32-programs
	sh c_tests/windows/run_wine.sh test $(WIN32_BUILD)
	@$(MAKE) --no-print-directory windows32-provider-route

# windows-compare (mk/windows.mk) runs this after its 64-bit table.
.PHONY: windows32-compare-if-available
windows32-compare-if-available:
	@if [ -x /usr/lib/wine/wine ]; then \
		$(MAKE) --no-print-directory windows32-programs && sh c_tests/windows/run_wine.sh compare $(WIN32_BUILD); \
	else \
		echo "windows-compare: the 32-bit table is skipped: wine32 is not installed (see mk/windows32.mk)"; \
	fi

# SPEC §1 on Windows: mapix.h is clean C99, C11 and C++ for mingw-w64 on both
# widths, and on 32-bit x86 a client's calls are to the stdcall-decorated
# symbols (_MAPIAllocateBuffer@8 ...), which a header without __stdcall would
# not produce however the function-pointer types agree with it.
header-compile-windows: | $(BUILD)
	@set -e; for cc in "$(WIN32_CC) -std=c99" "$(WIN32_CC) -std=c11" "$(WIN32_CXX) -x c++ -std=c++11" \
			"$(WIN32_CXX) -x c++ -std=c++17" "$(WIN_CC) -std=c11" "$(WIN64_CXX) -x c++ -std=c++17"; do \
		echo "$$cc"; $$cc $(STRICT) $(MAPI_CFLAGS) -c c_tests/header_compiles.c -o $(BUILD)/header_win.o; done
	@$(WIN32_CC) -std=c11 $(STRICT) $(MAPI_CFLAGS) -c c_tests/header_compiles.c -o $(BUILD)/header_win32.o
	@$(OBJDUMP) -t $(BUILD)/header_win32.o | awk '$$NF ~ /^_MAPI/ { print $$NF }' | sort >$(BUILD)/header_win32.syms
	@printf '%s\n' _MAPIAllocateBuffer@8 _MAPIAllocateMore@12 _MAPIFreeBuffer@4 | cmp -s - $(BUILD)/header_win32.syms || { \
		echo "header-compile-windows: a 32-bit client of mapix.h calls these, not the stdcall names:" >&2; \
		cat $(BUILD)/header_win32.syms >&2; exit 1; }
	@echo "header-compile-windows: mapix.h is clean for mingw-w64 on both widths, stdcall on 32-bit x86"

# What these steps need is the "win32" group of scripts/prerequisites.txt.
windows32-check-if-available:
	@sh scripts/prereqs.sh run-or-skip windows32 win32 -- \
		$(MAKE) --no-print-directory header-compile-windows windows32-exports windows32-programs
