//! Memory freed by the program leaves the process's resident set: at once on
//! `purge()`, and on its own after the decay delay while the thread keeps
//! allocating a little. `stats()` agrees: `committed` falls and `purged`
//! (bytes given back by `madvise` or by unmapping) grows by as much.
//!
//! Each test allocates [`TOTAL`] bytes in small and medium blocks and touches
//! every page, so that the resident set grows by about as much. Most tests
//! keep one block alive per [`PIN_EVERY`] bytes allocated: the segments stay
//! mapped, so their free pages can only go back by purging. The tests run one
//! at a time so that each one's measures are its own.

mod common;

use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::{rss_bytes, Block, How, Rng, KIB, MIB};
use shrinkalloc::Stats;

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

const TOTAL: usize = 200 * MIB;

/// One block stays alive per this many bytes allocated (about one per segment).
const PIN_EVERY: usize = 4 * MIB;

/// What must come back: three quarters of what was touched.
const MUST_RELEASE: usize = TOTAL / 4 * 3;

/// How long decay may take, well above its default delay of about a second.
const DECAY_DEADLINE: Duration = Duration::from_secs(6);

static SERIAL: Mutex<()> = Mutex::new(());

/// The state after allocating [`TOTAL`] bytes, before freeing them.
struct Full {
    _serial: MutexGuard<'static, ()>,
    rss_before: usize,
    rss: usize,
    stats: Stats,
    /// Blocks the test frees.
    blocks: Vec<Block>,
    /// Blocks kept alive until the end, so that their segments stay mapped.
    pins: Vec<Block>,
}

/// Takes the test lock, starts from a clean slate (no free pages left over
/// from another test to be reused without growing the resident set), and
/// allocates half of [`TOTAL`] in small blocks, half in medium ones, every
/// page written; keeps one block per `pin_every` bytes as a pin.
fn allocate_and_touch(stream: u64, pin_every: Option<usize>) -> Full {
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut rng = Rng::new(common::seed(), stream);
    shrinkalloc::purge();
    let rss_before = rss_bytes();
    let (mut blocks, mut pins) = (Vec::new(), Vec::new());
    let mut next_pin = 0;
    let mut bytes = 0;
    for (lo, hi) in [(16, 8 * KIB), (8 * KIB + 1, 128 * KIB)] {
        let end = bytes + TOTAL / 2;
        while bytes < end {
            let size = rng.range(lo, hi);
            let b = Block::new(size, 8, How::Global, false, rng.next_u64());
            // SAFETY: `b` is a live block of `b.size` bytes that we own.
            unsafe { common::fill_pages(b.ptr, b.size, b.id) };
            match pin_every {
                Some(every) if bytes >= next_pin => {
                    next_pin = bytes + every;
                    pins.push(b);
                }
                _ => blocks.push(b),
            }
            bytes += size;
        }
    }
    let rss = rss_bytes();
    // Without this the test would prove nothing.
    assert!(
        rss >= rss_before + TOTAL / 10 * 8,
        "touching {TOTAL} bytes grew the resident set only from {rss_before} to {rss}"
    );
    Full { _serial: serial, rss_before, rss, stats: shrinkalloc::stats(), blocks, pins }
}

impl Full {
    /// Frees the blocks (not the pins).
    fn free_blocks(&mut self) {
        for b in self.blocks.drain(..) {
            b.free();
        }
    }

    /// Panics unless most of what was allocated left the resident set and
    /// the allocator's books.
    fn assert_released(&self, rss: usize, after: &Stats, how: &str) {
        let full = &self.stats;
        eprintln!("{how}: resident {} -> {} -> {rss}\nfull:  {full}\nafter: {after}", self.rss_before, self.rss);
        assert!(rss + MUST_RELEASE <= self.rss, "{how}: resident still {rss} (was {})", self.rss);
        assert!(
            after.committed + MUST_RELEASE <= full.committed,
            "{how}: committed only went from {} to {}",
            full.committed,
            after.committed
        );
        let purged = after.purged - full.purged;
        assert!(purged >= MUST_RELEASE, "{how}: purged only went from {} to {}", full.purged, after.purged);
    }

    fn finish(self) {
        for b in self.pins {
            b.free();
        }
    }
}

fn purge_lowers_resident(pin_every: Option<usize>) {
    let mut full = allocate_and_touch(1, pin_every);
    full.free_blocks();
    let released = shrinkalloc::purge();
    let (rss, after) = (rss_bytes(), shrinkalloc::stats());
    eprintln!("purge() released {released}");
    full.assert_released(rss, &after, "purge()");
    assert!(released > 0, "purge() returned 0 with {TOTAL} bytes just freed");
    full.finish();
}

#[test]
fn purge_returns_free_pages_of_live_segments() {
    purge_lowers_resident(Some(PIN_EVERY));
}

#[test]
fn purge_after_freeing_everything_lowers_resident() {
    purge_lowers_resident(None);
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
    let mut full = allocate_and_touch(2, Some(PIN_EVERY));
    let mut rng = Rng::new(common::seed(), 3);
    full.free_blocks();
    let freed_at = Instant::now();
    loop {
        thread::sleep(Duration::from_millis(20));
        churn_a_little(&mut rng);
        let rss = rss_bytes();
        if rss + MUST_RELEASE <= full.rss {
            eprintln!("resident fell {:?} after the free", freed_at.elapsed());
            full.assert_released(rss, &shrinkalloc::stats(), "decay");
            break;
        }
        assert!(
            freed_at.elapsed() < DECAY_DEADLINE,
            "{DECAY_DEADLINE:?} after freeing {TOTAL} bytes resident is still {rss} (was {}); {}",
            full.rss,
            shrinkalloc::stats()
        );
    }
    full.finish();
}
