//! Shrinkers that do awkward things in their callbacks, and a registry
//! under a storm: a shrinker that allocates inside `scan` (reclaim never
//! recurses); one that panics (caught, disabled, reported, reclaim goes on);
//! one that unregisters itself (returns at once, never called again, dropped
//! after its scan); unregistration that waits for a scan in flight on
//! another thread, and one from inside another shrinker that does not;
//! registration from inside a callback; and register/unregister storms on
//! several threads during continuous reclaim, with no deadlock, no crash,
//! and no lost or leaked shrinker.
//!
//! The tests share the registry and the limits: they run one at a time.

mod reclaim_support;

use std::cell::Cell;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use reclaim_support::{limit_above_committed, wait_until, watchdog, Cache, CacheShrinker, Raw, BLOCK, MIB};
use shrinkalloc::reclaim::{
    is_reclaiming, reclaim, register, set_hard_limit, set_soft_limit, stats, CountResult, Level, Needs, ScanResult,
    ShrinkControl, Shrinker, ShrinkerHandle, ShrinkerOptions,
};

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    watchdog(Duration::from_secs(120), "reclaim_callbacks");
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn registered_names() -> HashSet<String> {
    stats().shrinkers.into_iter().map(|s| s.name).collect()
}

/// Sets a flag when dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

thread_local! {
    static IN_SCAN: Cell<bool> = const { Cell::new(false) };
}

/// Frees cached blocks, but allocates a small and a huge block first.
struct Allocating {
    cache: Arc<Cache>,
    recursions: Arc<AtomicUsize>,
    outside_reclaim: Arc<AtomicUsize>,
}

impl Shrinker for Allocating {
    fn count(&self, sc: &ShrinkControl) -> CountResult {
        let _scratch = vec![0u8; 4096];
        CacheShrinker(self.cache.clone()).count(sc)
    }

    fn scan(&self, sc: &ShrinkControl) -> ScanResult {
        if IN_SCAN.with(|f| f.replace(true)) {
            self.recursions.fetch_add(1, Ordering::SeqCst);
        }
        if !is_reclaiming() {
            self.outside_reclaim.fetch_add(1, Ordering::SeqCst);
        }
        // A huge block (mapped alone, charged against the reserve at the
        // limit); small enough that a few concurrent reclaimers fit in it.
        let small = vec![1u8; 64 << 10];
        let huge = vec![1u8; 3 * MIB / 2];
        let r = CacheShrinker(self.cache.clone()).scan(sc);
        drop((small, huge));
        IN_SCAN.with(|f| f.set(false));
        r
    }
}

#[test]
fn shrinker_that_allocates_in_scan_never_recurses() {
    let _s = serial();
    // Room to spare: the cache keeps enough for the other threads of the
    // test harness, which allocate too and would fail at a tight limit.
    limit_above_committed(48 * MIB);
    let cache = Cache::new(Needs::NONE);
    assert!(cache.fill(16));
    let recursions = Arc::new(AtomicUsize::new(0));
    let outside = Arc::new(AtomicUsize::new(0));
    let s = Allocating { cache: cache.clone(), recursions: recursions.clone(), outside_reclaim: outside.clone() };
    let h = register(s, ShrinkerOptions::new("allocating").batch(1));
    let mine: Vec<Raw> = (0..10).map(|_| Raw::try_new(BLOCK).expect("reclaim made room")).collect();
    set_hard_limit(None);
    set_soft_limit(None);
    assert!(h.stats().scan_calls > 0, "direct reclaim ran the shrinker: {:?}", h.stats());
    assert_eq!(recursions.load(Ordering::SeqCst), 0, "an allocation inside scan re-entered reclaim");
    assert_eq!(outside.load(Ordering::SeqCst), 0, "scan ran without RECLAIMING");
    drop(mine);
}

/// Claims objects, then panics in `scan`.
struct Panicker(Arc<AtomicUsize>);

impl Shrinker for Panicker {
    fn count(&self, _: &ShrinkControl) -> CountResult {
        CountResult::Count(1000)
    }

    fn scan(&self, _: &ShrinkControl) -> ScanResult {
        self.0.fetch_add(1, Ordering::SeqCst);
        panic!("a shrinker that panics");
    }
}

