//! A segment: `SEGMENT_SIZE` bytes (or a whole number of them, for one
//! block bigger than a segment), aligned to that size, so the metadata of
//! any address in it is found by masking the address. Its first page is
//! this header: the owning heap, a descriptor per page, the start bits.
//!
//! A segment is mapped once, published in `segmap` after its header is
//! written, and never unmapped while the library can be called (only
//! `unload`, at `dlclose`, withdraws and unmaps empty heaps' segments): any
//! thread that sees its bit may read its `owner` word at any time.
//! Everything else in it belongs to the owning heap alone — to whichever
//! thread holds that heap (`Heap::try_claim`), as a heap outlives its
//! threads.

use super::heap::Heap;
use super::heap::LARGE;
use super::page::{Kind, Page};
use super::root::{Root, FREE, ROOT_HEADER};
use super::start_bits::StartBits;
use super::{segmap, GRANULE_SHIFT, PAGES, PAGE_SHIFT, PAGE_SIZE, SEGMENT_SIZE};
use crate::os;
use core::cell::Cell;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

const START_WORDS: usize = (SEGMENT_SIZE >> GRANULE_SHIFT) / usize::BITS as usize;
/// Words of killed bits a page needs: one bit per slot of the smallest
/// root class (32 bytes).
pub const KILLED_WORDS: usize = (PAGE_SIZE / 32) / usize::BITS as usize;

#[repr(C)]
#[derive(Debug)]
pub struct Segment {
    /// The heap that owns every page of it. Written before the segment is
    /// published; the only field other threads read.
    owner: AtomicPtr<Heap>,
    /// How many `SEGMENT_SIZE` units it spans: 1, or more for one huge block.
    units: Cell<usize>,
    /// Pages from here on were never handed out.
    next_page: Cell<usize>,
    /// The next freed huge segment on its heap's list.
    next: Cell<*const Segment>,
    /// The segment its heap made before this one (`Heap::segments`).
    older: Cell<*const Segment>,
    pages: [Page; PAGES],
    starts: StartBits<START_WORDS>,
    /// Per root page, a bit per slot whose root another thread killed and
    /// the owner has not released yet (`remote`): set by any thread, taken
    /// by the owner.
    killed: [[AtomicUsize; KILLED_WORDS]; PAGES],
    /// Kills under way in the segment (`remote`): while any is, its owner
    /// changes no root page's class.
    kills: AtomicUsize,
}

// The header fits its page, and the zeroes the OS maps are a valid header:
// every field is a number, a null pointer or `Kind::Unused` (0) when zero.
const _: () = assert!(core::mem::size_of::<Segment>() <= PAGE_SIZE);
const _: () = assert!(StartBits::<START_WORDS>::GRANULES == SEGMENT_SIZE >> GRANULE_SHIFT);

