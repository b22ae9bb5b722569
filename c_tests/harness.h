/*
 * harness.h: a tiny test harness for libmapi32's C tests.
 *
 * A test is a `void name(void)` function listed in a table of
 * IN_PROCESS(name) / FORKED(name) entries and handed to harness_main().
 * CHECK(cond) records a failed expression with its file and line and lets the
 * test go on, so one run shows every broken rule; REQUIRE(cond) also ends the
 * test, for when going on would only crash.
 *
 * FORKED tests (misuse, anything that could crash, abort or hang if the library
 * were wrong) run in a fork()ed child under alarm(): a crash or hang fails that
 * test, and the run goes on. IN_PROCESS tests run directly; a crash or timeout
 * there still prints the summary before the run stops.
 *
 * Usage:  prog [--list] [test-name ...]
 * Output: one PASS/FAIL/SKIP line per test, then exactly one line
 *         "N passed, N failed" (", N skipped" after it when any test was
 *         skipped). Exit status: the number of failures, at most 255.
 *
 * Needs _GNU_SOURCE (or _POSIX_C_SOURCE >= 200809L) before the first include,
 * and -pthread. Written for one translation unit: everything here is static.
 */
#ifndef MAPI32_HARNESS_H
#define MAPI32_HARNESS_H

#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef HARNESS_TIMEOUT_SECONDS
#define HARNESS_TIMEOUT_SECONDS 10
#endif

enum harness_isolation { HARNESS_IN_PROCESS, HARNESS_FORKED };

struct test_case {
    const char *name;
    void (*run)(void);
    enum harness_isolation isolation;
};

#define IN_PROCESS(fn) { #fn, fn, HARNESS_IN_PROCESS }
#define FORKED(fn) { #fn, fn, HARNESS_FORKED }

#define CHECK(cond) harness_check((cond) != 0, __FILE__, __LINE__, #cond, NULL)
/* The message is a printf format and its arguments. */
#define CHECK_MSG(cond, ...) harness_check((cond) != 0, __FILE__, __LINE__, #cond, __VA_ARGS__)
/* Like CHECK and CHECK_MSG, and end the test on failure: for when going on
 * could only crash. On a worker thread of an in-process test they end that
 * thread only. */
#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!CHECK(cond))                                                                          \
            harness_end_test(HARNESS_FAILED);                                                      \
    } while (0)
#define REQUIRE_MSG(cond, ...)                                                                     \
    do {                                                                                           \
        if (!CHECK_MSG(cond, __VA_ARGS__))                                                         \
            harness_end_test(HARNESS_FAILED);                                                      \
    } while (0)
/* Ends the test as skipped: what it checks cannot be observed in this build. */
#define SKIP_TEST(why) harness_skip((why))

enum harness_outcome { HARNESS_PASSED, HARNESS_FAILED, HARNESS_SKIPPED };

/* A forked child reports its outcome in its exit status; 77 as in automake. */
#define HARNESS_EXIT_SKIPPED 77

static atomic_uint harness_failed_checks;
static const char *harness_current_test = "";
static unsigned harness_passed, harness_failed, harness_skipped;
static int harness_in_forked_child;
static int harness_in_test;
static pthread_t harness_test_thread;
static jmp_buf harness_test_exit;
static enum harness_outcome harness_early_outcome;

/* Records one check; returns whether it held. The format may be NULL. */
#if defined(__GNUC__)
__attribute__((format(printf, 5, 6)))
#endif
static int harness_check(int ok, const char *file, int line, const char *expr, const char *format, ...)
{
    if (ok)
        return 1;
    atomic_fetch_add(&harness_failed_checks, 1);
    char detail[256] = "";
    if (format != NULL) {
        va_list args;
        va_start(args, format);
        vsnprintf(detail, sizeof detail, format, args);
        va_end(args);
    }
    printf("  %s:%d: CHECK(%s) failed%s%s\n", file, line, expr, detail[0] ? ": " : "", detail);
    return 0;
}

