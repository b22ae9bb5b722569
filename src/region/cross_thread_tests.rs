//! Trees used from threads other than their owner's: frees (`remote`),
//! children and reallocations (`guest`), racing frees, and SPEC §3's rule
//! that no call waits on an unrelated thread, with the owner parked in the
//! middle of a call by the test hook (`park`). Channels with timeouts, no
//! sleeps: a call that waited on the parked owner fails the test instead of
//! hanging it.

use super::*;
use super::{free, validate};
use crate::registry::{Counts, NotARoot};
use crate::scode::Error;
use std::collections::HashSet;
use std::sync::mpsc;
use std::time::Duration;

/// Far longer than any call here takes, even on loaded cores.
const PATIENCE: Duration = Duration::from_secs(30);

fn counts() -> Counts {
    thread::current().map(|heap| heap.counts.snapshot()).unwrap_or_default()
}

/// The share of the heap at `heap` in `mapi32_stats`, read from any thread.
fn share_of(heap: usize) -> Counts {
    // SAFETY: `heap` is a heap's address, and heaps are never freed.
    super::counts::share(unsafe { &*(heap as *const super::heap::Heap) })
}

/// The calling thread's heap, as an address another thread may use.
fn own_heap() -> usize {
    thread::heap().unwrap() as *const super::heap::Heap as usize
}

/// The live roots, children and bytes of `counts`.
fn live(counts: Counts) -> (u64, u64, u64) {
    (counts.live_roots, counts.live_children, counts.live_bytes)
}

fn root(size: u32) -> usize {
    allocate_root(size).unwrap().addr()
}

fn child(parent: usize, size: u32) -> usize {
    allocate_child(parent, size).unwrap().addr()
}

fn fill(addr: usize, size: usize, byte: u8) {
    // SAFETY: a live block of at least `size` bytes.
    unsafe { core::ptr::write_bytes(addr as *mut u8, byte, size) }
}

fn holds(addr: usize, size: usize, byte: u8) -> bool {
    // SAFETY: as in `fill`.
    unsafe { core::slice::from_raw_parts(addr as *const u8, size) }.iter().all(|&b| b == byte)
}

/// `work`'s result from a thread of its own, which must finish within
/// `PATIENCE`.
fn on_other_thread<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(work());
    });
    result.recv_timeout(PATIENCE).expect("the other thread's calls completed")
}

#[test]
fn a_root_freed_on_another_thread_is_dead_everywhere_and_comes_back_to_its_owner() {
    let base = counts();
    let trees: Vec<(usize, usize, u32)> = (0..1000u32)
        .map(|n| {
            let r = root(n % 300);
            (r, child(r, 40), n % 300)
        })
        .collect();
    let made = counts();
    let shared = trees.clone();
    let (freed, freed_again, dead) = on_other_thread(move || {
        let freed = shared.iter().filter(|t| free_root(t.0) == Ok(1)).count();
        let again = shared.iter().filter(|t| free_root(t.0).is_ok()).count();
        let dead = shared
            .iter()
            .filter(|t| {
                allocate_child(t.0, 8) == Err(Error::InvalidParameter)
                    && allocate_child(t.1, 8) == Err(Error::InvalidParameter)
                    && reallocate(t.1, 8) == Err(Error::InvalidParameter)
                    && free_root(t.1) == Err(NotARoot::Unknown)
            })
            .count();
        (freed, again, dead)
    });
    assert_eq!(freed, trees.len(), "each root was another thread's and live");
    assert_eq!(freed_again, 0, "a second free does nothing");
    assert_eq!(dead, trees.len(), "neither root nor child takes a child after the free");
    // The owner has not called since: the trees are still in its own
    // counters, though not in its share of `mapi32_stats` (see
    // `a_tree_freed_on_another_thread_leaves_the_counts_when_its_free_returns`),
    // and dead to it as well.
    assert_eq!(counts().live_roots, made.live_roots);
    for &(r, c, _) in &trees {
        assert_eq!(allocate_child(r, 8), Err(Error::InvalidParameter));
        assert_eq!(allocate_child(c, 8), Err(Error::InvalidParameter));
    }
    // Its next allocation releases them: counts exact, slots reused.
    let old: HashSet<usize> = trees.iter().map(|t| t.0).collect();
    let again: Vec<usize> = trees.iter().map(|t| root(t.2)).collect();
    let after = counts();
    assert_eq!(after.live_roots - base.live_roots, trees.len() as u64);
    assert_eq!(after.live_children, base.live_children, "the children went with their roots");
    assert!(again.iter().all(|r| old.contains(r)), "the killed roots' slots came back to their owner");
    for r in again {
        assert_eq!(free_root(r), Ok(1));
    }
}

