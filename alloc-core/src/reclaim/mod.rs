//! Reclaim: what the allocator does when memory runs short.
//!
//! The allocator's slow paths call `commit::charge` before committing
//! memory. Its fast path, in the core, is two relaxed loads (the threshold
//! this layer keeps there and the committed counter); past it, the core
//! calls the slow paths installed here (`install`). Past the soft limit
//! the slow path wakes the background reclaimers (`worker.rs`); past the hard limit it runs *direct reclaim* in the
//! allocating thread, under that thread's scope mask (`scope.rs`), and
//! refuses the allocation only if it still does not fit once nothing it may
//! call has anything left and no pass it may wait on is in flight. A hard
//! line derived from the cgroup refuses nothing (the kernel decides) unless
//! the program registered a shrinker and the group's working set would pass
//! its real limit (`usage.rs`).
//!
//! One *pass* (`run_pass`) purges the allocator's free pages; if that is
//! short of its target, it asks every shrinker the thread's mask allows, at
//! priorities from gentle to desperate, for a share of what it holds
//! (`shrink_one`, the kernel's `do_shrink_slab`), purging and measuring the
//! committed bytes that really went away after each round, until the target
//! is met or no shrinker has anything left. A shrinker the mask forbids is
//! skipped, the skip counted, and its share owed (`nr_deferred`) to the next
//! reclaimer allowed to call it, whom the pass wakes. That reclaimer pays
//! the debt first (`pay_debts`), even if its own target is already met: the
//! work was skipped while memory was short.
//!
//! Pressure also comes from outside the allocator's own accounting
//! (`pressure.rs`): the memory cgroup's whole usage, read at a bounded rate
//! here and by the monitor thread (`monitor.rs`), which also waits for the
//! kernel's events (v1 thresholds and pressure levels, v2 `memory.events`,
//! PSI, systemd's watch); and an `mmap` that fails with `ENOMEM`, which
//! reclaims directly and retries (`on_map_failure`). Each pass records
//! what raised it ([`Trigger`]: the allocator's own causes and the
//! sources, `sources.rs`); the group's usage is read in `usage.rs`.
//!
//! Invariant: a thread marked `RECLAIMING` (inside a pass, a shrinker, or a
//! library reclaimer) never starts reclaim and never waits; its allocations
//! may use a small reserve above the hard limit and are never refused
//! because of the soft limit. Nothing here holds a lock while it allocates.
//!
//! ```
//! use std::sync::Mutex;
//! use shrinkalloc::reclaim::{self, CountResult, Needs, ScanResult, ShrinkControl, Shrinker, ShrinkerOptions};
//!
//! struct InodeCache(Mutex<Vec<Vec<u8>>>);
//! impl Shrinker for InodeCache {
//!     fn count(&self, _: &ShrinkControl) -> CountResult {
//!         CountResult::Count(self.0.lock().unwrap().len())
//!     }
//!     fn scan(&self, sc: &ShrinkControl) -> ScanResult {
//!         let mut v = self.0.lock().unwrap();
//!         let n = sc.nr_to_scan().min(v.len());
//!         v.drain(..n);
//!         ScanResult::Freed(n)
//!     }
//! }
//!
//! reclaim::set_hard_limit(Some(1 << 30));
//! let cache = InodeCache(Mutex::new(vec![vec![0; 512]; 100]));
//! let _h = reclaim::register(cache, ShrinkerOptions::new("inodes").needs(Needs::FS));
//! // Code that holds a filesystem lock: reclaim started here skips "inodes".
//! reclaim::with_nofs(|| vec![0u8; 1 << 20]);
//! # reclaim::set_hard_limit(None);
//! ```

pub mod cgroup;
mod config;
pub(crate) mod limit;
pub(crate) mod monitor;
mod pressure;
pub mod psi;
pub(crate) mod registry;
mod scope;
mod shrinker;
mod sources;
mod stats;
mod usage;
mod worker;

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

