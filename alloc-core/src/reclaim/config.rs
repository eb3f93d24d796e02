//! Reclaim's configuration, read once per process on the first slow path:
//! the limits as the program sets them (the Rust setters, `sa_set_limits`)
//! or the environment does, or as derived from the memory cgroup, and when
//! the pressure monitor is due.
//!
//! | setting    | environment              | default | meaning                                        |
//! |------------|--------------------------|---------|------------------------------------------------|
//! | soft limit | `SHRINKALLOC_SOFT_LIMIT` | none    | crossing it wakes background reclaim           |
//! | hard limit | `SHRINKALLOC_HARD_LIMIT` | none    | an allocation past it reclaims directly, or fails |
//!
//! Values are bytes with an optional binary unit (`4096`, `64K`, `512M`,
//! `2G`); `0` means no limit. The environment is read without allocating;
//! a bad value is reported once on stderr and ignored. The Rust setters win
//! over the environment. Unless `SHRINKALLOC_CGROUP=off`, the process's
//! memory cgroup is found (`cgroup.rs`); with neither limit configured,
//! both are derived from it (as lines that start reclaim, never refuse),
//! and in any case its whole usage is watched (`usage.rs`); under its
//! lines, transparent huge pages in the system's `always` mode are turned
//! off for the process (`keep_huge_pages_out`). The monitor (`monitor.rs`)
//! says whether it should start on its own (`SHRINKALLOC_MONITOR=on`); if
//! so, past a few more MiB committed.
//!
//! Invariant: [`ensure`] returns only once the configuration is read (or
//! after a bounded wait, for a thread that finds a fork's parent thread
//! reading), and every setter calls it first, so the environment never
//! overrides a value the program set. This is the one module that knows
//! all the sources of the configuration; the limits themselves
//! (`limit.rs`) know none.

use core::sync::atomic::{AtomicU8, Ordering};

use super::limit::{self, Which};
use super::sources::{self, Source, SourceState};
use super::{cgroup, monitor, usage};
use crate::options::{self, Var};
use crate::os;

/// 0: unread; 1: being read; 2: read.
static STATE: AtomicU8 = AtomicU8::new(0);

/// Reads the configuration if nobody has.
#[inline]
pub(crate) fn ensure() {
    // Acquire pairs with the Release store of 2 below: the values read
    // are visible once the state says so.
    if STATE.load(Ordering::Acquire) != 2 {
        ensure_slow();
    }
}

#[cold]
#[inline(never)]
fn ensure_slow() {
    if STATE.compare_exchange(0, 1, Ordering::Acquire, Ordering::Acquire).is_err() {
        // Another thread is reading; it takes microseconds. Bounded, in case
        // it was a parent thread caught by fork().
        for _ in 0..10_000 {
            if STATE.load(Ordering::Acquire) == 2 {
                return;
            }
            std::thread::yield_now();
        }
        return;
    }
    let soft = options::env_number(Var::SoftLimit).unwrap_or(0);
    let hard = options::env_number(Var::HardLimit).unwrap_or(0);
    limit::set_initial(soft, hard, false);
    from_cgroup(soft == 0 && hard == 0);
    if let Some(at) = monitor::start_at_init() {
        limit::arm_wake(at);
    }
    STATE.store(2, Ordering::Release);
    limit::recompute();
}

/// Finds the process's memory cgroup (see `cgroup.rs`) unless
/// `SHRINKALLOC_CGROUP=off`, derives the limits from it when `derive` (none
/// is configured), and hands it to the usage watch.
fn from_cgroup(derive: bool) {
    // The choices are `auto` (0) and `off` (1).
    if options::env_choice(Var::Cgroup) == 1 {
        sources::set_state(Source::Cgroup, SourceState::Off);
        return;
    }
    let found = cgroup::discover();
    let derived = found.as_ref().and_then(|f| f.derived_limits());
    if let (Some((soft, hard)), true) = (derived, derive) {
        limit::set_initial(soft as usize, hard.unwrap_or(0) as usize, true);
    }
    if let Some(f) = &found {
        keep_huge_pages_out(f);
    }
    usage::set_group(found.as_ref());
    cgroup::remember(found);
}

/// Turns transparent huge pages off for the process (`os::disable_thp`)
/// when its group limits it (lines are derived from it: `cgroup.rs`) and
/// the system's mode is `always`: the group is then charged for what the
/// allocator commits, which its lines count, and a purge gives back what
/// it reports. With them, in a VM running
/// Debian's kernel (`always`), a cache daemon under `memory.high` was
/// charged 20-35 MiB more than it had committed (a first touch takes
/// 2 MiB, khugepaged fills partly used 2 MiB ranges, and a purge of part of
/// a huge page only splits it), sat past `memory.high`, throttled, with
/// passes that lowered nothing (`stress/README.md`, "cgroup v2"). The cost
/// is the TLB reach of 2 MiB pages, only in a process whose memory is
/// limited; its children, in the same group, inherit the setting.
fn keep_huge_pages_out(found: &cgroup::Found) {
    if found.derived_limits().is_none() {
        return;
    }
    let mut buf = [0u8; 64];
    let always = os::read_file(cgroup::THP_ENABLED, &mut buf).is_some_and(|n| cgroup::thp_always(&buf[..n]));
    if always {
        // Refused only by kernels older than 3.15: nothing else to do then.
        let _ = os::disable_thp();
    }
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
    ensure();
    limit::set(Which::Soft, bytes);
}

/// Sets the hard limit on committed bytes (`None` or `Some(0)`: none). An
/// allocation that would cross it reclaims in its own thread, under its
/// scope, and fails (null) if it still does not fit. Set below what is
/// committed, it makes reclaim free the difference; reclaim itself (and
/// the shrinkers it calls) can still allocate, from a reserve above what
/// was committed.
///
/// ```
/// use shrinkalloc::reclaim::{hard_limit, set_hard_limit};
/// set_hard_limit(Some(2 << 30));
/// assert_eq!(hard_limit(), Some(2 << 30));
/// set_hard_limit(None);
/// assert_eq!(hard_limit(), None);
/// ```
pub fn set_hard_limit(bytes: Option<usize>) {
    ensure();
    limit::set(Which::Hard, bytes);
}

/// The soft limit as set (from Rust or the environment), not derived.
///
/// ```
/// assert_eq!(shrinkalloc::reclaim::soft_limit(), None);
/// ```
pub fn soft_limit() -> Option<usize> {
    ensure();
    limit::soft_as_set()
}

/// The hard limit as set (from Rust or the environment).
///
/// ```
/// assert_eq!(shrinkalloc::reclaim::hard_limit(), None);
/// ```
pub fn hard_limit() -> Option<usize> {
    ensure();
    limit::hard_as_set()
}
