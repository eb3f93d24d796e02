//! Freeing: the owner's fast path, the cross-thread path, and the checked
//! entry that refuses pointers that are not ours.
//!
//! Invariant: a block goes back to the page it came from: onto the owner's
//! lists when the calling thread owns the page's heap (the page's owner
//! part), onto the page's atomic `xfree` list otherwise (its shared part
//! only). Huge blocks go back to the huge cache or the OS.
//!
//! The owner's list: the C entry points ([`free_checked`], which `realloc`
//! also uses for the block it leaves) push a block of a small page
//! straight onto `free`, so that the block freed last is the
//! next one handed out while it is still in the cache (jemalloc's and
//! tcmalloc's thread caches do the same; `benches/programs/churn.py` with
//! `PYTHONMALLOC=malloc` took 0.69 s of CPU against 0.77 with
//! `local_free`, jemalloc 0.64, 7 interleaved runs). Small pages therefore
//! never claim zeroed memory (`Page::init`): `calloc` clears their blocks.
//! Every other free of the owner (the Rust allocator's `dealloc`, blocks
//! of medium and large pages) goes to `local_free`, which keeps the fast
//! path of the Rust allocator and the zeroed pages of larger blocks as
//! they were.

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
/// caller owns the page and it is not full (one compare of the page's owner
/// tag), else by [`free_in_slow`].
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
    if unsafe { (*page).owner_tag() } == heap.cast() {
        // SAFETY: the page is owned by this thread's heap; `p` is live in it.
        unsafe { free_local::<false>(page, p) };
    } else {
        // SAFETY: forwarded caller promise.
        unsafe { free_in_slow(seg, page, p) };
    }
}

/// [`free_in`] for a full page of the caller's own, or a block the caller
/// does not own.
///
/// # Safety
///
/// `p` is a live block of `page` in `seg`.
#[inline(never)]
unsafe fn free_in_slow(seg: *mut Segment, page: *mut Page, p: *mut u8) {
    let heap = heap::current();
    // SAFETY: the caller promises a live page.
    if unsafe { (*page).heap() } == heap.cast() {
        // SAFETY: the page is owned by this thread's heap; `p` is live in it.
        unsafe { free_local_full::<false>(&*heap, page, p) };
    } else {
        // SAFETY: forwarded caller promise.
        unsafe { free_remote(seg, page, p) };
    }
}

/// Frees `p` after checking that it is the start of a live block of ours;
/// reports and aborts otherwise. Null is ignored.
///
/// The fast path is for a block of a small segment whose page the caller
/// owns and is not full: one segment-map load, the page by a constant
/// shift, one compare of the page's owner tag, the block-start test (one
/// multiply), the immediate double-free test, the push. Everything else
/// (null, foreign pointers, medium, large and huge blocks, full pages,
/// other threads' blocks, bad pointers) leaves by a tail call.
///
/// # Safety
///
/// If `p` is one of our blocks, nothing uses it after this call.
#[inline(always)]
pub unsafe fn free_checked(p: *mut u8) {
    let Some(page) = segment::small_page_of(p) else {
        // SAFETY: the caller's promise is the one `free_checked_far` asks.
        return unsafe { free_checked_far(p) };
    };
    // SAFETY: the segment map says `p` lies in a live small segment, whose
    // page records are live.
    unsafe { free_checked_in::<true>(page, p) }
}

/// `free_checked` once the page record of `p` is known; `TO_FREE`: the
/// page is small and takes the owner's frees on `free` (see the module).
///
/// # Safety
///
/// `page` is the live page record covering `p` in a live segment; as for
/// `free_checked` otherwise.
#[inline(always)]
unsafe fn free_checked_in<const TO_FREE: bool>(page: *mut Page, p: *mut u8) {
    // SAFETY: the caller promises a live page record.
    let pg = unsafe { &*page };
    let heap = heap::current();
    // A page not in use has no heap, and a full one carries `TAG_FULL`, so
    // the compare also says "in use, not full". Every failing test goes to
    // `free_checked_slow`, which tells a bad pointer from another thread's
    // block (a tail call: no frame here).
    if pg.owner_tag() == heap.cast()
        // SAFETY: evaluated only once the tag says the caller owns the page.
        && unsafe { pg.is_block_start_owned(p) }
        && p.cast::<Block>() != pg.last_freed::<TO_FREE>()
        // SAFETY: `p` starts a block of a page in use (the owner's).
        && !unsafe { pg.looks_freed(pg.block_at(p)) }
    {
        // SAFETY: the page is owned by this thread's heap, and `p` is the
        // start of one of its blocks, not the last one freed (nor one that
        // carries the free mark, with `double-free-check`).
        unsafe { free_local::<TO_FREE>(page, p) };
    } else {
        // SAFETY: the page is live (caller promise); the caller's promise
        // is the one `free_checked_slow` asks.
        unsafe { free_checked_slow::<TO_FREE>(p, page) };
    }
}

/// The owner's free: pushes `block` on the page's `local_free`, or on
/// `free` when `TO_FREE` (a small page, which never claims zeroed memory).
///
/// # Safety
///
/// `page` belongs to the calling thread's heap and is not on the full
/// list, and `block` is a live block of it; with `TO_FREE`, the page is
/// small.
#[inline(always)]
pub unsafe fn free_local<const TO_FREE: bool>(page: *mut Page, block: *mut u8) {
    // SAFETY: the caller promises a live page of this thread's heap.
    let p = unsafe { &*page };
    let b = p.block_at(block);
    let list = if TO_FREE { &p.own.free } else { &p.own.local_free };
    // SAFETY: the caller gives up the live block: its words are ours.
    unsafe {
        p.mark_free(b);
        (*b).next = list.get();
    }
    list.set(b);
    p.set_used(p.used() - 1);
}

