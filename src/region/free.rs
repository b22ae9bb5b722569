//! Freeing a tree (`MAPIFreeBuffer`): the root's state moves to the next
//! generation (every child and the parent cache stop matching at once), its
//! chunks go back chunk by chunk with their start bits cleared, then its
//! slot. A live root of another thread's is killed for its owner to
//! release (`remote`). A child, or anything that is not a live root, is
//! left alone.

use super::chunk::Chunk;
use super::heap::{Heap, LARGE};
use super::page::{Kind, Page};
use super::root::{kind, Root, KILLED_MOVED};
use super::segment::Segment;
use super::{remote, thread, track, validate};
use crate::registry::NotARoot;

/// Frees the root at `addr` and its children; returns how many blocks.
#[inline(always)]
pub fn free_root(addr: usize) -> Result<usize, NotARoot> {
    let heap = match thread::current() {
        Some(heap) => heap,
        None => return not_ours(None, addr),
    };
    remote::drain(heap);
    match validate::root(heap, addr) {
        Some((page, root)) if root.first().is_null() => {
            free_root_alone(heap, page, root);
            Ok(1)
        }
        Some((page, root)) => Ok(free_tree(heap, page, root)),
        None => not_ours(Some(heap), addr),
    }
}

/// Not a live root of the calling thread's: another thread's is killed
/// (its blocks are counted when its owner releases them: 1 here), and a
/// face (see `root`) is freed with its tree.
#[cold]
#[inline(never)]
fn not_ours(heap: Option<&Heap>, addr: usize) -> Result<usize, NotARoot> {
    if let Some(freed) = remote::kill(heap, addr) {
        return Ok(freed);
    }
    let own_child = heap.and_then(|heap| validate::child(heap, addr)).is_some();
    if own_child || validate::any_child(addr).is_some() {
        Err(NotARoot::Child)
    } else {
        Err(NotARoot::Unknown)
    }
}

/// Frees a root whose children are gone or moved to another root.
#[inline(always)]
pub fn free_root_alone(heap: &Heap, page: &'static Page, root: &Root) {
    root.end();
    root_dropped(heap, page, root);
}

/// A root of `heap`'s with no children, whose life the caller ended, is
/// given back.
#[inline(always)]
pub fn root_dropped(heap: &Heap, page: &'static Page, root: &Root) {
    heap.counts.tree_freed(0, root.size() as u64);
    if track::enabled() {
        return tracked_release(heap, page, root);
    }
    release_now(heap, page, root as *const Root as *mut u8);
}

/// A root of `heap`'s moved to a face (see `root`): its bytes are the
/// face's now, its slot stays as its tree's header. By the mover when it
/// is the owner, else by the owner when it drains the mover's notice
/// (`remote`); once, as the size is cleared.
pub fn root_moved(heap: &Heap, root: &Root) {
    heap.counts.root_moved(root.size() as u64);
    root.clear_size();
    heap.discard_moved(root as *const Root as usize);
}

/// Releases a face of `heap`'s (see `root`) that is dead (killed) or being
/// replaced by the caller; its tree is not touched.
pub fn free_face(heap: &Heap, page: &'static Page, face: &Root) {
    face.end();
    heap.counts.face_freed(face.size() as u64);
    if track::enabled() {
        return tracked_release(heap, page, face);
    }
    release_now(heap, page, face as *const Root as *mut u8);
}

/// Frees a live or killed root of `heap`'s (a killed moved tree's too)
/// and its chunks.
#[cold]
#[inline(never)]
pub fn free_tree(heap: &Heap, page: &'static Page, root: &Root) -> usize {
    #[cfg(test)]
    super::park::here();
    // A moved tree's root bytes were freed for the tools at the move.
    let moved = kind(root.state()) == KILLED_MOVED;
    root.end();
    // Asked once: a tree can have many chunks.
    let tracked = track::enabled();
    let (mut children, mut bytes) = (0u64, root.size() as u64);
    let mut next = root.first();
    // SAFETY: a live tree's chunks are live chunk slots of this heap; each
    // is read before it is given back.
    while let Some(chunk) = unsafe { next.as_ref() } {
        next = chunk.next();
        children += chunk.count() as u64;
        bytes += chunk.bytes() as u64;
        if tracked {
            tracked_free_chunk(heap, chunk);
        } else {
            untracked_free_chunk(heap, chunk);
        }
    }
    heap.counts.tree_freed(children, bytes);
    if tracked && moved {
        tracked_hold(heap, page, root as *const Root as *mut u8);
    } else if tracked {
        tracked_release(heap, page, root);
    } else {
        release_now(heap, page, root as *const Root as *mut u8);
    }
    1 + children as usize
}

