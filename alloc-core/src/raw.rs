//! The allocator's entry points by pointer and size, for callers that do not
//! go through `GlobalAlloc`: the C ABI crate, benchmarks and tests.
//!
//! Every function here is safe to call before `main`, from any thread, and
//! from inside a shrinker. None of them panics.

use crate::{alloc, free, huge, realloc, segment};

/// A pointer that is not in this allocator's memory (from the checked
/// entry points: [`realloc_checked`], [`usable_size_checked`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotOurs;

/// Alignment every block has without asking: that of `max_align_t` on x86-64.
pub const MIN_ALIGN: usize = 16;

/// Largest alignment `malloc_aligned` serves; larger ones return null.
pub const MAX_ALIGN: usize = huge::MAX_HUGE_ALIGN;

/// Allocates `size` bytes aligned to [`MIN_ALIGN`] (or to the largest power of
/// two dividing `size`, whichever is smaller). Returns null when the size
/// cannot be served. `size == 0` returns a unique, freeable pointer.
///
/// ```
/// let p = shrinkalloc::raw::malloc(100);
/// assert!(!p.is_null());
/// // SAFETY: `p` came from `malloc` and is freed once.
/// unsafe { shrinkalloc::raw::free(p) };
/// ```
#[inline]
pub fn malloc(size: usize) -> *mut u8 {
    alloc::malloc(size)
}

/// Like [`malloc`] with C's alignment: blocks above 8 bytes are 16-aligned,
/// as glibc's are (a struct with a 16-aligned header and a flexible array
/// member may have any length). The C library's `malloc`.
///
/// ```
/// let p = shrinkalloc::raw::malloc_c(24);
/// assert_eq!(p as usize % 16, 0);
/// // SAFETY: `p` came from this allocator and is freed once.
/// unsafe { shrinkalloc::raw::free(p) };
/// ```
#[inline]
pub fn malloc_c(size: usize) -> *mut u8 {
    alloc::malloc_c(size)
}

/// [`malloc_c`]'s fast path alone: a block of `size` bytes when the
/// calling thread's page for its class has one at hand, else `None` (then
/// call [`malloc_c`]). For a caller that adds work to the slow path only
/// (the C library sets `errno` there) and wants the fast path free of it.
///
/// ```
/// let p = shrinkalloc::raw::try_malloc_c_fast(24).unwrap_or_else(|| shrinkalloc::raw::malloc_c(24));
/// assert!(!p.is_null());
/// // SAFETY: `p` came from this allocator and is freed once.
/// unsafe { shrinkalloc::raw::free(p) };
/// ```
#[inline(always)]
pub fn try_malloc_c_fast(size: usize) -> Option<*mut u8> {
    alloc::try_malloc_c_fast(size)
}

/// Like [`malloc`], with the block's memory zeroed.
///
/// ```
/// let p = shrinkalloc::raw::malloc_zeroed(64, 8);
/// // SAFETY: `p` points to 64 readable bytes until freed.
/// assert!(unsafe { std::slice::from_raw_parts(p, 64) }.iter().all(|&b| b == 0));
/// // SAFETY: `p` came from this allocator and is freed once.
/// unsafe { shrinkalloc::raw::free(p) };
/// ```
#[inline]
pub fn malloc_zeroed(size: usize, align: usize) -> *mut u8 {
    alloc::malloc_zeroed(size, align)
}

/// Allocates `size` bytes aligned to `align`, a power of two. Returns null
/// when `align` is not a power of two, exceeds [`MAX_ALIGN`], or the size
/// cannot be served.
///
/// ```
/// let p = shrinkalloc::raw::malloc_aligned(1000, 4096);
/// assert_eq!(p as usize % 4096, 0);
/// // SAFETY: `p` came from this allocator and is freed once.
/// unsafe { shrinkalloc::raw::free(p) };
/// ```
#[inline]
pub fn malloc_aligned(size: usize, align: usize) -> *mut u8 {
    alloc::malloc_aligned(size, align)
}

