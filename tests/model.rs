//! Model-based property tests (issue 3): random sequences of operations —
//! allocate, allocate more on a root or a child, free roots and children,
//! double, stale, interior and foreign pointers, NULL arguments, huge sizes,
//! injected failures — run through the exported API and checked after every
//! step against a model (tests/model/engine.rs).
//!
//! Seeded and bounded, so `cargo test` stays fast and a failure replays: the
//! message names the seed; `MAPI32_MODEL_SEED=<seed>` runs from it, and
//! `MAPI32_MODEL_SCALE=<n>` runs n times as many steps; `MAPI32_MODEL_TRACE=1`
//! names each step on stderr before it runs (for a crash inside the library,
//! which leaves no panic message). Built with
//! `--features fault-injection` the sequences also inject allocation
//! failures (`make fault-model-test`).
//!
//! All tests here may run at once: the engine's gate keeps the model exact
//! across threads.

// rust-version = "1.63" binds the library, which Debian's rustc 1.63 builds
// for mapi32.dll; this test crate is only ever built by rustup's toolchain.
#![allow(clippy::incompatible_msrv)]

#[path = "model/engine.rs"]
mod engine;

use engine::{Config, Counts, Engine, FaultHook, InputBytes, SeededRng};
use std::path::Path;

/// Steps per seed on one thread, and seeds; per thread with eight threads.
const STEPS_SINGLE: u64 = 4_000;
const SEEDS_SINGLE: u64 = 8;
const THREADS: u64 = 8;
const STEPS_PER_THREAD: u64 = 4_000;

#[cfg(feature = "fault-injection")]
fn fault_hook() -> Option<FaultHook> {
    Some(mapi32::fault_hook::mapi32_test_fail_allocation_after)
}

#[cfg(not(feature = "fault-injection"))]
fn fault_hook() -> Option<FaultHook> {
    None
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|value| value.trim().parse().ok())
}

fn scale() -> u64 {
    env_u64("MAPI32_MODEL_SCALE").unwrap_or(1).max(1)
}

/// The first seed: fixed, so every run checks the same sequences, unless
/// MAPI32_MODEL_SEED asks for others.
fn first_seed(test: u64) -> u64 {
    env_u64("MAPI32_MODEL_SEED").unwrap_or(test << 32)
}

fn config() -> Config {
    Config { fault_hook: fault_hook(), ..Config::default() }
}

fn report(what: &str, counts: &Counts, started: std::time::Instant) {
    println!(
        "{what}: {} operations ({} library calls: {} roots, {} children, {} frees, {} misuse calls refused; \
         {} failures injected, {} reached; {} racing calls, {} lost the race) in {:.2} s",
        counts.steps,
        counts.calls,
        counts.roots,
        counts.children,
        counts.frees,
        counts.misuse,
        counts.faults_armed,
        counts.faults_hit,
        counts.races,
        counts.races_lost,
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn random_sequences_on_one_thread_match_the_model() {
    let started = std::time::Instant::now();
    let mut total = Counts::default();
    let first = first_seed(1);
    for seed in first..first + SEEDS_SINGLE {
        let mut rng = SeededRng::new(seed);
        let label = format!("one thread, MAPI32_MODEL_SEED={seed}");
        let counts = Engine::new(&mut rng, config(), label, seed).run(STEPS_SINGLE * scale());
        total.add(&counts);
    }
    report("one thread", &total, started);
}

#[test]
fn random_sequences_on_shared_and_private_trees_from_eight_threads_match_the_model() {
    let started = std::time::Instant::now();
    let first = first_seed(2);
    let workers: Vec<_> = (0..THREADS)
        .map(|thread| {
            std::thread::spawn(move || {
                let seed = first + thread;
                let mut rng = SeededRng::new(seed);
                let label = format!("thread {thread} of {THREADS}, MAPI32_MODEL_SEED={first}");
                let config = Config { shared_trees: true, max_live_blocks: 1500, ..config() };
                Engine::new(&mut rng, config, label, 0x100 + seed).run(STEPS_PER_THREAD * scale())
            })
        })
        .collect();
    let mut total = Counts::default();
    for worker in workers {
        // A worker's panic message names its step and seed.
        total.add(&worker.join().expect("a worker thread's model check failed (see its message above)"));
    }
    let mut rng = SeededRng::new(first);
    total.add(&engine::free_shared_trees(&mut rng, "freeing the shared trees"));
    report(&format!("{THREADS} threads"), &total, started);
}

/// Every input the fuzzer ever crashed the library with (fuzz/regressions),
/// and its seed inputs, replayed as the fuzz target runs them. Each
/// directory must hold at least the inputs committed today, so that moving
/// or emptying one fails the test instead of leaving nothing to replay:
/// raise the count when committing a regression.
#[test]
fn fuzz_regressions_replay_cleanly() {
    let started = std::time::Instant::now();
    let mut total = Counts::default();
    let mut replayed = 0;
    for (dir, committed) in [("fuzz/regressions", 2), ("fuzz/seeds", 3)] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|error| panic!("{}: {error}", dir.display()));
        let mut paths: Vec<_> = entries.filter_map(|entry| entry.ok().map(|e| e.path())).collect();
        paths.retain(|path| path.extension().map_or(true, |ext| ext != "md"));
        paths.sort();
        assert!(
            paths.len() >= committed,
            "{} holds {} fuzz inputs, fewer than the {committed} committed",
            dir.display(),
            paths.len()
        );
        for path in &paths {
            let data = std::fs::read(path).expect("read a regression input");
            let mut input = InputBytes::new(&data);
            let label = format!("replaying {}", path.display());
            total.add(&Engine::new(&mut input, engine::fuzz_config(fault_hook()), label, 0x200).run(u64::MAX));
            replayed += 1;
        }
    }
    report(&format!("{replayed} fuzz inputs replayed"), &total, started);
}
