#!/bin/sh
# Runs the Windows conformance cases under Wine, each in a wine process of
# its own under a timeout, so that a crash or a hang is one case's outcome
# and not the end of the run.
#
# usage: run_wine.sh test    DIR   libmapi32's mapi32.dll: every case must pass
#        run_wine.sh compare DIR   also Wine's builtin mapi32.dll, side by side
#
# DIR holds mapi32.dll, conformance_win.exe, sdk_client.exe and
# unit_tests.exe (the crate's Rust unit tests, built for Windows). Each side
# gets a directory of its own: libmapi32's with the programs and its DLL,
# run with WINEDLLOVERRIDES=mapi32=n (the DLL next to the program wins over
# the builtin); the builtin's with the programs alone, run with mapi32=b.
# Either way `conformance_win.exe --which` must name the expected DLL.
#
# The DLL's machine picks the Wine: wine64 and a win64 prefix for an x86-64
# mapi32.dll; for an i386 one (mk/windows32.mk) the 32-bit loader of
# Debian's wine32 and a win32 prefix, so that Wine's builtin mapi32.dll
# compared with it is the 32-bit one too.
#
# A private WINEPREFIX is made in a temporary directory and removed at the
# end, with its wineserver. Environment: WINE (the loader: wine64, or the
# 32-bit wine), WINESERVER, CASE_TIMEOUT (seconds a case may take, default
# 20), UNIT_TIMEOUT (seconds for all the unit tests, one process: default
# 120; 4 s on 2 idle cores, over 20 on 2 cores shared by four builds).
set -eu

mode=${1:-}
dir=${2:-}
case "$mode" in test | compare) ;; *) echo "usage: $0 test|compare DIR" >&2; exit 2 ;; esac
for file in mapi32.dll conformance_win.exe sdk_client.exe unit_tests.exe; do
    [ -f "$dir/$file" ] || { echo "run_wine: $dir/$file not found (make windows-programs)" >&2; exit 2; }
done

here=$(cd "$(dirname "$0")" && pwd)
arch=$(sh "$here/pe_arch.sh" "$dir/mapi32.dll")
wine=$(sh "$here/find_wine.sh" "$arch") || exit 2
wineserver=$(sh "$here/find_wine.sh" server "$wine") || exit 2
case_timeout=${CASE_TIMEOUT:-20}
unit_timeout=${UNIT_TIMEOUT:-120}

work=$(mktemp -d)
cleanup() {
    WINEPREFIX="$work/prefix" timeout 30 "$wineserver" -k >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export WINEPREFIX="$work/prefix" WINEDEBUG=-all WINEARCH=$arch
unset DISPLAY WAYLAND_DISPLAY MAPI32_DEBUG WINEDLLOVERRIDES || true

now() { date +%s.%N; }
elapsed() { awk -v start="$1" -v end="$(now)" 'BEGIN { printf "%.1f", end - start }'; }

# The prefix, once per run: the slow part (wineboot). Mono and Gecko are
# not wanted, and asking for them would wait for a download.
started=$(now)
WINEDLLOVERRIDES="mscoree,mshtml=" timeout 300 "$wine" wineboot -i >"$work/wineboot.log" 2>&1 || {
    echo "run_wine: wineboot failed:" >&2
    cat "$work/wineboot.log" >&2
    exit 1
}
# Keep one wineserver for the whole run rather than one per case.
timeout 30 "$wineserver" -p >/dev/null 2>&1 || true
echo "run_wine: $("$wine" --version 2>/dev/null || echo wine), $arch prefix made in $(elapsed "$started") s"

mkdir "$work/libmapi32" "$work/builtin"
for side in libmapi32 builtin; do
    cp "$dir/conformance_win.exe" "$dir/sdk_client.exe" "$work/$side/"
done
cp "$dir/mapi32.dll" "$dir/unit_tests.exe" "$work/libmapi32/"

override() {
    case "$1" in libmapi32) echo mapi32=n ;; builtin) echo mapi32=b ;; esac
}

# run SIDE OUTPUT PROGRAM [ARGS...]: runs one wine process; its exit status
# is left in $status, its output (stdout and stderr) in OUTPUT.
run() {
    side=$1 output=$2
    shift 2
    run_once "$@"
    # Wine's own failure, before or around the program: its client lost the
    # wineserver (seen once in a fresh CI clone, "wine client error:0:
    # recvmsg: Connection reset by peer", at 0.0 s). That says nothing of
    # the DLL, so the case runs once more, and the log says so.
    if [ "$status" -ne 0 ] && grep -q '^wine client error' "$output"; then
        echo "run_wine: wine lost its wineserver ($(head -n 1 "$output")); running $* once more" >&2
        run_once "$@"
    fi
}

