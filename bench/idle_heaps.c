/*
 * idle_heaps.c: what 1,024 idle threads cost the calls of one busy one.
 *
 * A thread that allocated once owns bookkeeping of its own for as long as it
 * lives (today: a heap, which a lookup that misses its own heap visits in
 * turn). Here an older thread, the builder, builds trees and then waits;
 * then N threads each allocate and free once (with libmapi32 and with malloc)
 * and then sit blocked on a condition variable, alive. From the main thread,
 * timed as a batch of K calls each:
 *
 *   - freeing the builder's trees (a 32-byte root and one 32-byte child; for
 *     malloc the root holds the child's address and both are freed),
 *   - MAPIAllocateMore of 32 bytes on the builder's trees (for malloc a
 *     malloc(32) linked into the root's list),
 *   - MAPIFreeBuffer of a foreign pointer (a block from malloc; libmapi32 only).
 *
 * Each with no idle threads and with N, in rounds that alternate the two
 * allocators (libmapi32 first in even rounds) and run "no idle threads" first.
 * Each round runs in a fresh process (bench --idle-round): once 1,024 threads
 * have allocated, today's registry keeps paying for them after they exit, so
 * a second "no idle threads" in the same process would not be one.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <string.h>

#include "bench.h"

#define MAX_ROUNDS 8
#define IDLE_STACK (256 * 1024)

enum op { FREE_TREE, MORE, FOREIGN, OPS };
enum cond { NO_IDLE, IDLE, CONDS };

/* ------------------------------------------------------------ the builder */

/* The builder thread builds what it is asked for, then waits for the next
 * request: it stays alive, and older than the idle threads, all along. */
struct builder {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    enum side side;
    long count;  /* trees to build; 0 when done */
    int quit;
    void **trees;
};

static void *builder_thread(void *arg)
{
    struct builder *b = arg;
    long i;
    pthread_mutex_lock(&b->lock);
    for (;;) {
        while (b->count == 0 && !b->quit)
            pthread_cond_wait(&b->wake, &b->lock);
        if (b->quit)
            break;
        for (i = 0; i < b->count; i++)
            b->trees[i] = flat_build(b->side, 1);
        b->count = 0;
        pthread_cond_broadcast(&b->wake);
    }
    pthread_mutex_unlock(&b->lock);
    return NULL;
}

static void build_on_builder(struct builder *b, enum side side, long count)
{
    pthread_mutex_lock(&b->lock);
    b->side = side;
    b->count = count;
    pthread_cond_broadcast(&b->wake);
    while (b->count != 0)
        pthread_cond_wait(&b->wake, &b->lock);
    pthread_mutex_unlock(&b->lock);
}

/* ------------------------------------------------------------ idle threads */

struct idle {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int ready, release;
};

