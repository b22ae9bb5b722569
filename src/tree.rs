//! The three MAPI operations (and `MAPIReallocateBuffer`) in safe Rust.
//! `ffi` turns their results into status codes.
//!
//! They go to `region`, the library's own pages; with the feature
//! `previous-registry` (for `make bench-previous`, never shipped) to the
//! registry before it. This file is the one place that chooses (see `v3` at
//! its end).

#[cfg(feature = "previous-registry")]
pub use crate::block::Block;
#[cfg(feature = "previous-registry")]
use crate::registry::Reallocated;
pub use crate::registry::{Counts, NotARoot};
use crate::scode::{Error, ULONG};
#[cfg(not(feature = "previous-registry"))]
pub use v3::{allocate_root, free_root, reallocate, stats, Block};

/// A new root of `size` bytes (`MAPIAllocateBuffer`).
#[cfg(feature = "previous-registry")]
#[inline(always)]
pub fn allocate_root(size: ULONG) -> Result<Block, Error> {
    let block = Block::allocate(client_size(size)?)?;
    if let Err(error) = crate::registry::insert_root(block) {
        // SAFETY: the block is fresh, and the registry refused to record it,
        // so nothing else knows it.
        unsafe { block.release() };
        return Err(error);
    }
    Ok(block)
}

/// A new child of `size` bytes that lives as long as the root of `parent`
/// (`MAPIAllocateMore`). `parent` is only ever looked up, never read, and a
/// bad parent is refused whatever the size, with nothing left allocated.
/// No parent (0) makes a new root, as Kopano's mapi4linux does and provider
/// code relies on ("copy onto a base, if there is one"): SPEC §2.
pub fn allocate_child(size: ULONG, parent: usize) -> Result<Block, Error> {
    if parent == 0 {
        return allocate_root(size);
    }
    #[cfg(feature = "previous-registry")]
    return crate::registry::allocate_child(parent, client_size(size)?);
    #[cfg(not(feature = "previous-registry"))]
    return crate::region::allocate_child(parent, size);
}

/// `allocate_child`'s common case, when the registry has one that can be
/// tried alone (`region::quick_child`; only v3 has one): made, or left to
/// `Grow::child`, or to `allocate_child` with nothing changed.
#[cfg(not(feature = "previous-registry"))]
pub use crate::region::{quick_child, Grow, Quick};

/// `free_root`'s common case, tried alone the same way
/// (`region::quick_free`): done, or its rest left to `Rest::finish`, or
/// left to `free_root` with nothing changed.
#[cfg(not(feature = "previous-registry"))]
pub use crate::region::{quick_free, QuickFree, Rest};

#[cfg(feature = "previous-registry")]
pub use quick::{quick_child, quick_free, Grow, Quick, QuickFree, Rest};

/// Today's registry has no common case to try alone: every call is a miss.
#[cfg(feature = "previous-registry")]
mod quick {
    use super::{Block, Error, ULONG};

    // The export matches every case; only `Miss` is ever made here.
    #[allow(dead_code)]
    pub enum Quick {
        Made(Block),
        Grow(Grow),
        Miss,
    }

    /// Never made: `Quick::Grow` is never returned.
    pub enum Grow {}

    impl Grow {
        pub fn child(self, _size: ULONG) -> Result<Block, Error> {
            match self {}
        }
    }

    #[inline(always)]
    pub fn quick_child(_parent: usize, _size: ULONG) -> Quick {
        Quick::Miss
    }

    #[allow(dead_code)]
    pub enum QuickFree {
        Done,
        Rest(Rest),
        Miss,
    }

    /// Never made: `QuickFree::Rest` is never returned.
    pub enum Rest {}

    impl Rest {
        pub fn finish(self) {
            match self {}
        }
    }

    #[inline(always)]
    pub fn quick_free(_addr: usize) -> QuickFree {
        QuickFree::Miss
    }
}

/// Frees the root at `addr` and all its children (`MAPIFreeBuffer`), and
/// returns how many blocks that was. Anything else is left alone, and the
/// reason is returned.
#[cfg(feature = "previous-registry")]
#[inline]
pub fn free_root(addr: usize) -> Result<usize, NotARoot> {
    let mut freed = 0;
    for block in crate::registry::remove_root(addr)? {
        // SAFETY: the chain hands over each block after removing it from the
        // registry, so this is its last use.
        unsafe { block.release() };
        freed += 1;
    }
    Ok(freed)
}

