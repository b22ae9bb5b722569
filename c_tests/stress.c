/*
 * stress.c: bounded-time stress (issue 3). Each test runs 8 or more threads
 * against the library for a fixed time (2 s by default; --seconds N), checks
 * every result and every block's contents, and prints what it survived:
 *
 *   stress_cross_thread_frees     producers hand roots to other threads
 *                                 through a queue; consumers check and free
 *   stress_many_threads_one_root  threads add children to one root (and to
 *                                 each other's children) at once
 *   stress_more_racing_free       MAPIAllocateMore racing MAPIFreeBuffer on
 *                                 the same root, round after round
 *   stress_fork_storm             threads fork again and again while others
 *                                 allocate; each child allocates, frees the
 *                                 blocks made before the fork, and exits at once
 *
 * After each test the process holds exactly the C blocks it held before
 * (count_malloc.h); under ASan, LeakSanitizer checks at exit instead, and
 * the fork storm is skipped (GCC 12's libasan has no fork handlers, so a
 * child can inherit its allocator lock held and hang).
 *
 * Run: ./stress [--seconds N] [--list] [test-name ...]
 */
#define _GNU_SOURCE

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mapix.h"

/* A test runs for --seconds, plus set-up and valgrind's slowness. */
#define HARNESS_TIMEOUT_SECONDS 300
#include "harness.h"
#include "crew.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#else
#define UNDER_ASAN 0
#include "count_malloc.h"
#endif

#define THREADS 8

static double seconds = 2.0;

static char sentinel_target;
#define SENTINEL ((void *)&sentinel_target)

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

