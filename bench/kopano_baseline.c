/*
 * kopano_baseline.c: libmapi32 against the allocator it replaces in
 * production, on the provider trace's distribution.
 *
 * Kopano's MAPIAllocateBuffer (m4l) takes one malloc with a header in front:
 * a mutex and the head of a singly linked list of the root's children.
 * MAPIAllocateMore takes one malloc with a one-pointer header, locks the
 * parent's mutex and pushes the child onto its list; MAPIFreeBuffer walks the
 * list, freeing each child, then frees the root. Nothing is validated: the
 * parent is assumed to be a live root, and a bad pointer is undefined
 * behaviour. It is the cheapest correct design for well-behaved callers, and
 * the one libmapi32 must not be slower than. What follows is our own
 * implementation of that design (not Kopano's code), with headers padded to
 * 16 bytes so that blocks keep MAPI's alignment, as Kopano's alignas does.
 *
 * The workload is bench.c's trace row, at the length of the real replay:
 * the seeded trace (trace.c), 32-byte blocks, the last TRACE_LIVE trees kept
 * alive; rounds alternate libmapi32 and the baseline, and the table shows
 * the medians, per root.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdalign.h>

#include "bench.h"

#define TRACE_LIVE 64
#define MAX_ROUNDS 64

/* ------------------------------------------------------------ the baseline */

struct hl_child {
    struct hl_child *next;
    alignas(16) unsigned char data[];
};

struct hl_root {
    pthread_mutex_t lock; /* guards `first`: children may come from several threads */
    struct hl_child *first;
    alignas(16) unsigned char data[];
};

/* A mutex is set up by a store of its initial value, as C++'s constexpr
 * std::mutex constructor does in Kopano's placement new. */
static const pthread_mutex_t unlocked = PTHREAD_MUTEX_INITIALIZER;

static void *hl_allocate_buffer(size_t size)
{
    struct hl_root *r = malloc(sizeof *r + size);
    if (r == NULL)
        return NULL;
    r->lock = unlocked;
    r->first = NULL;
    return r->data;
}

static void *hl_allocate_more(size_t size, void *parent)
{
    struct hl_root *r = (struct hl_root *)((unsigned char *)parent - offsetof(struct hl_root, data));
    struct hl_child *c = malloc(sizeof *c + size);
    if (c == NULL)
        return NULL;
    pthread_mutex_lock(&r->lock);
    c->next = r->first;
    r->first = c;
    pthread_mutex_unlock(&r->lock);
    return c->data;
}

static void hl_free_buffer(void *p)
{
    struct hl_root *r;
    struct hl_child *c, *next;
    if (p == NULL)
        return;
    r = (struct hl_root *)((unsigned char *)p - offsetof(struct hl_root, data));
    for (c = r->first; c != NULL; c = next) {
        next = c->next;
        free(c);
    }
    /* No pthread_mutex_destroy: an unlocked default mutex owns nothing, and
     * libstdc++'s std::mutex destructor, which Kopano runs, does not call it. */
    free(r);
}

/* ------------------------------------------------------------ the replay */

static struct trace plan;

static void *hl_build(long children)
{
    void *root = hl_allocate_buffer(32), *child;
    long i;
    if (root == NULL)
        die("baseline allocation failed");
    touch(root, 0);
    for (i = 0; i < children; i++) {
        if ((child = hl_allocate_more(32, root)) == NULL)
            die("baseline allocation failed");
        touch(child, (size_t)i);
    }
    return root;
}

/* `baseline` 0: libmapi32 (bench.c's flat trees), 1: the header+list allocator.
 * Nanoseconds per root. */
static double replay(int baseline)
{
    void *live[TRACE_LIVE] = {0};
    double t0 = now_ns();
    long r;
    int slot;
    for (r = 0; r < plan.roots; r++) {
        slot = (int)(r % TRACE_LIVE);
        if (live[slot] != NULL) {
            if (baseline)
                hl_free_buffer(live[slot]);
            else
                flat_free(MAPI, live[slot]);
        }
        live[slot] = baseline ? hl_build(plan.children[r]) : flat_build(MAPI, plan.children[r]);
    }
    for (slot = 0; slot < TRACE_LIVE; slot++) {
        if (baseline)
            hl_free_buffer(live[slot]);
        else if (live[slot] != NULL)
            flat_free(MAPI, live[slot]);
    }
    return (now_ns() - t0) / (double)plan.roots;
}

void kopano_rows(const struct scale *sc)
{
    double ns[2][MAX_ROUNDS], med[2], ratio;
    int rounds = sc->rounds < MAX_ROUNDS ? sc->rounds : MAX_ROUNDS, r, k;
    struct table t;
    char c[4][TABLE_CELL];
    double started = now_ns();

    trace_make(&plan, sc->kopano_roots);
    /* Warm up both, then alternate: libmapi32 first in even rounds. */
    replay(0);
    replay(1);
    for (r = 0; r < rounds; r++)
        for (k = 0; k < 2; k++) {
            int which = (k + r) % 2;
            ns[which][r] = replay(which);
        }
    med[0] = median(ns[0], rounds);
    med[1] = median(ns[1], rounds);
    ratio = med[0] / med[1];

    printf("\n### Against an unvalidated header+list allocator (Kopano's design)\n\n");
    printf("trace:   ");
    trace_describe(&plan);
    printf("\n\n");
    table_init(&t, 0xe, 6, "workload", "header+list ns", "libmapi32 ns", "mapi/header+list", "target", "met?");
    table_row(&t, "trace, full replay (per root)", cellf(c[0], "%.1f", med[1]), cellf(c[1], "%.1f", med[0]),
              cellf(c[2], "%.2f", ratio), "≤1.0× header+list", ratio <= 1.0 ? "yes" : "no");
    table_print(&t);
    printf("\nns = nanoseconds per root, median of %d round%s", rounds, rounds == 1 ? "" : "s");
    if (rounds >= 4)
        printf("; noise (interquartile range / median): libmapi32 %.0f %%, header+list %.0f %%",
               100 * noise(ns[0], rounds), 100 * noise(ns[1], rounds));
    printf(".\nbaseline rows: %.1f s\n", (now_ns() - started) / 1e9);
    free(plan.children);
}
