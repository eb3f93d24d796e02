//! The work-queue functions: `sa_workqueue_create`, `sa_workqueue_submit`,
//! `sa_workqueue_flush` and `sa_workqueue_destroy`.
//!
//! Invariant: an `sa_workqueue *` handed to C is a leaked
//! `Box<WorkQueue>`; `sa_workqueue_destroy` takes it back exactly once, and
//! dropping the queue destroys it (drains, joins the workers; from inside
//! one of its own items it only begins the end). The workers hold the
//! queue's shared state themselves, so they outlive the handle safely.
//! Failures come back as the core's `SubmitError` and are turned into
//! `errno` here (`SubmitError::errno`), with `EINVAL` for null arguments.

use core::ffi::{c_char, c_int, c_uint, c_void, CStr};
use core::ptr;

use shrinkalloc::reclaim::WorkQueue;

use crate::libc_semantics::set_errno;

/// A C work item: called once with its argument.
type WorkFn = unsafe extern "C" fn(arg: *mut c_void);

/// Creates a queue named `name` with up to `threads_per_class` workers per
/// class (0 means 1, above 256 means 256); null with `EINVAL` for a null name.
///
/// # Safety
///
/// `name` is null or a NUL-terminated string (copied; it may be freed
/// afterwards).
#[no_mangle]
pub unsafe extern "C" fn sa_workqueue_create(name: *const c_char, threads_per_class: c_uint) -> *mut WorkQueue {
    if name.is_null() {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    // A queue is a few hundred bytes (its workers start lazily): from the
    // reserve if need be, so that creating one at the hard limit works.
    shrinkalloc::reclaim::with_reserve(|| {
        // SAFETY: caller promise: a non-null name is NUL-terminated.
        let name = unsafe { CStr::from_ptr(name) }.to_string_lossy();
        Box::into_raw(Box::new(WorkQueue::new(&name, threads_per_class as usize)))
    })
}

/// Queues `f(arg)`; 0, or -1 with `errno` (`EINVAL`, `ESHUTDOWN`, `ENOMEM`,
/// `EAGAIN`).
///
/// # Safety
///
/// `wq` is null or a queue from `sa_workqueue_create` whose destroy has not
/// returned; calling `f(arg)` once, on a worker thread, before the queue's
/// destroy returns must be sound (the header's contract for items).
#[no_mangle]
pub unsafe extern "C" fn sa_workqueue_submit(wq: *mut WorkQueue, f: Option<WorkFn>, arg: *mut c_void) -> c_int {
    // SAFETY: caller promise: `wq` is null or a live queue.
    let (Some(wq), Some(f)) = (unsafe { wq.as_ref() }, f) else {
        set_errno(libc::EINVAL);
        return -1;
    };
    // SAFETY: the caller's promise about `f(arg)` is `submit_c`'s.
    match unsafe { wq.submit_c(f, arg) } {
        Ok(()) => 0,
        Err(e) => {
            set_errno(e.errno());
            -1
        }
    }
}

/// Returns when every item submitted before the call has run; null does
/// nothing.
///
/// # Safety
///
/// `wq` is null or a queue from `sa_workqueue_create` whose destroy has not
/// returned.
#[no_mangle]
pub unsafe extern "C" fn sa_workqueue_flush(wq: *mut WorkQueue) {
    // SAFETY: caller promise: `wq` is null or a live queue.
    if let Some(wq) = unsafe { wq.as_ref() } {
        wq.flush();
    }
}

/// Destroys the queue (drains, joins the workers) and frees it; null does
/// nothing.
///
/// # Safety
///
/// `wq` is null or a queue from `sa_workqueue_create` not destroyed before;
/// no other call on it is in progress when this returns or begins after.
#[no_mangle]
pub unsafe extern "C" fn sa_workqueue_destroy(wq: *mut WorkQueue) {
    // SAFETY: caller promise: `wq` is null or a live queue. Calls racing
    // with the drain borrow it too, so it is only borrowed while draining.
    let Some(queue) = (unsafe { wq.as_ref() }) else { return };
    queue.destroy();
    // SAFETY: caller promise: `wq` is the leaked box of a live queue, taken
    // back once, now that no other call may use it; dropping it again finds
    // the queue closed and drained.
    drop(unsafe { Box::from_raw(wq) });
}
