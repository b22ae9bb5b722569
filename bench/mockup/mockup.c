/*
 * mockup.c: a throwaway C mock-up of the owner's fast paths of "registry v3"
 * (ARCHITECTURE.md, "Where it goes next: a registry that never waits"), built
 * only to measure them against malloc and talloc. It is not the library.
 *
 * It does the owner's real work, single-threaded: the library's own 4 MiB
 * segments published in a static bitmap, 64 KiB pages described in the
 * segment's first page, roots in size-class slots behind a 16-byte header,
 * children bumped into chunks owned by their tree, a start bit per child,
 * and every pointer validated from metadata before anything at it is read.
 * The fields and plain loads/stores of the cross-thread design are kept
 * (state words as relaxed atomics, the page's owner compared on each call,
 * the owner's busy flag for fork) but the cross-thread paths are not built:
 * a call on another thread's tree is refused.
 *
 * Build with -DMOCKUP_NO_VALIDATE to drop everything that exists only for
 * validation (the segment bit, slot arithmetic, state and generation checks,
 * start bits kept and checked): the difference is what validation costs.
 * -DMOCKUP_FIRST_CHUNK_SHIFT=6 makes a tree's first chunk 64 bytes (one
 * 32-byte child) instead of 128; -DMOCKUP_CHUNK_GROWTH=3 makes each chunk
 * 8 times the last instead of 4. -DMOCKUP_PARENT_CACHE remembers the last
 * parent the heap validated (or root it made) with its tree's state word:
 * the same parent again costs one compare and one load of that word.
 * -DMOCKUP_LAZY_COUNT keeps every count exact with less work a child: the
 * peak taken before each free (live bytes only fall there) and when read,
 * the total derived from live and freed counts.
 * -DMOCKUP_NO_BUSY and -DMOCKUP_NO_COUNT are no design: they drop the
 * busy marks, and a child's counting (per chunk and per heap), to show
 * what each costs.
 *
 * Not built (the mock-up's workloads never reach them): children larger
 * than a 64 KiB chunk, roots larger than a segment, pages going back to the
 * segment when empty,
 * MADV_DONTNEED, thread exit, fork, valgrind/ASan support.
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>

#include "mapix.h"

#define EXPORT __attribute__((visibility("default")))
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

#ifndef MOCKUP_FIRST_CHUNK_SHIFT
#define MOCKUP_FIRST_CHUNK_SHIFT 7 /* first chunk of a tree: 128 bytes */
#endif
#ifndef MOCKUP_CHUNK_GROWTH
#define MOCKUP_CHUNK_GROWTH 2 /* each chunk of a tree 4 times the last */
#endif

/* ------------------------------------------------------------ geometry */

#define SEG_SHIFT 22 /* 4 MiB segments */
#define SEG_SIZE ((uintptr_t)1 << SEG_SHIFT)
#define PAGE_SHIFT 16 /* 64 KiB pages */
#define PAGE_SIZE ((uintptr_t)1 << PAGE_SHIFT)
#define PAGES (SEG_SIZE / PAGE_SIZE) /* 64; page 0 holds the metadata */
#define GRANULE_SHIFT 4              /* start bits: one per 16 bytes */
#define ADDRESS_BITS 47

#define ROOT_HEADER 16
#define CHUNK_HEADER 32
#define SMALL_MAX 1024  /* slots up to here: multiples of 16 */
#define MEDIUM_MAX 32768 /* then four classes per power of two */
#define ROOT_CLASSES (SMALL_MAX / 16 + 1 + 5 * 4)
#define CHUNK_MIN_SHIFT MOCKUP_FIRST_CHUNK_SHIFT
#define CHUNK_MAX_SHIFT 16
#define CHUNK_CLASSES (CHUNK_MAX_SHIFT - CHUNK_MIN_SHIFT + 1)

/* A state word: generation (24 bits) | chunk class (6 bits) | kind (2 bits).
 * A root's generation moves on at every free, so a stale child (whose chunk
 * remembers the generation it was made in) no longer matches its tree. */
