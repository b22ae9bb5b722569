/*
 * first_call_oom.c: defect 1 — out of memory at a thread's first call.
 *
 * The first call of a new thread sets up its per-thread state: the library's
 * heap for the thread, and whatever exit hook reclaims it. On glibc a
 * thread_local with a destructor is registered through
 * __cxa_thread_atexit_impl, which callocs its list entry and, if that fails,
 * ends the process ("failed to register TLS destructor: out of memory").
 * SPEC §3: running out of memory anywhere, the set-up of a thread's first
 * call included, is MAPI_E_NOT_ENOUGH_MEMORY, never an abort.
 *
 * For each first call (MAPIAllocateBuffer; MAPIReallocateBuffer of NULL;
 * MAPIAllocateMore onto another thread's root) and each n, a new thread in a
 * forked child makes its own nth C-allocator request fail (failing_malloc.h)
 * and makes the call: it must return S_OK or MAPI_E_NOT_ENOUGH_MEMORY (with
 * *lppBuffer NULL), the same call retried must then succeed, the thread must
 * exit cleanly, and nothing may stay live. n goes up until the call no
 * longer reaches the failure.
 *
 * Usage: first_call_oom [--list] [test-name ...]
 */
#define _GNU_SOURCE

#define HARNESS_TIMEOUT_SECONDS 60
#include "harness.h"

#include "child.h"
#include "failing_malloc.h"
#include "mapix.h"

/* More requests than any first call makes (about five today). */
#define MOST_REQUESTS 64
#define CHILD_SECONDS 5
/* A scenario that held but whose call never reached the nth request. */
#define NOT_REACHED 2

enum first_call { ALLOCATE_BUFFER, REALLOCATE_NULL, ALLOCATE_MORE };

static const char *const call_names[] = { "MAPIAllocateBuffer", "MAPIReallocateBuffer(NULL)", "MAPIAllocateMore" };

struct attempt {
    enum first_call call;
    unsigned long nth;
    void *foreign_root; /* the parent for ALLOCATE_MORE, rooted by main */
    int reached;        /* the nth request came during the first call */
    int problems;
};

static char sentinel_target;
#define SENTINEL ((void *)&sentinel_target)

static SCODE make_call(struct attempt *attempt, void **out)
{
    switch (attempt->call) {
    case ALLOCATE_BUFFER: return MAPIAllocateBuffer(24, out);
    case REALLOCATE_NULL: return MAPIReallocateBuffer(NULL, 24, out);
    case ALLOCATE_MORE: return MAPIAllocateMore(24, attempt->foreign_root, out);
    }
    return MAPI_E_CALL_FAILED;
}

static void problem(struct attempt *attempt, const char *what, SCODE code)
{
    printf("  %s, its thread's request %lu failing: %s (0x%08x)\n", call_names[attempt->call], attempt->nth, what,
           (unsigned)code);
    attempt->problems++;
}

/* The new thread: its first call meets the failure, then it retries. */
static void *first_call(void *argument)
{
    struct attempt *attempt = argument;
    void *block = SENTINEL;
    fail_on_this_thread(attempt->nth);
    SCODE first = make_call(attempt, &block);
    attempt->reached = thread_countdown == 0;
    fail_on_this_thread(0);
    if (first != S_OK && first != MAPI_E_NOT_ENOUGH_MEMORY)
        problem(attempt, "returned neither S_OK nor MAPI_E_NOT_ENOUGH_MEMORY", first);
    if (first != S_OK && block != NULL)
        problem(attempt, "failed and left *lppBuffer set", first);
    if (first == S_OK && attempt->call != ALLOCATE_MORE)
        MAPIFreeBuffer(block);

    SCODE retry = make_call(attempt, &block);
    if (retry != S_OK)
        problem(attempt, "failed again once memory was back", retry);
    else if (attempt->call != ALLOCATE_MORE)
        MAPIFreeBuffer(block);
    return NULL;
}

/* In a forked child: one thread, one failing request. */
static int one_attempt(void *argument)
{
    struct attempt *attempt = argument;
    void *root = NULL;
    if (attempt->call == ALLOCATE_MORE) {
        if (MAPIAllocateBuffer(8, &root) != S_OK)
            return 1;
        attempt->foreign_root = root;
    }
    pthread_t thread;
    if (pthread_create(&thread, NULL, first_call, attempt) != 0) {
        printf("  pthread_create failed\n");
        return 1;
    }
    pthread_join(thread, NULL);
    MAPIFreeBuffer(root);
    MAPI32_STATS stats;
    memset(&stats, 0, sizeof stats);
    stats.cbSize = sizeof stats;
    if (mapi32_stats(&stats) != S_OK || stats.live_roots != 0 || stats.live_children != 0) {
        printf("  %s, request %lu failing: %llu roots and %llu children still live\n", call_names[attempt->call],
               attempt->nth, (unsigned long long)stats.live_roots, (unsigned long long)stats.live_children);
        attempt->problems++;
    }
    if (attempt->problems != 0)
        return 1;
    return attempt->reached ? 0 : NOT_REACHED;
}

static void sweep_first_call(enum first_call call)
{
    unsigned long nth;
    for (nth = 1; nth <= MOST_REQUESTS; nth++) {
        struct attempt attempt = { call, nth, NULL, 0, 0 };
        struct child_outcome outcome = run_child(one_attempt, &attempt, CHILD_SECONDS);
        if (outcome.exit_status == NOT_REACHED)
            break;
        CHECK_MSG(outcome.held, "%s as a thread's first call, its request %lu failing: %s", call_names[call], nth,
                  outcome.what);
    }
    CHECK_MSG(nth > 1 && nth <= MOST_REQUESTS, "%s: the sweep ended after %lu requests", call_names[call], nth - 1);
}

static void first_allocate_buffer_survives_oom(void)
{
    sweep_first_call(ALLOCATE_BUFFER);
}

static void first_reallocate_survives_oom(void)
{
    sweep_first_call(REALLOCATE_NULL);
}

static void first_allocate_more_survives_oom(void)
{
    sweep_first_call(ALLOCATE_MORE);
}

static const struct test_case tests[] = {
    FORKED(first_allocate_buffer_survives_oom),
    FORKED(first_reallocate_survives_oom),
    FORKED(first_allocate_more_survives_oom),
};

int main(int argc, char **argv)
{
    return harness_main(tests, sizeof tests / sizeof tests[0], argc, argv);
}
