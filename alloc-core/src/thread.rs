//! Threads and processes: the thread-local heap pointer, thread start
//! (taking a heap), thread exit (abandoning it), and `fork()`.
//!
//! Invariant: a heap is owned by at most one live thread; a heap that no
//! thread owns is on the abandoned list, from which the next thread that
//! starts allocating adopts it with all its pages. Heaps are never unmapped,
//! since other threads' remote frees may still follow `page.heap`.
//!
//! The thread-local heap pointer has no destructor and no lazy registration,
//! so it can be read in `malloc` at any point of a thread's life (see
//! MACHINE.md on Rust TLS in a malloc); module `slot` says how it is kept.
//! Thread exit is seen through a pthread key destructor.

use core::ptr;
use core::sync::atomic::{AtomicU32, AtomicU8, Ordering};

use crate::heap::{self, empty_heap, Heap};
use crate::lock::SpinLock;
use crate::segment::{ALL, CACHE};
use crate::{huge, options, os, stats};

/// The thread's heap pointer, on x86-64 Linux in a TLS slot read with the
/// initial-exec model: one `mov` from `%fs`, where Rust's `thread_local!`
/// in a shared library (LD_PRELOAD) calls `__tls_get_addr` (11 instructions)
/// on every malloc and free. The slot starts out pointing at the empty heap.
/// Initial-exec TLS suits a library that is preloaded or linked; one that is
/// `dlopen`ed draws on glibc's small static TLS surplus (8 bytes here).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod slot {
    use super::Heap;
    use crate::heap::EMPTY_HEAP;

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

/// Elsewhere: a const-initialised `thread_local!` (no destructor, no lazy
/// registration), readable in `malloc` at any point of a thread's life.
#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
mod slot {
    use super::{empty_heap, Heap};

    thread_local! {
        static HEAP: Cell<*mut Heap> = const { Cell::new(empty_heap()) };
    }

    #[inline(always)]
    pub fn get() -> *mut Heap {
        HEAP.with(|h| h.get())
    }

    pub fn set(heap: *mut Heap) {
        HEAP.with(|h| h.set(heap))
    }
}

/// The calling thread's heap (the empty heap before its first allocation).
#[inline(always)]
pub fn heap() -> *mut Heap {
    slot::get()
}

struct Pool {
    all: *mut Heap,
    abandoned: *mut Heap,
    chunk: *mut u8,
    chunk_left: usize,
}
// SAFETY: only touched under its lock.
unsafe impl Send for Pool {}

static POOL: SpinLock<Pool> =
    SpinLock::new(Pool { all: ptr::null_mut(), abandoned: ptr::null_mut(), chunk: ptr::null_mut(), chunk_left: 0 });

const HEAP_CHUNK: usize = 256 * 1024;

static INIT: AtomicU8 = AtomicU8::new(0);
static KEY: AtomicU32 = AtomicU32::new(0);

/// Gives the calling thread a heap (adopting an abandoned one if any) and
/// registers it for thread exit. Null only when the OS refuses memory.
#[cold]
pub fn init_heap() -> *mut Heap {
    let heap = take_heap();
    if heap.is_null() {
        return heap;
    }
    slot::set(heap);
    // From here on the thread allocates from its heap, so the process setup
    // below may itself allocate (pthread_atfork and pthread_key_create can).
    init_process();
    os::thread_key_set(KEY.load(Ordering::Acquire), heap.cast());
    heap
}

fn take_heap() -> *mut Heap {
    let mut pool = POOL.lock();
    let heap = pool.abandoned;
    if !heap.is_null() {
        // SAFETY: abandoned heaps are live and owned by no thread; the lock
        // orders us after the abandoning thread's last writes.
        unsafe {
            pool.abandoned = (*heap).abandoned_next;
            (*heap).owned = true;
        }
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
    unsafe {
        heap.write(Heap::new());
        (*heap).owned = true;
        (*heap).all_next = pool.all;
    }
    pool.all = heap;
    stats::on_new_heap();
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
    let heap = value.cast::<Heap>();
    if heap.is_null() {
        return;
    }
    // SAFETY: the key's value is the heap this thread owns.
    unsafe { heap::release_empty_pages(heap) };
    if slot::get() == heap {
        slot::set(empty_heap());
    }
    abandon(heap);
}

/// Collects the frees that other threads made into abandoned heaps and gives
/// their empty pages back, so memory of exited threads returns to the OS
/// without waiting for a new thread to adopt the heap. The heaps are taken
/// off the abandoned list while this thread works on them, then put back.
pub fn collect_abandoned() {
    let head = {
        let mut pool = POOL.lock();
        core::mem::replace(&mut pool.abandoned, ptr::null_mut())
    };
    let mut tail = ptr::null_mut();
    let mut h = head;
    while !h.is_null() {
        tail = h;
        // SAFETY: taken off the abandoned list, each heap is owned by no one
        // but this thread until it goes back; the POOL lock ordered us after
        // the abandoning thread's writes.
        unsafe {
            heap::release_empty_pages(h);
            h = (*h).abandoned_next;
        }
    }
    if tail.is_null() {
        return;
    }
    let mut pool = POOL.lock();
    // SAFETY: the taken heaps are still ours; they go back under the lock.
    unsafe { (*tail).abandoned_next = pool.abandoned };
    pool.abandoned = head;
}

fn abandon(heap: *mut Heap) {
    let mut pool = POOL.lock();
    // SAFETY: the heap is live; the lock publishes our writes to the adopter.
    unsafe {
        (*heap).owned = false;
        (*heap).abandoned_next = pool.abandoned;
    }
    pool.abandoned = heap;
}

// Around fork(): hold every allocator lock so the child never inherits one
// held by a thread that does not exist there. Order: POOL, ALL, CACHE, HCACHE,
// the only order in which any two of them are ever held together.

pub(crate) unsafe extern "C" fn fork_prepare() {
    POOL.raw_lock();
    ALL.raw_lock();
    CACHE.raw_lock();
    huge::HCACHE.raw_lock();
}

pub(crate) unsafe extern "C" fn fork_parent() {
    // SAFETY: `fork_prepare` took these locks in this process.
    unsafe {
        huge::HCACHE.raw_unlock();
        CACHE.raw_unlock();
        ALL.raw_unlock();
        POOL.raw_unlock();
    }
}

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
    let me = heap();
    let mut pool = POOL.lock();
    let mut h = pool.all;
    while !h.is_null() {
        // SAFETY: heaps are never unmapped; we are the only thread.
        unsafe {
            if h != me && (*h).owned {
                (*h).owned = false;
                (*h).abandoned_next = pool.abandoned;
                pool.abandoned = h;
            }
            h = (*h).all_next;
        }
    }
}
