//! A chunk: memory a tree's children are bumped into, in a chunk-class slot
//! (or a span of its own for one big child), with a 32-byte header. The
//! tree's chunks form a list from its root, newest first; a tree is freed
//! chunk by chunk, never child by child.
//!
//! The header records the tree's state word (generation) when it was made,
//! so a child validates only while that tree is the live one, and it stores
//! its end beside its fill mark, so a bump is a compare with one load.
//!
//! A chunk may belong to a tree of another thread (`remote`): made by a
//! thread's `MAPIAllocateMore` on that tree, in the maker's own pages, on
//! the maker's list of such chunks rather than the tree's. Its state and
//! tree are atomics because other threads validate children through them;
//! its link and counts because `stats` reads a killed tree's chunks from
//! any thread (`remote::unreleased`). Only the owner writes any of them,
//! with relaxed loads and stores: the same moves as plain fields.

use super::root::{generation, tree_alive, Root, CHUNK, GENERATION_SHIFT};
use super::{GRANULE, GRANULE_SHIFT};
use core::cell::Cell;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

/// Bytes in front of a chunk's first child.
pub const CHUNK_HEADER: usize = 32;
pub const HEADER_GRANULES: usize = CHUNK_HEADER >> GRANULE_SHIFT;

#[repr(C)]
#[derive(Debug)]
pub struct Chunk {
    /// The tree's generation | class << 2 | `CHUNK`.
    state: AtomicU32,
    /// Granules from the chunk's start in use, header included; and its
    /// size in granules (64 KiB at most). A chunk of one big child is made
    /// full: both are its header and one granule.
    used: Cell<u16>,
    end: Cell<u16>,
    /// The next older chunk of the tree. A free slot's link.
    next: AtomicPtr<Chunk>,
    tree: AtomicPtr<Root>,
    /// Its children and the bytes they asked for, taken off the heap's
    /// counts when the tree is freed.
    count: AtomicU32,
    bytes: AtomicU32,
}

const _: () = assert!(core::mem::size_of::<Chunk>() <= CHUNK_HEADER && CHUNK_HEADER % GRANULE == 0);
const _: () = assert!((super::PAGE_SIZE >> GRANULE_SHIFT) <= u16::MAX as usize);

impl Chunk {
    /// The header of the chunk slot at `slot`.
    ///
    /// # Safety
    /// `slot` is a chunk slot handed out at least once: mapped, 16-aligned
    /// memory of the heap's, written only by it.
    #[inline(always)]
    pub unsafe fn at<'a>(slot: usize) -> &'a Chunk {
        // SAFETY: by the caller's contract.
        unsafe { &*(slot as *const Chunk) }
    }

    /// Makes a fresh slot a chunk of `tree` (live or moved) of class `class`, `end`
    /// granules long, whose first `used` granules (header included) are
    /// taken.
    pub fn begin(&self, tree: &Root, class: usize, used: usize, end: usize) {
        self.begin_in(tree, tree.state(), class, used, end)
    }

