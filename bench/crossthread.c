/*
 * crossthread.c: frees that cross threads while other threads are busy, the
 * state a MAPI server is normally in (more threads than CPUs).
 *
 * T busy threads each build and free their own trees in a loop, shaped like
 * the provider trace (trace.c). Whenever a small queue has room, a busy thread
 * also builds one more tree and hands it over. Another thread, the freer,
 * wakes about once a millisecond and makes one timed call:
 *
 *   - rows "cross-thread free": it frees a handed-over tree; the same for
 *     malloc is freeing a malloc'd tree of the same shape built on the busy
 *     thread (the root's list of children, then the root, as bench.c's flat
 *     trees). T = 2, 8, 16, 64.
 *   - rows "misuse": among 8 busy threads, one kind a cell: a foreign pointer (a block
 *     from malloc), a second free of a root (one the freer itself allocated
 *     and freed: a root of another thread, once freed, may be handed out again
 *     by malloc before the second free, and a stale free of a reused address
 *     is a real free, SPEC §2), and a child of a handed-over tree. All three
 *     must be refused; only libmapi32 has them.
 *
 * Each cell (one T, one allocator, one round) stops after xt_frees timed
 * calls or xt_seconds, whichever comes first: today's registry can take
 * seconds for one free among 64 busy threads, since a free looks for its
 * block heap by heap and waits for each heap's owner to leave its current
 * call. At the cap the busy threads are told to stop; a call still running
 * then finishes once they are gone, and its time, cut short by the cap, is a
 * lower bound (the table marks every statistic that includes one with ≥).
 * Rounds alternate libmapi32 and malloc, mapi first in even rounds, malloc
 * first in odd ones. Each cell runs in a fresh process (bench --xt-cell),
 * so that it meets only its own threads' bookkeeping (see bench.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

#include "bench.h"

#define QUEUE 16
#define PERIOD_NS 1e6 /* the freer's pace: about one call a millisecond */
#define MAX_THREADS 64
#define MAX_ROUNDS 8

enum call { FREE_TREE, FOREIGN, DOUBLE, CHILD, CALLS };
static const char *const call_name[CALLS] = {"cross-thread free", "foreign-pointer free", "double free",
                                             "child free"};
static const char *const call_key[CALLS] = {"free", "foreign", "double", "child"};

struct handed {
    void *root, *child;
};

/* One cell: the busy threads, the queue between them and the freer, the samples. */
struct run {
    enum side side;
    enum call call; /* what the freer times */
    double deadline;
    long max_calls;
    _Atomic int stop, running, go;
    pthread_mutex_t lock;
    _Atomic int queued; /* read without the lock, as a hint, by busy threads */
    int head;
    struct handed slot[QUEUE];
    /* What the freer measured: nanoseconds per call, and how many were cut
     * short by the cap. */
    double *ns[CALLS];
    long n[CALLS], cut[CALLS];
};

struct busy {
    struct run *run;
    int index;
};

static int queue_push(struct run *r, struct handed h)
{
    int pushed = 0;
    pthread_mutex_lock(&r->lock);
    if (r->queued < QUEUE) {
        r->slot[(r->head + r->queued) % QUEUE] = h;
        atomic_store_explicit(&r->queued, r->queued + 1, memory_order_relaxed);
        pushed = 1;
    }
    pthread_mutex_unlock(&r->lock);
    return pushed;
}

static int queue_pop(struct run *r, struct handed *h)
{
    int popped = 0;
    pthread_mutex_lock(&r->lock);
    if (r->queued > 0) {
        *h = r->slot[r->head];
        r->head = (r->head + 1) % QUEUE;
        atomic_store_explicit(&r->queued, r->queued - 1, memory_order_relaxed);
        popped = 1;
    }
    pthread_mutex_unlock(&r->lock);
    return popped;
}

