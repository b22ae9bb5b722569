//! The layout of one block and its size arithmetic.
//!
//! ```text
//! [ Header { next, size } ][ client bytes ............ ]
//! ^ from the C allocator    ^ the address the client sees, BLOCK_ALIGN-aligned
//! ```
//!
//! The header is only ever read or written once the registry has said that
//! the block is live (SPEC §2: memory at a client's pointer is never read
//! before that), and `next` only under the registry lock that guards it.

use crate::scode::Error;
use crate::sys::{self, BLOCK_ALIGN};
use core::mem::size_of;
use core::ptr::NonNull;

/// The library's bookkeeping in front of every block.
#[repr(C)]
struct Header {
    /// The client address of the next block in this root's chain, 0 at its end.
    next: usize,
    /// The size the client asked for, in bytes.
    size: usize,
}

/// Bytes the library adds in front of every block.
pub const HEADER_SIZE: usize = size_of::<Header>();

// The client's bytes start right after the header, so the header size must
// keep BLOCK_ALIGN: 16 bytes on 64-bit, 8 on 32-bit.
const _: () = assert!(HEADER_SIZE % BLOCK_ALIGN == 0);

/// The bytes to request from the C allocator for `requested` client bytes, or
/// `None` when the sum does not fit in `usize` (it never wraps into a small block).
pub fn total_size(requested: usize) -> Option<usize> {
    requested.checked_add(HEADER_SIZE)
}

/// A block, named by the address its client sees.
///
/// Holding a `Block` does not prove it is live: the methods that touch its
/// header are `unsafe` and state what the caller must know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block(NonNull<u8>);

impl Block {
    /// A fresh block of `requested` client bytes whose chain is empty.
    #[inline]
    pub fn allocate(requested: usize) -> Result<Block, Error> {
        let total = total_size(requested).ok_or(Error::NoMemory)?;
        let base = NonNull::new(sys::alloc_aligned(total)).ok_or(Error::NoMemory)?;
        let header = base.as_ptr().cast::<Header>();
        // SAFETY: `base` is a fresh allocation of `total >= HEADER_SIZE` bytes,
        // aligned to BLOCK_ALIGN, which satisfies Header's alignment.
        unsafe { header.write(Header { next: 0, size: requested }) };
        // SAFETY: `base + HEADER_SIZE` is within (or one past) the allocation
        // and cannot be null.
        Ok(Block(unsafe { NonNull::new_unchecked(base.as_ptr().add(HEADER_SIZE)) }))
    }

    /// The block whose client address is `addr`.
    ///
    /// # Safety
    /// `addr` is the client address of a block made by [`Block::allocate`]
    /// that has not been released.
    pub unsafe fn from_addr(addr: usize) -> Block {
        // SAFETY: a client address is never 0 (it lies HEADER_SIZE bytes into
        // an allocation); by the caller's contract `addr` is one.
        Block(unsafe { NonNull::new_unchecked(addr as *mut u8) })
    }

    /// The address the client sees.
    pub fn addr(self) -> usize {
        self.0.as_ptr() as usize
    }

    /// The pointer the client sees.
    pub fn as_ptr(self) -> *mut u8 {
        self.0.as_ptr()
    }

    fn header(self) -> *mut Header {
        // Stays inside the allocation: the header precedes the client bytes.
        self.0.as_ptr().wrapping_sub(HEADER_SIZE).cast()
    }

    /// The client address of the next block in the chain, 0 at its end.
    ///
    /// # Safety
    /// The block is live, and the caller holds the registry lock that guards
    /// its `next` link.
    pub unsafe fn next(self) -> usize {
        // SAFETY: a live block's header is initialised and ours; the lock
        // excludes concurrent writers.
        unsafe { (*self.header()).next }
    }

    /// Sets the chain link read by [`Block::next`].
    ///
    /// # Safety
    /// As for [`Block::next`]; or the block is fresh and not yet shared.
    pub unsafe fn set_next(self, next: usize) {
        // SAFETY: as in `next`, and the lock (or freshness) excludes readers.
        unsafe { (*self.header()).next = next }
    }

    /// The size the client asked for.
    ///
    /// # Safety
    /// The block is live.
    pub unsafe fn requested_size(self) -> usize {
        // SAFETY: a live block's header is initialised; `size` never changes.
        unsafe { (*self.header()).size }
    }

    /// Copies as many of `source`'s client bytes as fit into this block.
    ///
    /// # Safety
    /// Both blocks are live, and they are different blocks.
    pub unsafe fn copy_from(self, source: Block) {
        // SAFETY: live blocks hold their requested sizes; distinct blocks
        // never overlap.
        unsafe {
            let count = source.requested_size().min(self.requested_size());
            core::ptr::copy_nonoverlapping(source.as_ptr(), self.as_ptr(), count);
        }
    }

    /// Returns the block to the C allocator.
    ///
    /// # Safety
    /// The block is live and no longer reachable through the registry; it is
    /// not used again.
    pub unsafe fn release(self) {
        // SAFETY: the header address is the pointer the C allocator returned.
        unsafe { sys::release(self.header().cast()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_keeps_client_bytes_aligned() {
        assert_eq!(HEADER_SIZE % BLOCK_ALIGN, 0);
        assert_eq!(BLOCK_ALIGN, if cfg!(target_pointer_width = "64") { 16 } else { 8 });
    }

    #[test]
    fn total_size_adds_the_header() {
        assert_eq!(total_size(0), Some(HEADER_SIZE));
        assert_eq!(total_size(100), Some(100 + HEADER_SIZE));
        assert_eq!(total_size(u32::MAX as usize), (u32::MAX as usize).checked_add(HEADER_SIZE));
    }

    #[test]
    fn total_size_refuses_overflow_instead_of_wrapping() {
        assert_eq!(total_size(usize::MAX), None);
        assert_eq!(total_size(usize::MAX - HEADER_SIZE + 1), None);
        assert_eq!(total_size(usize::MAX - HEADER_SIZE), Some(usize::MAX));
    }

    #[test]
    fn blocks_are_aligned_and_remember_their_size() {
        for requested in [0, 1, 7, 8, 15, 16, 17, 100, 4096, 1 << 20] {
            let block = Block::allocate(requested).expect("memory");
            assert_eq!(block.addr() % BLOCK_ALIGN, 0, "size {requested}");
            // SAFETY: the block is fresh, live and not shared.
            unsafe {
                assert_eq!(block.requested_size(), requested);
                assert_eq!(block.next(), 0);
                core::ptr::write_bytes(block.as_ptr(), 0xA5, requested);
                block.release();
            }
        }
    }

    #[test]
    fn a_refused_allocation_is_no_memory() {
        crate::sys::fail_allocation_after(Some(0));
        assert_eq!(Block::allocate(8), Err(Error::NoMemory));
        assert_eq!(Block::allocate(usize::MAX), Err(Error::NoMemory));
    }
}
