//! Which blocks are live, and the chains that tie children to their roots.
//!
//! Every question about a client's pointer is answered here, from the
//! library's own tables, before any memory at that pointer is touched.
//!
//! Shape (ARCHITECTURE.md tells the why at more length):
//! - Each thread that allocates owns a [`Heap`]: a [`BlockMap`] of the blocks
//!   of the trees whose root it allocated. A child is recorded in the heap of
//!   its parent, so a whole tree lives in one heap, and that heap's exclusive
//!   access guards the tree's chain too.
//! - A root and its children form one chain through the `next` field of their
//!   headers; `MAPIAllocateMore(parent)` splices the new block in right after
//!   `parent`, so it costs O(1) whether `parent` is the root or a child.
//! - The owner enters its heap with a store, a fence and a load, no lock.
//!   Any other thread is a *guest*: it takes the heap's lock, says so, fences,
//!   and waits for the owner to step out (Dekker's handshake, both sides
//!   fenced: nothing here relies on a facility that can be withdrawn).
//! - Blocks are allocated before their heap is entered and released after
//!   it is left; the block map's rare node allocations inside *park* the
//!   heap: the records are consistent across the call, so `fork` need not
//!   wait for it (a malloc's own fork handlers may hold that malloc's lock).
//! - Thread binding, exit and unloading live in `thread`; `fork()` in `fork`.
//!
//! At most one heap is held at a time by any thread, except by the fork
//! handlers, which take every guest lock in list order; so no two threads can
//! wait on each other.

mod directory;
mod fork;
mod regions;
mod thread;

use crate::block::Block;
use crate::blockmap::{BlockMap, Kind};
use crate::lock::{self, SpinGuard, SpinLock};
use crate::scode::Error;
use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use regions::Regions;

#[cfg(all(windows, not(feature = "previous-registry")))]
pub(crate) use thread::process_is_exiting;
#[cfg(all(unix, not(feature = "previous-registry")))]
pub(crate) use thread::register_region_heap;
#[cfg(unix)]
pub use thread::shutdown;

/// The blocks of the trees rooted by one thread (or, once that thread has
/// gone, by nobody: an orphan).
struct Heap {
    /// Keeps the hot fields off the cache lines of neighbouring allocations.
    _pad_front: [u8; 64],
    /// The owner is inside an operation. Written only by the owner.
    owner_busy: AtomicBool,
    /// A guest holds `guest` and wants the owner out. Written only under `guest`.
    guest_waiting: AtomicBool,
    /// A live thread owns this heap. Changed only under `guest`.
    owned: AtomicBool,
    /// Whoever is inside is in a call to the C allocator, with the records in
    /// a consistent state: `fork` may go ahead without waiting for it.
    parked: AtomicBool,
    /// The fork handlers took `guest` (they leave it to a parked guest).
    #[cfg(unix)]
    fork_took_lock: AtomicBool,
    /// Serialises every access that is not the owner's fast path.
    guest: SpinLock<()>,
    records: UnsafeCell<Records>,
    /// Its number in the `directory`, set before it is published.
    number: AtomicUsize,
    _pad_back: [u8; 64],
}

// SAFETY: the records are only reached through `HeapAccess`, which the
// owner/guest protocol makes exclusive; the other fields are atomics and the lock.
unsafe impl Sync for Heap {}

impl Heap {
    const fn new(owned: bool) -> Heap {
        Heap {
            _pad_front: [0; 64],
            owner_busy: AtomicBool::new(false),
            guest_waiting: AtomicBool::new(false),
            owned: AtomicBool::new(owned),
            parked: AtomicBool::new(false),
            #[cfg(unix)]
            fork_took_lock: AtomicBool::new(false),
            guest: SpinLock::new(()),
            records: UnsafeCell::new(Records::new()),
            number: AtomicUsize::new(0),
            _pad_back: [0; 64],
        }
    }

