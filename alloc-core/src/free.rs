//! Freeing: the owner's fast path, the cross-thread path, and the checked
//! entry that refuses pointers that are not ours.
//!
//! Invariant: a block goes back to the page it came from: onto `local_free`
//! when the calling thread owns the page's heap, onto the page's atomic
//! `xfree` list otherwise. Huge blocks go back to the huge cache or the OS.

use core::sync::atomic::Ordering;

use crate::heap::{self, Heap};
use crate::page::{state, Block, Page};
use crate::segment::{self, Kind, Segment};
use crate::{huge, os, thread};

/// Frees a block known to be ours. Fast path for the owner: three stores and
/// one compare, no atomic.
///
/// # Safety
///
/// `p` is a live block of this allocator whose segment masks correctly
/// (any block but a huge one aligned to a segment or more).
#[inline(always)]
pub unsafe fn free_unchecked(p: *mut u8) {
    // SAFETY: forwarded caller promise; masking finds the segment.
    unsafe { free_in(segment::segment_of(p), p) }
}

/// Frees any live block of ours, finding its segment through the segment map
/// (so huge blocks with large alignment work too).
///
/// # Safety
///
/// `p` is a live block of this allocator.
pub unsafe fn free_block(p: *mut u8) {
    // SAFETY: forwarded caller promise; the map finds the segment.
    unsafe { free_in(segment::segment_of_block(p), p) }
}

/// Frees live block `p` of segment `seg`: to the page's local list when the
/// caller owns it, else by the cross-thread path.
///
/// # Safety
///
/// `p` is a live block of this allocator in `seg`.
#[inline(always)]
unsafe fn free_in(seg: *mut Segment, p: *mut u8) {
    // SAFETY: caller promise: `p` is live, so its segment and page are.
    unsafe {
        let page = segment::page_of(seg, p);
        let heap = thread::heap();
        if (*page).heap == heap {
            heap::free_local(heap, page, p);
        } else {
            free_remote(seg, page, p);
        }
    }
}

/// Frees `p` after checking that it is the start of a live block of ours;
/// reports and aborts otherwise. Null is ignored.
///
/// # Safety
///
/// If `p` is one of our blocks, nothing uses it after this call.
#[inline]
pub unsafe fn free_checked(p: *mut u8) {
    if p.is_null() {
        return;
    }
    // The common case: a block in the first region of its segment, found by
    // masking once the segment map says the region starts one of ours.
    if !segment::starts_segment(p) {
        // SAFETY: forwarded caller promise.
        return unsafe { free_checked_far(p) };
    }
    let seg = segment::segment_of(p);
    // SAFETY: the segment map says `seg` is a live segment covering `p`.
    unsafe {
        let page = segment::page_of(seg, p);
        let heap = thread::heap();
        // A page not in use has no heap, so this also says it is in use.
        if (*page).heap == heap {
            if !(*page).is_block_start(p) {
                invalid_pointer(b"free(): invalid pointer (not the start of a block)", p);
            }
            if p.cast::<Block>() == (*page).local_free {
                invalid_pointer(b"free(): double free", p);
            }
            heap::free_local(heap, page, p);
        } else {
            free_checked_remote(seg, page, p);
        }
    }
}

/// `free_checked` when the caller does not own the block's page: another
/// thread's block, a huge block, or a pointer that is not a live block.
///
/// # Safety
///
/// As for `free_checked`; `seg` is a live segment and `page` its page of `p`.
#[inline(never)]
unsafe fn free_checked_remote(seg: *mut Segment, page: *mut Page, p: *mut u8) {
    // SAFETY: caller promise.
    unsafe {
        // Relaxed: a block being freed keeps its page IN_USE; a page in any
        // other state means the pointer is stale.
        if (*page).state.load(Ordering::Relaxed) != state::IN_USE || !(*page).is_block_start(p) {
            if (*seg).kind == Kind::Huge {
                return free_checked_far(p);
            }
            invalid_pointer(b"free(): invalid pointer (not a live block)", p);
        }
        free_remote(seg, page, p);
    }
}

/// `free_checked` for huge blocks and for pointers outside our memory.
///
/// # Safety
///
/// As for `free_checked`.
#[cold]
#[inline(never)]
unsafe fn free_checked_far(p: *mut u8) {
    let Some(seg) = segment::segment_of_checked(p) else {
        invalid_pointer(b"free(): pointer not allocated by shrinkalloc", p)
    };
    let seg = seg.as_ptr();
    // SAFETY: the segment map says `seg` is a live segment covering `p`.
    unsafe {
        let block = seg.cast::<u8>().add((*seg).block_offset);
        // Relaxed: see `free_checked`.
        let live = (*seg).pages[0].state.load(Ordering::Relaxed) == state::IN_USE;
        if (*seg).kind != Kind::Huge || p != block || !live {
            invalid_pointer(b"free(): invalid pointer (interior, or block already freed)", p);
        }
        huge::free(seg);
    }
}

/// Frees a block the calling thread does not own: a huge block, or a block of
/// another heap's page (pushed on the page's `xfree`; a full page is also
/// pushed on its heap's `remote_pages` so the owner takes it back).
///
/// # Safety
///
/// `p` is a live block of `page` in `seg`.
#[inline(never)]
unsafe fn free_remote(seg: *mut Segment, page: *mut Page, p: *mut u8) {
    // SAFETY: caller promise. The page stays live until the owner drains it:
    // `push_remote` sets XF_QUEUED when we must push it, and a queued page is
    // never retired. Heaps are never unmapped.
    unsafe {
        if (*seg).kind == Kind::Huge {
            huge::free(seg);
            return;
        }
        let me = thread::heap();
        if me != heap::empty_heap() {
            (*me).remote_freed += (*page).block_size;
        }
        if !(*page).push_remote(p.cast::<Block>()) {
            return;
        }
        let heap: *mut Heap = (*page).heap;
        let stack = &(*heap).remote_pages;
        // Relaxed: the CAS below publishes.
        let mut head = stack.load(Ordering::Relaxed);
        loop {
            (*page).remote_next.store(head, Ordering::Relaxed);
            // Release pairs with the owner's Acquire swap in `drain_remote`.
            match stack.compare_exchange_weak(head, page, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => head = now,
            }
        }
    }
}

/// Reports a bad pointer on stderr in one line and aborts: continuing would
/// corrupt the heap.
#[cold]
pub fn invalid_pointer(what: &[u8], p: *const u8) -> ! {
    let mut buf = [0u8; 160];
    let mut n = 0;
    for part in [b"shrinkalloc: ".as_slice(), what, b" 0x"] {
        buf[n..n + part.len()].copy_from_slice(part);
        n += part.len();
    }
    let addr = p as usize;
    for i in (0..16).rev() {
        buf[n] = b"0123456789abcdef"[(addr >> (i * 4)) & 0xf];
        n += 1;
    }
    buf[n] = b'\n';
    os::write_stderr(&buf[..=n]);
    os::abort()
}
