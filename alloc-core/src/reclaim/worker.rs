//! Background reclaimers: one library thread per context class.
//!
//! The [`ContextClass::Normal`] reclaimer runs unrestricted and calls the
//! shrinkers that need the filesystem; the `Nofs` one runs under `NOFS` and
//! calls those that need only I/O; the `Noio` one runs under `NOIO` and
//! calls those that need neither. Each also
//! purges the allocator's free pages. A shrinker is thus called in the
//! background by exactly one reclaimer, the least restricted one allowed to,
//! and a reclaimer stuck on a filesystem lock holds up no other class.
//!
//! Invariant: any thread may wake any reclaimer, but a thread waits only on
//! a reclaimer of its own class or a more restricted one
//! ([`wait_for_allowed`]), so a `NOFS` thread never waits on work that can
//! enter the filesystem; every wait is bounded. Reclaimers start lazily,
//! from an allocation slow path past the soft limit or a pressure source's
//! first raise (`pressure.rs`), never during allocator initialisation, and
//! only in a process that registered a shrinker or set
//! `SHRINKALLOC_MONITOR=on` (`monitor::threads_allowed`): in any other, a
//! wake runs a purge in the waking thread instead, at most every
//! `INLINE_MS` (there is no shrinker to call, only free pages to give
//! back). Their start allocates (the state below, the threads) on the
//! reclaim reserve, which stays above what is committed (`limit.rs`);
//! they belong to the process that started them (`pid`), so a `fork()`
//! child sees none and starts its own when it first needs them.
//! No lock here is held while allocating.

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::counters::{bump, BACKGROUND_WAKES, WORKERS_STARTED};
use super::limit;
use super::pass::{self, Freed, Pass};
use super::scope::{self, ContextClass, Reclaiming, ScopeFlags};
use super::shrinker::Level;
use super::sources::Trigger;
use crate::os;

/// How long an idle reclaimer sleeps before checking again (bounded waits).
const IDLE: Duration = Duration::from_secs(1);
/// How long a reclaimer rests after a pass that freed nothing.
const EMPTY_BACKOFF: Duration = Duration::from_millis(10);
/// How often a reclaimer runs a pass that has nothing to shrink and only
/// gives free pages back.
const PURGE_BACKOFF: Duration = Duration::from_millis(100);

/// The effective mask a class's reclaimer runs under.
const fn reclaimer_scope(class: ContextClass) -> ScopeFlags {
    class.scope().effective()
}

#[derive(Default)]
struct Request {
    pending: bool,
    busy: bool,
    target: usize,
    level: Level,
    /// What asked for the pending pass at its level (the first asker of the
    /// highest level); `None` reads as the soft limit.
    trigger: Option<Trigger>,
    /// Requests made and passes finished; a waiter with ticket `t` is done
    /// once `completed >= t`.
    requested: u64,
    completed: u64,
    /// Whether the pending pass makes room (see `Pass::room`): work a
    /// direct pass had to leave to this reclaimer.
    room: bool,
}

struct Worker {
    class: ContextClass,
    /// Held for a few field updates only, never while allocating.
    state: Mutex<Request>,
    wake: Condvar,
    done: Condvar,
    /// A hint mirroring `state.pending`, so wakers skip the lock.
    pending: AtomicBool,
}

impl Worker {
    fn lock(&self) -> MutexGuard<'_, Request> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Workers {
    pid: u32,
    by_class: [Option<&'static Worker>; ContextClass::COUNT],
}

/// The reclaimers of the process that started them; leaked on purpose (a
/// fork child replaces them and must not touch its parent's locks).
static CURRENT: AtomicPtr<Workers> = AtomicPtr::new(ptr::null_mut());
/// The pid of the process whose thread is starting reclaimers, or 0.
static STARTING: AtomicU32 = AtomicU32::new(0);

fn workers() -> Option<&'static Workers> {
    // Acquire pairs with the Release in `start`: the Workers are initialised.
    let p = CURRENT.load(Ordering::Acquire);
    // SAFETY: a non-null pointer was leaked by `start` and is never freed.
    let w = unsafe { p.as_ref() }?;
    (w.pid == std::process::id()).then_some(w)
}

