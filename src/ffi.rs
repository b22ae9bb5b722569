//! The C ABI: the MAPI exports. Out-pointers from C are checked here, and
//! every result becomes an `SCODE` here, in one place each. Parents and
//! pointers to free pass through as addresses: `registry` looks them up
//! before anything at them is read.
//!
//! `extern "system"` is stdcall on 32-bit Windows and the C convention
//! everywhere else, as MAPI requires (SPEC §1).

// The exports keep their MAPI spelling, parameter names included, because
// cbindgen copies them into mapix.h.
#![allow(non_snake_case)]

use crate::debug::{self, Misuse};
use crate::scode::{Error, LPVOID, SCODE, S_OK, ULONG};
use crate::tree::{self, Block, Grow, NotARoot, Quick, QuickFree, Rest};
use core::ptr::NonNull;

/// Allocates a root block of `cbSize` bytes.
///
/// On success returns `S_OK` and stores in `*lppBuffer` a pointer to at least
/// `cbSize` writable bytes, aligned to 16 bytes (8 on 32-bit platforms), with
/// unspecified contents. `cbSize` 0 gives a unique, non-NULL block that can be
/// freed and used as a parent.
///
/// Returns `MAPI_E_INVALID_PARAMETER` if `lppBuffer` is NULL (nothing is
/// allocated), and `MAPI_E_NOT_ENOUGH_MEMORY` with `*lppBuffer` set to NULL
/// when memory runs out.
///
/// Free the block, with every block allocated onto it, by `MAPIFreeBuffer`.
///
/// # Safety
/// `lppBuffer` is NULL or points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "system" fn MAPIAllocateBuffer(cbSize: ULONG, lppBuffer: *mut LPVOID) -> SCODE {
    match NonNull::new(lppBuffer) {
        // SAFETY: the caller's contract covers the non-null out-pointer.
        Some(out) => unsafe { report(out, tree::allocate_root(cbSize)) },
        None => null_out("MAPIAllocateBuffer"),
    }
}

/// Allocates a block of `cbSize` bytes that lives exactly as long as the
/// root block `lpObject` belongs to.
///
/// `lpObject` may be a root from `MAPIAllocateBuffer` or any block from
/// `MAPIAllocateMore`: the new block joins the same root, and is freed when
/// that root is passed to `MAPIFreeBuffer`. Costs the same however many
/// blocks the root already has. `lpObject` NULL allocates a new root, exactly
/// as `MAPIAllocateBuffer` (as Kopano's MAPI does; provider code that copies
/// "onto a base, if any" relies on it).
///
/// Returns `S_OK` and stores the new block (aligned as for
/// `MAPIAllocateBuffer`) in `*lppBuffer`. Returns `MAPI_E_INVALID_PARAMETER`
/// if `lppBuffer` is NULL, or if `lpObject` is already freed, points
/// inside a block, or was not returned by this library; the library decides
/// that from its own records without reading memory at `lpObject`. Returns
/// `MAPI_E_NOT_ENOUGH_MEMORY` when memory runs out. On every failure
/// `*lppBuffer` (when not NULL) is set to NULL and the tree is unchanged.
///
/// # Safety
/// `lppBuffer` is NULL or points to writable storage for one pointer.
/// `lpObject` may be any value.
#[no_mangle]
pub unsafe extern "system" fn MAPIAllocateMore(cbSize: ULONG, lpObject: LPVOID, lppBuffer: *mut LPVOID) -> SCODE {
    // The common case first, as a leaf: no frame, no result to merge with
    // the other paths', which it reaches by tail calls (`tree::quick_child`).
    if lppBuffer.is_null() {
        // SAFETY: the caller's contract, passed on.
        return unsafe { allocate_more(cbSize, lpObject, lppBuffer) };
    }
    match tree::quick_child(lpObject as usize, cbSize) {
        Quick::Made(block) => {
            // Unaligned, as in `report`.
            // SAFETY: the caller's contract covers the non-null out-pointer.
            unsafe { lppBuffer.write_unaligned(block.as_ptr().cast()) };
            S_OK
        }
        // SAFETY (both): the caller's contract, passed on.
        Quick::Grow(grow) => unsafe { grow_tree(grow, cbSize, lppBuffer) },
        Quick::Miss => unsafe { allocate_more(cbSize, lpObject, lppBuffer) },
    }
}

/// `MAPIAllocateMore` of a child that needs a new chunk of its tree.
///
/// # Safety
/// `lppBuffer` is non-null and points to writable storage for one pointer.
#[inline(never)]
unsafe fn grow_tree(grow: Grow, cbSize: ULONG, lppBuffer: *mut LPVOID) -> SCODE {
    // Out of memory at most: no misuse to count.
    // SAFETY: the caller's contract covers the out-pointer, non-null.
    unsafe { report(NonNull::new_unchecked(lppBuffer), grow.child(cbSize)) }
}

