//! A root freed by a thread other than its owner's: killed at once, released
//! by its owner later, with no call of either thread ever waiting for the
//! other (SPEC §3).
//!
//! The freeing thread validates the root from the tables any thread may
//! read (`validate::any_slot`), then swaps its state word from the exact
//! live word it read to killed (`Root::kill`). From that moment the tree is
//! dead to every call: its root and children no longer validate, and the
//! owner's parent cache no longer matches. The winner of the swap sets the
//! slot's bit in its page's killed bits (in the segment) and, if the page
//! is not on the owner's stack already, pushes it there (a lock-free stack
//! that only the owner empties, all at once, so no ABA).
//!
//! The owner takes the whole stack at its next `MAPIAllocateBuffer`,
//! `MAPIFreeBuffer` or `mapi32_stats` (one relaxed load each when there is
//! nothing), and releases every slot whose bit is set and whose root is
//! still killed: its chunks and slot go back, and the tree leaves the
//! counts. A heap whose thread exits drains them then; kills that come
//! later, into the orphan, are drained by its adopter, or by `stats`, as
//! the owner (`thread::catch_up`).
//!
//! Races, each settled by the state word:
//! - two frees from other threads: one swap wins, the other finds the root
//!   dead and does nothing;
//! - the owner's free against a kill: the owner's load and store keep the
//!   generation, so the slot ends that life once, released by the owner;
//!   the kill's bit then finds a slot that is not killed, and is dropped;
//! - a kill of a root whose slot was freed and reused meanwhile: the swap
//!   expects the old generation and fails;
//! - a kill against the owner reclaiming the (empty) page for another
//!   class: the killer finds the slot from the page's class alone, so a
//!   new class could put a client's byte where it swaps. So a kill counts
//!   itself in its segment (`Segment::kill_under_way`) before it reads the
//!   class, and the owner changes a root page's class only after it has
//!   hidden it (layout unused) and then seen no kill under way (SeqCst
//!   both): a kill that starts later sees the page unused, one that started
//!   earlier is seen, and the page keeps its class until a later reclaim.
//!   No one waits.
//!
//! A face (see `root`) is freed the same way, live face → killed face, and
//! the winner then kills its tree, moved → killed (`KILLED_MOVED`): the
//! one swap on the face decides between racing frees and reallocations of
//! it, so the tree is killed once. Blocks of the caller's own heap are
//! released at once rather than handed over. A root another thread moved
//! to a face is handed over the same way, for its owner to take its bytes
//! off its counts (its slot stays: it is its tree's header).
//!
//! The bits and the `pending` flag are ordered SeqCst on both sides: a
//! killer sets its bit and then tests-and-sets the flag; the owner clears
//! the flag and then takes the bits. Either the killer sees the flag clear
//! and pushes the page again, or the owner's take sees the bit.

use super::free;
use super::heap::Heap;
use super::page::{Kind, Page};
use super::root::{face_tag, generation, kind, Root, FACE, KILLED, KILLED_FACE, KILLED_MOVED, LIVE, MOVED};
use super::segment::{Segment, KILLED_WORDS};
use super::validate::{self, AnyRoot};
use core::ptr;
use core::sync::atomic::Ordering;

/// Frees the root at `addr` if it is a live root or face of any thread's,
/// for the owner to release; `heap` is the caller's, if it has one. How
/// many blocks went (a killed root counts 1: its owner releases the rest),
/// or `None` if `addr` is not (any more) a live root or face.
#[cold]
#[inline(never)]
pub fn kill(heap: Option<&Heap>, addr: usize) -> Option<usize> {
    let mut freed = None;
    under_way(addr, || {
        freed = match validate::any_slot(addr) {
            Some(found) if kind(found.state) == LIVE && kill_found(&found) => Some(1),
            Some(found) if kind(found.state) == FACE => kill_face(heap, addr),
            _ => None,
        };
        true
    });
    freed
}

/// Runs `write`, which swaps a state word in the segment of `addr`, with
/// the segment counting a kill under way (see the module's notes); false
/// if `addr` is not in one of our segments.
pub fn under_way(addr: usize, write: impl FnOnce() -> bool) -> bool {
    if addr % super::GRANULE != 0 || !super::segmap::contains(addr) {
        return false;
    }
    // SAFETY: the segment map says `addr`'s unit starts a published segment.
    let segment = unsafe { Segment::of(addr) };
    segment.kill_under_way(true);
    let done = write();
    segment.kill_under_way(false);
    done
}

/// Kills the root or face `found` in the life it was found in, and hands
/// its page to its owner; false if that life is over.
fn kill_found(found: &AnyRoot) -> bool {
    if !found.root.kill(found.state) {
        return false;
    }
    hand_over(found);
    true
}

/// `heap` if `found` lies in its segments.
fn owned_by<'a>(heap: Option<&'a Heap>, found: &AnyRoot) -> Option<&'a Heap> {
    heap.filter(|heap| ptr::eq(found.segment.owner(), *heap))
}