static void *busy_thread(void *arg)
{
    struct busy *b = arg;
    struct run *r = b->run;
    /* Each thread its own seeded stream of the trace's shapes. */
    uint64_t rng = TRACE_SEED + 0x10000u * (uint64_t)b->index;
    struct handed h;
    atomic_fetch_add(&r->running, 1);
    while (!atomic_load_explicit(&r->stop, memory_order_relaxed)) {
        flat_free(r->side, flat_build(r->side, trace_draw(&rng)));
        if (r->call == FOREIGN || r->call == DOUBLE ||
            atomic_load_explicit(&r->queued, memory_order_relaxed) >= QUEUE)
            continue;
        if (r->call == CHILD) {
            /* The misuse rows need a child to free: a root with one. */
            h.root = mapi_root(32);
            touch(h.root, 0);
            h.child = mapi_more(32, h.root);
            touch(h.child, 1);
        } else {
            h.root = flat_build(r->side, trace_draw(&rng));
            h.child = NULL;
        }
        if (!queue_push(r, h))
            flat_free(r->side, h.root);
    }
    return NULL;
}

static void sleep_until(double ns)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(ns / 1e9);
    ts.tv_nsec = (long)(ns - (double)ts.tv_sec * 1e9);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static void record(struct run *r, enum call c, double t0, double t1)
{
    r->ns[c][r->n[c]++] = t1 - t0;
    r->cut[c] += t1 > r->deadline;
}

/* One timed misuse call. */
static void misuse_call(struct run *r)
{
    struct handed h;
    void *p;
    double t0;
    switch (r->call) {
    case FOREIGN:
        p = c_alloc(32);
        touch(p, 0);
        t0 = now_ns();
        MAPIFreeBuffer(p);
        record(r, FOREIGN, t0, now_ns());
        free(p);
        break;
    case DOUBLE:
        p = mapi_root(32);
        touch(p, 0);
        MAPIFreeBuffer(p);
        t0 = now_ns();
        MAPIFreeBuffer(p);
        record(r, DOUBLE, t0, now_ns());
        break;
    default:
        if (!queue_pop(r, &h))
            return;
        t0 = now_ns();
        MAPIFreeBuffer(h.child);
        record(r, CHILD, t0, now_ns());
        MAPIFreeBuffer(h.root);
        break;
    }
}

static long calls_made(const struct run *r)
{
    long n = 0;
    int c;
    for (c = 0; c < CALLS; c++)
        n += r->n[c];
    return n;
}

static void *freer_thread(void *arg)
{
    struct run *r = arg;
    struct handed h;
    double next, t0;
    /* Started before the busy threads and asleep until they all run: a
     * thread that wakes from sleep gets the CPU soon, where one created among
     * 64 busy threads waits for the scheduler's whole period (~0.2 s here). */
    while (!atomic_load(&r->go))
        sleep_until(now_ns() + 1e6);
    next = now_ns();
    while (calls_made(r) < r->max_calls) {
        sleep_until(next);
        t0 = now_ns();
        next = next + PERIOD_NS > t0 ? next + PERIOD_NS : t0;
        if (t0 >= r->deadline || atomic_load(&r->stop))
            break;
        if (r->call != FREE_TREE) {
            misuse_call(r);
        } else if (queue_pop(r, &h)) {
            t0 = now_ns();
            flat_free(r->side, h.root);
            record(r, FREE_TREE, t0, now_ns());
        }
    }
    atomic_store(&r->stop, 1);
    return NULL;
}

