//! The hard limit holds for blocks carved from pages too, not only for huge
//! blocks: a page is carved a piece at a time after it is taken, and every
//! piece that commits more memory must fit under the limit. Blocks of
//! 200 KiB come from 2 MiB pages, one block per carving; committed memory is
//! checked after every allocation until one is refused.

mod reclaim_support;

use std::alloc::{alloc, dealloc, Layout};
use std::time::Duration;

use reclaim_support::{committed, limit_above_committed, watchdog, MIB};
use shrinkalloc::reclaim::set_hard_limit;

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

#[test]
fn carving_pages_never_passes_the_hard_limit() {
    watchdog(Duration::from_secs(60), "the page-carving limit test");
    let layout = Layout::from_size_align(200 << 10, 8).unwrap();
    let mut held: Vec<*mut u8> = Vec::with_capacity(1000);
    // Not a whole number of 2 MiB pages: the limit falls inside a page.
    let hard = limit_above_committed(23 * MIB + 300 * 1024);
    let mut worst = 0;
    let mut refused = false;
    for _ in 0..1000 {
        // SAFETY: a non-zero size.
        let p = unsafe { alloc(layout) };
        if p.is_null() {
            refused = true;
            break;
        }
        // SAFETY: `p` holds 200 KiB; touching it makes the commitment real.
        unsafe { p.write_bytes(1, layout.size()) };
        held.push(p);
        worst = worst.max(committed());
    }
    set_hard_limit(None);
    let n = held.len();
    for p in held {
        // SAFETY: each block is live with this layout, freed once.
        unsafe { dealloc(p, layout) };
    }
    assert!(refused, "200 MiB fitted under a 23 MiB limit");
    assert!(worst <= hard, "committed reached {worst}, past the hard limit {hard}, after {n} blocks");
    assert!(n >= 80, "only {n} blocks of 200 KiB under 23 MiB");
}