run_once() {
    status=0
    (cd "$work/$side" && WINEDLLOVERRIDES=$(override "$side") \
        timeout -k 5 "${run_timeout:-$case_timeout}" "$wine" "$@") >"$output.raw" 2>&1 || status=$?
    tr -d '\r' <"$output.raw" >"$output"
}

# The outcome of a finished case, as one short cell of the table.
outcome() {
    status=$1 output=$2
    case "$status" in
    0) echo pass ;;
    77) echo "n/a: not exported" ;;
    1) echo "fail: $(sed -n 's/^  fail: \(.*\) (line .*/\1/p' "$output" | head -n 1)" ;;
    70) echo "crash: $(sed -n 's/^  crash: exception \(0x[0-9a-f]*\).*/\1/p' "$output" | head -n 1)" ;;
    124 | 137) echo "hang: killed after ${case_timeout} s" ;;
    *) echo "crash: exit status $status" ;;
    esac
}

# Both sides must be the DLL they claim to be.
for side in libmapi32 builtin; do
    [ "$mode" = compare ] || [ "$side" = libmapi32 ] || continue
    run "$side" "$work/which.$side" conformance_win.exe --which
    first=$(head -n 1 "$work/which.$side")
    case "$side:$first" in
    libmapi32:libmapi32\ *\\libmapi32\\mapi32.dll | libmapi32:libmapi32\ *\\libmapi32\\MAPI32.dll) ;;
    builtin:other\ *) ;;
    *)
        echo "run_wine: the $side side loaded the wrong mapi32.dll:" >&2
        cat "$work/which.$side" >&2
        exit 1
        ;;
    esac
    printf 'run_wine: %s side: %s\n' "$side" "$first"
    sed -n 's/^allocator imports counted:/run_wine:   counts its calls to:/p' "$work/which.$side"
done

run libmapi32 "$work/list" conformance_win.exe --list
[ "$status" -eq 0 ] || { echo "run_wine: --list failed" >&2; cat "$work/list" >&2; exit 1; }
# debug_misuse_and_leak is for the MAPI32_DEBUG rows below.
cases=$(grep -v '^debug_misuse_and_leak$' "$work/list" || true)
[ -n "$cases" ] || { echo "run_wine: conformance_win.exe --list named no case" >&2; exit 1; }

passed=0
failed=0
table="$work/table"
: >"$table"

# record CASE LIBMAPI32-OUTCOME BUILTIN-OUTCOME
record() {
    printf '| `%s` | %s | %s |\n' "$1" "$3" "$2" >>"$table"
    case "$2" in
    pass) passed=$((passed + 1)) ;;
    *) failed=$((failed + 1)) ;;
    esac
}

# report SIDE CASE OUTCOME SECONDS OUTPUT: one line per run; libmapi32's
# failures with the case's whole output. Wine's builtin is expected to fail
# some cases: its outcome is only shown.
report() {
    if [ "$1" = builtin ]; then
        printf '       Wine builtin: %s (%s s)\n' "$3" "$4"
    elif [ "$3" = pass ]; then
        printf 'PASS %s (%s s)\n' "$2" "$4"
    else
        printf 'FAIL %s: %s (%s s)\n' "$2" "$3" "$4"
        sed 's/^/    /' "$5"
    fi
}

# run_case SIDE CASE PROGRAM [ARGS...]: sets $result.
run_case() {
    side=$1 name=$2
    shift 2
    case_started=$(now)
    run "$side" "$work/out.$side" "$@"
    result=$(outcome "$status" "$work/out.$side")
    report "$side" "$name" "$result" "$(elapsed "$case_started")" "$work/out.$side"
}

# The crate's unit tests, on Windows' threads, TLS and C runtime.
case_started=$(now)
run_timeout=$unit_timeout
run libmapi32 "$work/unit" unit_tests.exe --test-threads=2
run_timeout=
unit_summary=$(grep '^test result:' "$work/unit" || echo "no result line")
if [ "$status" -eq 0 ] && grep -q '^test result: ok\.' "$work/unit"; then
    printf 'PASS rust_unit_tests: %s (%s s)\n' "$unit_summary" "$(elapsed "$case_started")"
    passed=$((passed + 1))
else
    printf 'FAIL rust_unit_tests: exit status %s, %s\n' "$status" "$unit_summary"
    sed 's/^/    /' "$work/unit"
    failed=$((failed + 1))
fi