/// Frees a block. Null is ignored. A pointer that is not the start of one of
/// our blocks is reported on stderr and the process aborts: it is never
/// silently treated as ours.
///
/// # Safety
///
/// `p` is null or was returned by this allocator and not freed since; nothing
/// uses the block after this call.
#[inline]
pub unsafe fn free(p: *mut u8) {
    // SAFETY: the caller promises nothing uses the block after this call,
    // which is all `free_checked` asks (it checks the pointer itself).
    unsafe { free::free_checked(p) }
}

/// Resizes a block to `new_size` bytes keeping its first `min(old, new)`
/// bytes and an alignment of `align`; in place when the block's size class
/// or mapping allows. Null `p` acts as [`malloc_aligned`]. On failure returns
/// null and leaves the old block untouched.
///
/// # Safety
///
/// `p` is null or a live block of this allocator allocated with an alignment
/// of at most `align`; after success the old pointer is not used again.
pub unsafe fn realloc(p: *mut u8, new_size: usize, align: usize) -> *mut u8 {
    // SAFETY: the caller promises `p` is null or a live block of ours
    // aligned to `align`, as `realloc::realloc` asks.
    unsafe { realloc::realloc(p, new_size, align) }
}

/// [`realloc()`] for a pointer that may not be ours: one look-up in the
/// segment map both checks it and finds its segment. `Err(NotOurs)` (and
/// nothing done) when `p` is not in our memory; otherwise as [`realloc()`].
///
/// ```
/// let p = shrinkalloc::raw::malloc(10);
/// // SAFETY: `p` is live; after success it is not used again.
/// let q = unsafe { shrinkalloc::raw::realloc_checked(p, 100, 16) }.unwrap();
/// // SAFETY: `q` came from this allocator and is freed once.
/// unsafe { shrinkalloc::raw::free(q) };
/// let x = 0u8;
/// // SAFETY: never dereferenced: not ours.
/// assert!(unsafe { shrinkalloc::raw::realloc_checked(&x as *const u8 as *mut u8, 8, 16) }.is_err());
/// ```
///
/// # Safety
///
/// `p` is null, a pointer outside our memory, or a live block of ours
/// allocated with an alignment of at most `align`; after success the old
/// pointer is not used again.
#[inline]
pub unsafe fn realloc_checked(p: *mut u8, new_size: usize, align: usize) -> Result<*mut u8, NotOurs> {
    if p.is_null() {
        return Ok(alloc::malloc_aligned(new_size, align));
    }
    let seg = segment::segment_of_checked(p).ok_or(NotOurs)?;
    // SAFETY: the map says `p` lies in our segment `seg`; the caller
    // promises such a pointer is a live block aligned to `align`.
    Ok(unsafe { realloc::realloc_in(seg.as_ptr(), p, new_size, align) })
}

/// [`usable_size`] for a pointer that may not be ours, with one look-up in
/// the segment map: `Err(NotOurs)` when `p` is not in our memory.
///
/// ```
/// let p = shrinkalloc::raw::malloc(100);
/// // SAFETY: `p` is live.
/// assert!(unsafe { shrinkalloc::raw::usable_size_checked(p) }.unwrap() >= 100);
/// // SAFETY: `p` came from this allocator and is freed once.
/// unsafe { shrinkalloc::raw::free(p) };
/// ```
///
/// # Safety
///
/// `p` is a pointer outside our memory or a live block of ours.
#[inline]
pub unsafe fn usable_size_checked(p: *mut u8) -> Result<usize, NotOurs> {
    let seg = segment::segment_of_checked(p).ok_or(NotOurs)?;
    // SAFETY: the map says `p` lies in our segment `seg`; the caller
    // promises such a pointer is a live block.
    Ok(unsafe { segment::usable_in(seg.as_ptr(), p) })
}

/// Bytes usable in the block at `p` (at least what was asked for).
///
/// # Safety
///
/// `p` is a live block of this allocator.
pub unsafe fn usable_size(p: *mut u8) -> usize {
    // SAFETY: the caller promises `p` is a live block of ours.
    unsafe { segment::usable_size(p) }
}

/// Whether `p` lies in memory this allocator manages (it may still be an
/// interior or already-freed pointer). Never dereferences a foreign pointer.
#[inline]
pub fn is_ours(p: *const u8) -> bool {
    segment::segment_of_checked(p).is_some()
}
