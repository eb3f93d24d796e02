//! Reclaim lockdep: finds the missing `NOFS` scope before it deadlocks.
//!
//! A thread that holds a lock some shrinker takes, and allocates without
//! the scope that keeps reclaim away from that shrinker, deadlocks on the
//! day memory runs short: its allocation reclaims, reclaim calls the
//! shrinker, the shrinker waits for the lock the thread holds. The kernel
//! finds this with lockdep's `fs_reclaim` annotation; this is the same for
//! a userspace program, opt-in (`SHRINKALLOC_LOCKDEP=1`, `=abort`, or
//! [`enable`]).
//!
//! *Learning.* While a shrinker runs (count or scan, from any reclaimer,
//! `reclaim::reclaim()` and `sa_reclaim()` included) the locks it acquires
//! are recorded against its needs (`table.rs`), with the stack where it
//! took each. Locks are seen through their acquisitions: the annotated
//! [`crate::sync::Mutex`] and [`crate::sync::RwLock`], the [`held`] guard
//! for any other lock, [`acquired`]/[`released`] (the C `sa_lockdep_*`
//! calls), and in C programs the pthread interposer library
//! (`libshrinkalloc_lockdep.so`) that calls those for every
//! `pthread_mutex_*` and `pthread_rwlock_*` lock and unlock.
//!
//! *Checking.* A thread that acquires a lock already learned keeps it on a
//! small per-thread stack and has its heap *watched* (`Heap::watched`):
//! every class of its heap misses the allocation fast path, so every
//! allocation it makes while it holds such a lock reaches the slow path,
//! which calls `check` through the core's seam (`commit::Watcher`).
//! There, for every held lock and every shrinker needs that taught it, an
//! allocation whose scope would still let reclaim call such a shrinker is
//! reported (`report.rs`), once per lock and call site, and counted in the
//! statistics (`lockdep_reports`). The first allocation after the last
//! release unwatches the heap. The allocation fast path and every thread
//! that holds no learned lock pay nothing, checker on or off; a lock
//! acquisition pays one atomic load with the checker off, and with it on a
//! table lookup.
//!
//! Invariant: nothing here allocates through the allocator while a lock of
//! the allocator is held or from the check itself: the tables are static
//! arrays under spin locks, the per-thread state is a const-initialised,
//! destructor-free thread-local, and the stacks are taken with glibc's
//! `backtrace()` into fixed arrays. A thread running a shrinker (or reclaim)
//! is never checked: its allocations never start reclaim. Nor is the
//! checker's own work (`in_check`), which may allocate once, when glibc's
//! `backtrace()` first loads its unwinder.
//!
//! What it cannot see: a lock first learned while another thread already
//! holds it (that thread is checked from its next acquisition on), more
//! than 32 learned locks held at once by one thread (the rest are not
//! tracked), and lock orders between threads (it is not a general lock
//! checker: only the reclaim edge is).

mod report;
mod symbols;
mod table;

use core::cell::Cell;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use crate::heap::{self, empty_heap};
use crate::options::{self, Var};
use crate::reclaim::{current_scope, is_reclaiming, Needs};
use table::{FRAMES, NEEDS};

const UNREAD: u8 = 0;
const OFF: u8 = 1;
const ON: u8 = 2;
const ABORT: u8 = 3;

/// `UNREAD` until the variable is read (or [`enable`] is called), then
/// `OFF`, `ON` or `ABORT`. Only ever raised.
static MODE: AtomicU8 = AtomicU8::new(UNREAD);

/// Reports printed (the statistics' `lockdep_reports`).
static REPORTS: AtomicU64 = AtomicU64::new(0);

static WATCHER: crate::commit::Watcher = crate::commit::Watcher { check };

/// Learned locks one thread can hold at once and still be checked for.
const MAX_HELD: usize = 32;

/// The shrinker the thread is running: its name and needs.
#[derive(Clone, Copy)]
struct Running {
    name: *const u8,
    len: usize,
    needs: Needs,
}

/// One thread's view: the learned locks it holds, the shrinker it runs.
struct ThreadState {
    held: [Cell<usize>; MAX_HELD],
    n: Cell<usize>,
    in_check: Cell<bool>,
    running: Cell<Option<Running>>,
}

thread_local! {
    static THREAD: ThreadState = const {
        ThreadState {
            held: [const { Cell::new(0) }; MAX_HELD],
            n: Cell::new(0),
            in_check: Cell::new(false),
            running: Cell::new(None),
        }
    };
}

