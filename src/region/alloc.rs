//! Making blocks: roots in size-class slots, children bumped into their
//! tree's chunks, and `MAPIReallocateBuffer`'s copies. The fast paths take
//! a slot from the current page, or bump the tree's newest chunk, with no
//! lock, atomic read-modify-write or call; everything else is a cold call.

use super::chunk::{Chunk, CHUNK_HEADER, HEADER_GRANULES};
use super::class::{chunk_class_for, chunk_class_size, root_class, CHUNK_CLASSES, CHUNK_GROWTH, ROOT_SLOT_MAX};
use super::heap::Heap;
use super::page::{Kind, Page};
use super::root::{self, Root, GUESTED, ROOT_HEADER};
use super::segment::Segment;
use super::{free, guest, remote};
use super::{thread, track, validate, Block, GRANULE, GRANULE_SHIFT};
use crate::scode::{Error, ULONG};
use core::ptr::NonNull;

/// A root's slot for `size` client bytes: header included, whole granules,
/// and at least one client granule, so that a size-0 root's address lies
/// in its own slot and not at the next one's start; then `redzone` bytes
/// (0 unless a tool watches, see `track`). `None` if it overflows.
#[inline(always)]
fn root_slot_bytes(size: ULONG, redzone: usize) -> Option<usize> {
    let bytes = (size.max(1) as u64 + (ROOT_HEADER + redzone + GRANULE - 1) as u64) & !(GRANULE as u64 - 1);
    usize::try_from(bytes).ok()
}

/// Granules a child of `size` bytes takes: at least one, so every child
/// has an address of its own.
#[inline(always)]
fn child_granules(size: ULONG) -> usize {
    ((size.max(1) as usize - 1) >> GRANULE_SHIFT) + 1
}

fn block(addr: usize) -> Block {
    // A client address lies a header into one of our slots: never 0.
    Block(NonNull::new(addr as *mut u8).unwrap_or(NonNull::dangling()))
}

/// `MAPIAllocateBuffer` as a whole call (`thread::Call`): the heap is busy
/// from where the call takes it and idle again when it returns. Without a
/// tool, it marks the heap idle itself, with the heap in hand and on each
/// way out: a `Call` would load the heap again and keep the result on the
/// stack meanwhile (5 instructions a pair more, callgrind).
#[inline(always)]
pub fn allocate_root_call(size: ULONG) -> Result<Block, Error> {
    if track::enabled() {
        return tracked_root_call(size);
    }
    let heap = thread::heap().ok_or(Error::NoMemory)?;
    root_in(heap, size, false, true)
}

#[cold]
#[inline(never)]
fn tracked_root_call(size: ULONG) -> Result<Block, Error> {
    let _call = thread::Call::begin();
    tracked_root(size)
}

/// A new root of `size` bytes, within a call (`MAPIReallocateBuffer`'s).
#[inline(always)]
pub fn allocate_root(size: ULONG) -> Result<Block, Error> {
    if track::enabled() {
        return tracked_root(size);
    }
    root_with(size, false)
}

/// A root for valgrind or ASan: a redzone after it, and the tool told.
#[cold]
#[inline(never)]
fn tracked_root(size: ULONG) -> Result<Block, Error> {
    let root = root_with(size, true)?;
    track::root_made(root.addr(), size as usize);
    Ok(root)
}

/// A root, `tracked` for a tool (with a redzone after it) or not; a
/// constant false on the fast path, which then compiles to what it was
/// before the tools.
#[inline(always)]
fn root_with(size: ULONG, tracked: bool) -> Result<Block, Error> {
    let heap = thread::heap().ok_or(Error::NoMemory)?;
    root_in(heap, size, tracked, false)
}

