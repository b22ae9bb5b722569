# Packaging: what a distribution or a C, C++ or Python user relies on without
# reading the source, and the tests that hold it (all added to `make test`).
# Included by the main Makefile, whose variables (BUILD_LIBDIR, SONAME, ...)
# it uses.

PYTHON ?= python3

.PHONY: exports-check soname-check install-check preload-check version-check cxx-provider python-test dlopen-test

TEST_STEPS += exports-check soname-check install-check preload-check version-check cxx-provider python-test \
	dlopen-test

# The ABI is exactly the names in exports.txt, under mapi32.map's version
# nodes (see the script).
exports-check: lib
	sh c_tests/exports_check.sh exports.txt mapi32.map $(BUILD_LIBDIR)/libmapi32.so $(BUILD_LIBDIR)/libmapi32.a \
	    include/mapix.h

# libmapi32.so records the SONAME programs will look for (mk/link.mk sets it).
soname-check: lib
	@soname=$$(readelf -d $(BUILD_LIBDIR)/libmapi32.so | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p'); \
	if [ "$$soname" = "$(SONAME)" ]; then \
		echo "soname-check: libmapi32.so carries the SONAME $$soname"; \
	else \
		echo "soname-check: libmapi32.so's SONAME is '$$soname', expected $(SONAME)" >&2; exit 1; \
	fi

# make install into a temporary DESTDIR, a client built from pkg-config alone,
# and make uninstall.
install-check: lib
	sh c_tests/install_check.sh "$(MAKE)" "$(CC)"

# LD_PRELOAD=libmapi32.so takes every call of a client linked against another
# MAPI library (a stub whose calls all fail).
PRELOAD := $(BUILD)/preload
$(PRELOAD)/libothermapi.so: c_tests/preload_stub.c include/mapix.h
	mkdir -p $(PRELOAD)
	$(CC) -std=c99 $(STRICT) $(CFLAGS) -fPIC -shared $(MAPI_CFLAGS) $< -o $@

$(PRELOAD)/client: c_tests/preload_client.c include/mapix.h $(PRELOAD)/libothermapi.so
	$(CC) -std=c11 $(STRICT) $(CFLAGS) $(MAPI_CFLAGS) $< -o $@ \
	    -L$(PRELOAD) -lothermapi -Wl,--disable-new-dtags,-rpath,$(abspath $(PRELOAD)) -ldl

preload-check: $(PRELOAD)/client lib
	sh c_tests/preload_check.sh $(PRELOAD)/client $(BUILD_LIBDIR)/libmapi32.so

# The same, with the stub's exports under version node MAPI32_1 as Kopano's
# libmapi.so's are (SPEC §6): the preload must take every call, silently.
$(PRELOAD)/mapi32_1/libothermapi.so: c_tests/preload_stub.c c_tests/mapi32_1_stub.map include/mapix.h
	mkdir -p $(PRELOAD)/mapi32_1
	$(CC) -std=c99 $(STRICT) $(CFLAGS) -fPIC -shared $(MAPI_CFLAGS) $< -o $@ \
	    -Wl,--version-script=c_tests/mapi32_1_stub.map

$(PRELOAD)/mapi32_1/client: c_tests/preload_client.c include/mapix.h $(PRELOAD)/mapi32_1/libothermapi.so
	$(CC) -std=c11 $(STRICT) $(CFLAGS) $(MAPI_CFLAGS) $< -o $@ \
	    -L$(PRELOAD)/mapi32_1 -lothermapi -Wl,--disable-new-dtags,-rpath,$(abspath $(PRELOAD)/mapi32_1) -ldl

version-check: $(PRELOAD)/mapi32_1/client lib
	sh c_tests/version_check.sh $(PRELOAD)/mapi32_1/client $(BUILD_LIBDIR)/libmapi32.so

# C++: a service provider given LPALLOCATEBUFFER/LPALLOCATEMORE/LPFREEBUFFER
# copies property values into a tree; valgrind finds any copy left out of it.
$(BUILD)/provider: c_tests/provider.cpp include/mapix.h lib | $(BUILD)
	$(CXX) -std=c++11 $(STRICT) $(CFLAGS) $(MAPI_CFLAGS) $< -o $@ $(MAPI_LIBS)

cxx-provider: $(BUILD)/provider
	$(MEMCHECK) ./$(BUILD)/provider

# Python through ctypes, on the library just built, from many threads.
python-test: lib
	$(PYTHON) tests/python/test_ctypes.py $(BUILD_LIBDIR)/libmapi32.so

# dlopen() into a process whose threads already run (the thread's heap
# pointer lives in static TLS, which the loader must find for them).
$(BUILD)/dlopen_late: c_tests/dlopen_late.c c_tests/harness.h include/mapix.h | $(BUILD)
	$(CC) -std=c11 $(STRICT) $(CFLAGS) -pthread $(MAPI_CFLAGS) $< -o $@ -ldl

dlopen-test: $(BUILD)/dlopen_late lib
	./$(BUILD)/dlopen_late $(abspath $(BUILD_LIBDIR))/libmapi32.so

# ---- make install / make uninstall -----------------------------------------
#
#   make install [PREFIX=/usr/local] [LIBDIR=$(PREFIX)/lib]
#                [INCLUDEDIR=$(PREFIX)/include] [DOCDIR=$(PREFIX)/share/doc/libmapi32]
#                [DESTDIR=/staging/root] [STRIP=strip]
#
# installs into $(DESTDIR)$(LIBDIR):
#   libmapi32.so.1.<minor>.<patch>   the library (SONAME libmapi32.so.1)
#   libmapi32.so.1 -> that file      what programs load (ldconfig makes it too)
#   libmapi32.so -> libmapi32.so.1   what `cc ... -lmapi32` links against
#   libmapi32.a                      for static links
#   pkgconfig/mapi32.pc              `pkg-config --cflags --libs mapi32`
# into $(DESTDIR)$(INCLUDEDIR)/mapi32/: mapix.h, and into $(DESTDIR)$(DOCDIR):
# LICENSE-MIT, LICENSE-APACHE and CHANGELOG.md. The header gets a
# directory of its own because mapix.h is also the MAPI SDK's (and Wine's)
# name; mapi32.pc's Cflags point there. DESTDIR only stages the files: the
# paths written into mapi32.pc are PREFIX's. Run ldconfig after installing
# into a system directory.
#
# The installed libraries are stripped of debug info (the .so of its symbol
# table too): libmapi32.so 0.3 MiB instead of 4.2, libmapi32.a 3.6 MiB
# instead of 12.5. A distribution that keeps debug info in a package of its
# own passes STRIP=true and strips with its own tools.
#
# Versions: the SONAME's number is the C ABI's major version, abi-major in
# Cargo.toml, raised only when old callers would break. The file name adds
# the crate version's minor and patch (0.1.0 -> libmapi32.so.1.1.0), so each
# release installs a distinct, increasing file under the same SONAME. That
# scheme assumes a 0.x crate; install refuses a 1.0 crate until it is revisited.

PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
DOCDIR ?= $(PREFIX)/share/doc/libmapi32
HEADERDIR = $(INCLUDEDIR)/mapi32
INSTALL ?= install
STRIP ?= strip
DOC_FILES := LICENSE-MIT LICENSE-APACHE CHANGELOG.md

VERSION := $(shell sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n 1)
version_numbers := $(subst ., ,$(firstword $(subst -, ,$(VERSION))))
REALNAME := $(SONAME).$(word 2,$(version_numbers)).$(word 3,$(version_numbers))

.PHONY: install uninstall

install: $(BUILD_LIBDIR)/libmapi32.so $(BUILD_LIBDIR)/libmapi32.a include/mapix.h mapi32.pc.in $(DOC_FILES) | $(BUILD)
	@case "$(VERSION)" in 0.*) ;; *) echo "install: the library file name assumes a 0.x crate (see mk/packaging.mk)" >&2; exit 1;; esac
	sed -e 's|@PREFIX@|$(PREFIX)|' \
	    -e 's|@LIBDIR@|$(patsubst $(PREFIX)/%,$${prefix}/%,$(LIBDIR))|' \
	    -e 's|@INCLUDEDIR@|$(patsubst $(PREFIX)/%,$${prefix}/%,$(INCLUDEDIR))|' \
	    -e 's|@VERSION@|$(VERSION)|' mapi32.pc.in >$(BUILD)/mapi32.pc
	$(INSTALL) -d "$(DESTDIR)$(LIBDIR)" "$(DESTDIR)$(HEADERDIR)" "$(DESTDIR)$(PKGCONFIGDIR)" "$(DESTDIR)$(DOCDIR)"
	$(INSTALL) -m 755 $(BUILD_LIBDIR)/libmapi32.so "$(DESTDIR)$(LIBDIR)/$(REALNAME)"
	$(STRIP) --strip-unneeded "$(DESTDIR)$(LIBDIR)/$(REALNAME)"
	ln -sf $(REALNAME) "$(DESTDIR)$(LIBDIR)/$(SONAME)"
	ln -sf $(SONAME) "$(DESTDIR)$(LIBDIR)/libmapi32.so"
	$(INSTALL) -m 644 $(BUILD_LIBDIR)/libmapi32.a "$(DESTDIR)$(LIBDIR)/libmapi32.a"
	$(STRIP) --strip-debug "$(DESTDIR)$(LIBDIR)/libmapi32.a"
	$(INSTALL) -m 644 include/mapix.h "$(DESTDIR)$(HEADERDIR)/mapix.h"
	$(INSTALL) -m 644 $(BUILD)/mapi32.pc "$(DESTDIR)$(PKGCONFIGDIR)/mapi32.pc"
	$(INSTALL) -m 644 $(DOC_FILES) "$(DESTDIR)$(DOCDIR)"

# Removes exactly what install put there (an older release's
# libmapi32.so.1.x.y is its package's to remove), and the header and
# documentation directories if that leaves them empty.
uninstall:
	rm -f "$(DESTDIR)$(LIBDIR)/$(REALNAME)" "$(DESTDIR)$(LIBDIR)/$(SONAME)" "$(DESTDIR)$(LIBDIR)/libmapi32.so" \
	    "$(DESTDIR)$(LIBDIR)/libmapi32.a" "$(DESTDIR)$(HEADERDIR)/mapix.h" "$(DESTDIR)$(PKGCONFIGDIR)/mapi32.pc" \
	    $(foreach file,$(DOC_FILES),"$(DESTDIR)$(DOCDIR)/$(file)")
	for dir in "$(DESTDIR)$(HEADERDIR)" "$(DESTDIR)$(DOCDIR)"; do \
		if [ -d "$$dir" ]; then rmdir --ignore-fail-on-non-empty "$$dir"; fi; done
