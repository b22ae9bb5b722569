/*
 * preload_stub.c: "another MAPI" for preload_check.sh. It exports the same
 * three names as libmapi32, every call fails, and it counts the calls that
 * reach it, so the client can tell whether LD_PRELOAD took them away.
 */
#include <stddef.h>

#include "mapix.h"

int othermapi_calls = 0;

SCODE MAPIAllocateBuffer(ULONG cbSize, LPVOID *lppBuffer)
{
    (void)cbSize;
    othermapi_calls++;
    if (lppBuffer != NULL)
        *lppBuffer = NULL;
    return MAPI_E_CALL_FAILED;
}

SCODE MAPIAllocateMore(ULONG cbSize, LPVOID lpObject, LPVOID *lppBuffer)
{
    (void)cbSize;
    (void)lpObject;
    othermapi_calls++;
    if (lppBuffer != NULL)
        *lppBuffer = NULL;
    return MAPI_E_CALL_FAILED;
}

ULONG MAPIFreeBuffer(LPVOID lpBuffer)
{
    (void)lpBuffer;
    othermapi_calls++;
    return (ULONG)MAPI_E_CALL_FAILED;
}
