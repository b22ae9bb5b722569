/*
 * fault_sweep.c: fault injection (issue 3). Against a libmapi32 built with
 * the cargo feature `fault-injection`, which exports
 * mapi32_test_fail_allocation_after(), each test runs a realistic workload
 * again and again: the Nth time, the library's Nth request for memory fails
 * — pages from the OS for a thread's heap, a segment, or a span for a large
 * block (the library asks the C allocator for nothing) — for every N from 0
 * until the workload no longer reaches the failure. At every N:
 *
 *   - the failing call returns MAPI_E_NOT_ENOUGH_MEMORY with *lppBuffer NULL;
 *   - the library's live blocks are what they were before the call (nothing
 *     kept, nothing lost), and the tree it was adding to holds what it held;
 *   - a free still frees its whole tree;
 *   - misuse (a freed parent, a double free) costs no allocation;
 *   - the rest of the workload, retried call included, then works, and once
 *     everything is freed no block is left.
 *
 * The live blocks are mapi32_stats' counts, exact at any moment. The library
 * keeps pages it emptied, so a workload repeated in one heap would reach no
 * request after the first run: each run goes in a child process, on a
 * thread of its own, whose first call makes a heap from nothing. Under ASan
 * and valgrind (with a smaller workload, --small) the tools check every
 * access too.
 *
 * Run: ./fault_sweep [--small] [--list] [test-name ...]
 */
#define _GNU_SOURCE

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "mapix.h"

/* Valgrind runs a sweep in a few minutes; allow for it. */
#define HARNESS_TIMEOUT_SECONDS 600
#include "harness.h"
#include "crew.h"

#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

/* The library's live blocks, roots and children: exact at any moment. */
static long live_blocks(void)
{
    MAPI32_STATS stats = { .cbSize = sizeof stats };
    REQUIRE(mapi32_stats(&stats) == S_OK);
    return (long)(stats.live_roots + stats.live_children);
}

/* The test hook of src/fault_hook.rs (not in mapix.h: test builds only). */
ULONG mapi32_test_fail_allocation_after(ULONG successes);
#define NO_FAILURE 0xFFFFFFFFu

static char sentinel_target;
#define SENTINEL ((void *)&sentinel_target)

/* How many allocations are left before the armed failure, without changing it. */
static ULONG pending_failure(void)
{
    ULONG left = mapi32_test_fail_allocation_after(NO_FAILURE);
    mapi32_test_fail_allocation_after(left);
    return left;
}

/* ------------------------------------------------------------------------ */
/* The blocks a workload holds                                               */
/* ------------------------------------------------------------------------ */

#define MAX_BLOCKS 8192
#define MAX_TREES 1024

struct block {
    unsigned char *address;
    ULONG size;
    unsigned seed;
};

struct tree {
    unsigned first, count; /* its blocks in `blocks`, root first */
    int live;
};

/* What one run of a workload holds, and what the sweep saw. */
struct run {
    struct block blocks[MAX_BLOCKS];
    struct tree trees[MAX_TREES];
    unsigned block_count, tree_count;
    unsigned seed;
    /* Injected failures, by where they struck. */
    unsigned failed_blocks, failed_growths, failed_in_free, failed_in_misuse;
    int failure_reached;
};

struct figures {
    unsigned long runs, calls, failed_blocks, failed_growths, failed_in_free, failed_in_misuse;
};

/* In memory shared with the child processes that run v3's sweeps. */
static struct figures *figures;

static unsigned char pattern(unsigned seed, size_t index)
{
    uint32_t mixed = seed * 0x9E3779B1u + (uint32_t)index * 0x85EBCA77u;
    return (unsigned char)(mixed ^ (mixed >> 15));
}

static void fill(const struct block *block)
{
    for (size_t i = 0; i < block->size; i++)
        block->address[i] = pattern(block->seed, i);
}

static int intact(const struct block *block)
{
    for (size_t i = 0; i < block->size; i++) {
        if (block->address[i] != pattern(block->seed, i))
            return 0;
    }
    return 1;
}