static unsigned harness_exit_status(unsigned failed)
{
    return failed > 255 ? 255 : failed;
}

static _Noreturn void harness_end_test(enum harness_outcome outcome)
{
    if (harness_in_forked_child) {
        fflush(NULL);
        _exit(outcome == HARNESS_SKIPPED ? HARNESS_EXIT_SKIPPED : outcome == HARNESS_FAILED);
    }
    if (!harness_in_test) {
        /* Set-up code outside any test: nothing to unwind to. */
        printf("FAIL set-up\n%u passed, %u failed\n", harness_passed, harness_failed + 1);
        exit((int)harness_exit_status(harness_failed + 1));
    }
    if (!pthread_equal(pthread_self(), harness_test_thread)) {
        /* A worker thread cannot unwind the test; it only stops itself. */
        pthread_exit(NULL);
    }
    harness_early_outcome = outcome;
    longjmp(harness_test_exit, 1);
}

static inline _Noreturn void harness_skip(const char *why)
{
    printf("  skipped: %s\n", why);
    harness_end_test(HARNESS_SKIPPED);
}

/* --- Reporting from a signal handler: write(2) only. --- */

static void harness_write(const char *text)
{
    ssize_t ignored = write(STDOUT_FILENO, text, strlen(text));
    (void)ignored;
}

static void harness_write_unsigned(unsigned value)
{
    char digits[16];
    char *cursor = digits + sizeof digits;
    *--cursor = '\0';
    do {
        *--cursor = (char)('0' + value % 10);
        value /= 10;
    } while (value != 0);
    harness_write(cursor);
}

static const char *harness_signal_name(int sig)
{
    switch (sig) {
    case SIGSEGV: return "SIGSEGV";
    case SIGBUS: return "SIGBUS";
    case SIGABRT: return "SIGABRT";
    case SIGFPE: return "SIGFPE";
    case SIGILL: return "SIGILL";
    case SIGALRM: return "SIGALRM (timed out)";
    case SIGKILL: return "SIGKILL";
    default: return "signal";
    }
}

/* An in-process test crashed or hung: report it, then the summary, and stop. */
static void harness_on_fatal_signal(int sig)
{
    harness_write("\nFAIL ");
    harness_write(harness_current_test);
    harness_write(": in-process test killed by ");
    harness_write(harness_signal_name(sig));
    harness_write("; remaining tests not run\n");
    harness_write_unsigned(harness_passed);
    harness_write(" passed, ");
    harness_write_unsigned(harness_failed + 1);
    harness_write(" failed\n");
    _exit((int)harness_exit_status(harness_failed + 1));
}

static const int harness_fatal_signals[] = { SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL, SIGALRM };

static void harness_set_fatal_handlers(void (*handler)(int))
{
    for (size_t i = 0; i < sizeof harness_fatal_signals / sizeof harness_fatal_signals[0]; i++)
        signal(harness_fatal_signals[i], handler);
}

/* --- Running one test. --- */

static void harness_run_guarded(const struct test_case *test)
{
    harness_test_thread = pthread_self();
    harness_early_outcome = HARNESS_PASSED;
    harness_in_test = 1;
    if (setjmp(harness_test_exit) == 0)
        test->run();
    harness_in_test = 0;
}

static enum harness_outcome harness_run_in_process(const struct test_case *test)
{
    harness_set_fatal_handlers(harness_on_fatal_signal);
    alarm(HARNESS_TIMEOUT_SECONDS);
    harness_run_guarded(test);
    alarm(0);
    harness_set_fatal_handlers(SIG_DFL);
    if (harness_early_outcome == HARNESS_SKIPPED)
        return HARNESS_SKIPPED;
    return atomic_load(&harness_failed_checks) ? HARNESS_FAILED : HARNESS_PASSED;
}

