/*
 * sdk_client.c: a MAPI client as a Windows developer builds it: the MAPI
 * SDK's <mapix.h> (mingw-w64's copy) and the SDK's import library for
 * mapi32.dll (mingw-w64's libmapi32.a, `-lmapi32`), nothing of libmapi32's.
 * Which mapi32.dll it runs on is the loader's choice; run_wine.sh runs it
 * with libmapi32's substituted and with Wine's builtin.
 *
 * It fills what a message store's GetProps returns: an SPropValue array
 * whose strings hang off it through MAPIAllocateMore, then frees it all with
 * one MAPIFreeBuffer. Prints which mapi32.dll answered; exits 0 when every
 * call did what the SDK documents.
 */
#include <windows.h>

#include <mapix.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* libmapi32's extension, looked up at run time: only its DLL has it. */
typedef struct {
    ULONG cbSize, ulReserved; /* cbSize: set by the caller to sizeof(MAPI32_STATS) */
    uint64_t live_roots, live_children, live_bytes, peak_bytes, total_allocations, misuse_count;
} MAPI32_STATS;
typedef SCODE(WINAPI MAPI32STATS)(MAPI32_STATS *lpStats);

static const char *const names[] = { "Inbox", "Sent Items", "Deleted Items" };

int main(void)
{
    int failures = 0;
    LPSPropValue props = NULL;
    SCODE status = MAPIAllocateBuffer(3 * sizeof(SPropValue), (LPVOID *)&props);
    if (status != S_OK || props == NULL) {
        printf("MAPIAllocateBuffer: 0x%08lx\n", (unsigned long)status);
        return 1;
    }
    for (int i = 0; i < 3; i++) {
        props[i].ulPropTag = PROP_TAG(PT_STRING8, 0x3001 + i);
        status = MAPIAllocateMore((ULONG)strlen(names[i]) + 1, props, (LPVOID *)&props[i].Value.lpszA);
        if (status != S_OK) {
            printf("MAPIAllocateMore: 0x%08lx\n", (unsigned long)status);
            return 1;
        }
        strcpy(props[i].Value.lpszA, names[i]);
    }
    for (int i = 0; i < 3; i++)
        failures += strcmp(props[i].Value.lpszA, names[i]) != 0;
    /* No parent makes a root, as Kopano's MAPI does (a copy "onto no base"). */
    LPVOID copy = NULL;
    failures += MAPIAllocateMore(8, NULL, &copy) != S_OK || copy == NULL;
    MAPIFreeBuffer(copy);
    MAPIFreeBuffer(props);
    /* A freed root is no parent any more (nothing was allocated since). */
    LPVOID refused = props;
    failures += MAPIAllocateMore(8, props, &refused) != MAPI_E_INVALID_PARAMETER || refused != NULL;

    HMODULE mapi = GetModuleHandleA("mapi32.dll");
    MAPI32STATS *stats = (MAPI32STATS *)(uintptr_t)GetProcAddress(mapi, "mapi32_stats");
    char path[MAX_PATH] = "";
    GetModuleFileNameA(mapi, path, sizeof path);
    printf("%s %s\n", stats ? "libmapi32" : "other", path);
    if (stats != NULL) {
        MAPI32_STATS counts = {.cbSize = sizeof counts};
        failures += stats(&counts) != S_OK || counts.live_roots != 0 || counts.live_children != 0;
        printf("live roots %llu, children %llu, allocations %llu\n", (unsigned long long)counts.live_roots,
               (unsigned long long)counts.live_children, (unsigned long long)counts.total_allocations);
    }
    printf("%s\n", failures ? "FAIL sdk_client" : "PASS sdk_client");
    return failures != 0;
}
