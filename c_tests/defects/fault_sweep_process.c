/*
 * fault_sweep_process.c: out of memory anywhere in the process, swept.
 *
 * SPEC §3: running out of memory anywhere — the registry's own bookkeeping,
 * the set-up of a thread's first call (thread-exit hooks, thread-local
 * storage) — is MAPI_E_NOT_ENOUGH_MEMORY, never an abort. c_tests/fault_sweep.c
 * fails the library's own requests; this sweep fails any request of the
 * process (failing_malloc.h: malloc, calloc, realloc, the aligned ones and
 * anonymous mmap, whoever makes it: libmapi32, glibc on its behalf, the
 * loader), one per run, in five phases of a program's life:
 *
 *   thread start    a new thread's first calls (own root and child, a child
 *                   on another thread's root)
 *   thread exit     threads exiting, one with a live heap and one whose first
 *                   call comes from a pthread_key destructor
 *   fork            fork() while two threads allocate; the child frees a block
 *                   from before the fork and allocates
 *   library growth  1,500 trees of mixed sizes, some mmapped far apart, so
 *                   the registry's tables grow and shrink
 *   client blocks   a tree of every kind of call: AllocateMore on root and
 *                   child, ReallocateBuffer of root, child and NULL, frees
 *
 * Each phase runs without a failure to count its requests (R), then once
 * per n (every n up to R, or R / MAX_RUNS apart when R is larger) in a
 * forked child with a deadline: the phase once to warm up, then REPEATS
 * times with the nth request from the start of the phase failing. In every
 * run, every MAPI call must return S_OK or MAPI_E_NOT_ENOUGH_MEMORY (with
 * *lppBuffer NULL); the process must neither crash, abort nor hang; once
 * everything is freed mapi32_stats must show nothing live; and the last two
 * repeats must not each leave more C blocks alive than the one before (a
 * cache may grow now and then, as the registry's spare leaves do until
 * their cap; a leak grows with every repeat). Without any
 * failure nothing may grow either: a phase that leaks anyway is reported
 * once.
 *
 * Registry v3 asks the C allocator for nothing (the sweep finds out at
 * start whether its first call maps pages, so it serves either registry): its requests are anonymous mmaps of its own pages, made when a
 * thread first needs a heap and when a heap outgrows its segments, and
 * never again for memory it already holds. A warmed-up phase would make
 * none, so under v3 the failing run is the first, in a process that has
 * never called the library (the sweep's own makes no call), and REPEATS
 * runs without a failure follow it. The leak checks are then: C blocks as
 * above, and pages: the bytes mapped (failing_malloc.h's mapped_bytes) must
 * not grow in each of the last two repeats either. A refused request cannot
 * lose a mapping made before it (each is a mapping of its own, linked only
 * once made), but it changes which blocks the failing run held, and so
 * where freed spans lie: the runs after it may keep a segment more than
 * they would have, for good but not growing. The report says how much at
 * most, and how many failures were the library's own page requests; every
 * phase must have had some.
 *
 * Usage: fault_sweep_process [--list] [phase ...]; prints one line
 * "fault-sweep-process: N failures injected: ...".
 */
#define _GNU_SOURCE

#define HARNESS_TIMEOUT_SECONDS 60
#include "harness.h"

#include <dlfcn.h>
#include <limits.h>
#include <sys/mman.h>

#include "child.h"
#include "failing_malloc.h"
#include "mapix.h"

/* Runs per phase at most; n is spread over the phase's requests beyond it.
 * Fewer for fork, whose runs are the slowest. */
#define MAX_RUNS 250
#define MAX_FORK_RUNS 100
/* A phase stops after this many failed runs: the first few say it all, and
 * a phase that hangs every time must not take MAX_RUNS deadlines. */
#define MOST_REPORTED 4
#define RUN_SECONDS 5
#define STACK_SIZE (128u * 1024u)
/* Bigger than a v3 segment (4 MiB), so that it is a page request of its own. */
#define BIG_BLOCK (5u << 20)

/* Whether the library takes its memory as pages of its own (v3), found out
 * at start (pages_or_malloc), so that the sweep serves either registry. */
static int pages_of_its_own;

