/*
 * conformance.c: one named test per rule of SPEC.md §1–3, run against the
 * built libmapi32 through include/mapix.h, as a C client would.
 *
 * "Nothing allocated" and "everything freed" are measured twice: the number
 * of live C-allocator blocks, counted by malloc-family wrappers in this
 * program, and the bytes in use by glibc's mallinfo2; both leave out the
 * registry's own nodes, whose number follows where blocks lie (see
 * count_malloc.h), and both are exact. Under -fsanitize=address, ASan's own
 * byte counter replaces both where the registry cannot have changed (see
 * check_heap). The program
 * re-executes itself once with glibc's per-thread cache off (see
 * ensure_exact_heap_accounting) and warms the library up (see warm_up), so
 * that the totals only move with the blocks a test allocates. Under valgrind
 * the totals stand still (it replaces malloc); memcheck checks leaks there.
 *
 * Build: cc -std=c11 -pthread -Iinclude c_tests/conformance.c -Ltarget/release -lmapi32
 * Run:   ./conformance [--list] [test-name ...]
 */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mapix.h"

#include "harness.h"
#include "crew.h"
#include "patterns.h"

#include <valgrind/memcheck.h> /* blocks_are_seen_by_the_tools asks memcheck */

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

#define COUNT(array) (sizeof(array) / sizeof((array)[0]))


/* ------------------------------------------------------------------------ */
/* Measuring the C heap                                                      */
/* ------------------------------------------------------------------------ */

#if UNDER_ASAN
/* ASan replaces malloc, so glibc's totals stand still; ask ASan instead. It
 * counts the bytes asked for, so it is exact without a block count.
 * Declared here: not every compiler ships <sanitizer/allocator_interface.h>. */
size_t __sanitizer_get_current_allocated_bytes(void);

static size_t heap_bytes_in_use(void)
{
    return __sanitizer_get_current_allocated_bytes();
}

static long live_client_blocks(void)
{
    return 0;
}

static long live_c_blocks(void)
{
    return 0;
}

static size_t client_heap_bytes(size_t heap_bytes)
{
    return heap_bytes;
}

/* Huge requests must fail as they would under an address-space limit, which
 * ASan's shadow memory rules out (see limit_address_space). */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1:max_allocation_size_mb=1024";
}
#else
/* Bytes in use: small chunks plus mmap()ed large ones (1 MiB blocks land there). */
static size_t heap_bytes_in_use(void)
{
    struct mallinfo2 info = mallinfo2();
    return info.uordblks + info.hblkhd;
}

/* Every C-allocator call goes through the wrappers in count_malloc.h, which
 * count the blocks alive. */
#include "count_malloc.h"
#endif

/*
 * glibc's per-thread cache (tcache) keeps up to 7 freed chunks per size, and
 * mallinfo2 counts them as still in use; each extra arena adds header bytes.
 * With the cache off and one arena, uordblks is exactly the bytes in use.
 * Tunables are read at startup: re-execute once with them set.
 */
#define EXACT_HEAP_TUNABLES "glibc.malloc.tcache_count=0:glibc.malloc.arena_max=1"
#define REEXEC_MARK "MAPI32_CONFORMANCE_REEXECUTED"

/* Valgrind preloads its own malloc; /proc/self/exe is then its launcher. */
static int under_valgrind(void)
{
    const char *preload = getenv("LD_PRELOAD");
    return preload != NULL && strstr(preload, "vgpreload") != NULL;
}

#define BLIND_UNDER_VALGRIND "valgrind replaces malloc and mallinfo2: heap totals stand still"

static void ensure_exact_heap_accounting(char **argv)
{
    const char *tunables = getenv("GLIBC_TUNABLES");
    if (UNDER_ASAN || under_valgrind() || getenv(REEXEC_MARK) != NULL)
        return;
    if (tunables != NULL && strstr(tunables, EXACT_HEAP_TUNABLES) != NULL)
        return;
    char value[1024];
    int length = snprintf(value, sizeof value, "%s%s%s", tunables ? tunables : "",
                          tunables && *tunables ? ":" : "", EXACT_HEAP_TUNABLES);
    if (length < 0 || (size_t)length >= sizeof value)
        return;
    setenv("GLIBC_TUNABLES", value, 1);
    setenv(REEXEC_MARK, "1", 1);
    execv("/proc/self/exe", argv);
    /* Still here: byte totals may drift by cached chunks; block counts stay exact. */
    perror("warning: cannot re-execute with exact heap accounting");
}

struct heap_usage {
    size_t bytes;
    long blocks;
    /* With the registry's nodes. */
    long all_blocks;
};

static struct heap_usage heap_usage_now(void)
{
    struct heap_usage usage = { client_heap_bytes(heap_bytes_in_use()), live_client_blocks(), live_c_blocks() };
    return usage;
}

/* Exact, in blocks and bytes: the registry's own nodes, calloc'd, are left
 * out (count_malloc.h), so only the blocks a test holds move the totals.
 * `untouched`: the registry did not change either (after a refused call).
 * ASan's byte counter cannot leave the registry out, and under valgrind
 * mallinfo2 stands still while the registry's nodes come and go, so there
 * bytes are checked only then; LeakSanitizer and memcheck check for leaks. */
static void check_heap(struct heap_usage expected, int untouched, const char *file, int line)
{
    struct heap_usage now = heap_usage_now();
    harness_check(now.blocks == expected.blocks, file, line, "live C blocks == baseline",
                  "%ld blocks live, expected %ld (%+ld)", now.blocks, expected.blocks,
                  now.blocks - expected.blocks);
    if ((!UNDER_ASAN && !under_valgrind()) || untouched)
        harness_check(now.bytes == expected.bytes, file, line, "heap bytes == baseline",
                      "%zu bytes in use, expected %zu (%+td)", now.bytes, expected.bytes,
                      (ptrdiff_t)(now.bytes - expected.bytes));
    if (untouched)
        harness_check(now.all_blocks == expected.all_blocks, file, line, "registry unchanged",
                      "%+ld C blocks of the registry", (now.all_blocks - now.blocks) -
                      (expected.all_blocks - expected.blocks));
}

#define CHECK_HEAP_IS(expected) check_heap((expected), 0, __FILE__, __LINE__)

/* ------------------------------------------------------------------------ */
/* Calling the library                                                       */
/* ------------------------------------------------------------------------ */

/* Out-pointers start here, so a test can tell that the library wrote them. */
static char sentinel_target;
#define SENTINEL ((void *)&sentinel_target)

struct call {
    SCODE status;
    void *out;
};

static struct call call_allocate_buffer(ULONG size)
{
    struct call call = { S_OK, SENTINEL };
    call.status = MAPIAllocateBuffer(size, &call.out);
    return call;
}

static struct call call_allocate_more(ULONG size, void *parent)
{
    struct call call = { S_OK, SENTINEL };
    call.status = MAPIAllocateMore(size, parent, &call.out);
    return call;
}

/* A new root (parent NULL) or child of parent; the test ends if refused. */
static void *new_block(ULONG size, void *parent)
{
    struct call call = parent ? call_allocate_more(size, parent) : call_allocate_buffer(size);
    REQUIRE_MSG(call.status == S_OK && call.out != NULL && call.out != SENTINEL,
                "%s of %u bytes: status 0x%08x, block %p", parent ? "child" : "root", (unsigned)size,
                (unsigned)call.status, call.out);
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
    CHECK(MAPIFreeBuffer(root) == 0);
}

/* A failed call: the expected status, and *lppBuffer cleared (SPEC §2). */
static void check_refused(struct call call, SCODE expected, const char *what, const char *file, int line)
{
    harness_check(call.status == expected, file, line, "status == expected",
                  "%s: status 0x%08x, expected 0x%08x", what, (unsigned)call.status, (unsigned)expected);
    harness_check(call.out == NULL, file, line, "*lppBuffer == NULL", "%s: out-pointer left at %p", what,
                  call.out);
}

