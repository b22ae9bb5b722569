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
//! - The owner enters its heap with plain stores and loads, no atomic
//!   read-modify-write: that is what makes the common case (a thread freeing
//!   what it allocated) cost about what malloc does. Any other thread is a
//!   *guest*: it takes the heap's lock, says so, and waits for the owner to
//!   step out. The owner's side of that handshake needs a full fence, which
//!   the guest supplies on its behalf with `membarrier` (see [`fence`]).
//! - A thread that exits leaves its heap as an orphan, which any thread may
//!   enter as a guest and a new thread adopts. `fork()` quiesces every heap
//!   first; in the child, the other threads' heaps become orphans.
//!
//! At most one heap is held at a time by any thread, except by the fork
//! handlers, which take every guest lock in list order; so no two threads can
//! wait on each other.

use crate::block::Block;
use crate::blockmap::{BlockMap, Kind};
use crate::lock::{self, SpinGuard, SpinLock};
use crate::scode::Error;
use crate::sys;
use core::cell::{Cell, UnsafeCell};
use core::ptr;
use core::sync::atomic::{compiler_fence, fence, AtomicBool, AtomicPtr, AtomicU32, Ordering};

/// Guests, counted between two looks of the owner, that make the owner fence
/// for itself: each guest then pays a fence (~10 ns here) instead of a
/// `membarrier` (~1–40 µs, an interrupt of every other running thread), and
/// the owner pays a fence a call.
const GUEST_VISITS_TO_FENCE: u32 = 8;
/// How often a fencing owner looks whether guests still come that often.
const FENCED_ENTRIES_PER_LOOK: u32 = 4096;

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
    /// The owner fences its own side of the handshake, so that guests need
    /// no `membarrier` (see [`fence`]): always where membarrier is missing,
    /// and for a while once guests come often. Set by a guest, or when the
    /// heap is claimed; cleared by the owner; both under `guest`.
    owner_fences: AtomicBool,
    /// Guests that entered while the owner was alive, since the owner last
    /// looked. Changed only under `guest`.
    guest_visits: AtomicU32,
    /// The owner's fenced entries since it last looked. Owner only.
    fenced_entries: AtomicU32,
    /// Serialises every access that is not the owner's fast path.
    guest: SpinLock<()>,
    records: UnsafeCell<Records>,
    /// The next heap in the list of all heaps; set before the heap is published.
    next: *const Heap,
    _pad_back: [u8; 64],
}

// SAFETY: the table is only reached through `HeapAccess`, which the
// owner/guest protocol makes exclusive; the other fields are atomics, the
// lock, and a pointer that never changes once the heap is published.
unsafe impl Sync for Heap {}

impl Heap {
    const fn new(owned: bool, next: *const Heap) -> Heap {
        Heap {
            _pad_front: [0; 64],
            owner_busy: AtomicBool::new(false),
            guest_waiting: AtomicBool::new(false),
            owned: AtomicBool::new(owned),
            owner_fences: AtomicBool::new(false),
            guest_visits: AtomicU32::new(0),
            fenced_entries: AtomicU32::new(0),
            guest: SpinLock::new(()),
            records: UnsafeCell::new(Records::new()),
            next,
            _pad_back: [0; 64],
        }
    }

