//! Where blocks start, and whether each is a root or a child: the storage
//! behind one registry heap.
//!
//! A radix bitmap of the address space: 2 bits for every BLOCK_ALIGN-sized
//! granule (00 nothing starts here, 01 a root, 10 a child). Leaves of 4096
//! granules (64 KiB of address space on 64-bit, 32 KiB on 32-bit) take 1 KiB
//! each and hang under three small directory levels over address bits
//! [16, 47). A block of malloc's smallest 32-byte chunk costs 4 bits, where a
//! hash set of addresses cost about 17 bytes; and blocks allocated together
//! sit together in the bitmap, so a root's million children are 1 MiB of it,
//! walked in address order, instead of a cache miss a probe.
//!
//! - Hot path: the last leaves used are remembered, [`HOT_LEAVES`] of them,
//!   each in the slot its key selects, so a call that lands in one (nearly
//!   every call: malloc hands out neighbours, and a tree's blocks of a few
//!   sizes come from a few places) costs a compare, a load and store of a
//!   bitmap word and of the leaf's count: no loop, no division, no call. A
//!   leaf is filled or emptied only while it is hot, so what that means for
//!   memory is settled when another leaf takes its slot (in the slow path,
//!   which walks the radix anyway).
//! - Memory: every node comes zeroed from `sys::alloc_zeroed`; a refused
//!   allocation is `NoMemory` and leaves the map as it was.
//! - A leaf whose last block goes stays in place as a *spare*, up to
//!   [`MAX_SPARES`] of them besides the hot leaves; beyond that the one left
//!   longest ago is freed, with any directory node it leaves empty. So a
//!   block freed and allocated again in a loop never allocates, nor does a
//!   tree built and freed in a loop across a few leaves. The map's memory is
//!   about 1/64 of the address span its live blocks cover (at most a leaf,
//!   1 KiB, a live block, when they are 64 KiB or more apart), at most
//!   MAX_SPARES + HOT_LEAVES empty leaves, the directory nodes above them
//!   (8 KiB per 64 MiB and per 64 GiB of span) and a 16 KiB top.
//! - Addresses the radix does not cover (at or above 2^47, as a kernel with
//!   5-level paging may hand out) go to a [`PtrTable`], so no block is ever
//!   refused for its address.
//! - A lookup of any value (0, odd, interior, huge) only reads the map's own
//!   memory, and finds nothing where no block was recorded.

use crate::scode::Error;
use crate::sys::{self, BLOCK_ALIGN};
pub use crate::table::Kind;
use crate::table::PtrTable;
use core::mem::size_of;
use core::ptr;

/// log2(BLOCK_ALIGN): 4 on 64-bit, 3 on 32-bit.
const GRANULE_SHIFT: u32 = BLOCK_ALIGN.trailing_zeros();
/// A leaf holds 2^12 granules.
const LEAF_GRANULE_BITS: u32 = 12;
const LEAF_GRANULES: u64 = 1 << LEAF_GRANULE_BITS;
/// Address bits below this select a granule within a leaf; the bits above,
/// the *key*, select the leaf.
const LEAF_SHIFT: u32 = GRANULE_SHIFT + LEAF_GRANULE_BITS;
/// 2 bits a granule, 32 granules a word.
const LEAF_WORDS: usize = (LEAF_GRANULES / 32) as usize;

/// Each directory node resolves 10 bits of the key: 1024 pointers, 8 KiB on
/// 64-bit, small enough to come from malloc's heap and go back to it.
const DIR_BITS: u32 = 10;
const DIR_SLOTS: usize = 1 << DIR_BITS;
/// The radix covers addresses below 2^RADIX_BITS: on 64-bit, what x86-64 and
/// AArch64 kernels hand out unless asked for more; on 32-bit, everything.
const RADIX_BITS: u32 = if usize::BITS >= 64 { 47 } else { usize::BITS };
/// The top level resolves the key bits the two directory levels leave.
const TOP_BITS: u32 = RADIX_BITS.saturating_sub(LEAF_SHIFT + 2 * DIR_BITS);
const TOP_SLOTS: usize = 1 << TOP_BITS;

const _: () = assert!(BLOCK_ALIGN.is_power_of_two() && LEAF_WORDS * 32 == LEAF_GRANULES as usize);
const _: () = assert!(LEAF_SHIFT + 2 * DIR_BITS + TOP_BITS >= RADIX_BITS);
const _: () = assert!(MAX_SPARES >= 1 && HOT_LEAVES.is_power_of_two());

/// Granule codes; 11 is never stored.
const ROOT: u64 = 0b01;
const CHILD: u64 = 0b10;
const CODE_MASK: u64 = 0b11;

/// A key no address has (keys are below 2^(64 - LEAF_SHIFT)): no leaf.
const NO_KEY: u64 = u64::MAX;

/// Leaves remembered for the hot path, in a slot each by the low bits of
/// their key, so up to 8 neighbouring leaves at once. In `make bench`'s
/// tree17, after the other workloads have scattered glibc's free chunks, a
/// tree's 17 blocks lie in several leaves: with one hot leaf 80 % of the
/// calls missed it and walked the radix.
const HOT_LEAVES: usize = 8;

/// Empty leaves kept in place, besides the hot ones. A tree built and freed
/// in a loop empties every leaf it touched each time; freeing them would
/// allocate them all again on the next round (measured: `make bench`'s
/// tree17, whose 17 blocks can straddle two leaves, twice as slow with one
/// spare). Past 8, a tree rebuilt in a loop allocates its extra leaves each
/// round: 1 KiB of calloc each, small beside the blocks that usually fill one.
const MAX_SPARES: usize = 8;

/// 2 bits for each of 4096 granules, how many are set, and the leaf's place
/// in the radix and (while empty) in the list of spares.
#[repr(C)]
struct Leaf {
    words: [u64; LEAF_WORDS],
    live: u32,
    key: u64,
    /// Neighbours in the spare list, newer and older; null at its ends.
    newer: *mut Leaf,
    older: *mut Leaf,
}