#define CHECK_REFUSED(call, expected, what) check_refused((call), (expected), (what), __FILE__, __LINE__)

/* MAPIAllocateMore onto `parent` is refused as an invalid parameter, the
 * out-pointer is cleared, and nothing stays allocated. */
static void check_more_refused(void *parent, const char *what, const char *file, int line)
{
    static const ULONG sizes[] = { 0, 64 };
    for (size_t i = 0; i < COUNT(sizes); i++) {
        struct heap_usage before = heap_usage_now();
        struct call call = call_allocate_more(sizes[i], parent);
        check_heap(before, 1, file, line);
        check_refused(call, MAPI_E_INVALID_PARAMETER, what, file, line);
    }
}

/* MAPIFreeBuffer on something that is not a live root returns 0 and frees nothing. */
static void check_free_ignored(void *pointer, const char *what, const char *file, int line)
{
    struct heap_usage before = heap_usage_now();
    ULONG result = MAPIFreeBuffer(pointer);
    check_heap(before, 1, file, line);
    harness_check(result == 0, file, line, "MAPIFreeBuffer(pointer) == 0", "%s: returned %u", what,
                  (unsigned)result);
}

#define CHECK_MORE_REFUSED(parent, what) check_more_refused((parent), (what), __FILE__, __LINE__)
#define CHECK_FREE_IGNORED(pointer, what) check_free_ignored((pointer), (what), __FILE__, __LINE__)

/* ------------------------------------------------------------------------ */
/* Contents, addresses, memory                                               */
/* ------------------------------------------------------------------------ */

static size_t page_size(void)
{
    return (size_t)sysconf(_SC_PAGESIZE);
}

