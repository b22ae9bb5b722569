//! Where the library's memory comes from: every byte it owns, blocks and
//! registry tables alike. On POSIX systems that is the C allocator, so
//! valgrind, AddressSanitizer and an `LD_PRELOAD`ed malloc see it as usual
//! (SPEC §3); mapi32.dll has a heap of its own (see `own_heap`). Nothing here
//! can abort: a refusal is a NULL pointer, which callers turn into
//! `MAPI_E_NOT_ENOUGH_MEMORY`.

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
    let block = c::malloc(size);
    if block as usize % BLOCK_ALIGN == 0 {
        return block;
    }
    // An interposed malloc broke that promise.
    // SAFETY: `block` came from malloc just above and is not used again.
    unsafe { c::free(block) };
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

/// Never reached on Windows, whose heaps always align to BLOCK_ALIGN.
#[cfg(not(unix))]
fn aligned_fallback(_size: usize) -> *mut u8 {
    core::ptr::null_mut()
}

/// `count * size` zeroed bytes, or NULL (also when the product overflows).
pub fn alloc_zeroed(count: usize, size: usize) -> *mut u8 {
    if injected_failure() {
        return core::ptr::null_mut();
    }
    registry::while_parked(|| c::calloc(count, size))
}

/// Returns memory from [`alloc_aligned`] or [`alloc_zeroed`] to the C allocator.
///
/// # Safety
/// `ptr` is NULL or came from one of those functions and was not released yet.
pub unsafe fn release(ptr: *mut u8) {
    // SAFETY: by the caller's contract, `ptr` is a live block of ours (or NULL).
    registry::while_parked(|| unsafe { c::free(ptr) })
}

/// The C allocator, on POSIX systems.
#[cfg(not(windows))]
mod c {
    pub fn malloc(size: usize) -> *mut u8 {
        // SAFETY: malloc accepts any size and returns NULL when it cannot comply.
        unsafe { libc::malloc(size) }.cast()
    }

    pub fn calloc(count: usize, size: usize) -> *mut u8 {
        // SAFETY: calloc accepts any arguments and checks the product itself.
        unsafe { libc::calloc(count, size) }.cast()
    }

    /// # Safety
    /// `ptr` is NULL or a live block from `malloc` or `calloc` above.
    pub unsafe fn free(ptr: *mut u8) {
        // SAFETY: by the caller's contract.
        unsafe { libc::free(ptr.cast()) }
    }
}

/// mapi32.dll's own heap, made by `HeapCreate` at the first allocation, in
/// place of the C runtime's `malloc` (the process heap). Why: at process
/// exit, `ExitProcess` ends the other threads wherever they are, and then the
/// C runtime's detach code `free`s into the process heap. Under Wine a thread
/// ended in the middle of that heap's lock hand-off leaves the hand-off's
/// spin lock held, and the `free` spins for ever — seen about once in 200
/// exits of a process whose threads were all allocating MAPI blocks
/// (`exit_with_threads_inside`). Our heap is never touched after the other
/// threads are ended, so threads ended inside it cannot hold anyone up. Its
/// blocks are aligned to 16 bytes on x64 and 8 on x86 (BLOCK_ALIGN). It is
/// never destroyed, so blocks a client still holds stay valid when the DLL
/// is unloaded, as a `dlclose`d libmapi32.so's do.
#[cfg(windows)]
mod c {
    use core::ffi::c_void;
    use core::ptr;
    use core::sync::atomic::{AtomicPtr, Ordering};

    #[link(name = "kernel32")]
    extern "system" {
        fn HeapCreate(options: u32, initial_size: usize, maximum_size: usize) -> *mut c_void;
        fn HeapDestroy(heap: *mut c_void) -> i32;
        fn HeapAlloc(heap: *mut c_void, flags: u32, bytes: usize) -> *mut c_void;
        fn HeapFree(heap: *mut c_void, flags: u32, block: *mut c_void) -> i32;
    }

    const HEAP_ZERO_MEMORY: u32 = 0x8;

    static HEAP: AtomicPtr<c_void> = AtomicPtr::new(ptr::null_mut());

    /// The heap, made on first use; NULL if Windows refused to make it.
    fn heap() -> *mut c_void {
        let heap = HEAP.load(Ordering::Acquire);
        if heap.is_null() {
            make_heap()
        } else {
            heap
        }
    }

    #[cold]
    fn make_heap() -> *mut c_void {
        // SAFETY: a growable heap (no maximum) with the default options,
        // which serialise its use by several threads.
        let made = unsafe { HeapCreate(0, 0, 0) };
        if made.is_null() {
            return made;
        }
        match HEAP.compare_exchange(ptr::null_mut(), made, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => made,
            Err(first) => {
                // Another thread's first allocation made one too; keep theirs.
                // SAFETY: `made` is ours alone, and empty.
                unsafe { HeapDestroy(made) };
                first
            }
        }
    }

    fn allocate(flags: u32, size: usize) -> *mut u8 {
        let heap = heap();
        if heap.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: a live heap; without HEAP_GENERATE_EXCEPTIONS a refusal is NULL.
        unsafe { HeapAlloc(heap, flags, size) }.cast()
    }

    pub fn malloc(size: usize) -> *mut u8 {
        allocate(0, size)
    }

    pub fn calloc(count: usize, size: usize) -> *mut u8 {
        match count.checked_mul(size) {
            Some(bytes) => allocate(HEAP_ZERO_MEMORY, bytes),
            None => ptr::null_mut(),
        }
    }

    /// # Safety
    /// `ptr` is NULL or a live block from `malloc` or `calloc` above.
    pub unsafe fn free(ptr: *mut u8) {
        if ptr.is_null() {
            return;
        }
        // SAFETY: a block from `allocate` implies the heap was made.
        unsafe { HeapFree(HEAP.load(Ordering::Acquire), 0, ptr.cast()) };
    }
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