/* What a run's processes tell the sweep, in memory shared with them. */
struct run_report {
    struct injection_log log;
    unsigned long requests; /* seen by the phase while armed */
    long blocks_kept;       /* C blocks the last repeat of the run kept */
    long bytes_mapped;      /* by mmap through failing_malloc.h, at its end */
    long bytes_grown;       /* mapped by the last repeat, at the least */
    atomic_ulong requests_counted; /* under v3, children's requests too */
};

static struct run_report *report;
/* Problems found by the calls of this process (and its threads). */
static atomic_int problems;

static void problem(const char *what, const char *call, SCODE result)
{
    printf("    %s: %s (0x%08x)\n", call, what, (unsigned)result);
    atomic_fetch_add(&problems, 1);
}

/* A MAPI allocating call's result: success, or out of memory with *out NULL.
 * `out` is read here, after the call (an argument could be read before). */
static int allocated(const char *call, SCODE result, void *const *out)
{
    if (result == S_OK)
        return 1;
    if (result != MAPI_E_NOT_ENOUGH_MEMORY)
        problem("returned neither S_OK nor MAPI_E_NOT_ENOUGH_MEMORY", call, result);
    else if (*out != NULL)
        problem("failed and left *lppBuffer set", call, result);
    return 0;
}

/* Leaves *out untouched by the call under test: a refusal must set it NULL. */
static char unset_target;
#define UNSET ((void *)&unset_target)

/* MAPIFreeBuffer always returns 0; that it freed, the stats tell at the end. */
static void free_root(void *root)
{
    MAPIFreeBuffer(root);
}

/* The nth request from here fails; 0 counts them without failing any. */
static void arm(unsigned long nth)
{
    fail_in_process(nth != 0 ? nth : ULONG_MAX);
}

static void disarm(void)
{
    report->requests = stop_failing_in_process();
}

static void check_nothing_live(void)
{
    MAPI32_STATS stats;
    memset(&stats, 0, sizeof stats);
    stats.cbSize = sizeof stats;
    if (mapi32_stats(&stats) != S_OK || stats.live_roots != 0 || stats.live_children != 0) {
        printf("    %llu roots and %llu children still live after everything was freed\n",
               (unsigned long long)stats.live_roots, (unsigned long long)stats.live_children);
        atomic_fetch_add(&problems, 1);
    }
}

static int start_thread(pthread_t *thread, void *(*body)(void *), void *argument)
{
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setstacksize(&attributes, STACK_SIZE);
    int status = pthread_create(thread, &attributes, body, argument);
    pthread_attr_destroy(&attributes);
    return status;
}

/* --- thread start --- */

static void *first_calls(void *foreign_root)
{
    void *own = UNSET, *child = UNSET, *guest_child = UNSET;
    if (allocated("MAPIAllocateBuffer", MAPIAllocateBuffer(24, &own), &own))
        allocated("MAPIAllocateMore", MAPIAllocateMore(24, own, &child), &child);
    allocated("MAPIAllocateMore", MAPIAllocateMore(24, foreign_root, &guest_child), &guest_child);
    free_root(own);
    disarm(); /* the thread's exit is the next phase's */
    return NULL;
}

static void thread_start(unsigned long nth)
{
    void *root = UNSET;
    if (!allocated("MAPIAllocateBuffer", MAPIAllocateBuffer(8, &root), &root))
        return;
    arm(nth);
    pthread_t thread;
    /* pthread_create may fail for want of memory too: that is its business. */
    if (start_thread(&thread, first_calls, root) == 0)
        pthread_join(thread, NULL);
    else
        disarm();
    free_root(root);
}

/* --- thread exit --- */

static pthread_key_t exit_key;
static atomic_int exiters_ready;
/* How many of the threads may exit: one at a time, in order, so that the
 * nth request is the same one in every run. */
static atomic_int exiters_let_go;

static void calls_at_exit(void *unused)
{
    void *root = UNSET, *child = UNSET;
    (void)unused;
    if (allocated("MAPIAllocateBuffer", MAPIAllocateBuffer(40, &root), &root))
        allocated("MAPIAllocateMore", MAPIAllocateMore(40, root, &child), &child);
    free_root(root);
    /* Memory of its own (v3: pages no heap holds yet), on the way out. */
    void *big = UNSET;
    if (allocated("MAPIAllocateBuffer", MAPIAllocateBuffer(BIG_BLOCK, &big), &big))
        free_root(big);
}

