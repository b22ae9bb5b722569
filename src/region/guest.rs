//! Children a thread makes on another thread's tree (`MAPIAllocateMore`
//! with a parent of another thread's, and `MAPIReallocateBuffer` of such a
//! child): the tree's chunk list is its owner's alone, so the child goes
//! into a chunk of the calling thread's own, tagged with the tree and the
//! life (generation) it validated, on the caller's list of guest chunks.
//!
//! Such a child validates, for every thread, exactly while its tree lives
//! in that life (`Chunk::live_tree`), so the tree's free (on any thread)
//! kills it with the rest at once. Its memory comes back when the maker
//! sweeps its guest chunks and finds the tree dead: when the count of guest
//! chunks reaches twice what the last sweep left (at least
//! `SWEEP_MIN`), when the maker reads `mapi32_stats`, and when its thread
//! exits; guests of trees still live then are swept by the adopter (at
//! adoption and after, as its own), by `stats` (which claims an orphan
//! holding guests for it) or at unloading (`thread::catch_up`).
//! Until then the child stays in the maker's counters, but `stats` leaves
//! it out from its tree's free on (`dead`).
//!
//! A call racing the tree's free either validated the tree live first (its
//! child is made, is dead at once or with the free, and is swept) or finds
//! it dead and returns `MAPI_E_INVALID_PARAMETER` (SPEC §3).
//!
//! Chunks grow as a tree's own do: the maker's newest guest chunk takes
//! the next child of the same tree and life; a new one is 8 times the
//! last for that tree, 64 bytes for another tree.

use super::chunk::{Chunk, CHUNK_HEADER, HEADER_GRANULES};
use super::class::{chunk_class_for, chunk_class_size, CHUNK_CLASSES, CHUNK_GROWTH};
use super::free;
use super::heap::Heap;
use super::page::Kind;
use super::root::{Root, ROOT_HEADER};
use super::segment::Segment;
use super::{track, validate, GRANULE, GRANULE_SHIFT};
use crate::scode::{Error, ULONG};
use core::cell::Cell;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// Sweeps wait for at least this many guest chunks.
const SWEEP_MIN: usize = 64;

/// A heap's guest chunks, newest first, linked through `Chunk::next`.
#[derive(Debug)]
pub struct Guests {
    /// Written by the owner only; atomic because `dead` walks the list
    /// from any thread.
    newest: AtomicPtr<Chunk>,
    /// Written by the owner only; atomic so that `stats` may ask whether
    /// an orphan holds any (`thread::catch_up`).
    count: AtomicUsize,
    sweep_at: Cell<usize>,
}

impl Guests {
    #[allow(clippy::declare_interior_mutable_const)] // an initialiser, copied
    pub const EMPTY: Guests =
        Guests { newest: AtomicPtr::new(ptr::null_mut()), count: AtomicUsize::new(0), sweep_at: Cell::new(SWEEP_MIN) };

