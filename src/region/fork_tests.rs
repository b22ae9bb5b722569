//! A forked child and the heaps of the threads that did not come along
//! (`fork`): an idle one becomes an orphan whose trees the child can free,
//! count, report and reuse the memory of; one whose thread was parked in
//! the middle of a call (`park`) stays frozen, its trees still freeable.
//!
//! The child runs its checks and leaves with `_exit`, never returning into
//! the test harness (whose other threads it does not have); a failure is
//! written to stderr with `write` and the exit status says which.

use super::heap::Heap;
use super::*;
use crate::scode::Error;
use core::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Far longer than any call here takes, even on loaded cores.
const PATIENCE: Duration = Duration::from_secs(30);

fn root(size: u32) -> usize {
    allocate_root(size).unwrap().addr()
}

fn child(parent: usize, size: u32) -> usize {
    allocate_child(parent, size).unwrap().addr()
}

fn my_heap() -> usize {
    thread::current().unwrap() as *const Heap as usize
}

/// Runs `checks` in a child forked from here; `Err` with what it said if
/// it failed, crashed, or did not finish within `PATIENCE`.
fn in_a_child(checks: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    // SAFETY: the child calls only the library, `std::thread` and `write`
    // (glibc makes `malloc` usable in a child), and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(checks))
            .unwrap_or_else(|_| Err("the child panicked".into()));
        let status = match outcome {
            Ok(()) => 0,
            Err(what) => {
                let line = format!("fork child: {what}\n");
                // SAFETY: writes a buffer of ours to stderr.
                unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
                1
            }
        };
        // SAFETY: ends the child without running anything of the parent's.
        unsafe { libc::_exit(status) };
    }
    let deadline = Instant::now() + PATIENCE;
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child without blocking.
        let done = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if done == pid {
            break;
        }
        if Instant::now() > deadline {
            // SAFETY: our own child, hung.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            unsafe { libc::waitpid(pid, &mut status, 0) };
            return Err("the child hung".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err(format!("the child failed (wait status {status:#x}; its stderr says why)"))
    }
}

macro_rules! check {
    ($cond:expr, $($what:tt)+) => {
        if !$cond {
            return Err(format!($($what)+));
        }
    };
}

/// Roots of 1,000 bytes the idle thread makes: more than half a segment,
/// so that making them again fits in its segments only if theirs come back.
const MANY: usize = 3000;

#[test]
fn a_forked_child_adopts_the_idle_heaps_left_behind_and_freezes_the_busy_ones() {
    // An idle thread: many roots and one tree it keeps, then it waits.
    let (a_made, a_ready) = mpsc::channel();
    let (a_done, a_wait) = mpsc::channel::<()>();
    let a = std::thread::spawn(move || {
        let roots: Vec<usize> = (0..MANY).map(|_| root(1000)).collect();
        let kept = root(100);
        child(kept, 20);
        // The heap may be an orphan adopted with other tests' trees.
        let made = thread::current().unwrap().counts.snapshot();
        a_made.send((my_heap(), roots.clone(), kept, made)).unwrap();
        let _ = a_wait.recv();
        // Freed here, by their owner: a tree left live, or killed from the
        // test's thread into an orphan, would be in another test's counts
        // and pages once its thread adopts the heap.
        let untouched = roots.iter().all(|&each| free_root(each) == Ok(1));
        untouched && free_root(kept) == Ok(2)
    });
    // A busy thread: parked half-way through freeing a tree.
    let (b_made, b_ready) = mpsc::channel();
    let (parked_tx, parked) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let b = std::thread::spawn(move || {
        let busy = root(64);
        child(busy, 8);
        let other = root(64);
        b_made.send((my_heap(), other)).unwrap();
        park::arm(parked_tx, release_rx);
        free_root(busy) == Ok(2) && free_root(other) == Ok(1)
    });
    let (heap_a, roots, kept, made) = a_ready.recv_timeout(PATIENCE).unwrap();
    let (heap_b, other) = b_ready.recv_timeout(PATIENCE).unwrap();
    parked.recv_timeout(PATIENCE).expect("the busy thread parked mid-call");
    // SAFETY: heaps are never freed.
    let (heap_a, heap_b) = unsafe { (&*(heap_a as *const Heap), &*(heap_b as *const Heap)) };

    let outcome = in_a_child(move || {
        check!(!heap_a.is_owned(), "the idle heap of a thread left behind is not an orphan");
        check!(heap_b.is_owned() && heap_b.is_busy(), "the busy heap is not frozen");
        check!(!heap_b.try_claim(), "the busy heap can be claimed");
        for &each in &roots {
            check!(free_root(each) == Ok(1), "a root of the idle heap was not freed");
        }
        check!(free_root(other) == Ok(1), "a root of the busy heap was not freed");
        check!(allocate_child(other, 8) == Err(Error::InvalidParameter), "the busy heap's freed root lives");
        stats();
        // Exactly what the child freed, or more if another test freed a
        // tree of the heap's just before the fork.
        let counts = heap_a.counts.snapshot();
        let (roots_gone, bytes_gone) = (made.live_roots - counts.live_roots, made.live_bytes - counts.live_bytes);
        check!(
            roots_gone >= MANY as u64 && bytes_gone >= MANY as u64 * 1000 && counts.live_children >= 1,
            "the orphan counts {counts:?}, after {made:?} and {MANY} roots freed"
        );
        let mut seen = Vec::new();
        let left_out = for_each_root(|addr, size, bytes| {
            if addr == kept || addr == other || roots.contains(&addr) {
                seen.push((addr, size, bytes));
            }
        });
        check!(seen == [(kept, 100, 120)], "the leaks walk saw {seen:?}");
        check!(left_out >= 1, "the leaks walk did not say it left the busy heap out");
        // A new thread adopts the orphan and makes as many roots again, in
        // the memory the freed ones held.
        let orphan = heap_a as *const Heap as usize;
        let reused = std::thread::spawn(move || {
            // SAFETY: heaps are never freed.
            let heap_a = unsafe { &*(orphan as *const Heap) };
            if !thread::adopt(heap_a) {
                return Err("the orphan could not be adopted".to_string());
            }
            let before = heap_a.segments().count();
            let again: Vec<usize> = (0..MANY).map(|_| root(1000)).collect();
            let after = heap_a.segments().count();
            check!(after == before, "{} segments more for roots whose memory was freed", after - before);
            for each in again {
                check!(free_root(each) == Ok(1), "a new root was not freed");
            }
            Ok(())
        })
        .join()
        .unwrap_or_else(|_| Err("the adopting thread panicked".into()));
        reused?;
        check!(free_root(kept) == Ok(1), "the kept tree was not freed");
        Ok(())
    });

    release.send(()).unwrap();
    a_done.send(()).unwrap();
    assert!(b.join().unwrap(), "the busy thread's frees, after the fork");
    assert!(a.join().unwrap(), "the parent's trees are untouched by the child");
    outcome.unwrap();
}

