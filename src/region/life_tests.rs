//! A heap's life: claimed by one thread at a time, given up when its thread
//! exits with its unused memory given back, adopted by a later thread with
//! its live trees, and walked by the `leaks` report. (The C programs cover
//! the same through the library's exports: `c_tests/thread_life.c`.)

use super::heap::{self, Heap};
use super::*;

fn root(size: u32) -> usize {
    allocate_root(size).unwrap().addr()
}

fn child(parent: usize, size: u32) -> usize {
    allocate_child(parent, size).unwrap().addr()
}

/// Whether the OS page at `addr` is resident.
fn resident(addr: usize) -> bool {
    let page = addr & !4095;
    let mut status = 0u8;
    // SAFETY: one page of a mapping of ours; `status` holds its one byte.
    let done = unsafe { libc::mincore(page as *mut libc::c_void, 4096, &mut status) };
    assert_eq!(done, 0, "mincore");
    status & 1 != 0
}

#[test]
fn a_heap_has_one_holder_at_a_time() {
    // Made apart from the heap list, so no other test's thread can adopt it.
    let heap = Heap::create().unwrap();
    assert!(heap.is_owned() && !heap.try_claim(), "made owned");
    heap.give_up();
    assert!(!heap.is_owned());
    assert!(heap.try_claim(), "an orphan is claimed");
    assert!(!heap.try_claim(), "by one taker only");
}

#[test]
fn exited_threads_heaps_are_adopted_not_multiplied() {
    const THREADS: usize = 64;
    let before = thread::heaps().count();
    for _ in 0..THREADS {
        std::thread::spawn(|| {
            let r = root(40);
            child(r, 200);
            assert_eq!(free_root(r), Ok(2));
        })
        .join()
        .unwrap();
    }
    // Tests running alongside this one make heaps of their own meanwhile.
    let made = thread::heaps().count() - before;
    assert!(made < THREADS / 4, "{made} heaps for {THREADS} threads one after another");
}

#[test]
fn an_exited_threads_heap_keeps_its_trees_and_gives_back_its_empty_pages() {
    // Another test's thread may adopt the orphan before this one looks at
    // it; then look again with another thread's heap.
    for _ in 0..20 {
        let (heap, r, c, emptied) = std::thread::spawn(|| {
            let r = root(64);
            let c = child(r, 100);
            // SAFETY: live blocks of those sizes.
            unsafe { core::ptr::write_bytes(r as *mut u8, 0xa5, 64) };
            unsafe { core::ptr::write_bytes(c as *mut u8, 0x5a, 100) };
            // Many pages filled with roots of another class, all freed.
            let many: Vec<usize> = (0..20_000).map(|_| root(1000)).collect();
            for &each in &many {
                assert_eq!(free_root(each), Ok(1));
            }
            let heap = thread::current().unwrap() as *const Heap as usize;
            (heap, r, c, many)
        })
        .join()
        .unwrap();
        // SAFETY: heaps are never freed.
        let heap = unsafe { &*(heap as *const Heap) };
        if !heap.try_claim() {
            continue;
        }
        let tree = validate::root(heap, r).map(|(_, tree)| tree);
        let found = tree.map(|tree| tree.size());
        let walked = {
            let mut seen = None;
            let mut visit = |addr, size, bytes| {
                if addr == r {
                    seen = Some((size, bytes));
                }
            };
            walk::walk_heap(heap, &mut visit);
            seen
        };
        let counts = heap.counts.snapshot();
        heap.give_up();
        assert_eq!(found, Some(64), "the orphan's root is live");
        assert!(validate::child(heap, c).is_some(), "and its child");
        // SAFETY: still live blocks of those sizes.
        let bytes = unsafe {
            (core::slice::from_raw_parts(r as *const u8, 64), core::slice::from_raw_parts(c as *const u8, 100))
        };
        assert!(bytes.0.iter().all(|&b| b == 0xa5) && bytes.1.iter().all(|&b| b == 0x5a), "bytes kept");
        assert_eq!(walked, Some((64, 164)), "the leaks walk sees it");
        assert!(counts.live_roots >= 1 && counts.live_children >= 1);
        // At most what an orphan may keep for its adopter stays resident.
        let mut pages: Vec<usize> = emptied.iter().map(|&addr| addr / PAGE_SIZE).collect();
        pages.dedup();
        let still = pages.iter().filter(|&&page| resident(page * PAGE_SIZE)).count();
        assert!(still <= heap::KEEP_AT_EXIT, "{still} of {} emptied pages still resident", pages.len());
        return;
    }
    panic!("the orphan was adopted by another thread every time");
}

