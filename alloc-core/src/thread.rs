//! Threads and processes: the thread-local heap pointer, thread start
//! (taking a heap), thread exit (abandoning it), and `fork()`.
//!
//! Invariant: a heap is owned by at most one live thread; a heap that no
//! thread owns is on the abandoned list, from which the next thread that
//! starts allocating adopts it with all its pages. Heaps are never unmapped,
//! since other threads' remote frees may still follow `page.heap`.
//!
//! The thread-local heap pointer (`heap.rs`) has no destructor and no lazy
//! registration, so it can be read in `malloc` at any point of a thread's
//! life: a Rust `thread_local!` whose type has `Drop`, touched inside
//! `malloc`, aborts the process when a pthread-key destructor allocates
//! after Rust's TLS destructors ran. Thread exit is therefore seen through
//! a pthread key destructor of our own.
//!
//! This is also where the process starts: the first heap sets up the
//! options, installs reclaim's slow paths in the commit seam, creates the
//! thread-exit key and registers the fork handlers.

use core::ptr;
use core::sync::atomic::{AtomicU32, AtomicU8, AtomicUsize, Ordering};

use crate::heap::{self, empty_heap, Heap};
use crate::lock::SpinLock;
use crate::page_alloc::{self, release_empty_pages};
use crate::segment::{ALL, CACHE};
use crate::{huge, options, os};

struct Pool {
    all: *mut Heap,
    abandoned: *mut Heap,
    /// Threads in `collect_abandoned` holding abandoned heaps off the list.
    collecting: usize,
    chunk: *mut u8,
    chunk_left: usize,
}
// SAFETY: only touched under its lock.
unsafe impl Send for Pool {}

static POOL: SpinLock<Pool> = SpinLock::new(Pool {
    all: ptr::null_mut(),
    abandoned: ptr::null_mut(),
    collecting: 0,
    chunk: ptr::null_mut(),
    chunk_left: 0,
});

const HEAP_CHUNK: usize = 256 * 1024;

/// Yields a starting thread makes while abandoned heaps are being collected
/// before it makes a heap of its own (see `take_heap`).
const COLLECT_WAIT_TRIES: u32 = 1000;

static INIT: AtomicU8 = AtomicU8::new(0);
static KEY: AtomicU32 = AtomicU32::new(0);
/// Heaps created since start.
static HEAPS: AtomicUsize = AtomicUsize::new(0);

/// Thread heaps created since start (owned or abandoned).
pub fn heaps_created() -> usize {
    // Relaxed: a tally.
    HEAPS.load(Ordering::Relaxed)
}

/// Gives the calling thread a heap (adopting an abandoned one if any) and
/// registers it for thread exit. Null only when the OS refuses memory.
#[cold]
pub fn init_heap() -> *mut Heap {
    let heap = take_heap();
    if heap.is_null() {
        return heap;
    }
    // Relaxed: a tally.
    huge::LIVE_THREADS.fetch_add(1, Ordering::Relaxed);
    heap::set_current(heap);
    // From here on the thread allocates from its heap, so the process setup
    // below may itself allocate (pthread_atfork and pthread_key_create can).
    init_process();
    os::thread_key_set(KEY.load(Ordering::Acquire), heap.cast());
    heap
}

