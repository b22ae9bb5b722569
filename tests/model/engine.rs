//! A model-based checker for libmapi32, shared by the seeded property tests
//! (tests/model.rs), the regression replays and the cargo-fuzz target
//! (fuzz/fuzz_targets/ops.rs).
//!
//! An [`Engine`] runs a sequence of operations chosen by a [`Choices`] —
//! a seeded PRNG or the fuzzer's bytes — through the library's exported C
//! API only, and checks each result against a model: which blocks are live,
//! which tree each belongs to, and what was written into each. Any
//! disagreement panics with the step and the seed or input that led there.
//!
//! Operations: allocate a root; allocate more on a root or on a child; wide
//! bursts of children; free a root (then every block of it must be dead);
//! free a child (a no-op); double and stale frees; stale, interior and
//! foreign parents and frees; NULL arguments; huge sizes; injected
//! allocation failures (when the library was built with `fault-injection`);
//! and, for several threads, trees shared between them, including
//! `MAPIAllocateMore` racing `MAPIFreeBuffer` on the same root.
//!
//! Threads. Every engine in the process, on any thread, goes through one
//! gate: ordinary calls hold it shared; a call that passes a *freed* address
//! (stale free, stale parent, the dead-block probes after a free) holds it
//! exclusively, and first makes sure that no engine has been handed that
//! address again (SPEC §2's known limit: a stale free of a reissued address
//! is a real free). That keeps the model exact however many engines run.

#![allow(dead_code)] // each includer uses a different part

use mapi32::{
    MAPIAllocateBuffer, MAPIAllocateMore, MAPIFreeBuffer, LPVOID, MAPI_E_INVALID_PARAMETER, MAPI_E_NOT_ENOUGH_MEMORY,
    SCODE, S_OK, ULONG,
};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

// ------------------------------------------------------------------------
// Choices: where the sequence comes from
// ------------------------------------------------------------------------

/// The source of every decision an engine makes.
pub trait Choices {
    /// A number below `bound` (which is at least 1).
    fn below(&mut self, bound: u32) -> u32;
    /// No more input: the engine stops at the next step.
    fn exhausted(&self) -> bool;
}

/// SplitMix64: tiny, seedable, and good enough to spread test cases.
#[derive(Clone, Debug)]
pub struct SeededRng(u64);

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        SeededRng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl Choices for SeededRng {
    fn below(&mut self, bound: u32) -> u32 {
        (((self.next_u64() >> 32) * u64::from(bound.max(1))) >> 32) as u32
    }

    fn exhausted(&self) -> bool {
        false
    }
}

/// The fuzzer's input, read as a stream of decisions; zeros once it runs out.
#[derive(Debug)]
pub struct InputBytes<'a> {
    data: &'a [u8],
    position: usize,
}

impl<'a> InputBytes<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        InputBytes { data, position: 0 }
    }

    fn byte(&mut self) -> u32 {
        let byte = self.data.get(self.position).copied().unwrap_or(0);
        self.position += 1;
        u32::from(byte)
    }
}

impl Choices for InputBytes<'_> {
    fn below(&mut self, bound: u32) -> u32 {
        let bound = bound.max(1);
        let mut value = self.byte();
        let mut span = 256u64;
        while span < u64::from(bound) {
            value = value << 8 | self.byte();
            span <<= 8;
        }
        value % bound
    }

    fn exhausted(&self) -> bool {
        self.position >= self.data.len()
    }
}

// ------------------------------------------------------------------------
// The process-wide gate and the record of every live block
// ------------------------------------------------------------------------

/// Held shared by every ordinary call, exclusively around calls on freed
/// addresses; see the module comment.
static GATE: RwLock<()> = RwLock::new(());
/// Every block any engine holds (or may hold) live right now. Written only
/// under the shared gate, so under the exclusive gate it is exact.
static LIVE: Mutex<BTreeSet<usize>> = Mutex::new(BTreeSet::new());
/// Trees that any thread may use or free.
static SHARED_TREES: Mutex<Vec<Arc<SharedTree>>> = Mutex::new(Vec::new());

