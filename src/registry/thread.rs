//! Which heap a thread owns: found on every call, claimed at its first,
//! given up when the thread exits, and everything the library keeps for
//! threads released when it is unloaded.
//!
//! - The heap pointer lives in a thread-local slot read with one load.
//! - The exit hook is registered without allocating anything that could
//!   abort: on POSIX systems a `pthread_key` made when the library is loaded,
//!   whose destructor also runs for a thread whose first call comes from
//!   another thread-exit path (another key's destructor, a C++ or Rust
//!   thread-local's); on Windows a TLS callback, reading a `TlsAlloc` slot.
//! - Heaps are reused, never freed while the library is loaded; the first
//!   ones come from a static pool, so that `dlclose` takes them along.

use super::{directory, Heap, SHARED};
use crate::scode::Error;
use crate::sys;
use core::sync::atomic::{AtomicUsize, Ordering};

/// [`current`] once the thread's exit hook has run: never a heap.
const GONE: *const Heap = 1 as *const Heap;

/// Heaps in the library's own static data: as many threads as allocate at
/// once, up to this, cost no allocation, and unloading the library releases
/// them with it. More threads get heaps from the C allocator.
const POOL_HEAPS: usize = 64;

// Only the pool's repeat expression below uses it, each use a fresh heap:
// Rust 1.63 has no inline `const { }` block to write there instead.
#[allow(clippy::declare_interior_mutable_const)]
const EMPTY_HEAP: Heap = Heap::new(false);
static POOL: [Heap; POOL_HEAPS] = [EMPTY_HEAP; POOL_HEAPS];
/// How many heaps of [`POOL`] have been handed out (may overshoot).
static POOL_USED: AtomicUsize = AtomicUsize::new(0);

/// This thread's heap pointer: null until the thread roots its first tree,
/// [`GONE`] once its exit hook has run; and the heap the thread is inside
/// right now, if any (for `fork`'s parking). Read on every call, so each is
/// one load wherever that can be had.
mod slot {
    use super::Heap;

    /// On x86-64 Linux the slots are declared by hand in the initial-exec TLS
    /// model: one `mov` from `%fs`, where Rust's `thread_local!` in a shared
    /// library goes through `__tls_get_addr` (about 3 ns per allocate-free
    /// pair on the benchmark machine, a third of malloc's own cost) and may
    /// allocate on a thread's first use. The loader reserves the 16 bytes in
    /// static TLS, as it does for glibc's, jemalloc's and mimalloc's own
    /// thread state.
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    mod imp {
        use super::Heap;

        // Zero-initialised (.tbss), hidden: one pair per loaded copy of the
        // library, never exported.
        core::arch::global_asm!(
            ".pushsection .tbss,\"awT\",@nobits",
            ".p2align 3",
            ".globl mapi32_current_heap",
            ".hidden mapi32_current_heap",
            ".type mapi32_current_heap,@object",
            ".size mapi32_current_heap,8",
            "mapi32_current_heap:",
            ".zero 8",
            ".globl mapi32_inside_heap",
            ".hidden mapi32_inside_heap",
            ".type mapi32_inside_heap,@object",
            ".size mapi32_inside_heap,8",
            "mapi32_inside_heap:",
            ".zero 8",
            ".popsection",
        );

        macro_rules! tls_slot {
            ($get:ident, $set:ident, $symbol:literal) => {
                #[inline(always)]
                pub(in crate::registry) fn $get() -> *const Heap {
                    let heap: *const Heap;
                    // SAFETY: reads this thread's own 8-byte slot, declared
                    // above; the thread pointer in %fs is set up by the C
                    // runtime before any code of ours runs on a thread.
                    unsafe {
                        core::arch::asm!(
                            concat!("mov {heap}, qword ptr [rip + ", $symbol, "@GOTTPOFF]"),
                            "mov {heap}, qword ptr fs:[{heap}]",
                            heap = out(reg) heap,
                            options(nostack, readonly, preserves_flags),
                        );
                    }
                    heap
                }

                #[inline(always)]
                pub(in crate::registry) fn $set(heap: *const Heap) {
                    // SAFETY: writes this thread's own slot, as in the getter.
                    unsafe {
                        core::arch::asm!(
                            concat!("mov {offset}, qword ptr [rip + ", $symbol, "@GOTTPOFF]"),
                            "mov qword ptr fs:[{offset}], {heap}",
                            offset = out(reg) _,
                            heap = in(reg) heap,
                            options(nostack, preserves_flags),
                        );
                    }
                }
            };
        }

        tls_slot!(current, set_current, "mapi32_current_heap");
        tls_slot!(inside, set_inside, "mapi32_inside_heap");
    }

