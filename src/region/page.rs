//! A page descriptor: what one 64 KiB page of a segment holds (slots of
//! one root or chunk class, or the start of a span of pages holding one
//! large block) and which of its slots are free.
//!
//! Descriptors live in their segment's metadata page, zeroed by the OS
//! (which is a valid, unused descriptor), and are written only by the heap
//! that owns the segment. Other threads read one word of it, `layout` (the
//! kind and class, so one load gives a pair that belongs together), to
//! validate a block of another thread's, and use the `killed` links to hand
//! the owner pages with roots they freed (`remote`); everything else is
//! the owner's alone: plain `Cell`s.

use super::class::{reciprocal, slot_index};
use super::PAGE_SIZE;
use core::cell::Cell;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU16, Ordering};

/// What a page holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Nothing (the metadata page, a page never handed out, a freed span).
    Unused = 0,
    /// Root slots, or the start of a span holding one large root.
    Root = 1,
    /// Chunk slots, or the start of a span holding one large chunk.
    Chunk = 2,
    /// A later page of a span: `back` pages after its first.
    Tail = 3,
}

/// Where a free slot keeps the link to the next: its third word, the
/// root header's `first` and the chunk header's `next`, never its first
/// (the state word, which must keep saying "free"). Read and written as the
/// atomic those fields are: `stats` may read that word of a slot another
/// thread is freeing (`remote::unreleased`).
pub const FREE_LINK_OFFSET: usize = 8;

/// The link word of the free slot at `slot`.
///
/// # Safety
/// `slot` is a slot of at least 32 bytes (the smallest class), 16-aligned.
#[inline(always)]
unsafe fn free_link<'a>(slot: *mut u8) -> &'a AtomicPtr<u8> {
    // SAFETY: by the caller's contract the word is inside the slot and
    // aligned; it is the `AtomicPtr` of a root's `first` or a chunk's `next`.
    unsafe { &*slot.add(FREE_LINK_OFFSET).cast::<AtomicPtr<u8>>() }
}

#[repr(C)]
#[derive(Debug)]
pub struct Page {
    /// Its `Kind` | the root or chunk class of its slots << 8.
    layout: AtomicU16,
    /// On its heap's queue for its class (current or with room): a free
    /// into a full page puts it back.
    queued: Cell<bool>,
    /// A retired span whose pages still hold memory (a small freed large
    /// block's, kept resident for the next of its length): `Heap::trim`
    /// gives those back, and only those.
    resident: Cell<bool>,
    /// A retired span whose memory may hold bytes of its earlier use: kept
    /// resident, or discarded where the OS does not promise zeroes
    /// (`os::DISCARD_ZEROES`). A page never handed out holds zeroes.
    old_bytes: Cell<bool>,
    /// `Tail`: how many pages back its span starts.
    back: Cell<u16>,
    /// `reciprocal(slot_size)`, 0 when the page (or span) is one slot.
    recip: Cell<u32>,
    /// Pages in the span this page starts (1 for a class page).
    span: Cell<u32>,
    /// Slots in the page, slots ever handed out, slots handed out now.
    cap: Cell<u32>,
    bump: Cell<u32>,
    used: Cell<u32>,
    /// The generation the roots of its next root class start from: later
    /// than any a root in it had, because its state words do not survive a
    /// discard or another class (`heap::keep_generations`); 0 while it
    /// never held anything, its memory the OS's zeroes.
    generations: Cell<u32>,
    slot_size: Cell<usize>,
    base: Cell<*mut u8>,
    /// Freed slots, linked at `FREE_LINK_OFFSET`.
    free: Cell<*mut u8>,
    /// The next page on a heap's list (pages with room, free spans).
    next: Cell<*const Page>,
    /// On its owner's stack of pages with killed roots (`remote`), and the
    /// next page on that stack.
    pub killed_pending: AtomicBool,
    pub killed_next: AtomicPtr<Page>,
}

impl Kind {
    /// The kind in a layout word's low bits: every value of two bits is a
    /// kind, and the match compiles to the mask alone.
    #[inline(always)]
    fn from_bits(bits: u16) -> Kind {
        match bits & 3 {
            0 => Kind::Unused,
            1 => Kind::Root,
            2 => Kind::Chunk,
            _ => Kind::Tail,
        }
    }
}

/// A page's kind and class, read together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub kind: Kind,
    pub class: usize,
}

impl Page {
    /// Makes this unused page (at `base`) the first of `span` pages holding
    /// slots of `slot_size` bytes of `kind` and `class`.
    pub fn init(&self, kind: Kind, class: usize, slot_size: usize, span: usize, base: *mut u8) {
        let slots = (span * PAGE_SIZE).checked_div(slot_size).unwrap_or(0);
        self.queued.set(true);
        self.back.set(0);
        self.recip.set(reciprocal(slot_size, slots));
        self.span.set(span as u32);
        self.cap.set(slots as u32);
        self.bump.set(0);
        self.used.set(0);
        self.slot_size.set(slot_size);
        self.base.set(base);
        self.free.set(ptr::null_mut());
        self.next.set(ptr::null());
        self.set_layout(kind, class);
    }

