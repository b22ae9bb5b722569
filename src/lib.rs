//! libmapi32: the MAPI memory functions `MAPIAllocateBuffer`,
//! `MAPIAllocateMore` and `MAPIFreeBuffer` as a C-ABI library.
//!
//! Where each rule of SPEC.md lives:
//! - `scode`: the C types and status codes, and errors → `SCODE`.
//! - `ffi`: the exports; every pointer from C is checked there.
//! - `tree`: the three operations in safe Rust.
//! - `registry`: which blocks are live, root–child chains, threads and fork.
//! - `table`: the hash set behind each registry shard (fallible growth).
//! - `block`: block layout, alignment and size arithmetic.
//! - `sys`: the C allocator underneath everything.
//! - `lock`: the spin lock the registry shards use.
//! - `fault_hook`: tests only (feature `fault-injection`): make the Nth
//!   allocation fail.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_debug_implementations)]

// The shipped library must never unwind into C (SPEC §3). Test builds are
// the exception: Cargo always builds the test harness with unwinding.
#[cfg(all(not(panic = "abort"), not(test), not(debug_assertions)))]
compile_error!("libmapi32 must be built with panic = \"abort\" (see Cargo.toml)");

mod block;
#[cfg(feature = "fault-injection")]
pub mod fault_hook;
mod lock;
mod registry;
mod scode;
mod sys;
mod table;
mod tree;

pub mod ffi;

pub use ffi::{MAPIAllocateBuffer, MAPIAllocateMore, MAPIFreeBuffer};
pub use scode::{
    LPVOID, MAPI_E_CALL_FAILED, MAPI_E_INVALID_PARAMETER, MAPI_E_NOT_ENOUGH_MEMORY, SCODE, S_OK, ULONG,
};
