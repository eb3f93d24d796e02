//! Freeing: the owner's fast path, the cross-thread path, and the checked
//! entry that refuses pointers that are not ours.
//!
//! Invariant: a block goes back to the page it came from: onto `local_free`
//! when the calling thread owns the page's heap (the page's owner part),
//! onto the page's atomic `xfree` list otherwise (its shared part only).
//! Huge blocks go back to the huge cache or the OS.

use core::sync::atomic::Ordering;

use crate::heap::{self, Heap};
use crate::page::{state, Block, Page, PF_IN_FULL};
use crate::segment::{self, Kind, Segment};
use crate::{huge, os};

/// Frees a block known to be ours. Fast path for the owner: three stores and
/// one compare, no atomic.
///
/// # Safety
///
/// `p` is a live block of this allocator whose segment masks correctly
/// (any block but a huge one aligned to a segment or more).
#[inline(always)]
pub unsafe fn free_unchecked(p: *mut u8) {
    // SAFETY: the caller promises a live block whose segment masking finds.
    unsafe { free_in(segment::segment_of(p), p) }
}

/// Frees any live block of ours, finding its segment through the segment map
/// (so huge blocks with large alignment work too).
///
/// # Safety
///
/// `p` is a live block of this allocator.
pub unsafe fn free_block(p: *mut u8) {
    // SAFETY: the caller promises a live block; the map finds its segment.
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
    // SAFETY: the caller promises `p` is live in `seg`, so its page is.
    let page = unsafe { segment::page_of(seg, p) };
    let heap = heap::current();
    // SAFETY: as above: the page record is live.
    if unsafe { (*page).heap() } == heap.cast() {
        // SAFETY: the page is owned by this thread's heap; `p` is live in it.
        unsafe { free_local(&*heap, page, p) };
    } else {
        // SAFETY: the caller promises `p` is a live block of `page` in `seg`.
        unsafe { free_remote(seg, page, p) };
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
        // SAFETY: the caller's promise (nothing uses a block of ours after
        // this call) is the one `free_checked_far` asks.
        return unsafe { free_checked_far(p) };
    }
    let seg = segment::segment_of(p);
    // SAFETY: the segment map says `seg` is a live segment covering `p`.
    let page = unsafe { segment::page_of(seg, p) };
    // SAFETY: as above: the page record is live.
    let pg = unsafe { &*page };
    let heap = heap::current();
    // A page not in use has no heap, so this also says it is in use. Every
    // failing test goes to `free_checked_remote`, which tells a bad pointer
    // from another thread's block (a tail call: no frame here).
    if pg.heap() == heap.cast()
        && pg.is_block_start(p)
        && p.cast::<Block>() != pg.own.local_free.get()
        // SAFETY: `p` starts a block of a page in use (the owner's).
        && !unsafe { pg.looks_freed(pg.block_at(p)) }
    {
        // SAFETY: the page is owned by this thread's heap, and `p` is the
        // start of one of its blocks, not the last one freed (nor one that
        // carries the free mark, with `double-free-check`).
        unsafe { free_local(&*heap, page, p) };
    } else {
        // SAFETY: `seg` and `page` are live (the map says so); the caller's
        // promise is the one `free_checked_remote` asks.
        unsafe { free_checked_remote(seg, page, p) };
    }
}

/// The owner's free: pushes `block` on the page's `local_free`.
///
/// # Safety
///
/// `page` belongs to `heap`, owned by the calling thread, and `block` is a
/// live block of it.
#[inline(always)]
pub unsafe fn free_local(heap: &Heap, page: *mut Page, block: *mut u8) {
    // SAFETY: the caller promises a live page of this thread's heap.
    let p = unsafe { &*page };
    let b = p.block_at(block);
    // SAFETY: the caller gives up the live block: its words are ours.
    unsafe {
        p.mark_free(b);
        (*b).next = p.own.local_free.get();
    }
    p.own.local_free.set(b);
    p.set_used(p.used() - 1);
    if p.own.flags.get() != 0 {
        // SAFETY: `page` is a live page of `heap`, which this thread owns
        // (the caller's promise, as `free_local_slow` asks).
        unsafe { free_local_slow(heap, page) };
    }
}

