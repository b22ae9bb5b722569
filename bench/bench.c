/*
 * bench.c: libmapi32 against plain malloc/free (the floor) and talloc (the
 * hierarchical allocator a C programmer would pick instead), in one process.
 *
 * Each workload is one function per allocator doing the same logical work:
 * the same sizes in the same order, a byte (or a link) written into every
 * block, and an empty asm barrier so the compiler cannot drop a malloc/free
 * pair. Every workload is warmed up once per allocator, then timed in rounds
 * that alternate mapi, malloc, talloc, mapi, malloc, talloc, ... so that the
 * drift of a noisy machine falls on all three alike; the table shows medians.
 *
 * Usage:  bench            full run (make bench)
 *         bench --quick    shorter run, fewer rounds (BENCH_QUICK=1 also works)
 *         bench --smoke    tiny counts, every row, meaningless numbers (make test)
 *         bench --only main,crossthread,idle,kopano,burst
 *                          only those families of rows (with any of the above)
 *         bench --rss SIDE roots|children N
 *                          internal: one memory measurement in a fresh process
 *         bench --burst SIDE roots|children N
 *                          internal: resident memory around a burst (burst_rss.c)
 *         bench --xt-cell SCALE SIDE CALL THREADS, bench --idle-round SCALE ORDER
 *                          internal: one cell of crossthread.c, one round of idle_heaps.c
 *
 * Performance is reported, never asserted: the "met?" column is for reading,
 * and the program exits 0 whatever it measured.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <gnu/libc-version.h>
#endif

#include "bench.h"

/* Batches of ~5..50 ms (the 1M-wide tree is one batch on its own), many
 * rounds: a noisy machine spoils a few of them, and the median drops those.
 * The cross-thread cells are capped in time and in frees: today's registry
 * can take seconds for one free among 64 busy threads. */
static const struct scale FULL = {"full", 15, 500000, 30000, 200000, 100000, 60000, 1000000, 1000000,
                                  3, 1.0, 1000, 1024, 1000, 1160000, 1000000};
static const struct scale QUICK = {"quick", 3, 200000, 10000, 100000, 40000, 30000, 250000, 1000000,
                                   1, 0.5, 500, 1024, 300, 300000, 1000000};
static const struct scale SMOKE = {"smoke", 1, 1000, 100, 20000, 4000, 100, 10000, 10000,
                                   1, 0.05, 20, 1024, 10, 4000, 10000};

/* A scale by name, for the cells run in a fresh process. */
static const struct scale *scale_named(const char *name)
{
    static const struct scale *const all[] = {&FULL, &QUICK, &SMOKE};
    size_t i;
    for (i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcmp(all[i]->name, name) == 0)
            return all[i];
    die("no scale named %s", name);
}

/* ---------------------------------------------------------------- pair64 */

static void pair64(enum side side, long n)
{
    long i;
    void *p;
    switch (side) {
    case MAPI:
        for (i = 0; i < n; i++) {
            p = mapi_root(64);
            touch(p, (size_t)i);
            MAPIFreeBuffer(p);
        }
        break;
    case MALLOC:
        for (i = 0; i < n; i++) {
            p = c_alloc(64);
            touch(p, (size_t)i);
            free(p);
        }
        break;
    default:
        for (i = 0; i < n; i++) {
            p = t_alloc(NULL, 64);
            touch(p, (size_t)i);
            talloc_free(p);
        }
        break;
    }
}

/* ---------------------------------------------------------------- tree17 */

/* A 256-byte root and 16 children of 8..512 bytes. */
#define TREE_CHILDREN 16
static const ULONG tree_sizes[TREE_CHILDREN] = {8,   16,  24,  32,  40,  48,  64,  96,
                                                128, 160, 200, 256, 320, 384, 448, 512};

/* The malloc tree keeps its children's addresses in the root's own 256 bytes,
 * as a C programmer would, and frees them one by one: 17 mallocs, 17 frees. */
