//! Page acquisition and release: how a heap takes a free page from one of
//! its segments (a new segment when none has one) and gives empty pages
//! back, and the heap's lists of segments with free pages.
//!
//! Invariant: a page moves `FREE`/`PURGED -> TAKEN` by the compare-and-swap
//! of the heap that takes it (the purger moves `FREE -> PURGING -> PURGED`
//! by its own, so the two never act on one page), is initialised, and only
//! then is published `IN_USE` (`Page::init`); it goes back `IN_USE -> FREE`
//! by a Release store of its owner when no block of it is live. A segment
//! is on its heap's list exactly while it has a page not in use; one with
//! no page in use goes back to the segment cache (`segment.rs`).
//!
//! Everything here runs on the owning thread's slow path and works through
//! shared references: reclaim, reached through `commit::charge`, may
//! re-enter the heap (purge → `release_empty_pages`) in the middle.

use core::ptr;
use core::sync::atomic::Ordering;

use crate::heap::Heap;
use crate::options::{self, Opt};
use crate::page::{self, carve_blocks, state, Page, PF_IN_FULL};
use crate::segment::{self, Kind, Segment};
use crate::size_class::{self, CLASSES, MAX_MEDIUM, MAX_SMALL};
use crate::{commit, os};

fn kind_of(block_size: usize) -> Kind {
    if block_size <= MAX_SMALL {
        Kind::Small
    } else if block_size <= MAX_MEDIUM {
        Kind::Medium
    } else {
        Kind::Large
    }
}

/// Takes a free page from one of the heap's segments (a new segment if
/// none), preferring pages still committed ([`pick_free_page`]), and sets
/// it up for `class`; for a class of medium or large pages, after giving
/// back the empty pages the heap's other such classes keep
/// ([`release_empty_of_kind`]). Null when memory cannot be had.
pub fn new_page(heap: &Heap, class: usize) -> *mut Page {
    let block_size = size_class::size_of(class);
    let kind = kind_of(block_size);
    if kind != Kind::Small {
        release_empty_of_kind(heap, kind, class);
    }
    // Bytes charged for the page's first carving so far: a charge may run
    // reclaim, which may purge the very page picked, so the next look may
    // need more (a new charge replaces the reservation of the last one).
    let mut charged = 0;
    loop {
        let seg = heap.segments[kind as usize].get();
        if seg.is_null() {
            let Some(seg) = segment::acquire_segment(kind) else { return ptr::null_mut() };
            // SAFETY: an acquired segment is live and ours alone.
            let s = unsafe { &*seg };
            s.heap.set(heap.id());
            s.used_pages.set(0);
            seg_list_push(heap, s);
            continue;
        }
        // SAFETY: segments on the heap's list are live and owned by it.
        let s = unsafe { &*seg };
        let Some((page, was)) = pick_free_page(heap, s, block_size) else { continue };
        // What the page's first carving will commit beyond what the page
        // still has committed is charged: all of it for a purged page, the
        // rest for a free one that held smaller blocks (a 128 KiB block on
        // a page that touched 12 KiB). Reclaim may run here and re-enter
        // this heap; look again after.
        let first = (carve_blocks(block_size) * block_size).next_multiple_of(os::OS_PAGE).min(page.size());
        let need = first.saturating_sub(if was == state::PURGED { 0 } else { page.touched() });
        if need > charged {
            if !commit::charge(need) {
                return ptr::null_mut();
            }
            charged = need;
            continue;
        }
        // Acquire pairs with the purger's Release of PURGED (its madvise
        // is done) and the owner's Release of FREE.
        let claimed = page.shared.state.compare_exchange(was, state::TAKEN, Ordering::Acquire, Ordering::Relaxed);
        if claimed.is_err() {
            continue;
        }
        s.used_pages.set(s.used_pages.get() + 1);
        if s.used_pages.get() == s.page_count {
            seg_list_remove(heap, s);
        }
        // A small page takes the C library's frees on `free` (`free.rs`):
        // its list never says "zeroed".
        page.init(heap.id(), class, block_size, was == state::PURGED && s.kind != Kind::Small);
        return ptr::from_ref(page).cast_mut();
    }
}

