//! Coverage-guided model-based fuzzing (issue 3): libFuzzer's input is read
//! as a sequence of decisions by the same engine as the seeded property
//! tests (tests/model/engine.rs) — allocations on roots and children, frees,
//! double, stale, interior and foreign pointers, NULL arguments, huge sizes
//! and injected allocation failures — each checked against the model. A
//! mismatch panics, which libFuzzer reports as a crash; `make fuzz` keeps
//! every crash under fuzz/regressions, which `cargo test` replays.

#![no_main]

#[path = "../../tests/model/engine.rs"]
mod engine;

use std::sync::atomic::{AtomicU64, Ordering};

use libfuzzer_sys::fuzz_target;

static INPUTS: AtomicU64 = AtomicU64::new(0);
static OPERATIONS: AtomicU64 = AtomicU64::new(0);
static CALLS: AtomicU64 = AtomicU64::new(0);
static FAULTS: AtomicU64 = AtomicU64::new(0);
static FAULTS_REACHED: AtomicU64 = AtomicU64::new(0);

extern "C" {
    fn atexit(callback: extern "C" fn()) -> i32;
}

/// The figures for the README, printed when libFuzzer exits.
extern "C" fn report() {
    eprintln!(
        "fuzz model totals: {} inputs, {} operations, {} library calls, {} allocation failures injected ({} reached)",
        INPUTS.load(Ordering::Relaxed),
        OPERATIONS.load(Ordering::Relaxed),
        CALLS.load(Ordering::Relaxed),
        FAULTS.load(Ordering::Relaxed),
        FAULTS_REACHED.load(Ordering::Relaxed)
    );
}

fuzz_target!(|data: &[u8]| {
    if INPUTS.fetch_add(1, Ordering::Relaxed) == 0 {
        // SAFETY: `report` is a plain function that lives as long as the process.
        unsafe { atexit(report) };
    }
    let mut input = engine::InputBytes::new(data);
    let config = engine::fuzz_config(Some(mapi32::fault_hook::mapi32_test_fail_allocation_after));
    let counts = engine::Engine::new(&mut input, config, "fuzz input".to_string(), 0x300).run(u64::MAX);
    OPERATIONS.fetch_add(counts.steps, Ordering::Relaxed);
    CALLS.fetch_add(counts.calls, Ordering::Relaxed);
    FAULTS.fetch_add(counts.faults_armed, Ordering::Relaxed);
    FAULTS_REACHED.fetch_add(counts.faults_hit, Ordering::Relaxed);
});
