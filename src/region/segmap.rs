//! "Is this address in one of our segments?": one bit per segment-sized
//! unit of the address space, in a static array, read with one load and no
//! lock (mimalloc's segment map). A segment's bit is set once it is ready
//! and cleared only as the library is unloaded (`unload`): segments stay
//! mapped while the library can be called, so whoever sees the bit may read
//! the segment's metadata at any time after.
//!
//! On 64-bit targets the map covers the 47-bit user address space of
//! x86-64 Linux and Windows, in 4 MiB units: 2^25 bits, 4 MiB of `.bss` of
//! which only the words of segments in use are ever touched. A segment the
//! kernel places above that is given back unpublished (see `segment`).

use super::{SEGMENT_SHIFT, SEGMENT_SIZE};
use core::sync::atomic::{AtomicUsize, Ordering};

/// Address bits the map covers: addresses at or above `1 << ADDRESS_BITS`
/// are never ours.
pub const ADDRESS_BITS: u32 = if cfg!(target_pointer_width = "64") { 47 } else { 32 };

const UNITS: usize = 1 << (ADDRESS_BITS - SEGMENT_SHIFT);
const WORD_BITS: usize = usize::BITS as usize;

#[allow(clippy::declare_interior_mutable_const)] // the array's initialiser, copied
const CLEAR: AtomicUsize = AtomicUsize::new(0);
static MAP: [AtomicUsize; UNITS / WORD_BITS] = [CLEAR; UNITS / WORD_BITS];

/// The unit of `addr` and its word and bit in [`MAP`], if the map covers it.
#[inline(always)]
fn place(addr: usize) -> Option<(usize, usize)> {
    let unit = addr >> SEGMENT_SHIFT;
    if unit >= UNITS {
        return None;
    }
    Some((unit / WORD_BITS, unit % WORD_BITS))
}

/// Whether `addr` lies in the first unit of a published segment. Release/
/// acquire: a reader that sees the bit sees the segment's header written
/// before [`publish`].
#[inline(always)]
pub fn contains(addr: usize) -> bool {
    match place(addr) {
        Some((word, bit)) => (MAP[word].load(Ordering::Acquire) >> bit) & 1 != 0,
        None => false,
    }
}

/// Publishes the segment starting at `start` (a multiple of
/// [`SEGMENT_SIZE`]); false if the map cannot cover it. Only the first unit
/// of a segment bigger than one is published: every address the library
/// validates (a block's start) lies there, and the rest of a large block is
/// an interior address, which is never ours to free.
pub fn publish(start: usize) -> bool {
    debug_assert_eq!(start % SEGMENT_SIZE, 0);
    match place(start) {
        Some((word, bit)) => {
            MAP[word].fetch_or(1 << bit, Ordering::Release);
            true
        }
        None => false,
    }
}

/// Takes the segment at `start` out of the map, as the library is unloaded
/// and before the segment is unmapped: from then on, nothing in it is ours.
pub fn withdraw(start: usize) {
    if let Some((word, bit)) = place(start) {
        MAP[word].fetch_and(!(1 << bit), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_never_mapped_are_not_ours() {
        for addr in [0, 1, 16, 4096, SEGMENT_SIZE - 1, usize::MAX, usize::MAX & !15, usize::MAX - SEGMENT_SIZE] {
            assert!(!contains(addr), "{addr:#x}");
        }
        // The stack and the C heap are never segments.
        let local = 0u64;
        assert!(!contains(&local as *const u64 as usize));
        let boxed = Box::new(0u64);
        assert!(!contains(&*boxed as *const u64 as usize));
    }

    #[test]
    fn the_ends_of_the_address_space_are_refused_not_wrapped() {
        // Past the covered range: no bit, whatever the word would have been.
        #[cfg(target_pointer_width = "64")]
        {
            let beyond = 1usize << ADDRESS_BITS;
            assert!(place(beyond).is_none());
            assert!(place(beyond - 1).is_some());
            assert!(!publish(beyond));
            assert!(!contains(beyond));
        }
        assert!(place(usize::MAX).is_none() || ADDRESS_BITS == usize::BITS);
        let (word, bit) = place(usize::MAX >> (usize::BITS - ADDRESS_BITS)).unwrap();
        assert_eq!((word, bit), (MAP.len() - 1, WORD_BITS - 1), "the last unit is the last bit");
    }

    #[test]
    fn a_published_unit_and_only_it_is_ours() {
        // A real mapping, kept for good: a published unit must stay mapped.
        let start = crate::os::map_aligned(2 * SEGMENT_SIZE, SEGMENT_SIZE) as usize;
        assert_ne!(start, 0);
        assert!(!contains(start));
        assert!(publish(start));
        assert!(contains(start) && contains(start + 16) && contains(start + SEGMENT_SIZE - 1));
        assert!(!contains(start + SEGMENT_SIZE), "the next unit, mapped but not published");
        crate::os::unmap((start + SEGMENT_SIZE) as *mut u8, SEGMENT_SIZE);
    }
}