    /// On Windows, one TLS index of the system's (`TlsAlloc`), made when the
    /// DLL is loaded: reading and writing it allocates nothing, where Rust
    /// 1.63's `thread_local!` on `windows-gnu` boxes each variable on a
    /// thread's first use and aborts if that allocation fails. The "inside"
    /// slot serves `fork` only, which Windows does not have. With no index
    /// (none left, or the DLL being unloaded) every thread reads [`GONE`] and
    /// is served by the shared heap.
    #[cfg(windows)]
    pub(in crate::registry) mod imp {
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

        /// Makes the index, once: when the DLL is loaded (or, where no
        /// loader runs our initialiser, at a thread's first call).
        pub(in crate::registry) fn init() {
            if INDEX.compare_exchange(UNMADE, MAKING, Ordering::Acquire, Ordering::Acquire).is_ok() {
                // SAFETY: takes no arguments; a refusal is TLS_OUT_OF_INDEXES.
                INDEX.store(unsafe { TlsAlloc() }, Ordering::Release);
                return;
            }
            while INDEX.load(Ordering::Acquire) == MAKING {
                core::hint::spin_loop();
            }
        }

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

        #[inline]
        pub(in crate::registry) fn current() -> *const Heap {
            match index() {
                Some(index) => {
                    // SAFETY: our index; an unset slot reads as NULL.
                    let value = unsafe { TlsGetValue(index) };
                    value as *const Heap
                }
                None => super::super::GONE,
            }
        }

        /// Whether the slot took the value: setting one of the indexes past
        /// the first 64 allocates the thread's expansion slots at its first
        /// set, which can be refused (later sets on that thread cannot).
        pub(in crate::registry) fn try_set_current(heap: *const Heap) -> bool {
            // SAFETY: our index; the value is only ever read back by us.
            index().map_or(false, |index| unsafe { TlsSetValue(index, heap as *mut c_void) } != 0)
        }

        #[inline]
        pub(in crate::registry) fn set_current(heap: *const Heap) {
            try_set_current(heap);
        }

        /// Frees the index as the DLL is unloaded: no thread can call in after.
        pub(in crate::registry) fn shutdown() {
            let index = INDEX.swap(NO_INDEX, Ordering::AcqRel);
            if !matches!(index, NO_INDEX | MAKING | UNMADE) {
                // SAFETY: our index, freed once (the swap above).
                unsafe { TlsFree(index) };
            }
        }

        #[inline]
        pub(in crate::registry) fn inside() -> *const Heap {
            core::ptr::null()
        }

        #[inline]
        pub(in crate::registry) fn set_inside(_heap: *const Heap) {}
    }

    /// Elsewhere (32-bit Linux, other POSIX systems), `thread_local!`s with
    /// no destructor, so no state to check.
    #[cfg(not(any(all(target_os = "linux", target_arch = "x86_64"), windows)))]
    mod imp {
        use super::Heap;
        use core::cell::Cell;

        thread_local! {
            static CURRENT: Cell<*const Heap> = const { Cell::new(core::ptr::null()) };
            static INSIDE: Cell<*const Heap> = const { Cell::new(core::ptr::null()) };
        }

        #[inline]
        pub(in crate::registry) fn current() -> *const Heap {
            // A Drop-free const thread-local is never torn down.
            CURRENT.try_with(Cell::get).unwrap_or(super::super::GONE)
        }

        #[inline]
        pub(in crate::registry) fn set_current(heap: *const Heap) {
            let _ = CURRENT.try_with(|current| current.set(heap));
        }

