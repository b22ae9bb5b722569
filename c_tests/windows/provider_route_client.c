/*
 * provider_route_client.c: proves that Wine's builtin mapi32.dll hands its
 * allocations to libmapi32 when libmapi32 is registered as the default mail
 * client's Extended MAPI library (DLLPathEx), under another file name.
 *
 * Wine's mapi32.dll, when it is attached, reads HKLM\Software\Clients\Mail
 * (default value: the client) and that client's DLLPathEx, loads the library
 * named there and, from then on, forwards MAPIAllocateBuffer,
 * MAPIAllocateMore and MAPIFreeBuffer to it (dlls/mapi32/util.c,
 * load_mapi_providers). Every other export stays Wine's. This program is
 * linked as any MAPI client is (mingw-w64's <mapix.h> and -lmapi32), so
 * every call below goes to the builtin; libmapi32's counters, read through
 * mapi32_stats from the registered DLL, show where each block really came
 * from.
 *
 * usage: provider_route_client.exe 'C:\path\to\libmapi32.dll'
 *        (the path registered as DLLPathEx)
 * Exit status 0 when every check passed, 1 otherwise, 2 on a usage error.
 * Without the registration the route checks fail, and the misuse checks
 * are not run: on Wine's own allocator they would corrupt its heap.
 */
#include <windows.h>

#include <mapiutil.h>
#include <mapix.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* libmapi32's extension (include/mapix.h), declared here because this
 * program compiles against the SDK's <mapix.h>, not libmapi32's. */
typedef struct {
    ULONG cbSize, ulReserved; /* cbSize: set by the caller to sizeof(MAPI32_STATS) */
    uint64_t live_roots, live_children, live_bytes, peak_bytes, total_allocations, misuse_count;
} MAPI32_STATS;
typedef SCODE(WINAPI MAPI32STATS)(MAPI32_STATS *lpStats);

/* The builtin's property helpers, looked up by name: on x86_64 Wine
 * exports them only under their stdcall-decorated names (ScDupPropset@16),
 * while mingw-w64's import library asks for the plain ones, so a program
 * that imported them could not even start under Wine. */
typedef SCODE(WINAPI SCDUPPROPSET)(int, LPSPropValue, LPALLOCATEBUFFER, LPSPropValue *);
typedef SCODE(WINAPI PROPCOPYMORE)(LPSPropValue, LPSPropValue, ALLOCATEMORE *, LPVOID);
typedef void(WINAPI FREEPROWS)(LPSRowSet);
typedef SCODE(WINAPI CREATEIPROP)(LPCIID, ALLOCATEBUFFER *, ALLOCATEMORE *, FREEBUFFER *, LPVOID, LPPROPDATA *);
typedef HRESULT(WINAPI HRGETONEPROP)(LPMAPIPROP, ULONG, LPSPropValue *);
typedef BOOL(WINAPI FPROPEXISTS)(LPMAPIPROP, ULONG);

static int failures;
static MAPI32STATS *stats_of_ours;

#define CHECK(cond, what) check((cond), (what), __LINE__)

static int check(int ok, const char *what, int line)
{
    if (ok) {
        printf("  ok: %s\n", what);
    } else {
        printf("  fail: %s (line %d)\n", what, line);
        failures++;
    }
    return ok;
}

static MAPI32_STATS stats(void)
{
    MAPI32_STATS counts = { .cbSize = sizeof counts };
    if (stats_of_ours == NULL || stats_of_ours(&counts) != S_OK)
        memset(&counts, 0xff, sizeof counts); /* matches no expected count */
    return counts;
}

/* The same module under either name: native's plain one, Wine's decorated one. */
static FARPROC lookup(HMODULE module, const char *plain, const char *decorated)
{
    FARPROC found = GetProcAddress(module, plain);
    return found ? found : GetProcAddress(module, decorated);
}

/* What SPEC §2 promises: 16 on 64-bit, 8 on 32-bit. Wine's own blocks sit
 * one pointer past a heap block aligned to two, behind the header that links
 * its chain: 8 bytes off 16 on 64-bit, 4 off 8 on 32-bit. */
#define SPEC_ALIGN (2 * sizeof(void *))

static int aligned(const void *p)
{
    return ((uintptr_t)p % SPEC_ALIGN) == 0;
}

