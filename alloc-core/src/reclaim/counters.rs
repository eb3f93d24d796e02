//! The counters reclaim bumps as it works: per shrinker ([`ShrinkerCounters`],
//! kept in each registry entry) and the process-wide totals the allocator's
//! slow paths and the reclaimers add to. `stats.rs` reads them.
//!
//! Invariant: every counter is a relaxed atomic, bumped on a reclaim or
//! slow path (never on the allocation fast path), and bumping never
//! allocates or takes a lock.

use core::sync::atomic::{AtomicU64, Ordering};

/// Counters one shrinker's calls bump.
#[derive(Default)]
pub(crate) struct ShrinkerCounters {
    pub(crate) count_calls: AtomicU64,
    pub(crate) scan_calls: AtomicU64,
    pub(crate) objects_scanned: AtomicU64,
    pub(crate) objects_freed: AtomicU64,
    pub(crate) skipped_by_mask: AtomicU64,
    pub(crate) stops: AtomicU64,
    pub(crate) time_ns: AtomicU64,
    pub(crate) panics: AtomicU64,
}

/// Adds `n` to a statistics counter (relaxed: counters order nothing).
#[inline]
pub(crate) fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

pub(crate) static FAILED_CHARGES: AtomicU64 = AtomicU64::new(0);
pub(crate) static RESERVE_CHARGES: AtomicU64 = AtomicU64::new(0);
pub(crate) static BACKGROUND_WAKES: AtomicU64 = AtomicU64::new(0);
pub(crate) static WORKERS_STARTED: AtomicU64 = AtomicU64::new(0);
pub(crate) static PANICS: AtomicU64 = AtomicU64::new(0);
pub(crate) static FAILED_MAPS: AtomicU64 = AtomicU64::new(0);