/// A block of `size` bytes holding what the block at `addr` held, as many
/// bytes as fit (`MAPIReallocateBuffer`). A root is replaced, children and
/// all; a child gets a new sibling in the same tree and stays itself; 0 acts
/// as `allocate_root`. Anything else is `InvalidParameter`, with nothing
/// allocated.
#[cfg(feature = "previous-registry")]
pub fn reallocate(addr: usize, size: ULONG) -> Result<Block, Error> {
    if addr == 0 {
        return allocate_root(size);
    }
    let Reallocated { block, replaced_root } = crate::registry::reallocate(addr, client_size(size)?)?;
    if let Some(old_root) = replaced_root {
        // SAFETY: the old root left the registry in `reallocate`; its
        // children moved to the new root, and this is its last use.
        unsafe { old_root.release() };
    }
    Ok(block)
}

#[cfg(feature = "previous-registry")]
fn client_size(size: ULONG) -> Result<usize, Error> {
    usize::try_from(size).map_err(|_| Error::NoMemory)
}

/// The counts `mapi32_stats` reports.
#[cfg(feature = "previous-registry")]
pub fn stats() -> Counts {
    crate::registry::stats()
}

/// The operations on the library's own pages (`region`), for the calling
/// thread's own trees only in this step: a block of another thread's is
/// refused or ignored as foreign (see `region`'s documentation).
#[cfg(not(feature = "previous-registry"))]
mod v3 {
    use super::{Counts, Error, NotARoot, ULONG};
    use crate::region;
    pub use crate::region::Block;

    /// A new root of `size` bytes (`MAPIAllocateBuffer`).
    #[inline(always)]
    pub fn allocate_root(size: ULONG) -> Result<Block, Error> {
        region::allocate_root(size)
    }

    /// Frees the root at `addr` and all its children; how many blocks.
    #[inline(always)]
    pub fn free_root(addr: usize) -> Result<usize, NotARoot> {
        region::free_root(addr)
    }

    /// As `super::reallocate` describes; 0 acts as `allocate_root`.
    pub fn reallocate(addr: usize, size: ULONG) -> Result<Block, Error> {
        if addr == 0 {
            return allocate_root(size);
        }
        region::reallocate(addr, size)
    }

