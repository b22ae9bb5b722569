//! Diagnostics (SPEC §4): the `MAPI32_DEBUG` switches and the misuse count.
//!
//! `MAPI32_DEBUG` is read once, with `getenv`, and holds comma-separated
//! words: `warn` (one line on stderr per misuse), `abort` (that line, then
//! `abort()`), `leaks` (a report of the roots still live at exit). Unknown
//! words are ignored. Nothing here allocates or can panic: a report is built
//! in a fixed buffer on the stack and written with `write(2)`.

use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

const WARN: u8 = 1;
const ABORT: u8 = 2;
const LEAKS: u8 = 4;
/// Set once the variable has been read.
const READ: u8 = 0x80;

static OPTIONS: AtomicU8 = AtomicU8::new(0);
static MISUSES: AtomicU64 = AtomicU64::new(0);

/// A call the contract refuses or ignores, as `MAPI32_DEBUG=warn` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misuse {
    NullOutPointer,
    UnknownParent,
    FreeOfChild,
    FreeOfUnknown,
}

impl Misuse {
    fn explain(self) -> &'static str {
        match self {
            Misuse::NullOutPointer => "the output pointer is NULL; nothing allocated",
            Misuse::UnknownParent => "not a live block of this library (freed, interior or foreign); refused",
            Misuse::FreeOfChild => "a child block, which is freed with its root; ignored",
            Misuse::FreeOfUnknown => "not a live root (double free, interior or foreign pointer); ignored",
        }
    }
}

/// Reads `MAPI32_DEBUG` (once) and, with `leaks`, arranges the exit report.
/// Called when the library is loaded; harmless to call again.
pub fn init() {
    options();
}

fn options() -> u8 {
    let known = OPTIONS.load(Ordering::Acquire);
    if known & READ != 0 {
        return known;
    }
    // SAFETY: getenv takes a NUL-terminated name and returns NULL or a
    // NUL-terminated string owned by the environment.
    let value = unsafe { libc::getenv(b"MAPI32_DEBUG\0".as_ptr().cast()) };
    let parsed = READ | if value.is_null() { 0 } else { parse(unsafe { std::ffi::CStr::from_ptr(value) }.to_bytes()) };
    // Racing first calls parse the same value; one of them registers the report.
    if OPTIONS.compare_exchange(known, parsed, Ordering::AcqRel, Ordering::Acquire).is_ok() && parsed & LEAKS != 0 {
        // SAFETY: `report_leaks` is an `extern "C" fn()` that never unwinds.
        unsafe { libc::atexit(report_leaks) };
    }
    OPTIONS.load(Ordering::Acquire)
}

fn parse(value: &[u8]) -> u8 {
    value.split(|&byte| byte == b',').fold(0, |flags, word| {
        flags
            | match trim(word) {
                b"warn" => WARN,
                b"abort" => WARN | ABORT,
                b"leaks" => LEAKS,
                _ => 0,
            }
    })
}

