//! The MAPI operations on trees, in safe Rust, over `region` (the
//! library's own pages): `ffi` turns their results into status codes.
//! What is a tree's rule rather than the memory's lives here: no parent
//! makes a root (SPEC §2), a null block reallocates into a new root (§5).

use crate::region;
pub use crate::region::{Block, Counts, NotARoot};
use crate::scode::{Error, ULONG};

/// The common cases the exports try first, each alone as a leaf function
/// (`region::quick_child`, `region::quick_free`): done, or the rest left to
/// `Grow::child` / `Rest::finish`, or left to `allocate_child` /
/// `free_root` with nothing changed.
pub use crate::region::{quick_child, quick_free, Grow, Quick, QuickFree, Rest};

/// A new root of `size` bytes (`MAPIAllocateBuffer`).
#[inline(always)]
pub fn allocate_root(size: ULONG) -> Result<Block, Error> {
    region::allocate_root(size)
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
    region::allocate_child(parent, size)
}

/// Frees the root at `addr` and all its children (`MAPIFreeBuffer`), and
/// returns how many blocks that was. Anything else is left alone, and the
/// reason is returned.
#[inline(always)]
pub fn free_root(addr: usize) -> Result<usize, NotARoot> {
    region::free_root(addr)
}

/// A block of `size` bytes holding what the block at `addr` held, as many
/// bytes as fit (`MAPIReallocateBuffer`). A root is replaced, children and
/// all, from any thread; a child gets a new sibling in the same tree and
/// stays itself; 0 acts as `allocate_root`. Anything else is
/// `InvalidParameter`, with nothing allocated.
pub fn reallocate(addr: usize, size: ULONG) -> Result<Block, Error> {
    if addr == 0 {
        return allocate_root(size);
    }
    region::reallocate(addr, size)
}

/// The counts `mapi32_stats` reports.
pub fn stats() -> Counts {
    region::stats()
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
            crate::fault::fail_allocation_after(Some(0));
            assert_eq!(allocate_child(8, parent), Err(Error::InvalidParameter), "{parent:#x}");
            crate::fault::fail_allocation_after(None);
        }
        assert_eq!(free_root(root.addr()), Ok(1), "the refused calls added no child");
    }

    /// Kopano's shape: copy an entry ID "onto a base, if there is one", with
    /// no base; the copy is a root that takes children and frees whole.
    #[test]
    fn no_parent_makes_a_root_as_allocate_buffer_does() {
        let _turn = my_turn();
        let before = crate::region::own_share();
        let entry_id = allocate_child(22, 0).unwrap();
        assert_eq!(entry_id.addr() % crate::region::GRANULE, 0);
        fill(entry_id, 22, 0x5E);
        let child = allocate_child(40, entry_id.addr()).unwrap();
        let during = crate::region::own_share();
        assert_eq!(during.live_roots, before.live_roots + 1, "a root, not a child");
        assert_eq!(during.live_children, before.live_children + 1);
        assert!(holds(entry_id, 22, 0x5E));
        assert_eq!(free_root(child.addr()), Err(NotARoot::Child));
        assert_eq!(free_root(entry_id.addr()), Ok(2), "freed whole, with its child");
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

    #[test]
    fn owner_and_guests_add_children_to_one_root_and_none_is_lost() {
        let _turn = my_turn();
        // The root's heap belongs to this thread, which keeps adding children
        // on its fast path while the workers add theirs in chunks of their own.
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
        // The count is of the blocks in the root's own chunks: the guests'
        // children lie in theirs, dead with the tree all the same.
        assert_eq!(free_root(root), Ok(PER_THREAD + 1));
        for child in children {
            assert_eq!(allocate_child(8, child), Err(Error::InvalidParameter), "{child:#x} died with its tree");
        }
    }

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
        // The thread is gone and its heap an orphan: the tree is still live,
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
        let before = crate::region::own_share();
        for unknown in [live.addr() + 16, live.addr() - 16, 16] {
            assert_eq!(reallocate(unknown, 8), Err(Error::InvalidParameter), "{unknown:#x}");
            // A bad block outranks a size the C allocator refuses.
            crate::fault::fail_allocation_after(Some(0));
            assert_eq!(reallocate(unknown, 8), Err(Error::InvalidParameter), "{unknown:#x}");
            crate::fault::fail_allocation_after(None);
        }
        let after = crate::region::own_share();
        assert_eq!((after.live_roots, after.live_children), (before.live_roots, before.live_children));
        assert_eq!(free_root(live.addr()), Ok(1));
    }

    #[test]
    fn stats_count_live_blocks_bytes_and_allocations() {
        let _turn = my_turn();
        let before = crate::region::own_share();
        let root = allocate_root(100).unwrap();
        let child = allocate_child(20, root.addr()).unwrap();
        let _grandchild = allocate_child(3, child.addr()).unwrap();
        let during = crate::region::own_share();
        assert_eq!(during.live_roots, before.live_roots + 1);
        assert_eq!(during.live_children, before.live_children + 2);
        assert_eq!(during.live_bytes, before.live_bytes + 123);
        assert_eq!(during.allocations, before.allocations + 3);
        assert!(during.peak_bytes >= during.live_bytes);
        let moved = reallocate(root.addr(), 10).unwrap();
        let after_move = crate::region::own_share();
        assert_eq!(after_move.live_roots, during.live_roots);
        assert_eq!(after_move.live_bytes, during.live_bytes - 90);
        assert_eq!(after_move.allocations, during.allocations + 1);
        assert_eq!(free_root(moved.addr()), Ok(3));
        let after = crate::region::own_share();
        assert_eq!(
            (after.live_roots, after.live_children, after.live_bytes),
            (before.live_roots, before.live_children, before.live_bytes)
        );
        assert_eq!(after.allocations, before.allocations + 4);
    }
}
