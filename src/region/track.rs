//! Telling valgrind (memcheck) and AddressSanitizer about blocks that come
//! from the library's own pages, so they still report a write past the end
//! of any MAPI block and a read of a freed one (SPEC §3, "Memory and the
//! tools"). Neither tool sees those blocks by itself: memcheck watches
//! `malloc`, and ASan's shadow of memory we `mmap` says "addressable".
//!
//! The tools are detected once, when the library is loaded: memcheck by
//! client requests (which any other CPU runs as a few rotates that undo
//! themselves; other valgrind tools are left alone), ASan by looking its
//! poisoning functions up with `dlsym`, so the shipped library needs no
//! ASan runtime and works with a program built with `-fsanitize=address`.
//! With neither, `TOOL` is 0 and every hook is one load and a branch that
//! is never taken; the callers check `enabled()` once per call and keep
//! their fast paths, and the layout is the one without tools.
//!
//! With a tool, the memory's states are kept like this:
//! - a span of pages, when it starts holding slots: no access at all;
//! - a slot's header (ours), when the slot is handed out: accessible, for
//!   good (memcheck checks the library's own reads too, and the headers of
//!   freed slots are still read by validation and the free lists);
//! - a block: exactly the bytes asked for (ASan unpoison; for memcheck, a
//!   root is a `MALLOCLIKE_BLOCK`, a child a chunk of its tree's pool, see
//!   below), and no access again when its tree is freed. Every block is
//!   followed by a redzone of `REDZONE` bytes the callers add to its slot
//!   or its run of granules, so the byte past its end is never the next
//!   block's or a header;
//! - a root reallocated into a face (see `root`): its client bytes are
//!   freed for the tool at the move, and the face is a block of its own.
//!   The tree's pool stays anchored at the client address of the root it
//!   was made with (that slot stays, `MOVED`, until the tree dies), so its
//!   children, whose chunks name that slot, keep finding it, and its death
//!   by a face's free is one `DESTROY_MEMPOOL` there (`moved_tree_freed`);
//! - a freed slot waits in its heap's `Quarantine` before it is reused,
//!   so a read of a freed block finds it still inaccessible.
//!
//! Memcheck learns of a tree's death from whichever thread frees it, and at
//! once, children included: a root another thread frees is killed there
//! (`remote`), and its owner, which alone may walk the tree's chunk list,
//! may never call again (an idle thread), so a child told of one by one at
//! that release would stay live to memcheck, a read of it unreported and,
//! at exit, the child "definitely lost". So each live root anchors a
//! memcheck mempool at its client address, made with the root (before any
//! thread can see it, so that no two threads ever race to make it: memcheck
//! aborts on a second `CREATE_MEMPOOL`); every child of the tree, its
//! owner's or a guest made by another thread, is a chunk of that pool; and
//! the tree's death, on whichever thread, is one `DESTROY_MEMPOOL`, which
//! makes every chunk no access with no list walked. (The owner's own free
//! walks its chunks anyway: it frees its children from the pool one by one
//! first, so that memcheck's reports of them say where each was made and
//! freed, as they do of a root; a pool's destruction keeps no such
//! history.) Memcheck's leak check counts pool chunks as blocks, as it does
//! `MALLOCLIKE` ones (it drops only a `malloc` block that holds pool
//! chunks, and no root holds a child). The release of the chunks later
//! (drain, guest sweep) tells memcheck nothing more; ASan, which has no
//! pools, is told there, so a read of a child of a tree another thread
//! freed goes unreported by ASan until the owner's next call (the killer
//! cannot find the children: their chunks are the owner's plain stores).
//! The price is memcheck's, not ours: it keeps a hash table per pool (769
//! chains in valgrind 3.19, about 6 KiB), so each live root costs that much
//! more under memcheck (100,000 live trees: 700 MB instead of 80). A pool
//! made only at a tree's first child would need a flag per root that the
//! owner and guests could swap (they race to make it), and the one word of
//! a root header other threads write is its state, which every validation
//! and kill compares whole; made with the root, the pool needs none.
//!
//! A child's redzone also keeps the size it asked for in its last word:
//! `MAPIReallocateBuffer` copies exactly that many bytes of an old child,
//! where without a tool it copies up to the next child (bytes the tools now
//! rightly refuse).
//!
//! Valgrind's client requests are written for x86_64 and x86 only; on
//! other architectures only ASan is detected, and on targets that are not
//! Linux nothing is (every hook is then a no-op).

