//! The C semantics of the malloc family, in one place: `errno`, overflow,
//! zero sizes, `realloc(p, 0)`, alignment rules, page rounding. Each choice
//! names the glibc behaviour it copies (glibc 2.36, Debian 12, unless a
//! later glibc is named); `malloc.rs` and `aligned.rs` only forward here.
//!
//! Invariant: every allocating function returns a live block of ours, or
//! null with `errno` set (`ENOMEM` or `EINVAL`); the two exceptions are
//! glibc's: [`posix_memalign`] returns the error code and leaves `errno`
//! alone, and `realloc(p, 0)` frees and returns null without an error. This
//! module sets `errno` only on failure (the core's system calls fail only
//! when allocation does), and nothing here panics or allocates through Rust.
//!
//! Alignment: a C block of more than 8 bytes is aligned to 16, glibc's
//! `MALLOC_ALIGNMENT` (and jemalloc's and tcmalloc's), so that a struct with
//! a 16-aligned header and a flexible array member of any length is safe,
//! as it is under glibc. Blocks of 8 bytes or less are aligned to 8: no C
//! type of that size needs more (jemalloc and mimalloc do the same).

use core::ffi::c_int;
use core::ptr;

use libc::{EINVAL, ENOMEM};
use shrinkalloc::raw;

/// glibc's `MALLOC_ALIGNMENT` on x86-64: `alignof(max_align_t)`.
pub const MALLOC_ALIGNMENT: usize = 16;

/// The alignment a C block of `size` bytes gets (see the module doc).
#[inline(always)]
const fn c_align(size: usize) -> usize {
    if size <= 8 {
        8
    } else {
        MALLOC_ALIGNMENT
    }
}

/// Sets the calling thread's `errno` (also for the `sa_*` functions).
#[cold]
pub(crate) fn set_errno(code: c_int) {
    // SAFETY: `__errno_location` returns the calling thread's errno slot,
    // valid for the thread's lifetime.
    unsafe { *libc::__errno_location() = code };
}

/// Null with `errno = ENOMEM`.
#[cold]
fn enomem() -> *mut u8 {
    set_errno(ENOMEM);
    ptr::null_mut()
}

/// Null with `errno = EINVAL`.
#[cold]
fn einval() -> *mut u8 {
    set_errno(EINVAL);
    ptr::null_mut()
}

/// `p`, or null with `errno` set to the error.
#[inline]
fn with_errno(r: Result<*mut u8, c_int>) -> *mut u8 {
    r.unwrap_or_else(|e| {
        set_errno(e);
        ptr::null_mut()
    })
}

/// Reports a pointer we cannot have allocated in one line and aborts, like
/// the core's checked `free` (glibc prints `realloc(): invalid pointer`).
#[cold]
#[inline(never)]
fn invalid_pointer(what: &[u8], p: *const u8) -> ! {
    let mut buf = [0u8; 128];
    let mut n = 0;
    for part in [b"shrinkalloc: ".as_slice(), what, b" 0x"] {
        buf[n..n + part.len()].copy_from_slice(part);
        n += part.len();
    }
    for i in (0..16).rev() {
        buf[n] = b"0123456789abcdef"[(p as usize >> (i * 4)) & 0xf];
        n += 1;
    }
    buf[n] = b'\n';
    // SAFETY: `buf[..=n]` is initialised; a failed write changes nothing here.
    unsafe { libc::write(2, buf.as_ptr().cast(), n + 1) };
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}

/// `malloc`: `malloc(0)` is a unique pointer that `free` accepts (glibc
/// returns a minimum-size chunk); an impossible size (more than
/// `PTRDIFF_MAX`, or more than the OS gives) is null with `ENOMEM`.
/// The fast path is the core's alone; everything else, `errno` included,
/// is behind one tail call.
#[inline(always)]
pub fn malloc(size: usize) -> *mut u8 {
    match raw::try_malloc_c_fast(size) {
        Some(p) => p,
        None => malloc_slow(size),
    }
}

