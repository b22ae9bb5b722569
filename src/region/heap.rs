//! A thread's heap: where its roots and chunks get their slots and pages,
//! its counts, and the last parent it validated. Only its owner touches it
//! (plain `Cell`s), except the counts, the link to the next heap and the
//! `owned` flag, which anyone may read, and the stack of pages with roots
//! other threads killed, which anyone may push on (`remote`).
//!
//! **Ownership.** A heap is owned by one thread at a time, or by nobody (an
//! orphan: its thread exited). Whoever wants to touch an orphan's `Cell`s,
//! its segments' metadata or its blocks' headers with plain loads and
//! stores — a thread adopting it, the `leaks` report, the unloading — first
//! takes it with [`Heap::try_claim`] (a CAS, Acquire: it sees everything the
//! last owner wrote) and lets go with [`Heap::give_up`] (Release). Anything
//! else (a free from another thread into an orphan's tree) must use only
//! the atomic, owner-independent protocol that serves a live owner's heap
//! (`remote`: the root's state word, the killed bits, the page stack), and
//! leave the rest to whoever claims the heap next, who drains the killed
//! trees and sweeps the guest chunks as the owner would
//! (`thread::catch_up`). Its holder also marks it busy while it changes
//! it ([`Heap::enter`]), for a forked child to know whether its plain
//! stores may be half done (`fork`).
//!
//! Slots come from the class's current page; when it is full, from a page
//! of the class that had slots freed since, else from a fresh page. Pages
//! come from the heap's newest segment, or a freed span of the same length.
//! Blocks bigger than a class take a span of pages of their own, or a
//! segment of their own when bigger than a segment; a freed span goes back
//! on a list by length, its memory to the OS when it is big.

use super::class::{chunk_class_size, root_class_size, CHUNK_CLASSES, ROOT_CLASSES};
use super::counts::HeapCounts;
use super::guest::Guests;
use super::page::{Kind, Page};
use super::root::{generation, Root, GENERATION_SHIFT};
use super::segment::Segment;
use super::track::Quarantine;
use super::{PAGES, PAGE_SIZE, SEGMENT_SIZE};
use crate::os;
use core::cell::Cell;
use core::ptr;
use core::sync::atomic::{fence, AtomicBool, AtomicPtr, Ordering};

/// The class byte of a page holding one large block.
pub const LARGE: usize = u8::MAX as usize;

/// Spans of at least this many pages give their memory back when freed;
/// shorter ones stay resident for the next block of their length.
const DISCARD_PAGES: usize = 4;

/// Pages of memory no block uses that an exiting thread's heap may keep
/// resident for the thread that adopts it: 2 MiB. (Threads of
/// `c_tests/thread_life.c`, each using ~50 classes, came and went 4 times
/// slower with 16 pages, 1.3 times with 32; 64 keep 4 MiB per orphan.)
pub const KEEP_AT_EXIT: usize = 32;

/// The OS page size the heap's own mapping is rounded to.
const OS_PAGE: usize = 4096;

/// The pages serving one class.
#[derive(Debug)]
struct Queue {
    /// Where slots are taken from.
    current: Cell<*const Page>,
    /// Pages that had slots freed while full, to use when `current` is.
    with_room: Cell<*const Page>,
}

impl Queue {
    #[allow(clippy::declare_interior_mutable_const)] // an initialiser, copied
    const EMPTY: Queue = Queue { current: Cell::new(ptr::null()), with_room: Cell::new(ptr::null()) };

    /// A slot from the current page, if it has one: the fast path.
    #[inline(always)]
    fn alloc(&self) -> *mut u8 {
        // SAFETY: `current` is null or a page of this heap's segments,
        // mapped for good.
        match unsafe { self.current.get().as_ref() } {
            Some(page) => page.alloc(),
            None => ptr::null_mut(),
        }
    }
}

/// The last parent `MAPIAllocateMore` validated (or root made), with its
/// tree and the tree's state word then. Sound with no invalidation: every
/// free of the tree changes that word (its generation), a slot is only
/// reused by a root of a later generation, and the memory of a dead tree is
/// only reused by an allocation, which replaces the cache before anything
/// is read through it again.
#[derive(Debug)]
pub struct ParentCache {
    parent: Cell<usize>,
    tree: Cell<*const Root>,
    state: Cell<u32>,
}