use core::cell::Cell;
use core::ptr;
use core::sync::atomic::{AtomicU8, Ordering};

/// Bytes after each block (and before the next block or header) that no
/// one may touch, when a tool is present: one granule.
pub const REDZONE: usize = super::GRANULE;
pub const REDZONE_GRANULES: usize = 1;

const NONE: u8 = 0;
const VALGRIND: u8 = 1;
const ASAN: u8 = 2;

/// Which tool watches the process, set once at load.
static TOOL: AtomicU8 = AtomicU8::new(NONE);

/// Whether a tool is present: the one check the owner's paths pay.
#[inline(always)]
pub fn enabled() -> bool {
    TOOL.load(Ordering::Relaxed) != NONE
}

#[inline(always)]
fn tool() -> u8 {
    TOOL.load(Ordering::Relaxed)
}

/// Runs when the library is loaded, before any thread can call it (the
/// flag must not change once a block exists: a block made without a
/// redzone would be freed as if it had one).
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static DETECT_AT_LOAD: extern "C" fn() = detect_at_load;

#[cfg(target_os = "linux")]
extern "C" fn detect_at_load() {
    let found = if valgrind::memcheck() {
        VALGRIND
    } else if asan::look_up() {
        ASAN
    } else {
        NONE
    };
    TOOL.store(found, Ordering::Relaxed);
}

/// A span of `len` bytes at `base` starts holding slots: nothing in it may
/// be touched until a slot's header or a block is handed out.
#[inline]
pub fn span_started(base: *mut u8, len: usize) {
    match tool() {
        NONE => {}
        VALGRIND => valgrind::no_access(base as usize, len),
        _ => asan::poison(base as usize, len),
    }
}

/// A slot's header of `len` bytes at `slot` is handed out: ours from now
/// on, and defined, as it is without a tool (a reused slot's state word
/// carries its generation on; a fresh one's is the zero the OS mapped).
/// ASan does not check the library's own (uninstrumented) loads and
/// stores, so only memcheck needs telling.
#[inline]
pub fn header(slot: usize, len: usize) {
    if tool() == VALGRIND {
        valgrind::defined(slot, len);
    }
}

/// A root of `size` bytes at `addr` was made, and not yet handed out; its
/// tree's pool with it (memcheck).
#[cold]
pub fn root_made(addr: usize, size: usize) {
    match tool() {
        NONE => {}
        VALGRIND => {
            valgrind::malloc_like(addr, size);
            valgrind::create_pool(addr);
        }
        _ => asan::unpoison(addr, size),
    }
}

/// The root of `size` bytes at `addr` was freed, its tree with it: told
/// once per tree, by the thread whose free ended it (the owner's free, or
/// another thread's kill). Memcheck forgets every child at once, the
/// owner's and the guests; ASan is told of them at their release
/// (`children_freed`).
#[cold]
pub fn root_freed(addr: usize, size: usize) {
    match tool() {
        NONE => {}
        VALGRIND => {
            valgrind::free_like(addr);
            valgrind::destroy_pool(addr);
        }
        _ => asan::poison(addr, size),
    }
}

/// A face of `size` bytes at `addr` was made (see `root`): a block, with
/// no pool of its own, its tree's being anchored where the tree was made.
#[cold]
pub fn face_made(addr: usize, size: usize) {
    match tool() {
        NONE => {}
        VALGRIND => valgrind::malloc_like(addr, size),
        _ => asan::unpoison(addr, size),
    }
}

/// The client bytes of `size` at `addr`, a root moved to a face or a face,
/// are freed while their tree lives on: its pool stays where it is.
#[cold]
pub fn bytes_moved_out(addr: usize, size: usize) {
    match tool() {
        NONE => {}
        VALGRIND => valgrind::free_like(addr),
        _ => asan::poison(addr, size),
    }
}