    pub fn stats() -> Counts {
        region::stats()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! These share the process-wide registry, and some look up addresses
    //! after freeing them; run in parallel, another test could have been
    //! handed such an address meanwhile (the stale-free limit of the README).
    //! So they take turns.
    use super::*;
    use std::sync::{Mutex, MutexGuard};

    static TURN: Mutex<()> = Mutex::new(());

    pub(crate) fn my_turn() -> MutexGuard<'static, ()> {
        TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn fill(block: Block, size: usize, byte: u8) {
        // SAFETY: a live block has `size` writable client bytes.
        unsafe { core::ptr::write_bytes(block.as_ptr(), byte, size) }
    }

    fn holds(block: Block, size: usize, byte: u8) -> bool {
        // SAFETY: as in `fill`, and the bytes were written by `fill`.
        unsafe { core::slice::from_raw_parts(block.as_ptr(), size) }.iter().all(|&b| b == byte)
    }

    #[test]
    fn a_root_and_its_children_are_freed_together() {
        let _turn = my_turn();
        let root = allocate_root(64).unwrap();
        let children: Vec<Block> = (0..10).map(|n| allocate_child(8 * n, root.addr()).unwrap()).collect();
        assert_eq!(free_root(root.addr()), Ok(11));
        for child in children {
            assert_eq!(allocate_child(1, child.addr()), Err(Error::InvalidParameter));
        }
        assert_eq!(free_root(root.addr()), Err(NotARoot::Unknown));
    }

    #[test]
    fn a_child_of_a_child_belongs_to_the_root() {
        let _turn = my_turn();
        let root = allocate_root(16).unwrap();
        let child = allocate_child(16, root.addr()).unwrap();
        let grandchild = allocate_child(16, child.addr()).unwrap();
        let great = allocate_child(16, grandchild.addr()).unwrap();
        assert_eq!(free_root(child.addr()), Err(NotARoot::Child));
        assert_eq!(free_root(grandchild.addr()), Err(NotARoot::Child));
        assert_eq!(free_root(root.addr()), Ok(4));
        assert_eq!(allocate_child(1, great.addr()), Err(Error::InvalidParameter));
    }

    #[test]
    fn contents_survive_siblings_and_refused_frees() {
        let _turn = my_turn();
        let root = allocate_root(32).unwrap();
        fill(root, 32, 0x11);
        let first = allocate_child(100, root.addr()).unwrap();
        fill(first, 100, 0x22);
        let second = allocate_child(200, first.addr()).unwrap();
        fill(second, 200, 0x33);
        assert_eq!(free_root(first.addr()), Err(NotARoot::Child));
        assert!(holds(root, 32, 0x11) && holds(first, 100, 0x22) && holds(second, 200, 0x33));
        assert_eq!(free_root(root.addr()), Ok(3));
    }

    #[test]
    fn unknown_parents_are_refused_and_nothing_stays_allocated() {
        let _turn = my_turn();
        let root = allocate_root(48).unwrap();
        for parent in [1, root.addr() + 1, root.addr() + 16, root.addr() - 16, usize::MAX & !15] {
            assert_eq!(allocate_child(8, parent), Err(Error::InvalidParameter), "{parent:#x}");
            // A bad parent outranks a size the C allocator refuses. (The
            // block is allocated before the heap is entered and released
            // after: the C suite checks that nothing stays allocated.)
            assert_eq!(allocate_child(ULONG::MAX, parent), Err(Error::InvalidParameter), "{parent:#x}");
            crate::sys::fail_allocation_after(Some(0));
            assert_eq!(allocate_child(8, parent), Err(Error::InvalidParameter), "{parent:#x}");
            crate::sys::fail_allocation_after(None);
        }
        assert_eq!(free_root(root.addr()), Ok(1), "the refused calls added no child");
    }

    /// Kopano's shape: copy an entry ID "onto a base, if there is one", with
    /// no base; the copy is a root that takes children and frees whole.
    #[test]
    fn no_parent_makes_a_root_as_allocate_buffer_does() {
        let _turn = my_turn();
        let before = stats();
        let entry_id = allocate_child(22, 0).unwrap();
        assert_eq!(entry_id.addr() % crate::sys::BLOCK_ALIGN, 0);
        fill(entry_id, 22, 0x5E);
        let child = allocate_child(40, entry_id.addr()).unwrap();
        let during = stats();
        assert_eq!(during.live_roots, before.live_roots + 1, "a root, not a child");
        assert_eq!(during.live_children, before.live_children + 1);
        assert!(holds(entry_id, 22, 0x5E));
        assert_eq!(free_root(child.addr()), Err(NotARoot::Child));
        assert_eq!(free_root(entry_id.addr()), Ok(2), "freed whole, with its child");
        if cfg!(feature = "previous-registry") {
            crate::sys::fail_allocation_after(Some(0));
            assert_eq!(allocate_child(8, 0), Err(Error::NoMemory), "out of memory as MAPIAllocateBuffer");
        }
    }

    #[test]
    fn free_of_unknown_pointers_is_refused() {
        let _turn = my_turn();
        let foreign = Box::new([0u8; 64]);
        let addr = foreign.as_ptr() as usize;
        assert_eq!(free_root(addr), Err(NotARoot::Unknown));
        assert_eq!(free_root(0), Err(NotARoot::Unknown));
        assert!(foreign.iter().all(|&b| b == 0));
    }

    // A refusal of the block's own allocation: the v3 registry asks the OS
    // only for whole pages (`region`'s tests refuse those).
    #[cfg(feature = "previous-registry")]
    #[test]
    fn a_refused_child_allocation_leaves_the_tree_unchanged() {
        let _turn = my_turn();
        let root = allocate_root(8).unwrap();
        let child = allocate_child(8, root.addr()).unwrap();
        crate::sys::fail_allocation_after(Some(0));
        assert_eq!(allocate_child(8, child.addr()), Err(Error::NoMemory));
        assert_eq!(free_root(root.addr()), Ok(2));
    }

    // The v3 registry has no tables to grow: its refusals are whole pages
    // (`region`'s tests). Its first call no longer always asks the OS for a
    // heap and a segment either: it may adopt an exited thread's.
    #[cfg(feature = "previous-registry")]
    #[test]
    fn registry_growth_refused_is_no_memory_and_leaks_nothing() {
        let _turn = my_turn();
        // The block allocation succeeds and the heap's table may or may not
        // need to grow; force a refusal of the *second* allocation on this
        // thread across many fresh blocks until one of them needed the
        // registry to grow.
        let mut kept = Vec::new();
        let mut saw_registry_refusal = false;
        for _ in 0..100_000 {
            crate::sys::fail_allocation_after(Some(1));
            match allocate_root(8) {
                Ok(block) => kept.push(block),
                Err(error) => {
                    assert_eq!(error, Error::NoMemory);
                    saw_registry_refusal = true;
                    break;
                }
            }
        }
        crate::sys::fail_allocation_after(None);
        assert!(saw_registry_refusal, "some insert had to grow a table");
        for block in kept {
            assert_eq!(free_root(block.addr()), Ok(1));
        }
    }

    // Another thread's tree: the v3 registry's next step (see `region`).
    #[cfg(feature = "previous-registry")]
    #[test]
    fn owner_and_guests_add_children_to_one_root_and_none_is_lost() {
        let _turn = my_turn();
        // The root's heap belongs to this thread, which keeps adding children
        // on its fast path while the workers come in as guests.
        const GUESTS: usize = 3;
        const PER_THREAD: usize = 5_000;
        let root = allocate_root(8).unwrap().addr();
        let guests: Vec<_> = (0..GUESTS)
            .map(|_| {
                std::thread::spawn(move || {
                    (0..PER_THREAD).map(|_| allocate_child(24, root).unwrap().addr()).collect::<Vec<_>>()
                })
            })
            .collect();
        let mut children: Vec<usize> = (0..PER_THREAD).map(|_| allocate_child(24, root).unwrap().addr()).collect();
        for guest in guests {
            children.extend(guest.join().unwrap());
        }
        children.sort_unstable();
        children.dedup();
        assert_eq!(children.len(), (GUESTS + 1) * PER_THREAD);
        assert_eq!(free_root(root), Ok((GUESTS + 1) * PER_THREAD + 1));
    }

    // Another thread's tree: the v3 registry's next step (see `region`).
    #[cfg(feature = "previous-registry")]
    #[test]
    fn a_tree_outlives_the_thread_that_built_it() {
        let _turn = my_turn();
        let (root, child) = std::thread::spawn(|| {
            let root = allocate_root(32).unwrap();
            let child = allocate_child(32, root.addr()).unwrap();
            (root.addr(), child.addr())
        })
        .join()
        .unwrap();
        // The thread is gone and its heap orphaned: the tree is still live,
        // still grows, refuses a child free, and frees whole from here.
        let grandchild = allocate_child(8, child).unwrap();
        assert_eq!(free_root(child), Err(NotARoot::Child));
        assert_eq!(free_root(root), Ok(3));
        assert_eq!(allocate_child(8, grandchild.addr()), Err(Error::InvalidParameter));
    }

    #[test]
    fn roots_freed_on_another_thread_are_gone_everywhere() {
        let _turn = my_turn();
        let roots: Vec<usize> = (0..1_000).map(|n| allocate_root(n % 200).unwrap().addr()).collect();
        let freer = std::thread::spawn({
            let roots = roots.clone();
            move || roots.iter().map(|&root| free_root(root)).filter(|freed| *freed == Ok(1)).count()
        });
        assert_eq!(freer.join().unwrap(), roots.len(), "each root was found in this thread's heap and freed");
    }

    #[test]
    fn reallocating_a_root_moves_its_bytes_and_children() {
        let _turn = my_turn();
        let root = allocate_root(16).unwrap();
        fill(root, 16, 0x11);
        let child = allocate_child(8, root.addr()).unwrap();
        let bigger = reallocate(root.addr(), 64).unwrap();
        assert!(holds(bigger, 16, 0x11), "the old bytes were copied");
        fill(bigger, 64, 0x22);
        assert_eq!(free_root(root.addr()), Err(NotARoot::Unknown), "the old root is gone");
        let grandchild = allocate_child(8, child.addr()).unwrap();
        assert_eq!(free_root(bigger.addr()), Ok(3), "the new root took over the children");
        assert_eq!(allocate_child(8, grandchild.addr()), Err(Error::InvalidParameter));
    }

    #[test]
    fn reallocating_a_child_adds_a_sibling_and_keeps_the_child() {
        let _turn = my_turn();
        let root = allocate_root(8).unwrap();
        let child = allocate_child(32, root.addr()).unwrap();
        fill(child, 32, 0x33);
        let smaller = reallocate(child.addr(), 8).unwrap();
        assert!(holds(smaller, 8, 0x33));
        assert!(holds(child, 32, 0x33), "the old child lives on, untouched");
        assert_eq!(free_root(smaller.addr()), Err(NotARoot::Child), "the new block is a child");
        assert_eq!(free_root(root.addr()), Ok(3));
    }

    #[test]
    fn reallocating_null_allocates_and_unknown_is_refused() {
        let _turn = my_turn();
        let root = reallocate(0, 24).unwrap();
        assert_eq!(free_root(root.addr()), Ok(1));
        let live = allocate_root(8).unwrap();
        let before = stats();
        for unknown in [live.addr() + 16, live.addr() - 16, 16] {
            assert_eq!(reallocate(unknown, 8), Err(Error::InvalidParameter), "{unknown:#x}");
            // A bad block outranks a size the C allocator refuses.
            crate::sys::fail_allocation_after(Some(0));
            assert_eq!(reallocate(unknown, 8), Err(Error::InvalidParameter), "{unknown:#x}");
            crate::sys::fail_allocation_after(None);
        }
        let after = stats();
        assert_eq!((after.live_roots, after.live_children), (before.live_roots, before.live_children));
        assert_eq!(free_root(live.addr()), Ok(1));
    }

    // A refusal of the block's own allocation: the v3 registry asks the OS
    // only for whole pages (`region`'s tests refuse those).
    #[cfg(feature = "previous-registry")]
    #[test]
    fn a_refused_reallocation_changes_nothing() {
        let _turn = my_turn();
        let root = allocate_root(16).unwrap();
        fill(root, 16, 0x44);
        let child = allocate_child(8, root.addr()).unwrap();
        crate::sys::fail_allocation_after(Some(0));
        assert_eq!(reallocate(root.addr(), 32), Err(Error::NoMemory));
        crate::sys::fail_allocation_after(Some(0));
        assert_eq!(reallocate(child.addr(), 32), Err(Error::NoMemory));
        assert!(holds(root, 16, 0x44));
        assert_eq!(free_root(root.addr()), Ok(2), "the same root, with its one child");
    }

    #[test]
    fn stats_count_live_blocks_bytes_and_allocations() {
        let _turn = my_turn();
        let before = stats();
        let root = allocate_root(100).unwrap();
        let child = allocate_child(20, root.addr()).unwrap();
        let _grandchild = allocate_child(3, child.addr()).unwrap();
        let during = stats();
        assert_eq!(during.live_roots, before.live_roots + 1);
        assert_eq!(during.live_children, before.live_children + 2);
        assert_eq!(during.live_bytes, before.live_bytes + 123);
        assert_eq!(during.allocations, before.allocations + 3);
        assert!(during.peak_bytes >= during.live_bytes);
        let moved = reallocate(root.addr(), 10).unwrap();
        let after_move = stats();
        assert_eq!(after_move.live_roots, during.live_roots);
        assert_eq!(after_move.live_bytes, during.live_bytes - 90);
        assert_eq!(after_move.allocations, during.allocations + 1);
        assert_eq!(free_root(moved.addr()), Ok(3));
        let after = stats();
        assert_eq!(
            (after.live_roots, after.live_children, after.live_bytes),
            (before.live_roots, before.live_children, before.live_bytes)
        );
        assert_eq!(after.allocations, before.allocations + 4);
    }
}
