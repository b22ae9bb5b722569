//! The counts `mapi32_stats` reports (SPEC §4), kept per heap by its owner
//! with plain loads and stores (no read-modify-write), read by anyone.
//!
//! The peak is only taken where it can be passed: before live bytes fall
//! (a free) and when read. Allocations ever made are the live blocks plus
//! those freed, so no call counts them separately.

use super::heap::Heap;
use super::thread;
use core::sync::atomic::{AtomicU64, Ordering};

/// Counts of blocks, as `mapi32_stats` reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub live_roots: u64,
    pub live_children: u64,
    /// Bytes the live blocks' callers asked for.
    pub live_bytes: u64,
    /// The most `live_bytes` ever reached (per heap: see `stats`).
    pub peak_bytes: u64,
    /// Blocks ever made, by any of the allocating calls.
    pub allocations: u64,
}

/// A counter only its heap's owner changes.
#[derive(Debug)]
struct Counter(AtomicU64);

impl Counter {
    #[allow(clippy::declare_interior_mutable_const)] // an initialiser, copied
    const ZERO: Counter = Counter(AtomicU64::new(0));

    #[inline(always)]
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// A load and a store: only the owner writes, so no update is lost.
    #[inline(always)]
    fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed)
    }

    #[inline(always)]
    fn add(&self, n: u64) {
        self.set(self.get().wrapping_add(n))
    }

    #[inline(always)]
    fn sub(&self, n: u64) {
        self.set(self.get().wrapping_sub(n))
    }
}

#[derive(Debug)]
pub struct HeapCounts {
    live_roots: Counter,
    live_children: Counter,
    live_bytes: Counter,
    peak_bytes: Counter,
    freed: Counter,
    /// Faces (see `root`) live in the heap: not roots in the counts (their
    /// tree's root is counted where it was made), but blocks all the same.
    faces: Counter,
}

impl HeapCounts {
    #[allow(clippy::declare_interior_mutable_const)] // an initialiser, copied
    pub const ZERO: HeapCounts = HeapCounts {
        live_roots: Counter::ZERO,
        live_children: Counter::ZERO,
        live_bytes: Counter::ZERO,
        peak_bytes: Counter::ZERO,
        freed: Counter::ZERO,
        faces: Counter::ZERO,
    };

    #[inline(always)]
    pub fn root_made(&self, bytes: u32) {
        self.live_roots.add(1);
        self.live_bytes.add(bytes as u64);
    }

    #[inline(always)]
    pub fn child_made(&self, bytes: u32) {
        self.live_children.add(1);
        self.live_bytes.add(bytes as u64);
    }

    /// Live bytes are about to fall: the peak is theirs if they passed it.
    #[inline(always)]
    fn take_peak(&self) {
        let live = self.live_bytes.get();
        if live > self.peak_bytes.get() {
            self.peak_bytes.set(live);
        }
    }

    /// A root and `children` children, `bytes` bytes in all, are freed.
    #[inline(always)]
    pub fn tree_freed(&self, children: u64, bytes: u64) {
        self.take_peak();
        self.live_roots.sub(1);
        self.live_children.sub(children);
        self.live_bytes.sub(bytes);
        self.freed.add(1 + children);
    }

    /// A root with no children, of `bytes` bytes, is freed.
    #[inline(always)]
    pub fn root_freed(&self, bytes: u32) {
        self.take_peak();
        self.live_roots.sub(1);
        self.live_bytes.sub(bytes as u64);
        self.freed.add(1);
    }

    /// A face (see `root`) of `bytes` bytes is made for a tree whose root
    /// was reallocated: its bytes are live; the tree's root stays counted
    /// where it was, so the old root (or face) counts as an allocation
    /// freed.
    pub fn face_made(&self, bytes: u32) {
        self.faces.add(1);
        self.live_bytes.add(bytes as u64);
        self.freed.add(1);
    }

    /// A face of `bytes` bytes is freed, its tree killed with it or going
    /// on with another face.
    pub fn face_freed(&self, bytes: u64) {
        self.take_peak();
        self.faces.sub(1);
        self.live_bytes.sub(bytes);
    }

    /// A root of this heap's, of `bytes` bytes, moved to a face: its bytes
    /// are the face's now, its tree goes on.
    pub fn root_moved(&self, bytes: u64) {
        self.take_peak();
        self.live_bytes.sub(bytes);
    }

    /// Whether any root or face of the heap's is live (the unloading).
    pub fn holds_blocks(&self) -> bool {
        self.live_roots.get() != 0 || self.faces.get() != 0
    }