    /// The owner's way in: two plain stores and a load when no guest is about.
    #[inline(always)]
    fn enter_as_owner(&self) -> HeapAccess<'_> {
        let fences = self.owner_fences.load(Ordering::Relaxed);
        if fences {
            self.count_fenced_entry();
        }
        self.owner_busy.store(true, Ordering::Relaxed);
        if fences {
            fence(Ordering::SeqCst);
        } else {
            // A guest's membarrier fences this thread on its behalf.
            compiler_fence(Ordering::SeqCst);
        }
        // Acquire: when a guest has just left, see what it wrote.
        if !self.guest_waiting.load(Ordering::Acquire) {
            return HeapAccess { heap: self, guest: None };
        }
        self.queue_behind_guest()
    }

    /// Counts an entry of an owner that fences for itself. Every so many,
    /// while not yet busy (a guest may hold the lock and wait for that), it
    /// looks whether guests still come often enough to be worth it.
    #[inline(never)]
    fn count_fenced_entry(&self) {
        let entries = self.fenced_entries.load(Ordering::Relaxed).wrapping_add(1);
        self.fenced_entries.store(entries, Ordering::Relaxed);
        if entries >= FENCED_ENTRIES_PER_LOOK && fence::asymmetric() {
            let _guard = self.guest.lock();
            // Under the lock no guest is between reading `owner_fences`
            // and leaving, so none is left relying on a fence it no longer
            // gets; later guests see the change through the lock.
            if self.guest_visits.load(Ordering::Relaxed) < GUEST_VISITS_TO_FENCE {
                self.owner_fences.store(false, Ordering::Relaxed);
            }
            self.guest_visits.store(0, Ordering::Relaxed);
            self.fenced_entries.store(0, Ordering::Relaxed);
        }
    }

    /// For a new owner: whether it fences for itself, and no history.
    /// Called under `guest`, or before the heap is published.
    fn start_fencing_as(&self, owner_fences: bool) {
        self.owner_fences.store(owner_fences, Ordering::Relaxed);
        self.guest_visits.store(0, Ordering::Relaxed);
        self.fenced_entries.store(0, Ordering::Relaxed);
    }

    /// A guest is in or about to be: step out, and queue behind it.
    #[cold]
    #[inline(never)]
    fn queue_behind_guest(&self) -> HeapAccess<'_> {
        self.owner_busy.store(false, Ordering::Release);
        HeapAccess { heap: self, guest: Some(self.guest.lock()) }
    }

    /// Everyone else's way in: the lock, then wait until the owner is out.
    fn enter_as_guest(&self) -> HeapAccess<'_> {
        let guard = self.guest.lock();
        if self.owned.load(Ordering::Relaxed) {
            self.guest_waiting.store(true, Ordering::Relaxed);
            let visits = self.guest_visits.load(Ordering::Relaxed).wrapping_add(1);
            self.guest_visits.store(visits, Ordering::Relaxed);
            if self.owner_fences.load(Ordering::Relaxed) {
                fence(Ordering::SeqCst);
            } else {
                if visits >= GUEST_VISITS_TO_FENCE {
                    // Guests come often: from the owner's next entry on, it
                    // fences, and guests skip the membarrier. This one still
                    // runs it, which also makes the change visible to an
                    // owner already inside: it either stored `owner_busy`
                    // before the membarrier (and is waited for below) or
                    // reads `owner_fences` after it.
                    self.owner_fences.store(true, Ordering::Relaxed);
                }
                fence::guest_side();
            }
            // Acquire: see everything the owner wrote before stepping out.
            lock::wait_until(|| !self.owner_busy.load(Ordering::Acquire));
        }
        HeapAccess { heap: self, guest: Some(guard) }
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
        Some(HeapAccess { heap: self, guest: Some(guard) })
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

    /// Records a fresh block; on `Err` nothing has changed.
    #[inline(always)]
    fn insert(&mut self, block: Block, kind: Kind) -> Result<(), Error> {
        self.table.insert(block.addr(), kind)?;
        // SAFETY: the block is fresh and ours.
        self.counts.allocated(kind, unsafe { block.requested_size() });
        Ok(())
    }

    /// Forgets a live block of `kind` whose memory is still ours; `Err` as
    /// for `BlockMap::remove_if`.
    #[inline]
    fn remove(&mut self, addr: usize, kind: Kind) -> Result<(), Option<Kind>> {
        self.table.remove_if(addr, kind)?;
        // SAFETY: `addr` was a live block of this heap, which the caller
        // holds; its memory is not released yet.
        self.counts.freed(kind, unsafe { Block::from_addr(addr).requested_size() });
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

/// Exclusive access to one heap's records; leaving is dropping it.
struct HeapAccess<'a> {
    heap: &'a Heap,
    /// `Some` when entered through the guest lock.
    guest: Option<SpinGuard<'a, ()>>,
}

impl HeapAccess<'_> {
    fn records(&mut self) -> &mut Records {
        // SAFETY: the owner/guest protocol admits one `HeapAccess` per heap at
        // a time, and `&mut self` makes this the only borrow through it.
        unsafe { &mut *self.heap.records.get() }
    }
}

impl HeapAccess<'_> {
    #[inline(never)]
    fn leave_as_guest(&mut self) {
        if !self.heap.owned.load(Ordering::Relaxed) {
            // The last blocks of a dead thread's heap were just freed: keep
            // no memory for them (ExitGuard's drop does this at exit).
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
        if self.guest.is_none() {
            // Release: the next one in sees what we wrote.
            self.heap.owner_busy.store(false, Ordering::Release);
        } else {
            self.leave_as_guest();
        }
    }
}

