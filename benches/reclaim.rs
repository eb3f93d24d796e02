//! What reclaim costs (shrinkalloc only: the peers have no reclaim).
//!
//! - a NOFS save/restore pair, and a read of the scope mask;
//! - direct reclaim: with a 64 MiB cache behind a shrinker and the hard limit
//!   just under what is committed, the slowest of the next 16 allocations of
//!   64 KiB (the one that takes a page reclaims), against the same without a
//!   limit;
//! - background reclaim: from the first allocation past the soft limit to
//!   the shrinker's first call on a library reclaimer thread.
//!
//! Each figure is the median of 25 trials; run with `cargo bench --bench reclaim`.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shrinkalloc::reclaim::{self, CountResult, ScanResult, ShrinkControl, Shrinker, ShrinkerOptions};

const BLOCK: usize = 64 << 10;

/// A cache of 64 KiB blocks; records when it was first asked to scan.
struct Cache {
    blocks: Mutex<Vec<usize>>,
    first_scan_ns: AtomicU64,
    epoch: Instant,
}

impl Shrinker for Cache {
    fn count(&self, _: &ShrinkControl) -> CountResult {
        CountResult::Count(self.blocks.lock().unwrap().len())
    }

    fn scan(&self, sc: &ShrinkControl) -> ScanResult {
        let now = self.epoch.elapsed().as_nanos() as u64;
        let _ = self.first_scan_ns.compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst);
        let mut blocks = self.blocks.lock().unwrap();
        let n = sc.nr_to_scan().min(blocks.len());
        for p in blocks.drain(..n) {
            // SAFETY: every block in the cache came from `raw::malloc` and is freed once.
            unsafe { shrinkalloc::raw::free(p as *mut u8) };
        }
        ScanResult::Freed(n)
    }
}

fn fill(cache: &Cache, bytes: usize) {
    let mut blocks = cache.blocks.lock().unwrap();
    for _ in 0..bytes / BLOCK {
        let p = shrinkalloc::raw::malloc(BLOCK);
        assert!(!p.is_null());
        // SAFETY: a fresh block of BLOCK bytes.
        unsafe { p.write_bytes(1, BLOCK) };
        blocks.push(p as usize);
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn scope_pair() -> (f64, f64) {
    const N: u32 = 10_000_000;
    let t = Instant::now();
    for _ in 0..N {
        let saved = reclaim::nofs_save();
        black_box(reclaim::current_scope());
        reclaim::nofs_restore(saved);
    }
    let pair = t.elapsed().as_nanos() as f64 / f64::from(N);
    let t = Instant::now();
    for _ in 0..N {
        black_box(reclaim::current_scope());
    }
    (pair, t.elapsed().as_nanos() as f64 / f64::from(N))
}

/// Allocates 64 KiB blocks until the allocator has taken a new page twice
/// (each charge is checked against the limits when a page is taken); returns
/// the blocks, the slowest allocation, and when the first one started.
fn allocate_pages() -> (Vec<usize>, Duration, Instant) {
    let start = Instant::now();
    let mut held = Vec::new();
    let mut slowest = Duration::ZERO;
    for _ in 0..16 {
        let t = Instant::now();
        let p = shrinkalloc::raw::malloc(BLOCK);
        slowest = slowest.max(t.elapsed());
        assert!(!p.is_null(), "allocation failed with a shrinker to reclaim from");
        // SAFETY: a fresh block of BLOCK bytes.
        unsafe { p.write_bytes(2, BLOCK) };
        held.push(p as usize);
    }
    (held, slowest, start)
}

fn release(held: Vec<usize>, cache: &Cache) {
    for p in held.into_iter().chain(cache.blocks.lock().unwrap().drain(..)) {
        // SAFETY: blocks from `raw::malloc`, freed once.
        unsafe { shrinkalloc::raw::free(p as *mut u8) };
    }
    reclaim::set_soft_limit(None);
    reclaim::set_hard_limit(None);
    shrinkalloc::purge();
}

fn main() {
    let (pair, read) = scope_pair();
    let cache =
        Arc::new(Cache { blocks: Mutex::new(Vec::new()), first_scan_ns: AtomicU64::new(0), epoch: Instant::now() });
    let _handle = reclaim::register(SharedCache(cache.clone()), ShrinkerOptions::new("bench-cache"));
    let (mut direct, mut plain, mut background) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..25 {
        fill(&cache, 64 << 20);
        let (held, slowest, _) = allocate_pages();
        plain.push(slowest);
        release(held, &cache);

        // Both limits just under what is committed: the next page taken
        // reclaims directly (soft = hard, so no background pass runs ahead).
        fill(&cache, 64 << 20);
        let line = shrinkalloc::stats().committed - (1 << 20);
        reclaim::set_hard_limit(Some(line));
        reclaim::set_soft_limit(Some(line));
        let (held, slowest, _) = allocate_pages();
        direct.push(slowest);
        release(held, &cache);

        // Only the soft limit, just under: the next page taken wakes a
        // background reclaimer.
        fill(&cache, 64 << 20);
        cache.first_scan_ns.store(0, Ordering::SeqCst);
        reclaim::set_soft_limit(Some(shrinkalloc::stats().committed - (1 << 20)));
        let (held, _, started) = allocate_pages();
        let started_ns = started.duration_since(cache.epoch).as_nanos() as u64;
        let deadline = Instant::now() + Duration::from_secs(2);
        while cache.first_scan_ns.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(50));
        }
        let first = cache.first_scan_ns.load(Ordering::SeqCst);
        background.push(Duration::from_nanos(first.saturating_sub(started_ns)));
        release(held, &cache);
    }
    println!("| measure | median of 25 |");
    println!("|---|--:|");
    println!("| NOFS save + mask read + restore | {pair:.1} ns |");
    println!("| scope mask read | {read:.1} ns |");
    println!("| slowest of 16 64 KiB allocations, no limit near | {:?} |", median(plain));
    println!("| slowest of 16, past the hard limit (direct reclaim inside one) | {:?} |", median(direct));
    println!("| first allocation past the soft limit -> first shrinker call (background) | {:?} |", median(background));
}

/// The registry takes the shrinker by value; the bench keeps a second handle.
struct SharedCache(Arc<Cache>);

impl Shrinker for SharedCache {
    fn count(&self, sc: &ShrinkControl) -> CountResult {
        self.0.count(sc)
    }

    fn scan(&self, sc: &ShrinkControl) -> ScanResult {
        self.0.scan(sc)
    }
}
