//! Freeing a tree (`MAPIFreeBuffer`): the root's state moves to the next
//! generation (every child and the parent cache stop matching at once), its
//! chunks go back chunk by chunk with their start bits cleared, then its
//! slot. A live root of another thread's is killed for its owner to
//! release (`remote`); a tool watching (`track`) is told of the tree by
//! whichever thread ends it (memcheck of the children too; ASan of those
//! when the owner releases them). A child, or anything that is not a live
//! root, is left alone.

use super::chunk::{Chunk, Chunks};
use super::heap::{Heap, LARGE};
use super::page::{Kind, Page};
use super::root::Root;
use super::segment::Segment;
use super::{remote, thread, track, validate};

/// Why `MAPIFreeBuffer` left a pointer alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotARoot {
    /// A live child: it is freed with its root.
    Child,
    /// Not a live block of this library: already freed, interior or foreign.
    Unknown,
}

/// Frees the root at `addr` and its children; returns how many blocks.
#[inline(always)]
pub fn free_root(addr: usize) -> Result<usize, NotARoot> {
    let heap = match thread::entered() {
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

/// What `quick_free` did.
#[derive(Clone, Copy, Debug)]
pub enum QuickFree {
    /// The root is freed, and there is nothing left to do.
    Done,
    /// The root was freed or is to be freed: `Rest::finish` does the rest.
    Rest(Rest),
    /// Anything else, nothing changed: for `free_root`.
    Miss,
}

/// The rest of a free `quick_free` started (`QuickFree::Rest`); the heap
/// stays busy until it is done (`thread::Call` has why).
#[derive(Clone, Copy, Debug)]
pub enum Rest {
    /// A childless root's slot went back to a page that was full: it goes
    /// back on its queue.
    Requeue(&'static Heap, &'static Page),
    /// A live root of the caller's with children: the whole tree to free.
    Tree(&'static Heap, &'static Page, &'static Root),
}

impl Rest {
    pub fn finish(self) {
        match self {
            Rest::Requeue(heap, page) => {
                heap.requeue(page);
                heap.leave();
            }
            Rest::Tree(heap, page, root) => {
                free_tree(heap, page, root);
                heap.leave();
            }
        }
    }
}

/// `MAPIFreeBuffer`'s common case alone: a live root of the calling
/// thread's, with nothing killed by other threads to release first and no
/// tool watching. A childless root in a class page is freed here, with no
/// call; the rest of the work, if any, is left to `Rest::finish`, and
/// anything else to `free_root`. Kept apart so that the export can try it
/// first as a leaf and pass the rest on by tail calls.
///
/// Being no entry point with a `thread::Call`, it marks the heap busy
/// itself, once it knows it will change it and before the first store
/// (`Heap::enter`), and idle when done, or leaves that to `Rest::finish`:
/// a child forked meanwhile must not take the heap for idle (`fork`). A
/// miss has stored nothing, and leaves the heap as it found it.
#[inline(always)]
pub fn quick_free(addr: usize) -> QuickFree {
    if track::enabled() {
        return QuickFree::Miss;
    }
    let heap = match thread::current() {
        Some(heap) if !remote::has_kills(heap) => heap,
        _ => return QuickFree::Miss,
    };
    let (page, root) = match validate::root(heap, addr) {
        Some(found) => found,
        None => return QuickFree::Miss,
    };
    let childless = root.first().is_null();
    if childless && page.class() == LARGE {
        return QuickFree::Miss;
    }
    heap.enter();
    if !childless {
        return QuickFree::Rest(Rest::Tree(heap, page, root));
    }
    root.end();
    heap.counts.root_freed(root.size());
    // SAFETY: a slot of this class page, handed out and now dead.
    if unsafe { page.free(root as *const Root as *mut u8) } {
        return QuickFree::Rest(Rest::Requeue(heap, page));
    }
    heap.leave();
    QuickFree::Done
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
    if track::enabled() {
        return tracked_free_root_alone(heap, page, root);
    }
    root.end();
    heap.counts.root_freed(root.size());
    release_now(heap, page, root as *const Root as *mut u8);
}

/// `free_root_alone` with a tool watching: nothing to do if another thread
/// killed the root first (its drain releases it, `free_killed_tree`).
#[cold]
#[inline(never)]
fn tracked_free_root_alone(heap: &Heap, page: &'static Page, root: &Root) {
    if root.end_unless_killed() {
        root_dropped(heap, page, root);
    }
}

/// A root of `heap`'s with no children, whose life the caller ended, is
/// given back (and the tool told, if one watches).
#[inline(always)]
pub fn root_dropped(heap: &Heap, page: &'static Page, root: &Root) {
    heap.counts.root_freed(root.size());
    let slot = root as *const Root as *mut u8;
    if track::enabled() {
        track::root_freed(root.client(), root.size() as usize);
        return tracked_hold(heap, page, slot);
    }
    release_now(heap, page, slot);
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
/// replaced by the caller; its tree is not touched. Whoever ended it told
/// the tool, if one watches.
pub fn free_face(heap: &Heap, page: &'static Page, face: &Root) {
    face.end();
    heap.counts.face_freed(face.size() as u64);
    let slot = face as *const Root as *mut u8;
    if track::enabled() {
        return tracked_hold(heap, page, slot);
    }
    release_now(heap, page, slot);
}

/// Frees a live root of `heap`'s and its chunks.
#[cold]
#[inline(never)]
pub fn free_tree(heap: &Heap, page: &'static Page, root: &Root) -> usize {
    #[cfg(test)]
    super::park::here();
    // Asked once: a tree can have many chunks.
    let tracked = track::enabled();
    if !tracked {
        root.end();
        return release_tree(heap, page, root, false, None);
    }
    if !root.end_unless_killed() {
        // Killed by another thread meanwhile: the tree is its drain's now.
        // (Or moved: a racing double free lost to a reallocation, and the
        // tree lives on in its face.)
        return 1;
    }
    // Its own children are freed from the tree's pool one by one, so that
    // memcheck keeps where each was made and freed; then the pool goes,
    // with the guests other threads made.
    let blocks = release_tree(heap, page, root, true, Some(root.client()));
    track::root_freed(root.client(), root.size() as usize);
    blocks
}

/// Releases a root of `heap`'s that another thread killed (`remote`), a
/// moved tree's too, and its chunks. That thread told the tool, if one
/// watches, of the tree.
pub fn free_killed_tree(heap: &Heap, page: &'static Page, root: &Root) -> usize {
    root.end();
    release_tree(heap, page, root, track::enabled(), None)
}

/// Gives back the chunks and the slot of `root`, whose life has ended. If
/// `tracked`, the tool is told of the children: through `pool`, the tree's
/// pool if it is still there (`track::children_freed`). Inlined in both
/// callers: as a call of its own it cost a tree's free 16 instructions.
#[inline(always)]
fn release_tree(heap: &Heap, page: &'static Page, root: &Root, tracked: bool, pool: Option<usize>) -> usize {
    let (mut children, mut bytes) = (0u64, root.size() as u64);
    // SAFETY: the tree's chunks are live chunk slots of `heap`, which the
    // caller holds; each is given back only once yielded.
    for chunk in unsafe { Chunks::from(root.first()) } {
        children += chunk.count() as u64;
        bytes += chunk.bytes() as u64;
        if tracked {
            tracked_free_chunk(heap, chunk, pool);
        } else {
            untracked_free_chunk(heap, chunk);
        }
    }
    heap.counts.tree_freed(children, bytes);
    let slot = root as *const Root as *mut u8;
    if tracked {
        tracked_hold(heap, page, slot);
    } else {
        release_now(heap, page, slot);
    }
    1 + children as usize
}

/// Frees a chunk of a dead tree and its children for good: start bits
/// cleared, slot given back (held back from reuse while a tool watches,
/// which was told of the children at the tree's death).
pub fn free_chunk(heap: &Heap, chunk: &Chunk) {
    if track::enabled() {
        return tracked_free_chunk(heap, chunk, None);
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
/// (from `pool`, the tree's pool if it is still there: before its start
/// bit is cleared), and the chunk held back from reuse.
#[cold]
#[inline(never)]
fn tracked_free_chunk(heap: &Heap, chunk: &Chunk, pool: Option<usize>) {
    let start = chunk.children_start();
    // SAFETY: the chunk is ours, in its segment's first unit.
    let segment = unsafe { Segment::of(start) };
    let page = segment.page_of(start);
    let slot = chunk as *const Chunk as *mut u8;
    tracked_children_freed(segment, pool, start, chunk.used_end(), slot as usize + page.slot_size());
    segment.clear_starts(start, (chunk.used_end() - start) >> super::GRANULE_SHIFT);
    tracked_hold(heap, page, slot);
}

/// Tells the tool the children of a chunk are freed: each start bit from
/// `start` to the fill mark `used_end` is one (a chunk of one big child has
/// one, and its fill mark right after it); `slot_end` ends the chunk.
#[cold]
#[inline(never)]
fn tracked_children_freed(segment: &Segment, pool: Option<usize>, start: usize, used_end: usize, slot_end: usize) {
    let mut next = Some(start);
    let starts = core::iter::from_fn(|| {
        let child = next?;
        let after = segment.next_start(child, used_end);
        next = if after < used_end { Some(after) } else { None };
        Some(child)
    });
    track::children_freed(pool, starts, start, slot_end);
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