/// For threads that cannot have a heap of their own (their thread-local
/// storage is being torn down): an orphan from the start, entered as a guest.
static SHARED: Heap = Heap::new(false, ptr::null());

/// The list of all heaps, newest first; heaps are never freed, only reused.
static HEAPS: AtomicPtr<Heap> = AtomicPtr::new(&SHARED as *const Heap as *mut Heap);

/// Held to add a heap to the list, and by the fork handlers.
static HEAP_LIST: SpinLock<()> = SpinLock::new(());

fn heaps() -> impl Iterator<Item = &'static Heap> {
    // SAFETY: every pointer in the list is a published heap, never freed.
    let first = unsafe { HEAPS.load(Ordering::Acquire).as_ref() };
    core::iter::successors(first, |heap| unsafe { heap.next.as_ref() })
}

/// Orphans this thread's heap when the thread exits. Only touched when the
/// heap is claimed, so that the hot path reads [`current`] alone, which has
/// no destructor and so no state to check.
struct ExitGuard(Cell<*const Heap>);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        // Later calls on this thread (from other thread-local destructors)
        // must not take the owner's path into a heap that is about to be
        // orphaned and adopted by another thread.
        current::set(GONE);
        // When a Windows process exits, every other thread is ended wherever
        // it was, perhaps holding this heap's lock, before the exiting
        // thread runs this: taking the lock would wait forever, and nobody
        // is left to adopt the heap anyway.
        if process_is_exiting() {
            return;
        }
        // SAFETY: a non-null pointer here is a published heap, never freed.
        if let Some(heap) = unsafe { self.0.get().as_ref() } {
            let _guard = heap.guest.lock();
            heap.owned.store(false, Ordering::Relaxed);
            // SAFETY: this thread owns the heap and is not inside an
            // operation, and it holds the guest lock: nobody else is in.
            let records = unsafe { &mut *heap.records.get() };
            // An orphan with no blocks keeps no memory for them.
            records.table.release_if_empty();
        }
    }
}

/// Whether the process is exiting and its other threads are already gone.
#[cfg(windows)]
fn process_is_exiting() -> bool {
    #[link(name = "ntdll")]
    extern "system" {
        /// The loader's flag: set once `ExitProcess` has ended the other
        /// threads and begun detaching the DLLs (returns a `BOOLEAN`).
        fn RtlDllShutdownInProgress() -> u8;
    }
    // SAFETY: takes no arguments and only reads the loader's flag.
    unsafe { RtlDllShutdownInProgress() != 0 }
}

/// Elsewhere a process's exit does not end its other threads first.
#[cfg(not(windows))]
fn process_is_exiting() -> bool {
    false
}

/// [`current`] once the thread's [`ExitGuard`] has run: never a heap.
const GONE: *const Heap = 1 as *const Heap;

thread_local! {
    static EXIT_GUARD: ExitGuard = const { ExitGuard(Cell::new(ptr::null())) };
}

/// This thread's heap pointer: null until the thread roots its first tree,
/// [`GONE`] once its thread-local storage is being torn down. Read on every
/// call, so it is one load wherever that can be had.
mod current {
    use super::Heap;

    /// On x86-64 Linux the slot is declared by hand in the initial-exec TLS
    /// model: one `mov` from `%fs`, where Rust's `thread_local!` in a shared
    /// library goes through `__tls_get_addr` (about 3 ns per allocate-free
    /// pair on the benchmark machine, a third of malloc's own cost). The
    /// loader then reserves the 8 bytes in static TLS, as it does for
    /// glibc's, jemalloc's and mimalloc's own thread state.
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    mod slot {
        use super::Heap;

        // Zero-initialised (.tbss), hidden: one per loaded copy of the
        // library, never exported.
        core::arch::global_asm!(
            ".pushsection .tbss,\"awT\",@nobits",
            ".p2align 3",
            ".globl mapi32_current_heap",
            ".hidden mapi32_current_heap",
            ".type mapi32_current_heap,@object",
            ".size mapi32_current_heap,8",
            "mapi32_current_heap:",
            ".zero 8",
            ".popsection",
        );

        #[inline(always)]
        pub(in crate::registry) fn get() -> *const Heap {
            let heap: *const Heap;
            // SAFETY: reads this thread's own 8-byte slot, declared above;
            // the thread pointer in %fs is set up by the C runtime before
            // any code of ours runs on a thread.
            unsafe {
                core::arch::asm!(
                    "mov {heap}, qword ptr [rip + mapi32_current_heap@GOTTPOFF]",
                    "mov {heap}, qword ptr fs:[{heap}]",
                    heap = out(reg) heap,
                    options(nostack, readonly, preserves_flags),
                );
            }
            heap
        }

        #[inline(always)]
        pub(in crate::registry) fn set(heap: *const Heap) {
            // SAFETY: writes this thread's own slot, as in `get`.
            unsafe {
                core::arch::asm!(
                    "mov {offset}, qword ptr [rip + mapi32_current_heap@GOTTPOFF]",
                    "mov qword ptr fs:[{offset}], {heap}",
                    offset = out(reg) _,
                    heap = in(reg) heap,
                    options(nostack, preserves_flags),
                );
            }
        }
    }

