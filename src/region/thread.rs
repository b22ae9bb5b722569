//! Which heap is the calling thread's, the list of every heap, and a
//! heap's life: claimed at a thread's first allocation, given up when the
//! thread exits, adopted by a later thread.
//!
//! - A thread's first allocation adopts an orphan heap if there is one (its
//!   segments, pages and live trees come along: a segment names its heap,
//!   not a thread), else makes one. Heaps are never freed while the library
//!   is loaded, and the list only grows, so `stats`, the `leaks` report and
//!   adoption walk it without a lock.
//! - The exit hook is the default registry's `pthread_key` (made at load,
//!   its destructor also run for a thread whose first call comes from
//!   another thread-exit path: a heap claimed there is registered again
//!   and given up in the next destructor round). At exit the heap releases
//!   the trees other threads killed and its guest chunks of dead trees
//!   (`catch_up`), gives its unused memory back (`Heap::trim`) and becomes
//!   an orphan; its live trees and live guests stay where they are, valid,
//!   until someone frees them. Another thread may kill an orphan's tree
//!   (only atomics: `remote`); its adopter, or `stats`, catches up.
//! - `fork`: no lock is ever held, so none is left held in the child. A
//!   heap another thread owned at the fork is made an orphan there, as if
//!   that thread had exited, unless it was busy (in a call: `Call`), which
//!   leaves it frozen (`fork` has the rules). The forking thread keeps its
//!   own heap; orphans stay adoptable.

use super::heap::Heap;
use core::sync::atomic::{AtomicPtr, Ordering};

/// The newest heap; each links to the one made before it.
static HEAPS: AtomicPtr<Heap> = AtomicPtr::new(core::ptr::null_mut());

/// The calling thread's heap, if it has made one.
#[inline(always)]
pub fn current() -> Option<&'static Heap> {
    // SAFETY: a non-null slot holds a heap made by `create`, never freed.
    unsafe { slot::get().as_ref() }
}

/// The calling thread's heap, if it has made one, busy until the end of
/// the call (`Call`): for a call that may change it.
#[inline(always)]
pub fn entered() -> Option<&'static Heap> {
    let heap = current()?;
    heap.enter();
    Some(heap)
}

/// The calling thread's heap, adopted or made now if it has none, busy
/// until the end of the call (`Call`); `None` when the OS refuses the
/// memory or the exit hook its slot.
#[inline(always)]
pub fn heap() -> Option<&'static Heap> {
    match current() {
        Some(heap) => {
            heap.enter();
            Some(heap)
        }
        None => claim(),
    }
}

/// One call of the library on the calling thread. The call marks its heap
/// busy when it takes it ([`entered`], [`heap`]; a heap claimed during the
/// call is busy from its claim), so that a child forked meanwhile leaves it
/// alone (`fork`); the end of the call marks it idle again. Not nested:
/// only the library's entry points make one. The exports' leaf fast paths
/// (`alloc::quick_child`, `free::quick_free`) are calls without one: they
/// mark the heap busy before their first store and idle when done, the
/// same rule without the thread-local load the end of a `Call` costs.
pub struct Call(());

impl Call {
    #[inline(always)]
    pub fn begin() -> Call {
        Call(())
    }
}

impl Drop for Call {
    #[inline(always)]
    fn drop(&mut self) {
        if let Some(heap) = current() {
            heap.leave();
        }
    }
}

#[cold]
#[inline(never)]
fn claim() -> Option<&'static Heap> {
    let heap = match heaps().find(|heap| heap.try_claim()) {
        Some(orphan) => {
            catch_up(orphan);
            orphan
        }
        None => create()?,
    };
    if !exit_hook::register(heap) {
        // Refused for want of memory: without a hook the heap would never
        // be given up, so the call fails instead (MAPI_E_NOT_ENOUGH_MEMORY).
        heap.give_up();
        return None;
    }
    slot::set(heap);
    Some(heap)
}

/// Makes `heap`, an orphan, the calling thread's (which has none), as its
/// first call would adopt one: for tests that must know which.
#[cfg(test)]
pub fn adopt(heap: &'static Heap) -> bool {
    if current().is_some() || !heap.try_claim() {
        return false;
    }
    catch_up(heap);
    heap.leave();
    if !exit_hook::register(heap) {
        heap.give_up();
        return false;
    }
    slot::set(heap);
    true
}

/// A new heap, owned by the caller, published on the list.
fn create() -> Option<&'static Heap> {
    let heap = Heap::create()?;
    let mut newest = HEAPS.load(Ordering::Relaxed);
    loop {
        heap.set_older(newest);
        match HEAPS.compare_exchange_weak(
            newest,
            heap as *const Heap as *mut Heap,
            Ordering::Release,
            Ordering::Relaxed,
        ) {
            Ok(_) => return Some(heap),
            Err(now) => newest = now,
        }
    }
}