#[inline(always)]
fn mode() -> u8 {
    // Relaxed: the mode is a switch read on its own; the watcher it needs
    // is installed with its own Release before the mode is raised.
    match MODE.load(Ordering::Relaxed) {
        UNREAD => read_env(),
        m => m,
    }
}

#[cold]
#[inline(never)]
fn read_env() -> u8 {
    let m = match options::env_choice(Var::Lockdep) {
        1 => ON,
        2 => ABORT,
        _ => OFF,
    };
    raise(m);
    // Relaxed: see `mode`.
    MODE.load(Ordering::Relaxed)
}

fn raise(m: u8) {
    if m >= ON {
        crate::commit::install_watcher(&WATCHER);
    }
    // Relaxed: see `mode`.
    MODE.fetch_max(m, Ordering::Relaxed);
}

/// Turns the checker on for the rest of the process, as
/// `SHRINKALLOC_LOCKDEP=1` does.
///
/// ```
/// shrinkalloc::lockdep::enable();
/// assert!(shrinkalloc::lockdep::is_enabled());
/// ```
pub fn enable() {
    raise(ON);
}

/// Turns the checker on and makes the first report abort the process, as
/// `SHRINKALLOC_LOCKDEP=abort` does (for test suites).
///
/// ```no_run
/// shrinkalloc::lockdep::enable_abort();
/// ```
pub fn enable_abort() {
    raise(ABORT);
}

/// Whether the checker is on (reads `SHRINKALLOC_LOCKDEP` the first time).
///
/// ```
/// let _ = shrinkalloc::lockdep::is_enabled();
/// ```
#[inline]
pub fn is_enabled() -> bool {
    mode() >= ON
}

/// Reports printed since the process started.
///
/// ```
/// assert_eq!(shrinkalloc::lockdep::reports(), 0);
/// ```
pub fn reports() -> u64 {
    // Relaxed: a tally.
    REPORTS.load(Ordering::Relaxed)
}

/// Records that the calling thread now holds the lock at `lock` (`name`,
/// when the lock has one, shows in reports). Call it right after taking
/// the lock, and [`released`] right before giving it back; the annotated
/// types and the [`held`] guard do it for you. Costs one atomic load with
/// the checker off.
///
/// ```
/// static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
/// let g = LOCK.lock().unwrap();
/// shrinkalloc::lockdep::acquired(&raw const LOCK as *const (), Some("LOCK"));
/// shrinkalloc::lockdep::released(&raw const LOCK as *const ());
/// drop(g);
/// ```
pub fn acquired(lock: *const (), name: Option<&'static str>) {
    if !is_enabled() {
        return;
    }
    let lock = lock as usize;
    let _ = THREAD.try_with(|t| {
        if t.in_check.get() {
            return;
        }
        if let Some(run) = t.running.get() {
            t.in_check.set(true);
            // SAFETY: `run` was set by `ShrinkerRun::enter` from a `&str`
            // that lives until the guard is dropped, after this call.
            let shrinker = unsafe { core::str::from_utf8_unchecked(core::slice::from_raw_parts(run.name, run.len)) };
            table::learn(lock, name, shrinker, run.needs, report::capture);
            t.in_check.set(false);
        }
        if table::find(lock).is_some() {
            push(t, lock);
        }
    });
}

/// Records that the calling thread no longer holds the lock at `lock`
/// (see [`acquired`]). A lock it was not recorded holding is ignored.
/// Costs one atomic load with the checker off.
///
/// ```
/// shrinkalloc::lockdep::released(core::ptr::null());
/// ```
pub fn released(lock: *const ()) {
    if !is_enabled() {
        return;
    }
    let lock = lock as usize;
    let _ = THREAD.try_with(|t| {
        let n = t.n.get();
        let Some(i) = (0..n).rev().find(|&i| t.held[i].get() == lock) else { return };
        for j in i..n - 1 {
            t.held[j].set(t.held[j + 1].get());
        }
        // The heap stays watched: the next allocation unwatches it (see
        // `check_thread`), so a lock taken and released again and again
        // without allocating does not rewrite the heap each time.
        t.n.set(n - 1);
    });
}

fn push(t: &ThreadState, lock: usize) {
    let n = t.n.get();
    if n == MAX_HELD {
        return;
    }
    t.held[n].set(lock);
    t.n.set(n + 1);
    if n == 0 {
        watch(true);
    }
}

