//! A root freed by a thread other than its owner's: killed at once, released
//! by its owner later, with no call of either thread ever waiting for the
//! other (SPEC §3).
//!
//! The freeing thread validates the root from the tables any thread may
//! read (`validate::any_root`), then swaps its state word from the exact
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
//! owner's counters. `mapi32_stats` left it out from the moment the kill
//! returned: it subtracts what killed, unreleased trees hold from their
//! owner's share (`unreleased`), reading only, so neither thread waits.
//! A heap whose thread exits drains them then; kills that come later,
//! into the orphan, are drained by its adopter, or by `stats`, as the
//! owner (`thread::catch_up`).
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
//! The bits and the `pending` flag are ordered SeqCst on both sides: a
//! killer sets its bit and then tests-and-sets the flag; the owner clears
//! the flag and then takes the bits. Either the killer sees the flag clear
//! and pushes the page again, or the owner's take sees the bit.

use super::chunk::Chunk;
use super::class::root_class_size;
use super::heap::{Heap, LARGE};
use super::page::{Kind, Page};
use super::root::{self, generation, Root, CHUNK, KIND_MASK};
use super::segment::{Segment, KILLED_WORDS};
use super::{free, track, validate, PAGE_SIZE};
use core::ptr;
use core::sync::atomic::{fence, Ordering};

/// Frees the root at `addr` if it is a live root of any thread's, for the
/// owner to release. False if it is not (any more) a live root.
#[cold]
#[inline(never)]
pub fn kill(addr: usize) -> bool {
    if addr % super::GRANULE != 0 || !super::segmap::contains(addr) {
        return false;
    }
    // SAFETY: the segment map says `addr`'s unit starts a published segment.
    let segment = unsafe { Segment::of(addr) };
    segment.kill_under_way(true);
    let killed = kill_in(addr);
    segment.kill_under_way(false);
    killed
}

fn kill_in(addr: usize) -> bool {
    let found = match validate::any_root(addr) {
        Some(found) => found,
        None => return false,
    };
    if !found.root.kill(found.state) {
        return false;
    }
    // The tree is dead from here: a tool watching is told now, so a read of
    // it once this free returns is reported, while its owner may sleep
    // (memcheck learns of the children too, through the tree's pool; ASan
    // of those when the owner releases their chunks, which only it may
    // read). Before the killed bit: the owner releases the slot (which may
    // then be reused and described to the tool again) only once its drain
    // takes that bit, and a free of its own that lost to this kill leaves
    // the tree to that drain (`Root::end_unless_killed`).
    if track::enabled() {
        track::root_freed(found.root.client(), found.root.size() as usize);
    }
    let page = found.segment.page(found.page);
    found.segment.mark_killed(found.page, found.slot);
    if !page.killed_pending.swap(true, Ordering::SeqCst) {
        // SAFETY: a published segment's owner is a heap, never freed.
        if let Some(owner) = unsafe { found.segment.owner().as_ref() } {
            push(owner, page);
        }
    }
    true
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

/// Roots, children and bytes of trees killed and not yet released.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unreleased {
    pub roots: u64,
    pub children: u64,
    pub bytes: u64,
}

