//! Thread heaps: the per-thread structure that owns pages, and the
//! calling thread's pointer to its heap.
//!
//! A heap is owned by one thread at a time. For every size class it keeps a
//! queue of pages (`page_queue.rs`); `direct[class]` is the queue's head (or
//! the static empty page), so the allocation fast path (`alloc.rs`) is: one
//! table load for the class, one load for the page, pop its `free` list.
//! Pages with no free block move to the `full` list; a remote free into a
//! full page pushes the page on `remote_pages`, which the owner drains on its
//! slow path (`page_alloc.rs`). Heaps are never unmapped: a remote thread may
//! always follow `page.heap`.
//!
//! Invariant: `direct[c]` is `queues[c].head`, or the empty page when the
//! queue is empty or the heap is `watched` (reclaim lockdep sends every
//! allocation of a thread holding a lock a shrinker takes to the slow
//! path, where it is checked: `crate::lockdep`); every page of the heap is on exactly one of its queues,
//! its full list, or (transiently) its `remote_pages` stack as well. Every
//! field but `remote_pages` is touched only by the owning thread (or, for
//! `owned` and the pool links, under the heap pool's lock in `thread.rs`):
//! they are `Cell`s, and the owner works through `&Heap`, since reclaim may
//! re-enter the heap from inside its own slow path and other threads push
//! on `remote_pages` at any time. `Heap` is not `Sync`, so a `&Heap` never
//! leaves the thread that made it: a `&Heap` is made only by the thread
//! that owns the heap (or holds it off the abandoned list), and holding one
//! is the proof of ownership every function taking `&Heap` relies on.
//! Other threads reach a heap only through `remote_pages`, by raw pointer.

use core::cell::{Cell, UnsafeCell};
use core::ptr;
use core::sync::atomic::AtomicPtr;

use crate::page::{Page, PF_IN_FULL};
use crate::page_queue::PageQueue;
use crate::segment::Segment;
use crate::size_class::{c_words_of, CLASSES, C_WORDS};

/// A thread heap. See the module doc for its invariant.
#[repr(C)]
pub struct Heap {
    /// Page to allocate from, per class.
    pub direct: [Cell<*mut Page>; CLASSES],
    /// The same pages for C's `malloc` up to 1 KiB, indexed by
    /// `(size + 7) / 8`: entry `w` is `direct[class_of_c(8 * w)]`, so the C
    /// fast path skips the class table.
    pub direct_c: [Cell<*mut Page>; C_WORDS],
    /// Pages with (possibly) free blocks, per class.
    pub queues: [PageQueue; CLASSES],
    /// Pages with no free block.
    pub full: PageQueue,
    /// Full pages that got remote frees, pushed by the freeing threads.
    pub remote_pages: AtomicPtr<Page>,
    /// Segments with free pages, per kind (small, medium, large).
    pub segments: [Cell<*mut Segment>; 3],
    /// Whether a live thread owns the heap (under the pool's lock).
    pub owned: Cell<bool>,
    /// When the heap next gives back its empty pages (ms).
    pub next_collect: Cell<u64>,
    /// The purge epoch the heap last collected for.
    pub collect_epoch: Cell<u64>,
    /// Slow paths left before the decay tick reads the clock again. A new
    /// heap starts with a full count: a short program that never reaches
    /// its 17th slow path never calls `clock_gettime` from here, and its
    /// first allocation maps one 64 KiB window of libc's text fewer (a
    /// one-malloc program: 1,860 -> 1,796 KiB resident).
    pub tick_countdown: Cell<u32>,
    /// Bytes of other heaps' blocks this thread has freed (a running total).
    /// They go back to their owners' pages, so committed memory drops only
    /// when the owners collect; reclaim credits them to the shrinker that
    /// freed them instead of scanning on.
    pub remote_freed: Cell<usize>,
    /// The block this thread's last growing `realloc` returned: growing it
    /// again marks a buffer being appended to (compared, never read).
    pub last_grown: Cell<usize>,
    /// Link in the list of all heaps (under the pool's lock).
    pub all_next: Cell<*mut Heap>,
    /// Link in the list of abandoned heaps (under the pool's lock).
    pub abandoned_next: Cell<*mut Heap>,
    /// Reclaim lockdep watches the owner's allocations: every `direct`
    /// entry is the empty page, so each allocation takes the slow path.
    pub watched: Cell<bool>,
}

