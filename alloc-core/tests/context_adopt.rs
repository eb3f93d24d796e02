//! Captured contexts: a context captured in a `NOFS` scope and adopted in
//! another thread makes reclaim there skip `FS` shrinkers (and only them),
//! and dropping the adoption puts that thread back as it was, so reclaim
//! there calls them again. `spawn` carries the caller's context; adopting
//! never lifts a restriction; the guard and the closure form restore even
//! on unwind.
//!
//! Shrinker calls are attributed to the adopting thread by a thread-local
//! mark, so the library's background reclaimers (which may pay the skipped
//! work meanwhile) do not blur the count.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use shrinkalloc::reclaim::{
    current_scope, nofs, reclaim, register, spawn, with_nofs, with_noio, Context, ContextClass, CountResult, Level,
    Needs, ScanResult, ScopeFlags, ShrinkControl, Shrinker, ShrinkerOptions,
};

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

/// Tests that register shrinkers share the registry: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

thread_local! {
    /// Set in the thread whose reclaim the test judges.
    static JUDGED: Cell<bool> = const { Cell::new(false) };
}

/// A shrinker that always has objects, counting scans from the judged
/// thread and scans made under a mask that forbids its needs.
struct Counting {
    needs: Needs,
    judged_scans: Arc<AtomicU64>,
    violations: Arc<AtomicU64>,
}

impl Shrinker for Counting {
    fn count(&self, _: &ShrinkControl) -> CountResult {
        CountResult::Count(1 << 12)
    }

    fn scan(&self, sc: &ShrinkControl) -> ScanResult {
        if !self.needs.allowed_in(current_scope()) {
            self.violations.fetch_add(1, Ordering::Relaxed);
        }
        if JUDGED.with(Cell::get) {
            self.judged_scans.fetch_add(1, Ordering::Relaxed);
        }
        ScanResult::Freed(sc.nr_to_scan())
    }
}

struct Probe {
    scans: Arc<AtomicU64>,
    violations: Arc<AtomicU64>,
}

impl Probe {
    fn register(name: &str, needs: Needs) -> (Probe, shrinkalloc::reclaim::ShrinkerHandle) {
        let p = Probe { scans: Arc::default(), violations: Arc::default() };
        let s = Counting { needs, judged_scans: p.scans.clone(), violations: p.violations.clone() };
        (p, register(s, ShrinkerOptions::new(name).needs(needs).batch(64)))
    }

    fn take(&self) -> u64 {
        self.scans.swap(0, Ordering::Relaxed)
    }
}

#[test]
fn adopted_nofs_context_skips_fs_shrinkers_and_restore_puts_the_worker_back() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (fs, fs_handle) = Probe::register("ctx-fs", Needs::FS);
    let (plain, plain_handle) = Probe::register("ctx-plain", Needs::NONE);
    let ctx = with_nofs(Context::capture);
    assert_eq!(ctx.scope(), ScopeFlags::NOFS);
    assert_eq!(ctx.class(), ContextClass::Nofs);

    let (adopted, restored) = thread::spawn(move || {
        JUDGED.with(|j| j.set(true));
        assert_eq!(current_scope(), ScopeFlags::NONE, "a new std thread starts unrestricted");
        let guard = ctx.adopt();
        assert_eq!(current_scope(), ScopeFlags::NOFS);
        reclaim(usize::MAX, Level::Critical);
        let adopted = (fs.take(), plain.take());
        drop(guard);
        assert_eq!(current_scope(), ScopeFlags::NONE, "dropping the guard restores the worker");
        reclaim(usize::MAX, Level::Critical);
        (adopted, (fs.take(), plain.take()))
    })
    .join()
    .unwrap();

    assert_eq!(adopted.0, 0, "reclaim in the adopted NOFS context called the FS shrinker");
    assert!(adopted.1 > 0, "the plain shrinker stays eligible under NOFS");
    assert!(restored.0 > 0, "after restore, reclaim calls the FS shrinker again");
    assert!(restored.1 > 0);
    assert!(fs_handle.stats().skipped_by_mask > 0, "{:?}", fs_handle.stats());
    assert_eq!(plain_handle.stats().skipped_by_mask, 0);
}

#[test]
fn no_shrinker_is_ever_called_under_a_mask_that_forbids_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (fs, _h1) = Probe::register("ctx-fs-v", Needs::FS);
    let (io, _h2) = Probe::register("ctx-io-v", Needs::IO);
    let noio = with_noio(Context::capture);
    thread::spawn(move || noio.with(|| reclaim(usize::MAX, Level::Critical))).join().unwrap();
    assert_eq!(fs.violations.load(Ordering::Relaxed) + io.violations.load(Ordering::Relaxed), 0);
}

#[test]
fn spawn_carries_the_callers_context() {
    assert_eq!(spawn(current_scope).join().unwrap(), ScopeFlags::NONE);
    let h = with_noio(|| spawn(current_scope));
    assert_eq!(h.join().unwrap(), ScopeFlags::NOIO);
    let h = with_nofs(|| spawn(|| spawn(current_scope).join().unwrap()));
    assert_eq!(h.join().unwrap(), ScopeFlags::NOFS, "a grandchild keeps it too");
    let b = thread::Builder::new().name("ctx-named".into());
    let h = Context::from_scope(ScopeFlags::NOFS)
        .spawn_with(b, || (current_scope(), thread::current().name().map(String::from)));
    assert_eq!(h.unwrap().join().unwrap(), (ScopeFlags::NOFS, Some("ctx-named".to_string())));
}

#[test]
fn adopting_never_lifts_a_restriction() {
    let _g = nofs();
    let normal = Context::NORMAL;
    assert_eq!(normal.with(current_scope), ScopeFlags::NOFS, "a lock holder stays NOFS");
    let io = Context::from_scope(ScopeFlags::NOIO);
    assert_eq!(io.with(current_scope), ScopeFlags::NOFS | ScopeFlags::NOIO);
    assert_eq!(current_scope(), ScopeFlags::NOFS, "and gets its own flags back exactly");
}

#[test]
fn adopt_save_and_restore_nest_like_the_c_pair() {
    let a = Context::from_scope(ScopeFlags::NOFS).adopt_save();
    let b = Context::from_scope(ScopeFlags::NOIO).adopt_save();
    assert_eq!(current_scope(), ScopeFlags::NOFS | ScopeFlags::NOIO);
    assert_eq!(b, Context::from_scope(ScopeFlags::NOFS));
    b.restore();
    assert_eq!(current_scope(), ScopeFlags::NOFS);
    a.restore();
    assert_eq!(current_scope(), ScopeFlags::NONE);
    let back = Context::from_bits(Context::capture().to_bits());
    assert_eq!(back, Context::NORMAL);
}

#[test]
fn guard_and_closure_restore_on_unwind() {
    let ctx = Context::from_scope(ScopeFlags::NOIO);
    let r = panic::catch_unwind(AssertUnwindSafe(|| ctx.with(|| panic!("inside an adopted context"))));
    assert!(r.is_err());
    assert_eq!(current_scope(), ScopeFlags::NONE);
    let r = panic::catch_unwind(AssertUnwindSafe(|| {
        let _g = ctx.adopt();
        panic!("inside a guard");
    }));
    assert!(r.is_err());
    assert_eq!(current_scope(), ScopeFlags::NONE);
}
