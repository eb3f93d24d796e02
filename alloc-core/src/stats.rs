//! Statistics of the allocator core, declared once.
//!
//! Counters change only on slow paths (mapping, purging, taking a page from
//! the OS), never per `malloc`, so they are process-wide relaxed atomics.
//! `in_use` is derived when read, by walking the segments: the sum over pages
//! of `used × block size` plus the huge blocks, read without stopping the
//! owners, so it is approximate while other threads allocate.

use core::fmt;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::os;
use crate::page::state;
use crate::segment::{Kind, ALL};

static MAPPED: AtomicUsize = AtomicUsize::new(0);
static COMMITTED: AtomicUsize = AtomicUsize::new(0);
static PURGED: AtomicUsize = AtomicUsize::new(0);
static SEGMENTS: AtomicUsize = AtomicUsize::new(0);
static HEAPS: AtomicUsize = AtomicUsize::new(0);

// Relaxed everywhere below: each counter is an independent tally; nothing
// is published through them.

pub(crate) fn on_map(size: usize, committed: usize) {
    MAPPED.fetch_add(size, Ordering::Relaxed);
    COMMITTED.fetch_add(committed, Ordering::Relaxed);
    SEGMENTS.fetch_add(1, Ordering::Relaxed);
}

/// Unmapping gives the committed part back to the OS: it counts as purged.
pub(crate) fn on_unmap(size: usize, committed: usize) {
    MAPPED.fetch_sub(size, Ordering::Relaxed);
    on_purge(committed);
    SEGMENTS.fetch_sub(1, Ordering::Relaxed);
}

pub(crate) fn on_commit(bytes: usize) {
    COMMITTED.fetch_add(bytes, Ordering::Relaxed);
}

pub(crate) fn on_purge(bytes: usize) {
    COMMITTED.fetch_sub(bytes, Ordering::Relaxed);
    PURGED.fetch_add(bytes, Ordering::Relaxed);
}

pub(crate) fn on_new_heap() {
    HEAPS.fetch_add(1, Ordering::Relaxed);
}

/// Bytes the allocator holds committed now (one relaxed load): segment
/// headers, pages not given back to the OS, and huge blocks.
#[inline]
pub fn committed() -> usize {
    COMMITTED.load(Ordering::Relaxed)
}

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
        mapped: MAPPED.load(Ordering::Relaxed),
        committed: COMMITTED.load(Ordering::Relaxed),
        in_use: in_use(),
        purged: PURGED.load(Ordering::Relaxed),
        segments: SEGMENTS.load(Ordering::Relaxed),
        heaps: HEAPS.load(Ordering::Relaxed),
        resident: os::resident_bytes().unwrap_or(0),
    }
}

fn in_use() -> usize {
    let all = ALL.lock();
    let mut total = 0;
    let mut seg = all.0;
    while !seg.is_null() {
        // SAFETY: segments on `ALL` stay mapped while its lock is held; page
        // fields other than the atomics are read only for pages in use,
        // whose block size does not change while they are.
        unsafe {
            let s = &*seg;
            if s.kind == Kind::Huge {
                // Relaxed: a snapshot; huge blocks are IN_USE while live.
                if s.pages[0].state.load(Ordering::Relaxed) == state::IN_USE {
                    total += s.usable;
                }
            } else {
                for p in &s.pages[..s.page_count] {
                    // Relaxed: a snapshot; see the module doc.
                    if p.state.load(Ordering::Relaxed) == state::IN_USE {
                        total += p.used() as usize * p.block_size;
                    }
                }
            }
            seg = s.all_next;
        }
    }
    total
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |b: usize| b as f64 / (1 << 20) as f64;
        write!(
            f,
            "in use {:.1} MiB, committed {:.1} MiB, resident {:.1} MiB, mapped {:.1} MiB, purged {:.1} MiB (total), {} segments, {} heaps",
            mib(self.in_use),
            mib(self.committed),
            mib(self.resident),
            mib(self.mapped),
            mib(self.purged),
            self.segments,
            self.heaps
        )
    }
}
