//! Thread heaps and the allocation paths: the fast path and its slow path.
//!
//! A heap is owned by one thread at a time. For every size class it keeps a
//! queue of pages; `direct[class]` is the queue's head (or the static empty
//! page), so the fast path is: one table load for the class, one load for the
//! page, pop its `free` list. Pages with no free block move to the `full`
//! list; a remote free into a full page pushes the page on `remote_pages`,
//! which the owner drains on its slow path. Heaps are never unmapped: a remote
//! thread may always follow `page.heap`.
//!
//! Invariant: `direct[c]` is `queues[c].head`, or the empty page when the
//! queue is empty; every page of the heap is on exactly one of its queues,
//! its full list, or (transiently) its `remote_pages` stack as well.

use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use crate::page::{state, Block, Page, PF_IN_FULL};
use crate::raw::MIN_ALIGN;
use crate::segment::{self, Kind, Segment};
use crate::size_class::{self, CLASSES, MAX_CLASS_SIZE, MAX_MEDIUM, MAX_SMALL};
use crate::{free, huge, os, purge, thread};

/// A doubly linked list of pages.
#[derive(Clone, Copy)]
pub struct PageQueue {
    /// First page (allocation happens here).
    pub head: *mut Page,
    /// Last page.
    pub tail: *mut Page,
}

impl PageQueue {
    const EMPTY: PageQueue = PageQueue { head: ptr::null_mut(), tail: ptr::null_mut() };

    /// # Safety
    ///
    /// `page` is live and on no list.
    unsafe fn push_front(&mut self, page: *mut Page) {
        // SAFETY: caller promise; the queue's pages are live.
        unsafe {
            (*page).prev = ptr::null_mut();
            (*page).next = self.head;
            if self.head.is_null() {
                self.tail = page;
            } else {
                (*self.head).prev = page;
            }
        }
        self.head = page;
    }

    /// # Safety
    ///
    /// `page` is live and on this queue.
    unsafe fn remove(&mut self, page: *mut Page) {
        // SAFETY: caller promise; the queue's pages are live.
        unsafe {
            let (prev, next) = ((*page).prev, (*page).next);
            if prev.is_null() {
                self.head = next;
            } else {
                (*prev).next = next;
            }
            if next.is_null() {
                self.tail = prev;
            } else {
                (*next).prev = prev;
            }
            (*page).next = ptr::null_mut();
            (*page).prev = ptr::null_mut();
        }
    }
}

/// A thread heap. See the module doc for its invariant.
#[repr(C)]
pub struct Heap {
    /// Page to allocate from, per class.
    pub direct: [*mut Page; CLASSES],
    /// Pages with (possibly) free blocks, per class.
    pub queues: [PageQueue; CLASSES],
    /// Pages with no free block.
    pub full: PageQueue,
    /// Full pages that got remote frees, pushed by the freeing threads.
    pub remote_pages: AtomicPtr<Page>,
    /// Segments with free pages, per kind (small, medium, large).
    pub segments: [*mut Segment; 3],
    /// Whether a live thread owns the heap.
    pub owned: bool,
    /// When the heap next gives back its empty pages (ms).
    pub next_collect: u64,
    /// The purge epoch the heap last collected for.
    pub collect_epoch: u64,
    /// Bytes of other heaps' blocks this thread has freed (a running total).
    /// They go back to their owners' pages, so committed memory drops only
    /// when the owners collect; reclaim credits them to the shrinker that
    /// freed them instead of scanning on.
    pub remote_freed: usize,
    /// The block this thread's last growing `realloc` returned: growing it
    /// again marks a buffer being appended to (compared, never read).
    pub last_grown: usize,
    /// Link in the list of all heaps.
    pub all_next: *mut Heap,
    /// Link in the list of abandoned heaps.
    pub abandoned_next: *mut Heap,
}

/// A static the allocator points at but never writes.
#[repr(transparent)]
pub struct StaticCell<T>(UnsafeCell<T>);
// SAFETY: the empty page and heap are only read (their lists are empty, so
// no path writes them; `alloc_slow` checks for them before writing).
unsafe impl<T> Sync for StaticCell<T> {}