        #[inline]
        pub(in crate::registry) fn inside() -> *const Heap {
            INSIDE.try_with(Cell::get).unwrap_or(core::ptr::null())
        }

        #[inline]
        pub(in crate::registry) fn set_inside(heap: *const Heap) {
            let _ = INSIDE.try_with(|inside| inside.set(heap));
        }
    }

    pub(in crate::registry) use imp::{current, inside, set_current, set_inside};
}

pub(super) use slot::set_inside;

/// The heap this thread is inside right now, if any.
pub(super) fn inside_heap() -> Option<&'static Heap> {
    // SAFETY: a non-null value is a published heap, never freed.
    unsafe { slot::inside().as_ref() }
}

/// This thread's heap, if it has one.
#[inline(always)]
pub(super) fn current_heap() -> Option<&'static Heap> {
    let heap = slot::current();
    if heap as usize > GONE as usize {
        // SAFETY: any other value is a published heap, never freed.
        Some(unsafe { &*heap })
    } else {
        None
    }
}

/// Where this thread records a new root: its own heap, which it adopts or
/// makes on first use; `None` when it cannot have one (its exit hook has run,
/// or none can be set), and the shared heap serves it.
#[inline(always)]
pub(super) fn home_heap() -> Result<Option<&'static Heap>, Error> {
    match current_heap() {
        Some(heap) => Ok(Some(heap)),
        None => first_home_heap(),
    }
}

#[cold]
#[inline(never)]
fn first_home_heap() -> Result<Option<&'static Heap>, Error> {
    if slot::current() == GONE {
        return Ok(None);
    }
    let heap = match claim_heap()? {
        Some(heap) => heap,
        None => {
            // The directory is full: the shared heap serves this thread.
            slot::set_current(GONE);
            return Ok(None);
        }
    };
    match exit_hook::register(heap) {
        Ok(true) => {
            slot::set_current(heap);
            Ok(Some(heap))
        }
        // No hook could be set: a heap would never be given up.
        Ok(false) => {
            heap.orphan();
            Ok(None)
        }
        Err(error) => {
            heap.orphan();
            Err(error)
        }
    }
}

/// Adopts an orphan heap, or takes a new one and publishes it; `None` when
/// the directory has no room for another.
fn claim_heap() -> Result<Option<&'static Heap>, Error> {
    for heap in directory::all() {
        if core::ptr::eq(heap, &SHARED) || heap.owned.load(Ordering::Relaxed) {
            continue;
        }
        let _guard = if super::fork::is_forking_thread() { None } else { Some(heap.guest.lock()) };
        if !heap.owned.load(Ordering::Relaxed) {
            heap.owned.store(true, Ordering::Relaxed);
            return Ok(Some(heap));
        }
    }
    let heap = new_heap()?;
    if directory::publish(heap) {
        return Ok(Some(heap));
    }
    // Only past the pool: a heap from the C allocator, seen by nobody yet.
    if !POOL.as_ptr_range().contains(&(heap as *const Heap)) {
        // SAFETY: `new_heap` took it from `sys::alloc_aligned` just now, and
        // it was never published.
        unsafe { sys::release(heap as *const Heap as *mut u8) };
    }
    Ok(None)
}

/// A fresh, owned, unpublished heap: from the pool while it lasts.
fn new_heap() -> Result<&'static Heap, Error> {
    let index = POOL_USED.fetch_add(1, Ordering::Relaxed);
    if let Some(heap) = POOL.get(index) {
        heap.owned.store(true, Ordering::Relaxed);
        return Ok(heap);
    }
    let memory = sys::alloc_aligned(core::mem::size_of::<Heap>()).cast::<Heap>();
    if memory.is_null() {
        return Err(Error::NoMemory);
    }
    // SAFETY: fresh memory of the right size, aligned to BLOCK_ALIGN (more
    // than Heap needs); nothing else can see it until it is published, and
    // heaps are never freed while the library is loaded.
    unsafe {
        memory.write(Heap::new(true));
        Ok(&*memory)
    }
}

