//! The operations together: validation, chunks, large blocks, the parent
//! cache, reallocation, counts, running out of memory. Each test runs on a
//! thread of its own (the test harness's), so each has a heap to itself
//! (perhaps one an earlier test's thread gave up at its exit, with that
//! test's blocks still in it) and its counts move by its own calls alone.

use super::chunk::{Chunk, CHUNK_HEADER};
use super::class::chunk_class_size;
use super::root::{self, Root, ROOT_HEADER};
use super::NotARoot;
use super::*;
use crate::scode::Error;

fn counts() -> super::Counts {
    thread::current().map(|heap| heap.counts.snapshot()).unwrap_or_default()
}

fn root(size: u32) -> usize {
    allocate_root(size).unwrap().addr()
}

fn child(parent: usize, size: u32) -> usize {
    allocate_child(parent, size).unwrap().addr()
}

fn tree_of(addr: usize) -> &'static Root {
    validate::tree(thread::current().unwrap(), addr).unwrap()
}

fn chunks(tree: &Root) -> Vec<&'static Chunk> {
    // SAFETY: a live tree's chunks, of this thread's heap.
    unsafe { super::chunk::Chunks::from(tree.first()) }.collect()
}

fn fill(addr: usize, size: usize, byte: u8) {
    // SAFETY: a live block of at least `size` bytes.
    unsafe { core::ptr::write_bytes(addr as *mut u8, byte, size) }
}

fn holds(addr: usize, size: usize, byte: u8) -> bool {
    // SAFETY: as in `fill`.
    unsafe { core::slice::from_raw_parts(addr as *const u8, size) }.iter().all(|&b| b == byte)
}

#[test]
fn blocks_are_aligned_distinct_and_hold_their_bytes() {
    let mut blocks = Vec::new();
    for size in [0u32, 1, 15, 16, 17, 32, 100, 1000, 1024, 5000, 32_000, 40_000, 300_000, 5 << 20] {
        let r = root(size);
        let c = child(r, size);
        let z = child(c, 0);
        for (addr, n) in [(r, size), (c, size), (z, 0)] {
            assert_eq!(addr % GRANULE, 0);
            fill(addr, n as usize, n as u8 ^ 0x5A);
            blocks.push((addr, n));
        }
    }
    for &(addr, n) in &blocks {
        assert!(holds(addr, n as usize, n as u8 ^ 0x5A), "{addr:#x}, {n} bytes");
    }
    let mut addrs: Vec<usize> = blocks.iter().map(|b| b.0).collect();
    addrs.sort_unstable();
    addrs.dedup();
    assert_eq!(addrs.len(), blocks.len(), "every block, size 0 included, has its own address");
}

#[test]
fn foreign_interior_freed_and_child_pointers_are_refused() {
    // A root whose next slot in its page was never handed out: the test
    // thread may have adopted an exited thread's heap, whose pages of this
    // class hold its blocks, or slots it freed, after any root made here.
    let mut others = Vec::new();
    let r = loop {
        let r = root(64);
        // SAFETY: `r` is a live root of ours, in a published segment.
        let page = unsafe { segment::Segment::of(r) }.page_of(r);
        let next = r - ROOT_HEADER + page.slot_size();
        if !page.was_handed_out(next) && next + page.slot_size() <= page.base() as usize + PAGE_SIZE {
            break r;
        }
        others.push(r);
    };
    let c = child(r, 40);
    let local = 0u128;
    let boxed = Box::new([0u8; 64]);
    let big = root(100_000);
    let mut refused = vec![
        1,
        16,
        usize::MAX & !15,
        &local as *const u128 as usize,
        boxed.as_ptr() as usize,
        r + 16,
        r - 16,
        r - ROOT_HEADER,
        c + 16,
        c - 16,
        big + 16,
        big + PAGE_SIZE,
        big - ROOT_HEADER,
    ];
    // A slot of the root's page never handed out (the heap may be one an
    // earlier test's thread gave up at its exit, the slots after the root
    // taken), and the chunk's header.
    // SAFETY: `r` is a live root, so its segment is published.
    let page = unsafe { segment::Segment::of(r) }.page_of(r);
    let unused = page.base() as usize + PAGE_SIZE / page.slot_size() * page.slot_size();
    let unused = (page.slot_of(r)..unused).step_by(page.slot_size()).find(|&slot| !page.was_handed_out(slot));
    refused.push(unused.expect("a slot never handed out") + ROOT_HEADER);
    refused.push(c - CHUNK_HEADER);
    for &addr in &refused {
        assert_eq!(free_root(addr), Err(NotARoot::Unknown), "free {addr:#x}");
        assert_eq!(allocate_child(addr, 8), Err(Error::InvalidParameter), "parent {addr:#x}");
        assert_eq!(reallocate(addr, 8), Err(Error::InvalidParameter), "reallocate {addr:#x}");
    }
    assert_eq!(free_root(c), Err(NotARoot::Child), "a child is not freed alone");
    assert!(holds(boxed.as_ptr() as usize, 64, 0), "nothing written at a foreign pointer");
    let before = counts();
    assert_eq!(free_root(r), Ok(2));
    assert_eq!(free_root(big), Ok(1));
    for addr in [r, c, big] {
        assert_eq!(free_root(addr), Err(NotARoot::Unknown), "freed {addr:#x}");
        assert_eq!(allocate_child(addr, 8), Err(Error::InvalidParameter), "freed parent {addr:#x}");
    }
    let after = counts();
    assert_eq!(after.live_roots, before.live_roots - 2);
    assert_eq!(after.allocations, before.allocations, "refusals allocate nothing");
    for other in others {
        assert_eq!(free_root(other), Ok(1));
    }
}

