#!/bin/sh
# Makes sure the Debian packages the benchmark needs are installed.
#   deps.sh talloc     pkg-config and libtalloc-dev, to build bench/bench.c
#   deps.sh preload    libjemalloc2 and libmimalloc2.0, to LD_PRELOAD them
# Installs what is missing when run as root with apt-get; otherwise prints
# the exact apt-get line and fails.
set -eu
missing=
for what in "$@"; do
    case $what in
    talloc)
        command -v pkg-config >/dev/null 2>&1 || missing="$missing pkg-config"
        pkg-config --exists talloc 2>/dev/null || missing="$missing libtalloc-dev" ;;
    preload)
        dpkg -L libjemalloc2 2>/dev/null | grep -q '/libjemalloc\.so\.2$' || missing="$missing libjemalloc2"
        dpkg -L libmimalloc2.0 2>/dev/null | grep -q '/libmimalloc\.so\.2$' || missing="$missing libmimalloc2.0" ;;
    *)
        echo "usage: deps.sh talloc|preload ..." >&2; exit 2 ;;
    esac
done
[ -z "$missing" ] && exit 0

line="apt-get install -y --no-install-recommends$missing"
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bench: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    $line
else
    echo "bench: missing Debian packages:$missing" >&2
    echo "bench: install them with:  sudo $line" >&2
    exit 1
fi
