//! Thousands of items from many threads in mixed contexts: every item runs
//! exactly once, under the context it was submitted from, on a worker of its
//! class only, and in submission order within its class. Contexts are set
//! by scopes, by adopted contexts, and by nesting both.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use shrinkalloc::reclaim::{current_scope, nofs, noio, Context, ContextClass, ScopeFlags, WorkQueue};

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

const SUBMITTERS: usize = 8;
const PER_SUBMITTER: usize = 600;
const SCOPES: [ScopeFlags; 4] = [
    ScopeFlags::NONE,
    ScopeFlags::NOFS,
    ScopeFlags::NOIO,
    ScopeFlags::from_bits_truncate(ScopeFlags::NOFS.bits() | ScopeFlags::NOIO.bits()),
];

/// Fails the binary if a run hangs.
fn watchdog() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        thread::spawn(|| {
            thread::sleep(Duration::from_secs(120));
            eprintln!("watchdog: workqueue_mixed_contexts still running after 120 s; failing");
            std::process::exit(101);
        });
    });
}

/// A small deterministic PRNG (SplitMix64), seeded per submitter.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Default)]
struct Record {
    runs: Vec<AtomicU32>,
    wrong_scope: AtomicU64,
    /// Per class and submitter: 1 + the index of the last item run.
    last: [Vec<AtomicUsize>; 3],
    out_of_order: AtomicU64,
    /// The worker threads seen per class.
    threads: [Mutex<Vec<ThreadId>>; 3],
    expected: [AtomicU64; 3],
}

/// Enters `scope` by one of three routes, chosen by `how`, and runs `f`.
fn in_scope<R>(scope: ScopeFlags, how: u64, f: impl FnOnce() -> R) -> R {
    match how % 3 {
        0 => Context::from_scope(scope).with(f),
        1 => {
            let _fs = scope.contains(ScopeFlags::NOFS).then(nofs);
            let _io = scope.contains(ScopeFlags::NOIO).then(noio);
            f()
        }
        _ => {
            // Nested: the NOFS part by a scope, the rest by an adopted context.
            let _fs = scope.contains(ScopeFlags::NOFS).then(nofs);
            Context::from_scope(scope).with(f)
        }
    }
}

fn run(threads_per_class: usize, check_order: bool) -> Arc<Record> {
    watchdog();
    let total = SUBMITTERS * PER_SUBMITTER;
    let rec = Arc::new(Record {
        runs: (0..total).map(|_| AtomicU32::new(0)).collect(),
        last: core::array::from_fn(|_| (0..SUBMITTERS).map(|_| AtomicUsize::new(0)).collect()),
        ..Record::default()
    });
    let wq = Arc::new(WorkQueue::new("mixed", threads_per_class));
    let start = Arc::new(Barrier::new(SUBMITTERS));
    let started = Instant::now();
    let submitters: Vec<_> = (0..SUBMITTERS)
        .map(|t| {
            let (rec, wq, start) = (rec.clone(), wq.clone(), start.clone());
            thread::spawn(move || {
                let mut rng = 0x5EED ^ t as u64;
                start.wait();
                for i in 0..PER_SUBMITTER {
                    let r = next(&mut rng);
                    let scope = SCOPES[(r % 4) as usize];
                    let class = Context::from_scope(scope).class().index();
                    rec.expected[class].fetch_add(1, Ordering::Relaxed);
                    let item_rec = rec.clone();
                    in_scope(scope, r >> 8, || wq.submit(move || item(&item_rec, t, i, scope, class, check_order)))
                        .unwrap();
                    assert_eq!(current_scope(), ScopeFlags::NONE, "the submitter's scope was restored");
                }
            })
        })
        .collect();
    for s in submitters {
        s.join().unwrap();
    }
    wq.flush();
    eprintln!("{total} items, {threads_per_class} per class: {:?}\n{}", started.elapsed(), wq.stats());
    let stats = wq.stats();
    for class in ContextClass::ALL {
        let c = stats.class(class);
        let want = rec.expected[class.index()].load(Ordering::Relaxed);
        assert_eq!((c.submitted, c.run, c.queued, c.running), (want, want, 0, 0), "{class}: {c:?}");
        assert!(c.workers >= 1 && c.workers <= threads_per_class, "{class}: {c:?}");
    }
    wq.destroy();
    assert_eq!(wq.stats().total().workers, 0, "destroy joined every worker");
    rec
}

fn item(rec: &Record, t: usize, i: usize, scope: ScopeFlags, class: usize, check_order: bool) {
    rec.runs[t * PER_SUBMITTER + i].fetch_add(1, Ordering::Relaxed);
    if current_scope() != scope {
        rec.wrong_scope.fetch_add(1, Ordering::Relaxed);
    }
    let prev = rec.last[class][t].swap(i + 1, Ordering::Relaxed);
    if check_order && prev > i {
        rec.out_of_order.fetch_add(1, Ordering::Relaxed);
    }
    let me = thread::current().id();
    let mut seen = rec.threads[class].lock().unwrap();
    if !seen.contains(&me) {
        seen.push(me);
    }
}

fn check(rec: &Record, threads_per_class: usize) {
    let not_once: Vec<usize> = (0..rec.runs.len()).filter(|&k| rec.runs[k].load(Ordering::Relaxed) != 1).collect();
    assert!(not_once.is_empty(), "items not run exactly once: {} (first {:?})", not_once.len(), not_once.first());
    assert_eq!(rec.wrong_scope.load(Ordering::Relaxed), 0, "items ran outside their own context");
    let threads: Vec<Vec<ThreadId>> = rec.threads.iter().map(|m| m.lock().unwrap().clone()).collect();
    for (c, ts) in threads.iter().enumerate() {
        assert!(!ts.is_empty() && ts.len() <= threads_per_class, "class {c} ran on {} threads", ts.len());
        for other in threads.iter().skip(c + 1) {
            assert!(ts.iter().all(|t| !other.contains(t)), "a worker ran items of two classes");
        }
    }
}

#[test]
fn every_item_runs_once_in_its_own_context_fifo_within_its_class() {
    let rec = run(1, true);
    check(&rec, 1);
    assert_eq!(rec.out_of_order.load(Ordering::Relaxed), 0, "items of a class ran out of submission order");
}

#[test]
fn several_workers_per_class_still_run_each_item_once_in_its_context() {
    let rec = run(4, false);
    check(&rec, 4);
}
