//! What v3 keeps for threads goes with the library when `dlclose` (or
//! `FreeLibrary`) unloads it (SPEC §3): the heaps and segments that hold no
//! live block are unmapped. Heaps with live blocks stay: those blocks stay valid (their
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
//!   two apart. The OS takes everything back at exit anyway. On Windows the
//!   unloading is itself an `atexit` function of the DLL, which the C
//!   runtime runs at `DLL_PROCESS_DETACH`, and the loader's flag
//!   (`RtlDllShutdownInProgress`) tells the two apart.
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

#[cfg(unix)]
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

/// Makes the thread slot's index and registers [`detached`]; when the DLL
/// is loaded. mingw-w64's C runtime keeps a DLL's `atexit` functions apart
/// and runs them, the last registered first, at `DLL_PROCESS_DETACH`: by
/// `FreeLibrary` and at process exit. Registered here, before
/// `debug::init` registers the `leaks` report, it runs after that report
/// (which would also be sound after it: `unload` takes the heaps it unmaps
/// off the list).
#[cfg(windows)]
pub fn init() {
    thread::init();
    // SAFETY: an `extern "C" fn()` that never unwinds, registered in the
    // DLL's own table, which the DLL's detach runs and then forgets.
    unsafe { libc::atexit(detached) };
}

/// The DLL's detach: at process exit nothing (the other threads were ended
/// wherever they were, and the OS takes the memory back); at `FreeLibrary`
/// the unloading, then the TLS index goes.
#[cfg(windows)]
extern "C" fn detached() {
    if super::exit_hook::process_is_exiting() {
        EXITING.store(true, Ordering::Relaxed);
        return;
    }
    unload();
    thread::shutdown();
}

#[cfg(not(any(unix, windows)))]
pub fn init() {}

/// Releases every heap that holds no live block, with its segments; called
/// from the library's `.fini_array` function (on Windows, from `detached`).
pub fn unload() {
    if EXITING.load(Ordering::Relaxed) {
        return;
    }
    let mine = thread::current();
    let is_mine = |heap: &Heap| mine.map_or(false, |mine| core::ptr::eq(mine, heap));
    if thread::heaps().any(|heap| heap.is_owned() && !is_mine(heap)) {
        return;
    }
    // The newest heap kept so far: the one whose link skips those unmapped.
    let mut newer: Option<&Heap> = None;
    for heap in thread::heaps() {
        if !is_mine(heap) && !heap.try_claim() {
            newer = Some(heap);
            continue;
        }
        thread::catch_up(heap);
        // Guest chunks of another heap's live tree keep it too. A heap kept
        // is given back, for the `leaks` report to walk.
        if heap.counts.holds_blocks() || heap.guests.count() != 0 {
            if !is_mine(heap) {
                heap.give_up();
            }
            newer = Some(heap);
            continue;
        }
        release_segments(heap);
        // A walk after this one (the `leaks` report, which `dlclose` runs
        // after us) sees the heaps still mapped, and only those.
        thread::unlink(newer, heap);
        if is_mine(heap) {
            thread::forget_current();
        }
        // SAFETY: the library is being unloaded and no thread is inside a
        // call (see above); `heaps` read this heap's link before yielding
        // it, and the list no longer leads to it.
        unsafe { heap.unmap() };
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
