//! What every benchmark shares: the [`Allocator`] trait with one
//! implementation per allocator under test, the criterion settings, and a
//! seeded random number generator so that every allocator sees the same
//! sequence of sizes and free orders.
//!
//! A benchmark is written once, as a function generic over `A: Allocator`,
//! and [`for_each_allocator!`] runs it for all four allocators one right
//! after the other: the four measurements of a case are taken close together
//! in time and share the machine's noise, which is what makes their ratios
//! meaningful on a shared 2-core machine. The bench binaries keep the system
//! allocator as their global allocator, so criterion's own allocations never
//! go through an allocator being measured.

use std::time::Duration;

use criterion::Criterion;

/// One allocator under test, called through its C-like entry points.
///
/// Blocks are aligned to at least 16 bytes, like `malloc`'s. Implementations
/// are zero-sized and called without `self`, so a generic benchmark compiles
/// to direct calls.
pub trait Allocator {
    /// The name used as criterion's function id and in every table.
    const NAME: &'static str;

    /// Allocates `size` bytes; null when the allocator cannot.
    fn malloc(size: usize) -> *mut u8;

    /// Frees a block.
    ///
    /// # Safety
    ///
    /// `p` is null or a live block returned by this same allocator, and is
    /// not used after the call.
    unsafe fn free(p: *mut u8);

    /// Resizes a block, keeping its first `min(old, size)` bytes. On null the
    /// old block is left as it was.
    ///
    /// # Safety
    ///
    /// `p` is null or a live block returned by this same allocator; after a
    /// non-null return the old pointer is not used again.
    unsafe fn realloc(p: *mut u8, size: usize) -> *mut u8;

    /// Returns as much free memory to the OS as the allocator can, the way a
    /// program would ask it to (`malloc_trim`, `mi_collect`, ...).
    fn purge();
}

/// shrinkalloc, through its raw (non-`GlobalAlloc`) entry points.
pub struct Shrinkalloc;

impl Allocator for Shrinkalloc {
    const NAME: &'static str = "shrinkalloc";

    #[inline]
    fn malloc(size: usize) -> *mut u8 {
        shrinkalloc::raw::malloc(size)
    }

    #[inline]
    unsafe fn free(p: *mut u8) {
        // SAFETY: the caller promises `p` is null or a live shrinkalloc block.
        unsafe { shrinkalloc::raw::free(p) }
    }

    #[inline]
    unsafe fn realloc(p: *mut u8, size: usize) -> *mut u8 {
        // SAFETY: the caller promises `p` is null or a live shrinkalloc block,
        // and every block here was allocated with `malloc`'s alignment.
        unsafe { shrinkalloc::raw::realloc(p, size, shrinkalloc::raw::MIN_ALIGN) }
    }

    fn purge() {
        shrinkalloc::purge();
    }
}

/// mimalloc (statically linked, under its `mi_` names): the peer every
/// ratio is taken against.
pub struct Mimalloc;

impl Allocator for Mimalloc {
    const NAME: &'static str = "mimalloc";

    #[inline]
    fn malloc(size: usize) -> *mut u8 {
        // SAFETY: `mi_malloc` accepts any size and returns null on failure.
        unsafe { libmimalloc_sys::mi_malloc(size).cast() }
    }

    #[inline]
    unsafe fn free(p: *mut u8) {
        // SAFETY: the caller promises `p` is null or a live mimalloc block.
        unsafe { libmimalloc_sys::mi_free(p.cast()) }
    }

    #[inline]
    unsafe fn realloc(p: *mut u8, size: usize) -> *mut u8 {
        // SAFETY: the caller promises `p` is null or a live mimalloc block.
        unsafe { libmimalloc_sys::mi_realloc(p.cast(), size).cast() }
    }

    fn purge() {
        // SAFETY: `mi_collect` may be called at any time from any thread.
        unsafe { libmimalloc_sys::mi_collect(true) }
    }
}

/// jemalloc (statically linked, under its prefixed `_rjem_` symbols).
pub struct Jemalloc;

impl Allocator for Jemalloc {
    const NAME: &'static str = "jemalloc";

    #[inline]
    fn malloc(size: usize) -> *mut u8 {
        // SAFETY: jemalloc's `malloc` accepts any size and returns null on
        // failure.
        unsafe { tikv_jemalloc_sys::malloc(size).cast() }
    }