static void wait_to_exit(int turn)
{
    atomic_fetch_add(&exiters_ready, 1);
    while (atomic_load(&exiters_let_go) <= turn)
        sched_yield();
}

/* Has a heap, leaves a live tree behind, and calls again on its way out. */
static void *exit_with_heap(void *kept)
{
    void **root = kept;
    if (allocated("MAPIAllocateBuffer", MAPIAllocateBuffer(16, root), root)) {
        void *child = UNSET;
        allocated("MAPIAllocateMore", MAPIAllocateMore(16, *root, &child), &child);
    }
    pthread_setspecific(exit_key, &exit_key);
    wait_to_exit(0);
    return NULL;
}

/* Makes its first call on its way out. */
static void *exit_with_first_call(void *unused)
{
    (void)unused;
    pthread_setspecific(exit_key, &exit_key);
    wait_to_exit(1);
    return NULL;
}

static void thread_exit(unsigned long nth)
{
    static int key_made;
    if (!key_made && pthread_key_create(&exit_key, calls_at_exit) != 0)
        return;
    key_made = 1;
    atomic_store(&exiters_ready, 0);
    atomic_store(&exiters_let_go, 0);
    void *kept = UNSET;
    pthread_t threads[2];
    if (start_thread(&threads[0], exit_with_heap, &kept) != 0)
        return;
    if (start_thread(&threads[1], exit_with_first_call, NULL) != 0) {
        atomic_store(&exiters_let_go, 1);
        pthread_join(threads[0], NULL);
        free_root(kept);
        return;
    }
    while (atomic_load(&exiters_ready) < 2)
        sched_yield();
    arm(nth);
    for (int turn = 0; turn < 2; turn++) {
        atomic_store(&exiters_let_go, turn + 1);
        pthread_join(threads[turn], NULL);
    }
    disarm();
    free_root(kept); /* a tree outlives the thread that built it */
}

/* --- fork --- */

/* Rounds each worker makes once the fork is under way: as many requests
 * each time, so that n means about the same thing from run to run. */
enum { ROUNDS_AROUND_FORK = 40 };
static atomic_int workers_ready;
static atomic_int workers_go;

static void *allocate_around_fork(void *unused)
{
    (void)unused;
    for (int round = -1; round < ROUNDS_AROUND_FORK; round++) {
        void *root = UNSET, *child = UNSET;
        if (allocated("MAPIAllocateBuffer", MAPIAllocateBuffer(32, &root), &root))
            allocated("MAPIAllocateMore", MAPIAllocateMore(32, root, &child), &child);
        free_root(root);
        if (round == -1) {
            /* Each worker has its heap before the armed part. */
            atomic_fetch_add(&workers_ready, 1);
            while (!atomic_load(&workers_go))
                sched_yield();
        }
    }
    return NULL;
}

static int child_after_fork(void *before)
{
    /* Blocks of threads caught mid-call stay live here: only calls count. */
    free_root(before);
    void *root = UNSET, *child = UNSET;
    if (allocated("MAPIAllocateBuffer", MAPIAllocateBuffer(16, &root), &root))
        allocated("MAPIAllocateMore", MAPIAllocateMore(16, root, &child), &child);
    free_root(root);
    /* Memory the parent never had (v3: pages asked for in the child). */
    void *big = UNSET;
    if (allocated("MAPIAllocateBuffer", MAPIAllocateBuffer(BIG_BLOCK, &big), &big))
        free_root(big);
    return atomic_load(&problems) != 0;
}

static void fork_phase(unsigned long nth)
{
    void *before = UNSET;
    if (!allocated("MAPIAllocateBuffer", MAPIAllocateBuffer(16, &before), &before))
        return;
    atomic_store(&workers_ready, 0);
    atomic_store(&workers_go, 0);
    pthread_t workers[2];
    int started = 0;
    while (started < 2 && start_thread(&workers[started], allocate_around_fork, NULL) == 0)
        started++;
    while (atomic_load(&workers_ready) < started)
        sched_yield();
    arm(nth);
    atomic_store(&workers_go, 1);
    struct child_outcome outcome = run_child(child_after_fork, before, RUN_SECONDS);
    for (int i = 0; i < started; i++)
        pthread_join(workers[i], NULL);
    disarm();
    if (!outcome.held) {
        printf("    the forked child %s\n", outcome.what);
        atomic_fetch_add(&problems, 1);
    }
    free_root(before);
}