/* Runs one cell: `threads` busy threads and the freer, until a cap. */
static void run_cell(struct run *r, int threads, const struct scale *sc)
{
    pthread_t busy_tid[MAX_THREADS], freer_tid;
    struct busy busy[MAX_THREADS];
    struct handed h;
    int i;
    atomic_store(&r->stop, 0);
    atomic_store(&r->running, 0);
    atomic_store(&r->go, 0);
    atomic_store(&r->queued, 0);
    r->head = 0;
    if (pthread_mutex_init(&r->lock, NULL) != 0)
        die("pthread_mutex_init failed");
    if (pthread_create(&freer_tid, NULL, freer_thread, r) != 0)
        die("pthread_create failed");
    for (i = 0; i < threads; i++) {
        busy[i].run = r;
        busy[i].index = i;
        if (pthread_create(&busy_tid[i], NULL, busy_thread, &busy[i]) != 0)
            die("pthread_create failed");
    }
    while (atomic_load(&r->running) < threads)
        sched_yield();
    r->deadline = now_ns() + sc->xt_seconds * 1e9;
    atomic_store(&r->go, 1);
    /* The watchdog: at the cap the busy threads stop, which lets a call
     * that waits for them finish. */
    while (!atomic_load(&r->stop) && now_ns() < r->deadline)
        sleep_until(now_ns() + 1e6);
    atomic_store(&r->stop, 1);
    pthread_join(freer_tid, NULL);
    for (i = 0; i < threads; i++)
        pthread_join(busy_tid[i], NULL);
    while (queue_pop(r, &h))
        flat_free(r->side, h.root);
    pthread_mutex_destroy(&r->lock);
}

/* ------------------------------------------------------------ results */

/* The samples of one row and one allocator, pooled over the rounds. */
struct pool {
    double *ns;
    long n, cut, capped_by_time;
    double round_median[MAX_ROUNDS];
    int rounds;
};

/* Runs one cell in a fresh process and adds what it timed to the pool. The
 * child prints "N CUT" and then the N times, in nanoseconds. */
static void cell_in_child(const struct scale *sc, enum side side, enum call c, int threads, struct pool *p)
{
    static char out[1 << 16];
    char count[16], *at, *end;
    const char *args[] = {"--xt-cell", sc->name, side_name[side], call_key[c], count, NULL};
    long n, cut, i;
    snprintf(count, sizeof count, "%d", threads);
    run_self(args, out, sizeof out);
    n = strtol(out, &at, 10);
    cut = strtol(at, &at, 10);
    if (n < 0 || n > sc->xt_frees || cut < 0 || cut > n)
        die("bad output from bench --xt-cell: %.40s", out);
    for (i = 0; i < n; i++) {
        p->ns[p->n + i] = strtod(at, &end);
        if (end == at)
            die("bench --xt-cell printed %ld times of %ld", i, n);
        at = end;
    }
    p->round_median[p->rounds++] = n > 0 ? quantile_sorted(p->ns + p->n, n, 0.5) : 0;
    p->n += n;
    p->cut += cut;
    p->capped_by_time += n < sc->xt_frees;
}

struct summary {
    double median, p99, max;
    const char *bound; /* "≥" when a call was cut short by the cap, else "" */
};

static struct summary summarize(const struct pool *p)
{
    struct summary s = {0, 0, 0, p->cut > 0 ? "≥" : ""};
    double *v;
    if (p->n == 0)
        return s;
    v = c_alloc((size_t)p->n * sizeof *v);
    memcpy(v, p->ns, (size_t)p->n * sizeof *v);
    s.median = quantile_sorted(v, p->n, 0.5) / 1e3;
    s.p99 = quantile_sorted(v, p->n, 0.99) / 1e3;
    s.max = v[p->n - 1] / 1e3;
    free(v);
    return s;
}

static const char *us_cell(char buf[TABLE_CELL], const struct pool *p, double v)
{
    if (p->n == 0)
        return cellf(buf, "none");
    return cellf(buf, "%s%.1f", p->cut > 0 ? "≥" : "", v);
}

