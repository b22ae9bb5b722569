/*
 * fork_handler_calls.c: defect 5 — MAPI calls from fork handlers that were
 * registered before the library's.
 *
 * A program (or a library it loaded earlier) registers pthread_atfork
 * handlers, then loads libmapi32 with dlopen(), whose handlers are therefore
 * registered later: its prepare handler runs before the program's, and its
 * parent and child handlers after the program's. Freeing and allocating a
 * MAPI block in any of the program's three handlers must work, as calling
 * malloc there does (SPEC §3: no call deadlocks; fork() never deadlocks).
 *
 * One test per handler, each in a forked process under the harness's alarm:
 * the handler frees a root the thread allocated before, allocates a root and
 * a child and frees them; every call must succeed, fork() must return in
 * both processes, and nothing may stay live. A child that hangs in its
 * handler is killed at a deadline and fails the test.
 *
 * Usage: fork_handler_calls [--list] [test-name ...]
 */
#define _GNU_SOURCE

#define HARNESS_TIMEOUT_SECONDS 5
#include "harness.h"

#include "child.h"
#include "load_mapi.h"

#define CHILD_SECONDS 3

enum handler { PREPARE, IN_PARENT, IN_CHILD };

static struct mapi mapi;
static enum handler calling_handler;
static void *held_root;
/* Calls that failed in the handler; in the child, its own copy. */
static int failed_calls = -1;

static void call_mapi_in(enum handler handler)
{
    if (handler != calling_handler)
        return;
    int failed = 0;
    if (mapi.free_buffer(held_root) != 0)
        failed++;
    held_root = NULL;
    void *root = NULL, *child = NULL;
    if (mapi.allocate(32, &root) != S_OK || mapi.allocate_more(32, root, &child) != S_OK)
        failed++;
    if (mapi.free_buffer(root) != 0)
        failed++;
    failed_calls = failed;
}

static void on_prepare(void)
{
    call_mapi_in(PREPARE);
}

static void on_parent(void)
{
    call_mapi_in(IN_PARENT);
}

static void on_child(void)
{
    call_mapi_in(IN_CHILD);
}

static int nothing_live(void)
{
    MAPI32_STATS stats;
    memset(&stats, 0, sizeof stats);
    stats.cbSize = sizeof stats;
    return mapi.stats(&stats) == S_OK && stats.live_roots == 0 && stats.live_children == 0;
}

/* Waits for `pid` at most CHILD_SECONDS; kills it then. Its exit status, or -1. */
static int wait_for_child(pid_t pid)
{
    int status = 0;
    for (int waited_ms = 0; waited_ms < CHILD_SECONDS * 1000; waited_ms++) {
        if (waitpid(pid, &status, WNOHANG) == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        usleep(1000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    printf("  the child hung: killed after %d s\n", CHILD_SECONDS);
    return -1;
}

static void check_calls_from(enum handler handler)
{
    calling_handler = handler;
    /* The program's handlers first, as a library loaded earlier would. */
    REQUIRE(pthread_atfork(on_prepare, on_parent, on_child) == 0);
    REQUIRE_MSG(load_mapi(&mapi) == 0, "loading %s: %s", MAPI32_LIBRARY, dlerror());
    /* The thread owns a heap: the handler's calls take the owner's path. */
    REQUIRE(mapi.allocate(64, &held_root) == S_OK);

    fflush(NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        die_with_parent(parent);
        /* The child's verdict on its own handler (or on none). */
        int held = handler == IN_CHILD ? failed_calls == 0 : 1;
        if (handler != IN_CHILD)
            mapi.free_buffer(held_root);
        _exit(held && nothing_live() ? 0 : 1);
    }
    int child_status = wait_for_child(pid);
    CHECK_MSG(child_status == 0, "the child ended with %d", child_status);
    if (handler == IN_CHILD) {
        mapi.free_buffer(held_root);
    } else {
        CHECK_MSG(failed_calls == 0, "%d calls failed in the handler", failed_calls);
    }
    CHECK(nothing_live());
}

static void calls_from_prepare_handler(void)
{
    check_calls_from(PREPARE);
}

static void calls_from_parent_handler(void)
{
    check_calls_from(IN_PARENT);
}

static void calls_from_child_handler(void)
{
    check_calls_from(IN_CHILD);
}

static const struct test_case tests[] = {
    FORKED(calls_from_prepare_handler),
    FORKED(calls_from_parent_handler),
    FORKED(calls_from_child_handler),
};

int main(int argc, char **argv)
{
    return harness_main(tests, sizeof tests / sizeof tests[0], argc, argv);
}
