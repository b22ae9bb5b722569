//! Memory straight from the operating system, for the pages the library
//! manages itself (`region`): aligned mappings
//! and giving their pages back. Nothing here calls the C allocator, so
//! nothing here can take one of its locks, and a refusal is a NULL pointer
//! that callers turn into `MAPI_E_NOT_ENOUGH_MEMORY` (SPEC §3).
//!
//! Unix uses `mmap`, `madvise` and `munmap`; Windows `VirtualAlloc` and
//! `VirtualFree`. Other targets refuse every mapping.

/// `size` bytes of zeroed, readable and writable memory whose address is a
/// multiple of `align` (a power of two, at least the OS page size), or NULL.
/// `size` is a multiple of the OS page size.
pub fn map_aligned(size: usize, align: usize) -> *mut u8 {
    if crate::fault::injected_failure() {
        return core::ptr::null_mut();
    }
    imp::map_aligned(size, align)
}

/// Gives the pages of `[start, start + len)` back to the OS, keeping the
/// range mapped and usable. What it reads afterwards is unspecified (zeroes
/// on Linux): nothing may rely on it. Both are multiples of the OS page
/// size, inside a mapping from [`map_aligned`].
pub fn discard(start: *mut u8, len: usize) {
    imp::discard(start, len)
}

/// Whether [`discard`]ed pages read as zeroes: on Linux (`MADV_DONTNEED` on
/// private anonymous memory), not on Windows (`MEM_RESET` may keep the old
/// bytes) or other systems.
pub const DISCARD_ZEROES: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// Unmaps `[start, start + len)`, a mapping from [`map_aligned`] that no one
/// but the caller has ever seen, or will see again (never a published
/// segment: those stay mapped while the library can be called, so lookups
/// need no lock; `region::unload` withdraws them first).
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

#[cfg(windows)]
mod imp {
    use core::ffi::c_void;
    use core::ptr;

    const MEM_COMMIT: u32 = 0x1000;
    const MEM_RESERVE: u32 = 0x2000;
    const MEM_DECOMMIT: u32 = 0x4000;
    const MEM_RELEASE: u32 = 0x8000;
    const MEM_RESET: u32 = 0x8_0000;
    const PAGE_READWRITE: u32 = 0x04;

    #[repr(C)]
    struct MemoryBasicInformation {
        base_address: *mut c_void,
        allocation_base: *mut c_void,
        allocation_protect: u32,
        #[cfg(target_pointer_width = "64")]
        partition_id: u16,
        region_size: usize,
        state: u32,
        protect: u32,
        kind: u32,
    }

    #[link(name = "kernel32")]
    extern "system" {
        fn VirtualAlloc(address: *mut c_void, size: usize, kind: u32, protect: u32) -> *mut c_void;
        fn VirtualFree(address: *mut c_void, size: usize, kind: u32) -> i32;
        fn VirtualQuery(address: *const c_void, info: *mut MemoryBasicInformation, length: usize) -> usize;
    }

    fn is_aligned(address: *mut c_void, align: usize) -> bool {
        address as usize & (align - 1) == 0
    }

    /// VirtualAlloc at `address` (NULL: the system's choice); NULL if refused.
    fn allocate(address: usize, size: usize, kind: u32) -> *mut c_void {
        // SAFETY: reserving or committing at an address of the system's
        // choosing, or at one that was free a moment ago (the call then fails
        // if anything took it since), or committing inside a reservation of
        // ours that nothing uses yet, touches no memory anyone else uses.
        unsafe { VirtualAlloc(address as *mut c_void, size, kind, PAGE_READWRITE) }
    }

    fn release(reservation: *mut c_void) {
        // SAFETY: the base of a reservation of ours that nothing uses; a
        // refusal leaves it in place, which only costs address space.
        unsafe { VirtualFree(reservation, 0, MEM_RELEASE) };
    }

    /// Windows cannot trim a reservation, and places them on its 64 KiB
    /// granularity: enough for the heaps, not for a segment.
    pub fn map_aligned(size: usize, align: usize) -> *mut u8 {
        let whole = match size.checked_add(align) {
            Some(whole) => whole,
            None => return ptr::null_mut(),
        };
        let exact = allocate(0, size, MEM_RESERVE | MEM_COMMIT);
        if exact.is_null() || is_aligned(exact, align) {
            return exact.cast();
        }
        release(exact);
        // Reserve enough to hold an aligned range, release it and map that
        // range alone: another thread may take it in between, so a few times.
        for _ in 0..4 {
            let probe = allocate(0, whole, MEM_RESERVE);
            if probe.is_null() {
                return ptr::null_mut();
            }
            let start = (probe as usize + align - 1) & !(align - 1);
            release(probe);
            let mapped = allocate(start, size, MEM_RESERVE | MEM_COMMIT);
            if !mapped.is_null() {
                return mapped.cast();
            }
        }
        // Always taken from under us.
        map_in_oversized(size, align)
    }