fn take_heap() -> *mut Heap {
    let mut pool = POOL.lock();
    // Abandoned heaps that another thread is collecting come back in a
    // moment: wait for them rather than make a heap (and a segment) more.
    // Thread churn made a heap per collection that a starting thread ran
    // into (7 heaps for 3 threads in `benches/programs/churn`). The wait is
    // bounded: were the collector itself to get here, it would not spin.
    let mut tries = 0;
    while pool.abandoned.is_null() && pool.collecting > 0 && tries < COLLECT_WAIT_TRIES {
        drop(pool);
        std::thread::yield_now();
        tries += 1;
        pool = POOL.lock();
    }
    let heap = pool.abandoned;
    if !heap.is_null() {
        // SAFETY: abandoned heaps are live and owned by no thread; the lock
        // orders us after the abandoning thread's last writes, and the heap
        // becomes ours here.
        let h = unsafe { &*heap };
        pool.abandoned = h.abandoned_next.get();
        h.owned.set(true);
        return heap;
    }
    let size = core::mem::size_of::<Heap>().next_multiple_of(64);
    if pool.chunk_left < size {
        let Some(mem) = os::map_aligned(HEAP_CHUNK, os::OS_PAGE) else { return ptr::null_mut() };
        pool.chunk = mem.as_ptr();
        pool.chunk_left = HEAP_CHUNK;
    }
    let heap = pool.chunk.cast::<Heap>();
    pool.chunk = pool.chunk.wrapping_add(size);
    pool.chunk_left -= size;
    // SAFETY: `heap` is fresh, suitably aligned (64-byte slots in a page-
    // aligned chunk) memory that nothing else refers to.
    unsafe { heap.write(Heap::new()) };
    // SAFETY: just written, and ours alone.
    let h = unsafe { &*heap };
    h.owned.set(true);
    h.all_next.set(pool.all);
    pool.all = heap;
    // Relaxed: a tally.
    HEAPS.fetch_add(1, Ordering::Relaxed);
    heap
}

/// Once per process: options, reclaim's commit slow paths, the
/// thread-exit key, the fork handlers.
fn init_process() {
    // Acquire pairs with the Release store of 2: the key is visible.
    if INIT.load(Ordering::Acquire) == 2 {
        return;
    }
    if INIT.compare_exchange(0, 1, Ordering::Acquire, Ordering::Acquire).is_ok() {
        options::init();
        // Before the first page is carved: charges past the limits reach
        // reclaim through the commit seam.
        crate::reclaim::install();
        let key = os::thread_key_create(on_thread_exit).unwrap_or_else(|| {
            os::write_stderr(b"shrinkalloc: no pthread key left; thread exits will leak heaps\n");
            0
        });
        KEY.store(key, Ordering::Relaxed);
        // Miri cannot fork, nor register fork handlers.
        #[cfg(not(miri))]
        crate::fork::install();
        INIT.store(2, Ordering::Release);
        return;
    }
    while INIT.load(Ordering::Acquire) != 2 {
        std::thread::yield_now();
    }
}

/// pthread key destructor: the thread is exiting.
unsafe extern "C" fn on_thread_exit(value: *mut libc::c_void) {
    crate::commit::give_up_reservation();
    let heap = value.cast::<Heap>();
    if heap.is_null() {
        return;
    }
    // SAFETY: the key's value is the heap this thread owns.
    release_empty_pages(unsafe { &*heap });
    if heap::current() == heap {
        heap::set_current(empty_heap());
    }
    abandon(heap);
}

/// Collects the frees that other threads made into abandoned heaps and gives
/// their empty pages back, and the inside of their idle free blocks of 8
/// KiB or more (all of those when `purge_now`: a purge), so memory of
/// exited threads returns to the OS without waiting for a new thread to
/// adopt the heap. The heaps are taken off the abandoned list while this
/// thread works on them, then put back. Returns the bytes those blocks gave
/// back.
pub fn collect_abandoned(purge_now: bool) -> usize {
    let head = {
        let mut pool = POOL.lock();
        let head = core::mem::replace(&mut pool.abandoned, ptr::null_mut());
        if head.is_null() {
            return 0;
        }
        pool.collecting += 1;
        head
    };
    let (mut tail, mut bytes, now) = (ptr::null_mut(), 0, os::now_ms());
    let mut h = head;
    while !h.is_null() {
        tail = h;
        // SAFETY: taken off the abandoned list, each heap is owned by no one
        // but this thread until it goes back; the POOL lock ordered us after
        // the abandoning thread's writes.
        let heap = unsafe { &*h };
        bytes += page_alloc::collect(heap, now, purge_now);
        h = heap.abandoned_next.get();
    }
    let mut pool = POOL.lock();
    // SAFETY: the taken heaps are still ours; they go back under the lock.
    unsafe { (*tail).abandoned_next.set(pool.abandoned) };
    pool.abandoned = head;
    pool.collecting -= 1;
    bytes
}

