//! A test hook: parks the calling thread in the middle of a call, when a
//! test armed it for that thread, so a test can show that other threads'
//! calls complete meanwhile (SPEC §3: no call waits on an unrelated
//! thread). Called where an owner holds the most of its own state: while
//! it makes a chunk for a child of its tree, and while it frees a tree;
//! and where a thread moving a root (of any thread's) holds its new face
//! but has not claimed the root yet.
//!
//! The arming lives in one static, not a `thread_local!`: a thread-local
//! with a destructor registers it with the C runtime on every thread that
//! passes by the hook, and a test thread still running at exit then shows
//! up in LeakSanitizer's report (`make test-asan`).

use std::sync::mpsc::{Receiver, Sender};
use std::sync::Mutex;
use std::thread::ThreadId;

struct Armed {
    thread: ThreadId,
    parked: Sender<()>,
    release: Receiver<()>,
}

static ARMED: Mutex<Option<Armed>> = Mutex::new(None);

/// The calling thread's next pass by a hook says so on `parked` and waits
/// for `release`.
pub fn arm(parked: Sender<()>, release: Receiver<()>) {
    let thread = std::thread::current().id();
    *ARMED.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Armed { thread, parked, release });
}

pub fn here() {
    let armed = {
        let mut armed = ARMED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match armed.as_ref() {
            Some(each) if each.thread == std::thread::current().id() => armed.take(),
            _ => None,
        }
    };
    if let Some(Armed { parked, release, .. }) = armed {
        let _ = parked.send(());
        let _ = release.recv();
    }
}
