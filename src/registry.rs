//! Which blocks are live, and the chains that tie children to their roots.
//!
//! Every question about a client's pointer is answered here, from the
//! library's own tables, before any memory at that pointer is touched.
//!
//! Shape: [`SHARD_COUNT`] shards picked by a hash of the block address, each a
//! spin lock over a [`PtrTable`]. A root and its children form one chain
//! through the `next` field of their headers; `MAPIAllocateMore(parent)`
//! splices the new block in right after `parent`, so it costs O(1) whether
//! `parent` is the root or one of its children, and freeing the root walks
//! the chain once.
//!
//! Locking rule: the lock of the shard that holds a block's address also
//! guards that block's `next` field. A thread holds at most one shard lock,
//! except [`insert_child`], which takes two in increasing index order, and
//! the fork handlers, which take all of them in the same order; so no two
//! threads can wait on each other.

use crate::block::Block;
use crate::lock::{SpinGuard, SpinLock};
use crate::scode::Error;
use crate::table::{Kind, PtrTable};

const SHARD_BITS: u32 = 6;
const SHARD_COUNT: usize = 1 << SHARD_BITS;

/// One cache line each, so threads working in different shards do not
/// contend on the same line.
#[repr(align(64))]
struct Shard(SpinLock<PtrTable>);

const EMPTY_SHARD: Shard = Shard(SpinLock::new(PtrTable::new()));
static SHARDS: [Shard; SHARD_COUNT] = [EMPTY_SHARD; SHARD_COUNT];

fn shard_index(addr: usize) -> usize {
    // A different multiplier from the table's own hash, so that the addresses
    // sharing a shard still spread over that shard's slots.
    ((addr as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93) >> (64 - SHARD_BITS)) as usize
}

fn shard(index: usize) -> &'static SpinLock<PtrTable> {
    &SHARDS[index & (SHARD_COUNT - 1)].0
}

/// Why `MAPIFreeBuffer` left a pointer alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotARoot {
    /// A live child: it is freed with its root.
    Child,
    /// Not a live block of this library: already freed, interior or foreign.
    Unknown,
}

/// Records a fresh block as a root.
pub fn insert_root(block: Block) -> Result<(), Error> {
    fork::ensure_handlers();
    shard(shard_index(block.addr())).lock().insert(block.addr(), Kind::Root)
}

/// Whether `addr` is a live root or child right now. A later call must
/// check again under the lock: a concurrent free may end it at any moment.
pub fn is_live(addr: usize) -> bool {
    fork::ensure_handlers();
    shard(shard_index(addr)).lock().get(addr).is_some()
}

/// Records a fresh block as a child, chained right after `parent`, if
/// `parent` is a live root or child. On `Err` nothing has changed.
pub fn insert_child(parent: usize, child: Block) -> Result<(), Error> {
    fork::ensure_handlers();
    let parent_shard = shard_index(parent);
    let child_shard = shard_index(child.addr());
    let mut locked = LockedPair::lock(parent_shard, child_shard);
    if locked.table(parent_shard).get(parent).is_none() {
        return Err(Error::InvalidParameter);
    }
    locked.table(child_shard).insert(child.addr(), Kind::Child)?;
    // SAFETY: `parent` is live (the registry just said so) and stays live,
    // with its `next` unchanged, while its shard lock is held; `child` is
    // fresh, and its shard lock is held too.
    unsafe {
        let parent = Block::from_addr(parent);
        child.set_next(parent.next());
        parent.set_next(child.addr());
    }
    Ok(())
}

/// Removes the root at `addr` from the registry. Its children stay recorded
/// until the returned [`Chain`] reaches them; the caller must drain it.
pub fn remove_root(addr: usize) -> Result<Chain, NotARoot> {
    fork::ensure_handlers();
    let mut table = shard(shard_index(addr)).lock();
    match table.remove_if(addr, Kind::Root) {
        Ok(()) => {
            // SAFETY: `addr` was a live root until this moment; its memory is
            // still ours, and with its shard lock held (and it now unknown to
            // `insert_child`) its `next` can no longer change.
            let root = unsafe { Block::from_addr(addr) };
            let first_child = unsafe { root.next() };
            Ok(Chain { root: Some(root), next_child: first_child })
        }
        Err(Some(Kind::Child)) => Err(NotARoot::Child),
        Err(_) => Err(NotARoot::Unknown),
    }
}