/* --- library growth --- */

enum { GROWTH_TREES = 1500, LARGE_EVERY = 50, LARGE_SIZE = 256 * 1024 };

static void library_growth(unsigned long nth)
{
    static void *roots[GROWTH_TREES];
    arm(nth);
    for (unsigned i = 0; i < GROWTH_TREES; i++) {
        /* Every LARGE_EVERY-th root is mmapped by malloc, far from the rest. */
        ULONG size = i % LARGE_EVERY == 0 ? LARGE_SIZE : 16 + (i * 37) % 2000;
        roots[i] = UNSET;
        if (!allocated("MAPIAllocateBuffer", MAPIAllocateBuffer(size, &roots[i]), &roots[i]))
            continue;
        for (int c = 0; c < 2; c++) {
            void *child = UNSET;
            allocated("MAPIAllocateMore", MAPIAllocateMore(size / 2 + 8, roots[i], &child), &child);
        }
    }
    /* Freed in an order unlike allocation's, so tables empty unevenly. */
    for (unsigned i = 0; i < GROWTH_TREES; i += 2)
        free_root(roots[i]);
    for (unsigned i = 1; i < GROWTH_TREES; i += 2)
        free_root(roots[i]);
    disarm();
}

/* --- client blocks --- */

static void client_blocks(unsigned long nth)
{
    void *root = UNSET, *children[20], *moved = UNSET, *fresh = UNSET;
    arm(nth);
    if (allocated("MAPIAllocateBuffer", MAPIAllocateBuffer(100, &root), &root)) {
        for (int i = 0; i < 20; i++) {
            void *parent = i % 2 != 0 && children[i - 1] != NULL ? children[i - 1] : root;
            children[i] = UNSET;
            allocated("MAPIAllocateMore", MAPIAllocateMore((ULONG)(8 + 50 * i), parent, &children[i]), &children[i]);
        }
        if (children[3] != NULL)
            allocated("MAPIReallocateBuffer", MAPIReallocateBuffer(children[3], 3000, &moved), &moved);
        moved = UNSET;
        if (allocated("MAPIReallocateBuffer", MAPIReallocateBuffer(root, 5000, &moved), &moved))
            root = moved; /* the old root is gone, its children with the new */
    }
    if (allocated("MAPIReallocateBuffer", MAPIReallocateBuffer(NULL, 64, &fresh), &fresh))
        free_root(fresh);
    free_root(root);
    disarm();
}

/* --- the sweep --- */

struct phase {
    const char *name;
    void (*run)(unsigned long nth);
    unsigned long max_runs;
    unsigned long injected; /* failures injected in all its runs */
    unsigned long pages;    /* runs whose failure was the library's mmap */
};

static struct phase phases[] = {
    { "thread start", thread_start, MAX_RUNS, 0, 0 },
    { "thread exit", thread_exit, MAX_RUNS, 0, 0 },
    { "fork", fork_phase, MAX_FORK_RUNS, 0, 0 },
    { "library growth", library_growth, MAX_RUNS, 0, 0 },
    { "client blocks", client_blocks, MAX_RUNS, 0, 0 },
};

static struct phase *current_phase;

/* Runs of the phase with the failure: the first may settle a cache the
 * failure changed (a table the registry keeps, glibc's per-thread state);
 * memory that still grows from the second to the last is kept for good. */
#define REPEATS 4

/* What each of the last two repeats added to `after` (C blocks or bytes
 * mapped after each run), at the least: growth in both is a leak. */
static long kept_by_the_last(const long after[REPEATS + 1])
{
    long last = after[REPEATS] - after[REPEATS - 1], before_last = after[REPEATS - 1] - after[REPEATS - 2];
    long kept = last < before_last ? last : before_last;
    return kept > 0 ? kept : 0;
}

