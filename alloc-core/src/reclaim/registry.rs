//! The shrinker registry: register, run, unregister, free — in that order.
//!
//! Registered shrinkers live in an immutable, reference-counted list (a
//! *snapshot*). Reclaim clones the current snapshot's `Arc` under a spin lock
//! held for that one reference-count increment, then walks it with no lock:
//! reclaim never waits for a registration, and a registration never waits
//! for reclaim. Writers copy the list, edit the copy with no lock held (it
//! allocates, and allocation may run reclaim on this very thread, which may
//! call a shrinker that registers another), and install it if nobody
//! installed another in the meantime, else retry.
//!
//! Invariant, per [`Entry`]: its state word counts the reclaimers inside the
//! shrinker's callbacks and carries `DEAD` once unregistration started; a
//! reclaimer enters only while `DEAD` is clear, so once `DEAD` is set and
//! the count reaches zero nobody touches the shrinker again and it is
//! dropped exactly once (the `DROPPED` claim). Unregistration waits for the
//! count to reach zero, unless the calling thread is itself running reclaim
//! (inside a callback, or a library reclaimer): then it returns at once and
//! the last callback to leave drops the shrinker (`ORPHAN`). That is what
//! makes unregistering from a callback, even the shrinker's own, deadlock-free.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use super::counters::ShrinkerCounters;
use super::scope;
use super::shrinker::{Shrinker, ShrinkerOptions};
use crate::lock::SpinLock;
use crate::os;

/// Unregistration has started: no new callback may begin.
const DEAD: usize = 1 << (usize::BITS - 1);
/// Unregistered from inside reclaim: the last callback to leave drops it.
const ORPHAN: usize = 1 << (usize::BITS - 2);
/// The shrinker has been (or is being) dropped.
const DROPPED: usize = 1 << (usize::BITS - 3);
/// Low bits: reclaimers currently inside `count` or `scan`.
const ACTIVE: usize = DROPPED - 1;

/// `Entry::owed_priority` of a shrinker that no restricted pass skipped
/// since its debt was last paid.
pub(crate) const NOT_OWED: u32 = u32::MAX;

/// One registered shrinker with its options, owed work and counters.
pub(crate) struct Entry {
    pub(crate) id: u64,
    pub(crate) options: ShrinkerOptions,
    /// `DEAD | ORPHAN | DROPPED | active count`; see the module invariant.
    state: AtomicUsize,
    /// Set after a callback panicked; reclaim skips the shrinker for good.
    disabled: AtomicBool,
    /// Objects reclaim owes this shrinker (the kernel's `nr_deferred`).
    pub(crate) deferred: AtomicUsize,
    /// The last `count` it reported, to size work owed while it is skipped.
    pub(crate) last_count: AtomicUsize,
    /// The lowest priority at which a restricted pass skipped it since the
    /// debt was last paid, or [`NOT_OWED`]: the next reclaimer allowed to
    /// call it pays a share sized at that priority by a fresh count, even
    /// when the shrinker had never been counted before.
    pub(crate) owed_priority: AtomicU32,
    pub(crate) counters: ShrinkerCounters,
    /// `Some` until dropped; read only by a reclaimer that entered.
    shrinker: UnsafeCell<Option<Box<dyn Shrinker>>>,
}

// SAFETY: the shrinker behind the UnsafeCell is `Send + Sync`; it is read
// (shared) only by entered reclaimers and taken (exclusively) only by the
// single winner of the `DROPPED` claim, which requires `DEAD` and a zero
// active count, after which no reclaimer can enter.
unsafe impl Sync for Entry {}

/// A reclaimer inside one shrinker's callbacks; leaves on drop.
pub(crate) struct Active<'a> {
    entry: &'a Entry,
}

impl Active<'_> {
    /// The shrinker, valid while this reclaimer is inside.
    pub(crate) fn shrinker(&self) -> &dyn Shrinker {
        // SAFETY: we entered with `DEAD` clear, so `DROPPED` cannot be
        // claimed (it needs a zero active count) until we leave; the box is
        // `Some` until then and nobody mutates it.
        let slot = unsafe { &*self.entry.shrinker.get() };
        match slot {
            Some(s) => &**s,
            None => unreachable_shrinker(),
        }
    }
}

#[cold]
fn unreachable_shrinker() -> ! {
    os::write_stderr(b"shrinkalloc: shrinker used after drop (registry bug)\n");
    os::abort()
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.entry.leave();
    }
}