static void *tree17_build(enum side side)
{
    int c;
    void *root, *child;
    switch (side) {
    case MAPI:
        root = mapi_root(256);
        touch(root, 0);
        for (c = 0; c < TREE_CHILDREN; c++) {
            child = mapi_more(tree_sizes[c], root);
            touch(child, (size_t)c);
        }
        return root;
    case MALLOC:
        root = c_alloc(256);
        touch(root, 0);
        for (c = 0; c < TREE_CHILDREN; c++) {
            child = c_alloc(tree_sizes[c]);
            touch(child, (size_t)c);
            ((void **)root)[c] = child;
        }
        return root;
    default:
        root = t_alloc(NULL, 256);
        touch(root, 0);
        for (c = 0; c < TREE_CHILDREN; c++) {
            child = t_alloc(root, tree_sizes[c]);
            touch(child, (size_t)c);
        }
        return root;
    }
}

static void tree17_free(enum side side, void *root)
{
    int c;
    switch (side) {
    case MAPI:
        MAPIFreeBuffer(root);
        break;
    case MALLOC:
        for (c = 0; c < TREE_CHILDREN; c++)
            free(((void **)root)[c]);
        free(root);
        break;
    default:
        talloc_free(root);
        break;
    }
}

static void tree17(enum side side, long n)
{
    long i;
    for (i = 0; i < n; i++)
        tree17_free(side, tree17_build(side));
}

/* ------------------------------------------------- flat trees: wide, trace */
/* Trees of `width` children each, `total` children in all (at least one tree). */
static long wide_trees(long width, long total)
{
    return total > width ? total / width : 1;
}

static void wide(enum side side, long width, long total)
{
    long t, trees = wide_trees(width, total);
    for (t = 0; t < trees; t++)
        flat_free(side, flat_build(side, width));
}

/*
 * The provider trace (its shape: trace.c). Results are not freed at once: the
 * last TRACE_LIVE trees stay alive, as a client keeps what a provider returned.
 */
#define TRACE_LIVE 64
static struct trace trace_plan;

static void trace(enum side side, long unused)
{
    void *live[TRACE_LIVE] = {0};
    long r;
    int slot;
    (void)unused;
    for (r = 0; r < trace_plan.roots; r++) {
        slot = (int)(r % TRACE_LIVE);
        if (live[slot] != NULL)
            flat_free(side, live[slot]);
        live[slot] = flat_build(side, trace_plan.children[r]);
    }
    for (slot = 0; slot < TRACE_LIVE; slot++)
        if (live[slot] != NULL)
            flat_free(side, live[slot]);
}

/* ---------------------------------------------------------------- threads */

/*
 * tree17 on 1 thread, on 2 threads at once, and built on one thread while
 * another frees (a bounded single-producer single-consumer ring: the same
 * queue for each allocator). talloc is not thread-safe for a shared
 * hierarchy, but it is when each thread only touches its own: here every tree
 * is its own top-level context and is touched by one thread at a time (the
 * producer never looks at a tree again once queued), which talloc allows.
 */
#define RING 256

struct ring {
    _Atomic size_t head; /* next slot the producer fills */
    char pad1[64];
    _Atomic size_t tail; /* next slot the consumer empties */
    char pad2[64];
    void *slot[RING];
};

static void backoff(unsigned *spins)
{
    if (++*spins > 64)
        sched_yield(), *spins = 0;
}

static void ring_push(struct ring *q, void *p)
{
    size_t h = atomic_load_explicit(&q->head, memory_order_relaxed);
    unsigned spins = 0;
    while (h - atomic_load_explicit(&q->tail, memory_order_acquire) == RING)
        backoff(&spins);
    q->slot[h % RING] = p;
    atomic_store_explicit(&q->head, h + 1, memory_order_release);
}

static void *ring_pop(struct ring *q)
{
    size_t t = atomic_load_explicit(&q->tail, memory_order_relaxed);
    unsigned spins = 0;
    void *p;
    while (atomic_load_explicit(&q->head, memory_order_acquire) == t)
        backoff(&spins);
    p = q->slot[t % RING];
    atomic_store_explicit(&q->tail, t + 1, memory_order_release);
    return p;
}

