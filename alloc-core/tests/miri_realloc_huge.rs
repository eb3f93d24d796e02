//! Under Miri and as an ordinary test: `realloc` growth keeps a block's
//! bytes through size classes and into huge blocks (with their room to grow
//! in place), shrinks it again, and huge blocks go through the huge cache
//! and are freed by another thread. (Raw API: see `miri_random_ops.rs`.)

use shrinkalloc::raw;

/// Fills `len` bytes at `p` with a pattern of `seed`.
fn fill(p: *mut u8, len: usize, seed: u8) {
    // SAFETY: the tests pass a live block of at least `len` bytes.
    unsafe { std::slice::from_raw_parts_mut(p, len) }.iter_mut().enumerate().for_each(|(i, b)| *b = seed ^ i as u8);
}

/// Whether `len` bytes at `p` still hold the pattern of `seed`.
fn holds(p: *const u8, len: usize, seed: u8) -> bool {
    // SAFETY: as for `fill`.
    unsafe { std::slice::from_raw_parts(p, len) }.iter().enumerate().all(|(i, &b)| b == seed ^ i as u8)
}

#[test]
fn realloc_growth_keeps_the_bytes_into_huge_blocks_and_back() {
    // Miri walks every byte it copies: check a prefix there.
    let checked = if cfg!(miri) { 256 } else { usize::MAX };
    let mut p = raw::malloc(16);
    fill(p, 16, 7);
    let mut len = 16;
    for new in [48, 300, 5_000, 70_000, 300_000, 1_500_000, 2_500_000] {
        // SAFETY: `p` is live, allocated with the default alignment.
        let q = unsafe { raw::realloc(p, new, raw::MIN_ALIGN) };
        assert!(!q.is_null());
        assert!(holds(q, len.min(checked), 7), "bytes lost growing {len} -> {new}");
        // SAFETY: `q` is live with at least `new` bytes.
        assert!(unsafe { raw::usable_size(q) } >= new);
        fill(q, new.min(checked), 7);
        (p, len) = (q, new.min(checked));
    }
    // SAFETY: as above.
    let q = unsafe { raw::realloc(p, 100, raw::MIN_ALIGN) };
    assert!(holds(q, 100, 7));
    // SAFETY: `q` is live and freed once.
    unsafe { raw::free(q) };
}

#[test]
fn huge_blocks_are_reused_from_the_cache_and_freed_across_threads() {
    for round in 0..3u8 {
        let p = raw::malloc(3 << 20);
        assert!(!p.is_null() && raw::is_ours(p));
        fill(p, 64, round);
        let aligned = raw::malloc_aligned(2 << 20, 1 << 22);
        assert_eq!(aligned as usize % (1 << 22), 0);
        let addr = p as usize;
        std::thread::spawn(move || {
            let p = addr as *mut u8;
            assert!(holds(p, 64, round));
            // SAFETY: the block is live and handed to this thread, freed once.
            unsafe { raw::free(p) };
        })
        .join()
        .unwrap();
        // SAFETY: `aligned` is live and freed once.
        unsafe { raw::free(aligned) };
    }
    assert!(shrinkalloc::stats().segments >= 1);
}
