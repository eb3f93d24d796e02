//! Work queues that keep the submitter's context, with workers per class.
//!
//! A single queue that mixes items from normal and from `NOFS` contexts lets
//! a worker that reclaims through the filesystem for one item block on a
//! filesystem lock held by the submitter of the next: the submitter waits on
//! the item, the item waits behind the worker, the worker waits on the lock.
//! So a [`WorkQueue`] keeps one FIFO and one set of workers per
//! [`ContextClass`] (normal, `NOFS`, `NOIO`): an item that may reclaim
//! through the filesystem never runs ahead of, or on the same worker as, an
//! item submitted from a `NOFS` scope.
//!
//! Invariant: every accepted item runs exactly once, under the [`Context`]
//! captured when it was submitted, on a worker of that context's class,
//! after every earlier item of its class has started (FIFO per class).
//! A class's workers run under the class's own scope between items, start
//! lazily (up to `threads_per_class`, when an item finds none idle) and exit
//! only when the queue is destroyed and their class is drained. No lock here
//! is held while allocating, starting a thread or running an item: a node is
//! allocated before its class lock is taken, threads are started after it is
//! released, so a shrinker may submit to a queue from inside reclaim.

use core::ffi::c_void;
use core::fmt;
use std::cell::Cell;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::context::Context;
use crate::reclaim::with_reserve;
use crate::reclaim::ContextClass;

mod fifo;
mod stats;
mod worker;

use fifo::{new_node, Fifo, Item, Work};
pub use stats::{ClassStats, WorkQueueStats};
use worker::start_worker;

/// The most workers a queue starts per class; larger requests are clamped.
pub const MAX_THREADS_PER_CLASS: usize = 256;

/// How often `flush` and `destroy` retry starting a worker for items that
/// none could be started for (the OS refused a thread).
const RETRY: Duration = Duration::from_millis(100);

thread_local! {
    /// `(queue, class)` of the item the thread is running as a worker, or
    /// `(0, Normal)`: lets `flush` and `destroy` called from an item avoid
    /// waiting on themselves.
    static CURRENT: Cell<(usize, ContextClass)> = const { Cell::new((0, ContextClass::Normal)) };
}

/// One class's queue, workers and counters, under the class lock.
///
/// Counting identity: `submitted == run + queue.len + running.len`, and
/// `workers <= spawned <= threads_per_class`.
struct State {
    queue: Fifo,
    next_seq: u64,
    /// Sequence numbers of the items running now (capacity reserved).
    running: Vec<u64>,
    /// Workers started or being started, not counting failed starts.
    spawned: usize,
    /// Starts in flight: `destroy` waits for their handles.
    starting: usize,
    /// Workers alive, and how many of them wait for an item.
    workers: usize,
    idle: usize,
    closing: bool,
    /// Join handles of the workers (capacity reserved).
    handles: Vec<JoinHandle<()>>,
    submitted: u64,
    run: u64,
    panicked: u64,
    max_wait_ns: u64,
}

impl State {
    fn new(threads: usize) -> Self {
        State {
            queue: Fifo::new(),
            next_seq: 0,
            running: Vec::with_capacity(threads),
            spawned: 0,
            starting: 0,
            workers: 0,
            idle: 0,
            closing: false,
            handles: Vec::with_capacity(threads),
            submitted: 0,
            run: 0,
            panicked: 0,
            max_wait_ns: 0,
        }
    }

    /// The smallest sequence number not yet run to completion.
    fn lowest_unfinished(&self) -> u64 {
        let running = self.running.iter().copied().min().unwrap_or(u64::MAX);
        self.queue.front_seq().unwrap_or(u64::MAX).min(running).min(self.next_seq)
    }

    /// Whether items are queued that no worker will ever take: every start
    /// failed. Claims a start if so.
    fn claim_rescue(&mut self) -> bool {
        let stranded = self.queue.len > 0 && self.spawned == 0;
        if stranded {
            self.spawned += 1;
            self.starting += 1;
        }
        stranded
    }
}

