//! The aligned family: `posix_memalign`, `aligned_alloc`, `memalign`,
//! `valloc` and `pvalloc`.
//!
//! One-line forwards to `libc_semantics.rs`, which holds each function's
//! alignment and error rules. `valloc` and `pvalloc` are exported too, so
//! that no block from glibc's allocator ever reaches our `free`.

use core::ffi::{c_int, c_void};

use crate::libc_semantics as c;

/// POSIX aligned allocation: returns 0, `EINVAL` or `ENOMEM`; never sets
/// `errno`.
///
/// # Safety
///
/// `out` is valid for writing one pointer.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    // SAFETY: forwarded caller promise.
    unsafe { c::posix_memalign(out.cast(), align, size) }
}

/// C11 aligned allocation; null with `EINVAL` unless `align` is a power of two.
#[no_mangle]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    c::aligned_alloc(align, size).cast()
}

/// The obsolete `memalign`, with glibc's rounding of the alignment.
#[no_mangle]
pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    c::memalign(align, size).cast()
}

/// `memalign(pagesize, size)`.
#[no_mangle]
pub extern "C" fn valloc(size: usize) -> *mut c_void {
    c::valloc(size).cast()
}

/// Page-aligned, with the size rounded up to whole pages.
#[no_mangle]
pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
    c::pvalloc(size).cast()
}
