//! Fault injection for test builds only: compiled with the cargo feature
//! `fault-injection`, never into the shipped library (`make fault-hook-absent`
//! checks the release `.so` with `nm`). It lets a C or Rust test make the
//! library's Nth allocation fail — a block, or the registry's own growth —
//! and prove that every such failure is `MAPI_E_NOT_ENOUGH_MEMORY` with the
//! tree unchanged and nothing leaked (see c_tests/fault_sweep.c).

use crate::fault;
use crate::scode::ULONG;

/// Passed to, or returned by, [`mapi32_test_fail_allocation_after`]: no
/// failure armed.
pub const MAPI32_TEST_NO_FAILURE: ULONG = ULONG::MAX;

/// Lets the next `successes` allocations of the calling thread succeed and
/// makes the one after fail, once. `MAPI32_TEST_NO_FAILURE` disarms.
///
/// Returns how many successes were still left of the previous arming, or
/// `MAPI32_TEST_NO_FAILURE` if no failure was pending: it happened already,
/// or none was armed. A test learns that way whether its workload reached the
/// armed failure.
#[no_mangle]
pub extern "C" fn mapi32_test_fail_allocation_after(successes: ULONG) -> ULONG {
    let armed = if successes == MAPI32_TEST_NO_FAILURE { None } else { Some(successes) };
    fault::fail_allocation_after(armed).unwrap_or(MAPI32_TEST_NO_FAILURE)
}