#[test]
fn racing_double_frees_release_each_root_once() {
    const ROOTS: usize = 20_000;
    let base = counts();
    let roots: Vec<usize> = (0..ROOTS).map(|n| root(n as u32 % 100)).collect();
    for &r in roots.iter().step_by(3) {
        child(r, 24);
    }
    let shared = roots.clone();
    let (start, go) = mpsc::channel::<()>();
    let other = std::thread::spawn(move || {
        let _ = go.recv();
        shared.iter().rev().filter(|&&r| free_root(r).is_ok()).count()
    });
    start.send(()).unwrap();
    let mine = roots.iter().filter(|&&r| free_root(r).is_ok()).count();
    let theirs = other.join().unwrap();
    assert!(mine + theirs >= ROOTS, "every root freed by one of the two: {mine} + {theirs}");
    let probe = root(8); // releases what the other thread killed
    let after = counts();
    assert_eq!((after.live_roots, after.live_children), (base.live_roots + 1, base.live_children));
    assert_eq!(after.live_bytes, base.live_bytes + 8);
    // A slot released twice would be on its free list twice.
    let again: Vec<usize> = (0..ROOTS).map(|n| root(n as u32 % 100)).collect();
    assert_eq!(again.iter().collect::<HashSet<_>>().len(), ROOTS, "each slot handed out once");
    for r in again.into_iter().chain([probe]) {
        assert_eq!(free_root(r), Ok(1));
    }
}

#[test]
fn children_made_on_another_threads_tree_live_and_die_with_it() {
    const CHILDREN: usize = 3000;
    let r = root(32);
    let c = child(r, 16);
    let (to_owner, from_guest) = mpsc::channel();
    let (to_guest, from_owner) = mpsc::channel::<()>();
    let guest = std::thread::spawn(move || {
        let (heap, base) = (own_heap(), counts());
        let size = |i: usize| 8 + (i % 57) as u32;
        let mut kids: Vec<usize> = Vec::new();
        for i in 0..CHILDREN {
            let parent = match i % 4 {
                3 => kids[i / 2],
                2 => c,
                _ => r,
            };
            let kid = child(parent, size(i));
            fill(kid, size(i) as usize, i as u8);
            kids.push(kid);
        }
        let intact = kids.iter().enumerate().all(|(i, &k)| holds(k, size(i) as usize, i as u8));
        let distinct = kids.iter().collect::<HashSet<_>>().len() == CHILDREN;
        let counted = counts().live_children - base.live_children == CHILDREN as u64;
        let _ = to_owner.send((kids.clone(), intact && distinct && counted, heap, base));
        from_owner.recv_timeout(PATIENCE).expect("the owner freed the root");
        let dead = kids.iter().all(|&k| allocate_child(k, 8) == Err(Error::InvalidParameter));
        let unfreeable = kids.iter().all(|&k| free_root(k) == Err(NotARoot::Unknown));
        let before_sweep = counts().live_children - base.live_children;
        let _ = stats(); // sweeps the guest chunks of dead trees
        let after = counts();
        (dead && unfreeable, before_sweep, after.live_children - base.live_children, after.live_bytes - base.live_bytes)
    });
    let (kids, sound, heap, base) = from_guest.recv_timeout(PATIENCE).expect("the guest made its children");
    assert!(sound, "the guest's children are distinct, intact and counted");
    // The owner sees them as children of its tree, and grows them.
    assert_eq!(free_root(kids[5]), Err(NotARoot::Child));
    let grandchild = child(kids[5], 8);
    assert_eq!(free_root(r), Ok(3), "the root, its own child and the owner's grandchild");
    assert_eq!(allocate_child(grandchild, 8), Err(Error::InvalidParameter));
    // The guest has not called since: its children left its share of the
    // counts with their tree all the same.
    assert_eq!(live(share_of(heap)), live(base), "the guests left the counts with their tree");
    to_guest.send(()).unwrap();
    let (dead, before_sweep, after_sweep, bytes) = guest.join().unwrap();
    assert!(dead, "the guest's children died with their tree");
    assert_eq!(before_sweep, CHILDREN as u64, "in their maker's own counters until it sweeps");
    assert_eq!((after_sweep, bytes), (0, 0), "swept when the maker read the counts");
}

