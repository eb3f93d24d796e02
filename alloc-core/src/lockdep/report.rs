//! The report of reclaim lockdep: one line naming the lock, the shrinker
//! that takes it, its needs and the thread's scope, then the two stacks.
//!
//! Invariant: nothing here allocates. The text is formatted into a fixed
//! buffer on the stack (`core::fmt` needs no heap) and written with
//! `write(2)`; stacks are taken with glibc's `backtrace()` into fixed
//! arrays and printed a frame a line, named from the symbols the object
//! exports or its own symbol table (`symbols.rs`), without calling
//! `malloc`. glibc's `backtrace()` loads
//! libgcc's unwinder on its first call, which allocates: the first call
//! happens while a shrinker runs (learning), where allocations never start
//! reclaim, and the checker's own allocations are never checked.

use core::ffi::{c_int, c_void};
use core::fmt::{self, Write};

use super::table::{self, Entry, Learned, FRAMES};
use crate::lock::SpinLock;
use crate::reclaim::{Needs, ScopeFlags};

/// Serialises reports, so that two threads' lines never interleave.
pub(super) static PRINT: SpinLock<()> = SpinLock::new(());

/// A line being formatted: what does not fit is cut.
struct Line {
    buf: [u8; 768],
    len: usize,
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

impl Line {
    fn new() -> Self {
        Line { buf: [0; 768], len: 0 }
    }

    fn flush(&mut self) {
        crate::os::write_stderr(&self.buf[..self.len]);
        self.len = 0;
    }
}

/// Fills `frames` with the calling thread's stack; returns how many.
pub(super) fn capture(frames: &mut [usize; FRAMES]) -> usize {
    // SAFETY: `frames` holds FRAMES pointer-sized slots, and backtrace
    // writes at most the count it is given.
    let n = unsafe { libc::backtrace(frames.as_mut_ptr().cast::<*mut c_void>(), FRAMES as c_int) };
    usize::try_from(n).unwrap_or(0)
}

/// Prints a stack, one frame a line; the caller holds `PRINT`.
fn print_stack(l: &mut Line, frames: &[usize]) {
    for &f in frames {
        super::symbols::write_frame(l, f);
        l.flush();
    }
}

/// Innermost frames that make a call site: the allocator's own few, the
/// function that allocated and several of its callers, so that one bug
/// reached from many places is not reported from each. Every frame
/// captured in a build without optimisation, where the allocator's own
/// frames and the standard library's (`vec!` alone takes six) are not
/// inlined: twelve were all below the caller, so that every allocation
/// under a given lock made one call site and one report.
const SITE_FRAMES: usize = if cfg!(debug_assertions) { super::table::FRAMES } else { 12 };

/// A call site: a hash of the innermost frames of the allocating stack.
pub(super) fn site_of(frames: &[usize]) -> u64 {
    frames[..frames.len().min(SITE_FRAMES)]
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &f| (h ^ f as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

fn scope_name(scope: ScopeFlags) -> &'static str {
    match (scope.contains(ScopeFlags::NOFS), scope.contains(ScopeFlags::NOIO)) {
        (false, false) => "none",
        (true, false) => "nofs",
        (false, true) => "noio",
        (true, true) => "nofs|noio",
    }
}

/// What would make the allocation safe for a shrinker of `needs`.
fn remedy(needs: Needs) -> &'static str {
    if needs == Needs::NONE {
        "no scope excludes a shrinker that needs nothing: release the lock before allocating"
    } else if needs == Needs::IO {
        "a NOIO scope (sa_memalloc_noio_save) would exclude it"
    } else {
        "a NOFS scope (sa_memalloc_nofs_save) would exclude it"
    }
}

/// Prints one report: `entry`'s lock, taken in reclaim by the shrinker of
/// slot `slot` (`learned`), held by this thread while it allocates in
/// `scope` at the stack `here`.
pub(super) fn print(entry: &Entry, slot: usize, learned: &Learned, scope: ScopeFlags, here: &[usize]) {
    let _g = PRINT.lock();
    let mut l = Line::new();
    let needs = table::needs_of(slot);
    // Formatting into `Line` cannot fail.
    let _ = write!(l, "shrinkalloc: possible reclaim deadlock: thread allocates holding lock {:#x}", entry.lock());
    if let Some(name) = entry.name() {
        let _ = write!(l, " ({name})");
    }
    let _ = writeln!(
        l,
        ", which shrinker \"{}\" (needs {}) takes in reclaim; the thread's scope is {}: {}",
        learned.shrinker(),
        needs.name(),
        scope_name(scope),
        remedy(needs)
    );
    let _ = writeln!(l, "  where reclaim took the lock (shrinker \"{}\"):", learned.shrinker());
    l.flush();
    print_stack(&mut l, &learned.frames[..learned.depth]);
    let _ = writeln!(l, "  where the thread allocated while holding it:");
    l.flush();
    print_stack(&mut l, here);
}

/// The last line before `SHRINKALLOC_LOCKDEP=abort` aborts: the report's
/// gist again, for logs that keep only a process's last lines.
pub(super) fn print_abort(entry: &Entry, learned: &Learned, slot: usize, scope: ScopeFlags) {
    let _g = PRINT.lock();
    let mut l = Line::new();
    let _ = write!(l, "shrinkalloc: lockdep: aborting at the first report: lock {:#x}", entry.lock());
    if let Some(name) = entry.name() {
        let _ = write!(l, " ({name})");
    }
    let _ = writeln!(
        l,
        " held while allocating in scope {}, taken in reclaim by shrinker \"{}\" (needs {})",
        scope_name(scope),
        learned.shrinker(),
        table::needs_of(slot).name()
    );
    l.flush();
}
