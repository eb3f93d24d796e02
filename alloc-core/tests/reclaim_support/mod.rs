//! Helpers shared by the `reclaim_*` tests: a cache of big blocks with a
//! shrinker over it that records who called it and under which scope, a
//! watchdog that ends a hung test, and a way to wait for a condition.
//!
//! Blocks are [`BLOCK`] bytes, above the allocator's huge threshold, so that
//! each one moves the committed counter by its own size (a huge block is
//! mapped and charged alone). Each test binary uses only part of this module.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use shrinkalloc::reclaim::{
    current_scope, is_background_reclaimer, CountResult, Needs, ScanResult, ScopeFlags, ShrinkControl, Shrinker,
};
use shrinkalloc::ShrinkAlloc;

pub const MIB: usize = 1 << 20;
/// The size of one cached block: mapped alone, charged alone.
pub const BLOCK: usize = 2 * MIB;
/// Blocks a [`Cache`] holds at most.
pub const CAPACITY: usize = 4096;

/// Bytes the allocator has committed now.
pub fn committed() -> usize {
    shrinkalloc::stats().committed
}

/// Sets the soft and the hard limit to `extra` bytes above what is
/// committed once free pages and cached huge blocks are purged (a cached
/// block would be reused without being charged); returns the limit.
pub fn limit_above_committed(extra: usize) -> usize {
    shrinkalloc::purge();
    let hard = committed() + extra;
    shrinkalloc::reclaim::set_soft_limit(Some(hard));
    shrinkalloc::reclaim::set_hard_limit(Some(hard));
    hard
}

/// Ends the process with a message if the test is still running after
/// `limit`: a hang must fail, not stall CI.
pub fn watchdog(limit: Duration, what: &'static str) {
    thread::spawn(move || {
        thread::sleep(limit);
        eprintln!("watchdog: {what} still running after {limit:?}; failing");
        std::process::exit(101);
    });
}

/// Polls `cond` every few milliseconds for at most `limit`.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(5));
    }
    cond()
}

/// A block from the global allocator, or `None` when it returns null.
pub struct Raw(*mut u8, usize);

// SAFETY: the block is plain memory owned by whoever holds the `Raw`.
unsafe impl Send for Raw {}

impl Raw {
    pub fn try_new(size: usize) -> Option<Raw> {
        let layout = Layout::from_size_align(size, 16).unwrap();
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { ShrinkAlloc.alloc(layout) };
        if p.is_null() {
            return None;
        }
        // Touch every OS page so the block is really resident.
        for off in (0..size).step_by(4096) {
            // SAFETY: `off < size`, inside the block we own.
            unsafe { p.add(off).write(1) };
        }
        Some(Raw(p, size))
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        // SAFETY: allocated above with this layout, freed once.
        unsafe { ShrinkAlloc.dealloc(self.0, Layout::from_size_align(self.1, 16).unwrap()) };
    }
}

/// Where a scan call came from: a library reclaimer of a given class, or
/// any other thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    Other = 0,
    Reclaimer = 1,
    ReclaimerNofs = 2,
    ReclaimerNoio = 3,
}

impl Caller {
    /// The calling thread's kind (no allocation).
    pub fn current() -> Caller {
        if !is_background_reclaimer() {
            return Caller::Other;
        }
        let scope = current_scope().effective();
        if scope.contains(ScopeFlags::NOIO) {
            Caller::ReclaimerNoio
        } else if scope.contains(ScopeFlags::NOFS) {
            Caller::ReclaimerNofs
        } else {
            Caller::Reclaimer
        }
    }
}

/// Who called a shrinker and how; atomics only, so that the test thread can
/// read them while it allocates (a lock here, held while allocating, could
/// be wanted by the shrinker in reclaim on the same thread).
#[derive(Default)]
pub struct Calls {
    pub count: AtomicU64,
    pub scan: AtomicU64,
    pub freed: AtomicU64,
    /// Calls made by a thread whose own mask forbade this shrinker's needs.
    pub violations: AtomicU64,
    /// Calls whose `ShrinkControl::scope` was not the calling thread's.
    pub scope_mismatch: AtomicU64,
    /// Scan calls by [`Caller`].
    pub scans_by: [AtomicU64; 4],
}

impl Calls {
    fn note(&self, needs: Needs, sc: &ShrinkControl) {
        let mine = current_scope();
        if !needs.allowed_in(mine) {
            self.violations.fetch_add(1, Ordering::Relaxed);
        }
        if sc.scope() != mine.effective() {
            self.scope_mismatch.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn scans_by(&self, who: Caller) -> u64 {
        self.scans_by[who as usize].load(Ordering::Relaxed)
    }
}

/// A cache of [`BLOCK`]-sized blocks with a shrinker over it.
pub struct Cache {
    pub blocks: Mutex<Vec<Raw>>,
    pub needs: Needs,
    pub calls: Calls,
}

impl Cache {
    /// A cache with room for [`CAPACITY`] blocks: `fill` pushes under the
    /// cache lock, which the shrinker takes, so the push must never allocate.
    pub fn new(needs: Needs) -> Arc<Cache> {
        Arc::new(Cache { blocks: Mutex::new(Vec::with_capacity(CAPACITY)), needs, calls: Calls::default() })
    }

    /// Adds `n` blocks; false if the allocator refused one.
    pub fn fill(&self, n: usize) -> bool {
        for _ in 0..n {
            let Some(b) = Raw::try_new(BLOCK) else { return false };
            let mut v = self.lock();
            assert!(v.len() < CAPACITY, "test cache overflow");
            v.push(b);
        }
        true
    }

    pub fn len(&self) -> usize {
        self.blocks.lock().unwrap().len()
    }

    pub fn lock(&self) -> MutexGuard<'_, Vec<Raw>> {
        self.blocks.lock().unwrap()
    }
}

/// The shrinker side of a shared [`Cache`].
pub struct CacheShrinker(pub Arc<Cache>);

impl Shrinker for CacheShrinker {
    fn count(&self, sc: &ShrinkControl) -> CountResult {
        let c = &self.0;
        c.calls.count.fetch_add(1, Ordering::Relaxed);
        c.calls.note(c.needs, sc);
        match c.len() {
            0 => CountResult::Empty,
            n => CountResult::Count(n),
        }
    }

    fn scan(&self, sc: &ShrinkControl) -> ScanResult {
        let c = &self.0;
        c.calls.scan.fetch_add(1, Ordering::Relaxed);
        c.calls.note(c.needs, sc);
        c.calls.scans_by[Caller::current() as usize].fetch_add(1, Ordering::Relaxed);
        // The blocks leave the lock before they are freed.
        let victims: Vec<Raw> = {
            let mut v = c.lock();
            let n = sc.nr_to_scan().min(v.len());
            let keep = v.len() - n;
            v.split_off(keep)
        };
        let n = victims.len();
        drop(victims);
        c.calls.freed.fetch_add(n as u64, Ordering::Relaxed);
        ScanResult::Freed(n)
    }
}

/// Counts of calls by threads whose mask forbade the needs, across caches.
pub fn violations(caches: &[&Cache]) -> u64 {
    caches.iter().map(|c| c.calls.violations.load(Ordering::Relaxed)).sum()
}

pub mod deadlock;
