//! Freeing a tree (`MAPIFreeBuffer`): the root's state moves to the next
//! generation (every child and the parent cache stop matching at once), its
//! chunks go back chunk by chunk with their start bits cleared, then its
//! slot. A live root of another thread's is killed for its owner to
//! release (`remote`). A child, or anything that is not a live root, is
//! left alone.

use super::chunk::Chunk;
use super::heap::{Heap, LARGE};
use super::page::Page;
use super::root::Root;
use super::segment::Segment;
use super::{remote, thread, validate};
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
/// (its blocks are counted when its owner releases them: 1 here).
#[cold]
#[inline(never)]
fn not_ours(heap: Option<&Heap>, addr: usize) -> Result<usize, NotARoot> {
    if remote::kill(addr) {
        return Ok(1);
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
    heap.counts.tree_freed(0, root.size() as u64);
    release_root(heap, page, root);
}

/// Frees a live or killed root of `heap`'s and its chunks.
#[cold]
#[inline(never)]
pub fn free_tree(heap: &Heap, page: &'static Page, root: &Root) -> usize {
    #[cfg(test)]
    super::park::here();
    root.end();
    let (mut children, mut bytes) = (0u64, root.size() as u64);
    let mut next = root.first();
    // SAFETY: a live tree's chunks are live chunk slots of this heap; each
    // is read before it is given back.
    while let Some(chunk) = unsafe { next.as_ref() } {
        next = chunk.next();
        children += chunk.count() as u64;
        bytes += chunk.bytes() as u64;
        free_chunk(heap, chunk);
    }
    heap.counts.tree_freed(children, bytes);
    release_root(heap, page, root);
    1 + children as usize
}

/// Gives back a dead root's slot. A large root's span may go back to the
/// OS, which zeroes its header: its state is written again, so the slot's
/// next root is a later generation (a kill or a chunk that validated the
/// old one must never match it).
#[inline(always)]
fn release_root(heap: &Heap, page: &'static Page, root: &Root) {
    if page.class() == LARGE {
        let state = root.state();
        heap.free_large(page);
        root.restore(state);
    } else {
        // SAFETY: a slot of this class page, handed out and now dead.
        unsafe { heap.free_slot(page, root as *const Root as *mut u8) }
    }
}

pub fn free_chunk(heap: &Heap, chunk: &Chunk) {
    let start = chunk.children_start();
    // SAFETY: the chunk is ours, in its segment's first unit.
    let segment = unsafe { Segment::of(start) };
    segment.clear_starts(start, (chunk.used_end() - start) >> super::GRANULE_SHIFT);
    release(heap, segment.page_of(start), chunk as *const Chunk as *mut u8);
}

/// Gives back a slot of `page`, or the span of a large block.
#[inline(always)]
fn release(heap: &Heap, page: &'static Page, slot: *mut u8) {
    if page.class() == LARGE {
        heap.free_large(page);
    } else {
        // SAFETY: a slot of this class page, handed out and now dead.
        unsafe { heap.free_slot(page, slot) }
    }
}
