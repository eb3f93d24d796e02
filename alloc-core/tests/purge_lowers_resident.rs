//! Memory freed by the program leaves the process's resident set: at once on
//! `purge()`, and on its own after the decay delay while the thread keeps
//! allocating a little. `stats()` agrees: `committed` falls, `purged` grows.
//!
//! Both tests allocate [`TOTAL`] bytes in small and medium blocks and touch
//! every page, so that the resident set grows by about as much; they run one
//! at a time so that each one's measures are its own.

mod common;

use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::{rss_bytes, Block, How, Rng, KIB, MIB};

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

const TOTAL: usize = 200 * MIB;

/// What must come back: three quarters of what was touched.
const MUST_RELEASE: usize = TOTAL / 4 * 3;

/// How long decay may take, well above its default delay of about a second.
const DECAY_DEADLINE: Duration = Duration::from_secs(6);

static SERIAL: Mutex<()> = Mutex::new(());

/// Half of [`TOTAL`] in small blocks, half in medium ones, every page written.
fn allocate_and_touch(rng: &mut Rng) -> Vec<Block> {
    let mut blocks = Vec::new();
    for (lo, hi) in [(16, 8 * KIB), (8 * KIB + 1, 128 * KIB)] {
        let mut bytes = 0;
        while bytes < TOTAL / 2 {
            let size = rng.range(lo, hi);
            let b = Block::new(size, 8, How::Global, false, rng.next_u64());
            // SAFETY: `b` is a live block of `b.size` bytes that we own.
            unsafe { common::fill_pages(b.ptr, b.size, b.id) };
            bytes += size;
            blocks.push(b);
        }
    }
    blocks
}

/// Resident and stats after allocating; panics if touching did not grow the
/// resident set (then the test would prove nothing).
fn grown(rss_before: usize) -> (usize, shrinkalloc::Stats) {
    let rss = rss_bytes();
    assert!(
        rss >= rss_before + TOTAL / 10 * 8,
        "touching {TOTAL} bytes grew the resident set only from {rss_before} to {rss}"
    );
    (rss, shrinkalloc::stats())
}

#[test]
fn purge_lowers_resident() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut rng = Rng::new(common::seed(), 1);
    // Start from a clean slate: no freed pages left over from the other test
    // to be reused without growing the resident set.
    shrinkalloc::purge();
    let rss_before = rss_bytes();
    let blocks = allocate_and_touch(&mut rng);
    let (rss_full, full) = grown(rss_before);
    for b in blocks {
        b.free();
    }
    let released = shrinkalloc::purge();
    let rss_after = rss_bytes();
    let after = shrinkalloc::stats();
    eprintln!(
        "resident {rss_before} -> {rss_full} -> {rss_after}; purge() released {released}\n\
         full: {full}\nafter purge: {after}"
    );
    assert!(
        rss_after + MUST_RELEASE <= rss_full,
        "purge left resident at {rss_after} (was {rss_full} with {TOTAL} allocated)"
    );
    assert!(
        after.committed + MUST_RELEASE <= full.committed,
        "committed only went from {} to {}",
        full.committed,
        after.committed
    );
    assert!(after.purged >= full.purged + MUST_RELEASE, "purged only went from {} to {}", full.purged, after.purged);
    assert!(released > 0, "purge() returned 0 with {TOTAL} bytes just freed");
    assert!(released <= after.purged - full.purged, "purge() returned more than it purged");
}

/// A little allocation that reaches the slow paths: more blocks than a page
/// holds, in small, medium and large classes, then freed.
fn churn_a_little(rng: &mut Rng) {
    for size in [48, 3_000, 40_000, 300_000] {
        let count = (256 * KIB / size).max(2);
        let blocks: Vec<Block> = (0..count).map(|_| Block::new(size, 8, How::Global, false, rng.next_u64())).collect();
        for b in blocks {
            b.free();
        }
    }
}

#[test]
fn decay_lowers_resident_without_purge() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut rng = Rng::new(common::seed(), 2);
    // Start from a clean slate: no freed pages left over from the other test
    // to be reused without growing the resident set.
    shrinkalloc::purge();
    let rss_before = rss_bytes();
    let blocks = allocate_and_touch(&mut rng);
    let (rss_full, full) = grown(rss_before);
    for b in blocks {
        b.free();
    }
    let freed_at = Instant::now();
    loop {
        thread::sleep(Duration::from_millis(20));
        churn_a_little(&mut rng);
        let rss = rss_bytes();
        if rss + MUST_RELEASE <= rss_full {
            let after = shrinkalloc::stats();
            eprintln!(
                "resident {rss_before} -> {rss_full} -> {rss} after {:?}\nfull: {full}\n\
                 after decay: {after}",
                freed_at.elapsed()
            );
            assert!(
                after.committed + MUST_RELEASE <= full.committed,
                "resident fell but committed only went from {} to {}",
                full.committed,
                after.committed
            );
            assert!(
                after.purged >= full.purged + MUST_RELEASE,
                "resident fell but purged only went from {} to {}",
                full.purged,
                after.purged
            );
            return;
        }
        assert!(
            freed_at.elapsed() < DECAY_DEADLINE,
            "{:?} after freeing {TOTAL} bytes resident is still {rss} (was {rss_full}); {}",
            DECAY_DEADLINE,
            shrinkalloc::stats()
        );
    }
}