/// A kill another thread had under way at the fork, stopped after its
/// swap, its bit and its page's flag but before the push (and with its
/// segment's count of kills under way still up): the child handler
/// finishes it. Replayed in a child, which has no other thread, on an
/// orphan made there: those steps by hand, then the handler's work again.
#[test]
fn a_forked_child_finishes_the_kills_left_half_done() {
    let outcome = in_a_child(|| {
        let made = std::thread::spawn(|| {
            let r = root(64);
            child(r, 100);
            (my_heap(), r)
        })
        .join();
        let (heap, r) = made.map_err(|_| "the thread making the tree panicked".to_string())?;
        // SAFETY: heaps are never freed.
        let heap = unsafe { &*(heap as *const Heap) };
        let found = match validate::any_slot(r).filter(|f| super::root::kind(f.state) == super::root::LIVE) {
            Some(found) => found,
            None => return Err("the orphan's root is not live".into()),
        };
        let page = found.segment.page(found.page);
        let before = heap.counts.snapshot();
        found.segment.kill_under_way(true);
        check!(found.root.kill(found.state), "the swap failed");
        found.segment.mark_killed(found.page, found.slot);
        page.killed_pending.store(true, Ordering::SeqCst);
        fork::catch_up_after_fork();
        let after = heap.counts.snapshot();
        check!(!found.root.is_killed(), "the half-killed root was not released");
        check!(
            (before.live_roots - after.live_roots, before.live_children - after.live_children) == (1, 1),
            "its tree did not leave the counts: {before:?} then {after:?}"
        );
        check!(found.segment.no_kill_under_way(), "the stopped kill still counts as under way");
        check!(!page.killed_pending.load(Ordering::SeqCst), "its page is still flagged");
        Ok(())
    });
    outcome.unwrap();
}

/// A thread in one of the exports' leaf fast paths (`quick_child`,
/// `quick_free`), parked in the cold call it hands its rest to: its heap is
/// busy, and a child forked then freezes it, as for any other call. Once
/// that rest is done, the heap is idle.
#[test]
fn the_leaf_fast_paths_keep_the_heap_busy_until_their_rest_is_done() {
    /// `rest` takes a tree of the thread's, with `children` children, down
    /// a fast path to a cold call, where `park` waits.
    fn parked_in(children: usize, rest: fn(usize) -> bool) {
        let (made, ready) = mpsc::channel();
        let (parked_tx, parked) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        let busy = std::thread::spawn(move || {
            let tree = root(64);
            for _ in 0..children {
                child(tree, 8);
            }
            made.send(my_heap()).unwrap();
            park::arm(parked_tx, release_rx);
            let idle_after = rest(tree) && !thread::current().unwrap().is_busy();
            // The tree `Grow` left live (no one else's, so that no test
            // adopts a heap holding it); `Rest` freed its own already.
            let _ = free_root(tree);
            idle_after
        });
        let heap = ready.recv_timeout(PATIENCE).unwrap();
        parked.recv_timeout(PATIENCE).expect("the thread parked mid-call");
        // SAFETY: heaps are never freed.
        let heap = unsafe { &*(heap as *const Heap) };
        let outcome = in_a_child(move || {
            check!(heap.is_owned() && heap.is_busy(), "the heap of a thread in a fast path is not frozen");
            check!(!heap.try_claim(), "the heap of a thread in a fast path can be claimed");
            Ok(())
        });
        release.send(()).unwrap();
        assert!(busy.join().unwrap(), "the fast path failed, or left the heap busy");
        outcome.unwrap();
    }

    // The tree has no chunk yet: its first child needs one (`Grow`).
    parked_in(0, |tree| match quick_child(tree, 8) {
        Quick::Grow(grow) => grow.child(8).is_ok(),
        _ => false,
    });
    // A tree with a child is freed in full by `Rest::finish`.
    parked_in(1, |tree| match quick_free(tree) {
        QuickFree::Rest(rest @ Rest::Tree(..)) => {
            rest.finish();
            true
        }
        _ => false,
    });
}

