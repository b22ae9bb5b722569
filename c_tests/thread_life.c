/*
 * thread_life.c: a heap's life across threads and fork (SPEC §3, "thread
 * exit and unloading reclaim everything"; "fork ... including freeing
 * blocks that were allocated before the fork"), through the exports.
 *
 * - A tree whose thread exited stays valid and counted, and a later thread
 *   frees it. (The v3 registry serves that by adoption: a thread's first
 *   allocation takes over an exited thread's heap, trees and all. Freeing
 *   an exited thread's tree from a thread that already has a heap is the
 *   cross-thread free work's.)
 * - Threads that come and go, one after another or a few at a time, keep
 *   the process's mappings and resident memory flat: heaps are reused, not
 *   made anew for each thread.
 * - A thread that freed everything gives its memory back when it exits.
 * - In a child forked while other threads build trees, the library works
 *   at once: the forking thread's tree and an exited thread's tree made
 *   before the fork are freed there, and new threads allocate.
 * - In a child forked while other threads hold trees between calls, those
 *   threads' trees are freed there, leave the counts at once, and the
 *   child's new threads make as many in the memory they held.
 *
 * Every test runs in a process of its own (FORKED): what earlier tests left
 * (heaps, orphans) cannot help or hide anything.
 *
 * Usage: thread_life [--list] [test-name ...]
 */
#define _GNU_SOURCE

#define HARNESS_TIMEOUT_SECONDS 60
#include "harness.h"

#include <malloc.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mapix.h>

static MAPI32_STATS stats_now(void)
{
    MAPI32_STATS stats;
    memset(&stats, 0, sizeof stats);
    stats.cbSize = sizeof stats;
    REQUIRE(mapi32_stats(&stats) == S_OK);
    return stats;
}

/* Pages the process has mapped and has resident, in bytes (/proc/self/statm). */
struct memory {
    long mapped, resident;
};

static struct memory memory_now(void)
{
    struct memory memory = { -1, -1 };
    FILE *statm = fopen("/proc/self/statm", "r");
    REQUIRE(statm != NULL);
    REQUIRE(fscanf(statm, "%ld %ld", &memory.mapped, &memory.resident) == 2);
    fclose(statm);
    memory.mapped *= sysconf(_SC_PAGESIZE);
    memory.resident *= sysconf(_SC_PAGESIZE);
    return memory;
}

static void *run_on_thread(void *(*body)(void *), void *argument)
{
    pthread_t thread;
    void *result = NULL;
    REQUIRE(pthread_create(&thread, NULL, body, argument) == 0);
    REQUIRE(pthread_join(thread, &result) == 0);
    return result;
}

/* A root of 64 bytes with two children, filled; returns the root. */
static void *make_tree(void *unused)
{
    (void)unused;
    void *root = NULL, *a = NULL, *b = NULL;
    if (MAPIAllocateBuffer(64, &root) != S_OK || MAPIAllocateMore(100, root, &a) != S_OK ||
        MAPIAllocateMore(30, a, &b) != S_OK)
        return NULL;
    memset(root, 0x5a, 64);
    memset(a, 0xa5, 100);
    memset(b, 0x3c, 30);
    return root;
}

static int tree_intact(const unsigned char *root)
{
    for (int i = 0; i < 64; i++)
        if (root[i] != 0x5a)
            return 0;
    return 1;
}

/* A later thread: its first call allocates, then it frees the tree. */
static void *allocate_then_free(void *tree)
{
    void *mine = NULL;
    if (MAPIAllocateBuffer(8, &mine) != S_OK)
        return NULL;
    void *child = NULL;
    MAPI32_STATS before = stats_now();
    MAPIFreeBuffer(tree);
    MAPI32_STATS after = stats_now();
    /* Freed for real (not ignored as another thread's): its root and two
     * children are no longer live, and no child can be added to it. */
    int freed = after.live_roots == before.live_roots - 1 && after.live_children == before.live_children - 2;
    SCODE refused = MAPIAllocateMore(8, tree, &child);
    MAPIFreeBuffer(mine);
    return freed && refused == MAPI_E_INVALID_PARAMETER ? tree : NULL;
}