/// `MAPIAllocateMore` in full, every case.
///
/// # Safety
/// As `MAPIAllocateMore`.
#[inline(never)]
unsafe fn allocate_more(cbSize: ULONG, lpObject: LPVOID, lppBuffer: *mut LPVOID) -> SCODE {
    let out = match NonNull::new(lppBuffer) {
        Some(out) => out,
        None => return null_out("MAPIAllocateMore"),
    };
    let result =
        refused_parent_is_misuse("MAPIAllocateMore", lpObject, tree::allocate_child(cbSize, lpObject as usize));
    // SAFETY: the caller's contract covers the non-null out-pointer.
    unsafe { report(out, result) }
}

/// Frees a root block and every block allocated onto it.
///
/// Always returns 0 (`S_OK`). NULL is accepted and does nothing. A block from
/// `MAPIAllocateMore`, an already freed block, a pointer inside a block, or a
/// pointer this library did not return is left alone: no memory is freed,
/// read or written at that address.
///
/// Known limit: once a freed address has been handed out again by a new
/// allocation, a stale second free of it cannot be told from a real one.
///
/// # Safety
/// Any value of `lpBuffer` is accepted.
#[no_mangle]
pub unsafe extern "system" fn MAPIFreeBuffer(lpBuffer: LPVOID) -> ULONG {
    // The common case first, as a leaf, as in `MAPIAllocateMore`.
    match tree::quick_free(lpBuffer as usize) {
        QuickFree::Done => S_OK as ULONG,
        QuickFree::Rest(rest) => finish_free(rest),
        QuickFree::Miss => free_buffer(lpBuffer),
    }
}

/// The rest of a free the common case started: a tree's children, or a
/// page back on its queue.
#[inline(never)]
fn finish_free(rest: Rest) -> ULONG {
    rest.finish();
    S_OK as ULONG
}

/// `MAPIFreeBuffer` in full, every case.
#[inline(never)]
fn free_buffer(lpBuffer: LPVOID) -> ULONG {
    if !lpBuffer.is_null() {
        // Misuse is not an error here: MAPI callers ignore this result.
        match tree::free_root(lpBuffer as usize) {
            Ok(_) => {}
            Err(NotARoot::Child) => debug::misuse("MAPIFreeBuffer", lpBuffer as usize, Misuse::FreeOfChild),
            Err(NotARoot::Unknown) => debug::misuse("MAPIFreeBuffer", lpBuffer as usize, Misuse::FreeOfUnknown),
        }
    }
    S_OK as ULONG
}

/// Moves a block's contents into a new block of `ulSize` bytes (Outlook's
/// `MAPIReallocateBuffer`, omapix.h).
///
/// The first `min(old size, ulSize)` bytes are copied; pointers inside the
/// block are not fixed up. `lpv` NULL acts as `MAPIAllocateBuffer`. A root:
/// the new block is a root that takes over all the old root's children, and
/// the old root is freed. A block from `MAPIAllocateMore`: the new block is
/// another child of the same root, and the old one lives on until that root
/// is freed.
///
/// Returns `S_OK` and stores the new block in `*lppv`.
/// `MAPI_E_INVALID_PARAMETER` if `lppv` is NULL, or `lpv` is not a live block
/// of this library (checked without reading memory at `lpv`);
/// `MAPI_E_NOT_ENOUGH_MEMORY` when memory runs out. On every failure nothing
/// changes, and `*lppv` (when not NULL) is set to NULL.
///
/// # Safety
/// `lppv` is NULL or points to writable storage for one pointer. `lpv` may
/// be any value.
#[no_mangle]
pub unsafe extern "system" fn MAPIReallocateBuffer(lpv: LPVOID, ulSize: ULONG, lppv: *mut LPVOID) -> SCODE {
    let out = match NonNull::new(lppv) {
        Some(out) => out,
        None => return null_out("MAPIReallocateBuffer"),
    };
    let result = refused_parent_is_misuse("MAPIReallocateBuffer", lpv, tree::reallocate(lpv as usize, ulSize));
    // SAFETY: the caller's contract covers the non-null out-pointer.
    unsafe { report(out, result) }
}