/// `root_with` in `heap`, the calling thread's, busy; idle again on
/// return if `ends_call` (a constant).
#[inline(always)]
fn root_in(heap: &Heap, size: ULONG, tracked: bool, ends_call: bool) -> Result<Block, Error> {
    remote::drain(heap);
    let redzone = if tracked { track::REDZONE } else { 0 };
    let slot = match root_slot_bytes(size, redzone) {
        Some(bytes) if bytes <= ROOT_SLOT_MAX => heap.root_slot(root_class(bytes)),
        Some(bytes) => heap.large(Kind::Root, bytes),
        None => core::ptr::null_mut(),
    };
    if slot.is_null() {
        if ends_call {
            heap.leave();
        }
        return Err(Error::NoMemory);
    }
    if tracked {
        track::header(slot as usize, ROOT_HEADER);
    }
    // SAFETY: a root slot just handed out by this heap.
    let root = unsafe { Root::at(slot as usize) };
    root.begin(size);
    heap.cache.remember(root.client(), root);
    heap.counts.root_made(size);
    if ends_call {
        heap.leave();
    }
    Ok(block(root.client()))
}

/// A new child of `size` bytes in the tree of `parent`, a live root or
/// child (`MAPIAllocateMore`; tree.rs handles a null parent). Anything else
/// is `InvalidParameter`, nothing allocated.
#[inline(always)]
pub fn allocate_child(parent: usize, size: ULONG) -> Result<Block, Error> {
    if track::enabled() {
        return tracked_child(parent, size);
    }
    match thread::entered() {
        Some(heap) => match heap.cache.tree_of(parent) {
            Some(tree) => child_of(heap, tree, child_granules(size), size),
            None => child_of_parent(heap, parent, size),
        },
        None => guest_child(parent, size),
    }
}

/// A child for valgrind or ASan: `allocate_child` with a redzone.
#[cold]
#[inline(never)]
fn tracked_child(parent: usize, size: ULONG) -> Result<Block, Error> {
    match thread::entered() {
        Some(heap) => match heap.cache.tree_of(parent) {
            Some(tree) => tracked_child_of(heap, tree, size),
            None => child_of_parent(heap, parent, size),
        },
        None => guest_child(parent, size),
    }
}

/// A child of `size` bytes and its redzone in `tree`, the tool told.
#[cold]
fn tracked_child_of(heap: &Heap, tree: &Root, size: ULONG) -> Result<Block, Error> {
    let granules = child_granules(size) + track::REDZONE_GRANULES;
    let child = child_of(heap, tree, granules, size)?;
    track::child_made(tree.client(), child.addr(), size, child.addr() + (granules << GRANULE_SHIFT));
    Ok(child)
}

/// A child of `size` bytes in `tree`, one of `heap`'s (the caller's), off
/// the fast path: with a redzone if a tool watches.
fn own_child(heap: &Heap, tree: &Root, size: ULONG) -> Result<Block, Error> {
    if track::enabled() {
        tracked_child_of(heap, tree, size)
    } else {
        child_of(heap, tree, child_granules(size), size)
    }
}

/// A parent the cache does not hold: validated, and remembered if it is of
/// the calling thread's tree (a face of its own, not remembered); else
/// another thread's (`guest_child`).
#[cold]
#[inline(never)]
fn child_of_parent(heap: &Heap, parent: usize, size: ULONG) -> Result<Block, Error> {
    match validate::parent(heap, parent) {
        Some(validate::Parent::Tree(tree)) => {
            heap.cache.remember(parent, tree);
            own_child(heap, tree, size)
        }
        Some(validate::Parent::Face(tree)) => own_child(heap, tree, size),
        None => guest_child(parent, size),
    }
}

/// A child of another thread's tree (`guest`), if `parent` is a live root
/// or child of one.
#[cold]
#[inline(never)]
fn guest_child(parent: usize, size: ULONG) -> Result<Block, Error> {
    let (tree, state) = validate::any_tree(parent).ok_or(Error::InvalidParameter)?;
    let heap = thread::heap().ok_or(Error::NoMemory)?;
    if validate::is_own(heap, tree) {
        // A child another thread made on this thread's tree, in its own
        // guest chunk: the child goes where the tree's own children go.
        return own_child(heap, tree, size);
    }
    guest::child(heap, tree, state, size).map(block)
}

/// What `quick_child` found.
#[derive(Clone, Copy, Debug)]
pub enum Quick {
    /// The child, made.
    Made(Block),
    /// The parent is the one remembered, but its tree's newest chunk is
    /// full (or it has none): `Grow::child` makes the child in a new one.
    Grow(Grow),
    /// Anything else, nothing changed: for `allocate_child`.
    Miss,
}