/// Starts or stops sending the calling thread's allocations to [`check`].
fn watch(on: bool) {
    let mut h = heap::current();
    if h == empty_heap() {
        if !on {
            return;
        }
        // A thread that never allocated gets its heap now, so that there
        // is one to watch.
        h = crate::thread::init_heap();
        if h.is_null() {
            return;
        }
    }
    // SAFETY: a heap other than the empty one is the calling thread's own.
    let h = unsafe { &*h };
    if h.watched.get() != on {
        h.set_watched(on);
    }
}

/// The allocation check: the calling thread's heap is watched.
fn check() {
    let _ = THREAD.try_with(check_thread);
}

fn check_thread(t: &ThreadState) {
    if t.in_check.get() || is_reclaiming() {
        return;
    }
    let n = t.n.get();
    if n == 0 {
        // The thread released its last learned lock (or adopted the heap
        // of a thread that exited holding one): back to the fast path.
        watch(false);
        return;
    }
    t.in_check.set(true);
    let scope = current_scope();
    let mut here = [0usize; FRAMES];
    let mut depth = None;
    for i in 0..n {
        let lock = t.held[i].get();
        let Some(e) = table::find(lock) else { continue };
        for slot in 0..NEEDS {
            let Some(learned) = e.learned(slot) else { continue };
            if !table::needs_of(slot).allowed_in(scope) {
                continue;
            }
            let d = match depth {
                Some(d) => d,
                None => *depth.insert(report::capture(&mut here)),
            };
            if table::first_report(lock ^ slot, report::site_of(&here[..d])) {
                // Relaxed: a tally.
                REPORTS.fetch_add(1, Ordering::Relaxed);
                report::print(e, slot, learned, scope, &here[..d]);
                if mode() == ABORT {
                    report::print_abort(e, learned, slot, scope);
                    crate::os::abort();
                }
            }
        }
    }
    t.in_check.set(false);
}

/// Marks the calling thread as running a shrinker until dropped: locks it
/// acquires meanwhile are learned. Set by reclaim around every count and
/// scan callback.
pub(crate) struct ShrinkerRun {
    saved: Option<Running>,
    active: bool,
    _not_send: PhantomData<*const ()>,
}

impl ShrinkerRun {
    /// Enters the run of shrinker `name` with `needs` (inert when the
    /// checker is off). `name` outlives the guard.
    pub(crate) fn enter(name: &str, needs: Needs) -> Self {
        let mut g = ShrinkerRun { saved: None, active: false, _not_send: PhantomData };
        if is_enabled() {
            let run = Running { name: name.as_ptr(), len: name.len(), needs };
            let _ = THREAD.try_with(|t| {
                g.saved = t.running.replace(Some(run));
                g.active = true;
            });
        }
        g
    }
}

impl Drop for ShrinkerRun {
    fn drop(&mut self) {
        if self.active {
            let _ = THREAD.try_with(|t| t.running.set(self.saved));
        }
    }
}

/// A lock recorded as held until the guard is dropped: for lock types
/// other than [`crate::sync`]'s (a `parking_lot` mutex, a hand-made spin
/// lock). Take it right after the lock, drop it right before releasing.
/// Not `Send`: it belongs to the thread that holds the lock.
///
/// ```
/// let m = std::sync::Mutex::new(0);
/// let g = m.lock().unwrap();
/// let held = shrinkalloc::lockdep::held(&m);
/// drop(held);
/// drop(g);
/// ```
#[must_use = "the lock counts as held until the guard is dropped"]
pub struct Held {
    lock: *const (),
}

/// Records `lock` as held by the calling thread until the guard is dropped;
/// reports name it by its type.
///
/// ```
/// let m = std::sync::Mutex::new(0);
/// let _g = m.lock().unwrap();
/// let _held = shrinkalloc::lockdep::held(&m);
/// ```
pub fn held<L: ?Sized>(lock: &L) -> Held {
    held_as(lock, core::any::type_name::<L>())
}

/// [`held`] with the name reports give the lock.
///
/// ```
/// let m = std::sync::Mutex::new(0);
/// let _g = m.lock().unwrap();
/// let _held = shrinkalloc::lockdep::held_as(&m, "inode table");
/// ```
pub fn held_as<L: ?Sized>(lock: &L, name: &'static str) -> Held {
    let lock = core::ptr::from_ref(lock).cast::<()>();
    acquired(lock, Some(name));
    Held { lock }
}

impl Drop for Held {
    fn drop(&mut self) {
        released(self.lock);
    }
}