/// A free page of `seg` that holds a block of `block_size`, and its state:
/// committed ones first, and among them one that last held blocks of this
/// size. Spins past a page the purger is working on.
///
/// A committed page that held other blocks keeps resident what it touched
/// past the new class's carvings; one of the same size has its touched
/// bytes laid out for the class already. Pages that other threads empty
/// are retired and taken again tens of thousands of times a second on
/// `benches/programs/prodcons` (a producer's 16 B - 4 KiB blocks, freed by
/// its consumer): with the first free page in the segment's order, peak RSS
/// 3.30-3.44 MiB (medians of 9-15 interleaved runs), with this preference
/// 3.00-3.18; `churn`, `perthread`, `server` and `mix` unchanged. Taking
/// the free page whose touched bytes fit the class's first carving best,
/// when none held its size, changed nothing more.
/// `None` (after unlisting `seg`) when the segment has none: after a racing
/// re-entry, or when its only free page is page 0, shortened by the header,
/// and the class does not fit there (the segment is listed again when
/// another of its pages is freed).
fn pick_free_page<'s>(heap: &Heap, seg: &'s Segment, block_size: usize) -> Option<(&'s Page, u8)> {
    loop {
        let mut purged = None;
        let mut free = None;
        let mut purging = false;
        for page in &seg.pages[..seg.page_count] {
            if page.size() < block_size {
                continue;
            }
            // Relaxed: the CAS in `new_page` re-checks with Acquire.
            match page.shared.state.load(Ordering::Relaxed) {
                state::FREE if page.block_size() == block_size => return Some((page, state::FREE)),
                state::FREE if free.is_none() => free = Some(page),
                state::PURGED if purged.is_none() => purged = Some(page),
                state::PURGING => purging = true,
                _ => {}
            }
        }
        if let Some(p) = free {
            return Some((p, state::FREE));
        }
        if let Some(p) = purged {
            return Some((p, state::PURGED));
        }
        if !purging {
            seg_list_remove(heap, seg);
            return None;
        }
        std::thread::yield_now();
    }
}

/// Puts `seg`, owned by `heap` and not on its list, first on it.
fn seg_list_push(heap: &Heap, seg: &Segment) {
    let head = &heap.segments[seg.kind as usize];
    seg.prev.set(ptr::null_mut());
    seg.next.set(head.get());
    if !head.get().is_null() {
        // SAFETY: segments on the heap's list are live and owned by it.
        unsafe { (*head.get()).prev.set(ptr::from_ref(seg).cast_mut()) };
    }
    head.set(ptr::from_ref(seg).cast_mut());
    seg.in_heap_list.set(true);
}

/// Takes `seg`, owned by `heap`, off its list if it is there.
fn seg_list_remove(heap: &Heap, seg: &Segment) {
    if !seg.in_heap_list.get() {
        return;
    }
    let (prev, next) = (seg.prev.get(), seg.next.get());
    if prev.is_null() {
        heap.segments[seg.kind as usize].set(next);
    } else {
        // SAFETY: a neighbour on the heap's list is live and owned by it.
        unsafe { (*prev).next.set(next) };
    }
    if !next.is_null() {
        // SAFETY: as above.
        unsafe { (*next).prev.set(prev) };
    }
    seg.in_heap_list.set(false);
}

/// Called by the owner when a page's `used` reached zero. Keeps the page if it
/// is the only one of its class (a malloc/free loop must not churn pages);
/// otherwise gives it back to its segment.
///
/// # Safety
///
/// `page` is on `heap`'s queue for its class, and the calling thread owns `heap`.
pub unsafe fn retire(heap: &Heap, page: *mut Page) {
    // SAFETY: the caller promises a live page of `heap`.
    let p = unsafe { &*page };
    if heap.queues[p.class()].head() == page && p.own.next.get().is_null() {
        return;
    }
    // SAFETY: the caller promises the page is on its class queue.
    unsafe { heap.queue_remove(page) };
    // SAFETY: now on no list, with no live block (`used == 0`).
    unsafe { release_page(heap, page) };
}