static EMPTY_PAGE: StaticCell<Page> = StaticCell(UnsafeCell::new(Page::empty()));
/// The heap of threads that have not allocated yet: every class misses.
pub static EMPTY_HEAP: StaticCell<Heap> = StaticCell(UnsafeCell::new(Heap::new()));

/// The address of the empty heap.
pub const fn empty_heap() -> *mut Heap {
    EMPTY_HEAP.0.get()
}

impl Heap {
    /// A heap with no pages.
    pub const fn new() -> Heap {
        Heap {
            direct: [EMPTY_PAGE.0.get(); CLASSES],
            queues: [PageQueue::EMPTY; CLASSES],
            full: PageQueue::EMPTY,
            remote_pages: AtomicPtr::new(ptr::null_mut()),
            segments: [ptr::null_mut(); 3],
            owned: false,
            next_collect: 0,
            collect_epoch: 0,
            remote_freed: 0,
            last_grown: 0,
            all_next: ptr::null_mut(),
            abandoned_next: ptr::null_mut(),
        }
    }

    fn set_direct(&mut self, class: usize) {
        let head = self.queues[class].head;
        self.direct[class] = if head.is_null() { EMPTY_PAGE.0.get() } else { head };
    }

    /// # Safety
    ///
    /// `page` belongs to this heap and is on no list.
    pub unsafe fn queue_push(&mut self, page: *mut Page) {
        // SAFETY: caller promise.
        let class = unsafe { (*page).class as usize };
        // SAFETY: caller promise.
        unsafe { self.queues[class].push_front(page) };
        self.set_direct(class);
    }

    /// # Safety
    ///
    /// `page` is on this heap's queue for its class.
    pub unsafe fn queue_remove(&mut self, page: *mut Page) {
        // SAFETY: caller promise.
        let class = unsafe { (*page).class as usize };
        // SAFETY: caller promise.
        unsafe { self.queues[class].remove(page) };
        self.set_direct(class);
    }

    /// Moves a full page back to its class queue (a block of it was freed).
    ///
    /// # Safety
    ///
    /// `page` is on this heap's full list.
    pub unsafe fn unfull(&mut self, page: *mut Page) {
        // SAFETY: caller promise.
        unsafe {
            (*page).clear_full();
            self.full.remove(page);
            self.queue_push(page);
        }
    }
}

/// Bytes of other threads' blocks the calling thread has freed so far (see
/// `Heap::remote_freed`); 0 for a thread without a heap.
pub fn remote_freed() -> usize {
    let heap = thread::heap();
    // SAFETY: the thread's heap is its own (or the empty heap, never written).
    unsafe { (*heap).remote_freed }
}

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

/// Pops a block from the first page of `class` in this thread's heap.
#[inline(always)]
fn pop_direct(class: usize) -> Option<*mut u8> {
    debug_assert!(class < CLASSES);
    let heap = thread::heap();
    // SAFETY: the thread's heap is owned by this thread (or is the empty
    // heap, whose direct pages have no free block); `class < CLASSES`, and
    // direct entries point at live pages of this heap or at the empty page.
    unsafe {
        let page = *(*heap).direct.get_unchecked(class);
        let block = (*page).free;
        if block.is_null() {
            return None;
        }
        (*page).free = (*block).next;
        (*page).set_used((*page).used() + 1);
        Some(block.cast())
    }
}