    /// As `begin`, for the life of `tree` that `state` names (another
    /// thread's tree, whose state may move on at any moment).
    pub fn begin_in(&self, tree: &Root, state: u32, class: usize, used: usize, end: usize) {
        self.tag(tree, state, class);
        self.used.set(used as u16);
        self.end.set(end as u16);
        self.set_next(ptr::null());
        self.count.store(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
    }

    fn tag(&self, tree: &Root, state: u32, class: usize) {
        self.tree.store(tree as *const Root as *mut Root, Ordering::Relaxed);
        self.state.store(generation(state) | (class as u32) << 2 | CHUNK, Ordering::Relaxed);
    }

    #[inline(always)]
    pub fn class(&self) -> usize {
        ((self.state() & ((1 << GENERATION_SHIFT) - 1)) >> 2) as usize
    }

    #[inline(always)]
    pub fn state(&self) -> u32 {
        self.state.load(Ordering::Relaxed)
    }

    /// The tree's root slot (in some life: see `live_tree`).
    pub fn tree(&self) -> *const Root {
        self.tree.load(Ordering::Relaxed)
    }

    /// The generation of the tree's life the chunk belongs to.
    #[inline(always)]
    pub fn life(&self) -> u32 {
        generation(self.state())
    }

    /// Whether the slot is tagged as a chunk of `tree` in the life `life`
    /// names: for walks along links another thread may be rewriting
    /// (`remote::unreleased`). The kind is the low two bits: the class
    /// lies above them (a root's kinds need three).
    pub fn tagged(&self, tree: &Root, life: u32) -> bool {
        let state = self.state();
        state & 3 == CHUNK && generation(state) == life && ptr::eq(self.tree(), tree)
    }

    /// The tree, if the chunk belongs to it in its current life: the tree
    /// live, or moved to a face (see `root`).
    #[inline(always)]
    pub fn live_tree(&self) -> Option<&Root> {
        // SAFETY: `tree` is a root slot, set at `begin`, in a segment, and
        // segments stay mapped for good.
        let tree = unsafe { &*self.tree() };
        // The common case in one compare: live, no flag.
        if tree.state() == self.life() | super::root::LIVE || tree_alive(tree.state(), self.life()) {
            Some(tree)
        } else {
            None
        }
    }

    /// Room for `granules` more, at the returned address; `None` when full.
    #[inline(always)]
    pub fn bump(&self, granules: usize) -> Option<usize> {
        let used = self.used.get() as usize;
        if used + granules > self.end.get() as usize {
            return None;
        }
        self.used.set((used + granules) as u16);
        Some(self as *const Chunk as usize + (used << GRANULE_SHIFT))
    }

    /// Counts a child of `bytes` bytes made in it.
    #[inline(always)]
    pub fn add_child(&self, bytes: u32) {
        // A load and a store, not a read-modify-write: only the owner writes.
        self.count.store(self.count().wrapping_add(1), Ordering::Relaxed);
        self.bytes.store(self.bytes().wrapping_add(bytes), Ordering::Relaxed);
    }

    #[inline(always)]
    pub fn count(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }

    #[inline(always)]
    pub fn bytes(&self) -> u32 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The address after the last granule in use.
    pub fn used_end(&self) -> usize {
        self as *const Chunk as usize + ((self.used.get() as usize) << GRANULE_SHIFT)
    }

    /// Where its children start.
    pub fn children_start(&self) -> usize {
        self as *const Chunk as usize + CHUNK_HEADER
    }

    #[inline(always)]
    pub fn next(&self) -> *const Chunk {
        self.next.load(Ordering::Relaxed)
    }

    #[inline(always)]
    pub fn set_next(&self, next: *const Chunk) {
        self.next.store(next as *mut Chunk, Ordering::Relaxed)
    }

    /// The link to the next chunk, to unlink the one after.
    pub fn next_link(&self) -> &AtomicPtr<Chunk> {
        &self.next
    }
}

/// A tree's own chunks, newest first, for the thread that holds the
/// tree's heap: the one walk the free, the `leaks` report and the tests
/// share. Each chunk's link is read before the chunk is yielded, so the
/// caller may give each one back as it gets it.
#[derive(Debug)]
pub struct Chunks {
    next: *const Chunk,
}

impl Chunks {
    /// The chunks from `first` (a root's `first()`) on.
    ///
    /// # Safety
    /// The caller holds the heap the chunks belong to, and they are live
    /// chunk slots of it (a live, moved or killed tree's, not yet released);
    /// it gives back no chunk it has not been yielded yet.
    pub unsafe fn from(first: *const Chunk) -> Chunks {
        Chunks { next: first }
    }
}

impl Iterator for Chunks {
    type Item = &'static Chunk;

    #[inline(always)]
    fn next(&mut self) -> Option<&'static Chunk> {
        // SAFETY: `from`'s contract: the link leads to a live chunk slot of
        // the held heap, in a segment mapped for good.
        let chunk: &'static Chunk = unsafe { self.next.as_ref() }?;
        self.next = chunk.next();
        Some(chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_bumps_to_its_end_and_follows_its_tree() {
        let mut memory = [0u128; 4 + 64 / 16];
        let base = memory.as_mut_ptr() as usize;
        // SAFETY: local stand-ins for a root slot and a 64-byte chunk slot.
        let (tree, chunk) = unsafe { (Root::at(base), Chunk::at(base + 64)) };
        tree.begin(0);
        chunk.begin(tree, 0, HEADER_GRANULES, 64 / GRANULE);
        assert_eq!(chunk.bump(1), Some(base + 64 + CHUNK_HEADER));
        assert_eq!(chunk.bump(2), None, "one granule left");
        assert_eq!(chunk.bump(1), Some(base + 64 + CHUNK_HEADER + 16));
        assert_eq!(chunk.bump(1), None);
        assert!(chunk.live_tree().is_some());
        tree.end();
        assert!(chunk.live_tree().is_none(), "a freed tree's children are dead");
        tree.begin(0);
        assert!(chunk.live_tree().is_none(), "and stay dead in the slot's next root");
        let moved = tree.state() & !7 | super::super::root::MOVED;
        chunk.begin(tree, 5, HEADER_GRANULES, 64 / GRANULE);
        assert!(tree.swap_state(tree.state(), moved).is_ok());
        assert_eq!(chunk.class(), 5);
        assert!(chunk.live_tree().is_some(), "a moved tree's children live on");
    }
}