impl ParentCache {
    #[allow(clippy::declare_interior_mutable_const)] // an initialiser, copied
    const EMPTY: ParentCache = ParentCache { parent: Cell::new(0), tree: Cell::new(ptr::null()), state: Cell::new(0) };

    /// The tree of `parent`, if it is the parent remembered and its tree is
    /// still in the life it was remembered in.
    #[inline(always)]
    pub fn tree_of(&self, parent: usize) -> Option<&'static Root> {
        if parent != self.parent.get() {
            return None;
        }
        // SAFETY: `tree` was set with `parent` (which is non-zero) to a root
        // slot of this heap, mapped for good.
        let tree = unsafe { &*self.tree.get() };
        if tree.state() == self.state.get() {
            Some(tree)
        } else {
            None
        }
    }

    fn forget(&self) {
        self.parent.set(0);
    }

    #[inline(always)]
    pub fn remember(&self, parent: usize, tree: &Root) {
        self.parent.set(parent);
        self.tree.set(tree);
        self.state.set(tree.state());
    }
}

#[derive(Debug)]
pub struct Heap {
    roots: [Queue; ROOT_CLASSES],
    chunks: [Queue; CHUNK_CLASSES],
    /// The segment new pages come from.
    segment: Cell<*const Segment>,
    /// Freed spans, by their length in pages (0 unused).
    spans: [Cell<*const Page>; PAGES],
    /// Freed segments of more than one unit.
    huge: Cell<*const Segment>,
    pub cache: ParentCache,
    pub counts: HeapCounts,
    /// Freed slots held back from reuse while valgrind or ASan watch
    /// (`track`); always empty otherwise.
    pub quarantine: Quarantine,
    /// Pages holding roots other threads freed, for this heap to release.
    pub killed: AtomicPtr<Page>,
    /// Chunks of children this heap made on other threads' trees.
    pub guests: Guests,
    /// The heap made before this one (`thread::heaps`); set before the heap
    /// is published, never after.
    older: AtomicPtr<Heap>,
    /// Whether a thread (or the unloading, or the `leaks` report) holds it.
    owned: AtomicBool,
    /// Whether its holder is changing it now (inside a call, or catching
    /// it up): what a forked child asks of a heap whose thread did not
    /// come along (`fork`). Written by the holder only.
    busy: AtomicBool,
    /// Every segment it ever made, newest first, linked by `Segment::older`:
    /// for the `leaks` report and the unloading.
    segments: Cell<*const Segment>,
}

impl Heap {
    #[allow(clippy::declare_interior_mutable_const)] // an initialiser, copied
    const EMPTY_SPANS: Cell<*const Page> = Cell::new(ptr::null());
    #[allow(clippy::declare_interior_mutable_const)] // an initialiser, copied
    const EMPTY: Heap = Heap {
        roots: [Queue::EMPTY; ROOT_CLASSES],
        chunks: [Queue::EMPTY; CHUNK_CLASSES],
        segment: Cell::new(ptr::null()),
        spans: [Self::EMPTY_SPANS; PAGES],
        huge: Cell::new(ptr::null()),
        cache: ParentCache::EMPTY,
        counts: HeapCounts::ZERO,
        quarantine: Quarantine::EMPTY,
        killed: AtomicPtr::new(ptr::null_mut()),
        guests: Guests::EMPTY,
        older: AtomicPtr::new(ptr::null_mut()),
        owned: AtomicBool::new(true),
        busy: AtomicBool::new(true),
        segments: Cell::new(ptr::null()),
    };

