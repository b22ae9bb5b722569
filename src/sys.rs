//! The C allocator: every byte the library owns, blocks and registry tables
//! alike, comes from here, so valgrind, AddressSanitizer and an `LD_PRELOAD`ed
//! malloc see it as usual (SPEC §3). Nothing here can abort: a refusal is a
//! NULL pointer, which callers turn into `MAPI_E_NOT_ENOUGH_MEMORY`.

use crate::registry;

/// Alignment of every pointer handed to a client: enough for any MAPI
/// structure (`SPropValue` with doubles, `FILETIME`, `LARGE_INTEGER`).
pub const BLOCK_ALIGN: usize = if cfg!(target_pointer_width = "64") { 16 } else { 8 };

/// `size` bytes aligned to [`BLOCK_ALIGN`], or NULL.
pub fn alloc_aligned(size: usize) -> *mut u8 {
    if injected_failure() {
        return core::ptr::null_mut();
    }
    // Every call into the C allocator parks the registry heap the thread is
    // inside, if any, so that `fork` never waits on the C allocator's locks.
    registry::while_parked(|| aligned_from_c(size))
}

fn aligned_from_c(size: usize) -> *mut u8 {
    // malloc is much cheaper than posix_memalign in glibc, and the C runtimes
    // align it to 16 bytes on 64-bit platforms (8 on 32-bit): BLOCK_ALIGN.
    // SAFETY: malloc accepts any size and returns NULL when it cannot comply.
    let block = unsafe { libc::malloc(size) };
    if block as usize % BLOCK_ALIGN == 0 {
        return block.cast();
    }
    // An interposed malloc broke that promise.
    // SAFETY: `block` came from malloc just above and is not used again.
    unsafe { libc::free(block) };
    aligned_fallback(size)
}

/// posix_memalign, whose blocks free() releases like malloc's.
#[cfg(unix)]
fn aligned_fallback(size: usize) -> *mut u8 {
    let mut block: *mut libc::c_void = core::ptr::null_mut();
    // SAFETY: `block` is a valid out-pointer and BLOCK_ALIGN is a power of two
    // and a multiple of `sizeof(void *)`, as posix_memalign requires. On
    // failure it returns non-zero and leaves `block` untouched (NULL).
    let status = unsafe { libc::posix_memalign(&mut block, BLOCK_ALIGN, size) };
    if status == 0 {
        block.cast()
    } else {
        core::ptr::null_mut()
    }
}

/// None on Windows: `_aligned_malloc` blocks need `_aligned_free`, which
/// `release` does not call, so the block is refused.
#[cfg(not(unix))]
fn aligned_fallback(_size: usize) -> *mut u8 {
    core::ptr::null_mut()
}

/// `count * size` zeroed bytes, or NULL (also when the product overflows).
pub fn alloc_zeroed(count: usize, size: usize) -> *mut u8 {
    if injected_failure() {
        return core::ptr::null_mut();
    }
    // SAFETY: calloc accepts any arguments and checks the product itself.
    registry::while_parked(|| unsafe { libc::calloc(count, size) }).cast()
}

/// Returns memory from [`alloc_aligned`] or [`alloc_zeroed`] to the C allocator.
///
/// # Safety
/// `ptr` is NULL or came from one of those functions and was not released yet.
pub unsafe fn release(ptr: *mut u8) {
    // SAFETY: by the caller's contract, `ptr` is a live C-allocator block (or NULL).
    registry::while_parked(|| unsafe { libc::free(ptr.cast()) })
}

// Test builds, and builds with the `fault-injection` feature (never the
// shipped library), can make the Nth allocation of a thread fail.
#[cfg(any(test, feature = "fault-injection"))]
pub use fault::fail_allocation_after;

#[cfg(any(test, feature = "fault-injection"))]
pub(crate) fn injected_failure() -> bool {
    fault::should_fail()
}

#[cfg(not(any(test, feature = "fault-injection")))]
#[inline(always)]
pub(crate) fn injected_failure() -> bool {
    false
}

/// Makes the Nth allocation of the calling thread fail, to prove that running
/// out of memory anywhere, the registry's own growth included, is reported
/// and not fatal. Every allocation of the library goes through this file.
#[cfg(any(test, feature = "fault-injection"))]
mod fault {
    use std::cell::Cell;

    thread_local! {
        static REMAINING: Cell<Option<u32>> = const { Cell::new(None) };
    }

    /// After `successes` more allocations on this thread succeed, the next
    /// one fails; `None` switches injection off. Returns what was left of
    /// the previous setting: `None` if no failure was pending (it happened,
    /// or none was set).
    pub fn fail_allocation_after(successes: Option<u32>) -> Option<u32> {
        REMAINING.with(|remaining| remaining.replace(successes))
    }

    pub fn should_fail() -> bool {
        REMAINING.with(|remaining| match remaining.get() {
            None => false,
            Some(0) => {
                remaining.set(None);
                true
            }
            Some(n) => {
                remaining.set(Some(n - 1));
                false
            }
        })
    }
}
