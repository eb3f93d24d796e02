//! The soft and hard limits on the allocator's committed bytes.
//!
//! | setting    | environment              | default | meaning                                        |
//! |------------|--------------------------|---------|------------------------------------------------|
//! | soft limit | `SHRINKALLOC_SOFT_LIMIT` | none    | crossing it wakes background reclaim           |
//! | hard limit | `SHRINKALLOC_HARD_LIMIT` | none    | an allocation past it reclaims directly, or fails |
//!
//! Values are bytes with an optional binary unit (`4096`, `64K`, `512M`,
//! `2G`); `0` means no limit. The environment is read once, on the first
//! allocation slow path, without allocating; a bad value is reported once on
//! stderr and ignored. The Rust setters win over the environment. Unless
//! `SHRINKALLOC_CGROUP=off`, the process's memory cgroup is found
//! (`cgroup.rs`); with neither limit configured, both are derived from it,
//! and in any case its whole usage is watched (`usage.rs`). With a
//! hard limit and no soft limit, the soft limit in force is 7/8 of the hard
//! one, so that background reclaim starts before allocations have to wait.
//!
//! Invariant: the core's commit threshold (`crate::commit`, the fast check
//! of every charge) is the smallest of the soft limit in force, the
//! hard limit and `MONITOR_AT` (`usize::MAX` without any), recomputed under
//! `SETTER` after every change (a fork child, alone, lowers it without the
//! lock); it is 0 until the environment has been read, so the first
//! `charge` takes the slow path and reads it. `charge`'s fast path is one
//! load of it and one of the committed counter. `MONITOR_AT` is the
//! committed bytes past which the next slow path starts the pressure
//! monitor (`monitor.rs`), `usize::MAX` once it started or when not wanted.

use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use super::shrinker::Level;
use crate::lock::SpinLock;
use crate::options::{self, Var};

static SOFT: AtomicUsize = AtomicUsize::new(0);
static HARD: AtomicUsize = AtomicUsize::new(0);
/// 0: environment unread; 1: being read; 2: read.
static ENV: AtomicU8 = AtomicU8::new(0);
/// Serialises limit changes so the commit threshold matches the last pair written.
static SETTER: SpinLock<()> = SpinLock::new(());
/// Committed bytes past which the pressure monitor is due to start.
static MONITOR_AT: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Reserve above the hard limit for allocations made inside reclaim:
/// 1/16 of the limit, clamped to [`RESERVE_MIN`, `RESERVE_MAX`].
const RESERVE_MIN: usize = 8 << 20;
const RESERVE_MAX: usize = 256 << 20;

/// The limits in force, as one reclaim decision reads them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    soft: usize,
    hard: usize,
}

impl Limits {
    /// Limits of `soft` and `hard` bytes (0: none), as the soft one is in
    /// force: the group's lines in `usage.rs`.
    pub(crate) const fn new(soft: usize, hard: usize) -> Self {
        Self { soft, hard }
    }

    /// The soft limit in force, explicit or derived.
    pub(crate) fn soft(self) -> Option<usize> {
        (self.soft != 0).then_some(self.soft)
    }

    /// The hard limit.
    pub(crate) fn hard(self) -> Option<usize> {
        (self.hard != 0).then_some(self.hard)
    }

    /// Whether `bytes` committed in all fits under the hard limit.
    pub(crate) fn fits(self, bytes: usize) -> bool {
        self.hard == 0 || bytes <= self.hard
    }

    /// Whether `bytes` fits under the hard limit plus the reclaim reserve.
    pub(crate) fn fits_reserve(self, bytes: usize) -> bool {
        self.hard == 0 || bytes <= self.hard.saturating_add((self.hard / 16).clamp(RESERVE_MIN, RESERVE_MAX))
    }

    /// Whether `bytes` committed in all is past the soft limit in force.
    pub(crate) fn over_soft(self, bytes: usize) -> bool {
        self.soft != 0 && bytes > self.soft
    }

    /// Background reclaim's goal: 1/16 below the soft limit, so that one
    /// wake buys room for more than one page.
    pub(crate) fn soft_goal(self) -> usize {
        self.soft - self.soft / 16
    }

