//! A block `malloc` takes from the huge cache keeps at most a 32nd of what
//! it uses (rounded up to a page) as committed tail; the rest goes back at
//! once. The tail a block `realloc` grows into keeps is `realloc_growth`'s.

use std::alloc::{alloc, dealloc};

mod common;
use common::{bytes as layout, cache_a_written_block};

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

const MIB: usize = 1 << 20;

#[test]
fn malloc_from_the_cache_gives_back_the_tail() {
    let big = cache_a_written_block(6 * MIB);
    let before = shrinkalloc::stats().committed;
    // 4 MiB: the 6 MiB block is within twice the reserve asked; its 2 MiB
    // tail is within what a realloc-grown block keeps whole.
    // SAFETY: a non-zero size.
    let p = std::hint::black_box(unsafe { alloc(layout(4 * MIB)) });
    let after = shrinkalloc::stats().committed;
    assert_eq!(p, big, "the cached block was not reused");
    assert!(after + MIB <= before, "the reused block kept its 2 MiB tail: committed {before} -> {after}");
    assert!(after + 3 * MIB > before, "more than the tail went back: {before} -> {after}");
    // SAFETY: `p` is live with this layout.
    unsafe { dealloc(p, layout(4 * MIB)) };
}
