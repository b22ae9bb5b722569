/*
 * count_malloc.h: counts the C-allocator blocks alive in this process.
 *
 * Every C-allocator call of the program that includes this, libmapi32's
 * included, goes through these wrappers, as it would through an LD_PRELOADed
 * malloc (SPEC §3), and they count the blocks alive: live_c_blocks() is exact
 * at any moment, so a test can assert that a call left nothing allocated.
 *
 * Include it in exactly one translation unit of a program, and not under
 * AddressSanitizer, which replaces malloc itself. Valgrind replaces these
 * wrappers too, unless run with --soname-synonyms=somalloc=nouserintercepts
 * (as make valgrind-test does): then they count, and memcheck still sees
 * every block through glibc's __libc_* functions, which it does replace.
 */
#ifndef MAPI32_COUNT_MALLOC_H
#define MAPI32_COUNT_MALLOC_H

#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>

/* glibc documents which functions a replacement malloc must provide; these
 * forward to its own. */
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *block, size_t size);
extern void *__libc_memalign(size_t alignment, size_t size);
extern void *__libc_valloc(size_t size);
extern void *__libc_pvalloc(size_t size);
extern void __libc_free(void *block);

static atomic_long c_blocks_alive;

static long live_c_blocks(void)
{
    return atomic_load(&c_blocks_alive);
}

static void *counted(void *block)
{
    if (block != NULL)
        atomic_fetch_add(&c_blocks_alive, 1);
    return block;
}

void *malloc(size_t size)
{
    return counted(__libc_malloc(size));
}

void *calloc(size_t count, size_t size)
{
    return counted(__libc_calloc(count, size));
}

void *memalign(size_t alignment, size_t size)
{
    return counted(__libc_memalign(alignment, size));
}

void *aligned_alloc(size_t alignment, size_t size)
{
    return counted(__libc_memalign(alignment, size));
}

void *valloc(size_t size)
{
    return counted(__libc_valloc(size));
}

void *pvalloc(size_t size)
{
    return counted(__libc_pvalloc(size));
}

int posix_memalign(void **block, size_t alignment, size_t size)
{
    if (alignment == 0 || alignment % sizeof(void *) != 0 || (alignment & (alignment - 1)) != 0)
        return EINVAL;
    void *fresh = counted(__libc_memalign(alignment, size));
    if (fresh == NULL)
        return ENOMEM;
    *block = fresh;
    return 0;
}

void *realloc(void *block, size_t size)
{
    if (block == NULL)
        return malloc(size);
    void *moved = __libc_realloc(block, size);
    if (moved == NULL && size == 0)
        atomic_fetch_sub(&c_blocks_alive, 1); /* realloc(p, 0) freed p */
    return moved;
}

void free(void *block)
{
    if (block != NULL)
        atomic_fetch_sub(&c_blocks_alive, 1);
    __libc_free(block);
}

#endif /* MAPI32_COUNT_MALLOC_H */