/// Gives up this thread's heap when the thread exits.
fn on_thread_exit(heap: *const Heap) {
    // Later calls on this thread (from other thread-exit paths) must not take
    // the owner's path into a heap that is about to be adopted by another
    // thread: they use the shared heap.
    slot::set_current(GONE);
    // When a Windows process exits, every other thread is ended wherever it
    // was, perhaps holding this heap's lock, before the exiting thread runs
    // this: taking the lock would wait forever, and nobody is left to adopt
    // the heap anyway.
    if process_is_exiting() {
        return;
    }
    // SAFETY: a non-null pointer here is a published heap, never freed.
    if let Some(heap) = unsafe { heap.as_ref() } {
        heap.orphan();
    }
}

/// The thread-exit hook on POSIX systems: a `pthread_key` whose destructor
/// runs at thread exit. `pthread_setspecific` on one of the first 32 keys
/// (as ours is in practice) allocates nothing; past those it may, and a
/// refusal is reported as no memory. glibc runs key destructors in up to 4
/// rounds after C++ and Rust thread-local destructors, so a thread whose
/// first call comes from any of those is still caught; only a first call
/// from a destructor of the last round keeps its (empty) heap owned.
#[cfg(unix)]
mod exit_hook {
    use super::Heap;
    use crate::scode::Error;
    use core::sync::atomic::{AtomicU8, Ordering};

    const UNMADE: u8 = 0;
    const MAKING: u8 = 1;
    const MADE: u8 = 2;
    const REFUSED: u8 = 3;

    static STATE: AtomicU8 = AtomicU8::new(UNMADE);
    static mut KEY: libc::pthread_key_t = 0;

    /// Marks a key value that is a region heap (`region`), not one of
    /// ours: both kinds of heap are aligned to more than 2 bytes. One key
    /// serves both, and a build with the feature still runs this registry's
    /// unit tests.
    #[cfg(not(feature = "previous-registry"))]
    pub(in crate::registry) const REGION_TAG: usize = 1;

    extern "C" fn destructor(value: *mut libc::c_void) {
        #[cfg(not(feature = "previous-registry"))]
        if value as usize & REGION_TAG != 0 {
            crate::region::on_thread_exit((value as usize & !REGION_TAG) as *const ());
            return;
        }
        super::on_thread_exit(value as *const Heap);
    }

    /// Makes the key, once: when the library is loaded (or, where no loader
    /// runs our initialiser, at the first claim).
    pub(in crate::registry) fn init() {
        if STATE.compare_exchange(UNMADE, MAKING, Ordering::Acquire, Ordering::Acquire).is_err() {
            return;
        }
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `key` is a valid out-pointer and the destructor an
        // `extern "C" fn` that never unwinds.
        let made = unsafe { libc::pthread_key_create(&mut key, Some(destructor)) } == 0;
        if made {
            // SAFETY: written once, before STATE publishes it with Release.
            unsafe { KEY = key };
        }
        STATE.store(if made { MADE } else { REFUSED }, Ordering::Release);
    }

    fn key() -> Option<libc::pthread_key_t> {
        init();
        let mut state = STATE.load(Ordering::Acquire);
        while state == MAKING {
            core::hint::spin_loop();
            state = STATE.load(Ordering::Acquire);
        }
        if state != MADE {
            return None;
        }
        // SAFETY: KEY was written before STATE became MADE (Acquire above),
        // and is not written again.
        Some(unsafe { KEY })
    }

    /// Arranges for `heap` to be given up when this thread exits: `Ok(false)`
    /// when no key exists (or it was deleted as the library is unloaded).
    pub(in crate::registry) fn register(heap: &Heap) -> Result<bool, Error> {
        register_value(heap as *const Heap as *const ())
    }

    /// The same for any value the destructor knows what to do with.
    pub(in crate::registry) fn register_value(value: *const ()) -> Result<bool, Error> {
        let key = match key() {
            Some(key) => key,
            None => return Ok(false),
        };
        // SAFETY: a key of ours; the value is only ever handed back to our
        // destructor.
        match unsafe { libc::pthread_setspecific(key, value as *const libc::c_void) } {
            0 => Ok(true),
            libc::ENOMEM => Err(Error::NoMemory),
            _ => Ok(false),
        }
    }