/// The moved tree whose first root's client address was `tree` died (its
/// face was freed, and told as `bytes_moved_out`): memcheck forgets every
/// child at once, as at `root_freed`.
#[cold]
pub fn moved_tree_freed(tree: usize) {
    if tool() == VALGRIND {
        valgrind::destroy_pool(tree);
    }
}

/// A child of `size` bytes at `addr` was made in the tree whose root is at
/// `tree` (a client address); `end` is the end of its redzone, whose last
/// word keeps `size` (see `child_size`).
///
/// A tree whose pool is gone died after the caller validated it (another
/// thread freed it meanwhile): its child is dead at birth, and stays no
/// access for memcheck. The check and the pool's use are two requests,
/// not one: a free landing between them (a client racing its own free
/// against an allocation on the same tree) is reported as an illegal pool.
#[cold]
pub fn child_made(tree: usize, addr: usize, size: u32, end: usize) {
    let word = end - core::mem::size_of::<u32>();
    match tool() {
        NONE => return,
        VALGRIND => valgrind::undefined(word, core::mem::size_of::<u32>()),
        _ => {}
    }
    // SAFETY: `word` is the last word of the child's redzone granule, in a
    // chunk of the calling heap, 4-aligned (granules are 16); memcheck was
    // just told it is writable, and ASan does not check our stores.
    unsafe { (word as *mut u32).write(size) };
    match tool() {
        VALGRIND => {
            valgrind::no_access(word, core::mem::size_of::<u32>());
            if valgrind::pool_exists(tree) {
                valgrind::pool_alloc(tree, addr, size as usize);
            }
        }
        _ => asan::unpoison(addr, size as usize),
    }
}

/// The size a child asked for, from the redzone that ends at `end`.
#[cold]
pub fn child_size(end: usize) -> usize {
    let word = end - core::mem::size_of::<u32>();
    if tool() == VALGRIND {
        valgrind::defined(word, core::mem::size_of::<u32>());
    }
    // SAFETY: written by `child_made` for the child whose redzone ends at
    // `end`, which is still live; readable for memcheck just above.
    let size = unsafe { (word as *const u32).read() };
    if tool() == VALGRIND {
        valgrind::no_access(word, core::mem::size_of::<u32>());
    }
    size as usize
}

/// The children of a chunk of a dead tree are released: `starts` yields
/// the address of each, `[from, to)` is the chunk's room for children, all
/// poisoned again for ASan. Memcheck frees each from `pool`, the tree's
/// pool if it is still there (the tree's owner frees it, and destroys the
/// pool after: each child then keeps its history, where it was made and
/// freed, for memcheck's reports); else it was told at the tree's death
/// (`root_freed`), and is not told twice.
#[cold]
pub fn children_freed(pool: Option<usize>, starts: impl Iterator<Item = usize>, from: usize, to: usize) {
    match (tool(), pool) {
        (VALGRIND, Some(pool)) => starts.for_each(|child| valgrind::pool_free(pool, child)),
        (ASAN, _) => asan::poison(from, to - from),
        _ => {}
    }
}

/// Freed slots held back from reuse, oldest first, linked through the
/// word at `LINK` of each (a header word the slot's free-list link also
/// uses, so no live data is overwritten). Held until they are more than
/// `MAX_BYTES` in all, and always the newest one. Owned by one heap.
#[derive(Debug)]
pub struct Quarantine {
    oldest: Cell<*mut u8>,
    newest: Cell<*mut u8>,
    count: Cell<usize>,
    bytes: Cell<usize>,
}

const LINK: usize = super::page::FREE_LINK_OFFSET;
/// Enough for a test or a debugging session to read what it just freed,
/// small enough not to grow a process noticeably (memcheck's own default
/// for `malloc` is 20 MB).
const MAX_BYTES: usize = 16 << 20;

