//! `fork()` must leave the child able to use the library at once (SPEC §3):
//! before forking, the parent takes every heap with nobody half-way through
//! changing it; afterwards both processes let go, and in the child the heaps
//! of threads that did not come along become orphans.
//!
//! Two things make that safe whatever else the process does:
//! - **The forking thread may call in from other fork handlers.** Handlers
//!   registered before ours run after our `prepare` and before our `parent`
//!   and `child`; a MAPI call there finds every lock held for its own thread
//!   ([`is_forking_thread`]) and goes straight in: nobody else is inside.
//! - **`prepare` never waits on the C allocator.** A malloc whose own fork
//!   handlers were registered after ours takes its lock before our `prepare`
//!   runs; waiting there for a thread that is inside a heap and calling that
//!   malloc would never end. Blocks are allocated outside any heap, and the
//!   few calls into the C allocator made inside (the block map's nodes)
//!   *park* the heap:
//!   the records are consistent across the call, `prepare` need not wait for
//!   it, and on its way out the caller waits, still parked, for the fork to
//!   be over before it goes on ([`while_parked`]).

#[cfg(unix)]
use super::directory::{self, HEAP_LIST};
use super::{lock, thread, Heap};
use core::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};

/// Set by `prepare` and cleared in both processes after the fork.
static FORK_PENDING: AtomicBool = AtomicBool::new(false);
/// The forking thread (`pthread_self`) while the fork handlers run, else 0.
static FORKING_THREAD: AtomicUsize = AtomicUsize::new(0);

/// Whether this thread is forking: between our `prepare` and our `parent`
/// or `child` handler it alone may be inside the library.
#[inline]
pub(super) fn is_forking_thread() -> bool {
    let forking = FORKING_THREAD.load(Ordering::Relaxed);
    forking != 0 && forking == this_thread()
}

#[cfg(unix)]
fn this_thread() -> usize {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() as usize }
}

#[cfg(not(unix))]
fn this_thread() -> usize {
    usize::MAX
}

/// The forking thread must not go into a heap that another thread left
/// parked in the middle of a call (it will go on once the fork is over): a
/// lookup passes that heap by. Only a MAPI call from a fork handler, while
/// another thread is inside the C allocator, can meet one.
pub(super) fn must_pass_by(heap: &Heap) -> bool {
    is_forking_thread() && heap.parked.load(Ordering::Acquire)
}

/// Runs `call` (into the C allocator) with the heap this thread is inside,
/// if any, parked; on the way out waits, still parked, while a fork is under
/// way, so that the heap does not change under the fork's feet.
#[inline]
pub(crate) fn while_parked<R>(call: impl FnOnce() -> R) -> R {
    let heap = match thread::inside_heap() {
        Some(heap) if !is_forking_thread() => heap,
        _ => return call(),
    };
    // Release: the records as they stand are what a forked child may see.
    heap.parked.store(true, Ordering::Release);
    let result = call();
    loop {
        heap.parked.store(false, Ordering::Relaxed);
        // Dekker with `prepare`: either it sees us unparked and waits for us
        // to leave the heap, or we see the fork coming and park again.
        fence(Ordering::SeqCst);
        if !FORK_PENDING.load(Ordering::Relaxed) {
            return result;
        }
        heap.parked.store(true, Ordering::Release);
        lock::wait_until(|| !FORK_PENDING.load(Ordering::Acquire));
    }
}

/// Registers the handlers; done once, when the library is loaded.
#[cfg(unix)]
pub(super) fn register_handlers() {
    // SAFETY: the three handlers are `extern "C" fn()` that never unwind
    // and live as long as the library is loaded (glibc forgets them when it
    // is unloaded). If registration fails (ENOMEM at load), the library
    // still works; only fork safety is lost.
    unsafe { libc::pthread_atfork(Some(prepare), Some(in_parent), Some(in_child)) };
}

#[cfg(unix)]
extern "C" fn prepare() {
    FORK_PENDING.store(true, Ordering::Relaxed);
    fence(Ordering::SeqCst);
    HEAP_LIST.acquire();
    for heap in directory::all() {
        // A guest that is parked keeps its lock over the fork.
        let took = loop {
            if heap.guest.try_acquire() {
                break true;
            }
            if heap.parked.load(Ordering::Acquire) {
                break false;
            }
            core::hint::spin_loop();
        };
        heap.fork_took_lock.store(took, Ordering::Relaxed);
        if took {
            heap.guest_waiting.store(true, Ordering::Relaxed);
        }
    }
    // One fence for all heaps, then wait for every owner to step out or park.
    fence(Ordering::SeqCst);
    for heap in directory::all() {
        lock::wait_until(|| {
            !(heap.owned.load(Ordering::Relaxed) && heap.owner_busy.load(Ordering::Acquire))
                || heap.parked.load(Ordering::Acquire)
        });
    }
    // Only now: the forking thread's own calls from the handlers that run
    // next go straight in.
    FORKING_THREAD.store(this_thread(), Ordering::Relaxed);
}

/// Lets go of what `prepare` took. In the child, the locks held by threads
/// parked in the parent are let go too: they did not come along.
#[cfg(unix)]
fn release_all(in_child: bool) {
    FORKING_THREAD.store(0, Ordering::Relaxed);
    for heap in directory::all() {
        if heap.fork_took_lock.load(Ordering::Relaxed) || in_child {
            heap.guest_waiting.store(false, Ordering::Release);
            // SAFETY: `prepare` took this lock on this thread just before
            // the fork (in the child this thread is its copy), or, in the
            // child, its holder was parked in the parent and is not here.
            unsafe { heap.guest.release() };
        }
        heap.fork_took_lock.store(false, Ordering::Relaxed);
    }
    // SAFETY: as above, for the list lock.
    unsafe { HEAP_LIST.release() };
    FORK_PENDING.store(false, Ordering::Release);
}

#[cfg(unix)]
extern "C" fn in_parent() {
    release_all(false);
}

#[cfg(unix)]
extern "C" fn in_child() {
    let mine = thread::current_raw();
    for heap in directory::all() {
        if !core::ptr::eq(heap, mine) {
            // Its owner thread did not come along; a parked caller's records
            // are consistent, so the heap is as good as any orphan.
            heap.owned.store(false, Ordering::Relaxed);
            heap.owner_busy.store(false, Ordering::Relaxed);
        }
        heap.parked.store(false, Ordering::Relaxed);
    }
    release_all(true);
}