    /// The owner's way in: a store, a fence and a load when no guest is about.
    #[inline(always)]
    fn enter_as_owner(&self) -> HeapAccess<'_> {
        self.owner_busy.store(true, Ordering::Relaxed);
        // Dekker: the store above must be seen before the load below, or a
        // guest and the owner could both get in.
        fence(Ordering::SeqCst);
        // Acquire: when a guest has just left, see what it wrote.
        if !self.guest_waiting.load(Ordering::Acquire) {
            return HeapAccess::new(self, Way::Owner);
        }
        self.queue_behind_guest()
    }

    /// A guest is in or about to be: step out, and queue behind it.
    #[cold]
    #[inline(never)]
    fn queue_behind_guest(&self) -> HeapAccess<'_> {
        self.owner_busy.store(false, Ordering::Release);
        if fork::is_forking_thread() {
            // The fork handlers hold every lock for this very thread.
            return HeapAccess::new(self, Way::Forker);
        }
        HeapAccess::new(self, Way::Guest { _lock: self.guest.lock() })
    }

    /// Everyone else's way in: the lock, then wait until the owner is out.
    fn enter_as_guest(&self) -> HeapAccess<'_> {
        if fork::is_forking_thread() {
            // Between the fork handlers, this thread alone may be inside.
            return HeapAccess::new(self, Way::Forker);
        }
        let guard = self.guest.lock();
        if self.owned.load(Ordering::Relaxed) {
            self.guest_waiting.store(true, Ordering::Relaxed);
            // Dekker, the guest's side: see `enter_as_owner`.
            fence(Ordering::SeqCst);
            // Acquire: see everything the owner wrote before stepping out.
            lock::wait_until(|| !self.owner_busy.load(Ordering::Acquire));
        }
        HeapAccess::new(self, Way::Guest { _lock: guard })
    }

    /// The owner's way in, unless this is the forking thread and another
    /// thread left the heap parked mid-call (see `fork::must_pass_by`).
    #[inline(always)]
    fn try_enter_as_owner(&self) -> Option<HeapAccess<'_>> {
        if fork::must_pass_by(self) {
            None
        } else {
            Some(self.enter_as_owner())
        }
    }

    /// A guest's way in, with the same exception.
    fn try_enter_as_guest(&self) -> Option<HeapAccess<'_>> {
        if fork::must_pass_by(self) {
            None
        } else {
            Some(self.enter_as_guest())
        }
    }

    /// A guest's way in while the process exits on Windows, when the other
    /// threads have been ended wherever they were: `None` if one of them
    /// was inside this heap (its lock held, or its owner busy), whose
    /// records may then be half-changed and must not be read.
    fn enter_at_exit(&self) -> Option<HeapAccess<'_>> {
        let guard = self.guest.try_lock()?;
        if self.owned.load(Ordering::Relaxed) && self.owner_busy.load(Ordering::Acquire) {
            return None;
        }
        Some(HeapAccess::new(self, Way::Guest { _lock: guard }))
    }

    /// Makes this heap an orphan, which any thread may enter as a guest and a
    /// new thread adopts; an orphan with no blocks keeps no memory for them.
    fn orphan(&self) {
        let access = self.enter_as_guest();
        self.owned.store(false, Ordering::Relaxed);
        drop(access);
    }
}

/// What one heap knows: its blocks, and the counts behind `mapi32_stats`,
/// kept under the heap's exclusive access so that counting costs no atomic.
struct Records {
    table: BlockMap,
    counts: Counts,
}

impl Records {
    const fn new() -> Records {
        Records { table: BlockMap::new(), counts: Counts::ZERO }
    }

    /// Records a fresh block; on `Err` nothing has changed (but `regions`
    /// may cover one region more, which costs a lookup a visit at most).
    #[inline(always)]
    fn insert(&mut self, regions: &Regions, block: Block, kind: Kind) -> Result<(), Error> {
        regions.cover(block.addr());
        self.table.insert(block.addr(), kind)?;
        // SAFETY: the block is fresh and ours.
        self.counts.allocated(kind, unsafe { block.requested_size() });
        Ok(())
    }

    /// Forgets a live block of `kind` whose memory is still ours; `Err` as
    /// for `BlockMap::remove_if`.
    #[inline]
    fn remove(&mut self, regions: &Regions, addr: usize, kind: Kind) -> Result<(), Option<Kind>> {
        self.table.remove_if(addr, kind)?;
        // SAFETY: `addr` was a live block of this heap, which the caller
        // holds; its memory is not released yet.
        self.counts.freed(kind, unsafe { Block::from_addr(addr).requested_size() });
        if self.counts.live_roots == 0 && self.counts.live_children == 0 {
            regions.clear();
        }
        Ok(())
    }
}

