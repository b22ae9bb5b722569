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

use super::chunk::Chunk;
use super::class::root_class_size;
use super::heap::{Heap, LARGE};
use super::page::{Kind, Page};
use super::root::{face_tag, generation, kind, Root, FACE, KILLED, KILLED_FACE, KILLED_MOVED, LIVE, MOVED};
use super::segment::{Segment, KILLED_WORDS};
use super::validate::{self, AnyRoot};
use super::{free, track, PAGE_SIZE};
use core::ptr;
use core::sync::atomic::{fence, Ordering};

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
    // Told before the face is released or handed over, as a killed root
    // is (see `kill_found`).
    if track::enabled() {
        track::bytes_moved_out(addr, face.face.root.size() as usize);
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
                // The tree's pool, where it was made (`track`); its root's
                // bytes were told of at the move.
                if track::enabled() {
                    track::moved_tree_freed(tree.root.client());
                }
                match owned_by(heap, &tree) {
                    // The tree's own blocks are counted from its root.
                    Some(heap) => freed = free::free_killed_tree(heap, tree.segment.page(tree.page), tree.root) - 1,
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
/// found from the page's class alone, as in `validate::any_slot`.
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
    for killed in KilledPages::from(heap.killed.load(Ordering::Acquire)) {
        for word in 0..KILLED_WORDS {
            let bits = killed.segment.killed_bits(killed.index, word);
            for tree in slots(word, bits).filter_map(|slot| killed_tree(killed.segment, killed.index, slot)) {
                total.roots += tree.roots;
                total.children += tree.children;
                total.bytes += tree.bytes;
            }
        }
    }
    total
}

/// A page on a heap's stack of pages with killed roots, with where its
/// bits are.
struct Killed {
    page: &'static Page,
    segment: &'static Segment,
    index: usize,
}

/// The pages of a killed-pages stack, from its top down: the one walk the
/// drain (which took the stack) and `unreleased` (which reads it in place)
/// share.
struct KilledPages {
    next: *const Page,
}

impl KilledPages {
    fn from(top: *mut Page) -> KilledPages {
        KilledPages { next: top }
    }
}

impl Iterator for KilledPages {
    type Item = Killed;

    fn next(&mut self) -> Option<Killed> {
        // SAFETY: pushed pages are descriptors of one heap's segments,
        // mapped for good (a descriptor is never freed while the library is
        // loaded), so any link read from the stack leads to one.
        let page: &'static Page = unsafe { self.next.as_ref() }?;
        self.next = page.killed_next.load(Ordering::Relaxed);
        // SAFETY: a page descriptor lies in its segment's first unit.
        let segment = unsafe { Segment::of(page as *const Page as usize) };
        Some(Killed { page, segment, index: segment.index_of(page) })
    }
}

/// The slots whose bits are set in `bits`, word `word` of a page's bits.
fn slots(word: usize, mut bits: usize) -> impl Iterator<Item = usize> {
    core::iter::from_fn(move || {
        if bits == 0 {
            return None;
        }
        let slot = word * usize::BITS as usize + bits.trailing_zeros() as usize;
        bits &= bits - 1;
        Some(slot)
    })
}

/// What slot `slot` of page `index` holds that its owner has yet to take
/// off its counts, if it was handed over: a killed tree (moved or not:
/// a moved one's root bytes are 0 once its owner took them off), a killed
/// face's bytes (a face is no root in the counts), or the bytes of a root
/// another thread moved to a face (0 once taken off).
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
    // for good, and a root header's place (`validate::any_slot`).
    let root = unsafe { Root::at(segment.page_start(index) + offset) };
    let state = root.state_acquire();
    let bytes = root.size() as u64;
    let (mut tree, mut next) = match kind(state) {
        KILLED | KILLED_MOVED => (Unreleased { roots: 1, children: 0, bytes }, root.first() as usize),
        KILLED_FACE | MOVED => (Unreleased { roots: 0, children: 0, bytes }, 0),
        _ => return None,
    };
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
    if chunk.tagged(tree, generation(state)) {
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
    for killed in KilledPages::from(heap.killed.swap(ptr::null_mut(), Ordering::Acquire)) {
        killed.page.killed_pending.store(false, Ordering::SeqCst);
        for word in 0..KILLED_WORDS {
            for slot in slots(word, killed.segment.take_killed(killed.index, word)) {
                release(heap, killed.page, slot);
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
#[cfg(unix)]
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
            free::free_killed_tree(heap, page, root);
        }
        KILLED_FACE => free::free_face(heap, page, root),
        // Another thread moved the root to a face: its bytes leave the
        // counts (a root already counted off has size 0).
        MOVED => free::root_moved(heap, root),
        _ => {}
    }
}
