//! A test hook: parks the calling thread in the middle of a call, when a
//! test armed it for that thread, so a test can show that other threads'
//! calls complete meanwhile (SPEC §3: no call waits on an unrelated
//! thread). Called where an owner holds the most of its own state: while
//! it makes a chunk for a child of its tree, and while it frees a tree.

use std::cell::RefCell;
use std::sync::mpsc::{Receiver, Sender};

thread_local! {
    static ARMED: RefCell<Option<(Sender<()>, Receiver<()>)>> = const { RefCell::new(None) };
}

/// The calling thread's next pass by a hook says so on `parked` and waits
/// for `release`.
pub fn arm(parked: Sender<()>, release: Receiver<()>) {
    ARMED.with(|armed| *armed.borrow_mut() = Some((parked, release)));
}

pub fn here() {
    // `try_with`: the hooks also run at thread exit (a heap catching up),
    // after the thread's locals may be gone.
    if let Some((parked, release)) = ARMED.try_with(|armed| armed.borrow_mut().take()).ok().flatten() {
        let _ = parked.send(());
        let _ = release.recv();
    }
}
