/*
 * libc_malloc.h: glibc's own allocator functions, which glibc documents for
 * a replacement malloc to forward to. Shared by the test programs that
 * replace malloc (count_malloc.h, defects/failing_malloc.h,
 * defects/locking_malloc.h).
 */
#ifndef MAPI32_LIBC_MALLOC_H
#define MAPI32_LIBC_MALLOC_H

#include <stddef.h>

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *block, size_t size);
extern void *__libc_memalign(size_t alignment, size_t size);
extern void *__libc_valloc(size_t size);
extern void *__libc_pvalloc(size_t size);
extern void __libc_free(void *block);

#endif
