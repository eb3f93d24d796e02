//! Giving memory back to the OS: decay of free pages, and purging at once.
//!
//! A page that becomes free stays committed for `Opt::PurgeDelayMs`, so that
//! a program that frees and allocates again does not fault its memory back
//! in; after that the next decay tick purges it (`madvise(MADV_DONTNEED)`).
//! Ticks run on allocation slow paths (the clock is read on one in
//! [`TICK_EVERY`]), the global one at most every quarter of the delay.
//! With no memory line, a heap's tick also gives back the inside of its
//! free blocks of 8 KiB or more that stayed free for the delay, in pages
//! still in use ("Idle free blocks" in `page.rs`). [`purge`] purges every
//! free page and cached segment now.
//!
//! Invariant: only a page in state `FREE` is purged, and only by the thread
//! that moved it `FREE -> PURGING` by compare-and-swap; owners never touch a
//! `PURGING` page, and the purger holds `ALL`'s lock so the segment stays
//! mapped until it is done.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::heap::{self, empty_heap, Heap};
use crate::options::{self, Opt};
use crate::page::{state, Page, PurgeRun, XF_EMPTIED, XF_QUEUED};
use crate::page_alloc;
use crate::segment::{self, Kind, Segment, ALL};
use crate::{commit, huge, os, thread};

static NEXT_TICK: AtomicU64 = AtomicU64::new(0);

/// Bumped by [`purge`] (and so by every reclaim pass): each heap gives back
/// its empty pages at its next slow path when it sees a new value, so memory
/// that other threads freed into its pages comes back under pressure without
/// waiting for its own decay tick.
static COLLECT_EPOCH: AtomicU64 = AtomicU64::new(0);

/// How often a heap gives back its empty pages on its own (ms).
const HEAP_COLLECT_MS: u64 = 100;

/// Slow paths between two looks at the clock in [`tick`].
pub(crate) const TICK_EVERY: u32 = 16;

/// Decay work, if due. Called from the allocation slow path: the heap gives
/// back its empty pages every [`HEAP_COLLECT_MS`] or when a purge asked for
/// it; one thread per quarter of the purge delay runs the global purge pass.
/// The clock is read only every [`TICK_EVERY`] slow paths (a counter in the
/// heap): the common slow path pays a load, a compare and a store.
#[inline]
pub fn tick(heap: &Heap) {
    // Relaxed: the epoch is a hint; a late look only delays the collection.
    let epoch = COLLECT_EPOCH.load(Ordering::Relaxed);
    let left = heap.tick_countdown.get();
    if left > 0 && epoch == heap.collect_epoch.get() {
        heap.tick_countdown.set(left - 1);
        return;
    }
    tick_now(heap, epoch);
}

#[cold]
#[inline(never)]
fn tick_now(heap: &Heap, epoch: u64) {
    heap.tick_countdown.set(TICK_EVERY);
    let now = os::now_ms();
    let purge_asked = epoch != heap.collect_epoch.get();
    if now >= heap.next_collect.get() || purge_asked {
        heap.next_collect.set(now + HEAP_COLLECT_MS);
        heap.collect_epoch.set(epoch);
        page_alloc::collect(heap, now, purge_asked);
    }
    global_tick(now);
}

/// The global part of the decay, for a thread that allocates nothing (the
/// pressure monitor): a process that goes idle still gives back, after the
/// delay, the pages and blocks its threads freed, and what exited threads
/// left. Each live thread's own empty pages still wait for that thread.
pub(crate) fn background_tick() {
    global_tick(os::now_ms());
}

/// Collects abandoned heaps and runs the purge pass, if due: one thread
/// per quarter of the purge delay.
fn global_tick(now: u64) {
    // Relaxed: the tick time is a hint; the CAS elects one thread per tick.
    let next = NEXT_TICK.load(Ordering::Relaxed);
    if now < next {
        return;
    }
    if NEXT_TICK.compare_exchange(next, now + tick_period_ms(), Ordering::Relaxed, Ordering::Relaxed).is_err() {
        return;
    }
    thread::collect_abandoned(false);
    purge_pass(now, purge_delay_ms(), false);
}

/// The period of the global tick, and how long a thread that only ticks
/// should sleep between ticks (ms): a quarter of the purge delay.
pub(crate) fn tick_period_ms() -> u64 {
    (purge_delay_ms() / 4).max(10)
}