/* "T=8 mapi 0.4..0.9" for the spread line: the rounds' medians, µs. */
static void spread_note(char *line, size_t size, const char *row, const char *side, const struct pool *p)
{
    double lo = 0, hi = 0;
    int i;
    size_t used = strlen(line);
    if (p->rounds < 2 || p->n == 0)
        return;
    for (i = 0; i < p->rounds; i++) {
        if (i == 0 || p->round_median[i] < lo)
            lo = p->round_median[i];
        if (i == 0 || p->round_median[i] > hi)
            hi = p->round_median[i];
    }
    snprintf(line + used, size - used, "%s%s %s %.1f–%.1f", used ? "; " : "", row, side, lo / 1e3, hi / 1e3);
}

static void cap_note(char *line, size_t size, const char *row, const char *side, const struct pool *p)
{
    size_t used = strlen(line);
    if (p->capped_by_time == 0 && p->cut == 0)
        return;
    snprintf(line + used, size - used, "%s%s %s: %ld calls, %ld round%s stopped by time", used ? "; " : "", row,
             side, p->n, p->capped_by_time, p->capped_by_time == 1 ? "" : "s");
    used = strlen(line);
    if (p->cut > 0)
        snprintf(line + used, size - used, ", %ld cut short by the cap", p->cut);
}

int crossthread_child(const struct scale *sc, const char *side, const char *call, const char *threads)
{
    struct run r;
    int c, t = (int)strtol(threads, NULL, 10);
    long i;
    memset(&r, 0, sizeof r);
    r.side = strcmp(side, "mapi") == 0 ? MAPI : strcmp(side, "malloc") == 0 ? MALLOC : SIDES;
    for (c = 0; c < CALLS && strcmp(call, call_key[c]) != 0; c++)
        ;
    if (r.side == SIDES || c == CALLS || t < 1 || t > MAX_THREADS || (c != FREE_TREE && r.side != MAPI))
        die("bad --xt-cell arguments");
    r.call = (enum call)c;
    r.max_calls = sc->xt_frees;
    r.ns[c] = c_alloc((size_t)sc->xt_frees * sizeof *r.ns[c]);
    run_cell(&r, t, sc);
    printf("%ld %ld\n", r.n[c], r.cut[c]);
    for (i = 0; i < r.n[c]; i++)
        printf("%.0f\n", r.ns[c][i]);
    free(r.ns[c]);
    return 0;
}