    /// Elsewhere, a `thread_local!` with no destructor, so no state to check.
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    mod slot {
        use super::Heap;
        use core::cell::Cell;

        thread_local! {
            static CURRENT: Cell<*const Heap> = const { Cell::new(core::ptr::null()) };
        }

        #[inline]
        pub(in crate::registry) fn get() -> *const Heap {
            // A Drop-free const thread-local is never torn down.
            CURRENT.try_with(Cell::get).unwrap_or(super::super::GONE)
        }

        #[inline]
        pub(in crate::registry) fn set(heap: *const Heap) {
            let _ = CURRENT.try_with(|current| current.set(heap));
        }
    }

    pub(in crate::registry) use slot::{get, set};
}

/// This thread's heap, if it has one.
#[inline(always)]
fn current_heap() -> Option<&'static Heap> {
    let heap = current::get();
    if heap as usize > GONE as usize {
        // SAFETY: any other value is a published heap, never freed.
        Some(unsafe { &*heap })
    } else {
        None
    }
}

/// Where this thread records a new root: its own heap, which it adopts or
/// makes on first use; `None` while its thread-local storage is torn down.
#[inline(always)]
fn home_heap() -> Result<Option<&'static Heap>, Error> {
    match current_heap() {
        Some(heap) => Ok(Some(heap)),
        None => first_home_heap(),
    }
}

#[cold]
#[inline(never)]
fn first_home_heap() -> Result<Option<&'static Heap>, Error> {
    if current::get() == GONE {
        return Ok(None);
    }
    let claimed = EXIT_GUARD.try_with(|guard| {
        let heap = claim_heap()?;
        guard.0.set(heap);
        current::set(heap);
        Ok(heap)
    });
    match claimed {
        Ok(result) => result.map(Some),
        // The guard is gone already: the heap could never be orphaned.
        Err(_) => Ok(None),
    }
}

/// Adopts an orphan heap, or makes and publishes a new one.
fn claim_heap() -> Result<&'static Heap, Error> {
    fence::init();
    for heap in heaps() {
        if core::ptr::eq(heap, &SHARED) || heap.owned.load(Ordering::Relaxed) {
            continue;
        }
        let _guard = heap.guest.lock();
        if !heap.owned.load(Ordering::Relaxed) {
            heap.owned.store(true, Ordering::Relaxed);
            heap.start_fencing_as(!fence::asymmetric());
            return Ok(heap);
        }
    }
    let memory = sys::alloc_aligned(core::mem::size_of::<Heap>()).cast::<Heap>();
    if memory.is_null() {
        return Err(Error::NoMemory);
    }
    let _list = HEAP_LIST.lock();
    // SAFETY: fresh memory of the right size, aligned to BLOCK_ALIGN (more
    // than Heap needs); nothing else can see it until it is published.
    unsafe { memory.write(Heap::new(true, HEAPS.load(Ordering::Relaxed))) };
    // SAFETY: as above; still unpublished.
    unsafe { (*memory).start_fencing_as(!fence::asymmetric()) };
    HEAPS.store(memory, Ordering::Release);
    // SAFETY: just published; heaps are never freed.
    Ok(unsafe { &*memory })
}