static int tree_intact(const struct run *run, unsigned tree)
{
    const struct tree *t = &run->trees[tree];
    for (unsigned i = 0; i < t->count; i++) {
        if (!intact(&run->blocks[t->first + i]))
            return 0;
    }
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Calls, each checked                                                       */
/* ------------------------------------------------------------------------ */

/*
 * A root (tree < 0) or a child of block `parent` of `tree`. When the call
 * runs into the injected failure, check the refusal, then retry: the retry
 * must succeed, as the failure is spent. Children are appended to their tree
 * (trees are built one at a time, so a tree's blocks stay contiguous).
 */
static unsigned char *allocate(struct run *run, ULONG size, int tree, unsigned parent)
{
    REQUIRE(run->block_count < MAX_BLOCKS);
    void *parent_address = tree < 0 ? NULL : run->blocks[run->trees[tree].first + parent].address;
    for (int attempt = 0;; attempt++) {
        ULONG left = pending_failure();
        long before = live_blocks();
        void *out = SENTINEL;
        SCODE status = parent_address ? MAPIAllocateMore(size, parent_address, &out)
                                      : MAPIAllocateBuffer(size, &out);
        figures->calls++;
        if (status == S_OK) {
            REQUIRE_MSG(out != NULL && out != SENTINEL && ((uintptr_t)out & 15) == 0, "block %p", out);
            struct block *block = &run->blocks[run->block_count++];
            *block = (struct block){ out, size, run->seed++ };
            fill(block);
            if (tree < 0) {
                REQUIRE(run->tree_count < MAX_TREES);
                run->trees[run->tree_count++] = (struct tree){ run->block_count - 1, 1, 1 };
            } else {
                REQUIRE(run->trees[tree].first + run->trees[tree].count == run->block_count - 1);
                run->trees[tree].count++;
            }
            return block->address;
        }
        /* Refused: only the injected failure may cause that, once. */
        REQUIRE_MSG(attempt == 0, "the retry failed too: status 0x%08x", (unsigned)status);
        CHECK_MSG(status == MAPI_E_NOT_ENOUGH_MEMORY, "status 0x%08x", (unsigned)status);
        CHECK_MSG(out == NULL, "out-pointer left at %p", out);
        CHECK_MSG(live_blocks() == before, "a refused call changed the live blocks by %+ld", live_blocks() - before);
        CHECK_MSG(left != NO_FAILURE && pending_failure() == NO_FAILURE,
                  "refused with no failure armed (pending %u)", (unsigned)left);
        if (tree >= 0)
            CHECK_MSG(tree_intact(run, (unsigned)tree), "tree %d changed by a refused child", tree);
        /* The call's first request for memory, or a later one (a thread's
         * first call asks for its heap, then a segment). */
        if (left == 0)
            run->failed_blocks++;
        else
            run->failed_growths++;
        run->failure_reached = 1;
    }
}

/* Frees a tree; then none of its blocks takes a child, and a double free
 * and a freed parent leave the heap as it was. (MAPIAllocateMore allocates
 * its block before it looks the parent up, so a freed parent may spend the
 * armed failure: it is refused as a bad parent all the same.) */
static void free_tree(struct run *run, unsigned tree)
{
    struct tree *t = &run->trees[tree];
    CHECK_MSG(tree_intact(run, tree), "tree %u lost contents before its free", tree);
    ULONG left = pending_failure();
    long before = live_blocks();
    void *root = run->blocks[t->first].address;
    CHECK(MAPIFreeBuffer(root) == 0);
    figures->calls++;
    long after = live_blocks();
    t->live = 0;
    if (left != NO_FAILURE && pending_failure() == NO_FAILURE) {
        /* A free asks for no memory; should one ever, a refusal must be
         * harmless. */
        run->failed_in_free++;
        run->failure_reached = 1;
    }
    CHECK_MSG(after == before - (long)t->count, "freeing a tree of %u blocks changed the live blocks by %+ld",
              t->count, after - before);
    /* Nothing was allocated since the free, so no address is live again. */
    ULONG armed = pending_failure();
    for (unsigned i = 0; i < t->count; i++) {
        void *out = SENTINEL;
        SCODE status = MAPIAllocateMore(16, run->blocks[t->first + i].address, &out);
        figures->calls++;
        CHECK_MSG(status == MAPI_E_INVALID_PARAMETER && out == NULL,
                  "block %u of a freed tree: status 0x%08x, out %p", i, (unsigned)status, out);
    }
    CHECK(MAPIFreeBuffer(root) == 0);
    figures->calls++;
    CHECK_MSG(live_blocks() == after, "misuse after a free changed the live blocks by %+ld", live_blocks() - after);
    if (armed != NO_FAILURE && pending_failure() == NO_FAILURE) {
        run->failed_in_misuse++;
        run->failure_reached = 1;
    }
}

/* ------------------------------------------------------------------------ */
/* Workloads                                                                 */
/* ------------------------------------------------------------------------ */

static int small_workloads;

/*
 * What a message store does for GetProps/QueryRows: per row, an SPropValue
 * array, strings and binaries on it, a multi-valued property whose strings
 * hang off the array's child; every few rows a row with many properties
 * (a wide tree); older rows freed as it goes.
 */
static void message_store_workload(struct run *run)
{
    unsigned rows = small_workloads ? 8 : 40;
    unsigned oldest = 0;
    for (unsigned row = 0; row < rows; row++) {
        int tree = (int)run->tree_count;
        allocate(run, 24u * 8u, -1, 0);
        for (unsigned prop = 0; prop < 6; prop++)
            allocate(run, 8u + (row * 31u + prop * 17u) % 200u, tree, 0);
        unsigned multi = run->trees[tree].count;
        allocate(run, 4u * (ULONG)sizeof(void *), tree, 0);
        for (unsigned value = 0; value < 4; value++)
            allocate(run, 12u + value, tree, multi);
        allocate(run, 0, tree, 1);
        if (row % 5 == 4) {
            unsigned wide = small_workloads ? 600 : 240;
            for (unsigned prop = 0; prop < wide; prop++)
                allocate(run, prop % 40u, tree, prop % 3u);
        }
        if (row % 3 == 2)
            free_tree(run, oldest++);
    }
    while (oldest < run->tree_count)
        free_tree(run, oldest++);
}

/* Many small roots live at once, then freed in another order. */
static void many_roots_workload(struct run *run)
{
    unsigned roots = small_workloads ? 600 : MAX_TREES;
    for (unsigned i = 0; i < roots; i++) {
        int tree = (int)run->tree_count;
        allocate(run, i % 64u, -1, 0);
        if (i % 4 == 0)
            allocate(run, 32, tree, 0);
    }
    for (unsigned i = 0; i < run->tree_count; i += 2)
        free_tree(run, i);
    for (unsigned i = 1; i < run->tree_count; i += 2)
        free_tree(run, i);
}

/*
 * Big roots: message bodies of 64 KiB, each with a small property on it.
 * Each body takes a span of pages of its own, so the run asks for memory
 * more often than the others, whose blocks fit in a first segment.
 */
static void sparse_roots_workload(struct run *run)
{
    unsigned roots = small_workloads ? 12 : 40;
    for (unsigned i = 0; i < roots; i++) {
        int tree = (int)run->tree_count;
        allocate(run, 64u << 10, -1, 0);
        allocate(run, 16, tree, 0);
    }
    for (unsigned i = 0; i < run->tree_count; i++)
        free_tree(run, i);
}

typedef void (*workload_fn)(struct run *run);

/* One run with the failure armed after `successes` allocations; returns
 * whether it was reached. */
static int run_once(workload_fn workload, ULONG successes, unsigned n)
{
    static struct run run;
    memset(&run, 0, sizeof run);
    run.seed = n * 7919u;
    long baseline = live_blocks();
    mapi32_test_fail_allocation_after(successes);
    workload(&run);
    ULONG left = mapi32_test_fail_allocation_after(NO_FAILURE);
    int spent = successes != NO_FAILURE && left == NO_FAILURE;
    CHECK_MSG(run.failure_reached == spent,
              "N=%u: the failure was %s, but %s call saw it", n, spent ? "spent" : "not reached",
              run.failure_reached ? "a" : "no");
    for (unsigned i = 0; i < run.tree_count; i++)
        CHECK_MSG(!run.trees[i].live, "N=%u: workload left tree %u", n, i);
    long leaked = live_blocks() - baseline;
    CHECK_MSG(leaked == 0, "N=%u: %+ld blocks after everything was freed", n, leaked);
    figures->runs++;
    figures->failed_blocks += run.failed_blocks;
    figures->failed_growths += run.failed_growths;
    figures->failed_in_free += run.failed_in_free;
    figures->failed_in_misuse += run.failed_in_misuse;
    return run.failure_reached;
}

struct fresh_run {
    workload_fn workload;
    ULONG successes;
    unsigned n;
    int reached;
};

static void *fresh_run_thread(void *arg)
{
    struct fresh_run *run = arg;
    run->reached = run_once(run->workload, run->successes, run->n);
    return NULL;
}

/* run_once in a child process, on a new thread (the hook counts the calling
 * thread's requests), so that the run starts with no heap: exit status 0 if
 * the failure was reached, 1 if not, 2 if a check failed. */
static int run_with_failure_after(workload_fn workload, ULONG successes, unsigned n)
{
    fflush(NULL);
    pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        struct fresh_run run = { workload, successes, n, 0 };
        pthread_t thread;
        REQUIRE(pthread_create(&thread, NULL, fresh_run_thread, &run) == 0);
        REQUIRE(pthread_join(thread, NULL) == 0);
        fflush(NULL);
        _exit(atomic_load(&harness_failed_checks) != 0 ? 2 : run.reached ? 0 : 1);
    }
    int status;
    REQUIRE(waitpid(child, &status, 0) == child);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) <= 1, "N=%u: the run failed (wait status 0x%x)", n,
              (unsigned)status);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* Every N from 0 until a run no longer reaches the failure (and a few past
 * it), then one clean run. `later_requests`: some failure must strike a
 * call's later request for memory, not only its first. */