    /// Headroom direct reclaim frees beyond the shortfall: 1/32 of the hard limit.
    pub(crate) fn hard_headroom(self) -> usize {
        self.hard / 32
    }

    /// The pressure level at `bytes` committed: `Low` past the soft limit,
    /// `Medium` past halfway to the hard one (or 1.5 times the soft one
    /// without a hard limit), `Critical` past the hard limit.
    pub(crate) fn level(self, bytes: usize) -> Level {
        if !self.fits(bytes) {
            Level::Critical
        } else if !self.over_soft(bytes) {
            Level::None
        } else {
            let top = if self.hard != 0 { self.hard } else { self.soft.saturating_mul(2) };
            if bytes > self.soft + (top - self.soft.min(top)) / 2 {
                Level::Medium
            } else {
                Level::Low
            }
        }
    }
}

/// The limits in force (reads the environment first if nobody has).
pub(crate) fn current() -> Limits {
    init();
    // Relaxed: each limit is an independent value; a reader racing a setter
    // sees the old or the new one, and the commit threshold is fixed up after it.
    let soft = SOFT.load(Ordering::Relaxed);
    let hard = HARD.load(Ordering::Relaxed);
    let soft = match (soft, hard) {
        (0, 0) => 0,
        (0, h) => h - h / 8,
        (s, 0) => s,
        (s, h) => s.min(h),
    };
    Limits { soft, hard }
}

fn recompute() {
    let l = current();
    let limits = l.soft().unwrap_or(usize::MAX).min(l.hard().unwrap_or(usize::MAX));
    // Relaxed: a stale value only delays the monitor's start by one charge.
    let t = limits.min(MONITOR_AT.load(Ordering::Relaxed));
    crate::commit::set_threshold(t);
}

fn set(which: &AtomicUsize, bytes: Option<usize>) {
    init();
    let _g = SETTER.lock();
    // Relaxed: see `current`; SETTER orders the setters among themselves.
    which.store(bytes.unwrap_or(0), Ordering::Relaxed);
    recompute();
}

/// Sets the soft limit on committed bytes (`None` or `Some(0)`: none, and
/// then 7/8 of the hard limit is in force). Crossing it wakes background
/// reclaim; no allocation ever fails because of it.
///
/// ```
/// use shrinkalloc::reclaim::{set_soft_limit, soft_limit};
/// set_soft_limit(Some(512 << 20));
/// assert_eq!(soft_limit(), Some(512 << 20));
/// set_soft_limit(None);
/// ```
pub fn set_soft_limit(bytes: Option<usize>) {
    set(&SOFT, bytes);
}

/// Sets the hard limit on committed bytes (`None` or `Some(0)`: none). An
/// allocation that would cross it reclaims in its own thread, under its
/// scope, and fails (null) if it still does not fit.
///
/// ```
/// use shrinkalloc::reclaim::{hard_limit, set_hard_limit};
/// set_hard_limit(Some(2 << 30));
/// assert_eq!(hard_limit(), Some(2 << 30));
/// set_hard_limit(None);
/// assert_eq!(hard_limit(), None);
/// ```
pub fn set_hard_limit(bytes: Option<usize>) {
    set(&HARD, bytes);
}

/// The soft limit as set (from Rust or the environment), not derived.
///
/// ```
/// assert_eq!(shrinkalloc::reclaim::soft_limit(), None);
/// ```
pub fn soft_limit() -> Option<usize> {
    init();
    // Relaxed: see `current`.
    Some(SOFT.load(Ordering::Relaxed)).filter(|&b| b != 0)
}

/// The hard limit as set (from Rust or the environment).
///
/// ```
/// assert_eq!(shrinkalloc::reclaim::hard_limit(), None);
/// ```
pub fn hard_limit() -> Option<usize> {
    init();
    // Relaxed: see `current`.
    Some(HARD.load(Ordering::Relaxed)).filter(|&b| b != 0)
}

/// Reads `SHRINKALLOC_SOFT_LIMIT` and `SHRINKALLOC_HARD_LIMIT` once.
#[inline]
pub(crate) fn init() {
    // Acquire pairs with the Release store of 2 below: the values read from
    // the environment are visible once the state says so.
    if ENV.load(Ordering::Acquire) != 2 {
        init_slow();
    }
}

