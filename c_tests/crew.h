/*
 * crew.h: threads for the C test drivers, and the warm-up that lets them
 * count C blocks exactly.
 *
 * run_crew(count, work, shared) runs work(0..count-1, shared) on `count`
 * threads at once and waits for all of them. warm_up_library() makes the
 * library's and glibc's lasting bookkeeping exist before a test takes its
 * baseline.
 *
 * Include after harness.h (for CHECK), with _GNU_SOURCE defined.
 */
#ifndef MAPI32_CREW_H
#define MAPI32_CREW_H

#include <pthread.h>

#include "mapix.h"

/* The most threads any test runs at once; warm_up_library starts this many. */
#define MAX_THREADS 12

/* Small stacks, so glibc keeps every finished thread's stack (and the TLS
 * bookkeeping it mallocs) cached for the next test instead of freeing some. */
#define CREW_STACK_SIZE (256u * 1024u)

typedef void (*worker_fn)(unsigned index, void *shared);

struct crew {
    unsigned count;
    pthread_t threads[MAX_THREADS];
    struct crew_member {
        worker_fn work;
        unsigned index;
        void *shared;
    } members[MAX_THREADS];
};

static void *crew_member_main(void *argument)
{
    struct crew_member *member = argument;
    member->work(member->index, member->shared);
    return NULL;
}

static void crew_start(struct crew *crew, unsigned count, worker_fn work, void *shared)
{
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setstacksize(&attributes, CREW_STACK_SIZE);
    crew->count = 0;
    for (unsigned i = 0; i < count && i < MAX_THREADS; i++) {
        crew->members[i] = (struct crew_member){ work, i, shared };
        if (!CHECK(pthread_create(&crew->threads[i], &attributes, crew_member_main, &crew->members[i]) == 0))
            break;
        crew->count++;
    }
    pthread_attr_destroy(&attributes);
}

static void crew_join(struct crew *crew)
{
    for (unsigned i = 0; i < crew->count; i++)
        pthread_join(crew->threads[i], NULL);
}

static inline void run_crew(unsigned count, worker_fn work, void *shared)
{
    struct crew crew;
    crew_start(&crew, count, work, shared);
    crew_join(&crew);
}

/* Best effort, unchecked: the tests report whatever goes wrong here. */
static void crew_warm_up_worker(unsigned index, void *barrier)
{
    void *root = NULL, *child = NULL;
    (void)index;
    if (MAPIAllocateBuffer(16, &root) == S_OK)
        MAPIAllocateMore(16, root, &child);
    pthread_barrier_wait(barrier); /* every thread holds a tree at once */
    MAPIFreeBuffer(root);
}

/*
 * The registry gives every thread that allocates a heap of its own, reuses
 * the heaps of exited threads, and never frees a heap (only its table, once
 * empty); a heap's table grows and shrinks with its blocks; glibc keeps thread
 * stacks (and their malloc'd TLS bookkeeping) cached once used. Make all of
 * that happen now — MAX_THREADS heaps and stacks at once, a table grown and
 * shrunk back — so that afterwards the C block count only moves with the
 * blocks a test holds.
 */
static inline void warm_up_library(void)
{
    enum { WARM_UP_ROOTS = 4096 };
    static void *roots[WARM_UP_ROOTS];
    void *child = NULL;
    for (size_t i = 0; i < WARM_UP_ROOTS; i++) {
        if (MAPIAllocateBuffer(16, &roots[i]) == S_OK)
            MAPIAllocateMore(16, roots[i], &child);
        else
            roots[i] = NULL;
    }
    for (size_t i = 0; i < WARM_UP_ROOTS; i++)
        MAPIFreeBuffer(roots[i]);
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, MAX_THREADS);
    run_crew(MAX_THREADS, crew_warm_up_worker, &barrier);
    pthread_barrier_destroy(&barrier);
}

#endif
