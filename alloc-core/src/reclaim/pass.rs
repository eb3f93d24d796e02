//! One reclaim pass (the kernel's `shrink_slab` and `do_shrink_slab`):
//! purge the allocator's free pages; if that is short of the target, pay
//! what earlier restricted passes owe the shrinkers this pass may call
//! (`pay_debts`), then ask every eligible shrinker, at priorities from
//! gentle to desperate, for a share of what it holds (`shrink_one`), in
//! `batch`-sized steps, until what became reusable ([`Meter`]) covers the
//! target or no shrinker has anything left; the priority rises only after
//! a round that fell short, and each round ends with a purge. The target
//! is the excess over the line that was crossed plus a small margin (the
//! callers: `mod.rs`, `worker.rs`, `usage.rs`). A shrinker the mask
//! forbids is skipped, the skip counted, and its share owed (`nr_deferred`)
//! to the next reclaimer allowed to call it: `run` says which classes were
//! skipped, and its callers wake their reclaimers (`worker::run_pass`).
//!
//! Invariant: a pass runs with the thread marked `RECLAIMING`, so nothing
//! it or a shrinker allocates starts reclaim again; it holds no lock while
//! calling a shrinker (the registry hands out a snapshot), and a shrinker
//! that panics is disabled, never unwound through the allocator.

use core::sync::atomic::{AtomicU64, Ordering};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use super::counters::{bump, PANICS};
use super::registry::{self, Active, Entry, NOT_OWED};
use super::scope::{ContextClass, Reclaiming, ScopeFlags};
use super::shrinker::{CountResult, Level, ScanResult, ShrinkControl};
use super::sources::Trigger;
use super::stats::{self, PassRecord};

/// The kernel's `DEF_PRIORITY`: the gentlest round asks for `count >> 12`.
const DEF_PRIORITY: u32 = 12;

/// What one pass is asked to do.
pub(crate) struct Pass {
    pub(crate) target: usize,
    pub(crate) level: Level,
    pub(crate) trigger: Trigger,
    /// The mask of the thread the pass runs for.
    pub(crate) scope: ScopeFlags,
    /// A background reclaimer's class: only shrinkers whose home it is.
    pub(crate) only_class: Option<ContextClass>,
    /// Whether the pass makes room for memory that does not fit under a
    /// line (the hard limit, the group's hard line, a failed `mmap`, or the
    /// work such a pass had to leave to a reclaimer): its progress is then
    /// only what goes back to the OS (see [`Pass::measure`]).
    pub(crate) room: bool,
}

impl Pass {
    /// Whether this pass calls `e` at all (a background reclaimer calls only
    /// the shrinkers of its own class).
    fn serves(&self, e: &Entry) -> bool {
        self.only_class.is_none_or(|c| e.options.get_needs().class() == c)
    }

    /// How the pass counts its progress. A pass that makes room for new
    /// pages ([`Pass::room`]) counts what goes back to the OS, which freed
    /// blocks in pages still in use do not; every other pass counts the
    /// memory that became reusable.
    fn measure(&self) -> Measure {
        match (self.room, self.only_class) {
            (false, _) => Measure::Reusable,
            (true, None) => Measure::Pages,
            (true, Some(_)) => Measure::PagesOnly,
        }
    }
}

/// What a pass freed: bytes it measured (see [`Meter`]), objects
/// shrinkers reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Freed {
    pub(crate) bytes: usize,
    pub(crate) objects: usize,
}

impl Freed {
    pub(crate) const NOTHING: Freed = Freed { bytes: 0, objects: 0 };
}

/// The classes whose shrinkers a pass skipped (their share is owed).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Owed(pub(crate) [bool; ContextClass::COUNT]);

impl Owed {
    /// Whether a shrinker of `class` was skipped.
    pub(crate) fn has(self, class: ContextClass) -> bool {
        self.0[class.index()]
    }
}

/// When a pass looks at its progress ([`Meter::freed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Measure {
    /// After every batch: the memory that became reusable covers the
    /// target as soon as it is freed, whether or not its pages go back.
    Reusable,
    /// After every round, once a purge gave back the pages that emptied:
    /// a pass that must make room for new pages under a line, in the
    /// allocating thread. Blocks it freed into other threads' pages count
    /// too, as they always did (those threads' own allocations may hide the
    /// pages given back).
    Pages,
    /// The same for a background reclaimer making room: only pages given
    /// back count, so that its pass goes on until committed memory falls.
    PagesOnly,
}