#[test]
fn panicking_shrinker_is_disabled_and_reclaim_goes_on() {
    let _s = serial();
    let scans = Arc::new(AtomicUsize::new(0));
    let bad = register(Panicker(scans.clone()), ShrinkerOptions::new("panicker"));
    let cache = Cache::new(Needs::NONE);
    assert!(cache.fill(4));
    let good = register(CacheShrinker(cache.clone()), ShrinkerOptions::new("good").batch(1));
    let panics_before = stats().panics;
    reclaim(usize::MAX, Level::Critical);
    // A background reclaimer (woken by the system's PSI, say, on a busy
    // machine) may call `scan` at the same time as this pass, before either
    // call has disabled the shrinker: callbacks run concurrently by contract.
    // What must hold is that once disabled, it is never called again.
    let called = scans.load(Ordering::SeqCst);
    assert!(called >= 1, "the panicking shrinker was called");
    assert!(bad.is_disabled() && bad.stats().disabled);
    assert!(stats().panics > panics_before);
    assert_eq!(cache.len(), 0, "the other shrinker still ran: {:?}", good.stats());
    reclaim(usize::MAX, Level::Critical);
    assert_eq!(scans.load(Ordering::SeqCst), called, "a disabled shrinker is never called again");
    assert!(stats().to_string().contains("DISABLED"));
}

/// Holds its own handle and drops it from inside `scan`.
struct SelfUnregistering {
    handle: Arc<Mutex<Option<ShrinkerHandle>>>,
    scans: Arc<AtomicUsize>,
    _dropped: DropFlag,
}

impl Shrinker for SelfUnregistering {
    fn count(&self, _: &ShrinkControl) -> CountResult {
        CountResult::Count(1)
    }

    fn scan(&self, _: &ShrinkControl) -> ScanResult {
        self.scans.fetch_add(1, Ordering::SeqCst);
        let h = self.handle.lock().unwrap().take();
        drop(h); // must return at once: we are inside our own callback
        ScanResult::Freed(1)
    }
}

#[test]
fn shrinker_unregisters_itself_from_scan() {
    let _s = serial();
    let handle = Arc::new(Mutex::new(None));
    let scans = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let s = SelfUnregistering { handle: handle.clone(), scans: scans.clone(), _dropped: DropFlag(dropped.clone()) };
    let h = register(s, ShrinkerOptions::new("self-unregistering").batch(1));
    *handle.lock().unwrap() = Some(h);
    let t = thread::spawn(|| reclaim(usize::MAX, Level::Critical));
    assert!(wait_until(Duration::from_secs(10), || t.is_finished()), "self-unregistration hung");
    t.join().unwrap();
    // A background reclaimer may have entered the scan concurrently, before
    // the unregistration: at least one call, and none after.
    let n = scans.load(Ordering::SeqCst);
    assert!(n >= 1);
    assert!(wait_until(Duration::from_secs(5), || dropped.load(Ordering::SeqCst)), "dropped when its scans returned");
    assert!(!registered_names().contains("self-unregistering"));
    reclaim(usize::MAX, Level::Critical);
    assert_eq!(scans.load(Ordering::SeqCst), n, "never called after unregistering");
}

/// A scan that takes a while, flagging its start and end.
struct Slow {
    started: Arc<AtomicBool>,
    finished: Arc<AtomicBool>,
    _dropped: DropFlag,
    /// Set on drop if the scan had not finished: the bug the waits prevent.
    dropped_mid_scan: Arc<AtomicBool>,
}

impl Shrinker for Slow {
    fn count(&self, _: &ShrinkControl) -> CountResult {
        CountResult::Count(1)
    }

    fn scan(&self, _: &ShrinkControl) -> ScanResult {
        self.started.store(true, Ordering::SeqCst);
        thread::sleep(Duration::from_millis(400));
        self.finished.store(true, Ordering::SeqCst);
        ScanResult::Freed(0)
    }
}

impl Drop for Slow {
    fn drop(&mut self) {
        if !self.finished.load(Ordering::SeqCst) && self.started.load(Ordering::SeqCst) {
            self.dropped_mid_scan.store(true, Ordering::SeqCst);
        }
    }
}

struct SlowFlags {
    started: Arc<AtomicBool>,
    finished: Arc<AtomicBool>,
    dropped: Arc<AtomicBool>,
    dropped_mid_scan: Arc<AtomicBool>,
}

