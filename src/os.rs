//! Memory straight from the operating system, for the pages the library
//! manages itself (`region`, the `registry-v3` feature): aligned mappings
//! and giving their pages back. Nothing here calls the C allocator, so
//! nothing here can take one of its locks, and a refusal is a NULL pointer
//! that callers turn into `MAPI_E_NOT_ENOUGH_MEMORY` (SPEC §3).
//!
//! On Windows `VirtualAlloc` is not wired in yet: [`map_aligned`] refuses,
//! so the `registry-v3` build of mapi32.dll compiles and reports every
//! allocation as out of memory. The default build never comes here.

/// `size` bytes of zeroed, readable and writable memory whose address is a
/// multiple of `align` (a power of two, at least the OS page size), or NULL.
/// `size` is a multiple of the OS page size.
pub fn map_aligned(size: usize, align: usize) -> *mut u8 {
    if crate::sys::injected_failure() {
        return core::ptr::null_mut();
    }
    imp::map_aligned(size, align)
}

/// Gives the pages of `[start, start + len)` back to the OS, keeping the
/// range mapped: it reads as zeroes afterwards. Both are multiples of the OS
/// page size, inside a mapping from [`map_aligned`].
pub fn discard(start: *mut u8, len: usize) {
    imp::discard(start, len)
}

/// Unmaps `[start, start + len)`, a mapping from [`map_aligned`] that no one
/// but the caller has ever seen (never a published segment: those stay
/// mapped while the library is loaded, so lookups need no lock).
pub fn unmap(start: *mut u8, len: usize) {
    imp::unmap(start, len)
}

#[cfg(unix)]
mod imp {
    pub fn map_aligned(size: usize, align: usize) -> *mut u8 {
        // Map size + align and trim both ends: the kernel has no aligned mmap.
        let whole = match size.checked_add(align) {
            Some(whole) => whole,
            None => return core::ptr::null_mut(),
        };
        // SAFETY: an anonymous private mapping at an address of the kernel's
        // choosing touches no existing memory.
        let raw = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                whole,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return core::ptr::null_mut();
        }
        let raw = raw as usize;
        let start = (raw + align - 1) & !(align - 1);
        if start > raw {
            unmap(raw as *mut u8, start - raw);
        }
        let end = raw + whole;
        if end > start + size {
            unmap((start + size) as *mut u8, end - (start + size));
        }
        start as *mut u8
    }

    pub fn discard(start: *mut u8, len: usize) {
        // SAFETY: the range lies in one of our own mappings (the caller's
        // contract); MADV_DONTNEED on private anonymous memory only drops its
        // contents. A refusal leaves the pages resident, which is harmless.
        unsafe { libc::madvise(start.cast(), len, libc::MADV_DONTNEED) };
    }

    pub fn unmap(start: *mut u8, len: usize) {
        // SAFETY: the range belongs to a mapping of ours that nothing refers
        // to (the caller's contract). munmap cannot fail on such a range.
        unsafe { libc::munmap(start.cast(), len) };
    }
}

/// Not wired in yet (see the module's documentation): a refusal.
#[cfg(not(unix))]
mod imp {
    pub fn map_aligned(_size: usize, _align: usize) -> *mut u8 {
        core::ptr::null_mut()
    }

    pub fn discard(_start: *mut u8, _len: usize) {}

    pub fn unmap(_start: *mut u8, _len: usize) {}
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn mappings_are_aligned_zeroed_and_discardable() {
        const ALIGN: usize = 4 << 20;
        let p = map_aligned(2 * ALIGN, ALIGN);
        assert!(!p.is_null());
        assert_eq!(p as usize % ALIGN, 0);
        // SAFETY: the whole mapping is ours, readable and writable.
        unsafe {
            assert_eq!(*p.add(2 * ALIGN - 1), 0);
            *p.add(4096) = 7;
            discard(p, 2 * ALIGN);
            assert_eq!(*p.add(4096), 0, "discarded pages read as zeroes");
        }
        unmap(p, 2 * ALIGN);
    }

    #[test]
    fn an_injected_failure_is_a_refusal() {
        crate::sys::fail_allocation_after(Some(0));
        assert!(map_aligned(1 << 16, 1 << 16).is_null());
        assert_eq!(crate::sys::fail_allocation_after(None), None);
    }
}
