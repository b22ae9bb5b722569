//! libmapi32: the MAPI memory functions `MAPIAllocateBuffer`,
//! `MAPIAllocateMore` and `MAPIFreeBuffer` as a C-ABI library.
//!
//! Where each rule of SPEC.md lives:
//! - `scode`: the C types and status codes, and errors → `SCODE`.
//! - `ffi`: the exports; out-pointers are checked there, parents and
//!   pointers to free are looked up in the registry.
//! - `debug`: `MAPI32_DEBUG` (warn, abort, leaks) and the misuse count.
//! - `tree`: the three operations in safe Rust.
//! - `registry`: which blocks are live, root–child chains, threads and fork.
//! - `blockmap`: the radix bitmap of block starts behind each registry heap.
//! - `table`: the hash set `blockmap` keeps for addresses beyond its radix.
//! - `block`: block layout, alignment and size arithmetic.
//! - `sys`: the C allocator underneath everything.
//! - `lock`: the spin lock the registry heaps use.
//! - `fault_hook`: tests only (feature `fault-injection`): make the Nth
//!   allocation fail.

#![deny(unsafe_op_in_unsafe_fn)]
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
    registry::shutdown();
}

pub use ffi::{mapi32_stats, MAPIAllocateBuffer, MAPIAllocateMore, MAPIFreeBuffer, MAPIReallocateBuffer, MAPI32_STATS};
pub use scode::{LPVOID, MAPI_E_CALL_FAILED, MAPI_E_INVALID_PARAMETER, MAPI_E_NOT_ENOUGH_MEMORY, SCODE, S_OK, ULONG};