/// The reclaimers of this process, started if need be. `None` while another
/// thread starts them, or if threads cannot be created.
fn ensure_started() -> Option<&'static Workers> {
    if let Some(w) = workers() {
        return Some(w);
    }
    let pid = std::process::id();
    // Relaxed here and on the stores: STARTING only elects one starter;
    // the reclaimers are published through CURRENT (Release/Acquire).
    let seen = STARTING.load(Ordering::Relaxed);
    // A pid other than ours was left by a parent caught by fork(): reclaim it.
    if seen == pid || STARTING.compare_exchange(seen, pid, Ordering::Acquire, Ordering::Relaxed).is_err() {
        return None;
    }
    if let Some(w) = workers() {
        STARTING.store(0, Ordering::Relaxed);
        return Some(w);
    }
    Some(start(pid))
}

#[cold]
fn start(pid: u32) -> &'static Workers {
    // Creating threads allocates: mark the thread so those allocations
    // never recurse into reclaim or into starting reclaimers again.
    let _r = Reclaiming::enter();
    let by_class = ContextClass::ALL.map(|class| {
        let w: &'static Worker = Box::leak(Box::new(Worker {
            class,
            state: Mutex::new(Request::default()),
            wake: Condvar::new(),
            done: Condvar::new(),
            pending: AtomicBool::new(false),
        }));
        if !spawn(w) {
            return None;
        }
        bump(&WORKERS_STARTED, 1);
        Some(w)
    });
    let ws: &'static Workers = Box::leak(Box::new(Workers { pid, by_class }));
    // Release pairs with the Acquire in `workers`.
    CURRENT.store(ws as *const Workers as *mut Workers, Ordering::Release);
    STARTING.store(0, Ordering::Relaxed);
    ws
}

/// Starts a detached thread running `w`. A raw pthread rather than a std
/// one: its first instruction marks it `RECLAIMING`, before anything in it
/// can allocate, so that a reclaimer started at the hard limit never has
/// to reclaim (or fail) to start. (std allocates in a new thread before
/// running its closure.)
fn spawn(w: &'static Worker) -> bool {
    // SAFETY: the argument, a leaked `&'static Worker`, outlives the thread.
    unsafe { os::spawn_detached(reclaimer_main, w as *const Worker as *mut c_void) }
}

/// A reclaimer's thread name, as `top -H` and `/proc/*/task/*/comm` show
/// it (at most 15 bytes).
const fn thread_name(class: ContextClass) -> &'static core::ffi::CStr {
    match class {
        ContextClass::Normal => c"sa-reclaim",
        ContextClass::Nofs => c"sa-reclaim-nofs",
        ContextClass::Noio => c"sa-reclaim-noio",
    }
}

extern "C" fn reclaimer_main(arg: *mut c_void) -> *mut c_void {
    // SAFETY: `spawn` passes a leaked, never freed `&'static Worker`.
    let w: &'static Worker = unsafe { &*(arg as *const Worker) };
    scope::become_background_reclaimer(reclaimer_scope(w.class));
    os::set_thread_name(thread_name(w.class));
    // Take a heap now. The blocks shrinkers free from this thread go back
    // to other threads' pages, and only a thread with a heap counts them
    // (`Heap::remote_freed`): that count is how a pass sees its progress
    // before their pages empty. Without it every pass raised its priority
    // to the end and emptied the caches.
    // SAFETY: the block was just allocated here (or is null) and is not used after.
    unsafe { crate::raw::free(crate::raw::malloc(16)) };
    // The page that block took goes back now, not as the first pass's
    // progress.
    crate::purge();
    run(w)
}

/// Runs one pass in the calling thread ([`pass::run`]) and hands what it
/// had to skip to the reclaimers of the skipped classes (but the pass's
/// own), if it fell short of its target. Returns what the pass freed.
pub(crate) fn run_pass(p: Pass) -> Freed {
    let _f = InFlight::enter(ContextClass::of(p.scope.effective()));
    let (freed, owed) = pass::run(&p);
    if freed.bytes < p.target {
        for class in ContextClass::ALL.into_iter().filter(|&c| owed.has(c) && Some(c) != p.only_class) {
            wake(class, p.target - freed.bytes, p.level, p.trigger.owed(), p.room);
        }
    }
    freed
}

