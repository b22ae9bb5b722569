//! A small spin lock: each registry heap's guest lock, and the heap list's.
//!
//! Why not `std::sync::Mutex`: the fork handlers must take every heap's lock in
//! the parent and release it in both processes afterwards (SPEC §3), which
//! needs lock and unlock as separate calls rather than a guard's lifetime.
//! A heap is held for one operation — a probe and an insert, perhaps a
//! malloc, or a tree's removal — so a spin that yields the CPU after a short
//! while is the right tool.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

/// Spins before yielding; short, because the holder is about to finish.
const SPINS_BEFORE_YIELD: u32 = 64;

/// Waits until `done()`: spins a little first, because what is awaited is
/// about to happen (a yield costs a system call, and often a microsecond or
/// more before this thread runs again), then yields.
pub fn wait_until(mut done: impl FnMut() -> bool) {
    let mut spins = 0;
    while !done() {
        if spins < SPINS_BEFORE_YIELD {
            spins += 1;
            core::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

pub struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands out access to `value` to one thread at a time, so it
// may be shared whenever `T` may be sent between threads.
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> SpinLock<T> {
    pub const fn new(value: T) -> Self {
        SpinLock { locked: AtomicBool::new(false), value: UnsafeCell::new(value) }
    }

    /// Waits for the lock; it is released when the guard is dropped.
    pub fn lock(&self) -> SpinGuard<'_, T> {
        self.acquire();
        SpinGuard { lock: self }
    }

    /// Takes the lock if it is free, without waiting.
    pub fn try_lock(&self) -> Option<SpinGuard<'_, T>> {
        if self.try_acquire() {
            Some(SpinGuard { lock: self })
        } else {
            None
        }
    }

    /// Takes the lock with no guard, for the fork handlers.
    pub fn acquire(&self) {
        while !self.try_acquire() {
            // Wait with plain loads so waiting threads do not steal the
            // cache line from the holder.
            wait_until(|| !self.locked.load(Ordering::Relaxed));
        }
    }

    pub fn try_acquire(&self) -> bool {
        self.locked.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    /// Releases a lock taken by [`SpinLock::acquire`].
    ///
    /// # Safety
    /// The calling thread holds the lock through `acquire` (after `fork`, the
    /// child's only thread counts as the one that took it), and no guard exists.
    pub unsafe fn release(&self) {
        self.locked.store(false, Ordering::Release);
    }
}

/// Access to a locked value; dropping it releases the lock.
pub struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> core::ops::Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves this thread holds the lock.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> core::ops::DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves this thread holds the lock, and `&mut self`
        // that this is the only access through it.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: the guard was made when this thread took the lock.
        unsafe { self.lock.release() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_held_lock_refuses_others_until_released() {
        let lock = SpinLock::new(());
        let guard = lock.lock();
        assert!(!lock.try_acquire());
        drop(guard);
        assert!(lock.try_acquire(), "dropping the guard released it");
    }

    #[test]
    fn try_lock_takes_a_free_lock_and_refuses_a_held_one() {
        let lock = SpinLock::new(());
        let guard = lock.try_lock().expect("the lock is free");
        assert!(lock.try_lock().is_none());
        drop(guard);
        assert!(lock.try_lock().is_some());
    }

    #[test]
    fn acquire_and_release_pair_without_a_guard() {
        let lock = SpinLock::new(());
        lock.acquire();
        assert!(!lock.try_acquire());
        // SAFETY: this thread took the lock just above and made no guard.
        unsafe { lock.release() };
        assert!(lock.try_acquire());
    }

    #[test]
    fn increments_from_many_threads_are_not_lost() {
        const THREADS: u64 = 4;
        const ROUNDS: u64 = 20_000;
        let counter = Arc::new(SpinLock::new(0u64));
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || {
                    for _ in 0..ROUNDS {
                        *counter.lock() += 1;
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("worker");
        }
        assert_eq!(*counter.lock(), THREADS * ROUNDS);
    }
}
