//! An open-addressing hash set of live block addresses, each tagged as a root
//! or a child: the block map's fallback for addresses at or above 2^47, which
//! its radix does not cover.
//!
//! Linear probing with backward-shift deletion (no tombstones, so lookups stay
//! short however many blocks come and go). The slots live in memory from the
//! C allocator: when growing is refused the insert reports `NoMemory` and the
//! table is unchanged, where a `Vec` would abort the process.

use crate::scode::Error;
use crate::sys::{self, BLOCK_ALIGN};

/// Whether a live block was made by `MAPIAllocateBuffer` or `MAPIAllocateMore`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Root,
    Child,
}

/// Slot value of an empty slot; no block lives at address 0.
const EMPTY: usize = 0;
/// Block addresses are BLOCK_ALIGN-aligned, so the lowest bit is free to
/// mark children.
const CHILD_TAG: usize = 1;
const _: () = assert!(BLOCK_ALIGN > CHILD_TAG);

const MIN_CAPACITY_BITS: u32 = 4;
/// Tables shrink only while larger than this (256 slots, 2 KiB): below it
/// the memory is not worth a rehash on every tree a thread builds and frees.
const KEEP_CAPACITY_BITS: u32 = 8;

/// Fibonacci hashing: the top bits of the product depend on every bit of the
/// address, including the page and cache-line bits that vary most.
fn hash(addr: usize) -> u64 {
    (addr as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

pub struct PtrTable {
    /// `mask + 1` slots, or null before the first insert.
    slots: *mut usize,
    /// Number of slots minus one; 0 while there are none.
    mask: usize,
    /// `64 - log2(slots)`: turns a hash into a home slot.
    shift: u32,
    len: usize,
    /// Grow when `len` reaches this: 3/4 of the slots, so probe runs stay short.
    grow_at: usize,
    /// Shrink when `len` falls below this: 1/8 of the slots, 0 at or below
    /// KEEP_CAPACITY_BITS.
    shrink_below: usize,
}

// SAFETY: the table owns its slot array outright; nothing else points into it.
unsafe impl Send for PtrTable {}

impl PtrTable {
    pub const fn new() -> Self {
        PtrTable { slots: core::ptr::null_mut(), mask: 0, shift: 64, len: 0, grow_at: 0, shrink_below: 0 }
    }

    /// Number of live addresses held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Gives the slot array back if no address is held.
    pub fn release_if_empty(&mut self) {
        if self.len == 0 {
            *self = PtrTable::new();
        }
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        if self.slots.is_null() {
            0
        } else {
            self.mask + 1
        }
    }

    fn home(&self, addr: usize) -> usize {
        // `shift` is in 1..=60 whenever there are slots to index.
        (hash(addr) >> self.shift) as usize
    }

    fn slot(&self, index: usize) -> usize {
        // SAFETY: callers only index a non-null array; the mask keeps the
        // index below its length.
        unsafe { *self.slots.add(index & self.mask) }
    }

    fn set_slot(&mut self, index: usize, value: usize) {
        // SAFETY: as in `slot`.
        unsafe { *self.slots.add(index & self.mask) = value }
    }

    fn find_index(&self, addr: usize) -> Option<usize> {
        if self.len == 0 || addr == EMPTY {
            return None;
        }
        let mut index = self.home(addr);
        loop {
            let value = self.slot(index);
            if value == EMPTY {
                return None;
            }
            if value & !CHILD_TAG == addr {
                return Some(index & self.mask);
            }
            index = index.wrapping_add(1);
        }
    }

    /// What kind of block lives at `addr`, if one does.
    pub fn get(&self, addr: usize) -> Option<Kind> {
        self.find_index(addr).map(|index| kind_of(self.slot(index)))
    }

    /// Calls `visit` with every address held and its kind.
    pub fn for_each(&self, mut visit: impl FnMut(usize, Kind)) {
        if self.slots.is_null() {
            return;
        }
        for index in 0..=self.mask {
            let value = self.slot(index);
            if value != EMPTY {
                visit(value & !CHILD_TAG, kind_of(value));
            }
        }
    }

    /// Records `addr`, which is BLOCK_ALIGN-aligned, non-zero and not present.
    /// On `Err` the table is unchanged.
    pub fn insert(&mut self, addr: usize, kind: Kind) -> Result<(), Error> {
        if self.len >= self.grow_at {
            let bits = if self.slots.is_null() { MIN_CAPACITY_BITS } else { 64 - self.shift + 1 };
            self.resize(bits)?;
        }
        self.place(tagged(addr, kind));
        self.len += 1;
        Ok(())
    }

    /// Puts a tagged value in the first free slot of its probe run; there is one.
    fn place(&mut self, value: usize) {
        let mut index = self.home(value & !CHILD_TAG);
        while self.slot(index) != EMPTY {
            index = index.wrapping_add(1);
        }
        self.set_slot(index, value);
    }

    /// Forgets `addr`, returning what it was.
    #[cfg(test)]
    pub fn remove(&mut self, addr: usize) -> Option<Kind> {
        let index = self.find_index(addr)?;
        let kind = kind_of(self.slot(index));
        self.remove_at(index);
        Some(kind)
    }

    /// Forgets `addr` only if it is a block of `kind`; otherwise returns what
    /// it is (`None`: not live) and changes nothing.
    pub fn remove_if(&mut self, addr: usize, kind: Kind) -> Result<(), Option<Kind>> {
        let index = self.find_index(addr).ok_or(None)?;
        let found = kind_of(self.slot(index));
        if found != kind {
            return Err(Some(found));
        }
        self.remove_at(index);
        Ok(())
    }

    fn remove_at(&mut self, mut hole: usize) {
        // Backward-shift: pull later members of the run into the hole unless
        // that would move them before their home slot.
        let mask = self.mask;
        let mut index = hole;
        loop {
            index = (index + 1) & mask;
            let value = self.slot(index);
            if value == EMPTY {
                break;
            }
            let home = self.home(value & !CHILD_TAG);
            // Distance from home to `index` vs from home to the hole, cyclically.
            if (index.wrapping_sub(home) & mask) >= (index.wrapping_sub(hole) & mask) {
                self.set_slot(hole, value);
                hole = index;
            }
        }
        self.set_slot(hole, EMPTY);
        self.len -= 1;
        // Give memory back after a burst of frees; keep the larger table if
        // the C allocator refuses (nothing is lost).
        if self.len < self.shrink_below {
            let _ = self.resize(64 - self.shift - 1);
        }
    }

    /// Moves every entry into a fresh array of `1 << bits` slots.
    fn resize(&mut self, bits: u32) -> Result<(), Error> {
        if bits >= usize::BITS {
            return Err(Error::NoMemory);
        }
        let count = 1usize << bits;
        let fresh = sys::alloc_zeroed(count, core::mem::size_of::<usize>());
        if fresh.is_null() {
            return Err(Error::NoMemory);
        }
        let resized = PtrTable {
            slots: fresh.cast(),
            mask: count - 1,
            shift: 64 - bits,
            len: 0,
            grow_at: count / 4 * 3,
            shrink_below: if bits > KEEP_CAPACITY_BITS { count / 8 } else { 0 },
        };
        let old = core::mem::replace(self, resized);
        if !old.slots.is_null() {
            for index in 0..=old.mask {
                let value = old.slot(index);
                if value != EMPTY {
                    self.place(value);
                }
            }
        }
        self.len = old.len;
        // `old` is dropped here, releasing its array.
        Ok(())
    }
}

impl Drop for PtrTable {
    fn drop(&mut self) {
        // SAFETY: the array came from sys::alloc_zeroed (or is null) and is
        // owned by this table alone.
        unsafe { sys::release(self.slots.cast()) }
    }
}

fn tagged(addr: usize, kind: Kind) -> usize {
    match kind {
        Kind::Root => addr,
        Kind::Child => addr | CHILD_TAG,
    }
}

fn kind_of(value: usize) -> Kind {
    if value & CHILD_TAG == 0 {
        Kind::Root
    } else {
        Kind::Child
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fail_allocation_after;

    /// Where the fake addresses start: where a heap may be on each width.
    #[cfg(target_pointer_width = "64")]
    const HEAP_BASE: usize = 0x5555_0000_0000;
    #[cfg(not(target_pointer_width = "64"))]
    const HEAP_BASE: usize = 0x5555_0000;

    /// Fake block addresses: aligned like real ones, spread like heap addresses.
    fn addr(n: usize) -> usize {
        HEAP_BASE.wrapping_add(n.wrapping_mul(48)) & !(BLOCK_ALIGN - 1)
    }

    #[test]
    fn empty_table_knows_nothing() {
        let table = PtrTable::new();
        assert_eq!(table.len(), 0);
        assert_eq!(table.get(addr(1)), None);
        assert_eq!(table.get(0), None);
    }

    #[test]
    fn inserted_addresses_are_found_with_their_kind() {
        let mut table = PtrTable::new();
        table.insert(addr(1), Kind::Root).unwrap();
        table.insert(addr(2), Kind::Child).unwrap();
        assert_eq!(table.get(addr(1)), Some(Kind::Root));
        assert_eq!(table.get(addr(2)), Some(Kind::Child));
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn interior_and_neighbouring_addresses_are_unknown() {
        let mut table = PtrTable::new();
        table.insert(addr(1), Kind::Root).unwrap();
        for near in [addr(1) + 1, addr(1) + BLOCK_ALIGN, addr(1) - BLOCK_ALIGN, addr(1) | CHILD_TAG] {
            assert_eq!(table.get(near), None, "{near:#x}");
        }
    }

    #[test]
    fn remove_if_removes_only_the_named_kind() {
        let mut table = PtrTable::new();
        table.insert(addr(1), Kind::Child).unwrap();
        table.insert(addr(2), Kind::Root).unwrap();
        assert_eq!(table.remove_if(addr(1), Kind::Root), Err(Some(Kind::Child)));
        assert_eq!(table.remove_if(addr(3), Kind::Root), Err(None));
        assert_eq!(table.get(addr(1)), Some(Kind::Child));
        assert_eq!(table.remove_if(addr(2), Kind::Root), Ok(()));
        assert_eq!(table.get(addr(2)), None);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn an_empty_table_releases_its_slots_and_a_full_one_keeps_them() {
        let mut table = PtrTable::new();
        table.insert(addr(1), Kind::Root).unwrap();
        table.release_if_empty();
        assert_eq!(table.get(addr(1)), Some(Kind::Root));
        table.remove(addr(1));
        table.release_if_empty();
        assert!(table.slots.is_null());
        table.insert(addr(2), Kind::Root).unwrap();
        assert_eq!(table.get(addr(2)), Some(Kind::Root));
    }

    #[test]
    fn removed_addresses_are_forgotten_once() {
        let mut table = PtrTable::new();
        table.insert(addr(1), Kind::Child).unwrap();
        assert_eq!(table.remove(addr(1)), Some(Kind::Child));
        assert_eq!(table.remove(addr(1)), None);
        assert_eq!(table.get(addr(1)), None);
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn growth_and_shrinking_keep_every_entry() {
        const COUNT: usize = 50_000;
        let mut table = PtrTable::new();
        for n in 0..COUNT {
            let kind = if n % 3 == 0 { Kind::Child } else { Kind::Root };
            table.insert(addr(n), kind).unwrap();
        }
        assert_eq!(table.len(), COUNT);
        assert!(table.capacity() * 3 >= COUNT * 4, "load stays at or under 3/4");
        // Remove every other entry, in an order unrelated to insertion.
        for n in (0..COUNT).rev().step_by(2) {
            assert!(table.remove(addr(n)).is_some(), "{n}");
        }
        for n in 0..COUNT {
            let expected = if (COUNT - 1 - n) % 2 == 0 {
                None
            } else if n % 3 == 0 {
                Some(Kind::Child)
            } else {
                Some(Kind::Root)
            };
            assert_eq!(table.get(addr(n)), expected, "{n}");
        }
        for n in 0..COUNT {
            table.remove(addr(n));
        }
        assert_eq!(table.len(), 0);
        assert_eq!(table.capacity(), 1 << KEEP_CAPACITY_BITS, "shrinks back after mass frees");
    }

    #[test]
    fn colliding_runs_survive_removal_from_their_middle() {
        // Addresses that share a home slot in a 16-slot table form one run.
        let mut table = PtrTable::new();
        table.insert(addr(0), Kind::Root).unwrap();
        let home = table.home(addr(0));
        let run: Vec<usize> = (1..100_000).map(addr).filter(|&a| table.home(a) == home).take(5).collect();
        assert_eq!(run.len(), 5);
        for &a in &run {
            table.insert(a, Kind::Root).unwrap();
        }
        table.remove(run[1]).unwrap();
        table.remove(addr(0)).unwrap();
        for &a in [run[0], run[2], run[3], run[4]].iter() {
            assert_eq!(table.get(a), Some(Kind::Root), "{a:#x}");
        }
    }

    #[test]
    fn refused_growth_reports_no_memory_and_changes_nothing() {
        let mut table = PtrTable::new();
        let mut n = 0;
        // Fill to the brink of the first growth past the minimum size.
        while (table.len() + 1) * 4 <= (1 << MIN_CAPACITY_BITS) * 3 {
            table.insert(addr(n), Kind::Root).unwrap();
            n += 1;
        }
        let before = table.len();
        fail_allocation_after(Some(0));
        assert_eq!(table.insert(addr(n), Kind::Root), Err(Error::NoMemory));
        assert_eq!(table.len(), before);
        assert_eq!(table.get(addr(n)), None);
        for m in 0..n {
            assert_eq!(table.get(addr(m)), Some(Kind::Root));
        }
        // The next attempt, with memory available again, grows and succeeds.
        table.insert(addr(n), Kind::Root).unwrap();
        assert_eq!(table.get(addr(n)), Some(Kind::Root));
    }

    #[test]
    fn refused_first_allocation_reports_no_memory() {
        let mut table = PtrTable::new();
        fail_allocation_after(Some(0));
        assert_eq!(table.insert(addr(1), Kind::Root), Err(Error::NoMemory));
        assert_eq!(table.len(), 0);
        assert_eq!(table.get(addr(1)), None);
    }
}