#[test]
fn reallocating_another_threads_child_copies_it_into_the_same_tree() {
    let r = root(32);
    let small = child(r, 40);
    let big = child(r, 100_000);
    fill(small, 40, 7);
    fill(big, 100_000, 9);
    let (moved_small, moved_big, refused_root) = on_other_thread(move || {
        let a = reallocate(small, 200).unwrap().addr();
        let b = reallocate(big, 100_016).unwrap().addr();
        ((a, holds(a, 40, 7)), (b, holds(b, 100_000, 9)), reallocate(r, 64) == Err(Error::InvalidParameter))
    });
    assert!(moved_small.1 && moved_big.1, "the old bytes were copied");
    assert!(refused_root, "another thread's root is not moved (not built)");
    assert_eq!(free_root(moved_small.0), Err(NotARoot::Child), "a child of this thread's tree");
    child(moved_big.0, 8);
    assert!(free_root(r).is_ok());
    assert_eq!(allocate_child(moved_small.0, 8), Err(Error::InvalidParameter), "died with the tree");
}

/// Parks a thread that owns two trees in the middle of `call` on one of
/// them, then, from another thread: frees the other tree, refuses foreign
/// and freed pointers, and adds children to both trees. Each must complete
/// while the owner stays parked.
fn parked_owner_keeps_no_one_waiting(call: fn(usize) -> bool) {
    let (parked_tx, parked) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let (trees_tx, trees) = mpsc::channel();
    let owner = std::thread::spawn(move || {
        let busy = root(64);
        child(busy, 16);
        let other = root(64);
        let other_child = child(other, 16);
        let base = counts();
        trees_tx.send((busy, other, other_child)).unwrap();
        super::park::arm(parked_tx, release_rx);
        let done = call(busy);
        let probe = root(8); // releases `other`, killed meanwhile (one more root)
        let after = counts();
        assert_eq!(free_root(probe), Ok(1));
        (done, base.live_roots + 1 - after.live_roots)
    });
    let (busy, other, other_child) = trees.recv_timeout(PATIENCE).unwrap();
    parked.recv_timeout(PATIENCE).expect("the owner parked in its call");
    let local = 0u128;
    let foreign = &local as *const u128 as usize;
    let outcomes = on_other_thread(move || {
        let onto_busy = allocate_child(busy, 24).is_ok();
        let onto_other = allocate_child(other_child, 24).is_ok();
        let freed = free_root(other) == Ok(1);
        let refused = free_root(foreign) == Err(NotARoot::Unknown)
            && allocate_child(foreign, 8) == Err(Error::InvalidParameter)
            && allocate_child(other_child, 8) == Err(Error::InvalidParameter)
            && free_root(other).is_err();
        [onto_busy, onto_other, freed, refused]
    });
    assert_eq!(outcomes, [true; 4], "children on both trees, the free, the refusals");
    release.send(()).unwrap();
    let (done, released) = owner.join().unwrap();
    assert!(done, "the parked call completed once released");
    assert_eq!(released, 2, "`busy` and `other` left the counts");
}

#[test]
fn an_owner_parked_while_growing_a_tree_keeps_no_one_waiting() {
    // The call frees the tree as well, so both trees leave the counts.
    parked_owner_keeps_no_one_waiting(|busy| allocate_child(busy, 2000).is_ok() && free_root(busy).is_ok());
}

#[test]
fn an_owner_parked_while_freeing_a_tree_keeps_no_one_waiting() {
    parked_owner_keeps_no_one_waiting(|busy| free_root(busy) == Ok(2));
}