#[inline(never)]
fn malloc_generic(size: usize) -> *mut u8 {
    if size <= MAX_CLASS_SIZE {
        alloc_class(size_class::class_of(size))
    } else {
        huge::alloc(size, MIN_ALIGN, 0)
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
    // SAFETY: `p` is a live block of ours, so its segment and page are live;
    // the block has at least `size` writable bytes.
    unsafe {
        let zero = if (*seg).kind == Kind::Huge { (*seg).huge_zero } else { (*segment::page_of(seg, p)).is_zero };
        if zero {
            // Only the free-list link word was written.
            p.cast::<usize>().write(0);
        } else {
            ptr::write_bytes(p, 0, size);
        }
    }
    p
}

/// Blocks that `realloc` grows past this become huge blocks with room to
/// grow in place: copying a growing buffer through every size class costs
/// more than one mapping.
const REALLOC_HUGE_MIN: usize = 64 << 10;

/// The same from this size for a block the thread grows twice in a row (a
/// buffer being appended to, which glibc grows in place at its heap top),
/// but only into a freed huge block the cache holds: never a new mapping
/// (a program building many such buffers would make a system call each).
const STREAK_HUGE_MIN: usize = 4 << 10;

/// A buffer grown by at most half at a time gets room for half as much
/// again from this size: below it, copies are cheap and the room would
/// cost more.
const ROOMY_MIN: usize = 1 << 10;

/// Address space a growing block reserves: four times the size asked, and
/// at least the rest of its segment, so that a buffer grows to about 4 MiB
/// without a copy. Untouched reserve costs no memory.
fn growing_reserve(size: usize) -> usize {
    (size * 4).max(segment::SEGMENT_SIZE - segment::HEADER_RESERVE)
}

/// The block a block of `usable` bytes growing to `new_size` moves to; a
/// `streak` is a block this thread grew last (see [`Heap::last_grown`]).
fn grown_block(new_size: usize, usable: usize, align: usize, streak: bool) -> *mut u8 {
    if (STREAK_HUGE_MIN..=isize::MAX as usize / 8).contains(&new_size) {
        let huge_align = align.max(MIN_ALIGN);
        let q = if new_size >= REALLOC_HUGE_MIN {
            huge::alloc(new_size, huge_align, growing_reserve(new_size))
        } else if streak {
            huge::alloc_cached(new_size, huge_align, growing_reserve(new_size))
        } else {
            ptr::null_mut()
        };
        if !q.is_null() {
            return q;
        }
    }
    if streak && new_size >= ROOMY_MIN && new_size - usable <= usable / 2 {
        // Grown by at most half at a time (appended to in pieces, or an
        // array over-allocating by 1/8 to 1/2 as CPython's do): room for
        // half as much again, so that the next class boundaries do not each
        // copy the whole buffer (not more: a block less than half used
        // counts as shrunk, see `realloc`). Doubling buffers get no room:
        // it would not hold their next step.
        let roomy = malloc_aligned(new_size.saturating_add(new_size / 2), align);
        if !roomy.is_null() {
            return roomy;
        }
    }
    malloc_aligned(new_size, align)
}

/// Resizes in place when the block's usable size already fits and is not
/// more than twice what is asked, or when a huge block's reserve allows;
/// otherwise allocates (see [`grown_block`] for a growing one), copies and
/// frees.
///
/// # Safety
///
/// `p` is null or a live block of this allocator aligned to `align`.
pub unsafe fn realloc(p: *mut u8, new_size: usize, align: usize) -> *mut u8 {
    if p.is_null() {
        return malloc_aligned(new_size, align);
    }
    let seg = segment::segment_of_block(p);
    // SAFETY: caller promise: `p` is live, so its segment is.
    let (huge, usable) = unsafe {
        if (*seg).kind == Kind::Huge {
            (true, (*seg).usable)
        } else {
            (false, (*segment::page_of(seg, p)).block_size)
        }
    };
    if new_size <= usable && new_size >= usable / 2 {
        return p;
    }
    // SAFETY: `seg` is the live huge segment of the caller's block.
    // Growth takes the reserve; shrinking stays in place while still huge.
    if huge && (new_size > usable || new_size > MAX_CLASS_SIZE) && unsafe { huge::resize_in_place(seg, new_size) } {
        return p;
    }
    let grows = new_size > usable;
    let heap = thread::heap();
    // SAFETY: a heap other than the empty one is this thread's own.
    let streak = grows && heap != empty_heap() && unsafe { (*heap).last_grown } == p as usize;
    let q = if grows { grown_block(new_size, usable, align, streak) } else { malloc_aligned(new_size, align) };
    if !q.is_null() {
        // SAFETY: both blocks are live, distinct, and hold at least the
        // copied length; `p` is freed once, after the copy.
        unsafe {
            ptr::copy_nonoverlapping(p, q, usable.min(new_size));
            free::free_block(p);
        }
        // The heap may have been set up by the allocation above.
        let heap = thread::heap();
        if grows && heap != empty_heap() {
            // SAFETY: as above: this thread's own heap.
            unsafe { (*heap).last_grown = q as usize };
        }
    }
    q
}

/// The slow path: set up the thread's heap if needed, collect frees, find or
/// make a page with a free block. Null when memory cannot be had.
#[cold]
#[inline(never)]
fn alloc_slow(class: usize) -> *mut u8 {
    let mut heap = thread::heap();
    if heap == empty_heap() {
        heap = thread::init_heap();
        if heap.is_null() {
            return ptr::null_mut();
        }
    }
    // SAFETY: `heap` is owned by this thread; pages it finds are its own.
    unsafe {
        drain_remote(heap);
        purge::tick(heap);
        let page = find_page(heap, class);
        if page.is_null() {
            return ptr::null_mut();
        }
        let block = (*page).free;
        (*page).free = (*block).next;
        (*page).set_used((*page).used() + 1);
        block.cast()
    }
}

/// First page of `class` with a free block, after collecting frees and
/// moving exhausted pages to the full list; a new page if none.
///
/// # Safety
///
/// `heap` is owned by the calling thread.
unsafe fn find_page(heap: *mut Heap, class: usize) -> *mut Page {
    // SAFETY: caller promise; every page on the heap's lists is live.
    unsafe {
        let h = &mut *heap;
        let mut charged = false;
        'walk: loop {
            // Carving that would pass the limit waits: reclaim may re-enter
            // this heap and retire the very page being walked, so it runs
            // after the walk, and the walk starts over once.
            let mut over_limit = 0;
            let mut page = h.queues[class].head;
            while !page.is_null() {
                if (*page).free.is_null() {
                    (*page).collect();
                }
                if (*page).free.is_null() {
                    let cost = (*page).carve_cost();
                    if cost > 0 && !crate::commit::fits(cost) {
                        over_limit = over_limit.max(cost);
                        page = (*page).next;
                        continue;
                    }
                }
                if !(*page).free.is_null() || (*page).extend() {
                    if page != h.queues[class].head {
                        h.queue_remove(page);
                        h.queue_push(page);
                    }
                    return page;
                }
                if (*page).try_mark_full() {
                    let next = (*page).next;
                    h.queue_remove(page);
                    h.full.push_front(page);
                    page = next;
                }
            }
            if over_limit > 0 && !charged && crate::commit::charge(over_limit) {
                charged = true;
                continue 'walk;
            }
            break;
        }
        let page = new_page(heap, class);
        if !page.is_null() {
            (*page).extend();
            (*heap).queue_push(page);
        }
        page
    }
}

