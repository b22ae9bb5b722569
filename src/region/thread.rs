//! Which heap is the calling thread's, and the list of every heap.
//!
//! A thread gets its heap at its first allocation. Heaps are never freed:
//! in this step a thread's heap and segments stay when it exits (adoption
//! by a later thread is the next step's), and the list only grows, so
//! `stats` can walk it without a lock.

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

/// The calling thread's heap, made now if it has none; `None` when the OS
/// refuses the memory.
#[inline(always)]
pub fn heap() -> Option<&'static Heap> {
    match current() {
        Some(heap) => Some(heap),
        None => create(),
    }
}

#[cold]
#[inline(never)]
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
            Ok(_) => break,
            Err(now) => newest = now,
        }
    }
    slot::set(heap);
    Some(heap)
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
