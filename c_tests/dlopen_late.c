/*
 * dlopen_late.c: libmapi32 loaded with dlopen() into a process whose
 * threads already run, as Python's ctypes or a plugin host loads it.
 *
 * On x86-64 Linux the library keeps each thread's heap pointer in
 * initial-exec TLS, which the loader must then carve out of the static TLS
 * of every thread that already exists. These checks hold that it does: a
 * thread started before the dlopen() allocates, frees and exits cleanly.
 *
 * Usage: dlopen_late PATH-TO-libmapi32.so [test-name ...]
 */
#define _GNU_SOURCE
#include "harness.h"
#include "mapix.h"

#include <dlfcn.h>
#include <sched.h>

#define COUNT(array) (sizeof(array) / sizeof((array)[0]))

static const char *library_path;

struct mapi {
    LPMAPIALLOCATEBUFFER allocate;
    LPMAPIALLOCATEMORE allocate_more;
    LPMAPIFREEBUFFER free_buffer;
    SCODE (*stats)(MAPI32_STATS *);
};

static struct mapi mapi;

static void load(void)
{
    void *library = dlopen(library_path, RTLD_NOW | RTLD_LOCAL);
    REQUIRE_MSG(library != NULL, "dlopen: %s", dlerror());
    /* POSIX: a function pointer may travel through void *. */
    *(void **)&mapi.allocate = dlsym(library, "MAPIAllocateBuffer");
    *(void **)&mapi.allocate_more = dlsym(library, "MAPIAllocateMore");
    *(void **)&mapi.free_buffer = dlsym(library, "MAPIFreeBuffer");
    *(void **)&mapi.stats = dlsym(library, "mapi32_stats");
    REQUIRE(mapi.allocate && mapi.allocate_more && mapi.free_buffer && mapi.stats);
}

enum { TREES = 20000, EARLY_THREADS = 2 };

static atomic_int loaded;

/* The early threads start before the library is there; they wait for it. */
static void wait_until_loaded(void)
{
    while (!atomic_load(&loaded))
        sched_yield();
}

/* Builds and frees TREES small trees; returns the number of failed calls. */
static void *build_trees(void *unused)
{
    long failures = 0;
    (void)unused;
    wait_until_loaded();
    for (int i = 0; i < TREES; i++) {
        LPVOID root = NULL, child = NULL;
        failures += mapi.allocate(32, &root) != S_OK;
        failures += mapi.allocate_more(16, root, &child) != S_OK;
        failures += mapi.free_buffer(root) != S_OK;
    }
    return (void *)failures;
}

/* Threads that began before the library was loaded use it like any other. */
static void threads_older_than_the_library_use_it(void)
{
    pthread_t early[EARLY_THREADS];
    MAPI32_STATS stats = {.cbSize = sizeof stats};
    for (int i = 0; i < EARLY_THREADS; i++)
        REQUIRE(pthread_create(&early[i], NULL, build_trees, NULL) == 0);
    load();
    atomic_store(&loaded, 1);
    long failures = (long)build_trees(NULL);
    for (int i = 0; i < EARLY_THREADS; i++) {
        void *theirs;
        REQUIRE(pthread_join(early[i], &theirs) == 0);
        failures += (long)theirs;
    }
    CHECK_MSG(failures == 0, "%ld calls failed", failures);
    REQUIRE(mapi.stats(&stats) == S_OK);
    CHECK(stats.live_roots == 0 && stats.live_children == 0);
    CHECK(stats.total_allocations == 2ull * TREES * (EARLY_THREADS + 1));
}

/* A root made by a thread that exited is still freed by another thread. */
static void *make_one_root(void *out)
{
    wait_until_loaded();
    return (void *)(long)mapi.allocate(64, (LPVOID *)out);
}

static void roots_outlive_threads_older_than_the_library(void)
{
    pthread_t early;
    LPVOID root = NULL, child = NULL;
    void *status;
    MAPI32_STATS stats = {.cbSize = sizeof stats};
    REQUIRE(pthread_create(&early, NULL, make_one_root, &root) == 0);
    load();
    atomic_store(&loaded, 1);
    REQUIRE(pthread_join(early, &status) == 0);
    REQUIRE((long)status == S_OK && root != NULL);
    CHECK(mapi.allocate_more(8, root, &child) == S_OK);
    CHECK(mapi.free_buffer(root) == S_OK);
    REQUIRE(mapi.stats(&stats) == S_OK);
    CHECK(stats.live_roots == 0 && stats.live_children == 0);
}

int main(int argc, char **argv)
{
    static const struct test_case tests[] = {
        FORKED(threads_older_than_the_library_use_it),
        FORKED(roots_outlive_threads_older_than_the_library),
    };
    if (argc < 2) {
        fprintf(stderr, "usage: %s PATH-TO-libmapi32.so [test-name ...]\n", argv[0]);
        return 2;
    }
    library_path = argv[1];
    argv[1] = argv[0];
    return harness_main(tests, COUNT(tests), argc - 1, argv + 1);
}
