//! Drives the C API with random sequences of calls and checks every result.
//!
//! Each input is a program: a stream of operations read from the fuzzer's
//! bytes — the malloc family with random sizes and alignments (impossible
//! ones included), realloc, frees handed to another thread, shrinkers
//! registered and unregistered (also from inside their own callbacks, which
//! may allocate, reclaim and unregister), scopes saved and restored out of
//! order, limits changed mid-flight, work queues flushed and destroyed with
//! items still coming, contexts adopted twice. Every block is filled with a
//! pattern of its own and checked when it is resized or freed, so a block
//! that two owners share, or that lost its content, fails the run. Every
//! bad call must get the result `include/shrinkalloc.h` documents.
//!
//! The symbols are the C library's own (`../alloc-ffi` compiled as an rlib,
//! see `Cargo.toml`): this process's `malloc` is shrinkalloc's, as under
//! `LD_PRELOAD`. Run from the repository root:
//! `cargo +nightly fuzz run c_api -s none` (`-s none`: AddressSanitizer
//! would bring a `malloc` of its own).
#![no_main]

use core::ffi::{c_char, c_int, c_uint, c_void};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use shrinkalloc_c as _;

extern "C" {
    fn malloc(size: usize) -> *mut c_void;
    fn calloc(n: usize, size: usize) -> *mut c_void;
    fn realloc(p: *mut c_void, size: usize) -> *mut c_void;
    fn free(p: *mut c_void);
    fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int;
    fn aligned_alloc(align: usize, size: usize) -> *mut c_void;
    fn memalign(align: usize, size: usize) -> *mut c_void;
    fn malloc_usable_size(p: *mut c_void) -> usize;
    fn sa_memalloc_nofs_save() -> c_uint;
    fn sa_memalloc_nofs_restore(saved: c_uint);
    fn sa_memalloc_noio_save() -> c_uint;
    fn sa_memalloc_noio_restore(saved: c_uint);
    fn sa_scope_current() -> c_uint;
    fn sa_shrinker_register(ops: *const ShrinkerOps) -> *mut c_void;
    fn sa_shrinker_unregister(s: *mut c_void);
    fn sa_context_capture() -> u64;
    fn sa_context_adopt(ctx: u64) -> u64;
    fn sa_context_restore(prev: u64);
    fn sa_workqueue_create(name: *const c_char, threads_per_class: c_uint) -> *mut c_void;
    fn sa_workqueue_submit(wq: *mut c_void, f: Option<extern "C" fn(*mut c_void)>, arg: *mut c_void) -> c_int;
    fn sa_workqueue_flush(wq: *mut c_void);
    fn sa_workqueue_destroy(wq: *mut c_void);
    fn sa_set_limits(soft: usize, hard: usize) -> c_int;
    fn sa_reclaim(target: usize, level: c_uint) -> usize;
    fn sa_stats_print(fd: c_int, json: c_int) -> c_int;
}

/// `struct sa_shrink_control`.
#[repr(C)]
struct ShrinkControl {
    nr_to_scan: usize,
    nr_scanned: usize,
    scope: c_uint,
    level: c_uint,
    target_bytes: usize,
}

/// `struct sa_shrinker_ops`.
#[repr(C)]
struct ShrinkerOps {
    name: *const c_char,
    count: Option<extern "C" fn(*mut c_void, *mut ShrinkControl) -> usize>,
    scan: Option<extern "C" fn(*mut c_void, *mut ShrinkControl) -> usize>,
    arg: *mut c_void,
    needs: c_uint,
    seeks: c_uint,
    batch: usize,
}

const SHRINK_STOP: usize = usize::MAX;
const SHRINK_EMPTY: usize = usize::MAX - 1;
const SCOPE_NOFS: c_uint = 1;
const SCOPE_NOIO: c_uint = 2;

/// Reads the fuzzer's bytes as operands.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn u16(&mut self) -> u16 {
        u16::from(self.byte().unwrap_or(0)) | u16::from(self.byte().unwrap_or(0)) << 8
    }

    /// A size: mostly small, sometimes up to 8 MiB, rarely impossible.
    fn size(&mut self) -> usize {
        let kind = self.byte().unwrap_or(0);
        let n = usize::from(self.u16());
        match kind % 16 {
            0..=8 => n % 1025,
            9..=12 => n * 4 % (256 << 10),
            13 | 14 => (n << 7) % (8 << 20),
            _ => usize::MAX - n,
        }
    }
}