    /// `children` children of a tree, `bytes` bytes in all, are freed
    /// apart from it (a guest chunk swept: see `guest`).
    pub fn children_freed(&self, children: u64, bytes: u64) {
        self.take_peak();
        self.live_children.sub(children);
        self.live_bytes.sub(bytes);
        self.freed.add(children);
    }

    /// The counts as `mapi32_stats` reports them.
    pub fn snapshot(&self) -> Counts {
        let (roots, children, live) = (self.live_roots.get(), self.live_children.get(), self.live_bytes.get());
        Counts {
            live_roots: roots,
            live_children: children,
            live_bytes: live,
            peak_bytes: self.peak_bytes.get().max(live),
            allocations: roots.wrapping_add(children).wrapping_add(self.freed.get()),
        }
    }
}

/// Every heap's counts added up. Each block is counted in one heap: a root
/// and its own chunks' children in the root's, a guest child in its
/// maker's. The peak is the sum of each heap's (exact with one heap).
///
/// The calling thread first releases the trees other threads freed in its
/// heap and sweeps its guest chunks. Another heap's share leaves out the
/// trees other threads freed there that its owner has not released yet,
/// and its guest children of dead trees (`share`), so a tree, with every
/// child, leaves the counts when its free returns, on any thread; so does
/// a root's bytes when another thread moves them to a face. An orphan (its
/// thread exited) is caught up here (see `remote`, `guest`,
/// `thread::catch_up`).
pub fn stats() -> Counts {
    if let Some(heap) = thread::entered() {
        thread::catch_up(heap);
    }
    let mut total = Counts::default();
    for heap in thread::heaps() {
        let behind = super::remote::has_kills(heap) || heap.guests.count() != 0;
        if behind && !heap.is_owned() && heap.try_claim() {
            // An orphan with trees other threads freed or guest children:
            // caught up as its owner would (`Heap::try_claim`'s rule). Only
            // then, so that a thread looking for an orphan to adopt seldom
            // finds it taken.
            thread::catch_up(heap);
            heap.give_up();
        }
        let counts = share(heap);
        total.live_roots = total.live_roots.wrapping_add(counts.live_roots);
        total.live_children = total.live_children.wrapping_add(counts.live_children);
        total.live_bytes = total.live_bytes.wrapping_add(counts.live_bytes);
        total.peak_bytes = total.peak_bytes.wrapping_add(counts.peak_bytes);
        total.allocations = total.allocations.wrapping_add(counts.allocations);
    }
    total
}

/// The calling thread's heap's share of the counts: exact for the blocks
/// this thread makes and frees, whatever other threads (other tests) do.
/// The heap is claimed first, so that a later call does not adopt another.
#[cfg(test)]
pub fn own_share() -> Counts {
    thread::heap().map(share).unwrap_or_default()
}

/// `heap`'s counts without what was freed on other threads and not yet
/// taken off them: the trees other threads killed in it that its owner
/// has not released (`remote::unreleased`), and the children in its guest
/// chunks whose tree is dead (`guest::dead`). Those were freed when their
/// free returned. They are still blocks made, so the allocations stay; and
/// the peak is the owner's, which they were part of.
pub fn share(heap: &Heap) -> Counts {
    let mut counts = heap.counts.snapshot();
    if super::remote::has_kills(heap) {
        let gone = super::remote::unreleased(heap);
        counts.live_roots = counts.live_roots.wrapping_sub(gone.roots);
        counts.live_children = counts.live_children.wrapping_sub(gone.children);
        counts.live_bytes = counts.live_bytes.wrapping_sub(gone.bytes);
    }
    if heap.guests.count() != 0 {
        let (children, bytes) = super::guest::dead(heap);
        counts.live_children = counts.live_children.wrapping_sub(children);
        counts.live_bytes = counts.live_bytes.wrapping_sub(bytes);
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_roots_children_and_frees() {
        let counts = HeapCounts::ZERO;
        counts.root_made(100);
        counts.child_made(20);
        counts.child_made(3);
        let during = counts.snapshot();
        assert_eq!((during.live_roots, during.live_children, during.live_bytes), (1, 2, 123));
        assert_eq!((during.peak_bytes, during.allocations), (123, 3));
        counts.tree_freed(2, 123);
        counts.root_made(10);
        let after = counts.snapshot();
        assert_eq!((after.live_roots, after.live_children, after.live_bytes), (1, 0, 10));
        assert_eq!(after.peak_bytes, 123, "the peak outlives the tree");
        assert_eq!(after.allocations, 4);
    }
}