/// Gives an empty page back to its segment, and the segment back to the
/// cache when no page of it is in use.
///
/// # Safety
///
/// `page` has no live block, is owned by `heap` (which the calling thread
/// owns), and is on none of its lists.
pub unsafe fn release_page(heap: &Heap, page: *mut Page) {
    let seg = segment::segment_of(page.cast());
    // SAFETY: the page record lives in its segment's header; a page in use
    // keeps its segment mapped and on the heap's ownership.
    let (p, s) = unsafe { (&*page, &*seg) };
    debug_assert!(!p.is_queued());
    // A free page belongs to no heap: `free` compares `page.heap` with
    // the caller's heap before anything else, so a stale pointer into
    // it cannot pass as the owner's.
    p.shared.heap.store(ptr::null_mut(), Ordering::Relaxed);
    // Relaxed: published by the Release store of FREE below.
    // The clock modulo 2^32 (see `Shared::freed_at`).
    p.shared.freed_at.store(os::now_ms() as u32, Ordering::Relaxed);
    // A page whose free blocks gave their inside back has holes that
    // `touched` cannot describe: it is purged whole now, which only
    // happens under pressure (see "Free blocks given back" in `page.rs`).
    let holes = p.own.holes.replace(0) as usize;
    let now = if holes > 0 {
        let touched = p.touched();
        os::purge(p.shared.start, touched);
        commit::on_purge(touched - holes);
        p.set_touched(0);
        p.own.decommitted.set(ptr::null_mut());
        state::PURGED
    } else {
        state::FREE
    };
    // Release pairs with the Acquire CAS of the purger and of `new_page`.
    p.shared.state.store(now, Ordering::Release);
    if now == state::FREE {
        s.wants_a_look();
    }
    s.used_pages.set(s.used_pages.get() - 1);
    if s.used_pages.get() == 0 {
        seg_list_remove(heap, s);
        // SAFETY: no page in use, off the heap's list.
        unsafe { segment::release_segment(seg) };
    } else if !s.in_heap_list.get() {
        seg_list_push(heap, s);
    }
}

/// A heap's collection: its empty pages back to their segments
/// ([`release_empty_pages`]), then the inside of its idle big free blocks
/// back to the OS ([`decommit_idle_blocks`], all of them when `now`).
/// Returns the bytes the second gives back. The caller owns `heap` (or
/// holds it off the abandoned list).
pub fn collect(heap: &Heap, now_ms: u64, now: bool) -> usize {
    release_empty_pages(heap);
    decommit_idle_blocks(heap, now_ms, now)
}

/// Gives back the inside of the heap's free blocks of 8 KiB or more that
/// stayed free for the purge delay ([`Page::decommit_idle`]), or of all of
/// them when `now` (a purge asked for), on the pages of its queues (a full
/// page has none). Not under a memory line, where reclaim decides what
/// free blocks give back (doing it at every pass widened the band a
/// cache's usage swings in: see "Free blocks given back" in `page.rs`).
/// For the heap's owner, or the thread holding an abandoned heap. Returns
/// the bytes given back.
pub fn decommit_idle_blocks(heap: &Heap, now_ms: u64, now: bool) -> usize {
    if !commit::no_line() {
        return 0;
    }
    let delay_ms = if now { 0 } else { options::get(Opt::PurgeDelayMs) as u64 };
    let mut bytes = 0;
    // Classes are in order of size: from the first with blocks that large.
    for queue in &heap.queues[size_class::class_of(page::DECOMMIT_MIN_BLOCK)..CLASSES] {
        let mut page = queue.head();
        while !page.is_null() {
            // SAFETY: pages on the heap's queues are live and owned by it.
            let p = unsafe { &*page };
            bytes += p.decommit_idle(now_ms, delay_ms);
            page = p.own.next.get();
        }
    }
    bytes
}