fn trim(mut word: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = word {
        word = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = word {
        word = rest;
    }
    word
}

/// How many misuses (refused or ignored calls) there have been.
pub fn misuse_count() -> u64 {
    MISUSES.load(Ordering::Relaxed)
}

/// Counts a misuse of `call` with `pointer`, and reports it as asked.
pub fn misuse(call: &str, pointer: usize, what: Misuse) {
    MISUSES.fetch_add(1, Ordering::Relaxed);
    let options = options();
    if options & WARN == 0 {
        return;
    }
    let mut line = Line::new();
    line.push(b"libmapi32: ");
    line.push(call.as_bytes());
    line.push(b"(");
    line.push_hex(pointer);
    line.push(b"): ");
    line.push(what.explain().as_bytes());
    line.write();
    if options & ABORT != 0 {
        // SAFETY: abort takes no arguments and does not return.
        unsafe { libc::abort() };
    }
}

/// The `leaks` report: how many roots are still live, how many bytes their
/// trees hold, and the largest of them.
extern "C" fn report_leaks() {
    const LARGEST: usize = 5;
    let mut roots = 0u64;
    let mut bytes = 0u64;
    // (tree bytes, root size, root address), largest first.
    let mut largest = [(0u64, 0usize, 0usize); LARGEST];
    use crate::region::for_each_root;
    let left_out = for_each_root(|addr, root_size, tree_bytes| {
        roots += 1;
        bytes = bytes.wrapping_add(tree_bytes);
        if let Some(place) = largest.iter().position(|&(held, _, _)| tree_bytes > held) {
            largest.copy_within(place..LARGEST - 1, place + 1);
            largest[place] = (tree_bytes, root_size, addr);
        }
    });
    let mut line = Line::new();
    line.push(b"libmapi32: ");
    line.push_decimal(roots);
    line.push(b" root(s) still live at exit, ");
    line.push_decimal(bytes);
    line.push(b" bytes with their children");
    line.write();
    for &(tree_bytes, root_size, addr) in largest.iter().take_while(|&&(_, _, addr)| addr != 0) {
        let mut line = Line::new();
        line.push(b"libmapi32:   root ");
        line.push_hex(addr);
        line.push(b" of ");
        line.push_decimal(root_size as u64);
        line.push(b" bytes, ");
        line.push_decimal(tree_bytes);
        line.push(b" bytes with its children");
        line.write();
    }
    if left_out != 0 {
        let mut line = Line::new();
        line.push(b"libmapi32:   not counted: the roots of ");
        line.push_decimal(left_out as u64);
        line.push(b" thread(s) still running, whose heaps may be changing");
        line.write();
    }
}

/// One line of a report, built without allocating; what does not fit is cut.
struct Line {
    bytes: [u8; 200],
    len: usize,
}

impl Line {
    fn new() -> Line {
        Line { bytes: [0; 200], len: 0 }
    }

    fn push(&mut self, text: &[u8]) {
        // Keep the last byte for the newline.
        let room = self.bytes.len() - 1 - self.len;
        let count = text.len().min(room);
        if let (Some(to), Some(from)) = (self.bytes.get_mut(self.len..self.len + count), text.get(..count)) {
            to.copy_from_slice(from);
            self.len += count;
        }
    }

    fn push_hex(&mut self, value: usize) {
        let mut digits = [0u8; 2 + 2 * core::mem::size_of::<usize>()];
        digits[0] = b'0';
        digits[1] = b'x';
        let mut shift = usize::BITS;
        for digit in digits.iter_mut().skip(2) {
            shift -= 4;
            *digit = b"0123456789abcdef"[(value >> shift) & 0xF];
        }
        self.push(&digits);
    }

    fn push_decimal(&mut self, mut value: u64) {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (value % 10) as u8;
            value /= 10;
            if value == 0 || start == 0 {
                break;
            }
        }
        self.push(&digits[start..]);
    }

    fn write(mut self) {
        // push keeps the last byte free, so there is room; get_mut because
        // the optimiser cannot prove it, and an index would leave a
        // bounds-check panic in the library (make no-panic-check).
        if let Some(end) = self.bytes.get_mut(self.len) {
            *end = b'\n';
            self.len += 1;
        }
        // The C runtime's write takes an unsigned int count on Windows and a
        // size_t elsewhere; a line is at most 200 bytes, so it always fits.
        #[cfg(windows)]
        let len = self.len as libc::c_uint;
        #[cfg(not(windows))]
        let len = self.len;
        // SAFETY: the buffer holds `len` initialised bytes. A short or failed
        // write of a diagnostic is not worth acting on.
        let _ = unsafe { libc::write(2, self.bytes.as_ptr().cast(), len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_read_with_commas_and_spaces() {
        assert_eq!(parse(b""), 0);
        assert_eq!(parse(b"warn"), WARN);
        assert_eq!(parse(b"abort"), WARN | ABORT, "abort implies the line");
        assert_eq!(parse(b" leaks , warn"), LEAKS | WARN);
        assert_eq!(parse(b"verbose,leaks"), LEAKS, "unknown words are ignored");
        assert_eq!(parse(b"warning"), 0, "whole words only");
    }

    #[test]
    fn lines_hold_hex_and_decimal_and_never_overflow() {
        let mut line = Line::new();
        line.push_hex(0xdead_beef);
        line.push(b" ");
        line.push_decimal(0);
        line.push(b" ");
        line.push_decimal(u64::MAX);
        let expected_hex = if cfg!(target_pointer_width = "64") { "0x00000000deadbeef" } else { "0xdeadbeef" };
        let text = core::str::from_utf8(&line.bytes[..line.len]).unwrap();
        assert_eq!(text, format!("{expected_hex} 0 18446744073709551615"));
        for _ in 0..100 {
            line.push(b"overflowing text ");
        }
        assert_eq!(line.len, line.bytes.len() - 1, "cut, with room left for the newline");
    }
}
