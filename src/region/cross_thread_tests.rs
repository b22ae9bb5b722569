//! Trees used from threads other than their owner's: frees (`remote`),
//! children and reallocations (`guest`), racing frees, and SPEC §3's rule
//! that no call waits on an unrelated thread, with the owner parked in the
//! middle of a call by the test hook (`park`). Channels with timeouts, no
//! sleeps: a call that waited on the parked owner fails the test instead of
//! hanging it.

use super::*;
use super::{free, validate};
use super::{Counts, NotARoot};
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
    // The heap first: it may be an exited thread's, with live trees.
    thread::heap().unwrap();
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
    let (moved_small, moved_big) = on_other_thread(move || {
        let a = reallocate(small, 200).unwrap().addr();
        let b = reallocate(big, 100_016).unwrap().addr();
        ((a, holds(a, 40, 7)), (b, holds(b, 100_000, 9)))
    });
    assert!(moved_small.1 && moved_big.1, "the old bytes were copied");
    assert_eq!(free_root(moved_small.0), Err(NotARoot::Child), "a child of this thread's tree");
    child(moved_big.0, 8);
    assert!(free_root(r).is_ok());
    assert_eq!(allocate_child(moved_small.0, 8), Err(Error::InvalidParameter), "died with the tree");
}

/// Parks a thread that owns two trees in the middle of `call` on one of
/// them, then, from another thread: adds children to both trees,
/// reallocates the other tree's root and frees the new root, and refuses
/// foreign and freed pointers. Each must complete
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
        let moved = reallocate(other, 100).map(Block::addr);
        let freed = moved.map_or(false, |moved| free_root(moved) == Ok(1));
        let refused = free_root(foreign) == Err(NotARoot::Unknown)
            && allocate_child(foreign, 8) == Err(Error::InvalidParameter)
            && allocate_child(other_child, 8) == Err(Error::InvalidParameter)
            && free_root(other).is_err();
        [onto_busy, onto_other, moved.is_ok(), freed, refused]
    });
    assert_eq!(outcomes, [true; 5], "children on both trees, the reallocation and free, the refusals");
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

/// The exact counts hold through reallocations by other threads, the owner
/// idle throughout: a root another thread moves to a face leaves its
/// owner's share with its bytes when the move returns (its tree stays, one
/// root, with its children), and a moved tree whose face a third thread
/// frees leaves with every child when that free returns. The owner's next
/// call takes each off its own counts once, and nothing twice.
#[test]
fn counts_are_exact_when_other_threads_move_an_idle_owners_roots_and_free_a_face() {
    let (trees_tx, trees) = mpsc::channel();
    let (go_on, wait) = mpsc::channel::<()>();
    let (released_tx, released_rx) = mpsc::channel();
    let (finish, finish_rx) = mpsc::channel::<()>();
    let owner = std::thread::spawn(move || {
        let heap = own_heap();
        let base = counts();
        let kept = root(40); // moved, its children kept
        child(kept, 24);
        child(kept, 3000);
        let dies = root(64); // moved, then its face freed
        child(dies, 16);
        let alone = root(32); // no child: moved all the same (another thread's)
        trees_tx.send((heap, base, kept, dies, alone)).unwrap();
        let _ = wait.recv_timeout(PATIENCE);
        // Its next call takes the moves and the kill off its counts.
        let probe = root(8);
        let released = counts();
        assert_eq!(free_root(probe), Ok(1));
        let _ = released_tx.send(released);
        // Kept until the other trees are gone (see above).
        let _ = finish_rx.recv_timeout(PATIENCE);
        let probe = root(8);
        let at_end = counts();
        assert_eq!(free_root(probe), Ok(1));
        at_end
    });
    let (heap, base, kept, dies, alone) = trees.recv_timeout(PATIENCE).unwrap();
    let (roots, children, bytes) = live(base);
    assert_eq!(live(share_of(heap)), (roots + 3, children + 3, bytes + 40 + 24 + 3000 + 64 + 16 + 32));
    let (faces_tx, faces) = mpsc::channel();
    let (free_faces, free_faces_rx) = mpsc::channel::<()>();
    let mover = std::thread::spawn(move || {
        let mover_heap = own_heap();
        let mover_base = counts();
        let moved: Vec<usize> = [kept, dies, alone].iter().map(|&r| reallocate(r, 100).unwrap().addr()).collect();
        faces_tx.send((mover_heap, mover_base, moved[0], moved[1], moved[2])).unwrap();
        let _ = free_faces_rx.recv_timeout(PATIENCE);
        (free_root(moved[0]), free_root(moved[2]))
    });
    let (mover_heap, mover_base, kept_face, dies_face, alone_face) = faces.recv_timeout(PATIENCE).unwrap();
    let moved = share_of(heap);
    assert_eq!(live(moved), (roots + 3, children + 3, bytes + 24 + 3000 + 16), "the roots' bytes left with the moves");
    let (mover_roots, mover_children, mover_bytes) = live(mover_base);
    let faces_live = (mover_roots, mover_children, mover_bytes + 300);
    assert_eq!(live(share_of(mover_heap)), faces_live, "the faces are the mover's bytes, no roots");
    assert_eq!(on_other_thread(move || free_root(dies_face)), Ok(1));
    assert_eq!(live(share_of(heap)), (roots + 2, children + 2, bytes + 24 + 3000), "the face took its tree along");
    assert_eq!(share_of(heap).allocations, moved.allocations, "freed blocks were still made");
    let (r, c, b) = faces_live;
    assert_eq!(live(share_of(mover_heap)), (r, c, b - 100), "the freed face left the mover's share");
    go_on.send(()).unwrap();
    let released = released_rx.recv_timeout(PATIENCE).unwrap();
    assert_eq!(live(released), (roots + 3, children + 2, bytes + 24 + 3000 + 8), "released once, and the probe");
    free_faces.send(()).unwrap();
    assert_eq!(mover.join().unwrap(), (Ok(1), Ok(1)));
    assert_eq!(live(share_of(heap)), live(base), "both moved trees gone with their faces, the owner idle");
    for addr in [kept, dies, alone, kept_face, dies_face, alone_face] {
        assert_eq!(free_root(addr), Err(NotARoot::Unknown));
    }
    finish.send(()).unwrap();
    assert_eq!(live(owner.join().unwrap()), (roots + 1, children, bytes + 8), "only the second probe is left");
}