fn kind_of(block_size: usize) -> Kind {
    if block_size <= MAX_SMALL {
        Kind::Small
    } else if block_size <= MAX_MEDIUM {
        Kind::Medium
    } else {
        Kind::Large
    }
}

/// Bytes `Page::extend` carves at a time (at least one block).
pub const FIRST_CARVE: usize = 16 * 1024;

/// Takes a free page from one of the heap's segments (a new segment if
/// none), preferring pages still committed, and sets it up for `class`.
///
/// # Safety
///
/// `heap` is owned by the calling thread.
unsafe fn new_page(heap: *mut Heap, class: usize) -> *mut Page {
    let block_size = size_class::size_of(class);
    let kind = kind_of(block_size);
    let mut charged = false;
    // SAFETY: caller promise; the heap's segments are live and owned by it.
    unsafe {
        loop {
            let seg = (*heap).segments[kind as usize];
            if seg.is_null() {
                let Some(seg) = segment::acquire_segment(kind) else { return ptr::null_mut() };
                (*seg).heap = heap;
                (*seg).used_pages = 0;
                seg_list_push(heap, seg);
                continue;
            }
            let Some((page, was)) = pick_free_page(seg) else { continue };
            if was == state::PURGED && !charged {
                // Reclaim may run here and re-enter this heap; look again
                // after. What the page's first carving will commit is charged.
                let first = FIRST_CARVE.max(block_size).next_multiple_of(os::OS_PAGE).min((*page).size);
                if !crate::commit::charge(first) {
                    return ptr::null_mut();
                }
                charged = true;
                continue;
            }
            // Acquire pairs with the purger's Release of PURGED (its madvise
            // is done) and the owner's Release of FREE.
            if (*page).state.compare_exchange(was, state::IN_USE, Ordering::Acquire, Ordering::Relaxed).is_err() {
                continue;
            }
            (*seg).used_pages += 1;
            if (*seg).used_pages == (*seg).page_count {
                seg_list_remove(heap, seg);
            }
            (*page).init(heap, class, block_size, was == state::PURGED);
            return page;
        }
    }
}

