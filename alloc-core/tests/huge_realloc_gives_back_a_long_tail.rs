//! A huge block that `realloc` grows in place keeps at most 1 MiB committed
//! past its new end: a block taken from the cache to grow into keeps a long
//! committed tail (twice what it uses), and once it has grown, the rest of
//! that tail goes back to the OS rather than stay resident for the block's
//! life.

use std::alloc::{alloc, dealloc, realloc};

mod common;
use common::{bytes as layout, cache_a_written_block};

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

const MIB: usize = 1 << 20;

#[test]
fn growth_in_place_gives_back_the_tail_past_one_mib() {
    // An 8 MiB block in the cache, committed; nothing cached goes back on
    // a timer while the test runs.
    let big = cache_a_written_block(8 * MIB);
    // A 1 MiB block grown to 2 MiB becomes a huge block with room to grow:
    // the cached 8 MiB block, which keeps 4 MiB of its tail committed.
    // SAFETY: a non-zero size.
    let p = std::hint::black_box(unsafe { alloc(layout(MIB)) });
    assert!(!p.is_null());
    // SAFETY: `p` holds 1 MiB.
    unsafe { p.write_bytes(2, MIB) };
    // SAFETY: `p` is live with this layout; the new size is non-zero.
    let q = std::hint::black_box(unsafe { realloc(p, layout(MIB), 2 * MIB) });
    assert_eq!(q, big, "the growing block did not take the cached one");
    let before = shrinkalloc::stats().committed;
    // Grown in place to 3 MiB: 6 MiB were committed, 3 are past its end.
    // SAFETY: `q` is live with a 2 MiB layout; the new size is non-zero.
    let r = std::hint::black_box(unsafe { realloc(q, layout(2 * MIB), 3 * MIB) });
    assert_eq!(r, q, "the block did not grow in place");
    let after = shrinkalloc::stats().committed;
    assert!(after + 2 * MIB <= before, "the grown block kept its tail: committed {before} -> {after}");
    // SAFETY: `r` holds 3 MiB; the first 1 MiB is what was written.
    unsafe {
        assert!(std::slice::from_raw_parts(r, MIB).iter().all(|&b| b == 2), "content lost");
        r.add(MIB).write_bytes(3, 2 * MIB);
        dealloc(r, layout(3 * MIB));
    }
}
