//! The registry ("v3" in the history): blocks in pages the library manages
//! itself, validated from its own tables, used from any thread without
//! waiting. ARCHITECTURE.md has the design and the measurements that chose
//! it; `bench/mockup/` the C mock-up that measured these fast paths first.
//!
//! ```text
//! segment (4 MiB, aligned; 1 MiB on 32-bit), published in `segmap`
//! ├─ page 0: `Segment` — owner, a `Page` descriptor per 64 KiB page,
//! │          a start bit per 16-byte granule (children only)
//! ├─ root page:  [Root hdr|client][Root hdr|client]...   one size class
//! ├─ chunk page: [Chunk hdr|child|child|...][Chunk ...]  one chunk class
//! └─ span:       pages holding one large root or chunk
//! ```
//!
//! - Roots sit in size-class slots behind a 16-byte header (`root`): a
//!   state word with a generation, the requested size, the tree's newest
//!   chunk. Children are bumped into chunks owned by their tree (`chunk`),
//!   the first 64 bytes, each next 8 times the last up to a page; a child
//!   bigger than a quarter of the next chunk gets a chunk of its own. A
//!   tree is freed as its root slot and a few chunks.
//! - A pointer is validated before anything at it is read (`validate`):
//!   its segment's bit, the segment's owner, the page descriptor, the slot
//!   by reciprocal (`class`), then the root's header or the child's start
//!   bit, chunk and tree state — all in memory the library keeps mapped
//!   (segments are never unmapped while loaded; freed spans go back with
//!   `MADV_DONTNEED`, `MEM_RESET` on Windows). Since other threads read a
//!   slot's state word from the page's class alone, a root page made of
//!   reused memory starts with every slot's state word clear (`segment`).
//! - Each thread has a heap (`heap`, bound in `thread`) that owns its
//!   segments; the owner makes and frees blocks in them with plain loads
//!   and stores. Other threads read a few words only (a segment's owner, a
//!   page's `layout`, start bits, root and chunk state words: relaxed
//!   atomics, plain moves for the owner) and write one: a root's state.
//! - Another thread's tree, with no call waiting for any other (SPEC §3):
//!   a free swaps the root's state live → killed and hands the page to its
//!   owner, who releases the tree at its next call (`remote`); a child goes
//!   into a chunk of the caller's own, tagged with the tree's life, swept
//!   once the tree is dead (`guest`).
//! - A tree is named for good by its first root's slot, so a reallocation
//!   never tags a chunk again (`root`, `alloc::move_root`): a root with
//!   children (its own, or guests: `GUESTED`), or any thread's root, stays
//!   as the tree's hidden header (`MOVED`) and the bytes go to a `FACE`, a
//!   root slot naming the tree; a face reallocated is another face, a face
//!   freed frees the tree. One compare-and-swap a step, from any thread.
//!   A childless root of the caller's is dropped at once, as before.
//! - A heap's life (`thread`): given up when its thread exits (its killed
//!   trees and dead guests go back first, then its unused pages; its live
//!   trees stay) — from the `pthread_key` destructor, or on Windows a TLS
//!   callback at `DLL_THREAD_DETACH` (`exit_hook`) — adopted by a later thread's first
//!   call, which drains and sweeps it as the owner; in a forked child,
//!   heaps of threads that did not come along become orphans too, unless
//!   they were in a call, which leaves them frozen (`fork`); `unload` unmaps
//!   the empty heaps at `dlclose` and `FreeLibrary`; `walk` serves the
//!   `leaks` report. `Heap::try_claim` has the rule for touching an orphan;
//!   a free into an orphan's tree is a kill like any.
//! - valgrind and ASan (`track`): detected at load; then every block, a
//!   guest child too, is described to the tool, with a redzone after it
//!   and a quarantine for freed slots; without a tool, one untaken branch
//!   a call. A root another thread frees is freed for the tool by that
//!   free, and for memcheck its children with it (each tree is a memcheck
//!   pool, anchored at its first root's client address for its whole
//!   life, moves included); for ASan its children when their maker
//!   releases them (the owner, or a guest's maker at its sweep): until then
//!   ASan still lets them be read. A move frees the old bytes for both.
//!
//! **Not built yet.** A reallocated tree keeps its first root's slot until
//! it dies (a large one gives its pages past the header back), and a face
//! is not kept in the parent cache (each `MAPIAllocateMore` on one
//! validates it). Emptied class pages go back only when a segment is used
//! up or the thread exits (`heap::reclaim_empty_pages`), and free spans
//! are reused by exact length.

