//! Statistics of the allocator core, declared once.
//!
//! The counters are kept where they change: mapped, committed and purged
//! bytes by the commit seam (`commit.rs`), heaps by `thread.rs`; they change
//! only on slow paths, never per `malloc`.
//! `in_use` is derived when read, by walking the segments: the sum over pages
//! of `used × block size` plus the huge blocks, read without stopping the
//! owners, so it is approximate while other threads allocate.

use core::fmt;
use core::sync::atomic::Ordering;

use crate::page::state;
use crate::segment::{Kind, ALL};
use crate::{commit, os, size_class, thread};

/// Bytes the allocator holds committed now (one relaxed load); kept by the
/// commit seam (`commit.rs`).
pub use crate::commit::committed;

/// A snapshot of the allocator's statistics. All sizes are in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Address space mapped from the OS.
    pub mapped: usize,
    /// Memory that may be resident: headers, pages in use or free but not yet
    /// purged, huge blocks. An upper bound on what the allocator holds in RAM.
    pub committed: usize,
    /// Bytes in live blocks (block sizes, so including rounding), approximate
    /// while other threads run.
    pub in_use: usize,
    /// Bytes given back to the OS since start, by `madvise` or by unmapping
    /// (cumulative).
    pub purged: usize,
    /// Segments mapped now (huge blocks included).
    pub segments: usize,
    /// Thread heaps created since start (owned or abandoned).
    pub heaps: usize,
    /// Resident set size of the whole process (not only the allocator's
    /// memory), from `/proc/self/statm`; 0 if it cannot be read.
    pub resident: usize,
    /// Pages that a purge gave back while a thread that
    /// did not allocate still held them, every block of each freed by
    /// other threads (cumulative; see `shrinkalloc::purge`).
    pub stranded_pages: usize,
}

impl Stats {
    /// Committed bytes not in live blocks: the allocator's own overhead.
    pub fn overhead(&self) -> usize {
        self.committed.saturating_sub(self.in_use)
    }
}

/// Reads the statistics.
///
/// ```
/// let s = shrinkalloc::stats();
/// assert!(s.committed <= s.mapped);
/// ```
pub fn stats() -> Stats {
    Stats {
        mapped: commit::mapped(),
        committed: commit::committed(),
        in_use: in_use(),
        purged: commit::purged(),
        segments: commit::segments(),
        heaps: thread::heaps_created(),
        resident: os::resident_bytes().unwrap_or(0),
        stranded_pages: crate::purge::stranded_pages(),
    }
}

fn in_use() -> usize {
    let all = ALL.lock();
    let mut total = 0;
    let mut seg = all.0;
    while !seg.is_null() {
        // SAFETY: segments on `ALL` stay mapped while its lock is held, and
        // a shared reference to one aliases no `&mut`: every field that
        // changes after mapping is a `Cell` or atomic, and the ones read
        // here are atomics.
        let s = unsafe { &*seg };
        if s.kind == Kind::Huge {
            // Acquire pairs with the Release of IN_USE in `huge::alloc`.
            if s.pages[0].shared.state.load(Ordering::Acquire) == state::IN_USE {
                // Relaxed: a snapshot.
                total += s.usable.load(Ordering::Relaxed);
            }
        } else {
            for p in &s.pages[..s.page_count] {
                // Acquire pairs with the Release of IN_USE in `Page::init`:
                // the class read below is the page's (or a later one, if the
                // page is retired and taken again meanwhile: a snapshot).
                // A page another thread emptied keeps its `used` until the
                // owner collects it, but holds no live block.
                if p.shared.state.load(Ordering::Acquire) == state::IN_USE && !p.emptied() {
                    total += p.used() as usize * size_class::size_of(p.class());
                }
            }
        }
        seg = s.all_next.get();
    }
    total
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |b: usize| b as f64 / (1 << 20) as f64;
        write!(
            f,
            "in use {:.1} MiB, committed {:.1} MiB, resident {:.1} MiB, mapped {:.1} MiB, purged {:.1} MiB (total), {} segments, {} heaps, {} stranded pages given back",
            mib(self.in_use),
            mib(self.committed),
            mib(self.resident),
            mib(self.mapped),
            mib(self.purged),
            self.segments,
            self.heaps,
            self.stranded_pages
        )
    }
}
