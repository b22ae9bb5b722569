/*
 * extras.c: named checks for SPEC §4 (the mapi32_stats call) and §5
 * (MAPIReallocateBuffer), against the real library through mapix.h.
 *
 * The library's own counts are the measure here: each check compares
 * mapi32_stats before and after, so "nothing allocated" and "the tree was
 * freed" are exact. Misuse and out-of-memory cases run in a forked child.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include "mapix.h"

#define COUNT(array) (sizeof(array) / sizeof((array)[0]))

static MAPI32_STATS stats_now(void)
{
    MAPI32_STATS stats;
    memset(&stats, 0xA5, sizeof stats);
    stats.cbSize = sizeof stats;
    REQUIRE(mapi32_stats(&stats) == S_OK);
    REQUIRE(stats.cbSize == sizeof stats);
    return stats;
}

/* Live roots, children and bytes are back where `before` had them. */
static int nothing_live_since(MAPI32_STATS before)
{
    MAPI32_STATS now = stats_now();
    return now.live_roots == before.live_roots && now.live_children == before.live_children &&
           now.live_bytes == before.live_bytes;
}

static void *new_root(ULONG size)
{
    LPVOID block = NULL;
    REQUIRE(MAPIAllocateBuffer(size, &block) == S_OK && block != NULL);
    return block;
}

static void *new_child(ULONG size, void *parent)
{
    LPVOID block = NULL;
    REQUIRE(MAPIAllocateMore(size, parent, &block) == S_OK && block != NULL);
    return block;
}

static void *reallocated(void *old, ULONG size)
{
    LPVOID block = NULL;
    REQUIRE(MAPIReallocateBuffer(old, size, &block) == S_OK && block != NULL);
    return block;
}

static void fill(void *block, size_t size, unsigned char seed)
{
    unsigned char *bytes = block;
    for (size_t i = 0; i < size; i++)
        bytes[i] = (unsigned char)(seed + i);
}

static int holds(const void *block, size_t size, unsigned char seed)
{
    const unsigned char *bytes = block;
    for (size_t i = 0; i < size; i++)
        if (bytes[i] != (unsigned char)(seed + i))
            return 0;
    return 1;
}

/* A sentinel an out-pointer starts with, to prove it is written. */
static char sentinel_target;
#define SENTINEL ((void *)&sentinel_target)

/* ======================================================================== */
/* SPEC §4: statistics                                                       */
/* ======================================================================== */

static void stats_null_is_invalid(void)
{
    CHECK(mapi32_stats(NULL) == MAPI_E_INVALID_PARAMETER);
}

/* The layout C callers are compiled against; changing it breaks them. The
 * first version is 56 bytes: mapi32_stats refuses any smaller cbSize. */
static void stats_layout_is_pinned(void)
{
    CHECK(sizeof(MAPI32_STATS) == 56);
    CHECK(sizeof(((MAPI32_STATS *)0)->cbSize) == 4);
    CHECK(offsetof(MAPI32_STATS, cbSize) == 0);
    CHECK(offsetof(MAPI32_STATS, ulReserved) == 4);
    CHECK(offsetof(MAPI32_STATS, live_roots) == 8);
    CHECK(offsetof(MAPI32_STATS, live_children) == 16);
    CHECK(offsetof(MAPI32_STATS, live_bytes) == 24);
    CHECK(offsetof(MAPI32_STATS, peak_bytes) == 32);
    CHECK(offsetof(MAPI32_STATS, total_allocations) == 40);
    CHECK(offsetof(MAPI32_STATS, misuse_count) == 48);
}

/* mapi32_stats on a struct of cb_size bytes at the start of a buffer of
 * guard bytes; returns the status, and whether every byte from `untouched`
 * on still holds its guard. */
#define STATS_GUARD 0xA5
static SCODE stats_in_buffer(ULONG cb_size, size_t untouched, int *guard_intact, ULONG *cb_after)
{
    _Alignas(8) unsigned char buffer[256];
    memset(buffer, STATS_GUARD, sizeof buffer);
    memcpy(buffer, &cb_size, sizeof cb_size);
    SCODE status = mapi32_stats((MAPI32_STATS *)buffer);
    *guard_intact = 1;
    for (size_t i = untouched; i < sizeof buffer; i++)
        if (buffer[i] != STATS_GUARD)
            *guard_intact = 0;
    memcpy(cb_after, buffer, sizeof *cb_after);
    return status;
}

