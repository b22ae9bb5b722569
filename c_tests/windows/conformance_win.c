/*
 * conformance_win.c: the rules of SPEC §2-3 (and §4-5's extensions) that
 * make sense on Windows, against whichever mapi32.dll LoadLibrary finds:
 * libmapi32's, next to the program with WINEDLLOVERRIDES=mapi32=n, or Wine's
 * builtin one. The same program tests both, so their answers can be compared
 * (c_tests/windows/run_wine.sh).
 *
 *   conformance_win.exe --list    the case names
 *   conformance_win.exe --which   which mapi32.dll was loaded, and from where
 *   conformance_win.exe CASE      run one case
 *   conformance_win.exe --exit-race   one round of exit_with_threads_inside
 *
 * One case a process: misuse may crash or hang a MAPI library, so the runner
 * starts each case on its own under a timeout. Exit status: 0 passed, 1
 * failed, 77 not applicable (the DLL lacks an export the case needs), 70 an
 * exception reached the top (the case crashed). A failed check prints
 * "  fail: LABEL (line N: ...)"; the runner quotes the first label.
 *
 * "Nothing allocated" and "everything freed" are measured by counting the
 * blocks the DLL itself takes from the C runtime and the Win32 heap: its
 * import address table entries for malloc, calloc, realloc, free, HeapAlloc,
 * HeapReAlloc and HeapFree are pointed at counting wrappers here, the Windows
 * form of the Linux suite's malloc wrappers. Both DLLs are measured alike,
 * whichever allocator they use; the program's own allocations are not
 * counted. libmapi32's blocks lie in pages it maps itself: its blocks are
 * those mapi32_stats counts, and its mappings (VirtualAlloc reservations)
 * are counted as well (Wine's builtin's blocks are its heap's).
 *
 * The MAPI declarations are the MAPI SDK's, from mingw-w64's <mapix.h>.
 */
#include <windows.h>

#include <mapicode.h>
#include <mapix.h>
#include <process.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../patterns.h"

#define COUNT(array) (sizeof(array) / sizeof((array)[0]))

/* SPEC §2's alignment (patterns.h's MAPI_ALIGNMENT), in the failure labels. */
#if defined(_WIN64)
#define ALIGNMENT_TEXT "16-byte"
#else
#define ALIGNMENT_TEXT "8-byte"
#endif

/* libmapi32's statistics call (mapix.h of this project; not in the SDK). */
typedef struct {
    ULONG cbSize, ulReserved; /* cbSize: set by the caller to sizeof(MAPI32_STATS) */
    uint64_t live_roots, live_children, live_bytes, peak_bytes, total_allocations, misuse_count;
} MAPI32_STATS;
typedef SCODE(WINAPI MAPI32STATS)(MAPI32_STATS *lpStats);
/* Outlook's omapix.h; neither mingw-w64 nor Wine declares it. */
typedef SCODE(WINAPI MAPIREALLOCATEBUFFER)(LPVOID lpv, ULONG ulSize, LPVOID *lppv);

static HMODULE mapi;
static LPMAPIALLOCATEBUFFER allocate_buffer;
static LPMAPIALLOCATEMORE allocate_more;
static LPMAPIFREEBUFFER free_buffer;
static MAPIREALLOCATEBUFFER *reallocate_buffer; /* NULL when not exported */
static MAPI32STATS *mapi32_stats;               /* NULL when not exported */

/* ------------------------------------------------------------------------ */
/* Checks                                                                    */
/* ------------------------------------------------------------------------ */

#define EXIT_PASSED 0
#define EXIT_FAILED 1
#define EXIT_CRASHED 70
#define EXIT_NOT_APPLICABLE 77

static volatile LONG failed_checks;
static const char *current_case = "";

/* Records one check; returns whether it held. `format` may be NULL. */
static int check(int ok, const char *label, int line, const char *expr, const char *format, ...)
    __attribute__((format(printf, 5, 6)));

static int check(int ok, const char *label, int line, const char *expr, const char *format, ...)
{
    if (ok)
        return 1;
    InterlockedIncrement(&failed_checks);
    char detail[256] = "";
    if (format != NULL) {
        va_list args;
        va_start(args, format);
        vsnprintf(detail, sizeof detail, format, args);
        va_end(args);
    }
    printf("  fail: %s (line %d: %s%s%s)\n", label, line, expr, detail[0] ? "; " : "", detail);
    return 0;
}

static __attribute__((noreturn)) void end_case(int status)
{
    fflush(NULL);
    /* TerminateProcess: no DLL detach code runs after a failure or crash. */
    TerminateProcess(GetCurrentProcess(), (UINT)status);
    ExitProcess((UINT)status);
}

/* CHECK goes on after a failure; REQUIRE ends the case, for when going on
 * would only act on a broken heap. LABEL says what broke, in a few words. */
#define CHECK(cond, label) check((cond) != 0, (label), __LINE__, #cond, NULL)
#define CHECKF(cond, label, ...) check((cond) != 0, (label), __LINE__, #cond, __VA_ARGS__)
#define REQUIRE(cond, label)                                                                       \
    do {                                                                                           \
        if (!CHECK(cond, label))                                                                   \
            end_case(EXIT_FAILED);                                                                 \
    } while (0)
#define REQUIREF(cond, label, ...)                                                                 \
    do {                                                                                           \
        if (!CHECKF(cond, label, __VA_ARGS__))                                                     \
            end_case(EXIT_FAILED);                                                                 \
    } while (0)

/* An exception nobody handled: the case crashed. */
static LONG WINAPI on_unhandled_exception(EXCEPTION_POINTERS *info)
{
    printf("  crash: exception 0x%08lx at %p in %s\n", info->ExceptionRecord->ExceptionCode,
           info->ExceptionRecord->ExceptionAddress, current_case);
    end_case(EXIT_CRASHED);
}

/* ------------------------------------------------------------------------ */
/* Counting the DLL's blocks                                                 */
/* ------------------------------------------------------------------------ */

static volatile LONG64 live_blocks;

static void *counted(void *block)
{
    if (block != NULL)
        InterlockedIncrement64(&live_blocks);
    return block;
}

static void uncounted(void)
{
    InterlockedDecrement64(&live_blocks);
}

/* libmapi32's blocks come from no import to count: they are those it reports
 * (the builtin DLL has no mapi32_stats, and its blocks are counted above). */
static long long blocks_reported(void)
{
    MAPI32_STATS stats = { .cbSize = sizeof stats };
    if (mapi32_stats == NULL || mapi32_stats(&stats) != S_OK)
        return 0;
    return (long long)(stats.live_roots + stats.live_children);
}

static long long blocks_live(void)
{
    return InterlockedCompareExchange64(&live_blocks, 0, 0) + blocks_reported();
}

/* The DLL's reservations of address space (VirtualAlloc with MEM_RESERVE,
 * less VirtualFree with MEM_RELEASE), and the first few bases it got. */
#define MAPPING_BASES 64
static volatile LONG live_mappings;
static volatile LONG mappings_made;
static void *volatile mapping_bases[MAPPING_BASES];

static long mappings_live(void)
{
    return InterlockedCompareExchange(&live_mappings, 0, 0);
}

/* Whether `block` lies in a reservation the DLL made itself. */
static int in_own_mapping(const void *block)
{
    MEMORY_BASIC_INFORMATION info;
    if (VirtualQuery(block, &info, sizeof info) != sizeof info)
        return 0;
    LONG made = InterlockedCompareExchange(&mappings_made, 0, 0);
    for (LONG i = 0; i < made && i < MAPPING_BASES; i++)
        if (mapping_bases[i] == info.AllocationBase)
            return 1;
    return 0;
}

/*
 * Calloc'd blocks are a DLL's own bookkeeping, whose number follows where
 * blocks lie, not how many there are (the registry before this one kept a
 * bitmap of block addresses in them); so they are not counted, only
 * remembered here until they are freed. A lock-free set: a slot goes from empty to a block, and from a
 * block to a tombstone that a later block may take, never back to empty,
 * so a lookup stops at the first empty slot.
 */
#define ZEROED_SLOTS 4096
#define ZEROED_TOMBSTONE ((void *)1)
static void *volatile zeroed_slots[ZEROED_SLOTS];

static size_t zeroed_home(const void *block)
{
    return (size_t)((((uint64_t)(uintptr_t)block >> 4) * 0x9E3779B97F4A7C15u) >> 52) & (ZEROED_SLOTS - 1);
}

static void remember_zeroed(void *block)
{
    size_t home = zeroed_home(block);
    for (size_t i = 0; i < ZEROED_SLOTS; i++) {
        void *volatile *slot = &zeroed_slots[(home + i) & (ZEROED_SLOTS - 1)];
        void *seen = *slot;
        if ((seen == NULL || seen == ZEROED_TOMBSTONE) && InterlockedCompareExchangePointer(slot, block, seen) == seen)
            return;
    }
    printf("  crash: too many calloc'd blocks to remember\n");
    end_case(EXIT_CRASHED);
}