/// A block this run owns: its address, size and fill byte.
#[derive(Clone, Copy)]
struct Block {
    p: *mut u8,
    size: usize,
    fill: u8,
}

// SAFETY: a block record is a plain address; whoever holds the record owns
// the block, and hands it to another thread together with the record.
unsafe impl Send for Block {}

impl Block {
    /// Fills the block with its pattern (start and end: enough to catch a
    /// block handed out twice, without making big blocks slow).
    fn stamp(&self) {
        for i in probe_offsets(self.size) {
            // SAFETY: `i < size` and the block is ours.
            unsafe { self.p.add(i).write(self.fill) };
        }
    }

    /// Checks the pattern where [`Block::stamp`] wrote it, below `len`.
    fn check(&self, len: usize) {
        for i in probe_offsets(self.size).filter(|&i| i < len) {
            // SAFETY: `i < size` and the block is ours.
            let got = unsafe { self.p.add(i).read() };
            assert_eq!(got, self.fill, "block {:p} of {} bytes lost its content at {i}", self.p, self.size);
        }
    }
}

/// The first and last 64 bytes, and one byte per 4 KiB between.
fn probe_offsets(len: usize) -> impl Iterator<Item = usize> {
    let head = 0..len.min(64);
    let tail = len.saturating_sub(64).max(64)..len;
    let mid = (64..len.saturating_sub(64)).step_by(4096);
    head.chain(mid).chain(tail)
}

const SLOTS: usize = 64;
/// Operations per run at most.
const STEPS: usize = 512;
/// Shrinkers per run at most.
const CACHES: usize = 8;
/// Blocks a cache holds at most.
const CACHE_BLOCKS: usize = 1020;

/// Blocks handed to the freeing thread, and that thread's condition.
struct Remote {
    queue: Mutex<Vec<Block>>,
    ready: Condvar,
}

fn remote() -> &'static Remote {
    static REMOTE: OnceLock<&'static Remote> = OnceLock::new();
    REMOTE.get_or_init(|| {
        let r: &'static Remote =
            Box::leak(Box::new(Remote { queue: Mutex::new(Vec::with_capacity(4096)), ready: Condvar::new() }));
        std::thread::spawn(move || loop {
            let mut q = r.queue.lock().unwrap();
            while q.is_empty() {
                q = r.ready.wait(q).unwrap();
            }
            while let Some(b) = q.pop() {
                b.check(b.size);
                // SAFETY: the block was handed over by its only owner.
                unsafe { free(b.p.cast()) };
            }
            drop(q);
            r.ready.notify_all();
        });
        r
    })
}

/// Waits until the freeing thread has freed everything handed to it.
fn remote_drain() {
    let r = remote();
    let mut q = r.queue.lock().unwrap();
    while !q.is_empty() {
        q = r.ready.wait(q).unwrap();
    }
}

/// What a fuzzed shrinker does beyond freeing its blocks.
struct Cache {
    blocks: Mutex<Vec<Block>>,
    /// Its own handle, so that a scan can unregister it.
    handle: AtomicPtr<c_void>,
    /// Bit 0: allocate in scan; bit 1: call `sa_reclaim` in scan; bit 2:
    /// unregister itself in scan; bit 3: return SA_SHRINK_STOP.
    quirks: u8,
    unregistered_self: AtomicUsize,
}

impl Cache {
    fn new() -> Cache {
        Cache {
            blocks: Mutex::new(Vec::with_capacity(CACHE_BLOCKS)),
            handle: AtomicPtr::new(core::ptr::null_mut()),
            quirks: 0,
            unregistered_self: AtomicUsize::new(0),
        }
    }
}

extern "C" fn cache_count(arg: *mut c_void, _sc: *mut ShrinkControl) -> usize {
    // SAFETY: `arg` is the `Cache` registered with this shrinker, alive
    // until after `sa_shrinker_unregister` returned.
    let cache = unsafe { &*arg.cast::<Cache>() };
    match cache.blocks.try_lock().map(|b| b.len()) {
        Ok(0) => SHRINK_EMPTY,
        Ok(n) => n,
        Err(_) => 0,
    }
}