enum { ST_FREE = 0, ST_LIVE = 1, ST_CHUNK = 2 };
#define ST_KIND(s) ((s)&3u)
#define ST_CLASS(s) (((s) >> 2) & 63u)
#define ST_GEN(s) ((s) & ~(uint32_t)0xFF)
#define ST_GEN_STEP 0x100u

enum page_kind { PG_NONE = 0, PG_ROOT, PG_CHUNK, PG_TAIL /* later page of a span */ };

struct heap;

/* One 64 KiB page (or the first page of a span of them). */
struct page {
    uint8_t kind;
    uint8_t cls;
    uint16_t back; /* PG_TAIL: how many pages back its span starts */
    uint32_t slot_size;
    uint32_t recip; /* ceil(2^32 / slot_size): slot = (offset * recip) >> 32 */
    uint32_t cap;   /* slots in the page */
    uint32_t bump;  /* slots from here on were never used */
    uint32_t used;  /* slots handed out */
    uint32_t queued; /* the heap's current page or on its list of pages with room */
    char *base;
    char *free; /* freed slots, linked through their word at offset 8 */
    struct page *next;
    struct heap *owner;
};

/* The first 64 KiB of every segment. */
struct segment {
    struct page pages[PAGES]; /* pages[0] is this metadata page: kind PG_NONE */
    uint32_t next_page;
    uint64_t start_bits[SEG_SIZE >> GRANULE_SHIFT >> 6]; /* 32 KiB */
};
_Static_assert(sizeof(struct segment) <= PAGE_SIZE, "metadata fits page 0");

struct root {
    _Atomic uint32_t state;
    uint32_t size;
    uint64_t first; /* newest chunk; the free-list link while the slot is free */
};

struct chunk {
    _Atomic uint32_t state; /* tree's generation | class | ST_CHUNK */
    uint16_t used;          /* 16-byte granules from the chunk's start, header included */
    uint16_t end;           /* granules in the chunk: the bump's limit, one load away */
    uint64_t next;          /* older chunk of the tree */
    uint64_t tree;          /* its root's slot */
    uint32_t count;         /* children in it */
    uint32_t bytes;         /* bytes they asked for */
};
_Static_assert(sizeof(struct root) == ROOT_HEADER && sizeof(struct chunk) == CHUNK_HEADER, "headers");

struct queue {
    struct page *cur;
    struct page *avail; /* pages with room, besides cur */
};

struct heap {
    _Atomic uint32_t busy; /* fork's prepare waits while an owner is inside */
    struct queue roots[ROOT_CLASSES];
    struct queue chunks[CHUNK_CLASSES];
    struct segment *seg; /* where new pages come from */
#ifdef MOCKUP_PARENT_CACHE
    /* Sound without invalidation: any free or kill of the tree changes its
     * state word (kind, generation), and a slot is only ever reused by a
     * root of the same class, under a new generation. */
    const void *last_parent;
    struct root *last_tree;
    uint32_t last_state;
#endif
    uint64_t live_roots, live_children, live_bytes, peak_bytes, total_allocations, misuse_count;
    uint64_t freed_blocks; /* MOCKUP_LAZY_COUNT: total = live + freed */
};

/* One bit per 4 MiB of a 47-bit address space: 4 MiB of .bss, only the
 * words of segments in use are ever touched. */
static uint64_t segmap[(uintptr_t)1 << (ADDRESS_BITS - SEG_SHIFT - 6)];

static __thread struct heap *tls_heap __attribute__((tls_model("initial-exec")));

/* ------------------------------------------------------------ classes */

static uint32_t root_class_size(unsigned cls)
{
    unsigned b, q;
    if (cls <= SMALL_MAX / 16)
        return cls * 16;
    b = 10 + (cls - 65) / 4, q = (cls - 65) % 4;
    return (1u << b) + (q + 1) * (1u << (b - 2));
}

/* slot: header + client bytes, a multiple of 16, at most MEDIUM_MAX. */
static inline unsigned root_class(uint32_t slot)
{
    unsigned b;
    if (LIKELY(slot <= SMALL_MAX))
        return slot >> 4;
    b = 31 - (unsigned)__builtin_clz(slot - 1);
    return 65 + (b - 10) * 4 + (((slot - 1) >> (b - 2)) & 3);
}

/* ------------------------------------------------------------ segments and pages */

