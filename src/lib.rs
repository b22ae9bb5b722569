//! libmapi32: the MAPI memory functions `MAPIAllocateBuffer`,
//! `MAPIAllocateMore` and `MAPIFreeBuffer` as a C-ABI library.
//!
//! Where each rule of the contract lives, and what tests it (ARCHITECTURE.md
//! has the design; the paths are under `src/region/` unless named):
//! - Types, status codes (§1): `scode`; `c_tests/header_compiles.c`, the
//!   compile-time size checks here.
//! - The exports, out-pointers, errors → `SCODE` (§1–2): `ffi`; the C suite
//!   `c_tests/conformance.c` (one check per rule), `tests/model.rs`.
//! - Roots, children, child-as-parent, NULL parent, free-all, realloc (§2,
//!   §5): `tree` over `region` (`alloc`, `free`, `chunk`, `root`; a root
//!   reallocated from any thread: faces and moved headers in `alloc`); their
//!   unit tests (`tree`, `region/tests.rs`), the C suite, `c_tests/extras.c`,
//!   the model.
//! - Which blocks are live, decided without reading at the pointer (§2):
//!   `segmap`, `segment`, `page`, `class`, `start_bits`, `validate`;
//!   `region/tests.rs`, the C suite's foreign, interior and unmapped cases.
//! - Any thread, no call waiting on an unrelated thread, cost flat in the
//!   number of threads (§3): `remote` (a free of another thread's tree),
//!   `guest` (a child on another thread's tree); `region/
//!   cross_thread_tests.rs` (with `park`, an owner held mid-call), the C
//!   suite's thread cases, `c_tests/stress.c`, `make bench`'s cross-thread
//!   and idle-thread rows.
//! - Thread exit, adoption, unloading, no abort at a thread's start (§3):
//!   `thread`, `exit_hook` (a `pthread_key`; on Windows a TLS callback),
//!   `unload`;
//!   `region/life_tests.rs`, `c_tests/thread_life.c`, `c_tests/defects/
//!   {first_call_oom,exit_path_leak,dlclose_cycles}.c`.
//! - `fork()` (§3): `fork`; `region/fork_tests.rs`, `c_tests/defects/
//!   {fork_malloc_lock,fork_handler_calls}.c`, the C suite's fork cases.
//! - Out of memory anywhere (§3): `os` (every page request), `fault` and
//!   `fault_hook` (tests only: fail the Nth); `c_tests/fault_sweep.c`,
//!   `make fault-sweep-process`.
//! - valgrind and ASan see every block (§3): `track`; `c_tests/tools/`.
//! - Diagnostics and statistics (§4): `debug`, `counts`, `walk`,
//!   `ffi::mapi32_stats`; `c_tests/debug_check.sh`, `c_tests/extras.c`,
//!   `tests/stats_abi.rs`.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_debug_implementations)]

// The shipped library must never unwind into C (SPEC §3). Test builds are
// the exception: Cargo always builds the test harness with unwinding.
#[cfg(all(not(panic = "abort"), not(test), not(debug_assertions)))]
compile_error!("libmapi32 must be built with panic = \"abort\" (see Cargo.toml)");

mod debug;
mod fault;
#[cfg(feature = "fault-injection")]
pub mod fault_hook;
mod os;
mod region;
mod scode;
mod tree;

pub mod ffi;

/// Runs when the library is loaded, before any thread can call it: the
/// thread-exit hook, the fork handler, and `MAPI32_DEBUG`. (Where no
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
    region::unload();
    region::shutdown();
}

pub use ffi::{mapi32_stats, MAPIAllocateBuffer, MAPIAllocateMore, MAPIFreeBuffer, MAPIReallocateBuffer, MAPI32_STATS};
pub use scode::{LPVOID, MAPI_E_CALL_FAILED, MAPI_E_INVALID_PARAMETER, MAPI_E_NOT_ENOUGH_MEMORY, SCODE, S_OK, ULONG};