#[test]
fn the_parent_cache_forgets_a_freed_tree() {
    let r = root(32);
    let c = child(r, 32);
    let _ = child(c, 32); // c is now the cached parent
    assert_eq!(free_root(r), Ok(3));
    assert_eq!(allocate_child(c, 8), Err(Error::InvalidParameter), "the cached child of a freed tree");
    // The slot's next root: its state is a new generation.
    let again = root(32);
    assert_eq!(again, r, "the same slot, reused");
    assert_eq!(allocate_child(c, 8), Err(Error::InvalidParameter), "a stale child of the slot's last tree");
    assert_eq!(free_root(again), Ok(1));
}

#[test]
fn chunks_start_at_64_bytes_and_grow_eightfold() {
    let sizes = |r| -> Vec<usize> { chunks(tree_of(r)).iter().map(|c| chunk_class_size(c.class())).rev().collect() };
    let r = root(32);
    child(r, 32);
    assert_eq!(sizes(r), [64], "one 32-byte child fills the first chunk");
    for _ in 0..15 {
        child(r, 32);
    }
    assert_eq!(sizes(r), [64, 512], "16 children in two chunks, oldest first");
    child(r, 32);
    assert_eq!(sizes(r), [64, 512, 4096]);
    // The growth stops at a page.
    for _ in 0..4000 {
        child(r, 32);
    }
    assert_eq!(sizes(r)[3..], [32768, PAGE_SIZE, PAGE_SIZE]);
    assert_eq!(free_root(r), Ok(4018));
}

#[test]
fn a_big_child_gets_a_chunk_of_its_own_behind_the_newest() {
    let r = root(8);
    let small = child(r, 16);
    let newest = tree_of(r).first();
    let big = child(r, 1000); // more than a quarter of the next chunk (512)
    assert_eq!(tree_of(r).first(), newest, "the newest chunk keeps its place");
    let after = child(r, 16);
    assert_eq!(after, small + 16, "and its room");
    let huge = child(r, 6 << 20); // bigger than a segment
    fill(huge, 6 << 20, 0x77);
    assert_eq!(tree_of(huge) as *const Root, tree_of(r) as *const Root);
    assert_eq!(free_root(big), Err(NotARoot::Child));
    assert_eq!(free_root(r), Ok(5));
    assert_eq!(allocate_child(huge, 1), Err(Error::InvalidParameter));
}

#[test]
fn large_blocks_are_reused_and_give_their_memory_back() {
    let first = root(1 << 20);
    fill(first, 1 << 20, 0xAB);
    assert_eq!(free_root(first), Ok(1));
    let second = root(1 << 20);
    assert_eq!(second, first, "a freed span of the same length is reused");
    #[cfg(target_os = "linux")]
    assert!(holds(second, 1 << 20, 0), "its memory went back to the OS");
    assert_eq!(free_root(second), Ok(1));
    let huge = root(10 << 20);
    assert_eq!(free_root(huge), Ok(1));
    assert_eq!(root(9 << 20), huge, "a freed huge segment is reused");
}

#[test]
fn reallocating_a_root_moves_its_bytes_and_children() {
    let r = root(16);
    fill(r, 16, 0x11);
    let c = child(r, 8);
    let grown = reallocate(r, 64).unwrap().addr();
    assert!(holds(grown, 16, 0x11));
    assert_eq!(free_root(r), Err(NotARoot::Unknown), "the old root is gone");
    assert_eq!(allocate_child(r, 8), Err(Error::InvalidParameter));
    let grandchild = child(c, 8);
    // The tree keeps the old root's slot as its header (see `root`): its
    // children were never touched.
    assert_eq!(tree_of(grandchild) as *const Root as usize, r - ROOT_HEADER);
    assert_eq!(tree_of(child(grown, 8)) as *const Root as usize, r - ROOT_HEADER, "the new root's children too");
    let again = reallocate(grown, 8).unwrap().addr();
    assert_eq!(free_root(grown), Err(NotARoot::Unknown), "a reallocated new root is gone as well");
    assert!(holds(again, 8, 0x11));
    assert_eq!(free_root(again), Ok(4), "the root, its child, the grandchild and the new root's child");
    assert_eq!(allocate_child(c, 8), Err(Error::InvalidParameter));
    assert_eq!(allocate_child(grandchild, 8), Err(Error::InvalidParameter));
}

