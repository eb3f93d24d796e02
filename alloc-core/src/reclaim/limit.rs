//! The soft and hard limits on the allocator's committed bytes, and the
//! commit threshold they set in the core (`crate::commit`): what one
//! reclaim decision reads ([`Limits`]), nothing about where the values come
//! from (`config.rs`: the program, the environment, the cgroup).
//!
//! With a hard limit and no soft limit, the soft limit in force is 7/8 of
//! the hard one, so that background reclaim starts before allocations have
//! to wait.
//!
//! A hard limit the program or the environment set *refuses* what does not
//! fit after reclaim; one derived from the memory cgroup only starts direct
//! reclaim (`Limits::refuses`): the kernel, not the allocator, decides
//! whether the group may grow (`mod.rs`, `usage.rs`). Allocations made
//! inside reclaim may go past a refusing limit by a reserve; when the limit
//! is lowered below what is committed, the reserve sits above what was
//! committed then (the *floor*), until the committed bytes are back under
//! the limit, so that reclaim can always run (and start its threads).
//!
//! Invariant: the core's commit threshold (the fast check of every charge)
//! is the smallest of the high watermark (just under the soft limit in
//! force, [`Limits::high`]), the hard limit and the wake point (`usize::MAX`
//! without any), or 0 while the hard limit refuses (so that every charge
//! reserves against it, `commit::reserve`), recomputed under `SETTER` after every
//! change (a fork child, alone, lowers it without the lock). It stays 0
//! (the core's initial value) until `config.rs` has read the configuration
//! and called [`recompute`], so the first charge takes the slow path that
//! reads it. The wake point is the committed bytes past which a layer
//! above wants the slow path once more (the pressure monitor's lazy start,
//! `monitor.rs`); `usize::MAX` when none does.

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::shrinker::Level;
use crate::lock::SpinLock;

static SOFT: AtomicUsize = AtomicUsize::new(0);
static HARD: AtomicUsize = AtomicUsize::new(0);
/// Whether `HARD` was derived from the memory cgroup (never refuses).
static HARD_DERIVED: AtomicBool = AtomicBool::new(false);
/// Committed bytes when the hard limit was set below them, until they are
/// back under it; 0 otherwise. The reserve sits above it.
static FLOOR: AtomicUsize = AtomicUsize::new(0);
/// Serialises limit changes so the commit threshold matches the last pair
/// written. Lock order: `fork.rs`.
pub(crate) static SETTER: SpinLock<()> = SpinLock::new(());
/// Committed bytes past which a layer above wants the slow path.
static WAKE_AT: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Reserve above the hard limit for allocations made inside reclaim:
/// 1/16 of the limit, clamped to [`RESERVE_MIN`, `RESERVE_MAX`].
const RESERVE_MIN: usize = 8 << 20;
const RESERVE_MAX: usize = 256 << 20;

/// The limits in force, as one reclaim decision reads them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    soft: usize,
    hard: usize,
    /// Whether the hard limit refuses (set, not derived from the cgroup).
    refuses: bool,
    /// See `FLOOR`.
    floor: usize,
}

impl Limits {
    /// Lines of `soft` and `hard` bytes (0: none) that start reclaim but
    /// refuse nothing, as the soft one is in force: the group's lines in
    /// `usage.rs`.
    pub(crate) const fn new(soft: usize, hard: usize) -> Self {
        Self { soft, hard, refuses: false, floor: 0 }
    }