/* Forgets `block` if it was calloc'd; says whether it was. Called before
 * the block is freed, while its address cannot be handed out again. */
static int forget_zeroed(void *block)
{
    size_t home = zeroed_home(block);
    for (size_t i = 0; i < ZEROED_SLOTS; i++) {
        void *volatile *slot = &zeroed_slots[(home + i) & (ZEROED_SLOTS - 1)];
        void *seen = *slot;
        if (seen == NULL)
            return 0;
        if (seen == block) {
            /* Only the one freeing `block` changes its slot. */
            InterlockedExchangePointer(slot, ZEROED_TOMBSTONE);
            return 1;
        }
    }
    return 0;
}

/* What the DLL's import slots held before the wrappers took their place. */
static void *(__cdecl *real_malloc)(size_t);
static void *(__cdecl *real_calloc)(size_t, size_t);
static void *(__cdecl *real_realloc)(void *, size_t);
static void(__cdecl *real_free)(void *);
static LPVOID(WINAPI *real_HeapAlloc)(HANDLE, DWORD, SIZE_T);
static LPVOID(WINAPI *real_HeapReAlloc)(HANDLE, DWORD, LPVOID, SIZE_T);
static BOOL(WINAPI *real_HeapFree)(HANDLE, DWORD, LPVOID);
static LPVOID(WINAPI *real_VirtualAlloc)(LPVOID, SIZE_T, DWORD, DWORD);
static BOOL(WINAPI *real_VirtualFree)(LPVOID, SIZE_T, DWORD);

static void *__cdecl counting_malloc(size_t size)
{
    return counted(real_malloc(size));
}

static void *__cdecl counting_calloc(size_t count, size_t size)
{
    void *block = real_calloc(count, size);
    if (block != NULL)
        remember_zeroed(block);
    return block;
}

static void *__cdecl counting_realloc(void *block, size_t size)
{
    if (block == NULL)
        return counted(real_realloc(block, size));
    int zeroed = forget_zeroed(block);
    void *moved = real_realloc(block, size);
    if (zeroed) {
        if (moved != NULL || size != 0)
            remember_zeroed(moved != NULL ? moved : block); /* moved, or left where it was */
    } else if (size == 0) {
        uncounted(); /* realloc(p, 0) frees p */
    }
    return moved;
}

static void __cdecl counting_free(void *block)
{
    if (block != NULL && !forget_zeroed(block))
        uncounted();
    real_free(block);
}

/* libmapi32's DLL allocates from a heap of its own: its zeroed blocks are
 * its registry's nodes, as calloc'd ones are elsewhere. */
static LPVOID WINAPI counting_HeapAlloc(HANDLE heap, DWORD flags, SIZE_T size)
{
    void *block = real_HeapAlloc(heap, flags, size);
    if (block != NULL && (flags & HEAP_ZERO_MEMORY))
        remember_zeroed(block);
    else
        counted(block);
    return block;
}

static LPVOID WINAPI counting_HeapReAlloc(HANDLE heap, DWORD flags, LPVOID block, SIZE_T size)
{
    return real_HeapReAlloc(heap, flags, block, size);
}

static BOOL WINAPI counting_HeapFree(HANDLE heap, DWORD flags, LPVOID block)
{
    int zeroed = block != NULL && forget_zeroed(block);
    BOOL freed = real_HeapFree(heap, flags, block);
    /* A refused pointer (FALSE) freed nothing. */
    if (freed && block != NULL && !zeroed)
        uncounted();
    else if (!freed && zeroed)
        remember_zeroed(block);
    return freed;
}

static LPVOID WINAPI counting_VirtualAlloc(LPVOID address, SIZE_T size, DWORD kind, DWORD protection)
{
    void *mapped = real_VirtualAlloc(address, size, kind, protection);
    if (mapped != NULL && (kind & MEM_RESERVE)) {
        InterlockedIncrement(&live_mappings);
        LONG made = InterlockedIncrement(&mappings_made) - 1;
        if (made < MAPPING_BASES)
            mapping_bases[made] = mapped;
    }
    return mapped;
}

static BOOL WINAPI counting_VirtualFree(LPVOID address, SIZE_T size, DWORD kind)
{
    BOOL freed = real_VirtualFree(address, size, kind);
    if (freed && (kind & MEM_RELEASE))
        InterlockedDecrement(&live_mappings);
    return freed;
}

struct hook {
    const char *name;
    void **real;
    void *wrapper;
    int installed;
};

/* Object and function pointers convert through an integer: ISO C has no
 * direct conversion, and Win32 relies on it everywhere. */
#define AS_DATA(function) ((void *)(uintptr_t)(function))

static struct hook hooks[] = {
    { "malloc", (void **)&real_malloc, NULL, 0 },       { "calloc", (void **)&real_calloc, NULL, 0 },
    { "realloc", (void **)&real_realloc, NULL, 0 },     { "free", (void **)&real_free, NULL, 0 },
    { "HeapAlloc", (void **)&real_HeapAlloc, NULL, 0 }, { "HeapReAlloc", (void **)&real_HeapReAlloc, NULL, 0 },
    { "HeapFree", (void **)&real_HeapFree, NULL, 0 },   { "VirtualAlloc", (void **)&real_VirtualAlloc, NULL, 0 },
    { "VirtualFree", (void **)&real_VirtualFree, NULL, 0 },
};

static void set_wrappers(void)
{
    hooks[0].wrapper = AS_DATA(counting_malloc);
    hooks[1].wrapper = AS_DATA(counting_calloc);
    hooks[2].wrapper = AS_DATA(counting_realloc);
    hooks[3].wrapper = AS_DATA(counting_free);
    hooks[4].wrapper = AS_DATA(counting_HeapAlloc);
    hooks[5].wrapper = AS_DATA(counting_HeapReAlloc);
    hooks[6].wrapper = AS_DATA(counting_HeapFree);
    hooks[7].wrapper = AS_DATA(counting_VirtualAlloc);
    hooks[8].wrapper = AS_DATA(counting_VirtualFree);
}

/* Points the module's import slots for the allocator functions at the
 * wrappers. Returns how many slots it changed. */
static int hook_allocator_imports(HMODULE module)
{
    set_wrappers();
    BYTE *base = (BYTE *)module;
    IMAGE_NT_HEADERS *nt = (IMAGE_NT_HEADERS *)(base + ((IMAGE_DOS_HEADER *)base)->e_lfanew);
    IMAGE_DATA_DIRECTORY imports = nt->OptionalHeader.DataDirectory[IMAGE_DIRECTORY_ENTRY_IMPORT];
    int changed = 0;
    if (imports.VirtualAddress == 0)
        return 0;
    for (IMAGE_IMPORT_DESCRIPTOR *dll = (IMAGE_IMPORT_DESCRIPTOR *)(base + imports.VirtualAddress); dll->Name; dll++) {
        DWORD names_rva = dll->OriginalFirstThunk ? dll->OriginalFirstThunk : dll->FirstThunk;
        IMAGE_THUNK_DATA *name = (IMAGE_THUNK_DATA *)(base + names_rva);
        IMAGE_THUNK_DATA *slot = (IMAGE_THUNK_DATA *)(base + dll->FirstThunk);
        for (; name->u1.AddressOfData != 0; name++, slot++) {
            if (IMAGE_SNAP_BY_ORDINAL(name->u1.Ordinal))
                continue;
            const char *symbol = (const char *)((IMAGE_IMPORT_BY_NAME *)(base + name->u1.AddressOfData))->Name;
            for (size_t i = 0; i < COUNT(hooks); i++) {
                if (strcmp(symbol, hooks[i].name) != 0)
                    continue;
                DWORD protection;
                if (!VirtualProtect(&slot->u1.Function, sizeof slot->u1.Function, PAGE_READWRITE, &protection))
                    break;
                *hooks[i].real = (void *)(uintptr_t)slot->u1.Function;
                slot->u1.Function = (ULONG_PTR)(uintptr_t)hooks[i].wrapper;
                VirtualProtect(&slot->u1.Function, sizeof slot->u1.Function, protection, &protection);
                hooks[i].installed = 1;
                changed++;
            }
        }
    }
    return changed;
}

#define CHECK_LIVE(expected, label)                                                                \
    CHECKF(blocks_live() == (expected), (label), "%lld blocks live, expected %lld", blocks_live(),  \
           (long long)(expected))
#define REQUIRE_LIVE(expected, label)                                                              \
    REQUIREF(blocks_live() == (expected), (label), "%lld blocks live, expected %lld", blocks_live(), \
             (long long)(expected))

/* ------------------------------------------------------------------------ */
/* Calling the library                                                       */
/* ------------------------------------------------------------------------ */

/* Out-pointers start here, so a case can tell that the library wrote them. */
static char sentinel_target;
#define SENTINEL ((void *)&sentinel_target)

struct call {
    SCODE status;
    void *out;
};

static struct call call_allocate_buffer(ULONG size)
{
    struct call call = { S_OK, SENTINEL };
    call.status = allocate_buffer(size, &call.out);
    return call;
}