/// Sets `found`'s killed bit and, if its page is not on its owner's stack
/// already, pushes it there.
pub fn hand_over(found: &AnyRoot) {
    let page = found.segment.page(found.page);
    found.segment.mark_killed(found.page, found.slot);
    if !page.killed_pending.swap(true, Ordering::SeqCst) {
        // SAFETY: a published segment's owner is a heap, never freed.
        if let Some(owner) = unsafe { found.segment.owner().as_ref() } {
            push(owner, page);
        }
    }
}

/// Frees the face at `addr` (in a segment counting this kill) and its
/// tree. One compare-and-swap of the face's state decides between racing
/// frees and reallocations of it; the winner kills the tree as a root is
/// killed. Blocks of the caller's heap (`heap`) are released at once,
/// others by their owner.
fn kill_face(heap: Option<&Heap>, addr: usize) -> Option<usize> {
    let face = validate::any_face(addr)?;
    if !face.face.root.kill(face.face.state) {
        return None;
    }
    match owned_by(heap, &face.face) {
        Some(heap) => free::free_face(heap, face.face.segment.page(face.face.page), face.face.root),
        None => hand_over(&face.face),
    }
    Some(1 + kill_tree(heap, face.tree_slot, face.tag))
}

/// Kills the moved tree whose slot is `tree_slot`, if it is still moved in
/// the life `tag` checks: its face is gone. Only the thread that ended its
/// face gets here, so no one else ends it. Released at once if it is in
/// `heap` (the caller's): then how many blocks went, else 0.
pub fn kill_tree(heap: Option<&Heap>, tree_slot: usize, tag: u32) -> usize {
    let addr = tree_slot + super::root::ROOT_HEADER;
    let mut freed = 0;
    under_way(addr, || match validate::any_slot(addr) {
        Some(tree) if kind(tree.state) == MOVED && face_tag(tree.state) == tag => {
            if tree.root.swap_state(tree.state, generation(tree.state) | KILLED_MOVED).is_ok() {
                match owned_by(heap, &tree) {
                    // The tree's own blocks are counted from its root.
                    Some(heap) => freed = free::free_tree(heap, tree.segment.page(tree.page), tree.root) - 1,
                    None => hand_over(&tree),
                }
            }
            true
        }
        _ => false,
    });
    freed
}

/// Pushes `page` on `owner`'s stack of pages to look at.
fn push(owner: &Heap, page: &Page) {
    let page_ptr = page as *const Page as *mut Page;
    let mut head = owner.killed.load(Ordering::Relaxed);
    loop {
        page.killed_next.store(head, Ordering::Relaxed);
        match owner.killed.compare_exchange_weak(head, page_ptr, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return,
            Err(now) => head = now,
        }
    }
}

/// Whether other threads killed trees in `heap` that it has not released
/// (a hint: any thread may ask).
pub fn has_kills(heap: &Heap) -> bool {
    !heap.killed.load(Ordering::Relaxed).is_null()
}

/// Releases the trees other threads killed in `heap`'s pages; `heap` is the
/// calling thread's. One load when there are none.
#[inline(always)]
pub fn drain(heap: &Heap) {
    if !heap.killed.load(Ordering::Relaxed).is_null() {
        drain_pages(heap);
    }
}

#[cold]
#[inline(never)]
fn drain_pages(heap: &Heap) {
    let mut next = heap.killed.swap(ptr::null_mut(), Ordering::Acquire) as *const Page;
    // SAFETY: pushed pages are descriptors of this heap's segments, mapped
    // for good.
    while let Some(page) = unsafe { next.as_ref() } {
        next = page.killed_next.load(Ordering::Relaxed);
        page.killed_pending.store(false, Ordering::SeqCst);
        // SAFETY: a page descriptor lies in its segment's first unit.
        let segment = unsafe { Segment::of(page as *const Page as usize) };
        let index = segment.index_of(page);
        for word in 0..KILLED_WORDS {
            let mut bits = segment.take_killed(index, word);
            while bits != 0 {
                let slot = word * usize::BITS as usize + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                release(heap, page, slot);
            }
        }
    }
}

/// Releases slot `slot` of `page` if it holds a root or face that is still
/// killed, or takes the bytes of a root another thread moved off the counts:
/// a bit may be stale (the owner freed the root first, or the page holds
/// something else now).
fn release(heap: &Heap, page: &'static Page, slot: usize) {
    if page.kind() != Kind::Root {
        return;
    }
    let addr = page.base() as usize + slot * page.slot_size();
    if !page.was_handed_out(addr) {
        return;
    }
    // SAFETY: a handed-out slot of a root page of this heap.
    let root = unsafe { Root::at(addr) };
    match kind(root.state()) {
        KILLED | KILLED_MOVED => {
            free::free_tree(heap, page, root);
        }
        KILLED_FACE => free::free_face(heap, page, root),
        // Another thread moved the root to a face: its bytes leave the
        // counts (a root already counted off has size 0).
        MOVED => free::root_moved(heap, root),
        _ => {}
    }
}
