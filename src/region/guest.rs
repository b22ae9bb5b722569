//! Children a thread makes on another thread's tree (`MAPIAllocateMore`
//! with a parent of another thread's, and `MAPIReallocateBuffer` of such a
//! child): the tree's chunk list is its owner's alone, so the child goes
//! into a chunk of the calling thread's own, tagged with the tree and the
//! life (generation) it validated, on the caller's list of guest chunks.
//!
//! Such a child validates, for every thread, exactly while its tree lives
//! in that life (`Chunk::live_tree`: live, or moved to a face by a
//! reallocation, which keeps the tree's slot), so the tree's free (on any
//! thread) kills it with the rest at once. The first guest chunk of a
//! life of a root with no chunk of its own marks it `GUESTED`, so that its
//! owner does not drop the slot at a reallocation as it drops a childless
//! root's. Its memory comes back when the maker
//! sweeps its guest chunks and finds the tree dead: when the count of guest
//! chunks reaches twice what the last sweep left (at least
//! `SWEEP_MIN`), when the maker reads `mapi32_stats`, and when its thread
//! exits; guests of trees still live then are swept by the adopter (at
//! adoption and after, as its own), by `stats` (which claims an orphan
//! holding guests for it) or at unloading (`thread::catch_up`).
//! Until then the child stays in the maker's counts.
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
use super::root::{generation, Root};
use super::segment::Segment;
use super::{track, GRANULE, GRANULE_SHIFT};
use crate::scode::{Error, ULONG};
use core::cell::Cell;
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Sweeps wait for at least this many guest chunks.
const SWEEP_MIN: usize = 64;

/// A heap's guest chunks, newest first, linked through `Chunk::next`.
#[derive(Debug)]
pub struct Guests {
    newest: Cell<*const Chunk>,
    /// Written by the owner only; atomic so that `stats` may ask whether
    /// an orphan holds any (`thread::catch_up`).
    count: AtomicUsize,
    sweep_at: Cell<usize>,
}

impl Guests {
    #[allow(clippy::declare_interior_mutable_const)] // an initialiser, copied
    pub const EMPTY: Guests =
        Guests { newest: Cell::new(ptr::null()), count: AtomicUsize::new(0), sweep_at: Cell::new(SWEEP_MIN) };

    /// How many guest chunks the heap holds (any thread may ask: a hint).
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

/// A child of `size` bytes of `tree`, a root of another thread's that was
/// alive (live or moved) in `state`, in a guest chunk of `heap` (the
/// caller's); `InvalidParameter` if that life ended meanwhile.
///
/// With a tool watching (`track`), the child has a redzone after it and is
/// described to the tool; its chunk's free tells the tool it is freed.
pub fn child(heap: &Heap, tree: &Root, state: u32, size: ULONG) -> Result<usize, Error> {
    let tracked = track::enabled();
    let redzone = if tracked { track::REDZONE_GRANULES } else { 0 };
    let granules = (((size.max(1) as usize - 1) >> GRANULE_SHIFT) + 1) + redzone;
    let guests = &heap.guests;
    // SAFETY: the list holds live chunk slots of this heap.
    let newest = unsafe { guests.newest.get().as_ref() };
    let same_life = newest.filter(|chunk| ptr::eq(chunk.tree(), tree) && chunk.life() == generation(state));
    if let Some(chunk) = same_life {
        if let Some(addr) = chunk.bump(granules) {
            return Ok(made(heap, chunk, addr, granules, size));
        }
    }
    // The owner of a root with no chunk of its own must know it has guests
    // before it may drop the root's slot at a reallocation
    // (`alloc::reallocate`); once a life: a chunk of the same life, above,
    // was made after it. A root with a chunk is never dropped (its `first`
    // stays set for the life), and the flag's compare-and-swap, on a line
    // the owner wrote, is the dearest step here: skipped then.
    if tree.first().is_null() && !tree.mark_guested(state) {
        return Err(Error::InvalidParameter);
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
    chunk.set_next(guests.newest.get());
    guests.newest.set(chunk);
    guests.count.store(guests.count() + 1, Ordering::Relaxed);
    Ok(made(heap, chunk, chunk.children_start(), granules, size))
}

/// The child at `addr`, taking `granules` granules (its redzone included),
/// is made; the tool is told before any other thread can see it (its start
/// bit).
fn made(heap: &Heap, chunk: &Chunk, addr: usize, granules: usize, size: ULONG) -> usize {
    if track::enabled() {
        track::child_made(addr, size, addr + (granules << GRANULE_SHIFT));
    }
    chunk.add_child(size);
    // SAFETY: `addr` is in a chunk of this heap, in its segment's first unit.
    unsafe { Segment::of(addr) }.mark_start(addr);
    heap.counts.child_made(size);
    addr
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
    while let Some(chunk) = unsafe { link.get().as_ref() } {
        if chunk.live_tree().is_some() {
            kept += 1;
            link = chunk.next_link();
        } else {
            link.set(chunk.next());
            heap.counts.children_freed(chunk.count() as u64, chunk.bytes() as u64);
            free::free_chunk(heap, chunk);
        }
    }
    guests.count.store(kept, Ordering::Relaxed);
    guests.sweep_at.set((2 * kept).max(SWEEP_MIN));
}