/// What a pass has freed so far: committed bytes given back, and blocks
/// the shrinkers freed into other threads' pages, counted when freed
/// (`Heap::remote_freed`: they serve those threads' next allocations at
/// once, and their pages go back when empty and collected, which the
/// purge asks for). A freed block gives nothing back to the OS until its
/// whole page is empty: a pass that waited for that raised its priority
/// until the cache was gone. Cheap enough for every batch boundary: two
/// relaxed loads, no walk, no lock.
struct Meter {
    measure: Measure,
    /// Bytes credited before counting began (the pass's first purge).
    base: usize,
    /// Committed bytes when counting began.
    committed0: usize,
    /// The calling thread's `remote_freed` then.
    remote0: usize,
    /// What purges since then reported giving back.
    released: usize,
}

impl Meter {
    fn start(measure: Measure, base: usize) -> Meter {
        Meter {
            measure,
            base,
            committed0: crate::stats::committed(),
            remote0: crate::heap::remote_freed(),
            released: 0,
        }
    }

    /// Bytes freed so far: what went back to the OS, or what the shrinkers
    /// freed into other threads' pages, whichever is more (the same memory
    /// may be both, once those pages are empty and purged).
    fn freed(&self) -> usize {
        let remote = crate::heap::remote_freed().wrapping_sub(self.remote0);
        let drop = || self.committed0.saturating_sub(crate::stats::committed()).max(self.released);
        let progress = match self.measure {
            // What this pass's purges gave back (other threads' passes and
            // purges, running at once, lower the committed counter too),
            // or the blocks it freed.
            Measure::Reusable => self.released.max(remote),
            // A pass that needs room counts any room made, as it always did.
            Measure::Pages => drop().max(remote),
            Measure::PagesOnly => drop(),
        };
        self.base.saturating_add(progress)
    }

    /// Purges the allocator's free pages (and asks every thread to collect
    /// the blocks freed into its pages), counting what went back.
    fn purge(&mut self) {
        self.released = self.released.saturating_add(purge_for(self.measure));
    }

    /// Whether the pass may stop: `target` is covered. Checked after every
    /// batch of a reusable pass; a pages pass purges between rounds, so
    /// only its round boundaries see its progress whole.
    fn covers(&self, target: usize) -> bool {
        self.freed() >= target
    }
}

/// One reclaim pass: purge, then shrink round by round until `target`.
/// Returns what it freed and the classes whose shrinkers it had to skip
/// (the caller wakes their reclaimers: `worker::run_pass`).
pub(crate) fn run(p: &Pass) -> (Freed, Owed) {
    let started = Instant::now();
    let _r = Reclaiming::enter();
    let scope = p.scope.effective();
    let mut owed = [false; ContextClass::COUNT];
    let mut meter = Meter::start(p.measure(), purge_measured(p.measure()));
    let mut objects = 0;
    if p.level > Level::None {
        if let Some(list) = registry::snapshot() {
            objects += pay_debts(&list, p, scope, &mut meter);
            if !meter.covers(p.target) {
                objects += shrink_rounds(&list, p, scope, &mut meter, &mut owed);
            }
        }
    }
    let freed = Freed { bytes: meter.freed(), objects };
    stats::record_pass(&PassRecord {
        level: p.level,
        trigger: p.trigger,
        scope,
        target_bytes: p.target,
        freed_bytes: freed.bytes,
        duration_ns: started.elapsed().as_nanos() as u64,
    });
    (freed, Owed(owed))
}

/// Committed bytes freed by purging the allocator's free pages now: what
/// the purge reported, or for a pass that needs room, any drop of the
/// committed counter meanwhile (as it always counted).
fn purge_measured(measure: Measure) -> usize {
    let before = crate::stats::committed();
    let released = purge_for(measure);
    match measure {
        Measure::Reusable => released,
        Measure::Pages | Measure::PagesOnly => released.max(before.saturating_sub(crate::stats::committed())),
    }
}

/// Purges; a pass that must make room also gives back the inside of the
/// blocks waiting on other threads' cross-thread lists, which an owner
/// that is blocked would never collect (`purge::decommit_stranded`): those
/// its own shrinkers freed this round and those earlier passes left. Not
/// other passes: their blocks are reused where they are, and giving back
/// the inside of every evicted block made usage swing with each pass (the
/// `cache-c` band at 64 MiB went from 77-82% to 68-82% of the limit).
fn purge_for(measure: Measure) -> usize {
    let stranded = if measure == Measure::Reusable { 0 } else { crate::purge::decommit_stranded() };
    stranded + crate::purge()
}