impl Entry {
    /// Enters the shrinker's callbacks, or `None` once it is unregistering
    /// or disabled.
    pub(crate) fn enter(&self) -> Option<Active<'_>> {
        // Acquire pairs with the AcqRel of `unregister`'s fetch_or: if that
        // came first in the state's modification order we see `DEAD`.
        let prev = self.state.fetch_add(1, Ordering::Acquire);
        if prev & DEAD != 0 || self.is_disabled() {
            self.leave();
            return None;
        }
        Some(Active { entry: self })
    }

    fn leave(&self) {
        // Release: our use of the shrinker happens-before the dropper's
        // Acquire load of the count it sees at zero.
        let prev = self.state.fetch_sub(1, Ordering::AcqRel);
        if prev & ORPHAN != 0 && prev & ACTIVE == 1 {
            self.try_drop_shrinker();
        }
    }

    /// Drops the shrinker if `DEAD` is set, nobody is inside, and nobody
    /// dropped it yet. Returns whether the shrinker is now gone.
    fn try_drop_shrinker(&self) -> bool {
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            if s & DROPPED != 0 {
                return true;
            }
            if s & ACTIVE != 0 {
                return false;
            }
            // AcqRel pairs with `leave`'s Release: every callback's use of
            // the shrinker happens-before we take it.
            match self.state.compare_exchange_weak(s, s | DROPPED, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => s = now,
            }
        }
        // SAFETY: we won the `DROPPED` claim with `DEAD` set and no
        // reclaimer inside; `enter` refuses from now on, so we are the only
        // thread that can reach the slot.
        let shrinker = unsafe { (*self.shrinker.get()).take() };
        if catch_unwind(AssertUnwindSafe(move || drop(shrinker))).is_err() {
            os::write_stderr(b"shrinkalloc: a shrinker panicked while being dropped\n");
        }
        true
    }

    /// Whether a panic disabled the shrinker.
    pub(crate) fn is_disabled(&self) -> bool {
        // Relaxed: a late reader at worst calls a disabled shrinker once more.
        self.disabled.load(Ordering::Relaxed)
    }

    /// Disables the shrinker after a panic; true the first time.
    pub(crate) fn disable(&self) -> bool {
        !self.disabled.swap(true, Ordering::Relaxed)
    }

    fn new(id: u64, shrinker: Box<dyn Shrinker>, options: ShrinkerOptions) -> Self {
        Self {
            id,
            options,
            state: AtomicUsize::new(0),
            disabled: AtomicBool::new(false),
            deferred: AtomicUsize::new(0),
            last_count: AtomicUsize::new(0),
            owed_priority: AtomicU32::new(NOT_OWED),
            counters: ShrinkerCounters::default(),
            shrinker: UnsafeCell::new(Some(shrinker)),
        }
    }
}

/// An immutable list of the registered shrinkers, as one reclaim walks it.
pub(crate) type Snapshot = Arc<Vec<Arc<Entry>>>;

pub(crate) struct Registry {
    /// Bumped by every installed change; writers retry on a mismatch.
    version: u64,
    list: Option<Snapshot>,
}

/// Held only to clone or swap `list`: never while allocating or freeing.
/// Held across `fork()` (`fork.rs`, where the lock order is).
pub(crate) static REGISTRY: SpinLock<Registry> = SpinLock::new(Registry { version: 0, list: None });
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The current list, or `None` when no shrinker was ever registered.
pub(crate) fn snapshot() -> Option<Snapshot> {
    REGISTRY.lock().list.clone()
}

/// Replaces the list by `edit(current)`, retrying when another writer got
/// there first. Allocates and frees only with the lock released.
fn update(edit: impl Fn(&[Arc<Entry>]) -> Vec<Arc<Entry>>) {
    loop {
        let (version, current) = {
            let g = REGISTRY.lock();
            (g.version, g.list.clone())
        };
        let next = Arc::new(edit(current.as_deref().map_or(&[], |v| v.as_slice())));
        let displaced = {
            let mut g = REGISTRY.lock();
            if g.version == version {
                g.version += 1;
                Ok(g.list.replace(next))
            } else {
                Err(next)
            }
        };
        drop(current);
        match displaced {
            Ok(old) => return drop(old),
            Err(next) => drop(next),
        }
    }
}

/// Adds `shrinker` to the list; reclaim may call it as soon as this
/// returns (the public `register` in `mod.rs` wraps it).
pub(crate) fn insert(shrinker: Box<dyn Shrinker>, options: ShrinkerOptions) -> ShrinkerHandle {
    // Relaxed: ids only need to be unique.
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let entry = Arc::new(Entry::new(id, shrinker, options));
    update(|list| {
        let mut v = Vec::with_capacity(list.len() + 1);
        v.extend(list.iter().cloned());
        v.push(entry.clone());
        v
    });
    ShrinkerHandle { entry }
}

