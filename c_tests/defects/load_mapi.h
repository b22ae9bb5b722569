/*
 * load_mapi.h: libmapi32 loaded with dlopen(), for the defect tests that
 * need the load to come at a moment of their choosing (after their own fork
 * handlers) or again and again (dlclose cycles).
 *
 * The programs that include this are not linked against libmapi32: the
 * library's path comes from MAPI32_LIBRARY, a string the build defines.
 */
#ifndef MAPI32_DEFECTS_LOAD_MAPI_H
#define MAPI32_DEFECTS_LOAD_MAPI_H

#include <dlfcn.h>
#include <stddef.h>

#include "mapix.h"

#ifndef MAPI32_LIBRARY
#error "define MAPI32_LIBRARY as the path of libmapi32.so"
#endif

struct mapi {
    void *handle;
    LPMAPIALLOCATEBUFFER allocate;
    LPMAPIALLOCATEMORE allocate_more;
    LPMAPIFREEBUFFER free_buffer;
    SCODE (*stats)(MAPI32_STATS *);
};

/* Loads the library; 0 on success, else -1 with dlerror() saying why. */
static int load_mapi(struct mapi *mapi)
{
    mapi->handle = dlopen(MAPI32_LIBRARY, RTLD_NOW | RTLD_LOCAL);
    if (mapi->handle == NULL)
        return -1;
    /* POSIX: a function pointer may travel through void *. */
    *(void **)&mapi->allocate = dlsym(mapi->handle, "MAPIAllocateBuffer");
    *(void **)&mapi->allocate_more = dlsym(mapi->handle, "MAPIAllocateMore");
    *(void **)&mapi->free_buffer = dlsym(mapi->handle, "MAPIFreeBuffer");
    *(void **)&mapi->stats = dlsym(mapi->handle, "mapi32_stats");
    if (mapi->allocate == NULL || mapi->allocate_more == NULL || mapi->free_buffer == NULL || mapi->stats == NULL)
        return -1;
    return 0;
}

#endif /* MAPI32_DEFECTS_LOAD_MAPI_H */
