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
//!
//! **Reallocation keeps the tree.** A tree is named for good by the slot of
//! the root it was made with: its chunks, and the guest chunks other
//! threads made for it, are tagged with that slot and its generation and
//! are never tagged again. `MAPIReallocateBuffer` of a root that has (or
//! may have) children therefore leaves its slot in place as the tree's
//! hidden header, `MOVED` (children live, the address refused), and makes a
//! `FACE`: a root slot holding the new client bytes whose header names the
//! tree instead of chunks. Reallocating a face makes another face of the
//! same tree, so there is never a chain; freeing a face frees its tree.
//! Either step is one compare-and-swap of a state word, from any thread
//! (`alloc::move_root`, `remote`).
//!
//! `GUESTED` is set (once, by a compare-and-swap) on a live root with no
//! chunk before the first guest child of its life is made: an owner's
//! reallocation of a root with no chunk and no such flag may then drop the
//! old slot outright, as a plain reallocation would. (A root's `first`,
//! once set, stays set for its life.)

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
/// A tree whose root was reallocated: its children live, its address is
/// refused; a `FACE` elsewhere holds the client's bytes.
pub const MOVED: u32 = 4;
/// A live root whose tree is another slot's (`MOVED`), named by `first`.
pub const FACE: u32 = 5;
/// A moved tree whose face was freed: as `KILLED`, for its owner to
/// release, and the tools were told of its client bytes at the move.
pub const KILLED_MOVED: u32 = 6;
/// A face freed by another thread, for its owner to release (its tree was
/// killed with it).
pub const KILLED_FACE: u32 = 7;
const KIND_MASK: u32 = 7;
/// Another thread made, or is making, a guest child of the root's life (a
/// flag, set on a root with no chunk only: see above).
pub const GUESTED: u32 = 8;
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
    /// Read by a thread that moves the root (what it copies). A moved
    /// root's is 0 once its owner has taken its bytes off the counts.
    size: AtomicU32,
    /// The newest chunk, where children are bumped; older ones follow it.
    /// A free slot's link in its page's free list. A face's tree, tagged
    /// (`face_link`). Atomic (relaxed: plain moves) because other threads
    /// read a face's.
    first: AtomicPtr<Chunk>,
}

const _: () = assert!(core::mem::size_of::<Root>() <= ROOT_HEADER && ROOT_HEADER % GRANULE == 0);
const _: () = assert!(core::mem::size_of::<Root>() >= super::page::FREE_LINK_OFFSET + core::mem::size_of::<usize>());

/// The generation bits of a state word.
#[inline(always)]
pub const fn generation(state: u32) -> u32 {
    state & !((1 << GENERATION_SHIFT) - 1)
}

/// The kind bits of a root's state word.
#[inline(always)]
pub const fn kind(state: u32) -> u32 {
    state & KIND_MASK
}

/// Whether a tree in `state` is alive in the life `generation` names: its
/// root live, or moved to a face.
#[inline(always)]
pub const fn tree_alive(state: u32, life: u32) -> bool {
    generation(state) == life && (kind(state) == LIVE || kind(state) == MOVED)
}

