#!/bin/sh
# make test's prereqs-test: scripts/prereqs.sh on a list of its own, with
# packages that cannot be installed, as a user and (with apt-get and rustup
# replaced by a recorder) as root. Nothing is installed or looked up.
set -eu
prereqs=$(cd "$(dirname "$0")" && pwd)/prereqs.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
fail() { echo "prereqs-test: $*"; failed=1; }

cat >"$work/list" <<EOF
# provider                 | needed by | check                        | why
sh-package                 | present   | command sh                   | is there
fake-package               | base      | file $work/installed/*.so    | a package this machine lacks
rustup component add fake  | base      | file $work/installed/rustup  | a rustup component it lacks
fake-wine                  | optional  | command prereqs-test-no-wine | a tool only an optional step needs
see https://example.invalid/ | manual  | command prereqs-test-no-tool | what only a person can install
EOF
# The recorder: logs its arguments; "install" puts the package's file in place.
cat >"$work/record" <<EOF
#!/bin/sh
echo "\$(basename "\$0") \$*" >>"$work/log"
case "\$1 \$*" in install*fake-package*) mkdir -p "$work/installed" && touch "$work/installed/fake.so" ;; esac
case "\$*" in "component add fake") mkdir -p "$work/installed" && touch "$work/installed/rustup" ;; esac
EOF
chmod +x "$work/record"
cp "$work/record" "$work/apt-get"
cp "$work/record" "$work/rustup"

# run NAME EXPECTED_STATUS ARGS...: prereqs.sh's output in $work/NAME.out.
run() {
    name=$1 expected=$2
    shift 2
    status=0
    PREREQUISITES="$work/list" PREREQS_APT_GET="$work/apt-get" PREREQS_RUSTUP="$work/rustup" \
        sh "$prereqs" "$@" >"$work/$name.out" 2>&1 || status=$?
    [ "$status" -eq "$expected" ] || { fail "$name: exit status $status, expected $expected"; cat "$work/$name.out"; }
}
expect() { grep -qF -- "$2" "$work/$1.out" || { fail "$1: no line with \"$2\""; cat "$work/$1.out"; }; }
refuse() { ! grep -qF -- "$2" "$work/$1.out" || { fail "$1: has \"$2\""; cat "$work/$1.out"; }; }

# A user: one sudo line, rustup's line, and a stop; nothing run.
CI= PREREQS_AS_ROOT=0 run user-missing 1 setup "make test" base
expect user-missing "sudo apt-get install --no-install-recommends fake-package"
expect user-missing "  rustup component add fake"
refuse user-missing "sh-package"
[ ! -e "$work/log" ] || fail "user-missing: ran $(cat "$work/log")"

# A user missing only what an optional step needs: a note, no stop.
CI= PREREQS_AS_ROOT=0 run user-optional 0 setup "make test" present --or-skip optional
expect user-optional "will say SKIP"
expect user-optional "sudo apt-get install --no-install-recommends fake-wine"
# ... except in CI, where nothing may skip.
CI=true PREREQS_AS_ROOT=0 run ci-optional 1 setup "make test" present --or-skip optional
expect ci-optional "sudo apt-get install --no-install-recommends fake-wine"

# Root: says what and why, apt-get update, then one install, then rustup.
CI= PREREQS_AS_ROOT=1 run root 0 setup "make test" base
expect root "a package this machine lacks"
printf '%s\n' "apt-get update" "apt-get install -y --no-install-recommends fake-package" "rustup component add fake" \
    >"$work/expected-log"
cmp -s "$work/log" "$work/expected-log" || { fail "root: ran, in order:"; cat "$work/log"; }
CI= PREREQS_AS_ROOT=1 run root-again 0 setup "make test" base
expect root-again "everything make test needs is installed"
# Root cannot install what only a person can: it stops, installing nothing.
rm -f "$work/log"
CI= PREREQS_AS_ROOT=1 run root-manual 1 setup "make test" manual
expect root-manual "install Rust from https://example.invalid/"
[ ! -e "$work/log" ] || fail "root-manual: ran $(cat "$work/log")"

# run-or-skip: SKIP with the install line outside CI, a failure in CI, the
# command itself when nothing is missing.
CI= PREREQS_AS_ROOT=0 run skip 0 run-or-skip test-optional optional -- touch "$work/ran"
expect skip "SKIP test-optional"
expect skip "sudo apt-get install --no-install-recommends fake-wine"
CI=1 PREREQS_AS_ROOT=0 run ci-skip 1 run-or-skip test-optional optional -- touch "$work/ran"
expect ci-skip "no step may skip"
[ ! -e "$work/ran" ] || fail "run-or-skip ran its command with a tool missing"
CI=1 PREREQS_AS_ROOT=0 run no-skip 0 run-or-skip test-base base -- touch "$work/ran"
[ -e "$work/ran" ] || fail "run-or-skip did not run its command with everything installed"

[ "$failed" -eq 0 ] || exit 1
echo "prereqs-test: a user gets the install line and a stop, root installs (apt-get recorded), CI never skips"