/// A child that needs a new chunk of its tree (`Quick::Grow`); the heap
/// stays busy until `child` is done (`thread::Call` has why).
#[derive(Clone, Copy, Debug)]
pub struct Grow {
    heap: &'static Heap,
    tree: &'static Root,
}

impl Grow {
    /// The child of `size` bytes, in a new chunk.
    #[inline(always)]
    pub fn child(self, size: ULONG) -> Result<Block, Error> {
        let made = child_in_new_chunk(self.heap, self.tree, child_granules(size), size);
        self.heap.leave();
        made
    }
}

/// `MAPIAllocateMore`'s common case alone: a child of the parent the
/// calling thread last used, with no tool watching, bumped into its tree's
/// newest chunk. Kept apart so that the export can try it first as a leaf,
/// with no frame to set up and no result to merge with the other paths',
/// and pass the rest on by a tail call: a new chunk to `Grow::child`,
/// anything else (a null parent included: the empty cache holds 0) to
/// `allocate_child`.
///
/// Being no entry point with a `thread::Call`, it marks the heap busy
/// itself, once it has the tree and before the first store
/// (`Heap::enter`), and idle when the child is made, or leaves that to
/// `Grow::child`: a child forked meanwhile must not take the heap for idle
/// (`fork`). A miss has stored nothing, and leaves the heap as it found it.
#[inline(always)]
pub fn quick_child(parent: usize, size: ULONG) -> Quick {
    if parent == 0 || track::enabled() {
        return Quick::Miss;
    }
    let heap = match thread::current() {
        Some(heap) => heap,
        None => return Quick::Miss,
    };
    let tree = match heap.cache.tree_of(parent) {
        Some(tree) => tree,
        None => return Quick::Miss,
    };
    heap.enter();
    // SAFETY: a live tree's chunks are live chunk slots of this heap.
    if let Some(chunk) = unsafe { tree.first().as_ref() } {
        if let Some(addr) = chunk.bump(child_granules(size)) {
            let child = child_made(heap, chunk, addr, size);
            heap.leave();
            return Quick::Made(child);
        }
    }
    Quick::Grow(Grow { heap, tree })
}

/// A child of `size` bytes taking `granules` granules.
#[inline(always)]
fn child_of(heap: &Heap, tree: &Root, granules: usize, size: ULONG) -> Result<Block, Error> {
    // SAFETY: a live tree's chunks are live chunk slots of this heap.
    if let Some(chunk) = unsafe { tree.first().as_ref() } {
        if let Some(addr) = chunk.bump(granules) {
            return Ok(child_made(heap, chunk, addr, size));
        }
    }
    child_in_new_chunk(heap, tree, granules, size)
}

#[inline(always)]
fn child_made(heap: &Heap, chunk: &Chunk, addr: usize, size: ULONG) -> Block {
    chunk.add_child(size);
    // SAFETY: `addr` is in a chunk of ours, in its segment's first unit.
    unsafe { Segment::of(addr) }.mark_start(addr);
    heap.counts.child_made(size);
    block(addr)
}

/// The tree's newest chunk is full (or it has none): a chunk for this
/// child. The next chunk is 8 times the last, up to a page; a child bigger
/// than a quarter of that gets a chunk of its own, behind the newest, so
/// the newest keeps its room.
#[cold]
#[inline(never)]
fn child_in_new_chunk(heap: &Heap, tree: &Root, granules: usize, size: ULONG) -> Result<Block, Error> {
    #[cfg(test)]
    super::park::here();
    // SAFETY: as in `child_of`.
    let newest = unsafe { tree.first().as_ref() };
    let next_class = newest.map_or(0, |chunk| (chunk.class() + CHUNK_GROWTH).min(CHUNK_CLASSES - 1));
    let child_bytes = granules.checked_mul(GRANULE).ok_or(Error::NoMemory)?;
    let whole = child_bytes.checked_add(CHUNK_HEADER).ok_or(Error::NoMemory)?;
    let own = child_bytes > chunk_class_size(next_class) / 4;
    let (slot, class, used, end) = if !own {
        let end = chunk_class_size(next_class) / GRANULE;
        (heap.chunk_slot(next_class), next_class, HEADER_GRANULES + granules, end)
    } else if let Some(class) = chunk_class_for(whole) {
        (heap.chunk_slot(class), class, HEADER_GRANULES + granules, chunk_class_size(class) / GRANULE)
    } else {
        // One child in a span: made full, its one start bit in its header's
        // next granule.
        (heap.large(Kind::Chunk, whole), CHUNK_CLASSES - 1, HEADER_GRANULES + 1, HEADER_GRANULES + 1)
    };
    if slot.is_null() {
        return Err(Error::NoMemory);
    }
    track::header(slot as usize, CHUNK_HEADER);
    // SAFETY: a chunk slot just handed out by this heap.
    let chunk = unsafe { Chunk::at(slot as usize) };
    chunk.begin(tree, class, used, end);
    match newest {
        Some(newest) if own => {
            chunk.set_next(newest.next());
            newest.set_next(chunk);
        }
        _ => {
            chunk.set_next(tree.first());
            tree.set_first(chunk);
        }
    }
    Ok(child_made(heap, chunk, chunk.children_start(), size))
}