fn slow() -> (Slow, SlowFlags) {
    let f = SlowFlags {
        started: Arc::default(),
        finished: Arc::default(),
        dropped: Arc::default(),
        dropped_mid_scan: Arc::default(),
    };
    let s = Slow {
        started: f.started.clone(),
        finished: f.finished.clone(),
        _dropped: DropFlag(f.dropped.clone()),
        dropped_mid_scan: f.dropped_mid_scan.clone(),
    };
    (s, f)
}

#[test]
fn unregister_waits_for_a_scan_in_flight_on_another_thread() {
    let _s = serial();
    let (s, f) = slow();
    let h = register(s, ShrinkerOptions::new("slow").batch(1));
    let t = thread::spawn(|| reclaim(usize::MAX, Level::Critical));
    assert!(wait_until(Duration::from_secs(10), || f.started.load(Ordering::SeqCst)));
    h.unregister();
    assert!(f.finished.load(Ordering::SeqCst), "unregister returned while the scan ran");
    assert!(f.dropped.load(Ordering::SeqCst), "unregister drops the shrinker before it returns");
    assert!(!f.dropped_mid_scan.load(Ordering::SeqCst));
    t.join().unwrap();
}

/// Drops another shrinker's handle from inside its own `scan`.
struct Dropper(Arc<Mutex<Option<ShrinkerHandle>>>, Arc<Mutex<Option<Duration>>>);

impl Shrinker for Dropper {
    fn count(&self, _: &ShrinkControl) -> CountResult {
        CountResult::Count(1)
    }

    fn scan(&self, _: &ShrinkControl) -> ScanResult {
        let Some(h) = self.0.lock().unwrap().take() else { return ScanResult::Freed(0) };
        let t = Instant::now();
        drop(h);
        *self.1.lock().unwrap() = Some(t.elapsed());
        ScanResult::Freed(0)
    }
}

#[test]
fn unregister_from_inside_reclaim_never_waits() {
    let _s = serial();
    let (s, f) = slow();
    let slow_handle = Arc::new(Mutex::new(Some(register(s, ShrinkerOptions::new("slow-victim").batch(1)))));
    // Thread X sits in the slow scan.
    let x = thread::spawn(|| reclaim(usize::MAX, Level::Critical));
    assert!(wait_until(Duration::from_secs(10), || f.started.load(Ordering::SeqCst)));
    // Meanwhile a reclaim on this thread runs the dropper, which unregisters
    // the slow shrinker: inside reclaim, that returns without waiting.
    let took = Arc::new(Mutex::new(None));
    let d = register(Dropper(slow_handle.clone(), took.clone()), ShrinkerOptions::new("dropper").batch(1));
    reclaim(usize::MAX, Level::Critical);
    let took = took.lock().unwrap().expect("the dropper ran");
    assert!(took < Duration::from_millis(200), "unregister inside reclaim waited {took:?}");
    assert!(!registered_names().contains("slow-victim"));
    x.join().unwrap();
    // The last callback to leave drops it: X's, or a background reclaimer's
    // paying work a pass owed, which may still be inside the slow scan.
    assert!(wait_until(Duration::from_secs(10), || f.dropped.load(Ordering::SeqCst)), "dropped by its last callback");
    assert!(!f.dropped_mid_scan.load(Ordering::SeqCst), "never dropped during its scan");
    drop(d);
}

/// Registers a new shrinker from inside its `scan`, once.
struct Registrar(Arc<Mutex<Option<ShrinkerHandle>>>, Arc<AtomicUsize>);

/// Counts its calls.
struct Counting(Arc<AtomicUsize>);

impl Shrinker for Counting {
    fn count(&self, _: &ShrinkControl) -> CountResult {
        self.0.fetch_add(1, Ordering::SeqCst);
        CountResult::Count(0)
    }

    fn scan(&self, _: &ShrinkControl) -> ScanResult {
        ScanResult::Freed(0)
    }
}

impl Shrinker for Registrar {
    fn count(&self, _: &ShrinkControl) -> CountResult {
        CountResult::Count(1)
    }

    fn scan(&self, _: &ShrinkControl) -> ScanResult {
        let mut slot = self.0.lock().unwrap();
        if slot.is_none() {
            *slot = Some(register(Counting(self.1.clone()), ShrinkerOptions::new("registered-in-scan")));
        }
        ScanResult::Freed(0)
    }
}

