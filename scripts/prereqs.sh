#!/bin/sh
# Checks what a make target needs against scripts/prerequisites.txt, the one
# list, and either installs what is missing (as root, saying what and why) or
# prints the line that would, and stops. The only place that installs.
#
#   prereqs.sh setup WHAT GROUP... [--or-skip GROUP...]
#       WHAT (e.g. "make test") needs every GROUP. As root: apt-get update,
#       apt-get install -y --no-install-recommends and the rustup commands
#       for everything missing, --or-skip groups included. Otherwise: print
#       the sudo apt-get line and fail. The exception, outside CI only: what
#       only --or-skip groups lack is reported, and their steps will SKIP.
#   prereqs.sh run-or-skip STEP GROUP -- COMMAND...
#       Runs COMMAND when GROUP is complete. Otherwise in CI (CI set) STEP
#       fails; elsewhere it prints "SKIP STEP" with the install line.
#
# Environment: CI; PREREQUISITES (the list); NIGHTLY (rustup's toolchain
# for test-asan, "nightly"); for tests of this script, PREREQS_AS_ROOT=1|0
# in place of `id -u`, and PREREQS_APT_GET and PREREQS_RUSTUP in place of
# the commands.
set -eu
list=${PREREQUISITES:-$(dirname "$0")/prerequisites.txt}
NIGHTLY=${NIGHTLY:-nightly}
apt_get=${PREREQS_APT_GET:-apt-get}
rustup=${PREREQS_RUSTUP:-rustup}
if [ -n "${PREREQS_AS_ROOT:-}" ]; then as_root=$PREREQS_AS_ROOT
elif [ "$(id -u)" -eq 0 ]; then as_root=1
else as_root=0; fi
in_ci=0
[ -n "${CI:-}" ] && in_ci=1
[ -r "$list" ] || { echo "prereqs: no list at $list" >&2; exit 2; }

# A field with its blanks collapsed and its variables ($NIGHTLY) expanded,
# its globs left for the check.
trim() {
    set -f
    # shellcheck disable=SC2086
    set -- $1
    set +f
    eval "printf '%s' \"$*\""
}

# present CHECK: the check's kind, then its argument.
present() {
    kind=${1%% *}
    argument=${1#* }
    case $kind in
    command) command -v "$argument" >/dev/null 2>&1 ;;
    file)
        for path in $argument; do [ -e "$path" ] && return 0; done
        return 1 ;;
    succeeds) (eval "$argument") >/dev/null 2>&1 ;;
    *) echo "prereqs: $list: unknown check '$1'" >&2; exit 2 ;;
    esac
}

# missing GROUP...: the list's entries for any GROUP that are absent, one
# "provider|groups|check|why" a line.
missing() {
    while IFS='|' read -r provider groups check why; do
        case $provider in '#'* | '') continue ;; esac
        provider=$(trim "$provider") groups=$(trim "$groups") check=$(trim "$check") why=$(trim "$why")
        wanted=0
        for group in $groups; do
            for asked in "$@"; do [ "$group" = "$asked" ] && wanted=1; done
        done
        [ "$wanted" -eq 1 ] && ! present "$check" && printf '%s|%s|%s|%s\n' "$provider" "$groups" "$check" "$why"
    done <"$list"
    return 0
}

# Each entry, what it is and why.
describe() {
    printf '%s\n' "$1" | while IFS='|' read -r provider groups check why; do
        printf '  %-28s %-33s %s\n' "${check#* }" "$provider" "$why"
    done
}

# The Debian packages among the entries, each once; the other providers.
packages() {
    printf '%s\n' "$1" | cut -d'|' -f1 | grep -v -e '^rustup ' -e '^see ' | sort -u | tr '\n' ' ' | sed 's/ $//'
}
others() {
    printf '%s\n' "$1" | cut -d'|' -f1 | grep -e '^rustup ' -e '^see ' | sort -u || true
}

# The commands that would install the entries.
advise() {
    sudo=sudo
    [ "$as_root" -eq 1 ] && sudo=
    debian=$(packages "$1")
    [ -z "$debian" ] || echo "  ${sudo:+$sudo }apt-get install --no-install-recommends $debian"
    others "$1" | sed 's/^see /  install Rust from /; s/^rustup /  rustup /'
}

install() {
    debian=$(packages "$1")
    if [ -n "$debian" ]; then
        export DEBIAN_FRONTEND=noninteractive
        echo "+ $apt_get update"
        "$apt_get" update
        echo "+ $apt_get install -y --no-install-recommends $debian"
        # shellcheck disable=SC2086
        "$apt_get" install -y --no-install-recommends $debian
    fi
    others "$1" | grep '^rustup ' | while read -r command; do
        echo "+ $rustup ${command#rustup }"
        # shellcheck disable=SC2086
        "$rustup" ${command#rustup }
    done
}

setup() {
    what=$1
    shift
    needed= optional=
    while [ $# -gt 0 ]; do
        case $1 in
        --or-skip) shift; optional="$*"; break ;;
        *) needed="$needed $1"; shift ;;
        esac
    done
    # shellcheck disable=SC2086
    all=$(missing $needed $optional)
    if [ -z "$all" ]; then
        echo "prereqs: everything $what needs is installed ($(basename "$list"))"
        return 0
    fi
    # What a required group lacks; in CI, every group is required.
    # shellcheck disable=SC2086
    blocking=$(if [ "$in_ci" -eq 1 ]; then printf '%s\n' "$all"; else missing $needed; fi)
    manual=$(printf '%s\n' "$all" | grep '^see ' || true)

    if [ "$as_root" -eq 1 ] && [ -z "$manual" ] && command -v "$apt_get" >/dev/null 2>&1; then
        echo "prereqs: $what needs these, missing here; installing them (running as root):"
        describe "$all"
        install "$all"
        # shellcheck disable=SC2086
        still=$(missing $needed $optional)
        [ -z "$still" ] || { echo "prereqs: still missing after installing:" >&2; describe "$still" >&2; exit 1; }
        echo "prereqs: installed everything $what needs"
    elif [ -n "$blocking" ] || [ -n "$manual" ]; then
        {
            echo "prereqs: $what needs these, missing here:"
            describe "$all"
            echo "prereqs: install them, then run $what again:"
            advise "$all"
        } >&2
        exit 1
    else
        echo "prereqs: not installed, so the steps that need them will say SKIP:"
        describe "$all"
        echo "prereqs: to run those steps too:"
        advise "$all"
    fi
}

run_or_skip() {
    step=$1 group=$2
    [ "$3" = "--" ] || { echo "usage: prereqs.sh run-or-skip STEP GROUP -- COMMAND..." >&2; exit 2; }
    shift 3
    absent=$(missing "$group")
    [ -z "$absent" ] && exec "$@"
    if [ "$in_ci" -eq 1 ]; then
        {
            echo "$step: not installed, and in CI (CI is set) no step may skip:"
            describe "$absent"
            advise "$absent"
        } >&2
        exit 1
    fi
    echo "SKIP $step: not installed:"
    describe "$absent"
    echo "SKIP $step: to run it:"
    advise "$absent"
}

case ${1:-} in
setup) shift; [ $# -ge 2 ] || { echo "usage: prereqs.sh setup WHAT GROUP... [--or-skip GROUP...]" >&2; exit 2; }; setup "$@" ;;
run-or-skip) shift; [ $# -ge 4 ] || { echo "usage: prereqs.sh run-or-skip STEP GROUP -- COMMAND..." >&2; exit 2; }; run_or_skip "$@" ;;
*) echo "usage: prereqs.sh setup|run-or-skip ..." >&2; exit 2 ;;
esac
