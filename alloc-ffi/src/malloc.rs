//! The malloc family proper: `malloc`, `calloc`, `realloc`, `reallocarray`,
//! `free` (with C23's `free_sized` and `free_aligned_sized`),
//! `malloc_usable_size` and `malloc_trim`.
//!
//! One-line forwards to `libc_semantics.rs`, where every C-semantics choice
//! is made; the exported symbols override glibc's under `LD_PRELOAD` or when
//! linked before libc. Each is safe to call from any thread, before `main`,
//! in a forked child and inside a shrinker callback.

use core::ffi::{c_int, c_void};

use crate::libc_semantics as c;

/// Allocates `size` bytes; null with `errno = ENOMEM` if impossible.
#[no_mangle]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    c::malloc(size).cast()
}

/// Allocates `n * size` zeroed bytes; null with `ENOMEM` on overflow.
#[no_mangle]
pub extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    c::calloc(n, size).cast()
}

/// Frees a block; null is a no-op; a bad pointer aborts with a message.
///
/// # Safety
///
/// `p` is null or a block from this library not freed since, and is not used
/// after the call.
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    // SAFETY: forwarded caller promise.
    unsafe { c::free(p.cast()) }
}

/// C23 `free_sized`: the same as `free` (the size is not needed to free).
///
/// # Safety
///
/// As for [`free`].
#[no_mangle]
pub unsafe extern "C" fn free_sized(p: *mut c_void, _size: usize) {
    // SAFETY: forwarded caller promise.
    unsafe { c::free(p.cast()) }
}

/// C23 `free_aligned_sized`: the same as `free`.
///
/// # Safety
///
/// As for [`free`].
#[no_mangle]
pub unsafe extern "C" fn free_aligned_sized(p: *mut c_void, _align: usize, _size: usize) {
    // SAFETY: forwarded caller promise.
    unsafe { c::free(p.cast()) }
}

/// Resizes a block; see `libc_semantics::realloc` for `realloc(p, 0)`.
///
/// # Safety
///
/// `p` is null or a live block from this library; after a non-null result
/// (or a zero `size`) the old pointer is not used again.
#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: forwarded caller promise.
    unsafe { c::realloc(p.cast(), size).cast() }
}

/// `realloc(p, n * size)` with the multiplication checked.
///
/// # Safety
///
/// As for [`realloc`].
#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    // SAFETY: forwarded caller promise.
    unsafe { c::reallocarray(p.cast(), n, size).cast() }
}

/// The usable size of a block (0 for null).
///
/// # Safety
///
/// `p` is null or a live block from this library.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    // SAFETY: forwarded caller promise.
    unsafe { c::malloc_usable_size(p.cast()) }
}

/// Returns free memory to the OS now; 1 if any was released.
#[no_mangle]
pub extern "C" fn malloc_trim(pad: usize) -> c_int {
    c::malloc_trim(pad)
}