extern "C" fn cache_scan(arg: *mut c_void, sc: *mut ShrinkControl) -> usize {
    // SAFETY: as in `cache_count`; `sc` is valid for the call.
    let (cache, sc) = unsafe { (&*arg.cast::<Cache>(), &*sc) };
    if cache.quirks & 1 != 0 {
        // SAFETY: plain allocation; allowed inside a callback.
        let p = unsafe { malloc(100) };
        // SAFETY: `p` is null or ours.
        unsafe { free(p) };
    }
    if cache.quirks & 2 != 0 {
        // SAFETY: any context; documented to return 0 inside a callback.
        let freed = unsafe { sa_reclaim(1 << 20, 3) };
        assert_eq!(freed, 0, "sa_reclaim inside a shrinker callback must do nothing");
    }
    if cache.quirks & 4 != 0 {
        let h = cache.handle.swap(core::ptr::null_mut(), Ordering::AcqRel);
        if !h.is_null() {
            cache.unregistered_self.fetch_add(1, Ordering::Relaxed);
            // SAFETY: the handle came from `sa_shrinker_register` and is
            // unregistered once (the swap above takes it).
            unsafe { sa_shrinker_unregister(h) };
        }
    }
    if cache.quirks & 8 != 0 {
        return SHRINK_STOP;
    }
    let Ok(mut blocks) = cache.blocks.try_lock() else { return SHRINK_STOP };
    let mut freed = 0;
    while freed < sc.nr_to_scan {
        let Some(b) = blocks.pop() else { break };
        b.check(b.size);
        // SAFETY: the cache owned the block alone.
        unsafe { free(b.p.cast()) };
        freed += 1;
    }
    freed
}

extern "C" fn work_item(arg: *mut c_void) {
    // SAFETY: the submitter wrote the record for this item alone, in `Run::items`,
    // which outlives the queue.
    let b = unsafe { arg.cast::<Block>().read() };
    b.check(b.size);
    // SAFETY: the item owns the block.
    unsafe { free(b.p.cast()) };
}

/// The state of one run.
///
/// Everything the harness itself keeps is allocated when the run starts,
/// before any limit: under a hard limit a Rust allocation that fails aborts,
/// so the run never grows a collection while a limit may be in force.
struct Run {
    slots: [Option<Block>; SLOTS],
    fill: u8,
    /// Caches not yet registered (taken from the back). Boxed: a registered
    /// cache's address is its shrinker's `arg`, so it must not move.
    #[allow(clippy::vec_box)]
    spare: Vec<Box<Cache>>,
    /// Registered caches.
    #[allow(clippy::vec_box)]
    shrinkers: Vec<Box<Cache>>,
    /// Block records handed to work items, one per step at most.
    items: Box<[Block]>,
    items_used: usize,
    scopes: Vec<(bool, c_uint)>,
    contexts: Vec<u64>,
    queue: *mut c_void,
    limited: bool,
}