void crossthread_rows(const struct scale *sc)
{
    static const int busy_threads[] = {2, 8, 16, 64};
    enum { ROWS = sizeof busy_threads / sizeof busy_threads[0] };
    struct pool pools[ROWS][2], misuse[CALLS];
    struct table t;
    char b[12][TABLE_CELL], spread[2048] = "", caps[2048] = "", row[64];
    int rounds = sc->xt_rounds < MAX_ROUNDS ? sc->xt_rounds : MAX_ROUNDS, round, i, k, c;
    long total = (long)rounds * sc->xt_frees;
    double started = now_ns();

    memset(pools, 0, sizeof pools);
    memset(misuse, 0, sizeof misuse);
    for (i = 0; i < ROWS; i++)
        for (k = 0; k < 2; k++)
            pools[i][k].ns = c_alloc((size_t)total * sizeof(double));
    for (c = 0; c < CALLS; c++)
        misuse[c].ns = c_alloc((size_t)total * sizeof(double));

    for (round = 0; round < rounds; round++) {
        for (i = 0; i < ROWS; i++)
            for (k = 0; k < 2; k++) {
                /* k = 0 is libmapi32 in even rounds, malloc in odd ones. */
                int side_k = (k + round) % 2;
                cell_in_child(sc, side_k == 0 ? MAPI : MALLOC, FREE_TREE, busy_threads[i], &pools[i][side_k]);
            }
        for (c = FOREIGN; c < CALLS; c++)
            cell_in_child(sc, MAPI, (enum call)c, 8, &misuse[c]);
    }

    printf("\n### Cross-thread frees among busy threads\n\n");
    table_init(&t, 0x1fe, 11, "workload", "malloc µs", "malloc p99", "malloc max", "libmapi32 µs", "libmapi32 p99",
               "libmapi32 max", "mapi/malloc", "calls (mapi, malloc)", "target", "met?");
    for (i = 0; i < ROWS; i++) {
        struct summary m = summarize(&pools[i][0]), c0 = summarize(&pools[i][1]);
        const char *target = "—", *met = "—";
        double ratio = c0.median > 0 ? m.median / c0.median : 0;
        if (busy_threads[i] == 8) {
            target = "≤10× malloc";
            met = pools[i][0].n == 0 ? "no data" : ratio <= 10 && pools[i][0].cut == 0 ? "yes" : "no";
        } else if (busy_threads[i] > 8) {
            target = "no free over 1 ms";
            met = pools[i][0].n == 0 ? "no data" : m.max <= 1000 && pools[i][0].cut == 0 ? "yes" : "no";
        }
        snprintf(row, sizeof row, "cross-thread free, %d busy threads", busy_threads[i]);
        table_row(&t, row, us_cell(b[0], &pools[i][1], c0.median), us_cell(b[1], &pools[i][1], c0.p99),
                  us_cell(b[2], &pools[i][1], c0.max), us_cell(b[3], &pools[i][0], m.median),
                  us_cell(b[4], &pools[i][0], m.p99), us_cell(b[5], &pools[i][0], m.max),
                  pools[i][0].n && pools[i][1].n ? cellf(b[6], "%s%.1f", m.bound, ratio) : "—",
                  cellf(b[7], "%ld, %ld", pools[i][0].n, pools[i][1].n), target, met);
        snprintf(row, sizeof row, "T=%d", busy_threads[i]);
        spread_note(spread, sizeof spread, row, "mapi", &pools[i][0]);
        spread_note(spread, sizeof spread, row, "malloc", &pools[i][1]);
        cap_note(caps, sizeof caps, row, "mapi", &pools[i][0]);
        cap_note(caps, sizeof caps, row, "malloc", &pools[i][1]);
    }
    for (c = FOREIGN; c < CALLS; c++) {
        struct summary m = summarize(&misuse[c]);
        snprintf(row, sizeof row, "%s, 8 busy threads", call_name[c]);
        table_row(&t, row, "—", "—", "—", us_cell(b[3], &misuse[c], m.median), us_cell(b[4], &misuse[c], m.p99),
                  us_cell(b[5], &misuse[c], m.max), "—", cellf(b[7], "%ld, —", misuse[c].n), "≤20 µs (median)",
                  misuse[c].n == 0 ? "no data" : m.median <= 20 && misuse[c].cut == 0 ? "yes" : "no");
        spread_note(spread, sizeof spread, call_name[c], "mapi", &misuse[c]);
        cap_note(caps, sizeof caps, call_name[c], "mapi", &misuse[c]);
    }
    table_print(&t);
    printf("\nµs = microseconds per call: median, 99th percentile and maximum of every timed call of %d round%s; "
           "busy threads build and free trace-shaped trees, another thread frees one of theirs about once a "
           "millisecond (the misuse rows: a malloc'd block, a root it freed itself, a child of theirs).\n",
           rounds, rounds == 1 ? "" : "s");
    if (spread[0] != '\0')
        printf("spread, the rounds' medians in µs: %s.\n", spread);
    printf("caps: each cell stops after %ld calls or %.2g s a round, the busy threads then stop and a call still "
           "waiting for them finishes (≥: a statistic that includes such a call, a lower bound). %s%s\n",
           sc->xt_frees, sc->xt_seconds, caps[0] ? "Stopped by time: " : "No cell reached its time cap.", caps);
    printf("cross-thread rows: %.1f s\n", (now_ns() - started) / 1e9);

    for (i = 0; i < ROWS; i++)
        for (k = 0; k < 2; k++)
            free(pools[i][k].ns);
    for (c = 0; c < CALLS; c++)
        free(misuse[c].ns);
}
