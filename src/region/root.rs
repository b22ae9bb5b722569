//! A root's 16-byte header, in front of its client bytes in a size-class
//! slot (or a span of its own): the state word, the size asked for, and
//! the tree's newest chunk.
//!
//! The state word is `generation << 8 | kind`. The generation moves on at
//! every free, so a chunk (which records its tree's state) and the parent
//! cache (which records the state it validated) both stop matching the
//! moment their tree dies, with no list of them to clear. A free slot keeps
//! its state word (kind `FREE`), so a stale pointer to it is refused.
//!
//! The state word is the one word of a root another thread writes: a free
//! from another thread moves it from live to `KILLED` by a compare-and-swap
//! of the exact word it validated (`remote`), and the owner releases the
//! tree later. The owner's own free stays a load and a store: if a kill
//! lands between them, the owner's store still ends the same life (same
//! generation), the owner releases the tree, and the kill's mark finds the
//! slot no longer killed. Either way the tree is released once. While a
//! tool watches (`track`), the owner's free is a compare-and-swap too
//! (`end_unless_killed`): a kill tells the tool at once, so a free that
//! loses to it leaves the tree to the owner's drain, where it is released
//! without telling the tool again.

use super::chunk::Chunk;
use super::GRANULE;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

/// The kinds a state word holds in its low bits.
pub const FREE: u32 = 0;
pub const LIVE: u32 = 1;
/// A chunk's state word: its tree's generation, its class, this kind.
pub const CHUNK: u32 = 2;
/// Freed by another thread, not yet released by its owner: dead to every
/// call, its slot and chunks still held.
pub const KILLED: u32 = 3;
pub const KIND_MASK: u32 = 3;
pub const GENERATION_SHIFT: u32 = 8;
const GENERATION_STEP: u32 = 1 << GENERATION_SHIFT;

/// Bytes in front of a root's client bytes.
pub const ROOT_HEADER: usize = 16;

#[repr(C)]
#[derive(Debug)]
pub struct Root {
    /// Atomic because other threads read it and `kill` swaps it; the
    /// owner's loads and stores are relaxed (plain moves).
    state: AtomicU32,
    /// Read by a thread that kills the root (it takes it off the counts).
    size: AtomicU32,
    /// The newest chunk, where children are bumped; older ones follow it.
    /// A free slot's link in its page's free list. Atomic because `stats`
    /// reads a killed tree's chunks from any thread (`remote::unreleased`);
    /// the owner's loads and stores are relaxed.
    first: AtomicPtr<Chunk>,
}

const _: () = assert!(core::mem::size_of::<Root>() <= ROOT_HEADER && ROOT_HEADER % GRANULE == 0);
const _: () = assert!(core::mem::size_of::<Root>() >= super::page::FREE_LINK_OFFSET + core::mem::size_of::<usize>());

/// The generation bits of a state word.
#[inline(always)]
pub const fn generation(state: u32) -> u32 {
    state & !((1 << GENERATION_SHIFT) - 1)
}

/// Whether a state word is a killed root's.
#[inline(always)]
pub const fn is_killed(state: u32) -> bool {
    state & KIND_MASK == KILLED
}

impl Root {
    /// The header of the slot at `slot`.
    ///
    /// # Safety
    /// `slot` is a root slot that was handed out at least once: its header
    /// is mapped, 16-aligned memory of the heap's, written only by it.
    #[inline(always)]
    pub unsafe fn at<'a>(slot: usize) -> &'a Root {
        // SAFETY: by the caller's contract.
        unsafe { &*(slot as *const Root) }
    }

    /// Makes a freshly handed-out slot a live root of `size` bytes with no
    /// children, in the generation the slot's last root left it.
    #[inline(always)]
    pub fn begin(&self, size: u32) -> u32 {
        let state = generation(self.state()) | LIVE;
        self.size.store(size, Ordering::Relaxed);
        self.set_first(ptr::null());
        // Release: another thread that reads this state reads the size too.
        self.state.store(state, Ordering::Release);
        state
    }

    /// Ends the root's life: the next generation, kind free.
    #[inline(always)]
    pub fn end(&self) {
        self.state.store(generation(self.state()).wrapping_add(GENERATION_STEP) | FREE, Ordering::Relaxed);
    }

    /// The owner's free while a tool watches (`track`): ends the root's
    /// life, as [`end`](Root::end), unless another thread killed it first,
    /// which it says with false. Then the killer, which already told the
    /// tool, is the one to hand the tree to the owner's drain: the slot must
    /// not be released (and perhaps reused) before that thread's call to the
    /// tool is done.
    pub fn end_unless_killed(&self) -> bool {
        let state = self.state();
        let next = generation(state).wrapping_add(GENERATION_STEP) | FREE;
        state & KIND_MASK == LIVE
            && self.state.compare_exchange(state, next, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }

    /// Puts back a state word a discard of the slot's page zeroed, so the
    /// slot's generations keep moving on.
    pub fn restore(&self, state: u32) {
        self.state.store(state, Ordering::Relaxed)
    }

    /// Another thread's free: live in the life `state` names → killed.
    /// False if the root is in another life or already dead.
    pub fn kill(&self, state: u32) -> bool {
        let killed = generation(state) | KILLED;
        state & KIND_MASK == LIVE
            && self.state.compare_exchange(state, killed, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    #[inline(always)]
    pub fn state(&self) -> u32 {
        self.state.load(Ordering::Relaxed)
    }

    /// The state word as another thread reads it.
    #[inline(always)]
    pub fn state_acquire(&self) -> u32 {
        self.state.load(Ordering::Acquire)
    }

    #[inline(always)]
    pub fn is_live(&self) -> bool {
        self.state() & KIND_MASK == LIVE
    }

    #[inline(always)]
    pub fn is_killed(&self) -> bool {
        self.state() & KIND_MASK == KILLED
    }

    #[inline(always)]
    pub fn size(&self) -> u32 {
        self.size.load(Ordering::Relaxed)
    }

    #[inline(always)]
    pub fn first(&self) -> *const Chunk {
        self.first.load(Ordering::Relaxed)
    }

    #[inline(always)]
    pub fn set_first(&self, chunk: *const Chunk) {
        self.first.store(chunk as *mut Chunk, Ordering::Relaxed)
    }

    /// The client's address.
    #[inline(always)]
    pub fn client(&self) -> usize {
        self as *const Root as usize + ROOT_HEADER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_changes_the_state_and_the_next_root_keeps_the_generation() {
        let mut slot = [0u128; 2];
        // SAFETY: a local, 16-byte-aligned-enough stand-in for a slot.
        let root = unsafe { Root::at(slot.as_mut_ptr() as usize) };
        let first = root.begin(32);
        assert!(root.is_live() && root.size() == 32 && root.first().is_null());
        root.end();
        assert!(!root.is_live());
        assert_ne!(root.state(), first, "a stale state no longer matches");
        let second = root.begin(8);
        assert_ne!(second, first, "a new root in the slot is a new generation");
        assert_eq!(generation(second), generation(first) + GENERATION_STEP);
        assert_eq!(second & KIND_MASK, LIVE);
    }
}