static void sweep(workload_fn workload, const char *name, int later_requests)
{
    struct figures start = *figures;
    unsigned n = 0, unreached = 0;
    for (; unreached < 8; n++) {
        if (run_with_failure_after(workload, n, n))
            unreached = 0;
        else
            unreached++;
        if (atomic_load(&harness_failed_checks) != 0) {
            printf("  first failure at N=%u\n", n);
            return;
        }
    }
    CHECK(!run_with_failure_after(workload, NO_FAILURE, n));
    printf("  %s: %u runs, N = 0..%u; failures injected: %lu into a call's first request, %lu into a later "
           "one, %lu into frees, %lu into refused parents; %lu library calls\n",
           name, n + 1, n - 1, figures->failed_blocks - start.failed_blocks,
           figures->failed_growths - start.failed_growths, figures->failed_in_free - start.failed_in_free,
           figures->failed_in_misuse - start.failed_in_misuse, figures->calls - start.calls);
    if (later_requests)
        CHECK_MSG(figures->failed_growths > start.failed_growths, "no failure ever struck a later request");
}

static void sweep_message_store_workload(void)
{
    sweep(message_store_workload, "message store", 0);
}

static void sweep_many_roots_workload(void)
{
    sweep(many_roots_workload, "many roots", 0);
}

