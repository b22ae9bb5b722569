/*
 * count_malloc.h: counts the C-allocator blocks alive in this process.
 *
 * Every C-allocator call of the program that includes this, libmapi32's
 * included, goes through these wrappers, as it would through an LD_PRELOADed
 * malloc (SPEC §3), and they count the blocks alive: live_c_blocks() is exact
 * at any moment, so a test can assert that a call left nothing allocated.
 *
 * libmapi32 takes nothing from the C allocator (its pages come from the
 * OS), so every block counted is the program's own, and a call of the
 * library must leave the count as it found it. Calloc'd blocks are also
 * remembered by address and counted apart (live_client_blocks() and
 * client_heap_bytes() leave them out): the registry before this one kept
 * its bookkeeping there, and the tests still tell the two apart.
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
#include <malloc.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "libc_malloc.h"

static atomic_long c_blocks_alive;

static inline long live_c_blocks(void)
{
    return atomic_load(&c_blocks_alive);
}

static void *counted(void *block)
{
    if (block != NULL)
        atomic_fetch_add(&c_blocks_alive, 1);
    return block;
}

/*
 * The calloc'd blocks alive, as a lock-free open-addressing set: a slot goes
 * from empty to a block, and from a block to a tombstone that a later block
 * may take, never back to empty, so a lookup stops at the first empty slot.
 * (A lock would be simpler, but would be held across a fork().)
 */
#define ZEROED_SLOTS ((size_t)1 << 16)
#define ZEROED_TOMBSTONE ((void *)1)
static void *_Atomic zeroed_slots[ZEROED_SLOTS];
static atomic_long zeroed_alive;
/* Heap bytes of the calloc'd blocks: their chunks, as mallinfo2 counts them
 * (usable size plus glibc's size field; none is large enough to be mmapped). */
static atomic_long zeroed_bytes;

static size_t zeroed_home(const void *block)
{
    return (size_t)((((uint64_t)(uintptr_t)block >> 4) * 0x9E3779B97F4A7C15u) >> 48) & (ZEROED_SLOTS - 1);
}

static void remember_zeroed(void *block)
{
    size_t home = zeroed_home(block);
    for (size_t i = 0; i < ZEROED_SLOTS; i++) {
        void *_Atomic *slot = &zeroed_slots[(home + i) & (ZEROED_SLOTS - 1)];
        void *seen = atomic_load(slot);
        while (seen == NULL || seen == ZEROED_TOMBSTONE) {
            if (atomic_compare_exchange_weak(slot, &seen, block)) {
                atomic_fetch_add(&zeroed_alive, 1);
                atomic_fetch_add(&zeroed_bytes, (long)(malloc_usable_size(block) + sizeof(size_t)));
                return;
            }
        }
    }
    fputs("count_malloc.h: too many calloc'd blocks to remember\n", stderr);
    abort();
}

/* Forgets `block` if it was calloc'd; says whether it was. Call it before
 * the block is freed, while its address cannot be handed out again. */
static int forget_zeroed(void *block)
{
    size_t home = zeroed_home(block);
    for (size_t i = 0; i < ZEROED_SLOTS; i++) {
        void *_Atomic *slot = &zeroed_slots[(home + i) & (ZEROED_SLOTS - 1)];
        void *seen = atomic_load(slot);
        if (seen == NULL)
            return 0;
        if (seen == block) {
            atomic_fetch_sub(&zeroed_bytes, (long)(malloc_usable_size(block) + sizeof(size_t)));
            atomic_fetch_sub(&zeroed_alive, 1);
            /* Only the one freeing `block` changes its slot. */
            atomic_store(slot, ZEROED_TOMBSTONE);
            return 1;
        }
    }
    return 0;
}

/* Live blocks other than calloc'd ones: the client's, and libmapi32's. */
static inline long live_client_blocks(void)
{
    return atomic_load(&c_blocks_alive) - atomic_load(&zeroed_alive);
}

/* `heap_bytes` (mallinfo2's bytes in use) less what the calloc'd blocks take. */
static inline size_t client_heap_bytes(size_t heap_bytes)
{
    return heap_bytes - (size_t)atomic_load(&zeroed_bytes);
}

void *malloc(size_t size)
{
    return counted(__libc_malloc(size));
}

void *calloc(size_t count, size_t size)
{
    void *block = counted(__libc_calloc(count, size));
    if (block != NULL)
        remember_zeroed(block);
    return block;
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
    int zeroed = forget_zeroed(block);
    void *moved = __libc_realloc(block, size);
    if (moved == NULL && size == 0) {
        atomic_fetch_sub(&c_blocks_alive, 1); /* realloc(p, 0) freed p */
        return moved;
    }
    /* Moved, or refused and left where it was: still the same kind. */
    if (zeroed)
        remember_zeroed(moved != NULL ? moved : block);
    return moved;
}

void free(void *block)
{
    if (block != NULL) {
        forget_zeroed(block);
        atomic_fetch_sub(&c_blocks_alive, 1);
    }
    __libc_free(block);
}

#endif /* MAPI32_COUNT_MALLOC_H */