/// Frees a chunk and its children for good: start bits cleared, slot
/// given back (held back from reuse while a tool watches).
pub fn free_chunk(heap: &Heap, chunk: &Chunk) {
    if track::enabled() {
        return tracked_free_chunk(heap, chunk);
    }
    untracked_free_chunk(heap, chunk)
}

#[inline(always)]
fn untracked_free_chunk(heap: &Heap, chunk: &Chunk) {
    let start = chunk.children_start();
    // SAFETY: the chunk is ours, in its segment's first unit.
    let segment = unsafe { Segment::of(start) };
    segment.clear_starts(start, (chunk.used_end() - start) >> super::GRANULE_SHIFT);
    release_now(heap, segment.page_of(start), chunk as *const Chunk as *mut u8);
}

/// `free_chunk` with a tool watching: each child is freed for the tool
/// (before its start bit is cleared), and the chunk held back from reuse.
#[cold]
#[inline(never)]
fn tracked_free_chunk(heap: &Heap, chunk: &Chunk) {
    let start = chunk.children_start();
    // SAFETY: the chunk is ours, in its segment's first unit.
    let segment = unsafe { Segment::of(start) };
    let page = segment.page_of(start);
    let slot = chunk as *const Chunk as *mut u8;
    tracked_children_freed(segment, start, chunk.used_end(), slot as usize + page.slot_size());
    segment.clear_starts(start, (chunk.used_end() - start) >> super::GRANULE_SHIFT);
    tracked_hold(heap, page, slot);
}

/// Tells the tool a root is freed, and holds its slot back from reuse.
#[cold]
#[inline(never)]
fn tracked_release(heap: &Heap, page: &'static Page, root: &Root) {
    track::block_freed(root.client(), root.size() as usize);
    tracked_hold(heap, page, root as *const Root as *mut u8);
}

/// Tells the tool the children of a chunk are freed: each start bit from
/// `start` to the fill mark `used_end` is one (a chunk of one big child has
/// one, and its fill mark right after it); `slot_end` ends the chunk.
#[cold]
#[inline(never)]
fn tracked_children_freed(segment: &Segment, start: usize, used_end: usize, slot_end: usize) {
    let mut next = Some(start);
    let starts = core::iter::from_fn(|| {
        let child = next?;
        let after = segment.next_start(child, used_end);
        next = if after < used_end { Some(after) } else { None };
        Some(child)
    });
    track::children_freed(starts, start, slot_end);
}

/// Holds a dead slot in the heap's quarantine; releases what it lets go.
#[cold]
#[inline(never)]
fn tracked_hold(heap: &Heap, page: &'static Page, slot: *mut u8) {
    let release = |old: *mut u8| {
        // SAFETY: a held slot lies in a published segment of this heap.
        let page = unsafe { Segment::of(old as usize) }.page_of(old as usize);
        release_now(heap, page, old)
    };
    // SAFETY: a dead slot of this heap's, handed out and not given back;
    // its header stays accessible to the tools (`track`).
    unsafe { heap.quarantine.hold(slot, page.slot_size(), release) }
}

/// Gives back a slot of `page`, or the span of a large block.
#[inline(always)]
fn release_now(heap: &Heap, page: &'static Page, slot: *mut u8) {
    if page.class() == LARGE {
        release_large(heap, page, slot);
    } else {
        // SAFETY: a slot of this class page, handed out and now dead.
        unsafe { heap.free_slot(page, slot) }
    }
}

/// Gives back a large block's span. The OS may zero it, and with it a
/// root's header: a root's state is written again, so the slot's next root
/// is a later generation (a kill or a chunk that validated the old one must
/// never match it).
#[inline(never)]
fn release_large(heap: &Heap, page: &'static Page, slot: *mut u8) {
    if page.kind() != Kind::Root {
        return heap.free_large(page);
    }
    // SAFETY: the dead root slot at the start of this large span.
    let root = unsafe { Root::at(slot as usize) };
    let state = root.state();
    heap.free_large(page);
    root.restore(state);
}