/// The exports' leaf fast paths (`quick_child`, `quick_free`) act on a
/// root of the caller's, live, from the parent cache and the state word
/// alone: a root moved to a face (by another thread, or by the owner) and
/// a face must be misses there, leaving the heap idle, for the full paths
/// to refuse or free; a child of the moved tree stays a parent they take.
#[test]
fn the_fast_paths_miss_on_moved_roots_and_faces_and_take_a_moved_trees_children() {
    use super::alloc::{quick_child, Quick};
    use super::free::{quick_free, QuickFree};
    let heap = thread::heap().unwrap();
    heap.leave(); // the test is no call: the fast paths mark it themselves
                  // A parent taken: the child made here, or in a new chunk.
    let taken = |quick: Quick| match quick {
        Quick::Made(_) => true,
        Quick::Grow(grow) => grow.child(8).is_ok(),
        Quick::Miss => false,
    };
    let r = root(32);
    let c = child(r, 8);
    let kept = root(16);
    let remembered = child(kept, 8);
    assert!(taken(quick_child(kept, 8)) && !heap.is_busy(), "a live root is taken");
    child(r, 8); // the cache's entry now: `r`, live
    let face = on_other_thread(move || reallocate(r, 64).unwrap().addr());
    assert!(matches!(quick_child(r, 8), Quick::Miss) && !heap.is_busy(), "a moved root is no parent");
    assert!(matches!(quick_free(r), QuickFree::Miss) && !heap.is_busy(), "nor a root to free");
    assert!(matches!(quick_child(face, 8), Quick::Miss) && !heap.is_busy(), "another thread's face");
    assert!(matches!(quick_free(face), QuickFree::Miss) && !heap.is_busy());
    assert_eq!(allocate_child(r, 8), Err(Error::InvalidParameter));
    assert_eq!(free_root(r), Err(NotARoot::Unknown));
    child(c, 8); // remembered through the full path: the moved tree's
    assert!(taken(quick_child(c, 8)) && !heap.is_busy(), "a moved tree's child is");
    // The owner's own move: its root with children becomes a face of its own.
    child(kept, 8);
    let own_face = reallocate(kept, 100).unwrap().addr();
    assert!(matches!(quick_child(kept, 8), Quick::Miss) && !heap.is_busy());
    assert!(matches!(quick_child(own_face, 8), Quick::Miss) && !heap.is_busy(), "a face is never cached");
    assert!(matches!(quick_free(own_face), QuickFree::Miss) && !heap.is_busy());
    assert!(child(own_face, 8) != 0 && child(remembered, 8) != 0, "the full paths take the face");
    assert!(free_root(own_face).is_ok() && free_root(face).is_ok());
    for k in [c, remembered] {
        assert_eq!(allocate_child(k, 8), Err(Error::InvalidParameter), "freed with their faces");
    }
}