static double now_seconds(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

/* Live C blocks but the registry's own nodes, whose number follows where
 * blocks lie (see count_malloc.h). */
static long c_blocks(void)
{
#if UNDER_ASAN
    return 0;
#else
    return live_client_blocks();
#endif
}

/* The C blocks held now equal `baseline`: nothing leaked, nothing lost. */
#define CHECK_BLOCKS_RETURNED(baseline)                                                            \
    CHECK_MSG(UNDER_ASAN || c_blocks() == (baseline), "%+ld C blocks after the test",             \
              c_blocks() - (baseline))

static unsigned char pattern(unsigned seed, size_t index)
{
    uint32_t mixed = seed * 0x9E3779B1u + (uint32_t)index * 0x85EBCA77u;
    return (unsigned char)(mixed ^ (mixed >> 15));
}

static void fill(void *block, size_t size, unsigned seed)
{
    unsigned char *bytes = block;
    for (size_t i = 0; i < size; i++)
        bytes[i] = pattern(seed, i);
}

static int holds(const void *block, size_t size, unsigned seed)
{
    const unsigned char *bytes = block;
    for (size_t i = 0; i < size; i++) {
        if (bytes[i] != pattern(seed, i))
            return 0;
    }
    return 1;
}

static void *new_root(ULONG size)
{
    void *out = SENTINEL;
    SCODE status = MAPIAllocateBuffer(size, &out);
    REQUIRE_MSG(status == S_OK && out != NULL && out != SENTINEL, "root: status 0x%08x", (unsigned)status);
    return out;
}

static void *new_child(ULONG size, void *parent)
{
    void *out = SENTINEL;
    SCODE status = MAPIAllocateMore(size, parent, &out);
    REQUIRE_MSG(status == S_OK && out != NULL && out != SENTINEL, "child: status 0x%08x", (unsigned)status);
    return out;
}

/* A small tree whose root records its own blocks, so another thread (or a
 * forked child) can check it knowing only the root. */
#define TREE_BLOCKS 6

struct tree_root {
    unsigned seed;
    void *blocks[TREE_BLOCKS]; /* children; blocks[k] hangs off blocks[k / 2] */
};

static ULONG tree_child_size(unsigned seed, unsigned k)
{
    return (seed + 29u * k) % 160u;
}

static struct tree_root *build_tree(unsigned seed)
{
    struct tree_root *root = new_root(sizeof *root);
    root->seed = seed;
    for (unsigned k = 0; k < TREE_BLOCKS; k++) {
        void *parent = k == 0 ? (void *)root : root->blocks[k / 2];
        root->blocks[k] = new_child(tree_child_size(seed, k), parent);
        fill(root->blocks[k], tree_child_size(seed, k), seed + k);
    }
    return root;
}

static int tree_intact(const struct tree_root *root)
{
    for (unsigned k = 0; k < TREE_BLOCKS; k++) {
        if (!holds(root->blocks[k], tree_child_size(root->seed, k), root->seed + k))
            return 0;
    }
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Cross-thread frees through a queue                                        */
/* ------------------------------------------------------------------------ */

#define QUEUE_SLOTS 64

struct queue {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    struct tree_root *slots[QUEUE_SLOTS];
    unsigned long pushed, popped;
    unsigned producers_done;
    double deadline;
    atomic_uint damaged;
};

static void queue_push(struct queue *queue, struct tree_root *root)
{
    pthread_mutex_lock(&queue->lock);
    while (queue->pushed - queue->popped == QUEUE_SLOTS)
        pthread_cond_wait(&queue->changed, &queue->lock);
    queue->slots[queue->pushed++ % QUEUE_SLOTS] = root;
    pthread_cond_broadcast(&queue->changed);
    pthread_mutex_unlock(&queue->lock);
}

static struct tree_root *queue_pop(struct queue *queue)
{
    struct tree_root *root = NULL;
    pthread_mutex_lock(&queue->lock);
    while (queue->pushed == queue->popped && queue->producers_done < THREADS / 2)
        pthread_cond_wait(&queue->changed, &queue->lock);
    if (queue->pushed != queue->popped)
        root = queue->slots[queue->popped++ % QUEUE_SLOTS];
    pthread_cond_broadcast(&queue->changed);
    pthread_mutex_unlock(&queue->lock);
    return root;
}

static void handoff_worker(unsigned index, void *shared)
{
    struct queue *queue = shared;
    if (index < THREADS / 2) {
        for (unsigned n = 0; now_seconds() < queue->deadline; n++)
            queue_push(queue, build_tree(index << 24 | n));
        pthread_mutex_lock(&queue->lock);
        queue->producers_done++;
        pthread_cond_broadcast(&queue->changed);
        pthread_mutex_unlock(&queue->lock);
        return;
    }
    struct tree_root *root;
    while ((root = queue_pop(queue)) != NULL) {
        if (!tree_intact(root))
            atomic_fetch_add(&queue->damaged, 1);
        CHECK(MAPIFreeBuffer(root) == 0);
    }
}

static void stress_cross_thread_frees(void)
{
    static struct queue queue = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, { 0 }, 0, 0, 0, 0, 0 };
    long baseline = c_blocks();
    queue.deadline = now_seconds() + seconds;
    run_crew(THREADS, handoff_worker, &queue);
    CHECK_MSG(atomic_load(&queue.damaged) == 0, "%u trees arrived damaged", atomic_load(&queue.damaged));
    CHECK(queue.pushed == queue.popped);
    CHECK_BLOCKS_RETURNED(baseline);
    printf("  %u threads: %lu trees of %u blocks built on one thread, freed on another\n", THREADS, queue.popped,
           TREE_BLOCKS + 1);
}

/* ------------------------------------------------------------------------ */
/* Many threads on one root                                                  */
/* ------------------------------------------------------------------------ */

#define ONE_ROOT_CHILDREN 400

struct one_root {
    void *root;
    void *children[THREADS][ONE_ROOT_CHILDREN];
    unsigned round;
};

static ULONG one_root_size(unsigned i)
{
    return 1u + i % 97u;
}

static void one_root_worker(unsigned index, void *shared)
{
    struct one_root *test = shared;
    for (unsigned i = 0; i < ONE_ROOT_CHILDREN; i++) {
        /* Every third child hangs off one of this thread's earlier children. */
        void *parent = i % 3 == 2 ? test->children[index][i / 2] : test->root;
        void *child = new_child(one_root_size(i), parent);
        fill(child, one_root_size(i), test->round << 20 | index << 12 | i);
        test->children[index][i] = child;
    }
}

static void stress_many_threads_one_root(void)
{
    static struct one_root test;
    long baseline = c_blocks();
    double deadline = now_seconds() + seconds;
    unsigned long children = 0;
    for (test.round = 0; now_seconds() < deadline; test.round++) {
        test.root = new_root(64);
        run_crew(THREADS, one_root_worker, &test);
        size_t damaged = 0;
        for (unsigned t = 0; t < THREADS; t++) {
            for (unsigned i = 0; i < ONE_ROOT_CHILDREN; i++)
                damaged += !holds(test.children[t][i], one_root_size(i), test.round << 20 | t << 12 | i);
        }
        CHECK_MSG(damaged == 0, "round %u: %zu children lost their contents", test.round, damaged);
        CHECK(MAPIFreeBuffer(test.root) == 0);
        /* One free released every child of every thread. */
        CHECK_BLOCKS_RETURNED(baseline);
        children += THREADS * ONE_ROOT_CHILDREN;
        if (atomic_load(&harness_failed_checks))
            break;
    }
    printf("  %u threads: %u rounds, %lu children added to one root at once\n", THREADS, test.round, children);
}

/* ------------------------------------------------------------------------ */
/* MAPIAllocateMore racing MAPIFreeBuffer                                    */
/* ------------------------------------------------------------------------ */

#define RACE_SEEDS 8
/* Adders stop after this many calls: a child added ahead of the free's walk
 * lengthens it, so endless adders could hold it up (README, known limit). */
#define RACE_MAX_CALLS 1500

struct race {
    void *root;
    void *seeds[RACE_SEEDS];
    unsigned free_after;
    atomic_uint calls, linked, refused, bad;
    atomic_int freed;
};

static void race_worker(unsigned index, void *shared)
{
    struct race *race = shared;
    if (index == 0) {
        while (atomic_load(&race->calls) < race->free_after)
            sched_yield();
        CHECK(MAPIFreeBuffer(race->root) == 0);
        atomic_store(&race->freed, 1);
        return;
    }
    void *own = NULL;
    for (unsigned n = 0; n < RACE_MAX_CALLS && !atomic_load(&race->freed); n++) {
        void *parent = n % 3 == 0 ? race->root : n % 3 == 1 || own == NULL ? race->seeds[(n + index) % RACE_SEEDS] : own;
        void *out = SENTINEL;
        SCODE status = MAPIAllocateMore(8 + n % 64, parent, &out);
        if (status == S_OK && out != NULL && out != SENTINEL) {
            atomic_fetch_add(&race->linked, 1);
            own = out; /* never written: the free may release it at any moment */
        } else if (status == MAPI_E_INVALID_PARAMETER && out == NULL) {
            atomic_fetch_add(&race->refused, 1);
        } else {
            atomic_fetch_add(&race->bad, 1);
        }
        atomic_fetch_add(&race->calls, 1);
    }
    while (!atomic_load(&race->freed))
        sched_yield();
    /* The free has returned: no block of the tree takes a child now. */
    void *out = SENTINEL;
    CHECK(MAPIAllocateMore(8, race->root, &out) == MAPI_E_INVALID_PARAMETER && out == NULL);
    out = SENTINEL;
    CHECK(MAPIAllocateMore(8, race->seeds[index % RACE_SEEDS], &out) == MAPI_E_INVALID_PARAMETER && out == NULL);
}

static void stress_more_racing_free(void)
{
    static struct race race;
    long baseline = c_blocks();
    double deadline = now_seconds() + seconds;
    unsigned long rounds = 0, linked = 0, refused = 0;
    for (; now_seconds() < deadline && !atomic_load(&harness_failed_checks); rounds++) {
        race.root = new_root(64);
        for (unsigned i = 0; i < RACE_SEEDS; i++)
            race.seeds[i] = new_child(32, i == 0 ? race.root : race.seeds[i - 1]);
        race.free_after = (unsigned)(rounds * 53 % 600);
        atomic_store(&race.calls, 0);
        atomic_store(&race.linked, 0);
        atomic_store(&race.refused, 0);
        atomic_store(&race.bad, 0);
        atomic_store(&race.freed, 0);
        run_crew(THREADS, race_worker, &race);
        CHECK_MSG(atomic_load(&race.bad) == 0, "round %lu: %u calls neither S_OK nor INVALID_PARAMETER with NULL",
                  rounds, atomic_load(&race.bad));
        CHECK_MSG(atomic_load(&race.linked) >= race.free_after, "round %lu: %u linked before the free, expected %u",
                  rounds, atomic_load(&race.linked), race.free_after);
        /* Every linked child went with the root; no refused call kept a block. */
        CHECK_BLOCKS_RETURNED(baseline);
        linked += atomic_load(&race.linked);
        refused += atomic_load(&race.refused);
    }
    printf("  %u threads: %lu rounds; %lu racing children linked and freed with their root, %lu calls refused "
           "after the free\n", THREADS, rounds, linked, refused);
}

/* ------------------------------------------------------------------------ */
/* fork() storms                                                             */
/* ------------------------------------------------------------------------ */

#define HAMMERS 8
#define FORKERS 2
#define PRE_FORK_TREES 16
/* A child must be done this fast (it has nothing to wait for); under
 * valgrind its exit includes a leak scan of everything it inherited... */
#define CHILD_PROMPT_SECONDS (under_valgrind() ? 10.0 : 2.0)
/* ...and is killed by its alarm if it hangs (a lock left held). */
#define CHILD_TIMEOUT_SECONDS 30

/* Valgrind preloads its own malloc. */
static int under_valgrind(void)
{
    const char *preload = getenv("LD_PRELOAD");
    return preload != NULL && strstr(preload, "vgpreload") != NULL;
}

struct storm {
    struct tree_root *pre_fork[PRE_FORK_TREES];
    double deadline;
    atomic_int stop;
    atomic_ulong laps, forks, slow, failed;
    _Atomic double slowest;
};

static void hammer(unsigned index, struct storm *storm)
{
    for (unsigned lap = 0; !atomic_load(&storm->stop); lap++) {
        struct tree_root *root = build_tree(index << 24 | lap);
        if (!tree_intact(root))
            atomic_fetch_add(&storm->failed, 1);
        MAPIFreeBuffer(root);
        atomic_fetch_add(&storm->laps, 1);
    }
}

/* In the child: the library works at once, blocks from before the fork
 * included. Exits 0 only if all of it held. */
static _Noreturn void child_after_fork(struct storm *storm, unsigned n)
{
    alarm(CHILD_TIMEOUT_SECONDS);
    int ok = 1;
    struct tree_root *fresh = build_tree(0xC0000000u | n);
    ok &= tree_intact(fresh);
    for (unsigned i = 0; i < PRE_FORK_TREES; i++) {
        struct tree_root *old = storm->pre_fork[i];
        ok &= tree_intact(old);
        void *out = NULL;
        ok &= MAPIAllocateMore(16, old->blocks[TREE_BLOCKS - 1], &out) == S_OK && out != NULL;
        void *first_child = old->blocks[0]; /* the root's memory goes with the free */
        ok &= MAPIFreeBuffer(old) == 0;
        out = SENTINEL;
        ok &= MAPIAllocateMore(16, first_child, &out) == MAPI_E_INVALID_PARAMETER && out == NULL;
    }
    ok &= MAPIFreeBuffer(fresh) == 0;
    _exit(ok ? 0 : 1);
}

static void forker(unsigned index, struct storm *storm)
{
    for (unsigned n = index; now_seconds() < storm->deadline; n += FORKERS) {
        double started = now_seconds();
        pid_t pid = fork();
        if (pid == 0)
            child_after_fork(storm, n);
        if (!CHECK(pid > 0))
            return;
        int status = 0;
        while (waitpid(pid, &status, 0) < 0) {
        }
        double took = now_seconds() - started;
        atomic_fetch_add(&storm->forks, 1);
        if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
            atomic_fetch_add(&storm->failed, 1);
            printf("  fork %u: child wait status 0x%x\n", n, (unsigned)status);
        }
        if (took > CHILD_PROMPT_SECONDS)
            atomic_fetch_add(&storm->slow, 1);
        double slowest = atomic_load(&storm->slowest);
        while (took > slowest && !atomic_compare_exchange_weak(&storm->slowest, &slowest, took)) {
        }
    }
}