/// Counts of blocks, as `mapi32_stats` reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub live_roots: u64,
    pub live_children: u64,
    /// Bytes the live blocks' callers asked for.
    pub live_bytes: u64,
    /// The most `live_bytes` ever reached (per heap: see `stats`).
    pub peak_bytes: u64,
    /// Blocks ever made, by any of the allocating calls.
    pub allocations: u64,
}

impl Counts {
    const ZERO: Counts = Counts { live_roots: 0, live_children: 0, live_bytes: 0, peak_bytes: 0, allocations: 0 };

    #[inline(always)]
    fn allocated(&mut self, kind: Kind, size: usize) {
        match kind {
            Kind::Root => self.live_roots = self.live_roots.wrapping_add(1),
            Kind::Child => self.live_children = self.live_children.wrapping_add(1),
        }
        self.live_bytes = self.live_bytes.wrapping_add(size as u64);
        self.peak_bytes = self.peak_bytes.max(self.live_bytes);
        self.allocations = self.allocations.wrapping_add(1);
    }

    #[inline]
    fn freed(&mut self, kind: Kind, size: usize) {
        match kind {
            Kind::Root => self.live_roots = self.live_roots.wrapping_sub(1),
            Kind::Child => self.live_children = self.live_children.wrapping_sub(1),
        }
        self.live_bytes = self.live_bytes.wrapping_sub(size as u64);
    }

    fn add(&mut self, other: Counts) {
        self.live_roots = self.live_roots.wrapping_add(other.live_roots);
        self.live_children = self.live_children.wrapping_add(other.live_children);
        self.live_bytes = self.live_bytes.wrapping_add(other.live_bytes);
        self.peak_bytes = self.peak_bytes.wrapping_add(other.peak_bytes);
        self.allocations = self.allocations.wrapping_add(other.allocations);
    }
}

/// How a [`HeapAccess`] got in, and so how it leaves.
enum Way<'a> {
    /// The owner's fast path: leaving clears `owner_busy`.
    Owner,
    /// Through the guest lock, released when this drops, after leaving.
    Guest { _lock: SpinGuard<'a, ()> },
    /// The forking thread between the fork handlers, which hold every lock.
    Forker,
}

/// Exclusive access to one heap's records; leaving is dropping it.
struct HeapAccess<'a> {
    heap: &'a Heap,
    way: Way<'a>,
}

impl<'a> HeapAccess<'a> {
    #[inline(always)]
    fn new(heap: &'a Heap, way: Way<'a>) -> HeapAccess<'a> {
        // The C allocator's calls made from inside find the heap here (`fork`).
        thread::set_inside(heap);
        HeapAccess { heap, way }
    }

    /// Where the held heap's blocks lie: written only by whoever holds the
    /// heap, read by any lookup (see `regions`).
    fn regions(&self) -> &'static Regions {
        directory::regions_of(self.heap)
    }

    fn records(&mut self) -> &mut Records {
        // SAFETY: the owner/guest protocol admits one `HeapAccess` per heap at
        // a time, and `&mut self` makes this the only borrow through it.
        unsafe { &mut *self.heap.records.get() }
    }

    #[inline(never)]
    fn leave_as_guest(&mut self) {
        if !self.heap.owned.load(Ordering::Relaxed) {
            // The last blocks of a dead thread's heap were just freed: keep
            // no memory for them (the thread-exit hook does this at exit).
            self.records().table.release_if_empty();
        }
        // Release, as above. The lock itself is released when the guard
        // drops, after this store.
        self.heap.guest_waiting.store(false, Ordering::Release);
    }
}

impl Drop for HeapAccess<'_> {
    #[inline]
    fn drop(&mut self) {
        match self.way {
            // Release: the next one in sees what we wrote.
            Way::Owner => self.heap.owner_busy.store(false, Ordering::Release),
            Way::Guest { .. } => self.leave_as_guest(),
            Way::Forker => {}
        }
        thread::set_inside(ptr::null());
    }
}

/// For threads that cannot have a heap of their own (their thread-local
/// storage is being torn down, or no thread-exit hook could be set): an
/// orphan from the start, entered as a guest.
static SHARED: Heap = Heap::new(false);

