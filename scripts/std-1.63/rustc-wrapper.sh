#!/bin/sh
# Cargo's RUSTC_WRAPPER while scripts/build-std-1.63.sh builds std, doing
# what Rust's own bootstrap does for it:
# - panic_abort is built with the strategy it implements; otherwise the
#   library, linked with -C panic=abort, is refused ("the crate
#   `panic_abort` does not have the panic strategy `abort`"). Everything
#   else keeps unwinding, which the test harness needs.
# - every crate carries LLVM bitcode (cargo passes -C embed-bitcode=no when
#   it does not itself ask for LTO), for the library's -C lto.
set -eu
rustc=$1
shift
case " $* " in
*" --crate-name panic_abort "*) exec "$rustc" "$@" -C embed-bitcode=yes -C panic=abort ;;
*" --crate-name "*) exec "$rustc" "$@" -C embed-bitcode=yes ;;
*) exec "$rustc" "$@" ;;
esac
