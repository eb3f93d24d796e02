//! The realloc policy: when a block is resized in place, and where a
//! growing block moves.
//!
//! A block whose usable size still fits, and is not more than twice what is
//! asked, stays; a huge block grows or shrinks inside its reserve, unless
//! the growth would fault in a quarter of its size or more and a freed huge
//! block holds the new size committed: then it moves there (a copy costs
//! less than the faults, and the block it leaves is cached committed). A
//! block that grows moves: past 64 KiB to a huge block with room to grow
//! in place; a buffer the thread grows again and again (a *streak*) to a
//! cached huge block from 4 KiB, or to a block with half as much room again.
//!
//! Invariant: on failure the old block is untouched; on success it is freed
//! exactly once, after its bytes were copied.

use core::ptr;

use crate::alloc::malloc_aligned;
use crate::heap::{self, empty_heap};
use crate::raw::MIN_ALIGN;
use crate::segment::{self, Kind, Segment};
use crate::size_class::MAX_CLASS_SIZE;
use crate::{free, huge};

/// Blocks that `realloc` grows past this become huge blocks with room to
/// grow in place: copying a growing buffer through every size class costs
/// more than one mapping.
const REALLOC_HUGE_MIN: usize = 64 << 10;

/// The same from this size for a block the thread grows twice in a row (a
/// buffer being appended to, which glibc grows in place at its heap top),
/// but only into a freed huge block the cache holds: never a new mapping
/// (a program building many such buffers would make a system call each).
const STREAK_HUGE_MIN: usize = 4 << 10;

/// A buffer grown by at most half at a time gets room for half as much
/// again from this size: below it, copies are cheap and the room would
/// cost more.
const ROOMY_MIN: usize = 1 << 10;

/// A huge block that would fault in at least 1/`MOVE_RATIO` of its size
/// to grow in place moves into a cached block that holds the new size
/// committed (see [`huge::alloc_committed`]): a page copied costs about a
/// tenth of a page faulted in (zeroed, mapped, a trap), so the copy pays
/// back from there with a margin.
const MOVE_RATIO: usize = 4;

/// Address space a growing block reserves: four times the size asked, and
/// at least the rest of its segment, so that a buffer grows to about 4 MiB
/// without a copy. Untouched reserve costs no memory.
fn growing_reserve(size: usize) -> usize {
    (size * 4).max(segment::SEGMENT_SIZE - segment::HEADER_RESERVE)
}

/// The block a block of `usable` bytes growing to `new_size` moves to; a
/// `streak` is a block this thread grew last (see [`crate::heap::Heap::last_grown`]);
/// `checked`: reclaim lockdep already checked this reallocation.
fn grown_block(new_size: usize, usable: usize, align: usize, streak: bool, checked: bool) -> *mut u8 {
    if (STREAK_HUGE_MIN..=isize::MAX as usize / 8).contains(&new_size) {
        if !checked && (streak || new_size >= REALLOC_HUGE_MIN) {
            // Reclaim lockdep: a huge block bypasses the heap's slow path.
            crate::alloc::before_bypass();
        }
        let huge_align = align.max(MIN_ALIGN);
        let q = if new_size >= REALLOC_HUGE_MIN {
            huge::alloc(new_size, huge_align, growing_reserve(new_size))
        } else if streak {
            huge::alloc_cached(new_size, huge_align, growing_reserve(new_size))
        } else {
            ptr::null_mut()
        };
        if !q.is_null() {
            return q;
        }
    }
    if streak && new_size >= ROOMY_MIN && new_size - usable <= usable / 2 {
        // Grown by at most half at a time (appended to in pieces, or an
        // array over-allocating by 1/8 to 1/2 as CPython's do): room for
        // half as much again, so that the next class boundaries do not each
        // copy the whole buffer (not more: a block less than half used
        // counts as shrunk, see `realloc`). Doubling buffers get no room:
        // it would not hold their next step.
        let roomy = malloc_aligned(new_size.saturating_add(new_size / 2), align);
        if !roomy.is_null() {
            return roomy;
        }
    }
    malloc_aligned(new_size, align)
}