/// Runs `attempt` on the records of each heap that may hold `addr`, in turn,
/// with exclusive access, until one answers `Some`: this thread's own heap
/// first (the usual case, on the owner's fast path), then the others as a
/// guest. `attempt` answers `None` when `addr` is not in the records it is
/// given, and records what it adds or removes under the heap's `Regions`.
#[inline]
fn in_heap_of<R>(addr: usize, mut attempt: impl FnMut(&mut Records, &Regions) -> Option<R>) -> Option<R> {
    let mine = thread::current_heap();
    if let Some(mut access) = mine.and_then(Heap::try_enter_as_owner) {
        let regions = access.regions();
        if let Some(answer) = attempt(access.records(), regions) {
            return Some(answer);
        }
    }
    in_other_heaps(mine, addr, attempt)
}

/// The rest of [`in_heap_of`]: a block of another thread's tree, or none.
/// Heaps whose regions cannot hold `addr` are passed by without entering
/// them, so a foreign pointer or an idle thread's heap costs a load.
#[inline(never)]
fn in_other_heaps<R>(
    mine: Option<&Heap>,
    addr: usize,
    mut attempt: impl FnMut(&mut Records, &Regions) -> Option<R>,
) -> Option<R> {
    directory::may_hold(addr, mine).filter_map(Heap::try_enter_as_guest).find_map(|mut access| {
        let regions = access.regions();
        attempt(access.records(), regions)
    })
}

/// Why `MAPIFreeBuffer` left a pointer alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotARoot {
    /// A live child: it is freed with its root.
    Child,
    /// Not a live block of this library: already freed, interior or foreign.
    Unknown,
}

/// Records a fresh block as a root, in this thread's heap.
#[inline(always)]
pub fn insert_root(block: Block) -> Result<(), Error> {
    let mut access = match thread::home_heap()?.and_then(Heap::try_enter_as_owner) {
        Some(access) => access,
        None => SHARED.try_enter_as_guest().ok_or(Error::NoMemory)?,
    };
    let regions = access.regions();
    access.records().insert(regions, block, Kind::Root)
}

/// Allocates a block of `size` bytes and records it as a child, chained
/// right after `parent`, if `parent` is a live root or child; else
/// `InvalidParameter`, with nothing left allocated (a bad parent outranks a
/// size the C allocator refuses). The block is allocated before the parent's
/// heap is entered and, if unused, released after it is left: a `malloc`
/// inside the heap would have to park it, which costs a fence (`fork`), on
/// the call that builds every tree. On `Err` nothing has changed.
pub fn allocate_child(parent: usize, size: usize) -> Result<Block, Error> {
    let fresh = Block::allocate(size);
    let linked = in_heap_of(parent, |records, regions| {
        records.table.get(parent)?;
        Some(fresh.and_then(|child| link_child(records, regions, parent, child)))
    })
    .unwrap_or(Err(Error::InvalidParameter));
    release_unused(fresh, &linked);
    linked
}

/// Releases a block allocated ahead of a heap visit that did not keep it.
fn release_unused<T>(fresh: Result<Block, Error>, outcome: &Result<T, Error>) {
    if let (Ok(unused), Err(_)) = (fresh, outcome) {
        // SAFETY: the block is fresh and was never recorded or shared; the
        // visit that refused it is over.
        unsafe { unused.release() };
    }
}

/// Records the fresh `child` and splices it in after `parent`; on `Err`
/// nothing has changed and `child` is still the caller's.
fn link_child(records: &mut Records, regions: &Regions, parent: usize, child: Block) -> Result<Block, Error> {
    records.insert(regions, child, Kind::Child)?;
    // SAFETY: `parent` is live and its heap is held, which guards the chain;
    // `child` is fresh and not yet shared.
    unsafe {
        let parent = Block::from_addr(parent);
        child.set_next(parent.next());
        parent.set_next(child.addr());
    }
    Ok(child)
}

/// Removes the root at `addr` and all its children from the registry, and
/// returns them for the caller to release.
#[inline]
pub fn remove_root(addr: usize) -> Result<Chain, NotARoot> {
    in_heap_of(addr, |records, regions| match records.remove(regions, addr, Kind::Root) {
        Err(None) => None,
        Err(Some(_)) => Some(Err(NotARoot::Child)),
        Ok(()) => {
            // SAFETY: `addr` was a live root; its heap is held, which guards
            // the chain, and each child is removed before its link is followed.
            unsafe {
                let root = Block::from_addr(addr);
                if root.next() != 0 {
                    remove_children(records, regions, root);
                }
            }
            Some(Ok(Chain { next: addr }))
        }
    })
    .unwrap_or(Err(NotARoot::Unknown))
}

