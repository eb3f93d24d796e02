//! Threads that exit together give back more empty segments than the
//! segment cache keeps. Those past it are not unmapped on the exit path (a
//! string of munmaps that stalls every other thread on the kernel's mapping
//! lock): they stay mapped with their pages given back to the OS at once,
//! and are unmapped a purge delay later.

use shrinkalloc::options::{set, Opt};

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

const MIB: usize = 1 << 20;

#[test]
fn segments_past_the_cache_are_purged_at_once_and_unmapped_later() {
    // No decay during the test; a cache of one segment per kind.
    set(Opt::PurgeDelayMs, 3_600_000);
    set(Opt::SegmentCache, 1);
    shrinkalloc::purge();
    // A thread fills about 24 MiB of 2 KiB blocks (six segments or more),
    // frees them and exits: its heap gives back every segment.
    let peak = std::thread::spawn(|| {
        let blocks: Vec<Vec<u8>> = (0..12 * 1024).map(|i| vec![i as u8; 2048]).collect();
        let peak = shrinkalloc::stats();
        drop(std::hint::black_box(blocks));
        peak
    })
    .join()
    .unwrap();
    let after = shrinkalloc::stats();
    assert!(
        after.mapped + 4 * MIB >= peak.mapped,
        "segments past the cache were unmapped at thread exit: mapped {} -> {} MiB",
        peak.mapped / MIB,
        after.mapped / MIB
    );
    assert!(
        after.committed + 16 * MIB <= peak.committed,
        "the pages of segments past the cache stayed committed: {} -> {} MiB",
        peak.committed / MIB,
        after.committed / MIB
    );
    // Past the delay (here: a forced purge), they are unmapped.
    shrinkalloc::purge();
    let later = shrinkalloc::stats();
    assert!(
        later.mapped + 16 * MIB <= peak.mapped,
        "segments past the cache stayed mapped after a purge: {} -> {} MiB",
        peak.mapped / MIB,
        later.mapped / MIB
    );
}