#[test]
fn the_leaks_walk_finds_every_live_root_with_its_tree_bytes() {
    let r = root(100);
    let c = child(r, 20);
    child(c, 3);
    let large = root(3 << 20);
    let gone = root(8);
    assert_eq!(free_root(gone), Ok(1));
    let mut seen = Vec::new();
    let left_out = for_each_root(|addr, size, bytes| {
        if [r, large, gone].contains(&addr) {
            seen.push((addr, size, bytes));
        }
    });
    seen.sort_unstable();
    let mut expected = vec![(r, 100, 123), (large, 3 << 20, 3 << 20)];
    expected.sort_unstable();
    assert_eq!(seen, expected);
    // Other tests' threads own heaps: left out, not walked under their feet.
    let _ = left_out;
    assert_eq!(free_root(r), Ok(3));
    assert_eq!(free_root(large), Ok(1));
}

/// Another thread's free of an orphan's tree is a kill like any (atomics
/// only); whoever holds the orphan next releases it as its owner would.
#[test]
fn a_kill_into_an_orphan_is_released_by_whoever_catches_it_up() {
    for _ in 0..20 {
        let (heap, r) = std::thread::spawn(|| {
            let r = root(64);
            child(r, 100);
            (thread::current().unwrap() as *const Heap as usize, r)
        })
        .join()
        .unwrap();
        assert_eq!(free_root(r), Ok(1), "killed in the orphan");
        assert_eq!(allocate_child(r, 8), Err(crate::scode::Error::InvalidParameter), "dead at once");
        // SAFETY: heaps are never freed.
        let heap = unsafe { &*(heap as *const Heap) };
        if !heap.try_claim() {
            continue; // adopted meanwhile, and caught up by its adopter
        }
        // SAFETY: the slot of a root the orphan handed out.
        let header = unsafe { root::Root::at(r - root::ROOT_HEADER) };
        let (killed, before) = (header.is_killed(), heap.counts.snapshot());
        thread::catch_up(heap);
        let (released, after) = (!header.is_killed(), heap.counts.snapshot());
        heap.give_up();
        if !killed {
            continue; // caught up by `stats` or an adopter before the claim
        }
        assert!(released, "the claimer released the killed tree");
        assert_eq!(before.live_roots - after.live_roots, 1, "its root left the counts");
        assert_eq!(before.live_children - after.live_children, 1, "and its child");
        return;
    }
    panic!("the orphan was adopted by another thread every time");
}

/// A thread's guest chunks of trees that died go back when it exits: the
/// orphan keeps none of them for an adopter that may never come.
#[test]
fn an_exiting_thread_sweeps_its_guests_of_dead_trees() {
    for _ in 0..20 {
        let r = root(32);
        let heap = std::thread::spawn(move || {
            for _ in 0..10 {
                child(r, 16);
            }
            assert!(thread::current().unwrap().guests.count() > 0, "guests made");
            assert_eq!(free_root(r), Ok(1), "the tree killed from here");
            thread::current().unwrap() as *const Heap as usize
        })
        .join()
        .unwrap();
        // SAFETY: heaps are never freed.
        let heap = unsafe { &*(heap as *const Heap) };
        if !heap.try_claim() {
            continue;
        }
        let guests = heap.guests.count();
        heap.give_up();
        assert_eq!(guests, 0, "swept at exit");
        return;
    }
    panic!("the orphan was adopted by another thread every time");
}