struct Class {
    state: Mutex<State>,
    /// Workers wait here for items (or for `closing`).
    more: Condvar,
    /// Flushers and `destroy` wait here for completions, exits and starts.
    progress: Condvar,
}

impl Class {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Items run outside the lock, so a poisoned lock means a bug here;
        // the state is still consistent between statements.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Inner {
    name: Box<str>,
    threads: usize,
    /// Test-only: one shared FIFO worker for every context (class 0).
    single: bool,
    /// The process that owns the workers; a `fork()` child has none.
    pid: u32,
    classes: [Class; ContextClass::COUNT],
}

impl Inner {
    fn lane(&self, ctx: Context) -> ContextClass {
        if self.single {
            ContextClass::Normal
        } else {
            ctx.class()
        }
    }

    fn id(&self) -> usize {
        self as *const Inner as usize
    }

    fn owned_here(&self) -> bool {
        self.pid == std::process::id()
    }
}

/// Why an item was not accepted; the item is dropped unrun.
///
/// ```
/// use shrinkalloc::reclaim::{SubmitError, WorkQueue};
/// let wq = WorkQueue::new("gone", 1);
/// wq.destroy();
/// assert_eq!(wq.submit(|| {}), Err(SubmitError::Closed));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// `destroy` has begun (or the queue was dropped).
    Closed,
    /// No memory for the queue's node (a hard limit refused it).
    NoMemory,
    /// The class had no worker and the OS refused to start one.
    NoThread,
    /// Called in a `fork()` child: the queue's workers stayed in the parent.
    Forked,
}

impl SubmitError {
    /// The `errno` the C API reports: `ESHUTDOWN` (closed, or a fork
    /// child), `ENOMEM`, `EAGAIN` (no thread).
    ///
    /// ```
    /// use shrinkalloc::reclaim::SubmitError;
    /// assert_eq!(SubmitError::NoMemory.errno(), libc::ENOMEM);
    /// ```
    pub const fn errno(self) -> i32 {
        match self {
            SubmitError::Closed | SubmitError::Forked => libc::ESHUTDOWN,
            SubmitError::NoMemory => libc::ENOMEM,
            SubmitError::NoThread => libc::EAGAIN,
        }
    }
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SubmitError::Closed => "work queue is being destroyed",
            SubmitError::NoMemory => "no memory for the work item",
            SubmitError::NoThread => "no worker thread could be started",
            SubmitError::Forked => "work queue belongs to the parent process",
        })
    }
}

impl std::error::Error for SubmitError {}

/// A work queue whose items run in the context they were submitted from,
/// on workers kept apart per context class (see the module documentation).
/// Dropping it destroys it: drains, then joins the workers. Its workers
/// belong to the process that created it: in a `fork()` child, `submit`
/// fails with [`SubmitError::Forked`] and `flush` and `destroy` return at once.
///
/// ```
/// use std::sync::mpsc;
/// use shrinkalloc::reclaim::{current_scope, with_nofs, ScopeFlags, WorkQueue};
///
/// let wq = WorkQueue::new("writeback", 2);
/// let (tx, rx) = mpsc::channel();
/// with_nofs(|| wq.submit(move || tx.send(current_scope()).unwrap())).unwrap();
/// assert_eq!(rx.recv().unwrap(), ScopeFlags::NOFS); // ran on a NOFS worker
/// ```
pub struct WorkQueue {
    inner: Arc<Inner>,
}

impl WorkQueue {
    /// A queue named `name` (its workers' thread names start with it) that
    /// starts up to `threads_per_class` workers per class, lazily: none
    /// before an item of the class is submitted. 0 means 1; more than
    /// [`MAX_THREADS_PER_CLASS`] means that many. Works at the hard limit
    /// (its allocations may use the reserve).
    ///
    /// ```
    /// let wq = shrinkalloc::reclaim::WorkQueue::new("io", 4);
    /// assert_eq!((wq.name(), wq.threads_per_class()), ("io", 4));
    /// assert_eq!(wq.stats().total().workers, 0);
    /// ```
    pub fn new(name: &str, threads_per_class: usize) -> WorkQueue {
        // A few hundred bytes: from the reserve if need be, so that a queue
        // can be made at the hard limit.
        with_reserve(|| Self::build(name, threads_per_class.clamp(1, MAX_THREADS_PER_CLASS), false))
    }