impl Segment {
    /// A new segment of `units` units owned by `owner`, published; `None`
    /// when the OS refuses or places it where `segmap` cannot reach.
    pub fn create(owner: *const Heap, units: usize) -> Option<&'static Segment> {
        let size = units.checked_mul(SEGMENT_SIZE)?;
        let start = os::map_aligned(size, SEGMENT_SIZE);
        if start.is_null() {
            return None;
        }
        // SAFETY: a fresh, aligned, zeroed mapping of at least a page, which
        // is a valid `Segment` (see the assertions above); it is ours alone
        // until published below, and never unmapped after.
        let segment = unsafe { &*start.cast::<Segment>() };
        segment.owner.store(owner as *mut Heap, Ordering::Relaxed);
        segment.units.set(units);
        segment.next_page.set(1);
        if !segmap::publish(start as usize) {
            os::unmap(start, size);
            return None;
        }
        Some(segment)
    }

    /// The segment whose first unit holds `addr`.
    ///
    /// # Safety
    /// `segmap::contains(addr)`: the segment is published, so mapped for good.
    #[inline(always)]
    pub unsafe fn of(addr: usize) -> &'static Segment {
        // SAFETY: by the caller's contract a published segment's header is at
        // the start of `addr`'s unit, initialised before it was published.
        unsafe { &*((addr & !(SEGMENT_SIZE - 1)) as *const Segment) }
    }

    #[inline(always)]
    pub fn owner(&self) -> *const Heap {
        self.owner.load(Ordering::Relaxed)
    }

    fn start(&self) -> usize {
        self as *const Segment as usize
    }

    pub fn older(&self) -> *const Segment {
        self.older.get()
    }

    pub fn set_older(&self, older: *const Segment) {
        self.older.set(older)
    }

    /// Its pages handed out so far, first pages of spans and class pages
    /// only (a huge segment's one span included), for walking its blocks.
    pub fn spans(&self) -> impl Iterator<Item = &Page> {
        let end = if self.units.get() > 1 { 2 } else { self.next_page.get() };
        self.pages.iter().take(end).skip(1).filter(|page| matches!(page.kind(), Kind::Root | Kind::Chunk))
    }

    pub fn units(&self) -> usize {
        self.units.get()
    }

    pub fn next(&self) -> *const Segment {
        self.next.get()
    }

    pub fn set_next(&self, next: *const Segment) {
        self.next.set(next)
    }

    /// The link to the next freed huge segment, to unlink the one after.
    pub fn next_link(&self) -> &Cell<*const Segment> {
        &self.next
    }

    /// The descriptor of the page holding `addr`; for a span's later page,
    /// its first page's. `addr` lies in this segment's first unit.
    #[inline(always)]
    pub fn page_of(&self, addr: usize) -> &Page {
        let index = (addr >> PAGE_SHIFT) & (PAGES - 1);
        let page = &self.pages[index];
        if page.kind() == Kind::Tail {
            return &self.pages[index.saturating_sub(page.back())];
        }
        page
    }

    /// The descriptor of page `index` itself (no following of spans).
    #[inline(always)]
    pub fn page(&self, index: usize) -> &Page {
        &self.pages[index & (PAGES - 1)]
    }

    /// The index of `page`, a descriptor of this segment.
    pub fn index_of(&self, page: &Page) -> usize {
        (page as *const Page as usize - self.pages.as_ptr() as usize) / core::mem::size_of::<Page>()
    }

    /// Marks slot `slot` of page `index` killed. SeqCst, with the owner's
    /// side in `take_killed`: see `remote`.
    pub fn mark_killed(&self, index: usize, slot: usize) {
        let bits = &self.killed[index & (PAGES - 1)];
        if let Some(word) = bits.get(slot / usize::BITS as usize) {
            word.fetch_or(1 << (slot % usize::BITS as usize), Ordering::SeqCst);
        }
    }

    /// A kill starts (true) or ends (false) in this segment. SeqCst, paired
    /// with `Heap::reclaim_empty_pages`: see `remote`.
    pub fn kill_under_way(&self, starts: bool) {
        if starts {
            self.kills.fetch_add(1, Ordering::SeqCst);
        } else {
            self.kills.fetch_sub(1, Ordering::Release);
        }
    }

    /// Forgets the kills counted under way: in a forked child, where the
    /// threads that started them do not exist (`fork`).
    #[cfg(unix)]
    pub fn forget_kills(&self) {
        self.kills.store(0, Ordering::Relaxed);
    }

    /// Whether no kill is under way in the segment.
    pub fn no_kill_under_way(&self) -> bool {
        self.kills.load(Ordering::SeqCst) == 0
    }

    /// Takes word `word` of page `index`'s killed bits, leaving it clear.
    pub fn take_killed(&self, index: usize, word: usize) -> usize {
        match self.killed[index & (PAGES - 1)].get(word) {
            Some(word) => word.swap(0, Ordering::SeqCst),
            None => 0,
        }
    }

    /// Word `word` of page `index`'s killed bits, left as they are (any
    /// thread: `remote::unreleased`).
    pub fn killed_bits(&self, index: usize, word: usize) -> usize {
        match self.killed[index & (PAGES - 1)].get(word) {
            Some(word) => word.load(Ordering::SeqCst),
            None => 0,
        }
    }

    /// Drops page `index`'s killed bits: its slots are about to change
    /// class, and a bit left by a kill that lost to its owner's free must
    /// not name a slot of the next class. Only once no kill is under way
    /// in the segment (`Heap::reclaim_empty_pages`).
    pub fn forget_killed(&self, index: usize) {
        for word in 0..KILLED_WORDS {
            self.take_killed(index, word);
        }
    }

    /// The address page `index` starts at.
    pub fn page_start(&self, index: usize) -> usize {
        self.start() + (index & (PAGES - 1)) * PAGE_SIZE
    }

    /// How many pages are left to hand out.
    pub fn pages_left(&self) -> usize {
        PAGES - self.next_page.get()
    }

    /// The next `count` pages never handed out, as an unused span; `None`
    /// when fewer are left.
    pub fn take_pages(&self, count: usize) -> Option<&Page> {
        let first = self.next_page.get();
        if count == 0 || count > PAGES - first {
            return None;
        }
        let page = self.pages.get(first)?;
        self.next_page.set(first + count);
        page.init_unused(self.start() + first * PAGE_SIZE, count);
        Some(page)
    }

    /// A huge segment's one span: every page after the header.
    pub fn whole_span(&self) -> &Page {
        let page = &self.pages[1];
        page.init_unused(self.start() + PAGE_SIZE, self.units.get() * PAGES - 1);
        page
    }

    /// Makes `span` (a page of this segment from `take_pages` or a freed
    /// span) hold slots of `slot_size` bytes of `kind` and `class`.
    pub fn start_span(&self, span: &Page, kind: Kind, class: usize, slot_size: usize) {
        let first = (span.base() as usize - self.start()) >> PAGE_SHIFT;
        let count = span.span();
        for (back, tail) in self.pages.iter().skip(first).take(count).enumerate().skip(1) {
            tail.init_tail(back);
        }
        // Memory that held blocks before (`Page::generations`; on Windows
        // also a span given back with MEM_RESET, `holds_old_bytes`) gets a
        // free state word in every slot before the layout names the class.
        if kind == Kind::Root && (span.generations() != 0 || (class != LARGE && span.holds_old_bytes())) {
            start_generations(span.base() as usize, count * PAGE_SIZE, slot_size, span.generations());
        }
        span.init(kind, class, slot_size, count, span.base());
        super::track::span_started(span.base(), count * PAGE_SIZE);
    }

    /// The granule `addr` starts, in the start bits.
    #[inline(always)]
    fn granule(addr: usize) -> usize {
        (addr & (SEGMENT_SIZE - 1)) >> GRANULE_SHIFT
    }

    #[inline(always)]
    pub fn mark_start(&self, addr: usize) {
        self.starts.set(Self::granule(addr))
    }

    #[inline(always)]
    pub fn is_start(&self, addr: usize) -> bool {
        self.starts.test(Self::granule(addr))
    }

    /// Clears the start bits of the `granules` granules from `addr` on.
    #[inline]
    pub fn clear_starts(&self, addr: usize, granules: usize) {
        self.starts.clear(Self::granule(addr), granules)
    }

    /// The address of the next start after `addr`, or `end` if none is before.
    pub fn next_start(&self, addr: usize, end: usize) -> usize {
        let (from, to) = (Self::granule(addr) + 1, Self::granule(end - 1) + 1);
        addr + ((self.starts.next_set(from, to) - Self::granule(addr)) << GRANULE_SHIFT)
    }
}

