//! Reclaim lockdep from C: `sa_lockdep_enable`, `sa_lockdep_acquire` and
//! `sa_lockdep_release`.
//!
//! One-line forwards to `shrinkalloc::lockdep`. The last two are what the
//! pthread interposer (`alloc-ffi/lockdep/shrinkalloc_lockdep.c`, built as
//! `libshrinkalloc_lockdep.so`) calls around every `pthread_mutex_*` and
//! `pthread_rwlock_*` lock and unlock, and what a program calls around
//! locks of its own making. This library itself interposes nothing: a
//! program that does not preload the interposer pays nothing on its locks.

use core::ffi::{c_char, c_int, c_void, CStr};

use shrinkalloc::lockdep;

/// Turns the checker on (and, when `abort_on_report` is non-zero, makes the
/// first report abort), as `SHRINKALLOC_LOCKDEP=1` (`=abort`) does.
#[no_mangle]
pub extern "C" fn sa_lockdep_enable(abort_on_report: c_int) {
    if abort_on_report != 0 {
        lockdep::enable_abort();
    } else {
        lockdep::enable();
    }
}

/// The calling thread now holds the lock at `lock`, named `name` (NULL: no
/// name) in reports.
///
/// # Safety
///
/// `name` is NULL or a NUL-terminated string that lives as long as the
/// process (a string literal).
#[no_mangle]
pub unsafe extern "C" fn sa_lockdep_acquire(lock: *const c_void, name: *const c_char) {
    if !lockdep::is_enabled() {
        return;
    }
    // SAFETY: the caller promises NULL or a static NUL-terminated string.
    let name = unsafe { name.as_ref() }.and_then(|_| unsafe { CStr::from_ptr(name) }.to_str().ok());
    lockdep::acquired(lock.cast(), name);
}

/// The calling thread no longer holds the lock at `lock`.
#[no_mangle]
pub extern "C" fn sa_lockdep_release(lock: *const c_void) {
    if lockdep::is_enabled() {
        lockdep::released(lock.cast());
    }
}
