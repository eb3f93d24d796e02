//! Reclaim: what the allocator does when memory runs short.
//!
//! The allocator's slow paths call `commit::charge` before committing
//! memory. Its fast path, in the core, is two relaxed loads (the threshold
//! this layer keeps there and the committed counter); past it, the core
//! calls the slow paths installed here (`install`). Past the high
//! watermark, just under the soft limit, the slow path wakes the
//! background reclaimers (`worker.rs`), which bring the bytes in live
//! blocks back to the low watermark, so that usage settles in the band
//! between the two; past the hard limit it runs *direct reclaim* in the
//! allocating thread, under that thread's scope mask (`scope.rs`), and
//! refuses the allocation only if it still does not fit once nothing it may
//! call has anything left and no pass it may wait on is in flight. A hard
//! line derived from the cgroup refuses nothing (the kernel decides) unless
//! the program registered a shrinker and the group's working set would pass
//! its real limit (`usage.rs`).
//!
//! One *pass* (`pass.rs`) purges the allocator's free pages; if that is
//! short of its target, it asks every shrinker the thread's mask allows, at
//! priorities from gentle to desperate, for a share of what it holds (the
//! kernel's `do_shrink_slab`), until the target is met or no shrinker has
//! anything left. A shrinker the mask forbids is skipped, the skip counted,
//! and its share owed (`nr_deferred`) to the next reclaimer allowed to call
//! it, whom the pass wakes; that reclaimer pays the debt first.
//!
//! The modules, from the bottom up (each imports only those before it):
//! `scope`, `shrinker`, `sources`, `cgroup`, `psi` (vocabulary and
//! parsers); `limit`, `counters`, `registry`, `usage` (state); `stats`
//! (reading it); `pass` (one pass); `worker` (the background reclaimers,
//! and `run_pass`, which hands owed work to them); `pressure` (levels and
//! raises); `monitor` (the thread that watches the kernel); `config`
//! (reading the configuration once); and this file: the slow paths the
//! core calls through its commit seam, `reclaim()` and `register()`.
//! Contexts and work queues are a layer of their own above
//! (`crate::delegate`).
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
mod counters;
pub(crate) mod limit;
pub(crate) mod monitor;
mod pass;
mod pressure;
pub mod psi;
pub(crate) mod registry;
mod scope;
mod shrinker;
mod sources;
mod stats;
mod usage;
mod worker;

use std::time::Duration;

pub use config::{hard_limit, set_hard_limit, set_soft_limit, soft_limit};
pub use pass::testing;
pub use registry::ShrinkerHandle;
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
pub use crate::delegate::{ScopeExt, Scoped};

use counters::{bump, FAILED_CHARGES, RESERVE_CHARGES};
use pass::{Freed, Pass};
use scope::RECLAIMING;
use worker::run_pass;

/// Direct reclaim passes (and waits) an allocation runs at most before it
/// gives up; it gives up sooner when one frees nothing and none is in flight.
const DIRECT_PASSES: usize = 16;
/// The longest a direct reclaim waits for another pass in flight to end: a
/// guard against a pass stuck on a lock (the wait ends when a pass does).
const DIRECT_WAIT: Duration = Duration::from_secs(5);

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
        bump(if ok { &RESERVE_CHARGES } else { &FAILED_CHARGES }, 1);
        return ok;
    }
    let scope = ScopeFlags::from_bits_truncate(mask);
    // The group as a whole, at a bounded rate: past its hard line, this
    // thread helps with a direct pass (never failing the allocation for it).
    if limit::wake_due(want) {
        monitor::start();
    }
    if let Some(target) = pressure::on_charge_slow() {
        run_pass(Pass {
            target,
            level: Level::Critical,
            trigger: Trigger::CgroupUsage,
            scope,
            only_class: None,
            room: true,
        });
    }
    if limits.over_high(want) {
        let level = limits.background_level(want).min(Level::Medium).max(pressure::level());
        for class in ContextClass::ALL {
            // The reclaimer measures the excess itself, when it runs.
            worker::wake(class, 0, level, Trigger::Background, false);
        }
    }
    let ok = match (limits.refuses(), limits.hard()) {
        (true, Some(hard)) => reserve_or_reclaim(bytes, hard, scope),
        _ => limits.fits(want) || past_group_line(bytes, scope),
    };
    if !ok {
        bump(&FAILED_CHARGES, 1);
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
        let pass =
            Pass { target, level: Level::Critical, trigger: Trigger::Direct, scope, only_class: None, room: true };
        // Judge progress by objects too: other threads' allocations can hide
        // the bytes a pass freed from the committed counter.
        let freed = run_pass(pass);
        if fits() {
            return true;
        }
        if freed == Freed::NOTHING && !(may_wait && worker::wait_for_pass_end(class, DIRECT_WAIT)) {
            break;
        }
    }
    fits()
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
    let pass = Pass { target: target_bytes, level, trigger: Trigger::Explicit, scope, only_class: None, room: false };
    run_pass(pass).bytes
}

/// Registers `shrinker`; reclaim may call it as soon as this returns, and
/// until the returned handle is dropped or [`ShrinkerHandle::unregister`]ed.
/// Callable from anywhere, including from inside another shrinker, and at
/// the hard limit: its few allocations may use the reserve above it.
///
/// ```
/// use shrinkalloc::reclaim::{register, CountResult, ScanResult, ShrinkControl, Shrinker, ShrinkerOptions};
/// struct Nothing;
/// impl Shrinker for Nothing {
///     fn count(&self, _: &ShrinkControl) -> CountResult { CountResult::Empty }
///     fn scan(&self, _: &ShrinkControl) -> ScanResult { ScanResult::Stop }
/// }
/// let h = register(Nothing, ShrinkerOptions::new("nothing"));
/// assert_eq!(h.name(), "nothing");
/// ```
pub fn register<S: Shrinker>(shrinker: S, options: ShrinkerOptions) -> ShrinkerHandle {
    with_reserve(|| register_boxed(Box::new(shrinker), options))
}

/// [`register`] for a shrinker already boxed (the C API's path).
///
/// ```
/// use shrinkalloc::reclaim::{register_boxed, CountResult, ScanResult, ShrinkControl, Shrinker, ShrinkerOptions};
/// struct Nothing;
/// impl Shrinker for Nothing {
///     fn count(&self, _: &ShrinkControl) -> CountResult { CountResult::Empty }
///     fn scan(&self, _: &ShrinkControl) -> ScanResult { ScanResult::Stop }
/// }
/// let h = register_boxed(Box::new(Nothing), ShrinkerOptions::new("boxed"));
/// h.unregister();
/// ```
pub fn register_boxed(shrinker: Box<dyn Shrinker>, options: ShrinkerOptions) -> ShrinkerHandle {
    // A few hundred bytes, from the reserve if need be: a program at its
    // hard limit is the one that most needs to register its caches, and a
    // failed allocation here could only abort.
    install();
    with_reserve(|| {
        // Its caches should hear of pressure from outside too.
        monitor::want();
        registry::insert(shrinker, options)
    })
}