/// A thread reallocating another thread's root (`alloc::move_root`),
/// parked with its new face made and the root not yet claimed: its heap is
/// busy, and a child forked then freezes it, as for any other call; the
/// owner's heap, idle, is not. Once the move is done, the heap is idle.
#[test]
fn a_thread_moving_another_threads_root_keeps_its_heap_busy() {
    let (made, ready) = mpsc::channel();
    let (done, wait) = mpsc::channel::<()>();
    let owner = std::thread::spawn(move || {
        let tree = root(64);
        child(tree, 8);
        made.send((my_heap(), tree)).unwrap();
        // Idle until the tree is gone: no other test adopts a heap holding it.
        let _ = wait.recv_timeout(PATIENCE);
    });
    let (owner_heap, tree) = ready.recv_timeout(PATIENCE).unwrap();
    let (mover_made, mover_ready) = mpsc::channel();
    let (parked_tx, parked) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let mover = std::thread::spawn(move || {
        let _ = free_root(root(8)); // its heap, made before the move
        mover_made.send(my_heap()).unwrap();
        park::arm(parked_tx, release_rx);
        let face = reallocate(tree, 100).map(Block::addr);
        let idle_after = !thread::current().unwrap().is_busy();
        let freed = face.map(free_root);
        (face.is_ok() && idle_after, freed)
    });
    let mover_heap = mover_ready.recv_timeout(PATIENCE).unwrap();
    parked.recv_timeout(PATIENCE).expect("the mover parked mid-move");
    // SAFETY: heaps are never freed.
    let (owner_heap, mover_heap) = unsafe { (&*(owner_heap as *const Heap), &*(mover_heap as *const Heap)) };
    let outcome = in_a_child(move || {
        check!(mover_heap.is_owned() && mover_heap.is_busy(), "the mover's heap is not frozen");
        check!(!mover_heap.try_claim(), "the mover's heap can be claimed");
        check!(!owner_heap.is_busy(), "the owner's heap, idle, is taken for busy");
        Ok(())
    });
    release.send(()).unwrap();
    let (moved_and_idle, freed) = mover.join().unwrap();
    assert!(moved_and_idle, "the move failed, or left the heap busy");
    assert_eq!(freed, Ok(Ok(1)), "the face, freed, takes the tree along");
    done.send(()).unwrap();
    owner.join().unwrap();
    outcome.unwrap();
}

/// The fast paths that need no cold call leave the heap idle when done, as
/// `allocate_root` does (it marks it idle itself too), refused or not.
#[test]
fn the_leaf_fast_paths_leave_the_heap_idle() {
    let idle = std::thread::spawn(|| {
        let tree = root(64);
        let heap = thread::current().unwrap();
        if heap.is_busy() {
            return false;
        }
        crate::fault::fail_allocation_after(Some(0));
        let refused = allocate_root(u32::MAX) == Err(Error::NoMemory) && !heap.is_busy();
        crate::fault::fail_allocation_after(None);
        if !refused {
            return false;
        }
        child(tree, 8);
        let made = matches!(quick_child(tree, 8), Quick::Made(_)) && !heap.is_busy();
        let lone = root(64);
        let done = matches!(quick_free(lone), QuickFree::Done) && !heap.is_busy();
        // Enough roots to fill a page of their class: freeing one there
        // puts the page back on its queue (`Rest::Requeue`).
        let roots: Vec<usize> = (0..2 * PAGE_SIZE / 64).map(|_| root(48)).collect();
        let mut requeued = 0;
        for each in roots {
            match quick_free(each) {
                QuickFree::Done => {}
                QuickFree::Rest(rest @ Rest::Requeue(..)) => {
                    rest.finish();
                    requeued += 1;
                }
                _ => return false,
            }
            if heap.is_busy() {
                return false;
            }
        }
        made && done && requeued > 0 && free_root(tree) == Ok(3)
    });
    assert!(idle.join().unwrap(), "a fast path failed, or left the heap busy");
}