impl Leaf {
    /// Sets the granule of `addr`, which lies in this leaf, to `kind`.
    #[inline(always)]
    fn mark(&mut self, addr: u64, kind: Kind) {
        let (word, shift) = position(addr);
        let old = self.words[word];
        self.words[word] = (old & !(CODE_MASK << shift)) | (code_of(kind) << shift);
        if (old >> shift) & CODE_MASK == 0 {
            self.live = self.live.wrapping_add(1);
        }
    }

    /// Clears the granule of `addr`, which lies in this leaf, if it holds a
    /// block of `kind`; otherwise says what it holds.
    #[inline(always)]
    fn unmark(&mut self, addr: u64, kind: Kind) -> Result<(), Option<Kind>> {
        let (word, shift) = position(addr);
        let old = self.words[word];
        let found = (old >> shift) & CODE_MASK;
        if found != code_of(kind) {
            return Err(kind_of(found));
        }
        self.words[word] = old & !(CODE_MASK << shift);
        self.live = self.live.wrapping_sub(1);
        Ok(())
    }
}

/// A directory node, and how many of its slots are set.
#[repr(C)]
struct Dir<T> {
    slots: [*mut T; DIR_SLOTS],
    used: u32,
}

type Lower = Dir<Leaf>;
type Upper = Dir<Lower>;

#[repr(C)]
struct Top {
    slots: [*mut Upper; TOP_SLOTS],
}

/// A zeroed node: null slots, zero counts, an empty bitmap (all valid
/// values of these types). Calloc's alignment (16 or 8) suits all of them.
fn new_node<T>() -> *mut T {
    sys::alloc_zeroed(1, size_of::<T>()).cast()
}

/// # Safety
/// `node` is null or came from [`new_node`] and is not used again.
unsafe fn free_node<T>(node: *mut T) {
    // SAFETY: by the caller's contract.
    unsafe { sys::release(node.cast()) }
}

#[inline(always)]
fn top_index(key: u64) -> usize {
    ((key >> (2 * DIR_BITS)) & (TOP_SLOTS as u64 - 1)) as usize
}

#[inline(always)]
fn upper_index(key: u64) -> usize {
    ((key >> DIR_BITS) & (DIR_SLOTS as u64 - 1)) as usize
}

#[inline(always)]
fn lower_index(key: u64) -> usize {
    (key & (DIR_SLOTS as u64 - 1)) as usize
}

/// The bitmap word of the granule at `addr`, and the shift of its 2 bits.
#[inline(always)]
fn position(addr: u64) -> (usize, u32) {
    // Twice the granule's index in its leaf: the index of its low bit.
    let bit = (addr >> (GRANULE_SHIFT - 1)) & ((2 * LEAF_GRANULES - 1) & !1);
    ((bit >> 6) as usize, (bit & 63) as u32)
}

#[inline(always)]
fn code_of(kind: Kind) -> u64 {
    match kind {
        Kind::Root => ROOT,
        Kind::Child => CHILD,
    }
}

#[inline(always)]
fn kind_of(code: u64) -> Option<Kind> {
    match code {
        ROOT => Some(Kind::Root),
        CHILD => Some(Kind::Child),
        _ => None,
    }
}

#[inline(always)]
fn misaligned(addr: u64) -> bool {
    addr & (BLOCK_ALIGN as u64 - 1) != 0
}

#[inline(always)]
fn beyond_radix(addr: u64) -> bool {
    addr >> RADIX_BITS != 0
}

/// A hot leaf and its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Hot {
    key: u64,
    leaf: *mut Leaf,
}

impl Hot {
    const NONE: Hot = Hot { key: NO_KEY, leaf: ptr::null_mut() };
}

/// The hot slot of `key`.
#[inline(always)]
fn hot_index(key: u64) -> usize {
    (key & (HOT_LEAVES as u64 - 1)) as usize
}

pub struct BlockMap {
    /// The leaves of the last inserts and removals that found one, in the
    /// slot of their key's low bits (key NO_KEY: none). Checked first.
    /// Blocks are only added to or removed from these leaves.
    hot: [Hot; HOT_LEAVES],
    /// Null until the first insert, and again after `release_if_empty`.
    top: *mut Top,
    /// Leaves in the radix.
    leaves: usize,
    /// The empty leaves kept in place, most recently left first: every leaf
    /// but the hot ones that holds no block, and no other.
    newest_spare: *mut Leaf,
    oldest_spare: *mut Leaf,
    spares: usize,
    /// Blocks at addresses the radix does not cover, and their number.
    fallback: PtrTable,
    fallback_len: usize,
}

// SAFETY: the map owns its nodes outright; nothing else points into them.
unsafe impl Send for BlockMap {}

impl BlockMap {
    pub const fn new() -> Self {
        BlockMap {
            hot: [Hot::NONE; HOT_LEAVES],
            top: ptr::null_mut(),
            leaves: 0,
            newest_spare: ptr::null_mut(),
            oldest_spare: ptr::null_mut(),
            spares: 0,
            fallback: PtrTable::new(),
            fallback_len: 0,
        }
    }