#[cold]
#[inline(never)]
fn malloc_slow(size: usize) -> *mut u8 {
    let p = malloc_c_aligned(size);
    if p.is_null() {
        return enomem();
    }
    p
}

/// A block of `size` bytes with C's alignment (see the module doc), or null;
/// `errno` untouched. The core's C class table gives 16-aligned classes
/// above 8 bytes, so nothing is rounded here.
#[inline(always)]
fn malloc_c_aligned(size: usize) -> *mut u8 {
    raw::malloc_c(size)
}

/// `calloc`: `n * size` overflowing is null with `ENOMEM` (glibc's
/// `__builtin_mul_overflow` check), never a short block.
#[inline]
pub fn calloc(n: usize, size: usize) -> *mut u8 {
    let Some(total) = n.checked_mul(size) else { return enomem() };
    let p = raw::malloc_zeroed(total, c_align(total));
    if p.is_null() {
        return enomem();
    }
    p
}

/// `free`: null is a no-op; a pointer that is not the start of a live block
/// of ours is reported and the process aborts (the core's checked free).
/// `errno` is kept, as glibc 2.33+ promises: the free path makes no system
/// call that can fail but `munmap` of a huge block.
///
/// # Safety
///
/// If `p` is one of our blocks, nothing uses it after this call.
#[inline(always)]
pub unsafe fn free(p: *mut u8) {
    // SAFETY: forwarded caller promise; the core checks the rest.
    unsafe { raw::free(p) }
}

/// `realloc`: null `p` is `malloc(size)`; `size == 0` with a non-null `p`
/// frees it and returns null without touching `errno` (glibc's
/// `REALLOC_ZERO_BYTES_FREES`); failure is null with `ENOMEM` and the old
/// block intact. The new block has `malloc`'s alignment, not the old one's
/// (glibc does not keep a `memalign` block's alignment either). A pointer
/// outside our memory is reported and aborts.
///
/// # Safety
///
/// `p` is null or a live block of ours; after success it is not used again.
pub unsafe fn realloc(p: *mut u8, size: usize) -> *mut u8 {
    if p.is_null() {
        return malloc(size);
    }
    if size == 0 {
        if !raw::is_ours(p) {
            invalid_pointer(b"realloc(): pointer not allocated by shrinkalloc", p);
        }
        // SAFETY: the caller promises `p` is live and not used again.
        unsafe { raw::free(p) };
        return ptr::null_mut();
    }
    // One look-up of the segment map checks `p` and finds its block.
    // SAFETY: the caller promises `p` is a live block of ours (which the
    // look-up checks) and not used again after success.
    match unsafe { raw::realloc_checked(p, size, c_align(size)) } {
        Err(raw::NotOurs) => invalid_pointer(b"realloc(): pointer not allocated by shrinkalloc", p),
        Ok(q) if q.is_null() => enomem(),
        Ok(q) => q,
    }
}

/// `reallocarray` (glibc 2.26+): `n * size` overflowing is null with
/// `ENOMEM` and `p` untouched; otherwise exactly `realloc(p, n * size)`,
/// so a zero product frees `p` as glibc's does.
///
/// # Safety
///
/// As for [`realloc`].
pub unsafe fn reallocarray(p: *mut u8, n: usize, size: usize) -> *mut u8 {
    let Some(total) = n.checked_mul(size) else { return enomem() };
    // SAFETY: forwarded caller promise.
    unsafe { realloc(p, total) }
}

