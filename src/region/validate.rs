//! Is this address a live root, a live child, or nothing of ours? Decided
//! from the library's own tables before anything at the address is read
//! (SPEC §2): the segment map, the segment's owner, the page descriptor,
//! the slot by reciprocal, then the root's header, or the child's start bit,
//! chunk header and tree state. Any value is accepted: 0, odd, interior,
//! unmapped, the C heap's, the kernel's.
//!
//! The owner's paths (`root`, `child`, `tree`) look into the calling
//! heap's own segments with its own fields; `any_slot`, `any_face` and
//! `any_child` find a block of any thread's from the few words other
//! threads may read, for the cross-thread paths (`remote`, `guest`) and
//! the reallocated trees (`root`): a face is a live root whose tree is the
//! moved slot it names, a moved tree's children live while it is moved.

use super::chunk::{Chunk, CHUNK_HEADER};
use super::class::{chunk_class_size, root_class_size, root_reciprocal, slot_index, CHUNK_CLASSES};
use super::heap::Heap;
use super::heap::LARGE;
use super::page::{Kind, Page};
use super::root::{self, Root, ROOT_HEADER};
use super::segmap;
use super::segment::Segment;
use super::{GRANULE, PAGES, PAGE_SHIFT, PAGE_SIZE};

/// `addr`'s segment, if it is one of `heap`'s and `addr` could start a block.
#[inline(always)]
fn own_segment(heap: &Heap, addr: usize) -> Option<&'static Segment> {
    if addr % GRANULE != 0 || !segmap::contains(addr) {
        return None;
    }
    // SAFETY: the segment map says `addr`'s unit starts a published segment.
    let segment = unsafe { Segment::of(addr) };
    if !core::ptr::eq(segment.owner(), heap) {
        return None; // another thread's: `any_slot`, `any_child`
    }
    Some(segment)
}

/// The live root whose client address is `addr`, with its page.
#[inline(always)]
pub fn root(heap: &Heap, addr: usize) -> Option<(&'static Page, &'static Root)> {
    root_in(own_segment(heap, addr)?, addr)
}

#[inline(always)]
fn root_in(segment: &'static Segment, addr: usize) -> Option<(&'static Page, &'static Root)> {
    slot_in(segment, addr).filter(|(_, root)| root.is_live())
}

/// The header of the root slot of ours whose client address is `addr`, in
/// any state.
#[inline(always)]
fn slot_in(segment: &'static Segment, addr: usize) -> Option<(&'static Page, &'static Root)> {
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
    Some((page, unsafe { Root::at(slot) }))
}

/// The tree of `face`, a face of `heap`'s, when the tree is `heap`'s too
/// and alive: what the owner's paths need of a root it reallocated, from
/// its own tables (other threads' faces are `any_face`'s).
fn own_face_tree(heap: &Heap, face: &Root) -> Option<&'static Root> {
    let (tree_slot, tag) = face.face_tree();
    let client = tree_slot + ROOT_HEADER;
    let (_, tree) = slot_in(own_segment(heap, client)?, client)?;
    let state = tree.state();
    if root::kind(state) == root::MOVED && root::face_tag(state) == tag {
        Some(tree)
    } else {
        None
    }
}

/// The tree of the live child at `addr`, with the chunk holding it.
pub fn child(heap: &Heap, addr: usize) -> Option<(&'static Chunk, &'static Root)> {
    child_in(heap, own_segment(heap, addr)?, addr)
}

fn child_in(heap: &Heap, segment: &'static Segment, addr: usize) -> Option<(&'static Chunk, &'static Root)> {
    let page = segment.page_of(addr);
    if page.kind() != Kind::Chunk || !segment.is_start(addr) {
        return None;
    }
    // SAFETY: a start bit is only set inside a live chunk of this heap, and
    // is cleared before the chunk is freed.
    let chunk = unsafe { Chunk::at(page.slot_of(addr)) };
    let tree = chunk.live_tree()?;
    // A chunk of ours may hold children of another thread's tree (`guest`):
    // those the owner's paths must not touch.
    if is_own(heap, tree) {
        Some((chunk, tree))
    } else {
        None
    }
}