/* one_run for a library of its own pages: the failing run first (see the
 * top), then the repeats without. */
static int one_run_failing_first(unsigned long nth)
{
    long after[REPEATS + 1], mapped[REPEATS + 1];
    memset(report, 0, sizeof *report);
    current_phase->run(nth);
    unsigned long requests = report->requests;
    check_nothing_live();
    after[0] = live_blocks();
    mapped[0] = mapped_bytes();
    for (int repeat = 1; repeat <= REPEATS; repeat++) {
        current_phase->run(0);
        check_nothing_live();
        after[repeat] = live_blocks();
        mapped[repeat] = mapped_bytes();
    }
    report->requests = requests;
    report->bytes_mapped = mapped[REPEATS];
    report->bytes_grown = kept_by_the_last(mapped);
    report->blocks_kept = kept_by_the_last(after);
    return atomic_load(&problems) != 0;
}

/* In a forked child: the phase once to warm up, then REPEATS times with its
 * nth request failing (0: none). The report says what each of the last two
 * repeats kept, at the least: growth in both is a leak. A library of its
 * own pages is run the other way round. */
static int one_run(void *nth_pointer)
{
    unsigned long nth = *(unsigned long *)nth_pointer;
    long after[REPEATS + 1];
    if (pages_of_its_own)
        return one_run_failing_first(nth);
    current_phase->run(0);
    check_nothing_live();
    memset(report, 0, sizeof *report);
    after[0] = live_blocks();
    for (int repeat = 1; repeat <= REPEATS; repeat++) {
        current_phase->run(nth);
        check_nothing_live();
        after[repeat] = live_blocks();
    }
    report->blocks_kept = kept_by_the_last(after);
    return atomic_load(&problems) != 0;
}

static const char *library_of(void *address)
{
    Dl_info info;
    if (address == NULL || dladdr(address, &info) == 0 || info.dli_fname == NULL)
        return "?";
    const char *slash = strrchr(info.dli_fname, '/');
    return slash != NULL ? slash + 1 : info.dli_fname;
}

/* Whether the first failure of the run was a page request of libmapi32's. */
static int failed_a_page_request(void)
{
    if (atomic_load(&report->log.count) == 0)
        return 0;
    const struct injected_failure *first = &report->log.first[0];
    return strcmp(first->function, "mmap") == 0 && strncmp(library_of(first->caller), "libmapi32", 9) == 0;
}

static void describe_injection(char *text, size_t room)
{
    if (atomic_load(&report->log.count) == 0) {
        snprintf(text, room, "no request failed");
        return;
    }
    /* The last one described: a run ends at the failure that crashed it. */
    int count = atomic_load(&report->log.count);
    int max = (int)(sizeof report->log.first / sizeof report->log.first[0]);
    const struct injected_failure *last = &report->log.first[(count < max ? count : max) - 1];
    snprintf(text, room, "%s of %zu bytes from %s", last->function, last->size, library_of(last->caller));
}