/* The first version's caller (56 bytes) gets all of it and nothing more. */
static void stats_never_write_past_cbsize(void)
{
    int intact;
    ULONG after;
    CHECK(stats_in_buffer(56, 56, &intact, &after) == S_OK && intact && after == 56);
}

/* A cbSize below the first version's size: refused, nothing written. */
static void stats_smaller_than_first_version_is_refused(void)
{
    const ULONG sizes[] = {0, 8, 48, 55};
    for (size_t i = 0; i < COUNT(sizes); i++) {
        int intact;
        ULONG after;
        CHECK_MSG(stats_in_buffer(sizes[i], sizeof sizes[i], &intact, &after) == MAPI_E_INVALID_PARAMETER && intact &&
                      after == sizes[i],
                  "cbSize %lu", (unsigned long)sizes[i]);
    }
}

/* A caller built against a later, larger struct: this library fills what it
 * has, leaves the rest alone and says in cbSize how much it filled. */
static void stats_larger_caller_learns_what_was_filled(void)
{
    const ULONG sizes[] = {60, 64, 200};
    for (size_t i = 0; i < COUNT(sizes); i++) {
        int intact;
        ULONG after;
        CHECK_MSG(stats_in_buffer(sizes[i], 56, &intact, &after) == S_OK && intact && after == 56, "cbSize %lu",
                  (unsigned long)sizes[i]);
    }
}

static void stats_count_a_tree(void)
{
    MAPI32_STATS before = stats_now();
    void *root = new_root(100);
    void *child = new_child(20, root);
    new_child(3, child);
    MAPI32_STATS during = stats_now();
    CHECK(during.live_roots == before.live_roots + 1);
    CHECK(during.live_children == before.live_children + 2);
    CHECK(during.live_bytes == before.live_bytes + 123);
    CHECK(during.total_allocations == before.total_allocations + 3);
    CHECK(during.peak_bytes >= during.live_bytes);
    MAPIFreeBuffer(root);
    MAPI32_STATS after = stats_now();
    CHECK(nothing_live_since(before));
    CHECK(after.total_allocations == during.total_allocations);
    CHECK(after.peak_bytes >= during.live_bytes);
}

static void stats_count_misuse(void)
{
    int local = 0;
    LPVOID out = SENTINEL;
    void *root = new_root(16);
    void *child = new_child(16, root);
    MAPI32_STATS before = stats_now();
    MAPIFreeBuffer(NULL); /* allowed: not misuse */
    MAPIFreeBuffer(child);
    MAPIFreeBuffer(&local);
    MAPIAllocateMore(8, &local, &out);
    MAPIAllocateBuffer(8, NULL);
    MAPIReallocateBuffer((char *)root + 16, 8, &out);
    MAPIFreeBuffer(root);
    MAPIFreeBuffer(root); /* a double free, with nothing allocated since */
    CHECK_MSG(stats_now().misuse_count == before.misuse_count + 6, "misuse_count went from %llu to %llu",
              (unsigned long long)before.misuse_count, (unsigned long long)stats_now().misuse_count);
}

/* ======================================================================== */
/* SPEC §5: MAPIReallocateBuffer                                             */
/* ======================================================================== */

static void realloc_null_acts_as_allocate(void)
{
    MAPI32_STATS before = stats_now();
    void *root = reallocated(NULL, 40);
    fill(root, 40, 1);
    CHECK(stats_now().live_roots == before.live_roots + 1);
    void *child = new_child(8, root); /* it is a root: it can be a parent */
    CHECK(child != NULL);
    MAPIFreeBuffer(root);
    CHECK(nothing_live_since(before));
}

static void realloc_null_out_is_invalid(void)
{
    void *root = new_root(8);
    MAPI32_STATS before = stats_now();
    CHECK(MAPIReallocateBuffer(root, 16, NULL) == MAPI_E_INVALID_PARAMETER);
    CHECK(MAPIReallocateBuffer(NULL, 16, NULL) == MAPI_E_INVALID_PARAMETER);
    CHECK(stats_now().total_allocations == before.total_allocations);
    MAPIFreeBuffer(root);
}

