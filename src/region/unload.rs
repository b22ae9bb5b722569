//! What v3 keeps for threads goes with the library when `dlclose` unloads
//! it (SPEC §3): the heaps and segments that hold no live block are
//! unmapped. Heaps with live blocks stay: those blocks stay valid (their
//! memory is the client's), though nothing can free them any more.
//!
//! Segments are never unmapped while the library can be called, because
//! any thread may read a published segment's header at any time with no
//! lock (`segmap`). So the unloading only releases memory when it can know
//! no call is running:
//! - **not at process exit**, where `.fini_array` runs too, while other
//!   threads may still be calling in. An `atexit` handler, which runs before
//!   the loader's destructors at exit but after ours at `dlclose` (crtstuff
//!   calls `__cxa_finalize` from the last `.fini_array` entry), tells the
//!   two apart. The OS takes everything back at exit anyway.
//! - **not while another thread owns a heap**: that thread may be inside a
//!   call. At `dlclose` the client's threads that used the library have
//!   normally exited (their heaps are orphans); if not, nothing is
//!   unmapped and the memory stays until the process ends.

use super::heap::Heap;
use super::{segmap, thread, SEGMENT_SIZE};
use crate::os;
use core::sync::atomic::{AtomicBool, Ordering};

/// Set by the `atexit` handler: the process is exiting, not unloading us.
static EXITING: AtomicBool = AtomicBool::new(false);

extern "C" fn process_exits() {
    EXITING.store(true, Ordering::Relaxed);
}

/// Registers the exit marker; when the library is loaded.
#[cfg(unix)]
pub fn init() {
    // SAFETY: an `extern "C" fn()` that never unwinds; registered with our
    // DSO handle, so `dlclose` runs it (after `unload`) and forgets it.
    unsafe { libc::atexit(process_exits) };
}

#[cfg(not(unix))]
pub fn init() {}

/// Releases every heap that holds no live block, with its segments; called
/// from the library's `.fini_array` function.
pub fn unload() {
    if EXITING.load(Ordering::Relaxed) {
        return;
    }
    let mine = thread::current();
    let is_mine = |heap: &Heap| mine.map_or(false, |mine| core::ptr::eq(mine, heap));
    if thread::heaps().any(|heap| heap.is_owned() && !is_mine(heap)) {
        return;
    }
    for heap in thread::heaps() {
        // Claimed for good: nobody may adopt it from here on.
        if !is_mine(heap) && !heap.try_claim() {
            continue;
        }
        thread::catch_up(heap);
        // Guest chunks of another heap's live tree keep it too.
        if !heap.counts.holds_blocks() && heap.guests.count() == 0 {
            release_segments(heap);
            // SAFETY: the library is being unloaded and no thread is inside
            // a call (see above); `heaps` read this heap's link before
            // yielding it, and nothing reads the list after this loop.
            unsafe { heap.unmap() };
        }
    }
    // The heap list and the segment map go with our static data.
}

fn release_segments(heap: &Heap) {
    // Each segment's link is read before it is yielded, so before it goes.
    for segment in heap.segments() {
        let start = segment as *const _ as usize;
        let len = segment.units() * SEGMENT_SIZE;
        segmap::withdraw(start);
        os::unmap(start as *mut u8, len);
    }
    heap.forget_segments();
}