/// The priority of a pass's first round: 12 at `Low`, 10 at `Medium`, 8 at
/// `Critical` (each step down doubles what is asked of every shrinker).
fn start_priority(level: Level) -> u32 {
    DEF_PRIORITY - 2 * (level as u32).saturating_sub(1)
}

/// Rounds of shrinking from the pass's start priority down to 0, each
/// followed by a purge: the priority rises only after a round that fell
/// short of `target`. Within a round, every shrinker scans in `batch`-sized
/// steps and the pass stops as soon as its progress covers the target.
/// Stops too after a round in which no eligible shrinker had anything to
/// free. Returns the objects freed.
fn shrink_rounds(
    list: &[Arc<Entry>],
    p: &Pass,
    scope: ScopeFlags,
    meter: &mut Meter,
    owed: &mut [bool; ContextClass::COUNT],
) -> usize {
    let mut objects = 0;
    for priority in (0..=start_priority(p.level)).rev() {
        let target_bytes = p.target.saturating_sub(meter.freed());
        let sc = ShrinkControl { nr_to_scan: 0, level: p.level, scope, target_bytes, priority };
        let mut any = false;
        {
            let enough = || p.measure() == Measure::Reusable && meter.covers(p.target);
            for e in list.iter().filter(|e| p.serves(e)) {
                if let Some(n) = shrink_one(e, &sc, owed, &enough) {
                    any = true;
                    objects += n;
                }
                if enough() {
                    break;
                }
            }
        }
        meter.purge();
        if meter.covers(p.target) || !any {
            break;
        }
    }
    objects
}

/// Pays what restricted passes owe the shrinkers this pass may call (see
/// `Entry::owed_priority`): at least one batch of each debt, whether or not
/// the pass's target is already met (the work was skipped when memory was
/// short, and a cache that only restricted threads ever reclaimed from
/// would otherwise never shrink), then on while the target is not met.
/// What is left stays deferred. Returns the objects freed.
fn pay_debts(list: &[Arc<Entry>], p: &Pass, scope: ScopeFlags, meter: &mut Meter) -> usize {
    let may_pay = |e: &&Arc<Entry>| p.serves(e) && e.options.get_needs().allowed_in(scope);
    // Relaxed: a hint that skips the purge when nothing is owed; the swap
    // in `pay_one` claims a debt.
    if !list.iter().filter(may_pay).any(|e| e.owed_priority.load(Ordering::Relaxed) != NOT_OWED) {
        return 0;
    }
    let target_bytes = p.target.saturating_sub(meter.freed());
    // `pay_one` sets the priority of each debt.
    let sc = ShrinkControl { nr_to_scan: 0, level: p.level, scope, target_bytes, priority: 0 };
    let mut objects = 0;
    {
        let enough = || meter.covers(p.target);
        for e in list.iter().filter(may_pay) {
            objects += pay_one(e, sc, &enough).unwrap_or(0);
        }
    }
    meter.purge();
    objects
}

/// Objects to ask of a shrinker holding `freeable` at `priority`: the
/// kernel's `(freeable >> priority) * 4 / seeks`, so that at priority 0 a
/// `seeks` 2 cache is asked for twice what it holds; `seeks` 0 means objects
/// cost nothing to rebuild: half of them, whatever the priority.
fn share(freeable: usize, priority: u32, seeks: u32) -> usize {
    if seeks == 0 {
        freeable / 2
    } else {
        (freeable >> priority).saturating_mul(4) / seeks as usize
    }
}

