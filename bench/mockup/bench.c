/*
 * bench.c: the registry-v3 mock-up (mockup.c, linked in as the MAPI side)
 * against plain malloc/free and talloc, in one process. A copy of
 * bench/bench.c with the same workloads and the same alternating rounds;
 * changed: the thread rows are gone (the mock-up builds no cross-thread
 * path), the targets are those the mock-up is to test, and `--count`
 * runs one workload alone for callgrind.
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
 *         bench --rss SIDE roots|children N
 *                          internal: one memory measurement in a fresh process
 *         bench --count WORKLOAD SIDE N
 *                          one workload alone (pair64, tree17, wide = trees
 *                          of 1,000 children, trace), warmed up, then N units
 *                          (pairs, trees, children, roots) inside counted(),
 *                          for valgrind --tool=callgrind --toggle-collect=counted
 *
 * Performance is reported, never asserted: the "met?" column is for reading,
 * and the program exits 0 whatever it measured.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <gnu/libc-version.h>
#endif

#include <talloc.h>

#include "mapix.h"

/* ---------------------------------------------------------------- basics */

enum side { MAPI, MALLOC, TALLOC, SIDES };
static const char *const side_name[SIDES] = {"mapi", "malloc", "talloc"};

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

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

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *v, int n)
{
    double s[64];
    if (n > 64)
        n = 64;
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

typedef void (*loop_fn_t)(enum side, long);

/* ---------------------------------------------------------------- scale */

struct scale {
    const char *name;
    int rounds;
    long pair64;      /* pairs per timed batch */
    long tree17;      /* trees per timed batch */
    long wide_total;  /* children per timed batch (at least one tree) */
    long trace_roots; /* roots in the replayed trace */
    long rss_blocks;  /* live blocks for the memory rows */
    long wide_max;    /* the widest tree (1 M, or less in smoke mode) */
};

/* Batches of ~5..50 ms (the 1M-wide tree is one batch on its own), many
 * rounds: a noisy machine spoils a few of them, and the median drops those. */
static const struct scale FULL = {"full", 15, 500000, 30000, 200000, 100000, 1000000, 1000000};
static const struct scale QUICK = {"quick", 3, 200000, 10000, 100000, 40000, 250000, 1000000};
static const struct scale SMOKE = {"smoke", 1, 1000, 100, 20000, 4000, 10000, 10000};

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

/* A root of 32 bytes with `children` children of 32 bytes, all under the root.
 * The malloc tree is what a C programmer writes to free a tree in one call:
 * each child holds the address of the one before, the root the last one. */
static void *flat_build(enum side side, long children)
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

static void flat_free(enum side side, void *root)
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
 * The provider trace: a replayed provider test suite makes ~1.15 M
 * MAPIAllocateBuffer and ~1.10 M MAPIAllocateMore calls; 55 % of roots never
 * get a child, 43 % get one, 2 % two, and a thin tail hundreds to thousands.
 * Here 1 root in 3200 gets 100..3000 children (uniform), which brings the mean
 * to ~0.95 children a root, as in the trace. Seeded: every run, and every
 * allocator, replays the same sequence. Results are not freed at once: the
 * last TRACE_LIVE trees stay alive, as a client keeps what a provider returned.
 */
#define TRACE_LIVE 64

struct trace {
    long roots;
    unsigned short *children;
    long total_children, zero, one, two, tail, widest;
};
static struct trace trace_plan;

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15u);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}

static void trace_make(struct trace *t, long roots)
{
    uint64_t rng = 0x4D415049; /* "MAPI" */
    long r;
    t->roots = roots;
    t->children = c_alloc((size_t)roots * sizeof *t->children);
    t->total_children = t->zero = t->one = t->two = t->tail = t->widest = 0;
    for (r = 0; r < roots; r++) {
        uint64_t u = splitmix64(&rng);
        unsigned short k;
        if (u % 3200 == 0)
            k = (unsigned short)(100 + (u >> 32) % 2901), t->tail++;
        else if ((u >> 20) % 100 < 55)
            k = 0, t->zero++;
        else if ((u >> 20) % 100 < 98)
            k = 1, t->one++;
        else
            k = 2, t->two++;
        t->children[r] = k;
        t->total_children += k;
        if (k > t->widest)
            t->widest = k;
    }
}

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

/* ---------------------------------------------------------------- memory */

static long resident_bytes(void)
{
    long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL || fscanf(f, "%ld %ld", &size, &resident) != 2)
        die("cannot read /proc/self/statm");
    fclose(f);
    return resident * sysconf(_SC_PAGESIZE);
}

/* In a fresh process: resident bytes per live 32-byte block, N roots or one
 * root with N children (malloc has no children: N blocks either way), or
 * per tree of N trees of a 32-byte root and one 32-byte child (the trace's
 * commonest tree with children: malloc's side is two blocks). */