#[test]
fn register_from_inside_scan_works() {
    let _s = serial();
    let slot = Arc::new(Mutex::new(None));
    let calls = Arc::new(AtomicUsize::new(0));
    let r = register(Registrar(slot.clone(), calls.clone()), ShrinkerOptions::new("registrar").batch(1));
    reclaim(usize::MAX, Level::Critical);
    assert!(slot.lock().unwrap().is_some(), "the registrar ran");
    assert!(registered_names().contains("registered-in-scan"));
    reclaim(usize::MAX, Level::Critical);
    assert!(calls.load(Ordering::SeqCst) > 0, "the new shrinker is called by the next pass");
    drop(r);
    let inner = slot.lock().unwrap().take();
    drop(inner);
}

/// A storm shrinker: counts its calls and its drop.
struct Storm {
    calls: Arc<AtomicUsize>,
    drops: Arc<AtomicUsize>,
}

impl Shrinker for Storm {
    fn count(&self, _: &ShrinkControl) -> CountResult {
        self.calls.fetch_add(1, Ordering::Relaxed);
        CountResult::Count(64)
    }

    fn scan(&self, sc: &ShrinkControl) -> ScanResult {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let _churn = vec![0u8; 512];
        ScanResult::Freed(sc.nr_to_scan() / 2)
    }
}

impl Drop for Storm {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn register_unregister_storm_during_continuous_reclaim() {
    let _s = serial();
    const STORMERS: usize = 4;
    const ROUNDS: usize = 150;
    let calls = Arc::new(AtomicUsize::new(0));
    let drops = Arc::new(AtomicUsize::new(0));
    let sentinel_calls = Arc::new(AtomicUsize::new(0));
    let sentinel = register(Counting(sentinel_calls.clone()), ShrinkerOptions::new("sentinel"));
    let stop = Arc::new(AtomicBool::new(false));
    let reclaimers: Vec<_> = (0..2)
        .map(|i| {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut passes = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let level = [Level::Low, Level::Critical][(passes + i) % 2];
                    reclaim(usize::MAX, level);
                    passes += 1;
                }
                passes
            })
        })
        .collect();
    let stormers: Vec<_> = (0..STORMERS)
        .map(|t| {
            let (calls, drops) = (calls.clone(), drops.clone());
            thread::spawn(move || {
                let mut made = 0usize;
                let start = Instant::now();
                let mut round = 0;
                // At least ROUNDS rounds and a second, so that reclaim passes
                // overlap the storm however the threads are scheduled.
                while round < ROUNDS || start.elapsed() < Duration::from_secs(1) {
                    round += 1;
                    let hs: Vec<ShrinkerHandle> = (0..3)
                        .map(|k| {
                            made += 1;
                            let opts = ShrinkerOptions::new(format!("storm-{t}-{round}-{k}"))
                                .batch(16)
                                .needs([Needs::NONE, Needs::FS, Needs::IO][k]);
                            register(Storm { calls: calls.clone(), drops: drops.clone() }, opts)
                        })
                        .collect();
                    let names = registered_names();
                    for h in &hs {
                        assert!(names.contains(h.name()), "lost registration {}", h.name());
                    }
                    assert!(names.contains("sentinel"), "lost the sentinel");
                    // Unregister in a varying order.
                    let mut hs = hs;
                    hs.rotate_left(round % 3);
                    drop(hs);
                }
                made
            })
        })
        .collect();
    let made: usize = stormers.into_iter().map(|t| t.join().unwrap()).sum();
    let sentinel_before_stop = sentinel_calls.load(Ordering::SeqCst);
    thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    let passes: usize = reclaimers.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(passes > 10, "reclaim kept running: {passes} passes");
    assert!(calls.load(Ordering::Relaxed) > 0, "storm shrinkers were called");
    assert_eq!(drops.load(Ordering::Relaxed), made, "every unregistered shrinker was dropped once");
    assert!(sentinel_calls.load(Ordering::SeqCst) >= sentinel_before_stop);
    assert!(sentinel_calls.load(Ordering::SeqCst) > 0);
    let names = registered_names();
    assert!(names.iter().all(|n| !n.starts_with("storm-")), "a storm shrinker outlived its handle");
    assert!(names.contains("sentinel"));
    drop(sentinel);
    assert!(!registered_names().contains("sentinel"));
}