/// Runs `attempt` on each heap's records in turn, with exclusive access,
/// until one answers `Some`: this thread's own heap first (the usual case, on
/// the owner's fast path), then every other heap as a guest. `attempt`
/// answers `None` when its block is not in the records it is given.
#[inline]
fn in_heap_of<R>(mut attempt: impl FnMut(&mut Records) -> Option<R>) -> Option<R> {
    let mine = current_heap();
    if let Some(heap) = mine {
        if let Some(answer) = attempt(heap.enter_as_owner().records()) {
            return Some(answer);
        }
    }
    in_other_heaps(mine, attempt)
}

/// The rest of [`in_heap_of`]: a block of another thread's tree, or none.
#[inline(never)]
fn in_other_heaps<R>(mine: Option<&Heap>, mut attempt: impl FnMut(&mut Records) -> Option<R>) -> Option<R> {
    heaps()
        .filter(|heap| !mine.map_or(false, |mine| core::ptr::eq(mine, *heap)))
        .find_map(|heap| attempt(heap.enter_as_guest().records()))
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
    match home_heap()? {
        Some(heap) => heap.enter_as_owner().records().insert(block, Kind::Root),
        None => SHARED.enter_as_guest().records().insert(block, Kind::Root),
    }
}

/// Allocates a block of `size` bytes and records it as a child, chained
/// right after `parent`, if `parent` is a live root or child; else
/// `InvalidParameter`, with nothing allocated. The block is allocated only
/// once `parent` has been found, with its heap held, so a concurrent free
/// cannot slip in between. On `Err` nothing has changed.
pub fn allocate_child(parent: usize, size: usize) -> Result<Block, Error> {
    in_heap_of(|records| {
        records.table.get(parent)?;
        Some(Block::allocate(size).and_then(|child| link_child(records, parent, child)))
    })
    .unwrap_or(Err(Error::InvalidParameter))
}