/// The exit hook's work for `heap`, the exiting thread's (the key's value):
/// later calls on this thread claim a heap again, and the next destructor
/// round gives that one up too.
pub fn on_thread_exit(heap: *const ()) {
    slot::set(core::ptr::null());
    // SAFETY: the key's value is a heap `claim` registered, never freed.
    if let Some(heap) = unsafe { heap.cast::<Heap>().as_ref() } {
        heap.enter();
        catch_up(heap);
        heap.trim();
        heap.give_up();
    }
}

/// Does for `heap`, which the caller holds, what its owner's next calls
/// would: releases the trees other threads killed in it (`remote`) and
/// frees its guest chunks whose trees are dead (`guest`). Run when a thread
/// exits (before its pages are trimmed), when a heap is adopted (kills that
/// came after its thread's exit), and by `stats` for each orphan it can
/// claim, so an orphan nobody adopts does not keep them for good.
pub fn catch_up(heap: &Heap) {
    super::remote::drain(heap);
    super::guest::sweep(heap);
}

/// Every heap ever made, newest first.
pub fn heaps() -> impl Iterator<Item = &'static Heap> {
    // SAFETY (for each step): heaps are published by a release CAS after
    // their `older` link is set, and never freed.
    let mut next = HEAPS.load(Ordering::Acquire) as *const Heap;
    core::iter::from_fn(move || {
        // SAFETY: see above.
        let heap = unsafe { next.as_ref() }?;
        next = heap.older();
        Some(heap)
    })
}

/// The default registry's thread-exit hook, shared: a value per thread
/// that its destructor hands to [`on_thread_exit`].
#[cfg(unix)]
mod exit_hook {
    use super::Heap;

    /// False only when the key's slot could not be had for want of memory;
    /// with no key at all (none left at load) the heap is kept, owned, for
    /// good, as the default registry's shared heap would be.
    pub fn register(heap: &Heap) -> bool {
        crate::registry::register_region_heap(heap as *const Heap as *const ()).is_ok()
    }
}

/// Elsewhere no exit hook is built yet for v3: a heap stays its thread's.
#[cfg(not(unix))]
mod exit_hook {
    use super::Heap;

    pub fn register(_heap: &Heap) -> bool {
        true
    }
}

/// The thread's heap pointer, read on every call, so one load wherever that
/// can be had: on x86-64 Linux an 8-byte slot in initial-exec TLS (one
/// `mov` from `%fs`; see ARCHITECTURE.md, "Finding the thread's heap", for
/// why not `thread_local!` in a shared library), elsewhere a
/// `thread_local!` with no destructor.
mod slot {
    use super::Heap;

    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    core::arch::global_asm!(
        ".pushsection .tbss,\"awT\",@nobits",
        ".p2align 3",
        ".globl mapi32_region_heap",
        ".hidden mapi32_region_heap",
        ".type mapi32_region_heap,@object",
        ".size mapi32_region_heap,8",
        "mapi32_region_heap:",
        ".zero 8",
        ".popsection",
    );

    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    #[inline(always)]
    pub fn get() -> *const Heap {
        let heap: *const Heap;
        // SAFETY: reads this thread's own slot, declared above; %fs is set
        // up by the C runtime before any code of ours runs on a thread.
        unsafe {
            core::arch::asm!(
                "mov {heap}, qword ptr [rip + mapi32_region_heap@GOTTPOFF]",
                "mov {heap}, qword ptr fs:[{heap}]",
                heap = out(reg) heap,
                options(nostack, readonly, preserves_flags),
            );
        }
        heap
    }

    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    pub fn set(heap: *const Heap) {
        // SAFETY: writes this thread's own slot, as in `get`.
        unsafe {
            core::arch::asm!(
                "mov {offset}, qword ptr [rip + mapi32_region_heap@GOTTPOFF]",
                "mov qword ptr fs:[{offset}], {heap}",
                offset = out(reg) _,
                heap = in(reg) heap,
                options(nostack, preserves_flags),
            );
        }
    }

    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    thread_local! {
        static HEAP: core::cell::Cell<*const Heap> = const { core::cell::Cell::new(core::ptr::null()) };
    }

    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    #[inline]
    pub fn get() -> *const Heap {
        // A Drop-free const thread-local is never torn down.
        HEAP.try_with(core::cell::Cell::get).unwrap_or(core::ptr::null())
    }

    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    pub fn set(heap: *const Heap) {
        let _ = HEAP.try_with(|slot| slot.set(heap));
    }
}
