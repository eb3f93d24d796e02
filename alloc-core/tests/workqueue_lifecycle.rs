//! A work queue's life: workers start lazily and per class, at most
//! `threads_per_class` of them; `flush` returns when everything submitted
//! before it has run; `destroy` drains, joins and from its start refuses
//! new items with an error (from other threads and from items alike), never
//! a crash; flush and destroy from inside an item do not wait on themselves;
//! a panicking item is counted and its worker goes on; statistics add up.

use core::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use shrinkalloc::reclaim::{
    current_scope, with_nofs, with_noio, ContextClass, ScopeFlags, SubmitError, WorkQueue, MAX_THREADS_PER_CLASS,
};

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

const LONG: Duration = Duration::from_secs(20);

/// Fails the binary if a test hangs.
fn watchdog() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        thread::spawn(|| {
            thread::sleep(Duration::from_secs(120));
            eprintln!("watchdog: workqueue_lifecycle still running after 120 s; failing");
            std::process::exit(101);
        });
    });
}

#[test]
fn workers_start_lazily_per_class_up_to_the_limit() {
    watchdog();
    let wq = WorkQueue::new("lazy", 3);
    assert_eq!(wq.stats().total().workers, 0, "no worker before the first item");
    let gate = Arc::new(Barrier::new(4));
    for _ in 0..3 {
        let g = gate.clone();
        wq.submit(move || {
            g.wait();
        })
        .unwrap();
    }
    for _ in 0..20 {
        wq.submit(|| {}).unwrap();
    }
    gate.wait(); // three items run at once: three workers
    wq.flush();
    let s = wq.stats();
    assert_eq!(s.class(ContextClass::Normal).workers, 3);
    assert_eq!(s.class(ContextClass::Nofs).workers + s.class(ContextClass::Noio).workers, 0);
    with_nofs(|| wq.submit(|| {})).unwrap();
    wq.flush();
    assert_eq!(wq.stats().class(ContextClass::Nofs).workers, 1, "one idle-less item starts one worker");
    assert_eq!(WorkQueue::new("big", usize::MAX).threads_per_class(), MAX_THREADS_PER_CLASS);
}

#[test]
fn flush_returns_after_every_earlier_item_of_every_class_has_run() {
    watchdog();
    let wq = WorkQueue::new("flush", 2);
    let done = Arc::new(AtomicU32::new(0));
    for i in 0..60 {
        let d = done.clone();
        let work = move || {
            thread::sleep(Duration::from_millis(1));
            d.fetch_add(1, Ordering::Relaxed);
        };
        match i % 3 {
            0 => wq.submit(work),
            1 => with_nofs(|| wq.submit(work)),
            _ => with_noio(|| wq.submit(work)),
        }
        .unwrap();
    }
    wq.flush();
    assert_eq!(done.load(Ordering::Relaxed), 60);
    wq.flush(); // nothing pending: returns at once
}

#[test]
fn flush_class_waits_for_that_class_only() {
    watchdog();
    let wq = WorkQueue::new("flush-class", 1);
    let release = Arc::new(AtomicBool::new(false));
    let r = release.clone();
    wq.submit(move || {
        let end = Instant::now() + LONG;
        while !r.load(Ordering::Relaxed) && Instant::now() < end {
            thread::sleep(Duration::from_millis(1));
        }
    })
    .unwrap();
    let nofs_done = Arc::new(AtomicBool::new(false));
    let d = nofs_done.clone();
    with_nofs(|| wq.submit(move || d.store(true, Ordering::Relaxed))).unwrap();
    wq.flush_class(ContextClass::Nofs);
    assert!(nofs_done.load(Ordering::Relaxed));
    assert_eq!(wq.stats().class(ContextClass::Normal).run, 0, "the blocked normal item is still running");
    release.store(true, Ordering::Relaxed);
    wq.flush();
}

#[test]
fn destroy_drains_joins_and_then_refuses() {
    watchdog();
    let wq = WorkQueue::new("drain", 2);
    let done = Arc::new(AtomicU32::new(0));
    for i in 0..200 {
        let d = done.clone();
        let work = move || {
            if i % 20 == 0 {
                thread::sleep(Duration::from_millis(2));
            }
            d.fetch_add(1, Ordering::Relaxed);
        };
        if i % 2 == 0 { wq.submit(work) } else { with_noio(|| wq.submit(work)) }.unwrap();
    }
    wq.destroy();
    assert_eq!(done.load(Ordering::Relaxed), 200, "destroy ran every accepted item");
    let s = wq.stats().total();
    assert_eq!((s.submitted, s.run, s.queued, s.workers), (200, 200, 0, 0));
    assert!(wq.is_closed());
    assert_eq!(wq.submit(|| panic!("must not run")), Err(SubmitError::Closed));
    assert_eq!(with_nofs(|| wq.submit(|| {})), Err(SubmitError::Closed));
    wq.destroy(); // idempotent
    wq.flush(); // and flushing a destroyed queue returns
}