/// Removes every child chained after `root` from `records`.
///
/// # Safety
/// `root` was just removed from `records`, whose heap the caller holds.
#[inline(never)]
unsafe fn remove_children(records: &mut Records, regions: &Regions, root: Block) {
    let mut last = root;
    // SAFETY: each block reached is a live child of this tree until removed
    // here; the held heap guards every link.
    unsafe {
        while last.next() != 0 {
            let child = last.next();
            if records.remove(regions, child, Kind::Child).is_err() {
                // Every chained block is a recorded child, so this cannot
                // happen; if it did, stopping here leaks memory where going
                // on could free someone else's.
                last.set_next(0);
                return;
            }
            last = Block::from_addr(child);
        }
    }
}

/// What `MAPIReallocateBuffer` made.
#[derive(Debug)]
pub struct Reallocated {
    /// The new block, holding the old one's bytes (as many as fit).
    pub block: Block,
    /// The old root, which left the registry and must be released; `None`
    /// when a child was reallocated (it stays, and dies with its root).
    pub replaced_root: Option<Block>,
}

/// A block of `size` bytes holding the bytes of the live block at `addr` (as
/// many as fit): for a root, a new root that takes over its children, the
/// old root leaving the registry; for a child, a new child of the same root.
/// `InvalidParameter` for any other `addr`, with nothing left allocated; on
/// `Err` nothing has changed. The block is allocated ahead, as in
/// [`allocate_child`].
pub fn reallocate(addr: usize, size: usize) -> Result<Reallocated, Error> {
    let fresh = Block::allocate(size);
    let outcome = in_heap_of(addr, |records, regions| {
        let kind = records.table.get(addr)?;
        // SAFETY: `addr` is a live block of this heap, which is held.
        let old = unsafe { Block::from_addr(addr) };
        Some(fresh.and_then(|block| {
            // SAFETY: both blocks are live and ours; they do not overlap.
            unsafe { block.copy_from(old) };
            match kind {
                Kind::Child => {
                    link_child(records, regions, addr, block).map(|block| Reallocated { block, replaced_root: None })
                }
                Kind::Root => replace_root(records, regions, old, block),
            }
        }))
    })
    .unwrap_or(Err(Error::InvalidParameter));
    release_unused(fresh, &outcome);
    outcome
}

/// Puts the fresh `block` in the place of the live root `old`, children and
/// all; on `Err` nothing has changed and `block` is still the caller's.
fn replace_root(records: &mut Records, regions: &Regions, old: Block, block: Block) -> Result<Reallocated, Error> {
    // Record the new root first: if that fails, nothing has changed (and the
    // heap is never empty in between, which would clear its regions).
    records.insert(regions, block, Kind::Root)?;
    // Cannot fail: `old` was found in these records during this visit.
    let _ = records.remove(regions, old.addr(), Kind::Root);
    // SAFETY: the heap is held, which guards the chain; `old` has left the
    // registry but its memory is still ours.
    unsafe { block.set_next(old.next()) };
    Ok(Reallocated { block, replaced_root: Some(old) })
}

/// The counts of every heap, added up. Live counts and bytes are exact (a
/// tree is counted in one heap); `peak_bytes` is the sum of each heap's
/// peak: exact when one thread roots every tree, an upper bound otherwise.
pub fn stats() -> Counts {
    let mut total = Counts::ZERO;
    for mut access in directory::all().filter_map(Heap::try_enter_as_guest) {
        total.add(access.records().counts);
    }
    total
}

/// Calls `visit` with the address, requested size and tree bytes (its own
/// and its children's requested sizes) of every live root. Returns how many
/// heaps it had to leave out: only while a Windows process exits, those a
/// thread ended in the middle of a call was inside.
pub fn for_each_root(mut visit: impl FnMut(usize, usize, u64)) -> usize {
    let exiting = thread::process_is_exiting();
    let mut left_out = 0;
    for heap in directory::all() {
        let entered =
            if exiting { heap.enter_at_exit() } else { heap.try_enter_as_guest().or_else(|| heap.enter_at_exit()) };
        let mut access = match entered {
            Some(access) => access,
            None => {
                left_out += 1;
                continue;
            }
        };
        access.records().table.for_each(|addr, kind| {
            if kind != Kind::Root {
                return;
            }
            // SAFETY: live blocks of a held heap, which guards the chain.
            unsafe {
                let root = Block::from_addr(addr);
                let mut tree_bytes = 0u64;
                let mut next = addr;
                while next != 0 {
                    let block = Block::from_addr(next);
                    tree_bytes = tree_bytes.wrapping_add(block.requested_size() as u64);
                    next = block.next();
                }
                visit(addr, root.requested_size(), tree_bytes);
            }
        });
    }
    left_out
}

