/*
 * preload_client.c: a MAPI client linked against another MAPI library
 * (libothermapi.so, preload_stub.c), not libmapi32. preload_check.sh runs it
 * with LD_PRELOAD=libmapi32.so and expects every call to have reached
 * libmapi32: the dynamic linker resolves each name there, each call answers
 * as libmapi32 does (the stub fails them all), and the stub counted none.
 * Exit status: the number of failed checks.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "mapix.h"

extern int othermapi_calls; /* defined by the stub only */

static int checks = 0, failures = 0;

static void check(int ok, const char *what)
{
    printf("%s %s\n", ok ? "PASS" : "FAIL", what);
    checks++;
    if (!ok)
        failures++;
}

/* The library the dynamic linker binds NAME to for this program's calls. */
static void check_bound_to_libmapi32(const char *name)
{
    Dl_info info;
    void *sym = dlsym(RTLD_DEFAULT, name);
    const char *file = sym != NULL && dladdr(sym, &info) != 0 && info.dli_fname != NULL ? info.dli_fname : "?";
    const char *base = strrchr(file, '/') != NULL ? strrchr(file, '/') + 1 : file;
    char what[512];
    snprintf(what, sizeof what, "%s resolves to libmapi32 (%s)", name, file);
    check(strncmp(base, "libmapi32.so", 12) == 0, what);
}

int main(void)
{
    check_bound_to_libmapi32("MAPIAllocateBuffer");
    check_bound_to_libmapi32("MAPIAllocateMore");
    check_bound_to_libmapi32("MAPIFreeBuffer");

    LPVOID root = NULL, child = NULL, refused = &root;
    char foreign[64];
    check(MAPIAllocateBuffer(100, &root) == S_OK && root != NULL, "MAPIAllocateBuffer succeeds");
    check(root != NULL && (uintptr_t)root % (sizeof(void *) == 8 ? 16 : 8) == 0, "the root is aligned as libmapi32's are");
    check(MAPIAllocateMore(50, root, &child) == S_OK && child != NULL, "MAPIAllocateMore on the root succeeds");
    check(MAPIAllocateMore(8, foreign, &refused) == MAPI_E_INVALID_PARAMETER && refused == NULL,
          "MAPIAllocateMore refuses a foreign parent as libmapi32 does");
    check(MAPIFreeBuffer(root) == 0, "MAPIFreeBuffer returns 0");
    check(MAPIFreeBuffer(root) == 0, "a second MAPIFreeBuffer is refused harmlessly");
    check(othermapi_calls == 0, "no call reached the other MAPI library");

    printf("preload_client: %d of %d checks failed (the other MAPI library was called %d times)\n", failures, checks,
           othermapi_calls);
    return failures;
}
