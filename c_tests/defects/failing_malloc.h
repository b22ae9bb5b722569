/*
 * failing_malloc.h: a C allocator that refuses one chosen request, for the
 * defect tests' out-of-memory cases.
 *
 * Defining malloc and its family in the executable interposes them for the
 * whole process, as an LD_PRELOADed malloc would: libmapi32's requests,
 * glibc's own (thread-exit hooks, TLS, stdio) and the loader's after start-up
 * all come here. Each forwards to glibc's __libc_* functions, the replacement
 * interface glibc documents, until the chosen request, which fails as real
 * exhaustion does: NULL (or ENOMEM, or MAP_FAILED) with errno ENOMEM.
 *
 * Two ways to choose it:
 *   fail_on_this_thread(n)  the nth request from now made by the calling
 *                           thread (1 = its next one); other threads unharmed.
 *   fail_in_process(n)      the nth request from now made by any thread.
 * Either fires once, then injection is off again. The injection log tells
 * what failed and from where, so a test can say which request it broke;
 * live_blocks() how many blocks are alive, so it can tell a leak.
 *
 * Anonymous mmap is counted too (not glibc's own, which calls the kernel
 * directly, but any other caller's, the library's included): a library that
 * takes its pages from mmap must survive a refusal as it survives malloc's.
 * mapped_bytes() says how much such callers hold mapped (their anonymous
 * mmaps less their munmaps), so a test can tell pages lost from pages kept.
 *
 * Include in exactly one translation unit, not under a sanitizer or valgrind.
 */
#ifndef MAPI32_FAILING_MALLOC_H
#define MAPI32_FAILING_MALLOC_H

#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "libc_malloc.h"

/* The request that was made to fail, for the report. */
struct injected_failure {
    const char *function; /* "malloc", "calloc", ... */
    size_t size;
    void *caller; /* return address into whoever asked */
};

/* Every failure injected, the first few described. A test may place it in
 * memory shared with its forked children (use_injection_log) to learn what
 * failed in them, a child of theirs included. */
struct injection_log {
    atomic_int count;
    struct injected_failure first[4];
};

/* Requests to go before the one that fails on this thread; 0: none armed.
 * Initial-exec TLS of the executable: reading it allocates nothing. */
static __thread unsigned long thread_countdown;
/* The same for the process as a whole. */
static atomic_ulong process_countdown;
/* Counts requests while fail_in_process is armed, to size a sweep; a test
 * may place it in memory shared with its forked children
 * (use_request_counter) to count theirs too. */
static atomic_ulong own_process_requests;
static atomic_ulong *process_requests = &own_process_requests;
static struct injection_log own_injection_log;
static struct injection_log *injection_log = &own_injection_log;
/* C-allocator blocks alive: a count, where bytes would vary with the
 * chunk glibc happens to pick. */
static atomic_long blocks_alive;
/* Bytes mapped by anonymous mmap through here, less those unmapped. */
static atomic_long bytes_mapped;

static inline void fail_on_this_thread(unsigned long nth)
{
    thread_countdown = nth;
}

static inline void fail_in_process(unsigned long nth)
{
    atomic_store(process_requests, 0);
    atomic_store(&process_countdown, nth);
}

/* Disarms fail_in_process; returns the requests seen since it was armed. */
static inline unsigned long stop_failing_in_process(void)
{
    atomic_store(&process_countdown, 0);
    return atomic_load(process_requests);
}

static inline void use_injection_log(struct injection_log *log)
{
    injection_log = log;
}

static inline void use_request_counter(atomic_ulong *counter)
{
    process_requests = counter;
}

static inline long live_blocks(void)
{
    return atomic_load(&blocks_alive);
}

static inline long mapped_bytes(void)
{
    return atomic_load(&bytes_mapped);
}