/// A big root reallocated with its children keeps its span as its tree's
/// header, but not the memory of its dead client bytes.
#[test]
fn a_big_root_moved_gives_its_client_bytes_memory_back() {
    let big = root(1 << 20);
    fill(big, 1 << 20, 0xAB);
    let c = child(big, 8);
    let small = reallocate(big, 100).unwrap().addr();
    assert!(holds(small, 100, 0xAB));
    assert_eq!(free_root(c), Err(NotARoot::Child), "the tree lives on");
    #[cfg(target_os = "linux")]
    assert!(holds(big + (64 << 10), 1 << 19, 0), "the old bytes' memory went back to the OS");
    assert!(free_root(small).is_ok());
}

/// A root with no child (its own or another thread's) is reallocated as
/// `realloc` would: a new root, the old slot given back at once.
#[test]
fn reallocating_a_root_without_children_gives_its_slot_back() {
    // The thread's heap first: it may be an exited thread's, with its trees.
    let probe = root(8);
    let base = counts();
    let r = root(100);
    fill(r, 100, 0x5A);
    let grown = reallocate(r, 5000).unwrap().addr();
    assert!(holds(grown, 100, 0x5A));
    let during = counts();
    assert_eq!((during.live_roots, during.live_bytes), (base.live_roots + 1, base.live_bytes + 5000));
    // SAFETY: the old root's slot, handed out once, ours for good.
    let old = unsafe { Root::at(r - ROOT_HEADER) };
    assert_eq!(root::kind(old.state()), root::FREE, "the old slot was given back, not kept as a tree");
    assert_eq!(free_root(r), Err(NotARoot::Unknown));
    assert_eq!(free_root(grown), Ok(1));
    assert_eq!(counts().live_bytes, base.live_bytes);
    assert_eq!(free_root(probe), Ok(1));
}

#[test]
fn reallocating_a_child_copies_what_it_holds_and_keeps_it() {
    let r = root(8);
    let first = child(r, 20);
    let second = child(r, 40);
    fill(first, 20, 0x22);
    fill(second, 40, 0x33);
    let copy = reallocate(first, 100).unwrap().addr();
    assert!(holds(copy, 20, 0x22), "the child's bytes");
    assert!(holds(first, 20, 0x22) && holds(second, 40, 0x33), "the old child lives on");
    let alone = child(r, 5000); // a chunk of its own
    fill(alone, 5000, 0x44);
    let smaller = reallocate(alone, 3000).unwrap().addr();
    assert!(holds(smaller, 3000, 0x44));
    assert_eq!(free_root(r), Ok(6));
}

#[test]
fn counts_are_kept_per_heap() {
    // The thread's heap first: it may be an exited thread's, with its trees.
    thread::heap();
    let before = counts();
    let r = root(100);
    let c = child(r, 20);
    child(c, 3);
    let during = counts();
    assert_eq!(during.live_roots - before.live_roots, 1);
    assert_eq!(during.live_children - before.live_children, 2);
    assert_eq!(during.live_bytes - before.live_bytes, 123);
    assert_eq!(during.allocations - before.allocations, 3);
    assert_eq!(free_root(r), Ok(3));
    let after = counts();
    // The heap may be an exited thread's, adopted with its live trees.
    assert_eq!(
        (after.live_roots, after.live_children, after.live_bytes),
        (before.live_roots, before.live_children, before.live_bytes)
    );
    assert!(after.peak_bytes >= before.live_bytes + 123);
    assert_eq!(after.allocations - before.allocations, 3);
    assert!(stats().allocations >= 3, "stats adds every heap's");
}