    /// Test-only: one worker and one FIFO shared by every context, the
    /// design this type exists to avoid (items still run in their own
    /// context). Statistics count everything under the normal class.
    ///
    /// ```
    /// let wq = shrinkalloc::reclaim::WorkQueue::single_fifo_for_tests("one");
    /// assert_eq!(wq.threads_per_class(), 1);
    /// ```
    #[doc(hidden)]
    pub fn single_fifo_for_tests(name: &str) -> WorkQueue {
        Self::build(name, 1, true)
    }

    fn build(name: &str, threads: usize, single: bool) -> WorkQueue {
        let class = || Class { state: Mutex::new(State::new(threads)), more: Condvar::new(), progress: Condvar::new() };
        let inner = Inner {
            name: name.replace('\0', "?").into_boxed_str(),
            threads,
            single,
            pid: std::process::id(),
            classes: [class(), class(), class()],
        };
        WorkQueue { inner: Arc::new(inner) }
    }

    /// The queue's name.
    ///
    /// ```
    /// assert_eq!(shrinkalloc::reclaim::WorkQueue::new("meta", 1).name(), "meta");
    /// ```
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The most workers the queue starts per class.
    ///
    /// ```
    /// assert_eq!(shrinkalloc::reclaim::WorkQueue::new("q", 0).threads_per_class(), 1);
    /// ```
    pub fn threads_per_class(&self) -> usize {
        self.inner.threads
    }

    /// Queues `f` to run once, under the caller's context, on a worker of
    /// that context's class, after the class's earlier items have started.
    /// Starts a worker if none of the class is idle and fewer than
    /// `threads_per_class` exist. Never blocks on other items; allocates one
    /// node (and boxes `f`).
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    /// let wq = shrinkalloc::reclaim::WorkQueue::new("count", 2);
    /// let n = Arc::new(AtomicUsize::new(0));
    /// for _ in 0..10 {
    ///     let n = n.clone();
    ///     wq.submit(move || { n.fetch_add(1, Ordering::Relaxed); }).unwrap();
    /// }
    /// wq.flush();
    /// assert_eq!(n.load(Ordering::Relaxed), 10);
    /// ```
    pub fn submit(&self, f: impl FnOnce() + Send + 'static) -> Result<(), SubmitError> {
        self.submit_boxed(Box::new(f))
    }

    /// [`WorkQueue::submit`] for an already boxed closure.
    ///
    /// ```
    /// let wq = shrinkalloc::reclaim::WorkQueue::new("boxed", 1);
    /// let f: Box<dyn FnOnce() + Send> = Box::new(|| println!("ran"));
    /// wq.submit_boxed(f).unwrap();
    /// ```
    pub fn submit_boxed(&self, f: Box<dyn FnOnce() + Send>) -> Result<(), SubmitError> {
        self.submit_work(Work::Boxed(f))
    }

    /// [`WorkQueue::submit`] for a C callback: `f(arg)` runs once on a worker.
    /// The only allocation is the node, so under a hard limit this returns
    /// `NoMemory` rather than aborting.
    ///
    /// # Safety
    ///
    /// Calling `f(arg)` once, on another thread, at any time before the
    /// queue's `destroy` returns, must be sound: `arg` must stay valid until
    /// then and be safe to use from that thread. If this returns `Err`, `f`
    /// is not called.
    ///
    /// ```
    /// use core::ffi::c_void;
    /// use std::sync::atomic::{AtomicU32, Ordering};
    ///
    /// unsafe extern "C" fn bump(arg: *mut c_void) {
    ///     // SAFETY: `arg` is the static counter below.
    ///     unsafe { &*arg.cast::<AtomicU32>() }.fetch_add(1, Ordering::Relaxed);
    /// }
    /// static N: AtomicU32 = AtomicU32::new(0);
    /// let wq = shrinkalloc::reclaim::WorkQueue::new("c", 1);
    /// // SAFETY: the argument is a static atomic, valid on any thread forever.
    /// unsafe { wq.submit_c(bump, &N as *const AtomicU32 as *mut c_void) }.unwrap();
    /// wq.flush();
    /// assert_eq!(N.load(Ordering::Relaxed), 1);
    /// ```
    pub unsafe fn submit_c(&self, f: unsafe extern "C" fn(*mut c_void), arg: *mut c_void) -> Result<(), SubmitError> {
        self.submit_work(Work::C { f, arg })
    }

