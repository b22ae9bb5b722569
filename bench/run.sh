#!/bin/sh
# Runs the benchmark under each allocator named, one after another (never at
# once: they would measure each other).
#   run.sh PATH/TO/bench glibc|jemalloc|mimalloc ...
# jemalloc and mimalloc are Debian's libjemalloc2 and libmimalloc2.0, put
# under the whole process with LD_PRELOAD, so libmapi32, malloc and talloc
# all allocate from them. BENCH_QUICK=1 makes every run short.
set -eu
bench=$1
shift
for allocator in "$@"; do
    case $allocator in
    glibc)
        echo "## glibc malloc"
        "$bench" ;;
    jemalloc | mimalloc)
        package=libjemalloc2
        [ "$allocator" = mimalloc ] && package=libmimalloc2.0
        so=$(dpkg -L "$package" | grep "/lib$allocator\.so\.2\$" | head -n 1)
        echo
        echo "## LD_PRELOAD=$so ($allocator, Debian's $package)"
        LD_PRELOAD=$so "$bench" ;;
    *)
        echo "run.sh: unknown allocator $allocator" >&2; exit 2 ;;
    esac
done
