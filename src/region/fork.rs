//! `fork` (SPEC §3): the child has one thread, the one that forked, and a
//! copy of every heap. No lock exists in v3, so none is left held; what is
//! left is heaps whose threads did not come along. A `pthread_atfork`
//! child handler (registered at load; it takes no lock and asks nothing of
//! the C allocator) sorts them by what their holders were doing at the fork
//! (`Heap::is_busy`, set for the length of every call, `thread::Call`):
//!
//! - **idle**: the heap is whole, as its holder last left it. If it was
//!   owned by another thread, it gets what that thread's exit would have
//!   given it (`thread::on_thread_exit`): trees other threads killed are
//!   released, guest chunks of dead trees swept, unused pages given back,
//!   and it becomes an orphan, which the child's next new thread adopts,
//!   `stats` catches up and the `leaks` report walks. Its live trees stay
//!   valid and freeable.
//! - **busy**: its holder was half-way through a call (or through
//!   catching an orphan up), and its plain stores may be half done: a
//!   queue, a free list, a page descriptor, a tree's chunk list, the counts.
//!   Nothing written that way is trusted: the heap stays owned by nobody
//!   for the child's life (frozen), so no thread adopts it, the `leaks`
//!   report leaves it out (and says so), and its counts stay as they were.
//!   What stays safe is what other threads may do to a live owner's heap
//!   anyway, with atomics only: validating its trees, freeing them (a kill:
//!   the root's state word, the slot's killed bit, the heap's page stack),
//!   adding guest children to them. Such trees are dead at once, but their
//!   memory is not reused in the child.
//!
//! Kills that other threads had under way at the fork are finished for
//! every idle heap (`remote::recover_after_fork`).
//!
//! The handler's cost is what an exit costs for each idle heap of a thread
//! that did not come along, plus a look at each page descriptor of the
//! idle heaps' segments.

#[cfg(unix)]
use super::{remote, thread};

/// Registers the child handler; when the library is loaded.
#[cfg(unix)]
pub fn init() {
    // SAFETY: an `extern "C" fn()` that never unwinds, registered with our
    // DSO handle, so glibc forgets it when we are unloaded. Refused only
    // for want of memory at load: children then keep other threads' heaps
    // frozen, as if each was busy.
    unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
}

#[cfg(not(unix))]
pub fn init() {}

#[cfg(unix)]
extern "C" fn in_child() {
    catch_up_after_fork();
}

/// The child handler's work; the caller is the only thread of a child
/// just forked.
#[cfg(unix)]
pub(super) fn catch_up_after_fork() {
    let mine = thread::current();
    for heap in thread::heaps() {
        if heap.is_busy() {
            continue; // frozen (see above)
        }
        let is_mine = mine.map_or(false, |mine| core::ptr::eq(mine, heap));
        let orphan = !heap.is_owned();
        if orphan {
            if !heap.try_claim() {
                continue; // no other thread exists: never so
            }
        } else {
            // Ours, or owned by a thread that did not come along.
            heap.enter();
        }
        remote::recover_after_fork(heap);
        if is_mine {
            heap.leave();
            continue;
        }
        thread::catch_up(heap);
        if !orphan {
            heap.trim();
        }
        heap.give_up();
    }
}