static struct call call_allocate_more(ULONG size, void *parent)
{
    struct call call = { S_OK, SENTINEL };
    call.status = allocate_more(size, parent, &call.out);
    return call;
}

static int succeeded(struct call call)
{
    return call.status == S_OK && call.out != NULL && call.out != SENTINEL;
}

/* A new root (parent NULL) or child of parent; the case ends if refused. */
static void *new_block(ULONG size, void *parent)
{
    struct call call = parent ? call_allocate_more(size, parent) : call_allocate_buffer(size);
    REQUIREF(succeeded(call), parent ? "child refused" : "root refused", "%u bytes: status 0x%08lx, block %p",
             (unsigned)size, (unsigned long)call.status, call.out);
    return call.out;
}

static void *new_root(ULONG size)
{
    return new_block(size, NULL);
}

static void *new_child(ULONG size, void *parent)
{
    return new_block(size, parent);
}

static void free_root(void *root)
{
    CHECK(free_buffer(root) == 0, "MAPIFreeBuffer returned non-zero");
}

/* MAPIAllocateMore onto `parent` is refused as an invalid parameter, clears
 * the out-pointer, and allocates nothing. */
static void check_more_refused(void *parent, const char *what)
{
    static const ULONG sizes[] = { 0, 64 };
    for (size_t i = 0; i < COUNT(sizes); i++) {
        long long before = blocks_live();
        struct call call = call_allocate_more(sizes[i], parent);
        REQUIREF(call.status == MAPI_E_INVALID_PARAMETER, "bad parent accepted", "%s: status 0x%08lx",
                 what, (unsigned long)call.status);
        CHECKF(call.out == NULL, "out-pointer not cleared", "%s: left at %p", what, call.out);
        REQUIREF(blocks_live() == before, "bad parent allocated", "%s: %+lld blocks", what,
                 blocks_live() - before);
    }
}

/* MAPIFreeBuffer on something that is not a live root returns 0 and frees
 * nothing. */
static void check_free_ignored(void *pointer, const char *what)
{
    long long before = blocks_live();
    ULONG result = free_buffer(pointer);
    REQUIREF(blocks_live() == before, "freed memory it should not", "%s: %+lld blocks", what,
             blocks_live() - before);
    CHECKF(result == 0, "MAPIFreeBuffer returned non-zero", "%s: %lu", what, (unsigned long)result);
}

/* ------------------------------------------------------------------------ */
/* Contents and memory                                                       */
/* ------------------------------------------------------------------------ */

static SIZE_T page_size(void)
{
    SYSTEM_INFO info;
    GetSystemInfo(&info);
    return info.dwPageSize;
}

/* Two pages that were reserved and committed and are released again:
 * nothing lives there. A pointer into the second one is returned. */
