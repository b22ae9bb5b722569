//! Every heap, by number, and where each one's blocks lie: the table a lookup
//! for another thread's block (or a foreign pointer) walks.
//!
//! The walk reads the heaps' [`Regions`] side by side in one array, 8 bytes a
//! heap, and enters only a heap whose regions may hold the pointer. A linked
//! list of the heaps themselves cost a cache miss or two a heap: 35–75 µs a
//! lookup with 1,024 idle threads, against about a microsecond for this
//! array. Heaps are published once, never removed and never freed while the
//! library is loaded (a dead thread's heap is adopted by a new thread), so a
//! walk needs no lock: it reads the count, then entries that were filled in
//! before the count covered them.
//!
//! At most [`MAX_HEAPS`] heaps: a thread that finds the table full is served
//! by the shared heap, as a thread with no exit hook is. Heaps are reused, so
//! that is 16,383 threads that allocate *at the same time*; the arrays are
//! 256 KiB of zeroed static data, of which only the pages in use cost memory.

use super::regions::Regions;
use super::{Heap, SHARED};
use crate::lock::SpinLock;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

pub(super) const MAX_HEAPS: usize = 1 << 14;

// Only the array repeat expressions below use these, each use a fresh value:
// Rust 1.63 has no inline `const { }` block to write there instead.
#[allow(clippy::declare_interior_mutable_const)]
const NO_HEAP: AtomicPtr<Heap> = AtomicPtr::new(ptr::null_mut());
#[allow(clippy::declare_interior_mutable_const)]
const NO_REGIONS: Regions = Regions::new();

/// Heap number `i` (0 is the shared heap, which is not stored here).
static HEAPS: [AtomicPtr<Heap>; MAX_HEAPS] = [NO_HEAP; MAX_HEAPS];
/// Where heap number `i`'s blocks lie.
static REGIONS: [Regions; MAX_HEAPS] = [NO_REGIONS; MAX_HEAPS];
/// How many numbers are taken, the shared heap's included.
static COUNT: AtomicUsize = AtomicUsize::new(1);

/// Held to publish a heap, and by the fork handlers.
pub(super) static HEAP_LIST: SpinLock<()> = SpinLock::new(());

/// `index` as an index into the arrays: a no-op on heap numbers, which are
/// below MAX_HEAPS, that lets the compiler drop the bounds check (so no
/// panic is reachable from C).
#[inline(always)]
fn slot(index: usize) -> usize {
    index & (MAX_HEAPS - 1)
}

/// The heap numbered `index`, which is below the count.
fn heap_at(index: usize) -> &'static Heap {
    if index == 0 {
        return &SHARED;
    }
    // SAFETY: every entry below the count was set to a heap, never freed,
    // before the count was raised over it (Release in `publish`, Acquire in
    // the caller's read of the count).
    unsafe { &*HEAPS[slot(index)].load(Ordering::Relaxed) }
}

/// Every published heap, the shared one first.
pub(super) fn all() -> impl Iterator<Item = &'static Heap> {
    (0..COUNT.load(Ordering::Acquire)).map(heap_at)
}

/// Every published heap but `except` whose regions may hold `addr`.
#[inline]
pub(super) fn may_hold(addr: usize, except: Option<&Heap>) -> impl Iterator<Item = &'static Heap> + '_ {
    let count = COUNT.load(Ordering::Acquire);
    REGIONS
        .iter()
        .take(count)
        .enumerate()
        .filter(move |(_, regions)| regions.may_hold(addr))
        .map(|(index, _)| heap_at(index))
        .filter(move |heap| !except.map_or(false, |except| ptr::eq(except, *heap)))
}

/// Where `heap`'s blocks lie; the heap is published (or the shared one).
#[inline(always)]
pub(super) fn regions_of(heap: &Heap) -> &'static Regions {
    // The number is set before the heap is published; a heap is only
    // entered after that, by the thread that published it or through `all`.
    &REGIONS[slot(heap.number.load(Ordering::Relaxed))]
}

/// Gives a fresh heap a number; `false` when every number is taken.
pub(super) fn publish(heap: &'static Heap) -> bool {
    let _list = if super::fork::is_forking_thread() { None } else { Some(HEAP_LIST.lock()) };
    let index = COUNT.load(Ordering::Relaxed);
    if index == MAX_HEAPS {
        return false;
    }
    heap.number.store(index, Ordering::Relaxed);
    HEAPS[slot(index)].store(heap as *const Heap as *mut Heap, Ordering::Relaxed);
    COUNT.store(index + 1, Ordering::Release);
    true
}
