//! Scope masks: save/restore pairs nest exactly like the kernel's, and
//! reclaim started from a thread never calls a shrinker its mask forbids —
//! `NOFS` skips `FS` shrinkers, `NOIO` skips `FS` and `IO` ones — while it
//! still calls the others. Skipped work is counted and owed.
//!
//! Reclaim here is explicit (`reclaim()`), so the test needs no limit; the
//! allocation-triggered path (a `NOFS` thread past the hard limit) is
//! covered by `reclaim_deadlock.rs`. The
//! shrinkers check the calling thread's own mask on every call, so a call
//! from any thread that should not have made it counts as a violation.

mod reclaim_support;

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use reclaim_support::{wait_until, Cache, CacheShrinker, Caller};
use shrinkalloc::reclaim::{
    current_scope, nofs, nofs_restore, nofs_save, noio, noio_restore, noio_save, reclaim, register, with_nofs,
    with_noio, Level, Needs, ScopeFlags, ShrinkerOptions,
};

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

/// The reclaim tests share the registry: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn nested_scopes_restore_exactly() {
    assert_eq!(current_scope(), ScopeFlags::NONE);
    let a = nofs_save();
    assert_eq!(a, ScopeFlags::NONE);
    let b = nofs_save();
    assert_eq!(b, ScopeFlags::NOFS, "an inner save returns the outer state");
    let c = noio_save();
    assert_eq!(current_scope(), ScopeFlags::NOFS | ScopeFlags::NOIO);
    nofs_restore(b);
    assert_eq!(current_scope(), ScopeFlags::NOFS | ScopeFlags::NOIO, "inner restore keeps the outer scope");
    noio_restore(c);
    assert_eq!(current_scope(), ScopeFlags::NOFS);
    nofs_restore(a);
    assert_eq!(current_scope(), ScopeFlags::NONE);

    // Interleaved kinds: restoring NOFS never touches NOIO, and back.
    let io = noio_save();
    let fs = nofs_save();
    noio_restore(io);
    assert_eq!(current_scope(), ScopeFlags::NOFS);
    nofs_restore(fs);
    assert_eq!(current_scope(), ScopeFlags::NONE);
}

#[test]
fn guards_and_closures_restore_even_on_unwind() {
    {
        let _outer = nofs();
        {
            let _inner = noio();
            assert_eq!(current_scope(), ScopeFlags::NOFS | ScopeFlags::NOIO);
            assert!(current_scope().effective().contains(ScopeFlags::NOFS));
        }
        assert_eq!(current_scope(), ScopeFlags::NOFS);
        with_nofs(|| assert_eq!(current_scope(), ScopeFlags::NOFS));
        assert_eq!(current_scope(), ScopeFlags::NOFS, "a nested closure keeps the outer scope");
    }
    assert_eq!(current_scope(), ScopeFlags::NONE);
    let r = panic::catch_unwind(AssertUnwindSafe(|| with_noio(|| panic!("inside a NOIO scope"))));
    assert!(r.is_err());
    assert_eq!(current_scope(), ScopeFlags::NONE, "unwinding ends the scope");
    assert_eq!(with_noio(|| with_nofs(current_scope)), ScopeFlags::NOFS | ScopeFlags::NOIO);
}

#[test]
fn scope_is_per_thread() {
    let _g = nofs();
    let other = thread::spawn(current_scope).join().unwrap();
    assert_eq!(other, ScopeFlags::NONE);
    assert_eq!(current_scope(), ScopeFlags::NOFS);
}

/// Three caches, one per kind of needs, each with `n` blocks.
fn three_caches(n: usize) -> [std::sync::Arc<Cache>; 3] {
    let caches = [Cache::new(Needs::FS), Cache::new(Needs::IO), Cache::new(Needs::NONE)];
    for c in &caches {
        assert!(c.fill(n));
    }
    caches
}