/* The counters moved by exactly these amounts since `before`. */
static int moved(MAPI32_STATS before, int64_t roots, int64_t children, int64_t allocations, int64_t misuses)
{
    MAPI32_STATS now = stats();
    return now.live_roots == before.live_roots + (uint64_t)roots &&
           now.live_children == before.live_children + (uint64_t)children &&
           now.total_allocations == before.total_allocations + (uint64_t)allocations &&
           now.misuse_count == before.misuse_count + (uint64_t)misuses;
}

static const char *const names[] = { "Inbox", "Sent Items", "Deleted Items" };

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s PATH-REGISTERED-AS-DLLPathEx\n", argv[0]);
        return 2;
    }
    const char *registered = argv[1];
    const char *base = strrchr(registered, '\\');
    base = base ? base + 1 : registered;

    printf("the modules:\n");
    HMODULE builtin = GetModuleHandleA("mapi32.dll");
    char path[MAX_PATH] = "";
    if (builtin != NULL)
        GetModuleFileNameA(builtin, path, sizeof path);
    printf("  mapi32.dll is %s\n", path);
    CHECK(builtin != NULL && GetProcAddress(builtin, "MAPIInitialize") != NULL &&
              GetProcAddress(builtin, "mapi32_stats") == NULL,
          "mapi32.dll is Wine's builtin: it has MAPIInitialize, not mapi32_stats");
    /* Asked before this program loads anything itself: only the builtin,
     * following the registration, can have loaded it. */
    HMODULE ours = GetModuleHandleA(base);
    CHECK(ours != NULL && ours != builtin, "the registered DLL was loaded by the builtin at its attach");
    if (ours == NULL)
        ours = LoadLibraryA(registered); /* to read its counters all the same */
    path[0] = '\0';
    if (ours != NULL)
        GetModuleFileNameA(ours, path, sizeof path);
    printf("  %s is %s\n", base, path);
    CHECK(ours != NULL && lstrcmpiA(path, registered) == 0, "it is the file registered");
    stats_of_ours = ours ? (MAPI32STATS *)(uintptr_t)GetProcAddress(ours, "mapi32_stats") : NULL;
    CHECK(stats_of_ours != NULL && GetProcAddress(ours, "MAPIInitialize") == NULL,
          "it is libmapi32: it has mapi32_stats, not MAPIInitialize");
    SCDUPPROPSET *dup_propset = (SCDUPPROPSET *)(uintptr_t)lookup(builtin, "ScDupPropset", "ScDupPropset@16");
    PROPCOPYMORE *prop_copy_more = (PROPCOPYMORE *)(uintptr_t)lookup(builtin, "PropCopyMore", "PropCopyMore@16");
    FREEPROWS *free_prows = (FREEPROWS *)(uintptr_t)lookup(builtin, "FreeProws", "FreeProws@4");
    CREATEIPROP *create_iprop = (CREATEIPROP *)(uintptr_t)lookup(builtin, "CreateIProp", "CreateIProp@24");
    HRGETONEPROP *get_one_prop = (HRGETONEPROP *)(uintptr_t)lookup(builtin, "HrGetOneProp", "HrGetOneProp@12");
    FPROPEXISTS *prop_exists = (FPROPEXISTS *)(uintptr_t)lookup(builtin, "FPropExists", "FPropExists@8");
    CHECK(dup_propset && prop_copy_more && free_prows && create_iprop && get_one_prop && prop_exists,
          "the builtin has ScDupPropset, PropCopyMore, FreeProws, CreateIProp, HrGetOneProp and FPropExists");
    if (failures != 0 || stats_of_ours == NULL) {
        /* One block, allocated and freed as the SDK says, is safe whichever
         * allocator answers: show whose it was. */
        LPVOID block = NULL;
        MAPI32_STATS before = stats();
        if (stats_of_ours != NULL && MAPIAllocateBuffer(64, &block) == S_OK) {
            printf("  a block from the builtin: address %% %u = %u, libmapi32's live roots +%llu\n",
                   (unsigned)SPEC_ALIGN, (unsigned)((uintptr_t)block % SPEC_ALIGN),
                   (unsigned long long)(stats().live_roots - before.live_roots));
            MAPIFreeBuffer(block);
        }
        printf("FAIL provider_route: the route is not in place\n");
        return 1;
    }
    const MAPI32_STATS start = stats();
    CHECK(start.live_roots == 0 && start.live_children == 0, "nothing is live at the start");

    printf("the builtin's MAPIAllocateBuffer and MAPIAllocateMore:\n");
    MAPI32_STATS before = stats();
    LPSPropValue props = NULL;
    CHECK(MAPIAllocateBuffer(3 * sizeof(SPropValue), (LPVOID *)&props) == S_OK && props != NULL,
          "MAPIAllocateBuffer of 3 SPropValues succeeds");
    if (props == NULL)
        return 1;
    CHECK(moved(before, 1, 0, 1, 0), "libmapi32 counts one more live root");
    CHECK(aligned(props), "the root is aligned as the SPEC says");
    before = stats();
    int filled = 1;
    for (int i = 0; i < 3; i++) {
        props[i].ulPropTag = PROP_TAG(PT_STRING8, 0x3001 + i);
        filled &= MAPIAllocateMore((ULONG)strlen(names[i]) + 1, props, (LPVOID *)&props[i].Value.lpszA) == S_OK;
        filled &= aligned(props[i].Value.lpszA);
        if (props[i].Value.lpszA != NULL)
            strcpy(props[i].Value.lpszA, names[i]);
    }
    CHECK(filled, "three MAPIAllocateMore children of it succeed, each aligned as the SPEC says");
    CHECK(moved(before, 0, 3, 3, 0), "libmapi32 counts three more live children");
    if (!filled)
        return 1;

    printf("the builtin's property helpers, allocating through the route:\n");
    before = stats();
    LPSPropValue dup = NULL;
    CHECK(dup_propset(3, props, MAPIAllocateBuffer, &dup) == S_OK && dup != NULL,
          "ScDupPropset(..., MAPIAllocateBuffer, ...) succeeds");
    if (dup == NULL)
        return 1;
    CHECK(moved(before, 1, 0, 1, 0) && aligned(dup), "its copy is one more libmapi32 root, aligned as the SPEC says");
    CHECK(strcmp(dup[2].Value.lpszA, names[2]) == 0, "the copy holds the strings");
    before = stats();
    SPropValue extra;
    CHECK(prop_copy_more(&extra, &props[0], MAPIAllocateMore, dup) == S_OK, "PropCopyMore onto the copy succeeds");
    CHECK(moved(before, 0, 1, 1, 0) && aligned(extra.Value.lpszA) && strcmp(extra.Value.lpszA, names[0]) == 0,
          "its string is one more libmapi32 child");

    printf("the builtin's MAPIFreeBuffer on what is not a root:\n");
    before = stats();
    CHECK(MAPIFreeBuffer(props[1].Value.lpszA) == 0, "MAPIFreeBuffer of a child returns 0");
    CHECK(moved(before, 0, 0, 0, 1), "libmapi32 refused it: nothing freed, one misuse counted");
    int intact = 1;
    for (int i = 0; i < 3; i++)
        intact &= strcmp(props[i].Value.lpszA, names[i]) == 0;
    LPVOID more = NULL;
    intact &= MAPIAllocateMore(16, props, &more) == S_OK && more != NULL;
    CHECK(intact, "the tree is intact: its strings read back, it takes one more child");
    before = stats();
    CHECK(MAPIFreeBuffer(NULL) == 0 && moved(before, 0, 0, 0, 0), "MAPIFreeBuffer(NULL) returns 0 and does nothing");
    CHECK(MAPIAllocateBuffer(8, NULL) == MAPI_E_INVALID_PARAMETER && moved(before, 0, 0, 0, 1),
          "MAPIAllocateBuffer with a NULL output is refused by libmapi32");
    /* A NULL parent makes a new root (SPEC §2), which Wine's own refuses:
     * through the builtin, libmapi32 answers. */
    before = stats();
    LPVOID orphan = (LPVOID)&before;
    SCODE status = MAPIAllocateMore(8, NULL, &orphan);
    CHECK(status == S_OK && orphan != NULL && orphan != (LPVOID)&before && moved(before, 1, 0, 1, 0),
          "MAPIAllocateMore with a NULL parent makes a root of libmapi32's");
    if (status == S_OK)
        MAPIFreeBuffer(orphan);
    before = stats();
    char on_stack[32];
    LPVOID refused = on_stack;
    CHECK(MAPIAllocateMore(8, on_stack + 16, &refused) == MAPI_E_INVALID_PARAMETER && refused == NULL &&
              moved(before, 0, 0, 0, 1),
          "MAPIAllocateMore on a foreign parent is refused by libmapi32");

    /* Wine's IMAPIProp object: the caller's allocators for what it keeps,
     * the builtin's own MAPIAllocateBuffer for the arrays GetProps and
     * GetPropList return, its own MAPIFreeBuffer in HrGetOneProp and
     * FPropExists. With the route, all of them are libmapi32's. */
    printf("the builtin's IMAPIProp object (CreateIProp), HrGetOneProp, FPropExists:\n");
    before = stats();
    LPPROPDATA object = NULL;
    CHECK(create_iprop(NULL, MAPIAllocateBuffer, MAPIAllocateMore, MAPIFreeBuffer, NULL, &object) == S_OK &&
              object != NULL,
          "CreateIProp with MAPIAllocateBuffer, MAPIAllocateMore, MAPIFreeBuffer succeeds");
    if (object == NULL)
        return 1;
    CHECK(object->lpVtbl->SetProps(object, 1, &props[0], NULL) == S_OK, "SetProps of one string succeeds");
    CHECK(moved(before, 3, 1, 4, 0), "the object, its item and its value are libmapi32 roots, the string a child");
    MAPI32_STATS kept = stats();
    LPSPropValue got = NULL;
    CHECK(get_one_prop((LPMAPIPROP)object, props[0].ulPropTag, &got) == S_OK && got != NULL,
          "HrGetOneProp of it succeeds");
    if (got == NULL)
        return 1;
    CHECK(moved(kept, 1, 1, 2, 0) && aligned(got) && strcmp(got->Value.lpszA, names[0]) == 0,
          "its value is a libmapi32 root from the builtin's MAPIAllocateBuffer, its string a child");
    before = stats();
    LPSPropValue missing = NULL;
    CHECK(get_one_prop((LPMAPIPROP)object, PROP_TAG(PT_STRING8, 0x3010), &missing) == MAPI_E_NOT_FOUND,
          "HrGetOneProp of a property not set returns MAPI_E_NOT_FOUND");
    CHECK(moved(before, 0, 0, 1, 0), "the array it got was freed in libmapi32 by the builtin itself");
    before = stats();
    CHECK(prop_exists((LPMAPIPROP)object, props[0].ulPropTag), "FPropExists finds the property");
    CHECK(moved(before, 0, 0, 1, 0), "the tag list it got was freed in libmapi32 by the builtin itself");
    MAPIFreeBuffer(got);
    object->lpVtbl->Release(object);
    CHECK(moved(kept, -3, -1, 4, 0), "freeing the value and releasing the object free all of it in libmapi32");

    printf("the builtin's frees, its own included:\n");
    LPSRowSet rows = NULL;
    before = stats();
    CHECK(MAPIAllocateBuffer(CbNewSRowSet(1), (LPVOID *)&rows) == S_OK && rows != NULL, "a row set is allocated");
    if (rows == NULL)
        return 1;
    rows->cRows = 1;
    rows->aRow[0].ulAdrEntryPad = 0;
    rows->aRow[0].cValues = 3;
    rows->aRow[0].lpProps = dup;
    /* FreeProws calls the builtin's MAPIFreeBuffer from inside the builtin. */
    free_prows(rows);
    CHECK(moved(before, -1, -1, 1, 0), "FreeProws freed the row set and the copy in libmapi32");
    before = stats();
    CHECK(MAPIFreeBuffer(props) == 0 && moved(before, -1, -4, 0, 0), "MAPIFreeBuffer of the root frees its 4 children");
    MAPI32_STATS end = stats();
    CHECK(end.live_roots == 0 && end.live_children == 0 && end.live_bytes == 0, "nothing is live at the end");
    printf("libmapi32 counted %llu allocations and %llu misuses\n", (unsigned long long)end.total_allocations,
           (unsigned long long)end.misuse_count);

    printf("%s\n", failures ? "FAIL provider_route" : "PASS provider_route");
    return failures != 0;
}
