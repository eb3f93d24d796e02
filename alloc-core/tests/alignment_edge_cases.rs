//! Every power-of-two alignment the allocator serves is honoured for sizes at
//! the edges of the alignment, through `GlobalAlloc` and `raw`, and kept by
//! `realloc`; sizes and alignments that cannot be served return null instead
//! of aborting; zeroed allocations are zero even when they reuse dirty memory.

mod common;

use std::alloc::{GlobalAlloc, Layout};

use common::{Block, How, MIB};
use shrinkalloc::{raw, ShrinkAlloc};

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

/// Largest alignment every path must serve.
const MAX_TESTED_ALIGN: usize = 64 * MIB;

/// Sizes at the edges of `align`, plus odd ones around it.
fn edge_sizes(align: usize) -> Vec<usize> {
    let mut sizes = vec![0, 1, 3, 7, 13, 100, 1000, 4097, 65_537];
    sizes.extend([align - 1, align, align + 1, align + align / 2 + 7, 2 * align - 1]);
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

fn alignments_up_to(max: usize) -> impl Iterator<Item = usize> {
    (0..usize::BITS).map(|s| 1usize << s).take_while(move |&a| a <= max)
}

/// Allocates every edge size for each alignment (all live at once, so that
/// overlapping blocks break each other's stamps), checks, then frees.
fn edge_sizes_for_each_alignment(max_align: usize, how: How) {
    let mut id = 1;
    for align in alignments_up_to(max_align) {
        let blocks: Vec<Block> = edge_sizes(align)
            .into_iter()
            .filter(|&size| size > 0 || how != How::Global)
            .map(|size| {
                id += 1;
                Block::new(size, align, how, false, id)
            })
            .collect();
        for b in blocks {
            b.free();
        }
    }
}

#[test]
fn global_alloc_honours_every_alignment() {
    edge_sizes_for_each_alignment(MAX_TESTED_ALIGN, How::Global);
}

#[test]
fn raw_malloc_aligned_honours_every_alignment() {
    edge_sizes_for_each_alignment(MAX_TESTED_ALIGN, How::Aligned);
}

#[test]
fn raw_malloc_honours_natural_alignment() {
    for size in (0..=4096).chain([8191, 8192, 65_536, 65_537, MIB, 3 * MIB + 5]) {
        Block::new(size, 1, How::Malloc, false, size as u64).free();
    }
}

/// Alignments above the tested maximum, up to `raw::MAX_ALIGN`, with sizes
/// that do not map more than a few times the alignment.
#[test]
fn raw_serves_alignments_up_to_max_align() {
    const {
        assert!(raw::MAX_ALIGN.is_power_of_two() && raw::MAX_ALIGN >= MAX_TESTED_ALIGN);
        assert!(raw::MIN_ALIGN.is_power_of_two() && raw::MIN_ALIGN >= 8);
    }
    let mut align = MAX_TESTED_ALIGN;
    while align <= raw::MAX_ALIGN {
        for (n, size) in [0, 1, 4096, align + 1].into_iter().enumerate() {
            Block::new(size, align, How::Aligned, false, n as u64 + 1).free();
            Block::new(size, align, How::Aligned, true, n as u64 + 1).free();
        }
        match align.checked_mul(2) {
            Some(a) => align = a,
            None => break,
        }
    }
}

#[test]
fn realloc_keeps_alignment() {
    let up = [1, 24, 100, 5_000, 9_000, 70_000, 200_000, 600_000, 1_500_000, 5 * MIB];
    let mut id = 1;
    for align in alignments_up_to(MAX_TESTED_ALIGN) {
        for how in [How::Global, How::Aligned] {
            id += 1;
            let mut b = Block::new(up[0], align, how, false, id);
            for &size in up[1..].iter().chain(up.iter().rev().skip(1)) {
                b = b.realloc(size);
            }
            b.free();
        }
    }
}

#[test]
fn impossible_requests_return_null() {
    let huge_sizes = [isize::MAX as usize, isize::MAX as usize - 4095, 1 << 62, 1 << 48];
    for size in huge_sizes {
        for align in [1, 16, 4096, 2 * MIB] {
            let Ok(layout) = Layout::from_size_align(size - (size % align), align) else {
                continue;
            };
            // SAFETY: non-zero size; a null result is what is checked.
            let p = unsafe { ShrinkAlloc.alloc(layout) };
            assert!(p.is_null(), "alloc({layout:?}) returned {p:p}");
            // SAFETY: as above.
            let p = unsafe { ShrinkAlloc.alloc_zeroed(layout) };
            assert!(p.is_null(), "alloc_zeroed({layout:?}) returned {p:p}");
        }
        assert!(raw::malloc(size).is_null(), "malloc({size})");
        assert!(raw::malloc_aligned(size, 64).is_null(), "malloc_aligned({size}, 64)");
        assert!(raw::malloc_zeroed(size, 8).is_null(), "malloc_zeroed({size}, 8)");
    }
    for size in [usize::MAX, usize::MAX - 15, isize::MAX as usize + 1] {
        assert!(raw::malloc(size).is_null(), "malloc({size})");
        assert!(raw::malloc_aligned(size, 4096).is_null(), "malloc_aligned({size})");
        assert!(raw::malloc_zeroed(size, 16).is_null(), "malloc_zeroed({size})");
    }
    // An alignment beyond the largest served, and ones that are not powers of two.
    if let Some(too_big) = raw::MAX_ALIGN.checked_mul(2) {
        assert!(raw::malloc_aligned(1, too_big).is_null(), "align {too_big}");
        if let Ok(layout) = Layout::from_size_align(1, too_big) {
            // SAFETY: non-zero size; a null result is what is checked.
            let p = unsafe { ShrinkAlloc.alloc(layout) };
            assert!(p.is_null(), "alloc({layout:?}) returned {p:p}");
        }
    }
    for align in [0, 3, 24, 4095, 4097] {
        assert!(raw::malloc_aligned(8, align).is_null(), "align {align}");
        assert!(raw::malloc_zeroed(8, align).is_null(), "align {align}");
    }
}

#[test]
fn failed_realloc_keeps_the_block() {
    for (size, align) in [(100, 8), (50_000, 64), (300_000, 4096), (3 * MIB, 2 * MIB)] {
        for how in [How::Global, How::Aligned] {
            let b = Block::new(size, align, how, false, 7);
            let new_size = isize::MAX as usize - (align - 1);
            let p = match how {
                How::Global => {
                    let layout = Layout::from_size_align(size, align).unwrap();
                    // SAFETY: the block is live with this layout; the new size
                    // rounded up to `align` does not overflow `isize`.
                    unsafe { ShrinkAlloc.realloc(b.ptr, layout, new_size) }
                }
                // SAFETY: the block is live and was allocated with `align`.
                _ => unsafe { raw::realloc(b.ptr, new_size, align) },
            };
            assert!(p.is_null(), "realloc of {b:?} to {new_size} returned {p:p}");
            if how != How::Global {
                // SAFETY: as above.
                let p = unsafe { raw::realloc(b.ptr, usize::MAX, align) };
                assert!(p.is_null(), "realloc of {b:?} to usize::MAX returned {p:p}");
            }
            b.check("after a failed realloc");
            b.free();
        }
    }
}

#[test]
fn zeroed_allocations_are_zero() {
    let sizes = [1, 8, 15, 100, 1000, 8192, 10_000, 100_000, 700_000, 3 * MIB, 9 * MIB];
    for size in sizes {
        for align in [1, 16, 4096, 2 * MIB] {
            Block::new(size, align, How::Global, true, 1).free();
            Block::new(size, align, How::Aligned, true, 1).free();
        }
    }
}

/// A block freed dirty and handed out again by `alloc_zeroed` reads as zero,
/// in full: the common case is the very block just freed.
#[test]
fn zeroed_allocations_are_zero_after_reuse() {
    let sizes = [1, 16, 24, 200, 3000, 8192, 20_000, 131_072, 500_000, MIB, 3 * MIB];
    for size in sizes {
        for align in [8, 64, 4096] {
            for round in 0..8 {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero size.
                let dirty = unsafe { ShrinkAlloc.alloc(layout) };
                assert!(!dirty.is_null());
                // SAFETY: `dirty` is a live block of `size` bytes.
                unsafe { dirty.write_bytes(0xff, size) };
                // SAFETY: allocated just above with `layout`.
                unsafe { ShrinkAlloc.dealloc(dirty, layout) };
                if round == 7 {
                    shrinkalloc::purge();
                }
                let p = if round % 2 == 0 {
                    // SAFETY: non-zero size.
                    unsafe { ShrinkAlloc.alloc_zeroed(layout) }
                } else {
                    raw::malloc_zeroed(size, align)
                };
                assert!(!p.is_null() && p as usize % align == 0);
                // SAFETY: `p` is a live block of `size` bytes.
                let bytes = unsafe { std::slice::from_raw_parts(p, size) };
                if let Some(o) = bytes.iter().position(|&b| b != 0) {
                    panic!(
                        "zeroed block of {size} (align {align}, round {round}) has {:#04x} at \
                         {o}; reused dirty block: {}",
                        bytes[o],
                        p == dirty
                    );
                }
                if round % 2 == 0 {
                    // SAFETY: allocated just above with `layout`.
                    unsafe { ShrinkAlloc.dealloc(p, layout) };
                } else {
                    // SAFETY: came from `raw::malloc_zeroed`, freed once.
                    unsafe { raw::free(p) };
                }
            }
        }
    }
}