for name in $cases; do
    run_case libmapi32 "$name" conformance_win.exe "$name"
    ours=$result
    theirs=-
    if [ "$mode" = compare ]; then
        run_case builtin "$name" conformance_win.exe "$name"
        theirs=$result
    fi
    record "$name" "$ours" "$theirs"
done

# A client built with the MAPI SDK's header and import library (-lmapi32).
run_case libmapi32 sdk_client sdk_client.exe
ours=$result
theirs=-
if [ "$mode" = compare ]; then
    run_case builtin sdk_client sdk_client.exe
    theirs=$result
fi
record sdk_client_linked_with_lmapi32 "$ours" "$theirs"

# SPEC §4 on Windows: MAPI32_DEBUG reaches the DLL, its lines reach stderr
# (the C runtime's write on fd 2), leaks are reported when the DLL is
# detached at exit, even when the exit ended threads in the middle of a
# call, and abort stops at the first misuse.
# diagnostics WORDS CASE: runs CASE with MAPI32_DEBUG=WORDS.
diagnostics() {
    side=libmapi32
    case_started=$(now)
    status=0
    (cd "$work/$side" && MAPI32_DEBUG=$1 WINEDLLOVERRIDES=mapi32=n \
        timeout -k 5 "$case_timeout" "$wine" conformance_win.exe "$2") \
        >"$work/debug.out" 2>"$work/debug.raw" || status=$?
    tr -d '\r' <"$work/debug.raw" >"$work/debug.err"
}
warn_line='^libmapi32: MAPIFreeBuffer(0x[0-9a-f]*): not a live root'
more_line='^libmapi32: MAPIAllocateMore(0x[0-9a-f]*): not a live block'
leak_line='^libmapi32: 1 root(s) still live at exit, 1024 bytes with their children$'

diagnostics warn,leaks debug_misuse_and_leak
if [ "$status" -eq 0 ] && grep -q "$warn_line" "$work/debug.err" && grep -q "$more_line" "$work/debug.err" &&
    grep -q "$leak_line" "$work/debug.err"; then
    result=pass
else
    result="fail: exit status $status, stderr: $(tr '\n' ' ' <"$work/debug.err")"
fi
report libmapi32 debug_warn_and_leaks_on_stderr "$result" "$(elapsed "$case_started")" "$work/debug.err"
record "MAPI32_DEBUG=warn,leaks" "$result" "n/a: no MAPI32_DEBUG"

diagnostics abort debug_misuse_and_leak
if [ "$status" -eq 3 ] && [ "$(grep -c '^libmapi32: ' "$work/debug.err")" -eq 1 ] && grep -q "$warn_line" "$work/debug.err"; then
    result=pass
else
    result="fail: exit status $status, stderr: $(tr '\n' ' ' <"$work/debug.err")"
fi
report libmapi32 debug_abort_stops_at_first_misuse "$result" "$(elapsed "$case_started")" "$work/debug.err"
record "MAPI32_DEBUG=abort" "$result" "n/a: no MAPI32_DEBUG"

# exit_with_threads_inside's processes each print the report as they exit.
diagnostics leaks exit_with_threads_inside
if [ "$status" -eq 0 ] && [ "$(grep -c '^libmapi32: [0-9]* root(s) still live at exit' "$work/debug.err")" -ge 2 ]; then
    result=pass
else
    result="fail: exit status $status, $(grep -c 'still live at exit' "$work/debug.err") reports"
fi
report libmapi32 debug_leaks_with_threads_ended_at_exit "$result" "$(elapsed "$case_started")" "$work/debug.out"
record "MAPI32_DEBUG=leaks, exit_with_threads_inside" "$result" "n/a: no MAPI32_DEBUG"

# Two reports, each of no root: one as FreeLibrary unloads the DLL (a walk
# of heaps the unloading unmapped would be lost in the detach), one at exit
# from the DLL loaded again.
diagnostics leaks unload_gives_the_mappings_back
if [ "$status" -eq 0 ] && [ "$(grep -c '^libmapi32: 0 root(s) still live at exit, 0 bytes' "$work/debug.err")" -eq 2 ]; then
    result=pass
else
    result="fail: exit status $status, stderr: $(tr '\n' ' ' <"$work/debug.err")"
fi
report libmapi32 debug_leaks_then_unload "$result" "$(elapsed "$case_started")" "$work/debug.out"
record "MAPI32_DEBUG=leaks, unload_gives_the_mappings_back" "$result" "n/a: no MAPI32_DEBUG"

if [ "$mode" = compare ]; then
    echo
    echo "| case | Wine builtin | libmapi32 |"
    echo "|---|---|---|"
    cat "$table"
    echo
fi
echo "run_wine: finished in $(elapsed "$started") s"
echo "windows: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