enum role { BOTH, PRODUCER, CONSUMER };

struct job {
    enum side side;
    enum role role;
    long trees;
    struct ring *ring;
    _Atomic int *ready; /* threads at the start line */
    int threads;
    double t0, t1;
};

static void *worker(void *arg)
{
    struct job *j = arg;
    long i;
    /* A spinning start: a thread asleep in pthread_barrier_wait can take
     * a millisecond to wake on this VM, long enough to run the other
     * thread's whole batch alone (seen: speed-up 1.0 with idle cores). */
    atomic_fetch_add(j->ready, 1);
    while (atomic_load(j->ready) < j->threads)
        ;
    j->t0 = now_ns();
    for (i = 0; i < j->trees; i++) {
        if (j->role == BOTH)
            tree17_free(j->side, tree17_build(j->side));
        else if (j->role == PRODUCER)
            ring_push(j->ring, tree17_build(j->side));
        else
            tree17_free(j->side, ring_pop(j->ring));
    }
    j->t1 = now_ns();
    return NULL;
}

/* Runs the jobs on their own threads; nanoseconds from the first start to the last end. */
static double run_threads(struct job *jobs, int n)
{
    pthread_t tid[2];
    _Atomic int ready = 0;
    double t0, t1;
    int i;
    for (i = 0; i < n; i++) {
        jobs[i].ready = &ready;
        jobs[i].threads = n;
        if (pthread_create(&tid[i], NULL, worker, &jobs[i]) != 0)
            die("pthread_create failed");
    }
    for (i = 0; i < n; i++)
        pthread_join(tid[i], NULL);
    t0 = jobs[0].t0, t1 = jobs[0].t1;
    for (i = 1; i < n; i++) {
        if (jobs[i].t0 < t0)
            t0 = jobs[i].t0;
        if (jobs[i].t1 > t1)
            t1 = jobs[i].t1;
    }
    return t1 - t0;
}

/* How much a second thread can add on this machine right now: a loop that
 * touches no memory, run on 1 thread and then on 2 at once. 2.0 on idle
 * cores; other work on a 2-core machine drags it (and the speed-up row)
 * down. Measured in the same rounds as the thread rows; `side` is unused. */
static void *spin(void *arg)
{
    volatile unsigned long x = 0;
    unsigned long i;
    for (i = 0; i < 5000000UL; i++)
        x += i;
    return arg;
}

static double headroom(enum side side, long unused)
{
    double t0, one;
    pthread_t tid[2];
    int i;
    (void)side, (void)unused;
    t0 = now_ns();
    spin(NULL);
    one = now_ns() - t0;
    t0 = now_ns();
    for (i = 0; i < 2; i++)
        if (pthread_create(&tid[i], NULL, spin, NULL) != 0)
            die("pthread_create failed");
    for (i = 0; i < 2; i++)
        pthread_join(tid[i], NULL);
    return 2 * one / (now_ns() - t0);
}

/* These three return their own time, in ns per tree (all threads together). */
static double threads1(enum side side, long trees)
{
    struct job j = {side, BOTH, trees, NULL, NULL, 0, 0, 0};
    return run_threads(&j, 1) / (double)trees;
}

static double threads2(enum side side, long trees)
{
    struct job j[2] = {{side, BOTH, trees, NULL, NULL, 0, 0, 0}, {side, BOTH, trees, NULL, NULL, 0, 0, 0}};
    return run_threads(j, 2) / (double)(2 * trees);
}

static double handoff(enum side side, long trees)
{
    static struct ring q;
    struct job j[2] = {{side, PRODUCER, trees, &q, NULL, 0, 0, 0}, {side, CONSUMER, trees, &q, NULL, 0, 0, 0}};
    atomic_store(&q.head, 0);
    atomic_store(&q.tail, 0);
    return run_threads(j, 2) / (double)trees;
}

/* In a fresh process: resident bytes per live 32-byte block, N roots or one
 * root with N children (malloc has no children: N blocks either way). */