/// The blocks of a removed root, the root first. Each block it yields has
/// left the registry: the caller owns it and must release it.
pub struct Chain {
    root: Option<Block>,
    /// The next child to yield, still recorded in the registry; 0 at the end.
    next_child: usize,
}

impl Iterator for Chain {
    type Item = Block;

    fn next(&mut self) -> Option<Block> {
        if let Some(root) = self.root.take() {
            return Some(root);
        }
        let addr = self.next_child;
        if addr == 0 {
            return None;
        }
        let mut table = shard(shard_index(addr)).lock();
        if table.remove(addr) != Some(Kind::Child) {
            // Every chained block is a recorded child, so this cannot happen;
            // if it ever did, stopping leaks memory where going on could free
            // someone else's.
            self.next_child = 0;
            return None;
        }
        // SAFETY: `addr` was a live child until we removed it under its shard
        // lock, which still guards its `next`; nothing else can reach it now.
        let child = unsafe { Block::from_addr(addr) };
        self.next_child = unsafe { child.next() };
        Some(child)
    }
}

/// The locks of one or two shards, taken in increasing index order.
struct LockedPair {
    low_index: usize,
    low: SpinGuard<'static, PtrTable>,
    high: Option<SpinGuard<'static, PtrTable>>,
}

impl LockedPair {
    fn lock(a: usize, b: usize) -> LockedPair {
        let (low_index, high_index) = if a <= b { (a, b) } else { (b, a) };
        let low = shard(low_index).lock();
        let high = if high_index != low_index { Some(shard(high_index).lock()) } else { None };
        LockedPair { low_index, low, high }
    }

    /// The table of shard `index`, which is one of the two locked.
    fn table(&mut self, index: usize) -> &mut PtrTable {
        match &mut self.high {
            Some(high) if index != self.low_index => high,
            _ => &mut self.low,
        }
    }
}

/// `fork()` must leave the child able to use the library at once (SPEC §3):
/// the parent takes every shard lock before forking, so no table is caught
/// half-changed, and both processes release them afterwards.
#[cfg(unix)]
mod fork {
    use super::SHARDS;
    use core::sync::atomic::{AtomicU8, Ordering};

    const UNREGISTERED: u8 = 0;
    const REGISTERING: u8 = 1;
    const REGISTERED: u8 = 2;
    static STATE: AtomicU8 = AtomicU8::new(UNREGISTERED);

    /// Registers the handlers on first use. Threads that find another one
    /// registering go on without waiting: a thread cannot be left blocked on
    /// this in a forked child.
    #[inline]
    pub fn ensure_handlers() {
        if STATE.load(Ordering::Acquire) == REGISTERED {
            return;
        }
        if STATE
            .compare_exchange(UNREGISTERED, REGISTERING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // SAFETY: the three handlers are `extern "C" fn()` that never
            // unwind and live as long as the process.
            let status = unsafe { libc::pthread_atfork(Some(prepare), Some(release_all), Some(release_all)) };
            // On failure (ENOMEM) try again on a later call.
            STATE.store(if status == 0 { REGISTERED } else { UNREGISTERED }, Ordering::Release);
        }
    }

    /// Registers the handlers when the library is loaded, before any thread
    /// can be inside it, so the first call cannot race a `fork()`.
    /// `ensure_handlers` covers links where no constructor runs (a Rust test
    /// binary that leaves this object out).
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd", target_os = "netbsd"))]
    #[used]
    #[link_section = ".init_array"]
    static REGISTER_AT_LOAD: extern "C" fn() = register_at_load;

    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd", target_os = "netbsd"))]
    extern "C" fn register_at_load() {
        ensure_handlers();
    }

    extern "C" fn prepare() {
        for shard in SHARDS.iter() {
            shard.0.acquire();
        }
    }

    extern "C" fn release_all() {
        for shard in SHARDS.iter() {
            // SAFETY: `prepare` took every lock on this thread just before
            // the fork; in the child this thread is its copy.
            unsafe { shard.0.release() };
        }
    }
}

#[cfg(not(unix))]
mod fork {
    /// No `fork` to prepare for.
    #[inline]
    pub fn ensure_handlers() {}
}