/// A tree in [`SHARED_TREES`]. `model` is `None` once it has been freed.
#[derive(Debug)]
struct SharedTree {
    root: usize,
    model: Mutex<Option<Tree>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere already fails the test; keep checking meanwhile.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn shared_gate() -> std::sync::RwLockReadGuard<'static, ()> {
    GATE.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn exclusive_gate() -> std::sync::RwLockWriteGuard<'static, ()> {
    GATE.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ------------------------------------------------------------------------
// The model
// ------------------------------------------------------------------------

/// One block the model knows: where, how big, and the tag its bytes hold.
#[derive(Clone, Copy, Debug)]
struct Block {
    addr: usize,
    size: usize,
    tag: u64,
    /// Huge blocks: only their first and last bytes are written.
    sparse: bool,
}

/// A root (`blocks[0]`) and every child allocated onto it or its children.
#[derive(Clone, Debug, Default)]
struct Tree {
    blocks: Vec<Block>,
}

/// The byte a block with `tag` holds at `index`: the tag's bytes first, so
/// that two blocks that overlap or swap show, then one byte repeated, so a
/// whole block is checked with one memcmp (fast even unoptimised).
fn pattern_byte(tag: u64, index: usize) -> u8 {
    if index < 8 {
        tag.to_le_bytes()[index]
    } else {
        (tag.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8 | 1
    }
}

fn fill(block: &Block) {
    // SAFETY: the model only holds live blocks of at least `size` bytes.
    let bytes = unsafe { std::slice::from_raw_parts_mut(block.addr as *mut u8, block.size) };
    if block.sparse {
        let last = block.size - 1;
        bytes[0] = pattern_byte(block.tag, 0);
        bytes[last] = pattern_byte(block.tag, 8);
        return;
    }
    let head = bytes.len().min(8);
    bytes[..head].copy_from_slice(&block.tag.to_le_bytes()[..head]);
    bytes[head..].fill(pattern_byte(block.tag, 8));
}

fn holds_pattern(block: &Block) -> bool {
    // SAFETY: as in `fill`.
    let bytes = unsafe { std::slice::from_raw_parts(block.addr as *const u8, block.size) };
    if block.sparse {
        return bytes[0] == pattern_byte(block.tag, 0) && bytes[block.size - 1] == pattern_byte(block.tag, 8);
    }
    let head = bytes.len().min(8);
    if bytes[..head] != block.tag.to_le_bytes()[..head] {
        return false;
    }
    let rest = &bytes[head..];
    // All bytes equal the first, and the first is right.
    rest.first().map_or(true, |&b| b == pattern_byte(block.tag, 8))
        && rest[1.min(rest.len())..] == rest[..rest.len().saturating_sub(1)]
}

/// Memory the library never handed out, to pass where a block is expected.
struct Foreign {
    heap: Box<[u8; 64]>,
    statics: &'static [u8; 64],
}

static FOREIGN_STATIC: [u8; 64] = [0x5A; 64];

/// What an engine did; the tests print these as figures.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    /// Operations run and checked against the model.
    pub steps: u64,
    /// Calls into the library.
    pub calls: u64,
    /// Roots and children allocated.
    pub roots: u64,
    pub children: u64,
    /// Roots freed, each with its whole tree.
    pub frees: u64,
    /// Calls the library had to refuse or ignore (misuse), all checked.
    pub misuse: u64,
    /// Allocation failures injected, and how many of them a call ran into.
    pub faults_armed: u64,
    pub faults_hit: u64,
    /// Racing `MAPIAllocateMore` on a shared tree, and how many lost the race.
    pub races: u64,
    pub races_lost: u64,
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        self.steps += other.steps;
        self.calls += other.calls;
        self.roots += other.roots;
        self.children += other.children;
        self.frees += other.frees;
        self.misuse += other.misuse;
        self.faults_armed += other.faults_armed;
        self.faults_hit += other.faults_hit;
        self.races += other.races;
        self.races_lost += other.races_lost;
    }
}

/// The library's test hook (feature `fault-injection`): let N allocations
/// of this thread succeed, fail the next; returns what was pending.
pub type FaultHook = extern "C" fn(ULONG) -> ULONG;
pub const NO_FAILURE: ULONG = ULONG::MAX;

#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Injected allocation failures, when the library has the hook.
    pub fault_hook: Option<FaultHook>,
    /// Requests of 2 GiB and more (allowed to succeed or to be refused).
    pub huge_sizes: bool,
    /// Operations on trees shared with other threads.
    pub shared_trees: bool,
    /// Blocks one engine keeps live at most; it frees trees beyond that.
    pub max_live_blocks: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config { fault_hook: None, huge_sizes: true, shared_trees: false, max_live_blocks: 3000 }
    }
}

fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("MAPI32_MODEL_TRACE").map_or(false, |v| v == "1"))
}

/// What the fuzz target runs, and the regression replays with it.
pub fn fuzz_config(fault_hook: Option<FaultHook>) -> Config {
    Config { fault_hook, huge_sizes: true, shared_trees: false, max_live_blocks: 2000 }
}

