//! The deadlock a mixed queue causes, and the class-separated queue that
//! avoids it (issue 6, LKML "mm: add PF_MEMALLOC_NOFS", 2016).
//!
//! Thread T holds a filesystem lock L. Item 1, submitted from a normal
//! context, reclaims through an `FS` shrinker that needs L. Item 2 is
//! submitted by T from a `NOFS` scope, and T waits for it before releasing L.
//! Through a single shared FIFO worker (the test-only mode), item 2 waits
//! behind item 1, item 1 waits on L, T waits on item 2: a deadlock, seen as
//! T's timeout. Through the real queue item 2 runs on a `NOFS` worker while
//! item 1 waits, T releases L, and item 1 completes.
//!
//! Nothing is left stuck: after its timeout T gives L up, which frees item 1
//! and then item 2; the shrinker also gives up waiting on L after a long but
//! finite time, and a watchdog fails the binary if anything still hangs.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use shrinkalloc::reclaim::{
    current_scope, reclaim, register, with_nofs, ContextClass, CountResult, Level, Needs, ScanResult, ScopeFlags,
    ShrinkControl, Shrinker, ShrinkerOptions, WorkQueue,
};

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

/// The two scenarios share L and the shrinker's flags: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// The filesystem lock L (a flag, so that the shrinker can give up on it).
static L: AtomicBool = AtomicBool::new(false);
/// Set by the shrinker when a scan had to wait for L.
static WAITED_ON_L: AtomicBool = AtomicBool::new(false);
/// Scans from item 1's thread that got L.
static ITEM1_SCANS: AtomicU64 = AtomicU64::new(0);

/// How long T waits for item 2 before declaring a deadlock.
const PATIENCE: Duration = Duration::from_secs(2);
/// How long the shrinker waits for L before giving up for good.
const SHRINKER_GIVES_UP: Duration = Duration::from_secs(30);

thread_local! {
    static IN_ITEM1: Cell<bool> = const { Cell::new(false) };
}

/// Fails the binary if a scenario hangs despite every escape hatch.
fn watchdog() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        thread::spawn(|| {
            thread::sleep(Duration::from_secs(90));
            eprintln!("watchdog: workqueue_deadlock still running after 90 s; failing");
            std::process::exit(101);
        });
    });
}

/// An `FS` shrinker over a cache protected by L: every scan takes L.
struct NeedsL;

impl Shrinker for NeedsL {
    fn count(&self, _: &ShrinkControl) -> CountResult {
        CountResult::Count(1 << 10)
    }

    fn scan(&self, sc: &ShrinkControl) -> ScanResult {
        let deadline = Instant::now() + SHRINKER_GIVES_UP;
        loop {
            // Acquire/Release: L orders the cache it protects, like a mutex.
            if L.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                L.store(false, Ordering::Release);
                if IN_ITEM1.with(Cell::get) {
                    ITEM1_SCANS.fetch_add(1, Ordering::Relaxed);
                }
                return ScanResult::Freed(sc.nr_to_scan());
            }
            WAITED_ON_L.store(true, Ordering::Relaxed);
            if Instant::now() > deadline {
                return ScanResult::Stop;
            }
            thread::sleep(Duration::from_millis(1));
        }
    }
}

#[derive(Debug)]
struct Outcome {
    /// Item 2 ran while T still held L, within `PATIENCE`.
    item2_ran_under_l: bool,
    /// Item 1 was already waiting on L when T gave up or got item 2.
    item1_waited_on_l: bool,
    item1_scope: ScopeFlags,
    item2_scope: ScopeFlags,
    same_worker: bool,
    elapsed: Duration,
}

