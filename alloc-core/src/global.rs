//! The `GlobalAlloc` implementation: forwards only.

use core::alloc::{GlobalAlloc, Layout};

use crate::raw::MIN_ALIGN;
use crate::segment::SEGMENT_SIZE;
use crate::{alloc, free, realloc};

/// The shrinkalloc global allocator.
///
/// ```
/// #[global_allocator]
/// static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;
///
/// let s = String::from("allocated by shrinkalloc");
/// assert_eq!(s.len(), 24);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ShrinkAlloc;

// SAFETY: blocks are unique until freed, at least `layout.size()` long and
// aligned to `layout.align()` (see `alloc.rs`); null is returned on failure.
unsafe impl GlobalAlloc for ShrinkAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= MIN_ALIGN {
            // Layout guarantees the rounded size does not overflow; `max`
            // keeps a zero size off the 8-byte class.
            alloc::malloc(((layout.size() + layout.align() - 1) & !(layout.align() - 1)).max(layout.align()))
        } else {
            alloc::malloc_aligned(layout.size(), layout.align())
        }
    }

    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if layout.align() < SEGMENT_SIZE {
            // SAFETY: the caller promises `p` is a live block of ours; below
            // segment alignment its segment is found by masking.
            unsafe { free::free_unchecked(p) }
        } else {
            // SAFETY: the caller promises `p` is a live block of ours.
            unsafe { free::free_block(p) }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        alloc::malloc_zeroed(layout.size(), layout.align())
    }

    #[inline]
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller promises `p` is live with `layout`.
        unsafe { realloc::realloc(p, new_size, layout.align()) }
    }
}
