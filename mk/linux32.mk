# libmapi32.so for 32-bit x86 Linux, built with Debian 12's rustc 1.63 and
# the std that mk/build-std.mk builds for it, and tested as the 64-bit one
# is: the crate's unit tests, the C conformance suite and the extras, built
# with -m32. Included by the main Makefile, whose variables it uses.
#
#   make linux32        build/linux32/libmapi32.so (SONAME libmapi32.so.1) and libmapi32.a
#   make test-linux32   its exports, the unit tests, conformance and extras
#
# Needs, beyond mk/build-std.mk's: gcc-multilib (cc -m32 and the 32-bit C
# runtime). The kernel must run 32-bit programs (CONFIG_IA32_EMULATION, the
# x86-64 default; without it the shell reports "Exec format error").

LINUX32_TARGET := i686-unknown-linux-gnu
LINUX32_BUILD := $(BUILD)/linux32
LINUX32_SYSROOT := $(STD_BUILD)/$(LINUX32_TARGET)/sysroot
LINUX32_RUSTC := $(RUSTC_163) --sysroot $(LINUX32_SYSROOT) --target $(LINUX32_TARGET) --edition 2021 -D warnings \
	$(RUSTC_FEATURES)
# Cargo.toml's release profile, as in mk/windows.mk.
LINUX32_RUSTFLAGS := -C panic=abort -C opt-level=3 -C codegen-units=1 -C lto -C debuginfo=1
LINUX32_CC := $(CC) -m32
LINUX32_LIBS := -L$(LINUX32_BUILD) -lmapi32 -Wl,--disable-new-dtags,-rpath,$(abspath $(LINUX32_BUILD))

.PHONY: linux32 test-linux32 linux32-exports

linux32: $(LINUX32_BUILD)/libmapi32.so

$(LINUX32_BUILD)/liblibc.rlib: scripts/build-libc-1.63.sh $(LINUX32_SYSROOT)/built
	@mkdir -p $(LINUX32_BUILD)
	RUSTC_SYSROOT=$(LINUX32_SYSROOT) sh scripts/build-libc-1.63.sh $(RUSTC_163) $@ $(LINUX32_TARGET)

# The staticlib from rustc, then the .so linked from it as mk/link.mk links
# the 64-bit one: the SONAME and mapi32.map's version nodes.
$(LINUX32_BUILD)/libmapi32.a: $(RUST_SOURCES) $(LINUX32_BUILD)/liblibc.rlib
	$(LINUX32_RUSTC) $(LINUX32_RUSTFLAGS) --crate-type staticlib --crate-name mapi32 \
	    --extern libc=$(LINUX32_BUILD)/liblibc.rlib -L $(LINUX32_BUILD) src/lib.rs --out-dir $(LINUX32_BUILD)

$(LINUX32_BUILD)/libmapi32.so: $(LINUX32_BUILD)/libmapi32.a mapi32.map exports.txt
	$(LINUX32_CC) -shared -o $@ -Wl,-soname,$(SONAME) -Wl,--version-script=mapi32.map \
	    $(addprefix -Wl$(comma)--require-defined=,$(EXPORTED_NAMES)) \
	    -Wl,--gc-sections -Wl,--as-needed -Wl,--no-undefined -Wl,-z,relro,-z,now -Wl,-z,noexecstack \
	    $< $(RUST_NATIVE_LIBS)
	ln -sf libmapi32.so $(LINUX32_BUILD)/$(SONAME)

$(LINUX32_BUILD)/unit_tests: $(RUST_SOURCES) $(LINUX32_BUILD)/liblibc.rlib
	$(LINUX32_RUSTC) --test --crate-name mapi32 --extern libc=$(LINUX32_BUILD)/liblibc.rlib -L $(LINUX32_BUILD) \
	    src/lib.rs -o $@

$(LINUX32_BUILD)/conformance: c_tests/conformance.c c_tests/harness.h c_tests/patterns.h c_tests/count_malloc.h \
		c_tests/crew.h include/mapix.h $(LINUX32_BUILD)/libmapi32.so
	$(LINUX32_CC) -std=c11 $(STRICT) $(CFLAGS) -pthread $(MAPI_CFLAGS) $< -o $@ $(LINUX32_LIBS)

$(LINUX32_BUILD)/extras: c_tests/extras.c c_tests/harness.h include/mapix.h $(LINUX32_BUILD)/libmapi32.so
	$(LINUX32_CC) -std=c11 $(STRICT) $(CFLAGS) -pthread $(MAPI_CFLAGS) $< -o $@ $(LINUX32_LIBS)

linux32-exports: $(LINUX32_BUILD)/libmapi32.so
	sh c_tests/exports_check.sh exports.txt mapi32.map $< $(LINUX32_BUILD)/libmapi32.a include/mapix.h

# The library must really be 32-bit x86, or the rest proves nothing new.
test-linux32: linux32-exports $(LINUX32_BUILD)/unit_tests $(LINUX32_BUILD)/conformance $(LINUX32_BUILD)/extras
	@readelf -h $(LINUX32_BUILD)/libmapi32.so | grep -q 'Class: *ELF32' && \
	    readelf -h $(LINUX32_BUILD)/libmapi32.so | grep -q 'Machine: *Intel 80386' || { \
		echo "test-linux32: $(LINUX32_BUILD)/libmapi32.so is not a 32-bit x86 ELF library" >&2; exit 1; }
	./$(LINUX32_BUILD)/unit_tests --test-threads=2
	./$(LINUX32_BUILD)/extras
	./$(LINUX32_BUILD)/conformance

# Part of `make test` where the tools are installed; skipped with a note
# elsewhere, but never in CI (CI set), whose .ci/run installs them. It runs
# no i386 package: gcc-multilib's 32-bit C runtime is Debian's amd64 package.
TEST_STEPS += linux32-test-if-available
.PHONY: linux32-test-if-available

# What it needs is the "win32" group of scripts/prerequisites.txt.
linux32-test-if-available:
	@sh scripts/prereqs.sh run-or-skip test-linux32 win32 -- $(MAKE) --no-print-directory test-linux32