/// Runs the scenario through `wq` and returns once everything has finished.
fn scenario(wq: Arc<WorkQueue>) -> Outcome {
    watchdog();
    WAITED_ON_L.store(false, Ordering::Relaxed);
    ITEM1_SCANS.store(0, Ordering::Relaxed);
    let handle = register(NeedsL, ShrinkerOptions::new("needs-L").needs(Needs::FS).batch(1 << 10));
    let started = Instant::now();
    let (locked_tx, locked_rx) = mpsc::channel();
    let (item1_tx, item1_rx) = mpsc::channel::<(ScopeFlags, ThreadId)>();
    let (item2_tx, item2_rx) = mpsc::channel::<(ScopeFlags, ThreadId)>();

    let t_wq = wq.clone();
    let t = thread::spawn(move || {
        // T takes L (a plain lock holder; its NOFS scope starts with the
        // work it does under L and hands to the queue).
        assert!(L.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok());
        locked_tx.send(()).unwrap();
        // Wait until item 1 is blocked on L, so that item 2 is behind it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !WAITED_ON_L.load(Ordering::Relaxed) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        let item1_waited = WAITED_ON_L.load(Ordering::Relaxed);
        with_nofs(|| {
            t_wq.submit(move || {
                let _ = item2_tx.send((current_scope(), thread::current().id()));
            })
        })
        .unwrap();
        let got = item2_rx.recv_timeout(PATIENCE);
        L.store(false, Ordering::Release);
        // After a timeout item 2 still runs, once item 1 got L.
        let item2 = got.or_else(|_| item2_rx.recv_timeout(Duration::from_secs(60))).unwrap();
        (got.is_ok(), item1_waited, item2)
    });

    locked_rx.recv().unwrap();
    wq.submit(move || {
        IN_ITEM1.with(|i| i.set(true));
        reclaim(usize::MAX, Level::Critical);
        IN_ITEM1.with(|i| i.set(false));
        let _ = item1_tx.send((current_scope(), thread::current().id()));
    })
    .unwrap();
    let (item2_ran_under_l, item1_waited_on_l, (item2_scope, item2_thread)) = t.join().unwrap();
    let (item1_scope, item1_thread) = item1_rx.recv_timeout(Duration::from_secs(60)).unwrap();
    wq.flush();
    let elapsed = started.elapsed();
    assert!(ITEM1_SCANS.load(Ordering::Relaxed) > 0, "item 1 reclaimed through the FS shrinker once L was free");
    handle.unregister();
    Outcome {
        item2_ran_under_l,
        item1_waited_on_l,
        item1_scope,
        item2_scope,
        same_worker: item1_thread == item2_thread,
        elapsed,
    }
}

#[test]
fn single_shared_fifo_worker_deadlocks_on_the_fs_lock() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let wq = Arc::new(WorkQueue::single_fifo_for_tests("fifo-1"));
    let o = scenario(wq.clone());
    eprintln!("single FIFO worker: {o:?}\n{}", wq.stats());
    assert!(o.item1_waited_on_l, "item 1 reached the FS shrinker and blocked on L");
    assert!(!o.item2_ran_under_l, "item 2 ran behind a blocked item 1: the control cannot see the deadlock");
    assert!(o.elapsed >= PATIENCE, "the deadlock was broken only by T's timeout");
    assert!(o.same_worker, "one worker ran both items");
    assert_eq!((o.item1_scope, o.item2_scope), (ScopeFlags::NONE, ScopeFlags::NOFS), "each in its own context");
}

#[test]
fn class_separated_queue_completes_while_t_holds_the_fs_lock() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let wq = Arc::new(WorkQueue::new("classes", 1));
    let o = scenario(wq.clone());
    let stats = wq.stats();
    eprintln!("class-separated queue: {o:?}\n{stats}");
    assert!(o.item1_waited_on_l, "item 1 reached the FS shrinker and blocked on L");
    assert!(o.item2_ran_under_l, "item 2 waited behind item 1: the queue mixed the classes");
    assert!(o.elapsed < PATIENCE, "no timeout was needed: {:?}", o.elapsed);
    assert!(!o.same_worker, "a NOFS item never runs on the worker of a normal one");
    assert_eq!((o.item1_scope, o.item2_scope), (ScopeFlags::NONE, ScopeFlags::NOFS));
    assert_eq!(stats.class(ContextClass::Normal).run, 1);
    assert_eq!(stats.class(ContextClass::Nofs).run, 1);
}
