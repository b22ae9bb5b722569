/*
 * bench.h: what the benchmark's files share. bench.c holds the single-thread,
 * two-thread and memory-per-block rows and main(); each other family of rows
 * lives in a file of its own (crossthread.c, idle_heaps.c, kopano_baseline.c,
 * burst_rss.c) with the helpers below: the allocation wrappers and tree shapes
 * every row builds (inline here, so that a row costs what it did when it was
 * all one file), timing and order statistics (stats.c), the Markdown table
 * (table.c) and the provider trace's distribution (trace.c).
 */
#ifndef MAPI32_BENCH_H
#define MAPI32_BENCH_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <talloc.h>

#include "mapix.h"

enum side { MAPI, MALLOC, TALLOC, SIDES };
extern const char *const side_name[SIDES];

/* How long each family may run: one of three scales, chosen in main(). */
struct scale {
    const char *name;
    int rounds;
    long pair64;       /* pairs per timed batch */
    long tree17;       /* trees per timed batch */
    long wide_total;   /* children per timed batch (at least one tree) */
    long trace_roots;  /* roots in the replayed trace */
    long thread_trees; /* trees per thread per batch (half that handed off) */
    long rss_blocks;   /* live blocks for the memory rows */
    long wide_max;     /* the widest tree (1 M, or less in smoke mode) */
    /* The families of rows that issue "Registry v3" asked for: */
    int xt_rounds;        /* A/B rounds of the cross-thread and idle-heap rows */
    double xt_seconds;    /* cap on one cross-thread cell of one round */
    long xt_frees;        /* cap on the timed frees of one cell of one round */
    int idle_threads;     /* idle threads that allocated once */
    long idle_samples;    /* timed calls of each kind per cell and round */
    long kopano_roots;    /* roots in the baseline's trace replay */
    long burst_blocks;    /* live blocks in the burst freed at once */
};

void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* This program, to run again in a fresh process (see main). */
extern const char *self_path;

/* ------------------------------------------------ allocation and shapes */

/* The block escapes to "memory" and its first byte is written: the compiler
 * must really allocate it. */
static inline void touch(void *p, size_t i)
{
    *(unsigned char *)p = (unsigned char)i;
    __asm__ __volatile__("" : : "r"(p) : "memory");
}

static inline void *mapi_root(ULONG size)
{
    LPVOID p = NULL;
    if (MAPIAllocateBuffer(size, &p) != S_OK)
        die("MAPIAllocateBuffer(%lu) failed", (unsigned long)size);
    return p;
}

static inline void *mapi_more(ULONG size, void *parent)
{
    LPVOID p = NULL;
    if (MAPIAllocateMore(size, parent, &p) != S_OK)
        die("MAPIAllocateMore(%lu) failed", (unsigned long)size);
    return p;
}

static inline void *c_alloc(size_t size)
{
    void *p = malloc(size);
    if (p == NULL)
        die("malloc(%zu) failed", size);
    return p;
}

static inline void *t_alloc(const void *parent, size_t size)
{
    void *p = talloc_size(parent, size);
    if (p == NULL)
        die("talloc_size(%zu) failed", size);
    return p;
}

/* A root of 32 bytes with `children` children of 32 bytes, all under the root.
 * The malloc tree is what a C programmer writes to free a tree in one call:
 * each child holds the address of the one before, the root the last one. */
static inline void *flat_build(enum side side, long children)
{
    long i;
    void *root, *child;
    switch (side) {
    case MAPI:
        root = mapi_root(32);
        touch(root, 0);
        for (i = 0; i < children; i++) {
            child = mapi_more(32, root);
            touch(child, (size_t)i);
        }
        return root;
    case MALLOC:
        root = c_alloc(32);
        *(void **)root = NULL;
        for (i = 0; i < children; i++) {
            child = c_alloc(32);
            touch(child, (size_t)i);
            *(void **)child = *(void **)root;
            *(void **)root = child;
        }
        return root;
    default:
        root = t_alloc(NULL, 32);
        touch(root, 0);
        for (i = 0; i < children; i++) {
            child = t_alloc(root, 32);
            touch(child, (size_t)i);
        }
        return root;
    }
}

static inline void flat_free(enum side side, void *root)
{
    void *child, *next;
    switch (side) {
    case MAPI:
        MAPIFreeBuffer(root);
        break;
    case MALLOC:
        for (child = *(void **)root; child != NULL; child = next) {
            next = *(void **)child;
            free(child);
        }
        free(root);
        break;
    default:
        talloc_free(root);
        break;
    }
}

/* ------------------------------------------------ time and statistics (stats.c) */

static inline double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int cmp_double(const void *a, const void *b);
/* The median of at most 64 values (one per round); v is left as it was. */
double median(const double *v, int n);
/* The q-quantile (0 ≤ q ≤ 1, nearest rank) of n values, which it sorts. */
double quantile_sorted(double *v, long n, double q);
/* Interquartile range / median of up to 64 rounds: how far they disagree. */
double noise(const double *v, int n);
/* Resident bytes of this process, from /proc/self/statm. */
long resident_bytes(void);
/* /proc/loadavg's first three fields, for the header and the last line. */
const char *loadavg(void);
/* Runs this program with `args` (NULL-terminated) in a fresh process, so that
 * no heap, and no bookkeeping of threads gone, mixes with this one's; puts
 * what it printed in `out`. */
void run_self(const char *const *args, char *out, size_t size);

/* ------------------------------------------------ the table (table.c) */

#define TABLE_ROWS 24
#define TABLE_COLS 12
#define TABLE_CELL 64

/* A Markdown table, padded to line up in a terminal too. Columns whose bit is
 * set in `numeric` are right-aligned. */
struct table {
    int cols, rows;
    unsigned numeric;
    char cell[TABLE_ROWS][TABLE_COLS][TABLE_CELL];
};

/* Starts a table with its header: `cols` strings. */
void table_init(struct table *t, unsigned numeric, int cols, ...);
/* One row of t->cols strings. */
void table_row(struct table *t, ...);
void table_print(const struct table *t);
/* snprintf into a cell-sized buffer, returning it. */
const char *cellf(char buf[TABLE_CELL], const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ------------------------------------------------ the provider trace (trace.c) */

/* The number of children of the next root of the provider trace (see trace.c). */
unsigned trace_draw(uint64_t *rng);
uint64_t splitmix64(uint64_t *state);
#define TRACE_SEED 0x4D415049u /* "MAPI" */

struct trace {
    long roots;
    unsigned short *children;
    long total_children, zero, one, two, tail, widest;
};
/* The first `roots` roots of the seeded trace (the same for every caller). */
void trace_make(struct trace *t, long roots);
void trace_describe(const struct trace *t);

/* ------------------------------------------------ the families of rows */

/* The cross-thread and idle-heap rows run each cell (or round) in a fresh
 * process, as `bench --xt-cell SCALE SIDE CALL THREADS` and `bench
 * --idle-round SCALE ORDER`: today's registry keeps a cost for every thread
 * that ever allocated, even once it has exited, so cells run one after the
 * other in one process would measure the threads of the cells before. */
void crossthread_rows(const struct scale *sc);  /* crossthread.c */
int crossthread_child(const struct scale *sc, const char *side, const char *call, const char *threads);
void idle_heap_rows(const struct scale *sc);    /* idle_heaps.c */
int idle_heap_child(const struct scale *sc, const char *order);
void kopano_rows(const struct scale *sc);       /* kopano_baseline.c */
void burst_rss_rows(const struct scale *sc);    /* burst_rss.c */
int burst_rss_child(const char *side, const char *kind, long n); /* bench --burst */

#endif