    /// Keeps a reservation of `size + align` bytes and commits its aligned
    /// part (`unmap` finds the reservation's base).
    pub(super) fn map_in_oversized(size: usize, align: usize) -> *mut u8 {
        let probe = match size.checked_add(align) {
            Some(whole) => allocate(0, whole, MEM_RESERVE),
            None => return ptr::null_mut(),
        };
        if probe.is_null() {
            return ptr::null_mut();
        }
        let start = (probe as usize + align - 1) & !(align - 1);
        let mapped = allocate(start, size, MEM_COMMIT);
        if mapped.is_null() {
            release(probe);
        }
        mapped.cast()
    }

    pub fn discard(start: *mut u8, len: usize) {
        // MEM_RESET rather than a decommit: the pages stay committed, so a
        // later touch can never fault, whatever the commit limit then. What
        // they then read is unspecified (old bytes or zeroes), as `discard`
        // says.
        // SAFETY: the range lies in one of our own mappings (the caller's
        // contract); a refusal leaves the pages resident, which is harmless.
        unsafe { VirtualAlloc(start.cast(), len, MEM_RESET, PAGE_READWRITE) };
    }

    /// A whole mapping goes back with its reservation: `start` is its base,
    /// or, where `map_aligned` kept an oversized reservation, the first
    /// committed byte after an uncommitted head. Any other range (part of a
    /// mapping) is decommitted, its addresses kept reserved.
    pub fn unmap(start: *mut u8, len: usize) {
        let start = start.cast::<c_void>();
        let base = match query(start) {
            Some(info) => info.allocation_base,
            None => return,
        };
        let whole = base == start
            || query(base).map_or(false, |head| {
                head.state == MEM_RESERVE && (base as usize).wrapping_add(head.region_size) == start as usize
            });
        if whole {
            release(base);
        } else {
            // SAFETY: part of a mapping of ours that nothing refers to (the
            // caller's contract); its pages go, its addresses stay reserved.
            unsafe { VirtualFree(start, len, MEM_DECOMMIT) };
        }
    }

    /// The state of the page at `address`: MEM_COMMIT, MEM_RESERVE or MEM_FREE.
    #[cfg(test)]
    pub(super) fn state(address: *mut u8) -> u32 {
        query(address.cast()).map_or(0, |info| info.state)
    }

    fn query(address: *const c_void) -> Option<MemoryBasicInformation> {
        let mut info = core::mem::MaybeUninit::<MemoryBasicInformation>::uninit();
        let size = core::mem::size_of::<MemoryBasicInformation>();
        // SAFETY: `info` is writable for `size` bytes; VirtualQuery reads no
        // memory at `address`, only the address space's bookkeeping.
        if unsafe { VirtualQuery(address, info.as_mut_ptr(), size) } != size {
            return None;
        }
        // SAFETY: VirtualQuery filled all `size` bytes.
        Some(unsafe { info.assume_init() })
    }
}

/// No mapping on other targets: a refusal.
#[cfg(not(any(unix, windows)))]
mod imp {
    pub fn map_aligned(_size: usize, _align: usize) -> *mut u8 {
        core::ptr::null_mut()
    }

    pub fn discard(_start: *mut u8, _len: usize) {}

    pub fn unmap(_start: *mut u8, _len: usize) {}
}

#[cfg(all(test, any(unix, windows)))]
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
            // Still mapped and writable; Linux zeroes the pages.
            #[cfg(target_os = "linux")]
            assert_eq!(*p.add(4096), 0, "discarded pages read as zeroes");
            *p.add(4096) = 8;
        }
        unmap(p, 2 * ALIGN);
    }

    /// Windows gives a reservation back whole or not at all: `unmap` of a
    /// part decommits it, and of a whole mapping, an oversized one too,
    /// releases it from its base.
    #[cfg(windows)]
    #[test]
    fn windows_releases_whole_mappings_and_decommits_parts() {
        const ALIGN: usize = 4 << 20;
        const MEM_COMMIT: u32 = 0x1000;
        const MEM_RESERVE: u32 = 0x2000;
        const MEM_FREE: u32 = 0x1_0000;
        let p = map_aligned(2 * ALIGN, ALIGN);
        assert!(!p.is_null());
        unmap(p.wrapping_add(ALIGN), ALIGN);
        assert_eq!((imp::state(p), imp::state(p.wrapping_add(ALIGN))), (MEM_COMMIT, MEM_RESERVE));
        // SAFETY: the first half is still ours, committed.
        unsafe { *p = 1 };
        unmap(p, ALIGN);
        assert_eq!(imp::state(p), MEM_FREE);

        let q = imp::map_in_oversized(ALIGN, ALIGN);
        assert!(!q.is_null() && q as usize % ALIGN == 0);
        // SAFETY: the whole mapping is ours, readable and writable.
        unsafe { *q.add(ALIGN - 1) = 1 };
        unmap(q, ALIGN);
        assert_eq!(imp::state(q), MEM_FREE, "the reservation went, its head too");
    }

    #[test]
    fn an_injected_failure_is_a_refusal() {
        crate::fault::fail_allocation_after(Some(0));
        assert!(map_aligned(1 << 16, 1 << 16).is_null());
        assert_eq!(crate::fault::fail_allocation_after(None), None);
    }
}
