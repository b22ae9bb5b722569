# The shipped libmapi32.so and libmapi32.a, in $(BUILD_LIBDIR), made from
# the staticlib cargo builds. Included by the main Makefile, whose `make lib`
# runs cargo and then `shipped-lib`.
#
# libmapi32.so is linked here rather than taken from cargo because its
# exports must carry version nodes (mapi32.map: MAPI32_1, the node of
# Kopano's libmapi.so, SPEC §6). For a cdylib rustc hands the linker an
# anonymous version script of its own, and GNU ld refuses to combine an
# anonymous script with named nodes; linked from the staticlib, the library
# gets exactly our script. --require-defined pulls each export of
# exports.txt out of the archive (and fails the link if one is missing),
# --gc-sections drops the parts of Rust's standard library nothing reaches.
#
# libmapi32.a is cargo's less the LLVM bitcode that Rust's standard library
# objects carry (.llvmbc, .llvmcmd: 9 of its 21 MiB, and of no use to a C
# linker). -C embed-bitcode=no cannot do it: rustc refuses it with LTO,
# and the standard library is precompiled with the bitcode in. Debug info
# stays in the build tree; `make install` strips it (mk/packaging.mk).

OBJCOPY ?= objcopy
# The system libraries Rust's standard library needs (rustc
# --print native-static-libs), as in mapi32.pc's Libs.private.
RUST_NATIVE_LIBS := -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
EXPORTED_NAMES := $(shell sed -e 's/\#.*//' exports.txt)

.PHONY: shipped-lib

# The SONAME link lets programs linked against the build tree run from it,
# as after an install.
shipped-lib: $(BUILD_LIBDIR)/libmapi32.so $(BUILD_LIBDIR)/libmapi32.a
	ln -sf libmapi32.so $(BUILD_LIBDIR)/$(SONAME)

$(BUILD_LIBDIR)/libmapi32.so: $(CARGO_LIBDIR)/libmapi32.a mapi32.map exports.txt
	@mkdir -p $(BUILD_LIBDIR)
	$(CC) -shared -o $@ $(LDFLAGS) -Wl,-soname,$(SONAME) -Wl,--version-script=mapi32.map \
	    $(addprefix -Wl$(comma)--require-defined=,$(EXPORTED_NAMES)) \
	    -Wl,--gc-sections -Wl,--as-needed -Wl,--no-undefined -Wl,-z,relro,-z,now -Wl,-z,noexecstack \
	    $< $(RUST_NATIVE_LIBS)

$(BUILD_LIBDIR)/libmapi32.a: $(CARGO_LIBDIR)/libmapi32.a
	@mkdir -p $(BUILD_LIBDIR)
	$(OBJCOPY) --remove-section=.llvmbc --remove-section=.llvmcmd $< $@

# cargo's staticlib, rebuilt only when a source is newer: `make && sudo make
# install` then needs no cargo on root's PATH. (The touch: cargo leaves the
# archive alone when a newer source did not change it.)
LIB_SOURCES := $(RUST_SOURCES) build.rs Cargo.toml Cargo.lock
$(CARGO_LIBDIR)/libmapi32.a: $(LIB_SOURCES)
	$(CARGO) build --release $(CARGO_FEATURES)
	touch $@

comma := ,