mod alloc;
mod chunk;
mod class;
mod counts;
mod exit_hook;
mod fork;
mod free;
mod guest;
mod heap;
mod page;
mod remote;
mod root;
mod segmap;
mod segment;
mod start_bits;
mod thread;
pub mod track;
mod unload;
mod validate;
mod walk;

// The life tests read residency with `mincore`: POSIX only (Windows' exit
// hook is tested by the C cases of c_tests/windows/).
#[cfg(test)]
mod cross_thread_tests;
#[cfg(all(test, unix))]
mod fork_tests;
#[cfg(all(test, unix))]
mod life_tests;
#[cfg(test)]
mod park;
#[cfg(test)]
mod tests;

pub use alloc::{quick_child, Grow, Quick};
pub use free::{quick_free, QuickFree, Rest};
pub use unload::unload;
pub use walk::for_each_root;

#[cfg(test)]
pub use counts::own_share;
pub use counts::Counts;
pub use free::NotARoot;

use crate::scode::{Error, ULONG};
use core::ptr::NonNull;

// The entry points: each is one call (`thread::Call`), during which the
// calling thread's heap is busy for a forked child's sake (`fork`). The
// leaf fast paths the exports try first (`quick_child`, `quick_free`)
// mark it busy themselves, and so does `allocate_root` without a tool.

/// A new root of `size` bytes (`MAPIAllocateBuffer`).
#[inline(always)]
pub fn allocate_root(size: ULONG) -> Result<Block, Error> {
    alloc::allocate_root_call(size)
}

/// A new child of `size` bytes in the tree of `parent` (`MAPIAllocateMore`).
#[inline(always)]
pub fn allocate_child(parent: usize, size: ULONG) -> Result<Block, Error> {
    let _call = thread::Call::begin();
    alloc::allocate_child(parent, size)
}

/// `MAPIReallocateBuffer` of a live block.
#[inline]
pub fn reallocate(addr: usize, size: ULONG) -> Result<Block, Error> {
    let _call = thread::Call::begin();
    alloc::reallocate(addr, size)
}

/// Frees the root at `addr` and its children (`MAPIFreeBuffer`).
#[inline(always)]
pub fn free_root(addr: usize) -> Result<usize, NotARoot> {
    let _call = thread::Call::begin();
    free::free_root(addr)
}

/// Every heap's counts added up (`mapi32_stats`).
pub fn stats() -> Counts {
    let _call = thread::Call::begin();
    counts::stats()
}

/// When the library is loaded.
pub fn init() {
    exit_hook::init();
    unload::init();
    fork::init();
}

/// When the library is unloaded (and at process exit), after `unload`:
/// the exit hook goes, so that no later thread exit calls into unmapped
/// code. (On Windows the loader calls the TLS callback no more once the DLL
/// is unloaded.)
#[cfg(unix)]
pub fn shutdown() {
    exit_hook::shutdown();
}

/// Segments are `SEGMENT_SIZE` bytes, aligned to their size.
pub const SEGMENT_SHIFT: u32 = if cfg!(target_pointer_width = "64") { 22 } else { 20 };
pub const SEGMENT_SIZE: usize = 1 << SEGMENT_SHIFT;
/// Pages are the unit a segment hands to a size class or a large block.
pub const PAGE_SHIFT: u32 = 16;
pub const PAGE_SIZE: usize = 1 << PAGE_SHIFT;
/// Pages of a segment; page 0 holds the segment's metadata.
pub const PAGES: usize = SEGMENT_SIZE / PAGE_SIZE;
/// Every block starts on a granule: 16 bytes, so client pointers are
/// 16-aligned (SPEC §2 asks 16 on 64-bit, 8 on 32-bit).
pub const GRANULE: usize = 16;
pub const GRANULE_SHIFT: u32 = 4;

/// A block handed to a client, named by its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block(NonNull<u8>);

impl Block {
    /// The address the client sees.
    pub fn addr(self) -> usize {
        self.0.as_ptr() as usize
    }

    /// The pointer the client sees.
    pub fn as_ptr(self) -> *mut u8 {
        self.0.as_ptr()
    }
}