/// The owner's free is a load and a store; a kill can land between its
/// validation and its store (SPEC §3's racing double free). Replayed step by
/// step: the owner validates, another thread kills, the owner ends and
/// releases the root. The kill's mark must then find the slot not killed,
/// and the slot must go back once.
#[test]
fn a_kill_landing_inside_the_owners_free_is_released_once() {
    let heap = thread::heap().unwrap();
    let base = counts();
    let r = root(40);
    let (page, tree) = validate::root(heap, r).unwrap();
    assert!(on_other_thread(move || free_root(r) == Ok(1)), "the kill wins its swap");
    assert!(!tree.is_live());
    free::free_root_alone(heap, page, tree); // the owner's store and release, validated before
    let share = share_of(own_heap());
    assert_eq!(live(share), live(base), "the kill's stale mark takes nothing off the counts");
    let a = root(40); // drains the kill's mark
    let b = root(40);
    assert_ne!(a, b, "the slot was released once, so it is handed out once");
    let after = counts();
    assert_eq!(after.live_roots, base.live_roots + 2);
    assert_eq!(after.live_bytes, base.live_bytes + 80);
    for addr in [a, b] {
        assert_eq!(free_root(addr), Ok(1));
    }
}

/// A kill of a root whose slot the owner freed and reused meanwhile expects
/// the old life's state word, and fails: the new root lives on.
#[test]
fn a_kill_of_a_stale_life_does_nothing() {
    let heap = thread::heap().unwrap();
    let r = root(40);
    let (_, tree) = validate::root(heap, r).unwrap();
    let stale = tree.state();
    assert_eq!(free_root(r), Ok(1));
    assert_eq!(root(40), r, "the slot, reused");
    assert!(!tree.kill(stale), "the old life's word no longer matches");
    assert!(tree.is_live());
    assert_eq!(free_root(r), Ok(1));
}

/// SPEC §4's counts let a client's tests assert that everything was freed:
/// a tree another thread frees must leave them when that free returns, not
/// at its owner's next call. The owner here makes trees of every shape
/// (no child, children in one chunk and in several, a child in a chunk of
/// its own) and then makes no call while another thread frees them.
#[test]
fn a_tree_freed_on_another_thread_leaves_the_counts_when_its_free_returns() {
    let (trees_tx, trees) = mpsc::channel();
    let (go_on, wait) = mpsc::channel::<()>();
    let owner = std::thread::spawn(move || {
        let heap = own_heap();
        let base = counts();
        let kept = root(10);
        child(kept, 5);
        let gone: Vec<usize> = (0..200u32)
            .map(|n| {
                let r = root(n);
                for k in 0..n % 9 {
                    child(r, 1 + 37 * k);
                }
                if n % 50 == 0 {
                    child(r, 20_000);
                }
                r
            })
            .collect();
        trees_tx.send((heap, base, gone)).unwrap();
        // Until the test has read the counts (or failed: then on, quietly).
        let _ = wait.recv_timeout(PATIENCE);
        // Its next call releases them: they must not leave the counts twice.
        let probe = root(8);
        let released = counts();
        assert_eq!(free_root(probe), Ok(1));
        assert_eq!(free_root(kept), Ok(2));
        (released, counts())
    });
    let (heap, base, gone) = trees.recv_timeout(PATIENCE).unwrap();
    let made = share_of(heap);
    assert_eq!(made.live_roots - base.live_roots, 201);
    let freed = on_other_thread(move || gone.iter().filter(|&&r| free_root(r) == Ok(1)).count());
    assert_eq!(freed, 200);
    let share = share_of(heap);
    let (roots, children, bytes) = live(base);
    assert_eq!(live(share), (roots + 1, children + 1, bytes + 15), "only `kept` is left, the owner idle");
    assert_eq!(share.allocations, made.allocations, "freed blocks were still made");
    go_on.send(()).unwrap();
    let (released, after) = owner.join().unwrap();
    assert_eq!(live(released), (roots + 2, children + 1, bytes + 23), "`kept` and the probe, once released");
    assert_eq!(live(after), live(base));
}