/// Records `child` and splices it in after `parent`; on failure releases it.
fn link_child(records: &mut Records, parent: usize, child: Block) -> Result<Block, Error> {
    if let Err(error) = records.insert(child, Kind::Child) {
        // SAFETY: the block is fresh and was never recorded or shared.
        unsafe { child.release() };
        return Err(error);
    }
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
    in_heap_of(|records| match records.remove(addr, Kind::Root) {
        Err(None) => None,
        Err(Some(_)) => Some(Err(NotARoot::Child)),
        Ok(()) => {
            // SAFETY: `addr` was a live root; its heap is held, which guards
            // the chain, and each child is removed before its link is followed.
            unsafe {
                let root = Block::from_addr(addr);
                if root.next() != 0 {
                    remove_children(records, root);
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
unsafe fn remove_children(records: &mut Records, root: Block) {
    let mut last = root;
    // SAFETY: each block reached is a live child of this tree until removed
    // here; the held heap guards every link.
    unsafe {
        while last.next() != 0 {
            let child = last.next();
            if records.remove(child, Kind::Child).is_err() {
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
/// `InvalidParameter` for any other `addr`, with nothing allocated; on `Err`
/// nothing has changed.
pub fn reallocate(addr: usize, size: usize) -> Result<Reallocated, Error> {
    in_heap_of(|records| {
        let kind = records.table.get(addr)?;
        // SAFETY: `addr` is a live block of this heap, which is held.
        let old = unsafe { Block::from_addr(addr) };
        Some(Block::allocate(size).and_then(|block| {
            // SAFETY: both blocks are live and ours; they do not overlap.
            unsafe { block.copy_from(old) };
            match kind {
                Kind::Child => link_child(records, addr, block).map(|block| Reallocated { block, replaced_root: None }),
                Kind::Root => replace_root(records, old, block),
            }
        }))
    })
    .unwrap_or(Err(Error::InvalidParameter))
}

/// Puts the fresh `block` in the place of the live root `old`, children and
/// all; on failure releases `block`.
fn replace_root(records: &mut Records, old: Block, block: Block) -> Result<Reallocated, Error> {
    // Record the new root first: if that fails, nothing has changed.
    if let Err(error) = records.insert(block, Kind::Root) {
        // SAFETY: the block is fresh and was never recorded or shared.
        unsafe { block.release() };
        return Err(error);
    }
    // Cannot fail: `old` was found in these records during this visit.
    let _ = records.remove(old.addr(), Kind::Root);
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
    for heap in heaps() {
        total.add(heap.enter_as_guest().records().counts);
    }
    total
}

/// Calls `visit` with the address, requested size and tree bytes (its own
/// and its children's requested sizes) of every live root. Returns how many
/// heaps it had to leave out: only while a Windows process exits, those a
/// thread ended in the middle of a call was inside.
pub fn for_each_root(mut visit: impl FnMut(usize, usize, u64)) -> usize {
    let exiting = process_is_exiting();
    let mut left_out = 0;
    for heap in heaps() {
        let entered = if exiting { heap.enter_at_exit() } else { Some(heap.enter_as_guest()) };
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

/// Work for when the library is loaded, before any thread can call it:
/// decide the fence mode and make `fork()` safe.
pub fn init() {
    fence::init();
    #[cfg(unix)]
    fork::register_handlers();
}

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

/// The fences of the owner/guest handshake.
///
/// The owner stores `owner_busy` then loads `guest_waiting`; a guest stores
/// `guest_waiting` then loads `owner_busy`. Each side needs a full fence
/// between its store and its load, or both could get in. Where the kernel
/// offers `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`, the guest's call
/// puts that fence into every running thread of the process, so the owner
/// gets away with a compiler fence: its fast path has no atomic
/// read-modify-write and no fence instruction. But a membarrier interrupts
/// every other running thread (1–40 µs on the benchmark VM), so a heap that
/// guests enter often (a thread freeing what another allocates) switches to
/// fences on both sides until they stop coming (`Heap::owner_fences`).
/// Where membarrier is missing, both sides always use a sequentially
/// consistent fence. That includes Windows: its
/// `FlushProcessWriteBuffers` would do membarrier's job, but under Wine 8.0
/// (where mapi32.dll is tested) it is an empty stub, which would let owner
/// and guest in at once.
mod fence {
    use core::sync::atomic::{fence, AtomicU8, Ordering};

    const UNDECIDED: u8 = 0;
    /// The guest's membarrier fences the owner.
    const ASYMMETRIC: u8 = 1;
    /// Both sides fence.
    const SYMMETRIC: u8 = 2;

    /// Decided before the first heap exists and never changed while other
    /// threads may be inside (only in a freshly forked child).
    static MODE: AtomicU8 = AtomicU8::new(UNDECIDED);

    /// Decides the mode, once; called before any heap is made.
    pub fn init() {
        if MODE.load(Ordering::Acquire) == UNDECIDED {
            let mode = if membarrier::register() { ASYMMETRIC } else { SYMMETRIC };
            let _ = MODE.compare_exchange(UNDECIDED, mode, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    /// After `fork()`, in the child: registration is per process, so renew
    /// it, or fall back to symmetric fences (no other thread is running yet).
    #[cfg(unix)]
    pub fn renew_after_fork() {
        if MODE.load(Ordering::Relaxed) == ASYMMETRIC && !membarrier::register() {
            MODE.store(SYMMETRIC, Ordering::Release);
        }
    }

    /// Whether a guest's membarrier fences the owner (else both fence).
    pub fn asymmetric() -> bool {
        MODE.load(Ordering::Relaxed) == ASYMMETRIC
    }

    pub fn guest_side() {
        if MODE.load(Ordering::Relaxed) == ASYMMETRIC && membarrier::run() {
            return;
        }
        // Registered but refused: cannot happen once registration succeeded.
        // A full fence here still orders this side.
        fence(Ordering::SeqCst);
    }

    // clippy takes libc::c_long for core::ffi::c_long (Rust 1.64), which
    // newer libc re-exports; the Rust 1.63 build uses Debian's libc 0.2.139,
    // whose c_long is its own type (scripts/check-rust-1.63.sh builds it).
    #[allow(clippy::incompatible_msrv)]
    #[cfg(any(target_os = "linux", target_os = "android"))]
    mod membarrier {
        const QUERY: libc::c_long = 0;
        const PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
        const REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

        fn call(command: libc::c_long) -> libc::c_long {
            // SAFETY: membarrier takes a command and two zero arguments and
            // touches no memory of ours.
            unsafe { libc::syscall(libc::SYS_membarrier, command, 0 as libc::c_long, 0 as libc::c_long) }
        }

        pub fn register() -> bool {
            let supported = call(QUERY);
            supported > 0 && supported & PRIVATE_EXPEDITED != 0 && call(REGISTER_PRIVATE_EXPEDITED) == 0
        }

        pub fn run() -> bool {
            call(PRIVATE_EXPEDITED) == 0
        }
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    mod membarrier {
        pub fn register() -> bool {
            false
        }

        pub fn run() -> bool {
            false
        }
    }
}

/// `fork()` must leave the child able to use the library at once (SPEC §3):
/// the parent takes every heap, with no owner inside, before forking, so no
/// table is caught half-changed; afterwards both processes let go, and in the
/// child the heaps of threads that did not come along become orphans.
#[cfg(unix)]
mod fork {
    use super::{current_heap, fence, heaps, lock, Heap, HEAP_LIST};
    use core::sync::atomic::Ordering;

    /// Registers the handlers; done once, when the library is loaded.
    pub fn register_handlers() {
        // SAFETY: the three handlers are `extern "C" fn()` that never unwind
        // and live as long as the process. If registration fails (ENOMEM at
        // load), the library still works; only fork safety is lost.
        unsafe { libc::pthread_atfork(Some(prepare), Some(in_parent), Some(in_child)) };
    }

    extern "C" fn prepare() {
        HEAP_LIST.acquire();
        for heap in heaps() {
            heap.guest.acquire();
            heap.guest_waiting.store(true, Ordering::Relaxed);
        }
        // One fence for all heaps, then wait for every owner to step out.
        fence::guest_side();
        for heap in heaps() {
            lock::wait_until(|| !(heap.owned.load(Ordering::Relaxed) && heap.owner_busy.load(Ordering::Acquire)));
        }
    }

    fn release_all() {
        for heap in heaps() {
            heap.guest_waiting.store(false, Ordering::Release);
            // SAFETY: `prepare` took every guest lock and the list lock on
            // this thread just before the fork; in the child this thread is
            // its copy.
            unsafe { heap.guest.release() };
        }
        // SAFETY: as above.
        unsafe { HEAP_LIST.release() };
    }

    extern "C" fn in_parent() {
        release_all();
    }

    extern "C" fn in_child() {
        fence::renew_after_fork();
        let owners_fence = !fence::asymmetric();
        let mine = current_heap().map_or(core::ptr::null(), |heap| heap as *const Heap);
        for heap in heaps() {
            if owners_fence {
                // Membarrier is gone in this process: no owner may rely on it.
                heap.owner_fences.store(true, Ordering::Relaxed);
            }
            if !core::ptr::eq(heap, mine) {
                // Its owner thread did not come along.
                heap.owned.store(false, Ordering::Relaxed);
                heap.owner_busy.store(false, Ordering::Relaxed);
            }
        }
        release_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{allocate_child, allocate_root, free_root, tests::my_turn};
    use std::sync::mpsc;

    fn fresh_root() -> usize {
        allocate_root(16).unwrap().addr()
    }

    /// The owner of a heap that guests enter often fences for itself (so
    /// guests skip the membarrier), and stops once they stay away; where
    /// membarrier is missing it fences throughout.
    #[test]
    fn owners_fence_while_guests_come_often() {
        // Other tests free stale addresses; this one's must not be among them.
        let _turn = my_turn();
        let (to_guest, from_owner) = mpsc::channel();
        let (to_owner, from_guest) = mpsc::channel::<()>();
        let owner = std::thread::spawn(move || {
            let root = fresh_root();
            let heap = current_heap().unwrap();
            let always = !fence::asymmetric();
            assert_eq!(heap.owner_fences.load(Ordering::Relaxed), always, "a new owner starts without guests");
            to_guest.send(root).unwrap();
            from_guest.recv().unwrap();
            assert!(heap.owner_fences.load(Ordering::Relaxed), "guests came often");
            // One look that still counts the guests, then one that does not.
            let mut fenced = Vec::new();
            for _ in 0..2 * FENCED_ENTRIES_PER_LOOK {
                let root = fresh_root();
                fenced.push(heap.owner_fences.load(Ordering::Relaxed));
                assert_eq!(free_root(root), Ok(1));
            }
            assert!(fenced[..FENCED_ENTRIES_PER_LOOK as usize].iter().all(|&on| on));
            assert_eq!(heap.owner_fences.load(Ordering::Relaxed), always, "the guests are gone");
            assert_eq!(free_root(root), Ok(1 + GUEST_VISITS_TO_FENCE as usize));
        });
        let root = from_owner.recv().unwrap();
        for _ in 0..GUEST_VISITS_TO_FENCE {
            // A lookup from here enters the owner's heap as a guest.
            assert!(allocate_child(8, root).is_ok());
        }
        to_owner.send(()).unwrap();
        owner.join().unwrap();
    }
}