static unsigned char *released_address(void)
{
    unsigned char *pages = VirtualAlloc(NULL, 2 * page_size(), MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    REQUIRE(pages != NULL, "VirtualAlloc");
    REQUIRE(VirtualFree(pages, 0, MEM_RELEASE), "VirtualFree");
    return pages + page_size() + 64;
}

/* Two pages holding a pattern, then made PAGE_NOACCESS: any read or write
 * faults. */
static unsigned char *noaccess_pages(void)
{
    unsigned char *pages = VirtualAlloc(NULL, 2 * page_size(), MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    REQUIRE(pages != NULL, "VirtualAlloc");
    fill(pages, 2 * page_size(), 0xC0FFEE);
    DWORD old;
    REQUIRE(VirtualProtect(pages, 2 * page_size(), PAGE_NOACCESS, &old), "VirtualProtect");
    return pages;
}

static int noaccess_pages_untouched(unsigned char *pages)
{
    DWORD old;
    REQUIRE(VirtualProtect(pages, 2 * page_size(), PAGE_READONLY, &old), "VirtualProtect");
    return holds(pages, 2 * page_size(), 0xC0FFEE);
}

/* ------------------------------------------------------------------------ */
/* Threads                                                                   */
/* ------------------------------------------------------------------------ */

/* The most threads any case runs at once (warm_up starts this many). */
#define MAX_THREADS 12

typedef void (*worker_fn)(unsigned index, void *shared);

struct crew_member {
    worker_fn work;
    unsigned index;
    void *shared;
};

static DWORD WINAPI crew_thread(LPVOID argument)
{
    struct crew_member *member = argument;
    member->work(member->index, member->shared);
    return 0;
}

static unsigned __stdcall crew_thread_crt(void *argument)
{
    struct crew_member *member = argument;
    member->work(member->index, member->shared);
    return 0;
}

enum thread_api { WITH_CREATE_THREAD, WITH_BEGINTHREADEX };

/* Runs `work` on n new threads and waits for all of them to end. */
static void run_crew(unsigned n, worker_fn work, void *shared, enum thread_api api)
{
    struct crew_member members[MAX_THREADS];
    HANDLE threads[MAX_THREADS];
    REQUIRE(n <= MAX_THREADS, "too many threads");
    for (unsigned i = 0; i < n; i++) {
        members[i] = (struct crew_member){ work, i, shared };
        if (api == WITH_CREATE_THREAD)
            threads[i] = CreateThread(NULL, 0, crew_thread, &members[i], 0, NULL);
        else
            threads[i] = (HANDLE)_beginthreadex(NULL, 0, crew_thread_crt, &members[i], 0, NULL);
        REQUIRE(threads[i] != NULL, "thread not started");
    }
    REQUIRE(WaitForMultipleObjects(n, threads, TRUE, INFINITE) == WAIT_OBJECT_0, "threads not joined");
    for (unsigned i = 0; i < n; i++)
        CloseHandle(threads[i]);
}

/* Each thread holds a root until all have one, so the library meets
 * MAX_THREADS threads at once before any case starts. */
static volatile LONG warm_up_arrived;

static void warm_up_worker(unsigned index, void *shared)
{
    (void)index;
    (void)shared;
    void *root = new_root(16);
    new_child(16, root);
    InterlockedIncrement(&warm_up_arrived);
    while (InterlockedCompareExchange(&warm_up_arrived, 0, 0) < MAX_THREADS)
        SwitchToThread();
    free_root(root);
}

/* Whatever a library sets up once per process or per thread (libmapi32:
 * a heap of records for each thread, kept for the next thread when one ends)
 * is set up here, before any case takes its baseline. */
static void warm_up(void)
{
    void *root = new_root(8);
    new_child(8, root);
    free_root(root);
    run_crew(MAX_THREADS, warm_up_worker, NULL, WITH_CREATE_THREAD);
}

/* ======================================================================== */
/* Exports                                                                   */
/* ======================================================================== */

/* Native mapi32.dll exports each function by its plain and its
 * stdcall-decorated name; on x86_64 both name the same code. */
static void exports_decorated_alias_plain(void)
{
    static const char *const pairs[][2] = {
        { "MAPIAllocateBuffer", "MAPIAllocateBuffer@8" },
        { "MAPIAllocateMore", "MAPIAllocateMore@12" },
        { "MAPIFreeBuffer", "MAPIFreeBuffer@4" },
        { "MAPIReallocateBuffer", "MAPIReallocateBuffer@12" },
    };
    for (size_t i = 0; i < COUNT(pairs); i++) {
        FARPROC plain = GetProcAddress(mapi, pairs[i][0]);
        FARPROC decorated = GetProcAddress(mapi, pairs[i][1]);
        if (plain == NULL && decorated == NULL && i == 3)
            continue; /* MAPIReallocateBuffer is Outlook's: not every mapi32 has it */
        CHECKF(plain != NULL && decorated == plain, "decorated name missing or different", "%s %p, %s %p",
               pairs[i][0], AS_DATA(plain), pairs[i][1], AS_DATA(decorated));
    }
}

static void exports_decorated_names_work(void)
{
    LPMAPIALLOCATEBUFFER allocate = (LPMAPIALLOCATEBUFFER)(uintptr_t)GetProcAddress(mapi, "MAPIAllocateBuffer@8");
    LPMAPIALLOCATEMORE more = (LPMAPIALLOCATEMORE)(uintptr_t)GetProcAddress(mapi, "MAPIAllocateMore@12");
    LPMAPIFREEBUFFER release = (LPMAPIFREEBUFFER)(uintptr_t)GetProcAddress(mapi, "MAPIFreeBuffer@4");
    REQUIRE(allocate && more && release, "decorated name missing");
    long long base = blocks_live();
    void *root = NULL, *child = NULL;
    REQUIRE(allocate(32, &root) == S_OK && root != NULL, "root refused");
    REQUIRE(more(32, root, &child) == S_OK && child != NULL, "child refused");
    fill(root, 32, 1);
    fill(child, 32, 2);
    CHECK(holds(root, 32, 1) && holds(child, 32, 2), "contents lost");
    CHECK_LIVE(base + 2, "blocks not counted");
    CHECK(release(root) == 0, "MAPIFreeBuffer returned non-zero");
    CHECK_LIVE(base, "tree not freed");
}

#if defined(__i386__)
/* On 32-bit x86 MAPI is stdcall: the callee pops its arguments (`ret $N`).
 * A cdecl export leaves them to the caller, whose stack pointer a
 * stdcall-typed call through a function pointer would then be off by N
 * bytes after every call; compiled code may or may not trip over that, so
 * the stack pointer is measured instead. pops_of(function, a, b, c, &popped)
 * pushes c, b, a (as C does), calls, stores how many of the 12 bytes pushed
 * the callee took off the stack, and returns the callee's EAX. Itself cdecl;
 * ECX and EDX are free to use after the call in either convention, and EBP
 * is restored from its saved copy, whatever the callee did to ESP. */
uint32_t pops_of(FARPROC function, uint32_t a, uint32_t b, uint32_t c, uint32_t *popped);
__asm__(".text\n"
        ".globl _pops_of\n"
        "_pops_of:\n"
        "    pushl %ebp\n"
        "    movl %esp, %ebp\n"
        "    pushl 20(%ebp)\n"
        "    pushl 16(%ebp)\n"
        "    pushl 12(%ebp)\n"
        "    call *8(%ebp)\n"
        /* popped = ESP now - ESP at the call = ESP - (EBP - 12) */
        "    movl %esp, %ecx\n"
        "    subl %ebp, %ecx\n"
        "    addl $12, %ecx\n"
        "    movl 24(%ebp), %edx\n"
        "    movl %ecx, (%edx)\n"
        "    movl %ebp, %esp\n"
        "    popl %ebp\n"
        "    ret\n");

#define ARG(pointer) ((uint32_t)(uintptr_t)(pointer))

/* Each export pops exactly the bytes of its arguments: 4 a parameter. Run
 * cold: with a cdecl DLL every other case crashes in warm_up(), whose calls
 * go through the SDK's stdcall types, before it can say why. */
static void exports_pop_their_arguments(void)
{
    void *root = NULL, *child = NULL, *moved = NULL;
    uint32_t popped = 0;

    SCODE status = (SCODE)pops_of((FARPROC)(uintptr_t)allocate_buffer, 16, ARG(&root), 0, &popped);
    REQUIRE(status == S_OK && root != NULL, "root refused");
    CHECKF(popped == 8, "MAPIAllocateBuffer is not stdcall", "popped %u bytes of 8", (unsigned)popped);

    status = (SCODE)pops_of((FARPROC)(uintptr_t)allocate_more, 16, ARG(root), ARG(&child), &popped);
    REQUIRE(status == S_OK && child != NULL, "child refused");
    CHECKF(popped == 12, "MAPIAllocateMore is not stdcall", "popped %u bytes of 12", (unsigned)popped);

    if (reallocate_buffer != NULL) {
        status = (SCODE)pops_of((FARPROC)(uintptr_t)reallocate_buffer, ARG(root), 64, ARG(&moved), &popped);
        REQUIRE(status == S_OK && moved != NULL, "reallocation refused");
        CHECKF(popped == 12, "MAPIReallocateBuffer is not stdcall", "popped %u bytes of 12", (unsigned)popped);
        root = moved;
    }
    if (mapi32_stats != NULL) {
        MAPI32_STATS stats = { .cbSize = sizeof stats };
        status = (SCODE)pops_of((FARPROC)(uintptr_t)mapi32_stats, ARG(&stats), 0, 0, &popped);
        CHECK(status == S_OK, "mapi32_stats refused");
        CHECKF(popped == 4, "mapi32_stats is not stdcall", "popped %u bytes of 4", (unsigned)popped);
    }

    ULONG freed = pops_of((FARPROC)(uintptr_t)free_buffer, ARG(root), 0, 0, &popped);
    CHECK(freed == 0, "MAPIFreeBuffer returned non-zero");
    CHECKF(popped == 4, "MAPIFreeBuffer is not stdcall", "popped %u bytes of 4", (unsigned)popped);
    /* No count of live blocks: cold, the first call's set-up is among them. */
}
#endif

/* ======================================================================== */
/* SPEC §2: MAPIAllocateBuffer                                              */
/* ======================================================================== */

static void alloc_null_out_is_invalid(void)
{
    long long base = blocks_live();
    CHECK(allocate_buffer(16, NULL) == MAPI_E_INVALID_PARAMETER, "NULL out-pointer accepted");
    CHECK(allocate_buffer(0, NULL) == MAPI_E_INVALID_PARAMETER, "NULL out-pointer accepted");
    CHECK_LIVE(base, "allocated for a NULL out-pointer");
}

static void alloc_gives_writable_bytes(void)
{
    static const ULONG sizes[] = { 1, 7, 16, 100, 4096, 65536, 1u << 20 };
    void *blocks[COUNT(sizes)];
    long long base = blocks_live();
    for (size_t i = 0; i < COUNT(sizes); i++) {
        blocks[i] = new_root(sizes[i]);
        fill(blocks[i], sizes[i], (unsigned)i);
    }
    CHECK_LIVE(base + (long long)COUNT(sizes), "one block per root");
    for (size_t i = 0; i < COUNT(sizes); i++)
        CHECKF(holds(blocks[i], sizes[i], (unsigned)i), "blocks overlap", "root of %lu bytes", (unsigned long)sizes[i]);
    for (size_t i = 0; i < COUNT(sizes); i++)
        free_root(blocks[i]);
    CHECK_LIVE(base, "roots not freed");
}

static void alloc_roots_are_aligned(void)
{
    void *blocks[80];
    for (ULONG size = 0; size < COUNT(blocks); size++) {
        blocks[size] = new_root(size);
        CHECKF(is_aligned(blocks[size]), "root not " ALIGNMENT_TEXT " aligned", "%lu bytes at %p", (unsigned long)size,
               blocks[size]);
    }
    for (size_t i = 0; i < COUNT(blocks); i++)
        free_root(blocks[i]);
}

static void alloc_zero_is_unique_and_usable(void)
{
    long long base = blocks_live();
    void *first = new_root(0);
    void *second = new_root(0);
    CHECK(first != second, "zero-size roots share an address");
    void *child = new_child(16, first);
    fill(child, 16, 3);
    CHECK(holds(child, 16, 3), "child of a zero-size root lost its contents");
    free_root(first);
    free_root(second);
    CHECK_LIVE(base, "zero-size roots not freed");
}

/* ULONG_MAX bytes: either a real block that large (64-bit has room for it
 * and the library's overhead) or MAPI_E_NOT_ENOUGH_MEMORY; never a wrapped,
 * small block. */
static void alloc_huge_is_exact_or_refused(void)
{
    long long base = blocks_live();
    struct call call = call_allocate_buffer(0xFFFFFFFFu);
    if (call.status == S_OK) {
        REQUIRE(call.out != NULL && call.out != SENTINEL, "S_OK without a block");
        unsigned char *bytes = call.out;
        bytes[0] = 1;
        bytes[0xFFFFFFFEu] = 2; /* faults if the size wrapped */
        CHECK(bytes[0] == 1 && bytes[0xFFFFFFFEu] == 2, "huge block not writable");
        free_root(call.out);
    } else {
        CHECKF(call.status == MAPI_E_NOT_ENOUGH_MEMORY, "wrong status", "0x%08lx", (unsigned long)call.status);
        CHECK(call.out == NULL, "out-pointer not cleared");
    }
    CHECK_LIVE(base, "huge block not freed");
}

/* ======================================================================== */
/* SPEC §2: MAPIAllocateMore                                                */
/* ======================================================================== */

static void more_null_out_is_invalid(void)
{
    void *root = new_root(16);
    long long base = blocks_live();
    CHECK(allocate_more(16, root, NULL) == MAPI_E_INVALID_PARAMETER, "NULL out-pointer accepted");
    CHECK_LIVE(base, "allocated for a NULL out-pointer");
    free_root(root);
}

static void more_on_root_makes_child(void)
{
    long long base = blocks_live();
    void *root = new_root(32);
    fill(root, 32, 1);
    void *child = new_child(64, root);
    fill(child, 64, 2);
    CHECK(child != root, "child is the root");
    CHECK(holds(root, 32, 1) && holds(child, 64, 2), "root and child overlap");
    CHECK_LIVE(base + 2, "one block per child");
    free_root(root);
    CHECK_LIVE(base, "child not freed with its root");
}

static void more_children_are_aligned(void)
{
    long long base = blocks_live();
    void *root = new_root(8);
    for (ULONG size = 0; size < 80; size++) {
        void *child = new_child(size, root);
        CHECKF(is_aligned(child), "child not " ALIGNMENT_TEXT " aligned", "%lu bytes at %p", (unsigned long)size, child);
    }
    free_root(root);
    CHECK_LIVE(base, "children not freed with their root");
}

static void more_zero_is_unique_and_usable(void)
{
    long long base = blocks_live();
    void *root = new_root(8);
    void *first = new_child(0, root);
    void *second = new_child(0, root);
    CHECK(first != second && first != root && second != root, "zero-size children share an address");
    void *grandchild = new_child(16, first);
    fill(grandchild, 16, 4);
    CHECK(holds(grandchild, 16, 4), "child of a zero-size child lost its contents");
    free_root(root);
    CHECK_LIVE(base, "zero-size children not freed with their root");
}

/* A child of a child belongs to the same root and dies with it. */
static void more_on_child_joins_root(void)
{
    long long base = blocks_live();
    void *blocks[6];
    blocks[0] = new_root(24);
    for (unsigned i = 1; i < COUNT(blocks); i++)
        blocks[i] = new_child(24, blocks[i - 1]);
    for (unsigned i = 0; i < COUNT(blocks); i++)
        fill(blocks[i], 24, i);
    for (unsigned i = 0; i < COUNT(blocks); i++)
        CHECKF(holds(blocks[i], 24, i), "blocks overlap", "block %u", i);
    CHECK_LIVE(base + (long long)COUNT(blocks), "one block per child");
    free_root(blocks[0]);
    CHECK_LIVE(base, "grandchildren not freed with their root");
}

/* SPEC §2: no parent makes a root, exactly as MAPIAllocateBuffer (Kopano's
 * helpers copy "onto a base, if there is one" and pass NULL for no base). */
static void more_null_parent_allocates_a_root(void)
{
    long long base = blocks_live();
    struct call copy = call_allocate_more(22, NULL);
    REQUIREF(succeeded(copy), "NULL parent refused", "status 0x%08lx", (unsigned long)copy.status);
    CHECKF(is_aligned(copy.out), "root not " ALIGNMENT_TEXT " aligned", "at %p", copy.out);
    fill(copy.out, 22, 3);
    void *child = new_child(64, copy.out);
    fill(child, 64, 4);
    CHECK(free_buffer(child) == 0, "MAPIFreeBuffer returned non-zero");
    CHECK(holds(copy.out, 22, 3) && holds(child, 64, 4), "a child free touched the tree");
    CHECK_LIVE(base + 2, "the root made with no parent and its child");
    free_root(copy.out);
    CHECK_LIVE(base, "the tree was not freed whole");
}

static void more_freed_parent_is_invalid(void)
{
    void *root = new_root(32);
    void *child = new_child(32, root);
    free_root(root);
    check_more_refused(root, "freed root");
    check_more_refused(child, "child of a freed root");
}

static void more_interior_pointer_is_invalid(void)
{
    void *root = new_root(64);
    memset(root, 0, 64);
    long long base = blocks_live();
    static const long offsets[] = { 1, 8, 16, 32 };
    for (size_t i = 0; i < COUNT(offsets); i++)
        check_more_refused(displaced(root, offsets[i]), "pointer inside a root");
    CHECK_LIVE(base, "interior parent allocated");
    free_root(root);
}

/* Blocks this library did not return: from the C runtime, the process heap,
 * the stack and static storage. Their contents (and the bytes in front of
 * them, where MAPI libraries keep headers) must stay as they were. */
static unsigned char static_block[96];

static void more_foreign_pointer_is_invalid(void)
{
    unsigned char stack_block[96];
    unsigned char *from_malloc = malloc(96);
    unsigned char *from_heap = HeapAlloc(GetProcessHeap(), 0, 96);
    REQUIRE(from_malloc && from_heap, "test memory");
    unsigned char *foreign[] = { from_malloc, from_heap, stack_block + 32, static_block + 32 };
    fill(stack_block, sizeof stack_block, 5);
    fill(static_block, sizeof static_block, 6);
    fill(from_malloc, 96, 7);
    fill(from_heap, 96, 8);
    check_more_refused(foreign[0], "malloc'd block");
    check_more_refused(foreign[1], "HeapAlloc'd block");
    check_more_refused(foreign[2], "stack address");
    check_more_refused(foreign[3], "static address");
    CHECK(holds(stack_block, sizeof stack_block, 5) && holds(static_block, sizeof static_block, 6) &&
              holds(from_malloc, 96, 7) && holds(from_heap, 96, 8),
          "foreign memory changed");
    free(from_malloc);
    HeapFree(GetProcessHeap(), 0, from_heap);
}

static void more_unmapped_parent_is_invalid(void)
{
    check_more_refused(released_address(), "released address");
}

static void more_noaccess_parent_is_invalid(void)
{
    unsigned char *pages = noaccess_pages();
    check_more_refused(pages + page_size() + 64, "PAGE_NOACCESS address");
    CHECK(noaccess_pages_untouched(pages), "PAGE_NOACCESS page changed");
    VirtualFree(pages, 0, MEM_RELEASE);
}

/* ======================================================================== */
/* SPEC §2: MAPIFreeBuffer                                                  */
/* ======================================================================== */

static void free_null_returns_zero(void)
{
    check_free_ignored(NULL, "NULL");
}

static void free_root_frees_all_children(void)
{
    long long base = blocks_live();
    void *root = new_root(40);
    for (unsigned i = 0; i < 20; i++) {
        void *child = new_child(16 + i, root);
        new_child(8, child);
    }
    CHECK_LIVE(base + 41, "one block per child");
    free_root(root);
    CHECK_LIVE(base, "children not freed with their root");
}

static void free_child_is_noop(void)
{
    long long base = blocks_live();
    void *root = new_root(16);
    void *first = new_child(32, root);
    void *second = new_child(32, root);
    fill(root, 16, 1);
    fill(first, 32, 2);
    fill(second, 32, 3);
    check_free_ignored(first, "child");
    check_free_ignored(second, "child");
    CHECK(holds(root, 16, 1) && holds(first, 32, 2) && holds(second, 32, 3), "tree changed by a child free");
    void *grandchild = new_child(8, first);
    fill(grandchild, 8, 4);
    CHECK_LIVE(base + 4, "tree lost a block");
    free_root(root);
    CHECK_LIVE(base, "children not freed with their root");
}

static void free_double_is_noop(void)
{
    long long base = blocks_live();
    void *root = new_root(48);
    new_child(48, root);
    free_root(root);
    REQUIRE_LIVE(base, "tree not freed");
    check_free_ignored(root, "freed root");
    /* The heap still works. */
    void *again = new_root(48);
    new_child(48, again);
    free_root(again);
    CHECK_LIVE(base, "heap broken after a double free");
}

static void free_interior_is_noop(void)
{
    long long base = blocks_live();
    void *root = new_root(64);
    memset(root, 0, 64);
    new_child(16, root);
    static const long offsets[] = { 1, 8, 16, 32 };
    for (size_t i = 0; i < COUNT(offsets); i++)
        check_free_ignored(displaced(root, offsets[i]), "pointer inside a root");
    CHECK_LIVE(base + 2, "tree lost a block");
    free_root(root);
    CHECK_LIVE(base, "tree not freed");
}

static void free_foreign_pointer_is_noop(void)
{
    unsigned char stack_block[96];
    unsigned char *from_malloc = malloc(96);
    unsigned char *from_heap = HeapAlloc(GetProcessHeap(), 0, 96);
    REQUIRE(from_malloc && from_heap, "test memory");
    fill(stack_block, sizeof stack_block, 5);
    fill(static_block, sizeof static_block, 6);
    fill(from_malloc, 96, 7);
    fill(from_heap, 96, 8);
    check_free_ignored(from_malloc, "malloc'd block");
    check_free_ignored(from_heap, "HeapAlloc'd block");
    check_free_ignored(stack_block + 32, "stack address");
    check_free_ignored(static_block + 32, "static address");
    CHECK(holds(stack_block, sizeof stack_block, 5) && holds(static_block, sizeof static_block, 6) &&
              holds(from_malloc, 96, 7) && holds(from_heap, 96, 8),
          "foreign memory changed");
    free(from_malloc);
    CHECK(HeapFree(GetProcessHeap(), 0, from_heap), "HeapAlloc'd block was freed behind our back");
}

static void free_unmapped_is_noop(void)
{
    check_free_ignored(released_address(), "released address");
}

static void free_noaccess_is_noop(void)
{
    unsigned char *pages = noaccess_pages();
    check_free_ignored(pages + page_size() + 64, "PAGE_NOACCESS address");
    CHECK(noaccess_pages_untouched(pages), "PAGE_NOACCESS page changed");
    VirtualFree(pages, 0, MEM_RELEASE);
}

/* ======================================================================== */
/* SPEC §5: MAPIReallocateBuffer                                            */
/* ======================================================================== */

static struct call call_reallocate(void *block, ULONG size)
{
    struct call call = { S_OK, SENTINEL };
    call.status = reallocate_buffer(block, size, &call.out);
    return call;
}

static void realloc_root_moves_bytes_and_children(void)
{
    long long base = blocks_live();
    void *root = new_root(16);
    fill(root, 16, 1);
    void *child = new_child(8, root);
    struct call bigger = call_reallocate(root, 64);
    REQUIRE(succeeded(bigger), "reallocation refused");
    CHECK(holds(bigger.out, 16, 1), "bytes not copied");
    CHECK_LIVE(base + 2, "old root not released");
    check_free_ignored(root, "the old root");
    new_child(8, child); /* the child still takes children */
    free_root(bigger.out);
    CHECK_LIVE(base, "children not moved to the new root");
}

static void realloc_child_adds_sibling(void)
{
    long long base = blocks_live();
    void *root = new_root(8);
    void *child = new_child(32, root);
    fill(child, 32, 2);
    struct call smaller = call_reallocate(child, 8);
    REQUIRE(succeeded(smaller), "reallocation refused");
    CHECK(holds(smaller.out, 8, 2), "bytes not copied");
    CHECK(holds(child, 32, 2), "old child changed");
    check_free_ignored(smaller.out, "the new child");
    free_root(root);
    CHECK_LIVE(base, "new child not freed with its root");
}

static void realloc_null_allocates_unknown_refused(void)
{
    long long base = blocks_live();
    struct call fresh = call_reallocate(NULL, 24);
    REQUIRE(succeeded(fresh), "NULL not allocated");
    free_root(fresh.out);
    unsigned char stack_block[32];
    struct call foreign = call_reallocate(stack_block + 16, 8);
    CHECK(foreign.status == MAPI_E_INVALID_PARAMETER && foreign.out == NULL, "foreign block accepted");
    CHECK(reallocate_buffer(NULL, 8, NULL) == MAPI_E_INVALID_PARAMETER, "NULL out-pointer accepted");
    CHECK_LIVE(base, "refused reallocation allocated");
}

/* ======================================================================== */
/* SPEC §4: mapi32_stats                                                    */
/* ======================================================================== */

static void stats_count_live_blocks(void)
{
    MAPI32_STATS before = {.cbSize = sizeof before}, during = before, after = before;
    REQUIRE(mapi32_stats(&before) == S_OK, "stats refused");
    void *root = new_root(100);
    void *child = new_child(20, root);
    new_child(3, child);
    free_buffer(child); /* misuse: counted */
    REQUIRE(mapi32_stats(&during) == S_OK, "stats refused");
    CHECK(during.live_roots == before.live_roots + 1 && during.live_children == before.live_children + 2,
          "live counts wrong");
    CHECK(during.live_bytes == before.live_bytes + 123, "live bytes wrong");
    CHECK(during.misuse_count == before.misuse_count + 1, "misuse not counted");
    free_root(root);
    REQUIRE(mapi32_stats(&after) == S_OK, "stats refused");
    CHECK(after.live_roots == before.live_roots && after.live_bytes == before.live_bytes, "counts not back");
    CHECK(after.total_allocations == before.total_allocations + 3, "allocations not counted");
    CHECK(mapi32_stats(NULL) == MAPI_E_INVALID_PARAMETER, "NULL accepted");
}

/* ======================================================================== */
/* SPEC §3: threads                                                          */
/* ======================================================================== */

#define TREE_CHILDREN 8

/* Builds a root with children and grandchildren, fills and checks every
 * block, and frees the tree. */
static void build_check_free_tree(unsigned seed)
{
    void *blocks[1 + 2 * TREE_CHILDREN];
    blocks[0] = new_root(48);
    for (unsigned i = 0; i < TREE_CHILDREN; i++) {
        blocks[1 + 2 * i] = new_child(24 + i, blocks[0]);
        blocks[2 + 2 * i] = new_child(40, blocks[1 + 2 * i]);
    }
    for (unsigned i = 0; i < COUNT(blocks); i++)
        fill(blocks[i], 24, seed + i);
    for (unsigned i = 0; i < COUNT(blocks); i++)
        CHECKF(holds(blocks[i], 24, seed + i), "blocks overlap", "seed %u block %u", seed, i);
    free_root(blocks[0]);
}

static void own_trees_worker(unsigned index, void *shared)
{
    (void)shared;
    for (unsigned lap = 0; lap < 300; lap++)
        build_check_free_tree(index << 16 | lap);
}

static void threads_own_trees_concurrently(void)
{
    long long base = blocks_live();
    run_crew(8, own_trees_worker, NULL, WITH_CREATE_THREAD);
    CHECK_LIVE(base, "trees not freed");
}

/* Producers root trees and hand them over; consumers check and free them. */
#define HANDOFF_PRODUCERS 4
#define HANDOFF_CONSUMERS 4
#define HANDOFF_ROOTS 500
#define HANDOFF_CHILD_SIZE 40

struct parcel {
    struct parcel *next;
    unsigned seed;
    void *child;
};

struct handoff {
    SRWLOCK lock;
    CONDITION_VARIABLE changed;
    struct parcel *first;
    unsigned producers_done, popped;
};

static void produce_roots(unsigned index, struct handoff *queue)
{
    for (unsigned i = 0; i < HANDOFF_ROOTS; i++) {
        struct parcel *parcel = new_root(sizeof *parcel);
        parcel->seed = index << 16 | i;
        parcel->child = new_child(HANDOFF_CHILD_SIZE, parcel);
        fill(parcel->child, HANDOFF_CHILD_SIZE, parcel->seed);
        AcquireSRWLockExclusive(&queue->lock);
        parcel->next = queue->first;
        queue->first = parcel;
        WakeAllConditionVariable(&queue->changed);
        ReleaseSRWLockExclusive(&queue->lock);
    }
    AcquireSRWLockExclusive(&queue->lock);
    queue->producers_done++;
    WakeAllConditionVariable(&queue->changed);
    ReleaseSRWLockExclusive(&queue->lock);
}

static void consume_roots(struct handoff *queue)
{
    for (;;) {
        AcquireSRWLockExclusive(&queue->lock);
        while (queue->first == NULL && queue->producers_done < HANDOFF_PRODUCERS)
            SleepConditionVariableSRW(&queue->changed, &queue->lock, INFINITE, 0);
        struct parcel *parcel = queue->first;
        if (parcel != NULL) {
            queue->first = parcel->next;
            queue->popped++;
        }
        ReleaseSRWLockExclusive(&queue->lock);
        if (parcel == NULL)
            return;
        CHECKF(holds(parcel->child, HANDOFF_CHILD_SIZE, parcel->seed), "contents lost", "root %#x", parcel->seed);
        free_root(parcel);
    }
}

static void handoff_worker(unsigned index, void *shared)
{
    if (index < HANDOFF_PRODUCERS)
        produce_roots(index, shared);
    else
        consume_roots(shared);
}

static void threads_free_on_other_thread(void)
{
    static struct handoff queue = { SRWLOCK_INIT, CONDITION_VARIABLE_INIT, NULL, 0, 0 };
    long long base = blocks_live();
    run_crew(HANDOFF_PRODUCERS + HANDOFF_CONSUMERS, handoff_worker, &queue, WITH_BEGINTHREADEX);
    CHECK(queue.popped == HANDOFF_PRODUCERS * HANDOFF_ROOTS, "roots lost in the hand-off");
    CHECK_LIVE(base, "roots freed on other threads not released");
}

/* Many threads add children to one root at once. */
#define SAME_ROOT_THREADS 8
#define SAME_ROOT_CHILDREN 1000

static void *same_root_children[SAME_ROOT_THREADS][SAME_ROOT_CHILDREN];

static ULONG same_root_size(unsigned i)
{
    return 8u + i % 57u;
}

static void same_root_worker(unsigned index, void *root)
{
    for (unsigned i = 0; i < SAME_ROOT_CHILDREN; i++) {
        /* Every fourth child hangs off one of this thread's earlier children. */
        void *parent = i % 4 == 3 ? same_root_children[index][i / 2] : root;
        void *child = new_child(same_root_size(i), parent);
        fill(child, same_root_size(i), index << 16 | i);
        same_root_children[index][i] = child;
    }
}

static void threads_more_same_root_loses_nothing(void)
{
    static void *all_children[SAME_ROOT_THREADS * SAME_ROOT_CHILDREN];
    long long base = blocks_live();
    void *root = new_root(32);
    run_crew(SAME_ROOT_THREADS, same_root_worker, root, WITH_CREATE_THREAD);
    size_t n = 0, damaged = 0;
    for (unsigned t = 0; t < SAME_ROOT_THREADS; t++) {
        for (unsigned i = 0; i < SAME_ROOT_CHILDREN; i++) {
            damaged += !holds(same_root_children[t][i], same_root_size(i), t << 16 | i);
            all_children[n++] = same_root_children[t][i];
        }
    }
    CHECKF(damaged == 0, "children overlap", "%lu children lost their contents", (unsigned long)damaged);
    CHECK(all_distinct(all_children, n), "children share an address");
    free_root(root);
    CHECK_LIVE(base, "children lost from the root's chain");
}

/* Threads add children to a root, and to its children, while another frees it. */
#define RACE_ROUNDS 30
#define RACE_ADDERS 6
#define RACE_SEEDS 8
#define RACE_MAX_CALLS 2000

struct race {
    void *root;
    void *seeds[RACE_SEEDS];
    LONG free_after;
    volatile LONG calls, linked, bad_results, freed;
};

static void *race_parent(const struct race *race, unsigned n, void *own)
{
    if (n % 3 == 0)
        return race->root;
    if (n % 3 == 1 || own == NULL)
        return race->seeds[n % RACE_SEEDS];
    return own;
}

static void race_add_children(unsigned index, struct race *race)
{
    void *own = NULL;
    for (unsigned n = 0; n < RACE_MAX_CALLS && !InterlockedCompareExchange(&race->freed, 0, 0); n++) {
        struct call call = call_allocate_more(16 + n % 64, race_parent(race, n + index, own));
        if (succeeded(call)) {
            InterlockedIncrement(&race->linked);
            own = call.out; /* not written: the root may be freed at any moment */
        } else if (call.status != MAPI_E_INVALID_PARAMETER || call.out != NULL) {
            InterlockedIncrement(&race->bad_results);
        }
        InterlockedIncrement(&race->calls);
    }
    while (!InterlockedCompareExchange(&race->freed, 0, 0))
        SwitchToThread();
    /* The free has returned: nothing of that tree may take a child now. */
    struct call after = call_allocate_more(8, race->seeds[index % RACE_SEEDS]);
    CHECK(after.status == MAPI_E_INVALID_PARAMETER && after.out == NULL, "freed tree still takes children");
}

static void race_worker(unsigned index, void *shared)
{
    struct race *race = shared;
    if (index > 0) {
        race_add_children(index, race);
        return;
    }
    while (InterlockedCompareExchange(&race->calls, 0, 0) < race->free_after)
        SwitchToThread();
    free_root(race->root);
    InterlockedExchange(&race->freed, 1);
}

static void threads_more_racing_free_is_safe(void)
{
    static struct race race;
    long long base = blocks_live();
    for (unsigned round = 0; round < RACE_ROUNDS; round++) {
        race.root = new_root(64);
        for (unsigned i = 0; i < RACE_SEEDS; i++)
            race.seeds[i] = new_child(32, i == 0 ? race.root : race.seeds[i - 1]);
        race.free_after = (LONG)(1 + round * 53 % 400);
        race.calls = race.linked = race.bad_results = race.freed = 0;
        run_crew(1 + RACE_ADDERS, race_worker, &race, WITH_BEGINTHREADEX);
        CHECKF(race.bad_results == 0, "neither S_OK nor refused", "round %u: %ld calls", round, race.bad_results);
        CHECKF(race.linked >= race.free_after, "child lost before the free", "round %u: %ld linked, expected %ld",
               round, race.linked, race.free_after);
    }
    CHECK_LIVE(base, "linked children not freed with their root");
}

/* A tree outlives the thread that built it, and is freed from another. */
static void *tree_of_thread[2];

static void build_tree_and_exit(unsigned index, void *shared)
{
    (void)index;
    (void)shared;
    tree_of_thread[0] = new_root(32);
    tree_of_thread[1] = new_child(32, tree_of_thread[0]);
    fill(tree_of_thread[1], 32, 9);
}

static void threads_tree_outlives_its_thread(void)
{
    long long base = blocks_live();
    run_crew(1, build_tree_and_exit, NULL, WITH_CREATE_THREAD);
    CHECK(holds(tree_of_thread[1], 32, 9), "tree changed when its thread ended");
    new_child(8, tree_of_thread[1]);
    check_free_ignored(tree_of_thread[1], "child of an ended thread's root");
    free_root(tree_of_thread[0]);
    CHECK_LIVE(base, "tree of an ended thread not freed");
}

/* Threads that come and go leave nothing behind: what the library keeps
 * for a thread is released or handed on when it ends (libmapi32 relies on
 * thread-local destructors, which a DLL only gets through its TLS callback). */
static void use_and_leave(unsigned index, void *shared)
{
    (void)shared;
    build_check_free_tree(index);
}

static void threads_exit_leave_nothing_behind(void)
{
    /* warm_up's threads have come and gone: what the library keeps for the
     * next threads (registry v3's heaps, given up at exit and adopted by
     * later threads, and their pages) is already there. */
    long long base = blocks_live();
    long mappings = mappings_live();
    for (unsigned i = 0; i < 100; i++)
        run_crew(1 + i % 3, use_and_leave, NULL, i % 2 ? WITH_CREATE_THREAD : WITH_BEGINTHREADEX);
    CHECK_LIVE(base, "memory kept for ended threads");
    CHECKF(mappings_live() == mappings, "mappings kept for ended threads", "%ld live, %ld before", mappings_live(),
           mappings);
}

/* The blocks come from the library's own heap, not the process heap: at
 * process exit Windows ends the other threads before the DLLs' detach code
 * frees into the process heap, and under Wine a thread ended inside a heap's
 * lock hand-off leaves that free spinning for ever (what made
 * exit_with_threads_inside hang once in a few hundred exits). */
static long process_heap_busy_entries(void)
{
    HANDLE heap = GetProcessHeap();
    PROCESS_HEAP_ENTRY entry = { .lpData = NULL };
    long busy = 0;
    REQUIRE(HeapLock(heap), "process heap not locked");
    while (HeapWalk(heap, &entry))
        if (entry.wFlags & PROCESS_HEAP_ENTRY_BUSY)
            busy++;
    HeapUnlock(heap);
    return busy;
}

static void blocks_come_from_a_heap_of_their_own(void)
{
    enum { ROOTS = 1000 };
    static void *roots[ROOTS];
    long long base = blocks_live();
    long before = process_heap_busy_entries();
    for (unsigned i = 0; i < ROOTS; i++)
        new_child(24, roots[i] = new_root(40));
    long grown = process_heap_busy_entries() - before;
    CHECK_LIVE(base + 2 * ROOTS, "blocks not counted");
    CHECKF(grown < ROOTS / 10, "blocks taken from the process heap", "%ld more busy entries for %d trees", grown,
           ROOTS);
    /* v3's own heap is its pages, mapped by the DLL itself with VirtualAlloc. */
    CHECK(in_own_mapping(roots[0]) && in_own_mapping(roots[ROOTS - 1]), "blocks not in the DLL's own mappings");
    for (unsigned i = 0; i < ROOTS; i++)
        free_root(roots[i]);
    CHECK_LIVE(base, "trees not freed");
}

/* FreeLibrary takes along what the library keeps for threads, as dlclose
 * does (SPEC §3): registry v3's heaps and pages, with no block left in them,
 * go back to the system (VirtualFree, still counted during the DLL's
 * detach), those of ended threads and of the unloading one alike. Loaded
 * again, the library works afresh. run_wine.sh runs it with
 * MAPI32_DEBUG=leaks too: the report, made at the same detach, must come
 * before the heaps it walks are gone. */
static void load_mapi32(void);

static void unload_gives_the_mappings_back(void)
{
    run_crew(4, use_and_leave, NULL, WITH_CREATE_THREAD);
    build_check_free_tree(1);
    REQUIRE(FreeLibrary(mapi), "mapi32.dll not unloaded");
    CHECKF(mappings_live() == 0, "mappings kept after FreeLibrary", "%ld live", mappings_live());
    load_mapi32();
    REQUIRE(hook_allocator_imports(mapi) > 0, "no import to count after loading again");
    long long base = blocks_live();
    build_check_free_tree(2);
    run_crew(2, use_and_leave, NULL, WITH_CREATE_THREAD);
    CHECK_LIVE(base, "trees not freed after loading again");
}

/* A process may end while other threads are inside the library. Windows
 * ends those threads wherever they are, perhaps holding a lock of the
 * library's, before the exiting thread runs the DLL's detach code and its
 * thread-local destructors: none of that may wait for them. Each round is
 * a process of its own (`--exit-race`), given a few seconds to end. */
#define EXIT_RACE_ROUNDS 20
#define EXIT_RACE_THREADS 4
#define EXIT_RACE_SECONDS 5

static void *exit_race_root;

static DWORD WINAPI exit_race_worker(LPVOID argument)
{
    (void)argument;
    /* Onto the main thread's root: libmapi32 enters that thread's records
     * as a guest, under their lock, on every call. */
    for (;;) {
        void *child = NULL;
        allocate_more(16, exit_race_root, &child);
    }
    return 0;
}

static int exit_race_child(void)
{
    REQUIRE(allocate_buffer(64, &exit_race_root) == S_OK, "root refused");
    for (unsigned i = 0; i < EXIT_RACE_THREADS; i++)
        REQUIRE(CreateThread(NULL, 0, exit_race_worker, NULL, 0, NULL) != NULL, "thread not started");
    Sleep(20);
    return EXIT_PASSED; /* exit() while the workers are busy */
}

/* Starts `command`. Under a loaded Wine, CreateProcess now and then fails
 * at once (seen once in make test on 2026-12-01, in the first round): a
 * process that never started says nothing about the library, so it is
 * tried again, a few times, before the case fails. */
static BOOL start_process(char *command, PROCESS_INFORMATION *child, DWORD *error)
{
    for (unsigned attempt = 0; attempt < 5; attempt++) {
        STARTUPINFOA startup = { .cb = sizeof startup };
        if (CreateProcessA(NULL, command, NULL, NULL, FALSE, 0, NULL, NULL, &startup, child))
            return TRUE;
        *error = GetLastError();
        Sleep(200);
    }
    return FALSE;
}

static void exit_with_threads_inside(void)
{
    char program[MAX_PATH];
    REQUIRE(GetModuleFileNameA(NULL, program, sizeof program) != 0, "own path");
    char command[MAX_PATH + 32];
    snprintf(command, sizeof command, "\"%s\" --exit-race", program);
    for (unsigned round = 0; round < EXIT_RACE_ROUNDS; round++) {
        PROCESS_INFORMATION child;
        DWORD error = 0;
        BOOL started = start_process(command, &child, &error);
        REQUIREF(started, "process not started", "round %u: CreateProcess failed 5 times, last error %lu", round,
                 (unsigned long)error);
        DWORD waited = WaitForSingleObject(child.hProcess, EXIT_RACE_SECONDS * 1000);
        DWORD status = 0;
        if (waited != WAIT_OBJECT_0)
            TerminateProcess(child.hProcess, 99);
        else
            GetExitCodeProcess(child.hProcess, &status);
        CloseHandle(child.hThread);
        CloseHandle(child.hProcess);
        REQUIREF(waited == WAIT_OBJECT_0, "process hung at exit", "round %u: still running after %d s", round,
                 EXIT_RACE_SECONDS);
        REQUIREF(status == 0, "process failed at exit", "round %u: exit status 0x%lx", round, (unsigned long)status);
    }
}

/* ======================================================================== */
/* SPEC §4: for the runner's MAPI32_DEBUG checks                            */
/* ======================================================================== */

/* Misuses the library twice and exits with one root still live: the runner
 * runs it with MAPI32_DEBUG=warn,leaks and with abort, and reads stderr. */
static void debug_misuse_and_leak(void)
{
    unsigned char stack_block[32];
    void *root = new_root(1000);
    new_child(24, root);
    free_buffer(stack_block + 16);
    struct call call = call_allocate_more(8, stack_block + 16);
    CHECK(call.status == MAPI_E_INVALID_PARAMETER, "foreign parent accepted");
    /* `root` stays live on purpose. */
}

/* ======================================================================== */

enum needs { NEEDS_NOTHING, NEEDS_REALLOCATE, NEEDS_STATS };

struct test_case {
    const char *name;
    void (*run)(void);
    enum needs needs;
    int cold; /* runs before warm_up(), whose calls its failure would crash */
};

#define CASE(fn) { #fn, fn, NEEDS_NOTHING, 0 }
#define CASE_NEEDING(fn, needs) { #fn, fn, needs, 0 }
#define CASE_COLD(fn) { #fn, fn, NEEDS_NOTHING, 1 }

static const struct test_case cases[] = {
    CASE(exports_decorated_alias_plain),
    CASE(exports_decorated_names_work),
#if defined(__i386__)
    CASE_COLD(exports_pop_their_arguments),
#endif
    CASE(alloc_null_out_is_invalid),
    CASE(alloc_gives_writable_bytes),
    CASE(alloc_roots_are_aligned),
    CASE(alloc_zero_is_unique_and_usable),
    CASE(alloc_huge_is_exact_or_refused),
    CASE(more_null_out_is_invalid),
    CASE(more_on_root_makes_child),
    CASE(more_children_are_aligned),
    CASE(more_zero_is_unique_and_usable),
    CASE(more_on_child_joins_root),
    CASE(more_null_parent_allocates_a_root),
    CASE(more_freed_parent_is_invalid),
    CASE(more_interior_pointer_is_invalid),
    CASE(more_foreign_pointer_is_invalid),
    CASE(more_unmapped_parent_is_invalid),
    CASE(more_noaccess_parent_is_invalid),
    CASE(free_null_returns_zero),
    CASE(free_root_frees_all_children),
    CASE(free_child_is_noop),
    CASE(free_double_is_noop),
    CASE(free_interior_is_noop),
    CASE(free_foreign_pointer_is_noop),
    CASE(free_unmapped_is_noop),
    CASE(free_noaccess_is_noop),
    CASE_NEEDING(realloc_root_moves_bytes_and_children, NEEDS_REALLOCATE),
    CASE_NEEDING(realloc_child_adds_sibling, NEEDS_REALLOCATE),
    CASE_NEEDING(realloc_null_allocates_unknown_refused, NEEDS_REALLOCATE),
    CASE_NEEDING(stats_count_live_blocks, NEEDS_STATS),
    CASE(threads_own_trees_concurrently),
    CASE(threads_free_on_other_thread),
    CASE(threads_more_same_root_loses_nothing),
    CASE(threads_more_racing_free_is_safe),
    CASE(threads_tree_outlives_its_thread),
    CASE(threads_exit_leave_nothing_behind),
    CASE(exit_with_threads_inside),
    CASE(blocks_come_from_a_heap_of_their_own),
    CASE(unload_gives_the_mappings_back),
    CASE(debug_misuse_and_leak),
};

static FARPROC required_export(const char *name)
{
    FARPROC function = GetProcAddress(mapi, name);
    if (function == NULL) {
        printf("mapi32.dll does not export %s\n", name);
        end_case(EXIT_FAILED);
    }
    return function;
}

static void load_mapi32(void)
{
    mapi = LoadLibraryA("mapi32.dll");
    if (mapi == NULL) {
        printf("LoadLibrary(mapi32.dll) failed: error %lu\n", GetLastError());
        end_case(EXIT_FAILED);
    }
    allocate_buffer = (LPMAPIALLOCATEBUFFER)(uintptr_t)required_export("MAPIAllocateBuffer");
    allocate_more = (LPMAPIALLOCATEMORE)(uintptr_t)required_export("MAPIAllocateMore");
    free_buffer = (LPMAPIFREEBUFFER)(uintptr_t)required_export("MAPIFreeBuffer");
    reallocate_buffer = (MAPIREALLOCATEBUFFER *)(uintptr_t)GetProcAddress(mapi, "MAPIReallocateBuffer");
    mapi32_stats = (MAPI32STATS *)(uintptr_t)GetProcAddress(mapi, "mapi32_stats");
}

/* Which DLL answered: libmapi32's has mapi32_stats, which no other has.
 * (Wine names its builtin after the path it searched, so the file name
 * alone would not tell.) */
static int which(int hooked)
{
    char path[MAX_PATH] = "";
    GetModuleFileNameA(mapi, path, sizeof path);
    printf("%s %s\n", mapi32_stats ? "libmapi32" : "other", path);
    printf("allocator imports counted:");
    for (size_t i = 0; i < COUNT(hooks); i++) {
        if (hooks[i].installed)
            printf(" %s", hooks[i].name);
    }
    printf(" (%d slots)\n", hooked);
    return EXIT_PASSED;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    /* No error dialogs, no debugger: a crash is reported here and ends the case. */
    SetErrorMode(SEM_FAILCRITICALERRORS | SEM_NOGPFAULTERRORBOX | SEM_NOOPENFILEERRORBOX);
    SetUnhandledExceptionFilter(on_unhandled_exception);
    if (argc != 2) {
        printf("usage: %s --list | --which | CASE   (--exit-race: for exit_with_threads_inside)\n", argv[0]);
        return 2;
    }
    if (strcmp(argv[1], "--list") == 0) {
        for (size_t i = 0; i < COUNT(cases); i++)
            printf("%s\n", cases[i].name);
        return EXIT_PASSED;
    }
    load_mapi32();
    if (strcmp(argv[1], "--exit-race") == 0)
        return exit_race_child();
    int hooked = hook_allocator_imports(mapi);
    if (strcmp(argv[1], "--which") == 0)
        return which(hooked);
    const struct test_case *test = NULL;
    for (size_t i = 0; i < COUNT(cases); i++) {
        if (strcmp(cases[i].name, argv[1]) == 0)
            test = &cases[i];
    }
    if (test == NULL) {
        printf("no such case: %s (see --list)\n", argv[1]);
        return 2;
    }
    current_case = test->name;
    if ((test->needs == NEEDS_REALLOCATE && reallocate_buffer == NULL) ||
        (test->needs == NEEDS_STATS && mapi32_stats == NULL)) {
        printf("N/A %s: mapi32.dll does not export %s\n", test->name,
               test->needs == NEEDS_STATS ? "mapi32_stats" : "MAPIReallocateBuffer");
        return EXIT_NOT_APPLICABLE;
    }
    if (hooked == 0) {
        printf("FAIL %s: found no allocator import to count in mapi32.dll\n", test->name);
        return EXIT_FAILED;
    }
    if (!test->cold)
        warm_up();
    test->run();
    int failed = InterlockedCompareExchange(&failed_checks, 0, 0) != 0;
    printf("%s %s\n", failed ? "FAIL" : "PASS", test->name);
    fflush(NULL);
    return failed ? EXIT_FAILED : EXIT_PASSED;
}
