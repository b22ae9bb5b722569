/*
 * patterns.h: filling blocks with a pattern and reasoning about addresses,
 * for the C conformance suites of both platforms (c_tests/conformance.c on
 * POSIX, c_tests/windows/conformance_win.c on Windows). Plain C11, nothing
 * platform-specific; needs <stddef.h>, <stdint.h> and <stdlib.h>.
 */
#ifndef MAPI32_PATTERNS_H
#define MAPI32_PATTERNS_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

/* SPEC §2: 16 bytes on 64-bit platforms, 8 on 32-bit. */
#define MAPI_ALIGNMENT (sizeof(void *) == 8 ? 16u : 8u)

/* A byte sequence that differs per seed, so overlapping blocks show. */
static inline unsigned char pattern_byte(unsigned seed, size_t index)
{
    uint32_t mixed = seed * 0x9E3779B1u + (uint32_t)index * 0x85EBCA77u;
    return (unsigned char)(mixed ^ (mixed >> 15) ^ (mixed >> 24));
}

static inline void fill(void *block, size_t size, unsigned seed)
{
    unsigned char *bytes = block;
    for (size_t i = 0; i < size; i++)
        bytes[i] = pattern_byte(seed, i);
}

static inline int holds(const void *block, size_t size, unsigned seed)
{
    const unsigned char *bytes = block;
    for (size_t i = 0; i < size; i++) {
        if (bytes[i] != pattern_byte(seed, i))
            return 0;
    }
    return 1;
}

static inline int is_aligned(const void *pointer)
{
    return ((uintptr_t)pointer & (MAPI_ALIGNMENT - 1)) == 0;
}

/* `pointer` moved by `offset` bytes, as an address (it need not point into an object). */
static inline void *displaced(void *pointer, long offset)
{
    return (void *)((uintptr_t)pointer + (uintptr_t)offset);
}

static inline int compare_addresses(const void *left, const void *right)
{
    uintptr_t a = (uintptr_t) * (void *const *)left;
    uintptr_t b = (uintptr_t) * (void *const *)right;
    return (a > b) - (a < b);
}

/* Whether the n pointers all differ. Sorts them. */
static inline int all_distinct(void **pointers, size_t n)
{
    qsort(pointers, n, sizeof pointers[0], compare_addresses);
    for (size_t i = 1; i < n; i++) {
        if (pointers[i] == pointers[i - 1])
            return 0;
    }
    return 1;
}

#endif /* MAPI32_PATTERNS_H */