/// The same with the owner parked in the middle of a call on one of the
/// trees being freed (SPEC §3's race of a child against its tree's free):
/// the counts are exact while it is parked, and once its call, which makes
/// a child in the dead tree, has returned.
#[test]
fn counts_are_exact_after_a_remote_free_while_the_owner_is_parked_in_the_tree() {
    let (parked_tx, parked) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let (trees_tx, trees) = mpsc::channel();
    let (returned_tx, returned) = mpsc::channel();
    let (go_on, wait) = mpsc::channel::<()>();
    let owner = std::thread::spawn(move || {
        let heap = own_heap();
        let base = counts();
        let busy = root(64);
        child(busy, 16);
        let other = root(32);
        child(other, 24);
        trees_tx.send((heap, base, busy, other)).unwrap();
        super::park::arm(parked_tx, release_rx);
        // A child too big for the newest chunk: parks making its chunk.
        let made = allocate_child(busy, 2000).is_ok();
        returned_tx.send(made).unwrap();
        let _ = wait.recv_timeout(PATIENCE);
        let probe = root(8);
        let released = counts();
        assert_eq!(free_root(probe), Ok(1));
        released
    });
    let (heap, base, busy, other) = trees.recv_timeout(PATIENCE).unwrap();
    parked.recv_timeout(PATIENCE).expect("the owner parked in its call");
    let freed = on_other_thread(move || (free_root(busy), free_root(other)));
    assert_eq!(freed, (Ok(1), Ok(1)));
    assert_eq!(live(share_of(heap)), live(base), "both trees gone, the owner parked");
    release.send(()).unwrap();
    assert!(returned.recv_timeout(PATIENCE).unwrap(), "a call that validated the tree first makes its child");
    assert_eq!(live(share_of(heap)), live(base), "the child died with its tree");
    go_on.send(()).unwrap();
    let released = owner.join().unwrap();
    let (roots, children, bytes) = live(base);
    assert_eq!(live(released), (roots + 1, children, bytes + 8), "released once: only the probe is left");
}

/// Roots of `size` bytes until the OS would have to be asked for memory
/// (it refuses): every page the heap has for them, fresh or emptied.
fn roots_until_refused(size: u32) -> Vec<usize> {
    let mut made = Vec::new();
    loop {
        crate::sys::fail_allocation_after(Some(0));
        match allocate_root(size) {
            Ok(block) => made.push(block.addr()),
            Err(_) => break,
        }
    }
    crate::sys::fail_allocation_after(None);
    made
}

/// A guest child names its tree by the root's slot and the slot's
/// generation then. A root page emptied and given back to the OS, which
/// zeroes it, loses the state words that held the generations: a root in
/// that slot later must still be a later life than any the slot had, or
/// the guest child of a tree freed long before validates again, as a child
/// of a tree it never belonged to (the model test's "stale parent").
#[test]
fn a_guest_child_stays_dead_when_its_trees_page_is_emptied_and_reused() {
    const SIZE: u32 = 2000;
    let heap = thread::current().or_else(thread::heap).unwrap();
    // A root in its slot's first life, whose generation a zeroed page repeats.
    let mut made = Vec::new();
    let tree = loop {
        let r = root(SIZE);
        made.push(r);
        if validate::tree(heap, r).map(|t| t.state()) == Some(super::root::LIVE) {
            break r;
        }
    };
    let (to_guest, orders) = mpsc::channel::<usize>();
    let (answer, answers) = mpsc::channel::<Result<usize, Error>>();
    let guest = std::thread::spawn(move || {
        // Kept alive until the end: an exiting thread sweeps its guests.
        while let Ok(parent) = orders.recv() {
            let _ = answer.send(allocate_child(parent, 8).map(Block::addr));
        }
    });
    to_guest.send(tree).unwrap();
    let child = answers.recv_timeout(PATIENCE).unwrap().expect("a guest child of a live tree");
    // Every page of the tree's class taken, then emptied; another class
    // takes them all (given back to the OS on the way), then lets them go;
    // then the first class again, so the tree's slot is a root's again.
    made.extend(roots_until_refused(SIZE));
    for &r in &made {
        assert_eq!(free_root(r), Ok(1));
    }
    for r in roots_until_refused(100) {
        assert_eq!(free_root(r), Ok(1));
    }
    let again = roots_until_refused(SIZE);
    assert!(again.contains(&tree), "the freed tree's slot holds a root again");
    to_guest.send(child).unwrap();
    assert_eq!(answers.recv_timeout(PATIENCE).unwrap(), Err(Error::InvalidParameter), "on the guest's thread");
    assert_eq!(allocate_child(child, 8), Err(Error::InvalidParameter), "on the owner's thread");
    drop(to_guest);
    guest.join().unwrap();
    for r in again {
        assert_eq!(free_root(r), Ok(1));
    }
}
