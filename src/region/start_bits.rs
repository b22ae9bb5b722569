//! A bit per 16-byte granule of a segment, set where a live child starts:
//! what tells a child's address from an address inside a child, without
//! reading anything at it. Only chunk pages have bits set; a chunk's bits
//! are cleared when its tree is freed, so a stale child pointer fails too.
//!
//! Only the segment's owner writes them; other threads read them to
//! validate a child, hence atomics, used with relaxed loads and stores
//! (plain moves: the owner's read-modify-writes are not atomic ones).

use core::sync::atomic::{AtomicUsize, Ordering};

const WORD_BITS: usize = usize::BITS as usize;

/// The bits of one segment, word by word; granule `g` is bit `g % W` of
/// word `g / W`.
#[repr(transparent)]
#[derive(Debug)]
pub struct StartBits<const WORDS: usize>([AtomicUsize; WORDS]);

impl<const WORDS: usize> StartBits<WORDS> {
    /// Granules covered.
    pub const GRANULES: usize = WORDS * WORD_BITS;

    #[inline(always)]
    pub fn set(&self, granule: usize) {
        if let Some(word) = self.0.get(granule / WORD_BITS) {
            word.store(word.load(Ordering::Relaxed) | 1 << (granule % WORD_BITS), Ordering::Relaxed);
        }
    }

    #[inline(always)]
    pub fn test(&self, granule: usize) -> bool {
        match self.0.get(granule / WORD_BITS) {
            Some(word) => (word.load(Ordering::Relaxed) >> (granule % WORD_BITS)) & 1 != 0,
            None => false,
        }
    }

    /// Clears the `count` granules from `first` on: the first and last
    /// words masked, the ones between zeroed (a tree's free clears each of
    /// its chunks so).
    #[inline]
    pub fn clear(&self, first: usize, count: usize) {
        let end = first.saturating_add(count).min(Self::GRANULES);
        if first >= end {
            return;
        }
        let (first_word, last_word) = (first / WORD_BITS, (end - 1) / WORD_BITS);
        let from_first = usize::MAX << (first % WORD_BITS);
        let to_last = usize::MAX >> (WORD_BITS - 1 - (end - 1) % WORD_BITS);
        if first_word == last_word {
            return self.clear_bits(first_word, from_first & to_last);
        }
        self.clear_bits(first_word, from_first);
        for word in self.0.iter().take(last_word).skip(first_word + 1) {
            word.store(0, Ordering::Relaxed);
        }
        self.clear_bits(last_word, to_last);
    }

    #[inline(always)]
    fn clear_bits(&self, word: usize, mask: usize) {
        if let Some(word) = self.0.get(word) {
            word.store(word.load(Ordering::Relaxed) & !mask, Ordering::Relaxed);
        }
    }

    /// The first set granule in `[from, end)`, else `end`.
    pub fn next_set(&self, from: usize, end: usize) -> usize {
        let end = end.min(Self::GRANULES);
        let mut granule = from;
        while granule < end {
            let bits = match self.0.get(granule / WORD_BITS) {
                Some(word) => word.load(Ordering::Relaxed) >> (granule % WORD_BITS),
                None => 0,
            };
            if bits != 0 {
                return (granule + bits.trailing_zeros() as usize).min(end);
            }
            granule = (granule / WORD_BITS + 1) * WORD_BITS;
        }
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORDS: usize = 4;

    fn bits() -> StartBits<WORDS> {
        StartBits([(); WORDS].map(|_| AtomicUsize::new(0)))
    }

    #[test]
    fn set_test_and_clear_across_words() {
        let b = bits();
        for g in [0, 1, 63 % WORD_BITS, WORD_BITS, 2 * WORD_BITS + 5, StartBits::<WORDS>::GRANULES - 1] {
            assert!(!b.test(g));
            b.set(g);
            assert!(b.test(g));
        }
        assert!(!b.test(2), "only what was set");
        b.clear(1, 2 * WORD_BITS + 5 - 1);
        assert!(b.test(0) && !b.test(1) && !b.test(WORD_BITS) && b.test(2 * WORD_BITS + 5));
        b.clear(0, usize::MAX);
        assert!((0..StartBits::<WORDS>::GRANULES).all(|g| !b.test(g)));
    }

    #[test]
    fn clear_takes_exactly_its_granules_wherever_they_start_and_end() {
        let all = StartBits::<WORDS>::GRANULES;
        for first in (0..all).step_by(7).chain([WORD_BITS - 1, WORD_BITS, all - 1]) {
            for count in (0..=all + 1).step_by(5).chain([1, WORD_BITS, all - first]) {
                let b = bits();
                (0..all).for_each(|g| b.set(g));
                b.clear(first, count);
                let end = first.saturating_add(count);
                let wrong = (0..all).find(|&g| b.test(g) == (first..end).contains(&g));
                assert_eq!(wrong, None, "clear({first}, {count})");
            }
        }
    }

    #[test]
    fn granules_past_the_end_are_never_set() {
        let b = bits();
        b.set(StartBits::<WORDS>::GRANULES);
        b.set(usize::MAX);
        assert!(!b.test(StartBits::<WORDS>::GRANULES) && !b.test(usize::MAX));
        assert_eq!(b.next_set(0, usize::MAX), StartBits::<WORDS>::GRANULES);
    }

    #[test]
    fn next_set_finds_the_following_start() {
        let b = bits();
        b.set(3);
        b.set(WORD_BITS + 7);
        assert_eq!(b.next_set(0, 100), 3);
        assert_eq!(b.next_set(4, 200), WORD_BITS + 7);
        assert_eq!(b.next_set(4, WORD_BITS), WORD_BITS, "none before the end");
    }
}