/* Whether this request is the one to fail; counts it either way. */
static inline int should_fail(const char *function, size_t size, void *caller)
{
    int fail = 0;
    if (thread_countdown != 0 && --thread_countdown == 0)
        fail = 1;
    if (atomic_load_explicit(&process_countdown, memory_order_relaxed) != 0) {
        atomic_fetch_add(process_requests, 1);
        unsigned long left = atomic_load(&process_countdown);
        /* Exactly one thread takes the count from 1 to 0. */
        while (left != 0 && !atomic_compare_exchange_weak(&process_countdown, &left, left - 1)) {
        }
        if (left == 1)
            fail = 1;
    }
    if (fail) {
        int slot = atomic_fetch_add(&injection_log->count, 1);
        if (slot < (int)(sizeof injection_log->first / sizeof injection_log->first[0]))
            injection_log->first[slot] = (struct injected_failure){ function, size, caller };
        errno = ENOMEM;
    }
    return fail;
}

static void *counted(void *block)
{
    if (block != NULL)
        atomic_fetch_add(&blocks_alive, 1);
    return block;
}

#define CALLER __builtin_return_address(0)

void *malloc(size_t size)
{
    return should_fail("malloc", size, CALLER) ? NULL : counted(__libc_malloc(size));
}

void *calloc(size_t count, size_t size)
{
    return should_fail("calloc", count * size, CALLER) ? NULL : counted(__libc_calloc(count, size));
}

void *realloc(void *block, size_t size)
{
    if (should_fail("realloc", size, CALLER))
        return NULL;
    void *moved = __libc_realloc(block, size);
    if (block == NULL)
        counted(moved);
    else if (moved == NULL && size == 0)
        atomic_fetch_sub(&blocks_alive, 1); /* realloc(p, 0) freed p */
    return moved;
}

void *memalign(size_t alignment, size_t size)
{
    return should_fail("memalign", size, CALLER) ? NULL : counted(__libc_memalign(alignment, size));
}

void *aligned_alloc(size_t alignment, size_t size)
{
    return should_fail("aligned_alloc", size, CALLER) ? NULL : counted(__libc_memalign(alignment, size));
}

void *valloc(size_t size)
{
    return should_fail("valloc", size, CALLER) ? NULL : counted(__libc_valloc(size));
}

void *pvalloc(size_t size)
{
    return should_fail("pvalloc", size, CALLER) ? NULL : counted(__libc_pvalloc(size));
}

int posix_memalign(void **block, size_t alignment, size_t size)
{
    if (alignment == 0 || alignment % sizeof(void *) != 0 || (alignment & (alignment - 1)) != 0)
        return EINVAL;
    if (should_fail("posix_memalign", size, CALLER))
        return ENOMEM;
    void *fresh = counted(__libc_memalign(alignment, size));
    if (fresh == NULL)
        return ENOMEM;
    *block = fresh;
    return 0;
}

void free(void *block)
{
    if (block != NULL)
        atomic_fetch_sub(&blocks_alive, 1);
    __libc_free(block);
}

void *mmap(void *address, size_t length, int protection, int flags, int fd, off_t offset)
{
    if ((flags & MAP_ANONYMOUS) && should_fail("mmap", length, CALLER))
        return MAP_FAILED;
    long mapped = syscall(SYS_mmap, address, length, protection, flags, fd, offset);
    if ((flags & MAP_ANONYMOUS) && (void *)mapped != MAP_FAILED)
        atomic_fetch_add(&bytes_mapped, (long)length);
    return (void *)mapped;
}

/* Only the callers whose mmap comes here call this one (glibc's own unmap
 * their pages directly), so the two balance. */
int munmap(void *address, size_t length)
{
    int unmapped = (int)syscall(SYS_munmap, address, length);
    if (unmapped == 0)
        atomic_fetch_sub(&bytes_mapped, (long)length);
    return unmapped;
}

#ifdef __USE_LARGEFILE64
void *mmap64(void *address, size_t length, int protection, int flags, int fd, off64_t offset)
{
    return mmap(address, length, protection, flags, fd, (off_t)offset);
}
#endif

#endif /* MAPI32_FAILING_MALLOC_H */
