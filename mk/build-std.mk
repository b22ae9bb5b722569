# Rust's standard library for the 32-bit targets (mk/linux32.mk,
# mk/windows32.mk), which Debian 12's rustc 1.63 ships none for: built from
# Debian's rust-src by scripts/build-std-1.63.sh, once per target, into
# build/std-1.63/TARGET/sysroot (1 to 3 minutes each on 2 idle cores, ~120 MB).
#
# Needs Debian's rustc, cargo and rust-src, and crates.io for std's own
# dependencies:
#   apt-get install rustc cargo rust-src

RUSTC_163 ?= /usr/bin/rustc
DEBIAN_CARGO ?= /usr/bin/cargo
STD_BUILD := $(BUILD)/std-1.63
STD_INPUTS := scripts/build-std-1.63.sh scripts/std-1.63/Cargo.toml scripts/std-1.63/Cargo.lock \
	scripts/std-1.63/rustc-wrapper.sh

# The stamp is written last: an interrupted build is redone, not half-used.
$(STD_BUILD)/%/sysroot/built: $(STD_INPUTS)
	rm -f $@
	RUSTC=$(RUSTC_163) DEBIAN_CARGO=$(DEBIAN_CARGO) sh scripts/build-std-1.63.sh $* $(STD_BUILD)/$*
	touch $@

