//! The harness's global allocator: one binary, several allocators.
//!
//! Every child the harness starts is this same binary, and which allocator
//! serves it is decided by `SHRINKALLOC_STRESS_ALLOCATOR` (`shrinkalloc`, the
//! default, or `system`), read once on the first allocation of the process.
//! `system` forwards to [`std::alloc::System`], i.e. to whatever `malloc` the
//! process has: glibc's, or jemalloc's or mimalloc's under `LD_PRELOAD`.
//!
//! Invariant: the choice is made before the first block is handed out and
//! never changes, so every block is freed by the allocator that made it.
//! Reading the choice costs one relaxed load; making it calls `getenv`, which
//! does not allocate.

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::CStr;
use core::sync::atomic::{AtomicU8, Ordering};
use std::alloc::System;

use shrinkalloc::ShrinkAlloc;

/// The environment variable that picks the backend of a process.
pub const ENV: &str = "SHRINKALLOC_STRESS_ALLOCATOR";
const ENV_C: &CStr = c"SHRINKALLOC_STRESS_ALLOCATOR";

const UNSET: u8 = 0;
const SHRINK: u8 = 1;
const SYSTEM: u8 = 2;

/// `UNSET` until the first allocation, then `SHRINK` or `SYSTEM` for good.
static CHOICE: AtomicU8 = AtomicU8::new(UNSET);

/// Which allocator serves this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `shrinkalloc::ShrinkAlloc`.
    ShrinkAlloc,
    /// `std::alloc::System`: the process's `malloc`.
    System,
}

impl Backend {
    /// The value of [`ENV`] that selects this backend.
    pub fn env_value(self) -> &'static str {
        match self {
            Backend::ShrinkAlloc => "shrinkalloc",
            Backend::System => "system",
        }
    }
}

#[inline]
fn choice() -> u8 {
    // Relaxed: the value is a pure function of the environment, which nobody
    // changes (the harness never calls `set_var`); any thread that sees UNSET
    // computes the same value and the compare-exchange keeps the first.
    match CHOICE.load(Ordering::Relaxed) {
        UNSET => choose(),
        c => c,
    }
}

#[cold]
#[inline(never)]
fn choose() -> u8 {
    // SAFETY: `ENV_C` is NUL-terminated; nothing in this process modifies
    // the environment (no `set_var`, no `setenv`), so `getenv` cannot race
    // with a writer, and it does not allocate.
    let value = unsafe { libc::getenv(ENV_C.as_ptr()) };
    let c = if value.is_null() {
        SHRINK
    } else {
        // SAFETY: a non-null `getenv` result is a NUL-terminated string that
        // stays valid while the environment is not modified (see above).
        match unsafe { CStr::from_ptr(value) }.to_bytes() {
            b"" | b"shrinkalloc" => SHRINK,
            b"system" => SYSTEM,
            _ => bad_value(),
        }
    };
    match CHOICE.compare_exchange(UNSET, c, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => c,
        Err(first) => first,
    }
}

/// Reports an unknown value without allocating and aborts: guessing would
/// make a run measure the wrong allocator.
fn bad_value() -> ! {
    let msg = b"shrinkalloc-stress: SHRINKALLOC_STRESS_ALLOCATOR must be `shrinkalloc` or `system`\n";
    // SAFETY: writes a valid buffer of `msg.len()` bytes to stderr.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
    std::process::abort()
}

/// The dispatching global allocator.
pub struct Switch;

// SAFETY: every call forwards to one allocator, fixed before the first block
// is handed out (module invariant), so each block is freed, resized and
// zeroed by the allocator that made it, which upholds `GlobalAlloc` itself.
unsafe impl GlobalAlloc for Switch {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if choice() == SYSTEM {
            // SAFETY: the caller's promises on `layout` are passed on.
            unsafe { System.alloc(layout) }
        } else {
            // SAFETY: as above.
            unsafe { ShrinkAlloc.alloc(layout) }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if choice() == SYSTEM {
            // SAFETY: `p` came from `System` (the choice never changes).
            unsafe { System.dealloc(p, layout) }
        } else {
            // SAFETY: `p` came from `ShrinkAlloc` (the choice never changes).
            unsafe { ShrinkAlloc.dealloc(p, layout) }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if choice() == SYSTEM {
            // SAFETY: the caller's promises on `layout` are passed on.
            unsafe { System.alloc_zeroed(layout) }
        } else {
            // SAFETY: as above.
            unsafe { ShrinkAlloc.alloc_zeroed(layout) }
        }
    }

    #[inline]
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if choice() == SYSTEM {
            // SAFETY: `p` came from `System` with `layout`; the caller's
            // promises on `new_size` are passed on.
            unsafe { System.realloc(p, layout, new_size) }
        } else {
            // SAFETY: as above, for `ShrinkAlloc`.
            unsafe { ShrinkAlloc.realloc(p, layout, new_size) }
        }
    }
}