/// `memalign` (glibc's `_mid_memalign`): an alignment above
/// `SIZE_MAX / 2 + 1` is `EINVAL`; one that is not a power of two is
/// rounded up to the next; up to 8 (0 included) it is plain `malloc`, which
/// glibc makes of anything up to `MALLOC_ALIGNMENT` (our `malloc` aligns
/// blocks of 8 bytes or less to 8 only, so 16 is asked for explicitly); an
/// alignment the allocator cannot serve (above `shrinkalloc::raw::MAX_ALIGN`)
/// is `ENOMEM`, as glibc's failure to find such a chunk is.
fn memalign_inner(align: usize, size: usize) -> Result<*mut u8, c_int> {
    if align > usize::MAX / 2 + 1 {
        return Err(EINVAL);
    }
    let align = align.max(1).next_power_of_two();
    let p = if align <= 8 { malloc_c_aligned(size) } else { raw::malloc_aligned(size, align) };
    if p.is_null() {
        Err(ENOMEM)
    } else {
        Ok(p)
    }
}

/// `memalign`; see [`memalign_inner`] for the rules.
pub fn memalign(align: usize, size: usize) -> *mut u8 {
    with_errno(memalign_inner(align, size))
}

/// `aligned_alloc` as glibc 2.38+ and C17 have it: an alignment that is not
/// a power of two (0 included) is null with `EINVAL` (glibc 2.36 still
/// rounded it up like `memalign`). A size that is not a multiple of the
/// alignment is accepted (C17's DR 460).
pub fn aligned_alloc(align: usize, size: usize) -> *mut u8 {
    if !align.is_power_of_two() {
        return einval();
    }
    memalign(align, size)
}

/// `posix_memalign`: an alignment that is not a power of two multiple of
/// `sizeof(void *)` returns `EINVAL`; failure returns `ENOMEM`; in both
/// cases `*out` is untouched and, as POSIX specifies, `errno` is not set.
/// `size == 0` gives a unique pointer, as glibc's does.
///
/// # Safety
///
/// `out` is valid for a pointer-sized write.
pub unsafe fn posix_memalign(out: *mut *mut u8, align: usize, size: usize) -> c_int {
    if !align.is_power_of_two() || align % core::mem::size_of::<*mut u8>() != 0 {
        return EINVAL;
    }
    match memalign_inner(align, size) {
        Ok(p) => {
            // SAFETY: caller promise.
            unsafe { out.write(p) };
            0
        }
        Err(e) => e,
    }
}

/// The page size (glibc's `GLRO(dl_pagesize)`, which `sysconf` reads).
fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

/// `valloc`: `memalign(pagesize, size)`, as glibc's.
pub fn valloc(size: usize) -> *mut u8 {
    memalign(page_size(), size)
}

/// `pvalloc`: the size rounded up to a whole number of pages (overflow is
/// null with `ENOMEM`), page aligned, as glibc's. `pvalloc(0)` rounds to 0
/// and, like `malloc(0)`, gives a unique page-aligned pointer.
pub fn pvalloc(size: usize) -> *mut u8 {
    let page = page_size();
    let Some(rounded) = size.checked_next_multiple_of(page) else { return enomem() };
    memalign(page, rounded)
}

/// `malloc_usable_size`: 0 for null (glibc); for a block of ours, the bytes
/// it really has, which the caller may use. A pointer outside our memory is
/// reported and aborts (glibc would read garbage).
///
/// # Safety
///
/// `p` is null or a live block of ours.
#[inline]
pub unsafe fn malloc_usable_size(p: *mut u8) -> usize {
    if p.is_null() {
        return 0;
    }
    // One look-up of the segment map checks `p` and finds its block.
    // SAFETY: the caller promises `p` is a live block of ours (which the
    // look-up checks).
    match unsafe { raw::usable_size_checked(p) } {
        Ok(n) => n,
        Err(raw::NotOurs) => invalid_pointer(b"malloc_usable_size(): pointer not allocated by shrinkalloc", p),
    }
}

/// `malloc_trim`: gives every free page back to the OS now
/// (`shrinkalloc::purge`), whatever `pad` says; returns 1 if memory was
/// released and 0 if not, as glibc's.
pub fn malloc_trim(_pad: usize) -> c_int {
    c_int::from(shrinkalloc::purge() > 0)
}