/// Runs a full explicit reclaim in `scope` over an `FS`, an `IO` and a
/// `NONE` cache, and checks which ones this thread called. Library
/// reclaimers may pay skipped work meanwhile (they are woken for it), so
/// "not called" is judged by calls from this thread only.
fn run_scoped(scope: ScopeFlags, fs_ok: bool, io_ok: bool) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let [fs, io, none] = three_caches(4);
    let opts = |name: &str| ShrinkerOptions::new(name).batch(1);
    let h = [
        register(CacheShrinker(fs.clone()), opts("fs").needs(Needs::FS)),
        register(CacheShrinker(io.clone()), opts("io").needs(Needs::IO)),
        register(CacheShrinker(none.clone()), opts("none")),
    ];
    let fs_saved = scope.contains(ScopeFlags::NOFS).then(nofs_save);
    let io_saved = scope.contains(ScopeFlags::NOIO).then(noio_save);
    reclaim(usize::MAX, Level::Critical);
    if let Some(saved) = io_saved {
        noio_restore(saved);
    }
    if let Some(saved) = fs_saved {
        nofs_restore(saved);
    }
    for c in [&fs, &io, &none] {
        assert_eq!(c.calls.violations.load(Ordering::Relaxed), 0, "a shrinker ran under a mask that forbids it");
        assert_eq!(c.calls.scope_mismatch.load(Ordering::Relaxed), 0, "ShrinkControl::scope is the thread's mask");
    }
    assert!(none.calls.scans_by(Caller::Other) > 0, "a NONE shrinker is always eligible");
    for (cache, handle, ok) in [(&fs, &h[0], fs_ok), (&io, &h[1], io_ok)] {
        let by_me = cache.calls.scans_by(Caller::Other);
        let stats = handle.stats();
        if ok {
            assert!(by_me > 0 && stats.skipped_by_mask == 0, "{scope:?} allows {stats:?}");
        } else {
            assert_eq!(by_me, 0, "{scope:?} forbids {stats:?}");
            assert!(stats.skipped_by_mask > 0, "the skip is counted: {stats:?}");
        }
    }
    drop(h);
}

#[test]
fn unrestricted_reclaim_calls_every_shrinker() {
    run_scoped(ScopeFlags::NONE, true, true);
}

#[test]
fn nofs_reclaim_never_calls_fs_shrinker() {
    run_scoped(ScopeFlags::NOFS, false, true);
}

#[test]
fn noio_reclaim_never_calls_fs_or_io_shrinker() {
    run_scoped(ScopeFlags::NOIO, false, false);
}

#[test]
fn owed_work_is_paid_by_the_background_reclaimer_of_its_class() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let fs = Cache::new(Needs::FS);
    assert!(fs.fill(64));
    let h = register(CacheShrinker(fs.clone()), ShrinkerOptions::new("fs-owed").needs(Needs::FS).batch(8));
    with_nofs(|| reclaim(usize::MAX, Level::Low));
    assert!(h.stats().skipped_by_mask > 0, "{:?}", h.stats());
    assert_eq!(fs.calls.scans_by(Caller::Other), 0, "nothing scanned by this NOFS thread");
    let paid = wait_until(Duration::from_secs(10), || fs.calls.scans_by(Caller::Reclaimer) > 0);
    assert!(paid, "the unrestricted reclaimer pays the FS work: {:?}", h.stats());
    assert_eq!(fs.calls.scans_by(Caller::ReclaimerNofs) + fs.calls.scans_by(Caller::ReclaimerNoio), 0);
    assert_eq!(fs.calls.violations.load(Ordering::Relaxed), 0);
}

/// The failure CI once saw: a restricted pass skips an `FS` cache that was
/// never counted, yet meets its target through a `NONE` cache, so nobody
/// is woken and memory is no longer short. The debt must still be paid by
/// the next reclaimer allowed to, even one whose own target is zero.
#[test]
fn owed_work_is_paid_by_the_next_allowed_pass_even_when_memory_is_no_longer_short() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (fs, none) = (Cache::new(Needs::FS), Cache::new(Needs::NONE));
    assert!(fs.fill(8) && none.fill(16));
    // `seeks` 0: each round asks for half of what a cache holds, so the
    // NONE cache's first round meets the target and the owed share is not 0.
    let opts = |name: &str| ShrinkerOptions::new(name).batch(1).seeks(0);
    let h = [
        register(CacheShrinker(fs.clone()), opts("fs-never-counted").needs(Needs::FS)),
        register(CacheShrinker(none.clone()), opts("none-pays-the-target")),
    ];
    shrinkalloc::purge();
    let target = 4 * reclaim_support::BLOCK;
    let freed = with_nofs(|| reclaim(target, Level::Critical));
    assert!(freed >= target, "the NONE cache met the target ({freed} of {target} bytes)");
    let skipped = h[0].stats();
    assert!(skipped.skipped_by_mask > 0 && skipped.count_calls == 0, "{skipped:?}");
    reclaim(0, Level::Low);
    assert!(fs.calls.scans_by(Caller::Other) > 0, "the unrestricted pass paid the debt: {:?}", h[0].stats());
    assert!(fs.len() < 8 && fs.len() >= 4, "it paid half the cache, not more: {} left", fs.len());
    assert_eq!(fs.calls.violations.load(Ordering::Relaxed), 0);
    drop(h);
}