/// A static the allocator points at but never writes.
#[repr(transparent)]
pub struct StaticCell<T>(UnsafeCell<T>);
// SAFETY: the empty page and heap are only read (their lists are empty, so
// no path writes them; `alloc_slow` replaces the empty heap before writing).
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
            direct: [const { Cell::new(EMPTY_PAGE.0.get()) }; CLASSES],
            direct_c: [const { Cell::new(EMPTY_PAGE.0.get()) }; C_WORDS],
            queues: [const { PageQueue::new() }; CLASSES],
            full: PageQueue::new(),
            remote_pages: AtomicPtr::new(ptr::null_mut()),
            segments: [const { Cell::new(ptr::null_mut()) }; 3],
            owned: Cell::new(false),
            next_collect: Cell::new(0),
            collect_epoch: Cell::new(0),
            tick_countdown: Cell::new(crate::purge::TICK_EVERY),
            remote_freed: Cell::new(0),
            last_grown: Cell::new(0),
            all_next: Cell::new(ptr::null_mut()),
            abandoned_next: Cell::new(ptr::null_mut()),
            watched: Cell::new(false),
        }
    }

    /// The heap as the opaque owner pointer pages keep.
    #[inline(always)]
    pub fn id(&self) -> *mut u8 {
        ptr::from_ref(self).cast_mut().cast()
    }

    fn set_direct(&self, class: usize) {
        let head = self.queues[class].head();
        let page = if head.is_null() || self.watched.get() { EMPTY_PAGE.0.get() } else { head };
        self.direct[class].set(page);
        for w in c_words_of(class) {
            self.direct_c[w].set(page);
        }
    }

    /// Starts (`true`) or stops watching the owner's allocations: while
    /// watched, every class misses the fast path and the slow path calls
    /// the checker (`commit::on_watched_alloc`). Owner only.
    pub fn set_watched(&self, on: bool) {
        self.watched.set(on);
        for class in 0..CLASSES {
            self.set_direct(class);
        }
    }

    /// Puts `page` first on its class's queue (where allocation happens).
    ///
    /// # Safety
    ///
    /// `page` belongs to this heap, is on no list, and the calling thread
    /// owns the heap.
    pub unsafe fn queue_push(&self, page: *mut Page) {
        // SAFETY: the caller promises a live page of this heap.
        let class = unsafe { (*page).class() };
        // SAFETY: as above; the queue holds only this heap's pages.
        unsafe { self.queues[class].push_front(page) };
        self.set_direct(class);
    }

    /// Takes `page` off its class's queue.
    ///
    /// # Safety
    ///
    /// `page` is on this heap's queue for its class, and the calling thread
    /// owns the heap.
    pub unsafe fn queue_remove(&self, page: *mut Page) {
        // SAFETY: the caller promises a live page of this heap.
        let class = unsafe { (*page).class() };
        // SAFETY: the caller promises `page` is on this queue.
        unsafe { self.queues[class].remove(page) };
        self.set_direct(class);
    }

    /// Moves a full page back to its class queue (a block of it was freed),
    /// at the tail: with one free block it would serve one allocation and
    /// go full again, each time through the slow path, were it put first;
    /// at the tail it gathers frees while the pages before it are used up.
    ///
    /// # Safety
    ///
    /// `page` is on this heap's full list, and the calling thread owns the heap.
    pub unsafe fn unfull(&self, page: *mut Page) {
        // SAFETY: the caller promises a live page of this heap.
        let p = unsafe { &*page };
        debug_assert!(p.own.flags.get() & PF_IN_FULL != 0);
        p.clear_full();
        // SAFETY: the caller promises the page is on the full list.
        unsafe { self.full.remove(page) };
        let class = p.class();
        // SAFETY: off every list now, and ours.
        unsafe { self.queues[class].push_back(page) };
        self.set_direct(class);
    }
}