    /// How many guest chunks the heap holds (any thread may ask: a hint).
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

/// A child of `size` bytes of `tree`, a root of another thread's that was
/// live in `state`, in a guest chunk of `heap` (the caller's).
///
/// With a tool watching (`track`), the child has a redzone after it and is
/// described to the tool; its chunk's free tells the tool it is freed.
pub fn child(heap: &Heap, tree: &Root, state: u32, size: ULONG) -> Result<usize, Error> {
    let tracked = track::enabled();
    let redzone = if tracked { track::REDZONE_GRANULES } else { 0 };
    let granules = (((size.max(1) as usize - 1) >> GRANULE_SHIFT) + 1) + redzone;
    let guests = &heap.guests;
    // SAFETY: the list holds live chunk slots of this heap.
    let newest = unsafe { guests.newest.load(Ordering::Relaxed).as_ref() };
    let same_life = newest.filter(|chunk| ptr::eq(chunk.tree(), tree) && chunk.live_state() == state);
    if let Some(chunk) = same_life {
        if let Some(addr) = chunk.bump(granules) {
            return Ok(made(heap, chunk, addr, granules, size));
        }
    }
    if guests.count() >= guests.sweep_at.get() {
        sweep(heap);
    }
    let next_class = same_life.map_or(0, |chunk| (chunk.class() + CHUNK_GROWTH).min(CHUNK_CLASSES - 1));
    let child_bytes = granules.checked_mul(GRANULE).ok_or(Error::NoMemory)?;
    let whole = child_bytes.checked_add(CHUNK_HEADER).ok_or(Error::NoMemory)?;
    let (slot, class, used, end) = if whole <= chunk_class_size(next_class) {
        (heap.chunk_slot(next_class), next_class, HEADER_GRANULES + granules, chunk_class_size(next_class) / GRANULE)
    } else if let Some(class) = chunk_class_for(whole) {
        (heap.chunk_slot(class), class, HEADER_GRANULES + granules, chunk_class_size(class) / GRANULE)
    } else {
        // One child in a span, made full, as in `alloc`.
        (heap.large(Kind::Chunk, whole), CHUNK_CLASSES - 1, HEADER_GRANULES + 1, HEADER_GRANULES + 1)
    };
    if slot.is_null() {
        return Err(Error::NoMemory);
    }
    if tracked {
        track::header(slot as usize, CHUNK_HEADER);
    }
    // SAFETY: a chunk slot just handed out by this heap.
    let chunk = unsafe { Chunk::at(slot as usize) };
    chunk.begin_in(tree, state, class, used, end);
    chunk.set_next(guests.newest.load(Ordering::Relaxed));
    // Release: a thread reading the counts (`dead`) sees the header first.
    guests.newest.store(chunk as *const Chunk as *mut Chunk, Ordering::Release);
    guests.count.store(guests.count() + 1, Ordering::Relaxed);
    Ok(made(heap, chunk, chunk.children_start(), granules, size))
}

/// The child at `addr`, taking `granules` granules (its redzone included),
/// is made; the tool is told before any other thread can see it (its start
/// bit).
fn made(heap: &Heap, chunk: &Chunk, addr: usize, granules: usize, size: ULONG) -> usize {
    if track::enabled() {
        // SAFETY: a chunk's tree is a root slot, mapped for good.
        let tree = unsafe { &*chunk.tree() };
        track::child_made(tree.client(), addr, size, addr + (granules << GRANULE_SHIFT));
    }
    chunk.add_child(size);
    // SAFETY: `addr` is in a chunk of this heap, in its segment's first unit.
    unsafe { Segment::of(addr) }.mark_start(addr);
    heap.counts.child_made(size);
    addr
}

/// The children, and their bytes, in `heap`'s guest chunks whose tree is
/// dead: still in their maker's counts until it sweeps, but freed for
/// `mapi32_stats` when their tree's free returned. Any thread may ask,
/// whatever the maker is doing; nothing is written.
///
/// Each link is validated before it is followed (`validate::any_chunk`)
/// and each tree as any thread's (`validate::any_root`). Racing the maker's
/// own sweep or a new guest chunk, a walk may count a chunk just freed or
/// miss one just linked: the maker is in a call then, and its counts move
/// anyway. It follows at most twice as many links as the maker last
/// counted, and `SWEEP_MIN` more, so that it ends even then.
pub fn dead(heap: &Heap) -> (u64, u64) {
    let guests = &heap.guests;
    let (mut children, mut bytes) = (0u64, 0u64);
    let mut next = guests.newest.load(Ordering::Acquire) as usize;
    for _ in 0..2 * guests.count() + SWEEP_MIN {
        let chunk = match validate::any_chunk(next) {
            Some(chunk) => chunk,
            None => break,
        };
        let tree = validate::any_root(chunk.tree() as usize + ROOT_HEADER);
        if tree.map_or(true, |tree| tree.state != chunk.live_state()) {
            children += chunk.count() as u64;
            bytes += chunk.bytes() as u64;
        }
        next = chunk.next() as usize;
    }
    (children, bytes)
}

/// Frees the guest chunks of `heap` (the caller's) whose tree is dead, and
/// takes their children off the counts.
#[cold]
#[inline(never)]
pub fn sweep(heap: &Heap) {
    let guests = &heap.guests;
    let (mut kept, mut link) = (0, &guests.newest);
    // SAFETY: the list holds live chunk slots of this heap; a chunk is
    // unlinked before it is freed.
    while let Some(chunk) = unsafe { link.load(Ordering::Relaxed).as_ref() } {
        if chunk.live_tree().is_some() {
            kept += 1;
            link = chunk.next_link();
        } else {
            link.store(chunk.next() as *mut Chunk, Ordering::Relaxed);
            heap.counts.children_freed(chunk.count() as u64, chunk.bytes() as u64);
            free::free_chunk(heap, chunk);
        }
    }
    guests.count.store(kept, Ordering::Relaxed);
    guests.sweep_at.set((2 * kept).max(SWEEP_MIN));
}