static void sweep_sparse_roots_workload(void)
{
    sweep(sparse_roots_workload, "sparse roots", 1);
}

/* Without the hook the sweep proves nothing: make sure it bites. */
static void hook_makes_the_next_allocation_fail(void)
{
    void *out = SENTINEL;
    /* A block larger than a segment always asks the OS for pages. */
    const ULONG size = 16u << 20;
    CHECK(mapi32_test_fail_allocation_after(0) == NO_FAILURE);
    CHECK(MAPIAllocateBuffer(size, &out) == MAPI_E_NOT_ENOUGH_MEMORY && out == NULL);
    CHECK(pending_failure() == NO_FAILURE);
    CHECK(MAPIAllocateBuffer(size, &out) == S_OK && out != NULL);
    CHECK(mapi32_test_fail_allocation_after(5) == NO_FAILURE);
    CHECK(mapi32_test_fail_allocation_after(NO_FAILURE) == 5);
    MAPIFreeBuffer(out);
}

static const struct test_case tests[] = {
    FORKED(hook_makes_the_next_allocation_fail),
    FORKED(sweep_message_store_workload),
    FORKED(sweep_many_roots_workload),
    FORKED(sweep_sparse_roots_workload),
};

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--small") == 0) {
        small_workloads = 1;
        argv[1] = argv[0];
        argc--;
        argv++;
    }
    figures = mmap(NULL, sizeof *figures, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(figures != MAP_FAILED);
    /* No warm-up: its threads would leave heaps behind, with pages, for a
     * run's thread to adopt instead of asking for any. */
    return harness_main(tests, sizeof tests / sizeof tests[0], argc, argv);
}
