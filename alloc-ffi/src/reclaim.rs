//! Limits and explicit reclaim: `sa_set_limits` and `sa_reclaim`.
//!
//! Forwards to `shrinkalloc::reclaim`. The C conventions live here: 0 means
//! "no limit", a soft limit above the hard one is refused with `EINVAL`
//! (the core would quietly clamp it), and an `enum sa_level` out of range
//! counts as the nearest level.

use core::ffi::{c_int, c_uint};

use shrinkalloc::reclaim::{self, Level};

use crate::libc_semantics::set_errno;

/// Sets the soft and hard limits (0: none); -1 with `EINVAL` if soft > hard.
#[no_mangle]
pub extern "C" fn sa_set_limits(soft_bytes: usize, hard_bytes: usize) -> c_int {
    if soft_bytes != 0 && hard_bytes != 0 && soft_bytes > hard_bytes {
        set_errno(libc::EINVAL);
        return -1;
    }
    let limit = |b: usize| (b != 0).then_some(b);
    reclaim::set_hard_limit(limit(hard_bytes));
    reclaim::set_soft_limit(limit(soft_bytes));
    0
}

/// Runs one reclaim pass in the calling thread; returns the bytes freed.
#[no_mangle]
pub extern "C" fn sa_reclaim(target_bytes: usize, level: c_uint) -> usize {
    let level = match level {
        0 => Level::None,
        1 => Level::Low,
        2 => Level::Medium,
        _ => Level::Critical,
    };
    reclaim::reclaim(target_bytes, level)
}