static int rss_child(const char *side_arg, const char *kind, long n)
{
    enum side side = SIDES;
    int children = strcmp(kind, "children") == 0;
    void **keep, *root = NULL;
    long i, before, after;
    for (i = 0; i < SIDES; i++)
        if (strcmp(side_arg, side_name[i]) == 0)
            side = (enum side)i;
    if (side == SIDES || n <= 0)
        die("bad --rss arguments");
    keep = c_alloc((size_t)n * sizeof *keep);
    memset(keep, 0, (size_t)n * sizeof *keep);
    /* First use of each allocator (lazy setup) is not the blocks' cost. */
    flat_free(side, flat_build(side, 1));
    before = resident_bytes();
    if (children)
        root = side == MAPI ? mapi_root(32) : side == MALLOC ? c_alloc(32) : t_alloc(NULL, 32);
    for (i = 0; i < n; i++) {
        if (side == MAPI)
            keep[i] = children ? mapi_more(32, root) : mapi_root(32);
        else if (side == MALLOC)
            keep[i] = c_alloc(32);
        else
            keep[i] = t_alloc(children ? root : NULL, 32);
        touch(keep[i], (size_t)i);
    }
    after = resident_bytes();
    printf("%.3f\n", (double)(after - before) / (double)n);
    return 0;
}

/* This program, to run again: argv[0] when it is a path (so that valgrind,
 * which is /proc/self/exe under valgrind, can follow), else /proc/self/exe. */
const char *self_path = "/proc/self/exe";

/* Runs `bench --rss SIDE KIND N` as a new process, so that no heap mixes. */
static double rss_per_block(enum side side, const char *kind, long n)
{
    char buf[64], count[32];
    const char *args[] = {"--rss", side_name[side], kind, count, NULL};
    snprintf(count, sizeof count, "%ld", n);
    run_self(args, buf, sizeof buf);
    return strtod(buf, NULL);
}

/* ---------------------------------------------------------------- driver */

/* A measured cell: ns per unit for one side, one sample per round. */
typedef void (*loop_fn)(enum side, long);
typedef double (*self_timed_fn)(enum side, long);

struct work {
    const char *name;
    loop_fn loop;       /* timed here: batch time / units */
    self_timed_fn self; /* or timed by itself */
    long arg;           /* passed on */
    double units;       /* units per batch, for loop */
    double ns[SIDES][64];
};

static double run_once(struct work *w, enum side s)
{
    double t0;
    if (w->self != NULL)
        return w->self(s, w->arg);
    t0 = now_ns();
    w->loop(s, w->arg);
    return (now_ns() - t0) / w->units;
}

/* Warm up every side, then rounds of A B C A B C over a group of workloads
 * that belong together (their rows are compared with one another). */
static void measure(struct work *ws, int nw, int rounds)
{
    int i, r, s;
    for (i = 0; i < nw; i++)
        for (s = 0; s < SIDES; s++)
            run_once(&ws[i], (enum side)s);
    for (r = 0; r < rounds; r++)
        for (i = 0; i < nw; i++)
            for (s = 0; s < SIDES; s++)
                ws[i].ns[s][r] = run_once(&ws[i], (enum side)s);
}

static long wide_batch;
static void wide_loop(enum side s, long width) { wide(s, width, wide_batch); }

/* The main table: a name, three sides, two ratios, the target and whether it holds. */
static struct table main_table;

static void row(const char *name, const char *m, const char *c, const char *t, const char *rm, const char *rt,
                const char *target, const char *met)
{
    table_row(&main_table, name, m, c, t, rm, rt, target, met);
}

static const char *fmt(char *buf, const char *f, double v)
{
    snprintf(buf, 24, f, v);
    return buf;
}
/* "workload N %" for each timed row: the noisiest of its three sides. */
static char noise_line[1024];