/// `MAPIReallocateBuffer` of a live block (tree.rs handles 0). A root
/// gets a new root that takes its children: the calling thread's root with
/// no child and no guest is dropped as `free` would, any other root or face
/// is moved (`move_root`). A child gets a new sibling, of any thread's tree.
/// The first `min(old, size)` bytes are copied.
pub fn reallocate(addr: usize, size: ULONG) -> Result<Block, Error> {
    let heap = match thread::entered() {
        Some(heap) => heap,
        None => return reallocate_other(addr, size),
    };
    // Roots other threads killed are released first, so that the old root
    // stays where it is while the new one is made.
    remote::drain(heap);
    if let Some((page, old)) = validate::root(heap, addr) {
        let state = old.state();
        if old.first().is_null() && state & GUESTED == 0 {
            return reallocate_alone(heap, page, old, state, size);
        }
        return reallocate_other(addr, size);
    }
    let (chunk, tree) = match validate::child(heap, addr) {
        Some(found) => found,
        None => return reallocate_other(addr, size),
    };
    let extent = child_extent(chunk, addr);
    let new = own_child(heap, tree, size)?;
    copy(addr, new, extent.min(size as usize));
    Ok(new)
}

/// A root of the caller's with no child of its own and none of another
/// thread's: a new root, and the old one's life ended by one swap of its
/// state word, which fails if another thread marked a guest child, freed
/// or moved it meanwhile (then it is decided again, as any thread's root).
fn reallocate_alone(heap: &Heap, page: &'static Page, old: &Root, state: u32, size: ULONG) -> Result<Block, Error> {
    let new = allocate_root(size)?;
    copy(old.client(), new, (old.size() as usize).min(size as usize));
    if old.try_end(state) {
        free::root_dropped(heap, page, old);
        return Ok(new);
    }
    let _ = free::free_root(new.addr());
    reallocate_other(old.client(), size)
}

/// `MAPIReallocateBuffer` of a block the caller's own paths did not take:
/// a root or face of any thread's is moved (`move_root`, `move_face`), a
/// child of another thread's tree, or in a guest chunk, gets a sibling.
#[cold]
#[inline(never)]
fn reallocate_other(addr: usize, size: ULONG) -> Result<Block, Error> {
    let heap = thread::heap().ok_or(Error::NoMemory)?;
    match validate::any_slot(addr) {
        Some(found) if root::kind(found.state) == root::LIVE => move_root(heap, &found, size),
        Some(found) if root::kind(found.state) == root::FACE => move_face(heap, found, size),
        Some(_) => Err(Error::InvalidParameter),
        None => reallocate_guest(heap, addr, size),
    }
}