    /// Release: a thread that reads the new layout reads the fields above
    /// as they were set for it.
    fn set_layout(&self, kind: Kind, class: usize) {
        self.layout.store(kind as u16 | (class as u16 & 0xFF) << 8, Ordering::Release);
    }

    /// The kind and class as another thread reads them.
    #[inline(always)]
    pub fn layout(&self) -> Layout {
        let bits = self.layout.load(Ordering::Acquire);
        Layout { kind: Kind::from_bits(bits), class: (bits >> 8) as usize }
    }

    /// Slots handed out since the page took its class, by address.
    pub fn handed_out(&self) -> impl Iterator<Item = usize> {
        let (base, size) = (self.base.get() as usize, self.slot_size.get());
        (0..self.bump.get() as usize).map(move |index| base + index * size)
    }

    /// The generation roots here start from when it next holds roots.
    pub fn generations(&self) -> u32 {
        self.generations.get()
    }

    /// Roots here had generations up to, not including, `next`.
    pub fn keep_generations(&self, next: u32) {
        self.generations.set(self.generations.get().max(next))
    }

    /// Makes this page the first of an unused span of `span` pages at `base`.
    pub fn init_unused(&self, base: usize, span: usize) {
        self.set_layout(Kind::Unused, 0);
        self.base.set(base as *mut u8);
        self.span.set(span as u32);
        self.next.set(ptr::null());
    }

    /// Makes this page the `back`th page of a span.
    pub fn init_tail(&self, back: usize) {
        self.back.set(back as u16);
        self.set_layout(Kind::Tail, 0);
    }

    /// Takes an empty root page's class away, if no kill is under way in
    /// its segment (`remote`); false, with nothing changed, if one is.
    pub fn retire_root_page(&self, no_kill_under_way: impl FnOnce() -> bool) -> bool {
        let layout = self.layout.load(Ordering::Relaxed);
        self.layout.store(Kind::Unused as u16, Ordering::SeqCst);
        if no_kill_under_way() {
            return true;
        }
        self.layout.store(layout, Ordering::Relaxed);
        false
    }

    /// A freed span's first page: nothing in it validates any more.
    /// `resident`: whether its memory was left in place.
    pub fn retire(&self, resident: bool) {
        self.set_layout(Kind::Unused, 0);
        self.resident.set(resident);
        self.old_bytes.set(resident || !crate::os::DISCARD_ZEROES);
        self.next.set(ptr::null());
    }

    pub fn is_resident(&self) -> bool {
        self.resident.get()
    }

    /// Whether its memory may hold bytes of an earlier use (see `old_bytes`).
    pub fn holds_old_bytes(&self) -> bool {
        self.old_bytes.get()
    }

    /// Its memory was given back.
    pub fn set_discarded(&self) {
        self.resident.set(false);
        self.old_bytes.set(!crate::os::DISCARD_ZEROES);
    }

    #[inline(always)]
    pub fn kind(&self) -> Kind {
        Kind::from_bits(self.layout.load(Ordering::Relaxed))
    }

    #[inline(always)]
    pub fn class(&self) -> usize {
        (self.layout.load(Ordering::Relaxed) >> 8) as usize
    }

    pub fn back(&self) -> usize {
        self.back.get() as usize
    }

    pub fn span(&self) -> usize {
        self.span.get() as usize
    }

    pub fn base(&self) -> *mut u8 {
        self.base.get()
    }

    pub fn slot_size(&self) -> usize {
        self.slot_size.get()
    }

    /// Whether the page holds a single (large) block (for tests).
    #[cfg(test)]
    pub fn is_single(&self) -> bool {
        self.cap.get() == 1
    }

    pub fn set_queued(&self, queued: bool) {
        self.queued.set(queued)
    }

    pub fn next(&self) -> *const Page {
        self.next.get()
    }

    pub fn set_next(&self, next: *const Page) {
        self.next.set(next)
    }

    /// Whether no slot is in use.
    pub fn is_empty(&self) -> bool {
        self.used.get() == 0
    }

    /// The link to the next page on a list, to unlink the one after.
    pub fn next_link(&self) -> &Cell<*const Page> {
        &self.next
    }

    /// Whether a slot can be had without a new page.
    pub fn has_room(&self) -> bool {
        !self.free.get().is_null() || self.bump.get() < self.cap.get()
    }