/* A timed row: medians, the two ratios, and whether the targets hold. */
static void time_row(const char *name, const struct work *w, int rounds, double max_vs_malloc,
                     double max_vs_talloc)
{
    char b[6][24], target[48] = "—", met[48] = "—";
    double mapi = median(w->ns[MAPI], rounds), mal = median(w->ns[MALLOC], rounds),
           tal = median(w->ns[TALLOC], rounds);
    double rm = mapi / mal, rt = mapi / tal;
    if (max_vs_malloc > 0 && max_vs_talloc > 0) {
        int ok_m = rm <= max_vs_malloc, ok_t = rt <= max_vs_talloc;
        snprintf(target, sizeof target, "≤%.2g× malloc, ≤%.2g× talloc", max_vs_malloc, max_vs_talloc);
        snprintf(met, sizeof met, "%s", ok_m && ok_t ? "yes" : ok_m ? "no (talloc)" : ok_t ? "no (malloc)" : "no");
    } else if (max_vs_malloc > 0) {
        snprintf(target, sizeof target, "≤%.2g× malloc", max_vs_malloc);
        snprintf(met, sizeof met, "%s", rm <= max_vs_malloc ? "yes" : "no");
    }
    row(name, fmt(b[0], "%.1f", mal), fmt(b[1], "%.1f", mapi), fmt(b[2], "%.1f", tal), fmt(b[3], "%.2f", rm),
        fmt(b[4], "%.2f", rt), target, met);
    {
        double worst = 0, spread;
        int s;
        size_t used = strlen(noise_line);
        for (s = 0; s < SIDES; s++)
            if ((spread = noise(w->ns[s], rounds)) > worst)
                worst = spread;
        int len = (int)strcspn(name, "(");
        while (len > 0 && name[len - 1] == ' ')
            len--;
        snprintf(noise_line + used, sizeof noise_line - used, "%s%.*s %.0f %%", used ? "; " : "", len, name,
                 100 * worst);
    }
}

/* ---------------------------------------------------------------- main */

static void print_machine(const struct scale *sc)
{
    char line[256], cpu[256] = "unknown";
    const char *preload = getenv("LD_PRELOAD");
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f != NULL && fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, "model name", 10) == 0) {
            char *colon = strchr(line, ':');
            snprintf(cpu, sizeof cpu, "%s", colon ? colon + 2 : line);
            cpu[strcspn(cpu, "\n")] = '\0';
            break;
        }
    if (f != NULL)
        fclose(f);
    printf("machine: %ld cores, %s; load average %s\n", sysconf(_SC_NPROCESSORS_ONLN), cpu, loadavg());
#ifdef __GLIBC__
    printf("malloc:  %s%s\n", preload && *preload ? "LD_PRELOAD=" : "glibc ",
           preload && *preload ? preload : gnu_get_libc_version());
#else
    printf("malloc:  %s\n", preload && *preload ? preload : "the C library's");
#endif
    printf("talloc:  %d.%d;  mode: %s, %d round%s, medians\n", TALLOC_VERSION_MAJOR, TALLOC_VERSION_MINOR, sc->name,
           sc->rounds, sc->rounds == 1 ? "" : "s");
}

/* The single-thread, two-thread and memory-per-block rows: libmapi32, malloc
 * and talloc side by side. */