    /// Number of live addresses held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        let mut count = 0;
        self.for_each(|_, _| count += 1);
        count
    }

    /// What kind of block lives at `addr`, if one does.
    #[inline]
    pub fn get(&self, addr: usize) -> Option<Kind> {
        let addr = addr as u64;
        let key = addr >> LEAF_SHIFT;
        let hot = self.hot[hot_index(key)];
        let leaf = if key == hot.key {
            hot.leaf
        } else if beyond_radix(addr) {
            return self.fallback.get(addr as usize);
        } else {
            self.leaf_of(key)
        };
        if leaf.is_null() || misaligned(addr) {
            return None;
        }
        let (word, shift) = position(addr);
        // SAFETY: a non-null leaf pointer held in the map (or its hot copy)
        // is a live leaf the map owns; `position` keeps the index in bounds.
        kind_of((unsafe { (*leaf).words[word] } >> shift) & CODE_MASK)
    }

    /// Records `addr`, which is BLOCK_ALIGN-aligned, non-zero and not present
    /// (one that is present takes the new kind). On `Err` the map is unchanged.
    #[inline]
    pub fn insert(&mut self, addr: usize, kind: Kind) -> Result<(), Error> {
        let addr = addr as u64;
        let key = addr >> LEAF_SHIFT;
        let hot = self.hot[hot_index(key)];
        if key != hot.key {
            return self.insert_slow(addr, kind);
        }
        // SAFETY: with its key, a hot leaf is a live leaf of the map.
        unsafe { (*hot.leaf).mark(addr, kind) };
        Ok(())
    }

    /// Forgets `addr` only if it is a block of `kind`; otherwise returns what
    /// it is (`None`: not live) and changes nothing.
    #[inline]
    pub fn remove_if(&mut self, addr: usize, kind: Kind) -> Result<(), Option<Kind>> {
        let addr = addr as u64;
        let key = addr >> LEAF_SHIFT;
        let hot = self.hot[hot_index(key)];
        if key != hot.key || misaligned(addr) {
            return self.remove_if_slow(addr, kind);
        }
        // SAFETY: as in `insert`.
        unsafe { (*hot.leaf).unmark(addr, kind) }
    }

    /// Calls `visit` with every address held and its kind, in address order
    /// (those of the fallback last).
    pub fn for_each(&self, mut visit: impl FnMut(usize, Kind)) {
        self.for_each_leaf(|key, leaf| {
            // SAFETY: `for_each_leaf` passes live leaves of this map.
            let words = unsafe { &(*leaf).words };
            for (index, &word) in words.iter().enumerate() {
                let mut bits = word;
                while bits != 0 {
                    // The low bit of the lowest pair that is set.
                    let shift = bits.trailing_zeros() & !1;
                    let granule = (index as u64) * 32 + u64::from(shift / 2);
                    let addr = (key << LEAF_SHIFT) | (granule << GRANULE_SHIFT);
                    if let Some(kind) = kind_of((bits >> shift) & CODE_MASK) {
                        visit(addr as usize, kind);
                    }
                    bits &= !(CODE_MASK << shift);
                }
            }
        });
        self.fallback.for_each(&mut visit);
    }

    /// Gives every node back if no address is held.
    pub fn release_if_empty(&mut self) {
        // With no hot leaf, every empty leaf is a spare.
        for index in 0..HOT_LEAVES {
            self.settle(index, Hot::NONE);
        }
        if self.spares == self.leaves {
            self.free_radix();
        }
        if self.fallback_len == 0 {
            self.fallback.release_if_empty();
        }
    }

    /// The leaf of `key`, or null.
    fn leaf_of(&self, key: u64) -> *mut Leaf {
        if self.top.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: non-null node pointers in the map are live nodes it owns;
        // the index functions mask into bounds.
        unsafe {
            let upper = (*self.top).slots[top_index(key)];
            if upper.is_null() {
                return ptr::null_mut();
            }
            let lower = (*upper).slots[upper_index(key)];
            if lower.is_null() {
                return ptr::null_mut();
            }
            (*lower).slots[lower_index(key)]
        }
    }

    /// Makes `leaf`, the leaf of `key`, hot.
    fn make_hot(&mut self, key: u64, leaf: *mut Leaf) {
        self.settle(hot_index(key), Hot { key, leaf });
    }

    /// Puts `new` in hot slot `index` and settles the leaf it replaces:
    /// empty, it becomes the newest spare, and the oldest goes if there are
    /// too many.
    fn settle(&mut self, index: usize, new: Hot) {
        let Hot { leaf, .. } = new;
        let left = self.hot[index & (HOT_LEAVES - 1)].leaf;
        if left == leaf {
            return;
        }
        // SAFETY: non-null leaf pointers of the map are live leaves it owns.
        unsafe {
            if !leaf.is_null() && (!(*leaf).newer.is_null() || self.newest_spare == leaf) {
                self.unlink_spare(leaf);
            }
            self.hot[index & (HOT_LEAVES - 1)] = new;
            if left.is_null() || (*left).live != 0 {
                return;
            }
            (*left).older = self.newest_spare;
            match self.newest_spare.as_mut() {
                Some(newest) => newest.newer = left,
                None => self.oldest_spare = left,
            }
            self.newest_spare = left;
            self.spares = self.spares.wrapping_add(1);
            if self.spares > MAX_SPARES {
                // Not hot, nor the one just left: there are more spares.
                let oldest = self.oldest_spare;
                self.unlink_spare(oldest);
                self.free_leaf((*oldest).key);
            }
        }
    }

    /// Takes `leaf` out of the spare list.
    ///
    /// # Safety
    /// `leaf` is a live leaf of this map, in the list.
    unsafe fn unlink_spare(&mut self, leaf: *mut Leaf) {
        // SAFETY: by the caller's contract; its neighbours are live leaves.
        unsafe {
            let (newer, older) = ((*leaf).newer, (*leaf).older);
            if newer.is_null() {
                self.newest_spare = older;
            } else {
                (*newer).older = older;
            }
            if older.is_null() {
                self.oldest_spare = newer;
            } else {
                (*older).newer = newer;
            }
            (*leaf).newer = ptr::null_mut();
            (*leaf).older = ptr::null_mut();
        }
        self.spares = self.spares.wrapping_sub(1);
    }

    #[cold]
    #[inline(never)]
    fn insert_slow(&mut self, addr: u64, kind: Kind) -> Result<(), Error> {
        if beyond_radix(addr) {
            self.fallback.insert(addr as usize, kind)?;
            self.fallback_len = self.fallback_len.wrapping_add(1);
            return Ok(());
        }
        let key = addr >> LEAF_SHIFT;
        let leaf = self.leaf_or_new(key)?;
        self.make_hot(key, leaf);
        // SAFETY: `leaf_or_new` returns a live leaf of the map.
        unsafe { (*leaf).mark(addr, kind) };
        Ok(())
    }

    #[cold]
    #[inline(never)]
    fn remove_if_slow(&mut self, addr: u64, kind: Kind) -> Result<(), Option<Kind>> {
        if beyond_radix(addr) {
            self.fallback.remove_if(addr as usize, kind)?;
            self.fallback_len = self.fallback_len.wrapping_sub(1);
            return Ok(());
        }
        let key = addr >> LEAF_SHIFT;
        let leaf = self.leaf_of(key);
        if leaf.is_null() || misaligned(addr) {
            return Err(None);
        }
        // Only a removal makes a leaf hot: a refused one changes nothing.
        let (word, shift) = position(addr);
        // SAFETY: a leaf found in the radix is live and the map's.
        let found = (unsafe { (*leaf).words[word] } >> shift) & CODE_MASK;
        if found != code_of(kind) {
            return Err(kind_of(found));
        }
        self.make_hot(key, leaf);
        // SAFETY: as above; `make_hot` left it in the radix.
        unsafe { (*leaf).unmark(addr, kind) }
    }

    /// The leaf of `key`, made with whatever directory nodes it needs if it
    /// does not exist. Every missing node is allocated before any is linked,
    /// so a refusal leaves the map as it was.
    fn leaf_or_new(&mut self, key: u64) -> Result<*mut Leaf, Error> {
        // The existing path, as far as it goes (null from the first gap).
        let top = self.top;
        // SAFETY: non-null nodes are live and the map's; indexes are masked.
        let upper = if top.is_null() { ptr::null_mut() } else { unsafe { (*top).slots[top_index(key)] } };
        // SAFETY: as above.
        let lower = if upper.is_null() { ptr::null_mut() } else { unsafe { (*upper).slots[upper_index(key)] } };
        // SAFETY: as above.
        let leaf = if lower.is_null() { ptr::null_mut() } else { unsafe { (*lower).slots[lower_index(key)] } };
        if !leaf.is_null() {
            return Ok(leaf);
        }
        // Bottom up: the leaf, then each missing level.
        let new_leaf = new_node::<Leaf>();
        if !new_leaf.is_null() {
            // SAFETY: fresh and ours; the rest of the leaf is zero.
            unsafe { (*new_leaf).key = key };
        }
        let new_lower = if lower.is_null() && !new_leaf.is_null() { new_node::<Lower>() } else { ptr::null_mut() };
        let new_upper = if upper.is_null() && !new_lower.is_null() { new_node::<Upper>() } else { ptr::null_mut() };
        let new_top = if top.is_null() && !new_upper.is_null() { new_node::<Top>() } else { ptr::null_mut() };
        let refused = new_leaf.is_null()
            || (lower.is_null() && new_lower.is_null())
            || (upper.is_null() && new_upper.is_null())
            || (top.is_null() && new_top.is_null());
        if refused {
            // SAFETY: fresh nodes, never linked; null ones are skipped.
            unsafe {
                free_node(new_leaf);
                free_node(new_lower);
                free_node(new_upper);
                free_node(new_top);
            }
            return Err(Error::NoMemory);
        }
        let top = if top.is_null() { new_top } else { top };
        let upper = if upper.is_null() { new_upper } else { upper };
        let lower = if lower.is_null() { new_lower } else { lower };
        // SAFETY: every node is now live and the map's (fresh ones zeroed);
        // indexes are masked. Each link fills a slot the walk found null.
        unsafe {
            if (*top).slots[top_index(key)].is_null() {
                (*top).slots[top_index(key)] = upper;
            }
            if (*upper).slots[upper_index(key)].is_null() {
                (*upper).slots[upper_index(key)] = lower;
                (*upper).used = (*upper).used.wrapping_add(1);
            }
            (*lower).slots[lower_index(key)] = new_leaf;
            (*lower).used = (*lower).used.wrapping_add(1);
        }
        self.top = top;
        self.leaves = self.leaves.wrapping_add(1);
        Ok(new_leaf)
    }

    /// Frees the leaf of `key`, which is empty, neither hot nor a spare, and
    /// the directory nodes it leaves empty. The top stays until
    /// `release_if_empty`.
    fn free_leaf(&mut self, key: u64) {
        if self.hot[hot_index(key)].key == key {
            self.hot[hot_index(key)] = Hot::NONE;
        }
        if self.top.is_null() {
            return;
        }
        // SAFETY: non-null nodes are live and the map's; indexes are masked.
        // Each node is unlinked before it is freed, so none dangles.
        unsafe {
            let top_slot = &mut (*self.top).slots[top_index(key)];
            let upper = *top_slot;
            if upper.is_null() {
                return;
            }
            let upper_slot = &mut (*upper).slots[upper_index(key)];
            let lower = *upper_slot;
            if lower.is_null() {
                return;
            }
            let lower_slot = &mut (*lower).slots[lower_index(key)];
            let leaf = *lower_slot;
            if leaf.is_null() {
                return;
            }
            *lower_slot = ptr::null_mut();
            free_node(leaf);
            self.leaves = self.leaves.wrapping_sub(1);
            (*lower).used = (*lower).used.wrapping_sub(1);
            if (*lower).used != 0 {
                return;
            }
            *upper_slot = ptr::null_mut();
            free_node(lower);
            (*upper).used = (*upper).used.wrapping_sub(1);
            if (*upper).used != 0 {
                return;
            }
            *top_slot = ptr::null_mut();
            free_node(upper);
        }
    }

    /// Calls `visit` with the key and pointer of every leaf.
    fn for_each_leaf(&self, mut visit: impl FnMut(u64, *mut Leaf)) {
        if self.top.is_null() {
            return;
        }
        // SAFETY: non-null nodes are live and the map's; the slices are the
        // nodes' own arrays.
        let top = unsafe { &(*self.top).slots };
        for (t, &upper) in top.iter().enumerate() {
            if upper.is_null() {
                continue;
            }
            // SAFETY: as above.
            for (u, &lower) in unsafe { &(*upper).slots }.iter().enumerate() {
                if lower.is_null() {
                    continue;
                }
                // SAFETY: as above.
                for (l, &leaf) in unsafe { &(*lower).slots }.iter().enumerate() {
                    if !leaf.is_null() {
                        let key = ((t as u64) << (2 * DIR_BITS)) | ((u as u64) << DIR_BITS) | l as u64;
                        visit(key, leaf);
                    }
                }
            }
        }
    }

    /// Frees every node of the radix, whatever they hold.
    fn free_radix(&mut self) {
        if self.top.is_null() {
            return;
        }
        let top = self.top;
        self.top = ptr::null_mut();
        self.hot = [Hot::NONE; HOT_LEAVES];
        self.newest_spare = ptr::null_mut();
        self.oldest_spare = ptr::null_mut();
        self.spares = 0;
        self.leaves = 0;
        // SAFETY: the nodes are live and the map's, unlinked from it above
        // (the top) and freed children first; none is used again.
        unsafe {
            for &upper in (*top).slots.iter().filter(|node| !node.is_null()) {
                for &lower in (*upper).slots.iter().filter(|node| !node.is_null()) {
                    for &leaf in (*lower).slots.iter() {
                        free_node(leaf);
                    }
                    free_node(lower);
                }
                free_node(upper);
            }
            free_node(top);
        }
    }
}

