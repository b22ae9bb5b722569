//! SPEC §4: `MAPI32_STATS` is extensible. Its layout is pinned (C callers
//! compiled against it must keep working, c_tests/extras.c pins it from C),
//! and `mapi32_stats` writes only as many bytes as the caller's `cbSize`.

use core::mem::{align_of, size_of, MaybeUninit};
use core::ptr::addr_of;
use mapi32::{mapi32_stats, MAPI32_STATS, MAPI_E_INVALID_PARAMETER, S_OK, ULONG};

/// Byte offsets of the fields, without `offset_of!` (Rust 1.77).
fn offsets() -> [usize; 8] {
    let stats = MaybeUninit::<MAPI32_STATS>::uninit();
    let base = stats.as_ptr();
    // SAFETY: addr_of! on fields of a valid (if uninitialised) allocation
    // reads nothing.
    let fields = unsafe {
        [
            addr_of!((*base).cbSize) as usize,
            addr_of!((*base).ulReserved) as usize,
            addr_of!((*base).live_roots) as usize,
            addr_of!((*base).live_children) as usize,
            addr_of!((*base).live_bytes) as usize,
            addr_of!((*base).peak_bytes) as usize,
            addr_of!((*base).total_allocations) as usize,
            addr_of!((*base).misuse_count) as usize,
        ]
    };
    fields.map(|field| field - base as usize)
}

#[test]
fn layout_is_pinned() {
    assert_eq!(size_of::<MAPI32_STATS>(), 56);
    assert_eq!(offsets(), [0, 4, 8, 16, 24, 32, 40, 48]);
    assert_eq!(size_of::<ULONG>(), 4, "cbSize is a 32-bit ULONG");
    assert!(align_of::<MAPI32_STATS>() >= 4);
}

const GUARD: u8 = 0xA5;

/// Calls mapi32_stats on a struct of `cb_size` bytes, set up as a caller
/// would, inside a buffer of guard bytes `extra` bytes longer; returns the
/// status and the buffer afterwards.
fn stats_in_buffer(cb_size: ULONG, offset: usize, extra: usize) -> (i32, Vec<u8>) {
    let mut buffer = vec![GUARD; offset + cb_size as usize + extra];
    let target = &mut buffer[offset..];
    target[..4].copy_from_slice(&cb_size.to_ne_bytes());
    // SAFETY: `target` holds `cb_size` writable bytes and more.
    let status = unsafe { mapi32_stats(target.as_mut_ptr().cast()) };
    (status, buffer.split_off(offset))
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap())
}

#[test]
fn current_caller_gets_every_field() {
    let (status, bytes) = stats_in_buffer(56, 0, 16);
    assert_eq!(status, S_OK);
    assert_eq!(read_u32(&bytes, 0), 56, "cbSize: the bytes filled in");
    assert_eq!(read_u32(&bytes, 4), 0, "ulReserved");
    assert!(bytes[56..].iter().all(|&b| b == GUARD), "wrote past cbSize");
}

#[test]
fn smaller_cb_size_than_the_first_version_is_refused_untouched() {
    for cb_size in [0, 4, 8, 48, 55] {
        let (status, bytes) = stats_in_buffer(cb_size, 0, 64);
        assert_eq!(status, MAPI_E_INVALID_PARAMETER, "cbSize {cb_size}");
        assert_eq!(read_u32(&bytes, 0), cb_size);
        assert!(bytes[4..].iter().all(|&b| b == GUARD), "cbSize {cb_size}: something was written");
    }
}

/// A caller built against a newer, larger struct: the library fills what it
/// has, leaves the newer fields alone and says how much it filled.
#[test]
fn newer_larger_caller_sees_what_was_filled() {
    for cb_size in [60, 64, 200] {
        let (status, bytes) = stats_in_buffer(cb_size, 0, 8);
        assert_eq!(status, S_OK, "cbSize {cb_size}");
        assert_eq!(read_u32(&bytes, 0), 56, "cbSize {cb_size}");
        assert!(bytes[56..].iter().all(|&b| b == GUARD), "cbSize {cb_size}: wrote past the library's fields");
    }
}

#[test]
fn unaligned_struct_is_filled() {
    let (status, bytes) = stats_in_buffer(56, 3, 8);
    assert_eq!(status, S_OK);
    assert_eq!(read_u32(&bytes, 0), 56);
    assert!(bytes[56..].iter().all(|&b| b == GUARD));
}

#[test]
fn counts_a_root() {
    let mut before = MAPI32_STATS { cbSize: size_of::<MAPI32_STATS>() as ULONG, ..Default::default() };
    let mut during = before;
    // SAFETY: valid out-pointers throughout.
    unsafe {
        assert_eq!(mapi32_stats(&mut before), S_OK);
        let mut root = core::ptr::null_mut();
        assert_eq!(mapi32::MAPIAllocateBuffer(10, &mut root), S_OK);
        assert_eq!(mapi32_stats(&mut during), S_OK);
        mapi32::MAPIFreeBuffer(root);
    }
    assert!(during.total_allocations > before.total_allocations);
}

#[test]
fn null_is_invalid() {
    // SAFETY: NULL is allowed.
    assert_eq!(unsafe { mapi32_stats(core::ptr::null_mut()) }, MAPI_E_INVALID_PARAMETER);
}