static void main_rows(const struct scale *sc)
{
    double mem[2][SIDES], cpu_up;
    char b[8][48], label[64];
    int i, s, r, rounds = sc->rounds;

    /* Memory first, each side in a process of its own. */
    for (s = 0; s < SIDES; s++) {
        mem[0][s] = rss_per_block((enum side)s, "roots", sc->rss_blocks);
        mem[1][s] = rss_per_block((enum side)s, "children", sc->rss_blocks);
    }

    trace_make(&trace_plan, sc->trace_roots);
    printf("trace:   ");
    trace_describe(&trace_plan);
    printf("\n");

    wide_batch = sc->wide_total;
    {
        struct work single[] = {
            {"pair64", pair64, NULL, sc->pair64, (double)sc->pair64, {{0}}},
            {"tree17", tree17, NULL, sc->tree17, (double)sc->tree17, {{0}}},
            {"trace", trace, NULL, 0, (double)sc->trace_roots, {{0}}},
        };
        struct work widths[] = {
            {"wide 1k", wide_loop, NULL, 1000, 0, {{0}}},
            {"wide 100k", wide_loop, NULL, sc->wide_max / 10, 0, {{0}}},
            {"wide 1M", wide_loop, NULL, sc->wide_max, 0, {{0}}},
        };
        struct work threads[] = {
            {"1 thread", NULL, threads1, sc->thread_trees, 0, {{0}}},
            {"2 threads", NULL, threads2, sc->thread_trees, 0, {{0}}},
            {"handoff", NULL, handoff, sc->thread_trees / 2, 0, {{0}}},
            {"headroom", NULL, headroom, 0, 0, {{0}}},
        };
        double flat[SIDES], up[SIDES];

        for (i = 0; i < 3; i++)
            widths[i].units = (double)(wide_trees(widths[i].arg, wide_batch) * widths[i].arg);
        measure(single, 3, rounds);
        measure(widths, 3, rounds);
        measure(threads, 4, rounds);
        {
            double per_side[SIDES];
            for (s = 0; s < SIDES; s++)
                per_side[s] = median(threads[3].ns[s], rounds);
            cpu_up = median(per_side, SIDES);
        }

        table_init(&main_table, 0x3e, 8, "workload", "malloc ns", "libmapi32 ns", "talloc ns", "mapi/malloc",
                   "mapi/talloc", "target", "met?");
        /* The targets of issue "Registry v3". */
        time_row("pair64 (per pair)", &single[0], rounds, 1.2, 0.6);
        time_row("tree17 (per tree)", &single[1], rounds, 0.6, 0.3);
        for (i = 0; i < 3; i++) {
            snprintf(label, sizeof label, "wide %s (per child)",
                     i == 0 ? "1k" : i == 1 ? (sc->wide_max == 1000000 ? "100k" : "1/10 max") : (sc->wide_max == 1000000 ? "1M" : "max"));
            time_row(label, &widths[i], rounds, 0.5, 0);
        }
        for (s = 0; s < SIDES; s++)
            flat[s] = median(widths[2].ns[s], rounds) / median(widths[0].ns[s], rounds);
        row("wide flatness (1M / 1k per child)", fmt(b[0], "%.2f×", flat[MALLOC]), fmt(b[1], "%.2f×", flat[MAPI]),
            fmt(b[2], "%.2f×", flat[TALLOC]), fmt(b[3], "%.2f", flat[MAPI] / flat[MALLOC]),
            fmt(b[4], "%.2f", flat[MAPI] / flat[TALLOC]), "≤1.25× malloc's growth",
            flat[MAPI] <= 1.25 * flat[MALLOC] ? "yes" : "no");
        time_row("trace (per root)", &single[2], rounds, 1.0, 0.5);
        time_row("tree17, 1 thread (per tree)", &threads[0], rounds, 0, 0);
        time_row("tree17, 2 threads at once (per tree)", &threads[1], rounds, 0, 0);
        for (s = 0; s < SIDES; s++) {
            double per_round[64];
            for (r = 0; r < rounds; r++)
                per_round[r] = threads[0].ns[s][r] / threads[1].ns[s][r];
            up[s] = median(per_round, rounds);
        }
        row("tree17 2-thread speed-up (T2/T1)", fmt(b[0], "%.2f×", up[MALLOC]), fmt(b[1], "%.2f×", up[MAPI]),
            fmt(b[2], "%.2f×", up[TALLOC]), fmt(b[3], "%.2f", up[MAPI] / up[MALLOC]),
            fmt(b[4], "%.2f", up[MAPI] / up[TALLOC]), "≥0.9× malloc's speed-up",
            cpu_up < 1.6 ? "unclear: cores busy" : up[MAPI] >= 0.9 * up[MALLOC] ? "yes" : "no");
        time_row("tree17 freed on another thread (per tree)", &threads[2], rounds, 0, 0);
        for (i = 0; i < 2; i++) {
            double extra = mem[i][MAPI] - mem[i][MALLOC];
            snprintf(label, sizeof label, "memory: live 32-byte %s (bytes each)", i == 0 ? "roots" : "children");
            row(label, fmt(b[0], "%.1f", mem[i][MALLOC]), fmt(b[1], "%.1f", mem[i][MAPI]),
                fmt(b[2], "%.1f", mem[i][TALLOC]), fmt(b[3], "%+.1f B", extra),
                fmt(b[4], "%+.1f B", mem[i][MAPI] - mem[i][TALLOC]), "≤ malloc + 8 B", extra <= 8 ? "yes" : "no");
        }
        printf("\n");
        table_print(&main_table);
    }
    printf("\nns = nanoseconds per unit, median of %d round%s; a ratio below 1 favours libmapi32.\n", rounds,
           rounds == 1 ? "" : "s");
    if (rounds >= 4)
        printf("noise, interquartile range / median of the noisiest side: %s.\n", noise_line);
    printf("memory = resident bytes (RSS growth) per live block, %ld blocks, each allocator in a fresh process.\n",
           sc->rss_blocks);
    printf("threads: talloc is safe here because every tree is its own top-level context, touched by one thread "
           "at a time.\n");
    printf("threads: a loop touching no memory ran %.2f× as fast on 2 threads as on 1 (2.00 on idle cores).\n",
           cpu_up);

}