static void sweep(struct phase *phase)
{
    current_phase = phase;
    unsigned long dry = 0;
    memset(report, 0, sizeof *report);
    struct child_outcome counting = run_child(one_run, &dry, RUN_SECONDS);
    REQUIRE_MSG(counting.held, "%s without any failure: %s", phase->name, counting.what);
    unsigned long requests = report->requests;
    REQUIRE_MSG(requests > 0, "%s made no request", phase->name);
    /* What the phase keeps each time with no failure at all is a leak too,
     * reported once (a failure's own leak cannot be told from it then). */
    long kept_anyway = report->blocks_kept, mapped_anyway = report->bytes_mapped, most_mapped = 0;
    CHECK_MSG(kept_anyway == 0, "%s keeps %ld C blocks each time, with no failure injected", phase->name,
              kept_anyway);
    CHECK_MSG(report->bytes_grown <= 0, "%s maps %ld bytes more each time, with no failure injected", phase->name,
              report->bytes_grown);

    unsigned long step = requests <= phase->max_runs ? 1 : (requests + phase->max_runs - 1) / phase->max_runs;
    int crashed = 0, leaked = 0;
    for (unsigned long nth = 1; nth <= requests && crashed < MOST_REPORTED; nth += step) {
        memset(report, 0, sizeof *report);
        struct child_outcome outcome = run_child(one_run, &nth, RUN_SECONDS);
        phase->injected += (unsigned long)atomic_load(&report->log.count);
        char what[160];
        describe_injection(what, sizeof what);
        if (!outcome.held) {
            crashed++;
            CHECK_MSG(0, "%s, request %lu of %lu failing (%s): %s", phase->name, nth, requests, what, outcome.what);
        } else if (kept_anyway == 0 && report->blocks_kept > 0 && leaked++ < MOST_REPORTED) {
            CHECK_MSG(0, "%s, request %lu of %lu failing (%s): each time, %ld C blocks kept", phase->name,
                      nth, requests, what, report->blocks_kept);
        } else if (report->bytes_grown > 0 && leaked++ < MOST_REPORTED) {
            CHECK_MSG(0, "%s, request %lu of %lu failing (%s): each time, %ld bytes more mapped", phase->name, nth,
                      requests, what, report->bytes_grown);
        }
        if (outcome.held && report->bytes_mapped - mapped_anyway > most_mapped)
            most_mapped = report->bytes_mapped - mapped_anyway;
        phase->pages += (unsigned long)failed_a_page_request();
    }
    printf("  %s: %lu requests, %lu failures injected", phase->name, requests, phase->injected);
    if (pages_of_its_own)
        printf(", %lu of them the library's page requests; at most %ld bytes kept mapped more than without a "
               "failure",
               phase->pages, most_mapped);
    printf("%s\n", crashed >= MOST_REPORTED ? " (stopped after the first failed runs)" : "");
    /* Under v3 a phase whose failures never reached the library's own
     * requests would prove nothing about it. */
    CHECK_MSG(!pages_of_its_own || phase->pages > 0, "%s: no page request of the library's was failed",
              phase->name);
}

static void thread_start_phase(void)
{
    sweep(&phases[0]);
}

static void thread_exit_phase(void)
{
    sweep(&phases[1]);
}

static void fork_of_the_process(void)
{
    sweep(&phases[2]);
}

static void library_growth_phase(void)
{
    sweep(&phases[3]);
}

static void client_blocks_phase(void)
{
    sweep(&phases[4]);
}

static const struct test_case tests[] = {
    IN_PROCESS(thread_start_phase),  IN_PROCESS(thread_exit_phase),   IN_PROCESS(fork_of_the_process),
    IN_PROCESS(library_growth_phase), IN_PROCESS(client_blocks_phase),
};

/* Whether a first MAPIAllocateBuffer maps pages through mmap (v3) rather
 * than asking malloc (today's registry): asked of a child, so that this
 * process still never calls the library. */
static int pages_or_malloc(void)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        long before = mapped_bytes();
        void *block = NULL;
        MAPIAllocateBuffer(16, &block);
        _exit(mapped_bytes() > before ? 1 : 0);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) {
        perror("fault-sweep-process: the probe for the library's memory");
        exit(1);
    }
    return WEXITSTATUS(status) == 1;
}

int main(int argc, char **argv)
{
    report = mmap(NULL, sizeof *report, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (report == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    use_injection_log(&report->log);
    pages_of_its_own = pages_or_malloc();
    if (pages_of_its_own) {
        /* Its requests at a fork are the child's: count them (a failure
         * armed before the fork may then come in both processes). */
        use_request_counter(&report->requests_counted);
    }
    printf("fault-sweep-process: the library takes its memory %s\n",
           pages_of_its_own ? "as pages of its own (mmap)" : "from the C allocator");
    int failed = harness_main(tests, sizeof tests / sizeof tests[0], argc, argv);
    unsigned long total = 0;
    for (size_t i = 0; i < sizeof phases / sizeof phases[0]; i++)
        total += phases[i].injected;
    printf("fault-sweep-process: %lu failures injected:", total);
    for (size_t i = 0; i < sizeof phases / sizeof phases[0]; i++)
        printf("%s %s %lu", i == 0 ? "" : ",", phases[i].name, phases[i].injected);
    printf(failed == 0 ? "; no abort, no hang, no leak\n" : "; %d phases FAILED (see above)\n", failed);
    return failed;
}