impl Drop for BlockMap {
    fn drop(&mut self) {
        self.free_radix();
        // The fallback table frees its own slots.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fail_allocation_after;
    use std::collections::HashMap;

    /// Bytes of address space one leaf covers.
    const LEAF_SPAN: usize = 1 << LEAF_SHIFT;
    /// Bytes one lower directory node covers (1024 leaves).
    const LOWER_SPAN: u64 = 1 << (LEAF_SHIFT + DIR_BITS);
    /// Bytes one upper directory node covers.
    const UPPER_SPAN: u64 = 1 << (LEAF_SHIFT + 2 * DIR_BITS);
    /// A step to another upper directory, or on 32-bit targets (where one
    /// covers everything) to another lower one.
    const FAR: usize = if usize::BITS >= 64 { UPPER_SPAN as usize } else { LOWER_SPAN as usize };

    /// A heap-like address: aligned, in the radix on every target.
    fn addr(n: usize) -> usize {
        0x1000_0000_usize.wrapping_add(n.wrapping_mul(48)) & !(BLOCK_ALIGN - 1)
    }

    /// Addresses the radix does not cover (none on 32-bit targets).
    fn beyond() -> Vec<usize> {
        if usize::BITS < 64 {
            return Vec::new();
        }
        let high = (1u64 << 47) as usize;
        vec![high, high + BLOCK_ALIGN, usize::MAX & !(BLOCK_ALIGN - 1)]
    }

    fn contents(map: &BlockMap) -> Vec<(usize, Kind)> {
        let mut seen = Vec::new();
        map.for_each(|addr, kind| seen.push((addr, kind)));
        seen.sort_by_key(|&(addr, _)| addr);
        seen
    }

    fn leaves(map: &BlockMap) -> usize {
        let mut count = 0;
        map.for_each_leaf(|_, _| count += 1);
        count
    }

    /// Every count and link agrees with the bitmaps: each leaf's `live` with
    /// its set granules and its key with its place, `leaves` with the leaves,
    /// and the spare list, both ways, with the empty leaves but the hot ones.
    fn check_invariants(map: &BlockMap) {
        let mut empty = Vec::new();
        let mut count = 0;
        map.for_each_leaf(|key, leaf| {
            count += 1;
            let hot = map.hot.iter().any(|hot| hot.leaf == leaf);
            // SAFETY: `for_each_leaf` passes live leaves of this map.
            let leaf = unsafe { &*leaf };
            let set: u32 = leaf.words.iter().map(|w| ((w | (w >> 1)) & 0x5555_5555_5555_5555).count_ones()).sum();
            assert_eq!(leaf.live, set, "leaf {key:#x}");
            assert_eq!(leaf.key, key);
            if set == 0 && !hot {
                empty.push(leaf as *const Leaf);
            } else {
                assert!(leaf.newer.is_null() && leaf.older.is_null(), "not a spare");
            }
        });
        assert_eq!(map.leaves, count);
        let mut listed = Vec::new();
        let mut newer: *mut Leaf = ptr::null_mut();
        let mut spare = map.newest_spare;
        while !spare.is_null() {
            // SAFETY: spares are live leaves of this map.
            let leaf = unsafe { &*spare };
            assert_eq!(leaf.newer, newer);
            listed.push(spare as *const Leaf);
            newer = spare;
            spare = leaf.older;
        }
        assert_eq!(map.oldest_spare, newer);
        assert_eq!(listed.len(), map.spares);
        assert!(map.spares <= MAX_SPARES);
        empty.sort();
        listed.sort();
        assert_eq!(empty, listed);
        for (index, hot) in map.hot.iter().enumerate() {
            if hot.key != NO_KEY {
                assert_eq!(hot_index(hot.key), index);
                assert_eq!(map.leaf_of(hot.key), hot.leaf);
            }
        }
    }

    #[test]
    fn an_empty_map_knows_nothing() {
        let map = BlockMap::new();
        assert_eq!(map.len(), 0);
        for probe in [0, 1, BLOCK_ALIGN, addr(1), usize::MAX, usize::MAX & !(BLOCK_ALIGN - 1)] {
            assert_eq!(map.get(probe), None, "{probe:#x}");
        }
        assert!(contents(&map).is_empty());
    }

    #[test]
    fn inserted_addresses_are_found_with_their_kind() {
        let mut map = BlockMap::new();
        map.insert(addr(1), Kind::Root).unwrap();
        map.insert(addr(2), Kind::Child).unwrap();
        assert_eq!(map.get(addr(1)), Some(Kind::Root));
        assert_eq!(map.get(addr(2)), Some(Kind::Child));
        assert_eq!(map.len(), 2);
        assert_eq!(contents(&map), vec![(addr(1), Kind::Root), (addr(2), Kind::Child)]);
    }

    #[test]
    fn interior_neighbouring_unaligned_huge_and_zero_addresses_are_unknown() {
        let mut map = BlockMap::new();
        let block = addr(1);
        map.insert(block, Kind::Root).unwrap();
        let mut probes = vec![0, 1, block + 1, block + BLOCK_ALIGN - 1, block + BLOCK_ALIGN, block - BLOCK_ALIGN];
        // block ^ FAR_BIT: far off but inside the radix (bit 40 on 64-bit, 20 on 32-bit).
        const FAR_BIT: usize = 1 << (usize::BITS * 5 / 8);
        probes.extend([block | 1, block + LEAF_SPAN, block ^ FAR_BIT, usize::MAX, usize::MAX - BLOCK_ALIGN + 1]);
        probes.extend(beyond());
        for probe in probes {
            assert_eq!(map.get(probe), None, "{probe:#x}");
        }
        // The same, found through the walk rather than the remembered leaf.
        let mut cold = BlockMap::new();
        cold.insert(block, Kind::Root).unwrap();
        // Forget the hot leaves, so every lookup walks the radix.
        cold.release_if_empty();
        for probe in [block + 1, block + BLOCK_ALIGN, block - BLOCK_ALIGN, 0, usize::MAX] {
            assert_eq!(cold.get(probe), None, "{probe:#x}");
            assert_eq!(cold.remove_if(probe, Kind::Root), Err(None), "{probe:#x}");
        }
        assert_eq!(cold.get(block), Some(Kind::Root));
    }

    #[test]
    fn remove_if_removes_only_the_named_kind() {
        let mut map = BlockMap::new();
        map.insert(addr(1), Kind::Child).unwrap();
        map.insert(addr(2), Kind::Root).unwrap();
        assert_eq!(map.remove_if(addr(1), Kind::Root), Err(Some(Kind::Child)));
        assert_eq!(map.remove_if(addr(2), Kind::Child), Err(Some(Kind::Root)));
        assert_eq!(map.remove_if(addr(3), Kind::Root), Err(None));
        assert_eq!(map.get(addr(1)), Some(Kind::Child));
        assert_eq!(map.remove_if(addr(2), Kind::Root), Ok(()));
        assert_eq!(map.get(addr(2)), None);
        assert_eq!(map.len(), 1);
    }

    #[test]
    fn a_refused_removal_leaves_the_hot_leaf_and_the_spares_alone() {
        let mut map = BlockMap::new();
        let here = addr(0);
        let there = addr(0) + 5 * LEAF_SPAN;
        map.insert(there, Kind::Child).unwrap();
        map.insert(here, Kind::Root).unwrap();
        map.insert(here + BLOCK_ALIGN, Kind::Root).unwrap();
        map.remove_if(here + BLOCK_ALIGN, Kind::Root).unwrap();
        let hot = map.hot;
        assert_eq!(map.remove_if(there, Kind::Root), Err(Some(Kind::Child)));
        assert_eq!(map.remove_if(there + BLOCK_ALIGN, Kind::Child), Err(None));
        assert_eq!(map.hot, hot);
        // Emptying `here` by a refused call would have made it a spare.
        map.remove_if(here, Kind::Root).unwrap();
        assert_eq!(map.remove_if(there, Kind::Root), Err(Some(Kind::Child)));
        assert_eq!(map.hot, hot);
        assert_eq!(map.spares, 0);
        check_invariants(&map);
    }

    #[test]
    fn unaligned_removal_changes_nothing() {
        let mut map = BlockMap::new();
        map.insert(addr(1), Kind::Root).unwrap();
        assert_eq!(map.remove_if(addr(1) + 1, Kind::Root), Err(None));
        assert_eq!(map.remove_if(addr(1) + BLOCK_ALIGN / 2, Kind::Root), Err(None));
        assert_eq!(map.get(addr(1)), Some(Kind::Root));
    }

    #[test]
    fn removed_addresses_are_forgotten_once() {
        let mut map = BlockMap::new();
        map.insert(addr(1), Kind::Child).unwrap();
        assert_eq!(map.remove_if(addr(1), Kind::Child), Ok(()));
        assert_eq!(map.remove_if(addr(1), Kind::Child), Err(None));
        assert_eq!(map.remove_if(addr(1), Kind::Root), Err(None));
        assert_eq!(map.get(addr(1)), None);
        assert_eq!(map.len(), 0);
    }

    #[test]
    fn addresses_in_different_leaves_directories_top_slots_and_the_fallback_all_work() {
        let base = 0x1000_0000_u64;
        let mut spots = vec![
            base,
            base + LEAF_SPAN as u64 - BLOCK_ALIGN as u64, // last granule of a leaf
            base + LEAF_SPAN as u64,                      // next leaf
            base + LOWER_SPAN,                            // next lower directory
            BLOCK_ALIGN as u64,                           // the lowest address a block could have
        ];
        if usize::BITS >= 64 {
            spots.push(base + UPPER_SPAN); // next upper directory (next top slot)
            spots.push(base + 5 * UPPER_SPAN + 3 * LOWER_SPAN);
            spots.push((1 << 47) - BLOCK_ALIGN as u64); // the radix's last granule
            spots.push(0x7fff_f000_0000);
        }
        let mut spots: Vec<usize> = spots.into_iter().map(|spot| spot as usize).collect();
        spots.extend(beyond());
        let mut map = BlockMap::new();
        for (n, &spot) in spots.iter().enumerate() {
            let kind = if n % 2 == 0 { Kind::Root } else { Kind::Child };
            map.insert(spot, kind).unwrap();
        }
        for (n, &spot) in spots.iter().enumerate() {
            let kind = if n % 2 == 0 { Kind::Root } else { Kind::Child };
            assert_eq!(map.get(spot), Some(kind), "{spot:#x}");
        }
        let mut expected: Vec<(usize, Kind)> = spots
            .iter()
            .enumerate()
            .map(|(n, &spot)| (spot, if n % 2 == 0 { Kind::Root } else { Kind::Child }))
            .collect();
        expected.sort_by_key(|&(spot, _)| spot);
        assert_eq!(contents(&map), expected);
        for (n, &spot) in spots.iter().enumerate().rev() {
            let kind = if n % 2 == 0 { Kind::Root } else { Kind::Child };
            assert_eq!(map.remove_if(spot, kind), Ok(()), "{spot:#x}");
            assert_eq!(map.get(spot), None, "{spot:#x}");
        }
        assert_eq!(map.len(), 0);
        assert!(leaves(&map) <= MAX_SPARES + HOT_LEAVES, "only spares and hot leaves stay");
        map.release_if_empty();
        assert!(map.top.is_null());
    }

    #[test]
    fn release_if_empty_frees_everything_only_when_empty() {
        let mut map = BlockMap::new();
        map.insert(addr(1), Kind::Root).unwrap();
        map.release_if_empty();
        assert_eq!(map.get(addr(1)), Some(Kind::Root));
        assert!(!map.top.is_null());
        if let Some(&high) = beyond().first() {
            map.insert(high, Kind::Child).unwrap();
            map.remove_if(addr(1), Kind::Root).unwrap();
            // The radix is empty and goes; the fallback's block stays.
            map.release_if_empty();
            assert!(map.top.is_null());
            assert_eq!(map.get(high), Some(Kind::Child));
            map.remove_if(high, Kind::Child).unwrap();
        } else {
            map.remove_if(addr(1), Kind::Root).unwrap();
        }
        map.release_if_empty();
        assert!(map.top.is_null());
        assert_eq!(map.len(), 0);
        // And it works again afterwards.
        map.insert(addr(2), Kind::Root).unwrap();
        assert_eq!(map.get(addr(2)), Some(Kind::Root));
        assert_eq!(map.get(addr(1)), None);
    }

    #[test]
    fn emptied_leaves_are_freed_but_the_hot_ones_and_the_newest_spares() {
        let mut map = BlockMap::new();
        // Emptied first, so freed first: each under directories of its own.
        let far: Vec<usize> = (1..=3).map(|n| addr(0) + n * FAR).collect();
        let near: Vec<usize> = (0..=MAX_SPARES + HOT_LEAVES).map(|n| addr(0) + n * LEAF_SPAN).collect();
        for &spot in far.iter().chain(&near) {
            map.insert(spot, Kind::Root).unwrap();
        }
        assert_eq!(leaves(&map), far.len() + near.len());
        for &spot in far.iter().chain(&near) {
            map.remove_if(spot, Kind::Root).unwrap();
        }
        check_invariants(&map);
        // The last leaves emptied stay hot, the ones before them spares.
        assert_eq!(map.spares, MAX_SPARES);
        assert_eq!(leaves(&map), MAX_SPARES + HOT_LEAVES);
        // The far leaves went, and the directories above them.
        // SAFETY: the top is live; reading its slots only.
        let uppers = unsafe { (*map.top).slots.iter().filter(|node| !node.is_null()).count() };
        assert_eq!(uppers, 1);
        for &spot in far.iter().chain(&near) {
            assert_eq!(map.get(spot), None, "{spot:#x}");
        }
        // A spare that takes a block again leaves the list; the empty hot
        // leaf it replaces joins it.
        map.insert(near[3], Kind::Child).unwrap();
        check_invariants(&map);
        assert_eq!(map.spares, MAX_SPARES);
        map.insert(far[0], Kind::Root).unwrap();
        check_invariants(&map);
        assert_eq!(leaves(&map), MAX_SPARES + HOT_LEAVES);
        assert_eq!(contents(&map), vec![(near[3], Kind::Child), (far[0], Kind::Root)]);
    }

    #[test]
    fn a_tree_over_several_leaves_built_and_freed_in_a_loop_never_allocates() {
        let mut map = BlockMap::new();
        let tree: Vec<usize> = (0..MAX_SPARES + HOT_LEAVES).map(|n| addr(5) + n * LEAF_SPAN + 3 * FAR).collect();
        for round in 0..100 {
            if round == 1 {
                // The first round made the leaves; from here on any
                // allocation is refused, which would show as Err.
                fail_allocation_after(Some(0));
            }
            for &block in &tree {
                assert_eq!(map.insert(block, Kind::Child), Ok(()), "round {round}");
            }
            for &block in &tree {
                assert_eq!(map.remove_if(block, Kind::Child), Ok(()), "round {round}");
            }
        }
        assert_eq!(fail_allocation_after(None), Some(0), "nothing allocated");
    }

    #[test]
    fn a_block_freed_and_allocated_again_in_a_loop_never_allocates() {
        let mut map = BlockMap::new();
        let keep = addr(0) + 10 * LEAF_SPAN;
        map.insert(keep, Kind::Root).unwrap();
        map.insert(addr(0), Kind::Root).unwrap();
        map.remove_if(addr(0), Kind::Root).unwrap();
        // Any allocation from here on is refused, which would show as Err.
        fail_allocation_after(Some(0));
        for round in 0..1000 {
            let spot = addr(round % 7);
            assert_eq!(map.insert(spot, Kind::Root), Ok(()));
            assert_eq!(map.remove_if(spot, Kind::Root), Ok(()));
        }
        assert_eq!(fail_allocation_after(None), Some(0), "nothing allocated");
        assert_eq!(contents(&map), vec![(keep, Kind::Root)]);
    }

    /// Fails the `successes`+1-th allocation of an insert into an empty map,
    /// which needs a leaf, a lower and an upper directory and the top, in
    /// that order; the map must be as it was.
    fn refused_on_an_empty_map(successes: u32) {
        let mut map = BlockMap::new();
        fail_allocation_after(Some(successes));
        assert_eq!(map.insert(addr(1), Kind::Root), Err(Error::NoMemory));
        assert_eq!(fail_allocation_after(None), None, "the failure was reached");
        assert_eq!(map.get(addr(1)), None);
        assert!(contents(&map).is_empty());
        assert!(map.top.is_null(), "nothing kept");
        map.insert(addr(1), Kind::Root).unwrap();
        assert_eq!(contents(&map), vec![(addr(1), Kind::Root)]);
    }

    #[test]
    fn a_refused_leaf_reports_no_memory_and_changes_nothing() {
        refused_on_an_empty_map(0);
    }

    #[test]
    fn a_refused_lower_directory_reports_no_memory_and_changes_nothing() {
        refused_on_an_empty_map(1);
    }

    #[test]
    fn a_refused_upper_directory_reports_no_memory_and_changes_nothing() {
        refused_on_an_empty_map(2);
    }

    #[test]
    fn a_refused_top_reports_no_memory_and_changes_nothing() {
        refused_on_an_empty_map(3);
    }

    #[test]
    fn refusals_in_a_populated_map_change_nothing() {
        let mut map = BlockMap::new();
        map.insert(addr(1), Kind::Root).unwrap();
        map.insert(addr(2), Kind::Child).unwrap();
        let before = contents(&map);
        let mut targets = vec![
            addr(0) + LEAF_SPAN,           // needs a leaf
            addr(0) + LOWER_SPAN as usize, // a leaf and a lower directory
        ];
        if usize::BITS >= 64 {
            targets.push(addr(0) + 2 * FAR); // a leaf, a lower and an upper
        }
        for (needed, &target) in targets.iter().enumerate() {
            for successes in 0..=needed as u32 {
                fail_allocation_after(Some(successes));
                assert_eq!(map.insert(target, Kind::Child), Err(Error::NoMemory), "{target:#x} {successes}");
                assert_eq!(fail_allocation_after(None), None);
                assert_eq!(map.get(target), None);
                assert_eq!(contents(&map), before);
                assert_eq!(leaves(&map), 1);
            }
        }
        if let Some(&high) = beyond().first() {
            fail_allocation_after(Some(0));
            assert_eq!(map.insert(high, Kind::Root), Err(Error::NoMemory));
            assert_eq!(map.get(high), None);
            assert_eq!(contents(&map), before);
        }
    }

    /// xorshift64*: a fixed sequence, so failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn for_each_visits_exactly_the_live_set_in_a_random_run() {
        let mut rng = Rng(0x5EED_B10C_4A90_0F5E);
        let mut map = BlockMap::new();
        let mut model: HashMap<usize, Kind> = HashMap::new();
        let mut known: Vec<usize> = Vec::new();
        let align = BLOCK_ALIGN as u64;
        let dense_base = 0x1000_0000_u64;
        for step in 0..100_000u32 {
            let addr = match rng.below(10) {
                // Dense: 1 MiB like a malloc heap, over 16 leaves or more.
                0..=5 => (dense_base + rng.below(1 << 16) * align) as usize,
                // Sparse: anywhere the radix covers.
                6 | 7 => ((rng.next() % (1u64 << RADIX_BITS.min(usize::BITS - 1))) & !(align - 1)) as usize,
                // An address seen before.
                8 if !known.is_empty() => known[rng.below(known.len() as u64) as usize],
                // Beyond the radix, or the edges of the address space.
                _ => match beyond().get(rng.below(4) as usize) {
                    Some(&high) => high + (rng.below(64) as usize) * BLOCK_ALIGN * usize::from(high < usize::MAX / 2),
                    None => BLOCK_ALIGN * (1 + rng.below(64) as usize),
                },
            };
            if addr == 0 {
                continue;
            }
            let kind = if rng.below(2) == 0 { Kind::Root } else { Kind::Child };
            match rng.below(3) {
                0 => {
                    if let std::collections::hash_map::Entry::Vacant(slot) = model.entry(addr) {
                        map.insert(addr, kind).unwrap();
                        slot.insert(kind);
                        known.push(addr);
                    }
                }
                1 => {
                    let expected = match model.get(&addr) {
                        None => Err(None),
                        Some(&found) if found != kind => Err(Some(found)),
                        Some(_) => Ok(()),
                    };
                    assert_eq!(map.remove_if(addr, kind), expected, "step {step}: {addr:#x}");
                    if expected.is_ok() {
                        model.remove(&addr);
                    }
                }
                _ => {
                    assert_eq!(map.get(addr), model.get(&addr).copied(), "step {step}: {addr:#x}");
                    let odd = addr | 1;
                    assert_eq!(map.get(odd), None, "step {step}: {odd:#x}");
                }
            }
            if step % 5_000 == 0 {
                check_invariants(&map);
            }
            if step % 10_000 == 0 || step == 99_999 {
                let mut expected: Vec<(usize, Kind)> = model.iter().map(|(&a, &k)| (a, k)).collect();
                expected.sort_by_key(|&(a, _)| a);
                assert_eq!(contents(&map), expected, "step {step}");
            }
        }
        // Empty it in another order; only spares may stay, then nothing.
        let mut rest: Vec<(usize, Kind)> = model.into_iter().collect();
        rest.sort_by_key(|&(a, _)| a.rotate_left(17));
        for (addr, kind) in rest {
            assert_eq!(map.remove_if(addr, kind), Ok(()), "{addr:#x}");
        }
        assert_eq!(map.len(), 0);
        check_invariants(&map);
        assert!(leaves(&map) <= MAX_SPARES + HOT_LEAVES);
        map.release_if_empty();
        assert!(map.top.is_null());
    }
}