/// How long a free page stays committed: `Opt::PurgeDelayMs`, or nothing
/// while the committed bytes are past a memory line (`commit::past_line`).
/// A program near its cgroup's limit without shrinkers (the stress
/// `churn` scenario at 128M, live set at half of it) reached 97-100% of
/// the limit and was OOM-killed in 6 of 8 runs, its free pages waiting for
/// the delay; purging them at the next tick, its peak was 88-95%.
fn purge_delay_ms() -> u64 {
    if commit::past_line() {
        0
    } else {
        options::get(Opt::PurgeDelayMs) as u64
    }
}

/// Returns every free page and cached segment to the OS now, after giving
/// back the empty pages of the calling thread and of exited threads, and,
/// with no memory line in force, the inside of their free blocks of 8 KiB
/// or more in pages still in use (as `malloc_trim` does in glibc). Returns
/// the bytes released.
///
/// Other live threads do the same at their next allocation slow path.
///
/// ```
/// let v = vec![0u8; 8 << 20];
/// drop(v);
/// let released = shrinkalloc::purge();
/// assert!(shrinkalloc::stats().committed < 64 << 20, "{released}");
/// ```
pub fn purge() -> usize {
    // Relaxed: see `COLLECT_EPOCH`.
    COLLECT_EPOCH.fetch_add(1, Ordering::Relaxed);
    let (heap, now) = (heap::current(), os::now_ms());
    let mut bytes = 0;
    if heap != empty_heap() {
        // SAFETY: a heap other than the empty one is this thread's own.
        let heap = unsafe { &*heap };
        bytes += page_alloc::collect(heap, now, true);
    }
    bytes += thread::collect_abandoned(true);
    bytes + purge_pass(now, purge_delay_ms(), true)
}

/// The pass over every segment: cached segments, the huge cache, then
/// each page. With `force` (`purge()`), every page; otherwise (the decay
/// tick) only the segments that carry `Segment::look`: with the purge
/// delay of 50 ms the tick runs up to 80 times a second, and a walk of
/// every page record cost a process with 2 GiB of small blocks live 4.5%
/// of its CPU time while it allocated (8 GiB: 15%, as much as `malloc`
/// itself), where most segments hold only pages in use with nothing to
/// give back. A segment carries the flag from the moment one of its pages
/// becomes free or is queued for its owner until a walk finds nothing
/// left to wait for there ([`work_left`]).
fn purge_pass(now: u64, delay: u64, force: bool) -> usize {
    let (before, surplus_before) = if force {
        (u64::MAX, u64::MAX)
    } else {
        (now.saturating_sub(delay.saturating_mul(10)), now.saturating_sub(delay))
    };
    let mut bytes = segment::evict_cached(before, surplus_before);
    bytes += huge::purge_cache(now, delay, force);
    // Acquire pairs with the Release of the count in `wants_a_look`.
    if !force && segment::LOOKS.load(Ordering::Acquire) == 0 {
        return bytes;
    }
    for_each_segment(|s| {
        // A tick walks only the segments where a page became free or was
        // queued for its owner since a tick last left nothing there;
        // `purge()` walks them all.
        if !force && !s.take_look() {
            return;
        }
        // A run ends with its segment, flushed while `ALL`'s lock keeps the
        // segment mapped.
        let pages = &s.pages[..s.page_count];
        let mut run = PurgeRun::EMPTY;
        let mut left = false;
        for index in 0..pages.len() {
            bytes += empty_stranded(&pages[index], !force);
            bytes += purge_page(pages, index, now, delay, force, &mut run);
            left |= work_left(&pages[index]);
        }
        run.flush(pages);
        if left {
            s.wants_a_look();
        }
    });
    bytes
}

/// Whether `page`, just walked by the tick, still waits for a later one: a
/// free page not yet idle for the delay, or a page queued for its owner
/// (which may yet have every block come back) and not emptied.
fn work_left(page: &Page) -> bool {
    match page.shared.state.load(Ordering::Relaxed) {
        state::FREE => true,
        state::IN_USE => {
            let xf = page.shared.xfree.load(Ordering::Relaxed);
            xf & XF_QUEUED != 0 && xf & XF_EMPTIED == 0
        }
        _ => false,
    }
}