/// One shrinker, one round (the kernel's `do_shrink_slab`). Returns the
/// objects it freed, or `None` if it had nothing to free (or was skipped),
/// so that the caller knows whether another round can help.
///
/// Scans `share + deferred >> priority` in batches, until `enough` says
/// the pass's target is covered. Like the kernel, it never lets deferred
/// work wind up into a mass eviction: a small share scans at most half the
/// count, however much was deferred, and no round asks for more than twice
/// the count. Work smaller than a batch waits in `deferred` until it adds
/// up to one, unless it covers the whole count; so does what a `Stop` left,
/// but not what a covered target made unnecessary.
fn shrink_one(
    e: &Entry,
    sc: &ShrinkControl,
    owed: &mut [bool; ContextClass::COUNT],
    enough: &dyn Fn() -> bool,
) -> Option<usize> {
    if e.is_disabled() {
        return None;
    }
    let needs = e.options.get_needs();
    if !needs.allowed_in(sc.scope) && !testing::ignoring_mask() {
        skip(e, sc.priority);
        owed[needs.class().index()] = true;
        return None;
    }
    let active = e.enter()?;
    let freeable = count(e, &active, sc);
    if freeable == 0 {
        return None;
    }
    let cap = freeable.saturating_mul(2);
    let delta = share(freeable, sc.priority, e.options.get_seeks());
    // Relaxed throughout: `deferred` is a counter of work, shared racily by
    // concurrent reclaimers exactly like the kernel's atomic nr_deferred.
    let nr = e.deferred.swap(0, Ordering::Relaxed);
    let total_scan = windup_limit((nr >> sc.priority).saturating_add(delta), delta, freeable);
    let (scanned, objects, end) = scan(e, &active, sc, total_scan, freeable, enough, false);
    let next = match end {
        // The rest was not needed: only the old debt stays owed.
        ScanEnd::Enough => nr.saturating_sub(scanned),
        ScanEnd::Done | ScanEnd::Stopped => nr.saturating_add(delta).saturating_sub(scanned),
    };
    add_deferred(e, next, cap);
    Some(objects)
}

/// The kernel's limit on one call's scan: at most twice the count, and at
/// most half of it when the share of this round alone is small (under a
/// quarter of the count), so that work deferred by many skipped or stopped
/// calls never empties a cache at once.
fn windup_limit(total_scan: usize, delta: usize, freeable: usize) -> usize {
    let total = total_scan.min(freeable.saturating_mul(2));
    if delta < freeable / 4 {
        total.min(freeable / 2)
    } else {
        total
    }
}

/// Pays one shrinker's debt, if it has one: a fresh count, then a scan of
/// what is deferred or of the share the lowest skipped priority would have
/// asked of that count, whichever is more, but never more than half the
/// count (the kernel's windup limit). At least one batch is scanned; after that the scan stops once
/// `enough` says the pass's target is covered, and the rest stays deferred.
fn pay_one(e: &Entry, sc: ShrinkControl, enough: &dyn Fn() -> bool) -> Option<usize> {
    if e.is_disabled() {
        return None;
    }
    // Relaxed: the swap alone claims the debt; nothing else is published.
    let priority = e.owed_priority.swap(NOT_OWED, Ordering::Relaxed);
    if priority == NOT_OWED {
        return None;
    }
    let sc = ShrinkControl { priority, ..sc };
    let active = e.enter()?;
    let freeable = count(e, &active, &sc);
    if freeable == 0 {
        return None;
    }
    let cap = freeable.saturating_mul(2);
    let nr = e.deferred.swap(0, Ordering::Relaxed);
    let delta = share(freeable, priority, e.options.get_seeks());
    // Never more than half the count at once (the windup limit's half).
    let debt = nr.max(delta).min(freeable.div_ceil(2));
    let (scanned, objects, _) = scan(e, &active, &sc, debt, freeable, enough, true);
    add_deferred(e, nr.max(debt).saturating_sub(scanned), cap);
    Some(objects)
}

/// Asks a shrinker for its count, remembered to size work owed later.
fn count(e: &Entry, active: &Active<'_>, sc: &ShrinkControl) -> usize {
    let freeable = match call(e, &e.counters.count_calls, || active.shrinker().count(sc)) {
        Some(CountResult::Count(n)) => n,
        Some(CountResult::Empty) | None => 0,
    };
    // Relaxed: a hint for sizing owed work, read by later passes.
    e.last_count.store(freeable, Ordering::Relaxed);
    freeable
}

/// Why a scan ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ScanEnd {
    /// It scanned all it was asked (or what was left was under a batch).
    Done,
    /// The pass's target was covered.
    Enough,
    /// The shrinker answered `Stop`, or panicked.
    Stopped,
}