impl Quarantine {
    #[allow(clippy::declare_interior_mutable_const)] // an initialiser, copied
    pub const EMPTY: Quarantine = Quarantine {
        oldest: Cell::new(ptr::null_mut()),
        newest: Cell::new(ptr::null_mut()),
        count: Cell::new(0),
        bytes: Cell::new(0),
    };

    /// Holds the dead slot `slot` of `bytes` bytes; returns the slots to
    /// release now, oldest first, through `release`.
    ///
    /// # Safety
    /// `slot` is a dead root or chunk slot of the calling heap, handed out
    /// and not yet given back, whose header is accessible to the tools.
    pub unsafe fn hold(&self, slot: *mut u8, bytes: usize, release: impl FnMut(*mut u8)) {
        // SAFETY: the caller's contract.
        unsafe { self.hold_up_to(slot, bytes, MAX_BYTES, release) }
    }

    /// `hold`, with the bound given (the tests use small ones).
    ///
    /// # Safety
    /// As for `hold`.
    unsafe fn hold_up_to(&self, slot: *mut u8, bytes: usize, max_bytes: usize, mut release: impl FnMut(*mut u8)) {
        // SAFETY: by the contract, the header's link word is ours to write.
        unsafe { slot.add(LINK).cast::<*mut u8>().write(ptr::null_mut()) };
        match self.newest.get() {
            // SAFETY: `newest` is a held slot: its link word is ours.
            newest if !newest.is_null() => unsafe { newest.add(LINK).cast::<*mut u8>().write(slot) },
            _ => self.oldest.set(slot),
        }
        self.newest.set(slot);
        self.count.set(self.count.get() + 1);
        self.bytes.set(self.bytes.get() + bytes);
        while self.bytes.get() > max_bytes && self.count.get() > 1 {
            let oldest = self.oldest.get();
            // SAFETY: held slots hold their successor's address at LINK.
            let next = unsafe { oldest.add(LINK).cast::<*mut u8>().read() };
            self.oldest.set(next);
            self.count.set(self.count.get() - 1);
            self.bytes.set(self.bytes.get() - slot_bytes_of(oldest));
            release(oldest);
        }
    }
}

/// The bytes a held slot counted for, found again from its page.
fn slot_bytes_of(slot: *mut u8) -> usize {
    // SAFETY: a held slot lies in a published segment of the calling heap.
    let segment = unsafe { super::segment::Segment::of(slot as usize) };
    segment.page_of(slot as usize).slot_size()
}

#[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "x86")))]
mod valgrind {
    //! Valgrind's client requests: a request number and up to five
    //! arguments in memory, its address in the accumulator, a default
    //! result in edx/rdx, then a "special instruction sequence" that the
    //! real CPU runs as a no-op (rotates of the destination index register
    //! adding up to whole turns, then an exchange of a register with
    //! itself) and valgrind's JIT recognises, replacing the default with
    //! its answer. The numbers are valgrind's public ABI (valgrind.h and
    //! memcheck.h).

    const RUNNING_ON_VALGRIND: usize = 0x1001;
    const MALLOCLIKE_BLOCK: usize = 0x1301;
    const FREELIKE_BLOCK: usize = 0x1302;
    const CREATE_MEMPOOL: usize = 0x1303;
    const DESTROY_MEMPOOL: usize = 0x1304;
    const MEMPOOL_ALLOC: usize = 0x1305;
    const MEMPOOL_FREE: usize = 0x1306;
    const MEMPOOL_EXISTS: usize = 0x130a;
    /// Memcheck's own requests start at ('M' << 24 | 'C' << 16).
    const MEMCHECK: usize = (b'M' as usize) << 24 | (b'C' as usize) << 16;
    const MAKE_MEM_NOACCESS: usize = MEMCHECK;
    const MAKE_MEM_UNDEFINED: usize = MEMCHECK + 1;
    const MAKE_MEM_DEFINED: usize = MEMCHECK + 2;