/// The calling thread's heap pointer, on x86-64 Linux in a TLS slot read
/// with the initial-exec model: one `mov` from `%fs`, where Rust's
/// `thread_local!` in a shared library (LD_PRELOAD) calls `__tls_get_addr`
/// (11 instructions) on every malloc and free. The slot starts out pointing
/// at the empty heap. Initial-exec TLS suits a library that is preloaded or
/// linked; one that is `dlopen`ed draws on glibc's small static TLS surplus
/// (8 bytes here). Not under Miri, which cannot run inline assembly.
#[cfg(all(target_arch = "x86_64", target_os = "linux", not(miri)))]
mod slot {
    use super::{Heap, EMPTY_HEAP};

    core::arch::global_asm!(
        ".section .tdata.shrinkalloc_heap,\"awT\",@progbits",
        ".p2align 3",
        ".globl __shrinkalloc_tls_heap",
        ".hidden __shrinkalloc_tls_heap",
        ".type __shrinkalloc_tls_heap, @object",
        ".size __shrinkalloc_tls_heap, 8",
        "__shrinkalloc_tls_heap:",
        ".quad {empty}",
        ".text",
        empty = sym EMPTY_HEAP,
    );

    #[inline(always)]
    pub fn get() -> *mut Heap {
        let h: *mut Heap;
        // SAFETY: reads this thread's 8-byte slot defined above, at its
        // initial-exec offset from the thread pointer; touches nothing else.
        unsafe {
            core::arch::asm!(
                "mov {h}, qword ptr [rip + __shrinkalloc_tls_heap@GOTTPOFF]",
                "mov {h}, qword ptr fs:[{h}]",
                h = out(reg) h,
                options(nostack, readonly, preserves_flags),
            );
        }
        h
    }

    pub fn set(heap: *mut Heap) {
        // SAFETY: writes this thread's slot defined above and nothing else.
        unsafe {
            core::arch::asm!(
                "mov {t}, qword ptr [rip + __shrinkalloc_tls_heap@GOTTPOFF]",
                "mov qword ptr fs:[{t}], {h}",
                t = out(reg) _,
                h = in(reg) heap,
                options(nostack, preserves_flags),
            );
        }
    }
}

/// Elsewhere (other targets, and under Miri): a
/// const-initialised `thread_local!` with no destructor and no lazy
/// registration, readable in `malloc` at any point of a thread's life.
#[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(miri))))]
mod slot {
    use core::cell::Cell;

    use super::{empty_heap, Heap};

    thread_local! {
        static HEAP: Cell<*mut Heap> = const { Cell::new(empty_heap()) };
    }

    #[inline(always)]
    pub fn get() -> *mut Heap {
        // After the thread's TLS was torn down, it allocates as a new
        // thread would: from the empty heap, then a heap of its own.
        HEAP.try_with(Cell::get).unwrap_or(empty_heap())
    }

    pub fn set(heap: *mut Heap) {
        let _ = HEAP.try_with(|h| h.set(heap));
    }
}

/// The calling thread's heap (the empty heap before its first allocation).
#[inline(always)]
pub fn current() -> *mut Heap {
    slot::get()
}

/// Makes `heap` the calling thread's heap (`thread.rs`, at thread start
/// and exit).
pub fn set_current(heap: *mut Heap) {
    slot::set(heap)
}

/// Bytes of other threads' blocks the calling thread has freed so far (see
/// `Heap::remote_freed`); 0 for a thread without a heap.
pub fn remote_freed() -> usize {
    // SAFETY: the thread's heap is its own (or the empty heap, never
    // written): a shared reference to it cannot alias a `&mut`.
    unsafe { (*current()).remote_freed.get() }
}
