//! The one seam through which the allocator core commits memory.
//!
//! Before the core commits more memory (a new segment header, a page's next
//! carving, a huge block) it asks [`charge`] (may run reclaim) or [`fits`]
//! (never does); when the kernel refuses a mapping it asks
//! [`on_map_failure`] whether to retry. The fast path of both checks is
//! two relaxed loads and a compare against [`THRESHOLD`]. Past it, the core
//! calls the slow path that the reclaim layer *installs* ([`install`]):
//! the core never names reclaim, reclaim names the core.
//!
//! Invariant: `THRESHOLD` is a number of committed bytes under which no
//! charge needs the slow path: the reclaim layer stores the smallest line it
//! watches (`usize::MAX` with none). It starts at 0, so that the first
//! charge goes slow and lets reclaim read its configuration. With no slow
//! path installed (only before the process's first heap exists, see
//! `thread::init_process`) every charge succeeds and a refused mapping is
//! not retried: there is nothing yet to reclaim.
//!
//! A hard limit that refuses is exact under concurrent charges: reclaim
//! keeps the threshold at 0 then, and every charge [`reserve`]s its bytes
//! against a line (the committed bytes, every thread's reservation and
//! these must stay under it) before the core commits them: here, under
//! the *exact line* reclaim stores (its smallest line), without calling it;
//! past that, in reclaim's slow path, against the hard limit. Committing
//! ([`on_commit`], [`on_map`]) settles the reservation. A thread holds one
//! reservation at a time: its next reservation, or its exit, gives up what
//! it reserved and did not commit (a page found after all, a failed map).
//!
//! This file also keeps the counters of what the core maps and commits
//! (`on_map`, `on_commit`, `on_purge`, `on_unmap`): `committed()` is the
//! quantity the threshold is compared with. They change on slow paths only,
//! never per `malloc`, and are independent relaxed tallies.

use core::cell::Cell;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// The slow paths the reclaim layer installs.
pub(crate) struct Reclaimer {
    /// `charge` past the threshold: `false` when the allocation must fail.
    pub(crate) charge: fn(usize) -> bool,
    /// `fits` past the threshold: whether the bytes fit without reclaiming.
    pub(crate) fits: fn(usize) -> bool,
    /// A mapping of `bytes` failed before retry `attempt + 1`: whether to retry.
    pub(crate) on_map_failure: fn(usize, u32) -> bool,
}

/// The installed slow paths (null: none yet).
static RECLAIMER: AtomicPtr<Reclaimer> = AtomicPtr::new(ptr::null_mut());
/// Committed bytes under which a charge needs no slow path.
static THRESHOLD: AtomicUsize = AtomicUsize::new(0);

/// Installs the slow paths. Idempotent: the same table may be installed any
/// number of times, from any thread.
pub(crate) fn install(r: &'static Reclaimer) {
    // Release pairs with the Acquire load in `installed`: the table's
    // fields are visible to whoever sees the pointer.
    RECLAIMER.store(ptr::from_ref(r).cast_mut(), Ordering::Release);
}

fn installed() -> Option<&'static Reclaimer> {
    // Acquire pairs with the Release store in `install`.
    let r = RECLAIMER.load(Ordering::Acquire);
    // SAFETY: a non-null pointer came from a `&'static Reclaimer` in
    // `install`: it is valid, aligned and never written through.
    unsafe { r.as_ref() }
}

/// The allocation check of reclaim lockdep (`crate::lockdep`), installed
/// when the checker is turned on: the core calls it from the allocation
/// slow path of a thread whose heap lockdep watches (`Heap::watched`), and
/// before a huge block, so that the core never names lockdep.
pub(crate) struct Watcher {
    /// Checks the calling thread's allocation against the locks it holds.
    pub(crate) check: fn(),
}

/// The installed check (null: none, the checker was never turned on).
static WATCHER: AtomicPtr<Watcher> = AtomicPtr::new(ptr::null_mut());

/// Installs lockdep's allocation check. Idempotent.
pub(crate) fn install_watcher(w: &'static Watcher) {
    // Release pairs with the Acquire load in `on_watched_alloc`.
    WATCHER.store(ptr::from_ref(w).cast_mut(), Ordering::Release);
}

/// An allocation of a thread whose heap lockdep watches: runs the check.
#[cold]
#[inline(never)]
pub(crate) fn on_watched_alloc() {
    // Acquire pairs with the Release store in `install_watcher`.
    let w = WATCHER.load(Ordering::Acquire);
    // SAFETY: a non-null pointer came from a `&'static Watcher`.
    if let Some(w) = unsafe { w.as_ref() } {
        (w.check)();
    }
}

