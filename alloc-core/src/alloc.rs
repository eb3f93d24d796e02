//! The allocation paths: the fast path and its slow path.
//!
//! Fast path ([`malloc`], [`alloc_class`]): one table load for the class,
//! one TLS load for the heap, one load for the class's first page, pop its
//! `free` list (or, when it ran dry, take the page's `local_free` as the
//! new list); no lock, no atomic read-modify-write, about a dozen
//! instructions. Slow path ([`alloc_slow`]): give the thread a heap if it
//! has none, take back pages other threads freed into, run the decay tick,
//! and find a page with a free block (collecting its frees, carving more of
//! it) or take a new one (`page_alloc.rs`).
//!
//! Invariant: the fast path touches only the owner's part of a page of the
//! calling thread's own heap (or the static empty page, whose lists are
//! empty); the slow path never keeps a reference into the heap's lists
//! across a call that may run reclaim (`commit::charge`), which may re-enter
//! the heap and retire the very page being walked.

use core::ptr;

use crate::heap::{self, empty_heap, Heap};
use crate::page::{self, Page};
use crate::raw::MIN_ALIGN;
use crate::segment::{self, Kind};
use crate::size_class::{self, CLASSES, MAX_CLASS_SIZE};
use crate::{commit, huge, os, page_alloc, purge, thread};

/// The fast path serves sizes up to this from the class table.
const FAST_MAX: usize = 1024;

/// Allocates `size` bytes. Fast path: no lock, no atomic, about a dozen
/// instructions when the class's first page has a free block.
#[inline(always)]
pub fn malloc(size: usize) -> *mut u8 {
    if size <= FAST_MAX {
        let class = size_class::class_of(size);
        if let Some(b) = pop_direct(class) {
            return b;
        }
    }
    malloc_generic(size)
}

/// `malloc` with C's alignment: 16 bytes for blocks above 8 bytes (glibc's
/// `MALLOC_ALIGNMENT`), from its own class table, so the rounding costs
/// nothing on the fast path.
#[inline(always)]
pub fn malloc_c(size: usize) -> *mut u8 {
    if size <= FAST_MAX {
        return alloc_class(size_class::class_of_c(size));
    }
    // Classes above 1 KiB are multiples of 16 (above 128 bytes they all are).
    malloc_generic(size)
}

/// [`malloc_c`]'s fast path alone: `None` when it misses. Classes above
/// the table's reach are computed (a few instructions more) rather than
/// sent down the generic path.
#[inline(always)]
pub fn try_malloc_c_fast(size: usize) -> Option<*mut u8> {
    if size <= FAST_MAX {
        // SAFETY: the thread's heap is its own (or the empty heap, never
        // written): a shared reference aliases no `&mut`.
        let heap = unsafe { &*heap::current() };
        // SAFETY: `(size + 7) >> 3 <= 128 < C_WORDS`.
        pop_page(unsafe { heap.direct_c.get_unchecked((size + 7) >> 3) }.get())
    } else if size <= MAX_CLASS_SIZE {
        // Above 1 KiB every class is a multiple of 16: C's alignment holds.
        pop_direct(size_class::class_of(size))
    } else {
        None
    }
}

/// Pops a block from the first page of `class` in this thread's heap.
#[inline(always)]
fn pop_direct(class: usize) -> Option<*mut u8> {
    debug_assert!(class < CLASSES);
    // SAFETY: the thread's heap is its own (or the empty heap, never
    // written): a shared reference aliases no `&mut`.
    let heap = unsafe { &*heap::current() };
    // SAFETY: `class < CLASSES` (the class tables hold only valid indices).
    pop_page(unsafe { heap.direct.get_unchecked(class) }.get())
}

/// Pops a block from `page`, an entry of the calling thread's direct tables.
#[inline(always)]
fn pop_page(page: *mut Page) -> Option<*mut u8> {
    // SAFETY: direct entries point at live pages of this heap, or at the
    // empty page, whose lists are empty (so nothing below writes it).
    let page = unsafe { &*page };
    match page.pop_free() {
        Some(b) => Some(b.cast()),
        // The free list ran dry: the thread's own frees, without the slow path.
        None => page.pop_local().map(|b| b.cast()),
    }
}

