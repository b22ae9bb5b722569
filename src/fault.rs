//! Fault injection's counter: test builds, and builds with the
//! `fault-injection` feature (never the shipped library), can make the Nth
//! request for memory of a thread fail, to prove that running out of memory
//! anywhere is reported and not fatal. Every request for memory goes
//! through `os::map_aligned`, which asks here first; `fault_hook` exports
//! the switch to C.

#[cfg(any(test, feature = "fault-injection"))]
mod counter {
    use std::cell::Cell;

    thread_local! {
        static REMAINING: Cell<Option<u32>> = const { Cell::new(None) };
    }

    /// After `successes` more requests on this thread succeed, the next one
    /// fails; `None` switches injection off. Returns what was left of the
    /// previous setting: `None` if no failure was pending (it happened, or
    /// none was set).
    pub fn fail_allocation_after(successes: Option<u32>) -> Option<u32> {
        REMAINING.with(|remaining| remaining.replace(successes))
    }

    pub fn injected_failure() -> bool {
        REMAINING.with(|remaining| match remaining.get() {
            None => false,
            Some(0) => {
                remaining.set(None);
                true
            }
            Some(n) => {
                remaining.set(Some(n - 1));
                false
            }
        })
    }
}

#[cfg(any(test, feature = "fault-injection"))]
pub use counter::{fail_allocation_after, injected_failure};

/// The shipped library never fails a request on purpose.
#[cfg(not(any(test, feature = "fault-injection")))]
#[inline(always)]
pub fn injected_failure() -> bool {
    false
}