/// The threshold now (see the module doc).
#[inline]
pub(crate) fn threshold() -> usize {
    // Relaxed: a stale threshold only sends one charge down the slow path,
    // or lets one through that a concurrent setter is about to forbid.
    THRESHOLD.load(Ordering::Relaxed)
}

/// Whether no line is in force: no soft or hard limit, no wake point of the
/// pressure monitor (the threshold is `usize::MAX` then).
#[inline]
pub(crate) fn no_line() -> bool {
    threshold() == usize::MAX
}

/// Whether the committed bytes are past the lowest line in force (the soft
/// line's high watermark, a hard limit, the monitor's wake point): memory
/// is short, and what is free should go back to the OS without waiting.
/// Two relaxed loads and a compare; `false` with no line.
pub(crate) fn past_line() -> bool {
    // Relaxed: see `threshold` and `set_exact_line`. A refusing hard limit
    // keeps the threshold at 0 and its line in `EXACT_LINE`.
    let line = match EXACT_LINE.load(Ordering::Relaxed) {
        0 => threshold(),
        exact => exact,
    };
    committed() > line
}

/// Sets the threshold (reclaim's limits, recomputed under their lock).
pub(crate) fn set_threshold(bytes: usize) {
    // Relaxed: see `threshold`.
    THRESHOLD.store(bytes, Ordering::Relaxed);
}

/// Lowers the threshold (and the exact line, if any) to `bytes` if higher.
pub(crate) fn lower_threshold(bytes: usize) {
    // Relaxed: see `threshold`.
    THRESHOLD.fetch_min(bytes, Ordering::Relaxed);
    // 0 (none) stays 0.
    EXACT_LINE.fetch_min(bytes, Ordering::Relaxed);
}

/// Under a hard limit that refuses (the threshold is 0 then): the committed
/// bytes under which a charge only reserves, without reclaim's slow path;
/// 0 otherwise.
static EXACT_LINE: AtomicUsize = AtomicUsize::new(0);

/// Sets the exact line (0: none; see `EXACT_LINE`).
pub(crate) fn set_exact_line(bytes: usize) {
    // Relaxed: see `threshold`; a stale line only sends one charge to
    // reclaim's slow path, which reserves against the hard limit itself.
    EXACT_LINE.store(bytes, Ordering::Relaxed);
}

/// A reservation under the exact line, if there is one and it fits.
#[inline]
fn reserve_under_exact_line(bytes: usize) -> bool {
    // Relaxed: see `set_exact_line`.
    let line = EXACT_LINE.load(Ordering::Relaxed);
    line != 0 && reserve(bytes, line)
}

/// Called before committing `bytes` more memory, never with an allocator
/// lock held (the slow path may run reclaim, which takes them). `false`
/// when the allocation must fail.
///
/// Fast path: two relaxed loads and a compare.
#[inline]
pub(crate) fn charge(bytes: usize) -> bool {
    if committed().saturating_add(bytes) <= threshold() {
        return true;
    }
    charge_slow(bytes)
}

#[cold]
#[inline(never)]
fn charge_slow(bytes: usize) -> bool {
    reserve_under_exact_line(bytes) || installed().is_none_or(|r| (r.charge)(bytes))
}

/// Whether committing `bytes` more fits under the limits now, without
/// reclaiming or waking anyone: for a caller that cannot run reclaim where
/// it stands (the page walk of `alloc::find_block`), which, when refused,
/// calls [`charge`] at a safe point and looks again.
#[inline]
pub(crate) fn fits(bytes: usize) -> bool {
    if committed().saturating_add(bytes) <= threshold() {
        return true;
    }
    fits_slow(bytes)
}

#[cold]
#[inline(never)]
fn fits_slow(bytes: usize) -> bool {
    reserve_under_exact_line(bytes) || installed().is_none_or(|r| (r.fits)(bytes))
}

/// Called when a mapping of `bytes` failed, before retry `attempt + 1`:
/// whether to retry (reclaim may have made room).
#[cold]
pub(crate) fn on_map_failure(bytes: usize, attempt: u32) -> bool {
    installed().is_some_and(|r| (r.on_map_failure)(bytes, attempt))
}