static void storm_worker(unsigned index, void *shared)
{
    struct storm *storm = shared;
    if (index < FORKERS)
        forker(index, storm);
    else
        hammer(index, storm);
}

static void stress_fork_storm(void)
{
    if (UNDER_ASAN)
        SKIP_TEST("GCC 12's libasan has no fork handlers: a child can inherit its allocator lock held");
    static struct storm storm;
    long baseline = c_blocks();
    for (unsigned i = 0; i < PRE_FORK_TREES; i++)
        storm.pre_fork[i] = build_tree(0xB0000000u | i);
    storm.deadline = now_seconds() + seconds;
    struct crew crew;
    crew_start(&crew, FORKERS + HAMMERS, storm_worker, &storm);
    for (unsigned i = 0; i < FORKERS; i++)
        pthread_join(crew.threads[i], NULL);
    atomic_store(&storm.stop, 1);
    for (unsigned i = FORKERS; i < crew.count; i++)
        pthread_join(crew.threads[i], NULL);
    CHECK_MSG(atomic_load(&storm.failed) == 0, "%lu forked children or trees failed", atomic_load(&storm.failed));
    CHECK_MSG(atomic_load(&storm.slow) == 0, "%lu children took over %.0f s", atomic_load(&storm.slow),
              CHILD_PROMPT_SECONDS);
    CHECK(atomic_load(&storm.forks) > 0);
    for (unsigned i = 0; i < PRE_FORK_TREES; i++) {
        CHECK(tree_intact(storm.pre_fork[i])); /* the children freed their copies only */
        MAPIFreeBuffer(storm.pre_fork[i]);
    }
    CHECK_BLOCKS_RETURNED(baseline);
    printf("  %u hammering threads, %u forking: %lu forks, each child used the library and freed %u pre-fork "
           "trees (slowest child %.0f ms); %lu trees hammered meanwhile\n",
           HAMMERS, FORKERS, atomic_load(&storm.forks), PRE_FORK_TREES, atomic_load(&storm.slowest) * 1e3,
           atomic_load(&storm.laps));
}

/* ------------------------------------------------------------------------ */

static const struct test_case tests[] = {
    FORKED(stress_cross_thread_frees),
    FORKED(stress_many_threads_one_root),
    FORKED(stress_more_racing_free),
    FORKED(stress_fork_storm),
};

int main(int argc, char **argv)
{
    if (argc > 2 && strcmp(argv[1], "--seconds") == 0) {
        seconds = atof(argv[2]);
        argv[2] = argv[0];
        argc -= 2;
        argv += 2;
    }
    warm_up_library();
    return harness_main(tests, sizeof tests / sizeof tests[0], argc, argv);
}