/// What the allocator's own usage is over the low watermark, and whether
/// the pass must give committed memory back (`Pass::room`). Below the
/// guard (halfway from the soft to the hard limit) usage is the bytes in live blocks, not committed
/// bytes: the free blocks among those serve the next allocations, and a
/// pass that aimed at committed bytes would evict again what the last one
/// freed, until the cache was gone. Past it, free blocks no longer count as
/// room: the pass aims at the committed bytes and counts pages given back,
/// so that they stay clear of the hard limit, where an allocation from a
/// `NOFS` scope, which cannot call the filesystem's caches, may fail.
fn excess() -> (usize, bool) {
    let limits = limit::current();
    if limits.soft().is_none() {
        return (0, false);
    }
    let s = crate::stats();
    let live = s.in_use.saturating_sub(limits.soft_goal());
    if s.committed > limits.guard() {
        (live.max(s.committed.saturating_sub(limits.soft_goal())), false)
    } else {
        (live, false)
    }
}

/// Passes running now, by the class of the mask they run under.
static IN_FLIGHT: [AtomicUsize; ContextClass::COUNT] = [const { AtomicUsize::new(0) }; ContextClass::COUNT];
/// Passes that ended, for a waiter to see one end.
static ENDED: AtomicU64 = AtomicU64::new(0);

/// Counts a pass in flight for [`wait_for_pass_end`], for as long as it lives.
struct InFlight(ContextClass);

impl InFlight {
    fn enter(class: ContextClass) -> Self {
        // Relaxed: see `wait_for_pass_end`.
        IN_FLIGHT[class.index()].fetch_add(1, Ordering::Relaxed);
        InFlight(class)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Relaxed, then Release: see `wait_for_pass_end`.
        IN_FLIGHT[self.0.index()].fetch_sub(1, Ordering::Relaxed);
        ENDED.fetch_add(1, Ordering::Release);
    }
}