pub use config::{hard_limit, set_hard_limit, set_soft_limit, soft_limit};
pub use registry::{register, register_boxed, ShrinkerHandle};
pub use scope::{
    current_scope, is_background_reclaimer, is_reclaiming, nofs, nofs_restore, nofs_save, noio, noio_restore,
    noio_save, with_nofs, with_noio, with_reserve, ContextClass, ScopeFlags, ScopeGuard,
};
pub use shrinker::{
    CountResult, Level, Needs, ScanResult, ShrinkControl, Shrinker, ShrinkerOptions, DEFAULT_BATCH, DEFAULT_SEEKS,
};
pub use sources::{Source, SourceState, Trigger};
pub use stats::{stats, Field, PassRecord, ReclaimStats, ShrinkerStats, SourceStats, Value};
// Contexts and work queues live in their own layer above reclaim
// (`crate::delegate`); their names stay reachable here, where programs and
// the C API have always found them.
pub use crate::delegate::context::{is_io_flusher, set_io_flusher, spawn, Context, ContextGuard, KernelRefused};
pub use crate::delegate::workqueue::{ClassStats, SubmitError, WorkQueue, WorkQueueStats, MAX_THREADS_PER_CLASS};

use registry::{Active, Entry, NOT_OWED};
use scope::{Reclaiming, RECLAIMING};
use stats::bump;

/// The kernel's `DEF_PRIORITY`: the gentlest round asks for `count >> 12`.
const DEF_PRIORITY: u32 = 12;
/// Direct reclaim passes (and waits) an allocation runs at most before it
/// gives up; it gives up sooner when one frees nothing and none is in flight.
const DIRECT_PASSES: usize = 16;
/// The longest a direct reclaim waits for another pass in flight to end: a
/// guard against a pass stuck on a lock (the wait ends when a pass does).
const DIRECT_WAIT: Duration = Duration::from_secs(5);
/// Passes running now, by the class of the mask they run under.
static IN_FLIGHT: [AtomicUsize; ContextClass::COUNT] = [const { AtomicUsize::new(0) }; ContextClass::COUNT];
/// Passes that ended, for a waiter to see one end.
static ENDED: AtomicU64 = AtomicU64::new(0);

/// The slow paths the core calls through its commit seam (`crate::commit`)
/// once the committed bytes pass the threshold `limit.rs` keeps there.
static RECLAIMER: crate::commit::Reclaimer =
    crate::commit::Reclaimer { charge: charge_slow, fits: fits_slow, on_map_failure: pressure::on_map_failure };

/// Installs reclaim's slow paths in the core's commit seam. Called at
/// process start (`thread::init_process`) and wherever reclaim is first
/// configured (a limit, a shrinker), so they are in place before any
/// charge needs them. Idempotent.
pub(crate) fn install() {
    crate::commit::install(&RECLAIMER);
}

/// Whether committing `bytes` more fits under the limits now, without
/// reclaiming or waking anyone (`commit::fits` past the threshold).
fn fits_slow(bytes: usize) -> bool {
    config::ensure();
    let want = crate::stats::committed().saturating_add(bytes);
    let limits = limit::current();
    if scope::raw() & RECLAIMING != 0 {
        limits.fits_reserve(want)
    } else if let (true, Some(hard)) = (limits.refuses(), limits.hard()) {
        crate::commit::reserve(bytes, hard)
    } else {
        limits.fits(want)
    }
}

/// `commit::charge` past the threshold: `false` when the allocation must
/// fail (hard limit reached and reclaim could not make room). Never called
/// with an allocator lock held.
fn charge_slow(bytes: usize) -> bool {
    config::ensure();
    let limits = limit::current();
    let want = crate::stats::committed().saturating_add(bytes);
    let mask = scope::raw();
    if mask & RECLAIMING != 0 {
        if limits.fits(want) || !limits.refuses() {
            return true;
        }
        let ok = limits.fits_reserve(want);
        bump(if ok { &stats::RESERVE_CHARGES } else { &stats::FAILED_CHARGES }, 1);
        return ok;
    }
    let scope = ScopeFlags::from_bits_truncate(mask);
    // The group as a whole, at a bounded rate: past its hard line, this
    // thread helps with a direct pass (never failing the allocation for it).
    if let Some(target) = pressure::on_charge_slow(want) {
        run_pass(Pass { target, level: Level::Critical, trigger: Trigger::CgroupUsage, scope, only_class: None });
    }
    if limits.over_soft(want) {
        let level = limits.level(want).min(Level::Medium).max(pressure::level());
        for class in ContextClass::ALL {
            worker::wake(class, want - limits.soft_goal(), level, Trigger::Background);
        }
    }
    let ok = match (limits.refuses(), limits.hard()) {
        (true, Some(hard)) => reserve_or_reclaim(bytes, hard, scope),
        _ => limits.fits(want) || past_group_line(bytes, scope),
    };
    if !ok {
        bump(&stats::FAILED_CHARGES, 1);
    } else if limits.fits(crate::stats::committed()) {
        limit::clear_floor();
    }
    ok
}