#[test]
fn a_refused_segment_is_no_memory_and_changes_nothing() {
    let r = root(8);
    let before = counts();
    // Roots of one class until its pages need a new segment, refused.
    let mut made = Vec::new();
    let refused = loop {
        crate::fault::fail_allocation_after(Some(0));
        match allocate_root(2000) {
            Ok(block) => made.push(block.addr()),
            Err(error) => break error,
        }
    };
    crate::fault::fail_allocation_after(None);
    assert_eq!(refused, Error::NoMemory);
    crate::fault::fail_allocation_after(Some(0));
    assert_eq!(allocate_root(u32::MAX), Err(Error::NoMemory), "a huge block refused");
    crate::fault::fail_allocation_after(Some(0));
    assert_eq!(allocate_child(r, u32::MAX), Err(Error::NoMemory), "a huge child refused");
    crate::fault::fail_allocation_after(None);
    let after = counts();
    assert_eq!(after.live_roots - before.live_roots, made.len() as u64);
    assert_eq!(after.live_children, before.live_children, "the tree is unchanged");
    assert_eq!(free_root(r), Ok(1));
    for &addr in &made {
        assert_eq!(free_root(addr), Ok(1));
    }
    // The emptied pages serve other classes, each page once: blocks of two
    // classes, filled, keep their bytes. Counted from the pages the roots
    // took, not from a whole segment: a test thread may have adopted an
    // exited thread's heap, whose segment other blocks used before.
    let emptied: std::collections::HashSet<usize> = made.iter().map(|addr| addr >> PAGE_SHIFT).collect();
    // Every page, until the OS would have to be asked.
    let mut blocks = Vec::new();
    loop {
        let size = 100 + blocks.len() as u32 % 2 * 100;
        crate::fault::fail_allocation_after(Some(0));
        match allocate_root(size) {
            Ok(block) => blocks.push((block.addr(), size)),
            Err(_) => break,
        }
    }
    // Slots of 128 and 224 bytes: more than 256 bytes a block means pages unused.
    assert!(
        blocks.len() > emptied.len() * PAGE_SIZE / 256,
        "the {} emptied pages were used: {} blocks",
        emptied.len(),
        blocks.len()
    );
    for (n, &(addr, size)) in blocks.iter().enumerate() {
        fill(addr, size as usize, n as u8);
    }
    assert!(blocks.iter().enumerate().all(|(n, &(addr, size))| holds(addr, size as usize, n as u8)), "no page twice");
    crate::fault::fail_allocation_after(None);
}

/// Once every block went back, blocks of other sizes need no new segment:
/// the emptied class pages serve them (the C suite's `oom_never_aborts`
/// shape, with the OS refusing every new mapping).
#[test]
fn emptied_pages_serve_other_classes_without_a_new_segment() {
    let first = root(16);
    let mut roots = vec![first];
    for _ in 0..200_000 {
        roots.push(root(16));
    }
    for _ in 0..100_000 {
        child(first, 0);
    }
    for &r in roots.iter().rev() {
        assert!(free_root(r).is_ok());
    }
    crate::fault::fail_allocation_after(Some(0));
    for seed in 0..50u32 {
        let mut blocks = vec![root(seed % 500)];
        for k in 1..=64u32 {
            let size = (seed + k * 37) % 500;
            let parent = blocks[(k as usize - 1) / 2];
            let block = allocate_child(parent, size).unwrap_or_else(|e| panic!("seed {seed}, block {k}: {e:?}"));
            fill(block.addr(), size as usize, k as u8);
            blocks.push(block.addr());
        }
        assert_eq!(free_root(blocks[0]), Ok(65));
    }
    assert_eq!(crate::fault::fail_allocation_after(None), Some(0), "no new mapping was needed");
}

/// A page another block used comes back as a root page with that block's
/// bytes in it. A slot of it not handed out yet must read as free to every
/// path, or a free or `MAPIAllocateMore` of its address would take a
/// client's bytes for a live root's header (and a child would be linked
/// through them).
#[test]
fn a_slot_not_handed_out_is_no_root_whatever_its_page_held() {
    const SIZE: u32 = 3000;
    // Bytes whose every aligned word reads as a live root's state, in a
    // large root's page of its own.
    let big = root(40_000);
    fill(big, 40_000, 0x01);
    // SAFETY: a live root of ours, in a published segment.
    let page = unsafe { segment::Segment::of(big) }.page_of(big).base() as usize;
    assert_eq!(free_root(big), Ok(1));
    // Its page, kept resident, is the next one a class takes.
    let mut made = Vec::new();
    let first = loop {
        let r = root(SIZE);
        made.push(r);
        if r >> PAGE_SHIFT == page >> PAGE_SHIFT {
            break r;
        }
        assert!(made.len() < 100_000, "the large root's page never came back");
    };
    // SAFETY: a live root of ours, in a published segment.
    let slot = unsafe { segment::Segment::of(first) }.page_of(first).slot_size();
    let next = first + slot;
    assert!((next + slot) >> PAGE_SHIFT == page >> PAGE_SHIFT, "a slot after it in the page");
    assert_eq!(free_root(next), Err(NotARoot::Unknown), "free of a slot not handed out");
    assert_eq!(allocate_child(next, 8), Err(Error::InvalidParameter), "parent in a slot not handed out");
    for r in made {
        assert_eq!(free_root(r), Ok(1));
    }
}