static int rss_child(const char *side_arg, const char *kind, long n)
{
    enum side side = SIDES;
    int children = strcmp(kind, "children") == 0, trees = strcmp(kind, "trees") == 0;
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
    for (i = 0; i < n && trees; i++)
        keep[i] = flat_build(side, 1);
    for (i = 0; i < n && !trees; i++) {
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
static const char *self_path = "/proc/self/exe";

/* Runs `bench --rss SIDE KIND N` as a new process, so that no heap mixes. */
static double rss_per_block(enum side side, const char *kind, long n)
{
    int fd[2], status;
    char buf[64], count[32];
    ssize_t got;
    double bytes;
    pid_t pid;
    snprintf(count, sizeof count, "%ld", n);
    if (pipe(fd) != 0)
        die("pipe: %s", strerror(errno));
    fflush(stdout);
    pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        execl(self_path, "bench", "--rss", side_name[side], kind, count, (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    got = read(fd[0], buf, sizeof buf - 1);
    close(fd[0]);
    if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0 || got <= 0)
        die("memory measurement for %s failed", side_name[side]);
    buf[got] = '\0';
    bytes = strtod(buf, NULL);
    return bytes;
}

/* ---------------------------------------------------------------- count */

/* The instructions callgrind counts are those under this function only. */
static __attribute__((noinline)) void counted(loop_fn_t loop, enum side side, long n)
{
    loop(side, n);
    __asm__ __volatile__("" : : : "memory");
}

static void wide1k(enum side side, long children) { wide(side, 1000, children); }

static int count_child(const char *what, const char *side_arg, long n)
{
    enum side side = SIDES;
    loop_fn_t loop;
    int i;
    for (i = 0; i < SIDES; i++)
        if (strcmp(side_arg, side_name[i]) == 0)
            side = (enum side)i;
    if (strcmp(what, "pair64") == 0)
        loop = pair64;
    else if (strcmp(what, "tree17") == 0)
        loop = tree17;
    else if (strcmp(what, "wide") == 0)
        loop = wide1k;
    else if (strcmp(what, "trace") == 0)
        loop = trace;
    else
        die("bad --count workload %s", what);
    if (side == SIDES || n <= 0)
        die("bad --count arguments");
    /* The trace plan for N roots is made outside counted(); two warm-up
     * runs leave the pages a steady state keeps. */
    if (loop == trace)
        trace_make(&trace_plan, n);
    loop(side, n);
    loop(side, n);
    counted(loop, side, n);
    return 0;
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

/* ---------------------------------------------------------------- table */

#define ROWS 24
#define COLS 8
static char table[ROWS][COLS][64];
static int nrows;

static void row(const char *name, const char *m, const char *c, const char *t, const char *rm, const char *rt,
                const char *target, const char *met)
{
    const char *cells[COLS] = {name, m, c, t, rm, rt, target, met};
    int i;
    for (i = 0; i < COLS; i++)
        snprintf(table[nrows][i], sizeof table[0][0], "%s", cells[i]);
    nrows++;
}

static const char *fmt(char *buf, const char *f, double v)
{
    snprintf(buf, 24, f, v);
    return buf;
}

/* How far the rounds of one cell disagree: interquartile range / median. */
static double noise(const double *v, int n)
{
    double s[64];
    if (n < 4)
        return 0;
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    return (s[(3 * n) / 4] - s[n / 4]) / median(v, n);
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
    if (max_vs_malloc > 0) {
        int ok_m = rm <= max_vs_malloc, ok_t = max_vs_talloc <= 0 || rt <= max_vs_talloc;
        if (max_vs_talloc > 0)
            snprintf(target, sizeof target, "≤%.2g× malloc, ≤%.2g× talloc", max_vs_malloc, max_vs_talloc);
        else
            snprintf(target, sizeof target, "≤%.2g× malloc", max_vs_malloc);
        snprintf(met, sizeof met, "%s", ok_m && ok_t ? "yes" : ok_m ? "no (talloc)" : ok_t ? "no (malloc)" : "no");
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

/* Display width of a UTF-8 string: its lead bytes. */
static int display_width(const char *p)
{
    int len = 0;
    for (; *p; p++)
        len += ((unsigned char)*p & 0xC0) != 0x80;
    return len;
}

/* A Markdown table, padded to line up in a terminal too: numbers to the right. */
static void print_table(void)
{
    int width[COLS] = {0}, r, c, pad, numeric;
    for (r = 0; r < nrows; r++)
        for (c = 0; c < COLS; c++)
            if (r != 1 && display_width(table[r][c]) > width[c])
                width[c] = display_width(table[r][c]);
    for (r = 0; r < nrows; r++) {
        for (c = 0; c < COLS; c++) {
            numeric = c >= 1 && c <= 5;
            printf("%s", c == 0 ? "| " : " | ");
            if (r == 1) {
                for (pad = 0; pad < width[c] - numeric; pad++)
                    putchar('-');
                printf("%s", numeric ? ":" : "");
                continue;
            }
            pad = width[c] - display_width(table[r][c]);
            if (numeric)
                printf("%*s%s", pad, "", table[r][c]);
            else
                printf("%s%*s", table[r][c], pad, "");
        }
        printf(" |\n");
    }
}

/* ---------------------------------------------------------------- main */

/* /proc/loadavg's first three fields: other work on the machine skews the
 * numbers, the 2-thread rows most. */
static const char *loadavg(void)
{
    static char buf[64];
    FILE *f = fopen("/proc/loadavg", "r");
    double a = 0, b = 0, c = 0;
    if (f == NULL || fscanf(f, "%lf %lf %lf", &a, &b, &c) != 3)
        snprintf(buf, sizeof buf, "unknown");
    else
        snprintf(buf, sizeof buf, "%.2f %.2f %.2f", a, b, c);
    if (f != NULL)
        fclose(f);
    return buf;
}

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

int main(int argc, char **argv)
{
    const struct scale *sc = &FULL;
    const char *quick = getenv("BENCH_QUICK");
    double started = now_ns(), mem[3][SIDES];
    char b[8][48], label[64];
    int i, s, rounds;

    if (strchr(argv[0], '/') != NULL)
        self_path = argv[0];
    if (argc == 5 && strcmp(argv[1], "--rss") == 0)
        return rss_child(argv[2], argv[3], strtol(argv[4], NULL, 10));
    if (argc == 5 && strcmp(argv[1], "--count") == 0)
        return count_child(argv[2], argv[3], strtol(argv[4], NULL, 10));
    if (quick != NULL && *quick != '\0' && strcmp(quick, "0") != 0)
        sc = &QUICK;
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            sc = &QUICK;
        else if (strcmp(argv[i], "--smoke") == 0)
            sc = &SMOKE;
        else
            die("usage: bench [--quick | --smoke]");
    }
    rounds = sc->rounds;
    setvbuf(stdout, NULL, _IOLBF, 0);
    print_machine(sc);

    /* Memory first, each side in a process of its own. */
    for (s = 0; s < SIDES; s++) {
        mem[0][s] = rss_per_block((enum side)s, "roots", sc->rss_blocks);
        mem[1][s] = rss_per_block((enum side)s, "children", sc->rss_blocks);
        mem[2][s] = rss_per_block((enum side)s, "trees", sc->rss_blocks / 2);
    }

    trace_make(&trace_plan, sc->trace_roots);
    printf("trace:   %ld roots, %ld children (%.3f a root): %.1f %% none, %.1f %% one, %.1f %% two, "
           "%ld roots with 100..3000 (widest %ld)\n",
           trace_plan.roots, trace_plan.total_children, (double)trace_plan.total_children / (double)trace_plan.roots,
           100.0 * (double)trace_plan.zero / (double)trace_plan.roots,
           100.0 * (double)trace_plan.one / (double)trace_plan.roots,
           100.0 * (double)trace_plan.two / (double)trace_plan.roots, trace_plan.tail, trace_plan.widest);

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
        double flat[SIDES];

        for (i = 0; i < 3; i++)
            widths[i].units = (double)(wide_trees(widths[i].arg, wide_batch) * widths[i].arg);
        measure(single, 3, rounds);
        measure(widths, 3, rounds);

        row("workload", "malloc ns", "mock-up ns", "talloc ns", "mock/malloc", "mock/talloc", "target", "met?");
        row("---", "---:", "---:", "---:", "---:", "---:", "---", "---");
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
        time_row("trace (per root)", &single[2], rounds, 1.0, 0);
        for (i = 0; i < 3; i++) {
            double extra = mem[i][MAPI] - mem[i][MALLOC], limit = i == 2 ? 16 : 8;
            snprintf(label, sizeof label, "memory: live 32-byte %s (bytes each)",
                     i == 0 ? "roots" : i == 1 ? "children" : "root + 1 child");
            snprintf(b[5], sizeof b[5], "≤ malloc + %.0f B", limit);
            row(label, fmt(b[0], "%.1f", mem[i][MALLOC]), fmt(b[1], "%.1f", mem[i][MAPI]),
                fmt(b[2], "%.1f", mem[i][TALLOC]), fmt(b[3], "%+.1f B", extra),
                fmt(b[4], "%+.1f B", mem[i][MAPI] - mem[i][TALLOC]), b[5], extra <= limit ? "yes" : "no");
        }
        printf("\n");
        print_table();
    }
    printf("\nns = nanoseconds per unit, median of %d round%s; a ratio below 1 favours the mock-up.\n", rounds,
           rounds == 1 ? "" : "s");
    if (rounds >= 4)
        printf("noise, interquartile range / median of the noisiest side: %s.\n", noise_line);
    printf("memory = resident bytes (RSS growth) per live block, %ld blocks (%ld trees for root + 1 child), "
           "each allocator in a fresh process.\n",
           sc->rss_blocks, sc->rss_blocks / 2);
    printf("load average at the end: %s; bench: done in %.1f s\n", loadavg(), (now_ns() - started) / 1e9);
    return 0;
}