/// Under a hard limit that refuses: reserves `bytes` against it (exact
/// however many threads charge at once, `commit::reserve`), reclaiming
/// directly when they do not fit; `false` once reclaim cannot make room.
fn reserve_or_reclaim(bytes: usize, hard: usize, scope: ScopeFlags) -> bool {
    // Direct reclaim that made room can see it taken by another thread's
    // reservation before this one's: a few tries, each reclaiming again.
    for _ in 0..DIRECT_PASSES {
        if crate::commit::reserve(bytes, hard) {
            return true;
        }
        if !direct_reclaim(bytes, scope, true) {
            return false;
        }
    }
    false
}

/// Past a hard line derived from the cgroup, which refuses nothing by
/// itself: a program without shrinkers purges (at a bounded rate) and goes
/// on, as under glibc; one with shrinkers reclaims directly and is refused
/// only if the group's working set would then pass its real limit.
fn past_group_line(bytes: usize, scope: ScopeFlags) -> bool {
    if !monitor::opted_in() {
        worker::purge_inline(Trigger::Direct);
        return true;
    }
    direct_reclaim(bytes, scope, false) || usage::fits_real_limit(bytes)
}

/// Makes room for `bytes` under the hard limit in the calling thread, or
/// says it cannot: passes while they free something; when one frees
/// nothing, and `may_wait`, a wait for a pass in flight that this thread
/// may wait on (its class or a more restricted one) to end, as that pass
/// may hold room (the reserve its shrinkers allocate) or be freeing the very
/// objects this one found gone. Whether it succeeds does not depend on how
/// the threads are scheduled, only on what the shrinkers hold.
fn direct_reclaim(bytes: usize, scope: ScopeFlags, may_wait: bool) -> bool {
    // Other threads' reservations count: they are about to be committed.
    let short = || {
        let limits = limit::current();
        let want = crate::commit::charged().saturating_add(bytes);
        limits.hard().map_or(0, |h| want.saturating_sub(h).saturating_add(limits.hard_headroom()))
    };
    let fits = || limit::current().fits(crate::commit::charged().saturating_add(bytes));
    let class = ContextClass::of(scope);
    for _ in 0..DIRECT_PASSES {
        let target = short();
        if target == 0 {
            return true;
        }
        let pass = Pass { target, level: Level::Critical, trigger: Trigger::Direct, scope, only_class: None };
        // Judge progress by objects too: other threads' allocations can hide
        // the bytes a pass freed from the committed counter.
        let freed = run_pass(pass);
        if fits() {
            return true;
        }
        if freed == Freed::NOTHING && !(may_wait && wait_for_pass_end(class)) {
            break;
        }
    }
    fits()
}

/// Waits until a pass of class `class` or a more restricted one, in flight
/// now, ends (at most `DIRECT_WAIT`); `false` at once when none is.
fn wait_for_pass_end(class: ContextClass) -> bool {
    // Relaxed: a hint polled until it changes.
    let busy = || IN_FLIGHT[class.index()..].iter().any(|n| n.load(Ordering::Relaxed) > 0);
    // Acquire pairs with the Release increment in `InFlight::drop`: the
    // ended pass's frees are seen by the caller's next look at the
    // committed bytes.
    let ended = || ENDED.load(Ordering::Acquire);
    let before = ended();
    if !busy() {
        return false;
    }
    let deadline = Instant::now() + DIRECT_WAIT;
    while busy() && ended() == before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// Runs one reclaim pass in the calling thread, under its scope mask, and
/// returns the committed bytes it measured freed. `Level::None` only purges
/// the allocator's free pages; higher levels also ask the shrinkers, more
/// of them at once the higher the level, until `target_bytes` are freed or
/// nothing more can be. Inside a shrinker (or any reclaim) it returns 0.
///
/// ```
/// use shrinkalloc::reclaim::{reclaim, Level};
/// let freed = reclaim(64 << 20, Level::Medium);
/// println!("reclaimed {freed} bytes");
/// ```
pub fn reclaim(target_bytes: usize, level: Level) -> usize {
    if scope::is_reclaiming() {
        return 0;
    }
    let scope = current_scope();
    run_pass(Pass { target: target_bytes, level, trigger: Trigger::Explicit, scope, only_class: None }).bytes
}

/// What one pass is asked to do.
pub(crate) struct Pass {
    pub(crate) target: usize,
    pub(crate) level: Level,
    pub(crate) trigger: Trigger,
    /// The mask of the thread the pass runs for.
    pub(crate) scope: ScopeFlags,
    /// A background reclaimer's class: only shrinkers whose home it is.
    pub(crate) only_class: Option<ContextClass>,
}

impl Pass {
    /// Whether this pass calls `e` at all (a background reclaimer calls only
    /// the shrinkers of its own class).
    fn serves(&self, e: &Entry) -> bool {
        self.only_class.is_none_or(|c| e.options.get_needs().class() == c)
    }
}

/// What a pass freed: committed bytes it measured, objects shrinkers reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Freed {
    pub(crate) bytes: usize,
    pub(crate) objects: usize,
}