static void exited_threads_tree_stays_counted_until_a_later_thread_frees_it(void)
{
    void *tree = run_on_thread(make_tree, NULL);
    REQUIRE(tree != NULL);
    MAPI32_STATS held = stats_now();
    CHECK_MSG(held.live_roots == 1 && held.live_children == 2 && held.live_bytes == 194,
              "%llu roots, %llu children, %llu bytes live", (unsigned long long)held.live_roots,
              (unsigned long long)held.live_children, (unsigned long long)held.live_bytes);
    CHECK(tree_intact(tree));
    CHECK(run_on_thread(allocate_then_free, tree) == tree);
    MAPI32_STATS after = stats_now();
    CHECK_MSG(after.live_roots == 0 && after.live_children == 0, "%llu roots, %llu children left",
              (unsigned long long)after.live_roots, (unsigned long long)after.live_children);
}

/* One thread's work: trees of assorted sizes, all freed. */
static void *build_and_free(void *unused)
{
    (void)unused;
    for (int i = 0; i < 64; i++) {
        void *root = NULL, *child = NULL;
        if (MAPIAllocateBuffer(16 + (ULONG)i * 24, &root) != S_OK)
            return NULL;
        for (int j = 0; j < i % 5; j++)
            if (MAPIAllocateMore(40 + (ULONG)j * 300, root, &child) != S_OK)
                return NULL;
        MAPIFreeBuffer(root);
    }
    return (void *)1;
}

enum { WARM_UP = 32, LIFETIMES = 1000, AT_ONCE = 4 };
/* A v3 heap (a 4 MiB segment) for each thread that can be alive at once,
 * in case the warm-up never had AT_ONCE overlap, and one spare; a heap per
 * thread would map 2.5 GiB. */
#define MOST_MAPPED_GROWTH ((AT_ONCE + 1l) * (4l << 20))
#define MOST_RESIDENT_GROWTH (4l << 20)

/* Rounds of threads, alone for half the rounds, a few at a time for the
 * rest; returns how many threads' calls failed. */
static int come_and_go(int rounds)
{
    int failed = 0;
    for (int round = 0; round < rounds; round++) {
        pthread_t threads[AT_ONCE];
        int at_once = round % 2 ? AT_ONCE : 1;
        for (int i = 0; i < at_once; i++)
            REQUIRE(pthread_create(&threads[i], NULL, build_and_free, NULL) == 0);
        for (int i = 0; i < at_once; i++) {
            void *result = NULL;
            pthread_join(threads[i], &result);
            failed += result == NULL;
        }
    }
    return failed;
}

static void threads_coming_and_going_keep_memory_flat(void)
{
    /* glibc maps a 64 MiB arena whenever threads contend for the ones it
     * has, up to 8 per core: one arena keeps its mappings out of the count. */
    REQUIRE(mallopt(M_ARENA_MAX, 1) == 1);
    /* glibc's own first costs: thread stacks it caches, its arenas. */
    int failed = come_and_go(WARM_UP);
    struct memory before = memory_now();
    failed += come_and_go(LIFETIMES / AT_ONCE);
    struct memory after = memory_now();
    long mapped = after.mapped - before.mapped, resident = after.resident - before.resident;
    printf("  %d thread lifetimes: mappings %+ld KiB, resident %+ld KiB\n", LIFETIMES / AT_ONCE / 2 * (1 + AT_ONCE), mapped / 1024,
           resident / 1024);
    CHECK_MSG(failed == 0, "%d threads' calls failed", failed);
    CHECK_MSG(mapped < MOST_MAPPED_GROWTH, "mappings grew by %ld KiB", mapped / 1024);
    CHECK_MSG(resident < MOST_RESIDENT_GROWTH, "resident memory grew by %ld KiB", resident / 1024);
    MAPI32_STATS end = stats_now();
    CHECK(end.live_roots == 0 && end.live_children == 0);
}

enum { BURST = 32 * 1024, BURST_SIZE = 1000 };

/* Roots of 1000 bytes (32 MiB in all), filled, then all freed. */
static void *burst(void *unused)
{
    (void)unused;
    static void *roots[BURST];
    for (int i = 0; i < BURST; i++) {
        if (MAPIAllocateBuffer(BURST_SIZE, &roots[i]) != S_OK)
            return NULL;
        memset(roots[i], 1, BURST_SIZE);
    }
    for (int i = 0; i < BURST; i++)
        MAPIFreeBuffer(roots[i]);
    return (void *)1;
}