    /// A free slot: the last freed, else the next never used. Null when full.
    #[inline(always)]
    pub fn alloc(&self) -> *mut u8 {
        let slot = self.free.get();
        if !slot.is_null() {
            // SAFETY: a slot on the free list is ours and holds its link at
            // FREE_LINK_OFFSET, written by `free`.
            self.free.set(unsafe { free_link(slot) }.load(Ordering::Relaxed));
        } else if self.bump.get() < self.cap.get() {
            let index = self.bump.get();
            self.bump.set(index + 1);
            // Inside the page: index < cap = span * PAGE_SIZE / slot_size.
            let slot = self.base.get().wrapping_add(index as usize * self.slot_size.get());
            self.used.set(self.used.get() + 1);
            return slot;
        } else {
            return ptr::null_mut();
        }
        self.used.set(self.used.get() + 1);
        slot
    }

    /// Puts `slot` back; true if the page was full and off its queue, so
    /// the caller must queue it again.
    ///
    /// # Safety
    /// `slot` is a slot of this page handed out by `alloc` and not freed since.
    #[inline(always)]
    pub unsafe fn free(&self, slot: *mut u8) -> bool {
        // SAFETY: the slot is ours and at least 32 bytes (the smallest class),
        // so its third word is inside it; nobody else uses it any more.
        unsafe { free_link(slot) }.store(self.free.get(), Ordering::Relaxed);
        self.free.set(slot);
        self.used.set(self.used.get() - 1);
        !self.queued.get()
    }

    /// The start of the slot holding `addr`, which lies in this page's
    /// span, found with no division.
    #[inline(always)]
    pub fn slot_of(&self, addr: usize) -> usize {
        let base = self.base.get() as usize;
        base + slot_index(addr - base, self.recip.get()) * self.slot_size.get()
    }

    /// Whether the slot starting at `slot` was ever handed out: beyond that,
    /// the page's memory holds no header.
    #[inline(always)]
    pub fn was_handed_out(&self, slot: usize) -> bool {
        slot < self.base.get() as usize + self.bump.get() as usize * self.slot_size.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page's worth of zeroed memory, 16-aligned, as a segment gives.
    fn memory() -> Vec<u128> {
        vec![0u128; PAGE_SIZE / 16]
    }

    #[test]
    fn slots_come_from_the_bump_then_the_free_list() {
        let mut bytes = memory();
        let base = bytes.as_mut_ptr().cast::<u8>();
        let page = unused();
        page.init(Kind::Root, 3, 48, 1, base);
        let slots: Vec<*mut u8> = (0..PAGE_SIZE / 48).map(|_| page.alloc()).collect();
        assert!(slots.iter().enumerate().all(|(i, &s)| s == base.wrapping_add(i * 48)));
        assert!(page.alloc().is_null(), "full");
        assert!(!page.has_room());
        page.set_queued(false);
        // SAFETY: handed out above, freed once each.
        assert!(unsafe { page.free(slots[5]) }, "a full page goes back on its queue");
        page.set_queued(true);
        assert!(!unsafe { page.free(slots[9]) });
        assert_eq!(page.alloc(), slots[9], "last freed, first reused");
        assert_eq!(page.alloc(), slots[5]);
        assert!(page.alloc().is_null());
        assert_eq!(page.used.get() as usize, PAGE_SIZE / 48);
    }

    #[test]
    fn slot_of_finds_the_slot_and_knows_what_was_handed_out() {
        let mut bytes = memory();
        let base = bytes.as_mut_ptr().cast::<u8>();
        let page = unused();
        page.init(Kind::Root, 0, 1280, 1, base);
        let a = page.alloc() as usize;
        let b = page.alloc() as usize;
        assert_eq!(page.slot_of(a), a);
        assert_eq!(page.slot_of(a + 16), a);
        assert_eq!(page.slot_of(b - 1), a);
        assert_eq!(page.slot_of(b + 1279), b);
        assert!(page.was_handed_out(b) && !page.was_handed_out(b + 1280));
        let single = unused();
        single.init(Kind::Chunk, 0, 3 * PAGE_SIZE, 3, base);
        assert!(single.is_single());
        assert_eq!(single.slot_of(base as usize + PAGE_SIZE - 16), base as usize);
    }

    fn unused() -> Page {
        Page {
            layout: AtomicU16::new(0),
            queued: Cell::new(false),
            resident: Cell::new(false),
            old_bytes: Cell::new(false),
            back: Cell::new(0),
            recip: Cell::new(0),
            span: Cell::new(0),
            cap: Cell::new(0),
            bump: Cell::new(0),
            used: Cell::new(0),
            generations: Cell::new(0),
            slot_size: Cell::new(0),
            base: Cell::new(ptr::null_mut()),
            free: Cell::new(ptr::null_mut()),
            next: Cell::new(ptr::null()),
            killed_pending: AtomicBool::new(false),
            killed_next: AtomicPtr::new(ptr::null_mut()),
        }
    }
}