/* Two pages that were mapped and are no longer: nothing lives there. */
static unsigned char *unmapped_pages(void)
{
    void *pages = mmap(NULL, 2 * page_size(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(pages != MAP_FAILED);
    REQUIRE(munmap(pages, 2 * page_size()) == 0);
    return pages;
}

/* Two pages holding a pattern, then made PROT_NONE: any read or write faults. */
static unsigned char *inaccessible_pages(void)
{
    void *pages = mmap(NULL, 2 * page_size(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(pages != MAP_FAILED);
    fill(pages, 2 * page_size(), 0xC0FFEE);
    REQUIRE(mprotect(pages, 2 * page_size(), PROT_NONE) == 0);
    return pages;
}

static int inaccessible_pages_untouched(unsigned char *pages)
{
    REQUIRE(mprotect(pages, 2 * page_size(), PROT_READ) == 0);
    return holds(pages, 2 * page_size(), 0xC0FFEE);
}

/* Bytes of address space this process maps now, from /proc/self/statm. */
static size_t address_space_in_use(void)
{
    char text[128] = "";
    int fd = open("/proc/self/statm", O_RDONLY);
    REQUIRE(fd >= 0);
    ssize_t length = read(fd, text, sizeof text - 1);
    close(fd);
    REQUIRE(length > 0);
    return (size_t)strtoull(text, NULL, 10) * page_size();
}

/* Caps this process's address space at its current size plus `headroom`, so
 * that huge requests fail at once rather than being overcommitted. Only for
 * forked tests. ASan reserves terabytes of shadow, so there it relies on
 * max_allocation_size_mb instead (see __asan_default_options). */
static void limit_address_space(size_t headroom)
{
#if UNDER_ASAN
    /* Registry v3 maps pages itself, past ASan's max_allocation_size_mb:
     * with no limit at all a huge request is a block like any other. The
     * uninstrumented and valgrind runs of this suite check these cases. */
    SKIP_TEST("the library's own pages are outside ASan's allocation limit, and ASan rules out RLIMIT_AS");
#endif
    if (UNDER_ASAN)
        return;
    struct rlimit limit;
    REQUIRE(getrlimit(RLIMIT_AS, &limit) == 0);
    rlim_t wanted = (rlim_t)(address_space_in_use() + headroom);
    if (limit.rlim_max == RLIM_INFINITY || wanted < limit.rlim_max)
        limit.rlim_cur = wanted;
    REQUIRE(setrlimit(RLIMIT_AS, &limit) == 0);
}

#define HUGE_HEADROOM (256u << 20)

/* Every request here needs far more than HUGE_HEADROOM, some near ULONG's limit
 * where a size computed without checks would wrap into a small block. */
static const ULONG huge_sizes[] = { 0xFFFFFFFFu, 0xFFFFFFF0u, 0xFFFFFFF1u, 0x80000000u };

/* ------------------------------------------------------------------------ */
/* Threads                                                                   */
/* ------------------------------------------------------------------------ */

/* A root with children hanging off it and off each other, each filled with
 * its own pattern, checked, then freed as one tree. */
#define TREE_CHILDREN 12

static void build_check_free_tree(unsigned seed)
{
    void *blocks[TREE_CHILDREN + 1];
    ULONG sizes[TREE_CHILDREN + 1];
    for (unsigned k = 0; k <= TREE_CHILDREN; k++) {
        sizes[k] = (seed + k * 37u) % 500u;
        blocks[k] = new_block(sizes[k], k == 0 ? NULL : blocks[(k - 1) / 2]);
        fill(blocks[k], sizes[k], seed + k);
    }
    for (unsigned k = 0; k <= TREE_CHILDREN; k++)
        CHECK_MSG(holds(blocks[k], sizes[k], seed + k), "tree %u, block %u of %u bytes", seed, k,
                  (unsigned)sizes[k]);
    free_root(blocks[0]);
}

/* ------------------------------------------------------------------------ */
/* Warm-up                                                                   */
/* ------------------------------------------------------------------------ */

/* ======================================================================== */
/* SPEC §1: types and ABI                                                    */
/* ======================================================================== */

/* The header's function types must describe the exports exactly: these
 * redeclarations are a compile error otherwise. */
ALLOCATEBUFFER MAPIAllocateBuffer;
ALLOCATEMORE MAPIAllocateMore;
FREEBUFFER MAPIFreeBuffer;
MAPIALLOCATEBUFFER MAPIAllocateBuffer;
MAPIALLOCATEMORE MAPIAllocateMore;
MAPIFREEBUFFER MAPIFreeBuffer;

_Static_assert(sizeof(SCODE) == 4 && (SCODE)-1 < 0, "SCODE is 32-bit signed");
_Static_assert(sizeof(ULONG) == 4 && (ULONG)-1 > 0, "ULONG is 32-bit unsigned, never unsigned long");
_Static_assert(_Generic(MAPI_E_NOT_ENOUGH_MEMORY, SCODE: 1, default: 0), "status codes are SCODEs");

static void abi_scode_is_signed_32_bits(void)
{
    CHECK(sizeof(SCODE) == 4);
    CHECK((SCODE)-1 < 0);
    CHECK(_Generic((SCODE)0, int32_t: 1, default: 0));
    CHECK(_Generic(MAPIAllocateBuffer(0, NULL), SCODE: 1, default: 0));
    CHECK(_Generic(MAPIAllocateMore(0, NULL, NULL), SCODE: 1, default: 0));
}

static void abi_ulong_is_unsigned_32_bits(void)
{
    CHECK(sizeof(ULONG) == 4);
    CHECK((ULONG)-1 > 0);
    CHECK(_Generic((ULONG)0, uint32_t: 1, default: 0));
    CHECK(_Generic(MAPIFreeBuffer(NULL), ULONG: 1, default: 0));
}

static void abi_lpvoid_is_void_pointer(void)
{
    CHECK(_Generic((LPVOID)0, void *: 1, default: 0));
    CHECK(sizeof(LPVOID) == sizeof(void *));
}

/* Each code is an SCODE (type and size) with the Windows SDK's bit pattern. */
#define CHECK_STATUS_CODE(code, bits)                                                              \
    do {                                                                                           \
        CHECK_MSG(_Generic((code), SCODE: 1, default: 0), "%s is not an SCODE", #code);            \
        CHECK_MSG(sizeof(code) == sizeof(SCODE), "%s", #code);                                     \
        CHECK_MSG((uint32_t)(code) == (bits), "%s is 0x%08x", #code, (unsigned)(uint32_t)(code));  \
        CHECK_MSG((code) == (SCODE)(bits), "%s", #code);                                           \
    } while (0)

static void abi_status_codes_have_sdk_values(void)
{
    CHECK_STATUS_CODE(S_OK, 0x00000000u);
    CHECK_STATUS_CODE(MAPI_E_NOT_ENOUGH_MEMORY, 0x8007000Eu);
    CHECK_STATUS_CODE(MAPI_E_INVALID_PARAMETER, 0x80070057u);
    CHECK_STATUS_CODE(MAPI_E_CALL_FAILED, 0x80004005u);
    /* FAILED(sc) in MAPI is sc < 0. */
    CHECK(MAPI_E_NOT_ENOUGH_MEMORY < 0 && MAPI_E_INVALID_PARAMETER < 0 && MAPI_E_CALL_FAILED < 0);
}

/* What a service provider does with the pointers MAPI hands it. */
static void use_provider_pointers(LPALLOCATEBUFFER allocate, LPALLOCATEMORE more, LPFREEBUFFER release)
{
    struct heap_usage base = heap_usage_now();
    void *root = SENTINEL, *child = SENTINEL, *grandchild = SENTINEL;
    REQUIRE(allocate(24, &root) == S_OK);
    REQUIRE(more(40, root, &child) == S_OK);
    REQUIRE(more(56, child, &grandchild) == S_OK);
    fill(root, 24, 1);
    fill(child, 40, 2);
    fill(grandchild, 56, 3);
    CHECK(holds(root, 24, 1) && holds(child, 40, 2) && holds(grandchild, 56, 3));
    CHECK(release(root) == 0);
    CHECK_HEAP_IS(base);
}

static void abi_provider_types_accept_exports(void)
{
    LPALLOCATEBUFFER allocate = MAPIAllocateBuffer;
    LPALLOCATEMORE more = MAPIAllocateMore;
    LPFREEBUFFER release = MAPIFreeBuffer;
    use_provider_pointers(allocate, more, release);
}

static void abi_mapi_provider_types_accept_exports(void)
{
    LPMAPIALLOCATEBUFFER allocate = MAPIAllocateBuffer;
    LPMAPIALLOCATEMORE more = MAPIAllocateMore;
    LPMAPIFREEBUFFER release = MAPIFreeBuffer;
    use_provider_pointers(allocate, more, release);
}

/* ======================================================================== */
/* SPEC §2: MAPIAllocateBuffer                                               */
/* ======================================================================== */

static void alloc_null_out_is_invalid(void)
{
    static const ULONG sizes[] = { 0, 1, 16, 4096, 1u << 20, 0xFFFFFFFFu };
    struct heap_usage base = heap_usage_now();
    for (size_t i = 0; i < COUNT(sizes); i++) {
        SCODE status = MAPIAllocateBuffer(sizes[i], NULL);
        CHECK_MSG(status == MAPI_E_INVALID_PARAMETER, "size %u: status 0x%08x", (unsigned)sizes[i],
                  (unsigned)status);
    }
    CHECK_HEAP_IS(base);
}

/* Around every power of two a size class or page could end at. */
static const ULONG interesting_sizes[] = {
    1, 2, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 255, 256, 257, 1000, 1023, 1024, 1025,
    4095, 4096, 4097, 65535, 65536, 65537, 1u << 20,
};

/* Blocks of every interesting size, all live at once, each filled and then
 * re-read: a block shorter than asked for, or overlapping another, shows. */
static void check_blocks_hold_their_size(void *parent)
{
    void *blocks[COUNT(interesting_sizes)];
    for (size_t i = 0; i < COUNT(interesting_sizes); i++) {
        blocks[i] = new_block(interesting_sizes[i], parent);
        fill(blocks[i], interesting_sizes[i], (unsigned)i + 1);
    }
    for (size_t i = 0; i < COUNT(interesting_sizes); i++)
        CHECK_MSG(holds(blocks[i], interesting_sizes[i], (unsigned)i + 1), "block of %u bytes",
                  (unsigned)interesting_sizes[i]);
    for (size_t i = 0; parent == NULL && i < COUNT(interesting_sizes); i++)
        free_root(blocks[i]);
}

static void alloc_gives_writable_bytes(void)
{
    struct heap_usage base = heap_usage_now();
    check_blocks_hold_their_size(NULL);
    CHECK_HEAP_IS(base);
}

#define ALIGNMENT_SMALL_SIZES 300

/* Blocks of sizes 0..299 and the interesting ones, all live at once. */
static void check_blocks_aligned(void *parent)
{
    void *blocks[ALIGNMENT_SMALL_SIZES + COUNT(interesting_sizes)];
    size_t n = 0;
    for (ULONG size = 0; size < ALIGNMENT_SMALL_SIZES; size++)
        blocks[n++] = new_block(size, parent);
    for (size_t i = 0; i < COUNT(interesting_sizes); i++)
        blocks[n++] = new_block(interesting_sizes[i], parent);
    for (size_t i = 0; i < n; i++)
        CHECK_MSG(is_aligned(blocks[i]), "block %zu at %p", i, blocks[i]);
    for (size_t i = 0; parent == NULL && i < n; i++)
        free_root(blocks[i]);
}

static void alloc_roots_are_aligned(void)
{
    struct heap_usage base = heap_usage_now();
    check_blocks_aligned(NULL);
    CHECK_HEAP_IS(base);
}

#define ZERO_SIZE_BLOCKS 1000

/* Many size-0 blocks: each non-NULL, aligned, distinct from every other block,
 * and usable as a parent; roots among them are freed here. */
static void check_zero_size_blocks(void *parent)
{
    static void *blocks[ZERO_SIZE_BLOCKS];
    static void *everything[2 * ZERO_SIZE_BLOCKS + 1];
    size_t n = 0;
    for (size_t i = 0; i < ZERO_SIZE_BLOCKS; i++) {
        blocks[i] = new_block(0, parent);
        CHECK_MSG(is_aligned(blocks[i]), "block %zu at %p", i, blocks[i]);
        everything[n++] = blocks[i];
    }
    for (size_t i = 0; i < ZERO_SIZE_BLOCKS; i++)
        everything[n++] = new_child(8, blocks[i]);
    if (parent != NULL)
        everything[n++] = parent;
    CHECK(all_distinct(everything, n));
    for (size_t i = 0; parent == NULL && i < ZERO_SIZE_BLOCKS; i++)
        free_root(blocks[i]);
}

static void alloc_zero_is_unique_and_usable(void)
{
    struct heap_usage base = heap_usage_now();
    check_zero_size_blocks(NULL);
    CHECK_HEAP_IS(base);
}

static void alloc_huge_is_no_memory(void)
{
    limit_address_space(HUGE_HEADROOM);
    for (size_t i = 0; i < COUNT(huge_sizes); i++) {
        struct heap_usage before = heap_usage_now();
        CHECK_REFUSED(call_allocate_buffer(huge_sizes[i]), MAPI_E_NOT_ENOUGH_MEMORY, "huge root");
        CHECK_HEAP_IS(before);
    }
    free_root(new_root(64)); /* and the library still works */
}

/* ======================================================================== */
/* SPEC §2: MAPIAllocateMore, valid use                                      */
/* ======================================================================== */

static void more_null_out_is_invalid(void)
{
    static const ULONG sizes[] = { 0, 1, 16, 4096, 1u << 20, 0xFFFFFFFFu };
    struct heap_usage base = heap_usage_now();
    void *root = new_root(16);
    struct heap_usage with_root = heap_usage_now();
    for (size_t i = 0; i < COUNT(sizes); i++) {
        SCODE status = MAPIAllocateMore(sizes[i], root, NULL);
        CHECK_MSG(status == MAPI_E_INVALID_PARAMETER, "size %u: status 0x%08x", (unsigned)sizes[i],
                  (unsigned)status);
    }
    CHECK(MAPIAllocateMore(16, NULL, NULL) == MAPI_E_INVALID_PARAMETER);
    CHECK_HEAP_IS(with_root); /* no child was linked either */
    free_root(root);
    CHECK_HEAP_IS(base);
}

static void more_on_root_makes_child(void)
{
    struct heap_usage base = heap_usage_now();
    void *root = new_root(32);
    fill(root, 32, 1);
    struct call call = call_allocate_more(48, root);
    REQUIRE(call.status == S_OK && call.out != NULL && call.out != SENTINEL);
    CHECK(call.out != root);
    fill(call.out, 48, 2);
    CHECK(holds(root, 32, 1) && holds(call.out, 48, 2));
    free_root(root);
    CHECK_HEAP_IS(base); /* the child went with its root */
}

static void more_gives_writable_bytes(void)
{
    struct heap_usage base = heap_usage_now();
    void *root = new_root(16);
    check_blocks_hold_their_size(root);
    check_blocks_hold_their_size(new_child(16, root));
    free_root(root);
    CHECK_HEAP_IS(base);
}

static void more_children_are_aligned(void)
{
    struct heap_usage base = heap_usage_now();
    void *root = new_root(1);
    check_blocks_aligned(root);
    check_blocks_aligned(new_child(3, root));
    free_root(root);
    CHECK_HEAP_IS(base);
}

static void more_zero_is_unique_and_usable(void)
{
    struct heap_usage base = heap_usage_now();
    void *root = new_root(0);
    check_zero_size_blocks(root);
    free_root(root);
    CHECK_HEAP_IS(base);
}

static void more_on_child_joins_root(void)
{
    struct heap_usage base = heap_usage_now();
    void *root = new_root(16);
    void *child = new_child(16, root);
    void *grandchild = new_child(32, child);
    void *great_grandchild = new_child(4096, grandchild);
    free_root(root);
    CHECK_HEAP_IS(base); /* the whole line went with the root */
    CHECK_MORE_REFUSED(grandchild, "grandchild of a freed root");
    CHECK_MORE_REFUSED(great_grandchild, "great-grandchild of a freed root");
}

/* ======================================================================== */
/* Pointers the library did not hand out (or no longer owns)                */
/* ======================================================================== */

struct suspect {
    const char *what;
    void *address;
};

#define MAX_SUSPECTS 32

struct suspects {
    size_t count;
    struct suspect list[MAX_SUSPECTS];
};

static void add_suspect(struct suspects *suspects, const char *what, void *address)
{
    REQUIRE(suspects->count < MAX_SUSPECTS);
    suspects->list[suspects->count++] = (struct suspect){ what, address };
}

/* A check applied to one suspect: check_more_refused or check_free_ignored. */
typedef void (*suspect_check)(void *address, const char *what, const char *file, int line);

static void check_suspects(const struct suspects *suspects, suspect_check check)
{
    for (size_t i = 0; i < suspects->count; i++)
        check(suspects->list[i].address, suspects->list[i].what, __FILE__, __LINE__);
}

/* Pointers into a live block of 64 bytes that are not its start, and into
 * the 16 bytes before it, where a library could keep a header. */
static const long interior_offsets[] = { 1, 8, 16, 63, -8, -16 };
static const char *const root_interiors[] = { "root + 1", "root + 8", "root + 16",
                                              "root + 63", "root - 8", "root - 16" };
static const char *const child_interiors[] = { "child + 1", "child + 8", "child + 16",
                                               "child + 63", "child - 8", "child - 16" };

static void add_interior_suspects(struct suspects *suspects, void *block, const char *const labels[])
{
    for (size_t i = 0; i < COUNT(interior_offsets); i++)
        add_suspect(suspects, labels[i], displaced(block, interior_offsets[i]));
}

/* Two pages with nothing readable in them: the pointers' would-be headers
 * (the 16 bytes before each) lie inside too. */
static void add_page_suspects(struct suspects *suspects, unsigned char *pages)
{
    add_suspect(suspects, "first page + 16", pages + 16);
    add_suspect(suspects, "second page", pages + page_size());
    add_suspect(suspects, "second page + 16", pages + page_size() + 16);
}

#define FOREIGN_SIZE 64

static unsigned char static_block[FOREIGN_SIZE];

/* Memory from elsewhere: the C heap, the stack, static storage, code. */
struct foreign_memory {
    unsigned char *heap;
    unsigned char *stack;
};

static void foreign_prepare(struct foreign_memory *foreign, unsigned char *stack_buffer)
{
    /* Heap memory whose first 16 bytes look like a library header for
     * heap + 16: only the registry, not memory at the pointer, can tell. */
    const size_t forged_header[2] = { 0, FOREIGN_SIZE - 16 };
    foreign->heap = malloc(FOREIGN_SIZE);
    REQUIRE(foreign->heap != NULL);
    memcpy(foreign->heap, forged_header, sizeof forged_header);
    fill(foreign->heap + 16, FOREIGN_SIZE - 16, 11);
    foreign->stack = stack_buffer;
    fill(foreign->stack, FOREIGN_SIZE, 12);
    fill(static_block, FOREIGN_SIZE, 13);
}

static int foreign_untouched(const struct foreign_memory *foreign)
{
    const size_t forged_header[2] = { 0, FOREIGN_SIZE - 16 };
    return memcmp(foreign->heap, forged_header, sizeof forged_header) == 0 &&
           holds(foreign->heap + 16, FOREIGN_SIZE - 16, 11) && holds(foreign->stack, FOREIGN_SIZE, 12) &&
           holds(static_block, FOREIGN_SIZE, 13);
}

static void add_foreign_suspects(struct suspects *suspects, const struct foreign_memory *foreign)
{
    add_suspect(suspects, "malloc'd block", foreign->heap);
    add_suspect(suspects, "malloc'd block + 16, behind a forged header", foreign->heap + 16);
    add_suspect(suspects, "stack buffer", foreign->stack);
    add_suspect(suspects, "stack buffer + 16", foreign->stack + 16);
    add_suspect(suspects, "static buffer", static_block);
    add_suspect(suspects, "static buffer + 16", static_block + 16);
    add_suspect(suspects, "string literal", (void *)(uintptr_t) "a read-only string literal");
    add_suspect(suspects, "a function", (void *)(uintptr_t)&MAPIAllocateBuffer);
    add_suspect(suspects, "address 16", (void *)(uintptr_t)16);
    add_suspect(suspects, "top of the address space", (void *)(UINTPTR_MAX & ~(uintptr_t)15));
}

/* A root freed with its child; nothing is allocated after, so neither
 * address can have been handed out again. */
struct freed_tree {
    void *root;
    void *child;
};

static struct freed_tree make_freed_tree(void)
{
    struct freed_tree tree;
    tree.root = new_root(64);
    tree.child = new_child(64, tree.root);
    free_root(tree.root);
    return tree;
}

/* ======================================================================== */
/* SPEC §2: MAPIAllocateMore, refusals                                       */
/* ======================================================================== */

/* SPEC §2: no parent makes a root, exactly as MAPIAllocateBuffer. Kopano's
 * shape: its helpers copy an entry ID "onto a base, if there is one" and pass
 * NULL for no base; the copy then carries children and is freed whole. */
static void more_null_parent_allocates_a_root(void)
{
    static const unsigned char entry_id[22] = { 0, 0, 0, 0, 0xDC, 0xA7, 0x40, 0xC8, 0xC0, 0x42, 0x10,
                                                0x1A, 0xB4, 0xB9, 0x08, 0x00, 0x2B, 0x2F, 0xE1, 0x82, 1, 0 };
    struct heap_usage base = heap_usage_now();
    struct call copy = call_allocate_more(sizeof entry_id, NULL);
    REQUIRE_MSG(copy.status == S_OK && copy.out != NULL && copy.out != SENTINEL, "status 0x%08x, block %p",
                (unsigned)copy.status, copy.out);
    CHECK_MSG(is_aligned(copy.out), "root at %p", copy.out);
    memcpy(copy.out, entry_id, sizeof entry_id);
    void *name = new_child(64, copy.out);
    fill(name, 64, 0x4B);
    CHECK_FREE_IGNORED(name, "child of a root made with no parent");
    CHECK(memcmp(copy.out, entry_id, sizeof entry_id) == 0);
    CHECK(holds(name, 64, 0x4B));
    free_root(copy.out);
    CHECK_HEAP_IS(base);
    /* And a NULL out-pointer is still refused, with nothing allocated. */
    CHECK(MAPIAllocateMore(16, NULL, NULL) == MAPI_E_INVALID_PARAMETER);
    CHECK_HEAP_IS(base);
}

static void more_freed_parent_is_invalid(void)
{
    struct freed_tree tree = make_freed_tree();
    CHECK_MORE_REFUSED(tree.root, "freed root");
    CHECK_MORE_REFUSED(tree.child, "child of a freed root");
}

/* Interior pointers of a root and of a child are refused (or ignored by
 * `check`); both blocks are intact afterwards and free with the root. */
static void check_interior_pointers(suspect_check check)
{
    struct heap_usage base = heap_usage_now();
    unsigned char *root = new_root(64);
    unsigned char *child = new_child(64, root);
    fill(root, 64, 1);
    fill(child, 64, 2);
    struct suspects suspects = { 0 };
    add_interior_suspects(&suspects, root, root_interiors);
    add_interior_suspects(&suspects, child, child_interiors);
    check_suspects(&suspects, check);
    CHECK(holds(root, 64, 1) && holds(child, 64, 2));
    fill(new_child(8, root), 8, 3); /* the root still takes children */
    free_root(root);
    CHECK_HEAP_IS(base);
}

static void check_foreign_pointers(suspect_check check)
{
    unsigned char stack_buffer[FOREIGN_SIZE];
    struct foreign_memory foreign;
    struct heap_usage base = heap_usage_now();
    foreign_prepare(&foreign, stack_buffer);
    struct suspects suspects = { 0 };
    add_foreign_suspects(&suspects, &foreign);
    check_suspects(&suspects, check);
    CHECK(foreign_untouched(&foreign));
    free(foreign.heap); /* aborts if the library freed or corrupted it */
    CHECK_HEAP_IS(base);
}

static void check_unmapped_pointers(suspect_check check)
{
    struct suspects suspects = { 0 };
    add_page_suspects(&suspects, unmapped_pages());
    check_suspects(&suspects, check);
}

/* A fault here would be the library reading or writing at the pointer. */
static void check_inaccessible_pointers(suspect_check check)
{
    unsigned char *pages = inaccessible_pages();
    struct suspects suspects = { 0 };
    add_page_suspects(&suspects, pages);
    check_suspects(&suspects, check);
    CHECK(inaccessible_pages_untouched(pages));
}

static void more_interior_pointer_is_invalid(void)
{
    check_interior_pointers(check_more_refused);
}

static void more_foreign_pointer_is_invalid(void)
{
    check_foreign_pointers(check_more_refused);
}

static void more_unmapped_parent_is_invalid(void)
{
    check_unmapped_pointers(check_more_refused);
}

static void more_prot_none_parent_is_invalid(void)
{
    check_inaccessible_pointers(check_more_refused);
}

/* A root and a chain of children, each with its own pattern. */
#define CHAIN_LENGTH 8

struct filled_tree {
    void *blocks[CHAIN_LENGTH + 1];
};

static ULONG filled_tree_size(unsigned k)
{
    return 64u + 24u * k;
}

static void make_filled_tree(struct filled_tree *tree)
{
    for (unsigned k = 0; k <= CHAIN_LENGTH; k++) {
        tree->blocks[k] = new_block(filled_tree_size(k), k == 0 ? NULL : tree->blocks[k - 1]);
        fill(tree->blocks[k], filled_tree_size(k), 100 + k);
    }
}

static int filled_tree_intact(const struct filled_tree *tree)
{
    for (unsigned k = 0; k <= CHAIN_LENGTH; k++) {
        if (!holds(tree->blocks[k], filled_tree_size(k), 100 + k))
            return 0;
    }
    return 1;
}

static void more_oom_leaves_tree_intact(void)
{
    struct heap_usage base = heap_usage_now();
    struct filled_tree tree;
    make_filled_tree(&tree);
    limit_address_space(HUGE_HEADROOM);
    struct heap_usage before = heap_usage_now();
    for (size_t i = 0; i < COUNT(huge_sizes); i++) {
        CHECK_REFUSED(call_allocate_more(huge_sizes[i], tree.blocks[0]), MAPI_E_NOT_ENOUGH_MEMORY,
                      "huge child of the root");
        CHECK_REFUSED(call_allocate_more(huge_sizes[i], tree.blocks[CHAIN_LENGTH]),
                      MAPI_E_NOT_ENOUGH_MEMORY, "huge child of a child");
    }
    CHECK_HEAP_IS(before);
    CHECK(filled_tree_intact(&tree));
    fill(new_child(32, tree.blocks[3]), 32, 7); /* the tree still grows */
    CHECK(filled_tree_intact(&tree));
    free_root(tree.blocks[0]);
    CHECK_HEAP_IS(base); /* every child, the late one too, went with the root */
}

/* Every kind of bad parent with every kind of size: always a failure status
 * and a NULL out-pointer, never an allocation. */
static void check_every_bad_parent(const struct suspects *suspects, ULONG size)
{
    for (size_t i = 0; i < suspects->count; i++) {
        struct heap_usage before = heap_usage_now();
        struct call call = call_allocate_more(size, suspects->list[i].address);
        /* A bad parent is reported as such whatever the size: the parent is
         * looked up before anything is allocated (README, "Decisions"). */
        CHECK_MSG(call.status == MAPI_E_INVALID_PARAMETER, "%s, %u bytes: status 0x%08x",
                  suspects->list[i].what, (unsigned)size,
                  (unsigned)call.status);
        CHECK_MSG(call.out == NULL, "%s, %u bytes: out-pointer %p", suspects->list[i].what, (unsigned)size,
                  call.out);
        CHECK_HEAP_IS(before);
    }
}

static void more_every_failure_clears_out(void)
{
    static const ULONG sizes[] = { 0, 1, 4096, 0x80000000u, 0xFFFFFFFFu };
    unsigned char stack_buffer[FOREIGN_SIZE];
    struct foreign_memory foreign;
    struct suspects suspects = { 0 };
    unsigned char *live = new_root(64);
    foreign_prepare(&foreign, stack_buffer);
    struct freed_tree freed = make_freed_tree(); /* last allocation: nothing reuses it */
    add_suspect(&suspects, "freed root", freed.root);
    add_suspect(&suspects, "child of a freed root", freed.child);
    add_interior_suspects(&suspects, live, root_interiors);
    add_foreign_suspects(&suspects, &foreign);
    add_page_suspects(&suspects, unmapped_pages());
    limit_address_space(HUGE_HEADROOM);
    for (size_t i = 0; i < COUNT(sizes); i++)
        check_every_bad_parent(&suspects, sizes[i]);
    CHECK(foreign_untouched(&foreign));
    free_root(live);
    free(foreign.heap);
}

/* ======================================================================== */
/* SPEC §2: MAPIFreeBuffer                                                   */
/* ======================================================================== */

static void free_null_returns_zero(void)
{
    struct heap_usage base = heap_usage_now();
    CHECK(MAPIFreeBuffer(NULL) == 0);
    CHECK_HEAP_IS(base);
}

#define MANY_CHILDREN 1000

static void free_root_frees_all_children(void)
{
    static void *children[MANY_CHILDREN];
    struct heap_usage base = heap_usage_now();
    void *root = new_root(100);
    for (unsigned i = 0; i < MANY_CHILDREN; i++) {
        /* Every third child hangs off an earlier child, not the root. */
        void *parent = i % 3 == 2 ? children[i / 2] : root;
        children[i] = new_child(i % 200, parent);
        fill(children[i], i % 200, i);
    }
    for (unsigned i = 0; i < MANY_CHILDREN; i++)
        CHECK_MSG(holds(children[i], i % 200, i), "child %u", i);
    CHECK(MAPIFreeBuffer(root) == 0);
    CHECK_HEAP_IS(base);
    CHECK_MORE_REFUSED(children[0], "child of a freed root");
    CHECK_MORE_REFUSED(children[MANY_CHILDREN - 2], "grandchild of a freed root");
}

static void free_child_is_noop(void)
{
    struct heap_usage base = heap_usage_now();
    void *root = new_root(32);
    void *child = new_child(256, root);
    void *grandchild = new_child(64, child);
    fill(root, 32, 1);
    fill(child, 256, 2);
    fill(grandchild, 64, 3);
    CHECK_FREE_IGNORED(child, "child");
    CHECK_FREE_IGNORED(grandchild, "grandchild");
    CHECK(holds(root, 32, 1) && holds(child, 256, 2) && holds(grandchild, 64, 3));
    fill(child, 256, 4); /* still the caller's to write */
    CHECK(holds(child, 256, 4));
    fill(new_child(16, child), 16, 5); /* and to use as a parent */
    free_root(root);
    CHECK_HEAP_IS(base); /* the root took the child, and all below it, along */
}

static void free_double_is_noop(void)
{
    struct heap_usage base = heap_usage_now();
    void *root = new_root(64);
    fill(new_child(64, root), 64, 1);
    fill(new_child(128, root), 128, 2);
    free_root(root);
    CHECK_HEAP_IS(base);
    /* No allocation since, so the address cannot be live again (SPEC §2's known limit). */
    CHECK_FREE_IGNORED(root, "root freed once");
    CHECK_FREE_IGNORED(root, "root freed twice");
    free_root(new_root(64)); /* the library still works */
    CHECK_HEAP_IS(base);
}

static void free_interior_is_noop(void)
{
    check_interior_pointers(check_free_ignored);
}

static void free_foreign_pointer_is_noop(void)
{
    check_foreign_pointers(check_free_ignored);
}

static void free_unmapped_is_noop(void)
{
    check_unmapped_pointers(check_free_ignored);
}

static void free_prot_none_is_noop(void)
{
    check_inaccessible_pointers(check_free_ignored);
}

/* ======================================================================== */
/* SPEC §3: threads                                                          */
/* ======================================================================== */

#define TREE_THREADS 8
#define TREE_ROUNDS 300

static void own_trees_worker(unsigned index, void *unused)
{
    (void)unused;
    for (unsigned round = 0; round < TREE_ROUNDS; round++)
        build_check_free_tree(index << 16 | round);
}

static void threads_own_trees_concurrently(void)
{
    struct heap_usage base = heap_usage_now();
    run_crew(TREE_THREADS, own_trees_worker, NULL);
    CHECK_HEAP_IS(base);
}

/* Roots travel from producer threads to consumer threads through a queue. */
#define HANDOFF_PRODUCERS 2
#define HANDOFF_CONSUMERS 2
#define HANDOFF_ROOTS 2000
#define HANDOFF_SLOTS 32
#define HANDOFF_CHILD_SIZE 200u

struct handoff {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    void *slots[HANDOFF_SLOTS];
    unsigned pushed, popped, producers_done;
};

/* What a producer writes into each root it sends. */
struct parcel {
    unsigned seed;
    void *child;
};

static void handoff_push(struct handoff *queue, void *root)
{
    pthread_mutex_lock(&queue->lock);
    while (queue->pushed - queue->popped == HANDOFF_SLOTS)
        pthread_cond_wait(&queue->changed, &queue->lock);
    queue->slots[queue->pushed++ % HANDOFF_SLOTS] = root;
    pthread_cond_broadcast(&queue->changed);
    pthread_mutex_unlock(&queue->lock);
}

/* The next root, or NULL once every producer is done and the queue is empty. */
static void *handoff_pop(struct handoff *queue)
{
    void *root = NULL;
    pthread_mutex_lock(&queue->lock);
    while (queue->pushed == queue->popped && queue->producers_done < HANDOFF_PRODUCERS)
        pthread_cond_wait(&queue->changed, &queue->lock);
    if (queue->pushed != queue->popped)
        root = queue->slots[queue->popped++ % HANDOFF_SLOTS];
    pthread_cond_broadcast(&queue->changed);
    pthread_mutex_unlock(&queue->lock);
    return root;
}

static void produce_roots(unsigned index, struct handoff *queue)
{
    for (unsigned i = 0; i < HANDOFF_ROOTS; i++) {
        struct parcel *parcel = new_root(sizeof *parcel);
        parcel->seed = index << 16 | i;
        parcel->child = new_child(HANDOFF_CHILD_SIZE, parcel);
        fill(parcel->child, HANDOFF_CHILD_SIZE, parcel->seed);
        handoff_push(queue, parcel);
    }
    pthread_mutex_lock(&queue->lock);
    queue->producers_done++;
    pthread_cond_broadcast(&queue->changed);
    pthread_mutex_unlock(&queue->lock);
}

static void consume_roots(struct handoff *queue)
{
    struct parcel *parcel;
    while ((parcel = handoff_pop(queue)) != NULL) {
        CHECK_MSG(holds(parcel->child, HANDOFF_CHILD_SIZE, parcel->seed), "root %#x", parcel->seed);
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
    static struct handoff queue = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, { 0 }, 0, 0, 0 };
    struct heap_usage base = heap_usage_now();
    run_crew(HANDOFF_PRODUCERS + HANDOFF_CONSUMERS, handoff_worker, &queue);
    CHECK(queue.popped == HANDOFF_PRODUCERS * HANDOFF_ROOTS);
    CHECK_HEAP_IS(base);
}

/* How many of `blocks` still take a child: after their root's free, none may. */
static size_t count_live_parents(void *const *blocks, size_t n)
{
    size_t live = 0;
    for (size_t i = 0; i < n; i++) {
        struct call call = call_allocate_more(0, blocks[i]);
        live += call.status == S_OK;
    }
    return live;
}

/* Many threads add children to one root at once. */
#define SAME_ROOT_THREADS 8
#define SAME_ROOT_CHILDREN 2000

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
    struct heap_usage base = heap_usage_now();
    void *root = new_root(32);
    run_crew(SAME_ROOT_THREADS, same_root_worker, root);
    size_t n = 0, damaged = 0;
    for (unsigned t = 0; t < SAME_ROOT_THREADS; t++) {
        for (unsigned i = 0; i < SAME_ROOT_CHILDREN; i++) {
            damaged += !holds(same_root_children[t][i], same_root_size(i), t << 16 | i);
            all_children[n++] = same_root_children[t][i];
        }
    }
    CHECK_MSG(damaged == 0, "%zu children lost their contents", damaged);
    CHECK(all_distinct(all_children, n));
    free_root(root);
    CHECK_HEAP_IS(base); /* every child was linked, so the root freed them all */
    CHECK_MSG(count_live_parents(all_children, n) == 0, "children still registered after their root's free");
}

/* Threads add children to a root, and to its children, while another frees it. */
#define RACE_ROUNDS 40
#define RACE_ADDERS 6
#define RACE_SEEDS 8
/* Adders stop after this many calls even if the free has not returned: a
 * child added ahead of the free's walk lengthens it, so endless adders can
 * keep the free from ever finishing (the SPEC promises no corruption here,
 * not progress). */
#define RACE_MAX_CALLS 2000

struct race {
    void *root;
    void *seeds[RACE_SEEDS]; /* children that exist before the race */
    unsigned free_after;     /* calls to let finish before freeing */
    atomic_uint calls, linked, bad_results;
    atomic_int freed;
};

/* By turns the root, a child made before the race, and this thread's latest child. */
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
    for (unsigned n = 0; n < RACE_MAX_CALLS && !atomic_load(&race->freed); n++) {
        void *parent = race_parent(race, n + index, own);
        struct call call = call_allocate_more(16 + n % 64, parent);
        if (call.status == S_OK && call.out != NULL && call.out != SENTINEL) {
            atomic_fetch_add(&race->linked, 1);
            own = call.out; /* not written: the root may be freed at any moment */
        } else if (call.status != MAPI_E_INVALID_PARAMETER || call.out != NULL) {
            atomic_fetch_add(&race->bad_results, 1);
        }
        atomic_fetch_add(&race->calls, 1);
    }
    while (!atomic_load(&race->freed))
        sched_yield();
    /* The free has returned: nothing of that tree may take a child now. */
    CHECK_REFUSED(call_allocate_more(8, race->root), MAPI_E_INVALID_PARAMETER, "root after the free");
    CHECK_REFUSED(call_allocate_more(8, race->seeds[index % RACE_SEEDS]), MAPI_E_INVALID_PARAMETER,
                  "child after the free");
}

static void race_worker(unsigned index, void *shared)
{
    struct race *race = shared;
    if (index > 0) {
        race_add_children(index, race);
        return;
    }
    while (atomic_load(&race->calls) < race->free_after)
        sched_yield();
    free_root(race->root);
    atomic_store(&race->freed, 1);
}

static void run_race_round(unsigned round)
{
    static struct race race;
    race.root = new_root(64);
    for (unsigned i = 0; i < RACE_SEEDS; i++)
        race.seeds[i] = new_child(32, i == 0 ? race.root : race.seeds[i - 1]);
    race.free_after = 1 + round * 53 % 400;
    atomic_store(&race.calls, 0);
    atomic_store(&race.linked, 0);
    atomic_store(&race.bad_results, 0);
    atomic_store(&race.freed, 0);
    run_crew(1 + RACE_ADDERS, race_worker, &race);
    CHECK_MSG(atomic_load(&race.bad_results) == 0, "round %u: %u calls neither S_OK nor INVALID_PARAMETER",
              round, atomic_load(&race.bad_results));
    /* Calls that returned before the free began all found a live parent. */
    CHECK_MSG(atomic_load(&race.linked) >= race.free_after, "round %u: %u linked, expected at least %u",
              round, atomic_load(&race.linked), race.free_after);
}

static void threads_more_racing_free_is_safe(void)
{
    struct heap_usage base = heap_usage_now();
    for (unsigned round = 0; round < RACE_ROUNDS; round++)
        run_race_round(round);
    CHECK_HEAP_IS(base); /* linked children were freed with their root, refused ones not kept */
}

/* ======================================================================== */
/* SPEC §3: fork, out of memory, the C allocator                            */
/* ======================================================================== */

#define FORK_HAMMERS 4
#define FORK_ROUNDS 50
/* Each forked process costs valgrind a leak scan of all it inherited. */
#define FORK_ROUNDS_UNDER_VALGRIND 8
#define FORK_CHILD_TIMEOUT 5

struct hammers {
    atomic_int stop;
    atomic_uint laps;
};

static void hammer_worker(unsigned index, void *shared)
{
    struct hammers *hammers = shared;
    for (unsigned lap = 0; !atomic_load(&hammers->stop); lap++) {
        build_check_free_tree(index << 20 | (lap & 0xFFFFF));
        atomic_fetch_add(&hammers->laps, 1);
    }
}

/* In the forked process: the library works at once, including on blocks
 * allocated before the fork. Exits 0 only if every check held. */
static _Noreturn void use_library_after_fork(struct filled_tree *before_fork)
{
    alarm(FORK_CHILD_TIMEOUT);
    atomic_store(&harness_failed_checks, 0);
    build_check_free_tree(0xF0F0);
    CHECK(filled_tree_intact(before_fork));
    fill(new_child(32, before_fork->blocks[CHAIN_LENGTH]), 32, 9);
    free_root(before_fork->blocks[0]);
    CHECK_REFUSED(call_allocate_more(8, before_fork->blocks[1]), MAPI_E_INVALID_PARAMETER,
                  "child of the freed before-fork tree");
    fflush(NULL);
    _exit(atomic_load(&harness_failed_checks) ? 1 : 0);
}

static void fork_while_busy_child_usable(void)
{
    if (UNDER_ASAN)
        SKIP_TEST("GCC 12's libasan has no fork handlers: a child can inherit its allocator lock held");
    static struct hammers hammers;
    struct filled_tree before_fork;
    make_filled_tree(&before_fork);
    struct crew crew;
    crew_start(&crew, FORK_HAMMERS, hammer_worker, &hammers);
    while (atomic_load(&hammers.laps) < FORK_HAMMERS)
        sched_yield();
    unsigned rounds = under_valgrind() ? FORK_ROUNDS_UNDER_VALGRIND : FORK_ROUNDS;
    for (unsigned round = 0; round < rounds; round++) {
        fflush(NULL);
        pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0)
            use_library_after_fork(&before_fork);
        int status = 0;
        while (waitpid(pid, &status, 0) < 0) {
        }
        CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "fork %u: wait status 0x%x", round, status);
    }
    atomic_store(&hammers.stop, 1);
    crew_join(&crew);
    CHECK(filled_tree_intact(&before_fork));
    free_root(before_fork.blocks[0]);
}

#define OOM_HEADROOM (64u << 20)

/* What each root holds while memory runs out: the root before it, so no
 * other memory is needed to find them again, and a run of small malloc'd
 * spacers, each holding the next. */
struct oom_root {
    struct oom_root *previous;
    void *spacers;
};

/* 16-byte spacers take 32-byte chunks: a run of 4096 spans 128 KiB, so at
 * least one whole 64 KiB stretch of the registry's bitmap between two roots
 * holds no block of the library, and has no leaf. */
#define OOM_SPACERS 4096

/* Roots, each followed by a run of spacers, until memory runs out; the
 * refusal must be exact. Returns the number of roots. */
static unsigned long fill_memory_with_roots(struct oom_root **newest)
{
    for (unsigned long count = 0;; count++) {
        struct call call = call_allocate_buffer(sizeof(struct oom_root));
        if (call.status != S_OK) {
            CHECK_REFUSED(call, MAPI_E_NOT_ENOUGH_MEMORY, "root when memory is exhausted");
            return count;
        }
        struct oom_root *root = call.out;
        root->previous = *newest;
        root->spacers = NULL;
        *newest = root;
        for (unsigned i = 0; i < OOM_SPACERS; i++) {
            void **spacer = malloc(16);
            if (spacer == NULL)
                return count + 1;
            *spacer = root->spacers;
            root->spacers = spacer;
        }
    }
}

/* Frees every other spacer: holes that fit a small block but never a node
 * of the registry's bitmap, also between roots, where a block needs one. */
static void punch_holes(struct oom_root *newest)
{
    for (struct oom_root *root = newest; root != NULL; root = root->previous) {
        for (void **kept = root->spacers; kept != NULL && *kept != NULL; kept = *kept) {
            void **gone = *kept;
            *kept = *gone;
            free(gone);
        }
    }
}

/* Zero-size children fill the holes, so what runs out now is the registry's
 * room for its own bookkeeping. */
static void fill_holes_with_children(void *parent)
{
    for (;;) {
        struct call call = call_allocate_more(0, parent);
        if (call.status != S_OK) {
            CHECK_REFUSED(call, MAPI_E_NOT_ENOUGH_MEMORY, "child when only small holes are left");
            return;
        }
    }
}

static void free_oom_roots(struct oom_root *newest)
{
    while (newest != NULL) {
        struct oom_root *previous = newest->previous;
        for (void **spacer = newest->spacers; spacer != NULL;) {
            void **next = *spacer;
            free(spacer);
            spacer = next;
        }
        free_root(newest);
        newest = previous;
    }
}

static void oom_never_aborts(void)
{
    if (UNDER_ASAN)
        SKIP_TEST("ASan's shadow memory rules out an address-space limit");
    if (under_valgrind())
        SKIP_TEST(BLIND_UNDER_VALGRIND);
    struct heap_usage base = heap_usage_now();
    limit_address_space(OOM_HEADROOM);
    struct oom_root *newest = NULL;
    REQUIRE(fill_memory_with_roots(&newest) > 0);
    punch_holes(newest);
    fill_holes_with_children(newest);
    /* A block still fits, so that last refusal was the registry's bookkeeping. */
    void *probe = malloc(16);
    CHECK_MSG(probe != NULL, "no hole left: the registry never had to grow");
    free(probe);
    free_oom_roots(newest);
    CHECK_HEAP_IS(base);
    build_check_free_tree(77); /* and allocation works again */
}

/*
 * The library takes blocks from pages of its own, as SPEC §3 allows; what
 * must stay true is that valgrind and ASan still see every block. So this
 * case checks that the C allocator is not behind the blocks (a library
 * that fell back on malloc would fail it), and that the tool watching the
 * process knows each block's last byte, the byte after it, and that a
 * freed block is gone. With no tool there is nothing of the second part to
 * check: make test runs the suite under valgrind and built with ASan as
 * well.
 */
#if UNDER_ASAN
int __asan_address_is_poisoned(void const volatile *addr);
#endif

/* 1 if the tool watching lets the client touch the byte at `at`, 0 if it
 * would report it, -1 if no tool watches. */
static int tool_allows(const void *at)
{
#if UNDER_ASAN
    return !__asan_address_is_poisoned(at);
#else
    /* 0: no memcheck (no valgrind, or another of its tools); 3: not
     * addressable. The request reports nothing itself. */
    unsigned char vbits;
    unsigned answer = VALGRIND_GET_VBITS(at, &vbits, 1);
    return answer == 0 ? -1 : answer != 3;
#endif
}

static void blocks_are_seen_by_the_tools(void)
{
    const ULONG mebibyte = 1u << 20;
    struct heap_usage base = heap_usage_now();
    unsigned char *root = new_root(mebibyte);
    unsigned char *child = new_child(13, root);
    unsigned char *sibling = new_child(13, root);
    unsigned char *big = new_child(mebibyte, root);
    if (!under_valgrind()) { /* whose malloc keeps no totals to ask */
        CHECK(heap_bytes_in_use() < base.bytes + mebibyte);
        CHECK(UNDER_ASAN || live_client_blocks() == base.blocks);
    }
    if (tool_allows(root) < 0) {
        free_root(root);
        SKIP_TEST("the C allocator is not behind them; no valgrind or ASan to ask what it sees");
    }
    CHECK(tool_allows(root) == 1 && tool_allows(root + mebibyte - 1) == 1);
    CHECK(tool_allows(root + mebibyte) == 0);
    CHECK(tool_allows(child) == 1 && tool_allows(child + 12) == 1);
    CHECK(tool_allows(child + 13) == 0 && tool_allows(sibling + 13) == 0);
    CHECK(tool_allows(big + mebibyte - 1) == 1 && tool_allows(big + mebibyte) == 0);
    free_root(root);
    CHECK(tool_allows(root) == 0 && tool_allows(child) == 0 && tool_allows(big) == 0);
}

/* ======================================================================== */

/*
 * In process: valid calls whose failure shows as a wrong value. Forked:
 * misuse, inputs a careless library would crash on (NULL, huge sizes, foreign
 * pointers), writing a block's full size, and anything with threads, fork or
 * resource limits.
 */
static const struct test_case tests[] = {
    /* §1 Types and ABI */
    IN_PROCESS(abi_scode_is_signed_32_bits),
    IN_PROCESS(abi_ulong_is_unsigned_32_bits),
    IN_PROCESS(abi_lpvoid_is_void_pointer),
    IN_PROCESS(abi_status_codes_have_sdk_values),
    FORKED(abi_provider_types_accept_exports),
    FORKED(abi_mapi_provider_types_accept_exports),
    /* §2 MAPIAllocateBuffer */
    FORKED(alloc_null_out_is_invalid),
    FORKED(alloc_gives_writable_bytes),
    IN_PROCESS(alloc_roots_are_aligned),
    IN_PROCESS(alloc_zero_is_unique_and_usable),
    FORKED(alloc_huge_is_no_memory),
    /* §2 MAPIAllocateMore */
    FORKED(more_null_out_is_invalid),
    FORKED(more_on_root_makes_child),
    FORKED(more_gives_writable_bytes),
    IN_PROCESS(more_children_are_aligned),
    IN_PROCESS(more_zero_is_unique_and_usable),
    FORKED(more_on_child_joins_root),
    FORKED(more_null_parent_allocates_a_root),
    FORKED(more_freed_parent_is_invalid),
    FORKED(more_interior_pointer_is_invalid),
    FORKED(more_foreign_pointer_is_invalid),
    FORKED(more_unmapped_parent_is_invalid),
    FORKED(more_prot_none_parent_is_invalid),
    FORKED(more_oom_leaves_tree_intact),
    FORKED(more_every_failure_clears_out),
    /* §2 MAPIFreeBuffer */
    FORKED(free_null_returns_zero),
    FORKED(free_root_frees_all_children),
    FORKED(free_child_is_noop),
    FORKED(free_double_is_noop),
    FORKED(free_interior_is_noop),
    FORKED(free_foreign_pointer_is_noop),
    FORKED(free_unmapped_is_noop),
    FORKED(free_prot_none_is_noop),
    /* §3 Threads, processes, faults */
    FORKED(threads_own_trees_concurrently),
    FORKED(threads_free_on_other_thread),
    FORKED(threads_more_same_root_loses_nothing),
    FORKED(threads_more_racing_free_is_safe),
    FORKED(fork_while_busy_child_usable),
    FORKED(oom_never_aborts),
    IN_PROCESS(blocks_are_seen_by_the_tools),
};

int main(int argc, char **argv)
{
    ensure_exact_heap_accounting(argv);
    warm_up_library();
    return harness_main(tests, COUNT(tests), argc, argv);
}
