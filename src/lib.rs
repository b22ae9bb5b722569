//! libmapi32: the MAPI memory functions `MAPIAllocateBuffer`,
//! `MAPIAllocateMore` and `MAPIFreeBuffer` as a C-ABI library.
//!
//! Where each rule of the contract lives, and what tests it:
//! - Types, status codes (§1): `scode`; `c_tests/header_compiles.c`, the
//!   compile-time size checks here.
//! - The exports, out-pointers, errors → `SCODE` (§1–2): `ffi`; the C suite
//!   `c_tests/conformance.c` (one check per rule), `tests/model.rs`.
//! - Roots, children, child-as-parent, NULL parent, free-all, realloc (§2,
//!   §5): `tree` over `registry`; `tree`'s unit tests, the C suite, the model.
//! - Which blocks are live, lookups that read nothing at the pointer (§2):
//!   `registry` (`mod.rs`), `blockmap` and its fallback `table`; their unit
//!   tests, `c_tests/conformance.c`'s foreign, interior and unmapped cases.
//! - Threads, exclusion without `membarrier` (§3): `registry/mod.rs` (the
//!   owner/guest handshake; `owner_and_guests_are_never_inside_together`),
//!   `c_tests/defects/membarrier_refused.c`, `c_tests/stress.c`.
//! - No waiting on unrelated threads, cost flat in the number of threads
//!   (§3), as far as today's registry goes: `registry/regions.rs`,
//!   `registry/directory.rs`; `a_foreign_free_passes_by_a_heap_whose_owner_
//!   is_mid_call`, `make bench`'s cross-thread and idle-thread rows.
//! - Thread exit, unloading, no abort at a thread's start (§3):
//!   `registry/thread.rs`; `c_tests/defects/{first_call_oom,exit_path_leak,
//!   dlclose_cycles}.c`, `make fault-sweep-process`.
//! - `fork()` (§3): `registry/fork.rs`; `c_tests/defects/{fork_malloc_lock,
//!   fork_handler_calls}.c`, the C suite's fork cases, `c_tests/stress.c`.
//! - Out of memory anywhere (§3): `sys` (every allocation goes through it)
//!   and `fault_hook` (tests only: fail the Nth); `c_tests/fault_sweep.c`.
//! - Block layout, alignment, size arithmetic (§2): `block`.
//! - Diagnostics and statistics (§4): `debug`, `ffi::mapi32_stats`;
//!   `c_tests/debug_check.sh`, `c_tests/extras.c`, `tests/stats_abi.rs`.
//! - `lock`: the spin lock the registry heaps use.

#![deny(unsafe_op_in_unsafe_fn)]
// With `registry-v3`, the registry and block code stay built (the load-time
// hooks, fork handlers and `leaks` report still name them) but the MAPI
// operations no longer reach most of it.
#![cfg_attr(feature = "registry-v3", allow(dead_code))]
#![warn(missing_debug_implementations)]

// The shipped library must never unwind into C (SPEC §3). Test builds are
// the exception: Cargo always builds the test harness with unwinding.
#[cfg(all(not(panic = "abort"), not(test), not(debug_assertions)))]
compile_error!("libmapi32 must be built with panic = \"abort\" (see Cargo.toml)");

mod block;
mod blockmap;
mod debug;
#[cfg(feature = "fault-injection")]
pub mod fault_hook;
mod lock;
#[cfg(feature = "registry-v3")]
mod os;
#[cfg(feature = "registry-v3")]
mod region;
mod registry;
mod scode;
mod sys;
mod table;
mod tree;

pub mod ffi;

/// Runs when the library is loaded, before any thread can call it: the
/// registry's fence mode and fork handlers, and `MAPI32_DEBUG`. (Where no
/// loader runs it, as in a Rust test binary, each part also starts lazily.)
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd", target_os = "netbsd"))]
#[used]
#[link_section = ".init_array"]
static AT_LOAD: extern "C" fn() = at_load;

/// The same for mapi32.dll: the C runtime's DLL entry point runs the
/// initialisers in `.CRT$XC*` when the DLL is attached to the process.
#[cfg(windows)]
#[used]
#[link_section = ".CRT$XCU"]
static AT_LOAD: extern "C" fn() = at_load;

#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd", target_os = "netbsd", windows))]
extern "C" fn at_load() {
    registry::init();
    #[cfg(feature = "registry-v3")]
    region::init();
    debug::init();
}

/// Runs when the library is unloaded by `dlclose` (and at process exit):
/// what it keeps for threads goes with it (SPEC §3).
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd", target_os = "netbsd"))]
#[used]
#[link_section = ".fini_array"]
static AT_UNLOAD: extern "C" fn() = at_unload;

#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd", target_os = "netbsd"))]
extern "C" fn at_unload() {
    #[cfg(feature = "registry-v3")]
    region::unload();
    registry::shutdown();
}

pub use ffi::{mapi32_stats, MAPIAllocateBuffer, MAPIAllocateMore, MAPIFreeBuffer, MAPIReallocateBuffer, MAPI32_STATS};
pub use scode::{LPVOID, MAPI_E_CALL_FAILED, MAPI_E_INVALID_PARAMETER, MAPI_E_NOT_ENOUGH_MEMORY, SCODE, S_OK, ULONG};