/// Fails the check with everything needed to replay it.
macro_rules! ensure {
    ($engine:expr, $cond:expr, $($what:tt)+) => {
        if !$cond {
            panic!("step {} ({}): {}: {}", $engine.counts.steps, $engine.label, stringify!($cond), format!($($what)+));
        }
    };
}

pub struct Engine<'c> {
    choices: &'c mut dyn Choices,
    config: Config,
    label: String,
    trees: Vec<Tree>,
    /// Addresses this engine freed; probed again only under the exclusive gate.
    graveyard: Vec<usize>,
    foreign: Foreign,
    next_tag: u64,
    pub counts: Counts,
}

/// A result and the out-pointer after a call; the out-pointer starts at a
/// sentinel so that "left unwritten" shows.
#[derive(Clone, Copy, Debug)]
struct Call {
    status: SCODE,
    out: usize,
}

const SENTINEL: usize = 0x5E47_1E00;

impl<'c> Engine<'c> {
    /// `label` names the run (seed, thread, input) in every failure message.
    pub fn new(choices: &'c mut dyn Choices, config: Config, label: String, tag_base: u64) -> Self {
        Engine {
            choices,
            config,
            label,
            trees: Vec::new(),
            graveyard: Vec::new(),
            foreign: Foreign { heap: Box::new([0xA5; 64]), statics: &FOREIGN_STATIC },
            next_tag: tag_base << 40,
            counts: Counts::default(),
        }
    }

    /// Runs up to `steps` operations (fewer if the choices run out), then
    /// frees everything and checks that it is all gone.
    pub fn run(&mut self, steps: u64) -> Counts {
        for _ in 0..steps {
            if self.choices.exhausted() {
                break;
            }
            self.step();
            self.counts.steps += 1;
        }
        self.check_everything();
        self.free_everything();
        self.counts
    }

    fn choose(&mut self, bound: usize) -> usize {
        self.choices.below(bound.min(u32::MAX as usize) as u32) as usize
    }

    fn live_blocks(&self) -> usize {
        self.trees.iter().map(|tree| tree.blocks.len()).sum()
    }

    fn step(&mut self) {
        if trace() {
            // A crash inside the library leaves no panic message: this says
            // where it happened (MAPI32_MODEL_TRACE=1).
            eprintln!("{}: step {}", self.label, self.counts.steps);
        }
        if self.live_blocks() > self.config.max_live_blocks {
            let victim = self.choose(self.trees.len());
            self.free_tree(victim);
            return;
        }
        match self.choose(100) {
            0..=13 => self.op_allocate_root(),
            14..=37 => self.op_allocate_more(),
            38..=41 => self.op_wide_burst(),
            42..=49 => self.op_free_root(),
            50..=53 => self.op_free_child(),
            54..=57 => self.op_stale_pointer(),
            58..=62 => self.op_interior_pointer(),
            63..=65 => self.op_foreign_pointer(),
            66..=68 => self.op_null_arguments(),
            69 => self.op_huge(),
            70..=75 => self.op_verify_tree(),
            76..=83 => self.op_injected_failure(),
            84..=93 => self.op_shared_tree(),
            _ => self.op_allocate_more(),
        }
    }

    // --------------------------------------------------------------------
    // Calling the library
    // --------------------------------------------------------------------

    fn size(&mut self) -> ULONG {
        (match self.choose(100) {
            0..=9 => 0,
            10..=69 => 1 + self.choose(64),
            70..=94 => 65 + self.choose(1024),
            95..=98 => 1025 + self.choose(16 * 1024),
            _ => 16 * 1024 + self.choose(256 * 1024),
        }) as ULONG
    }