/// A block came back to a full page: the page goes back on its queue.
/// Pages that become empty are not retired here but on the next decay tick
/// (`release_empty_pages`), which keeps `used == 0` off the fast path and
/// spares a malloc/free loop from giving its page back each time.
///
/// # Safety
///
/// As for [`free_local`].
#[cold]
#[inline(never)]
unsafe fn free_local_slow(heap: &Heap, page: *mut Page) {
    // SAFETY: the caller promises a live page of this thread's heap.
    if unsafe { (*page).own.flags.get() } & PF_IN_FULL != 0 {
        // SAFETY: a page flagged full is on its heap's full list.
        unsafe { heap.unfull(page) };
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
    // SAFETY: the caller promises live records; a shared reference touches
    // only the page's shared part below (atomics and fixed fields), and the
    // owner part only when this thread owns the page.
    let pg = unsafe { &*page };
    let me = heap::current();
    if pg.heap() == me.cast() {
        // Our own page, and `free_checked` refused the pointer: not a block
        // start, the block freed last, or one with the free mark.
        if !pg.is_block_start(p) {
            invalid_pointer(b"free(): invalid pointer (not the start of a block)", p);
        }
        let b = pg.block_at(p);
        if b != pg.own.local_free.get() && !pg.on_free_lists(b) {
            // The mark was the program's own bytes: a live block after all.
            // SAFETY: the page is this thread's; `p` starts a live block.
            return unsafe { free_local(&*me, page, p) };
        }
        invalid_pointer(b"free(): double free", p);
    }
    // Acquire pairs with the Release of IN_USE in `Page::init`: the geometry
    // `is_block_start` reads is the page's. A block being freed keeps its
    // page IN_USE; a page in any other state means the pointer is stale.
    if pg.shared.state.load(Ordering::Acquire) != state::IN_USE || !pg.is_block_start(p) {
        // SAFETY: the segment is live (caller promise).
        if unsafe { (*seg).kind } == Kind::Huge {
            // SAFETY: as `free_checked_far` asks: the caller's promise.
            return unsafe { free_checked_far(p) };
        }
        invalid_pointer(b"free(): invalid pointer (not a live block)", p);
    }
    // Another thread's page: its lists are not ours to walk, so the mark
    // alone decides (with `double-free-check`).
    // SAFETY: `p` starts a block of a page in use.
    if unsafe { pg.looks_freed(pg.block_at(p)) } {
        invalid_pointer(b"free(): double free (the block carries the free mark)", p);
    }
    // SAFETY: `p` is the start of a block of a page in use: a live block.
    unsafe { free_remote(seg, page, p) };
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
    // SAFETY: the segment map says `seg` is a live segment covering `p`.
    let s = unsafe { seg.as_ref() };
    let block = seg.as_ptr().cast::<u8>().wrapping_add(s.block_offset.get());
    // Acquire pairs with the Release of IN_USE in `huge::alloc`.
    let live = s.pages[0].shared.state.load(Ordering::Acquire) == state::IN_USE;
    if s.kind != Kind::Huge || p != block || !live {
        invalid_pointer(b"free(): invalid pointer (interior, or block already freed)", p);
    }
    // SAFETY: `p` is the live huge block of `seg`, freed once (caller promise).
    unsafe { huge::free(seg.as_ptr()) };
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
    // SAFETY: the caller promises a live segment.
    if unsafe { (*seg).kind } == Kind::Huge {
        // SAFETY: `p` is the live huge block of `seg` (caller promise).
        return unsafe { huge::free(seg) };
    }
    // SAFETY: the page is live (caller promise); only its shared part is
    // touched. It stays live until the owner drains it: `push_remote` sets
    // XF_QUEUED when we must push it, and a queued page is never retired.
    let pg = unsafe { &*page };
    let me = heap::current();
    if me != heap::empty_heap() {
        // SAFETY: a heap other than the empty one is this thread's own.
        let me = unsafe { &*me };
        me.remote_freed.set(me.remote_freed.get() + pg.block_size());
    }
    // SAFETY: `p` is a live block of the page, freed once (caller promise).
    if !unsafe { pg.push_remote(pg.block_at(p)) } {
        return;
    }
    let owner = pg.heap().cast::<Heap>();
    // SAFETY: heaps are never unmapped, and a page with a live block has its
    // owner; `remote_pages` is the one field other threads touch, atomically.
    let stack = unsafe { &(*owner).remote_pages };
    // Relaxed: the CAS below publishes.
    let mut head = stack.load(Ordering::Relaxed);
    loop {
        pg.shared.remote_next.store(head, Ordering::Relaxed);
        // Release pairs with the owner's Acquire swap in `drain_remote`.
        match stack.compare_exchange_weak(head, page, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => break,
            Err(now) => head = now,
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
