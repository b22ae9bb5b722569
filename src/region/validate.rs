//! Is this address a live root, a live child, or nothing of ours? Decided
//! from the library's own tables before anything at the address is read
//! (SPEC §2): the segment map, the segment's owner, the page descriptor,
//! the slot by reciprocal, then the root's header, or the child's start bit,
//! chunk header and tree state. Any value is accepted: 0, odd, interior,
//! unmapped, the C heap's, the kernel's.
//!
//! Only the calling heap's own segments are looked into (see `region`):
//! another thread's block is, in this step, nothing of ours.

use super::chunk::Chunk;
use super::heap::Heap;
use super::page::{Kind, Page};
use super::root::{Root, ROOT_HEADER};
use super::segmap;
use super::segment::Segment;
use super::GRANULE;

/// `addr`'s segment, if it is one of `heap`'s and `addr` could start a block.
#[inline(always)]
fn own_segment(heap: &Heap, addr: usize) -> Option<&'static Segment> {
    if addr % GRANULE != 0 || !segmap::contains(addr) {
        return None;
    }
    // SAFETY: the segment map says `addr`'s unit starts a published segment.
    let segment = unsafe { Segment::of(addr) };
    if !core::ptr::eq(segment.owner(), heap) {
        return None; // another thread's: not built in this step
    }
    Some(segment)
}

/// The live root whose client address is `addr`, with its page.
#[inline(always)]
pub fn root(heap: &Heap, addr: usize) -> Option<(&'static Page, &'static Root)> {
    let segment = own_segment(heap, addr)?;
    let page = segment.page_of(addr);
    if page.kind() != Kind::Root {
        return None;
    }
    let slot = page.slot_of(addr);
    if slot + ROOT_HEADER != addr || !page.was_handed_out(slot) {
        return None;
    }
    // SAFETY: a slot of a root page of ours that was handed out: its header
    // is mapped and was written by this heap.
    let root = unsafe { Root::at(slot) };
    if root.is_live() {
        Some((page, root))
    } else {
        None
    }
}

/// The tree of the live child at `addr`, with the chunk holding it.
pub fn child(heap: &Heap, addr: usize) -> Option<(&'static Chunk, &'static Root)> {
    let segment = own_segment(heap, addr)?;
    let page = segment.page_of(addr);
    if page.kind() != Kind::Chunk || !segment.is_start(addr) {
        return None;
    }
    // SAFETY: a start bit is only set inside a live chunk of this heap, and
    // is cleared before the chunk is freed.
    let chunk = unsafe { Chunk::at(page.slot_of(addr)) };
    Some((chunk, chunk.live_tree()?))
}

/// The tree of `addr` when it is a live root or a live child.
#[inline]
pub fn tree(heap: &Heap, addr: usize) -> Option<&'static Root> {
    match root(heap, addr) {
        Some((_, root)) => Some(root),
        None => child(heap, addr).map(|(_, tree)| tree),
    }
}