    fn tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }

    /// `MAPIAllocateBuffer(size, &out)`; a new block is recorded in LIVE
    /// before the shared gate is let go.
    fn call_allocate_buffer(&mut self, size: ULONG) -> Call {
        let _gate = shared_gate();
        self.raw_allocate_buffer(size)
    }

    fn raw_allocate_buffer(&mut self, size: ULONG) -> Call {
        let mut out = SENTINEL as LPVOID;
        // SAFETY: `out` is a valid out-pointer.
        let status = unsafe { MAPIAllocateBuffer(size, &mut out) };
        self.counts.calls += 1;
        let call = Call { status, out: out as usize };
        if status == S_OK && call.out != 0 && call.out != SENTINEL {
            lock(&LIVE).insert(call.out);
        }
        call
    }

    fn call_allocate_more(&mut self, size: ULONG, parent: usize) -> Call {
        let _gate = shared_gate();
        self.raw_allocate_more(size, parent)
    }

    fn raw_allocate_more(&mut self, size: ULONG, parent: usize) -> Call {
        let mut out = SENTINEL as LPVOID;
        // SAFETY: `out` is a valid out-pointer; any parent value is allowed.
        let status = unsafe { MAPIAllocateMore(size, parent as LPVOID, &mut out) };
        self.counts.calls += 1;
        let call = Call { status, out: out as usize };
        if status == S_OK && call.out != 0 && call.out != SENTINEL {
            lock(&LIVE).insert(call.out);
        }
        call
    }

    fn raw_free(&mut self, pointer: usize) -> ULONG {
        self.counts.calls += 1;
        // SAFETY: any value is allowed.
        unsafe { MAPIFreeBuffer(pointer as LPVOID) }
    }

    fn expect_block(&self, call: Call, size: ULONG, what: &str) {
        ensure!(self, call.status == S_OK, "{what} of {size} bytes: status {:#010x}", call.status as u32);
        ensure!(self, call.out != 0 && call.out != SENTINEL, "{what}: out-pointer {:#x}", call.out);
        ensure!(self, call.out % 16 == 0, "{what}: block {:#x} is not 16-byte aligned", call.out);
    }

    fn expect_refused(&mut self, call: Call, expected: SCODE, what: &str) {
        ensure!(
            self,
            call.status == expected,
            "{what}: status {:#010x}, expected {:#010x}",
            call.status as u32,
            expected as u32
        );
        ensure!(self, call.out == 0, "{what}: out-pointer left at {:#x}, not NULL", call.out);
        self.counts.misuse += 1;
    }

    fn new_block(&mut self, addr: usize, size: ULONG) -> Block {
        let block = Block { addr, size: size as usize, tag: self.tag(), sparse: false };
        fill(&block);
        block
    }

    // --------------------------------------------------------------------
    // Picking from the model
    // --------------------------------------------------------------------

    fn pick_tree(&mut self) -> Option<usize> {
        if self.trees.is_empty() {
            None
        } else {
            Some(self.choose(self.trees.len()))
        }
    }

    /// A tree and one of its blocks: the root a third of the time.
    fn pick_block(&mut self) -> Option<(usize, usize)> {
        let tree = self.pick_tree()?;
        let len = self.trees[tree].blocks.len();
        let block = if self.choose(3) == 0 { 0 } else { self.choose(len) };
        Some((tree, block))
    }

    fn check_tree(&self, tree: &Tree, what: &str) {
        for (index, block) in tree.blocks.iter().enumerate() {
            ensure!(
                self,
                holds_pattern(block),
                "{what}: block {index} of its tree ({:#x}, {} bytes) lost its contents",
                block.addr,
                block.size
            );
        }
    }

    // --------------------------------------------------------------------
    // Operations
    // --------------------------------------------------------------------

    fn op_allocate_root(&mut self) {
        let size = self.size();
        let call = self.call_allocate_buffer(size);
        self.expect_block(call, size, "root");
        let block = self.new_block(call.out, size);
        self.trees.push(Tree { blocks: vec![block] });
        self.counts.roots += 1;
    }

    fn op_allocate_more(&mut self) {
        let Some((tree, parent)) = self.pick_block() else { return self.op_allocate_root() };
        let size = self.size();
        let parent_addr = self.trees[tree].blocks[parent].addr;
        let call = self.call_allocate_more(size, parent_addr);
        self.expect_block(call, size, if parent == 0 { "child of a root" } else { "child of a child" });
        let block = self.new_block(call.out, size);
        self.trees[tree].blocks.push(block);
        self.counts.children += 1;
    }

    /// Many children at once, on the root or on children: wide trees.
    fn op_wide_burst(&mut self) {
        let Some((tree, _)) = self.pick_block() else { return self.op_allocate_root() };
        let count = 16 + self.choose(240);
        for _ in 0..count {
            let parent = self.choose(self.trees[tree].blocks.len().min(4));
            let size = self.choose(48) as ULONG;
            let parent_addr = self.trees[tree].blocks[parent].addr;
            let call = self.call_allocate_more(size, parent_addr);
            self.expect_block(call, size, "child in a wide burst");
            let block = self.new_block(call.out, size);
            self.trees[tree].blocks.push(block);
            self.counts.children += 1;
        }
    }

    fn op_free_root(&mut self) {
        if let Some(tree) = self.pick_tree() {
            self.free_tree(tree);
        }
    }

    /// Frees a tree, checking it first, then proves every block of it dead.
    fn free_tree(&mut self, index: usize) {
        let tree = self.trees.swap_remove(index);
        self.check_tree(&tree, "before its root's free");
        let fault = self.maybe_arm_fault();
        {
            let _gate = shared_gate();
            // Forget the addresses before the free: once it returns, another
            // engine may be handed any of them.
            let mut live = lock(&LIVE);
            for block in &tree.blocks {
                live.remove(&block.addr);
            }
            drop(live);
            let result = self.raw_free(tree.blocks[0].addr);
            ensure!(self, result == 0, "MAPIFreeBuffer(root) returned {result}");
        }
        self.disarm_fault(fault);
        self.counts.frees += 1;
        self.graveyard.extend(tree.blocks.iter().map(|block| block.addr));
        self.probe_dead(&tree.blocks.iter().map(|block| block.addr).collect::<Vec<_>>(), "block of a freed tree");
        self.trim_graveyard();
    }

    /// Each address that no engine holds now must be refused as a parent:
    /// the free released the whole tree, and nothing else.
    fn probe_dead(&mut self, addrs: &[usize], what: &str) {
        let _gate = exclusive_gate();
        for &addr in addrs {
            if lock(&LIVE).contains(&addr) {
                continue; // handed out again since: SPEC §2's known limit
            }
            let call = self.raw_allocate_more(0, addr);
            self.expect_refused(call, MAPI_E_INVALID_PARAMETER, what);
        }
    }

    fn trim_graveyard(&mut self) {
        if self.graveyard.len() > 4096 {
            self.graveyard.drain(..2048);
        }
    }

    fn op_free_child(&mut self) {
        let Some(tree) = self.pick_tree() else { return };
        let len = self.trees[tree].blocks.len();
        if len < 2 {
            return;
        }
        let child = 1 + self.choose(len - 1);
        let addr = self.trees[tree].blocks[child].addr;
        let result = {
            let _gate = shared_gate();
            self.raw_free(addr)
        };
        self.counts.misuse += 1;
        ensure!(self, result == 0, "MAPIFreeBuffer(child) returned {result}");
        // The child lives on with its contents, and still takes children.
        self.check_tree(&self.trees[tree], "after a child's free");
        let size = self.size();
        let call = self.call_allocate_more(size, addr);
        self.expect_block(call, size, "child of a child passed to MAPIFreeBuffer");
        let block = self.new_block(call.out, size);
        self.trees[tree].blocks.push(block);
        self.counts.children += 1;
    }

    /// A freed address, freed again or used as a parent: ignored or refused.
    fn op_stale_pointer(&mut self) {
        if self.graveyard.is_empty() {
            return self.op_allocate_root();
        }
        let pick = self.choose(self.graveyard.len());
        let addr = self.graveyard[pick];
        let as_parent = self.choose(2) == 0;
        let size = self.size();
        // Chosen up front, so that the choices consumed do not depend on
        // what other threads did (replays of fuzz inputs stay exact).
        let bystander = self.pick_tree();
        {
            let _gate = exclusive_gate();
            if lock(&LIVE).contains(&addr) {
                return; // handed out again since: a free would be real
            }
            if as_parent {
                let call = self.raw_allocate_more(size, addr);
                self.expect_refused(call, MAPI_E_INVALID_PARAMETER, "stale parent");
            } else {
                let result = self.raw_free(addr);
                self.counts.misuse += 1;
                ensure!(self, result == 0, "MAPIFreeBuffer(freed) returned {result}");
                // Still dead: the registry must say so, whatever happened.
                let call = self.raw_allocate_more(0, addr);
                self.expect_refused(call, MAPI_E_INVALID_PARAMETER, "freed block after a double free");
            }
        }
        if let Some(tree) = bystander {
            self.check_tree(&self.trees[tree], "after a stale pointer");
        }
    }

    /// A pointer inside a live block, or into the 16 bytes before it, where
    /// a library might keep a header: never a block of its own.
    fn op_interior_pointer(&mut self) {
        let Some((tree, index)) = self.pick_block() else { return self.op_allocate_root() };
        let block = self.trees[tree].blocks[index];
        if block.sparse {
            return;
        }
        let offset: isize = if block.size > 1 && self.choose(2) == 0 {
            1 + self.choose(block.size - 1) as isize
        } else {
            -1 - self.choose(16) as isize
        };
        let interior = block.addr.wrapping_add_signed(offset);
        // Blocks bumped into one chunk lie back to back: 16 bytes before a
        // child may be the start of its live neighbour, a block of its own.
        if lock(&LIVE).contains(&interior) {
            return;
        }
        let size = self.size();
        let call = self.call_allocate_more(size, interior);
        self.expect_refused(call, MAPI_E_INVALID_PARAMETER, &format!("interior parent (block {offset:+})"));
        let result = {
            let _gate = shared_gate();
            self.raw_free(interior)
        };
        self.counts.misuse += 1;
        ensure!(self, result == 0, "MAPIFreeBuffer(interior) returned {result}");
        self.check_tree(&self.trees[tree], &format!("after interior pointers (block {offset:+})"));
        // Its tree is still whole and growing.
        let call = self.call_allocate_more(8, block.addr);
        self.expect_block(call, 8, "child of a block after interior frees");
        let child = self.new_block(call.out, 8);
        self.trees[tree].blocks.push(child);
        self.counts.children += 1;
    }

    /// Memory from elsewhere: the heap, the stack, static data, code, and
    /// addresses nothing maps.
    fn op_foreign_pointer(&mut self) {
        let stack = [0x3Cu8; 64];
        let candidates = [
            self.foreign.heap.as_ptr() as usize,
            self.foreign.heap.as_ptr() as usize + 16,
            stack.as_ptr() as usize,
            stack.as_ptr() as usize + 16,
            self.foreign.statics.as_ptr() as usize,
            MAPIAllocateBuffer as *const () as usize,
            16,
            4096,
            usize::MAX & !15,
            0x7FFF_FFFF_0000,
        ];
        let pointer = candidates[self.choose(candidates.len())];
        let size = self.size();
        let call = self.call_allocate_more(size, pointer);
        self.expect_refused(call, MAPI_E_INVALID_PARAMETER, &format!("foreign parent {pointer:#x}"));
        let result = {
            let _gate = shared_gate();
            self.raw_free(pointer)
        };
        self.counts.misuse += 1;
        ensure!(self, result == 0, "MAPIFreeBuffer(foreign {pointer:#x}) returned {result}");
        ensure!(self, self.foreign.heap.iter().all(|&b| b == 0xA5), "the library wrote into a foreign heap block");
        ensure!(self, stack.iter().all(|&b| b == 0x3C), "the library wrote into a foreign stack buffer");
        ensure!(self, FOREIGN_STATIC.iter().all(|&b| b == 0x5A), "the library wrote into static data");
    }

    fn op_null_arguments(&mut self) {
        let size = self.size();
        let _gate = shared_gate();
        match self.choose(4) {
            0 => {
                // SAFETY: a NULL out-pointer is allowed and must be refused.
                let status = unsafe { MAPIAllocateBuffer(size, std::ptr::null_mut()) };
                ensure!(self, status == MAPI_E_INVALID_PARAMETER, "MAPIAllocateBuffer(NULL out): {status:#010x}");
            }
            1 => {
                let parent = match self.pick_block() {
                    Some((tree, block)) => self.trees[tree].blocks[block].addr,
                    None => 0,
                };
                // SAFETY: as above.
                let status = unsafe { MAPIAllocateMore(size, parent as LPVOID, std::ptr::null_mut()) };
                ensure!(self, status == MAPI_E_INVALID_PARAMETER, "MAPIAllocateMore(NULL out): {status:#010x}");
            }
            2 => {
                // No parent makes a root, as MAPIAllocateBuffer (SPEC §2);
                // recorded as live, like every new block, under the gate.
                let call = self.raw_allocate_more(size, 0);
                self.expect_block(call, size, "root with a NULL parent");
                let block = self.new_block(call.out, size);
                self.trees.push(Tree { blocks: vec![block] });
                self.counts.roots += 1;
            }
            _ => {
                // SAFETY: NULL is allowed.
                let result = unsafe { MAPIFreeBuffer(std::ptr::null_mut()) };
                ensure!(self, result == 0, "MAPIFreeBuffer(NULL) returned {result}");
            }
        }
        self.counts.calls += 1;
        self.counts.misuse += 1;
    }

    /// 2 GiB and more: the C allocator may grant it (overcommit) or refuse
    /// it. A refusal is exact and leaves the tree as it was; a granted block
    /// has all its bytes (its last one is written), never a wrapped size.
    fn op_huge(&mut self) {
        if !self.config.huge_sizes {
            return self.op_allocate_more();
        }
        const HUGE: [ULONG; 4] = [0x8000_0000, 0xFFFF_FFF0, 0xFFFF_FFF1, 0xFFFF_FFFF];
        let size = HUGE[self.choose(HUGE.len())];
        let target = if self.choose(2) == 0 { self.pick_block() } else { None };
        let call = match target {
            Some((tree, block)) => {
                let addr = self.trees[tree].blocks[block].addr;
                self.call_allocate_more(size, addr)
            }
            None => self.call_allocate_buffer(size),
        };
        if call.status != S_OK {
            self.expect_refused(call, MAPI_E_NOT_ENOUGH_MEMORY, &format!("huge block of {size:#x} bytes"));
            if let Some((tree, _)) = target {
                self.check_tree(&self.trees[tree], "after a refused huge child");
            }
            return;
        }
        self.expect_block(call, size, "huge block");
        let block = Block { addr: call.out, size: size as usize, tag: self.tag(), sparse: true };
        fill(&block);
        let tree = match target {
            Some((tree, _)) => {
                self.trees[tree].blocks.push(block);
                self.counts.children += 1;
                tree
            }
            None => {
                self.trees.push(Tree { blocks: vec![block] });
                self.counts.roots += 1;
                self.trees.len() - 1
            }
        };
        // At most one huge block live at a time.
        self.free_tree(tree);
    }

    fn op_verify_tree(&mut self) {
        if let Some(tree) = self.pick_tree() {
            self.check_tree(&self.trees[tree], "on a random check");
        }
    }

    fn maybe_arm_fault(&mut self) -> bool {
        let Some(hook) = self.config.fault_hook else { return false };
        if self.choices.exhausted() {
            return false; // the final frees of a fuzz input: choices are all 0
        }
        match self.choose(8) {
            0 => {
                let after = self.choose(3) as ULONG;
                hook(after);
                self.counts.faults_armed += 1;
                true
            }
            _ => false,
        }
    }

    /// Disarms; returns whether the armed failure was reached.
    fn disarm_fault(&mut self, armed: bool) -> bool {
        match self.config.fault_hook {
            Some(hook) if armed => {
                let reached = hook(NO_FAILURE) == NO_FAILURE;
                self.counts.faults_hit += reached as u64;
                reached
            }
            _ => false,
        }
    }

    /// An allocation whose Nth C-allocator request fails: the block itself,
    /// or the registry's own growth. The call is refused exactly, and the
    /// tree is as it was.
    fn op_injected_failure(&mut self) {
        let Some(hook) = self.config.fault_hook else { return self.op_allocate_more() };
        let after = self.choose(3) as ULONG;
        let target = self.pick_block();
        let size = self.size();
        let call = {
            let _gate = shared_gate();
            hook(after);
            let call = match target {
                Some((tree, block)) => {
                    let addr = self.trees[tree].blocks[block].addr;
                    self.raw_allocate_more(size, addr)
                }
                None => self.raw_allocate_buffer(size),
            };
            self.counts.faults_armed += 1;
            let pending = hook(NO_FAILURE);
            if call.status == S_OK {
                // Reached or not, a success is a block like any other.
                self.counts.faults_hit += (pending == NO_FAILURE) as u64;
            } else {
                ensure!(self, pending == NO_FAILURE, "a call failed before the injected failure was reached");
                self.counts.faults_hit += 1;
            }
            call
        };
        if call.status != S_OK {
            self.expect_refused(call, MAPI_E_NOT_ENOUGH_MEMORY, "allocation with an injected failure");
            if let Some((tree, _)) = target {
                self.check_tree(&self.trees[tree], "after an injected failure");
            }
            return;
        }
        self.expect_block(call, size, "allocation with an injected failure not reached");
        let block = self.new_block(call.out, size);
        match target {
            Some((tree, _)) => {
                self.trees[tree].blocks.push(block);
                self.counts.children += 1;
            }
            None => {
                self.trees.push(Tree { blocks: vec![block] });
                self.counts.roots += 1;
            }
        }
    }

    // --------------------------------------------------------------------
    // Trees shared between threads
    // --------------------------------------------------------------------

    fn op_shared_tree(&mut self) {
        if !self.config.shared_trees {
            return self.op_allocate_more();
        }
        let picked = {
            let trees = lock(&SHARED_TREES);
            if trees.is_empty() {
                None
            } else {
                Some(Arc::clone(&trees[self.choices.below(trees.len() as u32) as usize]))
            }
        };
        let Some(shared) = picked else { return self.share_new_tree() };
        match self.choose(10) {
            0 => self.share_new_tree(),
            1 => self.free_shared(&shared),
            2..=4 => self.race_shared(&shared),
            _ => self.grow_shared(&shared),
        }
    }

    fn share_new_tree(&mut self) {
        if lock(&SHARED_TREES).len() >= 16 {
            return;
        }
        let size = self.size();
        let call = self.call_allocate_buffer(size);
        self.expect_block(call, size, "shared root");
        let block = self.new_block(call.out, size);
        self.counts.roots += 1;
        let shared = Arc::new(SharedTree { root: block.addr, model: Mutex::new(Some(Tree { blocks: vec![block] })) });
        lock(&SHARED_TREES).push(shared);
    }

    /// A child on a shared tree, with the tree's model locked: exact.
    fn grow_shared(&mut self, shared: &SharedTree) {
        let mut model = lock(&shared.model);
        let Some(tree) = model.as_mut() else { return };
        let parent = tree.blocks[self.choices.below(tree.blocks.len() as u32) as usize].addr;
        let size = self.size();
        let call = self.call_allocate_more(size, parent);
        self.expect_block(call, size, "child of a shared tree");
        let block = self.new_block(call.out, size);
        tree.blocks.push(block);
        self.counts.children += 1;
        if self.choose(4) == 0 {
            self.check_tree(tree, "shared tree");
        }
    }

    fn free_shared(&mut self, shared: &Arc<SharedTree>) {
        lock(&SHARED_TREES).retain(|other| !Arc::ptr_eq(other, shared));
        let mut model = lock(&shared.model);
        let Some(tree) = model.take() else { return };
        self.check_tree(&tree, "shared tree before its free");
        {
            let _gate = shared_gate();
            let mut live = lock(&LIVE);
            for block in &tree.blocks {
                live.remove(&block.addr);
            }
            drop(live);
            let result = self.raw_free(shared.root);
            ensure!(self, result == 0, "MAPIFreeBuffer(shared root) returned {result}");
        }
        self.counts.frees += 1;
        drop(model);
        self.graveyard.extend(tree.blocks.iter().map(|block| block.addr));
        self.probe_dead(
            &tree.blocks.iter().map(|block| block.addr).collect::<Vec<_>>(),
            "block of a freed shared tree",
        );
    }

    /// `MAPIAllocateMore` on a shared root without its lock, racing any
    /// thread that frees it: the child is linked before the free, or the
    /// call is refused — and then the tree is gone.
    fn race_shared(&mut self, shared: &SharedTree) {
        let size = self.choose(64) as ULONG;
        let call = self.call_allocate_more(size, shared.root);
        self.counts.races += 1;
        let mut model = lock(&shared.model);
        match model.as_mut() {
            Some(tree) => {
                // Still alive, so the call must have found it alive.
                self.expect_block(call, size, "child of a live shared root");
                let block = self.new_block(call.out, size);
                tree.blocks.push(block);
                self.counts.children += 1;
            }
            None if call.status == S_OK => {
                // Linked before the free, which released it (or the root's
                // address went to another tree meanwhile: then it is that
                // tree's). Either way not ours to touch; LIVE keeps it out
                // of every stale check until its address is reused.
                self.counts.races_lost += 1;
            }
            None => {
                self.expect_refused(call, MAPI_E_INVALID_PARAMETER, "child of a freed shared root");
                self.counts.races_lost += 1;
            }
        }
    }

    // --------------------------------------------------------------------
    // The end of a run
    // --------------------------------------------------------------------

    /// Every block still held: contents intact, and live (it takes a child).
    fn check_everything(&mut self) {
        for index in 0..self.trees.len() {
            self.check_tree(&self.trees[index], "at the end");
            let root = self.trees[index].blocks[0].addr;
            let last = self.trees[index].blocks.last().map_or(root, |block| block.addr);
            for parent in [root, last] {
                let call = self.call_allocate_more(0, parent);
                self.expect_block(call, 0, "child at the end");
                let block = self.new_block(call.out, 0);
                self.trees[index].blocks.push(block);
            }
        }
    }

    fn free_everything(&mut self) {
        while !self.trees.is_empty() {
            self.free_tree(self.trees.len() - 1);
        }
    }
}

/// Frees every shared tree left; for the thread that ran the others, after
/// joining them.
pub fn free_shared_trees(choices: &mut dyn Choices, label: &str) -> Counts {
    let mut engine =
        Engine::new(choices, Config { shared_trees: true, ..Config::default() }, label.to_string(), 0xFFFF);
    let trees: Vec<Arc<SharedTree>> = lock(&SHARED_TREES).clone();
    for shared in trees {
        engine.free_shared(&shared);
    }
    engine.counts
}
