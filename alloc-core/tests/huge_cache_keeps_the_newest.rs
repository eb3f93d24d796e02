//! A full cache of freed huge blocks makes room for the block just freed by
//! unmapping the ones it has held longest: a program that frees and
//! allocates big buffers in a loop finds the sizes it used last, not
//! whatever filled the cache first.

use std::alloc::{alloc, dealloc, Layout};

use shrinkalloc::options::{set, Opt};

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

const MIB: usize = 1 << 20;

fn layout() -> Layout {
    Layout::from_size_align(3 * MIB, 1).unwrap()
}

/// A 3 MiB block, every page written.
fn block() -> *mut u8 {
    // SAFETY: a non-zero size.
    let p = unsafe { alloc(layout()) };
    assert!(!p.is_null());
    // SAFETY: `p` holds 3 MiB.
    unsafe { p.write_bytes(1, 3 * MIB) };
    std::hint::black_box(p)
}

#[test]
fn a_full_cache_unmaps_its_oldest_block_for_the_newest() {
    // No purge during the test; room for two 3 MiB blocks, not three.
    set(Opt::PurgeDelayMs, 3_600_000);
    set(Opt::HugeCacheBytes, 8 * MIB);
    shrinkalloc::purge();
    let (a, b, c) = (block(), block(), block());
    let before = shrinkalloc::stats().committed;
    for p in [a, b, c] {
        // SAFETY: each block is live with this layout, freed once.
        unsafe { dealloc(p, layout()) };
    }
    let after = shrinkalloc::stats().committed;
    // `a` left (unmapped to make room for `c`), `b` and `c` stayed committed.
    assert!(
        before - after >= 3 * MIB && before - after < 4 * MIB,
        "expected one 3 MiB block unmapped: committed {before} -> {after}"
    );
    let again = [block(), block()];
    assert!(
        again.contains(&b) && again.contains(&c),
        "the two newest blocks were not the ones kept: {again:?}, freed {a:?} {b:?} {c:?}"
    );
    for p in again {
        // SAFETY: as above.
        unsafe { dealloc(p, layout()) };
    }
}