    fn submit_work(&self, work: Work) -> Result<(), SubmitError> {
        let inner = &*self.inner;
        if !inner.owned_here() {
            return Err(SubmitError::Forked);
        }
        let ctx = Context::capture();
        let lane = inner.lane(ctx);
        let class = &inner.classes[lane.index()];
        let mut node = new_node(Item { work, ctx, seq: 0, queued_at: Instant::now() })?;
        let mut st = class.lock();
        if st.closing {
            drop(st);
            return Err(SubmitError::Closed);
        }
        let seq = st.next_seq;
        node.item.seq = seq;
        st.next_seq += 1;
        st.submitted += 1;
        st.queue.push(node);
        let start = st.idle == 0 && st.spawned < inner.threads;
        if start {
            st.spawned += 1;
            st.starting += 1;
        }
        drop(st);
        class.more.notify_one();
        if start && !start_worker(&self.inner, lane) {
            return self.unqueue_if_stranded(lane, seq);
        }
        Ok(())
    }

    /// After a failed start: if the class has no worker at all, takes item
    /// `seq` back and fails; otherwise an existing worker will run it.
    fn unqueue_if_stranded(&self, lane: ContextClass, seq: u64) -> Result<(), SubmitError> {
        let mut st = self.inner.classes[lane.index()].lock();
        if st.spawned > 0 {
            return Ok(());
        }
        let Some(node) = st.queue.remove(seq) else { return Ok(()) };
        st.submitted -= 1;
        drop(st);
        drop(node);
        Err(SubmitError::NoThread)
    }

    /// Returns when every item submitted before the call has run (whatever
    /// its class). Like the kernel's `flush_workqueue`, it must not be called
    /// while holding a lock that such an item may need. Called from an item
    /// of this queue, it does not wait for that item's own class (whose
    /// earlier items may be waiting for it to return).
    ///
    /// ```
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::sync::Arc;
    /// let wq = shrinkalloc::reclaim::WorkQueue::new("flush", 1);
    /// let done = Arc::new(AtomicBool::new(false));
    /// let d = done.clone();
    /// wq.submit(move || d.store(true, Ordering::Relaxed)).unwrap();
    /// wq.flush();
    /// assert!(done.load(Ordering::Relaxed));
    /// ```
    pub fn flush(&self) {
        if !self.inner.owned_here() {
            return;
        }
        let targets = ContextClass::ALL.map(|lane| (lane, self.inner.classes[lane.index()].lock().next_seq));
        for (lane, target) in targets {
            self.wait_class(lane, target);
        }
    }

    /// Returns when every item of `class` submitted before the call has
    /// run. A thread in a `NOFS` scope that holds a filesystem lock may
    /// flush its own class (and more restricted ones) without waiting on
    /// items that may reclaim through the filesystem.
    ///
    /// ```
    /// use shrinkalloc::reclaim::{with_nofs, ContextClass, WorkQueue};
    /// let wq = WorkQueue::new("fs-meta", 1);
    /// with_nofs(|| wq.submit(|| {})).unwrap();
    /// wq.flush_class(ContextClass::Nofs);
    /// assert_eq!(wq.stats().class(ContextClass::Nofs).run, 1);
    /// ```
    pub fn flush_class(&self, class: ContextClass) {
        if !self.inner.owned_here() {
            return;
        }
        let lane = if self.inner.single { ContextClass::Normal } else { class };
        let target = self.inner.classes[lane.index()].lock().next_seq;
        self.wait_class(lane, target);
    }