/// Roots of `size` bytes until the OS would have to be asked for memory
/// (it refuses): every page the heap has for them, fresh or emptied.
fn roots_until_refused(size: u32) -> Vec<usize> {
    let mut made = Vec::new();
    loop {
        crate::fault::fail_allocation_after(Some(0));
        match allocate_root(size) {
            Ok(block) => made.push(block.addr()),
            Err(_) => break,
        }
    }
    crate::fault::fail_allocation_after(None);
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

/// SPEC §5: a reallocated root's children stay valid and stay children of
/// the new root; that holds for the children another thread made on it
/// (in a guest chunk of its own) as for the owner's, whoever reallocates.
#[test]
fn guest_children_follow_their_root_through_the_owners_reallocation() {
    let r = root(32);
    let own = child(r, 24);
    let (to_owner, from_guest) = mpsc::channel();
    let (to_guest, from_owner) = mpsc::channel::<()>();
    let guest = std::thread::spawn(move || {
        let kids: Vec<usize> = (0..100).map(|i| child(if i % 2 == 0 { r } else { own }, 40)).collect();
        for (i, &k) in kids.iter().enumerate() {
            fill(k, 40, i as u8);
        }
        let _ = to_owner.send(kids.clone());
        from_owner.recv_timeout(PATIENCE).expect("the owner reallocated the root");
        let _ = stats(); // the maker's sweep must keep them: their tree lives
        let intact = kids.iter().enumerate().all(|(i, &k)| holds(k, 40, i as u8));
        let alive = kids.iter().all(|&k| allocate_child(k, 8).is_ok() && free_root(k) == Err(NotARoot::Child));
        let _ = to_owner.send(vec![intact as usize, alive as usize]);
        // Kept until the tree is freed: no other test's thread adopts a
        // heap with this test's live guests.
        from_owner.recv_timeout(PATIENCE).expect("the owner freed the tree");
    });
    let kids = from_guest.recv_timeout(PATIENCE).expect("the guest made its children");
    fill(r, 32, 3);
    let moved = reallocate(r, 4000).unwrap().addr();
    assert!(holds(moved, 32, 3), "the root's bytes were copied");
    to_guest.send(()).unwrap();
    let checked = from_guest.recv_timeout(PATIENCE).expect("the guest looked at its children");
    assert_eq!(checked, [1, 1], "the guest's children outlived the reallocation of their root, intact");
    assert!(kids.iter().all(|&k| free_root(k) == Err(NotARoot::Child)), "children of the owner's tree");
    assert_eq!(allocate_child(r, 8), Err(Error::InvalidParameter), "the old root is gone");
    assert_eq!(free_root(r), Err(NotARoot::Unknown));
    let grandchild = child(kids[3], 8);
    assert!(free_root(moved).is_ok());
    for k in kids.iter().copied().chain([own, grandchild]) {
        assert_eq!(allocate_child(k, 8), Err(Error::InvalidParameter), "freed with the new root");
    }
    to_guest.send(()).unwrap();
    guest.join().unwrap();
}

/// SPEC §5 from any thread: another thread's root is reallocated with no
/// word from its owner; the new root takes the children, the old address
/// is refused, and freeing the new root (from a third thread) frees them.
#[test]
fn another_threads_root_is_reallocated_with_its_children() {
    let probe = root(8); // the heap first: it may be an exited thread's
    let base = counts();
    let r = root(64);
    fill(r, 64, 5);
    let c = child(r, 40);
    fill(c, 40, 6);
    let with_root = counts().live_bytes;
    let (to_owner, from_mover) = mpsc::channel();
    let (to_mover, from_owner) = mpsc::channel::<()>();
    let mover = std::thread::spawn(move || {
        let moved = reallocate(r, 5000).unwrap().addr();
        let copied = holds(moved, 64, 5);
        let grandchild = child(c, 16);
        let refused = free_root(r) == Err(NotARoot::Unknown)
            && allocate_child(r, 8) == Err(Error::InvalidParameter)
            && reallocate(r, 8) == Err(Error::InvalidParameter)
            && free_root(c) == Err(NotARoot::Child);
        let _ = to_owner.send((moved, grandchild, copied && refused));
        // Kept until its blocks are gone (see above).
        from_owner.recv_timeout(PATIENCE).expect("the tree was freed");
    });
    let (moved, grandchild, refused) = from_mover.recv_timeout(PATIENCE).expect("the mover moved the root");
    assert!(refused, "the bytes were copied, and the old root is gone for everyone");
    assert!(holds(c, 40, 6), "the owner's child is untouched");
    assert_eq!(free_root(root(8)), Ok(1)); // this thread's next calls
    assert_eq!(counts().live_bytes, with_root - 64, "the old root's bytes left its owner's counts");
    let mine = child(moved, 24); // the tree is this thread's: its chunks
    assert_eq!(free_root(mine), Err(NotARoot::Child));
    assert_eq!(counts().live_roots, base.live_roots + 1, "one tree, counted at its owner");
    // The other thread's new root, reallocated here: a new root of this
    // thread's for the same tree, the other one's released by its owner.
    let again = reallocate(moved, 6000).unwrap().addr();
    assert!(holds(again, 64, 5));
    assert_eq!(free_root(moved), Err(NotARoot::Unknown));
    let freed = on_other_thread(move || free_root(again) == Ok(1) && free_root(again).is_err());
    assert!(freed, "the new root is freed once, from a third thread");
    for k in [c, grandchild, mine] {
        assert_eq!(allocate_child(k, 8), Err(Error::InvalidParameter), "freed with the new root");
    }
    assert_eq!(free_root(root(8)), Ok(1)); // releases what was killed here
    let after = counts();
    assert_eq!(
        (after.live_roots, after.live_children, after.live_bytes),
        (base.live_roots, base.live_children, base.live_bytes)
    );
    assert_eq!(free_root(probe), Ok(1));
    to_mover.send(()).unwrap();
    mover.join().unwrap();
}

/// An exited thread's root is reallocated as a live owner's is: its heap
/// is an orphan, touched only through the state words. The test holds the
/// orphan (`Heap::try_claim`) while it works, so no other test's thread
/// adopts a heap whose tree this one frees under it.
#[test]
fn an_orphans_root_is_reallocated_with_its_children() {
    for _ in 0..20 {
        let (heap, r, c) = std::thread::spawn(|| {
            let r = root(48);
            fill(r, 48, 8);
            let c = child(r, 100);
            fill(c, 100, 9);
            (thread::current().unwrap() as *const heap::Heap as usize, r, c)
        })
        .join()
        .unwrap();
        // SAFETY: heaps are never freed.
        let heap = unsafe { &*(heap as *const heap::Heap) };
        if !heap.try_claim() {
            continue; // adopted meanwhile
        }
        let moved = reallocate(r, 20).unwrap().addr();
        assert!(holds(moved, 20, 8) && holds(c, 100, 9));
        assert_eq!(free_root(r), Err(NotARoot::Unknown));
        let grandchild = child(c, 8);
        assert_eq!(free_root(grandchild), Err(NotARoot::Child));
        let again = reallocate(moved, 30).unwrap().addr();
        assert!(holds(again, 20, 8));
        assert_eq!(allocate_child(moved, 8), Err(Error::InvalidParameter), "each old root is gone");
        assert_eq!(free_root(again), Ok(1), "the tree is killed in the orphan");
        for k in [c, grandchild, again] {
            assert_eq!(allocate_child(k, 8), Err(Error::InvalidParameter));
        }
        let held = heap.counts.snapshot().live_roots;
        thread::catch_up(heap);
        assert_eq!(heap.counts.snapshot().live_roots, held - 1, "released by its holder");
        heap.give_up();
        return;
    }
    panic!("the orphan was adopted by another thread every time");
}

/// A failed reallocation of another thread's root changes nothing.
#[test]
fn a_refused_reallocation_of_another_threads_root_changes_nothing() {
    let r = root(32);
    fill(r, 32, 4);
    let c = child(r, 16);
    let refused = on_other_thread(move || {
        thread::heap().unwrap(); // so that the reallocation is what fails
        crate::fault::fail_allocation_after(Some(0));
        let result = reallocate(r, u32::MAX).map(Block::addr);
        crate::fault::fail_allocation_after(None);
        result
    });
    assert_eq!(refused, Err(Error::NoMemory));
    assert!(holds(r, 32, 4));
    assert_eq!(free_root(c), Err(NotARoot::Child), "the tree is as it was");
    assert_eq!(free_root(r), Ok(2));
}

/// Two threads, neither the owner, each free or reallocate the same roots
/// at once (SPEC §3's racing calls on one root): for every root exactly one
/// wins, and the owner's counts come out exact. A won reallocation's new
/// root is freed by its maker at once, so no thread leaves blocks behind
/// for another test's thread to adopt.
#[test]
fn racing_frees_and_reallocations_of_another_threads_roots_have_one_winner() {
    const ROOTS: usize = 5000;
    thread::heap().unwrap();
    let base = counts();
    let race = |roots: &[usize], first: fn(usize) -> bool, second: fn(usize) -> bool| {
        let start = std::sync::Arc::new(std::sync::Barrier::new(2));
        let run = |op: fn(usize) -> bool, roots: Vec<usize>, start: std::sync::Arc<std::sync::Barrier>| {
            std::thread::spawn(move || {
                // Each thread has its heap before the start, so neither
                // gets ahead by the other's first call.
                thread::heap().unwrap();
                start.wait();
                roots.iter().map(|&r| op(r)).collect::<Vec<_>>()
            })
        };
        let one = run(first, roots.to_vec(), start.clone());
        let two = run(second, roots.to_vec(), start);
        let (one, two) = (one.join().unwrap(), two.join().unwrap());
        one.into_iter().zip(two).collect::<Vec<_>>()
    };
    let realloc = |r: usize| match reallocate(r, 300) {
        Ok(new) => {
            assert!(free_root(new.addr()).is_ok(), "the new root is a root");
            true
        }
        Err(error) => {
            assert_eq!(error, Error::InvalidParameter);
            false
        }
    };
    let free = |r: usize| free_root(r).is_ok();
    for round in 0..2 {
        let roots: Vec<usize> = (0..ROOTS).map(|n| root(n as u32 % 200)).collect();
        for &r in roots.iter().step_by(2) {
            child(r, 24);
        }
        let outcomes = if round == 0 { race(&roots, realloc, free) } else { race(&roots, realloc, realloc) };
        let winners = |o: &(bool, bool)| o.0 as usize + o.1 as usize;
        assert!(outcomes.iter().all(|o| winners(o) == 1), "one of the two won each root");
        let probe = root(8); // releases the trees the other threads killed
        let after = counts();
        assert_eq!((after.live_roots, after.live_children), (base.live_roots + 1, base.live_children));
        assert_eq!(free_root(probe), Ok(1));
    }
}

/// A root whose only children are another thread's (in that thread's
/// guest chunk) is not dropped at its owner's reallocation as a childless
/// root is: the guest's first chunk marked it (`GUESTED`).
#[test]
fn a_root_with_only_guest_children_is_moved_not_dropped() {
    let r = root(16);
    let (kid, maker) = {
        let (to_owner, from_guest) = mpsc::channel();
        let (to_guest, from_owner) = mpsc::channel::<()>();
        let maker = std::thread::spawn(move || {
            let kid = child(r, 24);
            fill(kid, 24, 0x42);
            let _ = to_owner.send(kid);
            from_owner.recv_timeout(PATIENCE).expect("the owner is done");
        });
        (from_guest.recv_timeout(PATIENCE).expect("the guest made its child"), (maker, to_guest))
    };
    let moved = reallocate(r, 100).unwrap().addr();
    assert!(holds(kid, 24, 0x42));
    assert_eq!(free_root(kid), Err(NotARoot::Child), "the guest child lives on");
    let grandchild = child(kid, 8);
    assert!(free_root(moved).is_ok());
    assert_eq!(allocate_child(kid, 8), Err(Error::InvalidParameter));
    assert_eq!(allocate_child(grandchild, 8), Err(Error::InvalidParameter));
    maker.1.send(()).unwrap();
    maker.0.join().unwrap();
}

/// The owner's free is a load and a store; another thread's reallocation
/// can land between its validation and its store (a racing double free:
/// the client freed and reallocated one root at once). Replayed step by
/// step: the owner validates, another thread moves the root to a new one,
/// the owner ends and releases the tree. The new root is then a root of a
/// dead tree: refused as a parent and to a reallocation, still freed once,
/// and nothing is released twice.
#[test]
fn a_move_landing_inside_the_owners_free_leaves_a_new_root_that_is_only_freed() {
    let heap = thread::heap().unwrap();
    let base = counts();
    let r = root(40);
    let c = child(r, 8);
    let (page, tree) = validate::root(heap, r).unwrap();
    let (to_owner, from_mover) = mpsc::channel();
    let (to_mover, from_owner) = mpsc::channel::<()>();
    let mover = std::thread::spawn(move || {
        thread::heap().unwrap(); // it may be an exited thread's, with its trees
        let before = counts().live_bytes;
        let moved = reallocate(r, 64).map(Block::addr);
        let _ = to_owner.send(moved);
        from_owner.recv_timeout(PATIENCE).expect("the owner freed the tree");
        let moved = moved.unwrap();
        let refused = allocate_child(moved, 8) == Err(Error::InvalidParameter)
            && reallocate(moved, 8) == Err(Error::InvalidParameter);
        let freed = free_root(moved) == Ok(1) && free_root(moved) == Err(NotARoot::Unknown);
        (refused, freed, counts().live_bytes - before)
    });
    let moved = from_mover.recv_timeout(PATIENCE).expect("the mover moved the root");
    assert!(moved.is_ok(), "the move won its swap");
    free::free_tree(heap, page, tree); // the owner's store and release, validated before
    assert_eq!(allocate_child(c, 8), Err(Error::InvalidParameter), "the tree is dead");
    to_mover.send(()).unwrap();
    let (refused, freed, mover_bytes) = mover.join().unwrap();
    assert!(refused, "a root of a dead tree takes no child and is not moved");
    assert!(freed, "and is freed once");
    assert_eq!(mover_bytes, 0, "with its bytes");
    let a = root(40);
    let b = root(40);
    assert_ne!(a, b, "the old slot was released once, so it is handed out once");
    let after = counts();
    assert_eq!((after.live_roots, after.live_children), (base.live_roots + 2, base.live_children));
    for addr in [a, b] {
        assert_eq!(free_root(addr), Ok(1));
    }
}

/// Children stay valid through reallocations of their root (SPEC §5), so
/// another thread adding children to one of them while the owner keeps
/// reallocating the root never sees it refused, and none of its children
/// is lost.
#[test]
fn children_added_while_the_owner_reallocates_their_root_are_never_refused() {
    const CHILDREN: usize = 4000;
    let mut r = root(24);
    let c = child(r, 16);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (made_tx, made) = mpsc::channel();
    let (freed_tx, freed) = mpsc::channel::<()>();
    let guest_done = done.clone();
    let guest = std::thread::spawn(move || {
        let mut kids: Vec<usize> = Vec::with_capacity(CHILDREN);
        let mut refused = None;
        for i in 0..CHILDREN {
            let parent = if i % 3 == 0 || kids.is_empty() { c } else { kids[i / 2] };
            match allocate_child(parent, 24) {
                Ok(kid) => {
                    fill(kid.addr(), 24, i as u8);
                    kids.push(kid.addr());
                }
                Err(error) => {
                    refused = Some((i, error));
                    break;
                }
            }
        }
        guest_done.store(true, std::sync::atomic::Ordering::Release);
        let intact = kids.iter().enumerate().all(|(i, &k)| holds(k, 24, i as u8));
        let _ = made_tx.send((kids, intact, refused));
        // Kept until the tree is freed (see above).
        let _ = freed.recv_timeout(PATIENCE);
    });
    let mut moves = 0;
    while !done.load(std::sync::atomic::Ordering::Acquire) {
        r = reallocate(r, 24 + (moves % 7) * 16).unwrap().addr();
        moves += 1;
    }
    let (kids, intact, refused) = made.recv_timeout(PATIENCE).expect("the guest made its children");
    assert_eq!(refused, None, "no child refused, across {moves} reallocations");
    assert!(intact, "each holds its bytes");
    assert!(kids.iter().all(|&k| free_root(k) == Err(NotARoot::Child)), "all children of the live tree");
    assert!(free_root(r).is_ok());
    assert!(kids.iter().all(|&k| allocate_child(k, 8) == Err(Error::InvalidParameter)), "freed with it");
    freed_tx.send(()).unwrap();
    guest.join().unwrap();
}