    /// A new heap, owned by the caller, in memory of its own from the OS
    /// (never the C allocator: see `os`); `None` when refused.
    pub fn create() -> Option<&'static Heap> {
        let memory = os::map_aligned(Self::MAPPED, OS_PAGE).cast::<Heap>();
        if memory.is_null() {
            return None;
        }
        // SAFETY: fresh memory of the OS, big enough and page-aligned, ours
        // alone; a heap is never freed, so the reference lives for good.
        unsafe {
            memory.write(Heap::EMPTY);
            Some(&*memory)
        }
    }

    /// Bytes of the mapping a heap lives in.
    const MAPPED: usize = (core::mem::size_of::<Heap>() + OS_PAGE - 1) & !(OS_PAGE - 1);

    /// Gives the heap's own memory back to the OS (the unloading).
    ///
    /// # Safety
    /// Nothing will read the heap again: not its thread, not a walk of the
    /// heap list.
    pub unsafe fn unmap(&'static self) {
        os::unmap(self as *const Heap as *mut u8, Self::MAPPED)
    }

    pub fn older(&self) -> *const Heap {
        self.older.load(Ordering::Relaxed)
    }

    pub fn set_older(&self, older: *const Heap) {
        self.older.store(older as *mut Heap, Ordering::Relaxed)
    }

    /// Takes the heap if it is an orphan, busy (`enter`). Acquire: the
    /// caller sees all that its last owner wrote before
    /// [`give_up`](Heap::give_up).
    pub fn try_claim(&self) -> bool {
        let claimed = !self.owned.load(Ordering::Relaxed)
            && self.owned.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok();
        if claimed {
            self.enter();
        }
        claimed
    }

    /// Lets the heap go, with everything written to it (Release), for the
    /// next [`try_claim`](Heap::try_claim).
    pub fn give_up(&self) {
        self.leave();
        self.owned.store(false, Ordering::Release)
    }

    /// Its holder starts changing it. The fence keeps every store the
    /// holder makes next after this one, so that a child forked at any
    /// moment that sees one of them sees the heap busy (`fork`).
    #[inline(always)]
    pub fn enter(&self) {
        self.busy.store(true, Ordering::Relaxed);
        fence(Ordering::Release);
    }

    /// Its holder is done changing it for now; Release: a forked child that
    /// sees the heap idle sees everything written to it before.
    #[inline(always)]
    pub fn leave(&self) {
        self.busy.store(false, Ordering::Release);
    }

    /// Whether its holder was changing it (for a forked child, which has no
    /// other thread: whether that was so at the fork).
    #[cfg(any(unix, test))]
    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }

    /// Whether some thread holds the heap now (a hint to anyone but it).
    pub fn is_owned(&self) -> bool {
        self.owned.load(Ordering::Relaxed)
    }

    /// The segments the heap made, newest first. Its owner's only.
    pub fn segments(&self) -> impl Iterator<Item = &'static Segment> {
        let mut next = self.segments.get();
        core::iter::from_fn(move || {
            // SAFETY: the list holds segments this heap made, mapped until
            // `forget_segments` (after which the list is empty).
            let segment = unsafe { next.as_ref() }?;
            next = segment.older();
            Some(segment)
        })
    }

    /// Empties the segment list, for the unloading, which unmaps them.
    pub fn forget_segments(&self) {
        self.segments.set(ptr::null());
    }

    /// A new segment of `units` units, owned by this heap and on its list.
    fn new_segment(&self, units: usize) -> Option<&'static Segment> {
        let segment = Segment::create(self, units)?;
        segment.set_older(self.segments.get());
        self.segments.set(segment);
        Some(segment)
    }

    /// Gives back the memory of what the heap holds but no block uses (its
    /// emptied class pages and the freed spans kept resident for reuse)
    /// beyond `KEEP_AT_EXIT` pages. Run as its thread exits: an orphan
    /// holds its live blocks' pages, its metadata and at most that much,
    /// which the next thread to adopt it would otherwise fault in again
    /// (threads that come and go each pay ~50 `madvise` calls without it).
    pub fn trim(&self) {
        self.reclaim_empty_pages(false);
        let mut keep = KEEP_AT_EXIT;
        for list in self.spans.iter().take(DISCARD_PAGES) {
            let mut next = list.get();
            // SAFETY: the lists hold retired first pages of this heap's spans.
            while let Some(page) = unsafe { next.as_ref() } {
                if page.is_resident() && no_kill_under_way(page) {
                    if page.span() <= keep {
                        keep -= page.span();
                    } else {
                        os::discard(page.base(), page.span() * PAGE_SIZE);
                        page.set_discarded();
                    }
                }
                next = page.next();
            }
        }
        // The parent cache names a tree of this heap; it stays sound (see
        // `ParentCache`) but the adopter has no use for it.
        self.cache.forget();
    }

    /// A slot of root class `class`, or null when memory runs out.
    #[inline(always)]
    pub fn root_slot(&self, class: usize) -> *mut u8 {
        self.class_slot(self.roots.get(class), Kind::Root, class, root_class_size)
    }

    /// A slot of chunk class `class`, or null when memory runs out.
    #[inline(always)]
    pub fn chunk_slot(&self, class: usize) -> *mut u8 {
        self.class_slot(self.chunks.get(class), Kind::Chunk, class, chunk_class_size)
    }

    /// A slot from `queue`, the queue of `kind`'s class `class` (none: no
    /// such class), or from `slot_slow` when its current page is full.
    #[inline(always)]
    fn class_slot(&self, queue: Option<&Queue>, kind: Kind, class: usize, slot_size: fn(usize) -> usize) -> *mut u8 {
        match queue {
            Some(queue) => {
                let slot = queue.alloc();
                if !slot.is_null() {
                    return slot;
                }
                self.slot_slow(queue, kind, class, slot_size(class))
            }
            None => ptr::null_mut(),
        }
    }

    /// The current page is full (or there is none): the next page of the
    /// class with room, else a fresh one.
    #[cold]
    #[inline(never)]
    fn slot_slow(&self, queue: &Queue, kind: Kind, class: usize, slot_size: usize) -> *mut u8 {
        // SAFETY (both): pages on a queue are pages of this heap's segments.
        if let Some(full) = unsafe { queue.current.get().as_ref() } {
            // Off the queue: a free into it queues it again. And no longer
            // current, even if no page can be had below, or that free would
            // put it on `with_room` too, and it would be reclaimed twice.
            full.set_queued(false);
            queue.current.set(ptr::null());
        }
        while let Some(page) = unsafe { queue.with_room.get().as_ref() } {
            queue.with_room.set(page.next());
            if page.has_room() {
                queue.current.set(page);
                return page.alloc();
            }
            page.set_queued(false);
        }
        let page = match self.span(1) {
            Some(page) => page,
            None => return ptr::null_mut(),
        };
        // SAFETY: `page` is in a published segment.
        unsafe { Segment::of(page.base() as usize) }.start_span(page, kind, class, slot_size);
        queue.current.set(page);
        page.alloc()
    }

    /// Puts a page that was full, and had a slot freed, back on its queue.
    #[cold]
    #[inline(never)]
    pub fn requeue(&self, page: &Page) {
        let queue = match page.kind() {
            Kind::Root => self.roots.get(page.class()),
            _ => self.chunks.get(page.class()),
        };
        if let Some(queue) = queue {
            page.set_queued(true);
            page.set_next(queue.with_room.get());
            queue.with_room.set(page);
        }
    }

    /// Gives back the slot `slot` of `page` (a class page).
    ///
    /// # Safety
    /// As for `Page::free`.
    #[inline(always)]
    pub unsafe fn free_slot(&self, page: &Page, slot: *mut u8) {
        // SAFETY: the caller's contract.
        if unsafe { page.free(slot) } {
            self.requeue(page);
        }
    }

    /// An unused span of `count` pages (fewer than a segment's): a freed
    /// one of that length, else the newest segment's next pages, else, once
    /// that segment is used up, the class pages emptied since, else a new
    /// segment.
    fn span(&self, count: usize) -> Option<&'static Page> {
        if let Some(page) = self.freed_span(count) {
            return Some(page);
        }
        // SAFETY: `segment` is null or a segment of this heap, mapped for good.
        let segment = unsafe { self.segment.get().as_ref() };
        if let Some(page) = segment.and_then(|segment| segment.take_pages(count)) {
            return Some(page);
        }
        if self.reclaim_empty_pages(true) {
            if let Some(page) = self.freed_span(count) {
                return Some(page);
            }
        }
        // Asked for first, so that a refusal leaves the heap as it was.
        let fresh = self.new_segment(1)?;
        if let Some(old) = segment {
            // What is left of the old segment is a free span like any other.
            if let Some(rest) = old.take_pages(old.pages_left()) {
                self.keep_span(rest, false);
            }
        }
        self.segment.set(fresh);
        fresh.take_pages(count)
    }

    fn freed_span(&self, count: usize) -> Option<&'static Page> {
        let list = self.spans.get(count)?;
        // SAFETY: the list holds retired first pages of this heap's spans.
        let page = unsafe { list.get().as_ref() }?;
        list.set(page.next());
        Some(page)
    }

    /// Takes every class page with no slot in use off its queue, gives its
    /// memory back (if `discard`; else the caller decides) and keeps it as a
    /// free one-page span, for any class or block to use. Run when a segment
    /// is used up: a heap whose blocks all went back can serve new ones of
    /// other sizes without a new segment; and when its thread exits.
    ///
    /// A root page keeps its class while another thread's kill is under way
    /// in its segment: that thread found a root's state word from the class
    /// alone, and its swap must never hit a client's byte (`remote`). Such
    /// a page waits for the next reclaim.
    #[cold]
    fn reclaim_empty_pages(&self, discard: bool) -> bool {
        let mut reclaimed = false;
        for queue in self.roots.iter().chain(self.chunks.iter()) {
            let mut link = &queue.with_room;
            // SAFETY (both): pages on a queue are pages of this heap's segments.
            while let Some(page) = unsafe { link.get().as_ref() } {
                if page.is_empty() && may_retire(page) {
                    link.set(page.next());
                    self.give_back(page, discard);
                    reclaimed = true;
                } else {
                    link = page.next_link();
                }
            }
            if let Some(page) = unsafe { queue.current.get().as_ref() } {
                if page.is_empty() && may_retire(page) {
                    queue.current.set(ptr::null());
                    self.give_back(page, discard);
                    reclaimed = true;
                }
            }
        }
        reclaimed
    }

    fn give_back(&self, page: &Page, discard: bool) {
        if page.kind() == Kind::Root {
            // A bit left by a kill that lost to the owner's own free would
            // name a slot of the page's next class (`remote::unreleased`);
            // `may_retire` saw no kill under way, and none can start here.
            // SAFETY: `page` is a descriptor in a published segment's header.
            let segment = unsafe { Segment::of(page as *const Page as usize) };
            segment.forget_killed(segment.index_of(page));
        }
        if discard {
            os::discard(page.base(), page.span() * PAGE_SIZE);
        }
        self.keep_span(page, !discard);
    }

    fn keep_span(&self, page: &Page, resident: bool) {
        if let Some(list) = self.spans.get(page.span()) {
            page.retire(resident);
            page.set_next(list.get());
            list.set(page);
        }
    }

    /// One block of `bytes` bytes of `kind` (a root slot or a chunk too big
    /// for a class): a span of its own, or a segment of its own.
    #[cold]
    #[inline(never)]
    pub fn large(&self, kind: Kind, bytes: usize) -> *mut u8 {
        let pages = match bytes.checked_add(PAGE_SIZE - 1) {
            Some(rounded) => rounded / PAGE_SIZE,
            None => return ptr::null_mut(),
        };
        let page = if pages < PAGES { self.span(pages) } else { self.huge_span(bytes) };
        match page {
            Some(page) => {
                // SAFETY: `page` is in a published segment.
                let segment = unsafe { Segment::of(page.base() as usize) };
                segment.start_span(page, kind, LARGE, page.span() * PAGE_SIZE);
                page.set_queued(false);
                page.alloc()
            }
            None => ptr::null_mut(),
        }
    }

    /// The span of a segment of its own, of enough units for `bytes` after
    /// its header page: a freed one if one is big enough, else a new one.
    fn huge_span(&self, bytes: usize) -> Option<&'static Page> {
        let units = bytes.checked_add(PAGE_SIZE + SEGMENT_SIZE - 1)? / SEGMENT_SIZE;
        let mut link = &self.huge;
        // SAFETY: the list holds freed huge segments of this heap.
        while let Some(segment) = unsafe { link.get().as_ref() } {
            if segment.units() >= units {
                link.set(segment.next());
                return Some(segment.whole_span());
            }
            link = segment.next_link();
        }
        Some(self.new_segment(units)?.whole_span())
    }

    /// A large root of this heap's moved to a face (see `root`) keeps its
    /// span as its tree's header until the tree dies: its client bytes are
    /// dead meanwhile, so a big one's pages past the header's go back to
    /// the OS (a 10 MiB root grown to 20 MiB must not hold 30).
    pub fn discard_moved(&self, root: usize) {
        // SAFETY: `root` is a root slot of this heap, in a published segment.
        let page = unsafe { Segment::of(root) }.page_of(root);
        let len = page.span() * PAGE_SIZE;
        if page.class() == LARGE && page.span() >= DISCARD_PAGES && root == page.base() as usize {
            // SAFETY: inside the span's mapping, past its first OS page.
            os::discard(unsafe { page.base().add(OS_PAGE) }, len - OS_PAGE);
        }
    }

    /// Frees a large block's span (or segment): nothing in it validates any
    /// more, and big ones go back to the OS.
    #[cold]
    #[inline(never)]
    pub fn free_large(&self, page: &'static Page) {
        keep_generations(page, page.kind());
        let pages = page.span();
        let resident = pages < DISCARD_PAGES;
        if !resident {
            os::discard(page.base(), pages * PAGE_SIZE);
        }
        if pages < PAGES {
            self.keep_span(page, resident);
        } else {
            page.retire(false);
            // SAFETY: the page is the span of a published huge segment.
            let segment = unsafe { Segment::of(page.base() as usize) };
            segment.set_next(self.huge.get());
            self.huge.set(segment);
        }
    }
}