static void an_exiting_thread_gives_back_what_it_freed(void)
{
    run_on_thread(build_and_free, NULL); /* the library's and libc's first costs */
    struct memory before = memory_now();
    CHECK(run_on_thread(burst, NULL) != NULL);
    struct memory after = memory_now();
    long resident = after.resident - before.resident;
    printf("  %d MiB allocated and freed on a thread that exited: resident %+ld KiB\n",
           BURST * BURST_SIZE >> 20, resident / 1024);
    CHECK_MSG(resident < MOST_RESIDENT_GROWTH, "resident memory grew by %ld KiB", resident / 1024);
}

static atomic_int stop_building, builders_under_way;

static void *build_until_stopped(void *unused)
{
    (void)unused;
    for (int lap = 0; !atomic_load(&stop_building); lap++) {
        if (build_and_free(NULL) == NULL)
            return NULL;
        if (lap == 0)
            atomic_fetch_add(&builders_under_way, 1);
    }
    return (void *)1;
}

static void *new_thread_in_child(void *unused)
{
    (void)unused;
    return build_and_free(NULL);
}

enum { FORKS = 100, BUILDERS = 2 };

/* In the child: the forking thread's tree and the exited thread's are freed,
 * a new thread allocates; exits 0 only if all of it held. */
static _Noreturn void use_after_fork(void *mine, void *orphaned)
{
    int held = tree_intact(mine) && tree_intact(orphaned);
    void *child = NULL;
    MAPIFreeBuffer(mine);
    held &= MAPIAllocateMore(8, mine, &child) == MAPI_E_INVALID_PARAMETER;
    held &= run_on_thread(allocate_then_free, orphaned) == orphaned;
    held &= run_on_thread(new_thread_in_child, NULL) != NULL;
    held &= build_and_free(NULL) != NULL;
    _exit(held ? 0 : 1);
}

static void fork_child_frees_trees_made_before_the_fork(void)
{
    pthread_t builders[BUILDERS];
    for (int i = 0; i < BUILDERS; i++)
        REQUIRE(pthread_create(&builders[i], NULL, build_until_stopped, NULL) == 0);
    /* The builders have their heaps: none of them adopts the exited
     * thread's below (its tree is then another running thread's, which the
     * cross-thread work is for). */
    while (atomic_load(&builders_under_way) < BUILDERS)
        sched_yield();
    void *mine = make_tree(NULL);
    void *orphaned = run_on_thread(make_tree, NULL);
    REQUIRE(mine != NULL && orphaned != NULL);
    int failed = 0;
    for (int i = 0; i < FORKS; i++) {
        pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0)
            use_after_fork(mine, orphaned);
        int status = 0;
        waitpid(pid, &status, 0);
        failed += !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    }
    atomic_store(&stop_building, 1);
    int builders_failed = 0;
    for (int i = 0; i < BUILDERS; i++) {
        void *result = NULL;
        pthread_join(builders[i], &result);
        builders_failed += result == NULL;
    }
    CHECK_MSG(failed == 0, "%d of %d children failed", failed, FORKS);
    CHECK(builders_failed == 0);
    CHECK(tree_intact(mine) && tree_intact(orphaned));
}

enum { LEFT_BEHIND = 4, HELD_ROOTS = 1000, HELD_SIZE = 3000 };
#define SMALL_STACK (128u * 1024u)

struct held {
    void *roots[HELD_ROOTS];
};

static atomic_int holders_ready, holders_go, takers_ready, takers_go;

static int start_small(pthread_t *thread, void *(*body)(void *), void *argument)
{
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setstacksize(&attributes, SMALL_STACK);
    int status = pthread_create(thread, &attributes, body, argument);
    pthread_attr_destroy(&attributes);
    return status;
}

/* Roots of HELD_SIZE bytes (3 MB in all), each with a child, held until
 * `go`, outside any call: idle at the fork. NULL if a call failed. */
