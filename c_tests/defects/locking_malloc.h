/*
 * locking_malloc.h: a malloc wrapper with a lock of its own and fork
 * handlers that hold it across fork(), as many real ones have (a debugging
 * or accounting wrapper, an allocator with a global lock).
 *
 * Every request of the process (libmapi32's too) takes the wrapper's mutex
 * around glibc's own function. Its fork handlers, locking_malloc_prepare
 * (lock) and locking_malloc_after_fork (unlock, in parent and child), make
 * fork() wait for every request in progress, and no request can start until
 * the fork is over. A wrapper that sets itself up at its first call
 * registers them whenever that call happens to come; after libmapi32's were
 * registered at load, the prepare handlers run in reverse order, so the
 * wrapper's lock is taken first and libmapi32's prepare runs with it held.
 *
 * Include in exactly one translation unit, not under a sanitizer or valgrind.
 */
#ifndef MAPI32_LOCKING_MALLOC_H
#define MAPI32_LOCKING_MALLOC_H

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>

#include "libc_malloc.h"

static pthread_mutex_t wrapper_lock = PTHREAD_MUTEX_INITIALIZER;

/* The wrapper's fork handlers: prepare, then the same to end the fork in
 * both the parent and the child. */
static inline void locking_malloc_prepare(void)
{
    pthread_mutex_lock(&wrapper_lock);
}

static inline void locking_malloc_after_fork(void)
{
    pthread_mutex_unlock(&wrapper_lock);
}

/* Runs `call` with the wrapper's lock held; evaluates to its result. */
#define LOCKED(type, call)                                                                         \
    do {                                                                                           \
        pthread_mutex_lock(&wrapper_lock);                                                         \
        type result_ = (call);                                                                     \
        pthread_mutex_unlock(&wrapper_lock);                                                       \
        return result_;                                                                            \
    } while (0)

void *malloc(size_t size)
{
    LOCKED(void *, __libc_malloc(size));
}

void *calloc(size_t count, size_t size)
{
    LOCKED(void *, __libc_calloc(count, size));
}

void *realloc(void *block, size_t size)
{
    LOCKED(void *, __libc_realloc(block, size));
}

void *memalign(size_t alignment, size_t size)
{
    LOCKED(void *, __libc_memalign(alignment, size));
}

void *aligned_alloc(size_t alignment, size_t size)
{
    LOCKED(void *, __libc_memalign(alignment, size));
}

void *valloc(size_t size)
{
    LOCKED(void *, __libc_valloc(size));
}

void *pvalloc(size_t size)
{
    LOCKED(void *, __libc_pvalloc(size));
}

int posix_memalign(void **block, size_t alignment, size_t size)
{
    if (alignment == 0 || alignment % sizeof(void *) != 0 || (alignment & (alignment - 1)) != 0)
        return EINVAL;
    pthread_mutex_lock(&wrapper_lock);
    void *fresh = __libc_memalign(alignment, size);
    pthread_mutex_unlock(&wrapper_lock);
    if (fresh == NULL)
        return ENOMEM;
    *block = fresh;
    return 0;
}

void free(void *block)
{
    pthread_mutex_lock(&wrapper_lock);
    __libc_free(block);
    pthread_mutex_unlock(&wrapper_lock);
}

#endif /* MAPI32_LOCKING_MALLOC_H */
