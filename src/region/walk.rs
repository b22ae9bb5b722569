//! Walking every live root of every heap, for the `leaks` report
//! (`MAPI32_DEBUG=leaks`, SPEC §4) at process exit.
//!
//! Metadata is read with plain loads, so a heap is only walked by its
//! holder: the calling thread's own, and every orphan, claimed for the walk
//! and given back after (`Heap::try_claim`'s rule). A heap another thread
//! still owns may be changing under the walk and is left out, counted.

use super::chunk::Chunks;
use super::heap::Heap;
use super::page::Kind;
use super::root::{self, Root};
use super::{thread, validate};

/// Calls `visit` with the address, requested size and tree bytes (its own
/// and its children's requested sizes) of every live root of the heaps
/// that can be walked; returns how many heaps were left out.
pub fn for_each_root(mut visit: impl FnMut(usize, usize, u64)) -> usize {
    let mine = thread::current();
    let mut left_out = 0;
    for heap in thread::heaps() {
        if mine.map_or(false, |mine| core::ptr::eq(mine, heap)) {
            walk_heap(heap, &mut visit);
        } else if heap.try_claim() {
            walk_heap(heap, &mut visit);
            heap.give_up();
        } else {
            left_out += 1;
        }
    }
    left_out
}

/// Every live root of `heap`, which the caller holds.
pub(super) fn walk_heap(heap: &Heap, visit: &mut impl FnMut(usize, usize, u64)) {
    for segment in heap.segments() {
        for page in segment.spans().filter(|page| page.kind() == Kind::Root) {
            let mut slot = page.base() as usize;
            while page.was_handed_out(slot) {
                // SAFETY: a slot of a root page of this heap that was handed
                // out: its header was written by the heap, which we hold.
                let root = unsafe { Root::at(slot) };
                match root::kind(root.state()) {
                    root::LIVE => visit(root.client(), root.size() as usize, tree_bytes(root)),
                    root::FACE => visit(root.client(), root.size() as usize, face_tree_bytes(heap, root)),
                    // A moved tree is reported at its face.
                    _ => {}
                }
                slot += page.slot_size();
            }
        }
    }
}

/// A face's bytes and its tree's children's, when the tree is `heap`'s
/// (held); another heap's tree is not read.
fn face_tree_bytes(heap: &Heap, face: &Root) -> u64 {
    let (tree_slot, tag) = face.face_tree();
    match validate::any_slot(tree_slot + root::ROOT_HEADER) {
        Some(tree)
            if root::kind(tree.state) == root::MOVED
                && root::face_tag(tree.state) == tag
                && core::ptr::eq(tree.segment.owner(), heap) =>
        {
            face.size() as u64 + children_bytes(tree.root)
        }
        _ => face.size() as u64,
    }
}

fn tree_bytes(root: &Root) -> u64 {
    (root.size() as u64).wrapping_add(children_bytes(root))
}

/// What a live or moved tree's own chunks hold.
fn children_bytes(root: &Root) -> u64 {
    // SAFETY: a live tree's chunks are live chunk slots of its heap, held.
    unsafe { Chunks::from(root.first()) }.fold(0u64, |bytes, chunk| bytes.wrapping_add(chunk.bytes() as u64))
}