static void *hold_trees(struct held *held, atomic_int *ready, atomic_int *go)
{
    for (int i = 0; i < HELD_ROOTS; i++) {
        void *child = NULL;
        if (MAPIAllocateBuffer(HELD_SIZE, &held->roots[i]) != S_OK ||
            MAPIAllocateMore(16, held->roots[i], &child) != S_OK)
            return NULL;
        memset(held->roots[i], 0x77, HELD_SIZE);
    }
    atomic_fetch_add(ready, 1);
    while (!atomic_load(go))
        sched_yield();
    return held;
}

static void *hold_until_the_fork_is_over(void *held)
{
    return hold_trees(held, &holders_ready, &holders_go);
}

static void *take_over(void *held)
{
    return hold_trees(held, &takers_ready, &takers_go);
}

/* In the child: the trees of the threads left behind are freed from here,
 * counted out at once, and as many again made by new threads fit in the
 * memory they held. Exits 0 only if all of it held. */
static _Noreturn void catch_up_in_child(struct held *left)
{
    for (int t = 0; t < LEFT_BEHIND; t++)
        for (int i = 0; i < HELD_ROOTS; i++)
            MAPIFreeBuffer(left[t].roots[i]);
    MAPI32_STATS freed = stats_now();
    int held = freed.live_roots == 0 && freed.live_children == 0 && freed.live_bytes == 0;
    if (!held)
        printf("  child: %llu roots, %llu children, %llu bytes still live after the frees\n",
               (unsigned long long)freed.live_roots, (unsigned long long)freed.live_children,
               (unsigned long long)freed.live_bytes);
    static struct held again[LEFT_BEHIND];
    pthread_t takers[LEFT_BEHIND];
    struct memory before = memory_now();
    int started = 0;
    while (started < LEFT_BEHIND && start_small(&takers[started], take_over, &again[started]) == 0)
        started++;
    while (atomic_load(&takers_ready) < started)
        sched_yield();
    struct memory after = memory_now();
    atomic_store(&takers_go, 1);
    for (int t = 0; t < started; t++) {
        void *result = NULL;
        pthread_join(takers[t], &result);
        held &= result != NULL;
    }
    /* The new threads' stacks, and less than a segment of the library's. */
    long grown = after.mapped - before.mapped, allowed = LEFT_BEHIND * (SMALL_STACK + 4096l) + (4l << 20);
    if (grown >= allowed)
        printf("  child: mappings grew by %ld KiB for trees the freed ones had room for\n", grown / 1024);
    held &= started == LEFT_BEHIND && grown < allowed;
    _exit(held ? 0 : 1);
}

/* Threads that hold trees but are in no call at the fork do not come along;
 * the child frees their trees, its counts say so at once, and its own new
 * threads reuse the memory (their heaps are the child's orphans). */
static void fork_child_catches_up_the_heaps_left_behind(void)
{
    static struct held left[LEFT_BEHIND];
    pthread_t holders[LEFT_BEHIND];
    for (int t = 0; t < LEFT_BEHIND; t++)
        REQUIRE(start_small(&holders[t], hold_until_the_fork_is_over, &left[t]) == 0);
    while (atomic_load(&holders_ready) < LEFT_BEHIND)
        sched_yield();
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0)
        catch_up_in_child(left);
    int status = 0;
    waitpid(pid, &status, 0);
    atomic_store(&holders_go, 1);
    for (int t = 0; t < LEFT_BEHIND; t++) {
        void *result = NULL;
        pthread_join(holders[t], &result);
        CHECK(result == &left[t]);
    }
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child failed (wait status %#x)", status);
    for (int t = 0; t < LEFT_BEHIND; t++)
        for (int i = 0; i < HELD_ROOTS; i++)
            MAPIFreeBuffer(left[t].roots[i]);
    MAPI32_STATS end = stats_now();
    CHECK(end.live_roots == 0 && end.live_children == 0);
}

static const struct test_case tests[] = {
    FORKED(exited_threads_tree_stays_counted_until_a_later_thread_frees_it),
    FORKED(threads_coming_and_going_keep_memory_flat),
    FORKED(an_exiting_thread_gives_back_what_it_freed),
    FORKED(fork_child_frees_trees_made_before_the_fork),
    FORKED(fork_child_catches_up_the_heaps_left_behind),
};

int main(int argc, char **argv)
{
    return harness_main(tests, sizeof tests / sizeof tests[0], argc, argv);
}