    /// Waits until every item of `lane` numbered below `target` has run.
    fn wait_class(&self, lane: ContextClass, target: u64) {
        let inner = &*self.inner;
        if !inner.owned_here() || CURRENT.try_with(Cell::get).ok() == Some((inner.id(), lane)) {
            return;
        }
        drop(self.wait_lane(lane, |st| st.lowest_unfinished() >= target));
    }

    /// Waits on `lane` until `done` holds, starting a worker whenever the
    /// lane has items and none to run them; returns with the lane locked.
    fn wait_lane(&self, lane: ContextClass, done: impl Fn(&State) -> bool) -> MutexGuard<'_, State> {
        let class = &self.inner.classes[lane.index()];
        let mut st = class.lock();
        while !done(&st) {
            if st.claim_rescue() {
                drop(st);
                start_worker(&self.inner, lane);
                st = class.lock();
                continue;
            }
            st = class.progress.wait_timeout(st, RETRY).unwrap_or_else(PoisonError::into_inner).0;
        }
        st
    }

    /// Begins the queue's end: from now on `submit` fails with
    /// [`SubmitError::Closed`]; then waits until every accepted item has run
    /// and joins the workers. Idempotent; also what dropping the queue does.
    /// Called from one of the queue's own items, it only begins the end (a
    /// worker cannot join itself): the workers drain and exit on their own.
    ///
    /// ```
    /// use shrinkalloc::reclaim::WorkQueue;
    /// let wq = WorkQueue::new("end", 1);
    /// wq.submit(|| std::thread::sleep(std::time::Duration::from_millis(10))).unwrap();
    /// wq.destroy();
    /// assert_eq!(wq.stats().total().run, 1);
    /// assert!(wq.is_closed());
    /// ```
    pub fn destroy(&self) {
        let inner = &*self.inner;
        if !inner.owned_here() {
            // A fork child: the workers and perhaps a held lock are the parent's.
            return;
        }
        for class in &inner.classes {
            class.lock().closing = true;
            class.more.notify_all();
        }
        if CURRENT.try_with(Cell::get).ok().is_some_and(|(id, _)| id == inner.id()) {
            return;
        }
        for lane in ContextClass::ALL {
            self.drain_and_join(lane);
        }
    }

    fn drain_and_join(&self, lane: ContextClass) {
        let class = &self.inner.classes[lane.index()];
        let mut st = self.wait_lane(lane, |st| st.queue.len == 0 && st.workers == 0 && st.starting == 0);
        while let Some(h) = st.handles.pop() {
            drop(st);
            // A worker catches item panics: its thread ends normally.
            let _ = h.join();
            st = class.lock();
        }
    }

    /// Whether `destroy` has begun: `submit` now fails.
    ///
    /// ```
    /// let wq = shrinkalloc::reclaim::WorkQueue::new("q", 1);
    /// assert!(!wq.is_closed());
    /// wq.destroy();
    /// assert!(wq.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.inner.classes[0].lock().closing
    }

    /// The queue's figures per class.
    ///
    /// ```
    /// use shrinkalloc::reclaim::{with_noio, ContextClass, WorkQueue};
    /// let wq = WorkQueue::new("stats", 1);
    /// with_noio(|| wq.submit(|| {})).unwrap();
    /// wq.flush();
    /// let s = wq.stats();
    /// assert_eq!(s.class(ContextClass::Noio).run, 1);
    /// assert_eq!(s.class(ContextClass::Normal).workers, 0, "workers start lazily, per class");
    /// ```
    pub fn stats(&self) -> WorkQueueStats {
        let classes = ContextClass::ALL.map(|lane| {
            let st = self.inner.classes[lane.index()].lock();
            ClassStats {
                submitted: st.submitted,
                run: st.run,
                queued: st.queue.len,
                running: st.running.len(),
                workers: st.workers,
                panicked: st.panicked,
                max_wait_ns: st.max_wait_ns,
            }
        });
        WorkQueueStats { classes }
    }
}

impl Drop for WorkQueue {
    fn drop(&mut self) {
        self.destroy();
    }
}

impl fmt::Debug for WorkQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkQueue").field("name", &self.inner.name).field("threads", &self.inner.threads).finish()
    }
}