#[test]
fn submitting_while_destroy_runs_fails_cleanly_and_accepted_items_run_once() {
    watchdog();
    let wq = Arc::new(WorkQueue::new("race", 2));
    let ran = Arc::new(AtomicU64::new(0));
    let go = Arc::new(Barrier::new(5));
    let submitters: Vec<_> = (0..4)
        .map(|t| {
            let (wq, ran, go) = (wq.clone(), ran.clone(), go.clone());
            thread::spawn(move || {
                go.wait();
                let mut accepted = 0u64;
                let end = Instant::now() + LONG;
                while Instant::now() < end {
                    let r = ran.clone();
                    let work = move || {
                        r.fetch_add(1, Ordering::Relaxed);
                    };
                    let res = if t % 2 == 0 { wq.submit(work) } else { with_nofs(|| wq.submit(work)) };
                    match res {
                        Ok(()) => accepted += 1,
                        Err(e) => {
                            assert_eq!(e, SubmitError::Closed);
                            return accepted;
                        }
                    }
                }
                panic!("destroy never closed the queue");
            })
        })
        .collect();
    go.wait();
    thread::sleep(Duration::from_millis(30));
    wq.destroy();
    let accepted: u64 = submitters.into_iter().map(|s| s.join().unwrap()).sum();
    assert!(accepted > 0);
    assert_eq!(ran.load(Ordering::Relaxed), accepted, "every accepted item ran once, none refused did");
    assert_eq!(wq.stats().total().run, accepted);
}

#[test]
fn an_item_submitting_after_destroy_began_gets_an_error() {
    watchdog();
    let wq = Arc::new(WorkQueue::new("self", 1));
    let (tx, rx) = mpsc::channel();
    let inner = wq.clone();
    wq.submit(move || {
        let end = Instant::now() + LONG;
        while !inner.is_closed() && Instant::now() < end {
            thread::sleep(Duration::from_millis(1));
        }
        tx.send(inner.submit(|| {})).unwrap();
    })
    .unwrap();
    wq.destroy();
    assert_eq!(rx.recv_timeout(LONG).unwrap(), Err(SubmitError::Closed));
}

#[test]
fn flush_and_destroy_from_inside_an_item_do_not_wait_on_themselves() {
    watchdog();
    let wq = Arc::new(WorkQueue::new("reentrant", 1));
    let (tx, rx) = mpsc::channel();
    let inner = wq.clone();
    wq.submit(move || {
        inner.flush();
        inner.flush_class(ContextClass::Normal);
        inner.destroy();
        tx.send(inner.is_closed()).unwrap();
    })
    .unwrap();
    assert!(rx.recv_timeout(LONG).expect("an item's flush or destroy waited on itself"));
    wq.destroy();
    assert_eq!(wq.stats().total().workers, 0);
}

#[test]
fn a_panicking_item_is_counted_and_its_worker_goes_on() {
    watchdog();
    let wq = WorkQueue::new("panics", 1);
    wq.submit(|| panic!("an item panics (expected in this test)")).unwrap();
    let (tx, rx) = mpsc::channel();
    wq.submit(move || tx.send(current_scope()).unwrap()).unwrap();
    assert_eq!(rx.recv_timeout(LONG).unwrap(), ScopeFlags::NONE, "the item after it ran, in its context");
    wq.flush();
    let s = *wq.stats().class(ContextClass::Normal);
    assert_eq!((s.run, s.panicked, s.workers), (2, 1, 1));
}

#[test]
fn max_wait_counts_time_spent_behind_a_slow_item() {
    watchdog();
    let wq = WorkQueue::new("wait", 1);
    wq.submit(|| thread::sleep(Duration::from_millis(60))).unwrap();
    wq.submit(|| {}).unwrap();
    wq.flush();
    let s = wq.stats();
    assert!(s.class(ContextClass::Normal).max_wait() >= Duration::from_millis(50), "{s}");
    assert_eq!(s.class(ContextClass::Nofs).max_wait_ns, 0);
}

static C_SCOPE: AtomicU32 = AtomicU32::new(u32::MAX);

unsafe extern "C" fn record_scope(arg: *mut c_void) {
    // SAFETY: the test passes a pointer to a static `AtomicU32`.
    let calls = unsafe { &*arg.cast::<AtomicU32>() };
    calls.fetch_add(1, Ordering::Relaxed);
    C_SCOPE.store(current_scope().bits(), Ordering::Relaxed);
}

#[test]
fn c_callbacks_run_once_in_the_submitters_context() {
    watchdog();
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let wq = WorkQueue::new("c-items", 1);
    let arg = &CALLS as *const AtomicU32 as *mut c_void;
    // SAFETY: the argument is a static atomic, valid on any thread forever.
    with_noio(|| unsafe { wq.submit_c(record_scope, arg) }).unwrap();
    wq.flush();
    assert_eq!(CALLS.load(Ordering::Relaxed), 1);
    assert_eq!(C_SCOPE.load(Ordering::Relaxed), ScopeFlags::NOIO.bits());
    assert_eq!(wq.stats().class(ContextClass::Noio).run, 1);
    wq.destroy();
    // SAFETY: as above; a refused item is never called.
    assert_eq!(unsafe { wq.submit_c(record_scope, arg) }, Err(SubmitError::Closed));
    assert_eq!(CALLS.load(Ordering::Relaxed), 1);
}

#[test]
fn dropping_a_queue_drains_it() {
    watchdog();
    let done = Arc::new(AtomicU32::new(0));
    {
        let wq = WorkQueue::new("dropped", 1);
        for _ in 0..10 {
            let d = done.clone();
            wq.submit(move || {
                thread::sleep(Duration::from_millis(1));
                d.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
        }
    }
    assert_eq!(done.load(Ordering::Relaxed), 10);
}

#[test]
fn a_fork_child_gets_an_error_not_a_hang() {
    watchdog();
    let wq = WorkQueue::new("forked", 1);
    wq.submit(|| {}).unwrap();
    wq.flush();
    // SAFETY: the child only uses the queue (which touches no lock in a
    // child) and the allocator (fork-safe), then leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ok = wq.submit(|| {}) == Err(SubmitError::Forked);
        wq.flush();
        wq.destroy();
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is a valid out-pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child status {status:#x}");
    wq.submit(|| {}).unwrap();
    wq.flush();
    assert_eq!(wq.stats().total().run, 2, "the parent's queue is untouched");
}
