# Packaging: what a distribution or a C, C++ or Python user relies on without
# reading the source, and the tests that hold it (all added to `make test`).
# Included by the main Makefile, whose variables (BUILD_LIBDIR, SONAME, ...)
# it uses.

.PHONY: exports-check soname-check

TEST_STEPS += exports-check soname-check

# The ABI is exactly the names in exports.txt (see the script).
exports-check: lib
	sh c_tests/exports_check.sh exports.txt $(BUILD_LIBDIR)/libmapi32.so $(BUILD_LIBDIR)/libmapi32.a include/mapix.h

# libmapi32.so records the SONAME programs will look for (build.rs sets it).
soname-check: lib
	@soname=$$(readelf -d $(BUILD_LIBDIR)/libmapi32.so | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p'); \
	if [ "$$soname" = "$(SONAME)" ]; then \
		echo "soname-check: libmapi32.so carries the SONAME $$soname"; \
	else \
		echo "soname-check: libmapi32.so's SONAME is '$$soname', expected $(SONAME)" >&2; exit 1; \
	fi