#[inline(never)]
fn malloc_generic(size: usize) -> *mut u8 {
    if size <= MAX_CLASS_SIZE {
        alloc_class(size_class::class_of(size))
    } else {
        before_bypass();
        huge::alloc(size, MIN_ALIGN, 0)
    }
}

/// Before an allocation that bypasses the heap (a huge block, a block
/// growing in place): a thread without a heap gets one, so that it counts
/// among the threads allocating at once (`huge::LIVE_THREADS`, which the
/// huge cache's budget follows: the harness's `large` allocates nothing
/// else); reclaim lockdep's check runs when the heap is watched (see
/// `Heap::watched`). One thread-local load and a flag.
#[inline]
pub(crate) fn before_bypass() {
    let heap = heap::current();
    if heap == empty_heap() {
        // A new heap is not watched; null (no memory) only loses the count.
        thread::init_heap();
        return;
    }
    // SAFETY: a heap other than the empty one is the thread's own: a
    // shared reference aliases no `&mut`.
    if unsafe { (*heap).watched.get() } {
        commit::on_watched_alloc();
    }
}

/// Allocates a block of `class`.
#[inline]
pub fn alloc_class(class: usize) -> *mut u8 {
    match pop_direct(class) {
        Some(b) => b,
        None => alloc_slow(class),
    }
}

/// Allocates `size` bytes aligned to `align` (a power of two; null if not).
pub fn malloc_aligned(size: usize, align: usize) -> *mut u8 {
    if !align.is_power_of_two() {
        return ptr::null_mut();
    }
    if align <= MIN_ALIGN {
        // Classes are multiples of 8, and multiples of 16 from 16 bytes up, so
        // a size rounded to the alignment lands on an aligned class.
        // `max` keeps a zero size off the 8-byte class.
        return match size.checked_add(align - 1) {
            Some(s) => malloc((s & !(align - 1)).max(align)),
            None => ptr::null_mut(),
        };
    }
    if align <= os::OS_PAGE && size <= MAX_CLASS_SIZE {
        if let Some(class) = size_class::class_for_aligned(size, align) {
            return alloc_class(class);
        }
    }
    before_bypass();
    huge::alloc(size, align, 0)
}

/// Allocates `size` zeroed bytes aligned to `align`, skipping the memset when
/// the memory comes fresh from the OS.
pub fn malloc_zeroed(size: usize, align: usize) -> *mut u8 {
    let p = malloc_aligned(size, align);
    if p.is_null() {
        return p;
    }
    let seg = segment::segment_of_block(p);
    // SAFETY: `p` is a live block of ours, so its segment is live.
    let s = unsafe { &*seg };
    let zero = if s.kind == Kind::Huge {
        s.huge_zero.get()
    } else {
        // SAFETY: `p` lies in the live segment `seg`; the page is this
        // thread's own (it just allocated from it), so its owner part is ours.
        unsafe { (*segment::page_of(seg, p)).own.is_zero.get() }
    };
    if zero {
        // Only the free-list link word was written.
        // SAFETY: the block is ours, at least a word long and aligned.
        unsafe { p.cast::<usize>().write(0) };
    } else {
        // SAFETY: the block is ours, with at least `size` writable bytes.
        unsafe { ptr::write_bytes(p, 0, size) };
    }
    p
}

/// The slow path: set up the thread's heap if needed, collect frees, find or
/// make a page with a free block. Null when memory cannot be had.
#[cold]
#[inline(never)]
fn alloc_slow(class: usize) -> *mut u8 {
    let mut heap = heap::current();
    if heap == empty_heap() {
        heap = thread::init_heap();
        if heap.is_null() {
            return ptr::null_mut();
        }
    }
    // SAFETY: the thread's heap (not the empty one) is owned by this
    // thread: the `&Heap` stays on it.
    let heap = unsafe { &*heap };
    if heap.watched.get() {
        // Reclaim lockdep: the thread holds a lock a shrinker takes.
        commit::on_watched_alloc();
    }
    page_alloc::drain_remote(heap);
    purge::tick(heap);
    find_block(heap, class)
}

/// Classes above a class whose free blocks it may take.
const BORROW_CLASSES: usize = 2;

/// Classes of blocks larger than this borrow ([`borrow_larger`]).
const BORROW_FROM: usize = 1024;

