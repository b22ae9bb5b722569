/*
 * debug_client.c: scripted misuse, then two trees left live at exit, for
 * c_tests/debug_check.sh to run under each MAPI32_DEBUG setting.
 *
 * The misuses, in order: a free of a child, a double free, a free of a
 * stack pointer, MAPIAllocateMore on an interior pointer, a NULL
 * out-pointer. The leaked trees: a 1000-byte root with two children of 100
 * and 24 bytes, and a 40-byte root alone.
 */
#include <stdio.h>

#include "mapix.h"

int main(void)
{
    int local = 0;
    LPVOID root = NULL, child = NULL, gone = NULL, out = NULL, leaked = NULL;

    if (MAPIAllocateBuffer(1000, &root) != S_OK || MAPIAllocateMore(100, root, &child) != S_OK ||
        MAPIAllocateMore(24, child, &out) != S_OK || MAPIAllocateBuffer(40, &leaked) != S_OK ||
        MAPIAllocateBuffer(8, &gone) != S_OK)
        return 2;
    MAPIFreeBuffer(gone);

    MAPIFreeBuffer(child);
    MAPIFreeBuffer(gone);
    MAPIFreeBuffer(&local);
    MAPIAllocateMore(8, (char *)root + 16, &out);
    MAPIAllocateBuffer(8, NULL);
    /* Both trees stay live: the leaks report must name them. */
    printf("root %p leaked %p\n", root, leaked);
    return 0;
}