/// What the trees other threads killed in `heap`, and its owner has not
/// released yet, hold: still in the owner's counts, but freed for
/// `mapi32_stats` the moment their free returned. Any thread may ask,
/// whatever the owner is doing; nothing is written.
///
/// The killed stack and bits say where to look. A slot counts while its
/// root is still killed (a bit whose kill lost to the owner's own free
/// finds the slot free or in a new life), with each chunk on its list
/// that is tagged with this tree and life: a child the owner made in a
/// call racing the kill is counted once that call is over. The slot is
/// found from the page's class alone, as in `validate::any_root`.
///
/// Racing the owner's own drain, a walk may count a tree the owner just
/// released, or miss one it just took off the stack: the owner is in a
/// call then, and its counts move anyway. A chunk whose tag does not name
/// the tree ends the walk, and a tree whose state moved on during it is
/// not counted, so a link rewritten meanwhile never leads anywhere but to
/// a slot of ours. A walk ends unless other threads keep killing trees in
/// the heap as it goes (each page it revisits was pushed again).
pub fn unreleased(heap: &Heap) -> Unreleased {
    let mut total = Unreleased::default();
    let mut next = heap.killed.load(Ordering::Acquire) as *const Page;
    // SAFETY: pushed pages are descriptors of `heap`'s segments, mapped for
    // good.
    while let Some(page) = unsafe { next.as_ref() } {
        next = page.killed_next.load(Ordering::Relaxed);
        // SAFETY: a page descriptor lies in its segment's first unit.
        let segment = unsafe { Segment::of(page as *const Page as usize) };
        let index = segment.index_of(page);
        for word in 0..KILLED_WORDS {
            let mut bits = segment.killed_bits(index, word);
            while bits != 0 {
                let slot = word * usize::BITS as usize + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if let Some(tree) = killed_tree(segment, index, slot) {
                    total.roots += 1;
                    total.children += tree.children;
                    total.bytes += tree.bytes;
                }
            }
        }
    }
    total
}

/// The killed tree in slot `slot` of page `index`, if there is one.
fn killed_tree(segment: &Segment, index: usize, slot: usize) -> Option<Unreleased> {
    let layout = segment.page(index).layout();
    if layout.kind != Kind::Root || index == 0 {
        return None;
    }
    let offset = if layout.class == LARGE {
        0
    } else {
        let size = root_class_size(layout.class);
        if (slot + 1) * size > PAGE_SIZE {
            return None;
        }
        slot * size
    };
    // SAFETY: a slot start in a root page of a published segment: mapped
    // for good, and a root header's place (`validate::any_root`).
    let root = unsafe { Root::at(segment.page_start(index) + offset) };
    let state = root.state_acquire();
    if !root::is_killed(state) {
        return None;
    }
    let mut tree = Unreleased { roots: 1, children: 0, bytes: root.size() as u64 };
    let mut next = root.first() as usize;
    while next != 0 {
        let chunk = chunk_of(next, root, state)?;
        tree.children += chunk.count() as u64;
        tree.bytes += chunk.bytes() as u64;
        next = chunk.next() as usize;
    }
    // What was read counts only if the tree was still unreleased after it.
    fence(Ordering::Acquire);
    if root.state() == state {
        Some(tree)
    } else {
        None
    }
}

/// The chunk at `addr` if it is one of `tree`'s in the life `state` names.
fn chunk_of(addr: usize, tree: &Root, state: u32) -> Option<&'static Chunk> {
    let chunk = validate::any_chunk(addr)?;
    let tagged = chunk.state() & KIND_MASK == CHUNK && generation(chunk.state()) == generation(state);
    if tagged && ptr::eq(chunk.tree(), tree) {
        Some(chunk)
    } else {
        None
    }
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

/// In a forked child, for `heap`, which the caller holds and which was
/// idle at the fork (`fork`): finishes what the kills that other threads
/// had under way at the fork left undone, those threads being gone. A
/// kill stopped after its swap but before its push left its page flagged
/// and off the stack, so no later kill in that page would push it: pushed
/// now, once the stack is drained (a page on the stack is flagged too).
/// And the segments' counts of kills under way go to zero, or the owner
/// would never change a root page's class again. A kill stopped between
/// its swap and its bit leaves that one tree killed and kept.
pub fn recover_after_fork(heap: &Heap) {
    drain(heap);
    for segment in heap.segments() {
        segment.forget_kills();
        for index in 1..super::PAGES {
            let page = segment.page(index);
            if page.killed_pending.load(Ordering::Relaxed) {
                push(heap, page);
            }
        }
    }
    drain(heap);
}

/// Releases slot `slot` of `page` if it holds a root that is still killed:
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
    if root.is_killed() {
        free::free_killed_tree(heap, page, root);
    }
}
