//! The three MAPI operations in safe Rust: blocks from `block`, liveness and
//! chains from `registry`. `ffi` turns their results into status codes.

use crate::block::Block;
use crate::registry::{self, NotARoot};
use crate::scode::{Error, ULONG};

/// A new root of `size` bytes (`MAPIAllocateBuffer`).
pub fn allocate_root(size: ULONG) -> Result<Block, Error> {
    let block = Block::allocate(client_size(size)?)?;
    if let Err(error) = registry::insert_root(block) {
        // SAFETY: the block is fresh, and the registry refused to record it,
        // so nothing else knows it.
        unsafe { block.release() };
        return Err(error);
    }
    Ok(block)
}

/// A new child of `size` bytes that lives as long as the root of `parent`
/// (`MAPIAllocateMore`). `parent` is only ever looked up, never read.
pub fn allocate_child(size: ULONG, parent: usize) -> Result<Block, Error> {
    // Refuse a bad parent before allocating anything, so that it is reported
    // as such whatever the size, and costs no trip to the C allocator.
    // `insert_child` checks again under the lock, for a concurrent free.
    if parent == 0 || !registry::is_live(parent) {
        return Err(Error::InvalidParameter);
    }
    let block = Block::allocate(client_size(size)?)?;
    if let Err(error) = registry::insert_child(parent, block) {
        // SAFETY: as in `allocate_root`.
        unsafe { block.release() };
        return Err(error);
    }
    Ok(block)
}

/// Frees the root at `addr` and all its children (`MAPIFreeBuffer`), and
/// returns how many blocks that was. Anything else is left alone, and the
/// reason is returned.
pub fn free_root(addr: usize) -> Result<usize, NotARoot> {
    let mut freed = 0;
    for block in registry::remove_root(addr)? {
        // SAFETY: the chain hands over each block after removing it from the
        // registry, so this is its last use.
        unsafe { block.release() };
        freed += 1;
    }
    Ok(freed)
}

fn client_size(size: ULONG) -> Result<usize, Error> {
    usize::try_from(size).map_err(|_| Error::NoMemory)
}

#[cfg(test)]
mod tests {
    //! These share the process-wide registry with each other, so they check
    //! their own blocks, not global counts.
    use super::*;

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
        let root = allocate_root(48).unwrap();
        for parent in [0, 1, root.addr() + 1, root.addr() + 16, root.addr() - 16, usize::MAX & !15] {
            assert_eq!(allocate_child(8, parent), Err(Error::InvalidParameter), "{parent:#x}");
            // A bad parent outranks a size the C allocator would refuse, and
            // nothing is requested from it at all.
            crate::sys::fail_allocation_after(Some(0));
            assert_eq!(allocate_child(ULONG::MAX, parent), Err(Error::InvalidParameter), "{parent:#x}");
            assert!(crate::sys::alloc_aligned(8).is_null(), "the armed failure was not consumed");
        }
        assert_eq!(free_root(root.addr()), Ok(1), "the refused calls added no child");
    }

    #[test]
    fn free_of_unknown_pointers_is_refused() {
        let foreign = Box::new([0u8; 64]);
        let addr = foreign.as_ptr() as usize;
        assert_eq!(free_root(addr), Err(NotARoot::Unknown));
        assert_eq!(free_root(0), Err(NotARoot::Unknown));
        assert!(foreign.iter().all(|&b| b == 0));
    }

    #[test]
    fn a_refused_child_allocation_leaves_the_tree_unchanged() {
        let root = allocate_root(8).unwrap();
        let child = allocate_child(8, root.addr()).unwrap();
        crate::sys::fail_allocation_after(Some(0));
        assert_eq!(allocate_child(8, child.addr()), Err(Error::NoMemory));
        assert_eq!(free_root(root.addr()), Ok(2));
    }

    #[test]
    fn registry_growth_refused_is_no_memory_and_leaks_nothing() {
        // The block allocation succeeds and the registry's first table
        // allocation for this shard may or may not be needed; force a refusal
        // of the *second* allocation on this thread across many fresh blocks
        // until one of them needed the registry to grow.
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

    #[test]
    fn many_threads_add_children_to_one_root_and_none_is_lost() {
        const THREADS: usize = 4;
        const PER_THREAD: usize = 5_000;
        let root = allocate_root(8).unwrap().addr();
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                std::thread::spawn(move || {
                    (0..PER_THREAD).map(|_| allocate_child(24, root).unwrap().addr()).collect::<Vec<_>>()
                })
            })
            .collect();
        let mut children: Vec<usize> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
        children.sort_unstable();
        children.dedup();
        assert_eq!(children.len(), THREADS * PER_THREAD);
        assert_eq!(free_root(root), Ok(THREADS * PER_THREAD + 1));
    }
}