/// Takes back full pages that other threads freed into. One relaxed load
/// when there are none.
#[inline]
pub fn drain_remote(heap: &Heap) {
    // Relaxed peek; the swap in `drain_remote_slow` acquires.
    if !heap.remote_pages.load(Ordering::Relaxed).is_null() {
        drain_remote_slow(heap);
    }
}

#[cold]
#[inline(never)]
fn drain_remote_slow(heap: &Heap) {
    // Acquire pairs with the pushers' Release CAS in `free::free_remote`.
    let mut page = heap.remote_pages.swap(ptr::null_mut(), Ordering::Acquire);
    while !page.is_null() {
        // SAFETY: pages on the stack stay live: each carries XF_QUEUED
        // until this drain clears it, and such pages are never retired.
        let p = unsafe { &*page };
        // Relaxed: ordered by the Acquire swap above.
        let next = p.shared.remote_next.load(Ordering::Relaxed);
        if p.own.flags.get() & PF_IN_FULL != 0 {
            // SAFETY: a page flagged full is on its heap's full list.
            unsafe { heap.unfull(page) };
        }
        p.collect_clearing_flags();
        if p.used() == 0 {
            // SAFETY: off the full list, so on its class queue.
            unsafe { retire(heap, page) };
        }
        page = next;
    }
}

/// Gives back to their segments the empty pages that the heap's other
/// classes of `kind` (medium or large) keep, so that the page `class`
/// takes next can be one of them, committed already.
///
/// A class keeps its last page when it empties (a malloc/free loop must not
/// churn pages) until the heap's collection, every `HEAP_COLLECT_MS`. A
/// program that goes through many big sizes one phase at a time kept one
/// touched page per size meanwhile: Berkeley espresso (the harness's
/// `espresso` row, a single-threaded logic minimiser with blocks from 1 B
/// to 1 MiB) peaked at 5.9-6.2 MiB against glibc's 3.2, about 2 MiB of it
/// in empty pages of classes over 8 KiB; now 4.4-4.6 (7 interleaved runs),
/// the time unchanged. Small pages are left alone: they hold many blocks,
/// are rarely empty, and a heap has many of them to walk. The walk runs
/// only when a big class needs a page, over the few pages big classes
/// hold; `mix` (1% of its blocks 8-64 KiB) peaks 0.3% higher (50.9 ->
/// 51.1 MiB, 15 runs), its empty pages taken back and forth between its
/// classes; criterion's `realloc_grow/linear_64B_64KiB` 3.73 -> 3.87 µs.
fn release_empty_of_kind(heap: &Heap, kind: Kind, class: usize) {
    for c in 0..CLASSES {
        if c != class && kind_of(size_class::size_of(c)) == kind {
            release_empty_of_class(heap, c);
        }
    }
}

/// Collects every page on `class`'s queue and gives the empty ones back to
/// their segments, the last one included. The calling thread owns `heap`
/// (or holds it off the abandoned list).
fn release_empty_of_class(heap: &Heap, class: usize) {
    let mut page = heap.queues[class].head();
    while !page.is_null() {
        // SAFETY: pages on the heap's queues are live and owned by it.
        let p = unsafe { &*page };
        let next = p.own.next.get();
        p.collect();
        if p.used() == 0 && !p.is_queued() {
            // SAFETY: on its class queue; empty and not queued remotely.
            unsafe {
                heap.queue_remove(page);
                release_page(heap, page);
            }
        }
        page = next;
    }
}

/// Gives back every empty page the heap kept, including the last of each
/// class. Used before abandoning a heap, on decay ticks and on `purge()`.
/// The calling thread owns `heap` (or holds it off the abandoned list).
pub fn release_empty_pages(heap: &Heap) {
    drain_remote(heap);
    for class in 0..CLASSES {
        release_empty_of_class(heap, class);
    }
}