impl Freed {
    const NOTHING: Freed = Freed { bytes: 0, objects: 0 };
}

/// One reclaim pass: purge, then shrink round by round until `target`.
pub(crate) fn run_pass(p: Pass) -> Freed {
    let started = Instant::now();
    let _r = Reclaiming::enter();
    let scope = p.scope.effective();
    let _f = InFlight::enter(ContextClass::of(scope));
    let mut owed = [false; ContextClass::COUNT];
    let mut freed = Freed { bytes: purge_measured(), objects: 0 };
    if p.level > Level::None {
        if let Some(list) = registry::snapshot() {
            pay_debts(&list, &p, scope, &mut freed);
            if freed.bytes < p.target {
                shrink_rounds(&list, &p, scope, &mut freed, &mut owed);
            }
        }
    }
    stats::record_pass(&stats::PassRecord {
        level: p.level,
        trigger: p.trigger,
        scope,
        target_bytes: p.target,
        freed_bytes: freed.bytes,
        duration_ns: started.elapsed().as_nanos() as u64,
    });
    if freed.bytes < p.target {
        for class in ContextClass::ALL.into_iter().filter(|&c| owed[c.index()] && Some(c) != p.only_class) {
            worker::wake(class, p.target - freed.bytes, p.level, p.trigger.owed());
        }
    }
    freed
}

/// Counts a pass in flight for `wait_for_pass_end`, for as long as it lives.
struct InFlight(ContextClass);

impl InFlight {
    fn enter(class: ContextClass) -> Self {
        // Relaxed: see `wait_for_pass_end`.
        IN_FLIGHT[class.index()].fetch_add(1, Ordering::Relaxed);
        InFlight(class)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Relaxed, then Release: see `wait_for_pass_end`.
        IN_FLIGHT[self.0.index()].fetch_sub(1, Ordering::Relaxed);
        ENDED.fetch_add(1, Ordering::Release);
    }
}

/// Committed bytes freed by purging the allocator's free pages now.
fn purge_measured() -> usize {
    let before = crate::stats::committed();
    let released = crate::purge();
    released.max(before.saturating_sub(crate::stats::committed()))
}

/// The priority of a pass's first round: 12 at `Low`, 10 at `Medium`, 8 at
/// `Critical` (each step down doubles what is asked of every shrinker).
fn start_priority(level: Level) -> u32 {
    DEF_PRIORITY - 2 * (level as u32).saturating_sub(1)
}

/// Rounds of shrinking from the pass's start priority down to 0, each
/// followed by a purge and a measure; stops at `target`, or after a round
/// in which no eligible shrinker had anything to free.
fn shrink_rounds(
    list: &[std::sync::Arc<Entry>],
    p: &Pass,
    scope: ScopeFlags,
    freed: &mut Freed,
    owed: &mut [bool; ContextClass::COUNT],
) {
    for priority in (0..=start_priority(p.level)).rev() {
        let target_bytes = p.target.saturating_sub(freed.bytes);
        let sc = ShrinkControl { nr_to_scan: 0, level: p.level, scope, target_bytes, priority };
        let any = measured(freed, || {
            let mut any = None;
            for e in list.iter().filter(|e| p.serves(e)) {
                if let Some(objects) = shrink_one(e, &sc, owed) {
                    *any.get_or_insert(0) += objects;
                }
            }
            any
        });
        if freed.bytes >= p.target || !any {
            break;
        }
    }
}