    #[inline]
    unsafe fn free(p: *mut u8) {
        // SAFETY: the caller promises `p` is null or a live jemalloc block.
        unsafe { tikv_jemalloc_sys::free(p.cast()) }
    }

    #[inline]
    unsafe fn realloc(p: *mut u8, size: usize) -> *mut u8 {
        // SAFETY: the caller promises `p` is null or a live jemalloc block.
        unsafe { tikv_jemalloc_sys::realloc(p.cast(), size).cast() }
    }

    /// Flushes this thread's cache, then purges the dirty pages of every
    /// arena (`MALLCTL_ARENAS_ALL` is 4096).
    fn purge() {
        for name in [c"thread.tcache.flush", c"arena.4096.purge"] {
            // SAFETY: both names are void controls: they read and write
            // nothing, so null old/new pointers with zero lengths are valid.
            let rc = unsafe {
                tikv_jemalloc_sys::mallctl(
                    name.as_ptr(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    0,
                )
            };
            assert_eq!(rc, 0, "jemalloc mallctl({name:?}) failed");
        }
    }
}

/// glibc's malloc, the one every program gets by default.
pub struct System;

impl Allocator for System {
    const NAME: &'static str = "system";

    #[inline]
    fn malloc(size: usize) -> *mut u8 {
        // SAFETY: `malloc` accepts any size and returns null on failure.
        unsafe { libc::malloc(size).cast() }
    }

    #[inline]
    unsafe fn free(p: *mut u8) {
        // SAFETY: the caller promises `p` is null or a live glibc block.
        unsafe { libc::free(p.cast()) }
    }

    #[inline]
    unsafe fn realloc(p: *mut u8, size: usize) -> *mut u8 {
        // SAFETY: the caller promises `p` is null or a live glibc block.
        unsafe { libc::realloc(p.cast(), size).cast() }
    }

    fn purge() {
        // SAFETY: `malloc_trim` may be called at any time from any thread.
        unsafe { libc::malloc_trim(0) };
    }
}

/// The allocators' names, in the order [`for_each_allocator!`] runs them.
pub const NAMES: [&str; 4] = [Shrinkalloc::NAME, Mimalloc::NAME, Jemalloc::NAME, System::NAME];

/// The peer every ratio is taken against.
pub const PEER: &str = Mimalloc::NAME;

/// Calls the generic function `f::<A>(args...)` once for each allocator, in
/// the order of [`NAMES`]. The arguments are evaluated once per call.
#[macro_export]
macro_rules! for_each_allocator {
    ($f:ident($($arg:expr),* $(,)?)) => {{
        $f::<$crate::Shrinkalloc>($($arg),*);
        $f::<$crate::Mimalloc>($($arg),*);
        $f::<$crate::Jemalloc>($($arg),*);
        $f::<$crate::System>($($arg),*);
    }};
}

/// Criterion settings short enough for the whole suite to run in a few
/// minutes: 1 s of warm-up and 20 samples over 2 s per case. The machine is
/// noisy, so compare ratios of medians, not absolute times.
pub fn criterion() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2)).sample_size(20)
}

/// `A::malloc(size)` with its first byte written, the least a program does
/// with a block. Panics on null: no benchmark here runs out of memory.
#[inline]
pub fn alloc_touched<A: Allocator>(size: usize) -> *mut u8 {
    let p = A::malloc(size);
    assert!(!p.is_null(), "{} returned null for {size} bytes", A::NAME);
    // SAFETY: `p` is a live block of at least `size >= 1` bytes.
    unsafe { p.write(1) };
    p
}

/// A size as a short label: `16B`, `4KiB`, `1MiB`.
pub fn size_label(size: usize) -> String {
    match size {
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{}MiB", s >> 20),
        s if s >= 1 << 10 && s % (1 << 10) == 0 => format!("{}KiB", s >> 10),
        s => format!("{s}B"),
    }
}

/// SplitMix64: a small seeded generator, so that runs and allocators see
/// the same "random" sizes and orders.
pub struct Rng(u64);

impl Rng {
    /// A generator whose sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        let span = (hi - lo + 1) as u128;
        lo + ((u128::from(self.next_u64()) * span) >> 64) as usize
    }

    /// `n` sizes drawn uniformly from `lo..=hi`.
    pub fn sizes(&mut self, n: usize, lo: usize, hi: usize) -> Vec<usize> {
        (0..n).map(|_| self.range(lo, hi)).collect()
    }

    /// A random permutation of `0..n` (Fisher-Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            v.swap(i, self.range(0, i));
        }
        v
    }
}