/* Growing and shrinking both keep min(old, new) bytes, aligned as ever. */
static void realloc_copies_and_aligns(void)
{
    static const ULONG sizes[] = { 0, 1, 15, 16, 17, 100, 4096, 70000, 3 };
    MAPI32_STATS before = stats_now();
    void *block = new_root(7);
    ULONG size = 7;
    fill(block, size, 9);
    for (size_t i = 0; i < COUNT(sizes); i++) {
        block = reallocated(block, sizes[i]);
        size_t kept = size < sizes[i] ? size : sizes[i];
        CHECK_MSG(holds(block, kept, 9), "%u -> %u bytes", (unsigned)size, (unsigned)sizes[i]);
        CHECK(((uintptr_t)block % (sizeof(void *) == 8 ? 16 : 8)) == 0);
        fill(block, sizes[i], 9);
        size = sizes[i];
    }
    CHECK(stats_now().live_roots == before.live_roots + 1);
    MAPIFreeBuffer(block);
    CHECK(nothing_live_since(before));
}

static void realloc_root_takes_over_children(void)
{
    MAPI32_STATS before = stats_now();
    void *root = new_root(16);
    void *child = new_child(32, root);
    fill(child, 32, 5);
    void *grandchild = new_child(8, child);
    void *moved = reallocated(root, 64);
    CHECK(holds(child, 32, 5));
    LPVOID out = SENTINEL;
    CHECK(MAPIAllocateMore(8, root, &out) == MAPI_E_INVALID_PARAMETER && out == NULL); /* old root gone */
    CHECK(new_child(8, grandchild) != NULL); /* the tree lives on */
    MAPI32_STATS during = stats_now();
    CHECK(during.live_roots == before.live_roots + 1);
    CHECK(during.live_children == before.live_children + 3);
    MAPIFreeBuffer(moved);
    CHECK(nothing_live_since(before)); /* the new root freed every child */
    out = SENTINEL;
    CHECK(MAPIAllocateMore(8, grandchild, &out) == MAPI_E_INVALID_PARAMETER && out == NULL);
}

static void realloc_child_stays_in_tree(void)
{
    MAPI32_STATS before = stats_now();
    void *root = new_root(16);
    void *child = new_child(24, root);
    fill(child, 24, 7);
    void *sibling = reallocated(child, 48);
    CHECK(sibling != child);
    CHECK(holds(sibling, 24, 7));
    CHECK(holds(child, 24, 7)); /* the old child is untouched and still live */
    CHECK(stats_now().live_children == before.live_children + 2);
    MAPIFreeBuffer(sibling); /* a child: ignored */
    CHECK(stats_now().live_children == before.live_children + 2);
    MAPIFreeBuffer(root);
    CHECK(nothing_live_since(before));
}

static void check_realloc_refused(void *pointer, const char *what)
{
    MAPI32_STATS before = stats_now();
    LPVOID out = SENTINEL;
    SCODE sc = MAPIReallocateBuffer(pointer, 4096, &out);
    CHECK_MSG(sc == MAPI_E_INVALID_PARAMETER, "%s: status 0x%08x", what, (unsigned)sc);
    CHECK_MSG(out == NULL, "%s: out-pointer %p", what, out);
    CHECK_MSG(stats_now().total_allocations == before.total_allocations, "%s: something was allocated", what);
}

static void realloc_unknown_is_invalid(void)
{
    static unsigned char static_block[64];
    unsigned char stack_block[64];
    unsigned char *heap_block = malloc(64);
    void *freed = new_root(32);
    void *live = new_root(32);
    MAPIFreeBuffer(freed);
    unsigned char *unmapped = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(unmapped != MAP_FAILED && heap_block != NULL);
    REQUIRE(munmap(unmapped, 4096) == 0);
    memset(static_block, 0x5A, sizeof static_block);
    memset(stack_block, 0x5A, sizeof stack_block);
    check_realloc_refused(freed, "a freed root");
    check_realloc_refused((char *)live + 16, "an interior pointer");
    check_realloc_refused(heap_block, "a malloc'd block");
    check_realloc_refused(stack_block, "a stack buffer");
    check_realloc_refused(static_block, "a static buffer");
    check_realloc_refused(unmapped + 16, "an unmapped address");
    CHECK(static_block[0] == 0x5A && stack_block[63] == 0x5A);
    free(heap_block);
    MAPIFreeBuffer(live);
}

