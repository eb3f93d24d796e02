//! The cache of freed huge blocks is bounded by what its blocks keep
//! committed, not by the address space they reserve: blocks that `realloc`
//! grew (four times their size reserved) are kept as many as `malloc`ed
//! ones of the same size, up to four times the budget of address space.

use std::alloc::{alloc, dealloc, realloc, Layout};

use shrinkalloc::options::{set, Opt};

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

const MIB: usize = 1 << 20;

/// A block of `size` bytes grown by `realloc` from 128 KiB, every page
/// written.
fn grown(size: usize) -> *mut u8 {
    let layout = |size| Layout::from_size_align(size, 1).unwrap();
    // SAFETY: a non-zero size.
    let p = unsafe { alloc(layout(128 << 10)) };
    assert!(!p.is_null());
    // SAFETY: `p` is live with this layout; the new size is non-zero.
    let q = unsafe { realloc(p, layout(128 << 10), size) };
    assert!(!q.is_null());
    // SAFETY: `q` holds `size` bytes.
    unsafe { q.write_bytes(1, size) };
    std::hint::black_box(q)
}

#[test]
fn grown_blocks_are_cached_by_their_committed_bytes() {
    // No purge during the test; a budget of 16 MiB committed, 64 MiB of
    // address space: three 3 MiB blocks reserving 12 MiB each fit in it.
    set(Opt::PurgeDelayMs, 3_600_000);
    set(Opt::HugeCacheBytes, 16 * MIB);
    shrinkalloc::purge();
    let blocks: Vec<*mut u8> = (0..3).map(|_| grown(3 * MIB)).collect();
    let before = shrinkalloc::stats().committed;
    for &b in &blocks {
        // SAFETY: each block is live with this layout, freed once.
        unsafe { dealloc(b, Layout::from_size_align(3 * MIB, 1).unwrap()) };
    }
    let after = shrinkalloc::stats().committed;
    // Unmapped blocks would have left the committed count.
    assert!(after + MIB > before, "freed blocks were unmapped, not cached: {before} -> {after}");
    // The cache hands them back, committed, for blocks of the same size.
    let again: Vec<*mut u8> = (0..3).map(|_| grown(3 * MIB)).collect();
    assert!(again.iter().all(|p| blocks.contains(p)), "the cached blocks were not reused");
    for b in again {
        // SAFETY: as above.
        unsafe { dealloc(b, Layout::from_size_align(3 * MIB, 1).unwrap()) };
    }
}
