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
//! root's.
//!
//! A guest chunk's memory comes back when the maker sweeps its guest chunks
//! and finds the tree dead: a few chunks, round the list, each time it
//! makes a chunk (`step`: a thread adding children to trees new to it
//! then reuses the warm slots of dead trees' chunks rather than new
//! pages); all of them when the count of guest chunks reaches twice what
//! the last sweep left (at least `SWEEP_MIN`), when the maker reads
//! `mapi32_stats`, and when its thread exits; guests of trees still live then are swept by the adopter (at
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
use super::root::{generation, tree_alive, Root, ROOT_HEADER};
use super::segment::Segment;
use super::{track, validate, GRANULE, GRANULE_SHIFT};
use crate::scode::{Error, ULONG};
use core::cell::Cell;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// Sweeps wait for at least this many guest chunks.
const SWEEP_MIN: usize = 64;

/// Chunks an incremental sweep step looks at (`step`).
const STEP: usize = 2;

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
    /// Where the incremental sweep goes on: the chunk whose successor it
    /// looks at next, or null for the newest. Always a chunk on the list:
    /// only sweeps free chunks, and a full sweep starts it again.
    cursor: Cell<*const Chunk>,
}

impl Guests {
    #[allow(clippy::declare_interior_mutable_const)] // an initialiser, copied
    pub const EMPTY: Guests = Guests {
        newest: AtomicPtr::new(ptr::null_mut()),
        count: AtomicUsize::new(0),
        sweep_at: Cell::new(SWEEP_MIN),
        cursor: Cell::new(ptr::null()),
    };

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
    let newest = unsafe { guests.newest.load(Ordering::Relaxed).as_ref() };
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
    } else {
        step(heap);
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
/// and each tree as any thread's (`validate::any_slot`: live, or moved to a face). Racing the maker's
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
        let tree = validate::any_slot(chunk.tree() as usize + ROOT_HEADER);
        if tree.map_or(true, |tree| !tree_alive(tree.state, chunk.life())) {
            children += chunk.count() as u64;
            bytes += chunk.bytes() as u64;
        }
        next = chunk.next() as usize;
    }
    (children, bytes)
}

/// Looks at the next `STEP` guest chunks of `heap` (the caller's), round
/// the list, and frees those whose tree is dead: a chunk is made each time
/// a tree is new to the caller, so dead trees' chunks come back while
/// their memory is still warm, and their slots serve the next ones, rather
/// than wait for the list to double.
fn step(heap: &Heap) {
    let guests = &heap.guests;
    let mut prev = guests.cursor.get();
    for _ in 0..STEP {
        // SAFETY: the cursor is null or a chunk on the list (see `Guests`).
        let link = match unsafe { prev.as_ref() } {
            Some(chunk) => chunk.next_link(),
            None => &guests.newest,
        };
        // SAFETY: the list holds live chunk slots of this heap.
        let chunk = match unsafe { link.load(Ordering::Relaxed).as_ref() } {
            Some(chunk) => chunk,
            None => {
                prev = ptr::null(); // round again from the newest
                break;
            }
        };
        if chunk.live_tree().is_some() {
            prev = chunk;
        } else {
            link.store(chunk.next() as *mut Chunk, Ordering::Relaxed);
            guests.count.store(guests.count() - 1, Ordering::Relaxed);
            heap.counts.children_freed(chunk.count() as u64, chunk.bytes() as u64);
            free::free_chunk(heap, chunk);
        }
    }
    guests.cursor.set(prev);
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
    guests.cursor.set(ptr::null());
}

#[cfg(test)]
mod tests {
    use super::super::{allocate_child, allocate_root, free_root, thread};
    use std::sync::mpsc;
    use std::time::Duration;

    /// Guest chunks of trees that died come back as the maker makes chunks
    /// for new trees (`step`), long before the list doubles (`sweep`).
    #[test]
    fn dead_trees_guest_chunks_come_back_as_new_ones_are_made() {
        const TREES: usize = 8;
        let dead: Vec<usize> = (0..TREES).map(|_| allocate_root(32).unwrap().addr()).collect();
        let live: Vec<usize> = (0..TREES).map(|_| allocate_root(32).unwrap().addr()).collect();
        let (to_owner, made) = mpsc::channel();
        let (to_guest, freed) = mpsc::channel::<()>();
        let (on_dead, on_live) = (dead.clone(), live.clone());
        let guest = std::thread::spawn(move || {
            let heap = thread::heap().unwrap();
            super::sweep(heap); // far from the next full sweep from here
            for &tree in &on_dead {
                allocate_child(tree, 24).unwrap();
            }
            to_owner.send(()).unwrap();
            freed.recv_timeout(Duration::from_secs(30)).expect("the trees were freed");
            let before = (heap.guests.count(), heap.counts.snapshot().live_children);
            for &tree in &on_live {
                allocate_child(tree, 24).unwrap();
            }
            let after = (heap.guests.count(), heap.counts.snapshot().live_children);
            let far = heap.guests.count() < heap.guests.sweep_at.get();
            to_owner.send(()).unwrap();
            // Kept until the trees are freed: no other test's thread adopts
            // a heap holding this test's live guests.
            freed.recv_timeout(Duration::from_secs(30)).expect("the trees were freed");
            (before, after, far)
        });
        made.recv_timeout(Duration::from_secs(30)).expect("the guest made its children");
        for &tree in &dead {
            assert!(free_root(tree).is_ok());
        }
        to_guest.send(()).unwrap();
        made.recv_timeout(Duration::from_secs(30)).expect("the guest made its second children");
        for tree in live {
            assert!(free_root(tree).is_ok());
        }
        to_guest.send(()).unwrap();
        let ((chunks, children), (chunks_after, children_after), far) = guest.join().unwrap();
        assert!(far, "no full sweep ran");
        assert!(chunks_after < chunks + TREES, "dead trees' chunks came back: {chunks} -> {chunks_after}");
        assert!(children_after < children + TREES as u64, "with their children's counts");
    }
}
