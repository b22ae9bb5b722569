//! The thread-exit hook: what makes a thread give its heap up when it
//! exits (`thread::on_thread_exit`), so that a later thread adopts it.
//!
//! - POSIX: a `pthread_key` made when the library is loaded, whose value
//!   is the thread's heap. A Rust `thread_local!` with a destructor would
//!   register through glibc's `__cxa_thread_atexit_impl`, which callocs and
//!   calls `__libc_fatal` when that fails (an abort at a thread's first
//!   call, with memory short) and pins the library after `dlclose`;
//!   `pthread_setspecific` on one of the first 32 keys allocates nothing.
//!   glibc runs key destructors after C++ and Rust thread-local
//!   destructors, in up to four rounds, so a thread whose first call comes
//!   from one of those is caught too. The key is deleted as the library is
//!   unloaded, so that no later thread exit calls into unmapped code.
//! - Windows: the DLL's own TLS callback, which the loader calls at every
//!   thread's exit (`DLL_THREAD_DETACH`) while the DLL is loaded, after the
//!   Rust and C++ thread-local destructors of this module; it reads the
//!   heap from the thread's slot (`thread`), so nothing is registered per
//!   thread beyond the slot's value. Not while the process exits:
//!   `ExitProcess` has then ended the other threads wherever they were, and
//!   nobody is left to adopt the heap. A thread whose first call comes from
//!   a later detach (another DLL's) keeps its heap owned for good: its
//!   trees stay valid and freeable by any thread (a free is a kill), only
//!   its memory is not reused.

use super::heap::Heap;

#[cfg(unix)]
mod imp {
    use super::Heap;
    use core::sync::atomic::{AtomicU8, Ordering};

    const UNMADE: u8 = 0;
    const MAKING: u8 = 1;
    const MADE: u8 = 2;
    const REFUSED: u8 = 3;

    static STATE: AtomicU8 = AtomicU8::new(UNMADE);
    static mut KEY: libc::pthread_key_t = 0;

    extern "C" fn destructor(value: *mut libc::c_void) {
        super::super::thread::on_thread_exit(value as *const ());
    }

    /// Makes the key, once: when the library is loaded (or, where no loader
    /// runs our initialiser, at the first registration).
    pub fn init() {
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

    /// False only when the key's slot could not be had for want of memory;
    /// with no key at all (none left at load, or deleted as the library is
    /// unloaded) the heap is kept, owned, for good.
    pub fn register(heap: &Heap) -> bool {
        let key = match key() {
            Some(key) => key,
            None => return true,
        };
        // SAFETY: a key of ours; the value is only ever handed back to our
        // destructor.
        unsafe { libc::pthread_setspecific(key, heap as *const Heap as *const libc::c_void) != libc::ENOMEM }
    }

    /// Deletes the key as the library is unloaded.
    pub fn shutdown() {
        if STATE.compare_exchange(MADE, REFUSED, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            // SAFETY: our key, made in `init`; deleting it runs no destructor.
            unsafe { libc::pthread_key_delete(KEY) };
        }
    }
}

#[cfg(windows)]
mod imp {
    use super::Heap;
    use crate::region::thread;
    use core::ffi::c_void;

    const DLL_THREAD_DETACH: u32 = 3;

    #[used]
    #[link_section = ".CRT$XLD"]
    static ON_DETACH: unsafe extern "system" fn(*mut c_void, u32, *mut c_void) = on_detach;

    unsafe extern "system" fn on_detach(_module: *mut c_void, reason: u32, _reserved: *mut c_void) {
        if reason == DLL_THREAD_DETACH && !super::process_is_exiting() {
            let heap = thread::slot_value();
            if !heap.is_null() {
                thread::on_thread_exit(heap.cast());
            }
        }
    }

    pub fn init() {}

    /// False when the slot refused the value (no TLS index, or no memory
    /// for the thread's expansion slots): the heap would never be given up.
    pub fn register(heap: &Heap) -> bool {
        thread::try_set_slot(heap)
    }
}

/// Elsewhere no exit hook exists: a heap stays its thread's.
#[cfg(not(any(unix, windows)))]
mod imp {
    use super::Heap;

    pub fn init() {}

    pub fn register(_heap: &Heap) -> bool {
        true
    }
}

#[cfg(unix)]
pub use imp::shutdown;
pub use imp::{init, register};

/// Whether the process is exiting and its other threads are already gone.
#[cfg(windows)]
pub fn process_is_exiting() -> bool {
    #[link(name = "ntdll")]
    extern "system" {
        /// The loader's flag: set once `ExitProcess` has ended the other
        /// threads and begun detaching the DLLs (returns a `BOOLEAN`).
        fn RtlDllShutdownInProgress() -> u8;
    }
    // SAFETY: takes no arguments and only reads the loader's flag.
    unsafe { RtlDllShutdownInProgress() != 0 }
}