/// Moves the live root `found` (of any thread's, the caller's too) to a
/// new face in the caller's heap: its slot stays, `MOVED`, the header of
/// its tree, whose chunks and guest chunks never change (see `root`).
///
/// The face is made first and the root claimed after by one swap of its
/// state word, live → moved, so a failure changes nothing and a racing
/// free or reallocation of the root from another thread either wins before
/// (the move is refused, the face given back) or loses. Nothing waits: the
/// owner is never asked; its later calls see a moved tree's children as
/// they were.
#[cold]
#[inline(never)]
fn move_root(heap: &Heap, found: &validate::AnyRoot, size: ULONG) -> Result<Block, Error> {
    let (tree, state) = (found.root, found.state);
    let old_size = tree.size();
    let moved = root::generation(state) | root::MOVED;
    let (page, face) = make_face(heap, size, tree, moved)?;
    #[cfg(test)]
    super::park::here();
    let claimed = remote::under_way(tree.client(), || {
        let mut from = state;
        loop {
            if root::kind(from) != root::LIVE || root::generation(from) != root::generation(state) {
                return false;
            }
            match tree.swap_state(from, moved) {
                Ok(()) => return true,
                Err(now) => from = now,
            }
        }
    });
    if !claimed {
        drop_face(heap, page, face);
        return Err(Error::InvalidParameter);
    }
    let new = block(face.client());
    copy(tree.client(), new, (old_size as usize).min(size as usize));
    // The tree's pool stays at the root's client address (`track`).
    if track::enabled() {
        track::bytes_moved_out(tree.client(), old_size as usize);
    }
    if validate::is_own(heap, tree) {
        // The root's bytes are the face's now: its owner's counts say so.
        free::root_moved(heap, tree);
    } else {
        // The owner's counts are the owner's to write: it is told as of a
        // kill, and says so at its next call (`remote::release`).
        remote::under_way(tree.client(), || {
            remote::hand_over(found);
            true
        });
    }
    Ok(new)
}

/// Moves the face `face` (of any thread's) to a new face of the same
/// tree: no chain, the tree's slot is named by each face in turn. One swap
/// of the old face's state word decides between racing frees and
/// reallocations of it; the old face is released by its owner.
#[cold]
#[inline(never)]
fn move_face(heap: &Heap, face: validate::AnyRoot, size: ULONG) -> Result<Block, Error> {
    let addr = face.root.client();
    let found = validate::face_of(face).ok_or(Error::InvalidParameter)?;
    let old = &found.face;
    // A face whose tree died in a racing double free is only freed.
    let (tree, tree_state) = found.tree.ok_or(Error::InvalidParameter)?;
    let old_size = old.root.size();
    let (page, face) = make_face(heap, size, tree, tree_state)?;
    if !remote::under_way(addr, || old.root.kill(old.state)) {
        drop_face(heap, page, face);
        return Err(Error::InvalidParameter);
    }
    let new = block(face.client());
    copy(addr, new, (old_size as usize).min(size as usize));
    if track::enabled() {
        track::bytes_moved_out(addr, old_size as usize);
    }
    // Released once copied: by the caller if it is its own, else handed to
    // its owner as a killed face.
    if core::ptr::eq(old.segment.owner(), heap) {
        free::free_face(heap, old.segment.page(old.page), old.root);
    } else {
        remote::under_way(addr, || {
            remote::hand_over(old);
            true
        });
    }
    Ok(new)
}

/// Gives back a face just made whose move lost its race: told to the tool
/// as freed, as the face was told as made.
#[cold]
fn drop_face(heap: &Heap, page: &'static Page, face: &Root) {
    if track::enabled() {
        track::bytes_moved_out(face.client(), face.size() as usize);
    }
    free::free_face(heap, page, face);
}

/// A face of `size` bytes for `tree`, moved in the life `moved` names, in
/// a slot of `heap`'s: counted, and described to a tool if one watches.
fn make_face(heap: &Heap, size: ULONG, tree: &Root, moved: u32) -> Result<(&'static Page, &'static Root), Error> {
    let tracked = track::enabled();
    let redzone = if tracked { track::REDZONE } else { 0 };
    let bytes = root_slot_bytes(size, redzone).ok_or(Error::NoMemory)?;
    let slot = if bytes <= ROOT_SLOT_MAX { heap.root_slot(root_class(bytes)) } else { heap.large(Kind::Root, bytes) };
    if slot.is_null() {
        return Err(Error::NoMemory);
    }
    if tracked {
        track::header(slot as usize, ROOT_HEADER);
    }
    // SAFETY: a root slot just handed out by this heap.
    let face = unsafe { Root::at(slot as usize) };
    face.begin_face(size, tree, moved);
    if tracked {
        track::face_made(face.client(), size as usize);
    }
    heap.counts.face_made(size);
    // SAFETY: the slot lies in a published segment of this heap.
    let page = unsafe { Segment::of(slot as usize) }.page_of(slot as usize);
    Ok((page, face))
}

