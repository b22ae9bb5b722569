/*
 * dlclose_cycles.c: defect 6 — dlopen, use, dlclose, again and again.
 *
 * SPEC §3: dlclose of the library releases its own bookkeeping. A plugin
 * host or a scripting language may load libmapi32, use it from a few
 * threads, and unload it, many times over; whatever the library kept for
 * those threads (their heaps' records) must go with it, or the process grows
 * by that much on every cycle.
 *
 * After WARM_UP_CYCLES (glibc's own caches: thread stacks, the loader's
 * lists), CYCLES more: load, THREADS threads each build and free trees, join,
 * check that nothing is live, unload. The C heap in use (mallinfo2) must
 * grow by less than MOST_GROWTH over all of them: a few hundred bytes kept
 * per thread per cycle cross it several times over. So must the process's
 * mappings (/proc/self/statm), by MOST_MAPPED_GROWTH: memory the library
 * maps itself (the v3 registry's heaps and segments) must go too.
 *
 * Usage: dlclose_cycles [--list] [test-name ...]
 */
#define _GNU_SOURCE

#define HARNESS_TIMEOUT_SECONDS 30
#include "harness.h"

#include <malloc.h>

#include "load_mapi.h"

enum { CYCLES = 300, WARM_UP_CYCLES = 20, THREADS = 4, TREES = 64 };
/* Over 1,200 thread-cycles: 13 bytes each. Without MAPI calls the same
 * cycles grow the heap by 0 bytes; keeping a heap record per thread, 500 KiB. */
#define MOST_GROWTH (16u * 1024u)
/* Less than two v3 segments over all the cycles; keeping each cycle's heaps
 * and segments mapped, over 16 MiB a cycle. */
#define MOST_MAPPED_GROWTH (8l * 1024 * 1024)

static struct mapi mapi;
static atomic_long failed_calls;
/* All the threads of a cycle hold a tree at once, so each has a heap. */
static pthread_barrier_t all_hold_a_tree;

static void *build_and_free_trees(void *unused)
{
    (void)unused;
    void *first = NULL;
    if (mapi.allocate(48, &first) != S_OK)
        atomic_fetch_add(&failed_calls, 1);
    pthread_barrier_wait(&all_hold_a_tree);
    mapi.free_buffer(first);
    for (int i = 0; i < TREES; i++) {
        void *root = NULL, *child = NULL;
        if (mapi.allocate(48, &root) != S_OK || mapi.allocate_more(48, root, &child) != S_OK)
            atomic_fetch_add(&failed_calls, 1);
        mapi.free_buffer(root);
    }
    return NULL;
}

/* Bytes the process has mapped, from /proc/self/statm; -1 if unreadable. */
static long mapped_bytes(void)
{
    FILE *statm = fopen("/proc/self/statm", "r");
    long pages = -1;
    if (statm != NULL) {
        if (fscanf(statm, "%ld", &pages) != 1)
            pages = -1;
        fclose(statm);
    }
    return pages < 0 ? -1 : pages * sysconf(_SC_PAGESIZE);
}

static size_t heap_in_use(void)
{
    struct mallinfo2 info = mallinfo2();
    return info.uordblks + info.hblkhd;
}

/* Loads, uses from THREADS threads, unloads; says whether it all worked. */
static int one_cycle(void)
{
    if (load_mapi(&mapi) != 0) {
        printf("  loading %s: %s\n", MAPI32_LIBRARY, dlerror());
        return 0;
    }
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++) {
        if (pthread_create(&threads[i], NULL, build_and_free_trees, NULL) != 0)
            return 0;
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(threads[i], NULL);
    MAPI32_STATS stats;
    memset(&stats, 0, sizeof stats);
    stats.cbSize = sizeof stats;
    int clean = mapi.stats(&stats) == S_OK && stats.live_roots == 0 && stats.live_children == 0;
    return dlclose(mapi.handle) == 0 && clean;
}

static void dlclose_cycles_keep_nothing(void)
{
    REQUIRE(pthread_barrier_init(&all_hold_a_tree, NULL, THREADS) == 0);
    for (int i = 0; i < WARM_UP_CYCLES; i++)
        REQUIRE(one_cycle());
    size_t before = heap_in_use();
    long mapped_before = mapped_bytes();
    for (int i = 0; i < CYCLES; i++)
        REQUIRE(one_cycle());
    long growth = (long)heap_in_use() - (long)before;
    long mapped_growth = mapped_bytes() - mapped_before;
    /* Whether dlclose really unmapped it (informative: staying loaded for
     * good, RTLD_NODELETE-like, would be a way to keep nothing too). */
    void *still = dlopen(MAPI32_LIBRARY, RTLD_NOW | RTLD_NOLOAD);
    printf("  %d cycles of %d threads: C heap in use %+ld bytes (%ld per cycle); library %s after dlclose\n", CYCLES,
           THREADS, growth, growth / CYCLES, still != NULL ? "still loaded" : "unloaded");
    printf("  mappings %+ld KiB\n", mapped_growth / 1024);
    if (still != NULL)
        dlclose(still);
    CHECK_MSG(atomic_load(&failed_calls) == 0, "%ld calls failed", atomic_load(&failed_calls));
    CHECK_MSG(growth < (long)MOST_GROWTH, "the C heap grew by %ld bytes over %d cycles", growth, CYCLES);
    CHECK_MSG(mapped_before >= 0, "/proc/self/statm unreadable");
    CHECK_MSG(mapped_growth < MOST_MAPPED_GROWTH, "the mappings grew by %ld KiB over %d cycles", mapped_growth / 1024,
              CYCLES);
}

static const struct test_case tests[] = {
    FORKED(dlclose_cycles_keep_nothing),
};

int main(int argc, char **argv)
{
    return harness_main(tests, sizeof tests / sizeof tests[0], argc, argv);
}
