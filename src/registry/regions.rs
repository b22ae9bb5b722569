//! Which parts of the address space a heap has blocks in: a summary that a
//! lookup reads without entering the heap, to pass by every heap that cannot
//! hold the pointer. Entering a heap as a guest waits for its owner to finish
//! its current call, and takes a lock and a fence even when the owner is
//! idle; so without this, a foreign pointer waited for every busy thread in
//! turn, and every lookup paid for every thread that ever allocated, idle or
//! gone (`make bench`'s cross-thread and idle-thread rows).
//!
//! One bit per 64 MiB region of the address space, folded onto 64 bits.
//! 64 MiB is the size of glibc's per-thread arena heaps on 64-bit systems
//! (1 MiB on 32-bit: the region follows the pointer width), so the blocks of
//! threads with arenas of their own land on different bits.
//!
//! Why a lookup may trust a clear bit: whoever holds the heap sets a block's
//! bit before recording the block, and clears the summary only when the heap
//! holds no block at all. A caller that can name a live block learned of it
//! after the call that made it returned, so it sees that bit set (or a later
//! value, which keeps it while the block lives). A block freed meanwhile on
//! another thread may be missed: the lookup then acts as if that free came
//! first, which it may have.

use core::sync::atomic::{AtomicU64, Ordering};

pub(super) const REGION_SHIFT: u32 = if cfg!(target_pointer_width = "64") { 26 } else { 20 };

/// Read by every other thread's lookups, written only when a heap first uses
/// a region or empties.
pub(super) struct Regions(AtomicU64);

impl Regions {
    pub(super) const fn new() -> Regions {
        Regions(AtomicU64::new(0))
    }

    #[inline(always)]
    fn bit(addr: usize) -> u64 {
        1 << ((addr >> REGION_SHIFT) & 63)
    }

    /// Before a block at `addr` is recorded, by whoever holds the heap (so no
    /// two callers race: a plain read-modify-write).
    #[inline(always)]
    pub(super) fn cover(&self, addr: usize) {
        let regions = self.0.load(Ordering::Relaxed);
        let bit = Self::bit(addr);
        if regions & bit == 0 {
            self.0.store(regions | bit, Ordering::Relaxed);
        }
    }

    /// When the heap's last block has gone, by whoever holds it.
    #[inline]
    pub(super) fn clear(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    /// Whether the heap may hold a block at `addr`: `false` is certain for a
    /// block the caller can name (see the module's comment).
    #[inline]
    pub(super) fn may_hold(&self, addr: usize) -> bool {
        self.0.load(Ordering::Relaxed) & Self::bit(addr) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_summary_holds_nothing() {
        let regions = Regions::new();
        for addr in [0, 16, 1 << 30, usize::MAX & !15] {
            assert!(!regions.may_hold(addr));
        }
    }

    #[test]
    fn a_covered_region_may_hold_any_address_in_it_and_clear_forgets_it() {
        let regions = Regions::new();
        let region = 5usize << REGION_SHIFT;
        regions.cover(region + 64);
        assert!(regions.may_hold(region));
        assert!(regions.may_hold(region + (1 << REGION_SHIFT) - 16));
        assert!(!regions.may_hold(region + (1 << REGION_SHIFT)), "the next region");
        assert!(!regions.may_hold(region - 16), "the region before");
        regions.clear();
        assert!(!regions.may_hold(region + 64));
    }

    #[test]
    fn covering_keeps_the_regions_already_covered() {
        let regions = Regions::new();
        let first = 3usize << REGION_SHIFT;
        let second = 40usize << REGION_SHIFT;
        regions.cover(first);
        regions.cover(second);
        regions.cover(first);
        assert!(regions.may_hold(first) && regions.may_hold(second));
    }
}