/// `MAPIReallocateBuffer` of a child of another thread's tree, or of one
/// in a guest chunk: a new guest child, holding the old one's bytes up to
/// the next child's start or its chunk's end (what the old child may
/// hold; its own size is its owner's to read).
fn reallocate_guest(heap: &Heap, addr: usize, size: ULONG) -> Result<Block, Error> {
    let (tree, state) = validate::any_child(addr).ok_or(Error::InvalidParameter)?;
    let extent = guest_extent(heap, addr);
    let new = if validate::is_own(heap, tree) {
        own_child(heap, tree, size)?
    } else {
        block(guest::child(heap, tree, state, size)?)
    };
    copy(addr, new, extent.min(size as usize));
    Ok(new)
}

/// The bytes a child validated by `validate::any_child` may hold: up to
/// the next start bit, or the end of its chunk slot (of a one-child chunk,
/// its span's first page), read from the tables only. With a tool
/// watching, what it asked for (`track::child_size`), where its end is
/// known: a next child's start, or the fill mark of a chunk of `heap`'s.
fn guest_extent(heap: &Heap, addr: usize) -> usize {
    // SAFETY: `addr` is a validated child, in a published segment.
    let segment = unsafe { Segment::of(addr) };
    let page = segment.page((addr >> super::PAGE_SHIFT) & (super::PAGES - 1));
    let layout = page.layout();
    let page_end = (addr & !(super::PAGE_SIZE - 1)) + super::PAGE_SIZE;
    if layout.class >= CHUNK_CLASSES {
        // A chunk of one child, at its span's start: the size it asked for,
        // written before the child's address was handed to anyone.
        // SAFETY: the chunk header of a validated child's span.
        return unsafe { Chunk::at(addr & !(super::PAGE_SIZE - 1)) }.bytes() as usize;
    }
    let size = chunk_class_size(layout.class);
    let slot = addr & !(size - 1);
    let bound = (slot + size).min(page_end);
    let next = segment.next_start(addr, bound);
    if track::enabled() {
        return tracked_guest_extent(heap, segment, slot, addr, next, bound);
    }
    next - addr
}

/// `guest_extent` with a tool: the size kept in the child's redzone, whose
/// end is the next start or, for the last child of a chunk of `heap`'s,
/// the chunk's fill mark. The last child of another heap's chunk has no
/// end any thread but its owner may read: the copy takes up to its
/// chunk's end, as without a tool (the tool may report the read).
#[cold]
#[inline(never)]
fn tracked_guest_extent(heap: &Heap, segment: &Segment, slot: usize, addr: usize, next: usize, bound: usize) -> usize {
    if next < bound {
        return track::child_size(next);
    }
    if core::ptr::eq(segment.owner(), heap) {
        // SAFETY: a chunk slot of the caller's heap, holding `addr`.
        let end = unsafe { Chunk::at(slot) }.used_end();
        if end > addr {
            return track::child_size(end);
        }
    }
    next - addr
}

/// The bytes a child may hold: up to the next child's start, or the
/// chunk's fill mark; a chunk of one big child holds what it asked for.
/// With a tool watching, exactly what it asked for: the rest is redzone.
fn child_extent(chunk: &Chunk, addr: usize) -> usize {
    if chunk.count() == 1 && addr == chunk.children_start() {
        return chunk.bytes() as usize;
    }
    // SAFETY: `addr` is a child of ours, in its segment's first unit.
    let segment = unsafe { Segment::of(addr) };
    let end = segment.next_start(addr, chunk.used_end());
    if track::enabled() {
        return track::child_size(end);
    }
    end - addr
}

fn copy(from: usize, to: Block, count: usize) {
    // SAFETY: `from` is a live block of at least `count` bytes (its size or
    // extent), `to` a fresh one of at least `count`; distinct blocks.
    unsafe { core::ptr::copy_nonoverlapping(from as *const u8, to.as_ptr(), count) }
}
