/*
 * fork_malloc_lock.c: defect 3 — fork() under a malloc whose fork handlers
 * were registered after libmapi32's.
 *
 * SPEC §3: fork() never deadlocks, whatever malloc the process uses,
 * including a wrapper whose own fork handlers are registered before or after
 * the library's. Here every C-allocator request takes the lock of
 * locking_malloc.h, whose prepare handler (registered after the library's,
 * so run before it) holds that lock across fork(). If the library's prepare
 * handler then waits for a thread that is inside the library and in malloc
 * — MAPIAllocateMore allocates its block with the parent's heap held — the
 * two wait on each other for ever.
 *
 * Worker threads keep building trees (owners adding children to their own
 * roots; a pair handing roots over, so that a guest adds children and
 * frees), while the main thread forks again and again; each child makes a
 * MAPI call and exits. The forks must all return: a hang is ended by the
 * harness's alarm and fails the test. The same with the wrapper's handlers
 * registered before the library's is a guard: it holds today.
 *
 * Usage: fork_malloc_lock [--list] [test-name ...]
 */
#define _GNU_SOURCE

#define HARNESS_TIMEOUT_SECONDS 10
#include "harness.h"

#include "child.h"
#include "locking_malloc.h"
#include "mapix.h"

enum { OWNERS = 2, FORKS = 2000, CHILDREN_PER_TREE = 16 };
/* Seconds of forking at most, when forks are slow. */
#define FORK_SECONDS 4

static atomic_int stop;
static atomic_long failed_calls;
static void *_Atomic handed_over; /* a root from the producer to the guest */

static void note(SCODE result)
{
    if (result != S_OK)
        atomic_fetch_add(&failed_calls, 1);
}

/* Adds children to `root` (each a malloc with the root's heap held). */
static void grow(void *root)
{
    void *child = NULL;
    for (int i = 0; i < CHILDREN_PER_TREE; i++)
        note(MAPIAllocateMore(32, root, &child));
}

static void *owner(void *unused)
{
    (void)unused;
    while (!atomic_load(&stop)) {
        void *root = NULL;
        note(MAPIAllocateBuffer(32, &root));
        grow(root);
        MAPIFreeBuffer(root);
    }
    return NULL;
}

static void *producer(void *unused)
{
    (void)unused;
    while (!atomic_load(&stop)) {
        void *root = NULL;
        note(MAPIAllocateBuffer(32, &root));
        void *expected = NULL;
        while (!atomic_compare_exchange_weak(&handed_over, &expected, root)) {
            expected = NULL;
            if (atomic_load(&stop)) {
                MAPIFreeBuffer(root);
                return NULL;
            }
            sched_yield();
        }
    }
    return NULL;
}

/* Enters the producer's heap as a guest: children, then the free. */
static void *guest(void *unused)
{
    (void)unused;
    while (!atomic_load(&stop)) {
        void *root = atomic_exchange(&handed_over, NULL);
        if (root == NULL) {
            sched_yield();
            continue;
        }
        grow(root);
        MAPIFreeBuffer(root);
    }
    return NULL;
}

static double seconds_now(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

/*
 * The wrapper's fork handlers are registered twice, and only one pair acts,
 * as the test chooses: one before libmapi32's (from .preinit_array, which
 * runs before any shared library's constructor), one after (from the test,
 * libmapi32 being linked in and so loaded and set up before main).
 */
enum handlers_order { HANDLERS_OFF, HANDLERS_BEFORE_LIBRARY, HANDLERS_AFTER_LIBRARY };
static enum handlers_order acting = HANDLERS_OFF;

static void prepare_before(void)
{
    if (acting == HANDLERS_BEFORE_LIBRARY)
        locking_malloc_prepare();
}

static void after_fork_before(void)
{
    if (acting == HANDLERS_BEFORE_LIBRARY)
        locking_malloc_after_fork();
}

static void prepare_after(void)
{
    if (acting == HANDLERS_AFTER_LIBRARY)
        locking_malloc_prepare();
}

static void after_fork_after(void)
{
    if (acting == HANDLERS_AFTER_LIBRARY)
        locking_malloc_after_fork();
}

static void register_before_library(void)
{
    pthread_atfork(prepare_before, after_fork_before, after_fork_before);
}

__attribute__((used, section(".preinit_array"))) static void (*const register_early)(void) = register_before_library;

/* Forks again and again while the workers build trees. */
static void fork_while_threads_allocate(enum handlers_order order)
{
    if (order == HANDLERS_AFTER_LIBRARY)
        REQUIRE(pthread_atfork(prepare_after, after_fork_after, after_fork_after) == 0);
    acting = order;
    pthread_t threads[OWNERS + 2];
    for (int i = 0; i < OWNERS; i++)
        REQUIRE(pthread_create(&threads[i], NULL, owner, NULL) == 0);
    REQUIRE(pthread_create(&threads[OWNERS], NULL, producer, NULL) == 0);
    REQUIRE(pthread_create(&threads[OWNERS + 1], NULL, guest, NULL) == 0);

    pid_t parent = getpid();
    double deadline = seconds_now() + FORK_SECONDS;
    int forks = 0, children_failed = 0;
    for (; forks < FORKS && seconds_now() < deadline; forks++) {
        pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            die_with_parent(parent);
            void *root = NULL;
            SCODE result = MAPIAllocateBuffer(16, &root);
            MAPIFreeBuffer(root);
            _exit(result == S_OK ? 0 : 1);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            children_failed++;
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < OWNERS + 2; i++)
        pthread_join(threads[i], NULL);
    MAPIFreeBuffer(atomic_exchange(&handed_over, NULL));
    printf("  %d forks while 4 threads built trees\n", forks);
    CHECK_MSG(children_failed == 0, "%d children failed", children_failed);
    CHECK_MSG(atomic_load(&failed_calls) == 0, "%ld calls failed", atomic_load(&failed_calls));
}

/* The defect: the wrapper's prepare runs first and holds its lock while the
 * library's waits for a thread that is in malloc inside a heap. */
static void fork_with_malloc_lock_registered_after_library(void)
{
    fork_while_threads_allocate(HANDLERS_AFTER_LIBRARY);
}

/* The other order, which SPEC §3 names too (it holds today: a guard). */
static void fork_with_malloc_lock_registered_before_library(void)
{
    fork_while_threads_allocate(HANDLERS_BEFORE_LIBRARY);
}

static const struct test_case tests[] = {
    FORKED(fork_with_malloc_lock_registered_after_library),
    FORKED(fork_with_malloc_lock_registered_before_library),
};

int main(int argc, char **argv)
{
    return harness_main(tests, sizeof tests / sizeof tests[0], argc, argv);
}