/// Pays what restricted passes owe the shrinkers this pass may call (see
/// `Entry::owed_priority`), whether or not the pass's target is already
/// met: the work was skipped when memory was short, and a cache that only
/// restricted threads ever reclaimed from would otherwise never shrink.
fn pay_debts(list: &[std::sync::Arc<Entry>], p: &Pass, scope: ScopeFlags, freed: &mut Freed) {
    let may_pay = |e: &&std::sync::Arc<Entry>| p.serves(e) && e.options.get_needs().allowed_in(scope);
    // Relaxed: a hint that skips the purge when nothing is owed; the swap
    // in `pay_one` claims a debt.
    if !list.iter().filter(may_pay).any(|e| e.owed_priority.load(Ordering::Relaxed) != NOT_OWED) {
        return;
    }
    let target_bytes = p.target.saturating_sub(freed.bytes);
    // `pay_one` sets the priority of each debt.
    let sc = ShrinkControl { nr_to_scan: 0, level: p.level, scope, target_bytes, priority: 0 };
    measured(freed, || {
        let mut paid = None;
        for e in list.iter().filter(may_pay) {
            if let Some(objects) = pay_one(e, sc) {
                *paid.get_or_insert(0) += objects;
            }
        }
        paid
    });
}

/// Runs `shrink`, which calls shrinkers and returns the objects they freed
/// (`None`: none had anything to free), then purges and adds to `freed`
/// the committed bytes that really went away. Returns whether any shrinker
/// had something to free.
fn measured(freed: &mut Freed, shrink: impl FnOnce() -> Option<usize>) -> bool {
    let before = crate::stats::committed();
    let remote_before = crate::heap::remote_freed();
    let objects = shrink();
    let released = crate::purge();
    // Blocks the shrinkers freed into other threads' pages leave committed
    // memory only when those threads collect (the purge asked them to):
    // count them now, or the pass would scan on and evict far more than
    // its target.
    let remote = crate::heap::remote_freed().wrapping_sub(remote_before);
    freed.bytes += released.max(before.saturating_sub(crate::stats::committed())).max(remote);
    freed.objects += objects.unwrap_or(0);
    objects.is_some()
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
/// Scans `share + deferred >> priority`, capped at twice the count (a
/// cache is never asked for more than it could give in two rounds), in
/// batches; work smaller than a batch waits in `deferred` until it adds up
/// to one, unless it covers the whole count. What was not scanned is owed.
fn shrink_one(e: &Entry, sc: &ShrinkControl, owed: &mut [bool; ContextClass::COUNT]) -> Option<usize> {
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
    let total_scan = (nr >> sc.priority).saturating_add(delta).min(cap);
    let (scanned, objects) = scan(e, &active, sc, total_scan, freeable);
    let next = nr.saturating_add(delta).saturating_sub(scanned).min(cap);
    add_deferred(e, next, cap);
    Some(objects)
}

/// Pays one shrinker's debt, if it has one: a fresh count, then a scan of
/// what is deferred or of the share the lowest skipped priority would have
/// asked of that count, whichever is more (at most twice the count).
fn pay_one(e: &Entry, sc: ShrinkControl) -> Option<usize> {
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
    let debt = nr.max(share(freeable, priority, e.options.get_seeks())).min(cap);
    let (scanned, objects) = scan(e, &active, &sc, debt, freeable);
    add_deferred(e, debt - scanned, cap);
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

/// Scans `total_scan` objects in batches (a remainder smaller than a
/// batch only when it covers the whole count); returns the objects scanned
/// and freed. Stops early on `Stop` or a panic.
fn scan(e: &Entry, active: &Active<'_>, sc: &ShrinkControl, mut total_scan: usize, freeable: usize) -> (usize, usize) {
    let batch = e.options.get_batch();
    let (mut scanned, mut objects) = (0usize, 0usize);
    while total_scan > 0 && (total_scan >= batch || total_scan >= freeable) {
        let n = batch.min(total_scan);
        let one = ShrinkControl { nr_to_scan: n, ..*sc };
        match call(e, &e.counters.scan_calls, || active.shrinker().scan(&one)) {
            Some(ScanResult::Freed(f)) => {
                bump(&e.counters.objects_freed, f as u64);
                objects += f;
            }
            Some(ScanResult::Stop) => {
                bump(&e.counters.stops, 1);
                break;
            }
            None => break,
        }
        bump(&e.counters.objects_scanned, n as u64);
        total_scan -= n;
        scanned += n;
    }
    (scanned, objects)
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
    let r = catch_unwind(AssertUnwindSafe(f));
    bump(&e.counters.time_ns, t.elapsed().as_nanos() as u64);
    match r {
        Ok(v) => Some(v),
        Err(payload) => {
            // Dropping a payload can itself panic; a small leak per
            // disabled shrinker is the safer end.
            core::mem::forget(payload);
            bump(&e.counters.panics, 1);
            bump(&stats::PANICS, 1);
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