/// The tree of `addr` when it is a live root or a live child (the tests'
/// view; the owner's paths ask `parent`, which knows faces too).
#[cfg(test)]
pub fn tree(heap: &Heap, addr: usize) -> Option<&'static Root> {
    // Another thread's block is told once, by its segment.
    let segment = own_segment(heap, addr)?;
    match root_in(segment, addr) {
        Some((_, root)) => Some(root),
        None => child_in(heap, segment, addr).map(|(_, tree)| tree),
    }
}

/// A parent of the calling thread's: a live root or child (`tree`), or a
/// face whose tree is the thread's too (see `root`).
pub enum Parent {
    Tree(&'static Root),
    /// A face's tree: not to be remembered by the parent cache, which
    /// sees the tree's state only, while a face can end (reallocated
    /// again) with its tree alive.
    Face(&'static Root),
}

/// `tree`, and the faces of the caller's own trees, in one look.
pub fn parent(heap: &Heap, addr: usize) -> Option<Parent> {
    let segment = own_segment(heap, addr)?;
    // A root page holds no child: a slot there is all there is to find.
    if let Some((_, root)) = slot_in(segment, addr) {
        return match root::kind(root.state()) {
            root::LIVE => Some(Parent::Tree(root)),
            root::FACE => own_face_tree(heap, root).map(Parent::Face),
            _ => None,
        };
    }
    child_in(heap, segment, addr).map(|(_, tree)| Parent::Tree(tree))
}

/// A root slot anywhere, found from the tables any thread may read (see
/// `remote`): the segment, the index of its page, its slot's index in the
/// page, the header, and the state word read from it.
pub struct AnyRoot {
    pub segment: &'static Segment,
    pub page: usize,
    pub slot: usize,
    pub root: &'static Root,
    pub state: u32,
}

/// The root slot whose client address is `addr`, whoever owns it, in any
/// state: the segment, the index of its page, its slot's index in the page,
/// the header, and the state word read (Acquire).
///
/// Reads only the segment map, the page's `layout` word and the slot's
/// state word. The slot is found from the class alone, never from fields
/// an owner may be rewriting; a large root's header is its span's first
/// word, which starts a slot in whatever the span holds next. So the word
/// read is a header's, unless the owner gave the page another class since:
/// the callers that write it (`remote`, `alloc::move_root`) count
/// themselves in the segment's `kill_under_way` around the write, which
/// keeps the owner from doing that meanwhile.
pub fn any_slot(addr: usize) -> Option<AnyRoot> {
    if addr % GRANULE != 0 || !segmap::contains(addr) {
        return None;
    }
    // SAFETY: the segment map says `addr`'s unit starts a published segment.
    let segment = unsafe { Segment::of(addr) };
    let index = (addr >> PAGE_SHIFT) & (PAGES - 1);
    let layout = segment.page(index).layout();
    if layout.kind != Kind::Root || index == 0 {
        return None;
    }
    let base = addr & !(PAGE_SIZE - 1);
    let (slot, slot_index) = if layout.class == LARGE {
        (base, 0)
    } else {
        let recip = root_reciprocal(layout.class)?;
        let i = slot_index(addr - base, recip);
        (base + i * root_class_size(layout.class), i)
    };
    if slot + ROOT_HEADER != addr {
        return None;
    }
    // SAFETY: a slot start in a root page of a published segment: mapped
    // for good, and a root header's place (see above).
    let root = unsafe { Root::at(slot) };
    let state = root.state_acquire();
    Some(AnyRoot { segment, page: index, slot: slot_index, root, state })
}

/// The tree `tree` (a root slot's address, from a chunk or a face) if it
/// is alive in the life `life` names, with its state: live or moved.
fn any_tree_slot(tree: usize, life: u32) -> Option<(&'static Root, u32)> {
    let found = any_slot(tree + ROOT_HEADER)?;
    if root::tree_alive(found.state, life) {
        Some((found.root, found.state))
    } else {
        None
    }
}

/// A face (see `root`) whose client address is `addr`, whoever owns it:
/// the face as `any_slot` finds it, and its tree with the tree's state if
/// the tree is still alive (a face outlives its tree only after a racing
/// double free: it is then still the client's to free).
pub struct AnyFace {
    pub face: AnyRoot,
    pub tree: Option<(&'static Root, u32)>,
    /// The tree slot the face names, and the tag its link checks.
    pub tree_slot: usize,
    pub tag: u32,
}

pub fn any_face(addr: usize) -> Option<AnyFace> {
    face_of(any_slot(addr)?)
}

/// `any_face` of a slot `any_slot` found.
pub fn face_of(face: AnyRoot) -> Option<AnyFace> {
    if root::kind(face.state) != root::FACE {
        return None;
    }
    let (tree_slot, tag) = face.root.face_tree();
    // The link was written before the face's state (Release); read again so
    // that a slot freed and reused meanwhile is not followed with a link of
    // its next life. Whatever is followed is validated from the tables.
    core::sync::atomic::fence(core::sync::atomic::Ordering::Acquire);
    if face.root.state() != face.state {
        return None;
    }
    let tree = any_slot(tree_slot + ROOT_HEADER)
        .filter(|tree| root::kind(tree.state) == root::MOVED && root::face_tag(tree.state) == tag)
        .map(|tree| (tree.root, tree.state));
    Some(AnyFace { face, tree, tree_slot, tag })
}

/// The chunk whose slot starts at `addr`, if a chunk page of a published
/// segment has a slot there: for walks along chunk links another thread
/// may be rewriting (`remote::unreleased`, `guest::dead`), which then
/// check the chunk's tag. Reads the segment map and the page's layout.
pub fn any_chunk(addr: usize) -> Option<&'static Chunk> {
    if addr % GRANULE != 0 || !segmap::contains(addr) {
        return None;
    }
    // SAFETY: the segment map says `addr`'s unit starts a published segment.
    let segment = unsafe { Segment::of(addr) };
    let index = (addr >> PAGE_SHIFT) & (PAGES - 1);
    let layout = segment.page(index).layout();
    let at = addr & (PAGE_SIZE - 1);
    let slot_start = if layout.class == LARGE {
        at == 0
    } else {
        layout.class < CHUNK_CLASSES && at % chunk_class_size(layout.class) == 0
    };
    if layout.kind != Kind::Chunk || index == 0 || !slot_start {
        return None;
    }
    // SAFETY: a slot start in a chunk page of a published segment.
    Some(unsafe { Chunk::at(addr) })
}

/// The tree, and the state it is live in, of the live child at `addr`,
/// whoever owns it. Reads the page's layout, the start bit, the chunk's
/// header (state and tree, atomics) and then the tree as `any_slot` does:
/// a chunk header read from a page whose layout just changed yields a
/// pointer that is validated like any other, and nothing is written.
pub fn any_child(addr: usize) -> Option<(&'static Root, u32)> {
    if addr % GRANULE != 0 || !segmap::contains(addr) {
        return None;
    }
    // SAFETY: as in `any_slot`.
    let segment = unsafe { Segment::of(addr) };
    let index = (addr >> PAGE_SHIFT) & (PAGES - 1);
    let layout = segment.page(index).layout();
    if layout.kind != Kind::Chunk || index == 0 || !segment.is_start(addr) {
        return None;
    }
    let base = addr & !(PAGE_SIZE - 1);
    let slot = if layout.class == LARGE {
        base
    } else if layout.class < CHUNK_CLASSES {
        base + ((addr - base) & !(chunk_class_size(layout.class) - 1))
    } else {
        return None;
    };
    if addr < slot + CHUNK_HEADER {
        return None;
    }
    // SAFETY: a slot start in a chunk page of a published segment.
    let chunk = unsafe { Chunk::at(slot) };
    any_tree_slot(chunk.tree() as usize, chunk.life())
}

/// The tree of `addr`, a live root, face or child of any thread's, with
/// the state the tree is alive in.
pub fn any_tree(addr: usize) -> Option<(&'static Root, u32)> {
    if let Some(found) = any_slot(addr) {
        return match root::kind(found.state) {
            root::LIVE => Some((found.root, found.state)),
            root::FACE => face_of(found)?.tree,
            _ => None,
        };
    }
    any_child(addr)
}

/// Whether the root `tree` is one of `heap`'s.
#[inline]
pub fn is_own(heap: &Heap, tree: &Root) -> bool {
    let addr = tree as *const Root as usize;
    // SAFETY: checked just before that `addr` is in a published segment.
    segmap::contains(addr) && core::ptr::eq(unsafe { Segment::of(addr) }.owner(), heap)
}