/// For a class of blocks above [`BORROW_FROM`] none of whose pages has a free
/// block: a hole of one of the next [`BORROW_CLASSES`] classes (a free block on
/// a page all carved), from the first of their pages that has one, rather than
/// a block carved anew. Pages of large blocks hold only a few, and each class
/// of a program that frees at random kept its own pages at its own high-water
/// mark, with holes that the requests of its neighbours, a little smaller,
/// could not use (the harness's `mix`, 8-64 KiB blocks: 6.1 MB in use in 9.0 MB
/// carved per heap; peak RSS 56.7 -> 54.8 MiB, and 54.5 borrowing from three
/// classes). Medium classes borrowed first; since blocks already freed come
/// first in [`find_block`], classes from 1 KiB up too: peak RSS `mix` 50.2 ->
/// 49.3 MiB, `server` 6.7 -> 6.3, `prodcons` 3.5 -> 3.2, the times unchanged.
/// Classes of 1 KiB and less do not: a class that borrows takes the slow path
/// for each block it borrows, where carving hands out 8 KiB of them at once,
/// and `perthread` (16 B - 1 KiB) took twice as long. Blocks a page carved but
/// has not handed out are left to their own class: taking them for smaller
/// requests while the program grows only makes the lender carve again, in
/// blocks that are then too big (`cargo bench --bench footprint`, its first
/// workload: peak 286.5 -> 293.2 MiB borrowing those too, 287.0 with holes
/// only). Not under a line: there a cache keeps its values in what the limit
/// allows, and a value in a block a class or two too big holds that much less
/// of them for as long as it lives (`stress` `cache-c` at 128 MiB of 1 GiB:
/// hits 0.92 -> 0.85 of an exact LRU's when borrowing). Only classes whose
/// blocks are aligned as this class's are (at least to the OS page, or to its
/// own largest power of two): an aligned request chose its class for that.
fn borrow_larger(heap: &Heap, class: usize) -> Option<*mut u8> {
    let bs = size_class::size_of(class);
    if bs <= BORROW_FROM || !commit::no_line() {
        return None;
    }
    let align = bs.trailing_zeros().min(os::OS_PAGE.trailing_zeros());
    for c in class + 1..(class + 1 + BORROW_CLASSES).min(CLASSES) {
        let other = size_class::size_of(c);
        if other > size_class::MAX_MEDIUM || other.trailing_zeros() < align {
            continue;
        }
        let mut page = heap.queues[c].head();
        while !page.is_null() {
            // SAFETY: pages on the heap's queues are live and owned by it.
            let p = unsafe { &*page };
            if p.all_carved() && p.has_free() {
                return p.pop_free().map(|b| b.cast());
            }
            page = p.own.next.get();
        }
    }
    None
}