/// A free page of `seg` and its state: committed ones first. Spins past a
/// page the purger is working on. `None` (after unlisting `seg`) when the
/// segment has none, which only a racing re-entry can cause.
///
/// # Safety
///
/// `seg` is live and owned by the calling thread's heap.
unsafe fn pick_free_page(seg: *mut Segment) -> Option<(*mut Page, u8)> {
    loop {
        let mut purged = None;
        let mut purging = false;
        // SAFETY: caller promise.
        let s = unsafe { &mut *seg };
        for page in s.pages[..s.page_count].iter_mut() {
            // Relaxed: the CAS in `new_page` re-checks with Acquire.
            match page.state.load(Ordering::Relaxed) {
                state::FREE => return Some((page, state::FREE)),
                state::PURGED if purged.is_none() => purged = Some(page as *mut Page),
                state::PURGING => purging = true,
                _ => {}
            }
        }
        if let Some(p) = purged {
            return Some((p, state::PURGED));
        }
        if !purging {
            // SAFETY: the segment is on its heap's list (it was found there).
            unsafe { seg_list_remove(s.heap, seg) };
            return None;
        }
        std::thread::yield_now();
    }
}

/// # Safety
///
/// `seg` is live, owned by `heap`, and not on its list.
unsafe fn seg_list_push(heap: *mut Heap, seg: *mut Segment) {
    // SAFETY: caller promise.
    unsafe {
        let head = &mut (*heap).segments[(*seg).kind as usize];
        (*seg).prev = ptr::null_mut();
        (*seg).next = *head;
        if !head.is_null() {
            (**head).prev = seg;
        }
        *head = seg;
        (*seg).in_heap_list = true;
    }
}

/// # Safety
///
/// `seg` is live and owned by `heap`.
unsafe fn seg_list_remove(heap: *mut Heap, seg: *mut Segment) {
    // SAFETY: caller promise.
    unsafe {
        if !(*seg).in_heap_list {
            return;
        }
        let (prev, next) = ((*seg).prev, (*seg).next);
        if prev.is_null() {
            (*heap).segments[(*seg).kind as usize] = next;
        } else {
            (*prev).next = next;
        }
        if !next.is_null() {
            (*next).prev = prev;
        }
        (*seg).in_heap_list = false;
    }
}

/// Called by the owner when a page's `used` reached zero. Keeps the page if it
/// is the only one of its class (a malloc/free loop must not churn pages);
/// otherwise gives it back to its segment.
///
/// # Safety
///
/// `page` is on `heap`'s queue for its class, `heap` owned by the caller.
pub unsafe fn retire(heap: *mut Heap, page: *mut Page) {
    // SAFETY: caller promise.
    unsafe {
        let q = &(*heap).queues[(*page).class as usize];
        if q.head == page && (*page).next.is_null() {
            return;
        }
        (*heap).queue_remove(page);
        release_page(heap, page);
    }
}