/// Puts `generation` in the state word of every root slot of `slot_size`
/// bytes in the `len` bytes at `base`, a span that held blocks before
/// (`Page::generations`): each slot reads as free, and its first root
/// begins a life later than any a root at its address had, whatever the
/// memory held. Written
/// before the span's layout names the class, so a thread that validates a
/// root here by that layout reads a dead state word, never stale bytes.
#[cold]
fn start_generations(base: usize, len: usize, slot_size: usize, generation: u32) {
    // A zero size names no slot (`checked_div`: no division that can panic).
    let slots = len.checked_div(slot_size).unwrap_or(0);
    for slot in (0..slots).map(|index| base + index * slot_size) {
        // The header is ours again before we write it (memcheck).
        super::track::header(slot, ROOT_HEADER);
        // SAFETY: a slot start in a span of this heap's, mapped for good,
        // that no block of anyone's holds.
        unsafe { Root::at(slot) }.restore(generation | FREE);
    }
}

#[cfg(test)]
mod tests {
    use super::super::root::ROOT_HEADER;
    use super::*;

    /// A segment of this test's own, owned by no heap.
    fn segment(units: usize) -> &'static Segment {
        Segment::create(core::ptr::null(), units).expect("a segment")
    }

    #[test]
    fn a_segment_is_aligned_published_and_hands_out_its_pages_once() {
        let s = segment(1);
        let start = s as *const Segment as usize;
        assert_eq!(start % SEGMENT_SIZE, 0);
        assert!(segmap::contains(start) && segmap::contains(start + SEGMENT_SIZE - 1));
        // SAFETY: published just above.
        assert!(core::ptr::eq(unsafe { Segment::of(start + 12345) }, s));
        assert_eq!(s.pages_left(), PAGES - 1, "page 0 is the header");
        let a = s.take_pages(1).unwrap();
        let b = s.take_pages(3).unwrap();
        assert_eq!(a.base() as usize, start + PAGE_SIZE);
        assert_eq!(b.base() as usize, start + 2 * PAGE_SIZE);
        assert!(s.take_pages(PAGES).is_none() && s.take_pages(0).is_none());
        assert_eq!(s.pages_left(), PAGES - 5);
    }

    #[test]
    fn every_page_of_a_span_leads_to_its_first() {
        let s = segment(1);
        let span = s.take_pages(3).unwrap();
        s.start_span(span, Kind::Root, 0, 3 * PAGE_SIZE);
        let base = span.base() as usize;
        for addr in [base, base + PAGE_SIZE, base + 3 * PAGE_SIZE - 16] {
            assert!(core::ptr::eq(s.page_of(addr), span), "{:#x}", addr - base);
        }
        assert!(!core::ptr::eq(s.page_of(base + 3 * PAGE_SIZE), span), "the page after the span");
    }

    #[test]
    fn start_bits_mark_children_and_find_the_next() {
        let s = segment(1);
        let base = s as *const Segment as usize + 5 * PAGE_SIZE;
        for addr in [base, base + 48, base + 64] {
            s.mark_start(addr);
        }
        assert!(s.is_start(base + 48) && !s.is_start(base + 32));
        assert_eq!(s.next_start(base, base + 4096), base + 48);
        assert_eq!(s.next_start(base + 64, base + 4096), base + 4096, "none after the last");
        s.clear_starts(base + 16, 3); // 16, 32 and 48
        assert!(s.is_start(base) && !s.is_start(base + 48) && s.is_start(base + 64));
    }

    /// A page that held other bytes (here, a chunk's children, all reading
    /// as a live root's state word) and becomes a root page: slots never
    /// handed out are no root to another thread, which reads their state
    /// word from the class alone.
    #[test]
    fn a_reused_page_has_no_root_where_no_slot_was_handed_out() {
        let s = segment(1);
        let page = s.take_pages(1).unwrap();
        let base = page.base() as usize;
        s.start_span(page, Kind::Chunk, 0, 64);
        // SAFETY: the page is this test's, mapped and writable.
        let words = unsafe { core::slice::from_raw_parts_mut(base as *mut u32, PAGE_SIZE / 4) };
        words.fill(super::super::root::LIVE);
        page.retire(true);
        let class = super::super::class::root_class(48);
        s.start_span(page, Kind::Root, class, 48);
        for addr in [base + ROOT_HEADER, base + 48 + ROOT_HEADER, base + PAGE_SIZE - 48 + ROOT_HEADER] {
            let found = super::super::validate::any_slot(addr);
            assert!(
                found.map_or(true, |f| super::super::root::kind(f.state) == super::super::root::FREE),
                "{:#x}",
                addr - base
            );
        }
    }

    #[test]
    fn a_huge_segment_publishes_its_first_unit_only() {
        let s = segment(3);
        let start = s as *const Segment as usize;
        assert!(segmap::contains(start));
        assert!(!segmap::contains(start + SEGMENT_SIZE) && !segmap::contains(start + 2 * SEGMENT_SIZE));
        let span = s.whole_span();
        assert_eq!(span.span(), 3 * PAGES - 1);
        assert_eq!(span.base() as usize, start + PAGE_SIZE);
    }
}