fn errno() -> c_int {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn set_errno(v: c_int) {
    // SAFETY: the calling thread's errno location.
    unsafe { *libc::__errno_location() = v };
}

impl Run {
    fn new() -> Run {
        remote();
        Run {
            slots: [None; SLOTS],
            fill: 1,
            spare: (0..CACHES).map(|_| Box::new(Cache::new())).collect(),
            shrinkers: Vec::with_capacity(CACHES),
            items: vec![Block { p: core::ptr::null_mut(), size: 0, fill: 0 }; STEPS].into_boxed_slice(),
            items_used: 0,
            scopes: Vec::with_capacity(STEPS),
            contexts: Vec::with_capacity(2 * STEPS),
            queue: core::ptr::null_mut(),
            limited: false,
        }
    }

    fn next_fill(&mut self) -> u8 {
        self.fill = self.fill.wrapping_add(1).max(1);
        self.fill
    }

    /// Takes a fresh result of the malloc family: null only for an
    /// impossible size or under an explicit hard limit, and then with ENOMEM.
    fn adopt(&mut self, slot: usize, p: *mut c_void, size: usize, align: usize) {
        if p.is_null() {
            assert!(size > (1 << 46) || self.limited, "null for a possible size {size} without a limit");
            assert_eq!(errno(), libc::ENOMEM, "null without ENOMEM for size {size}");
            return;
        }
        // malloc's promise: alignment for any object that fits (C17, DR 445):
        // 16 bytes, or the largest power of two not above a smaller size.
        let align = if align == 16 { 16.min(1 << size.ilog2()) } else { align };
        assert_eq!(p as usize % align, 0, "{p:p} not aligned to {align}");
        // SAFETY: `p` is a live block of ours.
        let usable = unsafe { malloc_usable_size(p) };
        assert!(usable >= size, "usable size {usable} below the {size} asked");
        let b = Block { p: p.cast(), size, fill: self.next_fill() };
        b.stamp();
        self.release(slot);
        self.slots[slot] = Some(b);
    }

    fn release(&mut self, slot: usize) {
        if let Some(b) = self.slots[slot].take() {
            b.check(b.size);
            // SAFETY: the slot owned the block.
            unsafe { free(b.p.cast()) };
        }
    }

    fn step(&mut self, input: &mut Input) -> Option<()> {
        let op = input.byte()?;
        let slot = usize::from(input.byte()?) % SLOTS;
        set_errno(0);
        match op % 20 {
            0..=3 => {
                let size = input.size();
                // SAFETY: plain call.
                let p = unsafe { malloc(size) };
                self.adopt(slot, p, size.max(1), 16);
            }
            4 => {
                // An impossible `n` overflows the product (ENOMEM); others stay under 16 MiB.
                let (n, size) = (input.size(), usize::from(input.u16()) % 256);
                let n = if n > 1 << 46 { n } else { n % 65536 };
                // SAFETY: plain call.
                let p = unsafe { calloc(n, size) };
                let total = n.checked_mul(size);
                if let (Some(total), false) = (total, p.is_null()) {
                    for i in probe_offsets(total) {
                        // SAFETY: `i < total`, the block's size.
                        assert_eq!(unsafe { p.cast::<u8>().add(i).read() }, 0, "calloc gave a non-zero byte");
                    }
                }
                self.adopt(slot, p, total.unwrap_or(usize::MAX).max(1), 16);
            }
            5..=7 => {
                let size = input.size();
                let old = self.slots[slot].take();
                let from = old.map_or(core::ptr::null_mut(), |b| b.p.cast());
                // SAFETY: `from` is null or a live block the slot owned.
                let p = unsafe { realloc(from, size) };
                match old {
                    Some(_) if size == 0 => assert!(p.is_null(), "realloc(p, 0) must free and return null"),
                    Some(b) if p.is_null() => {
                        assert!(size > (1 << 46) || self.limited, "realloc refused {size} bytes");
                        b.check(b.size);
                        self.slots[slot] = Some(b);
                    }
                    Some(b) => {
                        let moved = Block { p: p.cast(), ..b };
                        moved.check(size.min(b.size));
                        self.adopt(slot, p, size, 16);
                    }
                    None => self.adopt(slot, p, size.max(1), 16),
                }
            }
            8 => {
                let align = 1usize << (input.byte()? % 24);
                let align = if input.byte()? % 8 == 0 { align + 1 } else { align };
                let size = input.size();
                let mut out = core::ptr::null_mut();
                // SAFETY: `out` is a valid out-pointer.
                let rc = unsafe { posix_memalign(&mut out, align, size) };
                let valid = align.is_power_of_two() && align >= core::mem::size_of::<usize>();
                if !valid {
                    assert_eq!(rc, libc::EINVAL, "posix_memalign({align}) must be EINVAL");
                } else if rc == 0 {
                    self.adopt(slot, out, size.max(1), align);
                } else {
                    assert_eq!(rc, libc::ENOMEM);
                    assert!(size > (1 << 46) || self.limited, "posix_memalign refused {size} bytes");
                }
            }
            9 => {
                let align = 1usize << (input.byte()? % 22);
                let size = input.size();
                // SAFETY: plain calls.
                let p = unsafe {
                    if op & 0x20 != 0 {
                        aligned_alloc(align, size)
                    } else {
                        memalign(align, size)
                    }
                };
                self.adopt(slot, p, size.max(1), align);
            }
            10 | 11 => self.release(slot),
            12 => {
                if let Some(b) = self.slots[slot].take() {
                    let r = remote();
                    r.queue.lock().unwrap().push(b);
                    r.ready.notify_all();
                }
            }
            13 => self.shrinker_op(input)?,
            14 => self.scope_op(input)?,
            15 => self.context_op(input)?,
            16 => self.queue_op(input, slot)?,
            17 => self.limit_op(input)?,
            18 => {
                let (target, level) = (input.size() % (64 << 20), c_uint::from(input.byte()? % 6));
                // SAFETY: not inside a callback; level beyond critical is allowed.
                unsafe { sa_reclaim(target, level) };
            }
            _ => {
                // SAFETY: /dev/null is opened for the call and closed after.
                let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY) };
                // SAFETY: any context.
                assert_eq!(unsafe { sa_stats_print(fd, c_int::from(op & 1)) }, 0);
                // SAFETY: `fd` is ours.
                unsafe { libc::close(fd) };
                // SAFETY: a closed descriptor: the documented result is -1 with errno.
                assert_eq!(unsafe { sa_stats_print(fd, 0) }, -1);
            }
        }
        Some(())
    }

    fn shrinker_op(&mut self, input: &mut Input) -> Option<()> {
        let what = input.byte()?;
        if what % 3 == 0 && !self.shrinkers.is_empty() {
            let i = usize::from(input.byte()?) % self.shrinkers.len();
            unregister(self.shrinkers.swap_remove(i));
            return Some(());
        }
        let Some(mut cache) = self.spare.pop() else { return Some(()) };
        cache.quirks = input.byte()?;
        let blocks = (usize::from(input.byte()?) * 4).min(CACHE_BLOCKS);
        let size = 1 + usize::from(input.u16()) % 32768;
        for _ in 0..blocks {
            // SAFETY: plain call.
            let p = unsafe { malloc(size) };
            if p.is_null() {
                assert!(self.limited, "malloc({size}) refused without a limit");
                break;
            }
            let b = Block { p: p.cast(), size, fill: self.next_fill() };
            b.stamp();
            cache.blocks.get_mut().unwrap().push(b);
        }
        let ops = ShrinkerOps {
            name: c"fuzz".as_ptr(),
            count: Some(cache_count),
            scan: Some(cache_scan),
            arg: (&*cache as *const Cache).cast_mut().cast(),
            needs: c_uint::from(what >> 4) & 3,
            seeks: c_uint::from(what >> 6),
            batch: usize::from(what & 0x30),
        };
        // SAFETY: `ops` is valid for the call; the cache stays boxed (at a
        // fixed address) until its shrinker can no longer be called.
        let h = unsafe { sa_shrinker_register(&ops) };
        assert!(!h.is_null(), "registration of valid ops failed");
        cache.handle.store(h, Ordering::Release);
        self.shrinkers.push(cache);
        // Bad ops: EINVAL, no handle.
        let bad = ShrinkerOps { count: None, ..ops };
        // SAFETY: `bad` is valid for the call.
        assert!(unsafe { sa_shrinker_register(&bad) }.is_null(), "ops without count accepted");
        assert_eq!(errno(), libc::EINVAL);
        Some(())
    }

    fn scope_op(&mut self, input: &mut Input) -> Option<()> {
        let what = input.byte()?;
        if (what % 2 == 0 || self.scopes.is_empty()) && self.scopes.len() < STEPS {
            let io = what & 2 != 0;
            // SAFETY: plain calls.
            let saved = unsafe {
                if io {
                    sa_memalloc_noio_save()
                } else {
                    sa_memalloc_nofs_save()
                }
            };
            self.scopes.push((io, saved));
            // SAFETY: plain call.
            let now = unsafe { sa_scope_current() };
            assert_ne!(now & SCOPE_NOFS, 0, "a save must leave NOFS set (NOIO implies NOFS)");
            assert!(!io || now & SCOPE_NOIO != 0);
        } else {
            // Out of order: any saved scope, not only the last.
            let (io, saved) = self.scopes.swap_remove(usize::from(what >> 1) % self.scopes.len());
            // SAFETY: plain calls.
            unsafe {
                if io {
                    sa_memalloc_noio_restore(saved)
                } else {
                    sa_memalloc_nofs_restore(saved)
                }
            };
        }
        Some(())
    }

    fn context_op(&mut self, input: &mut Input) -> Option<()> {
        let what = input.byte()?;
        if (what % 2 == 0 || self.contexts.is_empty()) && self.contexts.len() < 2 * STEPS {
            // SAFETY: plain calls; adopting the same context twice nests.
            let ctx = unsafe { sa_context_capture() } | u64::from(what >> 1);
            // SAFETY: any value is a valid context.
            let prev = unsafe { sa_context_adopt(ctx) };
            // SAFETY: as above.
            let prev2 = unsafe { sa_context_adopt(ctx) };
            self.contexts.push(prev);
            self.contexts.push(prev2);
        } else if let Some(prev) = self.contexts.pop() {
            // SAFETY: `prev` came from `sa_context_adopt`.
            unsafe { sa_context_restore(prev) };
        }
        Some(())
    }

    fn queue_op(&mut self, input: &mut Input, slot: usize) -> Option<()> {
        let what = input.byte()?;
        if self.queue.is_null() {
            // SAFETY: a valid name.
            self.queue = unsafe { sa_workqueue_create(c"fuzz-wq".as_ptr(), c_uint::from(what % 4)) };
            assert!(!self.queue.is_null());
            // SAFETY: NULL name: documented EINVAL.
            assert!(unsafe { sa_workqueue_create(core::ptr::null(), 1) }.is_null());
            return Some(());
        }
        match what % 4 {
            0 | 1 => {
                if let (Some(b), true) = (self.slots[slot].take(), self.items_used < STEPS) {
                    self.items[self.items_used] = b;
                    let arg = (&mut self.items[self.items_used] as *mut Block).cast();
                    self.items_used += 1;
                    // SAFETY: a live queue; the item owns `arg`.
                    let rc = unsafe { sa_workqueue_submit(self.queue, Some(work_item), arg) };
                    if rc != 0 {
                        assert!(matches!(errno(), libc::ENOMEM | libc::EAGAIN), "submit failed: {}", errno());
                        work_item(arg);
                    }
                }
                // SAFETY: NULL function: documented EINVAL.
                assert_eq!(unsafe { sa_workqueue_submit(self.queue, None, core::ptr::null_mut()) }, -1);
            }
            2 => {
                // SAFETY: a live queue, no lock held.
                unsafe { sa_workqueue_flush(self.queue) }
            }
            _ => {
                // SAFETY: a live queue, used no more.
                unsafe { sa_workqueue_destroy(core::mem::replace(&mut self.queue, core::ptr::null_mut())) }
            }
        }
        Some(())
    }

    fn limit_op(&mut self, input: &mut Input) -> Option<()> {
        let what = input.byte()?;
        let committed = shrinkalloc::stats().committed;
        let room = (usize::from(input.u16()) + 4096) << 10;
        let (soft, hard) = match what % 4 {
            0 => (0, 0),
            1 => (committed + room / 2, committed + room),
            2 => (committed + room, 0),
            _ => (committed + room, committed + room / 2),
        };
        // SAFETY: plain call.
        let rc = unsafe { sa_set_limits(soft, hard) };
        if hard != 0 && soft > hard {
            assert_eq!(rc, -1, "soft above hard must be refused");
            assert_eq!(errno(), libc::EINVAL);
        } else {
            assert_eq!(rc, 0);
            self.limited = hard != 0;
        }
        Some(())
    }

    /// Ends the run: every block checked and freed, every scope, context,
    /// queue, shrinker and limit put back.
    fn finish(mut self) {
        // SAFETY: plain call.
        unsafe { sa_set_limits(0, 0) };
        for slot in 0..SLOTS {
            self.release(slot);
        }
        // Contexts first: they were adopted inside (some of) the scopes.
        while let Some(prev) = self.contexts.pop() {
            // SAFETY: `prev` came from `sa_context_adopt`.
            unsafe { sa_context_restore(prev) };
        }
        while let Some((io, saved)) = self.scopes.pop() {
            // SAFETY: plain calls.
            unsafe {
                if io {
                    sa_memalloc_noio_restore(saved)
                } else {
                    sa_memalloc_nofs_restore(saved)
                }
            };
        }
        // Restores made out of order may leave a flag that an outer save
        // found set: clear both, as a thread's outermost restore would.
        // SAFETY: plain calls.
        unsafe {
            sa_memalloc_noio_restore(0);
            sa_memalloc_nofs_restore(0);
        }
        // SAFETY: plain call.
        assert_eq!(unsafe { sa_scope_current() }, 0, "scopes left set after every restore");
        if !self.queue.is_null() {
            // SAFETY: a live queue, used no more.
            unsafe { sa_workqueue_destroy(self.queue) };
        }
        for cache in self.shrinkers.drain(..) {
            unregister(cache);
        }
        remote_drain();
    }
}

/// Unregisters a cache's shrinker and frees its blocks. A cache whose scan
/// unregistered it is leaked (that scan may still be running), its blocks
/// are not: the scan takes them only under the lock.
fn unregister(cache: Box<Cache>) {
    let h = cache.handle.swap(core::ptr::null_mut(), Ordering::AcqRel);
    if h.is_null() {
        assert_eq!(cache.unregistered_self.load(Ordering::Relaxed), 1);
    } else {
        // SAFETY: the handle is live: the swap took it from the scan's reach.
        unsafe { sa_shrinker_unregister(h) };
    }
    for b in cache.blocks.lock().unwrap().drain(..) {
        b.check(b.size);
        // SAFETY: the cache owned the block; a scan takes blocks only under the lock.
        unsafe { free(b.p.cast()) };
    }
    if h.is_null() {
        Box::leak(cache);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mut run = Run::new();
    for _ in 0..STEPS {
        if run.step(&mut input).is_none() {
            break;
        }
    }
    run.finish();
});