fn abandon(heap: *mut Heap) {
    let mut pool = POOL.lock();
    // SAFETY: the heap is live and still ours; the lock publishes our
    // writes to its next adopter.
    let h = unsafe { &*heap };
    h.owned.set(false);
    h.abandoned_next.set(pool.abandoned);
    pool.abandoned = heap;
    // Relaxed: a tally.
    huge::LIVE_THREADS.fetch_sub(1, Ordering::Relaxed);
}

// Around fork(): hold every allocator lock so the child never inherits one
// held by a thread that does not exist there. Order: POOL, ALL, CACHE, HCACHE,
// the only order in which any two of them are ever held together.

/// `fork()` is about to run: takes every allocator lock.
#[cfg_attr(miri, allow(dead_code))]
pub(crate) unsafe extern "C" fn fork_prepare() {
    POOL.raw_lock();
    ALL.raw_lock();
    CACHE.raw_lock();
    huge::HCACHE.raw_lock();
}

/// After `fork()` in the parent: releases the locks `fork_prepare` took.
///
/// # Safety
///
/// `fork_prepare` ran in this process just before.
#[cfg_attr(miri, allow(dead_code))]
pub(crate) unsafe extern "C" fn fork_parent() {
    // SAFETY: `fork_prepare` took these locks in this process.
    unsafe {
        huge::HCACHE.raw_unlock();
        CACHE.raw_unlock();
        ALL.raw_unlock();
        POOL.raw_unlock();
    }
}

/// After `fork()` in the child: releases the locks and abandons every heap
/// but the forking thread's.
///
/// # Safety
///
/// `fork_prepare` ran in the parent just before the fork.
#[cfg_attr(miri, allow(dead_code))]
pub(crate) unsafe extern "C" fn fork_child() {
    // SAFETY: `fork_prepare` took these locks in the parent, whose memory
    // this process is a copy of; no other thread exists here.
    unsafe {
        huge::HCACHE.raw_unlock();
        CACHE.raw_unlock();
        ALL.raw_unlock();
        POOL.raw_unlock();
    }
    // Only the forking thread survives: every other owned heap is orphaned.
    let me = heap::current();
    let mut pool = POOL.lock();
    // A thread that was collecting abandoned heaps is gone, and so are the
    // heaps it held off the list (it may have been halfway through one).
    pool.collecting = 0;
    let mut h = pool.all;
    while !h.is_null() {
        // SAFETY: heaps are never unmapped, and we are the only thread, so
        // no other reference to any heap is in use.
        let heap = unsafe { &*h };
        if h != me && heap.owned.get() {
            heap.owned.set(false);
            heap.abandoned_next.set(pool.abandoned);
            pool.abandoned = h;
        }
        h = heap.all_next.get();
    }
    // Relaxed: a tally; the forking thread alone is left.
    huge::LIVE_THREADS.store(usize::from(me != empty_heap()), Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use crate::heap::{self, empty_heap};

    /// A thread that allocates only huge blocks (which bypass the heap)
    /// still gets a heap, so it counts in `huge::LIVE_THREADS`, which the
    /// huge cache's budget follows.
    #[test]
    fn a_thread_allocating_only_huge_blocks_gets_a_heap() {
        let had_heap = std::thread::spawn(|| {
            assert_eq!(heap::current(), empty_heap(), "a new thread starts without a heap");
            let p = crate::alloc::malloc(8 << 20);
            assert!(!p.is_null());
            let had = heap::current() != empty_heap();
            // SAFETY: `p` is a live block of ours, freed once.
            unsafe { crate::free::free_block(p) };
            had
        })
        .join()
        .unwrap();
        assert!(had_heap, "the huge allocation left the thread without a heap");
    }
}
