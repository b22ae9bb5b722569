//! Size classes: the slot sizes roots are rounded to, the chunk sizes
//! children are bumped into, and the reciprocal that finds the slot holding
//! an address without a division.
//!
//! Root slots (header included) are multiples of 16 bytes up to 1 KiB, then
//! four classes per power of two up to 32 KiB (at most 25 % lost to
//! rounding); anything bigger takes pages of its own. Chunks are powers of
//! two from 64 bytes to a whole page.

use super::{GRANULE, PAGE_SIZE};

/// Root slots up to this size are multiples of [`GRANULE`].
const SMALL_MAX: usize = 1024;
/// The largest root slot a class serves; bigger roots get their own pages.
pub const ROOT_SLOT_MAX: usize = 32 * 1024;
/// Classes 1..=64 are 16..=1024 bytes; then 4 for each of the 5 powers of
/// two up to 32 KiB. Class 0 is never used (the smallest slot is 32 bytes).
pub const ROOT_CLASSES: usize = SMALL_MAX / GRANULE + 1 + 5 * 4;

/// The smallest chunk: a tree's first, enough for one 32-byte child.
pub const CHUNK_MIN_SHIFT: u32 = 6;
/// The largest chunk class is a whole page.
pub const CHUNK_MAX_SHIFT: u32 = super::PAGE_SHIFT;
pub const CHUNK_CLASSES: usize = (CHUNK_MAX_SHIFT - CHUNK_MIN_SHIFT + 1) as usize;
/// Each chunk of a tree is 2^GROWTH times the last (tree17's 16 children
/// fit in 3 chunks: 64, 512 and 4096 bytes).
pub const CHUNK_GROWTH: usize = 3;

/// The class of a root slot of `slot` bytes (a multiple of [`GRANULE`], at
/// least 32, at most [`ROOT_SLOT_MAX`]).
#[inline(always)]
pub fn root_class(slot: usize) -> usize {
    if slot <= SMALL_MAX {
        return slot / GRANULE;
    }
    let bits = usize::BITS - 1 - (slot - 1).leading_zeros(); // 10..=14
    SMALL_MAX / GRANULE + 1 + (bits as usize - 10) * 4 + (((slot - 1) >> (bits - 2)) & 3)
}

/// The slot size of root class `class`.
pub const fn root_class_size(class: usize) -> usize {
    if class <= SMALL_MAX / GRANULE {
        return class * GRANULE;
    }
    let step = class - (SMALL_MAX / GRANULE + 1);
    let bits = 10 + step / 4;
    (1 << bits) + (step % 4 + 1) * (1 << (bits - 2))
}

/// The size of chunk class `class`.
#[inline(always)]
pub const fn chunk_class_size(class: usize) -> usize {
    1 << (CHUNK_MIN_SHIFT as usize + class)
}

/// The smallest chunk class holding `bytes`, if a chunk can.
pub fn chunk_class_for(bytes: usize) -> Option<usize> {
    if bytes > chunk_class_size(CHUNK_CLASSES - 1) {
        return None;
    }
    let bits = usize::BITS - bytes.saturating_sub(1).leading_zeros();
    Some((bits.max(CHUNK_MIN_SHIFT) - CHUNK_MIN_SHIFT) as usize)
}

/// `ceil(2^32 / slot_size)`: for every offset `off` into a page of such
/// slots, `off * recip >> 32 == off / slot_size`, because the error
/// `off * (recip - 2^32 / slot_size) / 2^32` stays below
/// `off / 2^32 < 1 / slot_size` while `off * slot_size < 2^32`
/// (64 KiB × 64 KiB at most). 0 for a page holding a single slot.
pub const fn reciprocal(slot_size: usize, slots: usize) -> u32 {
    if slots <= 1 || slot_size == 0 {
        return 0;
    }
    (((1u64 << 32) + slot_size as u64 - 1) / slot_size as u64) as u32
}