/* Out of memory: the old block, its bytes and its tree stay as they were. */
/* SPEC §5 from any thread (§3: a root may be used on any thread): a root
 * reallocated by a thread that did not make it keeps its children, and
 * children other threads made on a root follow it through a reallocation. */
static void *run_on_thread(void *(*work)(void *), void *arg)
{
    pthread_t thread;
    void *result = NULL;
    REQUIRE(pthread_create(&thread, NULL, work, arg) == 0);
    REQUIRE(pthread_join(thread, &result) == 0);
    return result;
}

static void *reallocate_to_4000(void *root)
{
    LPVOID out = NULL;
    return MAPIReallocateBuffer(root, 4000, &out) == S_OK ? out : NULL;
}

static void *child_of(void *parent)
{
    LPVOID out = NULL;
    if (MAPIAllocateMore(40, parent, &out) != S_OK)
        return NULL;
    fill(out, 40, 0x3C);
    return out;
}

static void *free_on_thread(void *root)
{
    MAPIFreeBuffer(root);
    return NULL;
}

static void realloc_another_threads_root_takes_over_children(void)
{
    MAPI32_STATS before = stats_now();
    void *root = new_root(48);
    fill(root, 48, 7);
    void *child = new_child(32, root);
    fill(child, 32, 5);
    void *moved = run_on_thread(reallocate_to_4000, root);
    REQUIRE(moved != NULL);
    CHECK(holds(moved, 48, 7));
    CHECK(holds(child, 32, 5));
    LPVOID out = SENTINEL;
    CHECK(MAPIAllocateMore(8, root, &out) == MAPI_E_INVALID_PARAMETER && out == NULL); /* old root gone */
    void *grandchild = new_child(8, child);
    CHECK(new_child(8, moved) != NULL);
    MAPI32_STATS during = stats_now();
    CHECK(during.live_roots == before.live_roots + 1);
    CHECK(during.live_children == before.live_children + 3);
    run_on_thread(free_on_thread, moved); /* a third thread frees it all */
    CHECK(nothing_live_since(before));
    out = SENTINEL;
    CHECK(MAPIAllocateMore(8, grandchild, &out) == MAPI_E_INVALID_PARAMETER && out == NULL);
}

static void realloc_keeps_other_threads_children(void)
{
    MAPI32_STATS before = stats_now();
    void *root = new_root(16);
    void *guest = run_on_thread(child_of, root);          /* on the root */
    void *guest_too = run_on_thread(child_of, guest);     /* on that child */
    REQUIRE(guest != NULL && guest_too != NULL);
    void *moved = reallocated(root, 100);
    CHECK(holds(guest, 40, 0x3C) && holds(guest_too, 40, 0x3C));
    CHECK(stats_now().live_children == before.live_children + 2); /* swept by no one */
    void *grandchild = new_child(8, guest);
    CHECK(run_on_thread(child_of, guest_too) != NULL);
    MAPIFreeBuffer(moved);
    CHECK(nothing_live_since(before));
    LPVOID out = SENTINEL;
    CHECK(MAPIAllocateMore(8, grandchild, &out) == MAPI_E_INVALID_PARAMETER && out == NULL);
}

#define RACED_ROOTS 2000

struct realloc_race {
    void *roots[RACED_ROOTS];
    void *won[2][RACED_ROOTS];
    pthread_barrier_t start;
};

struct realloc_racer {
    struct realloc_race *race;
    unsigned side;
};

static void *realloc_every_root(void *arg)
{
    struct realloc_racer *racer = arg;
    pthread_barrier_wait(&racer->race->start);
    for (unsigned i = 0; i < RACED_ROOTS; i++) {
        LPVOID out = NULL;
        SCODE sc = MAPIReallocateBuffer(racer->race->roots[i], 64, &out);
        racer->race->won[racer->side][i] = sc == S_OK ? out : NULL;
        if (sc != S_OK && (sc != MAPI_E_INVALID_PARAMETER || out != NULL))
            racer->race->won[racer->side][i] = SENTINEL;
    }
    return NULL;
}