    /// Whether an allocation that does not fit under the hard limit after
    /// reclaim is refused: the limit was set by the program or the
    /// environment. One derived from the cgroup never refuses.
    pub(crate) fn refuses(self) -> bool {
        self.refuses && self.hard != 0
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

    /// Whether `bytes` fits under the hard limit (or the floor, when the
    /// limit was lowered below what was committed) plus the reclaim reserve.
    pub(crate) fn fits_reserve(self, bytes: usize) -> bool {
        let base = self.hard.max(self.floor);
        self.hard == 0 || bytes <= base.saturating_add((self.hard / 16).clamp(RESERVE_MIN, RESERVE_MAX))
    }

    /// Whether `bytes` committed in all is past the soft limit in force.
    pub(crate) fn over_soft(self, bytes: usize) -> bool {
        self.soft != 0 && bytes > self.soft
    }

    /// Background reclaim's high watermark (kswapd's "low" free pages):
    /// 1/32 below the soft limit. Past it, background reclaim wakes.
    pub(crate) fn high(self) -> usize {
        self.soft - self.soft / 32
    }

    /// Whether `bytes` is past the high watermark.
    pub(crate) fn over_high(self, bytes: usize) -> bool {
        self.soft != 0 && bytes > self.high()
    }

    /// Background reclaim's low watermark, what a pass aims for (kswapd's
    /// "high" free pages): 1/16 below the soft limit. Between the two,
    /// usage settles in a band 1/32 of the soft limit wide, and one wake
    /// buys room for more than one page.
    pub(crate) fn soft_goal(self) -> usize {
        self.soft - self.soft / 16
    }

    /// Past this many committed bytes, halfway from the soft limit to the
    /// hard one, free blocks no longer count as room: background reclaim
    /// aims at the committed bytes too and counts pages given back, so that
    /// they stay clear of the hard limit, where allocations wait and one
    /// from a `NOFS` scope may fail. The group's lines use the same guard
    /// (`usage.rs`). `usize::MAX` without a hard limit.
    pub(crate) fn guard(self) -> usize {
        if self.hard == 0 {
            usize::MAX
        } else {
            self.soft + (self.hard - self.soft.min(self.hard)) / 2
        }
    }

    /// The level of a background pass at `bytes`: `None` under the high
    /// watermark, at least `Low` past it, [`Limits::level`] beyond.
    pub(crate) fn background_level(self, bytes: usize) -> Level {
        if self.over_high(bytes) {
            self.level(bytes).max(Level::Low)
        } else {
            Level::None
        }
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

/// The limits in force.
pub(crate) fn current() -> Limits {
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
    let refuses = !HARD_DERIVED.load(Ordering::Relaxed);
    Limits { soft, hard, refuses, floor: FLOOR.load(Ordering::Relaxed) }
}

/// The committed bytes are back under the hard limit: the reserve goes
/// back to sitting above the limit.
pub(crate) fn clear_floor() {
    // Relaxed: a hint; a racing setter's floor is lost only once the
    // committed bytes are under its limit, which is when it would clear.
    if FLOOR.load(Ordering::Relaxed) != 0 {
        FLOOR.store(0, Ordering::Relaxed);
    }
}

/// The soft limit as set, not derived (`None`: none).
pub(crate) fn soft_as_set() -> Option<usize> {
    // Relaxed: see `current`.
    Some(SOFT.load(Ordering::Relaxed)).filter(|&b| b != 0)
}

/// The hard limit as set (`None`: none).
pub(crate) fn hard_as_set() -> Option<usize> {
    // Relaxed: see `current`.
    Some(HARD.load(Ordering::Relaxed)).filter(|&b| b != 0)
}

/// Stores the commit threshold for the limits and wake point now in force.
fn recompute_locked() {
    let l = current();
    let limits = l.soft().map_or(usize::MAX, |_| l.high()).min(l.hard().unwrap_or(usize::MAX));
    // Relaxed: a stale value only delays the wake by one charge.
    let t = limits.min(WAKE_AT.load(Ordering::Relaxed));
    // A hard limit that refuses is kept exactly: every charge reserves,
    // under `t` without calling the slow path here (`commit.rs`).
    let refuses = l.refuses();
    crate::commit::set_threshold(if refuses { 0 } else { t });
    crate::commit::set_exact_line(if refuses { t } else { 0 });
}

/// Sets the commit threshold from the limits in force: once the
/// configuration is read, and after each change.
pub(crate) fn recompute() {
    let _g = SETTER.lock();
    recompute_locked();
}

/// Which of the two limits [`set`] changes.
#[derive(Clone, Copy)]
pub(crate) enum Which {
    Soft,
    Hard,
}

/// Sets one limit (`None` or `Some(0)`: none) and the threshold with it.
pub(crate) fn set(which: Which, bytes: Option<usize>) {
    let cell = match which {
        Which::Soft => &SOFT,
        Which::Hard => &HARD,
    };
    let _g = SETTER.lock();
    // Relaxed: see `current`; SETTER orders the setters among themselves.
    cell.store(bytes.unwrap_or(0), Ordering::Relaxed);
    if let Which::Hard = which {
        HARD_DERIVED.store(false, Ordering::Relaxed);
        let committed = crate::stats::committed();
        let below = bytes.is_some_and(|b| b != 0 && b < committed);
        FLOOR.store(if below { committed } else { 0 }, Ordering::Relaxed);
    }
    recompute_locked();
}

/// Sets both limits while the configuration is first read, before anyone
/// else may (the threshold follows with [`recompute`]); `derived` when
/// they come from the cgroup (the hard one then refuses nothing).
pub(crate) fn set_initial(soft: usize, hard: usize, derived: bool) {
    // Relaxed: published by the configuration's Release store (`config.rs`).
    SOFT.store(soft, Ordering::Relaxed);
    HARD.store(hard, Ordering::Relaxed);
    HARD_DERIVED.store(derived, Ordering::Relaxed);
}

/// Whether the committed bytes `want` are past the wake point.
#[inline]
pub(crate) fn wake_due(want: usize) -> bool {
    // Relaxed: see `recompute_locked`.
    want > WAKE_AT.load(Ordering::Relaxed)
}

/// Moves the wake point down to `at` (never up).
pub(crate) fn arm_wake(at: usize) {
    let _g = SETTER.lock();
    // Relaxed: SETTER orders the recomputations.
    WAKE_AT.fetch_min(at, Ordering::Relaxed);
    recompute_locked();
}

/// Takes the wake point away; `true` for the one caller that found it
/// armed.
pub(crate) fn disarm_wake() -> bool {
    // Relaxed: the swap elects one caller; SETTER orders the recomputation.
    if WAKE_AT.swap(usize::MAX, Ordering::Relaxed) == usize::MAX {
        return false;
    }
    recompute();
    true
}

/// [`arm_wake`] for a fork child's handler: the child has one thread, and
/// must not wait for `SETTER` (`fork.rs` hands it over released anyway).
pub(crate) fn arm_wake_in_child(at: usize) {
    // Relaxed: single-threaded here.
    WAKE_AT.store(at, Ordering::Relaxed);
    crate::commit::lower_threshold(at);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_works_between_two_watermarks_under_the_soft_limit() {
        let l = Limits { soft: 3200, hard: 6400, refuses: true, floor: 0 };
        assert_eq!((l.high(), l.soft_goal()), (3100, 3000));
        assert_eq!(l.background_level(3100), Level::None);
        assert_eq!(l.background_level(3101), Level::Low, "past the high watermark, under the soft limit");
        assert_eq!(l.background_level(5000), Level::Medium);
        assert_eq!(Limits { soft: 0, hard: 0, refuses: false, floor: 0 }.background_level(1 << 40), Level::None);
        assert_eq!(l.guard(), 4800);
        assert_eq!(Limits { soft: 3200, hard: 0, refuses: false, floor: 0 }.guard(), usize::MAX);
    }

    #[test]
    fn levels_rise_from_soft_to_hard() {
        let l = Limits { soft: 100, hard: 200, refuses: true, floor: 0 };
        assert_eq!(l.level(100), Level::None);
        assert_eq!(l.level(120), Level::Low);
        assert_eq!(l.level(160), Level::Medium);
        assert_eq!(l.level(201), Level::Critical);
        let soft_only = Limits { soft: 100, hard: 0, refuses: true, floor: 0 };
        assert_eq!(soft_only.level(140), Level::Low);
        assert_eq!(soft_only.level(1 << 40), Level::Medium);
    }

    #[test]
    fn the_reserve_sits_above_the_floor_and_derived_lines_refuse_nothing() {
        let mib = 1 << 20;
        let lowered = Limits { soft: 140 * mib, hard: 160 * mib, refuses: true, floor: 240 * mib };
        assert!(!lowered.fits(200 * mib));
        assert!(lowered.fits_reserve(240 * mib + 64 * 1024), "reclaim can allocate above what was committed");
        assert!(!lowered.fits_reserve(300 * mib));
        assert!(lowered.refuses());
        assert!(!Limits::new(140 * mib, 160 * mib).refuses());
    }
}