/// Gives an empty page back to its segment, and the segment back to the
/// cache when no page of it is in use.
///
/// # Safety
///
/// `page` has no live block, is owned by `heap`, and is on none of its lists.
pub unsafe fn release_page(heap: *mut Heap, page: *mut Page) {
    let seg = segment::segment_of(page.cast());
    // SAFETY: caller promise; the page record lives in its segment's header.
    unsafe {
        debug_assert!(!(*page).is_queued());
        // A free page belongs to no heap: `free` compares `page.heap` with
        // the caller's heap before anything else, so a stale pointer into
        // it cannot pass as the owner's.
        (*page).heap = ptr::null_mut();
        // Relaxed: published by the Release store of FREE below.
        (*page).freed_at.store(os::now_ms(), Ordering::Relaxed);
        // Release pairs with the Acquire CAS of the purger and of `new_page`.
        (*page).state.store(state::FREE, Ordering::Release);
        (*seg).used_pages -= 1;
        if (*seg).used_pages == 0 {
            seg_list_remove(heap, seg);
            segment::release_segment(seg);
        } else if !(*seg).in_heap_list {
            seg_list_push(heap, seg);
        }
    }
}

/// Takes back full pages that other threads freed into.
///
/// # Safety
///
/// `heap` is owned by the calling thread.
pub unsafe fn drain_remote(heap: *mut Heap) {
    // SAFETY: caller promise. Pages on the stack stay live: each carries
    // XF_QUEUED until this drain clears it, and such pages are never retired.
    unsafe {
        // Relaxed peek; the swap below acquires.
        if (*heap).remote_pages.load(Ordering::Relaxed).is_null() {
            return;
        }
        // Acquire pairs with the pushers' Release CAS in `free::free_remote`.
        let mut page = (*heap).remote_pages.swap(ptr::null_mut(), Ordering::Acquire);
        while !page.is_null() {
            // Relaxed: ordered by the Acquire swap above.
            let next = (*page).remote_next.load(Ordering::Relaxed);
            if (*page).flags & PF_IN_FULL != 0 {
                (*heap).unfull(page);
            }
            (*page).collect_clearing_flags();
            if (*page).used() == 0 {
                retire(heap, page);
            }
            page = next;
        }
    }
}

/// Gives back every empty page the heap kept, including the last of each
/// class. Used before abandoning a heap, on decay ticks and on `purge()`.
///
/// # Safety
///
/// `heap` is owned by the calling thread.
pub unsafe fn release_empty_pages(heap: *mut Heap) {
    // SAFETY: caller promise.
    unsafe {
        drain_remote(heap);
        for class in 0..CLASSES {
            let mut page = (*heap).queues[class].head;
            while !page.is_null() {
                let next = (*page).next;
                (*page).collect();
                if (*page).used() == 0 && !(*page).is_queued() {
                    (*heap).queue_remove(page);
                    release_page(heap, page);
                }
                page = next;
            }
        }
    }
}

/// The block-level free for the owning thread (called from `free.rs`).
///
/// # Safety
///
/// `page` belongs to `heap`, owned by the calling thread, and `block` is a
/// live block of it.
#[inline(always)]
pub unsafe fn free_local(heap: *mut Heap, page: *mut Page, block: *mut u8) {
    // SAFETY: caller promise.
    unsafe {
        let b = block.cast::<Block>();
        (*b).next = (*page).local_free;
        (*page).local_free = b;
        (*page).set_used((*page).used() - 1);
        if (*page).flags != 0 {
            free_local_slow(heap, page);
        }
    }
}

/// A block came back to a full page: the page goes back on its queue.
/// Pages that become empty are not retired here but on the next decay tick
/// (`release_empty_pages`), which keeps `used == 0` off the fast path and
/// spares a malloc/free loop from giving its page back each time.
#[cold]
#[inline(never)]
unsafe fn free_local_slow(heap: *mut Heap, page: *mut Page) {
    // SAFETY: caller promise (see `free_local`).
    unsafe {
        if (*page).flags & PF_IN_FULL != 0 {
            (*heap).unfull(page);
        }
    }
}