    /// Sends `args` (the request and its arguments); `default` is the
    /// answer when no valgrind is there to give one.
    #[inline(always)]
    fn request(default: usize, args: [usize; 6]) -> usize {
        let result: usize;
        // SAFETY: on a real CPU the sequence rotates edi/rdi by a multiple
        // of its width (leaving it as it was, though it is declared
        // clobbered) and exchanges ebx/rbx with itself; it reads `args`
        // only under valgrind, which then changes the tool's view of
        // memory, never its contents. Flags are clobbered by the rotates.
        unsafe {
            #[cfg(target_arch = "x86_64")]
            core::arch::asm!(
                "rol rdi, 3", "rol rdi, 13", "rol rdi, 61", "rol rdi, 51",
                "xchg rbx, rbx",
                in("rax") args.as_ptr(),
                inout("rdx") default => result,
                inout("rdi") 0usize => _,
                options(nostack),
            );
            #[cfg(target_arch = "x86")]
            core::arch::asm!(
                "rol edi, 3", "rol edi, 13", "rol edi, 29", "rol edi, 19",
                "xchg ebx, ebx",
                in("eax") args.as_ptr(),
                inout("edx") default => result,
                inout("edi") 0usize => _,
                options(nostack),
            );
        }
        result
    }

    /// Whether the process runs under valgrind's memcheck: other tools
    /// (callgrind, massif, helgrind) must see the library as it runs
    /// without one, so memcheck must answer a request of its own, which
    /// it does with -1 (marking no bytes defined, here) and others with
    /// the default.
    pub fn memcheck() -> bool {
        request(0, [RUNNING_ON_VALGRIND, 0, 0, 0, 0, 0]) != 0 && request(0, [MAKE_MEM_DEFINED, 0, 0, 0, 0, 0]) != 0
    }

    /// A block at `addr` of `size` bytes, contents undefined. No redzone
    /// is given: memcheck would make the one in front (our header) no
    /// access at the free; the callers' redzones are already no access.
    pub fn malloc_like(addr: usize, size: usize) {
        request(0, [MALLOCLIKE_BLOCK, addr, size, 0, 0, 0]);
    }

    pub fn free_like(addr: usize) {
        request(0, [FREELIKE_BLOCK, addr, 0, 0, 0, 0]);
    }

    /// A pool anchored at `pool`, with no redzones of memcheck's (the
    /// callers' are already no access) and chunks undefined when made.
    pub fn create_pool(pool: usize) {
        request(0, [CREATE_MEMPOOL, pool, 0, 0, 0, 0]);
    }

    /// Every chunk of the pool becomes no access, and the pool is gone.
    pub fn destroy_pool(pool: usize) {
        request(0, [DESTROY_MEMPOOL, pool, 0, 0, 0, 0]);
    }

    pub fn pool_alloc(pool: usize, addr: usize, size: usize) {
        request(0, [MEMPOOL_ALLOC, pool, addr, size, 0, 0]);
    }

    /// Like `free_like`: the chunk keeps its history in memcheck's queue
    /// of freed blocks, for the reports of a later access.
    pub fn pool_free(pool: usize, addr: usize) {
        request(0, [MEMPOOL_FREE, pool, addr, 0, 0, 0]);
    }

    pub fn pool_exists(pool: usize) -> bool {
        request(0, [MEMPOOL_EXISTS, pool, 0, 0, 0, 0]) != 0
    }

    pub fn no_access(addr: usize, len: usize) {
        request(0, [MAKE_MEM_NOACCESS, addr, len, 0, 0, 0]);
    }

    pub fn undefined(addr: usize, len: usize) {
        request(0, [MAKE_MEM_UNDEFINED, addr, len, 0, 0, 0]);
    }

    pub fn defined(addr: usize, len: usize) {
        request(0, [MAKE_MEM_DEFINED, addr, len, 0, 0, 0]);
    }
}

#[cfg(not(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "x86"))))]
mod valgrind {
    //! No client requests written for this target: never detected.
    #[cfg(target_os = "linux")]
    pub fn memcheck() -> bool {
        false
    }
    pub fn malloc_like(_: usize, _: usize) {}
    pub fn free_like(_: usize) {}
    pub fn create_pool(_: usize) {}
    pub fn destroy_pool(_: usize) {}
    pub fn pool_alloc(_: usize, _: usize, _: usize) {}
    pub fn pool_free(_: usize, _: usize) {}
    pub fn pool_exists(_: usize) -> bool {
        false
    }
    pub fn no_access(_: usize, _: usize) {}
    pub fn undefined(_: usize, _: usize) {}
    pub fn defined(_: usize, _: usize) {}
}