static enum harness_outcome harness_outcome_of_child(int status)
{
    if (WIFEXITED(status)) {
        switch (WEXITSTATUS(status)) {
        case 0: return HARNESS_PASSED;
        case HARNESS_EXIT_SKIPPED: return HARNESS_SKIPPED;
        default:
            if (WEXITSTATUS(status) != 1)
                printf("  child exited with status %d\n", WEXITSTATUS(status));
            return HARNESS_FAILED;
        }
    }
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        if (sig == SIGALRM)
            printf("  timed out after %d s\n", HARNESS_TIMEOUT_SECONDS);
        else
            printf("  killed by %s (%d)\n", harness_signal_name(sig), sig);
    }
    return HARNESS_FAILED;
}

static enum harness_outcome harness_run_forked(const struct test_case *test)
{
    fflush(NULL); /* or the child would print our buffered output again */
    pid_t pid = fork();
    if (pid < 0) {
        perror("  fork");
        return HARNESS_FAILED;
    }
    if (pid == 0) {
        harness_in_forked_child = 1;
        alarm(HARNESS_TIMEOUT_SECONDS);
        harness_run_guarded(test);
        harness_end_test(atomic_load(&harness_failed_checks) ? HARNESS_FAILED : HARNESS_PASSED);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        /* EINTR: keep waiting; the child's alarm bounds the wait. */
    }
    return harness_outcome_of_child(status);
}

static double harness_now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec * 1e3 + (double)now.tv_nsec / 1e6;
}

static void harness_run_one(const struct test_case *test)
{
    static const char *const labels[] = { "PASS", "FAIL", "SKIP" };
    harness_current_test = test->name;
    atomic_store(&harness_failed_checks, 0);
    double start = harness_now_ms();
    enum harness_outcome outcome = test->isolation == HARNESS_FORKED ? harness_run_forked(test)
                                                                     : harness_run_in_process(test);
    printf("%s %s (%.0f ms)\n", labels[outcome], test->name, harness_now_ms() - start);
    if (outcome == HARNESS_PASSED)
        harness_passed++;
    else if (outcome == HARNESS_FAILED)
        harness_failed++;
    else
        harness_skipped++;
}

/* --- The runner. --- */

static const struct test_case *harness_find(const struct test_case *tests, size_t count, const char *name)
{
    for (size_t i = 0; i < count; i++) {
        if (strcmp(tests[i].name, name) == 0)
            return &tests[i];
    }
    return NULL;
}

static void harness_usage(const char *program, size_t count)
{
    printf("usage: %s [--list] [test-name ...]\n", program);
    printf("Runs every test, or only those named (%zu in all; --list shows them).\n", count);
}

/* Runs the selected tests and returns the exit status: the number of failures. */
static int harness_main(const struct test_case *tests, size_t count, int argc, char **argv)
{
    /* Line-buffered: each line leaves before a fork or a crash can lose it. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 1 && strcmp(argv[1], "--list") == 0) {
        for (size_t i = 0; i < count; i++)
            printf("%s\n", tests[i].name);
        return 0;
    }
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        harness_usage(argv[0], count);
        return 0;
    }
    /* Also makes stdio allocate its buffer now, not inside a test's heap checks. */
    printf("# %zu tests\n", argc > 1 ? (size_t)(argc - 1) : count);
    if (argc > 1) {
        for (int i = 1; i < argc; i++) {
            const struct test_case *test = harness_find(tests, count, argv[i]);
            if (test != NULL) {
                harness_run_one(test);
            } else {
                printf("FAIL %s: no such test (see --list)\n", argv[i]);
                harness_failed++;
            }
        }
    } else {
        for (size_t i = 0; i < count; i++)
            harness_run_one(&tests[i]);
    }
    /* A skip is counted as such, never as a pass. */
    if (harness_skipped > 0)
        printf("%u passed, %u failed, %u skipped\n", harness_passed, harness_failed, harness_skipped);
    else
        printf("%u passed, %u failed\n", harness_passed, harness_failed);
    return (int)harness_exit_status(harness_failed);
}

#endif /* MAPI32_HARNESS_H */