/// Counts kept by libmapi32, filled in by `mapi32_stats`.
///
/// Extensible: the caller sets `cbSize` to `sizeof(MAPI32_STATS)`, and a
/// later version may append counters without breaking an older caller, whose
/// smaller struct the library never writes past. Every counter sits at the
/// same multiple of 8 bytes on every target.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MAPI32_STATS {
    /// The struct's size in bytes as the caller knows it, set by the caller
    /// to `sizeof(MAPI32_STATS)`. On success the library sets it to the
    /// number of bytes it filled in.
    pub cbSize: ULONG,
    /// Set to 0 by the library. Keeps the counters 8-byte aligned where C
    /// aligns a 64-bit member to 4 bytes only (32-bit x86).
    pub ulReserved: ULONG,
    /// Roots allocated and not yet freed.
    pub live_roots: u64,
    /// Children of those roots.
    pub live_children: u64,
    /// Bytes requested for all live blocks (the library's own overhead aside).
    pub live_bytes: u64,
    /// The most `live_bytes` ever reached: exact when one thread allocates
    /// every root; with several, the sum of each thread's peak (never less
    /// than the true peak).
    pub peak_bytes: u64,
    /// Blocks ever allocated, by MAPIAllocateBuffer, MAPIAllocateMore and
    /// MAPIReallocateBuffer.
    pub total_allocations: u64,
    /// Calls refused or ignored as misuse: a NULL output pointer, an unknown
    /// parent, a free of a child, of a freed or of a foreign pointer.
    pub misuse_count: u64,
}

/// The size of the first version of `MAPI32_STATS` (libmapi32 0.1): the
/// smallest `cbSize` that `mapi32_stats` accepts. Never changes.
const STATS_FIRST_SIZE: usize = 56;

// Fields after the first two are whole 8-byte counters, so rounding a size
// down to a multiple of 8 keeps exactly the counters that fit in it.
const _: () = assert!(core::mem::size_of::<MAPI32_STATS>() % 8 == 0);
const _: () = assert!(core::mem::size_of::<MAPI32_STATS>() >= STATS_FIRST_SIZE);

/// Fills `*lpStats` with the library's counts, for a client's tests to
/// assert that everything was freed (`live_roots == 0`).
///
/// Set `lpStats->cbSize` to `sizeof(MAPI32_STATS)` first. The library fills
/// in the counters that fit in `cbSize` bytes (all it has when `cbSize` is
/// larger), writes nothing beyond them, and sets `cbSize` to the number of
/// bytes filled in: a caller built with a newer mapix.h sees which counters
/// an older library left alone.
///
/// Returns `S_OK`, or `MAPI_E_INVALID_PARAMETER` with nothing written if
/// `lpStats` is NULL or `cbSize` is below 56, the size of the struct's first
/// version. The counts are a snapshot: other threads may change them at once.
///
/// # Safety
/// `lpStats` is NULL or points to `lpStats->cbSize` writable bytes.
#[no_mangle]
pub unsafe extern "system" fn mapi32_stats(lpStats: *mut MAPI32_STATS) -> SCODE {
    let out = match NonNull::new(lpStats) {
        Some(out) => out,
        None => return Error::InvalidParameter.scode(),
    };
    // SAFETY: by the caller's contract `out` points to at least its first
    // field; unaligned, as for the pointers in `report`.
    let cb_size = unsafe { core::ptr::addr_of!((*out.as_ptr()).cbSize).read_unaligned() } as usize;
    if cb_size < STATS_FIRST_SIZE {
        return Error::InvalidParameter.scode();
    }
    let filled = cb_size.min(core::mem::size_of::<MAPI32_STATS>()) & !7;
    let counts = tree::stats();
    let stats = MAPI32_STATS {
        cbSize: filled as ULONG,
        ulReserved: 0,
        live_roots: counts.live_roots,
        live_children: counts.live_children,
        live_bytes: counts.live_bytes,
        peak_bytes: counts.peak_bytes,
        total_allocations: counts.allocations,
        misuse_count: debug::misuse_count(),
    };
    // SAFETY: `filled` is at most the caller's `cbSize`, writable by the
    // contract, and at most the size of `stats`; byte copies need no alignment.
    unsafe {
        core::ptr::copy_nonoverlapping((&stats as *const MAPI32_STATS).cast::<u8>(), out.as_ptr().cast::<u8>(), filled)
    };
    S_OK
}

/// A call refused for its parent (`lpObject`, `lpv`): counted and reported
/// as misuse; the result passes through.
fn refused_parent_is_misuse(call: &str, parent: LPVOID, result: Result<Block, Error>) -> Result<Block, Error> {
    if result == Err(Error::InvalidParameter) {
        debug::misuse(call, parent as usize, Misuse::UnknownParent);
    }
    result
}

/// A NULL output pointer: counted and reported as misuse.
fn null_out(call: &str) -> SCODE {
    debug::misuse(call, 0, Misuse::NullOutPointer);
    Error::InvalidParameter.scode()
}

/// Stores an allocation's result in the caller's output pointer, NULL on
/// failure, and returns its status code.
///
/// # Safety
/// `out` points to writable storage for one pointer.
unsafe fn report(out: NonNull<LPVOID>, result: Result<Block, Error>) -> SCODE {
    let (block, code) = match result {
        Ok(block) => (block.as_ptr().cast(), S_OK),
        Err(error) => (core::ptr::null_mut(), error.scode()),
    };
    // Unaligned write: C callers sometimes pass a field of a packed struct.
    // SAFETY: by the caller's contract `out` is writable.
    unsafe { out.as_ptr().write_unaligned(block) };
    code
}