/// Scans `total_scan` objects in batches (a remainder smaller than a
/// batch only when it covers the whole count), checking `enough` after
/// every batch (`first_free`: not after the first one); returns the
/// objects scanned and freed, and why it ended.
fn scan(
    e: &Entry,
    active: &Active<'_>,
    sc: &ShrinkControl,
    mut total_scan: usize,
    freeable: usize,
    enough: &dyn Fn() -> bool,
    first_free: bool,
) -> (usize, usize, ScanEnd) {
    let batch = e.options.get_batch();
    let (mut scanned, mut objects) = (0usize, 0usize);
    while total_scan > 0 && (total_scan >= batch || total_scan >= freeable) {
        if (scanned > 0 || !first_free) && enough() {
            return (scanned, objects, ScanEnd::Enough);
        }
        let n = batch.min(total_scan);
        let one = ShrinkControl { nr_to_scan: n, ..*sc };
        match call(e, &e.counters.scan_calls, || active.shrinker().scan(&one)) {
            Some(ScanResult::Freed(f)) => {
                bump(&e.counters.objects_freed, f as u64);
                objects += f;
            }
            Some(ScanResult::Stop) => {
                bump(&e.counters.stops, 1);
                return (scanned, objects, ScanEnd::Stopped);
            }
            None => return (scanned, objects, ScanEnd::Stopped),
        }
        bump(&e.counters.objects_scanned, n as u64);
        total_scan -= n;
        scanned += n;
    }
    (scanned, objects, ScanEnd::Done)
}

/// Counts a skip by mask and owes the shrinker the share it would have had:
/// sized now by its last count, and marked so that the payer sizes it again
/// by a fresh one.
fn skip(e: &Entry, priority: u32) {
    bump(&e.counters.skipped_by_mask, 1);
    // Relaxed: see `pay_one`.
    e.owed_priority.fetch_min(priority, Ordering::Relaxed);
    let last = e.last_count.load(Ordering::Relaxed);
    add_deferred(e, share(last, priority, e.options.get_seeks()), last.saturating_mul(2));
}

fn add_deferred(e: &Entry, n: usize, cap: usize) {
    if n == 0 {
        return;
    }
    // Relaxed: see `shrink_one`.
    let _ =
        e.deferred.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| Some(d.saturating_add(n).min(cap.max(d))));
}

/// Calls one shrinker callback, timing it and catching a panic: a panicking
/// shrinker is disabled, counted and reported once on stderr.
fn call<R>(e: &Entry, calls: &AtomicU64, f: impl FnOnce() -> R) -> Option<R> {
    bump(calls, 1);
    let t = Instant::now();
    // Reclaim lockdep learns the locks the callback takes.
    let lockdep = crate::lockdep::ShrinkerRun::enter(e.options.name(), e.options.get_needs());
    let r = catch_unwind(AssertUnwindSafe(f));
    drop(lockdep);
    bump(&e.counters.time_ns, t.elapsed().as_nanos() as u64);
    match r {
        Ok(v) => Some(v),
        Err(payload) => {
            // Dropping a payload can itself panic; a small leak per
            // disabled shrinker is the safer end.
            core::mem::forget(payload);
            bump(&e.counters.panics, 1);
            bump(&PANICS, 1);
            if e.disable() {
                crate::os::write_stderr(b"shrinkalloc: shrinker \"");
                crate::os::write_stderr(e.options.name().as_bytes());
                crate::os::write_stderr(b"\" panicked and is disabled\n");
            }
            None
        }
    }
}

/// Switches for tests that must show a bug the library prevents.
#[doc(hidden)]
pub mod testing {
    use core::sync::atomic::{AtomicBool, Ordering};

    static IGNORE_MASK: AtomicBool = AtomicBool::new(false);

    /// Makes reclaim call every shrinker whatever the thread's scope mask:
    /// the bug scopes exist to prevent, for control runs of deadlock tests.
    ///
    /// ```
    /// shrinkalloc::reclaim::testing::ignore_scope_mask(false);
    /// ```
    pub fn ignore_scope_mask(on: bool) {
        // Relaxed: tests set it before the run they control.
        IGNORE_MASK.store(on, Ordering::Relaxed);
    }

    pub(crate) fn ignoring_mask() -> bool {
        // Relaxed: see `ignore_scope_mask`.
        IGNORE_MASK.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_follows_do_shrink_slab() {
        assert_eq!(share(4096, 12, 2), 2);
        assert_eq!(share(4096, 0, 2), 8192);
        assert_eq!(share(4096, 0, 8), 2048);
        assert_eq!(share(100, 3, 0), 50);
        assert_eq!(start_priority(Level::Low), 12);
        assert_eq!(start_priority(Level::Critical), 8);
    }
}