/// Work for when the library is loaded, before any thread can call it: the
/// thread-exit hook and the fork handlers.
pub fn init() {
    thread::init();
    #[cfg(unix)]
    fork::register_handlers();
}

/// For the C allocator's calls: see [`fork::while_parked`].
pub(crate) use fork::while_parked;

/// The blocks of a removed tree, the root first. No other thread can reach
/// them any more: each block yielded belongs to the caller, who must release
/// it, and its link is read before it is yielded.
pub struct Chain {
    next: usize,
}

impl Iterator for Chain {
    type Item = Block;

    fn next(&mut self) -> Option<Block> {
        if self.next == 0 {
            return None;
        }
        // SAFETY: every block of the chain left the registry in `remove_root`
        // and is released only after being yielded, after this read.
        let block = unsafe { Block::from_addr(self.next) };
        self.next = unsafe { block.next() };
        Some(block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The owner (no lock) and guests (the lock) update one heap's records
    /// with plain read-modify-writes; with Dekker's handshake fenced on both
    /// sides, none is lost. (Breaking either fence loses updates here within
    /// a few runs on a 2-core machine.)
    #[test]
    fn owner_and_guests_are_never_inside_together() {
        const ROUNDS: u64 = 1_000_000;
        const GUESTS: u64 = 2;
        let heap = Heap::new(true);
        let bump = |mut access: HeapAccess<'_>| {
            let count: *mut u64 = &mut access.records().counts.allocations;
            // SAFETY: a field of records this access holds. Volatile, so that
            // the read and the write stay two accesses, apart.
            unsafe { count.write_volatile(count.read_volatile() + 1) };
        };
        std::thread::scope(|scope| {
            for _ in 0..GUESTS {
                scope.spawn(|| (0..ROUNDS).for_each(|_| bump(heap.enter_as_guest())));
            }
            (0..ROUNDS).for_each(|_| bump(heap.enter_as_owner()));
        });
        assert_eq!(heap.enter_as_guest().records().counts.allocations, (GUESTS + 1) * ROUNDS);
    }

    /// SPEC §3, no call waits on an unrelated thread: while a heap's owner
    /// is held inside it, as if descheduled in the middle of a call, a free
    /// of a foreign pointer on another thread returns without waiting for it.
    /// (With every heap entered, as before `Regions`, the free waits until
    /// the owner is let go, and the test fails after 5 s.)
    #[test]
    fn a_foreign_free_passes_by_a_heap_whose_owner_is_mid_call() {
        use std::sync::mpsc;
        use std::time::Duration;
        let (parked, is_parked) = mpsc::channel();
        let (let_go, is_let_go) = mpsc::channel::<()>();
        let owner = std::thread::spawn(move || {
            let root = Block::allocate(64).expect("memory");
            insert_root(root).expect("recorded");
            let heap = thread::current_heap().expect("a heap of its own");
            let mid_call = heap.enter_as_owner();
            parked.send(directory::regions_of(heap)).expect("test thread");
            is_let_go.recv().expect("test thread");
            drop(mid_call);
            for block in remove_root(root.addr()).expect("a live root") {
                // SAFETY: the chain's blocks are ours to release.
                unsafe { block.release() };
            }
        });
        let regions = is_parked.recv().expect("owner");
        // An address in a region the held heap has no block in; never mapped,
        // which the lookup must not care about, since it reads nothing there.
        let foreign = (1..64usize)
            .map(|k| (k << regions::REGION_SHIFT) | 0x10)
            .find(|&addr| !regions.may_hold(addr))
            .expect("a free bit");
        let (answered, answer) = mpsc::channel();
        let freer = std::thread::spawn(move || {
            // The receiver outlives this thread (joined below).
            let _ = answered.send(remove_root(foreign).map(|_| ()));
        });
        let waited = answer.recv_timeout(Duration::from_secs(5));
        let_go.send(()).expect("owner");
        owner.join().expect("owner");
        freer.join().expect("freer");
        assert_eq!(waited, Ok(Err(NotARoot::Unknown)), "the free waited for the busy owner (or found a block)");
    }
}