/// Bytes reserved by [`reserve`] and not yet committed or given up.
static RESERVED: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// The calling thread's reservation, in bytes (const, destructor-free:
    /// read and written with `try_with`, also at thread exit).
    static PENDING: Cell<usize> = const { Cell::new(0) };
}

/// Reserves `bytes` against `line`: `true` (and the reservation is this
/// thread's) when the committed bytes, every thread's reservations and
/// these stay at or under it. Ends the thread's previous reservation.
pub(crate) fn reserve(bytes: usize, line: usize) -> bool {
    give_up_reservation();
    // AcqRel pairs with `settle`'s Release: bytes moved from a reservation
    // to the committed counter are seen in the latter, never in neither.
    let reserved = RESERVED.fetch_add(bytes, Ordering::AcqRel).saturating_add(bytes);
    if committed().saturating_add(reserved) <= line {
        let _ = PENDING.try_with(|p| p.set(bytes));
        return true;
    }
    RESERVED.fetch_sub(bytes, Ordering::Release);
    false
}

/// The committed bytes plus every thread's reservation: what a reserving
/// charge is measured against.
pub(crate) fn charged() -> usize {
    // Acquire: see `reserve`.
    committed().saturating_add(RESERVED.load(Ordering::Acquire))
}

/// `bytes` were committed: up to that much of the thread's reservation is
/// settled.
fn settle(bytes: usize) {
    let _ = PENDING.try_with(|p| {
        let n = p.get();
        if n != 0 {
            let s = n.min(bytes);
            p.set(n - s);
            // Release: see `reserve`; the committed counter grew first.
            RESERVED.fetch_sub(s, Ordering::Release);
        }
    });
}

/// Gives up what the calling thread reserved and did not commit: at its
/// next reservation and at its exit (`thread.rs`).
pub(crate) fn give_up_reservation() {
    let _ = PENDING.try_with(|p| {
        let n = p.replace(0);
        if n != 0 {
            // Release: see `reserve`.
            RESERVED.fetch_sub(n, Ordering::Release);
        }
    });
}

/// In a `fork()` child: only the forking thread's reservation survives.
pub(crate) fn after_fork_in_child() {
    // Relaxed: the child has one thread.
    RESERVED.store(PENDING.try_with(Cell::get).unwrap_or(0), Ordering::Relaxed);
}

static MAPPED: AtomicUsize = AtomicUsize::new(0);
static COMMITTED: AtomicUsize = AtomicUsize::new(0);
static PURGED: AtomicUsize = AtomicUsize::new(0);
static SEGMENTS: AtomicUsize = AtomicUsize::new(0);

// Relaxed on the counters below: each is an independent tally; nothing is
// published through them.

/// A segment of `size` bytes was mapped, `committed` of them counted as
/// committed (its header).
pub(crate) fn on_map(size: usize, committed: usize) {
    MAPPED.fetch_add(size, Ordering::Relaxed);
    COMMITTED.fetch_add(committed, Ordering::Relaxed);
    SEGMENTS.fetch_add(1, Ordering::Relaxed);
    settle(committed);
}

/// A segment was unmapped: its committed part counts as purged.
pub(crate) fn on_unmap(size: usize, committed: usize) {
    MAPPED.fetch_sub(size, Ordering::Relaxed);
    on_purge(committed);
    SEGMENTS.fetch_sub(1, Ordering::Relaxed);
}

/// `bytes` more were committed (charged before, with [`charge`]).
pub(crate) fn on_commit(bytes: usize) {
    COMMITTED.fetch_add(bytes, Ordering::Relaxed);
    settle(bytes);
}

/// `bytes` were given back to the OS.
pub(crate) fn on_purge(bytes: usize) {
    COMMITTED.fetch_sub(bytes, Ordering::Relaxed);
    PURGED.fetch_add(bytes, Ordering::Relaxed);
}

/// Bytes the allocator holds committed now (one relaxed load): segment
/// headers, pages not given back to the OS, and huge blocks.
#[inline]
pub fn committed() -> usize {
    COMMITTED.load(Ordering::Relaxed)
}

/// Address space mapped now.
pub(crate) fn mapped() -> usize {
    MAPPED.load(Ordering::Relaxed)
}

/// Bytes given back to the OS since start.
pub(crate) fn purged() -> usize {
    PURGED.load(Ordering::Relaxed)
}

/// Segments mapped now.
pub(crate) fn segments() -> usize {
    SEGMENTS.load(Ordering::Relaxed)
}