/// A block of `class`: from the first of its pages with [`ENOUGH_FREE`]
/// free blocks (or as many as a carving gives, if fewer), after collecting
/// frees and moving exhausted pages to the full list; failing that (or
/// after passing [`MAX_FEW`] pages with fewer), from the first page with
/// fewer, unless, with no memory line, a page can still carve; failing
/// that, one a larger class lends ([`borrow_larger`]); then from the first
/// page that can carve (or commit again) more; from a new page if none.
/// Null when memory cannot be had.
///
/// Blocks already freed come before memory carved anew, wherever they lie
/// in the queue: carving the head page while pages behind it held free
/// blocks let each class commit up to a page past its high-water mark
/// (peak RSS on `benches/programs`: `perthread` 7.5 -> 7.3 MiB, `mix` 53.8
/// -> 49.5). A page with only a few free blocks serves only a few
/// allocations before the next slow path, though: taking any page with one
/// cost `perthread` 7% more time (callgrind: 253 -> 272 M instructions at a
/// quarter of its length; 7.15 MiB), where [`ENOUGH_FREE`] costs 1% (257
/// M; 7.3 MiB). Under a memory line every free block comes first.
fn find_block(heap: &Heap, class: usize) -> *mut u8 {
    let enough = ENOUGH_FREE.min(page::carve_blocks(size_class::size_of(class)));
    let mut charged = false;
    'walk: loop {
        // The first page that can refill (carve, or commit a block again),
        // or a later one whose refill commits nothing. Its cost is checked
        // against the limits after the walk, just before the refill: under
        // an exact line `commit::fits` reserves what it allows.
        let mut spare: *mut Page = ptr::null_mut();
        let mut spare_cost = 0;
        // The first page with fewer than `enough` free blocks, and how many
        // such pages the walk has passed.
        let mut few: *mut Page = ptr::null_mut();
        let mut fews = 0;
        let mut page = heap.queues[class].head();
        while !page.is_null() {
            // SAFETY: pages on the heap's queues are live and owned by it.
            let p = unsafe { &*page };
            if p.has_free() {
                // Frees from other threads still on `xfree` are not
                // counted: collecting them here as well left `prodcons` and
                // `churn` 4% higher (peak RSS, 11 interleaved runs).
                if p.free_blocks() >= enough {
                    return pop(to_front(heap, class, page));
                }
                if few.is_null() {
                    few = page;
                }
                fews += 1;
                if fews == MAX_FEW {
                    break;
                }
                page = p.own.next.get();
                continue;
            }
            if p.can_refill() {
                let cost = p.refill_cost();
                if spare.is_null() || (spare_cost > 0 && cost == 0) {
                    spare = page;
                    spare_cost = cost;
                }
                page = p.own.next.get();
                continue;
            }
            // Failing, blocks arrived from other threads: look again.
            if p.try_mark_full() {
                let next = p.own.next.get();
                // SAFETY: on its class queue; moved to the full list.
                unsafe {
                    heap.queue_remove(page);
                    heap.full.push_front(page);
                }
                page = next;
            }
        }
        // A page with a few free blocks waits only for a carving, with no
        // line in force: committing a given-back block again instead would
        // undo `decommit_idle` and save no slow path.
        // SAFETY: `spare` is null or a live page on this heap's queue.
        let carves = !spare.is_null() && unsafe { (*spare).own.decommitted.get().is_null() };
        if !few.is_null() && (!carves || !commit::no_line()) {
            return pop(to_front(heap, class, few));
        }
        if few.is_null() && !charged {
            if let Some(b) = borrow_larger(heap, class) {
                return b;
            }
        }
        let mut over_limit = 0;
        if !spare.is_null() {
            // Carving that would pass the limit waits: reclaim may re-enter
            // this heap and retire the very page walked to, so it runs here
            // (`charge`), and the walk starts over once.
            if spare_cost == 0 || commit::fits(spare_cost) {
                // SAFETY: as above; `can_refill` said it has a block to add.
                if unsafe { (*spare).refill() } {
                    return pop(to_front(heap, class, spare));
                }
            } else {
                over_limit = spare_cost;
            }
        }
        // The refill was refused: a page with a few free blocks still
        // comes before a charge and a new page.
        if !few.is_null() {
            return pop(to_front(heap, class, few));
        }
        if over_limit > 0 && !charged && commit::charge(over_limit) {
            charged = true;
            continue 'walk;
        }
        break;
    }
    let page = page_alloc::new_page(heap, class);
    if page.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: a new page of this heap, on no list yet.
    unsafe {
        (*page).extend();
        heap.queue_push(page);
    }
    pop(page)
}

/// Free blocks a page needs for [`find_block`] to take it before carving
/// (with no memory line): at most one slow path per 16 blocks.
const ENOUGH_FREE: usize = 16;

/// Pages with fewer than [`ENOUGH_FREE`] free blocks that [`find_block`]
/// passes before it takes the first of them: the walk stays short when a
/// class has many such pages (without the cap, 8,000 pages of 64 B blocks
/// each with one free block took 14 times as long to allocate again as
/// before `find_block`, every slow path walking all of them).
const MAX_FEW: usize = 8;

/// Takes a block off the `free` list of `page`, a live page of the calling
/// thread's heap that has one.
fn pop(page: *mut Page) -> *mut u8 {
    // SAFETY: the callers pass a live page of this thread's heap.
    let block = unsafe { (*page).pop_free() };
    debug_assert!(block.is_some());
    block.map_or(ptr::null_mut(), |b| b.cast())
}

/// Moves `page`, on the queue of `class`, to its front; returns it.
fn to_front(heap: &Heap, class: usize, page: *mut Page) -> *mut Page {
    if page != heap.queues[class].head() {
        // SAFETY: the page is on this queue; it moves to the front.
        unsafe {
            heap.queue_remove(page);
            heap.queue_push(page);
        }
    }
    page
}