/// Purges page `index` of `pages` (a segment's) if it is free (and idle
/// for `delay`, unless `force`), by adding it to `run`: neighbouring pages
/// go back with one `madvise` (a pass over `mix`'s 16 threads made 900
/// calls, one per 64 KiB page, most of them next to each other). Returns
/// the bytes given back.
fn purge_page(pages: &[Page], index: usize, now: u64, delay: u64, force: bool, run: &mut PurgeRun) -> usize {
    let sh = &pages[index].shared;
    // Acquire pairs with the Release of FREE in `release_page`: the
    // `freed_at` read below is the one it stored (while the page was in
    // use the field held `Page::empty_remote`'s memo). The CAS decides.
    if sh.state.load(Ordering::Acquire) != state::FREE {
        return 0;
    }
    // Wrapping, on the clock modulo 2^32: exact for idle times under 49
    // days (a page idle longer may wait one more delay).
    let idle = u64::from((now as u32).wrapping_sub(sh.freed_at.load(Ordering::Relaxed)));
    if !force && idle < delay {
        return 0;
    }
    let Ok(touched) = pages[index].start_purge() else { return 0 };
    run.add(pages, index, touched);
    touched
}

/// Gives back `page`, in use, if every block of it waits on its
/// cross-thread list (see `Page::empty_remote`): the memory
/// other threads freed into the pages of an owner that sleeps or blocks,
/// which it would collect only at its next allocation. With `only_queued`
/// (the decay tick), only a page whose owner was told and has not
/// collected it. Returns the bytes given back.
fn empty_stranded(page: &Page, only_queued: bool) -> usize {
    let bytes = on_other_page(page, |p| p.empty_remote(only_queued));
    if bytes > 0 {
        // Relaxed: a tally (see `Stats::stranded_pages`).
        STRANDED_PAGES.fetch_add(1, Ordering::Relaxed);
    }
    bytes
}

/// Pages given back by [`empty_stranded`] since start.
static STRANDED_PAGES: AtomicUsize = AtomicUsize::new(0);

/// Pages given back while their owner held them, every
/// block freed by other threads (`Stats::stranded_pages`).
pub(crate) fn stranded_pages() -> usize {
    // Relaxed: a tally.
    STRANDED_PAGES.load(Ordering::Relaxed)
}

/// Runs `f`, which works on the cross-thread list of a page the calling
/// thread does not own, on `page` if it is in use, and pushes the page on
/// its owner's `remote_pages` stack if `f` says so. Returns the bytes `f`
/// gave back.
fn on_other_page(page: &Page, f: impl FnOnce(&Page) -> (bool, usize)) -> usize {
    // Acquire pairs with the Release of IN_USE in `Page::init`.
    if page.shared.state.load(Ordering::Acquire) != state::IN_USE {
        return 0;
    }
    let (notify, bytes) = f(page);
    if notify {
        crate::free::notify_owner(core::ptr::from_ref(page).cast_mut());
    }
    bytes
}

/// For a reclaim pass making room: gives back the inside of the blocks of
/// 8 KiB or more waiting on every page's cross-thread list (see
/// `Page::decommit_remote`). The pages whose blocks all wait there go back
/// whole in the purge that follows ([`empty_stranded`]). Returns the bytes
/// given back.
pub(crate) fn decommit_stranded() -> usize {
    let mut bytes = 0;
    for_each_segment(|s| {
        for page in &s.pages[..s.page_count] {
            bytes += on_other_page(page, Page::decommit_remote);
        }
    });
    bytes
}

/// Calls `f` on every mapped segment but huge ones, holding `ALL`'s lock
/// (so `f` may touch the shared part of its pages only, and must not map or
/// unmap segments).
fn for_each_segment(mut f: impl FnMut(&Segment)) {
    let all = ALL.lock();
    let mut seg = all.0;
    while !seg.is_null() {
        // SAFETY: segments on `ALL` stay mapped while we hold its lock; a
        // shared reference aliases no `&mut` (mutable fields are `Cell`s or
        // atomics), and of the pages only their shared part is touched.
        let s = unsafe { &*seg };
        if s.kind != Kind::Huge {
            f(s);
        }
        seg = s.all_next.get();
    }
}