mod asan {
    //! ASan's public interface for custom allocators, found at load with
    //! `dlsym` in whatever the process linked: the runtime comes with a
    //! program built with `-fsanitize=address`, never with this library.

    use core::sync::atomic::{AtomicUsize, Ordering};

    /// `void __asan_(un)poison_memory_region(void const volatile *, size_t)`
    type Region = unsafe extern "C" fn(*const u8, usize);

    static POISON: AtomicUsize = AtomicUsize::new(0);
    static UNPOISON: AtomicUsize = AtomicUsize::new(0);

    /// Finds both functions; true if the process has them.
    #[cfg(target_os = "linux")]
    pub fn look_up() -> bool {
        // SAFETY: dlsym with the default handle and NUL-terminated names
        // only searches the loaded objects.
        let (poison, unpoison) = unsafe {
            (
                libc::dlsym(libc::RTLD_DEFAULT, b"__asan_poison_memory_region\0".as_ptr().cast()),
                libc::dlsym(libc::RTLD_DEFAULT, b"__asan_unpoison_memory_region\0".as_ptr().cast()),
            )
        };
        if poison.is_null() || unpoison.is_null() {
            return false;
        }
        POISON.store(poison as usize, Ordering::Relaxed);
        UNPOISON.store(unpoison as usize, Ordering::Relaxed);
        true
    }

    fn call(function: &AtomicUsize, addr: usize, len: usize) {
        let address = function.load(Ordering::Relaxed);
        if address == 0 {
            return;
        }
        // SAFETY: a non-zero address was found by `look_up` under the name
        // of a function of type `Region`, in an object that stays loaded
        // (the ASan runtime is never unloaded).
        let function: Region = unsafe { core::mem::transmute::<usize, Region>(address) };
        // SAFETY: the range lies in memory the calling heap owns; ASan only
        // writes its shadow of it.
        unsafe { function(addr as *const u8, len) }
    }

    pub fn poison(addr: usize, len: usize) {
        call(&POISON, addr, len)
    }

    pub fn unpoison(addr: usize, len: usize) {
        call(&UNPOISON, addr, len)
    }
}

#[cfg(test)]
mod tests {
    use super::super::page::Kind;
    use super::super::segment::Segment;
    use super::*;

    #[test]
    fn no_tool_is_detected_in_the_test_binary() {
        // Nothing runs the test binary under valgrind or links ASan in; were
        // the flag set, every heap of these tests would take the tool paths.
        assert!(!enabled());
    }

    #[test]
    fn the_quarantine_lets_the_oldest_go_first_and_keeps_the_newest() {
        // Slots of 4 KiB in a span of a segment of this test's own.
        let segment = Segment::create(ptr::null(), 1).expect("a segment");
        let span = segment.take_pages(1).expect("a page");
        segment.start_span(span, Kind::Root, 1, 4096);
        let slot = |i: usize| span.base().wrapping_add(i * 4096);
        let quarantine = Quarantine::EMPTY;
        let mut released = Vec::new();
        for i in 0..6 {
            // SAFETY: slots of the span above, each held once.
            unsafe { quarantine.hold_up_to(slot(i), 4096, 3 * 4096, |old| released.push(old)) };
        }
        assert_eq!(released, [slot(0), slot(1), slot(2)], "oldest first, down to the bound");
        assert_eq!(quarantine.count.get(), 3);
        assert_eq!(quarantine.bytes.get(), 3 * 4096);
        released.clear();
        // SAFETY: as above.
        unsafe { quarantine.hold_up_to(slot(6), 4096, 0, |old| released.push(old)) };
        assert_eq!(released, [slot(3), slot(4), slot(5)]);
        assert_eq!(quarantine.oldest.get(), slot(6), "the newest stays, whatever its size");
        assert_eq!(quarantine.count.get(), 1);
    }
}