/// `reciprocal` of each root class's one-page layout, for the threads that
/// find another thread's root from its class alone (`validate::any_slot`),
/// without a division.
const ROOT_RECIPROCALS: [u32; ROOT_CLASSES] = {
    let mut table = [0u32; ROOT_CLASSES];
    let mut class = 2; // classes 0 and 1 are never used
    while class < ROOT_CLASSES {
        let size = root_class_size(class);
        table[class] = reciprocal(size, PAGE_SIZE / size);
        class += 1;
    }
    table
};

/// The reciprocal of a page of root class `class`, if it is one.
#[inline(always)]
pub fn root_reciprocal(class: usize) -> Option<u32> {
    ROOT_RECIPROCALS.get(class).copied().filter(|&recip| recip != 0)
}

/// The index of the slot holding offset `off` of a page of slots with this
/// reciprocal.
#[inline(always)]
pub fn slot_index(off: usize, recip: u32) -> usize {
    ((off as u64 * recip as u64) >> 32) as usize
}

// Every slot of a class page is found by the reciprocal (see `reciprocal`).
const _: () = assert!((PAGE_SIZE as u64) * (ROOT_SLOT_MAX as u64) < 1 << 32);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_reciprocal_table_matches_the_pages() {
        for class in 2..ROOT_CLASSES {
            let size = root_class_size(class);
            assert_eq!(root_reciprocal(class), Some(reciprocal(size, PAGE_SIZE / size)), "class {class}");
        }
        assert_eq!(root_reciprocal(0), None);
        assert_eq!(root_reciprocal(ROOT_CLASSES), None);
    }

    #[test]
    fn classes_round_up_and_waste_at_most_a_quarter() {
        let mut class = 2;
        for slot in (32..=ROOT_SLOT_MAX).step_by(GRANULE) {
            let c = root_class(slot);
            assert!(c >= class, "classes grow with the slot: {slot}");
            class = c;
            let size = root_class_size(c);
            assert!(size >= slot && size % GRANULE == 0, "{slot} -> {size}");
            assert!(c == 2 || root_class_size(c - 1) < slot, "{slot}: the smallest class that holds it");
            assert!(slot <= SMALL_MAX || (size - slot) * 4 <= slot, "{slot} -> {size}");
        }
        assert_eq!(root_class(ROOT_SLOT_MAX), ROOT_CLASSES - 1);
        assert_eq!(root_class_size(ROOT_CLASSES - 1), ROOT_SLOT_MAX);
        assert_eq!(root_class_size(root_class(48)), 48, "a 32-byte root costs 48 bytes");
    }

    #[test]
    fn chunk_classes_are_the_powers_of_two_that_hold_the_bytes() {
        assert_eq!(chunk_class_for(1), Some(0));
        assert_eq!(chunk_class_for(64), Some(0));
        assert_eq!(chunk_class_for(65), Some(1));
        assert_eq!(chunk_class_for(PAGE_SIZE), Some(CHUNK_CLASSES - 1));
        assert_eq!(chunk_class_for(PAGE_SIZE + 1), None);
        for class in 0..CHUNK_CLASSES {
            let size = chunk_class_size(class);
            assert_eq!(chunk_class_for(size), Some(class));
            assert_eq!(chunk_class_for(size / 2 + 1), Some(class));
        }
    }

    /// Every offset of every slot of every class page, roots and chunks.
    #[test]
    fn the_reciprocal_finds_every_slot_of_every_class() {
        let sizes = (2..ROOT_CLASSES).map(root_class_size).chain((0..CHUNK_CLASSES).map(chunk_class_size));
        for size in sizes {
            let slots = PAGE_SIZE / size;
            let recip = reciprocal(size, slots);
            for off in 0..slots * size {
                let index = if recip == 0 { 0 } else { slot_index(off, recip) };
                assert_eq!(index, off / size, "slot size {size}, offset {off}");
            }
        }
    }

    #[test]
    fn a_too_small_reciprocal_would_be_caught() {
        // The rounding up matters: truncating 2^32 / 48 misplaces the last
        // offset of some slot, which the exhaustive test above would see.
        let size = 48;
        let truncated = ((1u64 << 32) / size as u64) as u32;
        assert!((0..PAGE_SIZE / size * size).any(|off| slot_index(off, truncated) != off / size));
    }
}