/// A block came back to a full page of the caller's: the block is pushed
/// and the page goes back on its queue. Pages that become empty are not
/// retired here but on the next decay tick (`release_empty_pages`), which
/// keeps `used == 0` off the fast path and spares a malloc/free loop from
/// giving its page back each time.
///
/// # Safety
///
/// As for [`free_local`], but the page may be on the full list.
#[cold]
#[inline(never)]
unsafe fn free_local_full<const TO_FREE: bool>(heap: &Heap, page: *mut Page, block: *mut u8) {
    // SAFETY: forwarded caller promise (`free_local` does not look at the
    // full flag).
    unsafe { free_local::<TO_FREE>(page, block) };
    // SAFETY: the caller promises a live page of this thread's heap.
    if unsafe { (*page).own.flags.get() } & PF_IN_FULL != 0 {
        // SAFETY: a page flagged full is on its heap's full list.
        unsafe { heap.unfull(page) };
    }
}

/// `free_checked` when the fast path refused: a full page of the caller's,
/// another thread's block, or a pointer that is not a live block.
///
/// # Safety
///
/// As for `free_checked`; `page` is the live page record covering `p` in a
/// live small, medium or large segment.
#[inline(never)]
unsafe fn free_checked_slow<const TO_FREE: bool>(p: *mut u8, page: *mut Page) {
    // SAFETY: the caller promises live records; a shared reference touches
    // only the page's shared part below (atomics and fixed fields), and the
    // owner part only when this thread owns the page.
    let pg = unsafe { &*page };
    let heap = heap::current();
    if pg.heap() == heap.cast() {
        // Our own page, and `free_checked` refused the pointer: a full
        // page, not a block start, the block freed last, or one with the
        // free mark.
        if !pg.is_block_start(p) {
            invalid_pointer(b"free(): invalid pointer (not the start of a block)", p);
        }
        let b = pg.block_at(p);
        // SAFETY: `p` starts a block of a page in use (ours).
        if b == pg.last_freed::<TO_FREE>() || (unsafe { pg.looks_freed(b) } && pg.on_free_lists(b)) {
            invalid_pointer(b"free(): double free", p);
        }
        // A live block (any mark was the program's own bytes) of our own
        // page, which may be on the full list.
        // SAFETY: the page is this thread's; `p` starts a live block.
        return unsafe { free_local_full::<TO_FREE>(&*heap, page, p) };
    }
    // Acquire pairs with the Release of IN_USE in `Page::init`: the geometry
    // `is_block_start` reads is the page's. A block being freed keeps its
    // page IN_USE; a page in any other state means the pointer is stale.
    if pg.shared.state.load(Ordering::Acquire) != state::IN_USE || !pg.is_block_start(p) {
        invalid_pointer(b"free(): invalid pointer (not a live block)", p);
    }
    // Another thread's page: its lists are not ours to walk, so the mark
    // alone decides (with `double-free-check`).
    // SAFETY: `p` starts a block of a page in use.
    if unsafe { pg.looks_freed(pg.block_at(p)) } {
        invalid_pointer(b"free(): double free (the block carries the free mark)", p);
    }
    // SAFETY: `p` is the start of a block of a page in use: a live block of
    // a segment that is not huge, which masking finds.
    unsafe { free_remote(segment::segment_of(p), page, p) };
}

/// `free_checked` for everything but small segments: null, pointers
/// outside our memory, blocks of medium and large segments (the same tests
/// as the fast path, after a map look-up) and huge blocks.
///
/// # Safety
///
/// As for `free_checked`.
#[inline(never)]
unsafe fn free_checked_far(p: *mut u8) {
    if p.is_null() {
        return;
    }
    let Some(seg) = segment::segment_of_checked(p) else {
        invalid_pointer(b"free(): pointer not allocated by shrinkalloc", p)
    };
    // SAFETY: the segment map says `seg` is a live segment covering `p`.
    let s = unsafe { seg.as_ref() };
    if s.kind != Kind::Huge {
        // SAFETY: `p` lies in the live segment `seg` (one region: not huge),
        // so its page record is live; the caller's promise is forwarded.
        return unsafe { free_checked_in::<false>(segment::page_of(seg.as_ptr(), p), p) };
    }
    let block = seg.as_ptr().cast::<u8>().wrapping_add(s.block_offset.get());
    // Acquire pairs with the Release of IN_USE in `huge::alloc`.
    let live = s.pages[0].shared.state.load(Ordering::Acquire) == state::IN_USE;
    if p != block || !live {
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
    notify_owner(page);
}

/// Pushes `page` on its owner's `remote_pages` stack, for a thread that
/// won the right to ([`Page::push_remote`] or [`Page::decommit_remote`]
/// said so).
pub(crate) fn notify_owner(page: *mut Page) {
    // SAFETY: the page is live: it carries XF_QUEUED, so it is not retired
    // until its owner drains it.
    let pg = unsafe { &*page };
    let owner = pg.heap().cast::<Heap>();
    // SAFETY: heaps are never unmapped, and a page in use that carries
    // XF_QUEUED has its owner (it cannot be retired until drained, whether
    // it holds a live block or was emptied); `remote_pages` is the one
    // field other threads touch, atomically.
    let stack = unsafe { &(*owner).remote_pages };
    // Before the page goes on the stack: from then on its owner may drain
    // and retire it, and give its segment back.
    // SAFETY: as above, the page is in use, so its segment is mapped.
    unsafe { (*segment::segment_of(page.cast())).wants_a_look() };
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
