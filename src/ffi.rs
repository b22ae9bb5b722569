//! The C ABI: the three MAPI exports. Every pointer from C is checked here,
//! and every result becomes an `SCODE` here, in one place each.
//!
//! `extern "system"` is stdcall on 32-bit Windows and the C convention
//! everywhere else, as MAPI requires (SPEC §1).

// The exports keep their MAPI spelling, parameter names included, because
// cbindgen copies them into mapix.h.
#![allow(non_snake_case)]

use crate::block::Block;
use crate::scode::{Error, LPVOID, S_OK, SCODE, ULONG};
use crate::tree;
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
        None => Error::InvalidParameter.scode(),
    }
}

/// Allocates a block of `cbSize` bytes that lives exactly as long as the
/// root block `lpObject` belongs to.
///
/// `lpObject` may be a root from `MAPIAllocateBuffer` or any block from
/// `MAPIAllocateMore`: the new block joins the same root, and is freed when
/// that root is passed to `MAPIFreeBuffer`. Costs the same however many
/// blocks the root already has.
///
/// Returns `S_OK` and stores the new block (aligned as for
/// `MAPIAllocateBuffer`) in `*lppBuffer`. Returns `MAPI_E_INVALID_PARAMETER`
/// if `lppBuffer` is NULL, or if `lpObject` is NULL, already freed, points
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
    match NonNull::new(lppBuffer) {
        // SAFETY: the caller's contract covers the non-null out-pointer.
        Some(out) => unsafe { report(out, tree::allocate_child(cbSize, lpObject as usize)) },
        None => Error::InvalidParameter.scode(),
    }
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
    if !lpBuffer.is_null() {
        // Misuse is not an error here: MAPI callers ignore this result.
        let _ = tree::free_root(lpBuffer as usize);
    }
    S_OK as ULONG
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