static struct segment *segment_new(void)
{
    char *raw = mmap(NULL, 2 * SEG_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    uintptr_t a, s;
    if (raw == MAP_FAILED)
        return NULL;
    a = (uintptr_t)raw;
    s = (a + SEG_SIZE - 1) & ~(SEG_SIZE - 1);
    if (s > a)
        munmap(raw, s - a);
    munmap((char *)s + SEG_SIZE, a + 2 * SEG_SIZE - s - SEG_SIZE);
    if (s >> ADDRESS_BITS) {
        munmap((char *)s, SEG_SIZE);
        return NULL;
    }
    ((struct segment *)s)->next_page = 1;
    __atomic_fetch_or(&segmap[s >> SEG_SHIFT >> 6], (uint64_t)1 << ((s >> SEG_SHIFT) & 63), __ATOMIC_RELEASE);
    return (struct segment *)s;
}

/* A fresh page (or span of `span` pages) of slot_size slots for heap h. */
static struct page *page_new(struct heap *h, enum page_kind kind, unsigned cls, uint32_t slot_size, unsigned span)
{
    struct segment *seg = h->seg;
    struct page *pg;
    unsigned i;
    if (span >= PAGES)
        return NULL; /* not built: spans beyond a segment */
    if (seg == NULL || seg->next_page + span > PAGES) {
        if ((seg = segment_new()) == NULL)
            return NULL;
        h->seg = seg;
    }
    pg = &seg->pages[seg->next_page];
    for (i = 1; i < span; i++)
        pg[i].kind = PG_TAIL, pg[i].back = (uint16_t)i;
    pg->cls = (uint8_t)cls;
    pg->slot_size = slot_size;
    pg->recip = (uint32_t)((((uint64_t)1 << 32) + slot_size - 1) / slot_size);
    pg->cap = (uint32_t)(span * PAGE_SIZE / slot_size);
    pg->bump = pg->used = 0;
    pg->queued = 1;
    pg->base = (char *)seg + seg->next_page * PAGE_SIZE;
    pg->free = NULL;
    pg->next = NULL;
    pg->owner = h;
    __atomic_store_n(&pg->kind, (uint8_t)kind, __ATOMIC_RELEASE);
    seg->next_page += span;
    return pg;
}

static inline struct segment *segment_of(const void *p)
{
    return (struct segment *)((uintptr_t)p & ~(SEG_SIZE - 1));
}

static inline struct page *page_of(const void *p)
{
    return &segment_of(p)->pages[((uintptr_t)p >> PAGE_SHIFT) & (PAGES - 1)];
}

/* ------------------------------------------------------------ slots */

static char *slot_alloc_slow(struct heap *h, struct queue *q, enum page_kind kind, unsigned cls, uint32_t size,
                             unsigned span);

static inline char *slot_alloc(struct heap *h, struct queue *q, enum page_kind kind, unsigned cls, uint32_t size)
{
    struct page *pg = q->cur;
    char *s;
    if (LIKELY(pg != NULL)) {
        if ((s = pg->free) != NULL) {
            pg->free = *(char **)(s + 8);
            pg->used++;
            return s;
        }
        if (pg->bump < pg->cap) {
            s = pg->base + (size_t)pg->bump++ * pg->slot_size;
            pg->used++;
            return s;
        }
    }
    return slot_alloc_slow(h, q, kind, cls, size, 1);
}

static __attribute__((noinline)) char *slot_alloc_slow(struct heap *h, struct queue *q, enum page_kind kind,
                                                        unsigned cls, uint32_t size, unsigned span)
{
    struct page *pg = q->cur;
    if (pg != NULL)
        pg->queued = 0; /* full: a free into it queues it again */
    while ((pg = q->avail) != NULL) {
        q->avail = pg->next;
        if (pg->free != NULL || pg->bump < pg->cap) {
            q->cur = pg;
            return slot_alloc(h, q, kind, cls, size);
        }
        pg->queued = 0;
    }
    if ((pg = page_new(h, kind, cls, size, span)) == NULL)
        return NULL;
    q->cur = pg;
    return slot_alloc(h, q, kind, cls, size);
}

static __attribute__((noinline)) void page_requeue(struct heap *h, struct page *pg)
{
    struct queue *q = pg->kind == PG_ROOT ? &h->roots[pg->cls] : &h->chunks[pg->cls];
    pg->queued = 1;
    pg->next = q->avail;
    q->avail = pg;
}

static inline void slot_free(struct heap *h, struct page *pg, char *s)
{
    *(char **)(s + 8) = pg->free;
    pg->free = s;
    pg->used--;
    if (UNLIKELY(!pg->queued))
        page_requeue(h, pg);
}

/* ------------------------------------------------------------ start bits */

#ifndef MOCKUP_NO_VALIDATE
static inline void start_bit_set(const void *p)
{
    struct segment *seg = segment_of(p);
    size_t g = ((uintptr_t)p & (SEG_SIZE - 1)) >> GRANULE_SHIFT;
    seg->start_bits[g >> 6] |= (uint64_t)1 << (g & 63);
}

static inline int start_bit_test(const void *p)
{
    const struct segment *seg = segment_of(p);
    size_t g = ((uintptr_t)p & (SEG_SIZE - 1)) >> GRANULE_SHIFT;
    return (int)((seg->start_bits[g >> 6] >> (g & 63)) & 1);
}

/* Clears the start bits of the n granules from p on: a chunk's children. */
static inline void start_bits_clear(const void *p, size_t n)
{
    uint64_t *bits = segment_of(p)->start_bits;
    size_t g = ((uintptr_t)p & (SEG_SIZE - 1)) >> GRANULE_SHIFT;
    if (LIKELY((g & 63) + n <= 64 && n < 64)) { /* small chunks: one word */
        bits[g >> 6] &= ~((((uint64_t)1 << n) - 1) << (g & 63));
        return;
    }
    while (n > 0) {
        size_t bit = g & 63, take = 64 - bit < n ? 64 - bit : n;
        bits[g >> 6] &= ~((take == 64 ? ~(uint64_t)0 : (((uint64_t)1 << take) - 1)) << bit);
        g += take, n -= take;
    }
}
#endif

/* ------------------------------------------------------------ validation */

/* The slot of `p` in page pg (a span's first page), by the reciprocal. */
static inline char *slot_start(const struct page *pg, uintptr_t p)
{
    uint64_t off = p - (uintptr_t)pg->base;
    return pg->base + (size_t)((off * pg->recip) >> 32) * pg->slot_size;
}

#ifndef MOCKUP_NO_VALIDATE
/* The page of p, when p lies in one of the library's segments: one load of
 * the static bitmap, then the segment's own metadata. NULL otherwise. */
static inline struct page *page_checked(uintptr_t a)
{
    uintptr_t seg = a >> SEG_SHIFT;
    if (UNLIKELY((a & 15) != 0 || (a >> ADDRESS_BITS) != 0))
        return NULL;
    if (!((__atomic_load_n(&segmap[seg >> 6], __ATOMIC_RELAXED) >> (seg & 63)) & 1))
        return NULL;
    return page_of((const void *)a);
}
#endif

/*
 * The root `p` is, when p is a live root; NULL for anything else, with *pg_out
 * the page looked at (a span's first page). Nothing is read at p itself: only
 * the segment bitmap, the segment's metadata and the slot's header, all in
 * memory the library keeps mapped.
 */
static inline struct root *root_of(const void *p, struct page **pg_out)
{
    uintptr_t a = (uintptr_t)p;
    struct page *pg;
#ifndef MOCKUP_NO_VALIDATE
    struct root *r;
    uint8_t kind;
    if ((pg = page_checked(a)) == NULL)
        return NULL;
    kind = __atomic_load_n(&pg->kind, __ATOMIC_ACQUIRE);
    if (UNLIKELY(kind == PG_TAIL))
        pg -= pg->back, kind = __atomic_load_n(&pg->kind, __ATOMIC_ACQUIRE);
    *pg_out = pg;
    if (kind != PG_ROOT)
        return NULL;
    r = (struct root *)slot_start(pg, a);
    if ((char *)r + ROOT_HEADER != (const char *)p ||
        ST_KIND(atomic_load_explicit(&r->state, memory_order_relaxed)) != ST_LIVE)
        return NULL;
    return r;
#else
    pg = page_of(p);
    if (pg->kind == PG_TAIL)
        pg -= pg->back;
    *pg_out = pg;
    return pg->kind == PG_ROOT ? (struct root *)(a - ROOT_HEADER) : NULL;
#endif
}

/* The tree of p when p is a live child, else NULL; pg is p's page (a chunk
 * page, else NULL is returned). */
static inline struct root *tree_of_child(const void *p, const struct page *pg)
{
    uintptr_t a = (uintptr_t)p;
#ifndef MOCKUP_NO_VALIDATE
    struct chunk *c;
    struct root *r;
    uint32_t cs;
    if (pg == NULL || __atomic_load_n(&pg->kind, __ATOMIC_ACQUIRE) != PG_CHUNK || !start_bit_test(p))
        return NULL;
    c = (struct chunk *)slot_start(pg, a);
    r = (struct root *)c->tree;
    cs = atomic_load_explicit(&c->state, memory_order_relaxed);
    if (atomic_load_explicit(&r->state, memory_order_relaxed) != (ST_GEN(cs) | ST_LIVE))
        return NULL;
    return r;
#else
    /* chunk slots are powers of two, aligned in their page */
    return (struct root *)((struct chunk *)(a & ~((uintptr_t)pg->slot_size - 1)))->tree;
#endif
}

/* ------------------------------------------------------------ the heap */

static __attribute__((noinline)) struct heap *heap_new(void)
{
    struct heap *h = mmap(NULL, sizeof *h, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (h == MAP_FAILED)
        return NULL;
    tls_heap = h;
    return h;
}

/* The owner's busy mark around each call: fork's prepare waits for it
 * (ordered by membarrier in the real design, hence only a compiler fence). */
static inline void busy(struct heap *h, uint32_t on)
{
#ifndef MOCKUP_NO_BUSY
    atomic_store_explicit(&h->busy, on, memory_order_relaxed);
    atomic_signal_fence(memory_order_seq_cst);
#else
    (void)h, (void)on;
#endif
}

static inline void count_alloc(struct heap *h, uint64_t bytes)
{
    h->live_bytes += bytes;
#ifndef MOCKUP_LAZY_COUNT
    if (h->live_bytes > h->peak_bytes)
        h->peak_bytes = h->live_bytes;
    h->total_allocations++;
#endif
}

/* Before live bytes fall: with MOCKUP_LAZY_COUNT the peak is only taken
 * here and when read, the only places where a maximum can be passed. */
static inline void count_free(struct heap *h)
{
#ifdef MOCKUP_LAZY_COUNT
    if (h->live_bytes > h->peak_bytes)
        h->peak_bytes = h->live_bytes;
#else
    (void)h;
#endif
}

/* ------------------------------------------------------------ roots */

/* A root's slot: header + client bytes, a multiple of 16. A size-0 root
 * still takes 16 bytes: p = slot + 16 must lie inside its own slot, or it
 * would be the next slot's start. */
static inline uint64_t root_slot_size(ULONG cb)
{
    return ((uint64_t)(cb | (cb == 0)) + ROOT_HEADER + 15) & ~(uint64_t)15;
}

static inline void root_init(struct heap *h, char *s, ULONG cb)
{
    struct root *r = (struct root *)s;
    uint32_t st = ST_GEN(atomic_load_explicit(&r->state, memory_order_relaxed)) | ST_LIVE;
    atomic_store_explicit(&r->state, st, memory_order_relaxed);
    r->size = cb;
    r->first = 0;
#ifdef MOCKUP_PARENT_CACHE
    h->last_parent = s + ROOT_HEADER, h->last_tree = r, h->last_state = st;
#endif
    h->live_roots++;
    count_alloc(h, cb);
}

static char *root_slot_large(struct heap *h, uint64_t slot)
{
    uint64_t span = (slot + PAGE_SIZE - 1) >> PAGE_SHIFT;
    struct page *pg;
    if (span >= PAGES || (pg = page_new(h, PG_ROOT, 0, (uint32_t)(span * PAGE_SIZE), (unsigned)span)) == NULL)
        return NULL;
    pg->queued = 0; /* its own page: never a current page; the free requeues it (mock-up: never reused) */
    pg->bump = 1, pg->used = 1;
    return pg->base;
}

/* MAPIAllocateBuffer when the class's current page has no slot at hand,
 * the root is large, or the thread has no heap yet. */
static __attribute__((noinline)) SCODE root_new_slow(struct heap *h, ULONG cb, LPVOID *out)
{
    uint64_t slot = root_slot_size(cb);
    char *s;
    if (h == NULL && (h = heap_new()) == NULL) {
        *out = NULL;
        return MAPI_E_NOT_ENOUGH_MEMORY;
    }
    busy(h, 1);
    if (slot <= MEDIUM_MAX) {
        unsigned cls = root_class((uint32_t)slot);
        s = slot_alloc_slow(h, &h->roots[cls], PG_ROOT, cls, root_class_size(cls), 1);
    } else {
        s = root_slot_large(h, slot);
    }
    if (UNLIKELY(s == NULL)) {
        busy(h, 0);
        *out = NULL;
        return MAPI_E_NOT_ENOUGH_MEMORY;
    }
    root_init(h, s, cb);
    busy(h, 0);
    *out = s + ROOT_HEADER;
    return S_OK;
}

/* The fast path takes a slot from the class's current page and needs no
 * stack frame: every other case is a tail call. */
EXPORT SCODE MAPIAllocateBuffer(ULONG cbSize, LPVOID *lppBuffer)
{
    struct heap *h = tls_heap;
    uint64_t slot = root_slot_size(cbSize);
    struct page *pg;
    unsigned cls;
    char *s;
    if (UNLIKELY(lppBuffer == NULL))
        return MAPI_E_INVALID_PARAMETER;
    if (UNLIKELY(h == NULL || slot > MEDIUM_MAX))
        return root_new_slow(h, cbSize, lppBuffer);
    cls = root_class((uint32_t)slot);
    busy(h, 1);
    pg = h->roots[cls].cur;
    if (UNLIKELY(pg == NULL))
        return root_new_slow(h, cbSize, lppBuffer);
    if ((s = pg->free) != NULL)
        pg->free = *(char **)(s + 8);
    else if (LIKELY(pg->bump < pg->cap))
        s = pg->base + (size_t)pg->bump++ * pg->slot_size;
    else
        return root_new_slow(h, cbSize, lppBuffer);
    pg->used++;
    root_init(h, s, cbSize);
    busy(h, 0);
    *lppBuffer = s + ROOT_HEADER;
    return S_OK;
}

/* ------------------------------------------------------------ children */

/* A new chunk for tree r, big enough for `need` bytes of child; returns
 * where the child goes. The chunk that bumps becomes the tree's first; a
 * child too big for it gets a chunk of its own, linked second. */
static char *chunk_new(struct heap *h, struct root *r, uint64_t need)
{
    struct chunk *head = (struct chunk *)r->first, *c;
    unsigned next = head == NULL ? 0 : ST_CLASS(atomic_load_explicit(&head->state, memory_order_relaxed)) + MOCKUP_CHUNK_GROWTH;
    unsigned cls, own;
    char *s;
    if (next > CHUNK_CLASSES - 1)
        next = CHUNK_CLASSES - 1;
    own = need > ((uint64_t)1 << (CHUNK_MIN_SHIFT + next)) / 4;
    if (own) {
        uint64_t whole = need + CHUNK_HEADER;
        cls = 0;
        while (cls < CHUNK_CLASSES - 1 && ((uint64_t)1 << (CHUNK_MIN_SHIFT + cls)) < whole)
            cls++;
        if (((uint64_t)1 << (CHUNK_MIN_SHIFT + cls)) < whole)
            return NULL; /* not built: a chunk of several pages */
    } else {
        cls = next;
    }
    s = slot_alloc(h, &h->chunks[cls], PG_CHUNK, cls, (uint32_t)1 << (CHUNK_MIN_SHIFT + cls));
    if (s == NULL)
        return NULL;
    c = (struct chunk *)s;
    atomic_store_explicit(&c->state, ST_GEN(atomic_load_explicit(&r->state, memory_order_relaxed)) |
                                         (cls << 2) | ST_CHUNK,
                          memory_order_relaxed);
    c->used = (uint16_t)((CHUNK_HEADER + need) >> GRANULE_SHIFT);
    c->end = (uint16_t)(((uint32_t)1 << (CHUNK_MIN_SHIFT + cls)) >> GRANULE_SHIFT);
    c->tree = (uint64_t)(uintptr_t)r;
    c->count = 0;
    c->bytes = 0;
    if (own && head != NULL) {
        c->next = head->next;
        head->next = (uint64_t)(uintptr_t)c;
    } else {
        c->next = r->first;
        r->first = (uint64_t)(uintptr_t)c;
    }
    return s + CHUNK_HEADER;
}

/* The child p of cb bytes, in chunk c, is handed out. */
static inline SCODE child_done(struct heap *h, struct chunk *c, char *p, ULONG cb, LPVOID *out)
{
#ifndef MOCKUP_NO_COUNT
    c->count++;
    c->bytes += cb;
    h->live_children++;
    count_alloc(h, cb);
#else
    (void)c, (void)cb;
#endif
#ifndef MOCKUP_NO_VALIDATE
    start_bit_set(p);
#endif
    busy(h, 0);
    *out = p;
    return S_OK;
}

static __attribute__((noinline)) SCODE child_new_chunk(struct heap *h, struct root *r, ULONG cb, LPVOID *out)
{
    uint64_t need = (((uint64_t)cb + 15) & ~(uint64_t)15) + (cb == 0) * 16;
    char *p = chunk_new(h, r, need);
    if (UNLIKELY(p == NULL)) {
        busy(h, 0);
        *out = NULL;
        return MAPI_E_NOT_ENOUGH_MEMORY;
    }
    return child_done(h, (struct chunk *)(p - CHUNK_HEADER), p, cb, out);
}

/* An unknown parent, or another thread's tree (not built: a chunk of the
 * caller's own, tagged with the tree and generation). */
static __attribute__((noinline)) SCODE child_refused(struct heap *h, LPVOID *out)
{
    h->misuse_count++;
    busy(h, 0);
    *out = NULL;
    return MAPI_E_INVALID_PARAMETER;
}

static __attribute__((noinline)) SCODE child_no_heap(LPVOID *out)
{
    struct heap *h = heap_new();
    if (h == NULL) {
        *out = NULL;
        return MAPI_E_NOT_ENOUGH_MEMORY;
    }
    busy(h, 1);
    return child_refused(h, out); /* a thread without a heap owns no tree */
}

EXPORT SCODE MAPIAllocateMore(ULONG cbSize, LPVOID lpObject, LPVOID *lppBuffer)
{
    struct heap *h = tls_heap;
    struct page *pg;
    struct root *r;
    struct chunk *c;
    uint64_t need;
    char *p;
    if (UNLIKELY(lppBuffer == NULL))
        return MAPI_E_INVALID_PARAMETER;
    if (UNLIKELY(lpObject == NULL))
        return MAPIAllocateBuffer(cbSize, lppBuffer);
    if (UNLIKELY(h == NULL))
        return child_no_heap(lppBuffer);
    busy(h, 1);
#ifdef MOCKUP_PARENT_CACHE
    if (LIKELY(lpObject == h->last_parent) &&
        LIKELY(atomic_load_explicit(&h->last_tree->state, memory_order_relaxed) == h->last_state)) {
        r = h->last_tree;
    } else
#endif
    {
        pg = NULL;
        if ((r = root_of(lpObject, &pg)) == NULL)
            r = tree_of_child(lpObject, pg); /* chunks are the owner's, as their tree */
        if (UNLIKELY(r == NULL || pg->owner != h))
            return child_refused(h, lppBuffer);
#ifdef MOCKUP_PARENT_CACHE
        h->last_parent = lpObject, h->last_tree = r;
        h->last_state = atomic_load_explicit(&r->state, memory_order_relaxed);
#endif
    }
    /* granules: size 0 still takes one, so every child is unique */
    need = (((uint64_t)cbSize + 15) >> GRANULE_SHIFT) + (cbSize == 0);
    c = (struct chunk *)r->first;
    if (UNLIKELY(c == NULL || c->used + need > c->end))
        return child_new_chunk(h, r, cbSize, lppBuffer);
    p = (char *)c + ((size_t)c->used << GRANULE_SHIFT);
    c->used = (uint16_t)(c->used + need);
    return child_done(h, c, p, cbSize, lppBuffer);
}

/* ------------------------------------------------------------ free */

/* Gives back a dead tree's chunks (their start bits first). */
static void chunks_free(struct heap *h, uint64_t c)
{
    uint64_t next;
    for (; c != 0; c = next) {
        struct chunk *ch = (struct chunk *)(uintptr_t)c;
        next = ch->next;
#ifndef MOCKUP_NO_VALIDATE
        start_bits_clear((char *)ch + CHUNK_HEADER, ch->used - (CHUNK_HEADER >> GRANULE_SHIFT));
#endif
        h->live_children -= ch->count;
#ifdef MOCKUP_LAZY_COUNT
        h->freed_blocks += ch->count;
#endif
        h->live_bytes -= ch->bytes;
        slot_free(h, page_of(ch), (char *)ch);
    }
}

/* MAPIFreeBuffer of a root with children. */
static __attribute__((noinline)) ULONG tree_free(struct heap *h, struct page *pg, struct root *r)
{
    count_free(h);
    chunks_free(h, r->first);
    h->live_roots--;
    h->live_bytes -= r->size;
    slot_free(h, pg, (char *)r);
    busy(h, 0);
    return S_OK;
}

/* A child, freed, interior or foreign pointer: ignored. Another thread's
 * root: the remote kill, not built. */
static __attribute__((noinline)) ULONG free_refused(struct heap *h)
{
    if (h == NULL && (h = heap_new()) == NULL)
        return S_OK;
    h->misuse_count++;
    busy(h, 0);
    return S_OK;
}

static __attribute__((noinline)) ULONG free_requeue(struct heap *h, struct page *pg)
{
    page_requeue(h, pg);
    busy(h, 0);
    return S_OK;
}

EXPORT ULONG MAPIFreeBuffer(LPVOID lpBuffer)
{
    struct heap *h = tls_heap;
    struct page *pg;
    struct root *r;
    if (lpBuffer == NULL)
        return S_OK;
    if (UNLIKELY(h == NULL))
        return free_refused(h); /* a thread without a heap owns no tree */
    busy(h, 1);
    r = root_of(lpBuffer, &pg);
    if (UNLIKELY(r == NULL || pg->owner != h))
        return free_refused(h);
    atomic_store_explicit(&r->state, ST_GEN(atomic_load_explicit(&r->state, memory_order_relaxed)) + ST_GEN_STEP,
                          memory_order_relaxed);
#ifdef MOCKUP_LAZY_COUNT
    h->freed_blocks++;
#endif
    if (r->first != 0)
        return tree_free(h, pg, r);
    count_free(h);
    h->live_roots--;
    h->live_bytes -= r->size;
    *(char **)((char *)r + 8) = pg->free;
    pg->free = (char *)r;
    pg->used--;
    if (UNLIKELY(!pg->queued))
        return free_requeue(h, pg);
    busy(h, 0);
    return S_OK;
}

EXPORT SCODE mapi32_stats(MAPI32_STATS *lpStats)
{
    struct heap *h = tls_heap;
    if (lpStats == NULL)
        return MAPI_E_INVALID_PARAMETER;
    lpStats->live_roots = h ? h->live_roots : 0;
    lpStats->live_children = h ? h->live_children : 0;
    lpStats->live_bytes = h ? h->live_bytes : 0;
#ifdef MOCKUP_LAZY_COUNT
    lpStats->peak_bytes = h ? (h->live_bytes > h->peak_bytes ? h->live_bytes : h->peak_bytes) : 0;
    lpStats->total_allocations = h ? h->live_roots + h->live_children + h->freed_blocks : 0;
#else
    lpStats->peak_bytes = h ? h->peak_bytes : 0;
    lpStats->total_allocations = h ? h->total_allocations : 0;
#endif
    lpStats->misuse_count = h ? h->misuse_count : 0;
    return S_OK;
}
