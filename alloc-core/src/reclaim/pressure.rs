//! Pressure levels: how an event from a source (`sources.rs`) or a reading
//! of the group's usage (`usage.rs`) becomes a request for reclaim — which
//! level, how many bytes, how often — and the two places the allocator
//! itself meets pressure: `charge`'s slow path and a failed `mmap`.
//!
//! | source | how it is seen | level | target |
//! |---|---|---|---|
//! | cgroup usage | working set (usage − inactive file cache) read at most every 50 ms, by `charge`'s slow path or the monitor | by the group's lines, as `Limits::level` | working set − 15/16 of the soft line |
//! | v1 thresholds | eventfd on `memory.usage_in_bytes` at the soft line, halfway, the hard line | from a fresh usage read | as for usage |
//! | v1 `memory.pressure_level` | eventfd per level (`low`, `medium`, `critical`) | the level that fired | a share of committed bytes |
//! | v2 `memory.events` | `POLLPRI`, then the counters that grew | `high` → medium; `max`, `oom`, `oom_kill` → critical | usage, or a share |
//! | PSI | triggers `some 150 ms / 2 s`, `full 100 ms / 2 s` on the group's `memory.pressure` or `/proc/pressure/memory` | medium; critical | usage, or a share |
//! | systemd | `MEMORY_PRESSURE_WATCH`, `MEMORY_PRESSURE_WRITE` | medium | usage, or a share |
//! | `mmap` failure | `ENOMEM` from the kernel | critical, direct reclaim | twice the mapping |
//!
//!
//! A *raise* wakes the background reclaimers of every class with the
//! source as the pass's trigger; one source raises at most every 250 ms
//! unless its level went up. Without any source the allocator still has
//! its own limits: every source is optional.
//!
//! Invariant: nothing here allocates or takes a lock: the level is in
//! atomics, and a raise only wakes reclaimers (whose lock is never held
//! while allocating). The only pass run here is the direct one of a
//! failed `mmap`, in the thread that met it and under its mask.

use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

use super::counters::{bump, FAILED_MAPS};
use super::pass::{Freed, Pass};
use super::scope::{self, ContextClass};
use super::shrinker::Level;
use super::sources::{self, note_event, Source, Trigger};
use super::usage::{self, Reading};
use super::worker::{self, run_pass};
use crate::os;

/// One source raises at most this often unless its level went up.
const REPEAT_MS: u64 = 250;
/// How long a raised level counts as the current one.
const LEVEL_TTL_MS: u64 = 1000;
/// Attempts a failed `mmap` gets after the first: reclaim, retry, twice.
const MAP_RETRIES: u32 = 2;
/// How long a failed `mmap` waits for a background pass in flight.
const MAP_WAIT: Duration = Duration::from_millis(50);

/// The highest level a source raised within the last second, and when.
static LEVEL: AtomicU8 = AtomicU8::new(0);
static LEVEL_MS: AtomicU64 = AtomicU64::new(0);

/// The level the sources put the process at now: the highest raised within
/// the last second (`Level::None` when nothing did).
pub(crate) fn level() -> Level {
    // Relaxed: a hint for the level of the next request.
    let at = LEVEL_MS.load(Ordering::Relaxed);
    if os::now_ms().saturating_sub(at) > LEVEL_TTL_MS {
        return Level::None;
    }
    Level::from_index(LEVEL.load(Ordering::Relaxed) as usize)
}

fn note_level(level: Level, now: u64) {
    // Relaxed: see `level`; a race between two raisers leaves either.
    if now.saturating_sub(LEVEL_MS.load(Ordering::Relaxed)) > LEVEL_TTL_MS
        || level as u8 >= LEVEL.load(Ordering::Relaxed)
    {
        LEVEL.store(level as u8, Ordering::Relaxed);
        LEVEL_MS.store(now, Ordering::Relaxed);
    }
}

/// Whether `src` may raise `level` now: not `None`, and not when it asked
/// at this level or higher within `REPEAT_MS`.
pub(crate) fn may_raise(src: Source, level: Level) -> bool {
    let (last, at) = sources::last_raise(src);
    let recent = os::now_ms() < at.saturating_add(REPEAT_MS);
    level > Level::None && !(level <= last && recent)
}

/// Asks the background reclaimers of every class for a pass freeing
/// `target` bytes at `level`, on behalf of `src`. Returns whether it asked
/// (see [`may_raise`]).
pub(crate) fn raise(src: Source, level: Level, target: usize) -> bool {
    if !may_raise(src, level) {
        return false;
    }
    let now = os::now_ms();
    sources::note_raise(src, level, now);
    note_level(level, now);
    for class in ContextClass::ALL {
        worker::wake(class, target, level, src, false);
    }
    true
}

/// A share of the committed bytes to free when a source gives a level but
/// no size: 1/32 at `Low`, 1/16 at `Medium`, 1/8 at `Critical`.
fn share_of_committed(level: Level) -> usize {
    crate::stats::committed() >> (6 - (level as u32).min(3))
}

/// Reads the usage if due and asks background reclaim for what the group
/// is over its soft line. Returns the reading when this thread made it.
pub(crate) fn check_usage() -> Option<Reading> {
    let r = usage::read_if_due()?;
    raise(Source::CgroupUsage, r.level, r.target);
    Some(r)
}

/// Raises `level` for an event of `src` that carries no size. With a
/// group, the target is what its working set is over its soft line (read
/// now), at least a share of the committed bytes; but a `Low` event while
/// the working set is under the soft line only counts: the kernel is
/// reclaiming page cache, which it does unaided (v1 `pressure_level` `low`
/// fires on every reclaim window of a group that reads files). Without a
/// group, the target is the share.
pub(crate) fn raise_event(src: Source, level: Level) {
    if !may_raise(src, level) {
        return;
    }
    let (level, target) = match usage::read_now() {
        Some(r) if level == Level::Low => (if r.target > 0 { Level::Low } else { Level::None }, r.target),
        Some(r) => (level, r.target.max(share_of_committed(level))),
        None => (level, share_of_committed(level)),
    };
    raise(src, level, target);
}

/// `charge`'s slow path: reads the group's usage when due, and returns the
/// bytes a direct pass should free when the group's working set is past
/// its hard line.
pub(crate) fn on_charge_slow() -> Option<usize> {
    let r = check_usage()?;
    (r.level == Level::Critical).then_some(r.direct_target)
}

/// Called when `mmap` of `bytes` failed, before retry number `attempt + 1`.
/// On `ENOMEM` raises the level to critical, runs direct reclaim under the
/// thread's mask (a thread inside reclaim only purges), and says whether to
/// retry; after `MAP_RETRIES` attempts, or on another error, `false`.
pub(crate) fn on_map_failure(bytes: usize, attempt: u32) -> bool {
    let errno = os::errno();
    if errno != libc::ENOMEM {
        return false;
    }
    note_event(Source::MmapFailure);
    if attempt >= MAP_RETRIES {
        bump(&FAILED_MAPS, 1);
        return false;
    }
    if scope::is_reclaiming() {
        return attempt == 0 && crate::purge() > 0;
    }
    let target = bytes.saturating_mul(2).max(share_of_committed(Level::Critical));
    raise(Source::MmapFailure, Level::Critical, target);
    let scope = scope::current_scope();
    let pass =
        Pass { target, level: Level::Critical, trigger: Trigger::MmapFailure, scope, only_class: None, room: true };
    if run_pass(pass) == Freed::NOTHING {
        worker::wait_for_allowed(ContextClass::of(scope), MAP_WAIT);
    }
    true
}