#[cold]
#[inline(never)]
fn init_slow() {
    // Limits are about to be set: the core must call reclaim past them.
    super::install();
    if ENV.compare_exchange(0, 1, Ordering::Acquire, Ordering::Acquire).is_err() {
        // Another thread is reading; it takes microseconds. Bounded, in case
        // it was a parent thread caught by fork().
        for _ in 0..10_000 {
            if ENV.load(Ordering::Acquire) == 2 {
                return;
            }
            std::thread::yield_now();
        }
        return;
    }
    for (var, cell) in [(Var::SoftLimit, &SOFT), (Var::HardLimit, &HARD)] {
        if let Some(v) = options::env_number(var) {
            // Relaxed: published by the Release store of ENV below.
            cell.store(v, Ordering::Relaxed);
        }
    }
    // Relaxed: we are the only writer until ENV says 2.
    let configured = SOFT.load(Ordering::Relaxed) != 0 || HARD.load(Ordering::Relaxed) != 0;
    let group_limit = from_cgroup(!configured);
    if let Some(at) = super::monitor::start_at_init(group_limit) {
        // Relaxed: published with the limits by the Release store of ENV.
        MONITOR_AT.store(at, Ordering::Relaxed);
    }
    ENV.store(2, Ordering::Release);
    let _g = SETTER.lock();
    recompute();
}

/// Finds the process's memory cgroup (see `cgroup.rs`) unless
/// `SHRINKALLOC_CGROUP=off`, derives the limits from it when `derive` (none
/// is configured), and hands it to the usage watch. Returns whether the
/// group has a limit.
fn from_cgroup(derive: bool) -> bool {
    // The choices are `auto` (0) and `off` (1).
    if options::env_choice(Var::Cgroup) == 1 {
        super::sources::set_state(super::sources::Source::Cgroup, super::sources::SourceState::Off);
        return false;
    }
    let found = super::cgroup::discover();
    let derived = found.as_ref().and_then(|f| f.derived_limits());
    if let (Some((soft, hard)), true) = (derived, derive) {
        // Relaxed: published by the Release store of ENV in `init_slow`.
        SOFT.store(soft as usize, Ordering::Relaxed);
        HARD.store(hard as usize, Ordering::Relaxed);
    }
    super::usage::set_group(found.as_ref());
    super::cgroup::remember(found);
    derived.is_some()
}

/// Whether the pressure monitor is due to start at `want` committed bytes.
#[inline]
pub(crate) fn monitor_due(want: usize) -> bool {
    // Relaxed: see `recompute`.
    want > MONITOR_AT.load(Ordering::Relaxed)
}

/// Makes the monitor due once the committed bytes pass `at`.
pub(crate) fn arm_monitor(at: usize) {
    init();
    let _g = SETTER.lock();
    // Relaxed: SETTER orders the recomputations.
    MONITOR_AT.fetch_min(at, Ordering::Relaxed);
    recompute();
}

/// Takes the monitor's start off the slow path; `true` for the one caller
/// that found it armed, who starts it.
pub(crate) fn disarm_monitor() -> bool {
    // Relaxed: the swap elects one starter; SETTER orders the recomputation.
    if MONITOR_AT.swap(usize::MAX, Ordering::Relaxed) == usize::MAX {
        return false;
    }
    let _g = SETTER.lock();
    recompute();
    true
}

/// [`arm_monitor`] for a fork child's atfork handler: the child has one
/// thread, and `SETTER` may have been held by a thread that is not there.
pub(crate) fn arm_monitor_in_child(at: usize) {
    // Relaxed: single-threaded here.
    MONITOR_AT.store(at, Ordering::Relaxed);
    crate::commit::lower_threshold(at);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_rise_from_soft_to_hard() {
        let l = Limits { soft: 100, hard: 200 };
        assert_eq!(l.level(100), Level::None);
        assert_eq!(l.level(120), Level::Low);
        assert_eq!(l.level(160), Level::Medium);
        assert_eq!(l.level(201), Level::Critical);
        let soft_only = Limits { soft: 100, hard: 0 };
        assert_eq!(soft_only.level(140), Level::Low);
        assert_eq!(soft_only.level(1 << 40), Level::Medium);
    }
}