/// Bits of a face's link that check its tree's generation (the low bits of
/// a 16-aligned slot's address).
const FACE_TAG: usize = GRANULE - 1;

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

    /// Ends the root's life if it is still in `state` (live, flags
    /// included): what a reallocation does to a root it drops; false if
    /// another thread changed the word meanwhile.
    pub fn try_end(&self, state: u32) -> bool {
        self.swap_state(state, generation(state).wrapping_add(GENERATION_STEP) | FREE).is_ok()
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
    /// tool is done. The same if another thread moved it to a face (see
    /// above): the tree lives on there. A guest's `GUESTED` flag set
    /// meanwhile is the same life, and does not stop the free.
    pub fn end_unless_killed(&self) -> bool {
        let mut state = self.state();
        let next = generation(state).wrapping_add(GENERATION_STEP) | FREE;
        while kind(state) == LIVE {
            match self.swap_state(state, next) {
                Ok(()) => return true,
                Err(now) => state = now,
            }
        }
        false
    }

    /// Puts back a state word a discard of the slot's page zeroed, so the
    /// slot's generations keep moving on.
    pub fn restore(&self, state: u32) {
        self.state.store(state, Ordering::Relaxed)
    }

    /// Makes a freshly handed-out slot a face of `size` bytes for `tree`,
    /// moved in the life `tree_state` names.
    pub fn begin_face(&self, size: u32, tree: &Root, tree_state: u32) -> u32 {
        let state = generation(self.state()) | FACE;
        self.size.store(size, Ordering::Relaxed);
        self.first.store(face_link(tree, tree_state) as *mut Chunk, Ordering::Relaxed);
        self.state.store(state, Ordering::Release);
        state
    }

    /// A face's tree slot, and the generation bits its link checks (read
    /// from a face's header: validate the slot before use, see `validate`).
    pub fn face_tree(&self) -> (usize, u32) {
        let link = self.first.load(Ordering::Relaxed) as usize;
        (link & !FACE_TAG, (link & FACE_TAG) as u32)
    }

    /// Swaps the state word from `from` to `to`, if it is still `from`,
    /// from any thread. Flags set meanwhile make it fail: the caller reads
    /// the word again and decides.
    pub fn swap_state(&self, from: u32, to: u32) -> Result<(), u32> {
        self.state.compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire).map(|_| ())
    }

    /// Another thread's free: live (or a face) in the life `state` names →
    /// killed. False if the root is in another life or already dead. A
    /// `GUESTED` flag set meanwhile does not change the life.
    pub fn kill(&self, state: u32) -> bool {
        let to = match kind(state) {
            LIVE => generation(state) | KILLED,
            FACE => generation(state) | KILLED_FACE,
            _ => return false,
        };
        let mut from = state;
        loop {
            match self.swap_state(from, to) {
                Ok(()) => return true,
                Err(now) if generation(now) == generation(state) && kind(now) == kind(state) => from = now,
                Err(_) => return false,
            }
        }
    }

    /// Sets `GUESTED` on the root if it is live in the life `state` names
    /// (a moved tree needs no flag: its slot stays until the tree dies);
    /// false if that life is over.
    pub fn mark_guested(&self, state: u32) -> bool {
        let mut from = state;
        loop {
            if !tree_alive(from, generation(state)) {
                return false;
            }
            if from & GUESTED != 0 || kind(from) == MOVED {
                return true;
            }
            match self.swap_state(from, from | GUESTED) {
                Ok(()) => return true,
                Err(now) => from = now,
            }
        }
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
        kind(self.state()) == LIVE
    }

    #[cfg(test)]
    pub fn is_killed(&self) -> bool {
        kind(self.state()) == KILLED
    }

    #[inline(always)]
    pub fn size(&self) -> u32 {
        self.size.load(Ordering::Relaxed)
    }

    /// Takes the size off a moved tree's header: its bytes went to a face.
    pub fn clear_size(&self) {
        self.size.store(0, Ordering::Relaxed)
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

/// A face's link to its tree: the slot, tagged with the low bits of the
/// generation it moved in, so a face whose tree slot went on to another
/// life (a racing double free: see `alloc::move_root`) is seldom mistaken.
fn face_link(tree: &Root, tree_state: u32) -> usize {
    tree as *const Root as usize | face_tag(tree_state) as usize
}

/// The generation bits a face's link keeps of its tree's `state`.
#[inline(always)]
pub fn face_tag(state: u32) -> u32 {
    (state >> GENERATION_SHIFT) & FACE_TAG as u32
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

    /// A guest's flag, set between another thread's validation of a root
    /// and its kill or move, does not make the kill fail: same life.
    #[test]
    fn a_kill_validated_before_a_guests_mark_still_wins() {
        let mut slot = [0u128; 2];
        // SAFETY: a local stand-in for a slot, as above.
        let root = unsafe { Root::at(slot.as_mut_ptr() as usize) };
        let validated = root.begin(16);
        assert!(root.mark_guested(validated) && root.state() & GUESTED != 0);
        assert!(root.mark_guested(validated), "marked once a life");
        assert!(root.kill(validated), "the flag is not another life");
        assert!(root.is_killed() && !root.mark_guested(validated), "no guest once the tree is dead");
        assert!(!root.kill(validated), "a second kill finds it dead");
        root.end();
        let next = root.begin(16);
        assert!(!root.kill(validated) && root.state() == next, "an older life's kill does nothing");
    }
}