static void *idle_thread(void *arg)
{
    struct idle *w = arg;
    void *p = mapi_root(32);
    touch(p, 0);
    MAPIFreeBuffer(p);
    p = c_alloc(32);
    touch(p, 0);
    free(p);
    pthread_mutex_lock(&w->lock);
    w->ready++;
    pthread_cond_broadcast(&w->wake);
    while (!w->release)
        pthread_cond_wait(&w->wake, &w->lock);
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

/* ------------------------------------------------------------ one cell */

/* Nanoseconds per call of each op, the batch of `k` calls timed as a whole. */
static void cell(struct builder *b, enum side side, long k, double ns[OPS])
{
    void **trees = b->trees;
    void *child, **foreign;
    double t0;
    long j;

    build_on_builder(b, side, 2 * k);
    t0 = now_ns();
    for (j = 0; j < k; j++)
        flat_free(side, trees[j]);
    ns[FREE_TREE] = (now_ns() - t0) / (double)k;

    t0 = now_ns();
    for (j = k; j < 2 * k; j++) {
        if (side == MAPI) {
            child = mapi_more(32, trees[j]);
            touch(child, (size_t)j);
        } else {
            /* Written before it is linked: the link is its first bytes. */
            child = c_alloc(32);
            touch(child, (size_t)j);
            *(void **)child = *(void **)trees[j];
            *(void **)trees[j] = child;
        }
    }
    ns[MORE] = (now_ns() - t0) / (double)k;
    for (j = k; j < 2 * k; j++)
        flat_free(side, trees[j]);

    ns[FOREIGN] = 0;
    if (side != MAPI)
        return;
    foreign = c_alloc((size_t)k * sizeof *foreign);
    for (j = 0; j < k; j++) {
        foreign[j] = c_alloc(32);
        touch(foreign[j], (size_t)j);
    }
    t0 = now_ns();
    for (j = 0; j < k; j++)
        MAPIFreeBuffer(foreign[j]);
    ns[FOREIGN] = (now_ns() - t0) / (double)k;
    for (j = 0; j < k; j++)
        free(foreign[j]);
    free(foreign);
}

/* ------------------------------------------------------------ the rows */

/* One round in a fresh process: the builder, "none idle" with both
 * allocators, then N idle threads and both again. Prints the 12 times,
 * ns[cond][side][op] with side 0 libmapi32, 1 malloc. */
int idle_heap_child(const struct scale *sc, const char *order)
{
    int n = sc->idle_threads, mapi_first = strcmp(order, "mapi-first") == 0, cond, k, i, op;
    double ns[CONDS][2][OPS];
    struct builder b;
    struct idle w;
    pthread_t builder_tid, *idle_tid = c_alloc((size_t)n * sizeof *idle_tid);
    pthread_attr_t attr;

    if (!mapi_first && strcmp(order, "malloc-first") != 0)
        die("bad --idle-round arguments");
    memset(&b, 0, sizeof b);
    memset(&w, 0, sizeof w);
    b.trees = c_alloc((size_t)(2 * sc->idle_samples) * sizeof *b.trees);
    if (pthread_mutex_init(&b.lock, NULL) != 0 || pthread_cond_init(&b.wake, NULL) != 0 ||
        pthread_mutex_init(&w.lock, NULL) != 0 || pthread_cond_init(&w.wake, NULL) != 0 ||
        pthread_attr_init(&attr) != 0 || pthread_attr_setstacksize(&attr, IDLE_STACK) != 0)
        die("pthread set-up failed");
    if (pthread_create(&builder_tid, NULL, builder_thread, &b) != 0)
        die("pthread_create failed");

    for (cond = NO_IDLE; cond < CONDS; cond++) {
        if (cond == IDLE) {
            for (i = 0; i < n; i++)
                if (pthread_create(&idle_tid[i], &attr, idle_thread, &w) != 0)
                    die("pthread_create of idle thread %d failed", i);
            pthread_mutex_lock(&w.lock);
            while (w.ready < n)
                pthread_cond_wait(&w.wake, &w.lock);
            pthread_mutex_unlock(&w.lock);
        }
        for (k = 0; k < 2; k++) {
            int side_k = mapi_first ? k : 1 - k; /* 0: libmapi32 */
            cell(&b, side_k == 0 ? MAPI : MALLOC, sc->idle_samples, ns[cond][side_k]);
        }
    }
    pthread_mutex_lock(&w.lock);
    w.release = 1;
    pthread_cond_broadcast(&w.wake);
    pthread_mutex_unlock(&w.lock);
    for (i = 0; i < n; i++)
        pthread_join(idle_tid[i], NULL);
    pthread_mutex_lock(&b.lock);
    b.quit = 1;
    pthread_cond_broadcast(&b.wake);
    pthread_mutex_unlock(&b.lock);
    pthread_join(builder_tid, NULL);

    for (cond = 0; cond < CONDS; cond++)
        for (k = 0; k < 2; k++)
            for (op = 0; op < OPS; op++)
                printf("%.3f\n", ns[cond][k][op]);
    pthread_attr_destroy(&attr);
    free(b.trees);
    free(idle_tid);
    return 0;
}

void idle_heap_rows(const struct scale *sc)
{
    static const char *const op_name[OPS] = {"cross-thread free of an older thread's tree",
                                             "MAPIAllocateMore on an older thread's tree", "foreign-pointer free"};
    static const double max_vs_malloc[OPS] = {3, 5, 0};
    int rounds = sc->xt_rounds < MAX_ROUNDS ? sc->xt_rounds : MAX_ROUNDS, n = sc->idle_threads;
    double ns[CONDS][2][OPS][MAX_ROUNDS], med[CONDS][2][OPS];
    struct table t;
    char c[8][TABLE_CELL], row[96], target[64], noise_line[1024] = "", out[512], *at, *end;
    double started = now_ns();
    int round, cond, k, op;

    /* Alternating rounds, each in a process of its own: libmapi32 first in
     * even rounds, malloc in odd ones. */
    for (round = 0; round < rounds; round++) {
        const char *args[] = {"--idle-round", sc->name, round % 2 ? "malloc-first" : "mapi-first", NULL};
        run_self(args, out, sizeof out);
        at = out;
        for (cond = 0; cond < CONDS; cond++)
            for (k = 0; k < 2; k++)
                for (op = 0; op < OPS; op++) {
                    ns[cond][k][op][round] = strtod(at, &end);
                    if (end == at)
                        die("bad output from bench --idle-round");
                    at = end;
                }
    }
    for (cond = 0; cond < CONDS; cond++)
        for (k = 0; k < 2; k++)
            for (op = 0; op < OPS; op++)
                med[cond][k][op] = median(ns[cond][k][op], rounds);

    printf("\n### %d idle threads that allocated once\n\n", n);
    table_init(&t, 0x7e, 9, "workload", "malloc ns, none idle", cellf(c[0], "malloc ns, %d idle", n),
               "libmapi32 ns, none idle", cellf(c[1], "libmapi32 ns, %d idle", n), "idle/none", "mapi/malloc",
               "target", "met?");
    for (op = 0; op < OPS; op++) {
        double m0 = med[NO_IDLE][0][op], m1 = med[IDLE][0][op], c0 = med[NO_IDLE][1][op], c1 = med[IDLE][1][op];
        double growth = m1 / m0, ratio = c1 > 0 ? m1 / c1 : 0;
        int ok_growth = growth <= 2, ok;
        if (op == FOREIGN) {
            snprintf(target, sizeof target, "≤2 µs, ≤2× none idle");
            ok = m1 <= 2000 && ok_growth;
        } else {
            snprintf(target, sizeof target, "≤%.0f× malloc, ≤2× none idle", max_vs_malloc[op]);
            ok = ratio <= max_vs_malloc[op] && ok_growth;
        }
        snprintf(row, sizeof row, "%s (per %s)", op_name[op], op == FREE_TREE ? "tree" : "call");
        table_row(&t, row, op == FOREIGN ? "—" : cellf(c[2], "%.1f", c0), op == FOREIGN ? "—" : cellf(c[3], "%.1f", c1),
                  cellf(c[4], "%.1f", m0), cellf(c[5], "%.1f", m1), cellf(c[6], "%.2f", growth),
                  op == FOREIGN ? "—" : cellf(c[7], "%.2f", ratio), target, ok ? "yes" : "no");
        for (cond = 0; cond < CONDS && rounds >= 2; cond++) {
            size_t used = strlen(noise_line);
            snprintf(noise_line + used, sizeof noise_line - used, "%s%s, %s:", used ? "; " : "",
                     op == FREE_TREE ? "free" : op == MORE ? "AllocateMore" : "foreign",
                     cond == IDLE ? "idle" : "none idle");
            for (round = 0; round < rounds; round++) {
                used = strlen(noise_line);
                snprintf(noise_line + used, sizeof noise_line - used, " %.0f", ns[cond][0][op][round]);
            }
        }
    }
    table_print(&t);
    printf("\nns = nanoseconds per call, a batch of %ld timed as a whole, median of %d round%s; the idle threads "
           "each allocated and freed once with both allocators and wait on a condition variable.\n",
           sc->idle_samples, rounds, rounds == 1 ? "" : "s");
    if (noise_line[0] != '\0')
        printf("libmapi32, each round's ns in turn: %s.\n", noise_line);
    printf("idle-heap rows: %.1f s\n", (now_ns() - started) / 1e9);
}
