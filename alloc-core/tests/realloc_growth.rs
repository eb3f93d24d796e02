//! Buffers grown by `realloc` step by step, as `Vec`, strings and C code
//! appending to a buffer grow them, are not copied at every size class:
//! a buffer grown by half its size at each step leaves the size classes at
//! 64 KiB (or at 4 KiB when a freed huge block is cached) and then grows in
//! place; a small one does not pin the pages of the cached block it takes;
//! a huge one that outgrows its committed pages moves into a cached block
//! that holds them rather than fault them in; one appended to in small
//! pieces gets room to grow and moves only a few times per doubling.
//! Content is checked at every step.

use std::alloc::{alloc, dealloc, realloc, Layout};
use std::sync::Mutex;

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

const MIB: usize = 1 << 20;

/// The tests share the huge block cache: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Grows a buffer from `start` to at least `end` bytes by `step`, checking
/// and extending its content; returns the sizes at which it was copied.
fn grow(start: usize, end: usize, step: impl Fn(usize) -> usize) -> Vec<usize> {
    let layout = |size| Layout::from_size_align(size, 1).unwrap();
    let mut size = start;
    // SAFETY: a non-zero size with alignment 1.
    let mut p = unsafe { alloc(layout(size)) };
    assert!(!p.is_null());
    for i in 0..size {
        // SAFETY: `p` holds `size` bytes.
        unsafe { p.add(i).write((i % 251) as u8) };
    }
    let mut moves = Vec::new();
    while size < end {
        let new_size = size + step(size);
        // SAFETY: `p` is live with this layout; the new size is non-zero.
        let q = unsafe { realloc(p, layout(size), new_size) };
        assert!(!q.is_null());
        for i in [0, size / 3, size - 1] {
            // SAFETY: `q` holds `new_size > i` bytes.
            assert_eq!(unsafe { q.add(i).read() }, (i % 251) as u8, "byte {i} lost growing {size} to {new_size}");
        }
        for i in size..new_size {
            // SAFETY: as above.
            unsafe { q.add(i).write((i % 251) as u8) };
        }
        if q != p {
            moves.push(size);
        }
        (p, size) = (q, new_size);
    }
    // SAFETY: `p` is live with this layout.
    unsafe { dealloc(p, layout(size)) };
    moves
}

#[test]
fn a_buffer_grown_by_half_grows_in_place_once_huge() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Blocks another test left in the huge cache would change the path (a
    // buffer past its committed pages moves into a cached block that holds
    // them: with `a_huge_block_grows_into_a_cached_committed_block`'s
    // 1.5 MiB block there, this one was copied at 207 KiB in about a third
    // of the runs where that test ran first): start from an empty cache.
    shrinkalloc::purge();
    // Up to 1.5 MiB at most: within the reserve of any cached block a growing
    // buffer takes (at least half of its 4 MiB segment).
    let first = grow(1, MIB, |s| s / 2 + 1);
    let last = first.last().copied().unwrap_or(0);
    assert!(last < 64 << 10, "copied at {last} bytes: {first:?}");
    // The first buffer's block is cached now: the next one takes it early.
    let second = grow(1, MIB, |s| s / 2 + 1);
    let last = second.last().copied().unwrap_or(0);
    assert!(last < 8 << 10, "the cached block was not reused: copied at {last} bytes: {second:?}");
}

#[test]
fn a_buffer_appended_to_in_small_pieces_moves_a_few_times_per_doubling() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let moves = grow(64, 60 << 10, |_| 64);
    let past_4k = moves.iter().filter(|&&m| m >= 4 << 10).count();
    // 4 KiB to 60 KiB is four doublings; the size classes alone (eight per
    // doubling) would copy the buffer about 30 times.
    assert!(past_4k <= 10, "{past_4k} copies past 4 KiB: {moves:?}");
}

/// A small buffer that takes a freed huge block from the cache does not
/// keep that block's committed pages: past a bounded tail, they go back.
#[test]
fn a_small_buffer_does_not_pin_a_cached_blocks_pages() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    shrinkalloc::purge();
    let big = Layout::from_size_align(3 * MIB, 1).unwrap();
    // SAFETY: a non-zero size.
    // (black_box: the compiler may elide an allocation it sees unused.)
    let b = std::hint::black_box(unsafe { alloc(big) });
    assert!(!b.is_null());
    // SAFETY: `b` holds 3 MiB; every page is touched, then freed into the cache.
    unsafe {
        b.write_bytes(7, 3 * MIB);
        dealloc(std::hint::black_box(b), big);
    }
    let before = shrinkalloc::stats().committed;
    let layout = |size| Layout::from_size_align(size, 1).unwrap();
    let mut size = 1;
    // SAFETY: non-zero sizes; `p` is live with the layout of `size` at each step.
    let mut p = unsafe { alloc(layout(size)) };
    while size < 6 << 10 {
        let new_size = size + size / 2 + 1;
        // SAFETY: as above.
        p = unsafe { realloc(p, layout(size), new_size) };
        assert!(!p.is_null());
        size = new_size;
    }
    let after = shrinkalloc::stats().committed;
    // SAFETY: `p` is live with this layout.
    unsafe { dealloc(p, layout(size)) };
    assert!(after + 2 * MIB <= before, "a {size} B buffer kept the cached block's pages: {before} -> {after}");
}

/// A huge block that outgrows what it has committed moves into a freed
/// block the cache holds committed, rather than fault its growth in on a
/// new mapping.
#[test]
fn a_huge_block_grows_into_a_cached_committed_block() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    shrinkalloc::purge();
    let layout = |size| Layout::from_size_align(size, 1).unwrap();
    // SAFETY: a non-zero size.
    let cached = std::hint::black_box(unsafe { alloc(layout(4 * MIB)) });
    assert!(!cached.is_null());
    // SAFETY: `cached` holds 4 MiB; every page is touched, then freed into the cache.
    unsafe {
        cached.write_bytes(7, 4 * MIB);
        dealloc(std::hint::black_box(cached), layout(4 * MIB));
    }
    // A 1.5 MiB block of its own (the cached one is too big for its shape).
    // SAFETY: a non-zero size.
    let p = std::hint::black_box(unsafe { alloc(layout(3 * MIB / 2)) });
    assert!(!p.is_null() && p != cached);
    // SAFETY: `p` holds 1.5 MiB.
    unsafe { p.write_bytes(3, 3 * MIB / 2) };
    let before = shrinkalloc::stats().committed;
    // SAFETY: `p` is live with this layout; the new size is non-zero.
    let q = unsafe { realloc(p, layout(3 * MIB / 2), 3 * MIB) };
    let after = shrinkalloc::stats().committed;
    assert_eq!(q, cached, "the growing block did not take the cached one");
    // SAFETY: `q` holds 3 MiB, the first 1.5 MiB copied from `p`.
    assert!(unsafe { (0..3 * MIB / 2).step_by(4096).all(|i| q.add(i).read() == 3) }, "content lost");
    assert!(after < before + MIB, "the growth committed new memory: {before} -> {after}");
    // SAFETY: `q` is live with this layout.
    unsafe { dealloc(q, layout(3 * MIB)) };
}