/* Which families of rows to run: all by default, or those --only names. */
enum {
    ONLY_MAIN = 1,
    ONLY_CROSSTHREAD = 2,
    ONLY_IDLE = 4,
    ONLY_KOPANO = 8,
    ONLY_BURST = 16,
    ONLY_ALL = 31
};

static unsigned only_families(const char *list)
{
    static const char *const names[] = {"main", "crossthread", "idle", "kopano", "burst"};
    unsigned only = 0, i;
    const char *p = list;
    while (*p != '\0') {
        size_t len = strcspn(p, ",");
        for (i = 0; i < sizeof names / sizeof names[0]; i++)
            if (strlen(names[i]) == len && strncmp(p, names[i], len) == 0)
                break;
        if (i == sizeof names / sizeof names[0])
            die("--only: unknown family \"%.*s\" (main, crossthread, idle, kopano, burst)", (int)len, p);
        only |= 1u << i;
        p += len + (p[len] == ',');
    }
    return only;
}

int main(int argc, char **argv)
{
    const struct scale *sc = &FULL;
    const char *quick = getenv("BENCH_QUICK");
    double started = now_ns();
    unsigned only = ONLY_ALL;
    int i;

    if (strchr(argv[0], '/') != NULL)
        self_path = argv[0];
    if (argc == 5 && strcmp(argv[1], "--rss") == 0)
        return rss_child(argv[2], argv[3], strtol(argv[4], NULL, 10));
    if (argc == 5 && strcmp(argv[1], "--burst") == 0)
        return burst_rss_child(argv[2], argv[3], strtol(argv[4], NULL, 10));
    if (argc == 6 && strcmp(argv[1], "--xt-cell") == 0)
        return crossthread_child(scale_named(argv[2]), argv[3], argv[4], argv[5]);
    if (argc == 4 && strcmp(argv[1], "--idle-round") == 0)
        return idle_heap_child(scale_named(argv[2]), argv[3]);
    if (quick != NULL && *quick != '\0' && strcmp(quick, "0") != 0)
        sc = &QUICK;
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            sc = &QUICK;
        else if (strcmp(argv[i], "--smoke") == 0)
            sc = &SMOKE;
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
            only = only_families(argv[++i]);
        else
            die("usage: bench [--quick | --smoke] [--only main,crossthread,idle,kopano,burst]");
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    print_machine(sc);

    if (only & ONLY_MAIN)
        main_rows(sc);
    /* The rows issue "Registry v3" asked for, each family in a file of its own. */
    if (only & ONLY_CROSSTHREAD)
        crossthread_rows(sc);
    if (only & ONLY_IDLE)
        idle_heap_rows(sc);
    if (only & ONLY_KOPANO)
        kopano_rows(sc);
    if (only & ONLY_BURST)
        burst_rss_rows(sc);
    printf("load average at the end: %s; bench: done in %.1f s\n", loadavg(), (now_ns() - started) / 1e9);
    return 0;
}