/* Two threads, neither the maker, reallocate the same roots at once: each
 * root is reallocated once, the loser is refused, nothing leaks (SPEC §3,
 * racing calls on one root). Registry v3 only: today's registry reallocates
 * in place where the block has room, handing both racers the same block,
 * and lets both win about 1% of the rest, leaking those trees. */
static void realloc_race_has_one_winner(void)
{
    static struct realloc_race race;
    MAPI32_STATS before = stats_now();
    for (unsigned i = 0; i < RACED_ROOTS; i++) {
        race.roots[i] = new_root(i % 100);
        if (i % 2)
            new_child(24, race.roots[i]);
    }
    REQUIRE(pthread_barrier_init(&race.start, NULL, 2) == 0);
    struct realloc_racer racers[2] = { { &race, 0 }, { &race, 1 } };
    pthread_t threads[2];
    for (unsigned side = 0; side < 2; side++)
        REQUIRE(pthread_create(&threads[side], NULL, realloc_every_root, &racers[side]) == 0);
    for (unsigned side = 0; side < 2; side++)
        REQUIRE(pthread_join(threads[side], NULL) == 0);
    pthread_barrier_destroy(&race.start);
    unsigned one_winner = 0, both = 0;
    for (unsigned i = 0; i < RACED_ROOTS; i++) {
        void *a = race.won[0][i], *b = race.won[1][i];
        one_winner += (a != NULL) != (b != NULL) && a != SENTINEL && b != SENTINEL;
        both += a != NULL && b != NULL;
        MAPIFreeBuffer(a != NULL ? a : b);
    }
    CHECK_MSG(one_winner == RACED_ROOTS, "%u of %u roots had exactly one winner, %u two", one_winner, RACED_ROOTS,
              both);
    MAPI32_STATS after = stats_now();
    CHECK_MSG(nothing_live_since(before), "roots %llu -> %llu, children %llu -> %llu, bytes %llu -> %llu",
              (unsigned long long)before.live_roots, (unsigned long long)after.live_roots,
              (unsigned long long)before.live_children, (unsigned long long)after.live_children,
              (unsigned long long)before.live_bytes, (unsigned long long)after.live_bytes);
}

static void realloc_oom_changes_nothing(void)
{
    void *root = new_root(64);
    fill(root, 64, 3);
    void *child = new_child(16, root);
    struct rlimit limit = { (rlim_t)512 << 20, (rlim_t)512 << 20 };
    MAPI32_STATS before = stats_now();
    REQUIRE(setrlimit(RLIMIT_AS, &limit) == 0);
    LPVOID out = SENTINEL;
    CHECK(MAPIReallocateBuffer(root, 0xFFFFFFF0u, &out) == MAPI_E_NOT_ENOUGH_MEMORY && out == NULL);
    out = SENTINEL;
    CHECK(MAPIReallocateBuffer(child, 0xFFFFFFF0u, &out) == MAPI_E_NOT_ENOUGH_MEMORY && out == NULL);
    MAPI32_STATS after = stats_now();
    CHECK(after.total_allocations == before.total_allocations);
    CHECK(after.live_roots == before.live_roots && after.live_children == before.live_children);
    CHECK(holds(root, 64, 3));
    CHECK(new_child(8, child) != NULL);
    MAPIFreeBuffer(root);
}

int main(int argc, char **argv)
{
    static const struct test_case tests[] = {
        FORKED(stats_null_is_invalid),
        FORKED(stats_layout_is_pinned),
        FORKED(stats_never_write_past_cbsize),
        FORKED(stats_smaller_than_first_version_is_refused),
        FORKED(stats_larger_caller_learns_what_was_filled),
        FORKED(stats_count_a_tree),
        FORKED(stats_count_misuse),
        FORKED(realloc_null_acts_as_allocate),
        FORKED(realloc_null_out_is_invalid),
        FORKED(realloc_copies_and_aligns),
        FORKED(realloc_root_takes_over_children),
        FORKED(realloc_child_stays_in_tree),
        FORKED(realloc_unknown_is_invalid),
        FORKED(realloc_oom_changes_nothing),
        FORKED(realloc_another_threads_root_takes_over_children),
        FORKED(realloc_keeps_other_threads_children),
        FORKED(realloc_race_has_one_winner),
    };
    return harness_main(tests, COUNT(tests), argc, argv);
}