/// Whether an empty class page may change its class: a chunk page always,
/// a root page unless a kill is under way in its segment. If so, it is
/// taken off its class, and its generations kept.
fn may_retire(page: &Page) -> bool {
    let kind = page.kind();
    if kind == Kind::Root {
        // SAFETY: `page` is a descriptor in a published segment's header.
        let segment = unsafe { Segment::of(page as *const Page as usize) };
        if !page.retire_root_page(|| segment.no_kill_under_way()) {
            return false;
        }
    }
    keep_generations(page, kind);
    true
}

/// Before the memory of a page (a span's first) that held `kind` is given
/// back (the OS zeroes it) or taken by another class or block: the
/// generation the roots of its next root life start from, later than every
/// root's in it (all dead, so each state word names its slot's next life
/// already). A guest chunk or a parent cache that recorded an older life
/// must never match a later root at the same address; and a slot not yet
/// handed out must never read as a live root to another thread (`remote`),
/// whatever bytes its place held. Never 0 once the page held anything: 0
/// tells `Segment::start_span` that the page is fresh and reads as zeroes.
fn keep_generations(page: &Page, kind: Kind) {
    let mut next = 1 << GENERATION_SHIFT;
    if kind == Kind::Root {
        for slot in page.handed_out() {
            // SAFETY: a slot of this root page that was handed out: a
            // header this heap wrote, mapped for good.
            next = next.max(generation(unsafe { Root::at(slot) }.state()));
        }
    }
    page.keep_generations(next);
}

/// Whether a retired span may go back to the OS, which zeroes it: not
/// while a kill is under way in its segment, which may have read a root's
/// state there before the span was retired (as `may_retire`; a large
/// root's own free keeps its state across the discard, `free::release_large`).
fn no_kill_under_way(page: &Page) -> bool {
    core::sync::atomic::fence(Ordering::SeqCst);
    // SAFETY: `page` is a descriptor in a published segment's header.
    unsafe { Segment::of(page as *const Page as usize) }.no_kill_under_way()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heap_fits_a_few_os_pages() {
        assert!(core::mem::size_of::<Heap>() <= 3 * 4096, "{}", core::mem::size_of::<Heap>());
    }
}
