//! Which heap is the calling thread's, the list of every heap, and a
//! heap's life: claimed at a thread's first allocation, given up when the
//! thread exits, adopted by a later thread.
//!
//! - A thread's first allocation adopts an orphan heap if there is one (its
//!   segments, pages and live trees come along: a segment names its heap,
//!   not a thread), else makes one. Heaps are never freed while the library
//!   is loaded, and the list only grows, so `stats`, the `leaks` report and
//!   adoption walk it without a lock.
//! - The exit hook is the default registry's `pthread_key` on POSIX systems
//!   (made at load, its destructor also run for a thread whose first call
//!   comes from another thread-exit path: a heap claimed there is
//!   registered again and given up in the next destructor round); on
//!   Windows a TLS callback of v3's own at `DLL_THREAD_DETACH`, reading the
//!   thread's slot, a `TlsAlloc` index. At exit the heap releases
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

use super::exit_hook;
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
#[cfg(all(test, unix))]
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

/// Takes `heap` off the list, `newer` being the heap listed just before it
/// (`None`: it is the newest). Only as the library is unloaded (`unload`),
/// when no call is running, so nothing else walks or grows the list.
pub fn unlink(newer: Option<&Heap>, heap: &Heap) {
    let older = heap.older();
    match newer {
        Some(newer) => newer.set_older(older),
        None => HEAPS.store(older as *mut Heap, Ordering::Release),
    }
}

/// The calling thread has no heap any more (its own was unmapped by
/// `unload`).
pub fn forget_current() {
    slot::set(core::ptr::null());
}

/// Every heap ever made and not unmapped, newest first.
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

/// The slot's value for the Windows exit hook (`exit_hook`).
#[cfg(windows)]
pub fn slot_value() -> *const Heap {
    slot::get()
}

/// Sets the slot for the Windows exit hook; false when it was refused.
#[cfg(windows)]
pub fn try_set_slot(heap: &Heap) -> bool {
    slot::try_set(heap)
}

/// Makes the thread slot's TLS index, when the DLL is loaded (`unload`).
#[cfg(windows)]
pub fn init() {
    slot::init();
}

/// Frees the TLS index as the DLL is unloaded (`unload`): no thread can
/// call in any more.
#[cfg(windows)]
pub fn shutdown() {
    slot::shutdown();
}

/// The thread's heap pointer, read on every call, so one load wherever that
/// can be had: on x86-64 Linux an 8-byte slot in initial-exec TLS (one
/// `mov` from `%fs`; see ARCHITECTURE.md, "Finding the thread's heap", for
/// why not `thread_local!` in a shared library), on Windows a TLS index,
/// elsewhere a `thread_local!` with no destructor.
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

    /// On Windows a `TlsAlloc` index of v3's own, made when the DLL is
    /// loaded (or by the first call, where no loader runs our initialiser):
    /// reading and writing it allocates nothing, where Rust 1.63's
    /// `thread_local!` on `windows-gnu` boxes the variable in the process
    /// heap at a thread's first use, aborts if that fails, and frees it from
    /// std's own TLS callback (docs/WINDOWS.md has why the process heap must
    /// not be ours). The slot is the exit hook's too: `exit_hook` reads it.
    /// With no index (none left, or the DLL unloaded) no heap can be bound,
    /// and every allocation is refused for want of memory.
    #[cfg(windows)]
    mod imp {
        use super::Heap;
        use core::ffi::c_void;
        use core::sync::atomic::{AtomicU32, Ordering};

        #[link(name = "kernel32")]
        extern "system" {
            fn TlsAlloc() -> u32;
            fn TlsFree(index: u32) -> i32;
            fn TlsGetValue(index: u32) -> *mut c_void;
            fn TlsSetValue(index: u32, value: *mut c_void) -> i32;
        }

        /// Refused by Windows, or freed as the DLL is unloaded.
        const NO_INDEX: u32 = 0xFFFF_FFFF; // TLS_OUT_OF_INDEXES
        /// Claimed by the first `init`, so that racing ones make one index.
        const MAKING: u32 = 0xFFFF_FFFE;
        const UNMADE: u32 = 0xFFFF_FFFD;

        static INDEX: AtomicU32 = AtomicU32::new(UNMADE);

        /// Makes the index, once.
        pub fn init() {
            if INDEX.compare_exchange(UNMADE, MAKING, Ordering::Acquire, Ordering::Acquire).is_ok() {
                // SAFETY: takes no arguments; a refusal is TLS_OUT_OF_INDEXES.
                INDEX.store(unsafe { TlsAlloc() }, Ordering::Release);
                return;
            }
            while INDEX.load(Ordering::Acquire) == MAKING {
                core::hint::spin_loop();
            }
        }

        #[inline(always)]
        fn index() -> Option<u32> {
            let mut index = INDEX.load(Ordering::Acquire);
            if index == UNMADE {
                init();
                index = INDEX.load(Ordering::Acquire);
            }
            match index {
                NO_INDEX | MAKING | UNMADE => None,
                index => Some(index),
            }
        }

        #[inline(always)]
        pub fn get() -> *const Heap {
            match index() {
                // SAFETY: our index; a slot never set reads as NULL.
                Some(index) => unsafe { TlsGetValue(index) }.cast::<Heap>(),
                None => core::ptr::null(),
            }
        }

        /// Whether the slot took the value: setting an index past the first
        /// 64 allocates the thread's expansion slots at its first set, which
        /// can be refused (later sets on that thread cannot).
        pub fn try_set(heap: *const Heap) -> bool {
            // SAFETY: our index; the value is only ever read back by us.
            index().map_or(false, |index| unsafe { TlsSetValue(index, heap as *mut c_void) } != 0)
        }

        pub fn set(heap: *const Heap) {
            try_set(heap);
        }

        /// Frees the index as the DLL is unloaded: no thread can call in after.
        pub fn shutdown() {
            let index = INDEX.swap(NO_INDEX, Ordering::AcqRel);
            if !matches!(index, NO_INDEX | MAKING | UNMADE) {
                // SAFETY: our index, freed once (the swap above).
                unsafe { TlsFree(index) };
            }
        }
    }

    /// Elsewhere (32-bit Linux, other POSIX systems) a `thread_local!` with
    /// no destructor: a native thread-local, which never allocates.
    #[cfg(not(any(all(target_os = "linux", target_arch = "x86_64"), windows)))]
    mod imp {
        use super::Heap;

        thread_local! {
            static HEAP: core::cell::Cell<*const Heap> = const { core::cell::Cell::new(core::ptr::null()) };
        }

        #[inline]
        pub fn get() -> *const Heap {
            // A Drop-free const thread-local is never torn down.
            HEAP.try_with(core::cell::Cell::get).unwrap_or(core::ptr::null())
        }

        pub fn set(heap: *const Heap) {
            let _ = HEAP.try_with(|slot| slot.set(heap));
        }
    }

    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    pub use imp::{get, set};
    #[cfg(windows)]
    pub use imp::{init, shutdown, try_set};
}