/// Takes `entry` out of the list, waits for callbacks in flight (unless this
/// thread runs reclaim), and drops the shrinker.
fn unregister(entry: &Arc<Entry>) {
    let orphan = scope::is_reclaiming();
    let flags = if orphan { DEAD | ORPHAN } else { DEAD };
    // AcqRel pairs with `enter`'s Acquire fetch_add (see there).
    entry.state.fetch_or(flags, Ordering::AcqRel);
    update(|list| list.iter().filter(|e| !Arc::ptr_eq(e, entry)).cloned().collect());
    if orphan {
        entry.try_drop_shrinker();
        return;
    }
    let mut waited = 0u32;
    while !entry.try_drop_shrinker() {
        waited += 1;
        if waited < 64 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// A registered shrinker. Dropping it unregisters the shrinker: the drop
/// waits for a callback of this shrinker running on another thread, then
/// drops the shrinker; called from inside reclaim (any shrinker's callback,
/// this one's included) it returns at once and the shrinker is dropped when
/// its last callback returns. `mem::forget` keeps it registered for good.
///
/// ```
/// use shrinkalloc::reclaim::{register, CountResult, ScanResult, ShrinkControl, Shrinker, ShrinkerOptions};
/// struct Nothing;
/// impl Shrinker for Nothing {
///     fn count(&self, _: &ShrinkControl) -> CountResult { CountResult::Count(0) }
///     fn scan(&self, _: &ShrinkControl) -> ScanResult { ScanResult::Freed(0) }
/// }
/// let h = register(Nothing, ShrinkerOptions::new("scoped"));
/// drop(h); // unregistered here
/// ```
#[must_use = "dropping the handle unregisters the shrinker"]
pub struct ShrinkerHandle {
    entry: Arc<Entry>,
}

impl ShrinkerHandle {
    /// Unregisters the shrinker now (the same as dropping the handle).
    ///
    /// ```
    /// # use shrinkalloc::reclaim::{register, CountResult, ScanResult, ShrinkControl, Shrinker, ShrinkerOptions};
    /// # struct Nothing;
    /// # impl Shrinker for Nothing {
    /// #     fn count(&self, _: &ShrinkControl) -> CountResult { CountResult::Empty }
    /// #     fn scan(&self, _: &ShrinkControl) -> ScanResult { ScanResult::Stop }
    /// # }
    /// let h = register(Nothing, ShrinkerOptions::new("gone"));
    /// h.unregister();
    /// assert!(shrinkalloc::reclaim::stats().shrinkers.iter().all(|s| s.name != "gone"));
    /// ```
    pub fn unregister(self) {
        drop(self);
    }

    /// The name it was registered under.
    ///
    /// ```
    /// # use shrinkalloc::reclaim::{register, CountResult, ScanResult, ShrinkControl, Shrinker, ShrinkerOptions};
    /// # struct Nothing;
    /// # impl Shrinker for Nothing {
    /// #     fn count(&self, _: &ShrinkControl) -> CountResult { CountResult::Empty }
    /// #     fn scan(&self, _: &ShrinkControl) -> ScanResult { ScanResult::Stop }
    /// # }
    /// assert_eq!(register(Nothing, ShrinkerOptions::new("n")).name(), "n");
    /// ```
    pub fn name(&self) -> &str {
        self.entry.options.name()
    }

    /// Whether the shrinker panicked and reclaim no longer calls it.
    ///
    /// ```
    /// # use shrinkalloc::reclaim::{register, CountResult, ScanResult, ShrinkControl, Shrinker, ShrinkerOptions};
    /// # struct Nothing;
    /// # impl Shrinker for Nothing {
    /// #     fn count(&self, _: &ShrinkControl) -> CountResult { CountResult::Empty }
    /// #     fn scan(&self, _: &ShrinkControl) -> ScanResult { ScanResult::Stop }
    /// # }
    /// assert!(!register(Nothing, ShrinkerOptions::new("n")).is_disabled());
    /// ```
    pub fn is_disabled(&self) -> bool {
        self.entry.is_disabled()
    }

    /// The registry entry, for the statistics (`stats.rs`).
    pub(crate) fn entry(&self) -> &Entry {
        &self.entry
    }
}

impl Drop for ShrinkerHandle {
    fn drop(&mut self) {
        unregister(&self.entry);
    }
}

impl core::fmt::Debug for ShrinkerHandle {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ShrinkerHandle").field("name", &self.name()).field("id", &self.entry.id).finish()
    }
}

/// In a `fork()` child, once `fork.rs` released the registry lock: the
/// child's only thread is the one that forked, so a count left by a parent
/// thread inside a callback would make unregistration wait forever. Clears
/// them, unless the forking thread is itself inside one.
pub(crate) fn after_fork_in_child() {
    if !scope::is_reclaiming() {
        let g = REGISTRY.lock();
        for e in g.list.iter().flat_map(|l| l.iter()) {
            // Relaxed: the child is single-threaded here.
            e.state.fetch_and(!ACTIVE, Ordering::Relaxed);
        }
    }
}