    /// Deletes the key when the library is unloaded, so that no thread that
    /// exits later calls a destructor that is no longer mapped.
    pub(in crate::registry) fn shutdown() {
        if STATE.compare_exchange(MADE, REFUSED, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            // SAFETY: our key, made in `init`; deleting it runs no destructor.
            unsafe { libc::pthread_key_delete(KEY) };
        }
    }
}

/// The thread-exit hook on Windows: a TLS callback, which the loader calls
/// at every thread's exit (`DLL_THREAD_DETACH`) while the DLL is loaded,
/// after the Rust and C++ thread-local destructors of this module. Nothing
/// is registered per thread, so nothing can fail or allocate beyond the
/// slot itself. A thread whose first call comes from a later detach (another
/// DLL's) keeps its (empty) heap owned, as a last-round key destructor's
/// does on POSIX systems.
#[cfg(windows)]
mod exit_hook {
    use super::{slot, Heap, GONE};
    use crate::scode::Error;
    use core::ffi::c_void;

    const DLL_PROCESS_DETACH: u32 = 0;
    const DLL_THREAD_DETACH: u32 = 3;

    #[used]
    #[link_section = ".CRT$XLD"]
    static ON_DETACH: unsafe extern "system" fn(*mut c_void, u32, *mut c_void) = on_detach;

    unsafe extern "system" fn on_detach(_module: *mut c_void, reason: u32, _reserved: *mut c_void) {
        match reason {
            DLL_THREAD_DETACH => {
                let heap = slot::current();
                if heap != GONE {
                    // Also for a thread with no heap yet: its later calls,
                    // from other DLLs' detach code, use the shared heap.
                    super::on_thread_exit(heap);
                }
            }
            // Unloaded by FreeLibrary (at process exit there is nothing to
            // give back): no thread can call in any more.
            DLL_PROCESS_DETACH if !super::process_is_exiting() => slot::imp::shutdown(),
            _ => {}
        }
    }

    pub(in crate::registry) fn init() {
        slot::imp::init();
    }

    /// Arranges for `heap` to be given up when this thread exits, which is
    /// storing it in the slot the callback reads.
    pub(in crate::registry) fn register(heap: &Heap) -> Result<bool, Error> {
        if slot::imp::try_set_current(heap) {
            Ok(true)
        } else if slot::current() == GONE {
            Ok(false)
        } else {
            Err(Error::NoMemory)
        }
    }
}

pub(super) use exit_hook::init;

/// Arranges for `heap`, a region heap (`region`), to reach
/// `region::on_thread_exit` when this thread exits: `Ok(false)` when no key
/// exists.
#[cfg(all(unix, not(feature = "previous-registry")))]
pub(crate) fn register_region_heap(heap: *const ()) -> Result<bool, Error> {
    exit_hook::register_value((heap as usize | exit_hook::REGION_TAG) as *const ())
}

/// Releases what the library keeps for threads as it is unloaded (or the
/// process exits): the exit hook goes, so that no later thread exit calls
/// into unmapped code; the pooled heaps go with the library's static data.
/// Heaps still owned by live threads are left alone: at process exit those
/// threads may still be running.
#[cfg(unix)]
pub fn shutdown() {
    exit_hook::shutdown();
}

/// Whether the process is exiting and its other threads are already gone
/// (also for registry v3's exit hook and unloading, `region`).
#[cfg(windows)]
pub(crate) fn process_is_exiting() -> bool {
    #[link(name = "ntdll")]
    extern "system" {
        /// The loader's flag: set once `ExitProcess` has ended the other
        /// threads and begun detaching the DLLs (returns a `BOOLEAN`).
        fn RtlDllShutdownInProgress() -> u8;
    }
    // SAFETY: takes no arguments and only reads the loader's flag.
    unsafe { RtlDllShutdownInProgress() != 0 }
}

/// Elsewhere a process's exit does not end its other threads first.
#[cfg(not(windows))]
pub(crate) fn process_is_exiting() -> bool {
    false
}

/// For `fork`'s child: this thread's heap pointer, as it was.
#[cfg(unix)]
pub(super) fn current_raw() -> *const Heap {
    slot::current()
}
