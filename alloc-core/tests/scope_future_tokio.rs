//! Scopes across `.await`: a task wrapped in `.nofs()` runs every poll in
//! a `NOFS` scope on whichever worker of a multi-threaded tokio runtime
//! polls it, so reclaim started inside it never calls a shrinker that
//! needs the filesystem, while the workers' own flags stay clean for the
//! other tasks between polls. The task is made to move between threads
//! (it is woken from outside the runtime, and any free worker takes it).
//! The FS shrinker may still run in a background reclaimer (paying what
//! the NOFS passes owed it): that is the design, and is told apart.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as Cx, Poll};
use std::thread::{self, ThreadId};
use std::time::Duration;

use shrinkalloc::reclaim::{
    current_scope, is_background_reclaimer, reclaim, register, CountResult, Level, Needs, ScanResult, ScopeExt,
    ScopeFlags, ShrinkControl, Shrinker, ShrinkerOptions,
};

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

/// A shrinker that records the calling thread's mask on every call, unless
/// the caller is a library background reclaimer.
struct Recorder {
    masks: Arc<Mutex<Vec<ScopeFlags>>>,
}

impl Recorder {
    fn record(&self) {
        if !is_background_reclaimer() {
            self.masks.lock().unwrap().push(current_scope());
        }
    }
}

impl Shrinker for Recorder {
    fn count(&self, _: &ShrinkControl) -> CountResult {
        self.record();
        CountResult::Count(1000)
    }

    fn scan(&self, sc: &ShrinkControl) -> ScanResult {
        self.record();
        ScanResult::Freed(sc.nr_to_scan())
    }
}

/// Pending once: wakes its task from a plain thread a little later, so
/// the runtime's injection queue hands it to whichever worker is free.
struct WokenFromOutside(bool);

impl Future for WokenFromOutside {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Cx<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        let waker = cx.waker().clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(1));
            waker.wake();
        });
        Poll::Pending
    }
}

#[test]
fn nofs_task_never_calls_an_fs_shrinker_on_any_thread_it_moves_to() {
    let fs_masks = Arc::new(Mutex::new(Vec::new()));
    let any_masks = Arc::new(Mutex::new(Vec::new()));
    let _fs = register(Recorder { masks: fs_masks.clone() }, ShrinkerOptions::new("fs-recorder").needs(Needs::FS));
    let _any = register(Recorder { masks: any_masks.clone() }, ShrinkerOptions::new("any-recorder"));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let leaks = Arc::new(AtomicUsize::new(0));
    // Other tasks on the same workers: between the NOFS task's polls a
    // worker's flags must be its own.
    let watchers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, leaks) = (stop.clone(), leaks.clone());
            rt.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if current_scope() != ScopeFlags::NONE {
                        leaks.fetch_add(1, Ordering::Relaxed);
                    }
                    WokenFromOutside(false).await;
                }
            })
        })
        .collect();
    let task = rt.spawn(
        async {
            let mut threads = HashSet::<ThreadId>::new();
            let mut rounds = 0;
            while threads.len() < 3 && rounds < 2000 {
                assert_eq!(current_scope(), ScopeFlags::NOFS, "a poll ran outside the scope");
                threads.insert(thread::current().id());
                reclaim(usize::MAX, Level::Critical);
                WokenFromOutside(false).await;
                rounds += 1;
            }
            (threads.len(), rounds)
        }
        .nofs(),
    );
    let (threads, rounds) = rt.block_on(task).unwrap();
    stop.store(true, Ordering::Relaxed);
    for w in watchers {
        rt.block_on(w).unwrap();
    }
    assert!(threads >= 2, "the task never moved between threads in {rounds} rounds");
    let any = std::mem::take(&mut *any_masks.lock().unwrap());
    assert!(any.len() >= rounds, "the unrestricted shrinker was called from the task");
    assert!(any.iter().all(|m| *m == ScopeFlags::NOFS), "reclaim in the task ran outside NOFS: {any:?}");
    let fs = std::mem::take(&mut *fs_masks.lock().unwrap());
    assert!(fs.is_empty(), "an FS shrinker ran in a NOFS task: {fs:?}");
    assert_eq!(leaks.load(Ordering::Relaxed), 0, "the NOFS scope leaked onto another task");
    // Outside the adapter the same reclaim calls the FS shrinker.
    rt.block_on(async { reclaim(usize::MAX, Level::Critical) });
    assert!(!fs_masks.lock().unwrap().is_empty());
}

/// The README's example, as it is there.
#[test]
fn readme_example_keeps_nofs_across_awaits() {
    use shrinkalloc::reclaim::{with_nofs, Context};

    async fn append(journal: Arc<tokio::sync::Mutex<Vec<u8>>>) {
        let mut j = journal.lock().await; // a filesystem lock, held across the awaits below
        j.extend_from_slice(b"record"); // may reclaim, never through an FS shrinker
        tokio::task::yield_now().await; // may resume on another worker: still NOFS
        assert_eq!(current_scope(), ScopeFlags::NOFS);
    }

    let rt = tokio::runtime::Builder::new_multi_thread().build().unwrap();
    let journal = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    rt.block_on(rt.spawn(append(journal.clone()).nofs())).unwrap();
    // Or carry the context of the code that starts the task:
    let ctx = with_nofs(Context::capture);
    rt.block_on(rt.spawn(append(journal.clone()).with_context(ctx))).unwrap();
    assert_eq!(journal.try_lock().unwrap().len(), 12);
}