/// Resizes in place when the block's usable size already fits and is not
/// more than twice what is asked, or when a huge block's reserve allows;
/// otherwise allocates (see [`grown_block`] for a growing one), copies and
/// frees.
///
/// # Safety
///
/// `p` is null or a live block of this allocator aligned to `align`.
pub unsafe fn realloc(p: *mut u8, new_size: usize, align: usize) -> *mut u8 {
    if p.is_null() {
        return malloc_aligned(new_size, align);
    }
    // SAFETY: forwarded: `p` is a live block of `segment_of_block(p)`.
    unsafe { realloc_in(segment::segment_of_block(p), p, new_size, align) }
}

/// [`realloc`] of a non-null block whose segment the caller has found.
///
/// # Safety
///
/// `p` is a live block of this allocator in `seg`, aligned to `align`.
pub unsafe fn realloc_in(seg: *mut Segment, p: *mut u8, new_size: usize, align: usize) -> *mut u8 {
    // SAFETY: the caller promises `p` is live in `seg`, so `seg` is live.
    let s = unsafe { &*seg };
    let huge = s.kind == Kind::Huge;
    let usable = if huge {
        s.usable.load(core::sync::atomic::Ordering::Relaxed)
    } else {
        // SAFETY: `p` lies in the live segment `seg`.
        unsafe { (*segment::page_of(seg, p)).block_size() }
    };
    if new_size <= usable && new_size >= usable / 2 {
        return p;
    }
    // Reclaim lockdep: growing in place may commit memory.
    let checked = huge && new_size > usable;
    if checked {
        crate::alloc::before_bypass();
        // A huge block that would fault much of its growth in moves into a
        // cached block that holds it committed, if there is one.
        // SAFETY: `seg` is the live huge segment of the caller's block.
        let faults = unsafe { huge::growth_faults(seg, new_size) };
        if faults > 0 && faults.saturating_mul(MOVE_RATIO) >= usable {
            let q = huge::alloc_committed(new_size, align.max(MIN_ALIGN));
            if !q.is_null() {
                // SAFETY: forwarded from the caller; `q` is a fresh block
                // of at least `new_size` bytes.
                return unsafe { move_block(seg, p, q, usable, new_size) };
            }
        }
    }
    // Growth takes the reserve; shrinking stays in place while still huge.
    // SAFETY: `seg` is the live huge segment of the caller's block.
    if huge && (new_size > usable || new_size > MAX_CLASS_SIZE) && unsafe { huge::resize_in_place(seg, new_size) } {
        return p;
    }
    let grows = new_size > usable;
    // SAFETY: the thread's own heap (or the empty heap, never written).
    let streak = grows && unsafe { (*heap::current()).last_grown.get() } == p as usize;
    let q = if grows { grown_block(new_size, usable, align, streak, checked) } else { malloc_aligned(new_size, align) };
    if q.is_null() {
        return q;
    }
    // SAFETY: forwarded from the caller; `q` is a fresh block of at least
    // `new_size` bytes.
    unsafe { move_block(seg, p, q, usable, new_size) }
}

/// Copies the live block `p` of `seg` (`usable` bytes) into the fresh
/// block `q` of at least `new_size` bytes, frees `p` and returns `q`.
///
/// # Safety
///
/// `p` is a live block of this allocator in `seg` with `usable` bytes;
/// `q` is a distinct live block of at least `new_size` bytes.
unsafe fn move_block(seg: *mut Segment, p: *mut u8, q: *mut u8, usable: usize, new_size: usize) -> *mut u8 {
    let grows = new_size > usable;
    // Read through the segment's provenance, not `p`'s: a program's pointer
    // may cover only the bytes it asked for, and we copy the usable size.
    let src = seg.cast::<u8>().wrapping_add(p as usize - seg as usize);
    // SAFETY: both blocks are live and distinct, and hold at least the
    // copied length.
    unsafe { ptr::copy_nonoverlapping(src, q, usable.min(new_size)) };
    // SAFETY: `p` is live (caller promise) and freed once, after the copy.
    // The checked entry: a small block goes where the next `malloc` of its
    // class looks first (see `free.rs`), the look-up costs no more than
    // the masking `free_block` does.
    unsafe { free::free_checked(p) };
    // The heap may have been set up by the allocation above.
    let heap = heap::current();
    if grows && heap != empty_heap() {
        // SAFETY: a heap other than the empty one is this thread's own.
        unsafe { (*heap).last_grown.set(q as usize) };
    }
    q
}