/// Waits until a pass of class `class` or a more restricted one (a thread
/// of `class` may wait on those, see the module doc), in flight now, ends,
/// at most `limit`; `false` at once when none is. For direct reclaim that
/// found nothing left: the pass in flight may hold the room.
pub(crate) fn wait_for_pass_end(class: ContextClass, limit: Duration) -> bool {
    // Relaxed: a hint polled until it changes.
    let busy = || IN_FLIGHT[class.index()..].iter().any(|n| n.load(Ordering::Relaxed) > 0);
    // Acquire pairs with the Release increment in `InFlight::drop`: the
    // ended pass's frees are seen by the caller's next look at the
    // committed bytes.
    let ended = || ENDED.load(Ordering::Acquire);
    let before = ended();
    if !busy() {
        return false;
    }
    let deadline = Instant::now() + limit;
    while busy() && ended() == before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// A reclaimer's life: wait for a request, run one pass, report, repeat.
fn run(w: &'static Worker) -> ! {
    // When this reclaimer last ran a pass that had nothing to shrink.
    let mut idle_at: Option<Instant> = None;
    loop {
        let (target, level, trigger, room, ticket) = next_request(w);
        let (own, own_room) = excess();
        let (target, room) = (target.max(own), room || own_room);
        // Only free pages to give back (usage is under the low watermark:
        // its committed bytes are free blocks the next allocations reuse):
        // once per `PURGE_BACKOFF` is enough. Any other request runs at once.
        let idle = target == 0 && !room && trigger == Trigger::Background;
        let freed = if idle && idle_at.is_some_and(|t| t.elapsed() < PURGE_BACKOFF) {
            None
        } else {
            let scope = reclaimer_scope(w.class);
            Some(run_pass(Pass { target, level, trigger, scope, only_class: Some(w.class), room }))
        };
        if idle && freed.is_some() {
            idle_at = Some(Instant::now());
        }
        let mut st = w.lock();
        st.busy = false;
        st.completed = ticket;
        drop(st);
        w.done.notify_all();
        if freed == Some(Freed::NOTHING) {
            // Nothing to take: do not spin on the wakes of every allocation
            // that stays past the soft limit.
            std::thread::sleep(EMPTY_BACKOFF);
        }
    }
}

/// A request taken off a reclaimer's slot: target, level, trigger, room,
/// and the ticket its waiters wait for.
type Taken = (usize, Level, Trigger, bool, u64);

fn next_request(w: &Worker) -> Taken {
    let mut st = w.lock();
    while !st.pending {
        st = w.wake.wait_timeout(st, IDLE).unwrap_or_else(PoisonError::into_inner).0;
    }
    st.pending = false;
    // Relaxed: the hint is re-checked under the lock by the next waker.
    w.pending.store(false, Ordering::Relaxed);
    st.busy = true;
    let trigger = st.trigger.take().unwrap_or(Trigger::Background);
    let room = core::mem::take(&mut st.room);
    (core::mem::take(&mut st.target), core::mem::take(&mut st.level), trigger, room, st.requested)
}

/// Asks the reclaimer of `class` for a pass freeing `target` bytes at
/// `level` on behalf of `trigger` (recorded with the pass), making room
/// (`room`: counting only pages given back) if any request did; starts the
/// reclaimers if need be. A soft-limit wake skips the lock when a request
/// is already pending (the pass it runs re-reads the limits); other
/// triggers, rare and rate-limited, merge their level and target into it.
pub(crate) fn wake(class: ContextClass, target: usize, level: Level, trigger: Trigger, room: bool) {
    if !super::monitor::threads_allowed() {
        return purge_inline(trigger);
    }
    let Some(w) = ensure_started().and_then(|ws| ws.by_class[class.index()]) else { return };
    // Relaxed: a stale `true` only skips a wake the pending pass covers.
    if trigger == Trigger::Background && !room && w.pending.load(Ordering::Relaxed) {
        return;
    }
    let mut st = w.lock();
    st.pending = true;
    // Relaxed: the hint; the lock orders the request itself.
    w.pending.store(true, Ordering::Relaxed);
    st.target = st.target.max(target);
    if st.trigger.is_none() || level > st.level {
        st.trigger = Some(trigger);
    }
    st.level = st.level.max(level);
    st.room |= room;
    st.requested += 1;
    drop(st);
    w.wake.notify_one();
    bump(&BACKGROUND_WAKES, 1);
}

/// How often a process without reclaimer threads purges in its own
/// allocating threads when woken.
const INLINE_MS: u64 = 50;
static LAST_INLINE_MS: AtomicU64 = AtomicU64::new(0);

/// A wake in a process without reclaimer threads: the calling thread (an
/// allocation slow path, with no lock held) purges the allocator's free
/// pages, at most every `INLINE_MS` across the process. Never inside reclaim.
pub(crate) fn purge_inline(trigger: Trigger) {
    if scope::is_reclaiming() {
        return;
    }
    let now = os::now_ms();
    // Relaxed: the CAS elects one purger per period; nothing else is ordered.
    let last = LAST_INLINE_MS.load(Ordering::Relaxed);
    if now < last.saturating_add(INLINE_MS)
        || LAST_INLINE_MS.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err()
    {
        return;
    }
    let scope = scope::current_scope();
    run_pass(Pass { target: 0, level: Level::None, trigger, scope, only_class: None, room: false });
}

/// Waits, at most `timeout`, for a pass in flight on a reclaimer that a
/// thread of class `class` may wait on (its own class or a more restricted
/// one). Returns at once when none is busy. Never starts reclaimers.
pub(crate) fn wait_for_allowed(class: ContextClass, timeout: Duration) {
    let Some(ws) = workers() else { return };
    let deadline = Instant::now() + timeout;
    for w in ws.by_class[class.index()..].iter().flatten() {
        let mut st = w.lock();
        if !st.busy {
            continue;
        }
        let ticket = st.completed + 1;
        while st.completed < ticket {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            st = w.done.wait_timeout(st, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }
}
